"""Each augmentation op: shape, range, per-image randomness, statistics, torchvision agreement."""
from __future__ import annotations

import hashlib
import itertools
import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from augvit.augment import build_inputs
from augvit.augment import resample as R
from augvit.augment.normalize import color_and_normalize
from augvit.augment.ops import blur as B
from augvit.augment.ops import color_jitter as CJ
from augvit.augment.ops import crop as CR
from augvit.augment.ops import grayscale as GR
from augvit.augment.ops import hflip as HF
from augvit.augment.ops.common import grayscale, uniform

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
V1 = {"hflip": {"p": 0.5}, "crop": {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]},
      "color_jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.2},
      "blur": {"kernel_size": 3, "sigma": [0.1, 2.0]}, "grayscale": {"p": 0.2}}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=gen(seed), dtype=torch.uint8)


# ------------------------------------------------------------------ references built from the ops

def resample(x: torch.Tensor, boxes: torch.Tensor | None, size: int) -> torch.Tensor:
    """Crop each image to its box (i, j, h, w) and resize it, in the one-pass resample."""
    n, _, h, w = x.shape
    return R.apply_linear(x, *R.resample_matrices(n, h, w, size, boxes))


def blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Only the blur: each image with its own sigma, as two matmuls."""
    n, _, h, w = x.shape
    k = B.gaussian_kernels(sigma, kernel_size)
    return R.apply_linear(x, B.blur_rows(torch.eye(h).expand(n, -1, -1), k),
                          B.blur_rows(torch.eye(w).expand(n, -1, -1), k))


def random_grayscale(x: torch.Tensor, g: torch.Generator, p: float) -> torch.Tensor:
    return color_and_normalize(x, GR.random_grayscale(g, x.shape[0], p), (0.0,) * 3, (1.0,) * 3)


# ------------------------------------------------------------------ the one input path

def test_empty_recipe_is_exactly_the_eval_input():
    """The notebook (README.md) normalized eval inputs but not train inputs: never again."""
    x = batch(4)
    eval_in = build_inputs(x, {}, 64, MEAN, STD)
    train_in = build_inputs(x, {}, 64, MEAN, STD, gen())
    assert torch.equal(train_in, eval_in)
    manual = TF.resize(x.float() / 255, [64, 64], InterpolationMode.BILINEAR, antialias=True)
    manual = TF.normalize(manual, list(MEAN), list(STD))
    torch.testing.assert_close(eval_in, manual, atol=1e-5, rtol=0)


def test_output_shape_dtype_range_and_normalization():
    out = build_inputs(batch(5), V1, 224, MEAN, STD, gen())
    assert out.shape == (5, 3, 224, 224) and out.dtype == torch.float32
    assert out.min() >= -1 - 1e-5 and out.max() <= 1 + 1e-5


def test_same_seed_same_draws_other_seed_other_draws():
    x = batch(6)
    a = build_inputs(x, V1, 32, MEAN, STD, gen(1))
    b = build_inputs(x, V1, 32, MEAN, STD, gen(1))
    c = build_inputs(x, V1, 32, MEAN, STD, gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_every_image_gets_its_own_draws():
    same = batch(1).expand(16, -1, -1, -1).contiguous()
    out = build_inputs(same, V1, 32, MEAN, STD, gen())
    flat = out.flatten(1)
    dist = torch.cdist(flat, flat)
    assert (dist + torch.eye(16) * 1e9).min() > 1e-3


def test_recipe_without_generator_is_refused():
    with pytest.raises(ValueError, match="Generator"):
        build_inputs(batch(2), V1, 32, MEAN, STD)


# ------------------------------------------------------------------ statistics of the draws

def test_flip_rate_is_p():
    ramp = torch.arange(32, dtype=torch.uint8).mul(8).view(1, 1, 1, 32).expand(4000, 3, 32, 32)
    out = build_inputs(ramp, {"hflip": {"p": 0.5}}, 32, (0.0,) * 3, (1.0,) * 3, gen())
    plain = ramp.float() / 255
    flipped = torch.isclose(out, plain.flip(-1), atol=1e-6).flatten(1).all(1)
    kept = torch.isclose(out, plain, atol=1e-6).flatten(1).all(1)
    assert (flipped ^ kept).all()                     # each image exactly one or the other
    assert abs(flipped.float().mean().item() - 0.5) < 0.03
    none = build_inputs(ramp[:8], {"hflip": {"p": 0.0}}, 32, (0.0,) * 3, (1.0,) * 3, gen())
    assert torch.allclose(none, plain[:8], atol=1e-6)


def test_grayscale_rate_is_p_and_gray_is_gray():
    x = torch.rand(4000, 3, 2, 2, generator=gen())
    out = random_grayscale(x, gen(), p=0.2)
    gray = (out[:, 0] == out[:, 1]).all(-1).all(-1) & (out[:, 1] == out[:, 2]).all(-1).all(-1)
    assert abs(gray.float().mean().item() - 0.2) < 0.03
    torch.testing.assert_close(out[gray], TF.rgb_to_grayscale(x[gray], 3))


def test_crop_boxes_respect_scale_and_ratio():
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    boxes = CR.crop_params(gen(), 5000, 32, 32, scale, ratio)
    i, j, h, w = boxes.unbind(1)
    assert (i >= 0).all() and (j >= 0).all() and (i + h <= 32).all() and (j + w <= 32).all()
    area = h * w / 1024
    # rounding to whole pixels widens the ranges by at most ~one pixel per side
    assert area.min() >= scale[0] - 0.03 and area.max() <= 1.0
    r = w / h
    assert r.min() >= ratio[0] * 0.8 and r.max() <= ratio[1] * 1.25
    assert area.std() > 0.1 and len(set(i.tolist())) > 10       # really varies per image


def test_crop_fallback_is_the_central_crop():
    # no try can succeed with an impossible scale: torchvision falls back to the centre crop
    boxes = CR.crop_params(gen(), 3, 32, 32, (1.5, 2.0), (3 / 4, 4 / 3))
    assert boxes.tolist() == [[0, 0, 32, 32]] * 3


def test_jitter_factors_within_their_ranges_and_orders_are_permutations():
    order, f = CJ.jitter_params(gen(), 5000, brightness=0.2, contrast=0.3, saturation=0.4, hue=0.1)
    assert (order.sort(1).values == torch.arange(4)).all()
    assert len({tuple(o) for o in order.tolist()}) == 24       # all 24 orders occur
    for k, (lo, hi) in enumerate([(0.8, 1.2), (0.7, 1.3), (0.6, 1.4), (-0.1, 0.1)]):
        assert f[:, k].min() >= lo and f[:, k].max() <= hi
        assert f[:, k].min() < lo + 0.01 and f[:, k].max() > hi - 0.01


def test_blur_sigma_within_range():
    k = B.gaussian_kernels(uniform(gen(), 1000, 0.1, 2.0), 3)
    assert torch.allclose(k.sum(1), torch.ones(1000, dtype=k.dtype))
    centre = k[:, 1]
    # sigma 0.1 -> almost a delta; sigma 2.0 -> centre weight 1/(1+2*exp(-1/8))
    assert centre.max() <= 1.0 and centre.min() >= 1 / (1 + 2 * math.exp(-1 / 8)) - 1e-4


def natural(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth random images with saturated and gray areas, so clamping and hue ties occur."""
    x = torch.rand(n, 3, size, size, generator=gen(seed))
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1) * 1.6 - 0.3
    x = x.clamp(0, 1)                                   # exact 0s and 1s: clamp and ties
    x[:, :, :2] = x[:, :1, :2]                          # gray rows (all channels equal)
    x[:, 1, 2:4] = x[:, 0, 2:4]                         # r == g ties
    x[:, 2, 4:6] = x[:, 0, 4:6]                         # r == b ties
    x[:, 2, 6:8] = x[:, 1, 6:8]                         # g == b ties
    return x


