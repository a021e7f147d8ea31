"""The one input path for every split: batched, per-image-random augmentation on the device.

`build_inputs(images_u8, recipe, ...)` turns a uint8 batch at the stored size into normalized
model inputs. Evaluation calls it with an empty recipe, so train and eval inputs differ only by
augmentation: same resize, same normalization, written once.

Semantics follow torchvision's per-image ops (RandomHorizontalFlip, RandomResizedCrop,
ColorJitter, GaussianBlur, RandomGrayscale), but every image in the batch draws its own
parameters (torchvision.transforms.v2 draws one set per call, i.e. per batch). All random draws
come from one CPU `torch.Generator`, so a seed gives the same draws on every device.

Where the work runs (why it is fast and what that costs in exactness):
  * color jitter and grayscale run at the stored size (32x32), before upscaling.
    grayscale commutes exactly with the bilinear resample (it is linear per pixel, the
    resample a convex combination of pixels); brightness and saturation are exact up
    to where clamping at 0/1 bites; contrast uses the mean of the whole image instead of the
    crop's mean, and hue is non-linear per pixel, so both are close but not exact.
    tests/test_augment.py::test_pixel_ops_before_upscale_close_to_torchvision_order measures it.
  * crop + resize to the model's input size is ONE bilinear resample, not two, and it is exactly
    torchvision's (edge clamping included): per image, a (size x h) and a (size x w) weight
    matrix, applied as two batched matmuls (fast on CPU and GPU alike).
  * the blur runs at the model's input size, where the notebook applied it: a 3x3 kernel at
    32x32 is a far stronger blur than at 224x224. Blur and resize are both linear per axis, so
    the blur is folded into the same two matrices: blur(resize(x)) at the cost of resize alone.
  * the flip is folded into the same matrices (reversed columns), so it costs nothing.
  * normalization runs at the stored size too (exact: see build_inputs).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)   # torchvision's rgb_to_grayscale weights


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (hi - lo) + lo


def _per_image(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) parameters -> (B,1,1,1) on x's device, for broadcasting over (B,3,H,W)."""
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


# ------------------------------------------------------------------ per-pixel ops (batched)

def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) -> (B,1,H,W) luma, torchvision's weights."""
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _per_image(f, x)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_image(f, x)
    return (f * x + (1 - f) * mean).clamp_(0, 1)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = _per_image(f, x)
    return (f * x + (1 - f) * grayscale(x)).clamp_(0, 1)


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """torchvision's RGB -> HSV, shift hue by f, -> RGB, in closed form.

    With v = max, C = max - min (= s*v) and h the hue in sixths (2*argmax + (next - prev)/C,
    argmax the first max channel, as torchvision breaks ties), HSV -> RGB gives channel
    c = v - C * clamp(min(k, 4 - k), 0, 1), k = (n_c + 6h) mod 6, n = (5, 3, 1) for (r, g, b).
    Equal to torchvision.transforms.v2.functional.adjust_hue within 2e-5 (tested).
    """
    maxc, which = x.max(dim=1, keepdim=True)                   # (B,1,H,W) value, channel
    chroma = maxc - x.amin(dim=1, keepdim=True)
    num = (x.roll(-1, 1) - x.roll(1, 1)).gather(1, which)      # g-b, b-r or r-g
    h6 = torch.addcdiv(2.0 * which + 6.0 * _per_image(f, x), num, chroma.clamp(min=1e-12))
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + h6, 6.0)
    return maxc - chroma * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


# ------------------------------------------------------------------ random ops

