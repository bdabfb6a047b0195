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
of the declaration and of the files' sizes and times, so editing either builds a fresh cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from dann.config import ConfigError
from dann.data.domains import CorruptDataError, Domain, Split, register

KINDS = ("image_folder", "npz")
KEYS = {"kind", "train", "test", "test_fraction", "image_size", "num_classes"}
SPLIT_SEED = 12_345  # fixed: the test_fraction split is the same for every run and seed


def _err(name: str, key: str, msg: str) -> ConfigError:
    return ConfigError(f"domains.{name}.{key}: {msg}")


def _files_signature(paths: list[Path]) -> list[Any]:
    sig = []
    for p in paths:
        if p.is_dir():
            st = [(f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(p.rglob("*")) if f.is_file()]
            sig.append([str(p), len(st), sum(s for s, _ in st), max((t for _, t in st), default=0)])
        elif p.exists():
            sig.append([str(p), p.stat().st_size, p.stat().st_mtime_ns])
    return sig


def _image_folder(name: str, folder: Path, size: int | None, classes: list[str] | None) -> tuple[Split, list[str]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    found, class_to_idx = find_classes(str(folder))
    if classes is not None and found != classes:
        raise ConfigError(f"domains.{name}: the class folders of {folder} {found} differ from the train "
                          f"split's {classes}; both splits must have the same class folders")
    samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    imgs, sizes = [], set()
    for path, _ in tqdm(samples, desc=f"[dann] {name} {folder.name}", unit="img", leave=False):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if size:
                    im = im.resize((size, size), Image.BILINEAR)
                imgs.append(np.asarray(im))
                sizes.add(im.size)
        except OSError as e:
            raise CorruptDataError(f"domain {name}: cannot decode {path}: {e}") from e
    if len(sizes) > 1:
        raise ConfigError(f"domains.{name}.image_size: the images of {folder} have several sizes "
                          f"{sorted(sizes)[:5]}; set image_size to resize them all")
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return Split(x, torch.tensor([t for _, t in samples], dtype=torch.int64)), found


def _npz(name: str, path: Path, key: str) -> Split:
    try:
        with np.load(path) as d:
            if "x" not in d or "y" not in d:
                raise _err(name, key, f"{path} must hold arrays 'x' and 'y'; it holds {sorted(d.files)}")
            x, y = d["x"], d["y"]
    except (OSError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise CorruptDataError(f"domain {name}: cannot read {path}: {e}") from e
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise _err(name, key, f"{path}: x must be uint8 of shape (N,H,W) or (N,H,W,C); got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise _err(name, key, f"{path}: y must be integer labels of shape ({len(x)},); got {y.dtype} {y.shape}")
    if x.ndim == 3:
        x = x[..., None]
    return Split(torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous(),
                 torch.from_numpy(y.astype(np.int64)))


def _declare(name: str, spec: Mapping[str, Any]) -> Domain:
    unknown = set(spec) - KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'domains.{name}.{k}' for k in sorted(unknown))}; "
                          f"allowed: {', '.join(sorted(KEYS))}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise _err(name, "kind", f"{kind!r} is not a kind of custom domain; allowed: {', '.join(KINDS)}")
    if not spec.get("train"):
        raise _err(name, "train", "missing: the path of the training split")
    paths = {"train": Path(str(spec["train"])).expanduser()}
    if spec.get("test"):
        paths["test"] = Path(str(spec["test"])).expanduser()
    frac = spec.get("test_fraction")
    if ("test" in paths) == (frac is not None):
        raise _err(name, "test", "give exactly one of `test` (a path) or `test_fraction` (e.g. 0.2)")
    if frac is not None and not 0 < float(frac) < 1:
        raise _err(name, "test_fraction", f"{frac!r} must lie strictly between 0 and 1")
    for split, p in paths.items():
        want_dir = kind == "image_folder"
        if not (p.is_dir() if want_dir else p.is_file()):
            raise _err(name, split, f"{p} is not an existing {'folder' if want_dir else '.npz file'}")
    size = spec.get("image_size")

    def load(split: str, classes: list[str] | None = None) -> tuple[Split, list[str] | None]:
        if kind == "image_folder":
            return _image_folder(name, paths[split], size, classes)
        s = _npz(name, paths[split], split)
        if size and tuple(s.x.shape[-2:]) != (size, size):
            from dann.data.datamodule import harmonise

            s = Split(harmonise(s.x, None, size), s.y)
        return s, None

    # Class count now (cheap for folders; npz arrays are read once more at build time).
    if kind == "image_folder":
        from torchvision.datasets.folder import find_classes

        classes = find_classes(str(paths["train"]))[0]
        k = len(classes)
    else:
        ys = [_npz(name, p, s).y for s, p in paths.items()]
        k = int(spec.get("num_classes") or max(int(y.max()) for y in ys) + 1)
        for s, y in zip(paths, ys):
            if int(y.min()) < 0 or int(y.max()) >= k:
                raise _err(name, s, f"labels must lie in 0..{k - 1}; found {int(y.min())}..{int(y.max())}")

    def build(root: Path, split: str) -> Split:
        train, classes = load("train")
        if frac is None:
            return train if split == "train" else load("test", classes)[0]
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED))
        n_test = max(1, round(len(train) * float(frac)))
        idx = perm[n_test:] if split == "train" else perm[:n_test]
        return Split(train.x[idx].contiguous(), train.y[idx].contiguous())

    signature = json.dumps([dict(spec), _files_signature(list(paths.values()))], sort_keys=True, default=str)
    digest = hashlib.sha1(signature.encode()).hexdigest()[:10]
    return Domain(name, k, build, doc=f"custom {kind}: {paths['train']}", cache_key=f"custom-{name}-{digest}")


def register_custom_domains(spec: Mapping[str, Any] | None) -> list[str]:
    """Validate and register every domain declared under ``domains:``; return their names."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    names = []
    for name, entry in (spec or {}).items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"domains.{name} must be a mapping with at least `kind` and `train`")
        register(_declare(str(name), entry))
        names.append(str(name))
    return names


def load_domains_file(path: str | os.PathLike) -> list[str]:
    """Register the domains of a YAML file holding a ``domains:`` mapping (or the mapping itself)."""
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return register_custom_domains(c.get("domains", c) if isinstance(c, dict) else {})
