"""Batch-level mixing with soft targets: MixUp and CutMix (torchvision.transforms.v2's).

Each image is mixed with its neighbour in the batch (`roll(1, 0)`, as torchvision does) by one
lambda per batch drawn from Beta(alpha, alpha): MixUp blends whole images, CutMix pastes a box
of the neighbour whose area sets the adjusted lambda. The targets are the same blend of the
two one-hot labels, so they sum to 1. With both ops in a version, each batch picks one with
probability 1/2 (timm's and torchvision's RandomChoice). Lambda is drawn with numpy, seeded
from the pipeline's CPU generator.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from augvit.augment.mixing import MIXING_OPS



def _beta(gen: torch.Generator, alpha: float) -> float:
    seed = int(torch.randint(2**62, (1,), generator=gen))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def cutmix_box(gen: torch.Generator, lam: float, height: int,
               width: int) -> tuple[int, int, int, int, float]:
    """torchvision's CutMix box (x1, y1, x2, y2) around a uniform centre, and the lambda its
    area implies."""
    r_x = int(torch.randint(width, (1,), generator=gen))
    r_y = int(torch.randint(height, (1,), generator=gen))
    r = 0.5 * math.sqrt(1.0 - lam)
    rw, rh = int(r * width), int(r * height)
    x1, y1 = max(r_x - rw, 0), max(r_y - rh, 0)
    x2, y2 = min(r_x + rw, width), min(r_y + rh, height)
    return x1, y1, x2, y2, 1.0 - (x2 - x1) * (y2 - y1) / (width * height)


def mixup(x: torch.Tensor, targets: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """lam * x + (1 - lam) * neighbour, in place on x: one rolled copy and one lerp."""
    return x.lerp_(x.roll(1, 0), 1 - lam), targets.roll(1, 0).lerp_(targets, lam)


def cutmix(x: torch.Tensor, targets: torch.Tensor,
           box: tuple[int, int, int, int, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The neighbour's box pasted into each image, in place on x (only the box is copied)."""
    x1, y1, x2, y2, lam = box
    x[..., y1:y2, x1:x2] = x[..., y1:y2, x1:x2].roll(1, 0)
    return x, targets.roll(1, 0).lerp_(targets, lam)


def mix_batch(x: torch.Tensor, labels: torch.Tensor, num_classes: int,
              recipe: Mapping[str, Mapping], gen: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(mixed inputs, soft targets (B, num_classes), which op ran) for one training batch.
    x is mixed in place (it is the pipeline's own batch)."""
    targets = F.one_hot(labels, num_classes).to(x.dtype)
    ops = [op for op in MIXING_OPS if op in recipe]
    if not ops:
        return x, targets, "none"
    op = ops[int(torch.randint(len(ops), (1,), generator=gen))] if len(ops) > 1 else ops[0]
    lam = _beta(gen, recipe[op]["alpha"])
    if op == "mixup":
        return (*mixup(x, targets, lam), op)
    return (*cutmix(x, targets, cutmix_box(gen, lam, x.shape[-2], x.shape[-1])), op)
