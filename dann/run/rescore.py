"""``dann-select rescore RUN_DIR...``: score every kept checkpoint of finished runs afterwards.

It lives with the builder (it rebuilds a run from its record), so that the scores in
:mod:`dann.selection` know no launcher.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import open_dict

from dann.data.custom import register_custom_domains
from dann.records import RESULTS_FILE
from dann.run.build import build_datamodule, build_method, received_config
from dann.run.checkpoints import load_checkpoint
from dann.selection.evaluations import EVALS_FILE, _line, save_predictions
from dann.selection.validators import evaluate_views, import_validators


def checkpoint_steps(run_dir: Path) -> list[tuple[int, Path]]:
    """``checkpoints/step=NNNNNN.ckpt`` files of a run (``checkpoint.keep_all=true``), by step."""
    out = []
    for p in (run_dir / "checkpoints").glob("step=*.ckpt"):
        try:
            out.append((int(p.stem.split("=")[1]), p))
        except ValueError:
            continue
    return sorted(out)


def run_folders(paths: Sequence[str | Path]) -> list[Path]:
    """The run folders under ``paths``: a run folder itself, or a sweep folder (every folder
    below it holding a ``results.json``), as ``dann-table`` takes them. Files are skipped, so a
    shell's ``sweep/*`` may be passed as it expands (``multirun.yaml``, ``summary.md``)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / RESULTS_FILE).is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(r.parent for r in p.rglob(RESULTS_FILE))
        elif not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
    return list(dict.fromkeys(out))


def rescore(run_dir: str | Path, samples: int = 2000, seed: int = 0,
            progress: Callable[[Any], Any] | None = None, root: str | Path | None = None) -> list[dict[str, Any]]:
    """Score every kept checkpoint of a finished run and (re)write its ``evaluations.jsonl`` and
    ``predictions/``.

    The run must have been trained with ``checkpoint.keep_all=true``; its config comes from
    its ``results.json``, checked as a received file's (:func:`dann.run.build.received_config`);
    the domains are read from ``root``, else ``$DANN_DATA_DIR`` (never the record's
    ``data.root``). The file is written whole to a temporary name, then renamed.
    """
    run_dir = Path(run_dir)
    rec_path = run_dir / RESULTS_FILE
    if not rec_path.exists():
        raise FileNotFoundError(f"{rec_path} does not exist: rescore needs a run folder with its results.json")
    try:
        rec = json.loads(rec_path.read_text())
    except ValueError as e:
        raise ValueError(f"{rec_path} is not a run record ({e})") from None
    cfg = received_config(rec if isinstance(rec, dict) else {}, rec_path)
    with open_dict(cfg):
        cfg.setdefault("data", {})
        cfg.data.root = str(root) if root is not None else None
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise FileNotFoundError(f"no checkpoints/step=*.ckpt in {run_dir}: train with checkpoint.keep_all=true "
                                f"to rescore afterwards")
    register_custom_domains(cfg.get("domains"))
    dm = build_datamodule(cfg)
    dm.setup("fit")
    model = build_method(cfg, dm.input_shape, dm.num_classes, start=False)  # each checkpoint's weights, below
    rows = []
    for step, path in (progress or (lambda x: x))(steps):
        state = load_checkpoint(path)["state_dict"]  # refuses a file that would run code
        model.load_state_dict(state)
        scores, views = evaluate_views(model, dm, samples, seed)
        save_predictions(run_dir, step, views.tgt_probs)
        rows.append({"step": step, **scores})
    tmp = run_dir / (EVALS_FILE + ".tmp")
    tmp.write_text("".join(_line(row) + "\n" for row in rows))
    os.replace(tmp, run_dir / EVALS_FILE)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``dann-select rescore RUN_DIR...``: score every kept checkpoint of finished runs."""
    import argparse

    from tqdm import tqdm

    ap = argparse.ArgumentParser(prog="dann-select", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rescore", help="(re)write evaluations.jsonl of runs trained with checkpoint.keep_all=true")
    r.add_argument("run_dirs", nargs="+", help="run folders, or sweep folders holding them")
    r.add_argument("--samples", type=int, default=2000, help="target/source training samples the scores use")
    r.add_argument("--root", help="data root holding the domains (default: $DANN_DATA_DIR, else ~/.cache/dann)")
    r.add_argument("--validators", metavar="MODULE", action="append", default=[],
                   help="also import this module's @validator functions (repeatable), as validator_modules does "
                        "for dann-train")
    a = ap.parse_args(argv)
    try:
        import_validators(a.validators)
        runs = run_folders(a.run_dirs)
    except (ValueError, FileNotFoundError) as e:
        print(f"dann-select: error: {e}", file=sys.stderr)
        return 2
    if not runs:
        print(f"dann-select: error: no run folder (with a results.json) in {' '.join(a.run_dirs)}", file=sys.stderr)
        return 2
    failed = 0
    for d in runs:
        try:
            rows = rescore(d, a.samples, progress=lambda xs: tqdm(xs, desc=str(d), unit="ckpt"), root=a.root)
        except (FileNotFoundError, ValueError) as e:
            print(f"dann-select: {d}: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"{d}: {len(rows)} evaluation{'s' if len(rows) != 1 else ''} -> {Path(d) / EVALS_FILE}")
    return 1 if failed else 0


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
