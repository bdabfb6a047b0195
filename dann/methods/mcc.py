"""MCC, minimum class confusion (Jin et al., ECCV 2020, eq. 1-8):

``L = CE(G_y(G_f(x_s)), y_s) + mu * (1/K) sum_j sum_{j' != j} |C~_jj'|``,

on the target batch's predictions ``Y = softmax(G_y(G_f(x_t)) / T)`` (temperature scaling,
eq. 1): the class confusion ``C = Y^T W Y`` (eq. 2, 5) with example weights
``W_ii = B (1 + exp(-H(Y_i))) / sum_i' (1 + exp(-H(Y_i')))`` (entropy-based, eq. 3-4; not
differentiated, as in the authors' code), each row normalised to sum to one (category
normalisation, eq. 6: ``C~_jj' = C_jj' / sum_j'' C_jj''``), and the off-diagonal mass averaged
over the ``K`` classes (eq. 7). No domain alignment, no adversary. Target labels are never read.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dann.errors import ConfigError
from dann.methods.base import DAMethod


def class_confusion(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The category-normalised class confusion matrix ``C~`` (K x K) of a batch's logits."""
    y = torch.softmax(logits / temperature, 1)
    with torch.no_grad():
        h = -(y * torch.log(y.clamp_min(1e-12))).sum(1)
        w = 1.0 + torch.exp(-h)
        w = len(y) * w / w.sum()
    c = y.T @ (w.unsqueeze(1) * y)
    return c / c.sum(1, keepdim=True)


def mcc_loss(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``(1/K) sum_j sum_{j' != j} |C~_jj'|`` (eq. 7)."""
    c = class_confusion(logits, temperature)
    return (c.sum() - c.trace()) / c.shape[0]


class MCC(DAMethod):
    """Args (beyond :class:`DAMethod`'s): ``trade_off`` (mu), ``temperature`` (T)."""

    def __init__(self, *args: Any, trade_off: float = 1.0, temperature: float = 2.5, **kwargs: Any):
        super().__init__(*args, **kwargs)

    @classmethod
    def check_options(cls, trade_off: float, temperature: float, **_: Any) -> None:
        if trade_off < 0:
            raise ConfigError(f"method.trade_off={trade_off!r} is invalid: expected a value >= 0")
        if temperature <= 0:
            raise ConfigError(f"method.temperature={temperature!r} is invalid: expected a value > 0 (the paper: 2.5)")

    def losses(self, batch):
        xs, xt = batch["src_x"], batch["tgt_x"]
        ns = len(xs)
        logits = self.classifier(self.features(torch.cat([xs, xt])))
        return {"cls": F.cross_entropy(logits[:ns], batch["src_y"]),
                "mcc": self.hparams.trade_off * mcc_loss(logits[ns:], self.hparams.temperature)}
