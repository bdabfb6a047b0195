"""The offline generators: mnist_m_regen (dann.data.mnistm), syn_numbers_gen and syn_signs_gen (dann.data.synth)."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dann.data import DatasetNotFoundError, get_domain, load_split, mnistm, real, synth
from dann.data.domains import cache_path


# --------------------------------------------------------------------------------- helpers
def cnn_accuracy(x: torch.Tensor, y: torch.Tensor, n_train: int, num_classes: int, grey: bool, side: int,
                 epochs: int = 8, seed: int = 0) -> float:
    """Held-out accuracy of a tiny CNN trained on the first ``n_train`` images (seconds on a CPU).

    Images are shrunk to ``side`` and standardised per image; grey inputs are flipped so that the
    centre (where the labelled digit is) is brighter than the rest, which removes the colour polarity.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only contend (70x slower on a loaded 2-core box)
    try:
        return _cnn_accuracy(x, y, n_train, num_classes, grey, side, epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _cnn_accuracy(x, y, n_train, num_classes, grey, side, epochs, seed) -> float:
    torch.manual_seed(seed)
    x = torch.nn.functional.interpolate(x.float(), size=(side, side), mode="area")
    if grey:
        x = x.mean(1, keepdim=True)
    x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / (x.std(dim=(1, 2, 3), keepdim=True) + 1e-3)
    if grey:
        q = side // 4
        centre = x[..., q:side - q, q:side - q].mean(dim=(1, 2, 3))
        x = x * torch.where(centre >= 0, 1.0, -1.0).view(-1, 1, 1, 1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(x.shape[1], 12, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(12, 24, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(24 * (side // 4) ** 2, num_classes))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(n_train, generator=g)
        for i in range(0, n_train, 64):
            b = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(net(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float((net(x[n_train:]).argmax(1) == y[n_train:]).float().mean())


def assert_images(s, n, c, side, num_classes):
    assert s.x.shape == (n, c, side, side) and s.x.dtype == torch.uint8
    assert s.y.shape == (n,) and s.y.dtype == torch.int64
    assert int(s.y.min()) >= 0 and int(s.y.max()) < num_classes
    std = s.x.float().flatten(1).std(1)
    assert float(std.min()) > 6.0, f"a blank image (per-image std {float(std.min()):.2f})"


# ------------------------------------------------------------------------------ SynNumbers
# Accuracy floors of the linear probes below; measured (see the report in dann/data/synth.py's history):
# digits ~0.75, signs ~0.5 with these seeds and sizes; chance is 0.1 and 0.023.
NUMBERS_FLOOR = 0.4
SIGNS_FLOOR = 0.2


def test_syn_numbers_deterministic_shapes_and_balance():
    a = synth.generate_syn_numbers(120, seed=5, workers=1)
    b = synth.generate_syn_numbers(120, seed=5, workers=1)
    c = synth.generate_syn_numbers(120, seed=6, workers=1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert_images(a, 120, 3, 32, 10)
    assert torch.bincount(a.y, minlength=10).tolist() == [12] * 10


def test_results_do_not_depend_on_the_number_of_workers(monkeypatch):
    monkeypatch.setattr(synth, "CHUNK", 16)  # several chunks from few images
    one = synth.generate_syn_numbers(64, seed=3, workers=1)
    two = synth.generate_syn_numbers(64, seed=3, workers=2)
    assert torch.equal(one.x, two.x) and torch.equal(one.y, two.y)
    s1 = synth.generate_syn_signs(48, seed=3, workers=1)
    s2 = synth.generate_syn_signs(48, seed=3, workers=2)
    assert torch.equal(s1.x, s2.x) and torch.equal(s1.y, s2.y)


def test_chunks_are_seeded_by_seed_and_index_only(monkeypatch):
    """The first chunk of a longer set equals a set of one chunk: images do not depend on n."""
    monkeypatch.setattr(synth, "CHUNK", 20)
    long = synth.generate_syn_numbers(60, seed=11, workers=1)
    short = synth.generate_syn_numbers(20, seed=11, workers=1)
    # labels are a permutation of the whole set, so compare images of equal labels only via re-rendering:
    # chunk 0 of both runs used the same RNG stream; where the labels agree the images agree
    same = long.y[:20] == short.y
    assert same.any()
    assert torch.equal(long.x[:20][same], short.x[same])


@pytest.mark.parametrize("font", synth.DIGIT_FONTS)
def test_every_digit_font_renders_ten_distinct_digits(font):
    f = synth._font(font, 40)
    masks = []
    for d in "0123456789":
        im = Image.new("L", (60, 60), 0)
        from PIL import ImageDraw

        ImageDraw.Draw(im).text((30, 30), d, font=f, fill=255, anchor="mm")
        m = np.asarray(im, np.float32) / 255
        assert m.sum() > 20, f"{font} draws no ink for {d}"
        masks.append(m)
    for i in range(10):
        for j in range(i):
            assert np.abs(masks[i] - masks[j]).sum() > 15, f"{font}: {i} and {j} look the same"


def test_syn_numbers_all_digits_present():
    assert torch.unique(synth.generate_syn_numbers(200, seed=9, workers=1).y).tolist() == list(range(10))


def test_syn_numbers_centre_digit_is_learnable():
    """A tiny CNN on 2,000 images beats chance (10%) on 500 held-out ones by far; with shuffled labels it cannot."""
    s = synth.generate_syn_numbers(2500, seed=21)
    acc = cnn_accuracy(s.x, s.y, 2000, 10, grey=True, side=16)
    assert acc > 0.6, f"accuracy {acc:.3f} on held-out synthetic digits"
    scrambled = s.y[torch.randperm(2500, generator=torch.Generator().manual_seed(0))]
    assert cnn_accuracy(s.x, scrambled, 2000, 10, grey=True, side=16) < 0.25  # so the test can fail


# -------------------------------------------------------------------------------- SynSigns
def test_syn_signs_deterministic_shapes_and_balance():
    a = synth.generate_syn_signs(43 * 4, seed=5, workers=1)
    b = synth.generate_syn_signs(43 * 4, seed=5, workers=1)
    c = synth.generate_syn_signs(43, seed=6, workers=1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x[:43], c.x)
    assert_images(a, 43 * 4, 3, 40, 43)
    assert torch.bincount(a.y, minlength=43).tolist() == [4] * 43


def test_sign_templates_are_43_distinct_drawings():
    t = np.stack([np.asarray(im.convert("RGBA"), np.float32) for im in synth.sign_templates()])
    assert t.shape == (43, synth.TPL, synth.TPL, 4) and len(synth.SIGN_NAMES) == 43
    rgb = t[..., :3] * t[..., 3:] / 255
    d = np.abs(rgb[:, None] - rgb[None]).mean(axis=(2, 3, 4))
    np.fill_diagonal(d, np.inf)
    i, j = np.unravel_index(np.argmin(d), d.shape)
    assert d.min() > 3.0, f"classes {i} and {j} are nearly identical (mean |diff| {d.min():.2f})"


def test_syn_signs_classes_are_learnable():
    """43 classes, chance 2.3%: a tiny CNN trained on 2,150 images gets far above it on 430 held-out ones."""
    s = synth.generate_syn_signs(43 * 60, seed=22)
    acc = cnn_accuracy(s.x, s.y, 43 * 50, 43, grey=False, side=20)
    assert acc > 0.5, f"accuracy {acc:.3f} on held-out synthetic signs"


def test_syn_signs_use_photo_backgrounds_when_given():
    photos = [np.full((120, 150, 3), (0, 255, 0), np.uint8)]  # pure green: no synthetic background is
    s = synth.generate_syn_signs(86, seed=1, photos=photos, workers=1)
    x = s.x.float()
    corner = x[:, :, :2, :2].mean(dim=(2, 3))  # mostly background
    greenish = (corner[:, 1] > corner[:, 0] + 20) & (corner[:, 1] > corner[:, 2] + 20)
    assert 0.2 < float(greenish.float().mean()) < 0.8


# ---------------------------------------------------------------------- registered domains
def test_generated_domains_register_build_and_cache(tmp_path, monkeypatch):
    monkeypatch.setitem(synth.SYN_NUMBERS_SIZES, "train", 30)
    monkeypatch.setitem(synth.SYN_NUMBERS_SIZES, "test", 20)
    monkeypatch.setitem(synth.SYN_SIGNS_SIZES, "train", 43)
    monkeypatch.setitem(synth.SYN_SIGNS_SIZES, "test", 43)
    assert get_domain("syn_numbers_gen").num_classes == 10 and get_domain("syn_signs_gen").num_classes == 43
    assert get_domain("mnist_m_regen").num_classes == 10
    assert synth.SYN_NUMBERS_SEEDS["train"] != synth.SYN_NUMBERS_SEEDS["test"]
    tr = load_split("syn_numbers_gen", "train", tmp_path)
    te = load_split("syn_numbers_gen", "test", tmp_path)
    assert len(tr) == 30 and len(te) == 20 and cache_path(tmp_path, "syn_numbers_gen", "train").exists()
    assert not torch.equal(tr.x[:20], te.x)
    assert torch.equal(load_split("syn_numbers_gen", "train", tmp_path).x, tr.x)  # from the cache
    assert torch.equal(tr.x, synth.generate_syn_numbers(30, synth.SYN_NUMBERS_SEEDS["train"]).x)
    sg = load_split("syn_signs_gen", "test", tmp_path)  # no photos in root: synthetic backgrounds only
    assert sg.x.shape == (43, 3, 40, 40)
    assert torch.equal(sg.x, synth.generate_syn_signs(43, synth.SYN_SIGNS_SEEDS["test"]).x)


# --------------------------------------------------------------------------------- MNIST-M
def write_mnist_idx(root: Path, n_train: int, n_test: int, monkeypatch) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny MNIST in torchvision's layout (<root>/MNIST/raw/*-ubyte.gz), md5 pinned for the real loader."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):  # blobby strokes with grey, anti-aliased-looking edges
            x[i, rng.integers(4, 10):rng.integers(18, 24), rng.integers(6, 12):rng.integers(16, 22)] = \
                rng.integers(1, 256)
        x[:, 10:12, :] = rng.integers(0, 256, (n, 2, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        for name, data in ((f"{prefix}-images-idx3-ubyte", struct.pack(">IIII", 0x803, n, 28, 28) + x.tobytes()),
                           (f"{prefix}-labels-idx1-ubyte", struct.pack(">II", 0x801, n) + y.tobytes())):
            (raw / f"{name}.gz").write_bytes(gzip.compress(data))
            monkeypatch.setitem(real.MNIST_MD5, name, hashlib.md5(data).hexdigest())
        arrays[prefix] = (x, y)
    return arrays


def write_bsds(root: Path, n: int = 3) -> list[np.ndarray]:
    """A BSDS-like folder of JPEG photos; returns them as decoded (what the loader will see)."""
    folder = root / "BSR" / "BSDS500" / "data" / "images" / "train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = []
    for k in range(n):
        h, w = 40 + 7 * k, 50 + 5 * k
        yy, xx = np.mgrid[:h, :w]
        img = np.stack([(xx * 4 + 30 * k) % 256, (yy * 5) % 256, rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{1000 + k}.jpg", quality=90)
        out.append(np.asarray(Image.open(folder / f"{1000 + k}.jpg").convert("RGB")))
    return out


def locate_patches(x: np.ndarray, digits32: np.ndarray, photos: list[np.ndarray]) -> int:
    """How many images equal |patch - digit| for some 32x32 patch of some photo (exactly)."""
    found = 0
    for img, d in zip(x, digits32):
        patch = np.where(d[..., None] == 255, 255 - img.astype(np.int16), img.astype(np.int16))  # un-invert
        hit = False
        for p in photos:
            # candidates: positions whose top-left 2x2 pixels match, then the whole window
            h, w = p.shape[0] - 31, p.shape[1] - 31
            ok = np.ones((h, w), bool)
            for dy in (0, 1):
                for dx in (0, 1):
                    ok &= (p[dy:dy + h, dx:dx + w] == patch[dy, dx]).all(-1)
            if any((p[yy:yy + 32, xx:xx + 32] == patch).all() for yy, xx in zip(*np.nonzero(ok))):
                hit = True
                break
        found += hit
    return found


def test_mnist_m_regen_blends_padded_binarised_digits_over_photo_patches(tmp_path, monkeypatch):
    arrays = write_mnist_idx(tmp_path, 24, 12, monkeypatch)
    photos = write_bsds(tmp_path)
    s = load_split("mnist_m_regen", "test", tmp_path)
    x_mn, y_mn = arrays["t10k"]
    assert_images(s, 12, 3, 32, 10)
    assert torch.equal(s.y, torch.from_numpy(y_mn.astype(np.int64)))
    d32 = mnistm.pad_binarise(x_mn)
    assert set(np.unique(d32)) <= {0, 255} and (d32[:, :2].sum() == 0) and (d32[:, 2:30, 2:30] > 0).sum() == \
        (x_mn > 0).sum()
    x = s.x.permute(0, 2, 3, 1).numpy()
    assert locate_patches(x, d32, photos) == 12  # |out - patch| is the digit, patch cut from a photo
    assert locate_patches(x, np.zeros_like(d32), photos) == 0  # ... and the digit is really there
    again = load_split("mnist_m_regen", "test", tmp_path)
    assert torch.equal(again.x, s.x)
    tr = load_split("mnist_m_regen", "train", tmp_path)
    assert len(tr) == 24 and torch.equal(tr.y, torch.from_numpy(arrays["train"][1].astype(np.int64)))


def test_mnist_m_regen_reads_the_bsds_tar(tmp_path, monkeypatch):
    src = tmp_path / "src"
    photos = write_bsds(src, n=2)
    root = tmp_path / "root"
    root.mkdir()
    write_mnist_idx(root, 4, 6, monkeypatch)
    with tarfile.open(root / "BSDS500_train_images.tar", "w") as t:
        t.add(src / "BSR", arcname="BSR")
    s = load_split("mnist_m_regen", "test", root)
    assert len(s) == 6
    assert (root / "BSR" / "BSDS500" / "data" / "images" / "train" / "1000.jpg").is_file()
    d32 = mnistm.pad_binarise(load_split("mnist", "test", root).x)
    assert locate_patches(s.x.permute(0, 2, 3, 1).numpy(), d32, photos) == 6


def test_mnist_m_regen_without_photos_names_files_and_url(tmp_path, monkeypatch):
    write_mnist_idx(tmp_path, 4, 4, monkeypatch)
    with pytest.raises(DatasetNotFoundError) as e:
        load_split("mnist_m_regen", "test", tmp_path)
    msg = str(e.value)
    for part in ("BSR_bsds500.tgz", "BSDS500_train_images.tar", "BSR/BSDS500/data/images/train", mnistm.BSDS_URL):
        assert part in msg
    assert not cache_path(tmp_path, "mnist_m_regen", "test").exists()


def test_mnist_m_recipe_on_constant_photos():
    mn = np.zeros((3, 28, 28), np.uint8)
    mn[:, 5:20, 10:14] = [[[1]], [[128]], [[255]]]  # faint, mid and full strokes all become 255
    split = real.Split(torch.from_numpy(mn[:, None]), torch.tensor([1, 2, 3]))
    photos = [np.full((40, 40, 3), (10, 200, 90), np.uint8)]
    s = mnistm.generate_mnist_m(3, 0, split, photos)
    x = s.x.permute(0, 2, 3, 1).numpy()
    assert (x[:, 7:22, 12:16] == [245, 55, 165]).all()  # |c - 255| inside the stroke
    stroke = np.zeros((32, 32), bool)
    stroke[7:22, 12:16] = True
    assert (x[:, ~stroke] == [10, 200, 90]).all()  # the photo elsewhere


@pytest.mark.skipif(not os.environ.get("DANN_REAL_DATA_DIR"),
                    reason="set DANN_REAL_DATA_DIR to a folder holding MNIST/raw and BSDS500_train_images.tar")
def test_mnist_m_regen_on_real_mnist_and_bsds(tmp_path):
    src = Path(os.environ["DANN_REAL_DATA_DIR"])
    if not (src / "MNIST" / "raw").is_dir() or not (src / "BSDS500_train_images.tar").is_file():
        pytest.skip(f"{src} lacks MNIST/raw or BSDS500_train_images.tar")
    (tmp_path / "MNIST").mkdir()
    (tmp_path / "MNIST" / "raw").symlink_to(src / "MNIST" / "raw")
    (tmp_path / "BSDS500_train_images.tar").symlink_to(src / "BSDS500_train_images.tar")
    t0 = time.perf_counter()
    s = load_split("mnist_m_regen", "test", tmp_path)
    dt = time.perf_counter() - t0
    print(f"mnist_m_regen/test from real MNIST + BSDS500: {len(s)} images in {dt:.1f} s (extraction included)")
    assert_images(s, 10_000, 3, 32, 10)
    mn = load_split("mnist", "test", tmp_path)
    assert torch.equal(s.y, mn.y)
    photos = mnistm.bsds_photos(tmp_path)
    assert len(photos) == 200
    x = s.x.permute(0, 2, 3, 1).numpy()[:5]
    assert locate_patches(x, mnistm.pad_binarise(mn.x[:5]), photos) == 5
    shutil.rmtree(tmp_path / "BSR")
