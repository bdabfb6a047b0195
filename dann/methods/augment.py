"""Stochastic augmentation as plain tensor ops on the batch's device.

French et al. (ICLR 2018, their released code) augment digits with a random translation of up
to ``max_shift`` pixels in each direction (uniform), optionally a random affine map (the
identity plus Gaussian noise of std ``affine_std`` on its 2x2 part), and additive Gaussian noise
of std ``noise_std`` on images they first standardise one by one (zero mean, unit variance):
here the noise's std is ``noise_std`` times each image's own standard deviation, the same
thing without changing the inputs. The warp is one ``affine_grid`` + ``grid_sample`` (bilinear,
edges replicated: the inputs are mean-subtracted, so a zero border would be a grey frame) for
the whole batch, and every random number comes from torch's global generator of the batch's
device, the state a checkpoint saves: a resumed run draws what the interrupted one would have.
Inputs that are not images (``N x D``) get the noise only, of std ``noise_std``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, max_shift: float = 2.0, affine_std: float = 0.0, noise_std: float = 0.1
            ) -> torch.Tensor:
    """A randomly warped, translated and noised copy of the batch ``x`` (``N x C x H x W`` or ``N x D``)."""
    n = len(x)
    if x.dim() == 4 and (max_shift > 0 or affine_std > 0):
        h, w = x.shape[-2:]
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        if affine_std > 0:
            theta[:, :, :2] += affine_std * torch.randn(n, 2, 2, device=x.device, dtype=x.dtype)
        if max_shift > 0:
            # a shift of s pixels is 2 s / size in grid_sample's [-1, 1] coordinates
            shift = (2 * torch.rand(n, 2, device=x.device, dtype=x.dtype) - 1) * max_shift
            theta[:, 0, 2] = shift[:, 0] * 2 / w
            theta[:, 1, 2] = shift[:, 1] * 2 / h
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if noise_std > 0:
        scale = x.flatten(1).std(1).view(-1, *([1] * (x.dim() - 1))) if x.dim() == 4 else 1.0
        x = x + noise_std * scale * torch.randn_like(x)
    return x
