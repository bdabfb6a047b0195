"""AFN, adaptive feature norm, its stepwise form SAFN (Xu et al., ICCV 2019):

``L = CE(G_y(G_f(x_s)), y_s) + lambda sum_{S in (source, target)} mean_{x in S} (||G_f(x)|| - (||G_f(x)||_0 + dr))^2``,

where ``||G_f(x)||_0`` is the norm the features have now, held fixed (no gradient: the
"previous iteration's" norm): each step asks every example's feature norm to grow by ``dr``
over its current value. The term is ``lambda dr^2`` on every step and its gradient at each
example is ``-2 lambda dr f / ||f||`` divided by the batch size, whatever the norm (unlike the
hard variant HAFN's pull towards a fixed norm ``R``, which explodes on features of norm 1e3).
As in the authors' code, the term is a mean per domain, summed over the two domains.
``entropy_weight`` > 0 adds the paper's optional target entropy term (``+ e mean_t H(p_t)``).
Target labels are never read.

Beware, on the paper's DANN networks: the paper applies the term to a batch-normalised
bottleneck, whose norm a constant push grows linearly. Without normalisation the feature norm
is a product of the layers' scales and the same push grows it geometrically: on the MNIST net
(two conv layers) with ``lambda = 0.05, dr = 1``, SGD 0.01, momentum 0.9, the mean target
feature norm went 3.3, 163, 1.8e4, 4.2e6 at steps 0, 10, 20, 30 and the label loss diverged
(``dr = 0.1``: 3.3 to 1.2e3 by step 59, still growing). In float32 the term then vanishes
(``||f|| + dr`` rounds to ``||f||`` above ~1e7) and the logged ``norm`` reads 0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dann.errors import ConfigError
from dann.methods.base import DAMethod
from dann.methods.vada import conditional_entropy


def stepwise_norm_loss(f: torch.Tensor, dr: float) -> torch.Tensor:
    """``mean_i (||f_i|| - (||f_i||.detach() + dr))^2``."""
    norm = f.flatten(1).norm(dim=1)
    return (norm - (norm.detach() + dr)).pow(2).mean()


class AFN(DAMethod):
    """Args (beyond :class:`DAMethod`'s): ``trade_off`` (lambda), ``dr`` (the step of the norm),
    ``entropy_weight`` (0: SAFN alone)."""

    def __init__(self, *args: Any, trade_off: float = 0.05, dr: float = 1.0, entropy_weight: float = 0.0,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)

    @classmethod
    def check_options(cls, trade_off: float, dr: float, entropy_weight: float, **_: Any) -> None:
        for k, v in (("trade_off", trade_off), ("dr", dr), ("entropy_weight", entropy_weight)):
            if v < 0:
                raise ConfigError(f"method.{k}={v!r} is invalid: expected a value >= 0")

    def losses(self, batch):
        h = self.hparams
        f, logits, ns = self.joint_pass(batch)
        norm = stepwise_norm_loss(f[:ns], h.dr) + stepwise_norm_loss(f[ns:], h.dr)
        self._norms = f.detach().flatten(1).norm(dim=1)
        terms = {"cls": F.cross_entropy(logits[:ns], batch["src_y"]), "norm": h.trade_off * norm}
        if h.entropy_weight > 0:
            terms["ent"] = h.entropy_weight * conditional_entropy(logits[ns:])
        return terms

    def logs(self):
        # the feature norm itself: what the term drives up, dr per step at most
        return {"feature_norm": self._norms.mean()}
