"""PIL's `ImageFilter.GaussianBlur(radius=sigma)` for a batch, per-sample sigma, bit-exact.

PIL's Gaussian blur is not a sampled Gaussian but three passes per axis of an "extended box"
(Gwosdek et al. 2011): radius r = l + a from sigma, taps |d| <= l weighted ww and |d| = l + 1
weighted fw in 24-bit fixed point, edges replicated, each pass rounded to uint8, horizontal
passes first (BoxBlur.c). For sigma <= 2 (the MoCo-v2 range U(0.1, 2.0)), l <= 1: 5 taps.

One pass is Pillow's integer expression itself, evaluated in int32 on levels centred as
x' = x - 128 (`pass_coefficients`):

    out' = (a x'_0 + b (x'_-1 + x'_1) + c (x'_-2 + x'_2) + k) >> 24

with a = ww, b = fw (l = 0) or ww (l = 1), c = 0 (l = 0) or fw (l = 1). Why centred: the
weights sum to 2^24 - (ww & 1) (fw = (2^24 - (2l + 1) ww) // 2 drops the odd unit), so on
uncentred levels the sum would reach 255 * 2^24 and overflow int32; centred, every product and
partial sum is a non-negative-weighted sum of values in [-128, 127] and lies within
[-128 * 2^24, 127 * 2^24 + 2^23], and k = 2^23 - 128 (ww & 1) restores Pillow's rounding
offset exactly. The arithmetic right shift is Pillow's floor division: no floating point after
the float -> int32 conversion of integer levels, so the result is exact by construction (the
tests also compare with Pillow directly).

Two executions of that pass:
- `_blur_functional`: pad by replication, five slices, a fresh tensor per op; used off CPU
  (and on CPU with `reuse_buffers=False`).
- `_blur_workspace` (CPU, eager): flat padded int32 buffers reused across calls, where the five
  taps are shifted windows of one buffer, so a pass is 7 contiguous (images, 3456) ops, 6 in
  place, with no padding copies and no transposes; only the two replicated border columns
  (horizontal) or rows (vertical) per side are refreshed between passes. Measured on one CPU
  thread, 256 images: ~24 us/img (machine loaded), against ~90-120 for the float32
  split-weight version it replaced (benchmarks/perf/view_throughput.py times the whole view).
"""

from __future__ import annotations

import threading

import torch

from benchmarks.data.views.levels import _per_sample, _uint8_io

CPU_BLUR_CHUNK = 128  # images per internal chunk on CPU (measured: 128 and 256 within noise, 64 slower)


def pil_box_radius(sigma: torch.Tensor, passes: int = 3) -> torch.Tensor:
    """Pillow's `_gaussian_blur_radius`: the extended-box radius l + a whose `passes`-fold
    convolution has variance sigma^2 (Gwosdek et al. 2011, eqs. 7, 11, 14).

    Evaluated in float32 where Pillow's C code uses `float` (float64 where it uses double
    constants): the radius sets the fixed-point weights, and pixel sums often fall exactly on a
    rounding boundary, where one unit of weight flips the result.
    """
    s = sigma.float()
    sigma2 = s * s / float(passes)
    big_l = torch.sqrt(12.0 * sigma2.double() + 1.0).float()
    low = torch.floor((big_l.double() - 1.0) / 2.0).float()
    a = (2 * low + 1) * (low * (low + 1) - 3 * sigma2)
    a = a / (6 * (sigma2 - (low + 1) * (low + 1)))
    return low + a


def box_weights(radius: torch.Tensor):
    """Pillow's fixed-point weights of one pass: ww = (UINT32)(2^24 / (2r + 1)) (a float32
    division) on |d| <= l, fw = (2^24 - (2l + 1) ww) // 2 on |d| = l + 1. Returns l, ww, fw
    as (N,) int64."""
    radius = radius.float()
    low = torch.floor(radius).long()
    ww = torch.trunc(torch.div(torch.full_like(radius, 2.0 ** 24), radius * 2 + 1)).long()
    fw = (2 ** 24 - (low * 2 + 1) * ww) // 2
    return low, ww, fw


