"""SHOT, source hypothesis transfer (Liang et al., ICML 2020), source-free: two stages.

1. steps ``[0, s)``, the source model: ``min_{G_f, G_y} CE_ls(G_y(G_f(x_s)), y_s)``, cross-entropy
   with label smoothing (the paper's source loss);
2. steps ``[s, max_steps)``, on the target alone, the classifier ``G_y`` (the source hypothesis)
   frozen:

   ``L = a [ mean_t H(p_t) - H(mean_t p_t) ] + b CE(G_y(G_f(x_t)), y^_t)``,  ``p_t = softmax(G_y(G_f(x_t)))``,

   information maximisation (confident and diverse predictions) plus self-supervised
   pseudo-labels from class centroids: every ``pseudo_every`` steps (default: one pass over the
   target's training set, as the authors' code) the current feature extractor is copied into a
   frozen labeller ``G'``, and over the target's training set (unit-normalised features with a
   1 appended, ``f^ = [G'(x), 1] / ||[G'(x), 1]||``)
   ``c0_k = sum_x p_k(x) f^(x) / sum_x p_k(x)``, ``y0(x) = argmax_k cos(f^(x), c0_k)``,
   ``c_k = mean of f^(x) over y0(x) = k``; a batch's pseudo-label is
   ``y^(x) = argmax_k cos(f^(x), c_k)`` (a class left empty is never chosen). The labeller and
   the centroids are in the checkpoint.

``s = round(source_fraction * max_steps)``, or 0 when ``start`` names a finished source-only run
whose network stage 2 adapts. Stage 2 reads no source batch and no target label (the record
says ``setting: source-free`` and how many steps the source stage took). Each stage has its own
optimizer and its own annealed learning rate (``p`` runs from 0 to 1 within each stage, as in
the authors' two scripts).

Deviations, for a comparison of methods on one network and recipe: the authors' digit networks
have a batch-normalised bottleneck and a weight-normalised last layer, and only that last layer
is frozen; here the pair's network, whose whole label predictor ``G_y`` is the hypothesis kept
frozen, and the shared SGD settings (the authors add Nesterov momentum and weight decay 1e-3).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dann.errors import ConfigError
from dann.methods.base import DAMethod
from dann.methods.schedules import lr_factor, progress
from dann.methods.teacher import copy_of, predict, refresh
from dann.methods.vada import unit


def with_bias(f: torch.Tensor) -> torch.Tensor:
    """``[f, 1] / ||[f, 1]||`` per row."""
    return unit(torch.cat([f.flatten(1), f.new_ones(len(f), 1)], 1))


def nearest(fhat: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The class of the centroid of largest cosine similarity to each row (an all-zero centroid,
    a class no example chose, is never picked)."""
    sim = fhat @ unit(centroids).T
    return sim.masked_fill((centroids == 0).all(1), float("-inf")).argmax(1)


@torch.no_grad()
def shot_centroids(chunks: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]], k: int) -> torch.Tensor:
    """``c`` (``k x (d + 1)``) from ``chunks()``, which yields ``(features, probabilities)`` over the
    whole target set, in the same order each time (two passes, memory ``O(k d)``)."""
    c0 = mass = None
    for f, p in chunks():
        fhat = with_bias(f)
        c0 = p.T @ fhat if c0 is None else c0 + p.T @ fhat
        mass = p.sum(0) if mass is None else mass + p.sum(0)
    c0 = c0 / (mass.unsqueeze(1) + 1e-8)
    c1 = torch.zeros_like(c0)
    count = torch.zeros(k, dtype=c0.dtype, device=c0.device)
    for f, _ in chunks():
        fhat = with_bias(f)
        y = nearest(fhat, c0)
        c1.index_add_(0, y, fhat)
        count += torch.bincount(y, minlength=k).to(c0.dtype)
    return c1 / (count.unsqueeze(1) + 1e-8)


def information_maximisation(logits: torch.Tensor) -> torch.Tensor:
    """``mean_i H(p_i) - H(mean_i p_i)`` (the authors' ``1e-5`` inside the second log)."""
    ent = -(torch.softmax(logits, 1) * torch.log_softmax(logits, 1)).sum(1).mean()
    pm = torch.softmax(logits, 1).mean(0)
    return ent + (pm * torch.log(pm + 1e-5)).sum()