TV_JITTER = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def test_hue_matches_torchvision_on_ties_gray_and_saturated_pixels():
    x = natural(16)
    f = torch.linspace(-0.5, 0.5, 16)
    ours = CJ.adjust_hue(x, f)
    for b in range(16):
        torch.testing.assert_close(ours[b], TF.adjust_hue(x[b], f[b].item()), atol=2e-5, rtol=0)


def test_jitter_applies_each_images_own_order():
    """All 24 orders, twice each, factors at the ends of wide ranges: the fused rounds give
    what torchvision's four ops give one image at a time, in that image's order."""
    n = 48
    x = natural(n, seed=1)
    order = torch.tensor(list(itertools.permutations(range(4))) * 2)
    order, f = order[torch.randperm(n, generator=gen(2))], torch.empty(n, 4)
    for j, (lo, hi) in enumerate([(0.5, 1.5), (0.5, 1.5), (0.0, 2.0), (-0.5, 0.5)]):
        f[:, j] = torch.rand(n, generator=gen(3 + j)) * (hi - lo) + lo
    f[:4] = torch.tensor([1.0, 1.0, 1.0, 0.0])          # all-identity images stay unchanged
    before = x.clone()
    out = CJ.apply_jitter(x, order, f)
    assert torch.equal(x, before)                       # the caller's tensor is not written
    for b in range(n):
        ref = x[b]
        for j in order[b].tolist():
            ref = TV_JITTER[j](ref, f[b, j].item())
        torch.testing.assert_close(out[b], ref, atol=2e-5, rtol=0)
    assert torch.equal(out[:4], x[:4])


