"""ColorJitter (torchvision's), each image with its own factors and its own random order of the
four ops (brightness, contrast, saturation, hue).

Runs at the stored size, before the resize (augvit/augment/__init__.py says what that costs in
exactness). At 32x32 these ops are small and each costs mostly fixed overhead, so the fused
forms below keep their number low (measured: bench/bench.py, the CPU data-path share).
"""
from __future__ import annotations

import torch

from augvit.augment.ops.common import GRAY_WEIGHTS, const, pixels, uniform

_HUE_DIFF = ((0.0, 1.0, -1.0), (-1.0, 0.0, 1.0), (1.0, -1.0, 0.0))   # rows: g-b, b-r, r-g


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """torchvision's RGB -> HSV, shift hue by f, -> RGB, in closed form, batched.

    With v = max, C = max - min (= s*v) and the hue in sixths h = 2c + (next - prev)/C for the
    max channel c (0, 1, 2 for r, g, b), HSV -> RGB gives channel
    out_c = v - C * clamp(min(k, 4 - k), 0, 1), k = (n_c + h + 6f) mod 6, n = (5, 3, 1).
    Where channels tie for the max, each gives the same h mod 6 (r,g: 1 and 1; g,b: 3 and 3;
    r,b: -1 and 5), so h is the largest candidate over the max channels: no argmax, no gather.
    `k - 6 floor(k / 6)` replaces torch.remainder (several times faster on the CPU); the output
    is continuous in k, so rounding at a period boundary is harmless.
    Equal to torchvision.transforms.v2.functional.adjust_hue within 2e-5 (tested, ties too).
    """
    shape = x.shape
    x = pixels(x)                                                    # (B,3,P)
    maxc = x.amax(dim=1, keepdim=True)
    chroma = maxc - x.amin(dim=1, keepdim=True)
    cand = torch.matmul(const(_HUE_DIFF, x), x).div_(chroma.clamp(min=1e-12))
    cand.add_(const([[0.0], [2.0], [4.0]], x))
    cand.sub_(torch.sign(maxc - x), alpha=100.0)                     # rule out non-max channels
    h = cand.amax(dim=1, keepdim=True)
    h.add_(6.0 * f.to(device=x.device, dtype=x.dtype).view(-1, 1, 1))
    k = h + const([[5.0], [3.0], [1.0]], x)                          # (B,3,P)
    k.sub_(torch.floor(k * (1 / 6)), alpha=6.0)                      # k mod 6
    k = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return torch.addcmul(maxc, chroma, k, value=-1.0).view(shape)


def jitter_params(gen: torch.Generator, n: int, brightness: float, contrast: float,
                  saturation: float, hue: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: a random order of the 4 ops (torchvision's randperm(4)) and their factors."""
    order = torch.argsort(torch.rand(n, 4, generator=gen), dim=1)          # (B,4) permutations
    factors = torch.stack([
        uniform(gen, n, max(0.0, 1 - brightness), 1 + brightness),
        uniform(gen, n, max(0.0, 1 - contrast), 1 + contrast),
        uniform(gen, n, max(0.0, 1 - saturation), 1 + saturation),
        uniform(gen, n, -hue, hue),
    ], dim=1)                                                              # (B,4)
    return order, factors


def apply_jitter(x: torch.Tensor, order: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Apply each image's ops in its own order (torchvision's ColorJitter, per image).

    Round k applies op order[:, k] to every image at once. Brightness, contrast and saturation
    are one affine family: clamp(M x + t, 0, 1) with the per-image colour matrix
    M = a I + b 1 w^T (w the luma weights) and offset t = c w.mean(x), where
    (a, b, c) = (f, 0, 0), (f, 0, 1-f) and (f, 1-f, 0) respectively, so one baddbmm serves all
    three. Images whose op this round is hue get M = I, t = 0, which leaves them exactly as they
    are (x is in [0, 1], so the clamp does nothing), and the hue runs on just those images.
    """
    f = factors.gather(1, order)                             # (B,4): each round's factor
    a = torch.where(order < 3, f, 1.0)
    b = torch.where(order == 2, 1 - f, 0.0)
    c = torch.where(order == 1, 1 - f, 0.0)
    luma = torch.tensor(GRAY_WEIGHTS)
    linear = ((a != 1) | (b != 0) | (c != 0)).any(0).tolist()
    hue = (order == 3) & (f != 0)                            # (B,4): hue this round, not a no-op
    hue_rounds = hue.any(0).tolist()
    mats = (a[..., None, None] * torch.eye(3) + b[..., None, None] * luma)   # (B,4,3,3)
    mats = mats.to(device=x.device, dtype=x.dtype)
    offs = (c[..., None] * luma).to(device=x.device, dtype=x.dtype)[:, :, None]  # (B,4,1,3)
    shape = x.shape
    # Two buffers, written alternately: fresh 1.5 MB tensors each round cost more than the
    # arithmetic on the CPU (page faults on first touch; measured 3x on the four rounds).
    x = pixels(x).clone()                            # never write into the caller's x
    spare = torch.empty_like(x)
    for k in range(4):
        if linear[k]:
            t = torch.bmm(offs[:, k], x.mean(dim=2, keepdim=True))      # (B,1,1): c w.mean(x)
            x, spare = torch.baddbmm(t, mats[:, k], x, out=spare).clamp_(0, 1), x
        if hue_rounds[k]:
            idx = hue[:, k].nonzero().squeeze(1).to(x.device)
            x.index_copy_(0, idx, adjust_hue(x.index_select(0, idx), f[hue[:, k], k]))
    return x.view(shape)


def random_color_jitter(x: torch.Tensor, gen: torch.Generator, **settings: float) -> torch.Tensor:
    order, factors = jitter_params(gen, x.shape[0], **settings)
    return apply_jitter(x, order, factors)
