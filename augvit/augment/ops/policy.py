"""RandAugment and TrivialAugmentWide, batched, each image with its own draws.

Semantics are torchvision.transforms.v2's (`RandAugment`, `TrivialAugmentWide`): the same 14
ops (Identity, ShearX/Y, TranslateX/Y, Rotate, Brightness, Color, Contrast, Sharpness,
Posterize, Solarize, AutoContrast, Equalize), the same magnitude bins (31) and tables, signed
magnitudes negated with probability 1/2, nearest-neighbour geometry with zero fill. torchvision
draws one op per call, i.e. per image in a per-image pipeline; here each image of the batch
draws its own op, sign and (TrivialAugment) magnitude bin, and each op runs once per round on
the images that drew it: the geometric ones as one batched `grid_sample` with a per-image
matrix (torchvision's own inverse-affine formula and grid), the colour ones as batched tensor
ops with per-image factors; Equalize is torchvision's own kernel (already batched).

Images are float in [0, 1], (B, 3, H, W), at the size the pipeline gives them (augvit/augment:
the stored size). Every primitive equals torchvision's v2 functional op on float images
(tests/test_policy.py).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from augvit.augment.ops.common import grayscale

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
       "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
GEOMETRIC = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
SIGNED = GEOMETRIC | {"Brightness", "Color", "Contrast", "Sharpness"}
NUM_BINS = 31


def magnitude_table(policy: str, height: int, width: int, bins: int = NUM_BINS) -> torch.Tensor:
    """(14, bins): each op's magnitude per bin (zeros for ops without one), exactly
    torchvision.transforms.v2's _AUGMENTATION_SPACE of RandAugment / TrivialAugmentWide
    (computed in float32 as there, then held as float64, as its `float(magnitudes[bin])`)."""
    wide = policy == "trivial_augment"
    lin = lambda hi: torch.linspace(0.0, hi, bins).double()  # noqa: E731
    posterize_steps = 6 if wide else 4
    rows = {
        "ShearX": lin(0.99 if wide else 0.3), "ShearY": lin(0.99 if wide else 0.3),
        "TranslateX": lin(32.0 if wide else 150.0 / 331.0 * width),
        "TranslateY": lin(32.0 if wide else 150.0 / 331.0 * height),
        "Rotate": lin(135.0 if wide else 30.0),
        **{op: lin(0.99 if wide else 0.9) for op in ("Brightness", "Color", "Contrast",
                                                    "Sharpness")},
        "Posterize": (8 - (torch.arange(bins) / ((bins - 1) / posterize_steps))).round()
        .to(torch.float64),
        "Solarize": torch.linspace(1.0, 0.0, bins).double(),
    }
    return torch.stack([rows.get(op, torch.zeros(bins, dtype=torch.float64)) for op in OPS])


def policy_draws(gen: torch.Generator, n: int, policy: str, settings: dict, height: int,
                 width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per round: (op index (n,), signed magnitude (n,) float64) for every image.

    rand_augment: num_ops rounds, each op uniform over the 14, the magnitude of bin `magnitude`;
    trivial_augment: one round, op and bin uniform. Signed ops are negated with probability 1/2.
    """
    table = magnitude_table(policy, height, width)
    rounds = settings["num_ops"] if policy == "rand_augment" else 1
    signed = torch.tensor([op in SIGNED for op in OPS])
    out = []
    for _ in range(rounds):
        op = torch.randint(len(OPS), (n,), generator=gen)
        if policy == "rand_augment":
            bin_ = torch.full((n,), settings["magnitude"])
        else:
            bin_ = torch.randint(NUM_BINS, (n,), generator=gen)
        negate = (torch.rand(n, generator=gen) <= 0.5) & signed[op]
        mag = table[op, bin_]
        out.append((op, torch.where(negate, -mag, mag)))
    return out


# ------------------------------------------------------------------ geometry (nearest, zero fill)

def inverse_affine(angle: float, translate: tuple[float, float], shear: tuple[float, float],
                   center: tuple[float, float]) -> list[float]:
    """torchvision's _get_inverse_affine_matrix (scale 1), for one image, in float64."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -(a * math.tan(sx) + math.sin(rot))
    c = math.sin(rot - sy) / math.cos(sy)
    d = math.cos(rot) - c * math.tan(sx)
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += cx - m[0] * (cx + tx) - m[1] * (cy + ty)
    m[5] += cy - m[3] * (cx + tx) - m[4] * (cy + ty)
    return m


def geometry_matrix(op: str, magnitude: float, height: int, width: int) -> list[float]:
    """The inverse affine matrix torchvision's RandAugment builds for one geometric op."""
    corner = (-width * 0.5, -height * 0.5)          # center=[0, 0]: the top-left corner
    if op == "ShearX":
        return inverse_affine(0.0, (0, 0), (math.degrees(math.atan(magnitude)), 0.0), corner)
    if op == "ShearY":
        return inverse_affine(0.0, (0, 0), (0.0, math.degrees(math.atan(magnitude))), corner)
    if op == "TranslateX":
        return inverse_affine(0.0, (int(magnitude), 0), (0.0, 0.0), (0.0, 0.0))
    if op == "TranslateY":
        return inverse_affine(0.0, (0, int(magnitude)), (0.0, 0.0), (0.0, 0.0))
    return inverse_affine(-(magnitude % 360), (0, 0), (0.0, 0.0), (0.0, 0.0))   # Rotate