def test_grayscale_and_normalize_in_one_matrix_match_torchvision():
    x = natural(6)
    gray = torch.tensor([True, False, True, False, False, True])
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    out = color_and_normalize(x, GR.colour_matrices(gray), mean, std)
    for b in range(6):
        ref = TF.rgb_to_grayscale(x[b], 3) if gray[b] else x[b]
        torch.testing.assert_close(out[b], TF.normalize(ref, list(mean), list(std)),
                                   atol=1e-5, rtol=0)


def test_flip_then_crop_in_one_resample_matches_torchvision():
    """The notebook flipped, then cropped: the flip folded into the resample does the same."""
    x = torch.rand(4, 3, 32, 32, generator=gen())
    boxes = torch.tensor([[0, 0, 32, 32], [3, 5, 20, 16], [10, 0, 22, 30], [1, 2, 8, 8]]).float()
    flips = torch.tensor([True, True, False, True])
    my, mx = R.resample_matrices(4, 32, 32, 48, boxes)
    ours = R.apply_linear(x, my, HF.mirror(mx, flips))
    for b, (i, j, h, w) in enumerate(boxes.int().tolist()):
        img = TF.horizontal_flip(x[b]) if flips[b] else x[b]
        ref = TF.resized_crop(img, i, j, h, w, [48, 48], InterpolationMode.BILINEAR,
                              antialias=True)
        torch.testing.assert_close(ours[b], ref, atol=1e-5, rtol=0)


def test_blur_matches_torchvision_gaussian_blur():
    x = torch.rand(3, 3, 24, 24, generator=gen())
    sigmas = torch.tensor([0.1, 0.7, 2.0])
    ours = blur(x, sigmas, 3)
    for b, s in enumerate(sigmas.tolist()):
        ref = TF.gaussian_blur(x[b], [3, 3], [s, s])
        torch.testing.assert_close(ours[b], ref, atol=1e-5, rtol=0)


