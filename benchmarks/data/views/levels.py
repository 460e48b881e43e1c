"""Helpers shared by the batched view ops (`fast`, `blur`): images are float32 tensors holding
integer levels 0..255, parameters are per-sample (N,) tensors or Python scalars."""

from __future__ import annotations

import functools

import torch


def _per_sample(value, n: int, device, dtype=torch.float32) -> torch.Tensor:
    """A (N,) tensor from a Python scalar or a per-sample tensor, so every op accepts both."""
    if isinstance(value, torch.Tensor):
        value = value.to(device=device, dtype=dtype)
        return value.expand(n) if value.dim() == 0 else value.reshape(n)
    return torch.full((n,), value, device=device, dtype=dtype)


def _col(value: torch.Tensor) -> torch.Tensor:
    return value.reshape(-1, 1, 1, 1)


def _uint8_io(fn):
    """Ops work on float32 images holding integer levels 0..255 (the pipeline's representation);
    called with uint8 they convert in and out, so tests can feed uint8 images directly."""

    @functools.wraps(fn)
    def wrapper(x: torch.Tensor, *args, **kwargs):
        if x.dtype == torch.uint8:
            return fn(x.float(), *args, **kwargs).to(torch.uint8)
        return fn(x, *args, **kwargs)

    return wrapper
