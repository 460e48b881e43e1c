"""Training precision: each method's release precision, the `amp` key, and float32 islands.

Release precisions (`release_precision:` in configs/methods/<method>.yaml, fp32 when absent):
BCCL trains under fp16 autocast with a GradScaler (loss scaling: the scaled loss is
backpropagated, a step whose gradients overflow is skipped and the scale halved, and the scale
doubles after 2,000 clean steps: `torch.amp.GradScaler`'s defaults, as the release's); the BCL,
PaCo and LDAM-DRW/Decoupling CE releases train in float32. "float32" on CUDA means PyTorch's
defaults, which the release code also ran with: on Ampere or newer GPUs cuDNN convolutions use
TF32 (`torch.backends.cudnn.allow_tf32`, on by default) and matmuls full float32
(`torch.backends.cuda.matmul.allow_tf32`, off by default); both flags are recorded in env.json.

The `amp` key (configs/defaults.yaml) says what a run uses: `auto` = the release precision on
CUDA and float32 on the CPU (fp16 autocast on a CPU is neither fast nor what the release ran);
`fp32` (or `off`), `fp16` (autocast + GradScaler), `bf16` (autocast, the speed option: bf16 has
fp32's exponent range, so no loss scaling). Whatever runs is recorded in metrics.json
(`precision`: run and release) and env.json, and a run whose precision differs from its
release's records the deviation `precision` (e.g. BCCL on a CPU: fp32 where the release ran
fp16), which the report shows; `amp` itself stays an execution key, so the deviation is judged
on what ran, not on the setting.

Float32 islands (`float32`): under bf16 only the convolutional body runs in bf16. bf16 keeps 8
mantissa bits: inside a contrastive loss (similarities divided by tau = 0.05..0.1, then
exponentiated) or a cosine classifier (scale 33) that is an error of ~0.1 in a logit, so the
heads, the classifiers, every loss and BCCL's k-means run in float32 with autocast disabled.
Under fp16 (10 mantissa bits) the release ran all of them inside its autocast block (its head's
Linear layers, the similarity matmuls and k-means in fp16; exp, log, softmax and the losses'
reductions in float32, as autocast decides), and so does a fp16 run here: the islands apply
under bf16 only (`islands_for`).

Evaluation runs in float32 (no autocast: bf16 would flip ~0.5 % of close predictions), except
where the release evaluated under autocast and the run trains in the release's precision: BCCL's
test loop runs inside its fp16 autocast block (`release_eval_precision: fp16`, `main.py:407-408`),
so a BCCL run training in fp16 (CUDA, `amp: auto`) evaluates under fp16 autocast too
(`Execution.eval_precision`). A run that evaluates otherwise than its release (BCCL trained in
fp32 or bf16) records the deviation `eval_precision` (`eval_precision_deviation`), beside
`precision`.
"""

from __future__ import annotations

import contextlib
import functools
from contextvars import ContextVar
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)

PRECISIONS = ("fp32", "fp16", "bf16")
AMP_MODES = ("auto", "off", *PRECISIONS)
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

# Whether `float32` functions leave autocast (true outside a training step: tests, evaluation).
_ISLANDS: ContextVar[bool] = ContextVar("fp32_islands", default=True)


def resolve_precision(amp: str, release: str, device_type: str) -> str:
    """The precision a run trains in: `amp` unless auto (release precision on CUDA, fp32 elsewhere)."""
    if amp == "auto":
        return release if device_type == "cuda" else "fp32"
    return "fp32" if amp == "off" else amp


def islands_for(precision: str) -> bool:
    """Float32 islands in a training step: under bf16 only (the release's fp16 AMP has none)."""
    return precision == "bf16"


def autocast(precision: str, device_type: str):
    """The autocast context of a training step (none for fp32)."""
    if precision in _DTYPES:
        return torch.autocast(device_type=device_type, dtype=_DTYPES[precision])
    return contextlib.nullcontext()


def grad_scaler(precision: str, device_type: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (the release's GradScaler, default settings); disabled otherwise."""
    return torch.amp.GradScaler(device_type, enabled=precision == "fp16")


def precision_deviation(run: str, release: str) -> dict[str, dict[str, str]]:
    """{"precision": {"paper": release, "run": run}} when they differ, else {}."""
    return {} if run == release else {"precision": {"paper": release, "run": run}}


def eval_precision_deviation(run: str, release: str) -> dict[str, dict[str, str]]:
    """{"eval_precision": {"paper": release, "run": run}} when the evaluation's precision differs
    from the release's, else {}."""
    return {} if run == release else {"eval_precision": {"paper": release, "run": run}}


@contextlib.contextmanager
def islands(enabled: bool):
    """Inside: `float32` functions leave autocast (True) or run under it (False)."""
    token = _ISLANDS.set(enabled)
    try:
        yield
    finally:
        _ISLANDS.reset(token)


def islands_enabled() -> bool:
    return _ISLANDS.get()


def _as_float32(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value


def float32(fn: F) -> F:
    """Run `fn` with autocast disabled and its floating tensor arguments cast to float32 (while
    islands are enabled; otherwise under the ambient autocast, as the fp16 release did)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not _ISLANDS.get():
            return fn(*args, **kwargs)
        args = tuple(_as_float32(a) for a in args)
        kwargs = {k: _as_float32(v) for k, v in kwargs.items()}
        device_type = next((a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
