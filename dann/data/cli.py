"""``dann-data``: list, prepare (build the cache), show (a PNG grid per class) and download domains.

    dann-data list
    dann-data prepare mnist mnist_m [--root DIR]
    dann-data show syn_signs_gen [--per-class 8] [--out grid.png]
    dann-data download mnist_m                     (needs internet; checks the pinned checksums)
    dann-data prepare my_photos --config my.yaml   (custom domains from a YAML `domains:` mapping)

The data root is --root, else $DANN_DATA_DIR, else ~/.cache/dann. Data errors (missing or
corrupt files, bad declarations, unknown names, a read-only or full data root, an archive or
array over $DANN_MAX_UNPACK_GB) print one message and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from dann.errors import ConfigError
from dann.data.domains import REGISTRY, SPLITS, DataError, cache_path, default_root, get_domain, load_split

PAD = 2  # pixels between grid cells


def _root(args: argparse.Namespace) -> Path:
    return Path(args.root).expanduser() if args.root else default_root()


def _cached(root: Path, name: str) -> bool | None:
    """True/False: both splits cached or not; None: generated on the fly, never cached."""
    d = REGISTRY[name]
    return all(cache_path(root, d.cache_key or name, s).exists() for s in SPLITS) if d.cache else None


def _state(root: Path, name: str) -> str:
    """What `list` says of a domain: cached, or not and whether its raw files are there."""
    d, cached = REGISTRY[name], _cached(root, name)
    if cached is None:
        return "generated on the fly"
    if cached:
        return "cached"
    if not d.needs_raw:
        return "not prepared; needs no raw files"
    if d.raw_files is None:
        return "not prepared"
    return f"not prepared; raw files {'present' if d.raw_files(root) else 'missing'}"


def cmd_list(args: argparse.Namespace) -> int:
    root = _root(args)
    print(f"data root: {root}")
    rows = [(name, REGISTRY[name].num_classes, _state(root, name), REGISTRY[name].doc) for name in sorted(REGISTRY)]
    wn, ws = max(len(r[0]) for r in rows), max(len(r[2]) for r in rows)  # columns as wide as their longest entry
    for name, k, state, doc in rows:
        print(f"  {name:{wn}s} {k:3d} classes  {state:{ws}s}  {doc}".rstrip())
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    root = _root(args)
    for name in args.names:
        was = _cached(root, name)
        for split in SPLITS:
            t = time.perf_counter()
            s = load_split(name, split, root)
            built = time.perf_counter() - t
            t = time.perf_counter()
            load_split(name, split, root)
            loaded = time.perf_counter() - t
            how = "already cached, loaded" if was else ("generated" if was is None else "prepared")
            print(f"{name}/{split}: {len(s):,} samples, x {tuple(s.x.shape[1:])} {s.x.dtype}, "
                  f"{get_domain(name).num_classes} classes; {how} in {built:.2f} s, "
                  f"loads {'from the cache ' if was is not None else ''}in {loaded:.2f} s")
    return 0


def class_grid(x: torch.Tensor, y: torch.Tensor, num_classes: int, per_class: int, seed: int = 0) -> torch.Tensor:
    """(3, K*(H+PAD)+PAD, per_class*(W+PAD)+PAD) uint8: row k holds ``per_class`` random samples of class k.

    Cells of a class with fewer samples stay black; the padding is grey.
    """
    g = torch.Generator().manual_seed(seed)
    c, h, w = x.shape[1:]
    grid = torch.full((3, num_classes * (h + PAD) + PAD, per_class * (w + PAD) + PAD), 128, dtype=torch.uint8)
    for k in range(num_classes):
        idx = (y == k).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)[:per_class]]
        top = PAD + k * (h + PAD)
        for j in range(per_class):
            left = PAD + j * (w + PAD)
            cell = x[idx[j]].expand(3, -1, -1) if j < len(idx) else 0
            grid[:, top:top + h, left:left + w] = cell
    return grid


def labelled_grid(x: torch.Tensor, y: torch.Tensor, num_classes: int, per_class: int):
    """A PIL image: the class grid with a white column of class indices on its left."""
    from PIL import Image, ImageDraw

    grid = class_grid(x, y, num_classes, per_class)
    h = x.shape[2]
    label_w = 8 + 7 * len(str(num_classes - 1))
    img = Image.new("RGB", (label_w + grid.shape[2], grid.shape[1]), "white")
    img.paste(Image.fromarray(grid.permute(1, 2, 0).numpy()), (label_w, 0))
    draw = ImageDraw.Draw(img)
    for k in range(num_classes):
        draw.text((2, PAD + k * (h + PAD) + max(0, h // 2 - 6)), str(k), fill="black")
    return img


def cmd_show(args: argparse.Namespace) -> int:
    root, name = _root(args), args.name
    d = get_domain(name)
    splits = {s: load_split(name, s, root) for s in SPLITS}
    for s, v in splits.items():
        counts = torch.bincount(v.y, minlength=d.num_classes).tolist()
        print(f"{name}/{s}: {len(v):,} samples, x {tuple(v.x.shape[1:])}; per class: {counts}")
    tr = splits["train"]
    if tr.x.dtype != torch.uint8 or tr.x.dim() != 4:
        print(f"dann-data: error: {name} holds features of shape {tuple(tr.x.shape[1:])}, not images: "
              f"nothing to draw", file=sys.stderr)
        return 2
    if args.per_class < 1:
        raise ConfigError(f"--per-class {args.per_class}: give a number >= 1")
    out = Path(args.out) if args.out else root / "grids" / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    img = labelled_grid(tr.x, tr.y, d.num_classes, args.per_class)
    img.save(out)
    print(f"grid ({d.num_classes} rows, one per class, of {args.per_class} training samples; "
          f"{img.width}x{img.height} px): {out}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from dann.data.real import download

    for name in args.names:
        download(name, _root(args))
    return 0


def _options(default) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=default, help="data root (default: $DANN_DATA_DIR or ~/.cache/dann)")
    common.add_argument("--config", default=default,
                        help="YAML file with a `domains:` mapping of custom domains to register first")
    return common


def parser() -> argparse.ArgumentParser:
    # --root/--config are accepted before or after the subcommand; the subcommands' copies
    # default to SUPPRESS so that they do not overwrite a value given before the subcommand.
    common = _options(argparse.SUPPRESS)
    ap = argparse.ArgumentParser(prog="dann-data", description=__doc__, parents=[_options(None)],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", parents=[common], help="every domain, its classes, whether it is cached")
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("prepare", parents=[common], help="build the cache of both splits, timed")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(fn=cmd_prepare)
    p = sub.add_parser("show", parents=[common], help="write a PNG grid of training samples, one row per class")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--per-class", type=int, default=8, help="samples per class (columns); default 8")
    p.add_argument("--out", help="PNG path (default: <root>/grids/<name>.png)")
    p.set_defaults(fn=cmd_show)
    p = sub.add_parser("download", parents=[common], help="download the raw files of real domains (internet)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(fn=cmd_download)
    return ap


def cli(argv: list[str] | None = None) -> int:
    """Entry point of ``dann-data``; returns the exit code (0 ok, 2 data or usage error)."""
    import dann.data  # noqa: F401  (registers the built-in domains)

    args = parser().parse_args(argv)
    try:
        if args.config:
            from dann.data.custom import load_domains_file

            load_domains_file(args.config)
        names = getattr(args, "names", None) or [getattr(args, "name", None)]
        unknown = [n for n in names if n is not None and n not in REGISTRY]
        if unknown:
            raise ConfigError(f"unknown domain{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
                              f"known domains: "
                              f"{', '.join(sorted(REGISTRY))} (declare your own with --config FILE.yaml)")
        return args.fn(args)
    except (DataError, ConfigError, OSError) as e:  # OSError: a read-only or full data root, named by its path
        print(f"dann-data: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