def pass_coefficients(sigma, n: int, device, passes: int = 3) -> torch.Tensor:
    """(4, N, 1) int32 a, b, c, k of one pass on centred levels (see the module docstring)."""
    sig = _per_sample(sigma, n, device, torch.float64)
    low, ww, fw = box_weights(pil_box_radius(sig, passes))
    if sig.device.type == "cpu" and bool((low > 1).any()):  # a check that would sync a GPU
        raise ValueError("gaussian_blur supports sigma <= 2 (box radius below 2: five taps per pass)")
    one = low.clamp(0, 1)  # l, 0 or 1
    c = fw * one
    coef = torch.stack([ww, fw - c + ww * one, c, 2 ** 23 - 128 * (ww & 1)])
    return coef.to(torch.int32).unsqueeze(-1)


# ------------------------------------------------------------------------------------------------
# Functional execution (any device)
# ------------------------------------------------------------------------------------------------


def _pass_last_dim(x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """One pass along the last dim of centred int32 levels (N, C, H, W), edges replicated."""
    w = x.shape[-1]
    a, b, c, k = (v.view(-1, 1, 1, 1) for v in coef)
    pad = torch.cat([x[..., :1], x[..., :1], x, x[..., -1:], x[..., -1:]], dim=-1)
    total = (pad[..., 1:w + 1] + pad[..., 3:w + 3]) * b + x * a + (pad[..., 0:w] + pad[..., 4:w + 4]) * c + k
    return torch.bitwise_right_shift(total, 24)


def _blur_functional(x: torch.Tensor, coef: torch.Tensor, passes: int) -> torch.Tensor:
    current = x.to(torch.int32) - 128
    for _ in range(passes):  # horizontal
        current = _pass_last_dim(current, coef)
    current = current.transpose(-1, -2)
    for _ in range(passes):  # vertical
        current = _pass_last_dim(current, coef)
    return current.transpose(-1, -2).float() + 128.0


# ------------------------------------------------------------------------------------------------
# Workspace execution (CPU, eager)
# ------------------------------------------------------------------------------------------------


class _Layout:
    """Views of one flat int32 buffer, either as rows padded by 2 on both sides (horizontal
    passes: (rows, w + 4)) or as planes padded by 2 rows (vertical passes: (planes, h + 4, w)),
    with the first interior value at offset `start`.

    The five taps of a pass are five shifted 1-D windows of the same buffer, each viewed as
    (images, per-image length), so every op of a pass is one contiguous 2-D op with (N, 1)
    weights. Outputs at padding positions are garbage: `refresh` overwrites them with the
    replicated edge before the next pass reads them. The buffer extends beyond the padded
    images on both sides so that the shifted windows stay in bounds (those values only ever
    reach padding positions).
    """

    def __init__(self, buf: torch.Tensor, start: int, q: int, ch: int, h: int, w: int, vertical: bool):
        if vertical:
            per, step = ch * (h + 4) * w, w
            ps, p = (h + 4) * w, q * ch  # plane stride, planes
            base = start - 2 * w  # row 0 (padding) of plane 0
            self.interior = buf.as_strided((q, ch, h, w), (ch * ps, ps, w, 1), start)
            # one op for all padding rows: between plane j - 1 and plane j the 4 padding rows are
            # adjacent (j = 0 and j = p reach beyond the planes, into the spare buffer)
            self.edges = [(buf.as_strided((p + 1, 2, 2, w), (ps, 2 * w, w, 1), base - 2 * w),
                           buf.as_strided((p + 1, 2, 2, w), (ps, 5 * w, 0, 1), base - 3 * w))]
        else:
            per, step = ch * h * (w + 4), 1
            rows, rs = q * ch * h, w + 4
            base = start - 2  # column 0 (padding) of row 0
            self.interior = buf.as_strided((q, ch, h, w), (ch * h * rs, h * rs, rs, 1), start)
            # one column at a time: (rows,) strided copies beat (rows, 2) copies from an expand
            self.edges = [(buf.as_strided((rows,), (rs,), base + j),
                           buf.as_strided((rows,), (rs,), base + (2 if j < 2 else w + 1)))
                          for j in (0, 1, w + 2, w + 3)]
        self.out = buf.as_strided((q, per), (per, 1), start)
        self.taps = [buf.as_strided((q, per), (per, 1), start + d * step) for d in (-2, -1, 0, 1, 2)]

    def refresh(self) -> None:
        for dst, src in self.edges:
            dst.copy_(src)


class _Workspace:
    """Two flat int32 buffers and their layouts for one (device, q, ch, h, w): allocating them
    and building ~50 views costs ~0.2 ms, so they are kept per thread and reused.

    The first interior value of either layout sits at a multiple of 8 elements (32 bytes, the
    allocators align more): the centre tap and the output of every op are then AVX-aligned,
    measured ~15% faster per pass than misaligned.
    """

    def __init__(self, device, q: int, ch: int, h: int, w: int):
        start_h = 8  # >= 2: the -2 tap
        start_v = -(-5 * w // 8) * 8  # >= 5 w: the padding-row refresh reads 3 rows before plane 0's
        length = max(start_h + q * ch * h * (w + 4) + 2, start_v + q * ch * (h + 4) * w + 2 * w) + 8
        bufs = [torch.zeros(length, dtype=torch.int32, device=device) for _ in range(2)]
        self.hor = [_Layout(b, start_h, q, ch, h, w, False) for b in bufs]
        self.ver = [_Layout(b, start_v, q, ch, h, w, True) for b in bufs]
        self.shift = torch.tensor(24, dtype=torch.int32, device=device)  # 0-dim: cheaper dispatch


_LOCAL = threading.local()


def _workspace(device, q: int, ch: int, h: int, w: int) -> _Workspace:
    cache = getattr(_LOCAL, "cache", None)
    if cache is None:
        cache = _LOCAL.cache = {}
    key = (str(device), q, ch, h, w)
    ws = cache.get(key)
    if ws is None:
        if len(cache) >= 4:  # a few shapes (full chunk, remainders): keep memory bounded
            cache.clear()
        ws = cache[key] = _Workspace(device, q, ch, h, w)
    return ws


def _workspace_pass(src: _Layout, dst: torch.Tensor, coef, shift: torch.Tensor) -> None:
    """dst = (a x_0 + b (x_-1 + x_1) + c (x_-2 + x_2) + k) >> 24, int32, all but one op in place."""
    a, b, c, k = coef
    t = src.taps
    torch.add(t[1], t[3], out=dst)
    dst.mul_(b).addcmul_(t[2], a).addcmul_(t[0], c).addcmul_(t[4], c).add_(k).bitwise_right_shift_(shift)


def _blur_workspace(x: torch.Tensor, coef: torch.Tensor, passes: int) -> torch.Tensor:
    n, ch, h, w = x.shape
    out = torch.empty_like(x, dtype=torch.float32)
    for start in range(0, n, CPU_BLUR_CHUNK):
        q = min(CPU_BLUR_CHUNK, n - start)
        ws = _workspace(x.device, q, ch, h, w)
        hor, ver, shift = ws.hor, ws.ver, ws.shift
        cw = (coef if q == n else coef[:, start:start + q]).unbind(0)
        hor[0].interior.copy_(x[start:start + q])
        hor[0].out.sub_(128)
        hor[0].refresh()
        for i in range(passes):
            _workspace_pass(hor[i % 2], hor[(i + 1) % 2].out, cw, shift)
            if i < passes - 1:
                hor[(i + 1) % 2].refresh()
        cur = 1 - passes % 2
        ver[cur].interior.copy_(hor[1 - cur].interior)
        for i in range(passes):
            ver[cur].refresh()
            _workspace_pass(ver[cur], ver[1 - cur].out, cw, shift)
            cur = 1 - cur
        out[start:start + q].copy_(ver[cur].interior).add_(128.0)
    return out


@_uint8_io
def gaussian_blur(x: torch.Tensor, sigma, passes: int = 3, reuse_buffers: bool = True) -> torch.Tensor:
    """PIL `ImageFilter.GaussianBlur(radius=sigma)` per sample on float32 levels (N, C, H, W)
    (or uint8), bit-identical to Pillow. sigma: a scalar or (N,) values in (0, 2].

    reuse_buffers=True on CPU runs the workspace execution (fast, eager only; the input is not
    modified); otherwise the purely functional one (other devices).
    """
    n = x.shape[0]
    if n == 0:
        return torch.empty_like(x, dtype=torch.float32)
    coef = pass_coefficients(sigma, n, x.device, passes)
    if reuse_buffers and x.device.type == "cpu":
        return _blur_workspace(x, coef, passes)
    return _blur_functional(x, coef, passes)
