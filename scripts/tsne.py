#!/usr/bin/env python
"""t-SNE of source and target features for finished runs, side by side (the paper's figure).

    python scripts/tsne.py RUN_DIR [RUN_DIR ...] --out tsne.png [--n 1000]

Each RUN_DIR is a run directory holding results.json and checkpoints/last.ckpt (e.g. a
source-only and a DANN run on the same pair). Features are the feature extractor's output on
the test splits (a seeded subsample of --n points per domain). Also prints each run's proxy
A-distance on the same features.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dann.install import require_torch_pair
from dann.report.render import plain


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("tsne.png"))
    ap.add_argument("--n", type=int, default=1000, help="points per domain")
    a = ap.parse_args(argv)
    if a.n < 2:
        ap.error(f"--n {a.n}: give at least 2 points per domain")
    require_torch_pair("tsne.py")  # before torchvision is imported: one line if it cannot be
    from dann.report.features import extract_features, proxy_a_distance, save_tsne
    from dann.run.build import RECEIVED_ERRORS, load_run
    panels = []
    for run in a.runs:
        try:
            rec, dm, model = load_run(run)
        except RECEIVED_ERRORS as e:  # e.g. a checkpoint refused as unsafe, a record that is not one
            print(f"tsne: error: {run}: {e.args[0] if e.args else e}", file=sys.stderr)
            return 2
        fs, ys = extract_features(model.features, dm.src_test, a.n)
        ft, yt = extract_features(model.features, dm.tgt_test, a.n)
        pad = proxy_a_distance(fs, ft)
        acc = rec["metrics"].get("test/tgt_acc")
        title = f"{plain(rec['method'])} (tgt acc {acc if acc is None else f'{acc:.3f}'}, PAD {pad:.2f})"
        print(f"{run}: {title}")
        panels.append((title.replace("$", r"\$"), fs, ft, ys, yt))  # a $ would start matplotlib's math mode
    try:
        save_tsne(panels, a.out)
    except OSError as e:
        print(f"tsne: error: --out {a.out}: cannot write it ({e.strerror}); give a writable path", file=sys.stderr)
        return 2
    print(f"t-SNE: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
