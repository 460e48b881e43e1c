"""The releases' AutoAugment CIFAR10Policy (view `autoaug_cutout`) and the `autoaugment_policy` key.

1. Reference ops (`cifar10_policy.apply_op`) at fixed magnitude and sign equal an independent PIL
   computation written here from the release's semantics. Tolerance: exact (max |diff| 0).
2. Fast ops (`fast.release_shear`, `release_geometric_nearest`, `affine_bicubic`) and the whole
   batched release policy with given draws equal the same PIL computation. Tolerance: exact.
3. Sampling: sub-policy uniform over 25, op probabilities, sign rate 1/2, rotate never negated
   (reference and fast), within 5 standard errors.
4. Config: `autoaugment_policy` (default release) picks the view of BCCL, PaCo and BCL, and is a
   recipe deviation when set to torchvision.
"""

from __future__ import annotations

import math
import random
from unittest import mock

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image, ImageEnhance, ImageOps

import baselines.bcl  # noqa: F401  (registers "bcl")
import baselines.paco  # noqa: F401  (registers "paco")
import bccl.method  # noqa: F401  (registers "bccl")
import benchmarks.data.views.cifar10_policy as cp
import benchmarks.data.views.fast as fv
from benchmarks import LTBenchError
from benchmarks.config import recipe_deviations, resolve_config
from benchmarks.train.methods import build_method
from benchmarks.data.views import FastView, autoaug_view, reference_transform
from benchmarks.data.views.large import check_views_config
from _view_images import assert_exact, from_pil, to_pil, view_test_images

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
GREY = (128, 128, 128)


X = view_test_images()
_pil, _back, _assert_exact = to_pil, from_pil, assert_exact


# The release's ranges and ops, written out here from its source (SubPolicy.__init__).
RANGES = {
    "shearX": np.linspace(0, 0.3, 10), "shearY": np.linspace(0, 0.3, 10),
    "translateX": np.linspace(0, 150 / 331, 10), "translateY": np.linspace(0, 150 / 331, 10),
    "rotate": np.linspace(0, 30, 10), "color": np.linspace(0.0, 0.9, 10),
    "posterize": np.round(np.linspace(8, 4, 10), 0).astype(int), "solarize": np.linspace(256, 0, 10),
    "contrast": np.linspace(0.0, 0.9, 10), "sharpness": np.linspace(0.0, 0.9, 10),
    "brightness": np.linspace(0.0, 0.9, 10),
    "autocontrast": [0] * 10, "equalize": [0] * 10, "invert": [0] * 10,
}


def release_op(img: Image.Image, op: str, m, s: int) -> Image.Image:
    """The release's op with its sign draw replaced by s."""
    if op == "shearX":
        return img.transform(img.size, Image.AFFINE, (1, m * s, 0, 0, 1, 0), Image.BICUBIC, fillcolor=GREY)
    if op == "shearY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, m * s, 1, 0), Image.BICUBIC, fillcolor=GREY)
    if op == "translateX":
        return img.transform(img.size, Image.AFFINE, (1, 0, m * img.size[0] * s, 0, 1, 0), fillcolor=GREY)
    if op == "translateY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, m * img.size[1] * s), fillcolor=GREY)
    if op == "rotate":
        rot = img.convert("RGBA").rotate(m)
        return Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert(img.mode)
    if op == "color":
        return ImageEnhance.Color(img).enhance(1 + m * s)
    if op == "contrast":
        return ImageEnhance.Contrast(img).enhance(1 + m * s)
    if op == "sharpness":
        return ImageEnhance.Sharpness(img).enhance(1 + m * s)
    if op == "brightness":
        return ImageEnhance.Brightness(img).enhance(1 + m * s)
    if op == "posterize":
        return ImageOps.posterize(img, m)
    if op == "solarize":
        return ImageOps.solarize(img, m)
    return {"autocontrast": ImageOps.autocontrast, "equalize": ImageOps.equalize, "invert": ImageOps.invert}[op](img)


OPS = tuple(RANGES)
SIGNED = ("shearX", "shearY", "translateX", "translateY", "color", "contrast", "sharpness", "brightness")
TV_NAMES = {"shearX": "ShearX", "shearY": "ShearY", "translateX": "TranslateX", "translateY": "TranslateY",
            "rotate": "Rotate", "color": "Color", "posterize": "Posterize", "solarize": "Solarize",
            "contrast": "Contrast", "sharpness": "Sharpness", "brightness": "Brightness",
            "autocontrast": "AutoContrast", "equalize": "Equalize", "invert": "Invert"}


# ------------------------------------------------------------------------------------------------
# 1. The table and the reference ops
# ------------------------------------------------------------------------------------------------


