"""The batched views (`benchmarks.data.views.fast`) against the per-image PIL reference.

1. Fidelity: each op at fixed parameters equals torchvision's functional op (or Pillow's
   filter, for the blur) on the PIL image of the same uint8 input. Tolerance: exact, max
   |difference| 0, for every op; normalisation to 2e-6. Whole AutoAugment and ColorJitter chains
   with given draws equal torchvision's transforms with the same draws.
2. Distributions: the sampled parameters follow torchvision's distributions (rates, ranges,
   frequencies), with tolerances of about 4-5 standard errors.
3. Pipeline: shapes, dtypes, normalisation, errors, reproducibility, and identical output for
   every strategy and chunk size.
"""

from __future__ import annotations

import math
import sys
from unittest import mock

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter
from torchvision.transforms import InterpolationMode

import benchmarks.data.views.blur as blur
import benchmarks.data.views.batch as vb
import benchmarks.data.views.fast as fv
from benchmarks import LTBenchError
from benchmarks.data.views import VIEW_NAMES, FastView, reference_transform
from benchmarks.data.views.reference import Cutout
from _view_images import assert_exact, from_pil, to_pil, view_test_images

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


X = view_test_images()
_pil, _back = to_pil, from_pil


def _reference(fn) -> torch.Tensor:
    return torch.stack([_back(fn(_pil(x))) for x in X])


def _assert_exact(fast: torch.Tensor, ref: torch.Tensor):
    assert fast.dtype == torch.uint8
    assert_exact(fast, ref)


# ------------------------------------------------------------------------------------------------
# 1. Fidelity of each op at fixed parameters
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.0, 0.1, 0.6, 1.0, 1.37, 1.9])
def test_blend_ops_match_pil(factor):
    _assert_exact(fv.adjust_brightness(X, factor), _reference(lambda im: TF.adjust_brightness(im, factor)))
    _assert_exact(fv.adjust_contrast(X, factor), _reference(lambda im: TF.adjust_contrast(im, factor)))
    _assert_exact(fv.adjust_saturation(X, factor), _reference(lambda im: TF.adjust_saturation(im, factor)))
    _assert_exact(fv.adjust_sharpness(X, factor), _reference(lambda im: TF.adjust_sharpness(im, factor)))


def test_blend_ops_take_per_sample_factors():
    factors = torch.linspace(0.2, 1.8, len(X))
    ref = torch.stack([_back(TF.adjust_contrast(_pil(x), float(f))) for x, f in zip(X, factors)])
    _assert_exact(fv.adjust_contrast(X, factors), ref)


@pytest.mark.parametrize("hue", [-0.5, -0.1, -0.037, 0.0, 0.004, 0.063, 0.1, 0.5])
def test_hue_matches_pil(hue):
    _assert_exact(fv.adjust_hue(X, hue), _reference(lambda im: TF.adjust_hue(im, hue)))


def test_hsv_conversions_match_pil_on_all_colours():
    """Every one of the 2^24 colours through RGB -> HSV, and every (h, s, v) triple through
    HSV -> RGB, equals Pillow's conversion (a few seconds; in row blocks to bound memory)."""
    codes = np.arange(1 << 24, dtype=np.uint32)
    table = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=-1).astype(np.uint8).reshape(4096, 4096, 3)
    to_hsv = np.array(Image.fromarray(table).convert("HSV"))
    to_rgb = np.array(Image.fromarray(table, mode="HSV").convert("RGB"))
    for rows in range(0, 4096, 512):
        block = torch.from_numpy(table[rows:rows + 512]).permute(2, 0, 1).unsqueeze(0).float()
        h, s, v = fv.rgb_to_hsv(block)
        hsv = torch.stack([h, s, v], dim=-1)[0].to(torch.uint8).numpy()
        assert np.array_equal(hsv, to_hsv[rows:rows + 512]), f"RGB -> HSV differs in rows {rows}.."
        rgb = fv.hsv_to_rgb(block[:, 0], block[:, 1], block[:, 2])[0].permute(1, 2, 0).to(torch.uint8).numpy()
        assert np.array_equal(rgb, to_rgb[rows:rows + 512]), f"HSV -> RGB differs in rows {rows}.."


