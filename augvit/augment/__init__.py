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

from collections.abc import Mapping, Sequence

import torch

from augvit.augment.color import (color_and_normalize, grayscale_draws, random_color_jitter,
                                  uniform)
from augvit.augment.erasing import erase, erasing_boxes
from augvit.augment.geometry import (apply_linear, crop_params, pad_crop_params,
                                     resample_matrices, shift_and_flip)
from augvit.augment.policy import apply_policy, policy_draws


POLICIES = ("rand_augment", "trivial_augment")


def build_inputs(images: torch.Tensor, recipe: Mapping[str, Mapping], size: int,
                 mean: Sequence[float], std: Sequence[float],
                 gen: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B,3,h,w) at the stored size -> normalized float (B,3,size,size) model inputs.

    `recipe` maps op name -> settings (params.yaml's `aug` entries of one version); {} is the
    evaluation path. Ops run in a fixed order whatever the recipe lists. Batch mixing (mixup,
    cutmix) needs the labels and runs after this, in training (augvit/augment/mixing.py).
    """
    if recipe and gen is None:
        raise ValueError("build_inputs: a non-empty recipe needs a torch.Generator for its draws")
    x = images.float().div_(255)                                 # (B,3,h,w) in [0,1]
    n, _, height, width = x.shape
    # A flip commutes with every per-pixel op; it is folded into the resample (reversed columns).
    flips = (torch.rand(n, generator=gen) < recipe["hflip"]["p"]) if "hflip" in recipe else None
    boxes = crop_params(gen, n, height, width, **recipe["crop"]) if "crop" in recipe else None
    pad = recipe.get("pad_crop")
    if pad:
        boxes = pad_crop_params(gen, n, height, width, pad["padding"])
    policy = next((op for op in POLICIES if op in recipe), None)
    if pad or policy:
        # The documented order, exactly: the geometric ops first, at the stored size (for
        # pad_crop and flip an exact integer shift and mirror, with torchvision's black or
        # reflected border), then the policy there. RandomResizedCrop with a policy is resampled
        # to the stored size here and then again to the model's size (a second interpolation).
        if pad:                       # integer shifts and a mirror: gathers, no matmuls
            x = shift_and_flip(x, boxes, flips, pad["padding"], pad["fill"] == "reflect")
            boxes = flips = None
        elif boxes is not None or flips is not None:
            my, mx = resample_matrices(n, height, width, height, boxes, device=x.device,
                                       flips=flips)
            x = apply_linear(x, my, mx)
            boxes = flips = None
        if policy:
            x = apply_policy(x, policy_draws(gen, n, policy, recipe[policy], height, width))
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
        sigma, k = uniform(gen, n, lo, hi), recipe["blur"]["kernel_size"]
    if boxes is not None or sigma is not None or flips is not None or \
            (height, width) != (size, size):
        # Flip + crop + resize (+ blur at the output size): one linear map per axis and image.
        my, mx = resample_matrices(n, height, width, size, boxes, sigma, k, x.device, flips)
        x = apply_linear(x, my, mx)                              # (B,3,size,size)
    if "erasing" in recipe:
        e = recipe["erasing"]
        boxes = erasing_boxes(gen, n, size, size, e["p"], e["scale"], e["ratio"])
        x = erase(x, boxes, e["value"], gen)
    return x