def test_policy_table_is_the_papers_and_ranges_are_the_releases():
    """Same 25 sub-policies (ops, probabilities, bins of the ops that have magnitudes) as
    torchvision's CIFAR-10 policy, and the release's magnitude ranges."""
    tv = T.AutoAugment(T.AutoAugmentPolicy.CIFAR10).policies
    assert len(cp.RELEASE_POLICY) == 25
    for (a, pa, ba, b, pb, bb), tv_sub in zip(cp.RELEASE_POLICY, tv):
        for (op, p, bin_), (tv_op, tv_p, tv_bin) in zip(((a, pa, ba), (b, pb, bb)), tv_sub):
            assert TV_NAMES[op] == tv_op and p == tv_p
            assert bin_ == tv_bin or tv_bin is None
    assert set(cp.RANGES) == set(RANGES) and set(cp.OP_NAMES.items()) == set(TV_NAMES.items())
    for op, values in RANGES.items():
        assert np.array_equal(np.asarray(cp.RANGES[op]), np.asarray(values)), op
    assert list(cp.RANGES["posterize"]) == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert set(cp.SIGNED) == set(SIGNED)


@pytest.mark.parametrize("op", OPS)
def test_reference_op_equals_release_pil(op):
    for b in (1, 3, 7, 9):
        m = RANGES[op][b]
        for s in ((-1, 1) if op in SIGNED else (1,)):
            ref = torch.stack([_back(release_op(_pil(x), op, m, s)) for x in X])
            out = torch.stack([_back(cp.apply_op(_pil(x), op, m, s)) for x in X])
            _assert_exact(out, ref)


def test_rotate_with_fill_is_nearest_rotate_with_grey_fill():
    for x in X[:3]:
        img = _pil(x)
        for angle in (RANGES["rotate"][2], 17.0, 30.0):
            _assert_exact(_back(release_op(img, "rotate", angle, 1)),
                          _back(img.rotate(angle, fillcolor=GREY)))


def test_reference_policy_follows_the_scripted_draws():
    """Sub-policy 1 (rotate p 0.7 bin 2, translateX p 0.3 bin 9): with both probability draws
    below p and sign -1, the output is rotate(+6.67 degrees) then translateX(-0.4532 * 32)."""
    img = _pil(X[0])
    with mock.patch.object(random, "randint", return_value=1), \
            mock.patch.object(random, "random", side_effect=[0.69, 0.29]), \
            mock.patch.object(random, "choice", return_value=-1) as choice:
        out = cp.CIFAR10Policy()(img)
    assert choice.call_count == 1  # rotate draws no sign
    expected = release_op(release_op(img, "rotate", RANGES["rotate"][2], 1), "translateX", RANGES["translateX"][9], -1)
    _assert_exact(_back(out), _back(expected))
    with mock.patch.object(random, "randint", return_value=1), \
            mock.patch.object(random, "random", side_effect=[0.7, 0.3]):
        _assert_exact(_back(cp.CIFAR10Policy()(img)), _back(img))  # u < p is strict


# ------------------------------------------------------------------------------------------------
# 2. The fast release ops and the whole batched policy
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["shearX", "shearY"])
def test_fast_release_shear_is_pil_bicubic(op):
    ops = torch.full((len(X),), fv._OP[cp.OP_NAMES[op]])
    magnitudes = [RANGES[op][b] for b in range(1, 10)] + [0.05 * k - 0.31 for k in range(13)]
    for m in magnitudes:
        for s in (-1, 1):
            ref = torch.stack([_back(release_op(_pil(x), op, m, s)) for x in X])
            out = fv.release_shear(X.float(), ops, torch.full((len(X),), m * s, dtype=torch.float64))
            _assert_exact(out, ref)


def test_fast_affine_bicubic_general_matrices():
    """Pillow's bicubic affine for rotations, scalings and fractional shifts (all fill, clamp and
    edge cases), not only shears."""
    g = torch.Generator().manual_seed(3)
    for _ in range(12):
        a = (torch.rand(6, generator=g, dtype=torch.float64) - 0.5)
        matrix = (1.0 + a[0] * 0.6, a[1], float(a[2] * 12), a[3], 1.0 + a[4] * 0.6, float(a[5] * 12))
        ref = torch.stack([_back(_pil(x).transform((32, 32), Image.AFFINE, matrix, Image.BICUBIC, fillcolor=GREY))
                           for x in X])
        out = fv.affine_bicubic(X, torch.tensor(matrix, dtype=torch.float64).view(1, 2, 3).expand(len(X), 2, 3))
        _assert_exact(out, ref)


