"""The paper's toy domains (section 5.1): two inter-twinning moons and the same rotated by 35 degrees."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dann.data.domains import Domain, Split, register


def _moons(n: int, seed: int, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return x.astype(np.float32), y.astype(np.int64)


def _moons_domain(angle_deg: float, seed_offset: int) -> Callable[[Path, str], Split]:
    def build(root: Path, split: str) -> Split:
        n = 300 if split == "train" else 1000
        x, y = _moons(n, seed=seed_offset + (0 if split == "train" else 1))
        # Rotate about the centre of the two moons (0.5, 0.25).
        a = math.radians(angle_deg)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=np.float32)
        c = np.array([0.5, 0.25], dtype=np.float32)
        x = (x - c) @ rot.T + c
        return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))

    return build


register(Domain("moons", 2, _moons_domain(0.0, 0), cache=False, shape=(2,),
                doc="two inter-twinning moons, 300 train / 1000 test points (section 5.1)"))
register(Domain("moons_rot35", 2, _moons_domain(35.0, 100), cache=False, shape=(2,),
                doc="a separate sample of the moons rotated by 35 degrees (section 5.1's target)"))
