"""Proxy A-distance, t-SNE from two finished runs, learning curves."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import make_cfg
from dann.analysis import proxy_a_distance, save_learning_curves
from dann.train import train

ROOT = Path(__file__).resolve().parent.parent


def test_pad_identical_near_zero_separable_near_two():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1000, 20)), rng.normal(size=(1000, 20))
    assert abs(proxy_a_distance(a, b)) < 0.2
    c = rng.normal(size=(1000, 20)) + 3.0
    assert proxy_a_distance(a, c) > 1.9


def test_tsne_script_from_two_tiny_runs_and_curves(tmp_path):
    runs = []
    for m in ("source_only", "dann"):
        train(make_cfg(tmp_path / m, f"method={m}", "trainer.max_steps=60", "trainer.val_check_interval=30",
                       "trainer.log_every_n_steps=10", "logger=csv"))
        runs.append(tmp_path / m)
    png = tmp_path / "tsne.png"
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "tsne.py"), *map(str, runs), "--out", str(png),
                          "--n", "150"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "PAD" in out.stdout
    with Image.open(png) as im:
        assert im.width > 500 and im.height > 500
    curves = tmp_path / "dann" / "learning_curves.png"
    assert curves.exists()  # written by every run
    assert save_learning_curves(tmp_path / "dann" / "metrics.csv", tmp_path / "c.png").exists()
    import json

    rec = json.loads((tmp_path / "dann" / "results.json").read_text())
    assert -2.0 <= rec["metrics"]["test/pad"] <= 2.0
