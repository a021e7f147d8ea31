"""Random erasing on normalized inputs, each image its own draws (torchvision's RandomErasing).

Per image: with probability p, up to 10 tries of an area fraction from `scale` and a log-uniform
aspect ratio from `ratio`; the first box that fits (h < H and w < W) is erased at a uniform
position, with zeros (`value: zero`, the mean colour after normalization) or per-pixel normal
noise (`value: random`); if no try fits, the image is kept. The boxes are drawn on the CPU
generator; the noise is drawn on the input's device (seeded from that generator), so a seed
gives the same boxes everywhere and the same noise on the same kind of device.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

TRIES = 10


def erasing_boxes(gen: torch.Generator, n: int, height: int, width: int, p: float,
                  scale: Sequence[float], ratio: Sequence[float]) -> torch.Tensor:
    """(n, 4) int64 boxes (i, j, h, w); h = w = 0 where an image is not erased."""
    erase = (torch.rand(n, generator=gen) < p).numpy()
    area = height * width * (torch.rand(n, TRIES, generator=gen).double().numpy()
                             * (scale[1] - scale[0]) + scale[0])
    log_r = (torch.rand(n, TRIES, generator=gen).double().numpy()
             * (math.log(ratio[1]) - math.log(ratio[0])) + math.log(ratio[0]))
    aspect = np.exp(log_r)
    h = np.round(np.sqrt(area * aspect)).astype(np.int64)      # torchvision: int(round(...))
    w = np.round(np.sqrt(area / aspect)).astype(np.int64)
    fits = (h < height) & (w < width)
    first = fits.argmax(axis=1)
    rows = np.arange(n)
    h, w = h[rows, first], w[rows, first]
    keep = erase & fits.any(axis=1)
    u = torch.rand(2, n, generator=gen).double().numpy()
    i = np.floor(u[0] * (height - h + 1)).astype(np.int64)
    j = np.floor(u[1] * (width - w + 1)).astype(np.int64)
    box = np.stack((i, j, h, w), axis=1)
    box[~keep] = 0
    return torch.from_numpy(box)


def erase(x: torch.Tensor, boxes: torch.Tensor, value: str,
          gen: torch.Generator | None = None) -> torch.Tensor:
    """x (B,C,H,W) with each image's box replaced by zeros or normal noise (in place: x is
    the pipeline's own tensor; only the erased images are touched)."""
    n, c, h, w = x.shape
    rows = (boxes[:, 2] > 0).nonzero().squeeze(1)
    if len(rows) == 0:
        return x
    b = boxes[rows].to(x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys >= b[:, 0, None, None]) & (ys < (b[:, 0] + b[:, 2])[:, None, None]) &
              (xs >= b[:, 1, None, None]) & (xs < (b[:, 1] + b[:, 3])[:, None, None]))
    inside = inside[:, None]                                              # (k,1,H,W)
    rows = rows.to(x.device)
    if value == "zero":
        x[rows] = x[rows].masked_fill_(inside, 0.0)
        return x
    noise_gen = torch.Generator(x.device).manual_seed(
        int(torch.randint(2**62, (1,), generator=gen)))
    inside = inside.expand(len(rows), c, h, w)
    noise = torch.randn(int(c * (b[:, 2] * b[:, 3]).sum()), generator=noise_gen,
                        device=x.device, dtype=x.dtype)         # just the erased pixels
    x[rows] = x[rows].masked_scatter_(inside, noise)
    return x
