"""The six real domains of the paper: mnist, mnist_m, svhn, syn_numbers, syn_signs, gtsrb.

Raw files live under the data root (``$DANN_DATA_DIR``, default ``~/.cache/dann``)::

    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]      torchvision's MNIST layout
    mnist_m.tar.gz  or  mnist_m/mnist_m_{train,test}/*.png + mnist_m_{train,test}_labels.txt
    svhn/{train,test}_32x32.mat                                       (torchvision's SVHN(root=<root>/svhn))
    syn_numbers/synth_{train,test}_32x32.mat  or  syn_numbers/SynthDigits.zip
    syn_signs/train_labelling.txt + train/*.png  or  syn_signs/<any archive holding them>
    gtsrb/GTSRB/Training/000CC/GT-000CC.csv + *.ppm                   (torchvision's GTSRB download)
      or gtsrb/GTSRB/Final_Training/Images/000CC/...                  (official layout)
      or gtsrb/GTSRB-Training_fixed.zip, gtsrb/GTSRB_Final_Training_Images.zip, gtsrb/GTSRB_Final_Training_*.tar.xz

Missing files raise DatasetNotFoundError naming every file, the folder and the URL. Set
``DANN_DOWNLOAD=1`` (or call :func:`download`) to let dann fetch them; it never goes online
otherwise. Each split is built once and cached by ``load_split``.

Verification policy
-------------------
* mnist: the four *uncompressed* idx files are checked against the originals' md5 (also when
  they are read from ``.gz`` wrappers, whose own md5 varies with who compressed them). Downloads
  use torchvision's mirrors, checked against torchvision's ``.gz`` md5 first.
* svhn: md5 from torchvision's ``SVHN.split_list``, enforced.
* Downloads: :data:`MIRRORS` lists, per domain, every file with its mirrors in the order they are
  tried and its pinned checksum and size (where published); a mirror that fails or serves other
  bytes is skipped for the next (see :func:`dann.data.download.fetch`).
* mnist_m, gtsrb: a download is accepted only if its md5 equals the pinned mirror's
  (``MNIST_M_MD5``, ``GTSRB_MD5``). An archive or folder the *user* placed is accepted even if
  its md5 differs (re-packed copies are common), because its *content* is verified instead:
  every listed image must be present and decodable at the expected size, labels must parse and
  lie in range, and the counts are compared with the release's (59,001/9,001 for mnist_m,
  39,209 for gtsrb). A one-line notice says when the archive's md5 differs from the mirror's,
  and a WARNING line when the counts differ (e.g. a partial copy): it still loads.
* syn_numbers: downloads come from the Git LFS copies pinned in :data:`MIRRORS` (sha256 and
  size), or as a last resort from Ganin's ``SynthDigits.zip`` (no checksum published). A
  ``.mat`` file the user placed is accepted whatever its hash (other copies exist, e.g. the one
  in SynthDigits.zip), because its content is verified; a notice gives its sha256. Both MATLAB
  v5 and v7.3 (HDF5, read with h5py) files are read.
* syn_signs: no checksum is published; a notice gives the archive's sha256 and its content is
  verified. ``SYN_NUMBERS_SHA256`` / ``SYN_SIGNS_SHA256`` (``None`` by default) pin a site's own
  copies: a file listed there must match.
* A hash mismatch raises ChecksumError (file, expected, actual) and renames the file to
  ``<name>.bad-checksum``: it is never used again and never silently deleted.
* Archives are extracted to a hidden temporary folder and renamed into place when complete
  (see :mod:`dann.data.download`); a truncated archive or an undecodable image raises
  CorruptDataError naming the file, and leaves no cache and no partial folder behind.

Splits that the data do not define
----------------------------------
* syn_signs is distributed as one ``train`` folder: dann holds out a deterministic 10% as its
  ``test`` split (permutation of the sorted unique names by ``SYN_SIGNS_SPLIT_SEED``, a
  constant unrelated to training seeds). Names listed twice in ``train_labelling.txt`` keep
  their first line (the public sample lists 18 names twice, identically).
* gtsrb uses the official *training* set only, as in the paper: 31,367 images form ``train``
  (the unlabelled target while training) and the other 7,842 ``test``, drawn by
  ``GTSRB_SPLIT_SEED``. Each image is cropped to its CSV ROI (Roi.X2/Roi.Y2 taken as
  inclusive), the box scaled by actual/CSV size when the file is smaller than the CSV says,
  and resized to 40x40 (bilinear).
"""

from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import MNIST, SVHN
from torchvision.datasets.mnist import read_image_file, read_label_file
from tqdm import tqdm

from dann.data.domains import (CorruptDataError, DataError, DatasetNotFoundError, Domain, Split, default_root,
                               image_bomb, image_bombs_are_errors, outside_name, register)
