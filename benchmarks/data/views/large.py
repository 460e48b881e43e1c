"""224-pixel views of the ImageNet-LT / iNaturalist 2018 recipes: per image, torchvision/PIL.

The CIFAR views (`benchmarks.data.views.reference`) assume square 32x32 arrays; the large datasets
have images of every size and shape, read lazily from files, so their views start with a random
resized crop (training) or Resize 256 + CentreCrop 224 (test) and need no fixed input size.

Names (what each release composes, in its order; all end with ToTensor + Normalize with the
dataset's mean/std, which `LTData` carries):
- `test224`: Resize(256) - CenterCrop(224). Every release's test transform.
- `rrc224_flip`: RandomResizedCrop(224, scale (0.08, 1)) - HorizontalFlip. The Decoupling
  (classifier-balancing) CE baseline on iNaturalist 2018.
- `rrc224_jitter`: the above + ColorJitter(0.4, 0.4, 0.4, 0). Decoupling's CE on ImageNet-LT.
- `simclr224`: RRC(224, (0.08, 1)) - Flip - ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8 - Grayscale p 0.2.
  BCL's and BCCL's `augmentation_sim` (the contrastive views of `--cl_views sim-sim`).
- `rrc224_randaug`: RRC(224, (0.08, 1)) - Flip - ColorJitter(0.4, 0.4, 0.4, 0) (p 1) -
  RandAugment (n 2, m 10, mstd 0.5). BCL's classification view and PaCo's ResNet-50 query view
  (`randncls`).
- `rrc224_randaug_stack`: RRC(224, (0.08, 1)) - Flip - ColorJitter(0.4, 0.4, 0.4, 0) (p 1) -
  Grayscale p 0.2 - Gaussian blur p 0.5 - RandAugment. PaCo's ResNeXt-50 query view
  (`randnclsstack`).
- `bcl_randstack224`: RRC(224, (0.08, 1)) - Flip - ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8 -
  Grayscale p 0.2 - RandAugment: BCL's `augmentation_randnclsstack` (its `--cl_views sim-rand` /
  `randstack-randstack` contrastive views; no blur, unlike PaCo's stacked view).
- `paco_sim224`: RRC(224, (0.08, 1)) - ColorJitter(0.4, 0.4, 0.4, 0) (p 1) - Grayscale p 0.2 -
  Gaussian blur p 0.5 - Flip. PaCo's key view (`augmentation_sim`; its flip comes last).

RandAugment: the releases do not use torchvision's `RandAugment` but a vendored copy of timm's
`rand_augment_transform("rand-n2-m10-mstd0.5", ...)`, whose semantics differ from torchvision's
(15 ops including Invert and SolarizeAdd and no Identity, each applied with probability 0.5,
magnitude drawn from N(10, 0.5) and clipped to [0, 10] out of 10, bilinear or bicubic sampling at
random, grey fill = the ImageNet mean). `TimmRandAugment` below re-implements those semantics
(written from their description, not copied); only the randomness differs: the two ops are
drawn with Python's `random` (uniform, with replacement, as the release's `np.random.choice`
does), so DataLoader workers get distinct streams without numpy seeding.

The Gaussian blur is `PILGaussianBlur` of the CIFAR reference views (sigma ~ U(0.1, 2), PIL
radius = sigma), which is MoCo-v2's `GaussianBlur` that PaCo's release uses.
"""

from __future__ import annotations

import random
from typing import Callable

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image, ImageEnhance, ImageOps

from benchmarks import LTBenchError
from benchmarks.data.views.reference import PILGaussianBlur

LARGE_VIEW_NAMES = (
    "test224", "rrc224_flip", "rrc224_jitter", "simclr224", "rrc224_randaug", "rrc224_randaug_stack", "bcl_randstack224",
    "paco_sim224",
)
TEST_RESIZE, CROP = 256, 224
RRC_SCALE = (0.08, 1.0)  # torchvision's default, which every large-dataset release keeps
RANDAUG_LAYERS, RANDAUG_MAGNITUDE, RANDAUG_MAGNITUDE_STD = 2, 10.0, 0.5
# The releases build RandAugment's fill colour from the ImageNet mean for both datasets (their
# `rgb_mean` is not switched for iNaturalist), and translate relative to the image side.
RANDAUG_FILL = tuple(min(255, round(255 * m)) for m in (0.485, 0.456, 0.406))


# ----------------------------------------------------------------------------------------------
# timm-style RandAugment (the releases' vendored `rand_augment_transform`)
# ----------------------------------------------------------------------------------------------

MAX_LEVEL = 10.0


