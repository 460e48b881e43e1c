"""The AutoAugment views (`autoaug_cutout`, `autoaug_cutout_tv`) on CPU: crop, flip and both
AutoAugment steps as one compiled loop per image (numba), bit for bit the masked torch path.

`benchmarks.data.views.batch.render_view(name, images, params, "grouped")` calls `render_autoaug_cpu`
for these views on CPU; the masked strategy (`fast.autoaugment` on the whole batch) is the
accelerators' path and the tests' reference, compared bit for bit over seeds, with every op of
each policy, and with torchvision / the releases' policy on PIL images.

Why: each op in torch is several passes over a chunk in memory (the previous CPU path sorted
the samples by op and ran each op on its slice: 17-21x the per-image PIL reference on one core,
at the issue's 20x threshold for the release policy). Here each image is cropped and put
through its two ops while it sits in L1 cache.

Per-policy tables (`_Ctx`): an AutoAugment step of a sample is fully determined by its entry
e = 4 policy + 2 step + sign, so every per-sample parameter (enhancement factor, Solarize
threshold, Posterize step, and the whole sampling map of a geometric op, read off the torch
op itself) is computed once per entry. Exactness, as in `contrastive_cpu`: float32 values and
constants, the torch op's operations in its order (no fastmath: no reassociation or fused
multiply-add), float64 where the torch op uses float64 (AutoContrast's table, the bicubic
Horner evaluation). Module state: the tables are cached per (device, size, policy).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

import benchmarks.data.views.fast as F
from benchmarks.data.views.contrastive_cpu import F32, HALF, ONE, ZERO, _blend, _trunc_level
from benchmarks.data.views.reference import AUTOAUG_VIEWS, AUTOAUGMENT_FILL, CROP_PADDING, CUTOUT_LENGTH

NONE = len(F.AUTOAUGMENT_OPS)  # effective op id of a step that does not run
_OP = F._OP
FILL = F32(AUTOAUGMENT_FILL)
# op ids: fast.AUTOAUGMENT_OPS
INVERT, CONTRAST, ROTATE, TRANSLATE_X, TRANSLATE_Y, SHARPNESS, SHEAR_X, SHEAR_Y = range(8)
AUTOCONTRAST, EQUALIZE, POSTERIZE, COLOR, BRIGHTNESS, SOLARIZE = range(8, 14)
assert (INVERT, CONTRAST, ROTATE, TRANSLATE_X, TRANSLATE_Y, SHARPNESS, SHEAR_X, SHEAR_Y, AUTOCONTRAST, EQUALIZE,
        POSTERIZE, COLOR, BRIGHTNESS, SOLARIZE) == tuple(_OP[name] for name in (
            "Invert", "Contrast", "Rotate", "TranslateX", "TranslateY", "Sharpness", "ShearX", "ShearY",
            "AutoContrast", "Equalize", "Posterize", "Color", "Brightness", "Solarize"))


# ------------------------------------------------------------------------------------------------
# Per-policy tables (built once per kind, size and device)
# ------------------------------------------------------------------------------------------------


class _Ctx:
    """Per-policy tables and constants. An AutoAugment step of a sample is fully determined by
    its entry e = 4 policy + 2 step + sign (sign draw 0 or 1): op id, signed magnitude
    (`autoaugment_steps`' value: -m where the op is signed and the draw is 0), and therefore
    every per-sample parameter of the op. Those are computed here once per entry, with the masked
    path's expressions, instead of per sample: the enhancement factor, the Solarize threshold, the
    Posterize step, and for each geometric entry its whole sampling map (nearest ops: source
    pixel per output pixel; the release's bicubic shears: 4 taps and a fraction per pixel)."""

    def __init__(self, h: int, w: int, device, kind: str) -> None:
        t = F.policy_tables(h, w, device, kind)
        self.release = kind == "release"
        self.strict = t.strict
        self.op = t.op
        self.prob = t.prob
        self.h, self.w = h, w
        self.device = device
        self.entry_offset = torch.tensor([0, 2], device=device)
        # per entry e = 4 p + 2 s + g: op id and signed float64 magnitude, as `autoaugment_steps`
        policy = torch.arange(t.op.shape[0], device=device).repeat_interleave(4)
        step = torch.arange(4, device=device).repeat(t.op.shape[0]) // 2
        sign = torch.arange(2, device=device).repeat(2 * t.op.shape[0])
        op = t.op[policy, step]
        mag = t.magnitude[policy, step]
        mag = torch.where(t.signed[op] & (sign == 0), -mag, mag)
        # pixel-op parameters, with the masked ops' conversions (`_per_sample`: float64 -> float32)
        self.factor = (1.0 + mag).to(torch.float32)
        self.solarize_below = torch.ceil(mag.to(torch.float32)) - 1.0
        bits = torch.trunc(mag).to(torch.float32).clamp(0.0, 8.0)
        self.posterize_step = torch.pow(2.0, 8.0 - bits)
        self._build_maps(op, mag)

    def _build_maps(self, op: torch.Tensor, mag: torch.Tensor) -> None:
        """Sampling maps per geometric entry, as indices into a plane of H * W pixels followed by
        one fill pixel (index H * W).

        Nearest ops: the map is read off the masked op itself (`autoaugment_geometric` /
        `release_geometric_nearest`, a pure lookup with fill) applied to a probe image holding
        1000 + the pixel index, so it is that lookup by construction. Each entry is probed
        alone and in a batch of 24 copies: equal maps show that the result does not depend on
        the sample's position in a batch (vectorised vs scalar cos / sin), which precomputing
        per entry requires; otherwise this raises.
        Bicubic shears (release): `_bicubic_maps`."""
        h, w, dev = self.h, self.w, self.device
        hw = h * w
        ids = op.tolist()
        nearest = ("Rotate", "TranslateX", "TranslateY") + (() if self.release else ("ShearX", "ShearY"))
        geo = [e for e, o in enumerate(ids) if F.AUTOAUGMENT_OPS[o] in nearest]
        self.geo_row = torch.zeros(len(ids), dtype=torch.int64, device=dev)
        self.geo_row[geo] = torch.arange(len(geo), device=dev)
        fn = F.release_geometric_nearest if self.release else F.autoaugment_geometric
        probe_value = 1000.0 + torch.arange(hw, device=dev, dtype=torch.float32).view(1, 1, h, w)
        copies = 24
        maps = []
        for e in geo:
            one = fn(probe_value.clone(), op[e:e + 1], mag[e:e + 1])
            many = fn(probe_value.expand(copies, 1, h, w).contiguous(), op[e:e + 1].expand(copies),
                      mag[e:e + 1].expand(copies))
            if not bool((many == one).all()):
                raise RuntimeError(f"geometric entry {e} depends on its batch position")
            v = one.view(hw)
            maps.append(torch.where(v == FILL, hw, (v - 1000.0).long()))
        self.geo_maps = torch.stack(maps) if maps else torch.zeros((1, hw), dtype=torch.int64, device=dev)
        shears = [e for e, o in enumerate(ids) if self.release and F.AUTOAUGMENT_OPS[o] in ("ShearX", "ShearY")]
        self.bic_row = torch.zeros(len(ids), dtype=torch.int64, device=dev)
        self.bic_row[shears] = torch.arange(len(shears), device=dev)
        taps, fracs = [], []
        for e in shears:
            index, frac = _bicubic_maps(int(op[e]), mag[e:e + 1], h, w)
            taps.append(index)
            fracs.append(frac)
        self.bic_taps = torch.stack(taps) if taps else torch.zeros((1, 4 * hw), dtype=torch.int64, device=dev)
        self.bic_frac = torch.stack(fracs) if fracs else torch.zeros((1, 1, hw), dtype=torch.float64, device=dev)


_CTX: dict = {}


def _ctx(h: int, w: int, device, kind: str) -> _Ctx:
    key = (str(device), h, w, kind)
    if key not in _CTX:
        _CTX[key] = _Ctx(h, w, device, kind)
    return _CTX[key]


def _steps(ctx: _Ctx, policy: torch.Tensor, u: torch.Tensor, sign: torch.Tensor):
    """Effective op (N, 2) int64 (NONE where the step does not run: `autoaugment_steps`'
    comparison) and entry (N, 2) = 4 policy + 2 step + sign (see `_Ctx`)."""
    op = ctx.op.index_select(0, policy)
    prob = ctx.prob.index_select(0, policy)
    applied = torch.lt(u, prob) if ctx.strict else torch.le(u, prob)
    eff = torch.where(applied, op, NONE)
    entry = torch.add(sign, policy.view(-1, 1), alpha=4).add_(ctx.entry_offset)
    return eff, entry


def _bicubic_maps(op_id: int, m: torch.Tensor, h: int, w: int):
    """The release's ShearX / ShearY (`affine_bicubic` with (1, m, 0, 0, 1, 0) / (1, 0, 0, m, 1, 0))
    as 4 taps and one fraction per output pixel: (4 H W,) int64 indices into the plane + fill
    pixel (tap-major), (1, H W) float64 fraction.

    ShearY: the source column is 1 * (x + .5) + 0 * (y + .5) + 0 = x + .5 exactly, so the
    horizontal fraction dx is 0 and each per-row cubic v2 + 0 * (...) equals its centre tap v2
    (levels are >= +0 and v2 + (+-0) = v2, sign of zero included): what remains is the vertical
    cubic over rows iy - 1 .. iy + 2 (clamped) of column x, with fraction dy. ShearX likewise:
    dy = 0 and the vertical cubic returns the centre row's horizontal cubic exactly (never -0:
    an exact zero sum rounds to +0). So 4 taps instead of 16 and 1 cubic instead of 5.
    Coordinates, fractions and the validity test are `affine_bicubic`'s float64 expressions.
    Outside the valid area all 4 taps read the fill pixel: with v1 = v2 = v3 = v4 = 128 the
    cubic is exactly 128 (p2 = p3 = p4 = 0), the masked path's `where(valid, v, fill)`."""
    dev = m.device
    mm = (F.shear_x_matrix(m) if op_id == _OP["ShearX"] else F.shear_y_matrix(m)).view(6, 1, 1)
    xs = (torch.arange(w, device=dev, dtype=torch.float64) + 0.5).view(1, w)
    ys = (torch.arange(h, device=dev, dtype=torch.float64) + 0.5).view(h, 1)
    sx = mm[0] * xs + mm[1] * ys + mm[2]
    sy = mm[3] * xs + mm[4] * ys + mm[5]
    valid = (sx >= 0.0) & (sx < float(w)) & (sy >= 0.0) & (sy < float(h))
    t = (sy if op_id == _OP["ShearY"] else sx) - 0.5
    base = torch.floor(t)
    frac = t - base
    along = base + torch.arange(-1.0, 3.0, dtype=torch.float64, device=dev).view(4, 1, 1)
    if op_id == _OP["ShearY"]:
        index = along.clamp_(0.0, float(h - 1)).mul_(float(w)).long() + torch.arange(w, device=dev).view(1, 1, w)
    else:
        index = along.clamp_(0.0, float(w - 1)).long() + (torch.arange(h, device=dev) * w).view(1, h, 1)
    index = torch.where(valid, index, h * w)
    return index.reshape(4 * h * w), frac.reshape(1, h * w)



# ------------------------------------------------------------------------------------------------
# The compiled per-image loop
# ------------------------------------------------------------------------------------------------


@njit(cache=True)
def _crop_flip(src, out, top, left, flip, pad):
    """RandomCrop with zero padding `pad` at (top, left), then the optional horizontal flip."""
    c, h, w = src.shape
    for y in range(h):
        sy = top + y - pad
        for x in range(w):
            sx = left + (w - 1 - x if flip else x) - pad
            inside = 0 <= sy < h and 0 <= sx < w
            for ch in range(c):
                out[ch, y, x] = F32(src[ch, sy, sx]) if inside else ZERO


@njit(cache=True)
def _sharpness(x, factor, smooth):
    """`fast.sharpness_`: the interior blended with Pillow's SMOOTH (3x3 box + 4 x centre, / 13,
    rounded), the border kept."""
    c, h, w = x.shape
    for ch in range(c):
        for y in range(1, h - 1):
            for j in range(1, w - 1):
                box = ZERO
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        box += x[ch, y + dy, j + dx]  # integers: exact in any order
                box += x[ch, y, j] * F32(4.0)
                smooth[y, j] = np.floor(box * F32(1.0 / 13.0) + HALF)
        for y in range(1, h - 1):
            for j in range(1, w - 1):
                s = smooth[y, j]
                x[ch, y, j] = _trunc_level((x[ch, y, j] - s) * factor + s)


@njit(cache=True)
def _autocontrast(x):
    """`fast.autocontrast`, in place: per channel int(v * scale + offset) clipped, in float64, scale =
    255 / (hi - lo), offset = -lo * scale; a flat channel keeps the identity."""
    for ch in range(x.shape[0]):
        lo, hi = x[ch, 0], x[ch, 0]
        for p in range(x.shape[1]):
            lo = min(lo, x[ch, p])
            hi = max(hi, x[ch, p])
        lo64, hi64 = np.float64(lo), np.float64(hi)
        if hi64 <= lo64:
            continue  # scale 1, offset 0: the identity
        scale = 255.0 / (hi64 - lo64)
        offset = -lo64 * scale
        for p in range(x.shape[1]):
            v = np.trunc(np.float64(x[ch, p]) * scale + offset)
            x[ch, p] = F32(min(max(v, 0.0), 255.0))


@njit(cache=True)
def _equalize(x, hist, lut):
    """`fast.equalize_table` per channel, then the lookup."""
    p_count = x.shape[1]
    for ch in range(x.shape[0]):
        hist[:] = ZERO
        for p in range(p_count):
            hist[np.int64(x[ch, p])] += ONE
        below = ZERO
        step = ZERO
        for v in range(256):
            if hist[v] > ZERO:
                step = max(step, below)  # the largest `below` over the used levels
            lut[v] = below
            below += hist[v]
        step = np.floor(step / F32(255.0))
        if step == ZERO:
            continue  # the identity
        half = np.floor(step * HALF)
        for v in range(256):
            lut[v] = min(np.floor((lut[v] + half) / max(step, ONE)), F32(255.0))
        for p in range(p_count):
            x[ch, p] = lut[np.int64(x[ch, p])]


@njit(cache=True)
def _nearest(x, index, tmp):
    """Rotate / Translate (and torchvision's shears): out[p] = x[index[p]], or the fill where
    index[p] == H W."""
    c, p_count = x.shape
    tmp[:, :] = x
    for ch in range(c):
        for p in range(p_count):
            i = index[p]
            x[ch, p] = FILL if i == p_count else tmp[ch, i]


@njit(cache=True)
def _bicubic(x, taps, frac, tmp):
    """The release's shears (the masked path's `fast.release_shear`): 4 taps (tap-major, index H W is
    the fill) and a float64 fraction per pixel; p2, p3, p4 in float32 (small integers, exact),
    Pillow's Horner evaluation in float64, clamp, truncate."""
    c, p_count = x.shape
    tmp[:, :] = x
    for ch in range(c):
        for p in range(p_count):
            i1, i2, i3, i4 = taps[p], taps[p_count + p], taps[2 * p_count + p], taps[3 * p_count + p]
            v1 = FILL if i1 == p_count else tmp[ch, i1]
            v2 = FILL if i2 == p_count else tmp[ch, i2]
            v3 = FILL if i3 == p_count else tmp[ch, i3]
            v4 = FILL if i4 == p_count else tmp[ch, i4]
            p4 = np.float64(((v2 - v1) - v3) + v4)
            p3 = np.float64(((v1 - v2) * F32(2.0) + v3) - v4)
            p2 = np.float64(v3 - v1)
            d = frac[p]
            v = ((p4 * d + p3) * d + p2) * d + np.float64(v2)
            x[ch, p] = F32(np.floor(min(max(v, 0.0), 255.0)))


@njit(cache=True)
def render_autoaug(images, out, top, left, flip, pad, ops, entries, release, factor, solarize_below,
                   posterize_step, geo_row, geo_maps, bic_row, bic_taps, bic_frac):
    """Crop + flip and both AutoAugment steps for a batch: images (N, 3, H, W) uint8, out (N, 3,
    H, W) float32 levels; ops, entries (N, 2) int64 (`_steps`: op id or 14 for a step that does
    not run, and the table entry); the tables are `_Ctx`'s, flat."""
    n, c, h, w = images.shape
    p_count = h * w
    tmp = np.empty((c, p_count), dtype=np.float32)
    smooth = np.empty((h, w), dtype=np.float32)
    hist = np.empty(256, dtype=np.float32)
    lut = np.empty(256, dtype=np.float32)
    for i in range(n):
        _crop_flip(images[i], out[i], top[i], left[i], flip[i], pad)
        flat = out[i].reshape(c, p_count)
        for step in range(2):
            op, e = ops[i, step], entries[i, step]
            if op == INVERT:
                for ch in range(c):
                    for p in range(p_count):
                        flat[ch, p] = -flat[ch, p] + F32(255.0)
            elif op == CONTRAST:
                _blend(flat, 1, factor[e])
            elif op == COLOR:
                _blend(flat, 2, factor[e])
            elif op == BRIGHTNESS:
                _blend(flat, 0, factor[e])
            elif op == SHARPNESS:
                _sharpness(out[i], factor[e], smooth)
            elif op == POSTERIZE:
                s = posterize_step[e]
                for ch in range(c):
                    for p in range(p_count):
                        flat[ch, p] = np.floor(flat[ch, p] / s) * s
            elif op == SOLARIZE:
                below = solarize_below[e]
                for ch in range(c):
                    for p in range(p_count):
                        v = flat[ch, p]
                        flat[ch, p] = v + min(max(v - below, ZERO), ONE) * (v * F32(-2.0) + F32(255.0))
            elif op == AUTOCONTRAST:
                _autocontrast(flat)
            elif op == EQUALIZE:
                _equalize(flat, hist, lut)
            elif op == ROTATE or op == TRANSLATE_X or op == TRANSLATE_Y or (
                    not release and (op == SHEAR_X or op == SHEAR_Y)):
                _nearest(flat, geo_maps[geo_row[e]], tmp)
            elif op == SHEAR_X or op == SHEAR_Y:
                _bicubic(flat, bic_taps[bic_row[e]], bic_frac[bic_row[e]], tmp)


def render_autoaug_cpu(name: str, images: torch.Tensor, params: dict) -> torch.Tensor:
    """`batch.render_view(name, images, params, "grouped")` for the AutoAugment views on CPU: the
    same float32 levels (Cutout applied) as the masked strategy, for the same draws."""
    n, c, h, w = images.shape
    ctx = _ctx(h, w, images.device, AUTOAUG_VIEWS[name])
    ops, entries = _steps(ctx, params["policy"], params["u"], params["sign"])
    out = torch.empty((n, c, h, w), dtype=torch.float32)
    tables = (ctx.factor, ctx.solarize_below, ctx.posterize_step, ctx.geo_row,
              ctx.geo_maps, ctx.bic_row, ctx.bic_taps, ctx.bic_frac.view(ctx.bic_frac.shape[0], -1))
    render_autoaug(images.contiguous().numpy(), out.numpy(), params["top"].numpy(), params["left"].numpy(),
                   params["flip"].numpy(), CROP_PADDING, ops.contiguous().numpy(), entries.contiguous().numpy(),
                   ctx.release, *(t.contiguous().numpy() for t in tables))
    return out.mul_(F.cutout_keep(params["cy"], params["cx"], h, w, CUTOUT_LENGTH))