@pytest.mark.parametrize("op", ["translateX", "translateY", "rotate"])
def test_fast_release_nearest_geometry(op):
    ops = torch.full((len(X),), fv._OP[cp.OP_NAMES[op]])
    for b in range(1, 10):
        m = RANGES[op][b]
        for s in ((-1, 1) if op in SIGNED else (1,)):
            ref = torch.stack([_back(release_op(_pil(x), op, m, s)) for x in X])
            scale = 32.0 if op != "rotate" else 1.0
            mag = torch.full((len(X),), m * scale * s, dtype=torch.float64)
            _assert_exact(fv.release_geometric_nearest(X.float(), ops, mag), ref)


def test_fast_release_tables():
    tables = fv.policy_tables(32, 32, "cpu", "release")
    assert tables.strict and tables.kind == "release"
    assert float(tables.magnitude[1, 0]) == RANGES["rotate"][2]
    assert float(tables.magnitude[1, 1]) == RANGES["translateX"][9] * 32  # 14.50 px, not int
    assert float(tables.magnitude[14, 0]) == RANGES["solarize"][2]  # 199.11 (torchvision 198.33)
    assert float(tables.magnitude[5, 1]) == 5.0  # posterize bin 7
    assert not bool(tables.signed[fv._OP["Rotate"]]) and bool(tables.signed[fv._OP["ShearX"]])
    assert bool(tables.bicubic[fv._OP["ShearY"]]) and not bool(tables.geometric[fv._OP["ShearY"]])
    with pytest.raises(LTBenchError):
        fv.PolicyTables(32, 32, "cpu", "paper")


def test_fast_release_chain_equals_release_pil_with_same_draws():
    """Every sub-policy, both steps, random application and signs: the batched release policy ==
    the release's ops on PIL (sign draw 0 -> -1), for both strategies."""
    torch.manual_seed(0)
    x = X.repeat(10, 1, 1, 1)
    n = len(x)
    policy = torch.arange(n) % 25
    u = torch.rand(n, 2) * 1.1 - 0.05
    u[:4, 0] = torch.tensor([0.1, 0.7, 0.8, 0.5])  # u == p (in float32): not applied (strict)
    sign = torch.randint(2, (n, 2))
    ref = []
    for i in range(n):
        a, pa, ba, b, pb, bb = cp.RELEASE_POLICY[int(policy[i])]
        img = _pil(x[i])
        for step, (op, p, bin_) in enumerate(((a, pa, ba), (b, pb, bb))):
            if float(u[i, step]) < float(torch.tensor(p, dtype=torch.float32)):  # fast: float32 u and p
                s = 1 if (op not in SIGNED or int(sign[i, step]) == 1) else -1
                img = release_op(img, op, RANGES[op][bin_], s)
        ref.append(_back(img))
    ref = torch.stack(ref)
    for strategy in ("masked", "grouped"):
        _assert_exact(fv.autoaugment(x, policy, u, sign, strategy, kind="release"), ref)


def test_fast_and_reference_release_views_agree_in_statistics():
    """Whole views (different random draws): per-channel mean and spread agree loosely."""
    rng = np.random.default_rng(3)
    base = np.clip(rng.normal(120, 50, size=(1, 32, 32, 3)) + np.linspace(-60, 60, 32)[None, :, None, None], 0, 255)
    imgs = np.repeat(base.astype(np.uint8), 200, axis=0)
    batch = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    torch.manual_seed(0)
    random.seed(0)
    fast = FastView("autoaug_cutout", MEAN, STD)(batch)
    ref_t = reference_transform("autoaug_cutout", MEAN, STD)
    ref = torch.stack([ref_t(img) for img in imgs])
    assert torch.allclose(fast.mean((0, 2, 3)), ref.mean((0, 2, 3)), atol=0.1)
    assert torch.allclose(fast.std((0, 2, 3)), ref.std((0, 2, 3)), rtol=0.1)


# ------------------------------------------------------------------------------------------------
# 3. Sampling
# ------------------------------------------------------------------------------------------------

N = 20000


def _rate_close(hits: int, total: int, p: float):
    se = math.sqrt(p * (1 - p) / total)
    assert abs(hits / total - p) < 5 * se + 1e-9, (hits / total, p)


