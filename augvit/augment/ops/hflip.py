"""RandomHorizontalFlip, each image with its own draw, at no cost of its own: a flip commutes
with every per-pixel op, so it is folded into the resample (a flipped image's horizontal weight
matrix reads its input columns mirrored). With pad_crop it is part of that op's gather
(ops/pad_crop.py)."""
from __future__ import annotations

import torch


def flip_draws(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    """(n,) bool: which images RandomHorizontalFlip(p) flips."""
    return torch.rand(n, generator=gen) < p


def mirror(mx: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Horizontal resample matrices (B, S, w) -> those of the images flipped first where
    `flips` (B,): the flipped image's column q is the image's column w - 1 - q."""
    return torch.where(flips.to(mx.device)[:, None, None], mx.flip(2), mx)
