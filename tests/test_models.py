"""The conv nets pool before the ReLU (a speed-up): the same function and gradients as the
paper's conv -> ReLU -> max-pool order."""

import pytest
import torch
from torch import nn

from dann.models import build_nets

POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def _relu_then_pool(features: nn.Sequential) -> nn.Sequential:
    """The same modules (shared weights) in the paper's order: each pool moved after its ReLU."""
    mods, out = list(features), []
    for i, m in enumerate(mods):
        if isinstance(m, POOLS):
            assert isinstance(mods[i + 1], nn.ReLU), "each pool is followed by its ReLU"
            continue
        out.append(m)
        if isinstance(m, nn.ReLU) and i and isinstance(mods[i - 1], POOLS):
            out.append(mods[i - 1])
    return nn.Sequential(*out)


def _out_and_grads(net: nn.Module, x: torch.Tensor):
    net.zero_grad()
    y = net(x)
    (y * torch.linspace(-1, 1, y.shape[1])).sum().backward()
    return y.detach(), [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("arch,shape", [("mnist", (3, 28, 28)), ("svhn", (3, 32, 32)), ("gtsrb", (3, 40, 40))])
def test_pool_then_relu_is_the_papers_relu_then_pool(arch, shape):
    torch.manual_seed(0)
    ours = build_nets(arch, shape, 10).features
    paper = _relu_then_pool(ours)
    kinds = [type(m).__name__ for m in paper]
    assert all(kinds[i + 1] == "ReLU" for i, k in enumerate(kinds) if k == "Conv2d")  # the paper's blocks
    x = torch.randn(8, *shape)
    (y0, g0), (y1, g1) = _out_and_grads(ours, x), _out_and_grads(paper, x)
    assert torch.equal(y0, y1)  # max and ReLU commute bit for bit
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # the check can fail: average pooling does not commute with ReLU
    avg = nn.Sequential(*[nn.AvgPool2d(m.kernel_size, m.stride, m.padding) if isinstance(m, nn.MaxPool2d) else m
                          for m in ours])
    assert not torch.allclose(avg(x), _relu_then_pool(avg)(x))


def test_parameter_names_unchanged_by_the_reordering():
    """Checkpoints written before the reordering load: the convs keep their Sequential indices."""
    names = list(build_nets("mnist", (3, 28, 28), 10).features.state_dict())
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias"]


@pytest.mark.parametrize("shape,ties", [((4, 8, 24, 24), False), ((4, 8, 9, 11), False), ((8, 6, 10, 12), True),
                                        ((6, 7, 5), True)])
def test_the_fast_pool_is_max_pool2d_bit_for_bit(shape, ties):
    """Values and gradients equal to PyTorch's kernel, ties (first maximum of the window wins)
    and odd sizes (floor mode) included, followed by an in-place ReLU as in the nets."""
    from dann.models import MaxPool2d

    torch.manual_seed(0)
    x = (torch.randint(0, 3, shape).float() if ties else torch.randn(*shape)).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    ref = torch.relu_(nn.functional.max_pool2d(x, 2, 2))
    out = torch.relu_(MaxPool2d(2, 2)(x2))
    assert torch.equal(out, ref)
    g = torch.randn_like(ref)
    ref.backward(g)
    out.backward(g)
    assert torch.equal(x2.grad, x.grad)
    with torch.no_grad():
        assert torch.equal(MaxPool2d(2, 2)(x), nn.functional.max_pool2d(x, 2, 2))


@pytest.mark.parametrize("arch,shape", [("mnist", (3, 28, 28)), ("gtsrb", (3, 40, 40))])
def test_the_nets_with_the_fast_pool_are_the_same_nets(arch, shape):
    from dann.models import MaxPool2d

    torch.manual_seed(0)
    ours = build_nets(arch, shape, 10).features
    assert sum(type(m) is MaxPool2d for m in ours) >= 2
    plain = nn.Sequential(*[nn.MaxPool2d(2, 2) if type(m) is MaxPool2d else m for m in ours])
    x = torch.randn(16, *shape)
    (y0, g0), (y1, g1) = _out_and_grads(ours, x), _out_and_grads(plain, x)
    assert torch.equal(y0, y1)
    for a, b in zip(g0, g1):
        assert torch.equal(a, b)
