"""DAN, the deep adaptation network (Long et al., ICML 2015, eq. 4):

``L = CE(G_y(G_f(x_s)), y_s) + lambda * d_k^2(G_f(x_s), G_f(x_t))``,  ``k = (1/m) sum_u k_u``,

the squared multi-kernel MMD (eq. 1) between the source and target features, with a family of
``m`` Gaussian kernels ``k_u(a, b) = exp(-||a - b||^2 / (c_u * s^2))`` (eq. 2, equal weights
``beta_u = 1/m``). ``s^2`` is the mean squared distance between the distinct pairs of the
batch's features (source and target pooled, no gradient), ``c_u`` the bandwidth multipliers.

Estimators of ``d_k^2`` (``estimator``):

* ``linear`` (the paper's, Sec. 3.2, unnumbered): the batch split into ``n/2`` quad-tuples
  ``(s_{2i-1}, s_{2i}, t_{2i-1}, t_{2i})``, ``d_k^2 = (2/n) sum_i g_k(z_i)`` with
  ``g_k = k(s_{2i-1}, s_{2i}) + k(t_{2i-1}, t_{2i}) - k(s_{2i-1}, t_{2i}) - k(s_{2i}, t_{2i-1})``:
  unbiased, linear in ``n``; it can be negative on a batch.
* ``quadratic``: the unbiased U-statistic over all pairs (Gretton et al., JMLR 2012, Lemma 6):
  within-domain means without the diagonal, minus twice the cross mean.

Deviations from the paper, for a comparison of methods on one network: the MMD is taken on
the feature extractor's output (``layer=features``; ``hidden`` is the label predictor's last
hidden layer, the paper's fc7; ``logits`` its output, the paper's fc8) rather than on the three
last fc layers together, and the kernel weights ``beta`` are
equal instead of being fitted by the paper's quadratic program (eq. 7-8). Target labels are
never read.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from dann.errors import ConfigError, check_choice
from dann.methods.base import DAMethod

ESTIMATORS = ("linear", "quadratic")
LAYERS = ("features", "hidden", "logits")


def bandwidth(z: torch.Tensor) -> torch.Tensor:
    """``s^2``: the mean squared distance between distinct rows of ``z``, without gradient
    (a bandwidth that followed the features would let them shrink the MMD by spreading out)."""
    with torch.no_grad():
        d2 = torch.cdist(z, z).pow(2)
        n = len(z)
        return d2.sum() / max(n * (n - 1), 1)


def kernel(a: torch.Tensor, b: torch.Tensor, s2: torch.Tensor, multipliers: Sequence[float]) -> torch.Tensor:
    """``(1/m) sum_u exp(-||a_i - b_j||^2 / (c_u s^2))`` for every pair of rows (i, j)."""
    d2 = (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)
    return torch.stack([torch.exp(-d2 / (c * s2)) for c in multipliers]).mean(0)


def matched_kernel(a: torch.Tensor, b: torch.Tensor, s2: torch.Tensor, multipliers: Sequence[float]
                   ) -> torch.Tensor:
    """:func:`kernel` of matched rows only, ``k(a_i, b_i)`` for every ``i``: O(n)."""
    d2 = (a - b).pow(2).sum(-1)
    return torch.stack([torch.exp(-d2 / (c * s2)) for c in multipliers]).mean(0)


def mk_mmd(zs: torch.Tensor, zt: torch.Tensor, multipliers: Sequence[float], estimator: str = "linear"
           ) -> torch.Tensor:
    """The squared MK-MMD between two samples of equal size (see the module's docstring)."""
    if zs.shape != zt.shape:
        raise ValueError(f"MK-MMD needs equal source and target batches, got {tuple(zs.shape)} and {tuple(zt.shape)}")
    zs, zt = zs.flatten(1), zt.flatten(1)
    s2 = bandwidth(torch.cat([zs, zt])).clamp_min(1e-12)
    n = len(zs)
    if estimator == "linear":
        h = n // 2 * 2  # an odd last row has no partner
        s1, s2_, t1, t2 = zs[0:h:2], zs[1:h:2], zt[0:h:2], zt[1:h:2]

        def k(a, b):
            return matched_kernel(a, b, s2, multipliers)

        g = k(s1, s2_) + k(t1, t2) - k(s1, t2) - k(s2_, t1)
        return g.mean()  # (2/n) sum over n/2 quad-tuples
    if estimator == "quadratic":
        kss, ktt, kst = kernel(zs, zs, s2, multipliers), kernel(zt, zt, s2, multipliers), kernel(zs, zt, s2, multipliers)
        off = n * (n - 1)
        return (kss.sum() - kss.diagonal().sum()) / off + (ktt.sum() - ktt.diagonal().sum()) / off - 2 * kst.mean()
    raise ValueError(f"unknown MK-MMD estimator {estimator!r}; allowed: {', '.join(ESTIMATORS)}")


def check_multipliers(multipliers: Sequence[float]) -> None:
    """The kernels' bandwidth multipliers ``c_u`` (DAN, JAN): a non-empty list of numbers > 0."""
    if not multipliers or any(not isinstance(c, (int, float)) or c <= 0 for c in multipliers):
        raise ConfigError(f"method.multipliers={list(multipliers)!r} is invalid: expected a non-empty list of "
                          f"bandwidth multipliers > 0 (e.g. [0.25, 0.5, 1, 2, 4])")


class DAN(DAMethod):
    """Args (beyond :class:`DAMethod`'s): ``trade_off`` (lambda), ``multipliers`` (``c_u``),
    ``estimator`` (``linear`` | ``quadratic``), ``layer`` (``features`` | ``hidden`` | ``logits``)."""

    def __init__(self, *args: Any, trade_off: float = 1.0, multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                 estimator: str = "linear", layer: str = "features", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.multipliers = [float(c) for c in multipliers]

    @classmethod
    def check_options(cls, trade_off: float, multipliers: Sequence[float], estimator: str, layer: str,
                      **_: Any) -> None:
        if trade_off < 0:
            raise ConfigError(f"method.trade_off={trade_off!r} is invalid: expected a value >= 0")
        check_multipliers(multipliers)
        check_choice("method.estimator", estimator, ESTIMATORS)
        check_choice("method.layer", layer, LAYERS)

    def losses(self, batch):
        z, logits, ns = self.aligned_pass(batch, self.hparams.layer)
        mmd = mk_mmd(z[:ns], z[ns:], self.multipliers, self.hparams.estimator)
        return {"cls": F.cross_entropy(logits[:ns], batch["src_y"]), "mmd": self.hparams.trade_off * mmd}