def test_pixel_ops_before_upscale_close_to_torchvision_order():
    """What running jitter/grayscale at 32x32 before the upscale costs, measured.

    Reference: torchvision's order (crop+resize to 224, then jitter, then grayscale) with the
    same parameters. Measured here: mean |difference| ~0.004 (on a [0,1] scale, i.e. about one
    grey level in 255), the largest part from hue (non-linear per pixel) and contrast (whole
    image mean vs crop mean).
    """
    x = torch.rand(16, 3, 32, 32, generator=gen())
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)        # natural-ish images, not pure noise
    boxes = CR.crop_params(gen(1), 16, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3))
    order, f = CJ.jitter_params(gen(2), 16, 0.2, 0.2, 0.2, 0.2)
    fast = resample(CJ.apply_jitter(x, order, f), boxes, 224)
    ref = CJ.apply_jitter(resample(x, boxes, 224), order, f)
    diff = (fast - ref).abs()
    assert diff.mean() < 0.01, diff.mean()
    # grayscale and brightness-only commute exactly (up to float rounding)
    gray_fast = resample(grayscale(x).expand_as(x), boxes, 224)
    gray_ref = grayscale(resample(x, boxes, 224)).expand_as(gray_fast)
    torch.testing.assert_close(gray_fast, gray_ref, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ stored larger than the model

def u8_images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    x = torch.rand(n, 3, h, w, generator=gen(seed))
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1) * 1.6 - 0.3           # edges and flat areas
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.mark.parametrize("stored,size", [((64, 64), 32), ((48, 48), 32), ((50, 50), 17),
                                         ((40, 64), 32), ((224, 224), 32)])
def test_eval_downscale_is_antialiased_as_torchvisions_resize(stored, size):
    """torchvision's Resize antialiases a downscale (v2's default); without it, 64 -> 32
    differed by up to 27.8/255."""
    x = u8_images(4, *stored)
    ours = build_inputs(x, {}, size, MEAN, STD)
    ref = TF.resize(x.float() / 255, [size, size], InterpolationMode.BILINEAR, antialias=True)
    torch.testing.assert_close(ours, TF.normalize(ref, list(MEAN), list(STD)), atol=1e-5, rtol=0)


def test_random_resized_crop_from_a_larger_image_is_torchvisions():
    """Crops larger than the model's input are antialiased, smaller ones are not (a batch has
    both), each after its own flip: torchvision's flip then RandomResizedCrop, same draws."""
    recipe = {"hflip": {"p": 0.5}, "crop": {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]}}
    x = u8_images(32, 64, 64)
    ours = build_inputs(x, recipe, 32, MEAN, STD, gen(3))
    g = gen(3)                                         # the same draws, in the pipeline's order
    flips = torch.rand(32, generator=g) < 0.5
    boxes = CR.crop_params(g, 32, 64, 64, **recipe["crop"])
    assert (boxes[:, 2:] > 32).any() and (boxes[:, 2:] < 32).any()
    for b, (i, j, h, w) in enumerate(boxes.int().tolist()):
        img = x[b].float() / 255
        img = TF.horizontal_flip(img) if flips[b] else img
        ref = TF.resized_crop(img, i, j, h, w, [32, 32], InterpolationMode.BILINEAR,
                              antialias=True)
        torch.testing.assert_close(ours[b], TF.normalize(ref, list(MEAN), list(STD)),
                                   atol=1e-5, rtol=0)


