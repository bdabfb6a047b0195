"""Hostile and damaged inputs to the data layer, and its messages.

* archives (tar, tar.gz, tar.xz, zip) whose members try to write outside the folder they are
  extracted to: ``..``, absolute names, links leading out, hard links, device files;
* caches whose tensors load but whose labels, dtypes or shapes are wrong;
* missing-file messages that name every expected file;
* mirrored downloads over real HTTP on 127.0.0.1 (404, bad checksum, oversized, refused);
* MATLAB v5 and v7.3 (HDF5) ``.mat`` files;
* ``dann-data list`` columns and states.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import stat
import struct
import sys
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

from dann.data import download as dl
from dann.data import real
from dann.data.cli import cli
from dann.data.domains import (REGISTRY, CorruptDataError, DataError, DatasetNotFoundError, Domain,
                               Split, cache_path, load_split)


@pytest.fixture(autouse=True)
def _no_download(monkeypatch):
    monkeypatch.delenv("DANN_DOWNLOAD", raising=False)
    real._printed.clear()  # notices are printed once per process; tests check them


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ A. archives
def write_archive(path: Path, entries) -> Path:
    """Write ``entries`` [(name, kind, data)] as a tar/tar.gz/tar.xz or zip, exactly as given.

    kind: file (data: bytes), dir, symlink / hardlink (data: link target), chardev.
    """
    if path.name.endswith(".zip"):
        modes = {"file": stat.S_IFREG | 0o644, "dir": stat.S_IFDIR | 0o755, "symlink": stat.S_IFLNK | 0o777,
                 "chardev": stat.S_IFCHR | 0o644}
        with zipfile.ZipFile(path, "w") as z:
            for name, kind, data in entries:
                info = zipfile.ZipInfo(name)
                info.create_system = 3  # Unix: the high 16 bits of external_attr are st_mode
                info.external_attr = modes[kind] << 16
                z.writestr(info, data if isinstance(data, bytes) else (data or "").encode())
        return path
    compression = {".tar": "", ".gz": "gz", ".xz": "xz"}[path.suffix]
    with tarfile.open(path, f"w:{compression}") as t:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "chardev": tarfile.CHRTYPE}[kind]
            if kind == "dir":
                info.mode = 0o755
            if kind in ("symlink", "hardlink"):
                info.linkname = data
            if kind == "chardev":
                info.devmajor, info.devminor = 1, 3  # what /dev/null is
            t.addfile(info)
    return path


KINDS = {"tar": "mnist_m.tar", "tar.gz": "mnist_m.tar.gz", "tar.xz": "mnist_m.tar.xz", "zip": "mnist_m.zip"}
MARKER = "mnist_m_train_labels.txt"
GOOD = [("mnist_m/", "dir", None), (f"mnist_m/{MARKER}", "file", b"00000000.png 1\n")]


def attacks(tmp: Path) -> dict[str, tuple[list, str]]:
    """Each attack: the hostile members (after GOOD ones) and the member the error must name.

    The archive lies in ``tmp/root``; it is extracted below ``tmp/root``, so ``../../`` from
    there and every absolute name below lead to ``tmp`` itself, outside the data root.
    """
    outside = tmp / "outside"
    return {
        "dotdot": ([("../../escaped.txt", "file", b"x")], "../../escaped.txt"),
        "absolute": ([(str(tmp / "abs.txt"), "file", b"x")], str(tmp / "abs.txt")),
        "symlink_abs": ([("mnist_m/link", "symlink", str(outside)), ("mnist_m/link/x.txt", "file", b"x")],
                        "mnist_m/link"),
        "symlink_rel": ([("mnist_m/link", "symlink", "../../../outside"), ("mnist_m/link/x.txt", "file", b"x")],
                        "mnist_m/link"),
        # points inside the temporary folder, but at the data root once the folder is moved into place
        "symlink_up": ([("mnist_m/up", "symlink", "..")], "mnist_m/up"),
        # each link stays inside when it is extracted; together they lead out: M -> s/.. -> ../..
        "link_chain": ([("mnist_m/M", "symlink", "s/.."), ("mnist_m/s", "symlink", ".."),
                        ("mnist_m/M/x.txt", "file", b"x")], "mnist_m/M/x.txt"),
        "hardlink": ([("mnist_m/h", "hardlink", "../../outside/secret.txt"), ("mnist_m/h", "file", b"pwned")],
                     "mnist_m/h"),
        "device": ([("mnist_m/null", "chardev", None)], "mnist_m/null"),
    }


def snapshot(top: Path, skip: Path) -> dict[str, bytes | str]:
    """Every path under ``top`` but outside ``skip``, with its content (or link target)."""
    out = {}
    for p in sorted(top.rglob("*")):
        if p == skip or skip in p.parents:
            continue
        out[str(p)] = (f"-> {p.readlink()}" if p.is_symlink() else p.read_bytes() if p.is_file() else "dir")
    return out


CASES = [(k, a) for k in KINDS for a in ("dotdot", "absolute", "symlink_abs", "symlink_rel", "symlink_up",
                                         "link_chain", "hardlink", "device")
         if not (k == "zip" and a in ("symlink_up", "link_chain", "hardlink"))]  # zip has no links to follow


@pytest.mark.parametrize("own_check_only", [False, True], ids=["with-stdlib-filter", "own-check-only"])
@pytest.mark.parametrize("kind,attack", CASES)
def test_hostile_archive_member_is_refused_and_nothing_leaves_the_root(tmp_path, monkeypatch, kind, attack,
                                                                        own_check_only):
    if own_check_only:  # what Python < 3.10.12 / 3.11.4 gets: no tarfile "data" filter, our check alone
        monkeypatch.setattr(dl, "_TAR_FILTER", {})
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(b"secret")
    members, culprit = attacks(tmp_path)[attack]
    archive = write_archive(root / KINDS[kind], GOOD + members)
    before = snapshot(tmp_path, root)

    with pytest.raises(CorruptDataError) as e:
        dl.extract(archive, root / "mnist_m", MARKER)
    msg = str(e.value)
    assert type(e.value).__name__ == "UnsafeArchiveError"
    assert str(archive) in msg and repr(culprit) in msg, msg
    assert snapshot(tmp_path, root) == before  # nothing written or changed outside the data root
    assert sorted(p.name for p in root.iterdir()) == sorted([archive.name, ".mnist_m.extract.lock"])  # no
    # partial folder, no target: a second run fails the same way
    with pytest.raises(CorruptDataError, match="Refusing to extract"):
        dl.extract(archive, root / "mnist_m", MARKER)


@pytest.mark.parametrize("kind", KINDS)
def test_benign_archives_of_every_kind_still_extract(tmp_path, kind):
    entries = GOOD + [("mnist_m/mnist_m_train/", "dir", None), ("mnist_m/mnist_m_train/a.png", "file", b"png")]
    if kind != "zip":  # a link that stays inside the extracted folder is fine
        entries.append(("mnist_m/alias.txt", "symlink", MARKER))
    archive = write_archive(tmp_path / KINDS[kind], entries)
    target = dl.extract(archive, tmp_path / "mnist_m", MARKER)
    assert (target / MARKER).read_bytes() == b"00000000.png 1\n" and (target / "mnist_m_train" / "a.png").is_file()
    if kind != "zip":
        assert (target / "alias.txt").read_bytes() == b"00000000.png 1\n"


def test_mnist_m_tar_gz_traversal_through_load_split(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    archive = write_archive(root / "mnist_m.tar.gz", GOOD + [("../../x.txt", "file", b"x")])
    with pytest.raises(CorruptDataError, match=r"mnist_m\.tar\.gz.*'\.\./\.\./x\.txt'"):
        load_split("mnist_m", "train", root)
    assert not (tmp_path / "x.txt").exists() and not (root / "mnist_m").exists()
    assert not any(cache_path(root, "mnist_m", s).exists() for s in ("train", "test"))
    assert archive.exists()  # the user's file is kept, to inspect or delete


def jpeg(w=64, h=48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 40, 40)).save(buf, format="JPEG")
    return buf.getvalue()


def write_mnist_raw(raw: Path, monkeypatch) -> None:
    """Tiny idx files in torchvision's MNIST layout, their md5 pinned in place of the originals'."""
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 5), ("t10k", 3)):
        x = np.full((n, 28, 28), 200, np.uint8)
        files = {f"{prefix}-images-idx3-ubyte": struct.pack(">IIII", 0x803, n, 28, 28) + x.tobytes(),
                 f"{prefix}-labels-idx1-ubyte": struct.pack(">II", 0x801, n) + bytes(range(n))}
        for name, data in files.items():
            (raw / name).write_bytes(data)
            monkeypatch.setitem(real.MNIST_MD5, name, hashlib.md5(data).hexdigest())


def test_bsds_archive_with_traversal_member_fails_mnist_m_regen(tmp_path, monkeypatch, capsys):
    root = tmp_path / "root"
    write_mnist_raw(root / "MNIST" / "raw", monkeypatch)  # so that only the archive can make it fail
    archive = write_archive(root / "BSDS500_train_images.tar",
                            [("BSR/BSDS500/data/images/train/1.jpg", "file", jpeg()),
                             ("../../evil.jpg", "file", jpeg())])
    before = snapshot(tmp_path, root)
    assert cli(["--root", str(root), "prepare", "mnist_m_regen"]) == 2
    err = capsys.readouterr().err
    assert str(archive) in err and "'../../evil.jpg'" in err, err
    assert snapshot(tmp_path, root) == before and not (root / "BSR").exists()
    assert not any(cache_path(root, "mnist_m_regen", s).exists() for s in ("train", "test"))
    with pytest.raises(CorruptDataError, match="evil.jpg"):  # the Python API the same
        load_split("mnist_m_regen", "test", root)


def test_bsds_zip_archive_is_read_too(tmp_path, monkeypatch):
    root = tmp_path / "root"
    write_mnist_raw(root / "MNIST" / "raw", monkeypatch)
    write_archive(root / "BSDS500_train_images.zip", [("BSR/BSDS500/data/images/train/1.jpg", "file", jpeg())])
    s = load_split("mnist_m_regen", "test", root)
    assert s.x.shape == (3, 3, 32, 32)


# -------------------------------------------------------------------------------- B. caches
@pytest.fixture
def toy(monkeypatch):
    """A cached 3-class domain whose builds are counted; ``fail`` makes the next build raise."""
    state = {"builds": 0, "fail": False}

    def build(root: Path, split: str) -> Split:
        if state["fail"]:
            raise DatasetNotFoundError("toy: raw files not found (the fixture's message)")
        state["builds"] += 1
        return Split(torch.arange(16, dtype=torch.uint8).reshape(4, 1, 2, 2), torch.tensor([0, 1, 2, 1]))

    monkeypatch.setitem(REGISTRY, "hardening_toy", Domain("hardening_toy", 3, build))
    return state


TAMPER = {
    "label 99": (lambda d: {**d, "y": torch.tensor([0, 1, 99, 1])}, "labels must lie in 0..2, found 0..99"),
    "label -1": (lambda d: {**d, "y": torch.tensor([0, -1, 2, 1])}, "found -1..2"),
    "float labels": (lambda d: {**d, "y": d["y"].float()}, "torch.float32"),
    "int32 images": (lambda d: {**d, "x": d["x"].int()}, "torch.int32"),
    "rows differ": (lambda d: {**d, "x": d["x"][:3]}, "3 rows"),
    "2-d labels": (lambda d: {**d, "y": d["y"][:, None]}, "(4, 1)"),
    "not tensors": (lambda d: {"x": d["x"].tolist(), "y": d["y"]}, "tensors"),
}


@pytest.mark.parametrize("case", TAMPER)
def test_tampered_cache_is_moved_aside_and_rebuilt(tmp_path, toy, capsys, case):
    tamper, why = TAMPER[case]
    good = load_split("hardening_toy", "train", tmp_path)
    path = cache_path(tmp_path, "hardening_toy", "train")
    torch.save(tamper({"x": good.x, "y": good.y}), path)
    s = load_split("hardening_toy", "train", tmp_path)
    assert s.y.tolist() == [0, 1, 2, 1] and torch.equal(s.x, good.x) and toy["builds"] == 2
    out = capsys.readouterr().out
    assert str(path) in out and why in out and "rebuilding" in out, out
    assert path.with_name("train.pt.corrupt").exists()  # kept for inspection, never used again
    assert torch.load(path, weights_only=True)["y"].tolist() == [0, 1, 2, 1]  # the rebuilt cache


def test_tampered_cache_that_cannot_be_rebuilt_says_both(tmp_path, toy):
    good = load_split("hardening_toy", "test", tmp_path)
    path = cache_path(tmp_path, "hardening_toy", "test")
    torch.save({"x": good.x, "y": torch.tensor([0, 1, 99, 1])}, path)
    toy["fail"] = True
    with pytest.raises(DatasetNotFoundError) as e:
        load_split("hardening_toy", "test", tmp_path)
    msg = str(e.value)
    assert str(path) in msg and "0..99" in msg and str(path) + ".corrupt" in msg, msg
    assert "the fixture's message" in msg and not path.exists()


def test_a_build_with_labels_out_of_range_is_refused(tmp_path, monkeypatch):
    def build(root, split):
        return Split(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 5]))

    monkeypatch.setitem(REGISTRY, "hardening_bad", Domain("hardening_bad", 3, build))
    with pytest.raises(CorruptDataError, match=r"hardening_bad.*0\.\.2.*0\.\.5"):
        load_split("hardening_bad", "train", tmp_path)
    assert not cache_path(tmp_path, "hardening_bad", "train").exists()


# ---------------------------------------------------------------- C. missing-file messages
def write_digits_mat(path: Path, n: int, seed: int = 0, v73: bool = False):
    """SVHN's format: X (32, 32, 3, N) uint8, y (N, 1) with 10 meaning digit 0; v5, or v7.3 as MATLAB writes it."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(n, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not v73:
        savemat(path, {"X": x, "y": y.astype(np.uint8)})
        return x, y
    import h5py

    # MATLAB's -v7.3 files are HDF5 with a 512-byte user block holding the MAT header. MATLAB
    # is column-major, so a (32, 32, 3, N) array is stored as an HDF5 dataset of the reversed
    # shape (N, 3, 32, 32); labels are doubles unless saved otherwise.
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("X", data=x.transpose(3, 2, 1, 0)).attrs["MATLAB_class"] = np.bytes_("uint8")
        f.create_dataset("y", data=y.astype(np.float64).T).attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")
    return x, y


