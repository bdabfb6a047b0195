"""DIRT-T, decision-boundary iterative refinement training with a teacher (Shu et al., ICLR 2018:
the DIRT-T objective, the Lagrangian of a KL-constrained step on the target alone):

``L = beta * mean_t KL(h_{n-1}(x_t) || h(x_t)) + lambda_t (H(h(x_t)) + L_v(x_t))``  (``beta``: ``kl_weight``),

on the target only: VADA's conditional entropy ``H`` and virtual adversarial loss ``L_v`` (see
:mod:`dann.methods.vada`), kept close to the previous model ``h_{n-1}``, a frozen teacher (a copy
of the network, in evaluation mode, without gradient) refreshed from the network every
``teacher_every`` steps, the first time at step 0. The network starts as a finished VADA run's
(``method.start``: its folder; the record says which run, at which step). No source batch and
no target label is read.

Optimizer: the authors use Adam, whose steps do not depend on a common scale of the loss, with
``beta = lambda_t = 1e-2``; with the shared SGD schedule only their ratio carries over, so here
both are 1 (the scale of VADA's label loss). Evaluated: the last step's network (the authors
evaluate an exponential moving average of its weights).
"""

from __future__ import annotations

from typing import Any

from dann.errors import ConfigError
from dann.methods.base import DAMethod
from dann.methods.teacher import Network, copy_of, predict, refresh
from dann.methods.vada import check_vat, conditional_entropy, kl_rows, vat_rows


class DIRTT(DAMethod):
    """Args (beyond :class:`DAMethod`'s):
        start: the folder of the finished VADA run to refine.
        kl_weight: ``beta``, the weight of the KL term to the teacher (``beta`` names the
            learning-rate annealing's constant).
        tgt_weight: ``lambda_t``, conditional entropy and VAT on the target.
        teacher_every: steps between two refreshes of the teacher.
        radius, xi: VAT's (as VADA's).
    """

    start_methods = ("vada",)
    requires_start = True

    def __init__(self, *args: Any, start: str = "", kl_weight: float = 1.0, tgt_weight: float = 1.0,
                 teacher_every: int = 1000, radius: float = 1.75, xi: float = 0.01, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.teacher = copy_of(Network(self.features, self.classifier))

    @classmethod
    def check_options(cls, kl_weight: float, tgt_weight: float, teacher_every: int, radius: float, xi: float,
                      **_: Any) -> None:
        check_vat(radius, xi, kl_weight=kl_weight, tgt_weight=tgt_weight)
        if teacher_every < 1:
            raise ConfigError(f"method.teacher_every={teacher_every!r} is invalid: expected a number of steps >= 1")

    def losses(self, batch):
        h = self.hparams
        if self.global_step % h.teacher_every == 0:
            refresh(self.teacher, Network(self.features, self.classifier))
        xt = batch["tgt_x"]
        logits = self(xt)
        kl = kl_rows(predict(self.teacher, xt), logits).mean()
        return {"kl": h.kl_weight * kl, "ent": h.tgt_weight * conditional_entropy(logits),
                "vat": h.tgt_weight * vat_rows(self, xt, logits, h.radius, h.xi).mean()}
