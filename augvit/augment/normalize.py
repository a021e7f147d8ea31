"""Normalization, (x - mean) / std per channel, written once for train and eval."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def color_and_normalize(x: torch.Tensor, colour: torch.Tensor | None, mean: Sequence[float],
                        std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel, after each image's colour matrix `colour` (B, 3, 3)
    float64, if given (the grayscale op's, ops/grayscale.py).

    One baddbmm with the per-image matrix diag(1/std) colour and the offset -mean/std. Train
    and eval both come through here (eval: colour=None, the identity).
    """
    n = x.shape[0]
    inv = 1.0 / torch.tensor(std, dtype=torch.float64)
    mats = torch.eye(3, dtype=torch.float64).expand(n, 3, 3) if colour is None else colour
    mats = (inv[:, None] * mats).to(device=x.device, dtype=x.dtype)
    bias = (-torch.tensor(mean, dtype=torch.float64) * inv).to(device=x.device, dtype=x.dtype)
    pixels = x.reshape(n, x.shape[1], -1)                                     # (B,3,H*W)
    return torch.baddbmm(bias.view(1, 3, 1), mats, pixels).view(x.shape)
