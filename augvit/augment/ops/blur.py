"""GaussianBlur (torchvision's) at the model's input size, each image its own sigma.

The blur is linear per axis, as the resize is, so it is folded into the resample matrices:
blur(resize(x)) = (blur matrix @ resize matrix) x, at the cost of the resize alone. It runs at
the model's input size, where the notebook applied it: a 3x3 kernel at 32x32 is a far stronger
blur than at 224x224.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from augvit.augment.ops.common import uniform


def blur_kernels(gen: torch.Generator, n: int, kernel_size: int, sigma: Sequence[float],
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, kernel_size) kernels on `device`, each image's sigma uniform in `sigma`."""
    return gaussian_kernels(uniform(gen, n, sigma[0], sigma[1]).to(device), kernel_size)


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


def blur_matrices(my: torch.Tensor, mx: torch.Tensor,
                  kernels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both axes' resample matrices, blurred on their output axis with each image's kernel.
    When both have one shape (a square image), in one go: one set of ops for 2n matrices."""
    if my.shape != mx.shape:
        return blur_rows(my, kernels), blur_rows(mx, kernels)
    n = len(my)
    m = blur_rows(torch.cat((my, mx)), torch.cat((kernels, kernels)))
    return m[:n], m[n:]
