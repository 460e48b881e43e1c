"""Reference view pipelines: per image, torchvision transforms on PIL images.

This is the faithful pipeline (what the released codes run through a DataLoader); the batched
`benchmarks.data.views.batch.FastView` is tested against it and measured next to it
(`benchmarks/perf/view_throughput.py`).

Randomness comes from torch's global generator (every torchvision transform, and Cutout below)
and from Python's `random` (the MoCo-v2/PaCo Gaussian blur draws its sigma with
`random.uniform`, as the release does), so `torch.manual_seed` + `random.seed` reproduce a view.

Choices that are not plain torchvision calls:
- AutoAugment comes in two policies. `autoaug_cutout` runs the BCCL / PaCo releases'
  `CIFAR10Policy` (`benchmarks.data.views.cifar10_policy`, which lists every difference from
  torchvision; its draws come from Python's `random`, as in the releases); `autoaug_cutout_tv`
  runs torchvision's `AutoAugment(AutoAugmentPolicy.CIFAR10, fill=128)`. The config key
  `autoaugment_policy` (release | torchvision) picks one (`benchmarks.data.views.autoaug_view`).
  Both have the 25 sub-policies (op, probability, magnitude bin) of the AutoAugment paper, with
  magnitudes that follow the PyTorch ports, not the paper's TensorFlow code: bins index
  `linspace(0, max, 10)` (bin / 9 of the maximum, the paper's code uses bin / 10); Brightness,
  Color, Contrast and Sharpness use the factor 1 +- m with m up to 0.9 and a random sign (the
  paper's code uses an unsigned factor 0.1 + 1.8 * bin / 10); Translate goes up to 150/331 of
  the image side (torchvision rounds toward zero, 14 px at 32, the release keeps 14.5; the
  paper's code: 10 px); Posterize keeps 8 - round(bin * 4 / 9) bits (the paper's code:
  4 - int(bin * 4 / 10)); Solarize's threshold is linspace(255, 0, 10)[bin] (the release:
  linspace(256, 0, 10)[bin]). torchvision's geometric ops use nearest sampling, the release's
  shears bicubic; fill 128 (grey) for all.
- Cutout follows the usual reference implementation (one hole of side 16 centred at a uniform
  random pixel, rows/columns [c - 8, c + 8) clipped at the border, set to 0 on the [0, 1]
  tensor before Normalize) but draws the centre with torch instead of numpy's global generator.
- The Gaussian blur is PIL's `ImageFilter.GaussianBlur(radius=sigma)`, sigma ~ U(0.1, 2.0),
  applied with p 0.5 after grayscale (the MoCo-v2 recipe PaCo's release uses).
"""

from __future__ import annotations

import random
from typing import Callable

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter

from benchmarks import LTBenchError
from benchmarks.data.views.cifar10_policy import CIFAR10Policy

VIEW_NAMES = ("test", "crop_flip", "autoaug_cutout", "autoaug_cutout_tv", "simclr", "contrastive", "contrastive_blur")
# The AutoAugment + Cutout views and the policy each runs (config key `autoaugment_policy`):
# "release" is the BCCL / PaCo releases' CIFAR10Policy (`benchmarks.data.views.cifar10_policy`),
# "torchvision" torchvision's AutoAugment.
AUTOAUG_VIEWS = {"autoaug_cutout": "release", "autoaug_cutout_tv": "torchvision"}
AUTOAUGMENT_POLICIES = {kind: name for name, kind in AUTOAUG_VIEWS.items()}

