"""Deep CORAL (Sun & Saenko, ECCV 2016 workshops, eq. 1-3 and 6):

``L = CE(G_y(G_f(x_s)), y_s) + lambda * ||C_s - C_t||_F^2 / (4 d^2)``,

where ``C_s``, ``C_t`` are the (unbiased, ``1/(n-1)``) covariance matrices of the ``d``-dimensional
source and target features of the batch (eq. 2-3). The gradient reaches both domains' features
(eq. 4-5 are its analytic form; autograd computes the same). The paper applies the loss to the
last layer (fc8, the class scores, ``layer=logits``); here it is on the feature extractor's
output by default (``layer=features``), like the other feature-alignment methods
(``layer=hidden``: the label predictor's last hidden layer). Target
labels are never read.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dann.errors import ConfigError, check_choice
from dann.methods.base import DAMethod

LAYERS = ("features", "hidden", "logits")


def covariance(z: torch.Tensor) -> torch.Tensor:
    """``C = (Z^T Z - (1^T Z)^T (1^T Z) / n) / (n - 1)`` (eq. 2-3), for the rows of ``z``."""
    z = z.flatten(1)
    n = len(z)
    s = z.sum(0, keepdim=True)
    return (z.T @ z - s.T @ s / n) / max(n - 1, 1)


def coral(zs: torch.Tensor, zt: torch.Tensor) -> torch.Tensor:
    """``||C_s - C_t||_F^2 / (4 d^2)`` (eq. 1)."""
    d = zs.flatten(1).shape[1]
    return (covariance(zs) - covariance(zt)).pow(2).sum() / (4 * d * d)


class CORAL(DAMethod):
    """Args (beyond :class:`DAMethod`'s): ``trade_off`` (lambda), ``layer`` (``features`` | ``hidden`` | ``logits``)."""

    def __init__(self, *args: Any, trade_off: float = 100.0, layer: str = "features", **kwargs: Any):
        super().__init__(*args, **kwargs)

    @classmethod
    def check_options(cls, trade_off: float, layer: str, **_: Any) -> None:
        if trade_off < 0:
            raise ConfigError(f"method.trade_off={trade_off!r} is invalid: expected a value >= 0")
        check_choice("method.layer", layer, LAYERS)

    def losses(self, batch):
        z, logits, ns = self.aligned_pass(batch, self.hparams.layer)
        dist = coral(z[:ns], z[ns:])
        self._dist = dist.detach()
        return {"cls": F.cross_entropy(logits[:ns], batch["src_y"]), "coral": self.hparams.trade_off * dist}

    def logs(self):
        # the unweighted distance: what the paper compares with the label loss to set lambda
        return {"coral_dist": self._dist}
