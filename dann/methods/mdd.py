"""MDD, margin disparity discrepancy (Zhang et al., ICML 2019: the algorithm's minimax problem
``min_{f, psi} E(P) + eta D_gamma(P, Q)``, ``max_{f'} D_gamma(P, Q)`` with its cross-entropy losses):

``L = CE(f(psi(x_s)), y_s) + gamma * CE(f'(R(psi(x_s))), h_s) - mean_t log(1 - softmax(f'(R(psi(x_t))))_{h_t})``,

where ``f`` is the label predictor, ``f'`` an auxiliary (adversarial) classifier of the same
architecture, ``h = argmax f(psi(x))`` (no gradient) and ``R`` the gradient-reversal layer.
``f'`` minimises the last two terms (agree with ``f`` on the source, disagree on the target: it
estimates ``D_gamma``); through ``R`` the features ``psi`` receive their gradient reversed and
scaled by ``eta * lambda_p``: they minimise the discrepancy. The paper's margin factor
``gamma = exp(rho)`` is the option ``margin`` (the option ``gamma`` is the constant of DANN's
``lambda_p``, as for DANN and CDAN). ``f`` itself gets no adversarial gradient (``h`` is an argmax). The target term uses the
paper's modified loss ``log(1 - sigma)`` instead of ``-log sigma``, which saturates less.

``eta`` scaling and warm-up: the authors' code multiplies the reversed gradient by
``0.1 * (2 / (1 + exp(-i / 1000)) - 1)`` (a 0.1 ceiling reached over ~5k iterations); here the
ceiling ``eta = 0.1`` is kept and the warm-up is DANN's ``lambda_p`` over training progress, as
for the other adversarial methods. Target labels are never read.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dann.errors import ConfigError
from dann.methods.base import DAMethod
from dann.methods.grl import grad_reverse
from dann.methods.schedules import adaptation_factor


def log_one_minus_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``log(1 - softmax(logits)_index)`` per row, in log space: ``logsumexp`` of the other logits
    minus ``logsumexp`` of all. Exact where ``1 - p`` rounds to 0 in float32, and its gradient in
    the logits stays bounded, as cross-entropy's does; a clamp on ``p`` would instead cut the
    gradient exactly when the adversary is confidently wrong and must recover."""
    others = logits.scatter(1, index.unsqueeze(1), float("-inf"))
    return torch.logsumexp(others, 1) - torch.logsumexp(logits, 1)


def margin_disparity(adv_s: torch.Tensor, adv_t: torch.Tensor, logits_s: torch.Tensor, logits_t: torch.Tensor,
                     margin: float) -> torch.Tensor:
    """The adversary's loss ``gamma * CE(adv_s, h_s) - mean log(1 - softmax(adv_t)_{h_t})``,
    with ``h = argmax logits`` (the main classifier's predictions)."""
    h_s, h_t = logits_s.argmax(1).detach(), logits_t.argmax(1).detach()
    return margin * F.cross_entropy(adv_s, h_s) - log_one_minus_softmax(adv_t, h_t).mean()


class MDD(DAMethod):
    """Args (beyond :class:`DAMethod`'s):
        margin: ``gamma = exp(rho)``, the margin factor (4).
        eta: the trade-off ``eta``: the ceiling of the reversed gradient's scale (0.1).
        gamma: the constant of DANN's warm-up ``lambda_p`` (10).
    """

    def __init__(self, *args: Any, margin: float = 4.0, eta: float = 0.1, gamma: float = 10.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: the auxiliary classifier f' (called `discriminator`: it is the method's adversary)
        self.discriminator = self._nets.new_classifier(self.num_classes)

    @classmethod
    def check_options(cls, margin: float, eta: float, gamma: float, **_: Any) -> None:
        if margin <= 0:
            raise ConfigError(f"method.margin={margin!r} is invalid: expected a margin factor > 0 (the paper: 2-4)")
        if eta < 0 or gamma < 0:
            raise ConfigError(f"method.eta/method.gamma={(eta, gamma)!r} are invalid: expected values >= 0")

    @property
    def coeff(self) -> float:
        """The scale of the reversed gradient at the features: ``eta * lambda_p``."""
        return self.hparams.eta * adaptation_factor(self.p, self.hparams.gamma)

    def losses(self, batch):
        xs, xt = batch["src_x"], batch["tgt_x"]
        ns = len(xs)
        f = self.features(torch.cat([xs, xt]))
        logits = self.classifier(f)
        adv = self.discriminator(grad_reverse(f, self.coeff))
        mdd = margin_disparity(adv[:ns], adv[ns:], logits[:ns], logits[ns:], self.hparams.margin)
        return {"cls": F.cross_entropy(logits[:ns], batch["src_y"]), "mdd": mdd}

    def logs(self):
        return {"lambda": self.coeff}
