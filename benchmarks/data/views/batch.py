"""`FastView`: a view for a whole uint8 batch, and which formulation renders it.

The formulations are one module each over shared primitives (`levels`, `blur`, `reference`'s
constants): the torch ops (`fast`), and on CPU the compiled per-image loops (`contrastive_cpu`,
`autoaug_cpu`, numba), which build on the torch module's tables. This module only dispatches
between them, so none of them imports another back.
"""

from __future__ import annotations

import functools

import torch

from benchmarks import LTBenchError
from benchmarks.data.views.blur import gaussian_blur, pass_coefficients
from benchmarks.data.views.fast import (
    _APPLY, _autoaugment_owned, bilinear_taps, color_jitter, crop_flip, cutout_keep, grayscale, hue_shift,
    normalize_constants, resized_crop_levels, sample_view,
)
from benchmarks.data.views.reference import AUTOAUG_VIEWS, CROP_PADDING, CUTOUT_LENGTH, check_view_name

def numba_available() -> bool:
    """Whether the per-image numba loops can run; without numba the torch ops render the same
    views (identical outputs, slower) and the first call says so in one log line."""
    global _NUMBA
    if _NUMBA is None:
        try:
            import numba  # noqa: F401
        except ImportError:
            _NUMBA = False
            from benchmarks.store.logs import LOGGER

            LOGGER.warning("note: numba is not installed: the CPU fast views use the torch path (identical "
                           "outputs, slower); pip install 'ltbench[fast-cpu]' for the compiled loops")
        else:
            _NUMBA = True
    return _NUMBA


_NUMBA: bool | None = None


def render_view(name: str, images: torch.Tensor, params: dict, strategy: str) -> torch.Tensor:
    """The view of `images` (uint8) for given draws (see `sample_view`), as float32 levels
    0..255 before normalisation (Cutout already applied)."""
    apply = _APPLY[strategy]
    if name == "test":
        return images.float()
    numba_loops = strategy == "grouped" and images.device.type == "cpu" and numba_available()
    if name in AUTOAUG_VIEWS and numba_loops:
        # imported here: needs numba (autoaug_cpu builds on the torch ops' tables in fast)
        from benchmarks.data.views.autoaug_cpu import render_autoaug_cpu

        return render_autoaug_cpu(name, images, params)
    if name in ("crop_flip", *AUTOAUG_VIEWS):
        x = crop_flip(images, params["top"], params["left"], params["flip"], CROP_PADDING).float()
        if name == "crop_flip":
            return x
        x = _autoaugment_owned(x, params["policy"], params["u"], params["sign"], strategy, AUTOAUG_VIEWS[name])
        h, w = x.shape[-2:]
        return x.mul_(cutout_keep(params["cy"], params["cx"], h, w, CUTOUT_LENGTH))
    if numba_loops:
        return _render_contrastive_cpu(name, images, params)
    x = resized_crop_levels(images, params["top"], params["left"], params["height"],
                            params["width"], params["flip"], size=images.shape[-2])
    x = color_jitter(x, params["applied"], params["factors"], params["order"], strategy)
    x = apply(x, params["gray"], grayscale)
    if name == "contrastive_blur":
        x = apply(x, params["blur"], gaussian_blur, params["sigma"])
    return x


def _render_contrastive_cpu(name: str, images: torch.Tensor, params: dict) -> torch.Tensor:
    """The contrastive views with the grouped strategy on CPU: resized crop, ColorJitter,
    grayscale and blur per image in one compiled loop (`contrastive_cpu`: the same float32 and
    integer operations as the torch ops here and in `blur.py`)."""
    from benchmarks.data.views.contrastive_cpu import render_contrastive  # numba: imported on first use

    n, _, h, w = images.shape
    taps_x = bilinear_taps(params["left"], params["width"], w, h, params["flip"])
    taps_y = bilinear_taps(params["top"], params["height"], h, h)
    out = torch.empty((n, 3, h, h), dtype=torch.float32)
    shifts = hue_shift(params["factors"][:, 3], n, images.device)
    if name == "contrastive_blur":
        blur, coef = params["blur"], pass_coefficients(params["sigma"], n, images.device).squeeze(-1)
    else:
        blur, coef = torch.zeros(n, dtype=torch.bool), torch.zeros((4, n), dtype=torch.int32)
    arrays = [t.contiguous().numpy() for t in (images, out, *taps_x, *taps_y, params["applied"], params["order"],
                                               params["factors"], shifts, params["gray"], blur, coef)]
    render_contrastive(*arrays)
    return out


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse: no trimming of the heap, no separate
    mapping for large blocks. Process-wide; returns False where glibc's `mallopt` is missing.

    Why: the batched CPU path allocates many temporaries of a few MB. With glibc's defaults such
    blocks are mapped and unmapped (or trimmed) again and again, and every fresh page costs a
    page fault: measured on the development VM, ~3,500 faults and ~7 ms per 256-image resized
    crop, about twice its arithmetic; the AutoAugment views measured 2-3x slower without it.
    `FastView` calls it once per process on its first CPU batch (the process then keeps its
    peak heap: a deliberate trade for a training or benchmark process); irrelevant on GPU
    (PyTorch's CUDA allocator caches).
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 28)) and bool(mallopt(m_trim_threshold, -1))


