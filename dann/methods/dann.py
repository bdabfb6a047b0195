"""DANN (Ganin et al., JMLR 2016, eq. 18 / Algorithm 1):

``L = CE(G_y(G_f(x_s)), y_s) + BCE(G_d(R_lambda(G_f(x))), d)``, ``x`` = source and target,

where ``R_lambda`` is the gradient-reversal layer. The domain classifier ``G_d`` learns
at full strength; ``lambda = trade_off * lambda_p`` (``lambda_p`` annealed from 0 to 1; the
paper's ``trade_off`` is 1) scales only the reversed gradient that reaches the feature
extractor. Target labels are never read.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dann.errors import ConfigError
from dann.methods.base import DAMethod
from dann.methods.grl import grad_reverse
from dann.methods.schedules import adaptation_factor


class DANN(DAMethod):
    """Args (beyond :class:`DAMethod`'s): ``gamma``, the constant of the adaptation factor
    ``lambda_p = 2 / (1 + exp(-gamma p)) - 1`` (the paper: 10); ``trade_off``, its ceiling (1)."""

    def __init__(self, *args: Any, gamma: float = 10.0, trade_off: float = 1.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.discriminator = self._nets.discriminator

    @classmethod
    def check_options(cls, gamma: float, trade_off: float = 1.0, **_: Any) -> None:
        if gamma < 0:
            raise ConfigError(f"method.gamma={gamma!r} is invalid: expected a value >= 0 (the paper: 10)")
        if trade_off < 0:
            raise ConfigError(f"method.trade_off={trade_off!r} is invalid: expected a value >= 0 (the paper: 1)")

    @property
    def lambda_p(self) -> float:
        return self.hparams.get("trade_off", 1.0) * adaptation_factor(self.p, self.hparams.gamma)

    def losses(self, batch):
        f = self.features(torch.cat([batch["src_x"], batch["tgt_x"]]))  # one pass: no batch norm, so no cross-talk
        return self.terms(f, batch)

    def terms(self, f: torch.Tensor, batch) -> dict[str, torch.Tensor]:
        """The loss terms given the batch's features ``f`` (source rows first): for subclasses
        that add a term on the same features (BSP)."""
        ns = len(batch["src_x"])
        cls = F.cross_entropy(self.classifier(f[:ns]), batch["src_y"])
        d = self.discriminator(grad_reverse(f, self.lambda_p)).squeeze(1)
        dom_y = torch.cat([d.new_zeros(ns), d.new_ones(len(f) - ns)])  # 0 = source, 1 = target
        self._dom = (d.detach(), dom_y)  # for the learning curves (read on logging steps only)
        return {"cls": cls, "dom": F.binary_cross_entropy_with_logits(d, dom_y)}

    def logs(self):
        d, y = self._dom
        return {"lambda": self.lambda_p, "dom_acc": ((d > 0).float() == y).float().mean()}
