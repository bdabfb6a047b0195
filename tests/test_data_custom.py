"""Custom domains declared in config (image folders, npz) and the mnist_m_regen recipe, on tiny fixtures."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_cfg
from dann.errors import ConfigError
from dann.data import load_split
from dann.data.custom import register_custom_domains
from dann.data.domains import CorruptDataError, get_domain
from dann.run.train import train

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
    with pytest.raises(ConfigError, match=r"domains\.mism\.test: the class folders .*'fox'.* differ"):
        register_custom_domains({"mism": {"kind": "image_folder", "train": str(tr), "test": str(te)}})
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"domains\.nocls\.train: .*one sub-folder per class"):
        register_custom_domains({"nocls": {"kind": "image_folder", "train": str(tmp_path / "empty"),
                                           "test_fraction": 0.5}})
    (tr / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    register_custom_domains({"broken": {"kind": "image_folder", "train": str(tr), "test_fraction": 0.5}})
    with pytest.raises(CorruptDataError, match="broken.png"):
        load_split("broken", "train", tmp_path / "root")
    assert not list((tmp_path / "root" / "cache").glob("custom-broken-*/*.pt"))


def test_image_size_resizes_and_mixed_sizes_need_it(tmp_path):
    tr = image_tree(tmp_path / "tr")
    Image.new("RGB", (12, 10), (9, 9, 9)).save(tr / "dog" / "big.png")
    register_custom_domains({"mixed": {"kind": "image_folder", "train": str(tr), "test_fraction": 0.25}})
    with pytest.raises(ConfigError, match=r"domains\.mixed\.image_size"):
        load_split("mixed", "train", tmp_path / "root")
    register_custom_domains({"sized": {"kind": "image_folder", "train": str(tr), "test_fraction": 0.25,
                                       "image_size": 16}})
    s = load_split("sized", "train", tmp_path / "root")
    assert s.x.shape == (10, 3, 16, 16)
    assert int(s.x[s.y == 0][0, 0, 8, 8]) in range(195, 216)  # a "cat" is still red after resizing


def test_npz_label_and_array_errors(tmp_path):
    x = np.zeros((6, 8, 8), np.uint8)
    cases = {
        "len": (dict(x=x, y=np.zeros(5, int)), r"y must be integer labels of shape \(6,\)"),
        "noy": (dict(x=x), r"must hold arrays 'x' and 'y'"),
        "neg": (dict(x=x, y=np.array([0, 1, 2, -1, 0, 1])), r"labels must lie in 0\.\.2"),
        "float_y": (dict(x=x, y=np.zeros(6)), r"y must be integer labels"),
        "c5": (dict(x=np.zeros((6, 8, 8, 5), np.uint8), y=np.zeros(6, int)), r"x must be uint8 of shape"),
        "empty": (dict(x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, int)), r"holds no samples"),
    }
    for name, (arrays, msg) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(ConfigError, match=rf"domains\.{name}\.train: .*{msg}"):
            register_custom_domains({name: {"kind": "npz", "train": str(tmp_path / f"{name}.npz"),
                                            "test_fraction": 0.5}})
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CorruptDataError, match="trunc.npz"):
        register_custom_domains({"trunc": {"kind": "npz", "train": str(tmp_path / "trunc.npz"), "test_fraction": 0.5}})


def test_declared_num_classes_and_all_or_nothing(tmp_path):
    good = str(npz(tmp_path / "ok.npz"))
    k5 = {"kind": "npz", "train": good, "test_fraction": 0.2, "num_classes": 5}
    assert register_custom_domains({"k5": k5}) == ["k5"]
    assert get_domain("k5").num_classes == 5
    with pytest.raises(ConfigError, match=r"domains\.second\.kind"):
        register_custom_domains({"first": {"kind": "npz", "train": good, "test_fraction": 0.2},
                                 "second": {"kind": "mat", "train": good}})
    with pytest.raises(KeyError):
        get_domain("first")  # one bad entry registers none
    with pytest.raises(ConfigError, match=r"domains\.mnist: 'mnist' is a built-in domain"):
        register_custom_domains({"mnist": {"kind": "npz", "train": good, "test_fraction": 0.2}})


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


def test_moving_an_image_to_another_class_gives_a_fresh_cache(tmp_path):
    tr = image_tree(tmp_path / "tr")
    spec = {"mv": {"kind": "image_folder", "train": str(tr), "test_fraction": 0.25}}
    register_custom_domains(spec)
    before = torch.cat([load_split("mv", s, tmp_path / "root").y for s in ("train", "test")])
    (tr / "cat" / "0.png").rename(tr / "dog" / "moved.png")  # a rename keeps size and mtime
    register_custom_domains(spec)
    after = torch.cat([load_split("mv", s, tmp_path / "root").y for s in ("train", "test")])
    assert torch.bincount(before).tolist() == [4, 4, 4] and torch.bincount(after).tolist() == [3, 5, 4]
    assert len(list((tmp_path / "root" / "cache").glob("custom-mv-*"))) == 2


def test_train_on_a_custom_pair_declared_in_config(tmp_path):
    src = npz(tmp_path / "s.npz", n=64, shape=(32, 32, 3))
    tgt = npz(tmp_path / "t.npz", n=64, shape=(32, 32, 3), seed=1)
    decl = []
    for name, path in (("csrc", src), ("ctgt", tgt)):
        decl += [f"+domains.{name}.kind=npz", f"+domains.{name}.train={path}", f"+domains.{name}.test_fraction=0.25"]
    # the recipe of conf/domains/example.yaml: an image pair's settings, its domains swapped
    cfg = make_cfg(tmp_path / "run", *decl, "pair=mnist_mnistm", "pair.name=custom", "pair.source=csrc",
                   "pair.target=ctgt", "data.batch_size=16", "data.src_val=8", "trainer.max_steps=20",
                   "trainer.val_check_interval=20", f"data.root={tmp_path / 'root'}")
    rec = train(cfg)
    assert rec["status"] == "finished" and rec["source"] == "csrc" and rec["steps"] == 20
    assert rec["pair"] == "custom" and 0 <= rec["metrics"]["test/tgt_acc"] <= 1
    assert len(list((tmp_path / "root" / "cache").glob("custom-c*-*/*.pt"))) == 4


def test_train_refuses_a_bad_declaration(tmp_path):
    cfg = make_cfg(tmp_path / "run", "+domains.oops.kind=csv", "+domains.oops.train=/x")
    with pytest.raises(ConfigError, match=r"domains\.oops\.kind: 'csv' .* allowed: image_folder, npz"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_domains_config_group_example_composes(tmp_path):
    cfg = make_cfg(tmp_path, "+domains=example", "pair=mnist_mnistm", "pair.source=my_photos")
    assert cfg.domains.my_photos.kind == "image_folder" and cfg.domains.my_arrays.kind == "npz"
    assert cfg.model.arch == "mnist" and cfg.pair.source == "my_photos"
    with pytest.raises(ConfigError, match=r"domains\.my_photos\.train: /data/my_photos/train is not an existing"):
        train(cfg)  # the example's paths are placeholders


def _prepare_after_barrier(barrier, decl: str, root: str, builds) -> None:
    """In a fresh process: register the domain, wait for the other process, then load both splits."""
    from dann.data import load_split
    from dann.data.custom import load_domains_file
    from dann.data.domains import REGISTRY

    load_domains_file(decl)
    d = REGISTRY["locked"]
    build = d.build

    def counted(r, split):
        builds.put(split)
        return build(r, split)

    d.build = counted
    barrier.wait()
    load_split("locked", "train", root)
    load_split("locked", "test", root)


def test_two_processes_preparing_one_domain_build_once_and_both_succeed(tmp_path):
    """Two sweep jobs preparing the same domain at once: one builds, the other waits on the lock."""
    import multiprocessing as mp

    tree = image_tree(tmp_path / "imgs", n=300, size=32)
    decl = tmp_path / "d.yaml"
    decl.write_text(f"domains:\n  locked:\n    kind: image_folder\n    train: {tree}\n    test_fraction: 0.2\n")
    ctx = mp.get_context("spawn")
    barrier, builds = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_prepare_after_barrier, args=(barrier, str(decl), str(tmp_path / "root"), builds))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    built = []
    while not builds.empty():
        built.append(builds.get())
    assert sorted(built) == ["test", "train"]  # each split built once, by one of the two processes
    assert len(list((tmp_path / "root" / "cache").glob("custom-locked-*/*.pt"))) == 2


def test_mean_of_pooled_or_source_only(tmp_path):
    """data.mean_of: the subtracted mean is both domains' training images' (default) or the source's only."""
    from dann.data.datamodule import DomainPairDataModule

    register_custom_domains({
        "toy_dark": {"kind": "image_folder", "train": str(image_tree(tmp_path / "d_tr")),
                     "test": str(image_tree(tmp_path / "d_te", n=2))},
        "toy_bright": {"kind": "npz", "train": str(npz(tmp_path / "b.npz", n=30, shape=(8, 8, 3))),
                       "test_fraction": 0.2},
    })
    root = tmp_path / "root"
    src = load_split("toy_dark", "train", root).x.double()
    tgt = load_split("toy_bright", "train", root).x.double()
    means = {}
    for mean_of in ("pooled", "source"):
        dm = DomainPairDataModule("toy_dark", "toy_bright", root=root, batch_size=4, mean_of=mean_of)
        dm.setup("fit")
        means[mean_of] = dm.src_train.mean.flatten()
    want_src = src.mean(dim=(0, 2, 3)) / 255
    want_pooled = (src.sum(dim=(0, 2, 3)) + tgt.sum(dim=(0, 2, 3))) / (src[:, 0].numel() + tgt[:, 0].numel()) / 255
    assert torch.allclose(means["source"].double(), want_src, atol=1e-6)
    assert torch.allclose(means["pooled"].double(), want_pooled, atol=1e-6)
    assert not torch.allclose(means["source"], means["pooled"], atol=1e-2)
    with pytest.raises(ValueError, match=r"data.mean_of='target'.*pooled, source"):
        DomainPairDataModule("toy_dark", "toy_bright", root=root, mean_of="target")
