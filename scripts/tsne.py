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
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dann.analysis import extract_features, proxy_a_distance, save_tsne
from dann.train import build_datamodule, build_method


def load_run(run_dir: Path):
    rec = json.loads((run_dir / "results.json").read_text())
    cfg = OmegaConf.create(rec["config"])
    from dann.data.custom import register_custom_domains

    register_custom_domains(cfg.get("domains"))
    dm = build_datamodule(cfg)
    dm.setup("test")
    model = build_method(cfg, dm.input_shape, dm.num_classes)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.exists():
        raise SystemExit(f"{ckpt} not found: t-SNE needs the run's final checkpoint (checkpoint.keep=true)")
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    return rec, dm, model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("tsne.png"))
    ap.add_argument("--n", type=int, default=1000, help="points per domain")
    a = ap.parse_args(argv)
    panels = []
    for run in a.runs:
        rec, dm, model = load_run(run)
        fs, ys = extract_features(model.features, dm.src_test, a.n)
        ft, yt = extract_features(model.features, dm.tgt_test, a.n)
        pad = proxy_a_distance(fs, ft)
        title = f"{rec['method']} (tgt acc {rec['metrics'].get('test/tgt_acc', float('nan')):.3f}, PAD {pad:.2f})"
        print(f"{run}: {title}")
        panels.append((title, fs, ft, ys, yt))
    save_tsne(panels, a.out)
    print(f"t-SNE: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
