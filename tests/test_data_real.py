"""The six real domains: tiny fixtures in each exact on-disk format, errors, and (optionally) real copies.

Real-copy tests read ``$DANN_REAL_DATA_DIR`` (a folder laid out like the shared data README:
MNIST/raw/*.gz, mnist_m.tar.gz, GTSRB_Final_Training_32px.tar.xz, synsigns_subset.tar.gz) and
are skipped when it is unset.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import struct
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat
from torchvision.datasets import SVHN

from dann.data import real
from dann.data.domains import ChecksumError, CorruptDataError, DatasetNotFoundError, cache_path, load_split
from dann.data.download import Remote, fetch


@pytest.fixture(autouse=True)
def _no_download(monkeypatch):
    monkeypatch.delenv("DANN_DOWNLOAD", raising=False)
    real._printed.clear()  # notices are printed once per process; tests check them


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def no_cache(root: Path, name: str) -> bool:
    return not any(cache_path(root, name, s).exists() for s in ("train", "test"))


def no_partial(folder: Path) -> bool:
    return not list(folder.glob(".*.partial-*")) and not list(folder.rglob("*.part"))


def rgb(path: Path, colour, size=(32, 32), fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(colour)).save(path, format=fmt)


def tar_gz(src: Path, members: list[str], out: Path) -> Path:
    with tarfile.open(out, "w:gz") as t:
        for m in members:
            t.add(src / m, arcname=m)
    return out


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ------------------------------------------------------------------------------------ MNIST
def write_idx(raw: Path, n_train: int = 7, n_test: int = 3, gz: bool = False) -> dict[str, np.ndarray]:
    """Idx files exactly as LeCun's: big-endian magic, dims, then uint8 data."""
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) * 3 % 10).astype(np.uint8)
        files = {f"{prefix}-images-idx3-ubyte": struct.pack(">IIII", 0x803, n, 28, 28) + x.tobytes(),
                 f"{prefix}-labels-idx1-ubyte": struct.pack(">II", 0x801, n) + y.tobytes()}
        for name, data in files.items():
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (raw / name).write_bytes(data)
        arrays[prefix] = (x, y)
    return arrays


def pin_mnist(monkeypatch, raw: Path) -> None:
    """Pin the fixture's md5 (of the uncompressed files) in place of the originals'."""
    for name in real.MNIST_MD5:
        p = raw / name
        data = p.read_bytes() if p.exists() else gzip.decompress((raw / f"{name}.gz").read_bytes())
        monkeypatch.setitem(real.MNIST_MD5, name, hashlib.md5(data).hexdigest())


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_roundtrip_through_cache(tmp_path, monkeypatch, gz):
    raw = tmp_path / "MNIST" / "raw"
    arrays = write_idx(raw, gz=gz)
    pin_mnist(monkeypatch, raw)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        s = load_split("mnist", split, tmp_path)
        x, y = arrays[prefix]
        assert s.x.shape == (len(x), 1, 28, 28) and s.x.dtype == torch.uint8 and s.y.dtype == torch.int64
        assert torch.equal(s.x[:, 0], torch.from_numpy(x)) and s.y.tolist() == y.tolist()
        assert cache_path(tmp_path, "mnist", split).exists()
    if gz:  # .gz input is decompressed to a temporary folder only, never beside the user's files
        assert not list(raw.glob("*-ubyte"))
    for f in raw.iterdir():  # the second load must come from the cache
        f.unlink()
    assert torch.equal(load_split("mnist", "train", tmp_path).x[:, 0], torch.from_numpy(arrays["train"][0]))


def test_mnist_checksum_mismatch_quarantines_the_gz(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw, gz=True)  # not the originals: their md5 cannot match the pinned ones
    with pytest.raises(ChecksumError) as e:
        load_split("mnist", "train", tmp_path)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and real.MNIST_MD5["train-images-idx3-ubyte"] in msg
    assert "bad-checksum" in msg
    assert (raw / "train-images-idx3-ubyte.gz.bad-checksum").exists()
    assert not (raw / "train-images-idx3-ubyte.gz").exists()
    assert no_cache(tmp_path, "mnist")
    with pytest.raises(DatasetNotFoundError):  # never used again
        load_split("mnist", "train", tmp_path)


