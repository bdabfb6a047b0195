"""JAN, joint adaptation network (Long et al., ICML 2017):

``L = CE(G_y(G_f(x_s)), y_s) + lambda JMMD^2((f_s, g_s), (f_t, g_t))``,

the joint maximum mean discrepancy between source and target over two layers, the features
``f = G_f(x)`` and the class probabilities ``g = softmax(G_y(f))``: its kernel is the product of
one kernel per layer, ``k((f, g), (f', g')) = k_f(f, f') k_g(g, g')``, with ``k_f`` DAN's
multi-kernel (the mean of Gaussian kernels of bandwidth ``c_u s^2``, ``s^2`` the batch's mean
squared distance; :mod:`dann.methods.dan`) and ``k_g`` one Gaussian kernel of fixed bandwidth,
``exp(-||g - g'||^2 / (2 sigma^2))``. Estimators as DAN's: ``linear`` (the paper's linear-time
unbiased estimate over quad-tuples) or ``quadratic`` (the all-pairs U-statistic). The gradient
reaches both layers, and through ``g`` the label predictor. Target labels are never read.

Choices: the paper's layers are AlexNet's/ResNet's fc7 (or pool5) and fc8; here the feature
extractor's output and the label predictor's probabilities. The multipliers ``c_u`` and
``sigma`` follow the authors' and TLlib's settings (see ``conf/method/jan.yaml``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from dann.errors import ConfigError, check_choice
from dann.methods.base import DAMethod
from dann.methods.dan import ESTIMATORS, bandwidth, check_multipliers, kernel, matched_kernel


def jmmd(layers_s: Sequence[torch.Tensor], layers_t: Sequence[torch.Tensor], bandwidths: Sequence[torch.Tensor],
         multipliers: Sequence[Sequence[float]], estimator: str = "linear") -> torch.Tensor:
    """The squared joint MMD of equal-sized samples, one (source, target) pair of tensors per
    layer, each layer's kernel :func:`~dann.methods.dan.kernel` with bandwidth ``s2`` and
    multipliers; the joint kernel is their product."""
    zs = [z.flatten(1) for z in layers_s]
    zt = [z.flatten(1) for z in layers_t]
    n = len(zs[0])
    if any(len(z) != n for z in (*zs, *zt)):
        raise ValueError("JMMD needs equal source and target batches in every layer")

    def joint(k, a, b):
        return math.prod(k(x, y, s2, m) for x, y, s2, m in zip(a, b, bandwidths, multipliers))

    if estimator == "linear":
        h = n // 2 * 2  # an odd last row has no partner
        s1, s2_ = [z[0:h:2] for z in zs], [z[1:h:2] for z in zs]
        t1, t2 = [z[0:h:2] for z in zt], [z[1:h:2] for z in zt]
        g = (joint(matched_kernel, s1, s2_) + joint(matched_kernel, t1, t2)
             - joint(matched_kernel, s1, t2) - joint(matched_kernel, s2_, t1))
        return g.mean()
    if estimator == "quadratic":
        kss, ktt, kst = joint(kernel, zs, zs), joint(kernel, zt, zt), joint(kernel, zs, zt)
        off = n * (n - 1)
        return (kss.sum() - kss.diagonal().sum()) / off + (ktt.sum() - ktt.diagonal().sum()) / off - 2 * kst.mean()
    raise ValueError(f"unknown JMMD estimator {estimator!r}; allowed: {', '.join(ESTIMATORS)}")


class JAN(DAMethod):
    """Args (beyond :class:`DAMethod`'s): ``trade_off`` (lambda), ``multipliers`` (``c_u`` of the
    feature kernels), ``sigma`` (the probability kernel's bandwidth), ``estimator``."""

    def __init__(self, *args: Any, trade_off: float = 1.0, multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                 sigma: float = 0.92, estimator: str = "linear", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.multipliers = [float(c) for c in multipliers]

    @classmethod
    def check_options(cls, trade_off: float, multipliers: Sequence[float], sigma: float, estimator: str,
                      **_: Any) -> None:
        if trade_off < 0:
            raise ConfigError(f"method.trade_off={trade_off!r} is invalid: expected a value >= 0")
        check_multipliers(multipliers)
        if sigma <= 0:
            raise ConfigError(f"method.sigma={sigma!r} is invalid: expected a bandwidth > 0")
        check_choice("method.estimator", estimator, ESTIMATORS)

    def losses(self, batch):
        h = self.hparams
        f, logits, ns = self.joint_pass(batch)
        g = torch.softmax(logits, 1)
        fs = f.flatten(1)
        s2_f = bandwidth(fs).clamp_min(1e-12)  # pooled source and target, no gradient
        s2_g = g.new_tensor(2 * h.sigma ** 2)  # k_g = exp(-d^2 / (2 sigma^2)): multiplier 1
        d = jmmd([fs[:ns], g[:ns]], [fs[ns:], g[ns:]], [s2_f, s2_g], [self.multipliers, [1.0]], h.estimator)
        return {"cls": F.cross_entropy(logits[:ns], batch["src_y"]), "jmmd": h.trade_off * d}
