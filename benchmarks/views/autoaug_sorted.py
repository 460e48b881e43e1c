"""The AutoAugment views (`autoaug_cutout`, `autoaug_cutout_tv`) with the grouped strategy (CPU).

`benchmarks.views.fast.render_view(name, images, params, "grouped")` calls
`render_autoaug_sorted` for these two views: the same float32 levels, bit for bit, as the masked
strategy (`fast.autoaugment` on the whole batch, the accelerator path) for the same draws
(`sample_view`); the tests compare both over many seeds and with torchvision / the releases'
policy on PIL images.

Why the old grouped path was slow (1 thread, 1024-image chunks): every op of both steps ran
nonzero + index_select + op + index_copy_ on its subset (26 groups per chunk, many of a handful
of samples; a torch call costs ~3-5 us here), the bicubic shear gathered 16 float64 taps per
pixel (~300 us per sheared image, although a shear is one-dimensional), the nearest geometry
recomputed float64 and fixed-point coordinates per pixel for both Pillow paths, AutoContrast
used `aminmax`-like reductions and a float64 table per call, Equalize a 20-op table, the crop an
int64-index gather over all channels. On this machine every pass over a 1024-image float32
batch costs ~1-2 us/img (memory bound), so the number of full passes is what counts.

The grouped pipeline, per chunk (`FastView`'s CPU chunk, 1024 images for these views):
1. Per sample and step the effective op (op id if it runs, else NONE) and the entry
   4 policy + 2 step + sign (`_steps`); every per-sample parameter of an op is a function of
   the entry, tabulated once per policy (`_Ctx`), geometric sampling maps included.
2. The samples are ordered by their step-1 op (stable argsort; segment sizes from one
   bincount) and the crop + flip is rendered directly in that order (`_crop_flip_sorted`: one
   memcpy per plane out of a uint8 buffer, a byte mask, one conversion). Each step-1 op then
   runs in place on its contiguous slice (one `split`): no index_select / index_copy_ per op.
3. Step 2: the samples with a step-2 op are copied (one index_select) into the same buffer,
   ordered by their step-2 op, and processed in place slice by slice likewise.
4. One index_select puts the samples back into the caller's order (reading the step-2 copy
   where there is one), then Cutout (`fast.cutout_keep`).

The pixel ops are `fast`'s in-place ops (`invert_`, `blend_`, `sharpness_`, `posterize_`,
`solarize_`, `autocontrast_`, `equalize_table`) with their parameters read from the tables;
the geometric ops are lookups into sampling maps read off `fast`'s own geometry (`_Ctx`).
Module state: the per-policy tables and a uint8 crop buffer per batch size are cached (`_CTX`);
calls must not run concurrently on the same device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

from benchmarks.views import fast as F
from benchmarks.views.reference import AUTOAUG_VIEWS, AUTOAUGMENT_FILL, CROP_PADDING, CUTOUT_LENGTH

NONE = len(F.AUTOAUGMENT_OPS)  # effective op id of a step that does not run
_OP = F._OP
FILL = float(AUTOAUGMENT_FILL)



# ------------------------------------------------------------------------------------------------
# Per-policy tables and constants (built once per kind, size and device)
# ------------------------------------------------------------------------------------------------


class _Ctx:
    """Per-policy tables and constants. An AutoAugment step of a sample is fully determined by
    its entry e = 4 policy + 2 step + sign (sign draw 0 or 1): op id, signed magnitude
    (`autoaugment_steps`' value: -m where the op is signed and the draw is 0), and therefore
    every per-sample parameter of the op. Those are computed here once per entry, with the old
    expressions, instead of per chunk: the enhancement factor, the Solarize threshold, the
    Posterize step, and for each geometric entry its whole sampling map (nearest ops: source
    pixel per output pixel; the release's bicubic shears: 4 taps and a fraction per pixel)."""

    def __init__(self, h: int, w: int, device, kind: str) -> None:
        t = F.policy_tables(h, w, device, kind)
        self.kind = kind
        self.release = kind == "release"
        self.strict = t.strict
        self.op = t.op
        self.prob = t.prob
        self.h, self.w = h, w
        self.device = device
        self.entry_offset = torch.tensor([0, 2], device=device)
        self.step_offset = torch.tensor([0, NONE + 1], device=device)
        # per entry e = 4 p + 2 s + g: op id and signed float64 magnitude, as `autoaugment_steps`
        policy = torch.arange(t.op.shape[0], device=device).repeat_interleave(4)
        step = torch.arange(4, device=device).repeat(t.op.shape[0]) // 2
        sign = torch.arange(2, device=device).repeat(2 * t.op.shape[0])
        op = t.op[policy, step]
        mag = t.magnitude[policy, step]
        mag = torch.where(t.signed[op] & (sign == 0), -mag, mag)
        self.entry_op = op
        self.entry_mag = mag
        # pixel-op parameters, with the old ops' conversions (`_per_sample`: float64 -> float32)
        self.factor = (1.0 + mag).to(torch.float32).view(-1, 1, 1, 1)
        self.solarize_below = (torch.ceil(mag.to(torch.float32)) - 1.0).view(-1, 1, 1, 1)
        bits = torch.trunc(mag).to(torch.float32).clamp(0.0, 8.0)
        self.posterize_step = torch.pow(2.0, 8.0 - bits).view(-1, 1, 1, 1)
        # constants
        self.levels = torch.arange(256, device=device, dtype=torch.float32)
        self._lut_base = torch.zeros(0, device=device, dtype=torch.int32)
        self._build_maps(op, mag)
        self._build_crop_tables(CROP_PADDING)
        self._crop_buffers: dict = {}

    def _build_crop_tables(self, p: int) -> None:
        """Per crop key (flip, top, left), key = (flip (2p + 1) + top) (2p + 1) + left: the
        window's offset from the plane origin, (top - p) W + col with col = left - p, or
        p - left when flipped (see `_crop_flip_sorted`), and the (H, W) byte mask of the pixels
        inside the image (0 <= r + top - p < H and 0 <= j + col < W)."""
        h, w, dev = self.h, self.w, self.device
        side = 2 * p + 1
        f = torch.arange(2, device=dev).view(2, 1, 1)
        top = torch.arange(side, device=dev).view(1, side, 1)
        left = torch.arange(side, device=dev).view(1, 1, side)
        col = ((left - p) * (1 - 2 * f)).expand(2, side, side).reshape(-1, 1, 1)
        row = (top - p).expand(2, side, side).reshape(-1, 1, 1)
        self.crop_offset = (row * w + col).view(-1)
        r = torch.arange(h, device=dev).view(1, h, 1) + row
        j = torch.arange(w, device=dev).view(1, 1, w) + col
        self.crop_mask = ((r >= 0) & (r < h) & (j >= 0) & (j < w)).to(torch.uint8)  # (2 side^2, H, W)
        self.crop_side = side
        self.crop_margin = p * w + p

    def crop_buffers(self, n: int, c: int):
        """Cached uint8 crop buffer for up to 2n planes of c channels between zero margins (never
        written, so the buffer is built once per batch size; see `_crop_flip_sorted`): returns
        (planes (2n, c, H, W) view, windows view, (2n,) origin of each image, arange(n))."""
        key = (n, c)
        if key not in self._crop_buffers:
            h, w, dev = self.h, self.w, self.device
            plane = h * w
            margin = self.crop_margin
            size = c * plane  # one window per image: its c planes shift alike
            buf = torch.zeros(2 * margin + 2 * n * size, dtype=torch.uint8, device=dev)
            planes = buf[margin:margin + 2 * n * size].view(2 * n, c, h, w)
            windows = buf.as_strided((buf.numel() - size + 1, size), (1, 1))
            origin = torch.arange(margin, margin + 2 * n * size, size, device=dev)
            self._crop_buffers[key] = (planes, windows, origin, torch.arange(n, device=dev))
        return self._crop_buffers[key]

    def lut_base(self, rows: int) -> torch.Tensor:
        """(rows,) int32 0, 256, 512, ...: offsets into flattened per-(image, channel) tables."""
        if self._lut_base.numel() < rows:
            self._lut_base = torch.arange(0, 256 * max(rows, 3 * 1024), 256, device=self.device,
                                          dtype=torch.int32)
        return self._lut_base[:rows]

    def _build_maps(self, op: torch.Tensor, mag: torch.Tensor) -> None:
        """Sampling maps per geometric entry, as indices into a plane of H * W pixels followed by
        one fill pixel (index H * W).

        Nearest ops: the map is read off the old op itself (`autoaugment_geometric` /
        `release_geometric_nearest`, a pure lookup with fill) applied to a probe image holding
        1000 + the pixel index, so it is the old lookup by construction. Each entry is probed
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


# ------------------------------------------------------------------------------------------------
# Crop + flip into a given sample order
# ------------------------------------------------------------------------------------------------


def _crop_flip_sorted(images: torch.Tensor, order: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                      flip: torch.Tensor, out: torch.Tensor, ctx: _Ctx) -> None:
    """out[i] = float32 of crop_flip(images)[order[i]] (RandomCrop with zero padding p, then the
    optional horizontal flip); out: (N, 3, H, W) float32.

    The crop at (top, left) of the zero-padded image, flipped, equals the crop at (top,
    2 p - left) of the padded flipped image (the padding is symmetric). So every sample reads
    the plane of its image, or of its flipped copy, shifted by top - p rows and col = left - p
    (or p - left) columns: C H W consecutive bytes from the shifted origin of the image hold
    the right pixel wherever the row and column stay inside the plane (all planes shift alike),
    and the key's byte mask (`_Ctx`) zeroes the others (x * 1, x * 0: exact), i.e. the zero
    padding (what they read instead is a neighbouring row or plane, or the zero margins). The
    images, then the flipped copies of the flipped samples, sit in one uint8 buffer between zero
    margins (cached per batch size); one `index_select` over its overlapping windows (a memcpy
    per image), the mask, one conversion to float32.
    """
    n, c, h, w = images.shape
    planes, windows, origin, arange = ctx.crop_buffers(n, c)
    planes[:n].copy_(images)
    flipped = flip.nonzero().squeeze(1)
    nf = flipped.numel()
    slot = arange
    if nf:
        planes[n:n + nf].copy_(images.index_select(0, flipped).flip(-1))
        slot = arange.index_put((flipped,), arange[n - nf:] + nf)  # n, n + 1, ... for the flipped
    side = ctx.crop_side
    key = torch.add(left, top, alpha=side).add_(flip, alpha=side * side).index_select(0, order)
    start = origin.index_select(0, slot.index_select(0, order)).add_(ctx.crop_offset.index_select(0, key))
    rows = windows.index_select(0, start).view(n, c, h, w)
    rows.mul_(ctx.crop_mask.index_select(0, key).view(n, 1, h, w))
    out.copy_(rows)


# ------------------------------------------------------------------------------------------------
# The ops, in place on a contiguous slice of samples (x: (k, 3, H, W) float32 levels)
# ------------------------------------------------------------------------------------------------


def _invert(x, ent, ctx):
    F.invert_(x)


def _contrast(x, ent, ctx):
    """`adjust_contrast`: blend with `contrast_mean`'s int(mean grey + 0.5)."""
    F.blend_(x, F.contrast_mean(x), ctx.factor.index_select(0, ent))


def _color(x, ent, ctx):
    F.blend_(x, F.gray_levels(x), ctx.factor.index_select(0, ent))


def _brightness(x, ent, ctx):
    F.brightness_(x, ctx.factor.index_select(0, ent))


def _sharpness(x, ent, ctx):
    F.sharpness_(x, ctx.factor.index_select(0, ent))


def _posterize(x, ent, ctx):
    """`posterize(x, trunc(m))`, step = 2^(8 - bits) from the table."""
    F.posterize_(x, ctx.posterize_step.index_select(0, ent))


def _solarize(x, ent, ctx):
    """`solarize(x, m)`, ceil(float32(m)) - 1 from the table."""
    F.solarize_(x, ctx.solarize_below.index_select(0, ent))


def _autocontrast(x, ent, ctx):
    F.autocontrast_(x)


def _lut_index(x: torch.Tensor, ctx: _Ctx) -> torch.Tensor:
    """int32 index of each pixel into the flattened (k * 3 * 256) per-(image, channel) tables
    (levels are exact integers: the conversion is exact)."""
    k, c = x.shape[:2]
    return x.to(torch.int32).add_(ctx.lut_base(k * c).view(k, c, 1, 1)).view(-1)


def _equalize(x, ent, ctx):
    """`equalize`: the histogram by one bincount of the int32 table index (the same counts as
    `channel_histograms`, which avoids bincount because its output size would sync an
    accelerator), `equalize_table`, then one lookup into the flattened tables."""
    k, c, h, w = x.shape
    index = _lut_index(x, ctx)
    hist = torch.bincount(index, minlength=k * c * 256).view(k, c, 256).to(torch.float32)
    lut = F.equalize_table(hist, ctx.levels)
    torch.index_select(lut.view(-1), 0, index, out=x.view(-1))


def _with_fill(x: torch.Tensor) -> torch.Tensor:
    """(k, 3, H * W + 1): the planes followed by one fill pixel (the maps' index H * W)."""
    k, c, h, w = x.shape
    return nnf.pad(x.view(k, c, h * w), (0, 1), value=FILL)


def _nearest(x, ent, ctx):
    """Rotate, Translate (and torchvision's nearest shears): one gather through the entry's map."""
    k, c, h, w = x.shape
    index = ctx.geo_maps.index_select(0, ctx.geo_row.index_select(0, ent))
    torch.gather(_with_fill(x), 2, index.view(k, 1, h * w).expand(k, c, h * w), out=x.view(k, c, h * w))


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
    cubic is exactly 128 (p2 = p3 = p4 = 0), the old `where(valid, v, fill)`."""
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


def _bicubic_shear(x, ent, ctx):
    """The release's shears through the entry's taps (`_bicubic_maps`): p2, p3, p4 of
    `_pil_cubic` are small integers, exact in float32, widened to float64 for Pillow's Horner
    evaluation v2 + d (p2 + d (p3 + d p4)) (same roundings in the same order); then clamp,
    truncate and back to float32 levels."""
    rows = ctx.bic_row.index_select(0, ent)
    _bicubic_apply(x, ctx.bic_taps.index_select(0, rows), ctx.bic_frac.index_select(0, rows))


def _bicubic_apply(x: torch.Tensor, taps_index: torch.Tensor, d: torch.Tensor) -> None:
    """x <- the bicubic result for per-sample taps (k, 4 H W) and fractions (k, 1, H W), in place."""
    k, c, h, w = x.shape
    hw = h * w
    index = taps_index.view(k, 1, 4 * hw)
    taps = torch.gather(_with_fill(x), 2, index.expand(k, c, 4 * hw)).view(k, c, 4, hw)
    v1, v2, v3, v4 = taps.unbind(2)
    p4 = (v2 - v1).sub_(v3).add_(v4).double()
    p3 = (v1 - v2).mul_(2.0).add_(v3).sub_(v4).double()
    p2 = (v3 - v1).double()
    v = p4.mul_(d).add_(p3).mul_(d).add_(p2).mul_(d).add_(v2.double())
    x.view(k, c, hw).copy_(v.clamp_(0.0, 255.0).floor_())


def _run_op(op_id: int, x: torch.Tensor, ent: torch.Tensor, ctx: _Ctx) -> None:
    name = F.AUTOAUGMENT_OPS[op_id]
    if name in ("ShearX", "ShearY") and ctx.release:
        _bicubic_shear(x, ent, ctx)
    elif name in ("Rotate", "TranslateX", "TranslateY", "ShearX", "ShearY"):
        _nearest(x, ent, ctx)
    else:
        _PIXEL[name](x, ent, ctx)


_PIXEL = {
    "Invert": _invert, "Contrast": _contrast, "Sharpness": _sharpness, "AutoContrast": _autocontrast,
    "Equalize": _equalize, "Posterize": _posterize, "Color": _color, "Brightness": _brightness,
    "Solarize": _solarize,
}


def _run_segments(x: torch.Tensor, entry: torch.Tensor, ctx: _Ctx, counts) -> None:
    """x ordered by op id with `counts` samples per id (NONE last, possibly beyond x): each op in
    place on its slice (one `split` for all the slices)."""
    sizes = counts[:NONE]
    total = sum(sizes)
    if total == 0:
        return
    if total < x.shape[0]:
        sizes = sizes + [x.shape[0] - total]
    for op_id, (xs, es) in enumerate(zip(x.split(sizes), entry.split(sizes))):
        if op_id < NONE and sizes[op_id]:
            _run_op(op_id, xs, es, ctx)


# ------------------------------------------------------------------------------------------------
# The view
# ------------------------------------------------------------------------------------------------


def _render_sorted(name: str, images: torch.Tensor, params: dict):
    """The AutoAugment part of the grouped pipeline: returns (buf, source, ctx) with the levels
    of sample i (before Cutout) in buf[source[i]]."""
    n, c, h, w = images.shape
    dev = images.device
    ctx = _ctx(h, w, dev, AUTOAUG_VIEWS[name])
    eff, entry = _steps(ctx, params["policy"], params["u"], params["sign"])
    order1 = torch.argsort(eff[:, 0], stable=True)
    counts = torch.bincount(eff.add(ctx.step_offset).view(-1), minlength=2 * (NONE + 1)).tolist()
    counts1, counts2 = counts[:NONE + 1], counts[NONE + 1:]
    n2 = n - counts2[NONE]
    buf = torch.empty((n + n2, c, h, w), dtype=torch.float32, device=dev)
    x = buf[:n]
    _crop_flip_sorted(images, order1, params["top"], params["left"], params["flip"], x, ctx)
    entry = entry.index_select(0, order1)
    _run_segments(x, entry[:, 0], ctx, counts1)
    source = torch.argsort(order1)  # the inverse permutation: position of sample i in x
    if n2:
        order2 = torch.argsort(eff[:, 1].index_select(0, order1), stable=True)[:n2]  # positions in x
        x2 = torch.index_select(x, 0, order2, out=buf[n:])
        _run_segments(x2, entry[:, 1].index_select(0, order2), ctx, counts2)
        source.index_copy_(0, order1.index_select(0, order2), torch.arange(n, n + n2, device=dev))
    return buf, source, ctx


def render_autoaug_sorted(name: str, images: torch.Tensor, params: dict) -> torch.Tensor:
    """`render_view(name, images, params, "grouped")` for the AutoAugment views: the same
    float32 levels (Cutout applied) as the masked strategy, for the same draws. Reads subset
    sizes on the host (the CPU strategy)."""
    buf, source, ctx = _render_sorted(name, images, params)
    return buf.index_select(0, source).mul_(F.cutout_keep(params["cy"], params["cx"], ctx.h, ctx.w, CUTOUT_LENGTH))
