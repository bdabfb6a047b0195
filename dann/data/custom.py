"""Custom domains declared in config, no code: an image folder tree or a ``.npz`` file.

```yaml
domains:
  my_photos:
    kind: image_folder        # <dir>/<class>/*.png|jpg|...  (torchvision's ImageFolder convention)
    train: /data/photos/train
    test: /data/photos/test   # or  test_fraction: 0.2  (a fixed-seed split of train)
    image_size: 32            # optional: resize every image to 32x32
  my_arrays:
    kind: npz                 # x: (N,H,W) or (N,H,W,C) uint8, y: (N,) integer labels 0..K-1
    train: /data/a_train.npz
    test: /data/a_test.npz
    num_classes: 10           # optional (default: max label + 1)
```

then ``pair.source=my_photos pair.target=...``. Each declaration is validated when it is
registered (one error naming ``domains.<name>.<key>``); the cache folder name carries a hash
of the declaration and of every file's path, size and time, so editing either (adding,
removing, replacing or moving an image to another class folder) builds a fresh cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dann.errors import ConfigError
from dann.data.domains import CorruptDataError, Domain, Split, image_bomb, image_bombs_are_errors, register, too_large

KINDS = ("image_folder", "npz")
KEYS = ("kind", "train", "test", "test_fraction", "image_size", "num_classes")
SPLIT_SEED = 12_345  # fixed: the test_fraction split is the same for every run and seed


def _err(name: str, key: str, msg: str) -> ConfigError:
    return ConfigError(f"domains.{name}.{key}: {msg}")


def _files_digest(paths: list[Path]) -> str:
    """Hash of every file's relative path, size and mtime under ``paths`` (stat only, no reading)."""
    h = hashlib.sha1()
    for p in paths:
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(p) if p.is_dir() else f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# -- image folders ------------------------------------------------------------------------
def _classes(name: str, key: str, folder: Path) -> list[str]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(str(folder))
        make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)  # raises on an empty class
    except FileNotFoundError as e:
        raise _err(name, key, f"{folder} must hold one sub-folder per class with images "
                              f"({', '.join(IMG_EXTENSIONS)}): {e}") from e
    return classes


def _image_folder(name: str, folder: Path, size: int | None, classes: list[str]) -> Split:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    found, class_to_idx = find_classes(str(folder))
    if found != classes:
        raise ConfigError(f"domains.{name}: the class folders of {folder} {found} differ from the train "
                          f"split's {classes}; both splits must have the same class folders")
    samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    imgs, sizes = [], set()
    with image_bombs_are_errors():
        for path, _ in tqdm(samples, desc=f"[dann] {name} {folder.name}", unit="img", leave=False):
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    if size:
                        im = im.resize((size, size), Image.Resampling.BILINEAR)
                    imgs.append(np.asarray(im))
                    sizes.add(im.size)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise image_bomb(f"domain {name}: {path}", e) from None
            except OSError as e:
                raise CorruptDataError(f"domain {name}: cannot decode {path}: {e}; fix or remove the file") from e
    if len(sizes) > 1:
        raise ConfigError(f"domains.{name}.image_size: the images of {folder} have several sizes "
                          f"{sorted(sizes)[:5]}; set image_size to resize them all")
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return Split(x, torch.tensor([t for _, t in samples], dtype=torch.int64))


