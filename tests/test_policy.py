"""The ViT-recipe ops against torchvision's own: pad-crop, RandAugment and TrivialAugmentWide
(each primitive exactly, the draws statistically), random erasing, MixUp and CutMix."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from scipy import stats
from torchvision.transforms import InterpolationMode

from augvit.augment import build_inputs
from augvit.augment import mixing
from augvit.augment import resample as R
from augvit.augment.ops import erasing as E
from augvit.augment.ops import hflip as HF
from augvit.augment.ops import mixup_cutmix as M
from augvit.augment.ops import pad_crop as PC
from augvit.augment.ops import policy as P

NORM0 = ((0.0,) * 3, (1.0,) * 3)          # "normalization" that leaves [0, 1] images as they are


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def natural(n: int, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth images on the 8-bit grid, with saturated and flat areas (ties, clamping)."""
    x = torch.rand(n, 3, h, w, generator=gen(seed))
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1) * 1.6 - 0.3
    return (x.clamp(0, 1) * 255).round() / 255


# ------------------------------------------------------------------ pad_crop

@pytest.mark.parametrize("fill", ["zero", "reflect"])
@pytest.mark.parametrize("size", [32, 56])
def test_pad_crop_is_torchvisions_random_crop_then_resize(fill, size):
    x = natural(6)
    boxes = PC.pad_crop_params(gen(), 6, 32, 32, 4)
    boxes[0, :2] = torch.tensor([-4, 4])                     # the extreme windows, too
    boxes[1, :2] = torch.tensor([4, -4])
    flips = torch.tensor([False, True, False, True, False, True])
    pad = 4 if fill == "reflect" else 0
    my, mx = R.resample_matrices(6, 32, 32, size, boxes, reflect_pad=pad)
    ours = R.apply_linear(x, my, HF.mirror(mx, flips))
    for b, (i, j, _, _) in enumerate(boxes.int().tolist()):
        img = TF.horizontal_flip(x[b]) if flips[b] else x[b]
        padded = TF.pad(img, [4], fill=0, padding_mode="constant" if fill == "zero" else "reflect")
        ref = TF.crop(padded, i + 4, j + 4, 32, 32)
        if size != 32:
            ref = TF.resize(ref, [size, size], InterpolationMode.BILINEAR, antialias=True)
        torch.testing.assert_close(ours[b], ref, atol=1e-5, rtol=0)


def test_pad_crop_draws_cover_every_offset_uniformly():
    boxes = PC.pad_crop_params(gen(), 9000, 32, 32, 4)
    assert boxes[:, 2:].eq(32).all()
    counts = np.bincount((boxes[:, 0] + 4).int().numpy(), minlength=9)
    assert len(counts) == 9 and stats.chisquare(counts).pvalue > 1e-3


