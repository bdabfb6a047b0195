"""``mnist_m_regen``: MNIST-M regenerated offline by the published recipe (Ganin et al. 2016).

Each MNIST digit is padded by 2 pixels on every side to 32x32 (not resized) and binarised
(every pixel above 0 set to 255), then blended over a random 32x32 patch of a BSDS500 colour
photo: ``out = |patch - digit|`` per channel, so the stroke inverts the photo's colours and the
background keeps them. That is how Ganin's release was made: un-inverting the release's images
under this digit mask leaves a background patch that is far smoother (mean total variation
19.8 on 100 release images) than under the grey digit (45.7), a resized 32x32 digit
thresholded at 128 (33.1) or any other 1-pixel offset of the pad (>= 32.6).

How it differs from Ganin's release (domain ``mnist_m``): the photos' order, the patch positions
and the random stream are ours, so the *images* differ while the recipe and the labels (MNIST's)
are the same; there are 60,000/10,000 images (the release has 59,001/9,001, MNIST's first ones).
Numbers obtained on it are not comparable number-for-number with the release's and are reported
under its own domain name, never as MNIST-M's.

The photos: the 200 BSDS500 training photos (sorted by file name), from ``<root>/BSR_bsds500.tgz``
(the official archive), ``<root>/BSDS500_train_images.tar``, or an extracted
``<root>/BSR/BSDS500/data/images/train/*.jpg``. No checksum of the official archive is
published or pinned here; a photo that cannot be decoded raises CorruptDataError.

Determinism: patch choices come from ``numpy.random.default_rng([seed, chunk])`` per block of
``CHUNK`` digits, ``seed`` being a per-split module constant, so every user gets the same images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dann.data.domains import (SPLITS, CorruptDataError, DatasetNotFoundError, Domain, Split, cache_path, image_bomb,
                               image_bombs_are_errors, load_split, register)
from dann.data.download import archive_names, extract, find_archives

BSDS_URL = "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz"
BSDS_TRAIN = Path("BSR/BSDS500/data/images/train")
BSDS_ARCHIVES = ("BSR_bsds500*", "BSDS500*")
SEEDS = {"train": 20_160_001, "test": 20_160_002}  # fixed: every user gets the same images
SIZE = 32


def bsds_photos(root: Path) -> list[np.ndarray]:
    """The BSDS500 training photos as HxWx3 uint8 arrays (extracting an archive once)."""
    root = Path(root)
    folder = root / BSDS_TRAIN
    if not folder.is_dir():
        archives = find_archives(root, BSDS_ARCHIVES)
        if not archives:
            raise DatasetNotFoundError(
                f"mnist_m_regen needs the BSDS500 training photos. Expected one of:\n  {root / 'BSR_bsds500.tgz'}"
                f"\n  {root / 'BSDS500_train_images.tar'}\n  {folder}/*.jpg\nDownload the official archive "
                f"from {BSDS_URL} and place it in {root}.")
        extract(archives[0], root / "BSR", "BSDS500/data/images/train/" + _first_jpg_name(archives[0]))
    files = sorted(folder.glob("*.jpg"))
    if not files:
        raise DatasetNotFoundError(f"no *.jpg in {folder}; place the BSDS500 training photos there")
    photos = []
    with image_bombs_are_errors():
        for f in files:
            try:
                with Image.open(f) as im:
                    photos.append(np.asarray(im.convert("RGB")))
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise image_bomb(f, e) from None
            except OSError as e:
                raise CorruptDataError(f"cannot decode BSDS500 photo {f}: {e}") from e
    return photos


def bsds_present(root: Path) -> bool:
    """Whether the BSDS500 training photos (or an archive holding them) are under ``root``."""
    root = Path(root)
    return any((root / BSDS_TRAIN).glob("*.jpg")) or bool(find_archives(root, BSDS_ARCHIVES))


def _mnist_regen_present(root: Path) -> bool:
    from dann.data.real import mnist_raw_present  # MNIST may also come from its cache

    mnist_ok = mnist_raw_present(root) or all(cache_path(root, "mnist", s).exists() for s in SPLITS)
    return bsds_present(root) and mnist_ok


def _first_jpg_name(archive: Path) -> str:
    """A file name the archive holds under .../images/train/ (the marker of a complete extraction).

    Only the names are read here; :func:`extract` checks every member before writing it.
    """
    for name in archive_names(archive):
        if "/images/train/" in name and name.endswith(".jpg"):
            return Path(name).name
    raise CorruptDataError(f"{archive} holds no BSR/BSDS500/data/images/train/*.jpg")


CHUNK = 4096


def pad_binarise(digits: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, [1,] 28, 28) uint8 MNIST digits -> (N, 32, 32) uint8 in {0, 255}: 2-pixel pad, every pixel > 0 set to 255."""
    d = np.asarray(digits)
    if d.ndim == 4:
        d = d[:, 0]
    if d.shape[1:] != (28, 28):
        raise ValueError(f"expected 28x28 MNIST digits, got {d.shape[1:]}")
    out = np.zeros((len(d), SIZE, SIZE), np.uint8)
    out[:, 2:30, 2:30] = np.where(d > 0, 255, 0)
    return out


