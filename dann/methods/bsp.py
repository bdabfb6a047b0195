"""BSP, batch spectral penalization (Chen et al., ICML 2019), a term added to DANN or CDAN:

``L = L_DANN or L_CDAN + beta sum_{i=1}^{k} (sigma_{s,i}^2 + sigma_{t,i}^2)``,

where ``sigma_{s,i}`` (``sigma_{t,i}``) is the ``i``-th largest singular value of the batch's
source (target) feature matrix ``F_s = G_f(x_s)`` (``n x d``): penalising the few largest
singular values keeps the other eigen-directions of the features, which adversarial alignment
would otherwise let the largest ones dominate, and so their discriminability. The singular
values are differentiable (``torch.linalg.svdvals``). Target labels are never read.
"""

from __future__ import annotations

from typing import Any

import torch

from dann.errors import ConfigError
from dann.methods.cdan import CDAN
from dann.methods.dann import DANN


def singular_values(m: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.svdvals(m)``, all NaN where ``m`` holds a non-finite value (LAPACK would raise
    instead, and the finite-loss guard, which names the step and the term, would not see it; no
    host sync: a finite ``m`` gets ``+ 0``)."""
    return torch.linalg.svdvals(torch.nan_to_num(m)) + m.abs().amax() * 0  # NaN or inf propagate; nothing overflows


def spectral_penalty(f: torch.Tensor, k: int = 1) -> torch.Tensor:
    """``sum_{i<=k} sigma_i(f)^2``, the ``k`` largest singular values of the rows of ``f``."""
    return singular_values(f.flatten(1))[:k].pow(2).sum()


def check_bsp(bsp_weight: float, bsp_k: int) -> None:
    if bsp_weight < 0:
        raise ConfigError(f"method.bsp_weight={bsp_weight!r} is invalid: expected a weight >= 0 (the paper: 1e-4)")
    if bsp_k < 1:
        raise ConfigError(f"method.bsp_k={bsp_k!r} is invalid: expected a number of singular values >= 1 (the paper: 1)")


class _BSP:
    """The term BSP adds to its base method's, on the features the base computes."""

    def losses(self, batch):
        f = self.features(torch.cat([batch["src_x"], batch["tgt_x"]]))
        terms = self.terms(f, batch)
        ns, h = len(batch["src_x"]), self.hparams
        terms["bsp"] = h.bsp_weight * (spectral_penalty(f[:ns], h.bsp_k) + spectral_penalty(f[ns:], h.bsp_k))
        return terms


class BSPDANN(_BSP, DANN):
    """DANN + BSP. Args (beyond DANN's): ``bsp_weight`` (beta), ``bsp_k`` (k)."""

    def __init__(self, *args: Any, bsp_weight: float = 1e-4, bsp_k: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)

    @classmethod
    def check_options(cls, bsp_weight: float, bsp_k: int, **options: Any) -> None:
        check_bsp(bsp_weight, bsp_k)
        DANN.check_options(**options)


class BSPCDAN(_BSP, CDAN):
    """CDAN (or CDAN+E with ``entropy``) + BSP. Args (beyond CDAN's): ``bsp_weight``, ``bsp_k``."""

    def __init__(self, *args: Any, bsp_weight: float = 1e-4, bsp_k: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)

    @classmethod
    def check_options(cls, bsp_weight: float, bsp_k: int, **options: Any) -> None:
        check_bsp(bsp_weight, bsp_k)
        CDAN.check_options(**options)
