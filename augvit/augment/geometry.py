"""Flip, crop, resize and blur as per-image linear maps: two batched matmuls per batch.

Flip, crop (torchvision's RandomResizedCrop draws) and the resize to the model's input size are
ONE bilinear resample, exactly torchvision's (edge clamping inside the crop included): per
image, a (size x h) and a (size x w) weight matrix (the flip mirrors the latter's input axis).
The blur is linear per axis too, so it is folded into the same two matrices: blur(resize(x))
at the cost of resize alone.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from augvit.augment.color import uniform


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


def interp_matrix(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int,
                  reverse: torch.Tensor | None = None, reflect_pad: int = 0) -> torch.Tensor:
    """(B, out_size, in_size) bilinear weights: crop [start, start+length) then resize.

    Exactly PyTorch's bilinear resize (align_corners=False; torchvision's resize for an upscale),
    edge clamping inside the crop included: output pixel u reads source coordinate
    s = clamp((u + 0.5) * length / out_size - 0.5, 0, length - 1) of the crop, and the weight of
    pixel p is the triangle max(0, 1 - |s - p|), i.e. 1 - frac(s) and frac(s) on its two
    neighbours. Built on start's device, in float32 (PyTorch's own resize computes its source
    coordinates in float32 too). `reverse` (B,) bool: for those images the input axis is
    mirrored first (a horizontal flip, then the crop), at no extra cost.

    A crop may reach outside the image (pad_crop: start < 0 or start + length > in_size). With
    zero padding those positions simply have no pixel: their rows sum to less than 1, i.e. the
    border comes out as zero, black on images not normalized yet. With `reflect_pad` > 0 the axis is first extended
    by that many reflected pixels on each side (torch.nn.functional.pad's "reflect") and their
    weights are folded back onto the pixels they mirror: rows sum to 1 again.
    """
    device = start.device
    u = torch.arange(out_size, dtype=torch.float32, device=device) + 0.5
    length = length.to(torch.float32)[:, None]
    src = (u * (length / out_size) - 0.5).clamp_(min=0)
    src = torch.minimum(src, length - 1)                                     # (B,out), in crop
    pos = torch.arange(-reflect_pad, in_size + reflect_pad, dtype=torch.float32, device=device)
    pos = pos.expand(len(start), -1)                            # positions on the (padded) axis
    weights = (1 - (src[:, :, None] - (pos - start.to(torch.float32)[:, None])[:, None, :])
               .abs_()).clamp_(min=0)                                       # (B,out,positions)
    if not reflect_pad and reverse is None:
        return weights
    source = pos.abs() if reflect_pad else pos                  # reflect at 0 ...
    source = torch.where(source > in_size - 1, 2 * (in_size - 1) - source, source)  # ... and end
    if reverse is not None:                       # the flipped image's pixel q is pixel in-1-q
        source = torch.where(reverse.to(device)[:, None], in_size - 1 - source, source)
    index = source.long()[:, None, :].expand_as(weights)
    return torch.zeros(weights.shape[0], out_size, in_size, device=device).scatter_add_(
        2, index, weights)


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


def pad_crop_params(gen: torch.Generator, n: int, height: int, width: int,
                    padding: int) -> torch.Tensor:
    """torchvision RandomCrop((h, w), padding) draws for n images -> (n, 4) = (i, j, h, w) in
    image coordinates: the window starts up to `padding` pixels outside the image."""
    ij = torch.randint(0, 2 * padding + 1, (n, 2), generator=gen) - padding
    return torch.cat((ij, torch.tensor([[height, width]]).expand(n, 2)), dim=1).float()


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(B,) sigmas -> (B, k) normalized 1-D kernels, as torchvision's _get_gaussian_kernel1d."""
    half = (kernel_size - 1) * 0.5
    xs = torch.linspace(-half, half, kernel_size, dtype=torch.float32, device=sigma.device)
    k = torch.exp(-0.5 * (xs[None, :] / sigma.to(torch.float32)[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def blur_rows(m: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Blur the output axis of per-image linear maps m (B, S, n): reflect padding, as torchvision.

    Blurring after a resize equals applying (blur matrix @ resize matrix) to the image.
    """
    size, taps = m.shape[1], kernels.shape[1]
    pad = taps // 2
    if pad >= size:
        raise ValueError(f"blur kernel {taps} too large for a {size}px image")
    idx = torch.arange(-pad, size + pad, device=m.device).abs_()             # reflect at 0
    idx = torch.where(idx >= size, 2 * (size - 1) - idx, idx)                # and at size - 1
    padded = m.index_select(1, idx)                                          # (B, S + 2 pad, n)
    k = kernels.to(device=m.device, dtype=m.dtype)[:, :, None, None]
    out = padded[:, :size] * k[:, 0]
    for t in range(1, taps):
        out.addcmul_(padded[:, t:t + size], k[:, t])
    return out


def apply_linear(x: torch.Tensor, my: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) -> (B,C,S,S): out[b,c] = my[b] @ x[b,c] @ mx[b]^T, as two batched matmuls.

    Shaped for bmm (a broadcasting matmul is several times slower for many small matrices on
    the CPU) and so that the output comes out contiguous.
    """
    b, c, h, w = x.shape
    s = my.shape[1]
    my = my.to(device=x.device, dtype=x.dtype)
    mx = mx.to(device=x.device, dtype=x.dtype)
    rows = torch.bmm(my, x.transpose(1, 2).reshape(b, h, c * w))            # (B, S, C*W)
    rows = rows.view(b, s, c, w).transpose(1, 2).reshape(b, c * s, w)        # (B, C*S, W)
    return torch.bmm(rows, mx.transpose(1, 2)).view(b, c, s, s)


def resample_matrices(n: int, height: int, width: int, size: int, boxes: torch.Tensor | None,
                      sigma: torch.Tensor | None = None, kernel_size: int = 3,
                      device: torch.device | str = "cpu", flips: torch.Tensor | None = None,
                      reflect_pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (my, mx) on `device`: flip (where `flips`), crop (boxes, or the whole image)
    and resize, then blur. For a square image both axes are built in one go (one set of ops
    for 2n matrices).
    """
    if boxes is None:
        boxes = torch.tensor([[0.0, 0.0, height, width]]).expand(n, 4)
    i, j, h, w = boxes.to(device).unbind(1)
    kernels = None if sigma is None else gaussian_kernels(sigma.to(device), kernel_size)
    if height == width:
        reverse = None if flips is None else torch.cat((torch.zeros_like(flips), flips))
        m = interp_matrix(torch.cat((i, j)), torch.cat((h, w)), height, size, reverse,
                          reflect_pad)
        if kernels is not None:
            m = blur_rows(m, torch.cat((kernels, kernels)))
        return m[:n], m[n:]
    my = interp_matrix(i, h, height, size, reflect_pad=reflect_pad)
    mx = interp_matrix(j, w, width, size, flips, reflect_pad)
    if kernels is not None:
        my, mx = blur_rows(my, kernels), blur_rows(mx, kernels)
    return my, mx
