"""The one input path for every split: batched, per-image-random augmentation on the device.

`build_inputs(images_u8, recipe, ...)` turns a uint8 batch at the stored size into normalized
model inputs. Evaluation calls it with an empty recipe, so train and eval inputs differ only by
augmentation: same resize, same normalization, written once.

Semantics follow torchvision's per-image ops (RandomHorizontalFlip, RandomResizedCrop,
ColorJitter, GaussianBlur, RandomGrayscale), but every image in the batch draws its own
parameters (torchvision.transforms.v2 draws one set per call, i.e. per batch). All random draws
come from one CPU `torch.Generator`, so a seed gives the same draws on every device.

Where the work runs (why it is fast and what that costs in exactness):
  * color jitter, grayscale and normalization run at the stored size (32x32), before upscaling,
    as per-image 3x3 colour matrices (brightness, contrast, saturation: one fused `baddbmm` per
    jitter round, see apply_jitter; grayscale + normalization: one more, color_and_normalize)
    plus the hue on the images whose op it is. Grayscale and normalization commute exactly
    with the bilinear resample (linear per pixel; the resample is a convex combination of
    pixels); brightness and saturation are exact up to where clamping at 0/1 bites; contrast
    uses the mean of the whole image instead of the crop's mean, and hue is non-linear per
    pixel, so both are close but not exact.
    tests/test_augment.py::test_pixel_ops_before_upscale_close_to_torchvision_order measures it.
  * flip, crop and resize to the model's input size are ONE bilinear resample, and it is
    exactly torchvision's (edge clamping inside the crop included): per image, a (size x h) and
    a (size x w) weight matrix (the flip mirrors the latter's input axis), applied as two
    batched matmuls (fast on CPU and GPU alike).
  * the blur runs at the model's input size, where the notebook applied it: a 3x3 kernel at
    32x32 is a far stronger blur than at 224x224. Blur and resize are both linear per axis, so
    the blur is folded into the same two matrices: blur(resize(x)) at the cost of resize alone.
At 32x32 each torch op costs mostly fixed overhead and memory traffic, so the code keeps their
number low; `python -m bench.vs_revision REV` measures any change against an earlier revision.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)   # torchvision's rgb_to_grayscale weights


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (hi - lo) + lo


def _per_image(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) parameters -> (B,1,1,1) on x's device, for broadcasting over (B,3,H,W)."""
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


# ------------------------------------------------------------------ per-pixel ops (batched)
# Colour ops work on (B, 3, P) views (P = H*W pixels), so a per-image 3x3 colour matrix is one
# bmm. At 32x32 these ops are small and each costs mostly fixed overhead, so the fused forms
# below keep their number low (measured: bench/bench.py, the CPU data-path share).

def _pixels(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], x.shape[1], -1)


def _const(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, device=like.device, dtype=like.dtype)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) -> (B,1,H,W) luma, torchvision's weights (one matmul: cheaper than 5 ops)."""
    n, _, h, w = x.shape
    return torch.matmul(_const(GRAY_WEIGHTS, x), _pixels(x)).view(n, 1, h, w)


# The three affine ops one at a time, as torchvision defines them: the reference that the fused
# form in apply_jitter is tested against.
def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _per_image(f, x)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_image(f, x)
    return (f * x + (1 - f) * mean).clamp_(0, 1)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = _per_image(f, x)
    return (f * x + (1 - f) * grayscale(x)).clamp_(0, 1)


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
    x = _pixels(x)                                                   # (B,3,P)
    maxc = x.amax(dim=1, keepdim=True)
    chroma = maxc - x.amin(dim=1, keepdim=True)
    cand = torch.matmul(_const(_HUE_DIFF, x), x).div_(chroma.clamp(min=1e-12))
    cand.add_(_const([[0.0], [2.0], [4.0]], x))
    cand.sub_(torch.sign(maxc - x), alpha=100.0)                     # rule out non-max channels
    h = cand.amax(dim=1, keepdim=True)
    h.add_(6.0 * f.to(device=x.device, dtype=x.dtype).view(-1, 1, 1))
    k = h + _const([[5.0], [3.0], [1.0]], x)                         # (B,3,P)
    k.sub_(torch.floor(k * (1 / 6)), alpha=6.0)                      # k mod 6
    k = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return torch.addcmul(maxc, chroma, k, value=-1.0).view(shape)


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
    x = _pixels(x).clone()                           # never write into the caller's x
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