def fixed_boxes(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    """n crop boxes (i, j, h, w) inside the image, from torch's own generator only (the same
    numbers on every host)."""
    g = gen(seed)
    h = torch.randint(1, height + 1, (n,), generator=g)
    w = torch.randint(1, width + 1, (n,), generator=g)
    i = (torch.rand(n, generator=g) * (height - h + 1)).floor()
    j = (torch.rand(n, generator=g) * (width - w + 1)).floor()
    return torch.stack((i, j, h, w), 1).float()


def digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# sha256 prefixes of the (my, mx) resample matrices of crops with flips, and of the whole image,
# computed before the antialiasing was added: upscaling (the default path) must stay bit for
# bit what it was, so committed results are unchanged. Elementwise float32 arithmetic only, so
# the same on every host.
UPSCALE_DIGESTS = {
    (32, 32, 32): ("1af678fa904757dc", "520bb5a9177d3801"),
    (32, 32, 224): ("222b9c5f79014cfc", "eaea34a6aef8de8a"),
    (24, 32, 32): ("fd06ac4b23e015df", "43c27dadee241670"),
    (16, 16, 48): ("a7c33d3e17aa7d65", "d900e0285f2af150"),
}


@pytest.mark.parametrize("shape", list(UPSCALE_DIGESTS))
def test_upscale_matrices_are_bit_for_bit_what_they_were(shape):
    height, width, size = shape
    boxes = fixed_boxes(12, height, width, 0)
    flips = torch.arange(12) % 3 == 0
    my, mx = R.resample_matrices(12, height, width, size, boxes)
    crops = digest(my, HF.mirror(mx, flips))
    whole = digest(*R.resample_matrices(12, height, width, size, None))
    assert (crops, whole) == UPSCALE_DIGESTS[shape]


# ------------------------------------------------------------------ non-square stored images

POLICY0 = {"rand_augment": {"num_ops": 0, "magnitude": 9}}      # a policy that changes nothing


@pytest.mark.parametrize("geometry", ["hflip", "crop", "hflip+crop", "hflip+pad_crop"])
def test_geometry_before_a_policy_keeps_a_non_square_image_whole(geometry):
    """With a policy, the geometric ops run at the stored size, (24, 32) here, not squashed to
    (24, 24): torchvision's flip, crop (or pad and crop), then the resize, same draws."""
    recipe = {"hflip": {"p": 0.5}, "crop": {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]},
              "pad_crop": {"padding": 4, "fill": "reflect"}}
    recipe = {op: recipe[op] for op in geometry.split("+")} | POLICY0
    x = u8_images(8, 24, 32)
    ours = build_inputs(x, recipe, 32, MEAN, STD, gen(1))
    g = gen(1)
    flips = torch.rand(8, generator=g) < 0.5 if "hflip" in recipe else torch.zeros(8, dtype=bool)
    if "crop" in recipe:
        boxes = CR.crop_params(g, 8, 24, 32, **recipe["crop"])
    if "pad_crop" in recipe:
        boxes = torch.randint(0, 9, (8, 2), generator=g) - 4      # pad_crop's window offsets
    for b in range(8):
        img = x[b].float() / 255
        img = TF.horizontal_flip(img) if flips[b] else img
        if "crop" in recipe:
            i, j, h, w = boxes[b].int().tolist()
            img = TF.resized_crop(img, i, j, h, w, [24, 32], InterpolationMode.BILINEAR,
                                  antialias=True)
        if "pad_crop" in recipe:
            i, j = boxes[b].tolist()
            img = TF.crop(TF.pad(img, [4], padding_mode="reflect"), i + 4, j + 4, 24, 32)
        ref = TF.resize(img, [32, 32], InterpolationMode.BILINEAR, antialias=True)
        torch.testing.assert_close(ours[b], TF.normalize(ref, list(MEAN), list(STD)),
                                   atol=1e-5, rtol=0)


GEOMETRY = [{}, {"crop": {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]}},
            {"pad_crop": {"padding": 4, "fill": "zero"}},
            {"pad_crop": {"padding": 4, "fill": "reflect"}}]
POLICIES = [{}, {"rand_augment": {"num_ops": 2, "magnitude": 9}}, {"trivial_augment": {}}]


@pytest.mark.parametrize("policy", POLICIES, ids=["no-policy", "rand", "trivial"])
@pytest.mark.parametrize("flip", [False, True], ids=["", "flip"])
@pytest.mark.parametrize("geometry", GEOMETRY, ids=["", "crop", "pad", "pad-reflect"])
def test_every_op_combination_takes_a_non_square_batch(geometry, flip, policy):
    """Every combination that runs geometry and policy at the stored size, with all the other
    ops after it: a (4, 3, 24, 32) batch gives (4, 3, size, size) inputs."""
    recipe = {**geometry, **policy, **({"hflip": {"p": 0.5}} if flip else {}),
              **{op: V1[op] for op in ("color_jitter", "blur", "grayscale")},
              "erasing": {"p": 0.5, "scale": [0.02, 0.33], "ratio": [0.3, 3.3], "value": "zero"}}
    x = u8_images(4, 24, 32)
    for size in (16, 32, 48):
        out = build_inputs(x, recipe, size, MEAN, STD, gen())
        assert out.shape == (4, 3, size, size) and torch.isfinite(out).all()
        assert out.min() >= -1 - 1e-5 and out.max() <= 1 + 1e-5