from dann.data.download import (Remote, downloads_enabled, extract, fetch, fetch_remote, find_archives, md5sum,
                                 sha256sum, verify)

# ------------------------------------------------------------------------------- constants
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
MNIST_MD5 = {  # of the uncompressed idx files (LeCun's originals)
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

MNIST_M_URL = "https://cornell.box.com/shared/static/jado7quprg6hzzdubvwzh9umr75damwi"  # as used by pytorch-adapt
MNIST_M_MD5 = "859df31c91afe82e80e5012ba928f279"
MNIST_M_COUNTS = {"train": 59_001, "test": 9_001}

# SynNumbers ("SynthDigits.zip", Ganin & Lempitsky), linked from http://yaroslav.ganin.net/ ; needs `pip install gdown`.
SYN_NUMBERS_URL = "https://drive.google.com/file/d/0B9Z4d7lAwbnTSVR1dEFSRUFxOUU/view"
SYN_NUMBERS_ARCHIVE = "SynthDigits.zip"
# No checksum is published for these: a site may pin its own copies here (then enforced).
SYN_NUMBERS_SHA256: dict[str, str | None] = {
    "SynthDigits.zip": None, "synth_train_32x32.mat": None, "synth_test_32x32.mat": None}

# SynSigns (Moiseev et al. 2013), page http://graphics.cs.msu.ru/en/node/1337
SYN_SIGNS_URL = "https://www.dropbox.com/s/7izi9lccg163on1/synthetic_data.zip?dl=1"
SYN_SIGNS_ARCHIVE = "synthetic_data.zip"
# No checksum is published: a site may pin its own copy here (then enforced).
SYN_SIGNS_SHA256: dict[str, str | None] = {"synthetic_data.zip": None}
SYN_SIGNS_FULL = 100_000  # images in the full release
SYN_SIGNS_SPLIT_SEED = 1_337_043  # fixed; unrelated to training seeds
SYN_SIGNS_TEST_FRACTION = 0.1

GTSRB_URL = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/GTSRB-Training_fixed.zip"
GTSRB_MD5 = "513f3c79a4c5141765e10e952eaa2478"  # torchvision's GTSRB
GTSRB_ARCHIVE_PATTERNS = ("GTSRB-Training_fixed.zip", "GTSRB_Final_Training*")
GTSRB_TOTAL, GTSRB_TRAIN = 39_209, 31_367  # the paper: 31,367 unlabelled target, the other 7,842 to evaluate
GTSRB_SPLIT_SEED = 31_367
GTSRB_MARKER = "00000/GT-00000.csv"

SIGN_SIZE = (40, 40)

# ---------------------------------------------------------------------------------- mirrors
# Every downloadable file, its mirrors in the order they are tried, and its pins. Sizes: the
# .gz files' and SVHN's are those TensorFlow Datasets publishes for the same URLs
# (url_checksums/mnist.txt, svhn_cropped.txt); md5s are torchvision's.
MNIST_GZ_SIZES = {"train-images-idx3-ubyte.gz": 9_912_422, "train-labels-idx1-ubyte.gz": 28_881,
                  "t10k-images-idx3-ubyte.gz": 1_648_877, "t10k-labels-idx1-ubyte.gz": 4_542}
# TensorFlow Datasets' copy; the same sizes as LeCun's files. If its bytes ever differed from the
# pinned md5 it would simply be skipped.
MNIST_EXTRA_MIRROR = "https://storage.googleapis.com/cvdf-datasets/mnist/"
SVHN_SIZES = {"train_32x32.mat": 182_040_794, "test_32x32.mat": 64_275_384}
# SynNumbers as Git LFS objects of the public GitHub repository domainadaptation/datasets
# (pointer files synth/*.mat give these sha256 and sizes). raw.githubusercontent.com returns
# the small pointer file, not the content; LFS content is served from
# media.githubusercontent.com/media/<owner>/<repo>/<ref>/<path>, and github.com/<owner>/<repo>/
# raw/<ref>/<path> is the second mirror (for LFS files it redirects to the content). Assumption:
# these URL forms are taken from common use, not from a GitHub document; if one stops working,
# the next mirror is tried and the pinned sha256 guards against anything else being served.
SYN_NUMBERS_REPO, SYN_NUMBERS_REF = "domainadaptation/datasets", "master"
SYN_NUMBERS_LFS = {"synth_train_32x32.mat": ("e0e0924ecd0c0b5a55ed6485aaa7d39937af982397717b89a3d91777aca9433c",
                                             895_578_032),
                   "synth_test_32x32.mat": ("6285fe9a1c6f27b379a47263907a37899b59ce86948fd343a5b904435cde5bcc",
                                            17_851_156)}


def _mirrors() -> dict[str, tuple[Remote, ...]]:
    repo, ref = SYN_NUMBERS_REPO, SYN_NUMBERS_REF
    return {
        "mnist": tuple(Remote(gz, tuple(m + gz for m in (*MNIST.mirrors, MNIST_EXTRA_MIRROR)), md5=md5,
                              size=MNIST_GZ_SIZES[gz]) for gz, md5 in MNIST.resources),
        "mnist_m": (Remote("mnist_m.tar.gz", (MNIST_M_URL,), md5=MNIST_M_MD5),),
        # no second source of SVHN with a published checksum is known
        "svhn": tuple(Remote(fname, (url,), md5=md5, size=SVHN_SIZES[fname])
                      for url, fname, md5 in (SVHN.split_list["train"], SVHN.split_list["test"])),
        "syn_numbers": tuple(Remote(name, (f"https://media.githubusercontent.com/media/{repo}/{ref}/synth/{name}",
                                           f"https://github.com/{repo}/raw/{ref}/synth/{name}"),
                                    sha256=digest, size=size) for name, (digest, size) in SYN_NUMBERS_LFS.items()),
        "syn_signs": (Remote(SYN_SIGNS_ARCHIVE, (SYN_SIGNS_URL,), sha256=SYN_SIGNS_SHA256[SYN_SIGNS_ARCHIVE]),),
        "gtsrb": (Remote("GTSRB-Training_fixed.zip", (GTSRB_URL,), md5=GTSRB_MD5),),
    }


MIRRORS: dict[str, tuple[Remote, ...]] = _mirrors()
_printed: set[str] = set()


# --------------------------------------------------------------------------------- helpers
def _notice(msg: str) -> None:
    """Print a one-line ``[dann]`` notice, once per process per message."""
    if msg not in _printed:
        _printed.add(msg)
        print(f"[dann] {msg}", flush=True)


def _not_found(name: str, expected: Sequence[Path], folder: Path, urls: Sequence[str], how: str = "",
               present: Callable[[Path], bool] = Path.exists) -> DatasetNotFoundError:
    """The error for absent raw files: every expected file (each marked present or missing), where, and the URLs."""
    def line(p: Path) -> str:
        if re.search(r"[*{}()]| \+ ", p.name):  # a pattern or a note, not one file
            return f"  {p}"
        return f"  {p} ({'present' if present(p) else 'missing'})"

    files = "\n".join(line(Path(p)) for p in expected)
    return DatasetNotFoundError(
        f"{name}: raw files not found. Expected:\n{files}\nPlace them in {folder}{how}, or set DANN_DOWNLOAD=1 "
        f"(or call dann.data.real.download({name!r})) to download them from: {', '.join(urls)}")


def _check_unpinned(path: Path, table: dict[str, str | None], mirror_sha256: str | None = None) -> None:
    """Enforce a sha256 the site pinned in ``table``; else say the file's sha256 and why it is accepted."""
    pinned = table.get(path.name)
    if pinned:
        verify(path, sha256=pinned)
        return
    digest = sha256sum(path)
    if digest == mirror_sha256:
        return  # the very file the pinned mirror serves
    why = (f"not the mirror's {mirror_sha256} (another copy?)" if mirror_sha256
           else "no checksum is published for this file")
    _notice(f"{path}: sha256 {digest}, {why}; accepted because its content is checked instead")


def _roi_box(roi: tuple[int, int, int, int, int, int], actual: tuple[int, int]) -> tuple[float, float, float, float]:
    """A GTSRB ROI (CSV W, H, X1, Y1, X2, Y2; X2/Y2 inclusive) as a box in the file's own pixels.

    The box is scaled by actual/CSV size when the file is smaller (or larger) than its CSV says.
    """
    w, h, x1, y1, x2, y2 = roi
    aw, ah = actual
    sx, sy = aw / w, ah / h
    return (max(0.0, x1 * sx), max(0.0, y1 * sy), min(float(aw), (x2 + 1) * sx), min(float(ah), (y2 + 1) * sy))


def _decode(path: Path, size: tuple[int, int], roi: tuple[int, int, int, int, int, int] | None = None,
            strict: bool = False) -> np.ndarray:
    """Decode ``path`` to an (H, W, 3) uint8 array of ``size`` (W, H), cropped to ``roi`` if given.

    Other sizes are resized (bilinear), or rejected when ``strict``.
    """
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            box = _roi_box(roi, im.size) if roi is not None else None
            if box is None and im.size != size:
                if strict:
                    raise CorruptDataError(f"{path} is {im.size[0]}x{im.size[1]}, expected {size[0]}x{size[1]}")
                box = (0, 0, *im.size)
            if box is not None:
                im = im.resize(size, Image.BILINEAR, box=box)
            return np.asarray(im)
    except FileNotFoundError as e:
        raise CorruptDataError(f"{path} is listed but missing: the copy is incomplete") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise image_bomb(path, e) from None
    except (OSError, SyntaxError, ValueError, ZeroDivisionError) as e:
        raise CorruptDataError(f"{path} cannot be decoded as an image ({e}); the copy is corrupt, replace it") from e


def _decode_all(paths: Sequence[Path], size: tuple[int, int], desc: str,
                rois: Sequence[tuple[int, int, int, int, int, int]] | None = None,
                strict: bool = False) -> torch.Tensor:
    """Decode images into one (N, 3, H, W) uint8 tensor, with a tqdm bar."""
    out = np.empty((len(paths), size[1], size[0], 3), dtype=np.uint8)
    with image_bombs_are_errors():
        for i, p in enumerate(tqdm(paths, desc=f"[dann] {desc}", unit="img", mininterval=1.0)):
            out[i] = _decode(p, size, rois[i] if rois is not None else None, strict)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _listed(folder: Path, name: str, where: str) -> Path:
    """``folder / name`` for an image a labels file lists; CorruptDataError if the name leads out of ``folder``."""
    why = outside_name(name)
    if why:
        raise CorruptDataError(f"{where}: the image name {name!r} {why}: a labels file names images in its own "
                               f"folder only. The file is damaged or was tampered with: replace it with a trusted copy")
    return folder / name


def _split_indices(n: int, n_train: int, seed: int, split: str) -> np.ndarray:
    """Sorted indices of ``split`` in a fixed random partition of ``range(n)``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    idx = perm[:n_train] if split == "train" else perm[n_train:]
    return np.sort(idx)


def _labels(values: Sequence[int], num_classes: int, where: str) -> torch.Tensor:
    y = torch.tensor(list(values), dtype=torch.int64)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise CorruptDataError(f"{where}: labels must lie in 0..{num_classes - 1}, found {y.min()}..{y.max()}")
    return y


# ----------------------------------------------------------------------------------- MNIST
def _fetch_mnist(root: Path, names: Sequence[str] | None = None) -> None:
    raw = root / "MNIST" / "raw"
    for r in MIRRORS["mnist"]:
        if names is None or r.name[:-3] in names:
            if not (raw / r.name).is_file() and not (raw / r.name[:-3]).is_file():
                fetch_remote(r, raw)


def _mnist_file(raw: Path, name: str, tmp: Path) -> Path:
    """Path of the verified uncompressed idx file ``name`` (decompressing ``name.gz`` into ``tmp``)."""
    plain, gz = raw / name, raw / f"{name}.gz"
    if plain.is_file():
        verify(plain, md5=MNIST_MD5[name], hint="Replace it with the original file (or its .gz).")
        return plain
    out = tmp / name
    try:
        with gzip.open(gz, "rb") as f, open(out, "wb") as g:
            while block := f.read(1 << 20):
                g.write(block)
    except (OSError, EOFError) as e:
        raise CorruptDataError(f"{gz} is truncated or not gzip ({e}); replace it with a complete copy") from e
    verify(out, md5=MNIST_MD5[name], culprit=gz, label=f"{gz} (decompressed)",
           hint="Replace it with a copy of the original file.")
    return out


def build_mnist(root: Path, split: str) -> Split:
    raw = Path(root) / "MNIST" / "raw"
    names = MNIST_FILES[split]
    missing = [n for n in names if not (raw / n).is_file() and not (raw / f"{n}.gz").is_file()]
    if missing and downloads_enabled():
        _fetch_mnist(Path(root), names)
        missing = []
    if missing:
        raise _not_found("mnist", [raw / n for s in MNIST_FILES.values() for n in s], raw, MNIST.mirrors,
                         " (torchvision's MNIST layout; each file plain or .gz)",
                         present=lambda p: p.is_file() or p.with_name(p.name + ".gz").is_file())
    _notice(f"building mnist/{split} from {raw}")
    with TemporaryDirectory(prefix="dann-mnist-") as tmp:
        img, lbl = (_mnist_file(raw, n, Path(tmp)) for n in names)
        try:
            x, y = read_image_file(str(img)), read_label_file(str(lbl))
        except (AssertionError, ValueError, RuntimeError) as e:
            raise CorruptDataError(f"{raw}: malformed idx file for {split} ({e})") from e
    return Split(x.unsqueeze(1).contiguous(), y.long())


# --------------------------------------------------------------------------------- MNIST-M
def _fetch_mnist_m(root: Path) -> None:
    for r in MIRRORS["mnist_m"]:
        fetch_remote(r, Path(root))


def _mnist_m_dir(root: Path) -> Path:
    folder, archive = root / "mnist_m", root / "mnist_m.tar.gz"
    if (folder / "mnist_m_train_labels.txt").is_file():
        return folder
    if not archive.is_file() and downloads_enabled():
        _fetch_mnist_m(root)
    if not archive.is_file():
        raise _not_found("mnist_m", [archive, folder / "mnist_m_{train,test}/*.png",
                                     folder / "mnist_m_{train,test}_labels.txt"], root, [MNIST_M_URL],
                         " (the archive, or its extracted mnist_m/ folder)")
    md5 = md5sum(archive)
    if md5 != MNIST_M_MD5:
        _notice(f"{archive} has md5 {md5}, not the public mirror's {MNIST_M_MD5} (a re-packed copy?); "
                f"accepted because its contents are verified instead (every listed image present, 32x32 RGB, counts)")
    return extract(archive, folder, "mnist_m_train_labels.txt")


def build_mnist_m(root: Path, split: str) -> Split:
    folder = _mnist_m_dir(Path(root))
    labels_file, img_dir = folder / f"mnist_m_{split}_labels.txt", folder / f"mnist_m_{split}"
    if not labels_file.is_file() or not img_dir.is_dir():
        raise CorruptDataError(f"{folder} lacks {labels_file.name} or {img_dir.name}/: the copy is incomplete; "
                               f"remove the folder and extract mnist_m.tar.gz again")
    names, ys = [], []
    for i, line in enumerate(labels_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise CorruptDataError(f"{labels_file}:{i}: expected 'name label', got {line!r}")
        _listed(img_dir, parts[0], f"{labels_file}:{i}")
        names.append(parts[0])
        ys.append(int(parts[1]))
    y = _labels(ys, 10, str(labels_file))
    want, n_png = MNIST_M_COUNTS[split], sum(1 for _ in img_dir.glob("*.png"))
    _notice(f"building mnist_m/{split} from {folder} ({len(names):,} images)")
    if len(names) != want or n_png != len(names):
        _notice(f"WARNING: mnist_m/{split}: {labels_file.name} lists {len(names):,} images and {img_dir.name}/ "
                f"holds {n_png:,}; the release has {want:,}: this is not the full release")
    x = _decode_all([img_dir / n for n in names], (32, 32), f"mnist_m {split}", strict=True)
    return Split(x, y)


# ------------------------------------------------------------------------ SVHN, SynNumbers
def _read_mat73(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """X and y of a MATLAB v7.3 file (HDF5), in MATLAB's axis order, as ``loadmat`` gives a v5 file's."""
    try:
        import h5py
    except ImportError as e:
        raise DataError(f"{path} is a MATLAB v7.3 (HDF5) file; reading it needs h5py: pip install h5py") from e
    try:
        with h5py.File(path, "r") as f:
            ds = {}
            for key in ("X", "y"):
                d = f[key] if isinstance(f.get(key, getlink=True), h5py.HardLink) else None
                # data kept in other files (external links, external or virtual storage) is never read
                if not isinstance(d, h5py.Dataset) or d.external or d.is_virtual:
                    raise CorruptDataError(f"{path}: no dataset {key!r} stored in the file itself; expected a "
                                           f"MATLAB file with X (32, 32, 3, N) uint8 and y (N labels)")
                ds[key] = d
            x = ds["X"]
            # MATLAB is column-major: HDF5 holds its (32, 32, 3, N) X as (N, 3, 32, 32), hence shape[::-1]
            # and .T; the shape is checked before any pixel is read
            if x.ndim != 4 or x.shape[::-1][:3] != (32, 32, 3) or x.dtype != np.uint8:
                raise CorruptDataError(f"{path}: X is {x.shape[::-1]} {x.dtype}; expected X (32, 32, 3, N) uint8")
            return x[()].T, ds["y"][()].T
    except OSError as e:
        raise CorruptDataError(f"{path} is truncated or not a readable MATLAB v7.3 (HDF5) file ({e})") from e


def _read_digits_mat(path: Path) -> Split:
    """A .mat file (MATLAB v5, or v7.3 = HDF5) with X (32, 32, 3, N) uint8 and y (N, 1) where 10 means digit 0."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError, matfile_version

    try:
        if matfile_version(str(path))[0] == 2:  # 2 = v7.3, which scipy cannot read
            x, y = _read_mat73(path)
        else:
            d = loadmat(str(path), variable_names=["X", "y"])
            x, y = d["X"], d["y"]
    except (ValueError, OSError, TypeError, KeyError, NotImplementedError, EOFError, MatReadError) as e:
        raise CorruptDataError(f"{path} is truncated or not a MATLAB file with X and y "
                               f"({type(e).__name__}: {e})") from e
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8 or y.size != x.shape[3]:
        raise CorruptDataError(f"{path}: X is {x.shape} {x.dtype} and y has {y.size} entries; "
                               f"expected X (32, 32, 3, N) uint8 and N labels")
    y = y.reshape(-1)
    # v7.3 files store labels as doubles: accept whole numbers only
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0)):
        raise CorruptDataError(f"{path}: labels y must be whole numbers 1..10, found {y.dtype} values "
                               f"such as {y[:3].tolist()}")
    y = y.astype(np.int64)
    y[y == 10] = 0
    return Split(torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))), _labels(y, 10, str(path)))


