"""Domain registry and the compact tensor cache every domain is converted to.

A *domain* knows how to build each of its splits (``train``, ``test``) as a :class:`Split`:
``x`` is a uint8 image tensor (N, C, H, W) or, for toy problems, float features (N, D);
``y`` is int64 labels (N,). Building may read raw files (downloaded or placed by the user);
it happens once, the result is cached as ``<root>/cache/<name>/<split>.pt`` and later runs
load that file in seconds.

Cache files are written to a temporary name and renamed when complete, under a file lock,
so a killed process never leaves a partial cache and two sweep jobs preparing the same
domain do the work once.
"""

from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock

SPLITS = ("train", "test")


class DataError(RuntimeError):
    """A domain's files are missing, fail their checksum or cannot be read."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """Raw files are absent: the message names every file expected, where, and the URL."""


class ChecksumError(DataError):
    """A file's hash differs from the pinned one: the message names file, expected, actual."""


class CorruptDataError(DataError):
    """An archive, image or array is truncated or malformed."""


class UnsafeArchiveError(CorruptDataError):
    """An archive member would land outside the folder it is extracted to, or is a device file."""


#: what one archive or array may unpack to, in GB (the largest real domain unpacks to under 2 GB):
#: more is a decompression bomb, refused before anything is written. $DANN_MAX_UNPACK_GB overrides it.
MAX_UNPACK_GB = 20.0
UNPACK_ENV = "DANN_MAX_UNPACK_GB"


def max_unpack_bytes() -> int:
    """The unpack cap in bytes: ``$DANN_MAX_UNPACK_GB`` if set (a number of GB), else :data:`MAX_UNPACK_GB`."""
    raw = os.environ.get(UNPACK_ENV, "").strip()
    try:
        gb = float(raw) if raw else MAX_UNPACK_GB
    except ValueError:
        raise DataError(f"${UNPACK_ENV}={raw!r} is not a number of GB (unset it for {MAX_UNPACK_GB:g})") from None
    return int(gb * 1e9)


def too_large(what: str, size: int) -> str | None:
    """Why ``what``, unpacking to ``size`` bytes, is refused (over :func:`max_unpack_bytes`), or None."""
    cap = max_unpack_bytes()
    if size <= cap:
        return None
    return (f"{what} would unpack to {size / 1e9:.3g} GB, more than the {cap / 1e9:.3g} GB allowed: a "
            f"decompression bomb, or a larger dataset than dann knows (then raise ${UNPACK_ENV})")


def image_bomb(path: object, e: BaseException) -> "CorruptDataError":
    """PIL's decompression-bomb error or warning (an image of ~90 million pixels or more) as ours, naming the file."""
    return CorruptDataError(f"{path} is refused: {e} An image this large is not a sample of a dataset; remove it")


@contextmanager
def image_bombs_are_errors():
    """Within the block, PIL's DecompressionBombWarning (90-180 million pixels) raises, as its
    DecompressionBombError (more) does: catch both with :func:`image_bomb`."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def outside_name(name: str) -> str | None:
    """Why a file name read from a labels file would lead out of its folder (absolute, ``..``), or None."""
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[/\\]", name):
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "has a '..' component"
    return None


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Domain:
    """How to obtain one domain. ``build(root, split) -> Split`` does the real work."""

    name: str
    num_classes: int
    build: Callable[[Path, str], Split]
    cache: bool = True  # toy domains are generated in milliseconds and never cached
    doc: str = ""
    #: cache folder name; custom domains add a hash of their declaration and files, so an
    #: edited declaration or folder never gets a stale cache
    cache_key: str | None = None
    #: ``raw_files(root)``: whether the files a build needs are present under ``root``, so that
    #: ``dann-data list`` can say so (None: not known)
    raw_files: Callable[[Path], bool] | None = None
    #: False for domains generated offline from nothing the user provides
    needs_raw: bool = True
    #: the shape of one sample, (C, H, W) or (D,), when known before loading: a run's network is
    #: checked against it before any data loads (None: checked once the data is loaded)
    shape: tuple[int, ...] | None = None


REGISTRY: dict[str, Domain] = {}


def register(domain: Domain) -> Domain:
    REGISTRY[domain.name] = domain
    return domain


def get_domain(name: str) -> Domain:
    if name not in REGISTRY:
        raise KeyError(f"unknown domain {name!r}; known domains: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def default_root() -> Path:
    """``$DANN_DATA_DIR`` if set, else ``~/.cache/dann``."""
    return Path(os.environ.get("DANN_DATA_DIR") or Path.home() / ".cache" / "dann").expanduser()


def cache_path(root: Path, name: str, split: str) -> Path:
    return Path(root) / "cache" / name / f"{split}.pt"


def atomic_torch_save(obj, path: Path) -> None:
    """Write ``obj`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def split_problem(x, y, num_classes: int) -> str | None:
    """What is wrong with a split's ``x`` and ``y`` (cheap checks: types, shapes, label range), or None.

    A cache that loads but fails these (tampered with, or written by another version) would
    otherwise fail mid-training, e.g. ``IndexError: Target 99 is out of bounds``.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        return f"x and y must be tensors, found {type(x).__name__} and {type(y).__name__}"
    if x.dtype not in (torch.uint8, torch.float32) or y.dtype != torch.int64:
        return f"x is {x.dtype} and y {y.dtype}; want uint8 images or float32 features, and int64 labels"
    if len(x) != len(y):
        return f"x has {len(x)} rows but y has {len(y)}"
    if y.dim() != 1 or x.dim() not in (2, 4):
        return f"x has shape {tuple(x.shape)} and y {tuple(y.shape)}; want (N, C, H, W) or (N, D), and (N,)"
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        return f"labels must lie in 0..{num_classes - 1}, found {y.min().item()}..{y.max().item()}"
    return None


def load_split(name: str, split: str, root: str | Path | None = None) -> Split:
    """Load split ``split`` of domain ``name``, building and caching it on first use.

    A cache that cannot be read or fails :func:`split_problem` is renamed to ``<split>.pt.corrupt``
    (kept for inspection, never used again) and rebuilt, with a message saying so.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    domain = get_domain(name)
    root = Path(root).expanduser() if root else default_root()
    if not domain.cache:
        return domain.build(root, split)
    path = cache_path(root, domain.cache_key or name, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        note = None
        if path.exists():
            try:
                d = torch.load(path, weights_only=True)
                problem = (split_problem(d.get("x"), d.get("y"), domain.num_classes) if isinstance(d, dict)
                           else f"it holds a {type(d).__name__}, not a dict of x and y")
            except Exception as e:  # noqa: BLE001 - any unreadable cache is rebuilt, loudly
                problem = f"it is unreadable ({e})"
            if problem is None:
                return Split(d["x"], d["y"])
            bad = path.with_name(path.name + ".corrupt")
            os.replace(path, bad)
            note = (f"cache {path} is not usable: {problem} (damaged, tampered with or written by another "
                    f"version); it was moved to {bad}")
            print(f"[dann] {note}; rebuilding it", flush=True)
        try:
            s = domain.build(root, split)
        except DataError as e:
            if note is None:
                raise
            raise type(e)(f"{note}. Rebuilding it failed: {e}") from e
        problem = split_problem(s.x, s.y, domain.num_classes)
        if problem:
            raise CorruptDataError(f"domain {name} built an unusable {split} split ({domain.num_classes} classes): "
                                   f"{problem}")
        atomic_torch_save({"x": s.x.contiguous(), "y": s.y.contiguous()}, path)
        return s


# --------------------------------------------------------------------------------------
# Toy domains: the inter-twinning moons of section 5.1 (no download).
