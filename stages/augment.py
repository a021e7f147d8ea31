"""The one input path for every split: batched, per-image-random augmentation on the device.

`build_inputs(images_u8, recipe, ...)` turns a uint8 batch at the stored size into normalized
model inputs. Evaluation calls it with an empty recipe, so train and eval inputs differ only by
augmentation: same resize, same normalization, written once.

Semantics follow torchvision's per-image ops (RandomHorizontalFlip, RandomResizedCrop,
ColorJitter, GaussianBlur, RandomGrayscale), but every image in the batch draws its own
parameters (torchvision.transforms.v2 draws one set per call, i.e. per batch). All random draws
come from one CPU `torch.Generator`, so a seed gives the same draws on every device.

Where the work runs (why it is fast and what that costs in exactness):
  * flip, color jitter and grayscale run at the stored size (32x32), before upscaling.
    flip and grayscale commute exactly with the bilinear resample (grayscale is linear per
    pixel, the resample a convex combination of pixels); brightness and saturation are exact up
    to where clamping at 0/1 bites; contrast uses the mean of the whole image instead of the
    crop's mean, and hue is non-linear per pixel, so both are close but not exact.
    tests/test_augment.py::test_pixel_ops_before_upscale_close_to_torchvision_order measures it.
  * crop + resize to the model's input size is ONE bilinear resample (affine grid_sample), not two.
  * the blur runs at the model's input size, where the notebook applied it: a 3x3 kernel at
    32x32 is a far stronger blur than at 224x224.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

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


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_divisor = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_divisor, (maxc - g) / cr_divisor, (maxc - b) / cr_divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    # For each sector i, which of (v, q, p, t) goes to r, g and b.
    table = torch.tensor([[0, 1, 2, 2, 3, 0], [3, 0, 0, 1, 2, 2], [2, 2, 3, 0, 0, 1]],
                         device=x.device)
    cand = torch.stack((v, q, p, t), dim=1)                     # (B,4,H,W)
    idx = table[:, i].permute(1, 0, 2, 3)                       # (B,3,H,W)
    return torch.gather(cand, 1, idx)


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    hsv = _rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + _per_image(f, x)[:, 0], 1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1))


# ------------------------------------------------------------------ random ops

def random_hflip(x: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    flip = _per_image((torch.rand(x.shape[0], generator=gen) < p).float(), x).bool()
    return torch.where(flip, x.flip(-1), x)


def random_grayscale(x: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    gray = _per_image((torch.rand(x.shape[0], generator=gen) < p).float(), x).bool()
    return torch.where(gray, grayscale(x).expand_as(x), x)


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


def resample(x: torch.Tensor, boxes: torch.Tensor | None, size: int) -> torch.Tensor:
    """Crop each image to its box (i, j, h, w) and resize it to size x size in ONE bilinear pass.

    Matches torchvision's resized_crop (bilinear, align_corners=False) inside the crop; on the
    box's outermost half pixel it reads the neighbouring pixel instead of clamping to the edge.
    """
    b, _, height, width = x.shape
    if boxes is None:
        if (height, width) == (size, size):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                             antialias=True)
    i, j, h, w = boxes.to(device=x.device, dtype=x.dtype).unbind(1)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = w / width
    theta[:, 0, 2] = (2 * j + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * i + h) / height - 1
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(B,) sigmas -> (B, k) normalized 1-D kernels, as torchvision's _get_gaussian_kernel1d."""
    half = (kernel_size - 1) * 0.5
    xs = torch.linspace(-half, half, kernel_size)
    k = torch.exp(-0.5 * (xs[None, :] / sigma[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur, each image with its own sigma; reflect padding as torchvision."""
    b, c, h, w = x.shape
    k1 = gaussian_kernels(sigma, kernel_size).to(device=x.device, dtype=x.dtype)   # (B,k)
    k1 = k1.repeat_interleave(c, dim=0)                                           # (B*C,k)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k1.view(b * c, 1, 1, kernel_size), groups=b * c)
    y = F.conv2d(y, k1.view(b * c, 1, kernel_size, 1), groups=b * c)
    return y.view(b, c, h, w)


def random_blur(x: torch.Tensor, gen: torch.Generator, kernel_size: int,
                sigma: Sequence[float]) -> torch.Tensor:
    return blur(x, _uniform(gen, x.shape[0], sigma[0], sigma[1]), kernel_size)


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
    if "hflip" in recipe:
        x = random_hflip(x, gen, **recipe["hflip"])
    boxes = (crop_params(gen, n, height, width, **recipe["crop"]) if "crop" in recipe else None)
    if "color_jitter" in recipe:
        x = random_color_jitter(x, gen, **recipe["color_jitter"])
    if "grayscale" in recipe:
        x = random_grayscale(x, gen, **recipe["grayscale"])
    x = resample(x, boxes, size)                                 # (B,3,size,size)
    if "blur" in recipe:
        x = random_blur(x, gen, **recipe["blur"])
    return normalize(x, mean, std)
