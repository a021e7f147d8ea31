"""RandomCrop(size, padding) at the stored size (the standard CIFAR crop), with the flip.

Windows of the image's own size start up to `padding` pixels outside it; the border is
torchvision's black (zero) or reflected padding. Applied as one gather of the padded batch.
"""
from __future__ import annotations

import torch


def pad_crop_params(gen: torch.Generator, n: int, height: int, width: int,
                    padding: int) -> torch.Tensor:
    """torchvision RandomCrop((h, w), padding) draws for n images -> (n, 4) = (i, j, h, w) in
    image coordinates: the window starts up to `padding` pixels outside the image."""
    ij = torch.randint(0, 2 * padding + 1, (n, 2), generator=gen) - padding
    return torch.cat((ij, torch.tensor([[height, width]]).expand(n, 2)), dim=1).float()


def shift_and_flip(x: torch.Tensor, boxes: torch.Tensor | None, flips: torch.Tensor | None,
                   pad: int, reflect: bool) -> torch.Tensor:
    """pad_crop (boxes: windows of the image's own size, up to `pad` pixels outside it) and
    flip at the stored size, as a gather from the padded batch: the same result as the
    resample matrices for these integer shifts, without their matmuls (one gather of the
    padded pixels)."""
    n, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, [pad] * 4, mode="reflect" if reflect else "constant")
    i = torch.zeros(n, dtype=torch.long) if boxes is None else boxes[:, 0].long()
    j = torch.zeros(n, dtype=torch.long) if boxes is None else boxes[:, 1].long()
    rows = (i[:, None] + pad + torch.arange(h)).to(x.device)                      # (B,h)
    cols = j[:, None] + pad + torch.arange(w)                                    # (B,w)
    if flips is not None:                  # flip first, then the window: mirror the columns
        cols = torch.where(flips[:, None], w - 1 + 2 * pad - cols, cols)
    flat = rows[:, :, None] * (w + 2 * pad) + cols.to(x.device)[:, None, :]      # (B,h,w)
    return xp.flatten(2).gather(2, flat.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)