@functools.lru_cache(maxsize=None)
def _keep_freed_memory_once() -> bool:
    return keep_freed_memory()


# Images per chunk on CPU: 256, measured for the torch ops (intermediates stay near the cache);
# the numba paths (contrastive, AutoAugment views) work image by image, so there the chunk only
# sizes the torch-side preparation (tables, draws), and 1024 was the sorted AutoAugment path's.
CPU_CHUNK = {"autoaug_cutout": 1024, "autoaug_cutout_tv": 1024}
CPU_CHUNK_DEFAULT = 256


class FastView:
    """One named view for a batch: (N, 3, H, W) uint8 on any device -> (N, 3, H, W) float32,
    normalised, on the same device, with torch's generator of that device.

    All random draws are made for the whole batch first (`sample_view`), then the batch is
    rendered in chunks of `chunk` images, so the output does not depend on the chunk size. On
    CPU the default chunk (`CPU_CHUNK`: 256, 1024 for the AutoAugment views) keeps intermediates near
    the cache: a 128-image elementwise op measured 2-3x faster per element than a 512-image one,
    while smaller chunks multiply the per-op overhead; on other devices the default is one chunk.
    On CPU, the first call applies `keep_freed_memory()` (once per process), which avoids page
    faults that otherwise cost about as much as the arithmetic.

    strategy: "masked" (every op on the whole chunk, merged arithmetically: no device sync),
    "grouped" (each op only on the samples that chose it) or "auto": grouped on CPU, masked
    elsewhere. Both give identical outputs for the same random state.
    """

    def __init__(self, name: str, mean, std, strategy: str = "auto", chunk: int | None = None) -> None:
        check_view_name(name)
        if strategy not in ("auto", "masked", "grouped"):
            raise LTBenchError(f"unknown strategy {strategy!r}; use auto, masked or grouped")
        if chunk is not None and chunk < 1:
            raise LTBenchError(f"chunk must be a positive number of images, got {chunk}")
        self.name = name
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.strategy = strategy
        self.chunk = chunk
        self._constants: dict = {}

    def __repr__(self) -> str:
        return f"FastView({self.name!r}, strategy={self.strategy!r}, chunk={self.chunk})"

    def strategy_for(self, device: torch.device) -> str:
        if self.strategy != "auto":
            return self.strategy
        return "grouped" if device.type == "cpu" else "masked"

    def chunk_for(self, device: torch.device, n: int) -> int:
        if self.chunk is not None:
            return self.chunk
        return CPU_CHUNK.get(self.name, CPU_CHUNK_DEFAULT) if device.type == "cpu" else max(n, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.device.type == "cpu":
            _keep_freed_memory_once()
        if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise LTBenchError(f"expected an (N, 3, H, W) uint8 tensor, got {images.dtype} {tuple(images.shape)}")
        n, _, h, w = images.shape
        if h != w:
            raise LTBenchError(f"views expect square images, got {h}x{w}")
        dev = images.device
        params = sample_view(self.name, n, h, w, dev)
        strategy = self.strategy_for(dev)
        chunk = self.chunk_for(dev, n)
        key = str(dev)
        if key not in self._constants:  # built once per device, not in the hot path
            scale, shift = normalize_constants(self.mean, self.std, dev)
            self._constants[key] = scale.view(3).tolist(), shift.view(3).unbind(0)
        scale, shift = self._constants[key]
        out = torch.empty((n, 3, h, w), dtype=torch.float32, device=dev)
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            levels = render_view(self.name, images[part], {k: v[part] for k, v in params.items()}, strategy)
            # ToTensor + Normalize (`normalize_constants`): per channel with a Python-float scale,
            # `torch.add(shift_c, levels_c, alpha=scale_c)` is one vectorised multiply-add
            # (measured ~2x faster on CPU than addcmul with two broadcast operands)
            for c in range(3):
                torch.add(shift[c], levels[:, c], alpha=scale[c], out=out[part, c])
        return out