def _signed(value: float) -> float:
    """Half of the geometric ops' magnitudes are negated, as the releases' ops do."""
    return -value if random.random() > 0.5 else value


def _affine(img: Image.Image, matrix: tuple, resample) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=RANDAUG_FILL)


def _solarize_add(img: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    lut = [min(255, i + add) if i < threshold else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def _posterize(img: Image.Image, bits: int) -> Image.Image:
    if bits >= 8:
        return img
    if bits <= 0:  # the releases' PIL masked every bit away (recent PIL refuses 0 bits)
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits)


# op name -> (img, level in [0, 10], resample) -> img. Level-to-argument maps are the releases'
# (timm's "rand" set): rotate 30 deg, shear 0.3, translate 0.45 of the side (all signed),
# enhance factors 0.1 + 1.8 * level / 10, posterize int(4 * level / 10) bits ("tpu" variant),
# solarize threshold int(256 * level / 10), solarize-add int(110 * level / 10).
RANDAUG_OPS: dict[str, Callable[[Image.Image, float, int], Image.Image]] = {
    "AutoContrast": lambda img, level, rs: ImageOps.autocontrast(img),
    "Equalize": lambda img, level, rs: ImageOps.equalize(img),
    "Invert": lambda img, level, rs: ImageOps.invert(img),
    "Rotate": lambda img, level, rs: img.rotate(_signed(level / MAX_LEVEL * 30.0), resample=rs, fillcolor=RANDAUG_FILL),
    "PosterizeTpu": lambda img, level, rs: _posterize(img, int(level / MAX_LEVEL * 4)),
    "Solarize": lambda img, level, rs: ImageOps.solarize(img, int(level / MAX_LEVEL * 256)),
    "SolarizeAdd": lambda img, level, rs: _solarize_add(img, int(level / MAX_LEVEL * 110)),
    "Color": lambda img, level, rs: ImageEnhance.Color(img).enhance(level / MAX_LEVEL * 1.8 + 0.1),
    "Contrast": lambda img, level, rs: ImageEnhance.Contrast(img).enhance(level / MAX_LEVEL * 1.8 + 0.1),
    "Brightness": lambda img, level, rs: ImageEnhance.Brightness(img).enhance(level / MAX_LEVEL * 1.8 + 0.1),
    "Sharpness": lambda img, level, rs: ImageEnhance.Sharpness(img).enhance(level / MAX_LEVEL * 1.8 + 0.1),
    "ShearX": lambda img, level, rs: _affine(img, (1, _signed(level / MAX_LEVEL * 0.3), 0, 0, 1, 0), rs),
    "ShearY": lambda img, level, rs: _affine(img, (1, 0, 0, _signed(level / MAX_LEVEL * 0.3), 1, 0), rs),
    "TranslateXRel": lambda img, level, rs: _affine(
        img, (1, 0, _signed(level / MAX_LEVEL * 0.45) * img.size[0], 0, 1, 0), rs),
    "TranslateYRel": lambda img, level, rs: _affine(
        img, (1, 0, 0, 0, 1, _signed(level / MAX_LEVEL * 0.45) * img.size[1]), rs),
}


class TimmRandAugment:
    """`num_layers` ops drawn uniformly with replacement; each applied with p 0.5 at a noisy level."""

    def __init__(self, num_layers: int = RANDAUG_LAYERS, magnitude: float = RANDAUG_MAGNITUDE,
                 magnitude_std: float = RANDAUG_MAGNITUDE_STD, prob: float = 0.5) -> None:
        self.num_layers = num_layers
        self.magnitude = magnitude
        self.magnitude_std = magnitude_std
        self.prob = prob
        self.names = list(RANDAUG_OPS)

    def __call__(self, img: Image.Image) -> Image.Image:
        for name in random.choices(self.names, k=self.num_layers):
            if random.random() > self.prob:
                continue
            level = random.gauss(self.magnitude, self.magnitude_std) if self.magnitude_std > 0 else self.magnitude
            level = min(MAX_LEVEL, max(0.0, level))
            resample = random.choice((Image.BILINEAR, Image.BICUBIC))
            img = RANDAUG_OPS[name](img, level, resample)
        return img

    def __repr__(self) -> str:
        return f"TimmRandAugment(n={self.num_layers}, m={self.magnitude}, mstd={self.magnitude_std}, p={self.prob})"


# ----------------------------------------------------------------------------------------------
# The views
# ----------------------------------------------------------------------------------------------

def _jitter(hue: float, p: float):
    return T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, hue)], p=p)


