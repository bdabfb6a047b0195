"""The paper's networks (Ganin et al. 2016, Table/Figure 4; ../PAPER.md): no batch norm.

Each network is three parts: ``features`` (the feature extractor G_f), ``classifier``
(the label predictor G_y) and ``discriminator`` (the domain classifier G_d, one logit).
Every method builds the same three, so source-only, DANN and train-on-target share the
same network; only the adversarial methods train a domain classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dann.errors import ConfigError

ARCHS = ("shallow", "mnist", "svhn", "gtsrb")
#: what each network takes (its first layers decide)
ARCH_INPUTS = {"shallow": "it takes feature vectors (D,)", "mnist": "it takes images (C, H, W) of at least 16x16",
               "svhn": "it takes images (C, H, W)", "gtsrb": "it takes images (C, H, W) of at least 32x32"}


class _Pool2x2(torch.autograd.Function):
    """2x2/2 max-pooling from four strided views: the same values as ``F.max_pool2d`` and the
    gradient to the same element (the first maximum of each window in row-major order)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x)  # not the output: the block's in-place ReLU overwrites it
        return _max4(_quarters(x))

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        q = _quarters(x)
        out = _max4(q)
        h, w = out.shape[-2] * 2, out.shape[-1] * 2
        gx = torch.zeros_like(x)
        free = torch.ones_like(out, dtype=torch.bool)
        for k, (i, j) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            hit = free & (q[k] == out) if k < 3 else free
            gx[..., i:h:2, j:w:2] = g * hit
            free = free & ~hit
        return gx


def _quarters(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2  # floor mode: an odd last row/column is dropped
    return tuple(x[..., i:h:2, j:w:2] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))