def random_grayscale(x: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    sel = torch.rand(x.shape[0], generator=gen) < p
    if sel.any():
        idx = sel.nonzero().squeeze(1).to(x.device)
        x = x.clone()
        x[idx] = grayscale(x[idx]).expand(-1, 3, -1, -1)
    return x


def jitter_params(gen: torch.Generator, n: int, brightness: float, contrast: float,
                  saturation: float, hue: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: a random order of the 4 ops (torchvision's randperm(4)) and their factors."""
    order = torch.argsort(torch.rand(n, 4, generator=gen), dim=1)          # (B,4) permutations
    factors = torch.stack([
        _uniform(gen, n, max(0.0, 1 - brightness), 1 + brightness),
        _uniform(gen, n, max(0.0, 1 - contrast), 1 + contrast),
        _uniform(gen, n, max(0.0, 1 - saturation), 1 + saturation),
        _uniform(gen, n, -hue, hue),
    ], dim=1)                                                              # (B,4)
    return order, factors


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
JITTER_IDENTITY = (1.0, 1.0, 1.0, 0.0)


def apply_jitter(x: torch.Tensor, order: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Apply each image's ops in its own order; an op whose range is empty is skipped."""
    x = x.clone()
    for k in range(4):
        for j, op in enumerate(JITTER_OPS):
            sel = (order[:, k] == j) & (factors[:, j] != JITTER_IDENTITY[j])
            if sel.any():
                idx = sel.nonzero().squeeze(1).to(x.device)
                x[idx] = op(x[idx], factors[sel, j])
    return x


def random_color_jitter(x: torch.Tensor, gen: torch.Generator, **settings: float) -> torch.Tensor:
    order, factors = jitter_params(gen, x.shape[0], **settings)
    return apply_jitter(x, order, factors)


def crop_params(gen: torch.Generator, n: int, height: int, width: int,
                scale: Sequence[float], ratio: Sequence[float], tries: int = 10) -> torch.Tensor:
    """torchvision RandomResizedCrop.get_params for n images at once -> (n, 4) = (i, j, h, w)."""
    area = height * width
    target = area * _uniform(gen, n * tries, scale[0], scale[1]).view(n, tries)
    log_r = _uniform(gen, n * tries, math.log(ratio[0]), math.log(ratio[1])).view(n, tries)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.float().argmax(dim=1)                                   # first valid try
    found = ok.any(dim=1)
    w = w.gather(1, first[:, None]).squeeze(1)
    h = h.gather(1, first[:, None]).squeeze(1)
    u_i = torch.rand(n, generator=gen)
    u_j = torch.rand(n, generator=gen)
    i = torch.floor(u_i * (height - h + 1))
    j = torch.floor(u_j * (width - w + 1))
    # Fallback (no valid try): the central crop, aspect ratio clamped to `ratio`.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=torch.float32)
    box = torch.stack((i, j, h, w), dim=1)
    return torch.where(found[:, None], box, fallback)


def interp_matrix(start: torch.Tensor, length: torch.Tensor, in_size: int,
                  out_size: int) -> torch.Tensor:
    """(B, out_size, in_size) bilinear weights: crop [start, start+length) then resize.

    Exactly PyTorch's bilinear resize (align_corners=False; torchvision's resize for an upscale),
    edge clamping inside the crop included. Each row sums to 1.
    """
    b = start.shape[0]
    u = torch.arange(out_size, dtype=torch.float64)
    length = length.to(torch.float64)
    src = ((u[None, :] + 0.5) * (length[:, None] / out_size) - 0.5).clamp(min=0)   # (B,out)
    i0 = src.floor()
    lam = src - i0
    i1 = torch.minimum(i0 + 1, length[:, None] - 1)
    i0 = torch.minimum(i0, length[:, None] - 1)
    m = torch.zeros(b, out_size, in_size, dtype=torch.float64)
    base = start.to(torch.float64)[:, None]
    m.scatter_add_(2, (base + i0).long()[..., None], (1 - lam)[..., None])
    m.scatter_add_(2, (base + i1).long()[..., None], lam[..., None])
    return m


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(B,) sigmas -> (B, k) normalized 1-D kernels, as torchvision's _get_gaussian_kernel1d."""
    half = (kernel_size - 1) * 0.5
    xs = torch.linspace(-half, half, kernel_size, dtype=torch.float64)
    k = torch.exp(-0.5 * (xs[None, :] / sigma.to(torch.float64)[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def blur_rows(m: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Blur the output axis of per-image linear maps m (B, S, n): reflect padding, as torchvision.

    Blurring after a resize equals applying (blur matrix @ resize matrix) to the image.
    """
    size, pad = m.shape[1], kernels.shape[1] // 2
    if pad >= size:
        raise ValueError(f"blur kernel {kernels.shape[1]} too large for a {size}px image")
    out = torch.zeros_like(m)
    pos = torch.arange(size)
    for t in range(kernels.shape[1]):
        idx = pos + t - pad
        idx = torch.where(idx < 0, -idx, idx)                       # reflect (no edge repeat)
        idx = torch.where(idx >= size, 2 * (size - 1) - idx, idx)
        out += kernels[:, t, None, None] * m[:, idx, :]
    return out


def apply_linear(x: torch.Tensor, my: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) -> (B,C,S,S): out[b,c] = my[b] @ x[b,c] @ mx[b]^T, two batched matmuls."""
    my = my.to(device=x.device, dtype=x.dtype)[:, None]            # (B,1,S,H)
    mx = mx.to(device=x.device, dtype=x.dtype)[:, None]            # (B,1,S,W)
    return my @ (x @ mx.transpose(-1, -2))


def resample_matrices(n: int, height: int, width: int, size: int, boxes: torch.Tensor | None,
                      sigma: torch.Tensor | None = None,
                      kernel_size: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (my, mx): crop (boxes, or the whole image) + resize to size, then blur."""
    if boxes is None:
        boxes = torch.tensor([[0.0, 0.0, height, width]]).expand(n, 4)
    i, j, h, w = boxes.unbind(1)
    my = interp_matrix(i, h, height, size)
    mx = interp_matrix(j, w, width, size)
    if sigma is not None:
        k = gaussian_kernels(sigma, kernel_size)
        my, mx = blur_rows(my, k), blur_rows(mx, k)
    return my, mx


def resample(x: torch.Tensor, boxes: torch.Tensor | None, size: int) -> torch.Tensor:
    """Crop each image to its box (i, j, h, w) and resize it to size x size in ONE resample."""
    n, _, height, width = x.shape
    if boxes is None and (height, width) == (size, size):
        return x
    return apply_linear(x, *resample_matrices(n, height, width, size, boxes))


def blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Gaussian blur, each image with its own sigma (torchvision's GaussianBlur semantics)."""
    n, _, height, width = x.shape
    eye_y = torch.eye(height, dtype=torch.float64).expand(n, -1, -1)
    eye_x = torch.eye(width, dtype=torch.float64).expand(n, -1, -1)
    k = gaussian_kernels(sigma, kernel_size)
    return apply_linear(x, blur_rows(eye_y, k), blur_rows(eye_x, k))


# ------------------------------------------------------------------ the one input path

def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def build_inputs(images: torch.Tensor, recipe: Mapping[str, Mapping], size: int,
                 mean: Sequence[float], std: Sequence[float],
                 gen: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B,3,h,w) at the stored size -> normalized float (B,3,size,size) model inputs.

    `recipe` maps op name -> settings (params.yaml's `aug` entries of one version); {} is the
    evaluation path. Ops run in a fixed order whatever the recipe lists.
    """
    if recipe and gen is None:
        raise ValueError("build_inputs: a non-empty recipe needs a torch.Generator for its draws")
    x = images.float().div_(255)                                 # (B,3,h,w) in [0,1]
    n, _, height, width = x.shape
    # A flip commutes with every per-pixel op; it is folded into the resample (reversed columns).
    flips = (torch.rand(n, generator=gen) < recipe["hflip"]["p"]) if "hflip" in recipe else None
    boxes = crop_params(gen, n, height, width, **recipe["crop"]) if "crop" in recipe else None
    if "color_jitter" in recipe:
        x = random_color_jitter(x, gen, **recipe["color_jitter"])
    if "grayscale" in recipe:
        x = random_grayscale(x, gen, **recipe["grayscale"])
    # Normalizing here, at the stored size, is exact: resize and blur are linear maps whose rows
    # sum to 1, so they commute with the per-channel affine normalization (and it is 49x cheaper
    # than at 224x224).
    x = normalize(x, mean, std)
    sigma, k = None, 3
    if "blur" in recipe:
        lo, hi = recipe["blur"]["sigma"]
        sigma, k = _uniform(gen, n, lo, hi), recipe["blur"]["kernel_size"]
    if boxes is None and sigma is None and flips is None and (height, width) == (size, size):
        return x
    # Flip + crop + resize (+ blur at the output size): one linear map per axis and image.
    my, mx = resample_matrices(n, height, width, size, boxes, sigma, k)
    if flips is not None:    # x flipped = x @ P (P reverses columns): fold P into mx
        mx = torch.where(flips[:, None, None], mx.flip(-1), mx)
    return apply_linear(x, my, mx)                               # (B,3,size,size)
