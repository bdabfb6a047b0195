"""Gradient reversal layer (Ganin et al. 2016, section 4.2 / eq. 13-14).

Forward is the identity; backward multiplies the incoming gradient by ``-lambda``.
The layer is stateless: ``lambda`` is passed in at every call, so there is no hidden
schedule counter to lose when a run is checkpointed and resumed.
"""

from __future__ import annotations

import torch


class GradReverse(torch.autograd.Function):
    """``R_lambda(x) = x``; ``dR/dx = -lambda I``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float | torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        return -ctx.lambd * grad_output, None


def grad_reverse(x: torch.Tensor, lambd: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Identity on ``x`` whose backward pass scales the gradient by ``-lambd``."""
    return GradReverse.apply(x, lambd)
