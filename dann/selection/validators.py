"""Label-free validators: one function each, registered by :func:`validator`.

At every evaluation the probe computes each validator on :class:`Views` of the current model
(its predictions and features on a fixed unlabelled target sample, the source validation
split, a source training sample) and writes the values to ``evaluations.jsonl`` under the
validator's ``score`` key. Each validator with a ``rule`` name is also a model-selection
rule (``selection=NAME``, ``dann-table --select NAME``): the evaluation with the best score.

To add one, write a function in a module of your own and name the module in the config's
``validator_modules`` list (``dann-table``/``dann-select``: ``--validators MODULE``)::

    from dann.selection import Views, validator

    @validator("my_rule", higher_is_better=True, doc="what it prefers (its paper)")
    def my_rule(v: Views) -> float:
        return float(v.tgt_probs.max(1).values.mean())
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dann.selection.scores import (MIXVAL_LAMBDA, SND_TEMPERATURE, bnm_score, class_ami, density_ratio,  # noqa: F401
                                   dev_risk, devn_score, entropy_score, im_score, iwcv_score, mano_score, mix_pairs,
                                   mixval_score, reverse_validation, snd_score)

log = logging.getLogger(__name__)

#: intra-class and inter-class pairs MixVal mixes, each
MIXVAL_PAIRS = 500


@dataclass(frozen=True)
class Validator:
    score: str                      # the key it writes in evaluations.jsonl
    fn: Callable[["Views"], float]
    rule: str | None                # its model-selection rule's name (None: a score only)
    higher_is_better: bool
    doc: str
    needs_src_val: bool             # NaN when the run holds no source validation split


#: every validator by score key, in registration order
VALIDATORS: dict[str, Validator] = {}


def validator(rule: str | None, *, score: str | None = None, higher_is_better: bool = True, doc: str = "",
              needs_src_val: bool = False) -> Callable:
    """Register ``fn(views) -> float`` as a label-free score (and rule ``rule``)."""
    def wrap(fn: Callable[[Views], float]) -> Callable[[Views], float]:
        key = score or rule or fn.__name__
        VALIDATORS[key] = Validator(key, fn, rule, higher_is_better, doc or (fn.__doc__ or "").strip(),
                                    needs_src_val)
        return fn
    return wrap


def import_validators(modules) -> list[str]:
    """Import each module (a dotted name, as ``validator_modules`` lists them) so that its
    ``@validator`` functions register; returns the score keys they added. A module that cannot
    be imported is a ``ValueError`` naming it."""
    import importlib

    before = set(VALIDATORS)
    for m in modules or ():
        if not isinstance(m, str) or not m:
            raise ValueError(f"validator_modules: {m!r} is not a module name (a dotted name such as mylab.validators)")
        try:
            importlib.import_module(m)
        except ImportError as e:
            raise ValueError(f"validator_modules: cannot import {m!r} ({e}); put its folder on PYTHONPATH or install "
                             f"it") from None
    return [k for k in VALIDATORS if k not in before]


# -- what a validator may look at --------------------------------------------------------------
@torch.no_grad()
def forward(model, split, idx: torch.Tensor | None = None, batch: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and logits of ``model`` on ``split`` (rows ``idx``, or all), on the CPU."""
    fs, ls = [], []
    for x in split.batches(idx, batch, next(model.parameters()).device):
        f = model.features(x)
        fs.append(f.flatten(1).float().cpu())
        ls.append(model.classifier(f).float().cpu())
    return torch.cat(fs), torch.cat(ls)