def _pil_steps(name: str) -> list:
    rrc = T.RandomResizedCrop(CROP, scale=RRC_SCALE)
    flip = T.RandomHorizontalFlip()
    blur = T.RandomApply([PILGaussianBlur()], p=0.5)
    return {
        "test224": lambda: [T.Resize(TEST_RESIZE), T.CenterCrop(CROP)],
        "rrc224_flip": lambda: [rrc, flip],
        "rrc224_jitter": lambda: [rrc, flip, T.ColorJitter(0.4, 0.4, 0.4, 0.0)],
        "simclr224": lambda: [rrc, flip, _jitter(0.1, 0.8), T.RandomGrayscale(p=0.2)],
        "rrc224_randaug": lambda: [rrc, flip, _jitter(0.0, 1.0), TimmRandAugment()],
        "rrc224_randaug_stack": lambda: [rrc, flip, _jitter(0.0, 1.0), T.RandomGrayscale(p=0.2), blur,
                                         TimmRandAugment()],
        "bcl_randstack224": lambda: [rrc, flip, _jitter(0.1, 0.8), T.RandomGrayscale(p=0.2), TimmRandAugment()],
        "paco_sim224": lambda: [rrc, _jitter(0.0, 1.0), T.RandomGrayscale(p=0.2), blur, flip],
    }[name]()


def check_large_view_name(name: str) -> None:
    if name not in LARGE_VIEW_NAMES:
        raise LTBenchError(f"unknown 224-pixel view {name!r}; known: {', '.join(LARGE_VIEW_NAMES)}")


def build_large_compose(name: str, mean: tuple, std: tuple) -> T.Compose:
    """The torchvision Compose of a 224 view (PIL image of any size in, normalised tensor out)."""
    check_large_view_name(name)
    return T.Compose(_pil_steps(name) + [T.ToTensor(), T.Normalize(mean, std)])


def large_reference_transform(name: str, mean: tuple, std: tuple) -> Callable[[np.ndarray], torch.Tensor]:
    """Per-image 224 view: HxWx3 uint8 array (any H, W) or PIL image -> 3x224x224 float32, normalised."""
    compose = build_large_compose(name, tuple(float(m) for m in mean), tuple(float(s) for s in std))

    def transform(image) -> torch.Tensor:
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise LTBenchError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
            image = Image.fromarray(image)
        return compose(image)

    transform.view_name = name  # type: ignore[attr-defined]
    return transform


def view_transform(name: str, mean: tuple, std: tuple) -> Callable:
    """The per-image transform of any view name: the 224 views here, the CIFAR ones in `reference`.

    Callers that must work before `reference.reference_transform` dispatches to this module
    (the loaders, the evaluator) use this function.
    """
    if name in LARGE_VIEW_NAMES:
        return large_reference_transform(name, mean, std)
    from benchmarks.data.views.reference import reference_transform

    return reference_transform(name, mean, std)


def all_view_names() -> tuple[str, ...]:
    from benchmarks.data.views.reference import VIEW_NAMES

    return tuple(VIEW_NAMES) + LARGE_VIEW_NAMES


def check_views_config(config: dict, method_views: tuple[str, ...] | None = None) -> None:
    """Plan-time check of the `views` / `test_view` keys: known names, as many as the method takes
    (`method_views`, the method's `views`: the caller looks the method up, so the views do not
    import the methods), and one image family.

    The CIFAR views crop to the input's own size, the 224 views to 224; mixing the two in one run
    would feed the network tensors of two sizes, so it is refused with the keys to change.
    """
    from benchmarks.data.views import check_autoaugment_policy

    check_autoaugment_policy(config)
    known = all_view_names()
    names = list(config.get("views") or [])
    test_view = config.get("test_view", "test")
    where = f"(run {config.get('method')} on {config.get('dataset')})"
    for name in names + [test_view]:
        if not isinstance(name, str) or name not in known:
            raise LTBenchError(f"unknown view {name!r} {where}; known: {', '.join(known)}")
    if names and method_views is not None:
        expected = method_views
        if len(names) != len(expected):
            raise LTBenchError(f"views {names} {where}: the method takes {len(expected)} views "
                               f"({', '.join(expected)} on CIFAR)")
    large_test = test_view in LARGE_VIEW_NAMES
    for name in names:
        if (name in LARGE_VIEW_NAMES) != large_test:
            raise LTBenchError(
                f"view {name!r} does not fit test_view {test_view!r} {where}: 224-pixel views "
                f"({', '.join(LARGE_VIEW_NAMES)}) go with test224, the CIFAR views with test; set "
                f"`views:` under datasets.{config.get('dataset')} in configs/methods/{config.get('method')}.yaml"
            )
