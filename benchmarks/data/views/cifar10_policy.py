"""The AutoAugment CIFAR-10 policy as the BCCL and PaCo releases run it (per image, PIL).

The releases do not use torchvision's `AutoAugment` but the widely copied PyTorch port of the
AutoAugment policies, `CIFAR10Policy` / `SubPolicy` (DeepVoltaire/AutoAugment `autoaugment.py`;
PaCo ships it as `autoaug.py`, BCCL inside `randaugment.py`). This module re-implements its
semantics (not its code) so that `autoaug_cutout` is the release's view; torchvision's policy stays
available as the view `autoaug_cutout_tv` (config key `autoaugment_policy: torchvision`).

The release's semantics, per image:
- one of the 25 sub-policies uniformly (`random.randint(0, 24)`); then for each of its two steps
  `random.random() < p` decides whether the op runs; a signed op draws its sign
  `random.choice([-1, 1])` when it runs (all randomness from Python's `random`);
- magnitudes: `ranges[op][bin]` with `ranges` built by `np.linspace(0, max, 10)` (bin / 9 of the
  maximum): shear 0.3, translate 150/331 (fraction of the side), rotate 30 degrees, colour,
  contrast, sharpness, brightness 0.9 (factor 1 + m * sign); posterize keeps
  `round(linspace(8, 4, 10))[bin]` bits; solarize's threshold is `linspace(256, 0, 10)[bin]`;
  autocontrast, equalize and invert ignore the bin;
- ShearX/Y: `img.transform(size, AFFINE, (1, m s, 0, 0, 1, 0) / (1, 0, 0, m s, 1, 0), BICUBIC,
  fillcolor=(128, 128, 128))` (about the origin);
- TranslateX/Y: `img.transform(size, AFFINE, (1, 0, m * w * s, 0, 1, 0) / (..., m * h * s),
  fillcolor=grey)`: nearest (PIL's default), a fractional offset in the inverse map;
- Rotate: `img.convert("RGBA").rotate(m)` (nearest, about the centre, counter-clockwise), then
  composited over an opaque grey image with the rotated alpha as mask and converted back to RGB:
  the rotated pixels inside, grey 128 where the rotation left the image (alpha is 0 or 255 with
  nearest sampling, so this equals `img.rotate(m, fillcolor=(128, 128, 128))`); m is never
  negated;
- Color/Contrast/Sharpness/Brightness: `ImageEnhance.<op>(img).enhance(1 + m * s)`; Posterize,
  Solarize, AutoContrast, Equalize, Invert: the `ImageOps` functions.

Differences from torchvision's `AutoAugment(AutoAugmentPolicy.CIFAR10, fill=128)` (same 25
sub-policies, same probabilities and bins, same PIL functions for the pixel ops):
1. Rotate is never sign-flipped (torchvision: +-m with probability 1/2 each).
2. ShearX/Y resample BICUBIC (torchvision: NEAREST); the matrix is the same (1, m, 0, 0, 1, 0).
3. Translate moves by the fractional m * side pixels (e.g. 14.50 at bin 9 on 32 px; torchvision:
   int(m * side) = 14), sampled nearest at floor(x + 0.5 + offset); the release's inverse-map
   offset with sign s moves the content by -offset, so its sign convention is opposite to
   torchvision's (irrelevant in distribution: the sign is uniform).
4. Solarize thresholds linspace(256, 0, 10) (torchvision: linspace(255, 0, 10)); for the bins of
   the CIFAR-10 policy, bin 2 (199.1 vs 198.3) also inverts level 199 under torchvision and
   bin 3 (170.7 vs 170.0) level 170.
5. The op runs if u < p (torchvision: u <= p; equal in distribution), and all draws come from
   Python's `random` (torchvision: torch's generator); a sign is drawn only for a signed op that
   runs (torchvision draws both signs up front).
6. Magnitudes are float64 numpy values (torchvision: float32 torch.linspace); the enhancement
   factors meet PIL as C floats either way, so this changes no pixel. Posterize bits
   (8 8 7 7 6 6 5 5 4 4) and the 0-0.9 / 0-0.3 / 0-30 ranges are the same in both.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

FILL = (128, 128, 128)
NUM_BINS = 10

# The 25 sub-policies (op, probability, bin, op, probability, bin), in the release's order and
# with the release's op names (bins of magnitude-free ops kept as written there).
RELEASE_POLICY = (
    ("invert", 0.1, 7, "contrast", 0.2, 6),
    ("rotate", 0.7, 2, "translateX", 0.3, 9),
    ("sharpness", 0.8, 1, "sharpness", 0.9, 3),
    ("shearY", 0.5, 8, "translateY", 0.7, 9),
    ("autocontrast", 0.5, 8, "equalize", 0.9, 2),
    ("shearY", 0.2, 7, "posterize", 0.3, 7),
    ("color", 0.4, 3, "brightness", 0.6, 7),
    ("sharpness", 0.3, 9, "brightness", 0.7, 9),
    ("equalize", 0.6, 5, "equalize", 0.5, 1),
    ("contrast", 0.6, 7, "sharpness", 0.6, 5),
    ("color", 0.7, 7, "translateX", 0.5, 8),
    ("equalize", 0.3, 7, "autocontrast", 0.4, 8),
    ("translateY", 0.4, 3, "sharpness", 0.2, 6),
    ("brightness", 0.9, 6, "color", 0.2, 8),
    ("solarize", 0.5, 2, "invert", 0.0, 3),
    ("equalize", 0.2, 0, "autocontrast", 0.6, 0),
    ("equalize", 0.2, 8, "equalize", 0.6, 4),
    ("color", 0.9, 9, "equalize", 0.6, 6),
    ("autocontrast", 0.8, 4, "solarize", 0.2, 8),
    ("brightness", 0.1, 3, "color", 0.7, 0),
    ("solarize", 0.4, 5, "autocontrast", 0.9, 3),
    ("translateY", 0.9, 9, "translateY", 0.7, 9),
    ("autocontrast", 0.9, 2, "solarize", 0.8, 3),
    ("equalize", 0.8, 8, "invert", 0.1, 3),
    ("translateY", 0.7, 9, "autocontrast", 0.9, 1),
)

# Release op name -> the op vocabulary of `benchmarks.data.views.fast` (torchvision's names).
OP_NAMES = {
    "shearX": "ShearX", "shearY": "ShearY", "translateX": "TranslateX", "translateY": "TranslateY",
    "rotate": "Rotate", "color": "Color", "posterize": "Posterize", "solarize": "Solarize",
    "contrast": "Contrast", "sharpness": "Sharpness", "brightness": "Brightness",
    "autocontrast": "AutoContrast", "equalize": "Equalize", "invert": "Invert",
}
# Ops that draw a random sign when they run (rotate does not).
SIGNED = ("shearX", "shearY", "translateX", "translateY", "color", "contrast", "sharpness", "brightness")


def magnitude_ranges() -> dict[str, np.ndarray]:
    """Magnitude per bin of each op (translate as a fraction of the image side)."""
    lin = lambda hi: np.linspace(0.0, hi, NUM_BINS)  # noqa: E731
    return {
        "shearX": lin(0.3), "shearY": lin(0.3),
        "translateX": lin(150 / 331), "translateY": lin(150 / 331),
        "rotate": lin(30.0),
        "color": lin(0.9), "contrast": lin(0.9), "sharpness": lin(0.9), "brightness": lin(0.9),
        "posterize": np.round(np.linspace(8, 4, NUM_BINS), 0).astype(int),
        "solarize": np.linspace(256, 0, NUM_BINS),
        "autocontrast": np.zeros(NUM_BINS), "equalize": np.zeros(NUM_BINS), "invert": np.zeros(NUM_BINS),
    }


RANGES = magnitude_ranges()


def apply_op(img: Image.Image, op: str, magnitude: float, sign: int = 1) -> Image.Image:
    """One release op on an RGB PIL image at a given magnitude (from `RANGES`) and sign (+-1;
    ignored by unsigned ops)."""
    w, h = img.size
    if op == "shearX":
        return img.transform(img.size, Image.AFFINE, (1, magnitude * sign, 0, 0, 1, 0), Image.BICUBIC,
                             fillcolor=FILL)
    if op == "shearY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, magnitude * sign, 1, 0), Image.BICUBIC,
                             fillcolor=FILL)
    if op == "translateX":
        return img.transform(img.size, Image.AFFINE, (1, 0, magnitude * w * sign, 0, 1, 0), fillcolor=FILL)
    if op == "translateY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, magnitude * h * sign), fillcolor=FILL)
    if op == "rotate":
        rgba = img.convert("RGBA").rotate(magnitude)
        grey = Image.new("RGBA", rgba.size, (FILL[0],) * 4)
        return Image.composite(rgba, grey, rgba).convert(img.mode)
    if op in ("color", "contrast", "sharpness", "brightness"):
        enhancer = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
                    "sharpness": ImageEnhance.Sharpness, "brightness": ImageEnhance.Brightness}[op]
        return enhancer(img).enhance(1 + magnitude * sign)
    if op == "posterize":
        return ImageOps.posterize(img, int(magnitude))
    if op == "solarize":
        return ImageOps.solarize(img, magnitude)
    if op == "autocontrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    if op == "invert":
        return ImageOps.invert(img)
    raise ValueError(f"unknown release op {op!r}")


class CIFAR10Policy:
    """The release's AutoAugment CIFAR-10 policy as a PIL transform (Python `random` draws, in
    the release's order: sub-policy, then per step the probability draw and, for a signed op
    that runs, its sign)."""

    def __init__(self) -> None:
        self.policies = RELEASE_POLICY

    def __call__(self, img: Image.Image) -> Image.Image:
        op1, p1, b1, op2, p2, b2 = self.policies[random.randint(0, len(self.policies) - 1)]
        for op, p, b in ((op1, p1, b1), (op2, p2, b2)):
            if random.random() < p:
                sign = random.choice([-1, 1]) if op in SIGNED else 1
                img = apply_op(img, op, RANGES[op][b], sign)
        return img

    def __repr__(self) -> str:
        return "CIFAR10Policy(release)"