class Views:
    """The model's outputs a validator reads, computed once and only when asked for. No
    target label is reachable from here."""

    def __init__(self, model, dm, samples: int = 2000, seed: int = 0):
        self.model, self.dm, self.samples, self.seed = model, dm, samples, seed

    @cached_property
    def _tgt_rows(self) -> torch.Tensor:
        return self.dm.split("tgt", "train").sample(self.samples, self.seed)

    @cached_property
    def _tgt(self) -> tuple[torch.Tensor, torch.Tensor]:
        return forward(self.model, self.dm.split("tgt", "train"), self._tgt_rows)

    @property
    def tgt_features(self) -> torch.Tensor:
        return self._tgt[0]

    @property
    def tgt_logits(self) -> torch.Tensor:
        return self._tgt[1]

    @cached_property
    def tgt_probs(self) -> torch.Tensor:
        return torch.softmax(self.tgt_logits, 1)

    @cached_property
    def src_features(self) -> torch.Tensor:
        """Features of a source *training* sample, half the target sample's size: the source side
        of DEV's domain classifier (``density_ratio`` corrects for the unequal sizes)."""
        s = self.dm.split("src", "train")
        return forward(self.model, s, s.sample(max(self.samples // 2, 1), self.seed + 1))[0]

    @cached_property
    def has_src_val(self) -> bool:
        val = getattr(self.dm, "src_val", None)
        return val is not None and len(val) > 0

    @cached_property
    def _val(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        val = self.dm.split("src", "val")
        f, lg = forward(self.model, val)
        return f, lg, val.y.cpu()

    @property
    def val_features(self) -> torch.Tensor:
        return self._val[0]

    @property
    def val_logits(self) -> torch.Tensor:
        return self._val[1]

    @property
    def val_labels(self) -> torch.Tensor:
        return self._val[2]

    @cached_property
    def val_losses(self) -> np.ndarray:
        return F.cross_entropy(self.val_logits, self.val_labels, reduction="none").numpy()

    @cached_property
    def val_weights(self) -> np.ndarray:
        """Density ratios ``p_t / p_s`` at the source validation samples (DEV, DEVN and IWCV share them)."""
        return density_ratio(self.src_features.numpy(), self.tgt_features.numpy(), self.val_features.numpy(),
                             self.seed)

    @cached_property
    def mixed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MixVal's probe: ``(predictions on the mixed images, pseudo-label of the larger part, intra?)``
        for intra- and inter-class pairs of the target sample."""
        t = self.dm.split("tgt", "train")
        pred = self.tgt_logits.argmax(1)
        a, b, same = mix_pairs(pred, MIXVAL_PAIRS, self.seed)
        rows = self._tgt_rows.to(t.y.device)
        dev = next(self.model.parameters()).device
        out = []
        with torch.no_grad():
            for i in range(0, len(a), 1024):
                xa, xb = t.inputs(rows[a[i:i + 1024]]), t.inputs(rows[b[i:i + 1024]])
                x = (MIXVAL_LAMBDA * xa + (1 - MIXVAL_LAMBDA) * xb).to(dev)
                out.append(self.model.classifier(self.model.features(x)).argmax(1).cpu())
        return (torch.cat(out) if out else torch.zeros(0, dtype=torch.long)), pred[a], same


# -- the validators (registration order = the order of RULES and of the study) ------------------
@validator("src_val", score="src_val_acc", doc="best source-validation accuracy", needs_src_val=True)
def src_val_acc(v: Views) -> float:
    return float((v.val_logits.argmax(1) == v.val_labels).float().mean())


@validator(None, score="src_val_loss", higher_is_better=False, doc="source-validation cross-entropy",
           needs_src_val=True)
def src_val_loss(v: Views) -> float:
    return float(v.val_losses.mean())


@validator("reverse_validation", score="rv", doc="best reverse-validation accuracy (Zhong et al. 2010)",
           needs_src_val=True)
def rv(v: Views) -> float:
    return reverse_validation(v.tgt_features.numpy(), v.tgt_logits.argmax(1).numpy(), v.val_features.numpy(),
                              v.val_labels.numpy(), v.seed)


@validator("dev", higher_is_better=False, doc="lowest Deep Embedded Validation risk (You et al. 2019)",
           needs_src_val=True)
def dev(v: Views) -> float:
    return dev_risk(v.val_losses, v.val_weights)


@validator("entropy", higher_is_better=False, doc="lowest mean entropy of target predictions")
def entropy(v: Views) -> float:
    return entropy_score(v.tgt_probs)


@validator("im", doc="highest information maximisation of target predictions")
def im(v: Views) -> float:
    return im_score(v.tgt_probs)


@validator("snd", doc="highest soft neighbourhood density (Saito et al. 2021)")
def snd(v: Views) -> float:
    return snd_score(v.tgt_probs)


@validator("bnm", doc="highest batch nuclear norm of target predictions (Cui et al. 2020)")
def bnm(v: Views) -> float:
    return bnm_score(v.tgt_probs)


@validator("class_ami", doc="highest AMI between k-means clusters of target features and predictions "
                            "(Musgrave et al. 2022)")
def class_ami_(v: Views) -> float:
    return class_ami(v.tgt_features.numpy(), v.tgt_logits.argmax(1).numpy(), v.tgt_logits.shape[1], v.seed)


@validator("mixval", doc="highest accuracy on mixed target pairs against their pseudo-labels (Hu et al. 2023)")
def mixval(v: Views) -> float:
    return mixval_score(*v.mixed)


@validator("iwcv", doc="lowest importance-weighted source-validation loss (Sugiyama et al. 2007)",
           needs_src_val=True)
def iwcv(v: Views) -> float:
    return iwcv_score(v.val_losses, v.val_weights)


@validator("devn", doc="lowest DEV risk with max-normalised weights (Musgrave et al. 2022)", needs_src_val=True)
def devn(v: Views) -> float:
    return devn_score(v.val_losses, v.val_weights)


@validator("mano", doc="highest MaNo, the normalised p-norm of the target logits (Xie et al. 2024)")
def mano(v: Views) -> float:
    return mano_score(v.tgt_logits)


# -- scoring a model --------------------------------------------------------------------------------
def accuracy(model, split) -> float:
    """Top-1 accuracy of ``model`` (a :class:`dann.methods.DAMethod`) on a whole split (NaN if empty)."""
    if len(split) == 0:
        return float("nan")
    _, logits = forward(model, split)
    return float((logits.argmax(1) == split.y.cpu()).float().mean())


def evaluate(model, dm, samples: int = 2000, seed: int = 0, accuracies: dict[str, float] | None = None
             ) -> dict[str, float]:
    """Target/source test accuracy and every validator's score for ``model`` on ``dm``
    (:func:`evaluate_views` without the views)."""
    return evaluate_views(model, dm, samples, seed, accuracies)[0]


def evaluate_views(model, dm, samples: int = 2000, seed: int = 0, accuracies: dict[str, float] | None = None
                   ) -> tuple[dict[str, float], Views]:
    """Target/source test accuracy and every validator's score for ``model`` on ``dm``, and the
    :class:`Views` they were computed from (one forward pass of each sample, shared).

    ``accuracies`` may carry ``tgt_acc`` / ``src_acc`` already measured on the test sets (the
    validation loop's); those missing are computed here. Validators that need the source
    validation split are NaN when the run holds none out (``data.src_val=0``); one that fails on
    this model (e.g. k-means on constant features) is NaN with a warning, and training goes on.
    """
    was = model.training
    model.eval()
    try:
        out = {k: float(v) for k, v in (accuracies or {}).items()}
        out.setdefault("tgt_acc", accuracy(model, dm.split("tgt", "test")))
        out.setdefault("src_acc", accuracy(model, dm.split("src", "test")))
        views = Views(model, dm, samples, seed)
        for key, val in VALIDATORS.items():
            if val.needs_src_val and not views.has_src_val:
                out[key] = math.nan
                continue
            try:
                out[key] = float(val.fn(views))
            except (ValueError, RuntimeError, FloatingPointError, np.linalg.LinAlgError) as e:
                log.warning("validator %s failed on this model (%s: %s); its score is NaN", key, type(e).__name__, e)
                out[key] = math.nan
        return out, views
    finally:
        model.train(was)
