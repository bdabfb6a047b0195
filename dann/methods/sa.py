"""Subspace alignment (SA; Fernando et al., ICCV 2013), the paper's second baseline.

Training is the source-only method's (``L = CE(G_y(G_f(x_s)), y_s)``). After training, on
the penultimate-layer features of the network (the input of the label predictor's last
linear layer: for the digit/sign nets the last hidden fc layer, for the shallow net the
hidden sigmoid layer), each domain is z-scored with its own training statistics, and
(Fernando et al., Algorithm 1)::

    Ps, Pt = top-d PCA eigenvectors of source, target     (k x d, orthonormal columns)
    M      = Ps^T Pt                                      (aligns the source basis to Pt)
    Sa     = Xs Ps M,   Tt = Xt Pt

A linear classifier (multinomial logistic regression, L-BFGS, deterministic) is trained on
``(Sa, y_s)`` and applied to the target test set projected as ``Tt``. ``select`` says how
``d`` is chosen among ``sa_dims``:

- ``last``: no choice, ``d = sa_dim``.
- ``im``: label-free. The ``d`` whose classifier's predictions ``p`` on the unlabelled target
  training features maximise information maximisation, ``H(mean_i p_i) - mean_i H(p_i)``: the
  validator the tuning study chose on another pair (``experiments/tuning``). The best ``d`` on
  target test labels is reported beside it as ``sa/oracle_*``; it chooses nothing.
- ``oracle``: the best target *test* accuracy is kept (the paper's protocol, d in 2..60), and
  the run says so.

Note: with ``d = k`` (full dimension) ``Ps M = Ps Ps^T Pt = Pt``, so SA is the unaligned
classifier in a rotated basis: the alignment only acts when ``d < k``.

Test metrics: ``test/tgt_acc`` is SA's target accuracy; ``test/src_acc`` stays the
network's source accuracy; ``test/tgt_acc_nosa`` is the network's own target accuracy
(the source-only number); ``sa/src_acc`` is the aligned classifier on the source test
set; ``sa/dim`` is the ``d`` used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from dann.errors import ConfigError, check_choice
from dann.methods.base import DOMAINS
from dann.methods.source_only import SourceOnly
from dann.blas import one_blas_thread

log = logging.getLogger(__name__)

SELECTIONS = ("last", "im", "oracle")
LEGACY_SELECTIONS = {"last_step": "last"}  # the name older configs use for `last`


def information_maximisation(probs: np.ndarray) -> float:
    """``H(mean_i p_i) - mean_i H(p_i)`` of an (n, classes) probability matrix: the label-free
    ``im`` score of :mod:`dann.selection` (the selection layer sits above the methods')."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    mean = p.mean(0)
    return float(-(mean * np.log(mean)).sum() + (p * np.log(p)).sum(1).mean())


@dataclass
class Alignment:
    """Per-domain z-scoring and PCA bases, fitted once; sliced to any ``d <= max_dim``."""

    mu_s: np.ndarray
    sd_s: np.ndarray
    mu_t: np.ndarray
    sd_t: np.ndarray
    ps: np.ndarray  # (k, max_dim), columns by decreasing source variance
    pt: np.ndarray  # (k, max_dim), columns by decreasing target variance

    @property
    def max_dim(self) -> int:
        return self.ps.shape[1]

    def _check(self, d: int) -> None:
        if not 1 <= d <= self.max_dim:
            raise ValueError(f"subspace size d={d} is outside 1..{self.max_dim}")

    def source(self, x: np.ndarray, d: int) -> np.ndarray:
        """``Xs Ps M`` with ``M = Ps^T Pt`` (Fernando et al., eq. 3 and Algorithm 1)."""
        self._check(d)
        ps, pt = self.ps[:, :d], self.pt[:, :d]
        return ((x - self.mu_s) / self.sd_s) @ ps @ (ps.T @ pt)

    def target(self, x: np.ndarray, d: int) -> np.ndarray:
        """``Xt Pt``, with the target's training statistics only."""
        self._check(d)
        return ((x - self.mu_t) / self.sd_t) @ self.pt[:, :d]


def _stats(x: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(0)
    if not standardize:
        return mu, np.ones_like(mu)
    sd = x.std(0)
    return mu, np.where(sd > 1e-8, sd, 1.0)  # dead (constant) units: centre only


def pca_basis(z: np.ndarray, d: int) -> np.ndarray:
    """Top-``d`` eigenvectors (columns, by decreasing eigenvalue) of the covariance of centred ``z``."""
    cov = z.T @ z / max(len(z) - 1, 1)
    w, v = np.linalg.eigh(cov)  # ascending
    return np.ascontiguousarray(v[:, ::-1][:, :d])


def fit_alignment(xs: np.ndarray, xt: np.ndarray, max_dim: int, standardize: bool = True) -> Alignment:
    """Fit SA's statistics on unlabelled source and target training features (n x k)."""
    xs, xt = np.asarray(xs, np.float64), np.asarray(xt, np.float64)
    if xs.ndim != 2 or xt.ndim != 2 or xs.shape[1] != xt.shape[1]:
        raise ValueError(f"SA needs two (n, k) feature matrices of equal k; got {xs.shape} and {xt.shape}")
    d = min(max_dim, xs.shape[1])
    mu_s, sd_s = _stats(xs, standardize)
    mu_t, sd_t = _stats(xt, standardize)
    return Alignment(mu_s, sd_s, mu_t, sd_t, pca_basis((xs - mu_s) / sd_s, d), pca_basis((xt - mu_t) / sd_t, d))


@one_blas_thread
def fit_linear(z: np.ndarray, y: np.ndarray) -> LogisticRegression:
    """The linear classifier of SA: L2-regularised multinomial logistic regression (L-BFGS)."""
    return LogisticRegression(C=1.0, max_iter=2000).fit(z, y)


def subsample(n: int, n_max: int, seed: int) -> np.ndarray:
    """At most ``n_max`` indices of ``range(n)``, sorted, chosen by ``seed``."""
    if n <= n_max:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, n_max, replace=False))