def _fetch_svhn(root: Path, splits: Sequence[str] = ("train", "test")) -> None:
    wanted = {SVHN.split_list[s][1] for s in splits}
    for r in MIRRORS["svhn"]:
        if r.name in wanted and not (root / "svhn" / r.name).is_file():
            fetch_remote(r, root / "svhn")


def build_svhn(root: Path, split: str) -> Split:
    url, fname, md5 = SVHN.split_list[split]
    path = Path(root) / "svhn" / fname
    if not path.is_file() and downloads_enabled():
        _fetch_svhn(Path(root), [split])
    if not path.is_file():
        raise _not_found("svhn", [path.with_name(SVHN.split_list[s][1]) for s in ("train", "test")], path.parent,
                         [SVHN.split_list[s][0] for s in ("train", "test")],
                         " (torchvision's SVHN(root=<root>/svhn) layout)")
    _notice(f"building svhn/{split} from {path}")
    verify(path, md5=md5, hint=f"Download it again from {url}.")
    return _read_digits_mat(path)


def _fetch_syn_numbers(root: Path) -> None:
    """The two pinned .mat files from their mirrors; failing that, Ganin's SynthDigits.zip (unpinned)."""
    folder = Path(root) / "syn_numbers"
    try:
        for r in MIRRORS["syn_numbers"]:
            if not (folder / r.name).is_file():
                fetch_remote(r, folder)
    except DataError as e:
        if (folder / SYN_NUMBERS_ARCHIVE).is_file():
            raise
        _notice(f"the pinned mirrors of SynNumbers failed; trying {SYN_NUMBERS_ARCHIVE} from {SYN_NUMBERS_URL} "
                f"(no checksum is published for it; its content is checked instead)")
        try:
            fetch(SYN_NUMBERS_URL, folder / SYN_NUMBERS_ARCHIVE, sha256=SYN_NUMBERS_SHA256[SYN_NUMBERS_ARCHIVE])
        except DataError as e2:
            raise type(e)(f"{e}\n{e2}") from e2


