"""The per-image reference views (torchvision on PIL): vocabulary, shapes, normalisation, the
recipe each view is built from, Cutout, and reproducibility under torch/python seeds."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from benchmarks import LTBenchError
from benchmarks.data.views import VIEW_NAMES, reference_transform
from benchmarks.data.views.cifar10_policy import CIFAR10Policy
from benchmarks.data.views.reference import Cutout, PILGaussianBlur, build_compose

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)


def _bounds():
    """Normalised values of levels 0 and 255 per channel."""
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return (0.0 - mean) / std, (1.0 - mean) / std


def test_view_vocabulary():
    assert VIEW_NAMES == ("test", "crop_flip", "autoaug_cutout", "autoaug_cutout_tv", "simclr", "contrastive",
                          "contrastive_blur")


@pytest.mark.parametrize("name", VIEW_NAMES)
def test_reference_shape_dtype_and_range(name, images):
    transform = reference_transform(name, MEAN, STD)
    lo, hi = _bounds()
    torch.manual_seed(0)
    for img in images:
        out = transform(img)
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
        assert torch.all(out >= lo - 1e-5) and torch.all(out <= hi + 1e-5)


def test_reference_test_view_is_exact_normalisation(images):
    out = reference_transform("test", MEAN, STD)(images[0])
    expected = (torch.from_numpy(images[0]).permute(2, 0, 1).float() / 255.0 - torch.tensor(MEAN).view(3, 1, 1))
    expected = expected / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_unknown_view_name_lists_the_vocabulary():
    with pytest.raises(LTBenchError) as err:
        reference_transform("randaugment", MEAN, STD)
    for name in VIEW_NAMES:
        assert name in str(err.value)


def test_reference_rejects_bad_images():
    transform = reference_transform("test", MEAN, STD)
    with pytest.raises(LTBenchError):
        transform(np.zeros((32, 32, 3), dtype=np.float32))
    with pytest.raises(LTBenchError):
        transform(np.zeros((32, 32), dtype=np.uint8))
    with pytest.raises(LTBenchError):
        transform(np.zeros((32, 30, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", ["autoaug_cutout", "autoaug_cutout_tv", "contrastive_blur"])
def test_reference_reproducible_with_torch_and_python_seeds(name, images):
    transform = reference_transform(name, MEAN, STD)

    def run(seed):
        torch.manual_seed(seed)
        random.seed(seed)
        return torch.stack([transform(img) for img in images])

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def _types(compose):
    return [type(t) for t in compose.transforms]


def test_reference_recipes():
    """Each view is the documented chain of torchvision transforms with the documented values."""
    crop = build_compose("crop_flip", 32, MEAN, STD)
    assert _types(crop) == [T.RandomCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert crop.transforms[0].padding == 4 and crop.transforms[0].fill == 0

    aa = build_compose("autoaug_cutout_tv", 32, MEAN, STD)
    assert _types(aa) == [T.RandomCrop, T.RandomHorizontalFlip, T.AutoAugment, T.ToTensor, Cutout, T.Normalize]
    assert aa.transforms[2].policy == T.AutoAugmentPolicy.CIFAR10 and aa.transforms[2].fill == 128
    assert aa.transforms[4].length == 16
    release = build_compose("autoaug_cutout", 32, MEAN, STD)
    assert _types(release) == [T.RandomCrop, T.RandomHorizontalFlip, CIFAR10Policy, T.ToTensor, Cutout, T.Normalize]
    assert release.transforms[0].padding == 4 and release.transforms[4].length == 16

    for name, scale in (("simclr", (0.08, 1.0)), ("contrastive", (0.2, 1.0)), ("contrastive_blur", (0.2, 1.0))):
        comp = build_compose(name, 32, MEAN, STD)
        rrc, flip, jitter, gray = comp.transforms[:4]
        assert isinstance(rrc, T.RandomResizedCrop) and rrc.scale == scale
        assert rrc.ratio == pytest.approx((3 / 4, 4 / 3))
        assert isinstance(flip, T.RandomHorizontalFlip) and flip.p == 0.5
        assert isinstance(jitter, T.RandomApply) and jitter.p == 0.8
        cj = jitter.transforms[0]
        assert cj.brightness == pytest.approx((0.6, 1.4)) and cj.contrast == pytest.approx((0.6, 1.4))
        assert cj.saturation == pytest.approx((0.6, 1.4)) and cj.hue == pytest.approx((-0.1, 0.1))
        assert isinstance(gray, T.RandomGrayscale) and gray.p == 0.2
        rest = comp.transforms[4:]
        if name == "contrastive_blur":
            assert isinstance(rest[0], T.RandomApply) and rest[0].p == 0.5
            assert isinstance(rest[0].transforms[0], PILGaussianBlur)
            assert rest[0].transforms[0].sigma == (0.1, 2.0)
            rest = rest[1:]
        assert [type(t) for t in rest] == [T.ToTensor, T.Normalize]


def test_cutout_hole_geometry():
    ones = torch.ones(3, 32, 32)
    centre = Cutout.apply(ones, 16, 16)
    assert int((centre[0] == 0).sum()) == 256
    assert torch.all(centre[:, 8:24, 8:24] == 0) and torch.all(centre[:, 24:, :] == 1)
    corner = Cutout.apply(ones, 0, 0)
    assert int((corner[0] == 0).sum()) == 64 and torch.all(corner[:, :8, :8] == 0)
    edge = Cutout.apply(ones, 31, 5)
    assert torch.all(edge[:, 23:32, 0:13] == 0) and int((edge[0] == 0).sum()) == 9 * 13


def test_cutout_centre_is_uniform():
    torch.manual_seed(0)
    cut = Cutout(16)
    sizes = torch.tensor([int((cut(torch.ones(1, 32, 32)) == 0).sum()) for _ in range(2000)])
    assert int(sizes.max()) == 256 and int(sizes.min()) >= 64
    # P(full 16x16 hole) = P(8 <= c <= 24)^2 = (17/32)^2 = 0.282
    assert abs(float((sizes == 256).float().mean()) - (17 / 32) ** 2) < 0.04