def test_reference_sampling_distribution():
    """Python-random draws: sub-policy uniform over 25 (randint), step i runs iff its uniform is
    below p_i (rates = p_i), signed ops get sign -1 half the time, rotate and the unsigned ops
    always +1."""
    random.seed(0)
    chosen, uniforms, calls = [], [], []
    real_randint, real_random = random.randint, random.random

    def randint(a, b):
        chosen.append(real_randint(a, b))
        return chosen[-1]

    def uniform():
        uniforms.append(real_random())
        return uniforms[-1]

    def record(img, op, m, s=1):
        calls[-1].append((op, float(m), s))
        return img

    policy = cp.CIFAR10Policy()
    img = _pil(X[0])
    with mock.patch.object(random, "randint", side_effect=randint), \
            mock.patch.object(random, "random", side_effect=uniform), \
            mock.patch.object(cp, "apply_op", side_effect=record):
        for _ in range(N):
            calls.append([])
            policy(img)
    assert len(chosen) == N and len(uniforms) == 2 * N
    counts = np.bincount(chosen, minlength=25)
    assert len(counts) == 25
    for c in counts:
        _rate_close(int(c), N, 1 / 25)
    applied = np.zeros((25, 2))
    neg = total = 0
    for i, (k, ops) in enumerate(zip(chosen, calls)):
        a, pa, ba, b, pb, bb = cp.RELEASE_POLICY[k]
        ran = [uniforms[2 * i] < pa, uniforms[2 * i + 1] < pb]
        applied[k] += ran
        expected = [(op, float(RANGES[op][bin_])) for (op, bin_), r in zip(((a, ba), (b, bb)), ran) if r]
        assert [(op, m) for op, m, _ in ops] == expected
        for op, _, s in ops:
            if op in SIGNED:
                total += 1
                neg += s == -1
            else:
                assert s == 1  # rotate included: never negated
    for k, (a, pa, ba, b, pb, bb) in enumerate(cp.RELEASE_POLICY):
        _rate_close(int(applied[k, 0]), int(counts[k]), pa)
        _rate_close(int(applied[k, 1]), int(counts[k]), pb)
    _rate_close(neg, total, 0.5)


def test_fast_release_sampling():
    torch.manual_seed(0)
    tables = fv.policy_tables(32, 32, "cpu", "release")
    policy, u, sign = fv.sample_autoaugment(N, "cpu")
    op, applied, magnitude = fv.autoaugment_steps(policy, u, sign, tables)
    assert torch.equal(applied, u < tables.prob[policy])
    counts = torch.bincount(policy, minlength=25)
    for c in counts.tolist():
        _rate_close(c, N, 1 / 25)
    for k, sub in enumerate(cp.RELEASE_POLICY):
        rows = policy == k
        for step, p in enumerate((sub[1], sub[4])):
            _rate_close(int(applied[rows, step].sum()), int(rows.sum()), p)
    rotate = op == fv._OP["Rotate"]
    assert bool(rotate.any()) and torch.all(magnitude[rotate] > 0)
    signed = tables.signed[op] & (tables.magnitude[policy] > 0)
    _rate_close(int((magnitude[signed] < 0).sum()), int(signed.sum()), 0.5)


# ------------------------------------------------------------------------------------------------
# 4. The config key
# ------------------------------------------------------------------------------------------------


def _method(name: str, **overrides):
    config = resolve_config(name, dataset="cifar10", overrides=overrides)
    return config, build_method(config, 10, torch.tensor([50, 30, 20, 12, 8, 5, 4, 3, 2, 1]))


def test_config_key_default_and_view_choice():
    for name, release_views, tv_views, extra in (
        ("bccl", ("autoaug_cutout", "simclr"), ("autoaug_cutout_tv", "simclr"), {}),
        ("paco", ("autoaug_cutout", "contrastive_blur"), ("autoaug_cutout_tv", "contrastive_blur"), {}),
        ("bcl", ("autoaug_cutout", "contrastive", "contrastive"), ("autoaug_cutout_tv", "contrastive", "contrastive"),
         {"cls_autoaug": True}),
    ):
        config, method = _method(name, **extra)
        assert config["autoaugment_policy"] == "release"
        assert "autoaugment_policy" not in recipe_deviations(config)
        assert method.view_names() == release_views
        config, method = _method(name, autoaugment_policy="torchvision", **extra)
        assert method.view_names() == tv_views
        assert recipe_deviations(config)["autoaugment_policy"] == {"paper": "release", "run": "torchvision"}
    _, bcl = _method("bcl", autoaugment_policy="torchvision")
    assert bcl.view_names()[0] == "crop_flip"  # cls_autoaug off: no AutoAugment view


def test_config_key_rejects_unknown_policy():
    assert autoaug_view({}) == "autoaug_cutout"
    assert autoaug_view({"autoaugment_policy": "torchvision"}) == "autoaug_cutout_tv"
    with pytest.raises(LTBenchError, match="autoaugment_policy"):  # resolve_config validates the values
        resolve_config("paco", dataset="cifar10", overrides={"autoaugment_policy": "paper"})
    config = {**resolve_config("paco", dataset="cifar10"), "autoaugment_policy": "paper"}
    with pytest.raises(LTBenchError, match="autoaugment_policy"):
        check_views_config(config)
    with pytest.raises(LTBenchError, match="autoaugment_policy"):
        autoaug_view(config)
    with pytest.raises(LTBenchError):
        resolve_config("paco", dataset="cifar10", overrides={"autoaugment_policy": 1})