def _max4(q: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.maximum(torch.maximum(q[0], q[1]), torch.maximum(q[2], q[3]))


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d``, with a faster path for the 2x2/2 pools on CPU.

    PyTorch's CPU max-pool is the slowest layer of the paper's MNIST net at one thread (60% of
    an evaluation's forward, 30% of a training step's); the elementwise maximum of the window's
    four strided views gives the same output and gradient, bit for bit, in a tenth of the
    forward time (tests/test_models.py). Other pools and devices take the usual kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if (x.device.type == "cpu" and self.kernel_size in (2, (2, 2)) and self.stride in (2, (2, 2))
                and self.padding in (0, (0, 0)) and self.dilation in (1, (1, 1))
                and not self.ceil_mode and not self.return_indices and x.dim() in (3, 4)):
            return _Pool2x2.apply(x)
        return super().forward(x)


@dataclass
class Nets:
    features: nn.Module
    classifier: nn.Module
    discriminator: nn.Module
    feature_dim: int
    arch: str = "mnist"
    dropout: float = 0.5

    def new_discriminator(self, in_dim: int | None = None) -> nn.Module:
        """A fresh domain classifier of this architecture for inputs of size ``in_dim``
        (default: the features), e.g. for CDAN's multilinear map."""
        return build_discriminator(self.arch, in_dim or self.feature_dim, self.dropout)

    def new_classifier(self, num_classes: int) -> nn.Module:
        """A fresh label predictor of this architecture (e.g. MCD's second classifier)."""
        return build_classifier(self.arch, self.feature_dim, num_classes, self.dropout)


def _mlp(dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with ReLU between them (and dropout after each hidden ReLU)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def _features(arch: str, in_shape: tuple[int, ...], hidden: int) -> nn.Module:
    # The paper's blocks are conv -> ReLU -> max-pool. Max-pooling and ReLU commute exactly
    # (relu(max(a, b)) == max(relu(a), relu(b)), bit for bit, and the gradient reaches the same
    # element), so each block pools first: ReLU and its backward then touch a quarter (2x2
    # pools) of the values. Same network, same numbers (tests/test_models.py), a faster step;
    # parameter names are unchanged, so older checkpoints load.
    if arch == "shallow":
        # Section 5.1: one hidden layer of sigmoid units shared by both heads.
        return nn.Sequential(nn.Flatten(), nn.Linear(in_shape[0], hidden), nn.Sigmoid())
    c = in_shape[0]
    if arch == "mnist":
        return nn.Sequential(
            nn.Conv2d(c, 32, 5), MaxPool2d(2, 2), nn.ReLU(inplace=True),
            nn.Conv2d(32, 48, 5), MaxPool2d(2, 2), nn.ReLU(inplace=True),
            nn.Flatten(),
        )
    if arch == "svhn":
        # 'same' padding so a 32x32 input survives three 5x5 convs and two 3/2 pools.
        return nn.Sequential(
            nn.Conv2d(c, 64, 5, padding=2), nn.MaxPool2d(3, 2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 5, padding=2), nn.MaxPool2d(3, 2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 5, padding=2), nn.ReLU(inplace=True),
            nn.Flatten(),
        )
    if arch == "gtsrb":
        return nn.Sequential(
            nn.Conv2d(c, 96, 5), MaxPool2d(2, 2), nn.ReLU(inplace=True),
            nn.Conv2d(96, 144, 3), MaxPool2d(2, 2), nn.ReLU(inplace=True),
            nn.Conv2d(144, 256, 5), MaxPool2d(2, 2), nn.ReLU(inplace=True),
            nn.Flatten(),
        )
    raise ValueError(f"unknown model.arch={arch!r}; allowed: {', '.join(ARCHS)}")


def feature_dim(features: nn.Module, in_shape: tuple[int, ...]) -> int:
    """Size of the flattened feature vector for one input of shape ``in_shape``."""
    with torch.no_grad():
        return int(features(torch.zeros(1, *in_shape)).shape[1])


def build_nets(arch: str, in_shape: tuple[int, ...], num_classes: int, hidden: int = 15,
               dropout: float = 0.5) -> Nets:
    """Build the paper's network ``arch`` for inputs of shape ``in_shape`` (C,H,W or D)."""
    f = _features(arch, tuple(in_shape), hidden)
    try:
        d = feature_dim(f, tuple(in_shape))
    except RuntimeError as e:  # torch's shape error, deep in the first forward pass
        raise ConfigError(f"model.arch={arch} cannot take inputs of shape {tuple(in_shape)} "
                          f"({(str(e).splitlines() or [''])[0]}): {ARCH_INPUTS[arch]}. Choose the model of the "
                          f"pair's input (model=shallow for feature vectors such as the moons), or set pair.image_size"
                          ) from None
    # the label predictor first, then the domain classifier: the order of random initialisation
    cls = build_classifier(arch, d, num_classes, dropout)
    return Nets(f, cls, build_discriminator(arch, d, dropout), d, arch, dropout)


def build_classifier(arch: str, in_dim: int, num_classes: int, dropout: float = 0.5) -> nn.Module:
    """The label predictor G_y of ``arch`` (PAPER.md's layer lists)."""
    return {"shallow": lambda: nn.Linear(in_dim, num_classes),
            "mnist": lambda: _mlp([in_dim, 100, 100, num_classes]),
            "svhn": lambda: _mlp([in_dim, 3072, 2048, num_classes], dropout),
            "gtsrb": lambda: _mlp([in_dim, 512, num_classes])}[arch]()


def build_discriminator(arch: str, in_dim: int, dropout: float = 0.5) -> nn.Module:
    """The domain classifier G_d of ``arch``: one logit (PAPER.md's layer lists)."""
    return {"shallow": lambda: nn.Linear(in_dim, 1),
            "mnist": lambda: _mlp([in_dim, 100, 1]),
            "svhn": lambda: _mlp([in_dim, 1024, 1024, 1], dropout),
            "gtsrb": lambda: _mlp([in_dim, 1024, 1024, 1])}[arch]()
