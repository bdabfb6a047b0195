"""The paper's schedules as pure functions of training progress ``p`` in [0, 1].

``p = global_step / max_steps``: both schedules are recomputed from the step counter,
which Lightning checkpoints, so they continue exactly after a resume.
"""

from __future__ import annotations

import math


def progress(step: int, max_steps: int) -> float:
    """Training progress ``p = step / max_steps`` clipped to [0, 1]."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    return min(max(step / max_steps, 0.0), 1.0)


def adaptation_factor(p: float, gamma: float = 10.0) -> float:
    """``lambda_p = 2 / (1 + exp(-gamma p)) - 1`` (Ganin et al. 2016, section 5.2.2)."""
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def lr_factor(p: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """``mu_p / mu_0 = 1 / (1 + alpha p)^beta`` (Ganin et al. 2016, section 5.2.2)."""
    return 1.0 / (1.0 + alpha * p) ** beta
