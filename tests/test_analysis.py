"""Proxy A-distance, t-SNE from two finished runs, learning curves."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import make_cfg
from dann.report.features import proxy_a_distance
from dann.report.figures import save_learning_curves
from dann.run.train import train

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


def test_evaluate_script_reproduces_the_recorded_target_and_feeds_a_third_domain(tmp_path):
    """Evaluating a run's own target test split gives its recorded test/tgt_acc exactly; a third,
    grey 28 px domain is converted like the pair's (3 channels, padded to 32); bad input is refused."""
    import json

    from test_data_custom import npz

    decl = []
    for name, path in (("esrc", npz(tmp_path / "s.npz", n=64, shape=(32, 32, 3))),
                       ("etgt", npz(tmp_path / "t.npz", n=64, shape=(32, 32, 3), seed=1)),
                       ("egrey", npz(tmp_path / "g.npz", n=40, shape=(28, 28), seed=2)),
                       ("efour", npz(tmp_path / "f.npz", n=40, shape=(32, 32, 3), k=4, seed=3))):
        decl += [f"+domains.{name}.kind=npz", f"+domains.{name}.train={path}", f"+domains.{name}.test_fraction=0.25"]
    runs = {}
    for m in ("source_only", "sa"):
        runs[m] = tmp_path / m
        rec = train(make_cfg(runs[m], *decl, "pair=mnist_mnistm", "pair.name=custom", "pair.source=esrc",
                             "pair.target=etgt", f"method={m}", "data.batch_size=16", "data.src_val=8",
                             "trainer.max_steps=20", "trainer.val_check_interval=20", f"data.root={tmp_path / 'root'}"))
        assert rec["status"] == "finished"
    script = [sys.executable, str(ROOT / "scripts" / "evaluate.py")]
    out = tmp_path / "xe.md"
    p = subprocess.run([*script, str(runs["source_only"]), "--domain", "etgt", "egrey", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    row = p.stdout.strip().splitlines()[-1].split(" | ")
    recorded = json.loads((runs["source_only"] / "results.json").read_text())["metrics"]["test/tgt_acc"]
    assert row[4] == f"{recorded:.4f}" and row[5] == f"{recorded:.4f} (n=16)"
    assert row[6].endswith("(n=10) |") and 0 <= float(row[6].split()[0]) <= 1
    assert out.read_text() == p.stdout
    p = subprocess.run([*script, str(runs["source_only"]), "--domain", "egrey", "--split", "all"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "(n=40)" in p.stdout
    for args, msg in (([str(runs["source_only"]), "--domain", "nosuch"], "unknown domain 'nosuch'"),
                      ([str(runs["source_only"]), "--domain", "efour"], "domain efour has 4 classes"),
                      ([str(runs["sa"]), "--domain", "etgt"], "evaluate the source-only run"),
                      ([str(tmp_path), "--domain", "etgt"], "no results.json")):
        p = subprocess.run([*script, *args], capture_output=True, text=True, timeout=300)
        assert p.returncode != 0 and msg in p.stderr and "Traceback" not in p.stderr, (args, p.stderr[-1500:])
