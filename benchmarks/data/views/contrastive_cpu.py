"""The contrastive views' resized crop, ColorJitter, grayscale and blur on CPU as one compiled
loop per image (numba), bit for bit the operations of `fast.py`'s and `blur.py`'s torch ops.

Why: in torch every one of the ~100 elementwise ops of these views is a pass over memory, and the
HSV round trip alone is ~70 of them; the views measured 12-15x the per-image PIL reference on one
core against the issue's 20x goal, with the remaining time spread over the resize `bmm`s, the hue
and the blends (RESULTS.md). Here each image is resized, jittered and greyed while it sits in
L1 cache, in one pass per op over 3 KB of pixels, with 2-tap bilinear sums instead of dense
(32 x 32) matrix products. Used by `fast.render_view` for the grouped (CPU) strategy; the masked
torch path stays the accelerators' and the reference for the tests, which compare both bit for
bit (and the hue with Pillow on every colour).

Exactness: every value is float32 and every operation is the same IEEE operation in the same
order as the torch op it mirrors (numba without fastmath: no reassociation, no fused
multiply-add), with float32 constants (a float64 literal would promote the arithmetic). Where
torch's order does not matter (sums of integers below 2^24, the resize's products of 1/64
multiples) any order is exact. The random draws and per-sample tables come from the torch side
(`fast.sample_view`, `fast.bilinear_taps`, `fast.hue_shift`), so both paths consume the same draws.

Compiled on first use (~7 s here; `cache=True` keeps the machine code under __pycache__, after
which a process's first call takes ~1 s, mostly importing numba).
"""

from __future__ import annotations

import numpy as np
from numba import njit

F32 = np.float32
ZERO, ONE, HALF = F32(0.0), F32(1.0), F32(0.5)


@njit(cache=True, inline="always")
def _clamp01(v):
    return min(max(v, ZERO), ONE)


@njit(cache=True, inline="always")
def _trunc_level(v):
    """Pillow's (UINT8) after clipping: clamp to [0, 255], truncate (`fast._trunc_levels`)."""
    return np.floor(min(max(v, ZERO), F32(255.0)))


@njit(cache=True, inline="always")
def _gray(r, g, b):
    """`fast.gray_levels`: (19595 R + 38470 G + 7471 B + 2^15) / 2^16, floored (exact)."""
    return np.floor((r * F32(19595.0) + g * F32(38470.0) + b * F32(7471.0) + F32(32768.0)) * F32(1.0 / 65536.0))


@njit(cache=True)
def _resize(src, out, ix0, ix1, wx0, wx1, iy0, iy1, wy0, wy1, rows):
    """PIL's bilinear resize of one (3, H, W) uint8 image into out (3, S, S) float32: horizontal
    pass (rounded) on the source rows the vertical taps read, then the vertical pass (rounded).
    All products and sums are exact (levels times multiples of 1/64)."""
    s = out.shape[1]
    for c in range(3):
        for y in range(src.shape[1]):
            rows[c, y, 0] = -ONE  # marks a row not computed
        for k in range(s):
            for y in (iy0[k], iy1[k]):
                if rows[c, y, 0] < ZERO:
                    for j in range(s):
                        v = wx0[j] * F32(src[c, y, ix0[j]]) + wx1[j] * F32(src[c, y, ix1[j]])
                        rows[c, y, j] = np.floor(v + HALF)
        for k in range(s):
            a, b, w0, w1 = iy0[k], iy1[k], wy0[k], wy1[k]
            for j in range(s):
                out[c, k, j] = np.floor(w0 * rows[c, a, j] + w1 * rows[c, b, j] + HALF)


@njit(cache=True)
def _blend(x, op, factor):
    """`fast._jitter_blend` on one (3, P) image, in place: brightness (op 0), contrast (1) or saturation
    (2), trunc(clip((x - deg) * f + deg)) with deg = 0, the rounded mean grey or the grey pixel."""
    p_count = x.shape[1]
    mean = ZERO
    if op == 1:
        total = ZERO
        for p in range(p_count):
            total += _gray(x[0, p], x[1, p], x[2, p])  # integers below 2^24: exact in any order
        count = F32(p_count)
        mean = np.floor((F32(2.0) * total + count) / (F32(2.0) * count))
    for p in range(p_count):
        if op == 2:
            deg = _gray(x[0, p], x[1, p], x[2, p])
        elif op == 1:
            deg = mean
        else:
            deg = ZERO
        for c in range(3):
            x[c, p] = _trunc_level((x[c, p] - deg) * factor + deg)


