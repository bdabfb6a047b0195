"""BNM, batch nuclear-norm maximisation (Cui et al., CVPR 2020):

``L = CE(G_y(G_f(x_s)), y_s) - lambda ||A_t||_* / min(B, K)``,  ``A_t = softmax(G_y(G_f(x_t)))`` (``B x K``),

the nuclear norm (the sum of the singular values) of the target batch's prediction matrix:
maximising it makes the predictions both confident (it bounds the Frobenius norm, which grows
as the entropy falls) and diverse (it approximates the rank, the number of classes predicted).
The paper writes the loss with ``1 / B``; the authors' released code takes the mean of the
``min(B, K)`` singular values, as here, with ``lambda = 1``. The singular values are
differentiable (``torch.linalg.svdvals``, via :func:`dann.methods.bsp.singular_values`). Target labels are never read.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dann.errors import ConfigError
from dann.methods.base import DAMethod
from dann.methods.bsp import singular_values


def batch_nuclear_norm(logits: torch.Tensor) -> torch.Tensor:
    """``||softmax(logits)||_* / min(B, K)``: the mean singular value of the prediction matrix."""
    return singular_values(torch.softmax(logits, 1)).mean()


class BNM(DAMethod):
    """Args (beyond :class:`DAMethod`'s): ``trade_off`` (lambda)."""

    def __init__(self, *args: Any, trade_off: float = 1.0, **kwargs: Any):
        super().__init__(*args, **kwargs)

    @classmethod
    def check_options(cls, trade_off: float, **_: Any) -> None:
        if trade_off < 0:
            raise ConfigError(f"method.trade_off={trade_off!r} is invalid: expected a value >= 0")

    def losses(self, batch):
        f, logits, ns = self.joint_pass(batch)
        return {"cls": F.cross_entropy(logits[:ns], batch["src_y"]),
                "bnm": -self.hparams.trade_off * batch_nuclear_norm(logits[ns:])}