AUTOAUGMENT_FILL = 128
CUTOUT_LENGTH = 16
CROP_PADDING = 4
JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
JITTER_P = 0.8
GRAYSCALE_P = 0.2
BLUR_P = 0.5
BLUR_SIGMA = (0.1, 2.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RRC_SCALE = {"simclr": (0.08, 1.0), "contrastive": (0.2, 1.0), "contrastive_blur": (0.2, 1.0)}


def check_view_name(name: str) -> None:
    """Raise the user-facing error for a name outside the fixed view vocabulary."""
    if name not in VIEW_NAMES:
        raise LTBenchError(f"unknown view {name!r}; known views: {', '.join(VIEW_NAMES)}")


class Cutout:
    """One square hole of zeros on a CxHxW tensor in [0, 1] (before normalisation).

    The centre is uniform over all pixels, so holes near the border are clipped and smaller;
    that is what the released codes do (DeVries & Taylor's implementation).
    """

    def __init__(self, length: int = CUTOUT_LENGTH) -> None:
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        cy = int(torch.randint(h, (1,)))
        cx = int(torch.randint(w, (1,)))
        return self.apply(img, cy, cx, self.length)

    @staticmethod
    def apply(img: torch.Tensor, cy: int, cx: int, length: int = CUTOUT_LENGTH) -> torch.Tensor:
        """The hole at a given centre: rows/columns [c - length//2, c + length//2), clipped."""
        h, w = img.shape[-2:]
        half = length // 2
        img = img.clone()
        img[..., max(cy - half, 0):min(cy + half, h), max(cx - half, 0):min(cx + half, w)] = 0.0
        return img


class PILGaussianBlur:
    """MoCo-v2 style blur: sigma ~ U(lo, hi) from Python's `random`, PIL's GaussianBlur(radius=sigma)."""

    def __init__(self, sigma: tuple[float, float] = BLUR_SIGMA) -> None:
        self.sigma = sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        sigma = random.uniform(self.sigma[0], self.sigma[1])
        return img.filter(ImageFilter.GaussianBlur(radius=sigma))


def _pil_steps(name: str, size: int) -> list:
    """The PIL-level transforms of a view (everything before ToTensor)."""
    if name == "test":
        return []
    if name in ("crop_flip", *AUTOAUG_VIEWS):
        steps = [T.RandomCrop(size, padding=CROP_PADDING), T.RandomHorizontalFlip()]
        if name == "autoaug_cutout":
            steps.append(CIFAR10Policy())
        elif name == "autoaug_cutout_tv":
            steps.append(T.AutoAugment(T.AutoAugmentPolicy.CIFAR10, fill=AUTOAUGMENT_FILL))
        return steps
    steps = [
        T.RandomResizedCrop(size, scale=RRC_SCALE[name], ratio=RRC_RATIO),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(*JITTER)], p=JITTER_P),
        T.RandomGrayscale(p=GRAYSCALE_P),
    ]
    if name == "contrastive_blur":
        steps.append(T.RandomApply([PILGaussianBlur(BLUR_SIGMA)], p=BLUR_P))
    return steps


def build_compose(name: str, size: int, mean: tuple, std: tuple) -> T.Compose:
    """The torchvision Compose of a view for square images of side `size` (PIL in, tensor out)."""
    check_view_name(name)
    steps = _pil_steps(name, size) + [T.ToTensor()]
    if name in AUTOAUG_VIEWS:
        steps.append(Cutout(CUTOUT_LENGTH))
    steps.append(T.Normalize(mean, std))
    return T.Compose(steps)


def reference_transform(name: str, mean: tuple, std: tuple) -> Callable[[np.ndarray], torch.Tensor]:
    """Per-image view: HxWx3 uint8 numpy array -> 3xHxW float32 tensor, normalised.

    The Compose is built per image size on first use (the crops need the size), then reused.
    """
    check_view_name(name)
    mean = tuple(float(m) for m in mean)
    std = tuple(float(s) for s in std)
    cache: dict[int, T.Compose] = {}

    def transform(image: np.ndarray) -> torch.Tensor:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise LTBenchError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
        size = image.shape[0]
        if image.shape[1] != size:
            raise LTBenchError(f"views expect square images, got {image.shape[0]}x{image.shape[1]}")
        compose = cache.get(size)
        if compose is None:
            compose = cache[size] = build_compose(name, size, mean, std)
        return compose(Image.fromarray(image))

    transform.view_name = name  # type: ignore[attr-defined]
    return transform