class SA(SourceOnly):
    """Source-only training, then subspace alignment of penultimate features at test time.

    Args (beyond :class:`DAMethod`'s):
        sa_dim: subspace size ``d`` for ``select="last"`` (clipped to the feature size).
        select: ``"last"`` (``d = sa_dim``), ``"im"`` (the ``d`` of ``sa_dims`` that
            maximises IM on unlabelled target features) or ``"oracle"`` (best ``d`` of
            ``sa_dims`` on target test labels, the paper's protocol).
        sa_dims: candidate sizes for ``im`` and the oracle.
        sa_max_samples: at most this many training points per domain (seeded) for PCA and
            the classifier.
        sa_standardize: z-score each domain with its own training statistics first.
        sa_seed: seed of the subsample.
    """

    def __init__(self, *args: Any, sa_dim: int = 50, select: str = "last", sa_dims: Sequence[int] | None = None,
                 sa_max_samples: int = 20000, sa_standardize: bool = True, sa_seed: int = 0, **kwargs: Any):
        select = LEGACY_SELECTIONS.get(select, select)
        self.check_options(sa_dim=sa_dim, select=select, sa_dims=sa_dims)
        super().__init__(*args, **kwargs)
        self.sa_dim, self.select = int(sa_dim), select
        self.sa_dims = [int(d) for d in sa_dims] if sa_dims else []
        self.sa_max_samples, self.sa_standardize, self.sa_seed = int(sa_max_samples), bool(sa_standardize), sa_seed
        #: after testing: {"dim", "tgt_acc", "src_acc", "by_dim": {d: target acc}}, and for ``im``
        #: "im_by_dim" {d: IM score} and "oracle_dim"
        self.sa_result: dict[str, Any] | None = None

    @classmethod
    def check_options(cls, sa_dim: int, select: str, sa_dims: Sequence[int] | None, **_: Any) -> None:
        select = LEGACY_SELECTIONS.get(select, select)
        check_choice("method.select", select, SELECTIONS)
        if select in ("im", "oracle") and not sa_dims:
            raise ConfigError(f"method.select={select} needs method.sa_dims, the list of subspace sizes to try")
        if int(sa_dim) < 1 or any(int(d) < 1 for d in (sa_dims or [])):
            raise ConfigError(f"subspace sizes must be >= 1; got method.sa_dim={sa_dim}, method.sa_dims={sa_dims}")

    def record_extras(self) -> dict[str, Any]:
        """Fields for the results record: the model-selection rule (and SA's ``d``)."""
        extras: dict[str, Any] = {"selection": self.select}
        if self.sa_result is not None:
            extras["sa_dim"] = self.sa_result["dim"]
        return extras

    # -- features --------------------------------------------------------------------
    def _last_linear(self) -> nn.Linear:
        lin = [m for m in self.classifier.modules() if isinstance(m, nn.Linear)]
        if not lin:
            raise TypeError("SA takes the input of the label predictor's last nn.Linear; the classifier has none")
        return lin[-1]

    def penultimate(self, split, idx: np.ndarray | None = None) -> np.ndarray:
        """Input of the label predictor's last linear layer for ``split`` (rows ``idx``), eval mode."""
        return self.embed(split, idx, layer=self._last_linear())

    # -- SA at test time -------------------------------------------------------------
    def fit_sa(self) -> dict[str, Any]:
        """Compute SA's target accuracy with the current network; stored in ``self.sa_result``."""
        src_train, tgt_train = self.domain_split("src", "train"), self.domain_split("tgt", "train")
        src_test, tgt_test = self.domain_split("src", "test"), self.domain_split("tgt", "test")
        i_s = subsample(len(src_train), self.sa_max_samples, self.sa_seed)
        i_t = subsample(len(tgt_train), self.sa_max_samples, self.sa_seed + 1)
        fs, ft = self.penultimate(src_train, i_s), self.penultimate(tgt_train, i_t)
        ys = src_train.y[torch.as_tensor(i_s, device=src_train.y.device)].cpu().numpy()
        k = fs.shape[1]
        cap = min(k, len(fs) - 1, len(ft) - 1)
        dims = self.sa_dims if self.select in ("im", "oracle") else [self.sa_dim]
        if any(d > cap for d in dims):
            log.warning("SA: subspace sizes %s clipped to %d (feature size %d)", dims, cap, k)
        dims = sorted({min(d, cap) for d in dims})
        align = fit_alignment(fs, ft, max(dims), self.sa_standardize)
        f_src_test, y_src_test = self.penultimate(src_test), src_test.y.cpu().numpy()
        f_tgt_test = self.penultimate(tgt_test)
        by_dim, im_by_dim, src_by_dim = {}, {}, {}
        for d in dims:
            clf = fit_linear(align.source(fs, d), ys)
            if self.select == "im":  # unlabelled target training features only
                im_by_dim[d] = information_maximisation(clf.predict_proba(align.target(ft, d)))
            # Target labels are read here only to report the accuracy (and, for the oracle, to pick d).
            by_dim[d] = float(clf.score(align.target(f_tgt_test, d), tgt_test.y.cpu().numpy()))
            src_by_dim[d] = float(clf.score(align.source(f_src_test, d), y_src_test))
        oracle_dim = max(dims, key=lambda d: by_dim[d])  # the first of equals, as before
        d = max(dims, key=lambda d: im_by_dim[d]) if self.select == "im" else oracle_dim
        self.sa_result = {"dim": d, "tgt_acc": by_dim[d], "src_acc": src_by_dim[d], "by_dim": by_dim,
                          "feature_dim": k, "im_by_dim": im_by_dim, "oracle_dim": oracle_dim}
        return self.sa_result

    def on_test_start(self) -> None:
        self.fit_sa()

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if DOMAINS[dataloader_idx] != "tgt":
            return super().test_step(batch, batch_idx, dataloader_idx)
        x, y = batch  # the network's own (source-only) target accuracy, for comparison
        m = self.metrics["test_tgt"]
        m.update(self(x), y)
        self.log("test/tgt_acc_nosa", m, on_step=False, on_epoch=True, add_dataloader_idx=False)

    def on_test_epoch_end(self) -> None:
        r = self.sa_result
        logs = {"test/tgt_acc": r["tgt_acc"], "sa/src_acc": r["src_acc"], "sa/dim": float(r["dim"])}
        if self.select == "im":  # the label-free pick's reference, named oracle: it chose nothing
            logs.update({"sa/oracle_tgt_acc": r["by_dim"][r["oracle_dim"]], "sa/oracle_dim": float(r["oracle_dim"])})
        self.log_dict(logs)