def test_lut_ops_match_pil():
    _assert_exact(fv.invert(X), _reference(TF.invert))
    _assert_exact(fv.autocontrast(X), _reference(TF.autocontrast))
    _assert_exact(fv.equalize(X), _reference(TF.equalize))
    for bits in (1, 4, 5, 6, 7, 8):
        _assert_exact(fv.posterize(X, bits), _reference(lambda im: TF.posterize(im, bits)))
    for threshold in (255.0, 226.66667, 170.0, 128.0, 28.333334, 0.0):
        _assert_exact(fv.solarize(X, threshold), _reference(lambda im: TF.solarize(im, threshold)))


def test_grayscale_matches_pil():
    _assert_exact(fv.grayscale(X), _reference(lambda im: TF.rgb_to_grayscale(im, num_output_channels=3)))


@pytest.mark.parametrize("angle", [-30.0, -6.6666665, 3.3333333, 10.0, 23.333334, 30.0])
def test_rotate_matches_pil(angle):
    _assert_exact(fv.rotate(X, angle), _reference(lambda im: TF.rotate(im, angle, fill=128)))


@pytest.mark.parametrize("m", [-0.3, -0.1, 0.033333335, 0.26666668, 0.3])
def test_shear_matches_torchvision_autoaugment(m):
    deg = math.degrees(math.atan(m))
    _assert_exact(fv.shear_x(X, m),
                  _reference(lambda im: TF.affine(im, 0.0, [0, 0], 1.0, [deg, 0.0], fill=128, center=[0, 0])))
    _assert_exact(fv.shear_y(X, m),
                  _reference(lambda im: TF.affine(im, 0.0, [0, 0], 1.0, [0.0, deg], fill=128, center=[0, 0])))


@pytest.mark.parametrize("t", [-14, -4, 1, 12, 14])
def test_translate_matches_pil(t):
    _assert_exact(fv.translate(X, t, 0), _reference(lambda im: TF.affine(im, 0.0, [t, 0], 1.0, [0.0, 0.0], fill=128)))
    _assert_exact(fv.translate(X, 0, t), _reference(lambda im: TF.affine(im, 0.0, [0, t], 1.0, [0.0, 0.0], fill=128)))


@pytest.mark.parametrize("top,left", [(0, 0), (8, 8), (4, 4), (1, 7), (8, 0)])
def test_crop_and_flip_match_torchvision(top, left):
    def crop(im):
        return TF.crop(TF.pad(im, 4), top, left, 32, 32)

    _assert_exact(fv.crop_flip(X, top, left, False), _reference(crop))
    _assert_exact(fv.crop_flip(X, top, left, True), _reference(lambda im: TF.hflip(crop(im))))


@pytest.mark.parametrize("box", [(0, 0, 32, 32), (3, 5, 10, 20), (10, 0, 22, 17), (0, 0, 1, 1),
                                 (1, 7, 31, 3), (0, 31, 32, 1), (12, 12, 13, 13)])
def test_resized_crop_matches_pil_bilinear(box):
    i, j, h, w = box
    ref = _reference(lambda im: TF.resized_crop(im, i, j, h, w, [32, 32], InterpolationMode.BILINEAR))
    _assert_exact(fv.resized_crop(X, i, j, h, w), ref)
    _assert_exact(fv.resized_crop(X, i, j, h, w, flip=True), ref.flip(-1))


@pytest.mark.parametrize("reuse_buffers", [True, False])
@pytest.mark.parametrize("sigma", [0.1, 0.1234, 0.5, 0.8, 1.0, 1.13, 1.41, 1.5, 1.7777, 2.0])
def test_blur_matches_pil(sigma, reuse_buffers):
    ref = _reference(lambda im: im.filter(ImageFilter.GaussianBlur(radius=sigma)))
    _assert_exact(blur.gaussian_blur(X, sigma, reuse_buffers=reuse_buffers), ref)