def test_zero_padding_is_black_after_normalization_too():
    """The padded border is torchvision's black, (0 - mean) / std once normalized, not the
    mean colour, whatever the model's input size."""
    x = torch.full((64, 3, 32, 32), 200, dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    recipe = {"pad_crop": {"padding": 4, "fill": "zero"}}
    out = build_inputs(x, recipe, 32, mean, std, gen())
    big = build_inputs(x, recipe, 64, mean, std, gen())
    assert torch.isclose(big.permute(1, 0, 2, 3).reshape(3, -1), (-torch.tensor(mean) /
                         torch.tensor(std)).view(3, 1), atol=1e-5).all(0).any()
    black = (-torch.tensor(mean) / torch.tensor(std)).view(3, 1)
    inside = (200 / 255 - torch.tensor(mean)) / torch.tensor(std)
    values = out.permute(1, 0, 2, 3).reshape(3, -1)
    is_black = torch.isclose(values, black, atol=1e-5).all(0)
    is_inside = torch.isclose(values, inside.view(3, 1), atol=1e-5).all(0)
    assert (is_black | is_inside).all() and is_black.any() and is_inside.mean(dtype=float) > 0.7


# ------------------------------------------------------------------ the policies' primitives

def tv_op(op: str, image: torch.Tensor, magnitude: float) -> torch.Tensor:
    """torchvision RandAugment's own application of one op (nearest, zero fill)."""
    return T.RandAugment()._apply_image_or_video_transform(
        image, op, magnitude, interpolation=InterpolationMode.NEAREST, fill={})


MAGNITUDES = {
    "ShearX": [0.09, -0.3, 0.99], "ShearY": [0.09, -0.3, -0.99],
    "TranslateX": [4.35, -14.5, 32.0], "TranslateY": [4.35, -7.2, 31.9],
    "Rotate": [9.0, -30.0, 90.0, 135.0, -180.0], "Brightness": [0.27, -0.9, 0.99],
    "Color": [0.27, -0.9, 0.99], "Contrast": [0.27, -0.9, 0.99],
    "Sharpness": [0.27, -0.9, 0.99], "Posterize": [8.0, 7.0, 4.0, 2.0],
    "Solarize": [1.0, 0.7, 0.3, 0.0], "AutoContrast": [0.0], "Equalize": [0.0],
    "Identity": [0.0],
}


@pytest.mark.parametrize("op", P.OPS)
@pytest.mark.parametrize("shape", [(32, 32), (24, 32)])
def test_each_policy_primitive_equals_torchvisions(op, shape):
    mags = MAGNITUDES[op]
    x = natural(len(mags), *shape, seed=P.OPS.index(op))
    x[0, :, :4] = x[0, :, :4].mean(dim=0, keepdim=True)            # gray rows: ties
    ours = P.apply_op(x.clone(), op, torch.tensor(mags, dtype=torch.float64))
    for b, m in enumerate(mags):
        torch.testing.assert_close(ours[b], tv_op(op, x[b], m), atol=1e-6, rtol=0)


def test_a_round_applies_each_images_own_op():
    ops = torch.arange(len(P.OPS)).repeat(2)
    mags = torch.tensor([MAGNITUDES[P.OPS[k]][0] for k in ops.tolist()], dtype=torch.float64)
    x = natural(len(ops))
    before = x.clone()
    out = P.apply_policy(x, [(ops, mags)])
    assert torch.equal(x, before)                                  # the caller's x untouched
    for b, k in enumerate(ops.tolist()):
        torch.testing.assert_close(out[b], tv_op(P.OPS[k], x[b], mags[b].item()), atol=1e-6,
                                   rtol=0)


@pytest.mark.parametrize("policy,tv", [("rand_augment", T.RandAugment),
                                       ("trivial_augment", T.TrivialAugmentWide)])
def test_magnitude_tables_are_torchvisions(policy, tv):
    table = P.magnitude_table(policy, 24, 32)
    for k, op in enumerate(P.OPS):
        fn, signed = tv._AUGMENTATION_SPACE[op]
        ref = fn(31, 24, 32)
        want = torch.zeros(31, dtype=torch.float64) if ref is None else ref.to(torch.float64)
        torch.testing.assert_close(table[k], want, atol=1e-6, rtol=0)
        assert signed == (op in P.SIGNED), op


def test_rand_augment_draws_follow_torchvisions_distribution():
    """Op uniform over the 14, magnitude the fixed bin, signed ops negated half the time."""
    n = 28000
    draws = P.policy_draws(gen(), n, "rand_augment", {"num_ops": 2, "magnitude": 9}, 32, 32)
    assert len(draws) == 2
    table = P.magnitude_table("rand_augment", 32, 32)
    for op, mag in draws:
        counts = np.bincount(op.numpy(), minlength=14)
        assert stats.chisquare(counts).pvalue > 1e-3, counts
        torch.testing.assert_close(mag.abs(), table[op, 9])
        signed = torch.tensor([P.OPS[k] in P.SIGNED for k in op.tolist()])
        negative = (mag[signed] < 0).sum().item()
        assert stats.binomtest(negative, int(signed.sum()), 0.5).pvalue > 1e-3
        assert (mag[~signed] >= 0).all()
    assert not torch.equal(draws[0][0], draws[1][0])              # rounds draw independently


def test_trivial_augment_draws_op_and_bin_uniformly():
    n = 31000
    ((op, mag),) = P.policy_draws(gen(1), n, "trivial_augment", {}, 32, 32)
    assert stats.chisquare(np.bincount(op.numpy(), minlength=14)).pvalue > 1e-3
    rotate = op == P.OPS.index("Rotate")
    bins = (mag[rotate].abs() / 4.5).round().long()                # linspace(0, 135, 31)
    assert stats.chisquare(np.bincount(bins.numpy(), minlength=31)).pvalue > 1e-3
    assert (mag[rotate] < 0).float().mean().sub(0.5).abs() < 0.05


def test_a_test_of_the_draws_can_fail():
    """The statistical checks above reject a biased sampler (here: op 0 twice as likely)."""
    biased = np.bincount(np.r_[np.arange(14).repeat(1000), np.zeros(1000, int)], minlength=14)
    assert stats.chisquare(biased).pvalue < 1e-3


# ------------------------------------------------------------------ erasing

def test_erasing_with_a_given_box_is_torchvisions_erase():
    x = torch.randn(4, 3, 32, 32, generator=gen())
    boxes = torch.tensor([[3, 5, 10, 7], [0, 0, 0, 0], [20, 1, 12, 30], [0, 0, 31, 31]])
    out = E.erase(x.clone(), boxes, "zero")
    for b, (i, j, h, w) in enumerate(boxes.tolist()):
        ref = TF.erase(x[b], i, j, h, w, torch.zeros(1)) if h else x[b]
        assert torch.equal(out[b], ref)
    noisy = E.erase(x.clone(), boxes, "random", gen())
    for b, (i, j, h, w) in enumerate(boxes.tolist()):
        mask = torch.zeros(32, 32, dtype=torch.bool)
        mask[i:i + h, j:j + w] = True
        assert torch.equal(noisy[b][:, ~mask], x[b][:, ~mask])
        if h:
            assert not torch.equal(noisy[b][:, mask], x[b][:, mask])
            assert abs(noisy[b][:, mask].std().item() - 1) < 0.3     # standard normal noise


def test_erasing_boxes_follow_torchvisions_get_params():
    n, p, scale, ratio = 20000, 0.25, (0.02, 0.33), (0.3, 3.3)
    boxes = E.erasing_boxes(gen(), n, 32, 32, p, scale, ratio)
    erased = boxes[:, 2] > 0
    assert stats.binomtest(int(erased.sum()), n, p).pvalue > 1e-3
    i, j, h, w = boxes[erased].unbind(1)
    assert (h < 32).all() and (w < 32).all() and (i + h <= 32).all() and (j + w <= 32).all()
    area = (h * w).double() / 1024
    assert area.min() >= 0.02 - 0.02 and area.max() <= 0.33 + 0.05      # whole-pixel rounding
    # torchvision's own sampler, many times, against ours: same distribution of box areas
    torch.manual_seed(0)
    ref = [T.RandomErasing(p=1.0, scale=scale, ratio=ratio).make_params(
        [torch.zeros(3, 32, 32)]) for _ in range(3000)]
    ref_area = np.array([r["h"] * r["w"] / 1024 for r in ref if r["h"] < 32])
    assert stats.ks_2samp(area.numpy(), ref_area).pvalue > 1e-3


# ------------------------------------------------------------------ mixup and cutmix

class Fixed:
    """torchvision's MixUp / CutMix with the parameters given (make_params is their draw)."""

    def __init__(self, cls, **params):
        self.t, self.params = cls(num_classes=5), params
        self.t.make_params = lambda flat: dict(self.params)

    def __call__(self, x, y):
        return self.t(x, y)


def test_mixup_with_a_given_lambda_is_torchvisions():
    x, y = torch.randn(6, 3, 8, 8, generator=gen()), torch.tensor([0, 1, 2, 3, 4, 0])
    ours_x, ours_t = M.mixup(x.clone(), torch.nn.functional.one_hot(y, 5).float(), 0.7)
    ref_x, ref_t = Fixed(T.MixUp, lam=0.7)(x, y)
    torch.testing.assert_close(ours_x, ref_x)
    torch.testing.assert_close(ours_t, ref_t)
    torch.testing.assert_close(ours_t.sum(1), torch.ones(6))


def test_cutmix_with_a_given_box_is_torchvisions_and_targets_match_the_pasted_area():
    x, y = torch.randn(6, 3, 16, 16, generator=gen()), torch.tensor([0, 1, 2, 3, 4, 0])
    box = M.cutmix_box(gen(3), 0.6, 16, 16)
    x1, y1, x2, y2, lam = box
    ours_x, ours_t = M.cutmix(x.clone(), torch.nn.functional.one_hot(y, 5).float(), box)
    ref_x, ref_t = Fixed(T.CutMix, box=(x1, y1, x2, y2), lam_adjusted=lam)(x, y)
    torch.testing.assert_close(ours_x, ref_x)
    torch.testing.assert_close(ours_t, ref_t)
    pasted = (ours_x != x).any(1).float().mean((1, 2))              # area from the neighbour
    torch.testing.assert_close(pasted, torch.full((6,), 1 - lam), atol=1e-6, rtol=0)
    own = ours_t[torch.arange(1, 5), y[1:5]]                # images whose neighbour differs
    torch.testing.assert_close(own, 1 - pasted[1:5], atol=1e-6, rtol=0)
    assert (x2 - x1) * (y2 - y1) > 0


def test_mix_batch_picks_one_op_per_batch_half_the_time_and_targets_sum_to_one():
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,))
    g = gen()
    recipe = {"mixup": {"alpha": 0.8}, "cutmix": {"alpha": 1.0}}
    picks = []
    for _ in range(400):
        mixed, t, op = mixing.mix_batch(x.clone(), y, 5, recipe, g)
        torch.testing.assert_close(t.sum(1), torch.ones(8))
        picks.append(op)
    assert stats.binomtest(picks.count("mixup"), 400, 0.5).pvalue > 1e-3
    lam = [M._beta(gen(s), 0.8) for s in range(2000)]               # Beta(0.8, 0.8)
    assert stats.kstest(lam, stats.beta(0.8, 0.8).cdf).pvalue > 1e-3