def build_syn_numbers(root: Path, split: str) -> Split:
    folder = Path(root) / "syn_numbers"
    fname = f"synth_{split}_32x32.mat"
    candidates = [folder / fname, folder / "SynthDigits" / fname]
    archive = folder / SYN_NUMBERS_ARCHIVE
    if not any(p.is_file() for p in candidates) and not archive.is_file() and downloads_enabled():
        _fetch_syn_numbers(Path(root))
    path = next((p for p in candidates if p.is_file()), None)
    if path is None and archive.is_file():
        _check_unpinned(archive, SYN_NUMBERS_SHA256)
        path = extract(archive, folder / "SynthDigits", "synth_train_32x32.mat") / fname
    if path is None or not path.is_file():
        raise _not_found("syn_numbers", [folder / "synth_train_32x32.mat", folder / "synth_test_32x32.mat",
                                         archive], folder, [SYN_NUMBERS_URL, "http://yaroslav.ganin.net/"],
                         " (the two .mat files, or the SynthDigits.zip that holds them)")
    _notice(f"building syn_numbers/{split} from {path}")
    _check_unpinned(path, SYN_NUMBERS_SHA256, SYN_NUMBERS_LFS.get(path.name, (None,))[0])
    return _read_digits_mat(path)


# -------------------------------------------------------------------------------- SynSigns
def _fetch_syn_signs(root: Path) -> None:
    folder = Path(root) / "syn_signs"
    for r in MIRRORS["syn_signs"]:
        if not (folder / r.name).is_file():
            fetch_remote(r, folder)