def test_blur_takes_per_sample_sigmas_in_chunks_and_keeps_its_input():
    """Per-sample sigmas, over more images than one CPU workspace chunk (the remainder chunk
    included); both executions equal Pillow and leave the input unchanged."""
    g = torch.Generator().manual_seed(4)
    x = torch.cat([X] * 13 + [torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=g)])
    assert len(x) > blur.CPU_BLUR_CHUNK
    sigma = torch.empty(len(x), dtype=torch.float64).uniform_(0.1, 2.0, generator=g)
    ref = torch.stack([_back(_pil(im).filter(ImageFilter.GaussianBlur(radius=float(s)))) for im, s in zip(x, sigma)])
    levels = x.float()
    for reuse_buffers in (True, False):
        _assert_exact(blur.gaussian_blur(levels, sigma, reuse_buffers=reuse_buffers).to(torch.uint8), ref)
        assert torch.equal(levels, x.float())
    transposed = levels.transpose(-1, -2)  # a view: the old implementation wrote into it
    blur.gaussian_blur(transposed, sigma)
    assert torch.equal(levels, x.float())


def test_blur_kernel_follows_pillow_radius():
    """Pillow's box radius and fixed-point weights: l = 0 below sigma = sqrt(2), 1 above."""
    radius = blur.pil_box_radius(torch.tensor([0.5, 1.0, 1.4, 1.42, 2.0], dtype=torch.float64))
    assert radius[:3].floor().tolist() == [0, 0, 0] and radius[3:].floor().tolist() == [1, 1]
    assert float(radius[1]) == pytest.approx(0.25) and float(radius[4]) == pytest.approx(1.375)
    low, ww, fw = blur.box_weights(radius)
    assert torch.all((2 * low + 1) * ww + 2 * fw <= 2 ** 24)
    assert torch.all((2 * low + 1) * ww + 2 * fw >= 2 ** 24 - 2)


def test_cutout_matches_reference():
    x = X.float() / 255.0
    for cy, cx in ((16, 16), (0, 0), (31, 5), (3, 29)):
        ref = torch.stack([Cutout.apply(img, cy, cx) for img in x])
        assert torch.equal(fv.cutout(X, cy, cx).float() / 255.0, ref)


def test_normalize_matches_totensor_normalize():
    ref = torch.stack([T.Normalize(MEAN, STD)(T.ToTensor()(_pil(x))) for x in X])
    torch.testing.assert_close(fv.normalize(X, MEAN, STD), ref, atol=2e-6, rtol=0)


def test_autoaugment_policy_equals_torchvision():
    aa = T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)
    assert [tuple(step) for step in aa.policies] == [tuple(step) for step in fv.CIFAR10_POLICY]
    space = aa._augmentation_space(10, (32, 32))
    mags = fv.autoaugment_magnitudes(32, 32)
    for name, (values, signed) in space.items():
        assert torch.equal(mags[name].float(), values.float().expand(10) if values.dim() == 0 else values.float())
        assert signed == (name in fv.SIGNED_OPS)


def test_autoaugment_chain_equals_torchvision_with_same_draws():
    """Every sub-policy, both steps, random application and signs: fast == torchvision on PIL."""
    torch.manual_seed(0)
    x = X.repeat(8, 1, 1, 1)
    n = len(x)
    policy = torch.arange(n) % 25
    u = torch.rand(n, 2) * 1.1 - 0.05
    sign = torch.randint(2, (n, 2))
    aa = T.AutoAugment(T.AutoAugmentPolicy.CIFAR10, fill=128)
    ref = []
    for i in range(n):
        draws = (int(policy[i]), u[i].clone(), sign[i].clone())
        with mock.patch.object(T.AutoAugment, "get_params", staticmethod(lambda k, d=draws: d)):
            ref.append(_back(aa(_pil(x[i]))))
    ref = torch.stack(ref)
    for strategy in ("masked", "grouped"):
        _assert_exact(fv.autoaugment(x, policy, u, sign, strategy), ref)


