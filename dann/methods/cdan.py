"""CDAN and CDAN+E (Long et al., NeurIPS 2018, Sec. 3: multilinear conditioning, the randomized
multilinear map, entropy conditioning, and the minimax problem of each):

``L = CE(G_y(f_s), y_s) + (trade_off / 2) sum_{S in (source, target)} sum_{i in S} w_i BCE(D(R_lambda(T(f_i, g_i))), d_i) / sum_{i in S} w_i``,

with ``f = G_f(x)`` the features, ``g = softmax(G_y(f))`` the class probabilities and ``T`` the
multilinear map: the flattened outer product ``f (x) g`` when ``d_f * K <= 4096``, else the
randomized map ``T(f, g) = (R_f f) (.) (R_g g) / sqrt(d)`` with fixed Gaussian ``R_f``, ``R_g`` and
``d = 1024`` (the paper's rule and size). The domain classifier ``D``
learns at full strength; the gradient-reversal layer ``R_lambda`` (DANN's, with its schedule
``lambda_p``, as in the authors' code) reverses and scales what reaches the features.

``g`` conditions the discriminator but receives no adversarial gradient (detached, as in the
authors' released code); only ``f`` is adapted. Weights: CDAN uses ``w_i = 1``; CDAN+E
(``entropy=true``) uses the paper's ``w_i = 1 + exp(-H(g_i))``, normalised within each
domain so that each still weighs one half (the authors' code does the same), and not
differentiated (an importance weight, not a training signal). Target labels are never read.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from dann.errors import ConfigError
from dann.methods.base import DAMethod
from dann.methods.grl import grad_reverse
from dann.methods.schedules import adaptation_factor


def entropy(p: torch.Tensor) -> torch.Tensor:
    """``H(p_i) = -sum_c p_ic log p_ic`` per row (``0 log 0 = 0``)."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(1)


def entropy_weights(g: torch.Tensor, ns: int) -> torch.Tensor:
    """``w_i = 1 + exp(-H(g_i))`` normalised to sum to 1/2 over the first ``ns`` rows (source)
    and 1/2 over the rest (target); without gradient."""
    with torch.no_grad():
        w = 1.0 + torch.exp(-entropy(g))
        return torch.cat([w[:ns] / w[:ns].sum(), w[ns:] / w[ns:].sum()]) / 2


def multilinear(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``T(f, g) = f (x) g``, flattened: row ``i`` holds ``f_ia * g_ic`` at ``a * K + c``."""
    return (f.unsqueeze(2) * g.unsqueeze(1)).flatten(1)


def randomized_multilinear(f: torch.Tensor, g: torch.Tensor, r_f: torch.Tensor, r_g: torch.Tensor) -> torch.Tensor:
    """``T(f, g) = (f R_f) (.) (g R_g) / sqrt(d)`` (element-wise product), ``d = R_f.shape[1]``."""
    return (f @ r_f) * (g @ r_g) / math.sqrt(r_f.shape[1])


class CDAN(DAMethod):
    """Args (beyond :class:`DAMethod`'s):
        entropy: entropy conditioning (CDAN+E).
        gamma: the constant of ``lambda_p = 2 / (1 + exp(-gamma p)) - 1`` (DANN's: 10).
        trade_off: multiplies the domain loss (the paper's lambda: 1).
        max_multilinear: the largest ``d_f * K`` kept as the full outer product (4096).
        random_dim: ``d`` of the randomized map otherwise (1024).
    """

    def __init__(self, *args: Any, entropy: bool = False, gamma: float = 10.0, trade_off: float = 1.0,
                 max_multilinear: int = 4096, random_dim: int = 1024, **kwargs: Any):
        super().__init__(*args, **kwargs)
        full = self.feature_dim * self.num_classes
        self.randomized = full > max_multilinear
        if self.randomized:
            # Drawn once from the seeded generator and kept as buffers, so a checkpoint (and
            # a resumed run, and evaluation) sees the same map.
            self.register_buffer("r_f", torch.randn(self.feature_dim, random_dim))
            self.register_buffer("r_g", torch.randn(self.num_classes, random_dim))
        self.discriminator = self._nets.new_discriminator(random_dim if self.randomized else full)

    @classmethod
    def check_options(cls, gamma: float, trade_off: float, max_multilinear: int, random_dim: int, **_: Any) -> None:
        if gamma < 0:
            raise ConfigError(f"method.gamma={gamma!r} is invalid: expected a value >= 0 (the paper: 10)")
        if trade_off < 0:
            raise ConfigError(f"method.trade_off={trade_off!r} is invalid: expected a value >= 0")
        for k, v in (("max_multilinear", max_multilinear), ("random_dim", random_dim)):
            if v < 1:
                raise ConfigError(f"method.{k}={v!r} is invalid: expected an integer >= 1")

    @property
    def lambda_p(self) -> float:
        return adaptation_factor(self.p, self.hparams.gamma)

    def condition(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The discriminator's input ``T(f, g)``."""
        return randomized_multilinear(f, g, self.r_f, self.r_g) if self.randomized else multilinear(f, g)

    def losses(self, batch):
        return self.terms(self.features(torch.cat([batch["src_x"], batch["tgt_x"]])), batch)

    def terms(self, f: torch.Tensor, batch) -> dict[str, torch.Tensor]:
        """The loss terms given the batch's features ``f`` (source rows first): for subclasses
        that add a term on the same features (BSP)."""
        ns = len(batch["src_x"])
        logits = self.classifier(f)
        cls = F.cross_entropy(logits[:ns], batch["src_y"])
        g = torch.softmax(logits, 1).detach()
        d = self.discriminator(self.condition(grad_reverse(f, self.lambda_p), g)).squeeze(1)
        dom_y = torch.cat([d.new_zeros(ns), d.new_ones(len(f) - ns)])  # 0 = source, 1 = target
        per = F.binary_cross_entropy_with_logits(d, dom_y, reduction="none")
        dom = (entropy_weights(g, ns) * per).sum() if self.hparams.entropy else per.mean()
        self._dom = (d.detach(), dom_y)
        return {"cls": cls, "dom": self.hparams.trade_off * dom}

    def logs(self):
        d, y = self._dom
        return {"lambda": self.lambda_p, "dom_acc": ((d > 0).float() == y).float().mean()}
