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


def _saved_figures(monkeypatch, module) -> list:
    """The figures ``module`` saves, kept open for reading after they are written."""
    figs = []
    real = module.save_fig
    monkeypatch.setattr(module, "save_fig", lambda fig, path, **kw: (figs.append(fig), real(fig, path, **kw))[1])
    return figs


def test_tsne_class_panels_have_a_legend_for_the_colours_and_a_marker_per_domain(tmp_path, monkeypatch):
    """The by-class panel of the paper's t-SNE figure names each colour's class and tells source from
    target by the marker (the by-domain panel uses the same markers)."""
    from dann.report import features

    figs = _saved_figures(monkeypatch, features)
    rng = np.random.default_rng(0)
    fs, ft = rng.normal(size=(60, 8)), rng.normal(size=(60, 8)) + 1.0
    ys, yt = np.arange(60) % 3, np.arange(60) % 3
    features.save_tsne([("dann", fs, ft, ys, yt)], tmp_path / "t.png")
    (fig,) = figs
    by_domain, by_class = fig.axes[0], fig.axes[1]
    labels = [t.get_text() for t in by_class.get_legend().get_texts()]
    assert labels == ["class 0", "class 1", "class 2", "source", "target"], labels
    markers = {c.get_label(): c.get_paths()[0].vertices.tobytes() for c in by_class.collections}
    assert set(markers) == {"source", "target"} and markers["source"] != markers["target"]
    dom = {c.get_label(): c.get_paths()[0].vertices.tobytes() for c in by_domain.collections}
    assert dom == markers  # the same marker means the same domain in both panels


def test_learning_curve_panels_share_one_x_axis_from_step_0(tmp_path, monkeypatch):
    """A short run evaluates at its last step only: the accuracy panel still spans the steps the loss
    panel does, so the three panels line up."""
    from dann.report import figures

    rows = ["step,train/cls,train/lr,val/tgt_acc"] + [f"{s},0.5,0.01," for s in range(49, 1500, 50)] + ["1499,,,0.6"]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    figs = _saved_figures(monkeypatch, figures)
    figures.save_learning_curves(tmp_path / "metrics.csv", tmp_path / "c.png")
    (fig,) = figs
    lims = [tuple(round(v) for v in ax.get_xlim()) for ax in fig.axes]
    assert len(set(lims)) == 1 and lims[0][0] == 0 and lims[0][1] >= 1499, lims