def test_svhn_missing_names_every_expected_file(tmp_path):
    write_digits_mat(tmp_path / "svhn" / "train_32x32.mat", 3)
    with pytest.raises(DatasetNotFoundError) as e:
        load_split("svhn", "test", tmp_path)
    msg = str(e.value)
    assert f"{tmp_path / 'svhn' / 'train_32x32.mat'} (present)" in msg, msg
    assert f"{tmp_path / 'svhn' / 'test_32x32.mat'} (missing)" in msg
    assert SVHN.split_list["train"][0] in msg and SVHN.split_list["test"][0] in msg


def test_mnist_missing_names_all_four_files(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_split("mnist", "train", tmp_path)
    msg = str(e.value)
    for name in real.MNIST_MD5:
        assert f"{tmp_path / 'MNIST' / 'raw' / name} (missing)" in msg, msg


# ---------------------------------------------------------------- D. mirrors, MATLAB v7.3
class Server:
    """A real HTTP server on 127.0.0.1 serving a folder; records the paths asked for."""

    def __init__(self, www: Path):
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                requests.append(self.path)
                if self.path == "/stream":  # 1 MB with no Content-Length, as a misbehaving mirror may send
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(b"z" * (1 << 20))
                    return
                super().do_GET()

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def server(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    s = Server(www)
    s.www = www
    yield s
    s.close()


def closed_port() -> int:
    with socket.socket() as sock:  # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mirrors_are_tried_in_order_until_one_is_good(server, tmp_path):
    payload = b"the real file" * 50
    (server.www / "a").mkdir()
    (server.www / "a" / "f.bin").write_bytes(b"a tampered copy" * 40)
    (server.www / "b").mkdir()
    (server.www / "b" / "f.bin").write_bytes(payload)
    dest = tmp_path / "data" / "f.bin"
    urls = [f"{server.url}/gone/f.bin", f"{server.url}/a/f.bin", f"{server.url}/b/f.bin", f"{server.url}/never"]
    assert dl.fetch(urls, dest, sha256=sha256(payload), size=len(payload)) == dest
    assert dest.read_bytes() == payload
    assert server.requests == ["/gone/f.bin", "/a/f.bin", "/b/f.bin"]  # in order, the fourth never asked
    assert not list(dest.parent.glob(".*.part"))


def test_every_mirror_failing_lists_each_url_and_why(server, tmp_path):
    payload = b"0123456789" * 10
    (server.www / "bad.bin").write_bytes(b"x" * len(payload))
    (server.www / "huge.bin").write_bytes(b"y" * (len(payload) * 1000))
    (server.www / "short.bin").write_bytes(payload[:10])
    dest = tmp_path / "data" / "f.bin"
    urls = [f"{server.url}/missing.bin", f"{server.url}/bad.bin", f"{server.url}/huge.bin",
            f"{server.url}/short.bin", f"http://127.0.0.1:{closed_port()}/f.bin", f"{server.url}/stream"]
    with pytest.raises(DataError) as e:
        dl.fetch(urls, dest, sha256=sha256(payload), size=len(payload))
    msg = str(e.value)
    lines = {u: next((ln for ln in msg.splitlines() if u in ln), "") for u in urls}
    assert "404" in lines[urls[0]], msg
    assert sha256(b"x" * len(payload)) in lines[urls[1]] and sha256(payload) in lines[urls[1]], msg
    assert f"more than the expected {len(payload)} bytes" in lines[urls[2]], msg
    assert f"10 bytes, expected {len(payload)}" in lines[urls[3]], msg
    assert "refused" in lines[urls[4]].lower(), msg
    assert f"sends more than the expected {len(payload)} bytes; stopped" in lines[urls[5]], msg
    assert server.requests == ["/missing.bin", "/bad.bin", "/huge.bin", "/short.bin", "/stream"]
    assert (dest.parent / "f.bin.bad-checksum").read_bytes() == b"x" * len(payload)  # kept to inspect
    assert str(dest) in msg and not dest.exists() and not list(dest.parent.glob(".*.part"))


def test_syn_numbers_mirror_table_pins_size_and_checksum():
    want = {"synth_train_32x32.mat": ("e0e0924ecd0c0b5a55ed6485aaa7d39937af982397717b89a3d91777aca9433c",
                                      895_578_032),
            "synth_test_32x32.mat": ("6285fe9a1c6f27b379a47263907a37899b59ce86948fd343a5b904435cde5bcc",
                                     17_851_156)}
    files = {r.name: r for r in real.MIRRORS["syn_numbers"]}
    for name, (digest, size) in want.items():
        r = files[name]
        assert (r.sha256, r.size) == (digest, size)
        assert r.urls[0] == f"https://media.githubusercontent.com/media/domainadaptation/datasets/master/synth/{name}"
    for domain in ("mnist", "svhn", "syn_numbers"):  # every file with a published checksum and size
        for r in real.MIRRORS[domain]:
            assert (r.md5 or r.sha256) and r.size and r.urls, r


@pytest.mark.parametrize("v73", [False, True], ids=["v5", "v7.3"])
def test_digits_mat_v5_and_v73_read_alike(tmp_path, v73):
    path = tmp_path / "syn_numbers" / "synth_train_32x32.mat"
    x, y = write_digits_mat(path, 7, seed=1, v73=v73)
    s = load_split("syn_numbers", "train", tmp_path)
    assert s.x.shape == (7, 3, 32, 32) and s.x.dtype == torch.uint8 and s.y.dtype == torch.int64
    assert torch.equal(s.x, torch.from_numpy(x).permute(3, 2, 0, 1))  # x[i, c, h, w] == X[h, w, c, i]
    assert s.y.tolist() == [v % 10 for v in y.ravel().tolist()]


def test_v73_mat_with_bad_labels_or_without_h5py(tmp_path, monkeypatch):
    path = tmp_path / "syn_numbers" / "synth_test_32x32.mat"
    write_digits_mat(path, 4, v73=True)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "h5py", None)  # as if h5py were not installed
        with pytest.raises(DataError, match=r"synth_test_32x32.mat.*v7\.3.*pip install h5py"):
            load_split("syn_numbers", "test", tmp_path)
    import h5py

    with h5py.File(path, "r+") as f:
        f["y"][0, 1] = 2.5
    with pytest.raises(CorruptDataError, match=r"synth_test_32x32.mat.*whole numbers.*2.5"):
        load_split("syn_numbers", "test", tmp_path)
    assert not cache_path(tmp_path, "syn_numbers", "test").exists()


def test_syn_numbers_download_falls_back_to_a_working_mirror(server, tmp_path, monkeypatch):
    files = {}
    for split in ("train", "test"):
        p = server.www / "lfs" / f"synth_{split}_32x32.mat"
        write_digits_mat(p, 5, seed=len(split), v73=True)
        files[p.name] = p.read_bytes()
    mirrors = tuple(dl.Remote(name, (f"{server.url}/gone/{name}", f"{server.url}/lfs/{name}"),
                              sha256=sha256(data), size=len(data)) for name, data in files.items())
    monkeypatch.setitem(real.MIRRORS, "syn_numbers", mirrors)
    monkeypatch.setenv("DANN_DOWNLOAD", "1")
    s = load_split("syn_numbers", "test", tmp_path)
    assert len(s) == 5
    assert (tmp_path / "syn_numbers" / "synth_test_32x32.mat").read_bytes() == files["synth_test_32x32.mat"]
    assert "/gone/synth_test_32x32.mat" in server.requests and "/lfs/synth_test_32x32.mat" in server.requests


# ------------------------------------------------------------------------------ E. dann-data
def test_list_aligns_columns_and_says_whether_raw_files_are_present(tmp_path, monkeypatch, capsys):
    root = tmp_path / "root"
    write_digits_mat(root / "svhn" / "train_32x32.mat", 3)
    write_digits_mat(root / "svhn" / "test_32x32.mat", 3)
    write_mnist_raw(root / "MNIST" / "raw", monkeypatch)
    assert cli(["--root", str(root), "prepare", "mnist"]) == 0
    capsys.readouterr()
    assert cli(["--root", str(root), "list"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    by_name = {r.split()[0]: r for r in rows}
    assert len({r.index(" classes") for r in rows}) == 1, "\n".join(rows)  # one column, syn_signs_gen_photo too
    # (domains registered by other tests may have no doc)
    docs = {r.index(REGISTRY[r.split()[0]].doc) for r in rows if REGISTRY[r.split()[0]].doc}
    assert len(docs) == 1, "\n".join(rows)
    assert "cached" in by_name["mnist"] and "not prepared" not in by_name["mnist"]
    assert "not prepared; raw files present" in by_name["svhn"]
    assert "not prepared; raw files missing" in by_name["gtsrb"]
    assert "not prepared; raw files missing" in by_name["mnist_m_regen"]  # no BSDS500 photos
    assert "not prepared; needs no raw files" in by_name["syn_signs_gen"]
    assert "generated on the fly" in by_name["moons"]


def test_preparing_syn_signs_prints_no_maintainer_instruction(tmp_path, capsys):
    src = tmp_path / "src"
    lines = []
    for i in range(10):
        (src / "train").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), (i * 20, 0, 0)).save(src / "train" / f"{i:05d}.png")
        lines.append(f"train/{i:05d}.png {i % 43} 0.5")
    (src / "train_labelling.txt").write_text("\n".join(lines) + "\n")
    root = tmp_path / "root"
    (root / "syn_signs").mkdir(parents=True)
    with tarfile.open(root / "syn_signs" / "synthetic_data.tar.gz", "w:gz") as t:
        t.add(src / "train_labelling.txt", "train_labelling.txt")
        t.add(src / "train", "train")
    assert cli(["--root", str(root), "prepare", "syn_signs"]) == 0
    out = capsys.readouterr().out
    assert "real.py" not in out and "record it" not in out and "SYN_SIGNS_SHA256" not in out, out
    assert "no checksum is published" in out  # still says why nothing was verified by hash
