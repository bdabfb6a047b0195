"""A second copy of the network a method keeps beside the one it trains: a teacher.

Several methods compare the network being trained with another copy of it: a frozen
snapshot refreshed on a schedule (DIRT-T's previous model, SHOT's pseudo-labeller) or an
exponential moving average of its weights (the mean teacher of self-ensembling). The copy is
a registered submodule of the method, so it is in every checkpoint and a resumed run has
the very teacher the interrupted one had; its parameters never take a gradient.

``teacher = copy_of(student)`` builds one; :func:`refresh` copies the student's weights into
it; :func:`ema_update` moves it towards the student:
``theta_teacher <- decay * theta_teacher + (1 - decay) * theta_student``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class Network(nn.Module):
    """A feature extractor and a label predictor as one module: ``classifier(features(x))``."""

    def __init__(self, features: nn.Module, classifier: nn.Module):
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def copy_of(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters take no gradient."""
    return copy.deepcopy(module).requires_grad_(False)


def _pairs(teacher: nn.Module, student: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    t, s = teacher.state_dict(keep_vars=True), student.state_dict(keep_vars=True)
    if list(t) != list(s) or any(t[k].shape != s[k].shape for k in t):
        raise ValueError("the teacher and the student are not the same architecture")
    return [(t[k], s[k]) for k in t]


@torch.no_grad()
def refresh(teacher: nn.Module, student: nn.Module) -> None:
    """Copy every weight and buffer of ``student`` into ``teacher`` (exactly)."""
    for t, s in _pairs(teacher, student):
        t.copy_(s)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``t <- decay * t + (1 - decay) * s`` for every floating-point weight and buffer (Tarvainen &
    Valpola, NeurIPS 2017, eq. 1; French et al.'s teacher); integer buffers are copied."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    for t, s in _pairs(teacher, student):
        if t.is_floating_point():
            t.mul_(decay).add_(s, alpha=1.0 - decay)
        else:
            t.copy_(s)


@torch.no_grad()
def predict(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` in evaluation mode (no dropout), without gradient; ``module``'s mode is kept."""
    was = module.training
    module.eval()
    try:
        return module(x)
    finally:
        module.train(was)