class SHOT(DAMethod):
    """Args (beyond :class:`DAMethod`'s):
        start: a finished source-only run's folder (then no source stage: ``source_fraction`` 0).
        source_fraction: the share of ``max_steps`` spent on the source stage.
        label_smoothing: of the source loss.
        im_weight, pseudo_weight: ``a`` and ``b``.
        pseudo_every: steps between two refreshes of the labeller and centroids (0: one pass over
            the target's training set).
    """

    automatic_optimization = False
    start_methods = ("source_only",)

    def __init__(self, *args: Any, start: str = "", source_fraction: float = 0.5, label_smoothing: float = 0.1,
                 im_weight: float = 1.0, pseudo_weight: float = 0.1, pseudo_every: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: the feature extractor at the last refresh, and the centroids found with it
        self.labeller = copy_of(self.features)
        self.register_buffer("centroids", torch.zeros(self.num_classes, self.feature_dim + 1))

    @classmethod
    def check_options(cls, start: str, source_fraction: float, label_smoothing: float, im_weight: float,
                      pseudo_weight: float, pseudo_every: int, **_: Any) -> None:
        if not 0 <= source_fraction <= 1:
            raise ConfigError(f"method.source_fraction={source_fraction!r} is invalid: expected a value in [0, 1]")
        if start and source_fraction != 0:
            raise ConfigError(f"method.start={start} gives the source model, and method.source_fraction="
                              f"{source_fraction} would train another: set method.source_fraction=0")
        if not 0 <= label_smoothing < 1:
            raise ConfigError(f"method.label_smoothing={label_smoothing!r} is invalid: expected a value in [0, 1)")
        if im_weight < 0 or pseudo_weight < 0:
            raise ConfigError(f"method.im_weight/pseudo_weight={(im_weight, pseudo_weight)!r} are invalid: "
                              f"expected weights >= 0")
        if pseudo_every < 0:
            raise ConfigError(f"method.pseudo_every={pseudo_every!r} is invalid: expected a number of steps >= 0 "
                              f"(0: one pass over the target's training set)")

    @property
    def switch_step(self) -> int:
        """The first step of the target stage."""
        return 0 if self.hparams.start else round(self.hparams.source_fraction * self.hparams.max_steps)

    @property
    def stage(self) -> int:
        return 1 if self.global_step < self.switch_step else 2

    # -- optimizers: 0 = G_f and G_y (source stage), 1 = G_f (target stage) -------------------
    def optimized_parameters(self) -> list[Iterable[nn.Parameter]]:
        return [[*self.features.parameters(), *self.classifier.parameters()], list(self.features.parameters())]

    def lr_factor(self, step: int) -> float:
        h, s = self.hparams, self.switch_step
        if not h.anneal:
            return 1.0
        p = progress(step, s) if step < s else progress(step - s, max(h.max_steps - s, 1))
        return lr_factor(p, h.alpha, h.beta)

    # -- pseudo-labels ----------------------------------------------------------------------
    def _target_chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        split = self.domain_split("tgt", "train")  # its inputs only: no label is read
        for x in split.batches(None, 1024, self.device):
            f = predict(self.labeller, x)
            yield f, torch.softmax(predict(self.classifier, f), 1)

    def refresh_pseudo_labels(self) -> None:
        """Copy the feature extractor into the labeller; the centroids over the target's training set."""
        refresh(self.labeller, self.features)
        self.centroids.copy_(shot_centroids(self._target_chunks, self.num_classes))

    def pseudo_labels(self, x: torch.Tensor) -> torch.Tensor:
        return nearest(with_bias(predict(self.labeller, x)), self.centroids)

    # -- the two stages ---------------------------------------------------------------------
    def losses(self, batch):
        h = self.hparams
        if self.stage == 1:
            loss = F.cross_entropy(self(batch["src_x"]), batch["src_y"], label_smoothing=h.label_smoothing)
            self.update(loss, 0)
            zero = loss.new_zeros(())
            return {"src": loss.detach(), "im": zero, "pseudo": zero}
        # the target stage: from here on no source batch is read
        xt = batch["tgt_x"]
        if h.pseudo_weight > 0:
            every = h.pseudo_every or max(len(self.domain_split("tgt", "train")) // len(xt), 1)
            if (self.global_step - self.switch_step) % every == 0:
                self.refresh_pseudo_labels()
        logits = self(xt)
        im = h.im_weight * information_maximisation(logits)
        pseudo = (h.pseudo_weight * F.cross_entropy(logits, self.pseudo_labels(xt)) if h.pseudo_weight > 0
                  else logits.new_zeros(()))
        self.update(im + pseudo, 1)
        return {"src": logits.new_zeros(()), "im": im.detach(), "pseudo": pseudo.detach()}

    def logs(self):
        return {"stage": float(self.stage)}

    def record_extras(self) -> dict[str, Any]:
        return {**super().record_extras(), "setting": "source-free", "source_steps": self.switch_step}
