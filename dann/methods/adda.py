"""ADDA, adversarial discriminative domain adaptation (Tzeng et al., CVPR 2017, Sec. 4: the ADDA
objectives, untied weights, the GAN loss with inverted labels), two stages:

1. steps ``[0, s)``: ``min_{M_s, C}  CE(C(M_s(x_s)), y_s)``, the source encoder and classifier;
2. at step ``s`` the target encoder ``M_t`` starts as a copy of ``M_s``; ``M_s`` and ``C`` are
   frozen from then on. Each later batch takes two updates:
   ``min_D  BCE(D(M_s(x_s)), source) + BCE(D(M_t(x_t)), target)``, then
   ``min_{M_t}  BCE(D(M_t(x_t)), source)`` (the GAN loss with inverted labels).

``s = round(source_fraction * max_steps)``. The model evaluated (and scored by the selection
probe) is ``C(M_t(x))`` on both domains: ``features`` is ``M_t`` (``M_s`` during stage 1) and
``source_features`` holds the frozen ``M_s``.

Choices (see ``conf/method/adda.yaml``): by default the domain classifier ``D`` is the pair's
(the one DANN trains), and the optimizer the shared SGD schedule; ``discriminator: paper`` is
the paper's 500-500-ReLU one and ``optimizer: adam`` the authors' Adam (stage 1: lr 1e-3;
stage 2: lr 2e-4, beta1 0.5; constant). The authors' release adapts the whole LeNet and lets
``D`` see its class scores; here ``M`` is the feature extractor, so ``C`` stays the source's.
Target labels are never read.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from dann.errors import ConfigError, check_choice
from dann.methods.base import DAMethod

OPTIMIZERS = ("sgd", "adam")
DISCRIMINATORS = ("pair", "paper")


class ADDA(DAMethod):
    """Args (beyond :class:`DAMethod`'s):
        source_fraction: the share of ``max_steps`` spent on stage 1 (the authors: 10k + 10k, 0.5).
        discriminator: ``pair`` (the pair's domain classifier) or ``paper`` (500-500, ReLU).
        optimizer: ``sgd`` (the shared schedule) or ``adam`` (the authors').
        adam_lr_source, adam_lr, adam_beta1: Adam's settings for stage 1 and stage 2.
    """

    automatic_optimization = False

    def __init__(self, *args: Any, source_fraction: float = 0.5, discriminator: str = "pair",
                 optimizer: str = "sgd", adam_lr_source: float = 1e-3, adam_lr: float = 2e-4, adam_beta1: float = 0.5,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.source_features = copy.deepcopy(self.features).requires_grad_(False)
        if discriminator == "paper":
            d = self.feature_dim
            self.discriminator = nn.Sequential(nn.Linear(d, 500), nn.ReLU(), nn.Linear(500, 500), nn.ReLU(),
                                               nn.Linear(500, 1))
        else:
            self.discriminator = self._nets.discriminator

    @classmethod
    def check_options(cls, source_fraction: float, discriminator: str, optimizer: str, adam_lr_source: float,
                      adam_lr: float, adam_beta1: float, **_: Any) -> None:
        if not 0 <= source_fraction <= 1:
            raise ConfigError(f"method.source_fraction={source_fraction!r} is invalid: expected a value in [0, 1]")
        check_choice("method.discriminator", discriminator, DISCRIMINATORS)
        check_choice("method.optimizer", optimizer, OPTIMIZERS)
        if adam_lr_source <= 0 or adam_lr <= 0 or not 0 <= adam_beta1 < 1:
            raise ConfigError(f"method.adam_lr_source/adam_lr/adam_beta1={(adam_lr_source, adam_lr, adam_beta1)!r} "
                              f"are invalid: expected learning rates > 0 and beta1 in [0, 1)")

    @property
    def switch_step(self) -> int:
        """The first step of stage 2."""
        return round(self.hparams.source_fraction * self.hparams.max_steps)

    @property
    def stage(self) -> int:
        return 1 if self.global_step < self.switch_step else 2

    # -- optimizers: 0 = M_s and C (stage 1), 1 = M_t, 2 = D (stage 2) ----------------------
    def optimized_parameters(self) -> list[Iterable[Any]]:
        groups = [[*self.features.parameters(), *self.classifier.parameters()], list(self.features.parameters()),
                  list(self.discriminator.parameters())]
        if self.hparams.optimizer != "adam":
            return groups
        h = self.hparams
        # the authors: Adam's default betas for the source network, beta1 = 0.5 for the adversarial stage
        settings = [(h.adam_lr_source, (0.9, 0.999)), (h.adam_lr, (h.adam_beta1, 0.999)),
                    (h.adam_lr, (h.adam_beta1, 0.999))]
        return [[{"params": g, "lr": lr, "betas": betas}] for g, (lr, betas) in zip(groups, settings)]

    def make_optimizer(self, params):
        if self.hparams.optimizer != "adam":
            return super().make_optimizer(params)
        return torch.optim.Adam(params)  # lr and betas per group, above

    def lr_factor(self, step: int) -> float:
        return 1.0 if self.hparams.optimizer == "adam" else super().lr_factor(step)

    # -- the two stages -------------------------------------------------------------------
    def losses(self, batch):
        xs, xt, ys = batch["src_x"], batch["tgt_x"], batch["src_y"]
        zero = xs.new_zeros(())
        if self.stage == 1:
            cls = F.cross_entropy(self(xs), ys)
            self.update(cls, 0)
            self._dom = None
            return {"cls": cls.detach(), "dom": zero, "map": zero}
        if self.global_step == self.switch_step:
            # M_t starts where M_s ended; M_s is kept frozen (a buffer-like copy in the checkpoint)
            self.source_features.load_state_dict(self.features.state_dict())
        with torch.no_grad():
            f_s = self.source_features(xs)
        f_t = self.features(xt)
        d = self.discriminator(torch.cat([f_s, f_t.detach()])).squeeze(1)
        dom_y = torch.cat([d.new_zeros(len(xs)), d.new_ones(len(xt))])  # 0 = source, 1 = target
        dom = F.binary_cross_entropy_with_logits(d, dom_y)
        self.update(dom, 2)
        # inverted labels: M_t is trained so that D calls its target features "source"
        d_t = self.discriminator(f_t).squeeze(1)
        mapping = F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t))
        self.update(mapping, 1)
        self._dom = (d.detach(), dom_y)
        with torch.no_grad():  # for the curves: the evaluated model (C after M_t) on the source batch
            cls = F.cross_entropy(self(xs), ys)
        return {"cls": cls, "dom": dom.detach(), "map": mapping.detach()}

    def logs(self):
        if self._dom is None:  # stage 1: no domain classifier yet (the same keys on every step)
            return {"stage": 1.0, "dom_acc": float("nan")}
        d, y = self._dom
        return {"stage": 2.0, "dom_acc": ((d > 0).float() == y).float().mean()}
