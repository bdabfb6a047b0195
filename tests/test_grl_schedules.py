import math

import pytest
import torch

from dann.methods.grl import grad_reverse
from dann.methods.schedules import adaptation_factor, lr_factor, progress


def test_grl_forward_is_identity():
    x = torch.randn(5, 3)
    assert torch.equal(grad_reverse(x, 0.7), x)


@pytest.mark.parametrize("lambd", [0.0, 0.1, 1.0, 10.0])
def test_grl_gradient_is_minus_lambda_times_plain(lambd):
    torch.manual_seed(0)
    w = torch.randn(3, 4)
    x1 = torch.randn(5, 3, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    ((x1 @ w) ** 2).sum().backward()
    ((grad_reverse(x2, lambd) @ w) ** 2).sum().backward()
    assert torch.allclose(x2.grad, -lambd * x1.grad)


def test_grl_lambda_is_per_call():
    x = torch.ones(2, requires_grad=True)
    grad_reverse(x, 2.0).sum().backward()
    g1 = x.grad.clone()
    x.grad = None
    grad_reverse(x, 0.5).sum().backward()
    assert torch.equal(g1, torch.full((2,), -2.0)) and torch.equal(x.grad, torch.full((2,), -0.5))


def test_adaptation_factor():
    assert adaptation_factor(0.0) == 0.0
    assert adaptation_factor(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert adaptation_factor(1.0) > 0.999
    ps = [i / 100 for i in range(101)]
    vals = [adaptation_factor(p) for p in ps]
    assert all(b > a for a, b in zip(vals, vals[1:]))


def test_lr_factor():
    assert lr_factor(0.0) == 1.0
    assert lr_factor(1.0) == pytest.approx(1 / 11**0.75)
    vals = [lr_factor(i / 100) for i in range(101)]
    assert all(b < a for a, b in zip(vals, vals[1:]))


def test_progress():
    assert progress(0, 100) == 0.0 and progress(50, 100) == 0.5 and progress(150, 100) == 1.0
    with pytest.raises(ValueError, match="max_steps"):
        progress(1, 0)