# ------------------------------------------------------------------ the documented order

def test_deit_recipe_runs_in_the_documented_order():
    """geometric (pad_crop, flip) -> policy -> normalize -> erasing, checked against torchvision
    ops applied one image at a time in that order, with the same draws."""
    recipe = {"hflip": {"p": 0.5}, "pad_crop": {"padding": 4, "fill": "zero"},
              "rand_augment": {"num_ops": 2, "magnitude": 9},
              "erasing": {"p": 0.5, "scale": [0.02, 0.33], "ratio": [0.3, 3.3], "value": "zero"}}
    u8 = (natural(16) * 255).round().to(torch.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    out = build_inputs(u8, recipe, 32, mean, std, gen(5))
    g = gen(5)                                      # the same draws, in the pipeline's order
    flips = torch.rand(16, generator=g) < 0.5
    boxes = PC.pad_crop_params(g, 16, 32, 32, 4)
    draws = P.policy_draws(g, 16, "rand_augment", recipe["rand_augment"], 32, 32)
    erase_boxes = E.erasing_boxes(g, 16, 32, 32, 0.5, (0.02, 0.33), (0.3, 3.3))
    for b in range(16):
        img = u8[b].float() / 255
        img = TF.horizontal_flip(img) if flips[b] else img
        i, j = boxes[b, :2].int().tolist()
        img = TF.crop(TF.pad(img, [4], fill=0), i + 4, j + 4, 32, 32)
        for op, mag in draws:
            img = tv_op(P.OPS[op[b]], img, mag[b].item())
        img = TF.normalize(img, list(mean), list(std))
        i, j, h, w = erase_boxes[b].tolist()
        if h:
            img = TF.erase(img, i, j, h, w, torch.zeros(1))
        torch.testing.assert_close(out[b], img, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fill", ["zero", "reflect"])
def test_pad_crop_by_gathers_equals_the_resample(fill):
    """The pipeline's fast path for pad_crop + flip at the stored size is the same map."""
    x = natural(8)
    boxes = PC.pad_crop_params(gen(), 8, 32, 32, 4)
    flips = torch.rand(8, generator=gen(1)) < 0.5
    pad = 4 if fill == "reflect" else 0
    my, mx = R.resample_matrices(8, 32, 32, 32, boxes, reflect_pad=pad)
    ref = R.apply_linear(x, my, HF.mirror(mx, flips))
    fast = PC.shift_and_flip(x, boxes, flips, 4, fill == "reflect")
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=0)
