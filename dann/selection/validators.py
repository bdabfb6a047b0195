"""Label-free validators: one function each, registered by :func:`validator`.

At every evaluation the probe computes each validator on :class:`Views` of the current model
(its predictions and features on a fixed unlabelled target sample, the source validation
split, a source training sample) and writes the values to ``evaluations.jsonl`` under the
validator's ``score`` key. Each validator with a ``rule`` name is also a model-selection
rule (``selection=NAME``, ``dann-table --select NAME``): the evaluation with the best score.

To add one, write a function in this file (or any module imported before the run)::

    @validator("my_rule", higher_is_better=True, doc="what it prefers (its paper)")
    def my_rule(v: Views) -> float:
        return float(v.tgt_probs.max(1).values.mean())
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dann.blas import one_blas_thread

SND_TEMPERATURE = 0.05


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
    def _tgt(self) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.dm.split("tgt", "train")
        return forward(self.model, t, t.sample(self.samples, self.seed))

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
        """Features of a source *training* sample."""
        s = self.dm.split("src", "train")
        return forward(self.model, s, s.sample(self.samples, self.seed + 1))[0]

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


# -- helpers ------------------------------------------------------------------------------------
def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


def _standardised(*xs: np.ndarray) -> list[np.ndarray]:
    """z-score with the statistics of all of ``xs`` together (features of different scales)."""
    allx = np.concatenate(xs)
    mu, sd = allx.mean(0), allx.std(0) + 1e-6
    return [(x - mu) / sd for x in xs]


@one_blas_thread
def density_ratio(f_src: np.ndarray, f_tgt: np.ndarray, f_eval: np.ndarray, seed: int = 0) -> np.ndarray:
    """``w(x) = p_t(x) / p_s(x)`` at ``f_eval``, from a logistic domain classifier (You et al. 2019)."""
    from sklearn.linear_model import LogisticRegression

    fs, ft, fe = _standardised(f_src, f_tgt, f_eval)
    clf = LogisticRegression(max_iter=1000, C=1.0, random_state=seed).fit(
        np.concatenate([fs, ft]), np.r_[np.zeros(len(fs)), np.ones(len(ft))])
    p_t = clf.predict_proba(fe)[:, 1].clip(1e-6, 1 - 1e-6)
    return (len(fs) / len(ft)) * p_t / (1 - p_t)


def dev_risk(val_losses: np.ndarray, weights: np.ndarray) -> float:
    """Deep Embedded Validation risk: importance-weighted loss with its control variate."""
    wl = weights * val_losses
    var = weights.var(ddof=1) if len(weights) > 1 else 0.0
    eta = -np.cov(wl, weights, ddof=1)[0, 1] / var if var > 0 else 0.0
    return float(wl.mean() + eta * weights.mean() - eta)


@one_blas_thread
def reverse_validation(f_tgt: np.ndarray, pseudo: np.ndarray, f_src_val: np.ndarray, y_src_val: np.ndarray,
                       seed: int = 0) -> float:
    """Accuracy on the source validation split of a classifier trained on pseudo-labelled target."""
    from sklearn.linear_model import LogisticRegression

    classes = np.unique(pseudo)
    if len(classes) < 2:  # the model predicts one class everywhere: so does the reverse classifier
        return float((y_src_val == classes[0]).mean())
    ft, fv = _standardised(f_tgt, f_src_val)
    clf = LogisticRegression(max_iter=500, C=1.0, random_state=seed).fit(ft, pseudo)
    return float((clf.predict(fv) == y_src_val).mean())


def entropy_score(probs: torch.Tensor) -> float:
    """Mean entropy of the predictions (nats); lower = more confident."""
    return float(_entropy(probs).mean())


def im_score(probs: torch.Tensor) -> float:
    """Information maximisation: entropy of the mean prediction minus mean entropy (higher is better)."""
    return float(_entropy(probs.mean(0)) - _entropy(probs).mean())


def snd_score(probs: torch.Tensor, temperature: float = SND_TEMPERATURE) -> float:
    """Soft neighbourhood density (Saito et al. 2021): higher means denser target clusters."""
    z = F.normalize(probs.float(), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-float("inf"))
    return float(_entropy(torch.softmax(sim / temperature, dim=1)).mean())


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
    w = density_ratio(v.src_features.numpy(), v.tgt_features.numpy(), v.val_features.numpy(), v.seed)
    return dev_risk(v.val_losses, w)


@validator("entropy", higher_is_better=False, doc="lowest mean entropy of target predictions")
def entropy(v: Views) -> float:
    return entropy_score(v.tgt_probs)


@validator("im", doc="highest information maximisation of target predictions")
def im(v: Views) -> float:
    return im_score(v.tgt_probs)


@validator("snd", doc="highest soft neighbourhood density (Saito et al. 2021)")
def snd(v: Views) -> float:
    return snd_score(v.tgt_probs)


# -- scoring a model --------------------------------------------------------------------------------
def accuracy(model, split) -> float:
    """Top-1 accuracy of ``model`` (a :class:`dann.methods.DAMethod`) on a whole split (NaN if empty)."""
    if len(split) == 0:
        return float("nan")
    _, logits = forward(model, split)
    return float((logits.argmax(1) == split.y.cpu()).float().mean())


def evaluate(model, dm, samples: int = 2000, seed: int = 0, accuracies: dict[str, float] | None = None
             ) -> dict[str, float]:
    """Target/source test accuracy and every validator's score for ``model`` on ``dm``.

    ``accuracies`` may carry ``tgt_acc`` / ``src_acc`` already measured on the test sets (the
    validation loop's); those missing are computed here. Validators that need the source
    validation split are NaN when the run holds none out (``data.src_val=0``).
    """
    was = model.training
    model.eval()
    try:
        out = {k: float(v) for k, v in (accuracies or {}).items()}
        out.setdefault("tgt_acc", accuracy(model, dm.split("tgt", "test")))
        out.setdefault("src_acc", accuracy(model, dm.split("src", "test")))
        views = Views(model, dm, samples, seed)
        for key, val in VALIDATORS.items():
            out[key] = math.nan if val.needs_src_val and not views.has_src_val else float(val.fn(views))
        return out
    finally:
        model.train(was)