def _syn_signs_dir(root: Path) -> Path:
    folder = root / "syn_signs"
    for d in (folder, folder / "synthetic_data"):
        if (d / "train_labelling.txt").is_file():
            return d
    archives = find_archives(folder)
    if not archives and downloads_enabled():
        _fetch_syn_signs(root)
        archives = find_archives(folder)
    if not archives:
        raise _not_found("syn_signs", [folder / "train_labelling.txt", folder / "train/*.png",
                                       folder / f"{SYN_SIGNS_ARCHIVE} (or any .zip/.tar.* archive holding them)"],
                         folder, [SYN_SIGNS_URL, "http://graphics.cs.msu.ru/en/node/1337"])
    archive = next((a for a in archives if a.name == SYN_SIGNS_ARCHIVE), archives[0])
    if len(archives) > 1:
        _notice(f"several archives in {folder}; using {archive.name}")
    _check_unpinned(archive, SYN_SIGNS_SHA256)
    return extract(archive, folder / "synthetic_data", "train_labelling.txt")


def build_syn_signs(root: Path, split: str) -> Split:
    d = _syn_signs_dir(Path(root))
    lab = d / "train_labelling.txt"
    first: dict[str, int] = {}
    dups = conflicts = 0
    for i, line in enumerate(lab.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[1].lstrip("-").isdigit():
            raise CorruptDataError(f"{lab}:{i}: expected 'train/NNNNN.png class score', got {line!r}")
        _listed(d, parts[0], f"{lab}:{i}")
        if parts[0] in first:  # keep the first line of a repeated name
            dups += 1
            conflicts += first[parts[0]] != int(parts[1])
            continue
        first[parts[0]] = int(parts[1])
    names = sorted(first)
    n = len(names)
    n_train = n - int(round(n * SYN_SIGNS_TEST_FRACTION))
    idx = _split_indices(n, n_train, SYN_SIGNS_SPLIT_SEED, split)
    extra = f"; {dups} repeated names kept their first line ({conflicts} with a different class)" if dups else ""
    _notice(f"building syn_signs/{split} from {d}: {len(idx):,} of {n:,} images (fixed 90/10 split){extra}")
    if n < SYN_SIGNS_FULL:
        _notice(f"syn_signs: {lab} lists {n:,} distinct images; the full SynSigns has {SYN_SIGNS_FULL:,}: "
                f"this is a sample")
    y = _labels([first[names[i]] for i in idx], 43, str(lab))
    x = _decode_all([d / names[i] for i in idx], SIGN_SIZE, f"syn_signs {split}")
    return Split(x, y)


# ----------------------------------------------------------------------------------- GTSRB
GTSRB_LAYOUTS = (Path("GTSRB") / "Training", Path("GTSRB") / "Final_Training" / "Images")


def _fetch_gtsrb(root: Path) -> None:
    folder = Path(root) / "gtsrb"
    if not find_archives(folder, GTSRB_ARCHIVE_PATTERNS):
        for r in MIRRORS["gtsrb"]:
            fetch_remote(r, folder)


def _gtsrb_dir(root: Path) -> Path:
    folder = root / "gtsrb"
    for rel in GTSRB_LAYOUTS:
        if (folder / rel / GTSRB_MARKER).is_file():
            return folder / rel
    archives = find_archives(folder, GTSRB_ARCHIVE_PATTERNS)
    if not archives and downloads_enabled():
        _fetch_gtsrb(root)
        archives = find_archives(folder, GTSRB_ARCHIVE_PATTERNS)
    if not archives:
        raise _not_found("gtsrb", [folder / rel / "000CC/GT-000CC.csv + *.ppm" for rel in GTSRB_LAYOUTS]
                         + [folder / "GTSRB-Training_fixed.zip", folder / "GTSRB_Final_Training_Images.zip"],
                         folder, [GTSRB_URL], " (one of these folders or archives; the official training set)")
    archive = archives[0]
    if archive.name == "GTSRB-Training_fixed.zip":
        md5 = md5sum(archive)
        if md5 != GTSRB_MD5:
            _notice(f"{archive} has md5 {md5}, not the mirror's {GTSRB_MD5}; accepted because its contents are "
                    f"verified instead (every CSV row's image present and decodable, count)")
        return extract(archive, folder / GTSRB_LAYOUTS[0], GTSRB_MARKER)
    _notice(f"{archive}: no published md5 for this archive; its contents are verified instead")
    return extract(archive, folder / GTSRB_LAYOUTS[1], GTSRB_MARKER)


def _gtsrb_rows(img_root: Path) -> tuple[list[Path], list[tuple[int, int, int, int, int, int]], list[int]]:
    """Image paths, (W, H, X1, Y1, X2, Y2) and ClassId of every CSV row, in folder/CSV order."""
    paths, rois, ys = [], [], []
    class_dirs = sorted(p for p in img_root.iterdir() if p.is_dir() and p.name.isdigit())
    for cdir in class_dirs:
        csv_path = cdir / f"GT-{cdir.name}.csv"
        if not csv_path.is_file():
            raise CorruptDataError(f"{csv_path} is missing: the copy is incomplete")
        with open(csv_path, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
        if not rows or rows[0][:8] != ["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2",
                                       "ClassId"]:
            raise CorruptDataError(f"{csv_path}: header must be Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;"
                                   f"ClassId, got {rows[:1]}")
        for i, row in enumerate(rows[1:], 2):
            if not row:
                continue
            try:
                w, h, x1, y1, x2, y2, c = (int(v) for v in row[1:8])
            except ValueError as e:
                raise CorruptDataError(f"{csv_path}:{i}: malformed row {row}") from e
            paths.append(_listed(cdir, row[0], f"{csv_path}:{i}"))
            rois.append((w, h, x1, y1, x2, y2))
            ys.append(c)
    return paths, rois, ys


def build_gtsrb(root: Path, split: str) -> Split:
    img_root = _gtsrb_dir(Path(root))
    paths, rois, ys = _gtsrb_rows(img_root)
    n = len(paths)
    if n == 0:
        raise CorruptDataError(f"{img_root} holds no GT-000CC.csv rows")
    n_train = GTSRB_TRAIN if n == GTSRB_TOTAL else int(round(n * GTSRB_TRAIN / GTSRB_TOTAL))
    idx = _split_indices(n, n_train, GTSRB_SPLIT_SEED, split)
    _notice(f"building gtsrb/{split} from {img_root}: {len(idx):,} of {n:,} images (fixed "
            f"{n_train:,}/{n - n_train:,} split), ROI crop -> 40x40")
    if n != GTSRB_TOTAL:
        _notice(f"WARNING: gtsrb: {img_root} lists {n:,} images; the official training set has {GTSRB_TOTAL:,}")
    x = _decode_all([paths[i] for i in idx], SIGN_SIZE, f"gtsrb {split}", rois=[rois[i] for i in idx])
    return Split(x, _labels([ys[i] for i in idx], 43, str(img_root)))


# -------------------------------------------------------------------------------- registry
_FETCH: dict[str, Callable[[Path], None]] = {
    "mnist": _fetch_mnist, "mnist_m": _fetch_mnist_m, "svhn": _fetch_svhn,
    "syn_numbers": _fetch_syn_numbers, "syn_signs": _fetch_syn_signs, "gtsrb": _fetch_gtsrb,
}


def download(name: str, root: str | Path | None = None) -> None:
    """Download the raw files of domain ``name`` into ``root`` (verified; files already present are kept)."""
    if name not in _FETCH:
        raise DataError(f"no download for {name!r}; real domains: {', '.join(_FETCH)}")
    _FETCH[name](Path(root).expanduser() if root else default_root())


# Whether each domain's raw files (or an archive holding them) are present: what `dann-data list` says.
def mnist_raw_present(root: Path) -> bool:
    raw = Path(root) / "MNIST" / "raw"
    return all((raw / n).is_file() or (raw / f"{n}.gz").is_file() for names in MNIST_FILES.values() for n in names)


def _mnist_m_present(root: Path) -> bool:
    return (root / "mnist_m" / "mnist_m_train_labels.txt").is_file() or (root / "mnist_m.tar.gz").is_file()


def _svhn_present(root: Path) -> bool:
    return all((root / "svhn" / SVHN.split_list[s][1]).is_file() for s in ("train", "test"))


def _syn_numbers_present(root: Path) -> bool:
    folder = root / "syn_numbers"
    return (folder / SYN_NUMBERS_ARCHIVE).is_file() or any(
        all((d / f"synth_{s}_32x32.mat").is_file() for s in ("train", "test")) for d in (folder, folder / "SynthDigits"))


def _syn_signs_present(root: Path) -> bool:
    folder = root / "syn_signs"
    return any((d / "train_labelling.txt").is_file() for d in (folder, folder / "synthetic_data")) or bool(
        find_archives(folder))


def _gtsrb_present(root: Path) -> bool:
    folder = root / "gtsrb"
    return any((folder / rel / GTSRB_MARKER).is_file() for rel in GTSRB_LAYOUTS) or bool(
        find_archives(folder, GTSRB_ARCHIVE_PATTERNS))


register(Domain("mnist", 10, build_mnist, shape=(1, 28, 28), doc="MNIST digits, 1x28x28, 60,000 train / 10,000 test",
                raw_files=mnist_raw_present))
register(Domain("mnist_m", 10, build_mnist_m, raw_files=_mnist_m_present, shape=(3, 32, 32),
                doc="MNIST-M (Ganin et al.): MNIST blended with BSDS500 patches, 3x32x32, 59,001 / 9,001"))
register(Domain("svhn", 10, build_svhn, shape=(3, 32, 32),
                doc="SVHN cropped digits, 3x32x32, 73,257 / 26,032 (label 10 -> 0)", raw_files=_svhn_present))
register(Domain("syn_numbers", 10, build_syn_numbers, raw_files=_syn_numbers_present,
                shape=(3, 32, 32), doc="SynNumbers (Ganin & Lempitsky): synthetic house numbers, 3x32x32"))
register(Domain("syn_signs", 43, build_syn_signs, raw_files=_syn_signs_present, shape=(3, 40, 40),
                doc="SynSigns (Moiseev et al.): synthetic traffic signs, 3x40x40; fixed 90/10 train/test split"))
register(Domain("gtsrb", 43, build_gtsrb, raw_files=_gtsrb_present, shape=(3, 40, 40),
                doc="GTSRB official training set, ROI crops at 3x40x40; fixed 31,367 train / 7,842 test split"))
