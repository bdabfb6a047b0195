"""MCD, maximum classifier discrepancy (Saito et al., CVPR 2018, the training steps A-C
of its method section), three updates per batch:

* A: ``min_{G, F1, F2}  CE(F1(G(x_s)), y_s) + CE(F2(G(x_s)), y_s)``;
* B: ``min_{F1, F2}  CE(F1(G(x_s)), y_s) + CE(F2(G(x_s)), y_s) - w d(F1(G(x_t)), F2(G(x_t)))``;
* C: ``min_G  w d(F1(G(x_t)), F2(G(x_t)))``, repeated ``n`` times (``num_k``; the paper's
  digits setting: 4),

with the discrepancy ``d(p1, p2) = mean_x (1/K) sum_k |p1_k(x) - p2_k(x)|`` between
the two classifiers' class probabilities and its weight ``w`` (``trade_off``; the paper: 1). Each step recomputes its forward pass with the
parameters the previous one left. ``F1`` is the pair's label predictor (it is the one evaluated
and scored); ``F2`` a second one of the same architecture, initialised independently.

Optimizer: the paper used Adam (lr 2e-4, digits) for G and the classifiers; by default this
uses the shared SGD schedule of every method here (``optimizer: adam`` for the paper's). Target
labels are never read.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from dann.errors import ConfigError, check_choice
from dann.methods.base import DAMethod

OPTIMIZERS = ("sgd", "adam")


def discrepancy(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """``mean_x (1/K) sum_k |softmax(l1)_k - softmax(l2)_k|``."""
    return (torch.softmax(logits1, 1) - torch.softmax(logits2, 1)).abs().mean()


class MCD(DAMethod):
    """Args (beyond :class:`DAMethod`'s):
        num_k: ``n``, the generator updates (step C) per batch.
        optimizer: ``sgd`` (the shared schedule) or ``adam`` (the paper's: constant ``adam_lr``).
        adam_lr, adam_weight_decay: Adam's settings (the authors' code: 2e-4, 5e-4).
        trade_off: ``w``, the discrepancy's weight in steps B and C (the paper: 1).
    """

    automatic_optimization = False

    def __init__(self, *args: Any, num_k: int = 4, optimizer: str = "sgd", adam_lr: float = 2e-4,
                 adam_weight_decay: float = 5e-4, trade_off: float = 1.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.classifier2 = self._nets.new_classifier(self.num_classes)

    @classmethod
    def check_options(cls, num_k: int, optimizer: str, adam_lr: float, adam_weight_decay: float,
                      trade_off: float = 1.0, **_: Any) -> None:
        if trade_off < 0:
            raise ConfigError(f"method.trade_off={trade_off!r} is invalid: expected a value >= 0 (the paper: 1)")
        if num_k < 1:
            raise ConfigError(f"method.num_k={num_k!r} is invalid: expected an integer >= 1 (the paper: 4 for digits)")
        check_choice("method.optimizer", optimizer, OPTIMIZERS)
        if adam_lr <= 0 or adam_weight_decay < 0:
            raise ConfigError(f"method.adam_lr/adam_weight_decay={(adam_lr, adam_weight_decay)!r} are invalid: "
                              f"expected a learning rate > 0 and a decay >= 0")

    # -- optimizers: 0 = the generator G, 1 = both classifiers ------------------------------
    def optimized_parameters(self) -> list[Iterable[nn.Parameter]]:
        return [list(self.features.parameters()),
                [*self.classifier.parameters(), *self.classifier2.parameters()]]

    def make_optimizer(self, params):
        if self.hparams.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.hparams.adam_lr, weight_decay=self.hparams.adam_weight_decay)
        return super().make_optimizer(params)

    def lr_factor(self, step: int) -> float:
        # the paper's Adam runs at a constant rate; the SGD schedule is every method's
        return 1.0 if self.hparams.optimizer == "adam" else super().lr_factor(step)

    # -- the three steps ------------------------------------------------------------------
    def source_loss(self, f_s: torch.Tensor, y_s: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.classifier(f_s), y_s) + F.cross_entropy(self.classifier2(f_s), y_s)

    def target_discrepancy(self, f_t: torch.Tensor) -> torch.Tensor:
        """``w d``: the weighted discrepancy of the two classifiers on target features."""
        return self.hparams.get("trade_off", 1.0) * discrepancy(self.classifier(f_t), self.classifier2(f_t))

    def losses(self, batch):
        xs, xt, ys = batch["src_x"], batch["tgt_x"], batch["src_y"]
        ns = len(xs)
        # A: G, F1 and F2 on the labelled source
        loss_a = self.source_loss(self.features(xs), ys)
        self.update(loss_a, 0, 1)
        # B: the classifiers maximise their discrepancy on the target, keeping the source;
        # G is not updated here, so its forward needs no graph
        with torch.no_grad():
            f = self.features(torch.cat([xs, xt]))
        disc_b = self.target_discrepancy(f[ns:])
        loss_b = self.source_loss(f[:ns], ys) - disc_b
        self.update(loss_b, 1)
        # C: G minimises the discrepancy, n times
        for _ in range(self.hparams.num_k):
            disc_c = self.target_discrepancy(self.features(xt))
            self.update(disc_c, 0)
        # logged: one classifier's source loss (so that chance is ln K, as for every method),
        # the discrepancy the classifiers reached in B and the one G's last update started from
        return {"cls": loss_a.detach() / 2, "disc": disc_b.detach(), "disc_after": disc_c.detach()}
