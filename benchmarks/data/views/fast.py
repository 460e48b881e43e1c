"""Batched view pipelines on any device, reproducing the per-image PIL pipeline of `reference.py`.

Why: the reference pipeline costs 0.3-2 ms per 32x32 image on one CPU core, so a 200-epoch CIFAR
run would be bound by its DataLoader. Here a whole batch of uint8 images (N, 3, H, W), kept on the
device, becomes one view in a few dozen tensor passes, with independent random parameters per
sample drawn from torch's generator of that device (`sample_view`), then rendered
(`render_view`) and normalised.

Fidelity: every op reproduces what PIL does on uint8 images (the reference runs torchvision on
PIL images), including PIL's integer rounding; the tests compare each op at fixed parameters with
torchvision's functional op on PIL images, and all agree exactly:
- blends (Brightness, Contrast, Color, Sharpness) truncate like `Image.blend`, computed in
  float32 as Pillow's C code does; grey is ITU-R 601 in Pillow's 16-bit fixed point; SMOOTH
  (Sharpness) rounds and keeps the 1-pixel border; Contrast blends with int(mean grey + 0.5);
- AutoContrast reproduces Pillow's float64 table (its double rounding decides the truncation),
  Equalize Pillow's histogram table (step = (count - last bin count) // 255);
- `adjust_hue` is Pillow's RGB -> HSV -> RGB round trip; the float32 formulation was checked
  against Pillow on all 2^24 colours in both directions;
- nearest-neighbour geometry samples at floor(M (x + 0.5, y + 0.5)) like Pillow's affine
  transform: in float64 for translations, in Pillow's 16.16 fixed point for rotations and shears
  (`affine_nearest`), with torchvision's matrices for Rotate (about the centre), Shear (about the
  origin) and Translate (int(magnitude) pixels), fill 128;
- AutoAugment has two policies (`PolicyTables` kind): torchvision's (view autoaug_cutout_tv) and
  the BCCL / PaCo releases' CIFAR10Policy (view autoaug_cutout, `cifar10_policy`): Shear through
  Pillow's bicubic affine filter (`affine_bicubic`, float64 in Pillow's operation order),
  unsigned Rotate, Translate by fractional offsets, Solarize thresholds linspace(256, 0, 10);
- the resized crop is PIL's bilinear resampler: separable, horizontal pass first, each pass
  rounded to uint8, taps at half-pixel centres clamped to the crop. The crop is never larger than
  the output (output size = input size), so the resize always upsamples, where PIL's
  antialiasing (support widened by the downscale factor) does not act, and there is no antialias
  difference to emulate. The weights are multiples of 1/64, so the two batched matrix products
  are exact in float32 (even under TF32 on a GPU);
- the Gaussian blur is PIL's `GaussianBlur(radius=sigma)`, which is not a sampled Gaussian but
  three passes per axis of an "extended box" (Gwosdek et al. 2011): radius r = l + a from sigma,
  taps |d| <= l weighted 1 and |d| = l + 1 weighted a, normalised by 2r + 1, edges replicated,
  each pass rounded to uint8, horizontal passes first, in 24-bit fixed point. `blur.py` runs
  the same integer passes (int32 on centred levels, exact by construction).
Other differences: the random numbers (a seed gives equally distributed, not identical, views
to the reference), and float rounding on other devices (a fused multiply-add in a GPU kernel may
move a rare pixel by one level).

Speed (measured with one CPU thread, benchmarks/perf/view_throughput.py): images stay float32
(integer-valued) between ops, because uint8 <-> float conversions, comparisons producing bool and
`torch.where` with broadcast masks each cost several plain float ops on CPU; selections use
arithmetic (x + m * (y - x)); lookups (`gather`) are used only where needed (crop, geometry,
Equalize/AutoContrast tables); ops run in place where they can (an out-of-place op costs about
twice an in-place one: write-allocate and page faults). On CPU the batch is rendered in chunks so
that intermediates stay in cache (see `FastView`), and torch calls are few per chunk (each costs
~5 us of dispatch here).

Strategies for an op chosen by only some samples (an AutoAugment op, a jitter op in a given
slot, grayscale, blur): "masked" computes it for the whole batch and merges (no data-dependent
shapes, so nothing waits for the device: the GPU default); "grouped" computes it only for the
samples that chose it (less arithmetic, but reading the subset size would force a sync on an
accelerator: the CPU default, measured faster there). Grouped on CPU, the contrastive views are
rendered per image by compiled loops (numba: `contrastive_cpu`, and `autoaug_cpu` for the
AutoAugment views; the same float32 operations as the torch ops here, 1.5-3x faster than the
best torch formulations measured); other grouped ops use `index_select` / `index_copy_`. Both
strategies consume the same random numbers and return identical outputs.

numba is optional (`pip install 'ltbench[fast-cpu]'`): without it the grouped CPU path runs the
contrastive and AutoAugment views with the torch ops below, which give the same outputs bit for
bit (tested), only slower; the first such view says so in one log line (`numba_available`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from benchmarks import LTBenchError
from benchmarks.data.views.reference import (
    AUTOAUG_VIEWS,
    AUTOAUGMENT_FILL,
    BLUR_P,
    BLUR_SIGMA,
    CROP_PADDING,
    CUTOUT_LENGTH,
    GRAYSCALE_P,
    JITTER,
    JITTER_P,
    RRC_RATIO,
    RRC_SCALE,
    check_view_name,
)
from benchmarks.data.views.blur import gaussian_blur, pass_coefficients
from benchmarks.data.views.levels import _col, _per_sample, _uint8_io

# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _trunc_levels(v: torch.Tensor) -> torch.Tensor:
    """Pillow's `(UINT8)` after clipping: clamp to [0, 255], truncate (in place on v)."""
    return v.clamp_(0.0, 255.0).floor_()