def apply_geometry(x: torch.Tensor, ops: list[str], magnitudes: list[float]) -> torch.Tensor:
    """Each image its own op and magnitude, in one grid_sample (torchvision's grid, nearest,
    zero fill); rotations by a multiple of 90 degrees are exact rot90s, as in torchvision."""
    n, _, h, w = x.shape
    theta = torch.tensor([geometry_matrix(op, m, h, w) for op, m in zip(ops, magnitudes)],
                         dtype=x.dtype, device=x.device).view(n, 2, 3)
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=x.device)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=x.device)
    base = torch.stack((xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w,
                        device=x.device)), dim=-1).to(x.dtype).view(1, h * w, 3)
    scale = torch.tensor([0.5 * w, 0.5 * h], dtype=x.dtype, device=x.device)
    grid = base.expand(n, -1, -1).bmm(theta.transpose(1, 2) / scale).view(n, h, w, 2)
    out = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    quarters = np.where(np.asarray(ops) == "Rotate", np.mod(magnitudes, 360) / 90, 0.5)
    exact = np.isin(quarters, (0.0, 2.0) if h != w else (0.0, 1.0, 2.0, 3.0))
    for k in np.flatnonzero(exact):               # torchvision's exact fast path
        out[k] = torch.rot90(x[k], k=int(quarters[k]), dims=(-2, -1))
    return out


# ------------------------------------------------------------------ colour

def _per_image(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend with a per-image ratio: x * f + other * (1 - f), clamped."""
    f = _per_image(factor, x)
    return (x * f + other * (1 - f)).clamp_(0, 1)


def sharpen(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_sharpness: blend with a 3x3 smoothing (border pixels kept)."""
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=x.dtype, device=x.device)
    blurred = F.conv2d(x, kernel.expand(3, 1, 3, 3), groups=3)
    out = x.clone()
    inner = out[..., 1:-1, 1:-1]
    inner.add_((blurred - inner) * (1 - _per_image(factor, x)))
    return out.clamp_(0, 1)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """torchvision's autocontrast: each channel of each image stretched to [0, 1]."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    flat = hi == lo
    scale = torch.where(flat, torch.ones_like(hi), hi - lo)
    return ((x - torch.where(flat, torch.zeros_like(lo), lo)) / scale).clamp_(0, 1)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """torchvision's own equalize kernel (batched; float in, float out)."""
    from torchvision.transforms.v2.functional import equalize as tv_equalize
    return tv_equalize(x)


def apply_colour(x: torch.Tensor, op: str, m: torch.Tensor) -> torch.Tensor:
    if op == "Brightness":
        return (x * _per_image(1 + m, x)).clamp_(0, 1)
    if op == "Color":
        return _blend(x, grayscale(x), 1 + m)
    if op == "Contrast":
        return _blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), 1 + m)
    if op == "Sharpness":
        return sharpen(x, 1 + m)
    if op == "Posterize":
        levels = _per_image(2 ** m, x)
        return (x * levels).floor_().clamp_(min=0).minimum(levels - 1).div_(levels)
    if op == "Solarize":
        return torch.where(x >= _per_image(m, x), 1 - x, x)
    if op == "AutoContrast":
        return autocontrast(x)
    if op == "Equalize":
        return equalize(x)
    raise ValueError(op)


def apply_op(x: torch.Tensor, op: str, magnitudes: torch.Tensor) -> torch.Tensor:
    """One policy op on every image of x, image k with magnitude magnitudes[k]."""
    if op == "Identity":
        return x
    if op in GEOMETRIC:
        return apply_geometry(x, [op] * len(x), magnitudes.tolist())
    return apply_colour(x, op, magnitudes)


def apply_policy(x: torch.Tensor, draws: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Apply each round's per-image ops: every op once per round on the images that drew it
    (the geometric ops of a round together, in one grid_sample)."""
    x = x.clone()
    for op_idx, mags in draws:
        ops = np.asarray(OPS)[op_idx.numpy()]
        geo = np.isin(ops, sorted(GEOMETRIC))
        if geo.any():
            idx = torch.from_numpy(np.flatnonzero(geo)).to(x.device)
            x[idx] = apply_geometry(x[idx], list(ops[geo]), mags[geo].tolist())
        for op in np.unique(ops[~geo]):
            if op == "Identity":
                continue
            sel = np.flatnonzero(ops == op)
            idx = torch.from_numpy(sel).to(x.device)
            x[idx] = apply_colour(x[idx], str(op), mags[sel])
    return x