def grayscale_draws(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    """(n,) bool: which images RandomGrayscale(p) turns gray."""
    return torch.rand(n, generator=gen) < p


def random_grayscale(x: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """Each image turned gray with probability p (all three channels = its luma)."""
    return color_and_normalize(x, grayscale_draws(gen, x.shape[0], p), (0.0,) * 3, (1.0,) * 3)


def color_and_normalize(x: torch.Tensor, gray: torch.Tensor | None, mean: Sequence[float],
                        std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel, after turning the images where `gray` is True to gray.

    One baddbmm with the per-image matrix diag(1/std) G (G = 1 w^T for a gray image, else I)
    and the offset -mean/std. Train and eval both come through here (eval: gray=None).
    """
    n = x.shape[0]
    inv = 1.0 / torch.tensor(std, dtype=torch.float64)
    mats = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
    if gray is not None:
        luma = torch.tensor(GRAY_WEIGHTS, dtype=torch.float64).expand(3, 3)
        mats = torch.where(gray[:, None, None], luma, mats)
    mats = (inv[:, None] * mats).to(device=x.device, dtype=x.dtype)
    bias = (-torch.tensor(mean, dtype=torch.float64) * inv).to(device=x.device, dtype=x.dtype)
    return torch.baddbmm(bias.view(1, 3, 1), mats, _pixels(x)).view(x.shape)


def crop_params(gen: torch.Generator, n: int, height: int, width: int,
                scale: Sequence[float], ratio: Sequence[float], tries: int = 10) -> torch.Tensor:
    """torchvision RandomResizedCrop.get_params for n images at once -> (n, 4) = (i, j, h, w).

    Draws from `gen`; the arithmetic on these few hundred numbers runs in numpy (float64, as
    torchvision's Python floats), several times cheaper than as torch ops this small.
    """
    area = height * width
    target = area * _uniform(gen, n * tries, scale[0], scale[1]).view(n, tries).double().numpy()
    log_r = _uniform(gen, n * tries, math.log(ratio[0]), math.log(ratio[1]))
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
                  reverse: torch.Tensor | None = None) -> torch.Tensor:
    """(B, out_size, in_size) bilinear weights: crop [start, start+length) then resize.

    Exactly PyTorch's bilinear resize (align_corners=False; torchvision's resize for an upscale),
    edge clamping inside the crop included: output pixel u reads source coordinate
    s = clamp((u + 0.5) * length / out_size - 0.5, 0, length - 1) of the crop, and the weight of
    pixel p is the triangle max(0, 1 - |s - p|), i.e. 1 - frac(s) and frac(s) on its two
    neighbours. Each row sums to 1. Built on start's device, in float32 (PyTorch's own resize
    computes its source coordinates in float32 too). `reverse` (B,) bool: for those images the
    input axis is mirrored first (a horizontal flip, then the crop), at no extra cost.
    """
    device = start.device
    u = torch.arange(out_size, dtype=torch.float32, device=device) + 0.5
    length = length.to(torch.float32)[:, None]
    src = (u * (length / out_size) - 0.5).clamp_(min=0)
    src = torch.minimum(src, length - 1)                                     # (B,out), in crop
    pix = torch.arange(in_size, dtype=torch.float32, device=device).expand(len(start), -1)
    if reverse is not None:
        pix = torch.where(reverse.to(device)[:, None], in_size - 1 - pix, pix)
    pix = pix - start.to(torch.float32)[:, None]                           # in crop coords
    return (1 - (src[:, :, None] - pix[:, None, :]).abs_()).clamp_(min=0)


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
                      device: torch.device | str = "cpu",
                      flips: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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
        m = interp_matrix(torch.cat((i, j)), torch.cat((h, w)), height, size, reverse)
        if kernels is not None:
            m = blur_rows(m, torch.cat((kernels, kernels)))
        return m[:n], m[n:]
    my, mx = interp_matrix(i, h, height, size), interp_matrix(j, w, width, size, flips)
    if kernels is not None:
        my, mx = blur_rows(my, kernels), blur_rows(mx, kernels)
    return my, mx


def resample(x: torch.Tensor, boxes: torch.Tensor | None, size: int) -> torch.Tensor:
    """Crop each image to its box (i, j, h, w) and resize it to size x size in ONE resample."""
    n, _, height, width = x.shape
    if boxes is None and (height, width) == (size, size):
        return x
    return apply_linear(x, *resample_matrices(n, height, width, size, boxes, device=x.device))


def blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Gaussian blur, each image with its own sigma (torchvision's GaussianBlur semantics)."""
    n, _, height, width = x.shape
    eye_y = torch.eye(height, device=x.device).expand(n, -1, -1)
    eye_x = torch.eye(width, device=x.device).expand(n, -1, -1)
    k = gaussian_kernels(sigma.to(x.device), kernel_size)
    return apply_linear(x, blur_rows(eye_y, k), blur_rows(eye_x, k))


# ------------------------------------------------------------------ the one input path

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
    gray = grayscale_draws(gen, n, **recipe["grayscale"]) if "grayscale" in recipe else None
    # Grayscale and normalization in one per-image colour matrix, here at the stored size:
    # exact, since resize and blur are linear maps whose rows sum to 1 and so commute with any
    # per-pixel colour matrix and offset (and it is 49x cheaper than at 224x224).
    x = color_and_normalize(x, gray, mean, std)
    sigma, k = None, 3
    if "blur" in recipe:
        lo, hi = recipe["blur"]["sigma"]
        sigma, k = _uniform(gen, n, lo, hi), recipe["blur"]["kernel_size"]
    if boxes is None and sigma is None and flips is None and (height, width) == (size, size):
        return x
    # Flip + crop + resize (+ blur at the output size): one linear map per axis and image.
    my, mx = resample_matrices(n, height, width, size, boxes, sigma, k, x.device, flips)
    return apply_linear(x, my, mx)                               # (B,3,size,size)
