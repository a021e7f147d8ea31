"""Crop and resize as per-image linear maps: a weight matrix per axis, two batched matmuls.

Resizing to the model's input size is bilinear, exactly torchvision's (`Resize`, and
`RandomResizedCrop`'s crop then resize, with antialias=True, the v2 default): per image a
(size x h) and a (size x w) weight matrix, the crop read from each image's box. The ops fold
into these matrices at no cost of their own: the flip mirrors the horizontal one's input axis
(ops/hflip.py), the blur is one more linear map on their output axis (ops/blur.py).
"""
from __future__ import annotations

import torch


def bilinear_weights(start: torch.Tensor, length: torch.Tensor, pos: torch.Tensor,
                     out_size: int) -> torch.Tensor:
    """(B, out_size, positions): PyTorch's bilinear resize of the crop [start, start+length)
    (align_corners=False), edge clamping inside the crop included: output pixel u reads source
    coordinate s = clamp((u + 0.5) * length / out_size - 0.5, 0, length - 1) of the crop, and
    the weight of pixel p is the triangle max(0, 1 - |s - p|), i.e. 1 - frac(s) and frac(s) on
    its two neighbours. In float32, as PyTorch's own resize computes its source coordinates.
    torchvision's antialiased resize is the same map for an upscale (not for a downscale)."""
    u = torch.arange(out_size, dtype=torch.float32, device=pos.device) + 0.5
    length = length.to(torch.float32)[:, None]
    src = (u * (length / out_size) - 0.5).clamp_(min=0)
    src = torch.minimum(src, length - 1)                                     # (B,out), in crop
    return (1 - (src[:, :, None] - (pos - start.to(torch.float32)[:, None])[:, None, :])
            .abs_()).clamp_(min=0)                                          # (B,out,positions)


def antialiased_weights(start: torch.Tensor, length: torch.Tensor, pos: torch.Tensor,
                        out_size: int) -> torch.Tensor:
    """(B, out_size, positions): torchvision's antialiased bilinear downscale of the crop
    (torch's _upsample_bilinear2d_aa, PIL's resample): the triangle widened by the scale
    s = length / out_size, centred on (u + 0.5) s in the crop, over the crop's pixels only,
    each row normalized to sum 1. Built in float64, handed on in float32."""
    length = length.to(device=pos.device, dtype=torch.float64)
    scale = (length / out_size)[:, None, None]                                   # (B,1,1)
    centre = (torch.arange(out_size, dtype=torch.float64, device=pos.device) + 0.5)[:, None]
    widest = int(length.max())
    q = torch.arange(widest, dtype=torch.float64, device=pos.device)            # crop pixels
    w = (1 - ((q + 0.5 - centre * scale) / scale).abs()).clamp_(min=0)         # (B,out,crop)
    w = w * (q < length[:, None, None])
    w = w / w.sum(2, keepdim=True)
    crop_pos = pos.double() - start.to(device=pos.device, dtype=torch.float64)[:, None]
    inside = (crop_pos >= 0) & (crop_pos < length[:, None])                      # (B,positions)
    index = crop_pos.clamp(0, widest - 1).long()[:, None, :].expand(-1, out_size, -1)
    return torch.where(inside[:, None, :], w.gather(2, index), 0.0).to(torch.float32)


def interp_matrix(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int,
                  reflect_pad: int = 0, shrinks: bool = True) -> torch.Tensor:
    """(B, out_size, in_size) weights: crop [start, start+length) then resize to out_size,
    torchvision's bilinear map with antialiasing; built on start's device. `shrinks=False`
    says that no crop is longer than out_size, so the antialiased weights are not built.

    A crop may reach outside the image (pad_crop: start < 0 or start + length > in_size). With
    zero padding those positions simply have no pixel: their rows sum to less than 1, i.e. the
    border comes out as zero, black on images not normalized yet. With `reflect_pad` > 0 the
    axis is first extended by that many reflected pixels on each side (torch.nn.functional.pad's
    "reflect") and their weights are folded back onto the pixels they mirror: rows sum to 1.
    """
    device = start.device
    pos = torch.arange(-reflect_pad, in_size + reflect_pad, dtype=torch.float32, device=device)
    pos = pos.expand(len(start), -1)                            # positions on the (padded) axis
    weights = bilinear_weights(start, length, pos, out_size)
    # Only a downscale is antialiased; an upscale (the default path: stored 32 -> model 32 or
    # 224) keeps the plain bilinear weights above, bit for bit.
    if shrinks:
        weights = torch.where((length.to(device) > out_size)[:, None, None],
                              antialiased_weights(start, length, pos, out_size), weights)
    if not reflect_pad:
        return weights
    source = pos.abs()                                          # reflect at 0 ...
    source = torch.where(source > in_size - 1, 2 * (in_size - 1) - source, source)  # ... and end
    index = source.long()[:, None, :].expand_as(weights)
    return torch.zeros(weights.shape[0], out_size, in_size, device=device).scatter_add_(
        2, index, weights)


def resample_matrices(n: int, height: int, width: int, size: int | tuple[int, int],
                      boxes: torch.Tensor | None, device: torch.device | str = "cpu",
                      reflect_pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (my, mx) on `device`: crop (boxes (n, 4) = (i, j, h, w), or the whole image)
    and resize to `size` (an int: a square; or (height, width)). When both axes have the same
    sizes, both are built in one go (one set of ops for 2n matrices)."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    if boxes is None:
        boxes = torch.tensor([[0.0, 0.0, height, width]]).expand(n, 4)
    # Read from the boxes before they move to the device (the pipeline draws them on the CPU),
    # so a GPU run waits for nothing here.
    rows_shrink, cols_shrink = bool((boxes[:, 2] > out_h).any()), bool((boxes[:, 3] > out_w).any())
    i, j, h, w = boxes.to(device).unbind(1)
    if (height, out_h) == (width, out_w):
        m = interp_matrix(torch.cat((i, j)), torch.cat((h, w)), height, out_h, reflect_pad,
                          rows_shrink or cols_shrink)
        return m[:n], m[n:]
    return (interp_matrix(i, h, height, out_h, reflect_pad, rows_shrink),
            interp_matrix(j, w, width, out_w, reflect_pad, cols_shrink))


def apply_linear(x: torch.Tensor, my: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) -> (B,C,Sy,Sx): out[b,c] = my[b] @ x[b,c] @ mx[b]^T, as two batched matmuls.

    Shaped for bmm (a broadcasting matmul is several times slower for many small matrices on
    the CPU) and so that the output comes out contiguous.
    """
    b, c, h, w = x.shape
    sy, sx = my.shape[1], mx.shape[1]
    my = my.to(device=x.device, dtype=x.dtype)
    mx = mx.to(device=x.device, dtype=x.dtype)
    rows = torch.bmm(my, x.transpose(1, 2).reshape(b, h, c * w))            # (B, Sy, C*W)
    rows = rows.view(b, sy, c, w).transpose(1, 2).reshape(b, c * sy, w)      # (B, C*Sy, W)
    return torch.bmm(rows, mx.transpose(1, 2)).view(b, c, sy, sx)