def test_color_jitter_chain_equals_torchvision_with_same_draws():
    torch.manual_seed(1)
    x = X.repeat(6, 1, 1, 1)
    applied, factors, order = fv.sample_jitter(len(x), "cpu")
    cj = T.ColorJitter(0.4, 0.4, 0.4, 0.1)
    ref = []
    for i in range(len(x)):
        img = _pil(x[i])
        if applied[i]:
            f = factors[i].tolist()
            draws = (order[i].clone(), f[0], f[1], f[2], f[3])
            with mock.patch.object(T.ColorJitter, "get_params", staticmethod(lambda *a, d=draws: d)):
                img = cj(img)
        ref.append(_back(img))
    ref = torch.stack(ref)
    for strategy in ("masked", "grouped"):
        _assert_exact(fv.color_jitter(x, applied, factors, order, strategy), ref)


# ------------------------------------------------------------------------------------------------
# 2. Distributions of the sampled parameters
# ------------------------------------------------------------------------------------------------

N = 20000


def _rate_close(mask: torch.Tensor, p: float, n: int | None = None):
    n = n or mask.numel()
    se = math.sqrt(p * (1 - p) / n)
    assert abs(float(mask.float().mean()) - p) < 5 * se + 1e-9, (float(mask.float().mean()), p)


def test_flip_and_crop_distributions():
    torch.manual_seed(0)
    _rate_close(fv.sample_flip(N, "cpu"), 0.5)
    top, left = fv.sample_crop(N, 4, "cpu")
    for v in (top, left):
        assert int(v.min()) == 0 and int(v.max()) == 8
        counts = torch.bincount(v, minlength=9).float() / N
        assert torch.all((counts - 1 / 9).abs() < 5 * math.sqrt((1 / 9) * (8 / 9) / N))


def test_autoaugment_draw_distributions():
    torch.manual_seed(0)
    policy, u, sign = fv.sample_autoaugment(N, "cpu")
    counts = torch.bincount(policy, minlength=25).float() / N
    assert torch.all((counts - 1 / 25).abs() < 5 * math.sqrt((1 / 25) * (24 / 25) / N))
    _rate_close(sign == 1, 0.5)
    tables = fv.policy_tables(32, 32, "cpu")
    applied = u <= tables.prob[policy]
    for k, sub in enumerate(fv.CIFAR10_POLICY):
        rows = policy == k
        for step in range(2):
            p = sub[step][1]
            _rate_close(applied[rows, step], p, int(rows.sum()))


def test_autoaugment_signs_and_magnitudes():
    """Signed ops get both signs equally often, unsigned ops never change sign; magnitudes are
    torchvision's bins."""
    torch.manual_seed(0)
    tables = fv.policy_tables(32, 32, "cpu")
    assert float(tables.magnitude[1, 0]) == pytest.approx(30.0 * 2 / 9)  # Rotate bin 2
    assert float(tables.magnitude[1, 1]) == pytest.approx(150 / 331 * 32)  # TranslateX bin 9
    assert float(tables.magnitude[5, 1]) == 5.0  # Posterize bin 7 -> 5 bits
    policy, u, sign = fv.sample_autoaugment(N, "cpu")
    op, applied, magnitude = fv.autoaugment_steps(policy, u, sign, tables)
    assert torch.equal(op, tables.op[policy]) and torch.equal(magnitude.abs(), tables.magnitude[policy])
    signed = tables.signed[op] & (tables.magnitude[policy] > 0)
    _rate_close(magnitude[signed] < 0, 0.5)
    assert torch.all(magnitude[~tables.signed[op]] >= 0)
    rotate = magnitude[:, 0][policy == 1]
    assert rotate.unique().tolist() == pytest.approx([-30.0 * 2 / 9, 30.0 * 2 / 9])


