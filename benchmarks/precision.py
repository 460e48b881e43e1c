"""Where mixed precision stops: only the backbone runs under bf16 autocast.

On CUDA the loop runs `training_step` under bf16 autocast for speed, but bf16 keeps 8 mantissa
bits: inside a contrastive loss (similarities divided by tau = 0.05..0.1, exponentiated) or a
cosine classifier (scale 33) that is an error of ~0.1 in a logit, enough to change results. So
the heads, the classifiers and every loss run in float32 with autocast disabled, and evaluation
runs without autocast; what remains in bf16 is the convolutional body. This is more precise
than the BCCL release, which trains under fp16 autocast: there the head's Linear layers and the
similarity matmuls run in fp16 (10 mantissa bits) and only autocast's float32 ops (exp, log,
softmax, the losses' reductions) in float32. The precision in use is recorded (`amp` in
config.yaml and env.json); `--set amp=off` gives float32 throughout.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)


def _as_float32(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value


def float32(fn: F) -> F:
    """Run `fn` with autocast disabled and its floating tensor arguments cast to float32."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args = tuple(_as_float32(a) for a in args)
        kwargs = {k: _as_float32(v) for k, v in kwargs.items()}
        device_type = next((a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
