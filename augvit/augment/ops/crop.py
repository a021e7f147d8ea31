"""RandomResizedCrop's draws (torchvision's get_params), each image its own box.

The crop itself costs nothing here: the resample to the model's input size reads each image's
box (augvit/augment/resample.py), so crop and resize are one bilinear map per axis.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from augvit.augment.ops.common import uniform


def crop_params(gen: torch.Generator, n: int, height: int, width: int,
                scale: Sequence[float], ratio: Sequence[float], tries: int = 10) -> torch.Tensor:
    """torchvision RandomResizedCrop.get_params for n images at once -> (n, 4) = (i, j, h, w).

    Draws from `gen`; the arithmetic on these few hundred numbers runs in numpy (float64, as
    torchvision's Python floats), several times cheaper than as torch ops this small.
    """
    area = height * width
    target = area * uniform(gen, n * tries, scale[0], scale[1]).view(n, tries).double().numpy()
    log_r = uniform(gen, n * tries, math.log(ratio[0]), math.log(ratio[1]))
    aspect = np.exp(log_r.view(n, tries).double().numpy())
    w = np.round(np.sqrt(target * aspect))
    h = np.round(np.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.argmax(axis=1)                                          # first valid try
    rows = np.arange(n)
    w, h = w[rows, first], h[rows, first]
    u = torch.rand(2, n, generator=gen).double().numpy()
    i = np.floor(u[0] * (height - h + 1))
    j = np.floor(u[1] * (width - w + 1))
    box = np.stack((i, j, h, w), axis=1)
    # Fallback (no valid try): the central crop, aspect ratio clamped to `ratio`.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    box[~ok.any(axis=1)] = ((height - fh) // 2, (width - fw) // 2, fh, fw)
    return torch.from_numpy(box.astype(np.float32))