def test_resized_crop_distribution_matches_torchvision():
    torch.manual_seed(0)
    k = 4000
    for scale in ((0.08, 1.0), (0.2, 1.0)):
        top, left, h, w = fv.sample_resized_crop(N, 32, 32, scale, (3 / 4, 4 / 3), "cpu")
        assert torch.all((top >= 0) & (left >= 0) & (top + h <= 32) & (left + w <= 32))
        assert torch.all((h >= 1) & (w >= 1))
        ref = torch.tensor([T.RandomResizedCrop.get_params(torch.zeros(1, 32, 32), list(scale), [3 / 4, 4 / 3])
                            for _ in range(k)])
        fast_area, ref_area = (h * w).float(), (ref[:, 2] * ref[:, 3]).float()
        # area fraction range, ratio range and the whole distribution (two-sample KS statistic)
        assert float(fast_area.min()) / 1024 < scale[0] + 0.02 and float(fast_area.max()) == 1024
        ratio = (w.float() / h.float())
        assert float(ratio.min()) >= 0.5 and float(ratio.max()) <= 2.0
        for a, b in ((fast_area, ref_area), (h.float(), ref[:, 2].float()), (w.float(), ref[:, 3].float()),
                     (top.float(), ref[:, 0].float()), (ratio, ref[:, 3].float() / ref[:, 2].float())):
            grid = torch.cat([a, b]).unique()
            cdf_a = (a.view(-1, 1) <= grid).float().mean(0)
            cdf_b = (b.view(-1, 1) <= grid).float().mean(0)
            assert float((cdf_a - cdf_b).abs().max()) < 0.04


def test_resized_crop_fallback_is_the_central_crop():
    top, left, h, w = fv.sample_resized_crop(100, 32, 32, (2.0, 3.0), (3 / 4, 4 / 3), "cpu")
    assert torch.all(top == 0) and torch.all(left == 0) and torch.all(h == 32) and torch.all(w == 32)
    top, left, h, w = fv.sample_resized_crop(100, 32, 32, (2.0, 3.0), (2.0, 3.0), "cpu")
    assert torch.all(w == 32) and torch.all(h == 16) and torch.all(top == 8)  # in_ratio < min(ratio)


def test_jitter_grayscale_blur_distributions():
    torch.manual_seed(0)
    params = fv.sample_view("contrastive_blur", N, 32, 32, "cpu")
    _rate_close(params["applied"], 0.8)
    _rate_close(params["gray"], 0.2)
    _rate_close(params["blur"], 0.5)
    _rate_close(params["flip"], 0.5)
    f = params["factors"]
    for col, (lo, hi) in enumerate(((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))):
        assert float(f[:, col].min()) >= lo and float(f[:, col].max()) <= hi
        assert float(f[:, col].min()) < lo + 0.01 and float(f[:, col].max()) > hi - 0.01
        assert abs(float(f[:, col].mean()) - (lo + hi) / 2) < 5 * (hi - lo) / math.sqrt(12 * N)
    order = params["order"]
    assert torch.all(order.sort(dim=1).values == torch.arange(4))
    for slot in range(4):
        counts = torch.bincount(order[:, slot], minlength=4).float() / N
        assert torch.all((counts - 0.25).abs() < 5 * math.sqrt(0.25 * 0.75 / N))
    sigma = params["sigma"]
    assert float(sigma.min()) >= 0.1 and float(sigma.max()) <= 2.0
    assert abs(float(sigma.mean()) - 1.05) < 5 * 1.9 / math.sqrt(12 * N)
    autoaug = fv.sample_view("autoaug_cutout", N, 32, 32, "cpu")
    for key in ("cy", "cx"):
        counts = torch.bincount(autoaug[key], minlength=32).float() / N
        assert counts.numel() == 32 and torch.all((counts - 1 / 32).abs() < 5 * math.sqrt((1 / 32) / N))


