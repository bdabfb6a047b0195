"""Custom domains from config, the dann-data CLI, and the mnist_m_regen recipe on tiny fixtures."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_cfg
from dann.config import ConfigError
from dann.data import load_split
from dann.data.cli import cli
from dann.data.custom import register_custom_domains
from dann.data.domains import CorruptDataError, DatasetNotFoundError, get_domain
from dann.train import train
from test_data_real import pin_mnist, write_idx

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "eel": (30, 30, 200)}


def image_tree(base: Path, n: int = 4, size: int = 8) -> Path:
    for cls, c in COLOURS.items():
        (base / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (size, size), tuple(min(255, v + 5 * i) for v in c)).save(base / cls / f"{i}.png")
    return base


def npz(path: Path, n: int = 20, shape=(8, 8), k: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, (n, *shape), dtype=np.uint8), y=np.arange(n) % k)
    return path


def test_image_folder_domain_through_cache(tmp_path):
    tr, te = image_tree(tmp_path / "tr"), image_tree(tmp_path / "te", n=2)
    register_custom_domains({"toy_imgs": {"kind": "image_folder", "train": str(tr), "test": str(te)}})
    assert get_domain("toy_imgs").num_classes == 3
    s = load_split("toy_imgs", "train", tmp_path / "root")
    assert s.x.shape == (12, 3, 8, 8) and s.x.dtype == torch.uint8
    assert s.y.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # classes sorted by folder name
    assert s.x[4, 1, 0, 0] == 200  # a "dog" is green
    assert len(load_split("toy_imgs", "test", tmp_path / "root")) == 6
    assert list((tmp_path / "root" / "cache").glob("custom-toy_imgs-*/train.pt"))


def test_npz_grey_and_colour_and_test_fraction(tmp_path):
    register_custom_domains({
        "toy_grey": {"kind": "npz", "train": str(npz(tmp_path / "g.npz")), "test_fraction": 0.25},
        "toy_rgb": {"kind": "npz", "train": str(npz(tmp_path / "c.npz", shape=(8, 8, 3))),
                    "test": str(npz(tmp_path / "c2.npz", n=6, shape=(8, 8, 3))), "image_size": 16},
    })
    tr, te = load_split("toy_grey", "train", tmp_path), load_split("toy_grey", "test", tmp_path)
    assert tr.x.shape == (15, 1, 8, 8) and te.x.shape == (5, 1, 8, 8)
    d = np.load(tmp_path / "g.npz")
    both = torch.cat([tr.x, te.x]).flatten(1)
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, torch.from_numpy(d["x"]).flatten(1).tolist()))
    rgb = load_split("toy_rgb", "train", tmp_path)
    assert rgb.x.shape == (20, 3, 16, 16)


@pytest.mark.parametrize("entry, key", [
    ({"kind": "csv", "train": "x"}, "kind"),
    ({"kind": "npz"}, "train"),
    ({"kind": "npz", "train": "/no/such.npz", "test_fraction": 0.2}, "train"),
    ({"kind": "npz", "train": "{npz}"}, "test"),
    ({"kind": "npz", "train": "{npz}", "test_fraction": 1.5}, "test_fraction"),
    ({"kind": "npz", "train": "{npz}", "test_fraction": 0.2, "colour": 1}, "colour"),
    ({"kind": "npz", "train": "{bad_dtype}", "test_fraction": 0.2}, "train"),
    ({"kind": "npz", "train": "{npz}", "test_fraction": 0.2, "num_classes": 2}, "train"),
])
def test_bad_declarations_name_the_key(tmp_path, entry, key):
    good = npz(tmp_path / "ok.npz")
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 8, 8), np.float32), y=np.zeros(4, int))
    entry = {k: (str(v).format(npz=good, bad_dtype=tmp_path / "bad.npz") if isinstance(v, str) else v)
             for k, v in entry.items()}
    with pytest.raises(ConfigError, match=rf"domains\.bad_dom\.{key}"):
        register_custom_domains({"bad_dom": entry})


def test_class_folders_must_match_and_images_must_decode(tmp_path):
    tr = image_tree(tmp_path / "tr")
    te = image_tree(tmp_path / "te")
    (te / "fox").mkdir()
    Image.new("RGB", (8, 8)).save(te / "fox" / "0.png")
    register_custom_domains({"mism": {"kind": "image_folder", "train": str(tr), "test": str(te)}})
    with pytest.raises(ConfigError, match="differ from the train"):
        load_split("mism", "test", tmp_path / "root")
    (tr / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    register_custom_domains({"broken": {"kind": "image_folder", "train": str(tr), "test_fraction": 0.5}})
    with pytest.raises(CorruptDataError, match="broken.png"):
        load_split("broken", "train", tmp_path / "root")
    assert not list((tmp_path / "root" / "cache").glob("custom-broken-*/*.pt"))


def test_editing_the_folder_gives_a_fresh_cache(tmp_path):
    tr = image_tree(tmp_path / "tr")
    spec = {"ed": {"kind": "image_folder", "train": str(tr), "test_fraction": 0.25}}
    register_custom_domains(spec)
    assert len(load_split("ed", "train", tmp_path / "root")) == 9
    time.sleep(0.01)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tr / "eel" / "new.png")
    register_custom_domains(spec)
    assert len(load_split("ed", "train", tmp_path / "root")) == 10
    assert len(list((tmp_path / "root" / "cache").glob("custom-ed-*"))) == 2


def test_train_on_a_custom_pair_declared_in_config(tmp_path):
    src, tgt = npz(tmp_path / "s.npz", n=64, shape=(32, 32, 3)), npz(tmp_path / "t.npz", n=64, shape=(32, 32, 3), seed=1)
    decl = []
    for name, path in (("csrc", src), ("ctgt", tgt)):
        decl += [f"+domains.{name}.kind=npz", f"+domains.{name}.train={path}", f"+domains.{name}.test_fraction=0.25"]
    cfg = make_cfg(tmp_path / "run", *decl, "pair.source=csrc", "pair.target=ctgt", "pair.channels=3",
                   "pair.image_size=32", "model=mnist", "data.batch_size=16", "trainer.max_steps=10",
                   "trainer.val_check_interval=10", f"data.root={tmp_path / 'root'}")
    rec = train(cfg)
    assert rec["status"] == "finished" and rec["source"] == "csrc" and 0 <= rec["metrics"]["test/tgt_acc"] <= 1


def test_domains_config_group_example_composes(tmp_path):
    cfg = make_cfg(tmp_path, "+domains=example")
    assert cfg.domains.my_photos.kind == "image_folder" and cfg.domains.my_arrays.kind == "npz"


# ------------------------------------------------------------------------------ dann-data CLI
def test_cli_list_prepare_show(tmp_path, capsys):
    decl = tmp_path / "d.yaml"
    decl.write_text(f"domains:\n  cli_toy:\n    kind: npz\n    train: {npz(tmp_path / 'a.npz', n=30)}\n"
                    f"    test_fraction: 0.2\n")
    base = ["--root", str(tmp_path / "root"), "--config", str(decl)]
    assert cli(base + ["list"]) == 0
    out = capsys.readouterr().out
    assert "moons" in out and "cli_toy" in out and "not prepared" in out
    assert cli(base + ["prepare", "cli_toy"]) == 0
    out = capsys.readouterr().out
    assert "cli_toy/train: 24 samples" in out and "cli_toy/test: 6 samples" in out
    assert len(list((tmp_path / "root" / "cache").glob("custom-cli_toy-*/*.pt"))) == 2
    png = tmp_path / "grid.png"
    assert cli(base + ["show", "cli_toy", "--per-class", "4", "--out", str(png)]) == 0
    with Image.open(png) as im:
        assert im.width > 100 and im.height > 100


def test_cli_unknown_domain_exit_code_2(tmp_path, capsys):
    assert cli(["--root", str(tmp_path), "prepare", "mnits"]) == 2
    err = capsys.readouterr().err
    assert "unknown domain 'mnits'" in err and "mnist_m" in err


# ------------------------------------------------------------------------------ mnist_m_regen
def bsds_folder(root: Path, n: int = 3) -> None:
    d = root / "BSR" / "BSDS500" / "data" / "images" / "train"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=95)


def test_mnist_m_regen_recipe(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw)
    pin_mnist(monkeypatch, raw)
    with pytest.raises(DatasetNotFoundError, match="BSR_bsds500.tgz"):
        load_split("mnist_m_regen", "train", tmp_path)
    bsds_folder(tmp_path)
    s = load_split("mnist_m_regen", "train", tmp_path)
    m = load_split("mnist", "train", tmp_path)
    assert s.x.shape == (len(m), 3, 32, 32) and torch.equal(s.y, m.y)
    from dann.data import mnistm

    photos = mnistm.bsds_photos(tmp_path)
    digits = (torch.zeros(len(m), 32, 32, dtype=torch.uint8)).numpy()  # blank digits: output = the patch
    patches = mnistm.blend(digits, photos, seed=1)
    flat = [p.reshape(-1, 3) for p in photos]
    assert all(any((f == patches[i].reshape(-1, 3)[0]).all(1).any() for f in flat) for i in range(len(patches)))
    again = load_split("mnist_m_regen", "train", tmp_path)
    assert torch.equal(again.x, s.x)  # deterministic (and from the cache)
    assert not torch.equal(torch.from_numpy(mnistm.blend(digits, photos, seed=2)), torch.from_numpy(patches))