def _select(x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y where mask (N,) else x, as x + m * (y - x): exact on integer levels, and much faster on
    CPU than `torch.where` with a broadcast mask."""
    m = _col(mask.to(x.dtype))
    return x + m * (y - x)


# ------------------------------------------------------------------------------------------------
# Pointwise and colour ops
# ------------------------------------------------------------------------------------------------


def gray_levels(x: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L, (19595 R + 38470 G + 7471 B + 2^15) >> 16, as float (N, 1, H, W).

    Every partial sum is an integer below 2^24, hence exact in float32.
    """
    g = x[:, 0:1] * 19595.0
    g.add_(x[:, 1:2], alpha=38470.0).add_(x[:, 2:3], alpha=7471.0).add_(32768.0)
    return g.mul_(1.0 / 65536.0).floor_()


def blend_(x: torch.Tensor, degenerate: torch.Tensor, factor_col: torch.Tensor) -> torch.Tensor:
    """`Image.blend(degenerate, x, factor)` in place on x: trunc(clip(deg + f (x - deg))) in
    float32, Pillow's three roundings ((x - deg), f times that, deg plus that; IEEE + and * are
    commutative). factor_col: (N, 1, 1, 1) float32."""
    return _trunc_levels(x.sub_(degenerate).mul_(factor_col).add_(degenerate))


def _blend(img: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """`blend_` on a copy of img, factor (N,)."""
    return blend_(img.clone(), degenerate, _col(factor))


@_uint8_io
def grayscale(x: torch.Tensor) -> torch.Tensor:
    """`rgb_to_grayscale(num_output_channels=3)` on PIL: L replicated to three channels."""
    return gray_levels(x).expand(-1, 3, -1, -1).contiguous()


def brightness_(x: torch.Tensor, factor_col: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Brightness in place: the blend with black, trunc(clip(f * x))."""
    return _trunc_levels(x.mul_(factor_col))


@_uint8_io
def adjust_brightness(x: torch.Tensor, factor) -> torch.Tensor:
    """ImageEnhance.Brightness (`brightness_` on a copy)."""
    return brightness_(x.clone(), _col(_per_sample(factor, x.shape[0], x.device)))


def contrast_mean(x: torch.Tensor, gray: torch.Tensor | None = None) -> torch.Tensor:
    """ImageEnhance.Contrast's grey level int(mean(L) + 0.5) per image, (N, 1, 1, 1) float
    (`gray`: x's `gray_levels`, when the caller has them).

    Sums of integer levels stay exact in float32 (< 2^24); the rounded quotient is safe because
    a non-integer quotient is at least 1/(2 * count) away from the next integer.
    """
    g = gray_levels(x) if gray is None else gray
    count = float(g.shape[-1] * g.shape[-2])
    total = g.sum(dim=(1, 2, 3), keepdim=True)
    return torch.floor((2.0 * total + count) / (2.0 * count))


@_uint8_io
def adjust_contrast(x: torch.Tensor, factor) -> torch.Tensor:
    """ImageEnhance.Contrast: blend with the image's rounded mean grey level."""
    return _blend(x, contrast_mean(x), _per_sample(factor, x.shape[0], x.device))


@_uint8_io
def adjust_saturation(x: torch.Tensor, factor) -> torch.Tensor:
    """ImageEnhance.Color: blend with the per-pixel grey image."""
    return _blend(x, gray_levels(x), _per_sample(factor, x.shape[0], x.device))


def sharpness_(x: torch.Tensor, factor_col: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Sharpness in place: the blend of x with Pillow's SMOOTH filter (3x3 kernel
    1 1 1 / 1 5 1 / 1 1 1, / 13, rounded). SMOOTH keeps the 1-pixel border (Pillow's 3x3
    filters do not process it) and the blend of x with itself is x, so only the interior
    changes. The interior is floor(t / 13 + 0.5) for the integer t = 3x3 box + 4 x centre (box
    sums via slices: exact in float32 however they are summed); t / 13 + 0.5 is never closer
    than 1/26 to an integer (2 t + 13 is odd), so float rounding cannot move the floor. The
    blend keeps `blend_`'s separate roundings."""
    rows = x[..., :-2] + x[..., 1:-1]
    rows += x[..., 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :]
    box += rows[..., 2:, :]
    inner = x[..., 1:-1, 1:-1]
    smoothed = box.add_(inner, alpha=4.0).mul_(1.0 / 13.0).add_(0.5).floor_()
    inner.copy_(_trunc_levels((inner - smoothed).mul_(factor_col).add_(smoothed)))
    return x


@_uint8_io
def adjust_sharpness(x: torch.Tensor, factor) -> torch.Tensor:
    """ImageEnhance.Sharpness (`sharpness_` on a copy)."""
    return sharpness_(x.clone(), _col(_per_sample(factor, x.shape[0], x.device)))


def invert_(x: torch.Tensor) -> torch.Tensor:
    """ImageOps.invert in place: 255 - x (exact on integer levels)."""
    return x.neg_().add_(255.0)


@_uint8_io
def invert(x: torch.Tensor) -> torch.Tensor:
    return invert_(x.clone())


def posterize_(x: torch.Tensor, step_col: torch.Tensor) -> torch.Tensor:
    """ImageOps.posterize in place, given step = 2^(8 - bits): floor(x / step) * step."""
    return torch.div(x, step_col, out=x).floor_().mul_(step_col)


@_uint8_io
def posterize(x: torch.Tensor, bits) -> torch.Tensor:
    """ImageOps.posterize: keep the `bits` high bits (`posterize_` on a copy)."""
    b = _per_sample(bits, x.shape[0], x.device).clamp(0.0, 8.0)
    return posterize_(x.clone(), _col(torch.pow(2.0, 8.0 - b)))


def solarize_(x: torch.Tensor, below_col: torch.Tensor) -> torch.Tensor:
    """ImageOps.solarize in place, given below = ceil(threshold) - 1: x + s (255 - 2 x) with
    s = clip(x - below, 0, 1), i.e. 255 - x where x >= threshold (integer levels: exact)."""
    s = (x - below_col).clamp_(0.0, 1.0)
    return x.add_(s.mul_(x.mul(-2.0).add_(255.0)))


@_uint8_io
def solarize(x: torch.Tensor, threshold) -> torch.Tensor:
    """ImageOps.solarize: x if x < threshold else 255 - x (`solarize_` on a copy)."""
    t = _col(torch.ceil(_per_sample(threshold, x.shape[0], x.device)))
    return solarize_(x.clone(), t - 1.0)


def autocontrast_lut(x: torch.Tensor) -> torch.Tensor:
    """ImageOps.autocontrast's table (cutoff 0) per image and channel, (N, 3, 256) float:
    int(i * scale + offset) clipped, scale = 255 / (hi - lo), offset = -lo * scale; a flat
    channel keeps the identity.

    Evaluated in float64 with Pillow's operation order: for many levels the exact value is an
    integer and the double rounding (e.g. 50.99999999999999) decides the truncation.
    """
    lo = x.amin(dim=(2, 3)).double().unsqueeze(-1)
    hi = x.amax(dim=(2, 3)).double().unsqueeze(-1)
    flat = hi <= lo
    # torch.div, not `255.0 / t` (which torch computes as 255 * (1 / t), rounding differently)
    scale = torch.div(torch.full_like(hi, 255.0), torch.where(flat, torch.ones_like(hi), hi - lo))
    scale = torch.where(flat, torch.ones_like(hi), scale)
    offset = torch.where(flat, torch.zeros_like(lo), -lo * scale)
    levels = torch.arange(256, device=x.device, dtype=torch.float64)
    return torch.trunc(levels * scale + offset).clamp_(0.0, 255.0).to(x.dtype)


def apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Map every pixel through its image's and channel's table, lut (N, 3, 256) of x's dtype."""
    n, c, h, w = x.shape
    return lut.gather(2, x.reshape(n, c, h * w).long()).view(n, c, h, w)


@_uint8_io
def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """ImageOps.autocontrast (cutoff 0) per image and channel."""
    return apply_lut(x, autocontrast_lut(x))


def channel_histograms(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel 256-bin histogram, (N, 3, 256) float32 counts (exact), by one
    scatter_add over the flattened channels."""
    n, c, h, w = x.shape
    index = x.reshape(n * c, h * w).long()
    ones = torch.ones((1, 1), dtype=torch.float32, device=x.device).expand(n * c, h * w)
    hist = torch.zeros((n * c, 256), dtype=torch.float32, device=x.device)
    return hist.scatter_add_(1, index, ones).view(n, c, 256)


def equalize_table(hist: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize's table from per-(image, channel) histograms (..., 256) float32;
    levels: arange(256) float32.

    Pillow: step = (count - count of the last used level) // 255; level i maps to
    (step // 2 + number of pixels below i) // step, clipped to 255 by `Image.point`; a channel
    with one used level, or step 0, keeps the identity. Here with fewer operations, same values:
    count - (count of the last used level) is the number of pixels below the last used level,
    i.e. the largest `below` over the used levels (`below` is non-decreasing); a channel with a
    single used level has step 0, so the identity condition is step == 0 alone. All values are
    integers below 2^24 (exact in float32), and a // b = floor(a / b) exactly: a quotient that
    is not an integer is at least 1 / b below the next one, far above float32 rounding.
    """
    below = torch.cumsum(hist, dim=-1).sub_(hist)
    step = (below * hist.clamp(0.0, 1.0)).amax(dim=-1, keepdim=True).div_(255.0).floor_()
    lut = below.add_(torch.floor(step * 0.5)).div_(step.clamp(min=1.0)).floor_().clamp_(max=255.0)
    return torch.where(step == 0.0, levels, lut)


def equalize_lut(x: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize's table per image and channel, (N, 3, 256) float32."""
    levels = torch.arange(256, device=x.device, dtype=torch.float32)
    return equalize_table(channel_histograms(x), levels)


@_uint8_io
def equalize(x: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize per image and channel."""
    return apply_lut(x, equalize_lut(x).to(x.dtype))


def rgb_to_hsv(x: torch.Tensor):
    """Pillow's RGB -> HSV (`rgb2hsv_row`), levels as float32 (N, H, W) each; x is not modified.

    Pillow's hue is, by the channel holding the maximum (r before g before b on ties) and the
    minimum, one of 1 - rc, bc - 1, 1 + rc, 3 - bc, 3 + gc, 5 - rc (rc = (max - r) / (max - min)
    in float, ...), i.e. base + sign * ratio with ratio = (max - mid) / (max - min), computed in
    double and rounded to float: a single rounding, as `base + sign * ratio` is here. With the
    channels in cyclic order (r, g, b) and t = successor - predecessor of the maximum's channel,
    sign = -sign(t) (+1 where the minimum follows the maximum; t = 0 only where the ratio is 0
    or 1 and the sign does not matter), max - mid = (max - min) - |t|, and base = 2 * (index of
    the max) - sign. Grey pixels come out as hue 0 without a mask (max in r, t = 0).

    Float32 gives the same bytes as Pillow for all 2^24 colours (a test checks every colour,
    and every (h, s, v) triple for `hsv_to_rgb`). Branches are float arithmetic (clamp(d, 0, 1)
    of an integer-valued d: on CPU a comparison plus a bool -> float conversion costs about ten
    elementwise float ops), and all but a few ops run in place (measured 1.5-1.9x faster than fresh
    tensors per op, which cost a write-allocate and page faults).
    """
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc = torch.maximum(r, g)
    torch.maximum(maxc, b, out=maxc)
    cr = torch.minimum(r, g)
    torch.minimum(cr, b, out=cr)
    torch.sub(maxc, cr, out=cr)  # max - min
    sat = maxc.clamp(min=1.0)
    torch.div(cr, sat, out=sat).mul_(255.0).floor_()
    e_r = (maxc - r).clamp_(0.0, 1.0)  # 0 iff r holds the maximum
    e_g = (maxc - g).clamp_(0.0, 1.0)  # 0 iff g does
    t_r, t_g, t = g - b, b - r, r - g  # t for a maximum in r, g, b
    t.sub_(t_g).mul_(e_g).add_(t_g)  # g or b
    t.sub_(t_r).mul_(e_r).add_(t_r)  # r, or the former
    base = e_g.add_(1.0).mul_(e_r).mul_(2.0)  # 2 * index of the max (0, 2, 4)
    sign = torch.sign(t).neg_()
    ratio = t.abs_().neg_().add_(cr).div_(cr.clamp(min=1.0))
    hue = ratio.mul_(sign).add_(base.sub_(sign))  # in [-1, 5]
    negative = (hue * -1e6).clamp_(0.0, 1.0)  # |hue| >= 1/255 when negative
    hue = hue.div_(6.0).add_(negative).mul_(255.0).floor_()  # fmod(h / 6 + 1, 1) * 255
    return hue, sat, maxc


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Pillow's HSV -> RGB (`hsv2rgb`), float32 levels in, (N, 3, H, W) out (written into `out`
    when given; exhaustively checked like `rgb_to_hsv`).

    Pillow computes p = round(v (1 - fs)), q = round(v (1 - fs f)), t = round(v (1 - fs (1 - f)))
    (fs = s / 255, f the fraction of the sector h * 6 / 255) and picks (v, t, p), (q, v, p),
    (p, v, t), (p, q, v), (t, p, v), (v, p, q) in sectors 0..5. Each channel is therefore
    round(v (1 - fs w)) with a piecewise-linear w of hh = h * 6 / 255 (0, f, 1 or 1 - f), whose
    pieces (hh - 1, 5 - hh, ...) are exact float32 differences. s == 0 gives v everywhere.
    """
    hh = h.mul(6.0).div_(255.0)
    minus_fs = s.div(-255.0).unsqueeze(1)
    if out is None:
        out = h.new_empty((h.shape[0], 3, *h.shape[1:]))
    red, green, blue = out[:, 0], out[:, 1], out[:, 2]
    torch.minimum(torch.sub(hh, 1.0, out=red), 5.0 - hh, out=red)
    torch.maximum(torch.sub(hh, 3.0, out=green), 1.0 - hh, out=green)
    torch.maximum(torch.sub(hh, 5.0, out=blue), 3.0 - hh, out=blue)
    return out.clamp_(0.0, 1.0).mul_(minus_fs).add_(1.0).mul_(v.unsqueeze(1)).add_(0.5).floor_()


def hue_shift(hue_factor, n: int, device) -> torch.Tensor:
    """The hue shift int(hue * 255) mod 256 (torchvision, in double) as (N,) float32 levels."""
    shift = torch.trunc(_per_sample(hue_factor, n, device, torch.float64) * 255.0)
    return torch.remainder(shift, 256.0).float()


def adjust_hue_(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """`adjust_hue` in place on a float32 batch, given the shifts of `hue_shift`."""
    h, s, v = rgb_to_hsv(x)
    h.add_(shift.view(-1, 1, 1))
    h.sub_((h - 255.0).clamp_(0.0, 1.0).mul_(256.0))  # mod 256
    return hsv_to_rgb(h, s, v, out=x)


def _adjust_hue_by_factor_(x: torch.Tensor, hue_factor) -> torch.Tensor:
    """`adjust_hue_` given torchvision's hue factors instead of shifts."""
    return adjust_hue_(x, hue_shift(hue_factor, x.shape[0], x.device))


@_uint8_io
def adjust_hue(x: torch.Tensor, hue_factor) -> torch.Tensor:
    """torchvision's PIL `adjust_hue`: HSV round trip with H += int(hue * 255) mod 256."""
    return _adjust_hue_by_factor_(x.clone(), hue_factor)


# ------------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------------


def _gather_pixels(x: torch.Tensor, sy: torch.Tensor, sx: torch.Tensor, fill: float) -> torch.Tensor:
    """out[n, :, i, j] = x[n, :, sy, sx] for float64 integer coordinates sy, sx (N, H, W), or
    `fill` where they fall outside.

    The batch gets a one-pixel border of `fill` and the coordinates are clamped onto it, so no
    validity mask is computed over the pixels.
    """
    n, c, h, w = x.shape
    source = torch.nn.functional.pad(x, (1, 1, 1, 1), value=fill).view(n, c, -1)
    sy = sy.clamp(-1.0, float(h)).add_(1.0).mul_(float(w + 2))
    index = sy.add_(sx.clamp(-1.0, float(w)).add_(1.0)).long().view(n, 1, h * w)
    return source.gather(2, index.expand(n, c, h * w)).view(n, c, h, w)


def crop_flip(x: torch.Tensor, top, left, flip=None, padding: int = CROP_PADDING) -> torch.Tensor:
    """RandomCrop(size, padding, fill 0) at (top, left) of the padded image, then an optional
    horizontal flip: one gather from the zero-padded batch. top, left in [0, 2 * padding]."""
    n, c, h, w = x.shape
    dev = x.device
    top = _per_sample(top, n, dev, torch.int64).view(n, 1, 1)
    left = _per_sample(left, n, dev, torch.int64).view(n, 1, 1)
    wp = w + 2 * padding
    cols = torch.arange(w, device=dev).view(1, 1, w)
    if flip is not None:
        flip = _per_sample(flip, n, dev, torch.int64).view(n, 1, 1)
        cols = cols + flip * (w - 1 - 2 * cols)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    index = ((rows + top) * wp + cols + left).view(n, 1, h * w).expand(n, c, h * w)
    padded = torch.nn.functional.pad(x, (padding,) * 4).view(n, c, -1)
    return padded.gather(2, index).view(n, c, h, w)


def _fix16(v: torch.Tensor) -> torch.Tensor:
    """Pillow's FIX: 16.16 fixed point, floor(v * 65536 + 0.5), as an integer-valued float64."""
    return torch.floor(v * 65536.0 + 0.5)


@_uint8_io
def affine_nearest(x: torch.Tensor, matrix: torch.Tensor, fill: float = AUTOAUGMENT_FILL) -> torch.Tensor:
    """Pillow `Image.transform(AFFINE, NEAREST)`: out(x, y) = in(floor(M (x + .5, y + .5, 1))).

    matrix (N, 2, 3): the inverse map (output -> input pixel coordinates), Pillow's convention.
    Pillow evaluates this in two ways, both reproduced per sample: a matrix without rotation or
    shear terms (m01 = m10 = 0: translations) in float64 (`ImagingScaleAffine`), any other one in
    16.16 fixed point (`affine_fixed`, used whenever the image corners map within +-32768, i.e.
    always at these sizes): src = (FIX(m02 + m00 / 2 + m01 / 2) + x FIX(m00) + y FIX(m01)) >> 16
    (and likewise for y), which differs from the float formula for some angles (e.g. Rotate 20).
    """
    n, c, h, w = x.shape
    m = matrix.to(device=x.device, dtype=torch.float64).reshape(n, 6, 1, 1)
    xi = torch.arange(w, device=x.device, dtype=torch.float64).view(1, 1, w)
    yi = torch.arange(h, device=x.device, dtype=torch.float64).view(1, h, 1)
    xs, ys = xi + 0.5, yi + 0.5
    sx = (m[:, 0] * xs + m[:, 1] * ys + m[:, 2]).floor_()
    sy = (m[:, 3] * xs + m[:, 4] * ys + m[:, 5]).floor_()
    fixed = ((m[:, 1] != 0) | (m[:, 3] != 0)).to(torch.float64)
    a2 = _fix16(m[:, 2] + m[:, 0] * 0.5 + m[:, 1] * 0.5)
    a5 = _fix16(m[:, 5] + m[:, 3] * 0.5 + m[:, 4] * 0.5)
    fx = (a2 + yi * _fix16(m[:, 1]) + xi * _fix16(m[:, 0])).mul_(1.0 / 65536.0).floor_()
    fy = (a5 + yi * _fix16(m[:, 4]) + xi * _fix16(m[:, 3])).mul_(1.0 / 65536.0).floor_()
    sx = sx.add_(fixed * (fx - sx))
    sy = sy.add_(fixed * (fy - sy))
    return _gather_pixels(x, sy, sx, float(fill))


def _pil_cubic(v1: torch.Tensor, v2: torch.Tensor, v3: torch.Tensor, v4: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Pillow's BICUBIC macro (Geometry.c, a = -1 cubic) in float64 with its operation order:
    v2 + d (p2 + d (p3 + d p4)), p2 = -v1 + v3, p3 = 2 (v1 - v2) + v3 - v4, p4 = -v1 + v2 - v3 + v4."""
    p2 = v3 - v1
    p3 = (2.0 * (v1 - v2)).add_(v3).sub_(v4)
    p4 = (v2 - v1).sub_(v3).add_(v4)
    return v2 + d * (p2 + d * (p3 + d * p4))


@_uint8_io
def affine_bicubic(x: torch.Tensor, matrix: torch.Tensor, fill: float = AUTOAUGMENT_FILL) -> torch.Tensor:
    """Pillow `Image.transform(AFFINE, BICUBIC, fillcolor=fill)` on RGB (bicubic_filter32RGB).

    The source point (sx, sy) = M (x + .5, y + .5) must lie in [0, W) x [0, H), else the output
    is `fill`; from (sx - .5, sy - .5), integer part i and fraction d, a 4x4 neighbourhood
    (i - 1 .. i + 2, clamped to the image) is interpolated along x per row, then along y, in
    float64 with Pillow's operation order, and the result is clamped to [0, 255] and truncated.
    matrix (N, 2, 3): the inverse map, Pillow's convention.
    """
    n, c, h, w = x.shape
    m = matrix.to(device=x.device, dtype=torch.float64).reshape(n, 6, 1, 1)
    xs = (torch.arange(w, device=x.device, dtype=torch.float64) + 0.5).view(1, 1, w)
    ys = (torch.arange(h, device=x.device, dtype=torch.float64) + 0.5).view(1, h, 1)
    sx = m[:, 0] * xs + m[:, 1] * ys + m[:, 2]
    sy = m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    valid = ((sx >= 0.0) & (sx < float(w)) & (sy >= 0.0) & (sy < float(h))).unsqueeze(1)
    sx, sy = sx - 0.5, sy - 0.5
    ix, iy = torch.floor(sx), torch.floor(sy)
    dx, dy = (sx - ix).unsqueeze(1), (sy - iy).unsqueeze(1)
    src = x.to(torch.float64).reshape(n, c, h * w)
    cols = [(ix + (k - 1)).clamp_(0.0, float(w - 1)) for k in range(4)]
    rows = [(iy + (k - 1)).clamp_(0.0, float(h - 1)).mul_(float(w)) for k in range(4)]

    def tap(r: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        index = (r + col).long().view(n, 1, h * w).expand(n, c, h * w)
        return src.gather(2, index).view(n, c, h, w)

    per_row = [_pil_cubic(*(tap(r, col) for col in cols), dx) for r in rows]
    v = _pil_cubic(*per_row, dy).clamp_(0.0, 255.0).floor_()
    return torch.where(valid, v, float(fill)).to(torch.float32)


def _matrix(a, b, c, d, e, f) -> torch.Tensor:
    return torch.stack([a, b, c, d, e, f], dim=-1).view(-1, 2, 3)


def rotate_matrix(angle: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pillow `Image.rotate(angle)` (degrees counter-clockwise about (w/2, h/2)), inverse map."""
    rad = -angle.double() * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    cx, cy = w / 2.0, h / 2.0
    return _matrix(cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)


def shear_x_matrix(m: torch.Tensor) -> torch.Tensor:
    """torchvision AutoAugment ShearX (angle atan(m), about the origin): x_in = x + m y."""
    m = m.double()
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return _matrix(one, m, zero, zero, one, zero)


def shear_y_matrix(m: torch.Tensor) -> torch.Tensor:
    """AutoAugment ShearY: y_in = m x + y."""
    m = m.double()
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return _matrix(one, zero, zero, m, one, zero)


def translate_matrix(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Translation by (tx, ty) pixels: x_in = x - tx, y_in = y - ty."""
    tx, ty = tx.double(), ty.double()
    one, zero = torch.ones_like(tx), torch.zeros_like(tx)
    return _matrix(one, zero, -tx, zero, one, -ty)


def rotate(x, angle, fill: float = AUTOAUGMENT_FILL):
    n, _, h, w = x.shape
    return affine_nearest(x, rotate_matrix(_per_sample(angle, n, x.device, torch.float64), h, w), fill)


def shear_x(x, m, fill: float = AUTOAUGMENT_FILL):
    return affine_nearest(x, shear_x_matrix(_per_sample(m, x.shape[0], x.device, torch.float64)), fill)


def shear_y(x, m, fill: float = AUTOAUGMENT_FILL):
    return affine_nearest(x, shear_y_matrix(_per_sample(m, x.shape[0], x.device, torch.float64)), fill)


def translate(x, tx, ty, fill: float = AUTOAUGMENT_FILL):
    n = x.shape[0]
    tx = _per_sample(tx, n, x.device, torch.float64)
    ty = _per_sample(ty, n, x.device, torch.float64)
    return affine_nearest(x, translate_matrix(tx, ty), fill)


def bilinear_taps(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int, flip=None):
    """PIL's bilinear upsampling of [start, start + length) per sample: for output pixel k the two
    source pixels (absolute indices, (N, out) int64) and their weights ((N, out) float32).

    Output pixel k reads the crop at (k + 0.5) * length / out - 0.5, clamped to the crop's
    first/last pixel (PIL drops out-of-crop taps and renormalises, which is the same), with
    weights 1 - frac and frac: exact multiples of 1 / (2 * out). `flip` mirrors k.
    """
    n = start.shape[0]
    dev = start.device
    k = torch.arange(out_size, device=dev, dtype=torch.float64).view(1, out_size)
    if flip is not None:
        k = k + flip.view(n, 1).double() * (out_size - 1 - 2 * k)
    length = length.double().view(n, 1)
    src = ((k + 0.5) * length / out_size - 0.5).clamp(min=0.0)
    src = torch.minimum(src, length - 1.0)
    i0 = torch.floor(src)
    w1 = src - i0
    i1 = torch.minimum(i0 + 1.0, length - 1.0)
    base = start.double().view(n, 1)
    return (i0 + base).long(), (i1 + base).long(), (1.0 - w1).float(), w1.float()


def bilinear_matrix(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int,
                    flip=None) -> torch.Tensor:
    """(N, out, in) float32 weights of PIL's bilinear upsampling (`bilinear_taps` as a matrix)."""
    i0, i1, w0, w1 = bilinear_taps(start, length, in_size, out_size, flip)
    weights = torch.zeros(start.shape[0], out_size, in_size, device=start.device)
    weights.scatter_add_(2, i0.unsqueeze(-1), w0.unsqueeze(-1))
    weights.scatter_add_(2, i1.unsqueeze(-1), w1.unsqueeze(-1))
    return weights


def resized_crop_levels(x: torch.Tensor, top, left, height, width, flip=None, size: int | None = None) -> torch.Tensor:
    """`resized_crop` of a uint8 or float32 batch, float32 levels out (the pipeline's entry).

    Two batched matrix products, horizontal then vertical, each rounded like PIL's two passes.
    The batch is read into an (N, H, C, W) layout (the dtype conversion copies it anyway), so
    both products are plain `bmm`s of (N, H C, W) and (N, S, H) by (N, H, C S) without the
    transposes of the intermediate; one permuting copy at the end (measured ~20% faster).
    """
    n, c, h, w = x.shape
    size = size or h
    dev = x.device
    top, left, height, width = (_per_sample(v, n, dev, torch.int64) for v in (top, left, height, width))
    if flip is not None:
        flip = _per_sample(flip, n, dev, torch.bool)
    wx = bilinear_matrix(left, width, w, size, flip)  # (N, S, W)
    wy = bilinear_matrix(top, height, h, size)  # (N, S, H)
    rows = torch.empty((n, h, c, w), device=dev, dtype=torch.float32)
    rows.copy_(x.permute(0, 2, 1, 3))
    cols = torch.bmm(rows.view(n, h * c, w), wx.transpose(1, 2)).add_(0.5).floor_()  # (N, H C, S)
    out = torch.bmm(wy, cols.view(n, h, c * size)).add_(0.5).floor_()  # (N, S, C S)
    return out.view(n, size, c, size).permute(0, 2, 1, 3).contiguous()


@_uint8_io
def resized_crop(x: torch.Tensor, top, left, height, width, flip=None, size: int | None = None) -> torch.Tensor:
    """`resized_crop(img, top, left, height, width, size, BILINEAR)` on PIL, then optional flip."""
    return resized_crop_levels(x, top, left, height, width, flip, size)


# ------------------------------------------------------------------------------------------------
# Cutout and normalisation
# ------------------------------------------------------------------------------------------------


def cutout_keep(cy: torch.Tensor, cx: torch.Tensor, h: int, w: int, length: int = CUTOUT_LENGTH) -> torch.Tensor:
    """(N, 1, H, W) float: 0 on rows/cols [c - length//2, c + length//2) (clipped), else 1."""
    half = length // 2
    n = cy.shape[0]
    ys = torch.arange(h, device=cy.device).view(1, h)
    xs = torch.arange(w, device=cy.device).view(1, w)
    in_y = ((ys >= cy.view(n, 1) - half) & (ys < cy.view(n, 1) + half)).float()
    in_x = ((xs >= cx.view(n, 1) - half) & (xs < cx.view(n, 1) + half)).float()
    return 1.0 - in_y.view(n, 1, h, 1) * in_x.view(n, 1, 1, w)


@_uint8_io
def cutout(x: torch.Tensor, cy, cx, length: int = CUTOUT_LENGTH) -> torch.Tensor:
    """Zero a clipped square hole centred at (cy, cx) (the reference zeroes the [0, 1] tensor)."""
    n, _, h, w = x.shape
    cy = _per_sample(cy, n, x.device, torch.int64)
    cx = _per_sample(cx, n, x.device, torch.int64)
    return x * cutout_keep(cy, cx, h, w, length)


def normalize_constants(mean, std, device):
    """(1 / (255 std), -mean / std) as (1, 3, 1, 1) float32: ToTensor + Normalize is x * a + b."""
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return 1.0 / (255.0 * std_t), -mean_t / std_t


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """ToTensor + Normalize: (x / 255 - mean) / std as one multiply-add, float32 out."""
    scale, shift = normalize_constants(mean, std, x.device)
    return (x.float() * scale).add_(shift)


# ------------------------------------------------------------------------------------------------
# AutoAugment CIFAR-10 policy (torchvision's and the releases' CIFAR10Policy)
# ------------------------------------------------------------------------------------------------

AUTOAUGMENT_OPS = ("Invert", "Contrast", "Rotate", "TranslateX", "TranslateY", "Sharpness", "ShearX",
                   "ShearY", "AutoContrast", "Equalize", "Posterize", "Color", "Brightness", "Solarize")
_OP = {name: i for i, name in enumerate(AUTOAUGMENT_OPS)}
GEOMETRIC_OPS = ("Rotate", "TranslateX", "TranslateY", "ShearX", "ShearY")
SIGNED_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
              "Contrast", "Sharpness")

# The 25 sub-policies of the AutoAugment paper for CIFAR-10 (op, probability, magnitude bin) in
# torchvision's order (a test checks them against torchvision's AutoAugment).
CIFAR10_POLICY = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)


def autoaugment_magnitudes(h: int, w: int, num_bins: int = 10) -> dict[str, torch.Tensor]:
    """Magnitude of each bin per op: torchvision's AutoAugment space (float32 linspace values)."""
    zero = torch.zeros(num_bins)
    return {
        "ShearX": torch.linspace(0.0, 0.3, num_bins),
        "ShearY": torch.linspace(0.0, 0.3, num_bins),
        "TranslateX": torch.linspace(0.0, 150.0 / 331.0 * w, num_bins),
        "TranslateY": torch.linspace(0.0, 150.0 / 331.0 * h, num_bins),
        "Rotate": torch.linspace(0.0, 30.0, num_bins),
        "Brightness": torch.linspace(0.0, 0.9, num_bins),
        "Color": torch.linspace(0.0, 0.9, num_bins),
        "Contrast": torch.linspace(0.0, 0.9, num_bins),
        "Sharpness": torch.linspace(0.0, 0.9, num_bins),
        "Posterize": (8 - (torch.arange(num_bins) / ((num_bins - 1) / 4)).round().int()).float(),
        "Solarize": torch.linspace(255.0, 0.0, num_bins),
        "AutoContrast": zero,
        "Equalize": zero,
        "Invert": zero,
    }


def release_magnitudes(h: int, w: int) -> dict[str, torch.Tensor]:
    """Magnitude of each bin per op in the releases' CIFAR10Policy (`cifar10_policy.RANGES`,
    float64): translations in fractional pixels (fraction * side), Solarize linspace(256, 0, 10)."""
    from benchmarks.data.views.cifar10_policy import OP_NAMES, RANGES

    side = {"translateX": float(w), "translateY": float(h)}
    return {OP_NAMES[op]: torch.tensor(np.asarray(values, dtype=np.float64) * side.get(op, 1.0))
            for op, values in RANGES.items()}


def _policy_rows(kind: str):
    """The 25 sub-policies as ((op, probability, bin), (op, probability, bin)) in fast.py's op
    names, for kind "torchvision" or "release" (the same table, checked by the tests)."""
    if kind == "torchvision":
        return CIFAR10_POLICY
    from benchmarks.data.views.cifar10_policy import OP_NAMES, RELEASE_POLICY

    return tuple(((OP_NAMES[a], pa, ba), (OP_NAMES[b], pb, bb)) for a, pa, ba, b, pb, bb in RELEASE_POLICY)


POLICY_KINDS = tuple(AUTOAUG_VIEWS.values())


class PolicyTables:
    """The policy as device tensors, (25, 2) each: op id, probability, magnitude (unsigned), and
    per op id whether it is signed, a nearest-neighbour geometric op or a bicubic one.

    kind "torchvision": torchvision's AutoAugment (u <= p runs the op; every geometric op
    nearest, Rotate signed, Translate int(m) pixels). kind "release": the releases'
    CIFAR10Policy (`benchmarks.data.views.cifar10_policy`: u < p; Shear bicubic; Rotate unsigned;
    Translate fractional, inverse-map offset m; Solarize linspace(256, 0, 10)).
    """

    def __init__(self, h: int, w: int, device, kind: str = "torchvision") -> None:
        if kind not in POLICY_KINDS:
            raise LTBenchError(f"unknown AutoAugment policy {kind!r}; known: {', '.join(POLICY_KINDS)}")
        self.kind = kind
        self.strict = kind == "release"
        mags = autoaugment_magnitudes(h, w) if kind == "torchvision" else release_magnitudes(h, w)
        ops, probs, values = [], [], []
        for sub in _policy_rows(kind):
            ops.append([_OP[name] for name, _, _ in sub])
            probs.append([p for _, p, _ in sub])
            values.append([float(mags[name][b]) if b is not None else 0.0 for name, _, b in sub])
        self.op = torch.tensor(ops, device=device)
        self.prob = torch.tensor(probs, device=device, dtype=torch.float32)
        self.magnitude = torch.tensor(values, device=device, dtype=torch.float64)
        signed = [n for n in SIGNED_OPS if not (kind == "release" and n == "Rotate")]
        bicubic = ("ShearX", "ShearY") if kind == "release" else ()
        self.signed = torch.tensor([name in signed for name in AUTOAUGMENT_OPS], device=device)
        self.geometric = torch.tensor([name in GEOMETRIC_OPS and name not in bicubic for name in AUTOAUGMENT_OPS],
                                      device=device)
        self.bicubic = torch.tensor([name in bicubic for name in AUTOAUGMENT_OPS], device=device)


_TABLES: dict = {}


def policy_tables(h: int, w: int, device, kind: str = "torchvision") -> PolicyTables:
    """The policy tables for an image size on a device, built once."""
    key = (str(device), h, w, kind)
    if key not in _TABLES:
        _TABLES[key] = PolicyTables(h, w, device, kind)
    return _TABLES[key]


def sample_autoaugment(n: int, device):
    """AutoAugment draws per sample (torchvision's get_params; the release's policy consumes the
    same draws): sub-policy uniform over the 25, two uniforms (step i runs if u_i <= p_i, or
    u_i < p_i for the release) and two signs (0: negative magnitude if the op is signed)."""
    policy = torch.randint(len(CIFAR10_POLICY), (n,), device=device)
    u = torch.rand(n, 2, device=device)
    sign = torch.randint(2, (n, 2), device=device)
    return policy, u, sign


def autoaugment_steps(policy: torch.Tensor, u: torch.Tensor, sign: torch.Tensor, tables: PolicyTables):
    """Per sample and step (N, 2): op id, whether it runs (u <= p; u < p for the release) and its
    signed magnitude (negated where the op is signed and the sign draw is 0)."""
    op = tables.op[policy]
    prob = tables.prob[policy]
    applied = u < prob if tables.strict else u <= prob
    magnitude = tables.magnitude[policy]
    magnitude = torch.where(tables.signed[op] & (sign == 0), -magnitude, magnitude)
    return op, applied, magnitude


def autoaugment_geometric(x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor,
                          fill: float = AUTOAUGMENT_FILL) -> torch.Tensor:
    """The geometric ops (Rotate, Shear, Translate) for per-sample op ids and signed
    magnitudes, as one nearest-neighbour gather; translations move int(magnitude) pixels."""
    n, _, h, w = x.shape
    mag = magnitude.double()
    shift = torch.trunc(mag)
    zero = torch.zeros_like(mag)
    matrix = translate_matrix(zero, zero)
    for name, m in (("Rotate", rotate_matrix(mag, h, w)), ("ShearX", shear_x_matrix(mag)),
                    ("ShearY", shear_y_matrix(mag)), ("TranslateX", translate_matrix(shift, zero)),
                    ("TranslateY", translate_matrix(zero, shift))):
        matrix = torch.where((op == _OP[name]).view(n, 1, 1), m, matrix)
    return affine_nearest(x, matrix, fill)


def release_geometric_nearest(x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor,
                              fill: float = AUTOAUGMENT_FILL) -> torch.Tensor:
    """The release's nearest-neighbour geometric ops: Rotate by m degrees (m >= 0, Pillow's
    rotate) and Translate with the fractional inverse-map offset m pixels
    (`transform(AFFINE, (1, 0, m, 0, 1, 0))`), as one gather."""
    n, _, h, w = x.shape
    mag = magnitude.double()
    zero = torch.zeros_like(mag)
    matrix = translate_matrix(zero, zero)
    for name, m in (("Rotate", rotate_matrix(mag, h, w)), ("TranslateX", translate_matrix(-mag, zero)),
                    ("TranslateY", translate_matrix(zero, -mag))):
        matrix = torch.where((op == _OP[name]).view(n, 1, 1), m, matrix)
    return affine_nearest(x, matrix, fill)


def release_shear(x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor,
                  fill: float = AUTOAUGMENT_FILL) -> torch.Tensor:
    """The release's ShearX / ShearY (per-sample op id, signed m): bicubic affine, fill 128."""
    n = x.shape[0]
    mag = magnitude.double()
    matrix = torch.where((op == _OP["ShearX"]).view(n, 1, 1), shear_x_matrix(mag), shear_y_matrix(mag))
    return affine_bicubic(x, matrix, fill)


# The other ops: (function, how its argument follows from the signed magnitude m).
_AUTOAUGMENT_PIXEL_OPS = (
    ("Invert", lambda x, m: invert(x)),
    ("Contrast", lambda x, m: adjust_contrast(x, 1.0 + m)),
    ("Sharpness", lambda x, m: adjust_sharpness(x, 1.0 + m)),
    ("AutoContrast", lambda x, m: autocontrast(x)),
    ("Equalize", lambda x, m: equalize(x)),
    ("Posterize", lambda x, m: posterize(x, torch.trunc(m))),
    ("Color", lambda x, m: adjust_saturation(x, 1.0 + m)),
    ("Brightness", lambda x, m: adjust_brightness(x, 1.0 + m)),
    ("Solarize", lambda x, m: solarize(x, m)),
)


# ------------------------------------------------------------------------------------------------
# Applying an op to the samples that chose it
# ------------------------------------------------------------------------------------------------


def apply_masked(x: torch.Tensor, mask: torch.Tensor, fn, *params) -> torch.Tensor:
    """fn on the whole batch, kept where mask: static shapes, no device sync."""
    return _select(x, mask, fn(x, *params))


def apply_grouped(x: torch.Tensor, mask: torch.Tensor, fn, *params) -> torch.Tensor:
    """fn only on the samples in mask, written back into x in place (x must be owned by the
    caller's pipeline); reads the subset size, which would sync an accelerator."""
    idx = mask.nonzero().squeeze(1)
    count = idx.numel()
    if count == 0:
        return x
    if count == x.shape[0]:
        return fn(x, *params)
    sub = fn(x.index_select(0, idx), *(p.index_select(0, idx) for p in params))
    return x.index_copy_(0, idx, sub.to(x.dtype))


_APPLY = {"masked": apply_masked, "grouped": apply_grouped}


def _owned_float(x: torch.Tensor) -> torch.Tensor:
    """A float32 copy the pipeline may modify in place."""
    return x.float() if x.dtype != torch.float32 else x.clone()


def autoaugment(x: torch.Tensor, policy: torch.Tensor, u: torch.Tensor, sign: torch.Tensor,
                strategy: str = "masked", kind: str = "torchvision") -> torch.Tensor:
    """AutoAugment CIFAR-10 with given draws (see `sample_autoaugment`), both steps in order;
    kind "torchvision" (torchvision's AutoAugment) or "release" (the releases' CIFAR10Policy).

    Each step of a sample runs at most one op: per step the nearest-neighbour geometric ops run
    as one family (one gather), the release's bicubic shears as another, then each other op on
    the samples that chose it.
    """
    return _autoaugment_owned(_owned_float(x), policy, u, sign, strategy, kind).to(x.dtype)


def _autoaugment_owned(out: torch.Tensor, policy, u, sign, strategy: str, kind: str = "torchvision") -> torch.Tensor:
    """`autoaugment` on a float32 batch the caller owns (modified in place when grouped).

    The pixel ops get the float64 magnitude: an enhancement factor is 1 + m in double, rounded
    to float32 only where PIL rounds it (the C float of `Image.blend`)."""
    apply = _APPLY[strategy]
    n, _, h, w = out.shape
    tables = policy_tables(h, w, out.device, kind)
    op, applied, magnitude = autoaugment_steps(policy, u, sign, tables)
    nearest = autoaugment_geometric if kind == "torchvision" else release_geometric_nearest
    for step in range(2):
        o, a, m = op[:, step], applied[:, step], magnitude[:, step]
        out = apply(out, a & tables.geometric[o], nearest, o, m)
        if kind == "release":
            out = apply(out, a & tables.bicubic[o], release_shear, o, m)
        for name, fn in _AUTOAUGMENT_PIXEL_OPS:
            out = apply(out, a & (o == _OP[name]), fn, m)
    return out


def _jitter_blend(x: torch.Tensor, op_id: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Brightness (op 0), contrast (1) or saturation (2) per sample on a float32 batch, as one
    blend trunc(clip(deg + f (x - deg))) with deg = 0, the rounded mean grey level or the grey
    image: the same float32 operations as the three separate ops (`_blend`), in one pass over
    the samples. Returns a new tensor (the masked strategy needs x intact)."""
    gray = gray_levels(x)
    mean = contrast_mean(x, gray)
    is_contrast = _col((op_id == 1).to(x.dtype))
    is_saturation = _col((op_id == 2).to(x.dtype))
    degenerate = gray.mul_(is_saturation).add_(mean * is_contrast)
    return blend_(x.clone(), degenerate, _col(factor.to(x.dtype)))


def color_jitter(x: torch.Tensor, applied: torch.Tensor, factors: torch.Tensor, order: torch.Tensor,
                 strategy: str = "masked") -> torch.Tensor:
    """RandomApply(ColorJitter) with given draws (see `sample_jitter`): in slot k each applied
    sample runs op order[:, k] (0 brightness, 1 contrast, 2 saturation, 3 hue) with its factor.

    Per slot, the three blends run as one op (`_jitter_blend`) and hue as another, on the samples
    that chose them ("grouped") or on all and merged ("masked"). (The contrastive views on CPU
    use `contrastive_cpu` instead, when numba is installed.)
    """
    out = _owned_float(x)
    apply = _APPLY[strategy]
    for slot in range(4):
        op_id = order[:, slot]
        factor = factors.gather(1, op_id.view(-1, 1)).squeeze(1)
        out = apply(out, applied & (op_id < 3), _jitter_blend, op_id, factor)
        out = apply(out, applied & (op_id == 3), adjust_hue, factors[:, 3])
    return out.to(x.dtype)


# ------------------------------------------------------------------------------------------------
# Random parameters (the distributions of torchvision's transforms)
# ------------------------------------------------------------------------------------------------


def sample_crop(n: int, padding: int, device):
    """RandomCrop with padding p: top, left uniform on {0, ..., 2p}."""
    top = torch.randint(2 * padding + 1, (n,), device=device)
    left = torch.randint(2 * padding + 1, (n,), device=device)
    return top, left


def sample_flip(n: int, device, p: float = 0.5) -> torch.Tensor:
    """RandomHorizontalFlip: flip if u < p."""
    return torch.rand(n, device=device) < p


def sample_resized_crop(n: int, h: int, w: int, scale, ratio, device, attempts: int = 10):
    """torchvision's RandomResizedCrop.get_params for every sample at once.

    Ten candidate boxes per sample (area fraction U(scale), log aspect ratio U(log ratio), sides
    round(sqrt(area * ratio)) and round(sqrt(area / ratio))); the first that fits wins, else the
    central-crop fallback; then a uniform position. Returns top, left, height, width (N,) int64.
    """
    area = float(h * w)
    log_r = torch.log(torch.tensor(ratio, dtype=torch.float32))
    frac = torch.empty(n, attempts, device=device).uniform_(scale[0], scale[1])
    aspect = torch.exp(torch.empty(n, attempts, device=device).uniform_(float(log_r[0]), float(log_r[1])))
    target = area * frac.double()
    aspect = aspect.double()
    cw = torch.round(torch.sqrt(target * aspect))
    ch = torch.round(torch.sqrt(target / aspect))
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.int().argmax(dim=1, keepdim=True)  # first fitting attempt (0 if none)
    found = fits.any(dim=1)
    cw = cw.gather(1, first).squeeze(1)
    ch = ch.gather(1, first).squeeze(1)
    in_ratio = w / h  # the fallback depends on the image size only
    if in_ratio < min(ratio):
        fw, fh = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(h * max(ratio))), h
    else:
        fw, fh = w, h
    cw = torch.where(found, cw, float(fw))
    ch = torch.where(found, ch, float(fh))
    pos = torch.rand(n, 2, device=device, dtype=torch.float64)
    top = torch.where(found, torch.floor(pos[:, 0] * (h - ch + 1)), float((h - fh) // 2))
    left = torch.where(found, torch.floor(pos[:, 1] * (w - cw + 1)), float((w - fw) // 2))
    return top.long(), left.long(), ch.long(), cw.long()


def sample_jitter(n: int, device, strength=JITTER, p: float = JITTER_P):
    """RandomApply(ColorJitter, p): applied (u <= p), factors (N, 4) for brightness, contrast,
    saturation (U(max(0, 1 - s), 1 + s)) and hue (U(-s, s)), and per-sample random order (N, 4)."""
    applied = torch.rand(n, device=device) <= p
    b, c, s, hue = strength
    ranges = ((max(0.0, 1 - b), 1 + b), (max(0.0, 1 - c), 1 + c), (max(0.0, 1 - s), 1 + s), (-hue, hue))
    u = torch.rand(n, 4, device=device)
    # Python-scalar bounds: no host-to-device copy in the hot path
    factors = torch.stack([lo + (hi - lo) * u[:, k] for k, (lo, hi) in enumerate(ranges)], dim=1)
    order = torch.rand(n, 4, device=device).argsort(dim=1)
    return applied, factors, order


# ------------------------------------------------------------------------------------------------
# The batched views
# ------------------------------------------------------------------------------------------------


def sample_view(name: str, n: int, h: int, w: int, device) -> dict[str, torch.Tensor]:
    """All random draws of a view for a batch, (N, ...) tensors, in a fixed order: the output
    depends on the generator state only (not on the chunking or strategy used to render it)."""
    params: dict[str, torch.Tensor] = {}
    if name == "test":
        return params
    if name in ("crop_flip", *AUTOAUG_VIEWS):
        params["top"], params["left"] = sample_crop(n, CROP_PADDING, device)
        params["flip"] = sample_flip(n, device)
        if name in AUTOAUG_VIEWS:
            params["policy"], params["u"], params["sign"] = sample_autoaugment(n, device)
            params["cy"] = torch.randint(h, (n,), device=device)
            params["cx"] = torch.randint(w, (n,), device=device)
        return params
    top, left, height, width = sample_resized_crop(n, h, w, RRC_SCALE[name], RRC_RATIO, device)
    params.update(top=top, left=left, height=height, width=width, flip=sample_flip(n, device))
    params["applied"], params["factors"], params["order"] = sample_jitter(n, device)
    params["gray"] = torch.rand(n, device=device) < GRAYSCALE_P
    if name == "contrastive_blur":
        params["blur"] = torch.rand(n, device=device) <= BLUR_P
        params["sigma"] = torch.empty(n, device=device, dtype=torch.float64).uniform_(*BLUR_SIGMA)
    return params