@njit(cache=True)
def _hue(x, shift):
    """`fast.adjust_hue_` on one (3, P) image: `rgb_to_hsv`, H += shift mod 256, `hsv_to_rgb`,
    pixel by pixel with the same float32 operations (see their docstrings for why they are
    Pillow's)."""
    for p in range(x.shape[1]):
        r, g, b = x[0, p], x[1, p], x[2, p]
        maxc = max(max(r, g), b)
        cr = maxc - min(min(r, g), b)
        sat = np.floor((cr / max(maxc, ONE)) * F32(255.0))
        e_r = _clamp01(maxc - r)
        e_g = _clamp01(maxc - g)
        t_r, t_g, t = g - b, b - r, r - g
        t = (t - t_g) * e_g + t_g
        t = (t - t_r) * e_r + t_r
        base = (e_g + ONE) * e_r * F32(2.0)
        sign = -np.sign(t)
        ratio = (-abs(t) + cr) / max(cr, ONE)
        hue = ratio * sign + (base - sign)
        negative = _clamp01(hue * F32(-1e6))
        h = np.floor((hue / F32(6.0) + negative) * F32(255.0)) + shift
        h = h - _clamp01(h - F32(255.0)) * F32(256.0)
        hh = h * F32(6.0) / F32(255.0)
        minus_fs = sat / F32(-255.0)
        x[0, p] = np.floor((_clamp01(min(hh - ONE, F32(5.0) - hh)) * minus_fs + ONE) * maxc + HALF)
        x[1, p] = np.floor((_clamp01(max(hh - F32(3.0), ONE - hh)) * minus_fs + ONE) * maxc + HALF)
        x[2, p] = np.floor((_clamp01(max(hh - F32(5.0), F32(3.0) - hh)) * minus_fs + ONE) * maxc + HALF)


@njit(cache=True)
def _grayscale(x):
    """`fast.grayscale`: the grey level in all three channels."""
    for p in range(x.shape[1]):
        v = _gray(x[0, p], x[1, p], x[2, p])
        x[0, p] = v
        x[1, p] = v
        x[2, p] = v


@njit(cache=True, inline="always")
def _box(m2, m1, x0, p1, p2, a, b, c, k):
    """One output of Pillow's box-blur pass on centred integer levels (`blur.py`'s expression
    (a x0 + b (x-1 + x1) + c (x-2 + x2) + k) >> 24). Every product and partial sum is an integer
    within int32 (the blur module shows why), so float64 holds it exactly, and the shift is
    floor(v / 2^24), exact too; float64 because the CPU's vector units multiply doubles but not
    64-bit integers (numba widens int32 products to int64), ~4x faster."""
    return np.floor((a * x0 + b * (m1 + p1) + c * (m2 + p2) + k) * (1.0 / 16777216.0))


@njit(cache=True)
def _blur_cols(src, dst, a, b, c, k):
    """A pass along the first axis, edges replicated, row by row so that the inner loop runs over
    contiguous memory (and vectorises: measured ~4x faster than a pass along the second axis)."""
    h, w = src.shape
    for y in range(h):
        rm2, rm1, r0 = src[max(y - 2, 0)], src[max(y - 1, 0)], src[y]
        rp1, rp2 = src[min(y + 1, h - 1)], src[min(y + 2, h - 1)]
        o = dst[y]
        for x in range(w):
            o[x] = _box(rm2[x], rm1[x], r0[x], rp1[x], rp2[x], a, b, c, k)


@njit(cache=True)
def _blur(image, coef, work):
    """`blur.gaussian_blur` of one (3, S, S) float32 image in place: three horizontal, then three
    vertical passes per channel; coef = (a, b, c, k) of `blur.pass_coefficients`. The channel is
    loaded transposed, so the horizontal passes also run along the first axis, and transposed
    back for the vertical ones."""
    a, b, c, k = np.float64(coef[0]), np.float64(coef[1]), np.float64(coef[2]), np.float64(coef[3])
    size = image.shape[1]
    for ch in range(3):
        cur, nxt = work[0], work[1]
        for y in range(size):
            for x in range(size):
                cur[x, y] = np.float64(image[ch, y, x]) - 128.0
        for _ in range(3):
            _blur_cols(cur, nxt, a, b, c, k)
            cur, nxt = nxt, cur
        for y in range(size):
            for x in range(size):
                nxt[y, x] = cur[x, y]
        cur, nxt = nxt, cur
        for _ in range(3):
            _blur_cols(cur, nxt, a, b, c, k)
            cur, nxt = nxt, cur
        for y in range(size):
            for x in range(size):
                image[ch, y, x] = F32(cur[y, x] + 128.0)


@njit(cache=True)
def render_contrastive(images, out, ix0, ix1, wx0, wx1, iy0, iy1, wy0, wy1,
                       applied, order, factors, shifts, gray, blur, blur_coef):
    """Resized crop, RandomApply(ColorJitter) in each sample's own op order, RandomGrayscale and
    the blur for a batch: images (N, 3, H, W) uint8, out (N, 3, S, S) float32 levels; taps and
    weights (N, S) from `fast.bilinear_taps`; applied, gray, blur (N,) bool; order (N, 4) int64;
    factors (N, 4) float32 (`sample_jitter`'s; the hue column is unused); shifts (N,) float32 hue
    shifts; blur_coef (4, N) int32 (`blur.pass_coefficients`)."""
    n, c, h, w = images.shape
    s = out.shape[2]
    rows = np.empty((3, h, s), dtype=np.float32)
    work = np.empty((2, s, s), dtype=np.float64)
    for i in range(n):
        _resize(images[i], out[i], ix0[i], ix1[i], wx0[i], wx1[i], iy0[i], iy1[i], wy0[i], wy1[i], rows)
        flat = out[i].reshape(3, s * s)
        if applied[i]:
            for slot in range(4):
                op = order[i, slot]
                if op == 3:
                    _hue(flat, shifts[i])
                else:
                    _blend(flat, op, factors[i, op])
        if gray[i]:
            _grayscale(flat)
        if blur[i]:
            _blur(out[i], blur_coef[:, i], work)