# ------------------------------------------------------------------------------------------------
# 3. The whole views
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VIEW_NAMES)
def test_fast_view_shape_dtype_range(name):
    out = FastView(name, MEAN, STD)(X)
    assert out.shape == X.shape and out.dtype == torch.float32 and out.device == X.device
    lo = (0.0 - torch.tensor(MEAN)) / torch.tensor(STD)
    hi = (1.0 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.all(out >= lo.view(1, 3, 1, 1) - 1e-5) and torch.all(out <= hi.view(1, 3, 1, 1) + 1e-5)
    # every value is a normalised integer level
    levels = out * torch.tensor(STD).view(1, 3, 1, 1) * 255 + torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    assert torch.allclose(levels, levels.round(), atol=2e-3)


def test_fast_test_view_equals_reference():
    ref = reference_transform("test", MEAN, STD)
    expected = torch.stack([ref(x.permute(1, 2, 0).numpy()) for x in X])
    torch.testing.assert_close(FastView("test", MEAN, STD)(X), expected, atol=2e-6, rtol=0)


def test_fast_view_errors():
    with pytest.raises(LTBenchError) as err:
        FastView("autoaugment", MEAN, STD)
    assert "autoaug_cutout" in str(err.value)
    view = FastView("crop_flip", MEAN, STD)
    with pytest.raises(LTBenchError):
        view(X.float())
    with pytest.raises(LTBenchError):
        view(X[:, :, :, :30])
    with pytest.raises(LTBenchError):
        view(X[0])
    with pytest.raises(LTBenchError):
        FastView("test", MEAN, STD, strategy="fastest")


@pytest.mark.parametrize("name", VIEW_NAMES)
def test_fast_view_reproducible_and_strategy_independent(name):
    x = X.repeat(3, 1, 1, 1)
    outs = []
    for strategy, chunk in (("auto", None), ("masked", None), ("grouped", 7), ("masked", 16)):
        torch.manual_seed(11)
        outs.append(FastView(name, MEAN, STD, strategy=strategy, chunk=chunk)(x))
    for out in outs[1:]:
        assert torch.equal(out, outs[0])
    torch.manual_seed(12)
    other = FastView(name, MEAN, STD)(x)
    assert torch.equal(other, outs[0]) == (name == "test")


@pytest.mark.parametrize("name", ["simclr", "contrastive", "contrastive_blur"])
def test_compiled_cpu_contrastive_path_equals_masked(name):
    """The grouped strategy on CPU renders the contrastive views per image in numba
    (`contrastive_cpu`); on a batch where every (hue slot or not applied, grayscale) combination
    occurs, and on flat and few-level images, it equals the masked torch path bit for bit."""
    g = torch.Generator().manual_seed(9)
    flat = torch.randint(0, 256, (40, 1, 1, 1), dtype=torch.uint8, generator=g).expand(40, 3, 32, 32)
    x = torch.cat([X.repeat(30, 1, 1, 1), flat])
    for seed in (3, 4):
        torch.manual_seed(seed)
        params = fv.sample_view(name, len(x), 32, 32, "cpu")
        hue_slot = torch.where(params["applied"], (params["order"] == 3).int().argmax(dim=1), 4)
        combos = set(zip(hue_slot.tolist(), params["gray"].tolist()))
        assert len(combos) == 10, combos
        assert torch.equal(vb.render_view(name, x, params, "grouped"), vb.render_view(name, x, params, "masked"))


def test_compiled_cpu_hue_is_pillows_on_every_colour():
    """`contrastive_cpu._hue` against the torch op (itself checked against Pillow on every colour,
    above) on all 2^24 colours, for shifts across the range."""
    from benchmarks.data.views.contrastive_cpu import _hue

    c = torch.arange(1 << 24, dtype=torch.int64)
    rgb = torch.stack([(c >> 16) & 255, (c >> 8) & 255, c & 255]).float()
    for shift in (0.0, 1.0, 25.0, 128.0, 231.0, 255.0):
        expected = fv.adjust_hue_(rgb.view(1, 3, 4096, 4096).clone(), torch.tensor([shift])).view(3, -1)
        got = rgb.clone()
        _hue(got.numpy(), np.float32(shift))
        assert torch.equal(got, expected), shift


@pytest.mark.parametrize("name", ["autoaug_cutout", "autoaug_cutout_tv"])
def test_compiled_cpu_autoaugment_path_equals_masked(name):
    """The grouped AutoAugment pipeline on CPU (`autoaug_cpu`: per image in numba, tabulated maps,
    4-tap shears) equals the masked one (every op on the whole batch) bit for bit, over seeds
    and on noise, flat and few-level images; every op of the policy occurs."""
    g = torch.Generator().manual_seed(8)
    flat = torch.randint(0, 256, (64, 1, 1, 1), dtype=torch.uint8, generator=g).expand(64, 3, 32, 32)
    four = torch.randint(0, 4, (64, 3, 32, 32), generator=g).mul(85).to(torch.uint8)
    noise = torch.randint(0, 256, (384, 3, 32, 32), dtype=torch.uint8, generator=g)
    x = torch.cat([X, flat, four, noise])
    seen = set()
    for seed in range(6):
        torch.manual_seed(seed)
        params = fv.sample_view(name, len(x), 32, 32, "cpu")
        tables = fv.policy_tables(32, 32, "cpu", fv.AUTOAUG_VIEWS[name])
        op, applied, _ = fv.autoaugment_steps(params["policy"], params["u"], params["sign"], tables)
        seen |= set(op[applied].tolist())
        assert torch.equal(vb.render_view(name, x, params, "grouped"), vb.render_view(name, x, params, "masked"))
    assert seen == set(tables.op.flatten().tolist())  # every op of the policy ran


def test_fast_views_statistics_match_reference():
    """Whole pipelines on the same images: per-channel mean and spread of the outputs agree with
    the reference pipeline (different random draws, so loose tolerances), and the fraction of
    Cutout pixels matches."""
    rng = np.random.default_rng(3)
    base = np.clip(rng.normal(120, 50, size=(1, 32, 32, 3)) + np.linspace(-60, 60, 32)[None, :, None, None], 0, 255)
    imgs = np.repeat(base.astype(np.uint8), 300, axis=0)
    batch = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    black = ((0 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
    for name in ("crop_flip", "autoaug_cutout", "simclr", "contrastive_blur"):
        torch.manual_seed(0)
        fast = FastView(name, MEAN, STD)(batch)
        ref_t = reference_transform(name, MEAN, STD)
        ref = torch.stack([ref_t(img) for img in imgs])
        for dims in ((0, 2, 3),):
            assert torch.allclose(fast.mean(dims), ref.mean(dims), atol=0.08), name
            assert torch.allclose(fast.std(dims), ref.std(dims), rtol=0.08), name
        if name == "autoaug_cutout":
            hole_fast = float((fast == black).all(1).float().mean())
            hole_ref = float((ref == black).all(1).float().mean())
            assert abs(hole_fast - hole_ref) < 0.03


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", VIEW_NAMES)
def test_cuda_matches_cpu_and_does_not_sync(name):
    x = X.repeat(4, 1, 1, 1)
    torch.manual_seed(0)
    params = fv.sample_view(name, len(x), 32, 32, "cpu")
    cpu = vb.render_view(name, x, params, "grouped")
    gpu = vb.render_view(name, x.cuda(), {k: v.cuda() for k, v in params.items()}, "masked").cpu()
    diff = (cpu - gpu).abs()
    assert float((diff > 0).float().mean()) < 1e-3
    if name not in fv.AUTOAUG_VIEWS:  # float64 cos / sin may differ by an ulp: a rare other source pixel
        assert float(diff.max()) <= 2
    view = FastView(name, MEAN, STD)
    xc = x.cuda()  # a host-to-device copy synchronises: before the check
    view(xc)  # warm-up: per-device constants
    torch.cuda.set_sync_debug_mode("error")
    try:
        view(xc)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("name", ["contrastive_blur", "autoaug_cutout"])
def test_without_numba_the_torch_path_gives_the_same_views(name, monkeypatch, caplog):
    """numba is an optional extra: without it the grouped CPU strategy renders the numba views
    with the torch ops, bit for bit what the numba loops give, and says so once."""
    torch.manual_seed(21)
    x = X.repeat(8, 1, 1, 1)
    params = fv.sample_view(name, len(x), 32, 32, "cpu")
    with_numba = vb.render_view(name, x, params, "grouped")
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    monkeypatch.setattr(vb, "_NUMBA", None)
    from benchmarks.store.logs import LOGGER

    # caplog listens at the root; the commands' console setup (run by earlier tests) stops LOGGER propagating
    monkeypatch.setattr(LOGGER, "propagate", False)
    LOGGER.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="ltbench"):
            without = vb.render_view(name, x, params, "grouped")
            vb.render_view(name, x, params, "grouped")
    finally:
        LOGGER.removeHandler(caplog.handler)
    assert torch.equal(with_numba, without)
    notes = [r.getMessage() for r in caplog.records if "numba is not installed" in r.getMessage()]
    assert len(notes) == 1 and "ltbench[fast-cpu]" in notes[0]
