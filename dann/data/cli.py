"""``dann-data``: list, prepare (build the cache), show (a PNG grid per class) and download domains.

    dann-data list
    dann-data prepare mnist mnist_m [--root DIR]
    dann-data show syn_signs_gen [--per-class 8] [--out grid.png]
    dann-data download mnist_m            (needs internet; checks the pinned checksum)
    dann-data --config my_domains.yaml prepare my_photos    (custom domains from a YAML file)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from dann.data.domains import REGISTRY, SPLITS, DataError, cache_path, default_root, get_domain, load_split


def _root(args) -> Path:
    return Path(args.root).expanduser() if args.root else default_root()


def cmd_list(args) -> None:
    root = _root(args)
    print(f"data root: {root}")
    for name in sorted(REGISTRY):
        d = REGISTRY[name]
        cached = all(cache_path(root, d.cache_key or name, s).exists() for s in SPLITS) if d.cache else None
        state = "generated on the fly" if cached is None else ("cached" if cached else "not prepared")
        print(f"  {name:16s} {d.num_classes:3d} classes  {state:20s} {d.doc}")


def cmd_prepare(args) -> None:
    root = _root(args)
    for name in args.names:
        for split in SPLITS:
            t = time.time()
            s = load_split(name, split, root)
            built = time.time() - t
            t = time.time()
            load_split(name, split, root)
            loaded = time.time() - t
            print(f"{name}/{split}: {len(s):,} samples, x {tuple(s.x.shape[1:])} {s.x.dtype}, "
                  f"{int(s.y.max()) + 1} classes; prepared in {built:.1f} s, loads from cache in {loaded:.2f} s")


def class_grid(x: torch.Tensor, y: torch.Tensor, num_classes: int, per_class: int, seed: int = 0) -> torch.Tensor:
    """(3, K*H, per_class*W) uint8 image: row k holds ``per_class`` random samples of class k."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = x.shape[1:]
    rows = torch.zeros(num_classes, per_class, 3, h, w, dtype=torch.uint8)
    for k in range(num_classes):
        idx = (y == k).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)[:per_class]]
        rows[k, :len(idx)] = x[idx].expand(-1, 3, -1, -1) if c == 1 else x[idx]
    return rows.permute(2, 0, 3, 1, 4).reshape(3, num_classes * h, per_class * w)


def cmd_show(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = _root(args)
    name = args.name
    d = get_domain(name)
    splits = {s: load_split(name, s, root) for s in SPLITS}
    for s, v in splits.items():
        counts = torch.bincount(v.y, minlength=d.num_classes).tolist()
        print(f"{name}/{s}: {len(v):,} samples, x {tuple(v.x.shape[1:])}; per class: {counts}")
    tr = splits["train"]
    if tr.x.dtype != torch.uint8 or tr.x.dim() != 4:
        raise SystemExit(f"{name} holds features {tuple(tr.x.shape)}, not images: nothing to draw")
    grid = class_grid(tr.x, tr.y, d.num_classes, args.per_class)
    out = Path(args.out) if args.out else root / "grids" / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    h = tr.x.shape[2]
    fig, ax = plt.subplots(figsize=(max(3.0, args.per_class * 0.45 + 0.6), d.num_classes * 0.45 + 0.6), dpi=100)
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_yticks([h * (k + 0.5) for k in range(d.num_classes)], [str(k) for k in range(d.num_classes)], fontsize=6)
    ax.set_xticks([])
    ax.set_title(f"{name}: {args.per_class} training samples per class", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    print(f"grid: {out}")


def cmd_download(args) -> None:
    from dann.data.real import download

    for name in args.names:
        download(name, _root(args))


def cli(argv: list[str] | None = None) -> int:
    import dann.data  # noqa: F401  (registers the built-in domains)

    ap = argparse.ArgumentParser(prog="dann-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="data root (default: $DANN_DATA_DIR or ~/.cache/dann)")
    ap.add_argument("--config", help="YAML file with a `domains:` mapping of custom domains to register first")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every domain, its classes, whether it is cached").set_defaults(fn=cmd_list)
    p = sub.add_parser("prepare", help="build the cache of each split")
    p.add_argument("names", nargs="+")
    p.set_defaults(fn=cmd_prepare)
    p = sub.add_parser("show", help="write a PNG grid of samples per class")
    p.add_argument("name")
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument("--out")
    p.set_defaults(fn=cmd_show)
    p = sub.add_parser("download", help="download the raw files (needs internet)")
    p.add_argument("names", nargs="+")
    p.set_defaults(fn=cmd_download)
    args = ap.parse_args(argv)
    try:
        if args.config:
            from dann.data.custom import load_domains_file

            load_domains_file(args.config)
        args.fn(args)
    except (DataError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"dann-data: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