def test_mnist_truncated_gz_is_corrupt(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw, gz=True)
    pin_mnist(monkeypatch, raw)
    truncate(raw / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(CorruptDataError, match="t10k-images-idx3-ubyte.gz"):
        load_split("mnist", "test", tmp_path)
    assert no_cache(tmp_path, "mnist")


def test_mnist_missing_lists_files_folder_and_url(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_split("mnist", "test", tmp_path)
    msg = str(e.value)
    raw = tmp_path / "MNIST" / "raw"
    assert str(raw / "t10k-images-idx3-ubyte") in msg and "t10k-labels-idx1-ubyte" in msg
    assert "ossci-datasets.s3.amazonaws.com/mnist" in msg and "DANN_DOWNLOAD=1" in msg
    assert no_cache(tmp_path, "mnist")


# ------------------------------------------------------------------------- SVHN, SynNumbers
def write_digits_mat(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB .mat as SVHN ships it: X (32, 32, 3, N) uint8, y (N, 1) with 10 meaning digit 0."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"X": x, "y": y})
    return x, y


def check_digits(s, x, y) -> None:
    n = x.shape[3]
    assert s.x.shape == (n, 3, 32, 32) and s.x.dtype == torch.uint8 and s.y.dtype == torch.int64
    assert torch.equal(s.x, torch.from_numpy(x).permute(3, 2, 0, 1))  # x[i, c, h, w] == X[h, w, c, i]
    assert s.y.tolist() == [v % 10 for v in y.ravel().tolist()] and (0 in s.y.tolist()) == (10 in y)


def test_svhn_mat_roundtrip_through_cache(tmp_path, monkeypatch):
    for split, n in (("train", 12), ("test", 5)):
        url, fname, _ = SVHN.split_list[split]
        x, y = write_digits_mat(tmp_path / "svhn" / fname, n, seed=n)
        monkeypatch.setitem(SVHN.split_list, split, [url, fname, md5(tmp_path / "svhn" / fname)])
        check_digits(load_split("svhn", split, tmp_path), x, y)
        (tmp_path / "svhn" / fname).unlink()
        check_digits(load_split("svhn", split, tmp_path), x, y)  # from the cache


def test_svhn_checksum_mismatch(tmp_path):
    write_digits_mat(tmp_path / "svhn" / "test_32x32.mat", 4, seed=1)
    with pytest.raises(ChecksumError) as e:
        load_split("svhn", "test", tmp_path)
    assert "test_32x32.mat" in str(e.value) and SVHN.split_list["test"][2] in str(e.value)
    assert (tmp_path / "svhn" / "test_32x32.mat.bad-checksum").exists()
    assert no_cache(tmp_path, "svhn")


def test_svhn_truncated_mat_is_corrupt(tmp_path, monkeypatch):
    p = tmp_path / "svhn" / "train_32x32.mat"
    write_digits_mat(p, 20, seed=2)
    truncate(p, 0.6)
    monkeypatch.setitem(SVHN.split_list, "train", [SVHN.split_list["train"][0], p.name, md5(p)])
    with pytest.raises(CorruptDataError, match="train_32x32.mat"):
        load_split("svhn", "train", tmp_path)
    assert no_cache(tmp_path, "svhn")


def test_syn_numbers_mat_prints_sha256_then_enforces_a_pin(tmp_path, monkeypatch, capsys):
    p = tmp_path / "syn_numbers" / "synth_test_32x32.mat"
    x, y = write_digits_mat(p, 6, seed=3)
    check_digits(load_split("syn_numbers", "test", tmp_path), x, y)
    out = capsys.readouterr().out
    assert hashlib.sha256(p.read_bytes()).hexdigest() in out and "content is checked instead" in out
    # once pinned, a different file is refused
    p2 = tmp_path / "syn_numbers" / "synth_train_32x32.mat"
    write_digits_mat(p2, 6, seed=4)
    monkeypatch.setitem(real.SYN_NUMBERS_SHA256, p2.name, "0" * 64)
    with pytest.raises(ChecksumError, match="0{64}"):
        load_split("syn_numbers", "train", tmp_path)
    assert p2.with_name(p2.name + ".bad-checksum").exists()
    assert not cache_path(tmp_path, "syn_numbers", "train").exists()


def test_syn_numbers_from_zip(tmp_path):
    src = tmp_path / "src"
    xs = {s: write_digits_mat(src / f"synth_{s}_32x32.mat", 4, seed=i) for i, s in enumerate(("train", "test"))}
    (tmp_path / "syn_numbers").mkdir()
    with zipfile.ZipFile(tmp_path / "syn_numbers" / "SynthDigits.zip", "w") as z:
        for s in xs:
            z.write(src / f"synth_{s}_32x32.mat", f"synth_{s}_32x32.mat")
    for s, (x, y) in xs.items():
        check_digits(load_split("syn_numbers", s, tmp_path), x, y)
    assert (tmp_path / "syn_numbers" / "SynthDigits" / "synth_train_32x32.mat").is_file()


def test_syn_numbers_missing_names_files_folder_and_url(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_split("syn_numbers", "train", tmp_path)
    msg = str(e.value)
    assert "synth_train_32x32.mat" in msg and "synth_test_32x32.mat" in msg and "SynthDigits.zip" in msg
    assert str(tmp_path / "syn_numbers") in msg and real.SYN_NUMBERS_URL in msg


# ---------------------------------------------------------------------------------- MNIST-M
def colour(i: int) -> tuple[int, int, int]:
    return (i * 37 % 256, i * 91 % 256, i * 13 % 256)


def write_mnist_m(base: Path, counts=(("train", 6), ("test", 3))) -> Path:
    """mnist_m/mnist_m_{split}/NNNNNNNN.png + mnist_m_{split}_labels.txt ("name label" lines)."""
    d = base / "mnist_m"
    for split, n in counts:
        lines = []
        for i in range(n):
            name = f"{i:08d}.png"
            rgb(d / f"mnist_m_{split}" / name, colour(i + (100 if split == "test" else 0)))
            lines.append(f"{name} {(i * 7) % 10}")
        (d / f"mnist_m_{split}_labels.txt").write_text("\n".join(lines) + "\n")
    return d


def check_mnist_m(s, split: str, n: int) -> None:
    assert s.x.shape == (n, 3, 32, 32) and s.x.dtype == torch.uint8 and s.y.dtype == torch.int64
    assert s.y.tolist() == [(i * 7) % 10 for i in range(n)]
    off = 100 if split == "test" else 0
    assert [tuple(s.x[i, :, 5, 5].tolist()) for i in range(n)] == [colour(i + off) for i in range(n)]


def test_mnist_m_folder_roundtrip_and_partial_copy_warning(tmp_path, capsys):
    write_mnist_m(tmp_path)
    check_mnist_m(load_split("mnist_m", "train", tmp_path), "train", 6)
    assert "WARNING" in capsys.readouterr().out  # 6 images, not the release's 59,001
    check_mnist_m(load_split("mnist_m", "test", tmp_path), "test", 3)
    shutil.rmtree(tmp_path / "mnist_m" / "mnist_m_train")
    check_mnist_m(load_split("mnist_m", "train", tmp_path), "train", 6)  # from the cache


def test_mnist_m_archive_md5_notice_and_extraction(tmp_path, capsys):
    src = write_mnist_m(tmp_path / "src").parent
    members = [p.relative_to(src).as_posix() for p in sorted((src / "mnist_m").rglob("*")) if p.is_file()]
    tar_gz(src, members, tmp_path / "mnist_m.tar.gz")
    check_mnist_m(load_split("mnist_m", "test", tmp_path), "test", 3)
    out = capsys.readouterr().out
    assert md5(tmp_path / "mnist_m.tar.gz") in out and real.MNIST_M_MD5 in out
    assert (tmp_path / "mnist_m" / "mnist_m_train_labels.txt").is_file() and no_partial(tmp_path)


def test_mnist_m_truncated_archive_leaves_nothing(tmp_path):
    src = write_mnist_m(tmp_path / "src", counts=(("train", 40), ("test", 40))).parent
    members = [p.relative_to(src).as_posix() for p in sorted((src / "mnist_m").rglob("*")) if p.is_file()]
    # the labels files first, so a cut-off archive still holds the marker in its first half
    members.sort(key=lambda m: not m.endswith(".txt"))
    tar_gz(src, members, tmp_path / "mnist_m.tar.gz")
    truncate(tmp_path / "mnist_m.tar.gz", 0.5)
    for _ in range(2):  # a second run fails the same way: nothing was left to mistake for a copy
        with pytest.raises(CorruptDataError, match="mnist_m.tar.gz"):
            load_split("mnist_m", "train", tmp_path)
        assert not (tmp_path / "mnist_m").exists() and no_partial(tmp_path) and no_cache(tmp_path, "mnist_m")


def test_mnist_m_undecodable_or_missing_image(tmp_path):
    d = write_mnist_m(tmp_path)
    (d / "mnist_m_train" / "00000002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(CorruptDataError, match="00000002.png"):
        load_split("mnist_m", "train", tmp_path)
    (d / "mnist_m_test" / "00000001.png").unlink()
    with pytest.raises(CorruptDataError, match="00000001.png.*missing"):
        load_split("mnist_m", "test", tmp_path)
    assert no_cache(tmp_path, "mnist_m")


def test_mnist_m_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_split("mnist_m", "train", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "mnist_m.tar.gz") in msg and "mnist_m_{train,test}_labels.txt" in msg
    assert real.MNIST_M_URL in msg


# ----------------------------------------------------------------------------------- GTSRB
RED, BLUE = (250, 10, 10), (10, 10, 250)


def write_gtsrb(img_root: Path, per_class: int = 5, classes: int = 3) -> int:
    """000CC/GT-000CC.csv + 000CC/000CC_NNNNN.ppm; half the images are stored at half the CSV's size.

    The ROI (inclusive corners) is red and the border blue, so a correct crop is all red.
    """
    n = 0
    for c in range(classes):
        d = img_root / f"{c:05d}"
        d.mkdir(parents=True)
        rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        for k in range(per_class):
            name = f"{c:05d}_{k:05d}.ppm"
            small = k % 2 == 1
            w, h, x1, y1, x2, y2 = 48, 40, 8, 4, 39, 35  # CSV geometry (original size)
            a = np.empty((h, w, 3), np.uint8)
            a[:] = BLUE
            a[y1:y2 + 1, x1:x2 + 1] = RED
            im = Image.fromarray(a)
            if small:  # stored smaller than its CSV says: the ROI must be scaled by 1/2
                im = im.resize((w // 2, h // 2), Image.NEAREST)
            im.save(d / name, format="PPM")
            rows.append(f"{name};{w};{h};{x1};{y1};{x2};{y2};{c}")
            n += 1
        (d / f"GT-{c:05d}.csv").write_text("\n".join(rows) + "\n")
    return n


def check_gtsrb_red(s) -> None:
    assert s.x.shape[1:] == (3, 40, 40) and s.x.dtype == torch.uint8
    inner = s.x[:, :, 2:-2, 2:-2].float()
    assert (inner[:, 0] > 200).all() and (inner[:, 2] < 60).all(), "ROI crop missed the red box"


def test_gtsrb_official_layout_roi_scaling_and_split(tmp_path, capsys):
    n = write_gtsrb(tmp_path / "gtsrb" / "GTSRB" / "Final_Training" / "Images")
    tr, te = load_split("gtsrb", "train", tmp_path), load_split("gtsrb", "test", tmp_path)
    n_train = round(n * real.GTSRB_TRAIN / real.GTSRB_TOTAL)
    assert (len(tr), len(te)) == (n_train, n - n_train)
    check_gtsrb_red(tr)
    check_gtsrb_red(te)
    assert sorted(tr.y.tolist() + te.y.tolist()) == sorted([c for c in range(3) for _ in range(5)])
    assert "WARNING" in capsys.readouterr().out  # 15 images, not the official 39,209
    again = load_split("gtsrb", "train", tmp_path)
    assert torch.equal(again.x, tr.x) and torch.equal(again.y, tr.y)


def test_gtsrb_torchvision_zip_extracted_atomically(tmp_path, capsys):
    src = tmp_path / "src"
    write_gtsrb(src / "GTSRB" / "Training", per_class=2, classes=2)
    (tmp_path / "gtsrb").mkdir()
    with zipfile.ZipFile(tmp_path / "gtsrb" / "GTSRB-Training_fixed.zip", "w") as z:
        for p in sorted(src.rglob("*")):
            z.write(p, p.relative_to(src).as_posix())
    s = load_split("gtsrb", "test", tmp_path)
    check_gtsrb_red(s)
    assert (tmp_path / "gtsrb" / "GTSRB" / "Training" / "00001" / "GT-00001.csv").is_file()
    assert real.GTSRB_MD5 in capsys.readouterr().out and no_partial(tmp_path / "gtsrb")


def test_gtsrb_truncated_archive_and_bad_image(tmp_path):
    (tmp_path / "gtsrb").mkdir()
    arch = tmp_path / "gtsrb" / "GTSRB_Final_Training_Images.zip"
    arch.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(CorruptDataError, match="GTSRB_Final_Training_Images.zip"):
        load_split("gtsrb", "train", tmp_path)
    assert not (tmp_path / "gtsrb" / "GTSRB").exists() and no_partial(tmp_path / "gtsrb")
    arch.unlink()
    root2 = tmp_path / "r2"
    img_root = root2 / "gtsrb" / "GTSRB" / "Training"
    write_gtsrb(img_root, per_class=20, classes=1)
    for p in img_root.glob("00000/*.ppm"):
        truncate(p, 0.3)
    with pytest.raises(CorruptDataError, match=r"\.ppm"):
        load_split("gtsrb", "train", root2)
    assert no_cache(root2, "gtsrb")


def test_gtsrb_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_split("gtsrb", "train", tmp_path)
    msg = str(e.value)
    assert "GTSRB-Training_fixed.zip" in msg and "Final_Training" in msg and real.GTSRB_URL in msg


# -------------------------------------------------------------------------------- SynSigns
def write_syn_signs(base: Path, n: int = 30, repeats=(3, 7)) -> dict[str, int]:
    """train/NNNNN.png (40x40) + train_labelling.txt ("train/N.png class score"); some names listed twice."""
    labels = {}
    lines = []
    for i in range(n):
        name = f"train/{i:05d}.png"
        rgb(base / name, colour(i), size=(40, 40))
        labels[name] = i % 43
        lines.append(f"{name} {i % 43} 0.{i:04d}")
        if i in repeats:
            lines.append(f"{name} {i % 43} 0.{i:04d}")
    (base / "train_labelling.txt").write_text("\n".join(lines) + "\n")
    return labels


def test_syn_signs_archive_dedup_and_fixed_split(tmp_path, capsys):
    labels = write_syn_signs(tmp_path / "src")
    (tmp_path / "syn_signs").mkdir()
    tar_gz(tmp_path / "src", ["train_labelling.txt"] + sorted(labels), tmp_path / "syn_signs" / "sample.tar.gz")
    tr, te = load_split("syn_signs", "train", tmp_path), load_split("syn_signs", "test", tmp_path)
    out = capsys.readouterr().out
    assert "2 repeated names" in out and "sample" in out
    assert hashlib.sha256((tmp_path / "syn_signs" / "sample.tar.gz").read_bytes()).hexdigest() in out
    assert (len(tr), len(te)) == (27, 3) and tr.x.shape[1:] == (3, 40, 40) and tr.y.dtype == torch.int64
    by_colour = {colour(i): i for i in range(30)}
    seen = []
    for s in (tr, te):
        for k in range(len(s)):
            i = by_colour[tuple(s.x[k, :, 0, 0].tolist())]
            assert s.y[k].item() == labels[f"train/{i:05d}.png"]
            seen.append(i)
    assert sorted(seen) == list(range(30))  # disjoint, complete


def test_syn_signs_folder_and_corrupt_png(tmp_path):
    write_syn_signs(tmp_path / "syn_signs", n=12)
    assert len(load_split("syn_signs", "train", tmp_path)) + len(load_split("syn_signs", "test", tmp_path)) == 12
    root2 = tmp_path / "r2"
    write_syn_signs(root2 / "syn_signs", n=12)
    for p in (root2 / "syn_signs" / "train").glob("*.png"):
        p.write_bytes(b"garbage")
    with pytest.raises(CorruptDataError, match=r"train/000\d\d\.png"):
        load_split("syn_signs", "train", root2)
    assert no_cache(root2, "syn_signs")


def test_syn_signs_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_split("syn_signs", "train", tmp_path)
    assert "train_labelling.txt" in str(e.value) and real.SYN_SIGNS_URL in str(e.value)


# ---------------------------------------------------------------------- verified downloads
@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on localhost serving ``tmp_path / 'www'``."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield www, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_fetch_verifies_before_placing(http_dir, tmp_path):
    www, url = http_dir
    (www / "f.bin").write_bytes(b"payload" * 100)
    dest = tmp_path / "data" / "f.bin"
    with pytest.raises(ChecksumError) as e:
        fetch(f"{url}/f.bin", dest, md5="0" * 32)
    assert "0" * 32 in str(e.value) and md5(www / "f.bin") in str(e.value) and str(dest) in str(e.value)
    assert not dest.exists() and (dest.parent / "f.bin.bad-checksum").exists() and no_partial(dest.parent)
    with pytest.raises(DatasetNotFoundError, match="404"):
        fetch([f"{url}/nope.bin"], dest, md5=md5(www / "f.bin"))
    assert fetch([f"{url}/nope.bin", f"{url}/f.bin"], dest, md5=md5(www / "f.bin")) == dest  # second mirror
    assert dest.read_bytes() == b"payload" * 100 and no_partial(dest.parent)


def test_mnist_m_download_end_to_end(http_dir, tmp_path, monkeypatch):
    www, url = http_dir
    src = write_mnist_m(tmp_path / "src").parent
    members = [p.relative_to(src).as_posix() for p in sorted((src / "mnist_m").rglob("*")) if p.is_file()]
    tar_gz(src, members, www / "mnist_m.tar.gz")
    monkeypatch.setattr(real, "MNIST_M_URL", f"{url}/mnist_m.tar.gz")
    monkeypatch.setattr(real, "MNIST_M_MD5", md5(www / "mnist_m.tar.gz"))
    monkeypatch.setitem(real.MIRRORS, "mnist_m", (Remote("mnist_m.tar.gz", (real.MNIST_M_URL,), md5=real.MNIST_M_MD5),))
    root = tmp_path / "root"
    with pytest.raises(DatasetNotFoundError):  # nothing is downloaded unless asked for
        load_split("mnist_m", "train", root)
    monkeypatch.setenv("DANN_DOWNLOAD", "1")
    check_mnist_m(load_split("mnist_m", "train", root), "train", 6)
    assert md5(root / "mnist_m.tar.gz") == real.MNIST_M_MD5


# --------------------------------------------------------------------------- real copies
REAL = os.environ.get("DANN_REAL_DATA_DIR")
needs_real = pytest.mark.skipif(not REAL, reason="set DANN_REAL_DATA_DIR to a folder with the real dataset copies "
                                                 "(see the shared data README) to run the real-data tests")


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    """A data root that symlinks the real copies into the documented places."""
    src, root = Path(REAL), tmp_path_factory.mktemp("real_root")
    links = {"MNIST/raw/" + n: "MNIST/raw/" + n for n in
             ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
              "t10k-labels-idx1-ubyte.gz")}
    links |= {"mnist_m.tar.gz": "mnist_m.tar.gz",
              "gtsrb/GTSRB_Final_Training_32px.tar.xz": "GTSRB_Final_Training_32px.tar.xz",
              "syn_signs/synsigns_subset.tar.gz": "synsigns_subset.tar.gz"}
    for dst, s in links.items():
        if not (src / s).is_file():
            pytest.skip(f"{src / s} is missing from DANN_REAL_DATA_DIR")
        (root / dst).parent.mkdir(parents=True, exist_ok=True)
        (root / dst).symlink_to(src / s)
    return root


@needs_real
@pytest.mark.realdata
def test_real_mnist_and_mnist_m(real_root):
    m = {s: load_split("mnist", s, real_root) for s in ("train", "test")}
    mm = {s: load_split("mnist_m", s, real_root) for s in ("train", "test")}
    assert (len(m["train"]), len(m["test"])) == (60_000, 10_000)
    assert m["train"].x.shape[1:] == (1, 28, 28)
    assert (len(mm["train"]), len(mm["test"])) == (59_001, 9_001)
    assert mm["train"].x.shape[1:] == (3, 32, 32)
    assert torch.equal(mm["train"].y, m["train"].y[:59_001]) and torch.equal(mm["test"].y, m["test"].y[:9_001])


@needs_real
@pytest.mark.realdata
def test_real_gtsrb(real_root):
    tr, te = load_split("gtsrb", "train", real_root), load_split("gtsrb", "test", real_root)
    assert (len(tr), len(te)) == (31_367, 7_842) and tr.x.shape[1:] == (3, 40, 40)
    assert set(tr.y.tolist()) == set(range(43)) and set(te.y.tolist()) == set(range(43))


@needs_real
@pytest.mark.realdata
def test_real_syn_signs_sample(real_root):
    tr, te = load_split("syn_signs", "train", real_root), load_split("syn_signs", "test", real_root)
    assert len(tr) + len(te) == 1_982 and len(te) == 198 and tr.x.shape[1:] == (3, 40, 40)
