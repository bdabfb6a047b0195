"""``dann-data`` list / prepare / show on the moons and on custom domains from a YAML file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dann.data.cli import PAD, cli


@pytest.fixture
def decl(tmp_path) -> Path:
    """A YAML file declaring ``cli_toy``: 30 grey 8x8 images, labels 0,1,2,0,..., 20% held out."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", x=rng.integers(0, 256, (30, 8, 8), dtype=np.uint8), y=np.arange(30) % 3)
    p = tmp_path / "d.yaml"
    p.write_text(f"domains:\n  cli_toy:\n    kind: npz\n    train: {tmp_path / 'a.npz'}\n    test_fraction: 0.2\n")
    return p


def test_list_prepare_then_list_again(tmp_path, decl, capsys):
    root = tmp_path / "root"
    assert cli(["--root", str(root), "--config", str(decl), "list"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:]}
    assert "generated on the fly" in lines["moons"] and "generated on the fly" in lines["moons_rot35"]
    assert "3 classes  not prepared" in lines["cli_toy"] and "custom npz" in lines["cli_toy"]
    assert "mnist" in lines and "10 classes" in lines["mnist"]

    # options after the subcommand work too
    assert cli(["prepare", "cli_toy", "moons", "--root", str(root), "--config", str(decl)]) == 0
    out = capsys.readouterr().out
    assert "cli_toy/train: 24 samples, x (1, 8, 8) torch.uint8, 3 classes; prepared in" in out
    assert "cli_toy/test: 6 samples" in out and "loads from the cache in" in out
    assert "moons/train: 300 samples, x (2,) torch.float32" in out and "moons/test: 1,000 samples" in out
    caches = sorted(p.name for p in (root / "cache").glob("custom-cli_toy-*/*.pt"))
    assert caches == ["test.pt", "train.pt"]
    assert not (root / "cache" / "moons").exists()  # generated on the fly, never cached

    assert cli(["list", "--root", str(root), "--config", str(decl)]) == 0
    assert "3 classes  cached" in capsys.readouterr().out
    assert cli(["prepare", "cli_toy", "--root", str(root), "--config", str(decl)]) == 0
    assert "already cached, loaded in" in capsys.readouterr().out


def test_show_writes_a_grid_one_row_per_class(tmp_path, decl, capsys):
    root = tmp_path / "root"
    assert cli(["show", "cli_toy", "--per-class", "4", "--root", str(root), "--config", str(decl)]) == 0
    out = capsys.readouterr().out
    assert "cli_toy/train: 24 samples, x (1, 8, 8); per class: [8, 8, 8]" in out
    assert "cli_toy/test: 6 samples" in out
    png = root / "grids" / "cli_toy.png"  # the default place
    assert str(png) in out
    with Image.open(png) as im:
        img = np.asarray(im.convert("RGB"))
    label_w = img.shape[1] - (4 * (8 + PAD) + PAD)
    assert img.shape[0] == 3 * (8 + PAD) + PAD and 8 <= label_w <= 40  # 3 rows of 8-px cells, 4 columns
    # every cell is a training image of its row's class (grey -> equal channels)
    x = np.load(tmp_path / "a.npz")["x"]
    y = np.arange(30) % 3
    for k in range(3):
        for j in range(4):
            top, left = PAD + k * (8 + PAD), label_w + PAD + j * (8 + PAD)
            cell = img[top:top + 8, left:left + 8]
            assert (cell[..., 0] == cell[..., 2]).all()
            assert any((cell[..., 0] == x[i]).all() for i in np.flatnonzero(y == k)), (k, j)
    assert (img[:, :label_w] < 128).any()  # the class labels are drawn


def test_show_with_few_samples_and_custom_out(tmp_path, capsys):
    img_root = tmp_path / "imgs"
    for cls, n in (("a", 1), ("b", 3)):
        (img_root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (6, 6), (250, 10, 10)).save(img_root / cls / f"{i}.png")
    decl = tmp_path / "d.yaml"
    decl.write_text(f"domains:\n  few:\n    kind: image_folder\n    train: {img_root}\n    test: {img_root}\n")
    out = tmp_path / "sub" / "g.png"
    assert cli(["--config", str(decl), "--root", str(tmp_path / "r"), "show", "few", "--per-class", "3",
                "--out", str(out)]) == 0
    img = np.asarray(Image.open(out).convert("RGB"))
    label_w = img.shape[1] - (3 * (6 + PAD) + PAD)
    assert img.shape[0] == 2 * (6 + PAD) + PAD
    first, second = (img[PAD:PAD + 6, label_w + PAD + j * 8:label_w + PAD + j * 8 + 6] for j in (0, 1))
    assert (first == (250, 10, 10)).all() and (second == 0).all()  # class "a" has one image: the rest black


def test_errors_exit_2_with_one_message(tmp_path, decl, capsys):
    assert cli(["--root", str(tmp_path), "prepare", "mnits"]) == 2
    err = capsys.readouterr().err
    assert "unknown domain 'mnits'" in err and "mnist_m" in err and "moons" in err
    assert cli(["--root", str(tmp_path), "show", "moons"]) == 2
    assert "not images" in capsys.readouterr().err
    assert cli(["--config", str(tmp_path / "nope.yaml"), "list"]) == 2
    assert "nope.yaml: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("domains:\n  b:\n    kind: tfrecord\n    train: /x\n")
    assert cli(["--config", str(bad), "list"]) == 2
    assert "domains.b.kind: 'tfrecord'" in capsys.readouterr().err
    # a data-layer error (undecodable image) while preparing
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "a" / "0.png").write_bytes(b"not a png")
    bad.write_text(f"domains:\n  broken:\n    kind: image_folder\n    train: {tmp_path / 'imgs'}\n"
                   f"    test_fraction: 0.5\n")
    assert cli(["prepare", "broken", "--config", str(bad), "--root", str(tmp_path / "r")]) == 2
    assert "cannot decode" in capsys.readouterr().err


def test_module_entry_point_exit_code_and_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dann.data.cli", "show", "nope", "--root", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("dann-data: error: unknown domain 'nope'; known domains:")