# -- npz arrays ---------------------------------------------------------------------------
def _npz_check(name: str, key: str, path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """Validate ``x`` from its header only (no pixel is read); return ``y`` and one sample's shape (C, H, W)."""
    try:
        with zipfile.ZipFile(path) as z:
            members = {m.removesuffix(".npy") for m in z.namelist()}
            if not {"x", "y"} <= members:
                raise _err(name, key, f"{path} must hold arrays 'x' and 'y'; it holds {sorted(members)}")
            with z.open("x.npy") as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
        with np.load(path) as d:
            y = d["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, ConfigError):
            raise
        raise CorruptDataError(f"domain {name}: cannot read {path} (domains.{name}.{key}): {e}") from e
    if dtype != np.uint8 or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
        raise _err(name, key, f"{path}: x must be uint8 of shape (N,H,W) or (N,H,W,C) with C 1 or 3; "
                              f"got {dtype} {shape}")
    if y.ndim != 1 or len(y) != shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise _err(name, key, f"{path}: y must be integer labels of shape ({shape[0]},) like x; "
                              f"got {y.dtype} {y.shape}")
    if 0 in shape[1:]:
        raise _err(name, key, f"{path}: x holds images of shape {shape[1:]}, with no pixel")
    bomb = too_large(f"{path}'s x {shape}", int(np.prod(shape, dtype=np.int64)))  # uint8: one byte a value
    if bomb:
        raise CorruptDataError(f"domain {name} (domains.{name}.{key}): {bomb}")
    return y, (shape[3] if len(shape) == 4 else 1, shape[1], shape[2])


def _npz(name: str, path: Path) -> Split:
    try:
        with np.load(path) as d:
            x, y = d["x"], d["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise CorruptDataError(f"domain {name}: cannot read {path}: {e}") from e
    if x.ndim == 3:
        x = x[..., None]
    return Split(torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous(),
                 torch.from_numpy(y.astype(np.int64)))


# -- declarations -------------------------------------------------------------------------
def _declare(name: str, spec: Mapping[str, Any]) -> Domain:
    unknown = set(spec) - set(KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'domains.{name}.{k}' for k in sorted(unknown))}; "
                          f"allowed: {', '.join(KEYS)}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise _err(name, "kind", f"{kind!r} is not a kind of custom domain; allowed: {', '.join(KINDS)}")
    if not spec.get("train"):
        raise _err(name, "train", "missing: the path of the training split")
    paths = {"train": Path(str(spec["train"])).expanduser().resolve()}
    if spec.get("test"):
        paths["test"] = Path(str(spec["test"])).expanduser().resolve()
    frac = spec.get("test_fraction")
    if ("test" in paths) == (frac is not None):
        raise _err(name, "test", "give exactly one of `test` (a path) or `test_fraction` (e.g. 0.2)")
    if frac is not None and not (isinstance(frac, (int, float)) and 0 < frac < 1):
        raise _err(name, "test_fraction", f"{frac!r} must be a number strictly between 0 and 1")
    size = spec.get("image_size")
    if size is not None and not (isinstance(size, int) and size > 0):
        raise _err(name, "image_size", f"{size!r} must be a positive integer (pixels per side) or null")
    for split, p in paths.items():
        want_dir = kind == "image_folder"
        if not (p.is_dir() if want_dir else p.is_file()):
            raise _err(name, split, f"{p} is not an existing {'folder' if want_dir else '.npz file'}")

    classes: list[str] = []
    sample: tuple[int, ...] | None = (3, size, size) if size else None  # image folders are read as RGB
    if kind == "image_folder":
        classes = _classes(name, "train", paths["train"])
        if "test" in paths and (test_classes := _classes(name, "test", paths["test"])) != classes:
            raise _err(name, "test", f"the class folders of {paths['test']} {test_classes} differ from "
                                     f"those of {paths['train']} {classes}; both splits need the same ones")
        k = len(classes)
        if spec.get("num_classes") not in (None, k):
            raise _err(name, "num_classes", f"{spec['num_classes']} but {paths['train']} has {k} class folders")
    else:
        checked = {s: _npz_check(name, s, p) for s, p in paths.items()}
        ys = {s: y for s, (y, _) in checked.items()}
        shapes = {(c, size or h, size or w) for _, (c, h, w) in checked.values()}
        sample = shapes.pop() if len(shapes) == 1 else None
        for s, y in ys.items():
            if not len(y):
                raise _err(name, s, f"{paths[s]} holds no samples")
        k = spec.get("num_classes")
        if k is None:
            k = max(int(y.max()) for y in ys.values()) + 1
        if not (isinstance(k, int) and k >= 1):
            raise _err(name, "num_classes", f"{k!r} must be a positive integer")
        for s, y in ys.items():
            if int(y.min()) < 0 or int(y.max()) >= k:
                raise _err(name, s, f"labels must lie in 0..{k - 1} (num_classes={k}); "
                                    f"found {int(y.min())}..{int(y.max())} in {paths[s]}")

    def load(split: str) -> Split:
        if kind == "image_folder":
            return _image_folder(name, paths[split], size, classes)
        s = _npz(name, paths[split])
        if size and tuple(s.x.shape[-2:]) != (size, size):
            from dann.data.datamodule import harmonise

            s = Split(harmonise(s.x, None, size), s.y)
        return s

    def build(root: Path, split: str) -> Split:
        if frac is None:
            return load(split)
        train = load("train")
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED))
        n_test = max(1, round(len(train) * float(frac)))
        idx = perm[n_test:] if split == "train" else perm[:n_test]
        return Split(train.x[idx].contiguous(), train.y[idx].contiguous())

    resolved = {**dict(spec), **{s: str(p) for s, p in paths.items()}}
    signature = json.dumps([resolved, _files_digest(list(paths.values()))], sort_keys=True, default=str)
    digest = hashlib.sha1(signature.encode()).hexdigest()[:10]
    return Domain(name, k, build, doc=f"custom {kind}: {paths['train']}", cache_key=f"custom-{name}-{digest}",
                  raw_files=lambda root: all(Path(p).exists() for p in paths.values()), shape=sample)


def register_custom_domains(spec: Mapping[str, Any] | None) -> list[str]:
    """Validate and register every domain declared under ``domains:``; return their names.

    All entries are validated before any is registered, so one bad entry registers none.
    """
    from omegaconf import DictConfig, OmegaConf

    from dann.data.domains import REGISTRY

    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    domains = []
    for name, entry in (spec or {}).items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"domains.{name} must be a mapping with at least `kind` and `train`; "
                              f"got {entry!r}")
        existing = REGISTRY.get(str(name))
        if existing is not None and not (existing.cache_key or "").startswith("custom-"):
            raise ConfigError(f"domains.{name}: {name!r} is a built-in domain; give yours another name")
        domains.append(_declare(str(name), entry))
    for d in domains:
        register(d)
    return [d.name for d in domains]


def load_domains_file(path: str | os.PathLike) -> list[str]:
    """Register the domains of a YAML file holding a ``domains:`` mapping (or the mapping itself)."""
    from omegaconf import OmegaConf

    if not Path(path).is_file():
        raise ConfigError(f"--config {path}: no such file (a YAML file with a `domains:` mapping)")
    c = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(c, dict):
        raise ConfigError(f"{path}: expected a mapping with a `domains:` key; got {type(c).__name__}")
    return register_custom_domains(c.get("domains", c))