def blend(digits: np.ndarray, photos: list[np.ndarray], seed: int) -> np.ndarray:
    """``|patch - digit|`` (N, 32, 32, 3) for each (N, 32, 32) uint8 digit over a random patch of a random photo."""
    n = len(digits)
    out = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    ar = np.arange(SIZE)
    bar = tqdm(total=n, desc="[dann] mnist_m_regen", unit="img", leave=False, mininterval=1.0)
    for k, a in enumerate(range(0, n, CHUNK)):
        rng = np.random.default_rng([seed, k])
        b = min(a + CHUNK, n)
        which = rng.integers(0, len(photos), b - a)
        u, v = rng.random(b - a), rng.random(b - a)
        for p_idx in np.unique(which):  # gather all patches of one photo at once
            sel = np.nonzero(which == p_idx)[0]
            p = photos[p_idx]
            ys = (u[sel] * (p.shape[0] - SIZE + 1)).astype(np.int64)
            xs = (v[sel] * (p.shape[1] - SIZE + 1)).astype(np.int64)
            patches = p[(ys[:, None] + ar)[:, :, None], (xs[:, None] + ar)[:, None, :]]  # (m, 32, 32, 3)
            dig = digits[a + sel][..., None].astype(np.int16)
            out[a + sel] = np.abs(patches.astype(np.int16) - dig).astype(np.uint8)
        bar.update(b - a)
    bar.close()
    return out


def generate_mnist_m(n: int, seed: int, mnist: Split, photos: list[np.ndarray]) -> Split:
    """The first ``n`` digits of ``mnist`` blended over random patches of ``photos`` (deterministic for ``seed``)."""
    if n > len(mnist):
        raise ValueError(f"asked for {n} images but the MNIST split has {len(mnist)}")
    if not photos:
        raise ValueError("no background photos given")
    x = blend(pad_binarise(mnist.x[:n].numpy()), photos, seed)
    return Split(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), mnist.y[:n].clone())


def build_mnist_m_regen(root: Path, split: str) -> Split:
    photos = bsds_photos(root)  # first, so that missing photos are reported before MNIST is read
    m = load_split("mnist", split, root)
    print(f"[dann] building mnist_m_regen/{split}: {len(m):,} MNIST digits over {len(photos)} BSDS500 photos")
    return generate_mnist_m(len(m), SEEDS[split], m, photos)


register(Domain("mnist_m_regen", 10, build_mnist_m_regen, raw_files=_mnist_regen_present, shape=(3, 32, 32),
                doc="MNIST-M regenerated by the published recipe (|BSDS500 patch - padded binarised digit|), "
                    "60,000/10,000; not Ganin's images"))
