"""VADA, virtual adversarial domain adaptation (Shu et al., ICLR 2018: the VADA objective, which
adds the cluster-assumption terms to domain-adversarial training):

``L = CE(h(x_s), y_s) + BCE(D(R_{lambda_d}(G_f(x))), d) + lambda_s L_v(x_s) + lambda_t (H(h(x_t)) + L_v(x_t))``,

with ``h = G_y(G_f(.))`` the classifier's probabilities, DANN's domain loss (the domain classifier
``D`` learns at full strength; the gradient-reversal layer ``R`` scales what reaches the features
by ``lambda_d``, the paper's domain weight, constant as in the authors' code), the conditional
entropy ``H(h(x)) = -mean_x sum_c h_c(x) log h_c(x)`` on the target (the cluster assumption) and
virtual adversarial training (Miyato et al., TPAMI 2018)

``L_v(x) = mean_x KL(h(x) || h(x + r_adv(x)))``,  ``r_adv = radius * g / ||g||``,
``g = grad_r KL(h(x) || h(x + r)) at r = xi * u / ||u||``, ``u ~ N(0, I)``,

the one-step power-iteration estimate of the direction in which the prediction changes most
(``h(x)`` is held fixed: no gradient flows through it). Norms are per example, over all input
dimensions. Target labels are never read.

Deviations from the paper, for a comparison of methods on one network and recipe: the paper's
network for MNIST -> MNIST-M is its own instance-normalised conv net, trained with Adam and
evaluated through an exponential moving average of its weights; here it is the pair's network,
the shared SGD schedule, and the weights of the last step.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from dann.errors import ConfigError
from dann.methods.base import DAMethod
from dann.methods.grl import grad_reverse


def conditional_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``-mean_i sum_c p_ic log p_ic`` with ``p = softmax(logits)``."""
    return -(torch.softmax(logits, 1) * torch.log_softmax(logits, 1)).sum(1).mean()


def kl_rows(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(p) || softmax(q))`` per row."""
    logp = torch.log_softmax(p_logits, 1)
    return (logp.exp() * (logp - torch.log_softmax(q_logits, 1))).sum(1)


def unit(v: torch.Tensor) -> torch.Tensor:
    """Each example of ``v`` divided by its L2 norm over all its dimensions (0 stays 0)."""
    norm = v.flatten(1).norm(dim=1).clamp_min(1e-12)
    return v / norm.view(-1, *([1] * (v.dim() - 1)))


def vat_perturbation(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, logits: torch.Tensor,
                     radius: float, xi: float) -> torch.Tensor:
    """``r_adv`` for each example of ``x`` (no gradient), given its clean ``logits``; the random
    start ``u`` is drawn from torch's global generator of ``x``'s device."""
    r = (xi * unit(torch.randn_like(x))).requires_grad_(True)
    with torch.enable_grad():
        # a sum over the examples: each example's gradient is its own (no batch norm here)
        div = kl_rows(logits.detach(), net(x + r)).sum()
        (g,) = torch.autograd.grad(div, r)
    return radius * unit(g.detach())


def vat_rows(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, logits: torch.Tensor,
             radius: float, xi: float) -> torch.Tensor:
    """``KL(h(x) || h(x + r_adv))`` per example: its gradient reaches the network only through
    the perturbed prediction."""
    return kl_rows(logits.detach(), net(x + vat_perturbation(net, x, logits, radius, xi)))


def check_vat(radius: float, xi: float, **weights: float) -> None:
    if radius <= 0 or xi <= 0:
        raise ConfigError(f"method.radius/method.xi={(radius, xi)!r} are invalid: expected values > 0")
    for k, v in weights.items():
        if v < 0:
            raise ConfigError(f"method.{k}={v!r} is invalid: expected a weight >= 0")


class VADA(DAMethod):
    """Args (beyond :class:`DAMethod`'s):
        domain_weight: ``lambda_d``, the reversal's scale at the features.
        src_vat_weight: ``lambda_s``, VAT on the source.
        tgt_weight: ``lambda_t``, conditional entropy and VAT on the target.
        radius: the VAT perturbation's L2 norm (``epsilon``), in input units.
        xi: the norm of the random start of the power iteration.
    """

    def __init__(self, *args: Any, domain_weight: float = 0.01, src_vat_weight: float = 1.0, tgt_weight: float = 0.01,
                 radius: float = 1.75, xi: float = 0.01, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.discriminator = self._nets.discriminator

    @classmethod
    def check_options(cls, domain_weight: float, src_vat_weight: float, tgt_weight: float, radius: float,
                      xi: float, **_: Any) -> None:
        check_vat(radius, xi, domain_weight=domain_weight, src_vat_weight=src_vat_weight, tgt_weight=tgt_weight)

    def losses(self, batch):
        h = self.hparams
        xs, xt = batch["src_x"], batch["tgt_x"]
        ns = len(xs)
        x = torch.cat([xs, xt])
        f = self.features(x)
        logits = self.classifier(f)
        cls = F.cross_entropy(logits[:ns], batch["src_y"])
        d = self.discriminator(grad_reverse(f, h.domain_weight)).squeeze(1)
        dom_y = torch.cat([d.new_zeros(ns), d.new_ones(len(xt))])  # 0 = source, 1 = target
        self._dom = (d.detach(), dom_y)
        # VAT only where it is weighted (lambda_s = 0 in some of the paper's settings): one pass
        # for both domains when both are, the network has no batch norm
        lo = 0 if h.src_vat_weight > 0 else ns
        vat = vat_rows(self, x[lo:], logits[lo:], h.radius, h.xi)
        vat_s = vat[:ns].mean() if lo == 0 else logits.new_zeros(())
        return {"cls": cls, "dom": F.binary_cross_entropy_with_logits(d, dom_y),
                "ent": h.tgt_weight * conditional_entropy(logits[ns:]),
                "vat_src": h.src_vat_weight * vat_s, "vat_tgt": h.tgt_weight * vat[ns - lo:].mean()}

    def logs(self):
        d, y = self._dom
        return {"dom_acc": ((d > 0).float() == y).float().mean()}
