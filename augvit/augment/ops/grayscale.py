"""RandomGrayscale (torchvision's), each image with its own draw.

Turning an image gray is a per-pixel colour matrix (every channel the luma), so it is handed to
the input path as that matrix, which folds it into the normalization's (one baddbmm for both,
augvit/augment/normalize.py) at the stored size: exact, since the resize and blur that follow
are linear maps whose rows sum to 1.
"""
from __future__ import annotations

import torch

from augvit.augment.ops.common import GRAY_WEIGHTS


def grayscale_draws(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    """(n,) bool: which images RandomGrayscale(p) turns gray."""
    return torch.rand(n, generator=gen) < p


def colour_matrices(gray: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) float64 per-image colour matrices: 1 w^T (w the luma weights) where `gray`,
    the identity elsewhere."""
    luma = torch.tensor(GRAY_WEIGHTS, dtype=torch.float64).expand(3, 3)
    return torch.where(gray[:, None, None], luma,
                       torch.eye(3, dtype=torch.float64).expand(len(gray), 3, 3))


def random_grayscale(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    """RandomGrayscale(p)'s draws for n images, as their colour matrices."""
    return colour_matrices(grayscale_draws(gen, n, p))
