"""The one input path for every split: batched, per-image-random augmentation on the device.

`build_inputs(images_u8, recipe, ...)` turns a uint8 batch at the stored size into normalized
model inputs. Evaluation calls it with an empty recipe, so train and eval inputs differ only by
augmentation: same resize, same normalization, written once.

Layout: this package's own modules are the shared path, what an empty recipe runs (uint8 ->
float, resample.py: crop/resize matrices, normalize.py) plus the op registry (registry.py) and
batch mixing's entry point (mixing.py). Each op's own code is in ops/, imported by name only
when a recipe uses the op; so evaluation loads none of it, and a version's recipe file records
its ops' code (stages/recipe.py), so an edit to one op retrains only the versions using it.

Semantics follow torchvision's per-image ops (RandomHorizontalFlip, RandomResizedCrop,
ColorJitter, GaussianBlur, RandomGrayscale; Resize with antialias=True for evaluation), but
every image in the batch draws its own parameters (torchvision.transforms.v2 draws one set per
call, i.e. per batch). All random draws come from one CPU `torch.Generator`, so a seed gives
the same draws on every device.

Where the work runs (why it is fast and what that costs in exactness):
  * color jitter, grayscale and normalization run at the stored size (32x32), before upscaling,
    as per-image 3x3 colour matrices (brightness, contrast, saturation: one fused `baddbmm` per
    jitter round, see ops/color_jitter.py; grayscale + normalization: one more,
    color_and_normalize) plus the hue on the images whose op it is. Grayscale and normalization
    commute exactly with the bilinear resample (linear per pixel; the resample is a convex
    combination of pixels); brightness and saturation are exact up to where clamping at 0/1
    bites; contrast uses the mean of the whole image instead of the crop's mean, and hue is
    non-linear per pixel, so both are close but not exact.
    tests/test_augment.py::test_pixel_ops_before_upscale_close_to_torchvision_order measures it.
  * flip, crop and resize to the model's input size are ONE bilinear resample, and it is
    exactly torchvision's (edge clamping inside the crop, antialiasing of a downscale): per
    image, a (size x h) and a (size x w) weight matrix (the flip mirrors the latter's input
    axis), applied as two batched matmuls (fast on CPU and GPU alike).
  * the blur runs at the model's input size, where the notebook applied it: a 3x3 kernel at
    32x32 is a far stronger blur than at 224x224. Blur and resize are both linear per axis, so
    the blur is folded into the same two matrices: blur(resize(x)) at the cost of resize alone.
At 32x32 each torch op costs mostly fixed overhead and memory traffic, so the code keeps their
number low; `python -m bench.vs_revision REV` measures any change against an earlier revision.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType

import torch

from augvit.augment.normalize import color_and_normalize
from augvit.augment.registry import load_op
from augvit.augment.resample import apply_linear, resample_matrices

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
    op = {name: load_op(name) for name in recipe}            # only the recipe's op modules
    x = images.float().div_(255)                                 # (B,3,h,w) in [0,1]
    n, _, height, width = x.shape
    # A flip commutes with every per-pixel op; it is folded into the resample (mirrored columns).
    flips = op["hflip"].flip_draws(gen, n, **recipe["hflip"]) if "hflip" in op else None
    boxes = op["crop"].crop_params(gen, n, height, width, **recipe["crop"]) if "crop" in op \
        else None
    if "pad_crop" in op:
        boxes = op["pad_crop"].pad_crop_params(gen, n, height, width,
                                               recipe["pad_crop"]["padding"])
    policy = next((name for name in POLICIES if name in op), None)
    if "pad_crop" in op or policy:
        x = geometry_then_policy(x, op, recipe, boxes, flips, policy, gen)
        boxes = flips = None
    if "color_jitter" in op:
        x = op["color_jitter"].random_color_jitter(x, gen, **recipe["color_jitter"])
    colour = op["grayscale"].random_grayscale(gen, n, **recipe["grayscale"]) \
        if "grayscale" in op else None
    # Grayscale and normalization in one per-image colour matrix, here at the stored size:
    # exact, since resize and blur are linear maps whose rows sum to 1 and so commute with any
    # per-pixel colour matrix and offset (and it is 49x cheaper than at 224x224).
    x = color_and_normalize(x, colour, mean, std)
    kernels = op["blur"].blur_kernels(gen, n, **recipe["blur"], device=x.device) \
        if "blur" in op else None
    if boxes is not None or kernels is not None or flips is not None or \
            (height, width) != (size, size):
        # Flip + crop + resize (+ blur at the output size): one linear map per axis and image.
        x = resample_batch(x, op, size, boxes, flips, kernels)           # (B,3,size,size)
    if "erasing" in op:
        e = recipe["erasing"]
        boxes = op["erasing"].erasing_boxes(gen, n, size, size, e["p"], e["scale"], e["ratio"])
        x = op["erasing"].erase(x, boxes, e["value"], gen)
    return x


def resample_batch(x: torch.Tensor, op: Mapping[str, ModuleType],
                   size: int | tuple[int, int], boxes: torch.Tensor | None,
                   flips: torch.Tensor | None = None,
                   kernels: torch.Tensor | None = None) -> torch.Tensor:
    """(B,C,h,w) -> (B,C,*size): each image's box cropped (or the whole image), resized to size
    (an int: a square), flipped where `flips` and blurred with `kernels` (with those ops'
    modules in `op`), as one linear map per axis."""
    n, _, height, width = x.shape
    my, mx = resample_matrices(n, height, width, size, boxes, x.device)
    if flips is not None:
        mx = op["hflip"].mirror(mx, flips)
    if kernels is not None:
        my, mx = op["blur"].blur_matrices(my, mx, kernels)
    return apply_linear(x, my, mx)


def geometry_then_policy(x: torch.Tensor, op: Mapping[str, ModuleType],
                         recipe: Mapping[str, Mapping], boxes: torch.Tensor | None,
                         flips: torch.Tensor | None, policy: str | None,
                         gen: torch.Generator) -> torch.Tensor:
    """The documented order, exactly: the geometric ops first, at the stored size (h, w), which
    need not be square (for pad_crop and flip an exact integer shift and mirror, with
    torchvision's black or reflected border), then the policy there. RandomResizedCrop with a
    policy is resampled to the stored size here and then again to the model's size (a second
    interpolation)."""
    n, _, height, width = x.shape
    if "pad_crop" in op:                     # integer shifts and a mirror: gathers, no matmuls
        pad = recipe["pad_crop"]
        x = op["pad_crop"].shift_and_flip(x, boxes, flips, pad["padding"],
                                          pad["fill"] == "reflect")
    elif boxes is not None or flips is not None:
        x = resample_batch(x, op, (height, width), boxes, flips)
    if policy:
        x = op[policy].apply_policy(x, op[policy].policy_draws(gen, n, policy, recipe[policy],
                                                               height, width))
    return x
