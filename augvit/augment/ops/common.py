"""Helpers several ops share: uniform draws and torchvision's luma weights."""
from __future__ import annotations

import torch

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)   # torchvision's rgb_to_grayscale weights


def uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (hi - lo) + lo


def pixels(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H*W): a per-image 3x3 colour matrix is then one bmm."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def const(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, device=like.device, dtype=like.dtype)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) -> (B,1,H,W) luma, torchvision's weights (one matmul: cheaper than 5 ops)."""
    n, _, h, w = x.shape
    return torch.matmul(const(GRAY_WEIGHTS, x), pixels(x)).view(n, 1, h, w)
