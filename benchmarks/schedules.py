"""Learning-rate schedules, set once per epoch as the releases do. `epoch` is 0-based.

- `warmup_cosine` (BCCL, BCL): lr * (e + 1) / W for e < W, then
  lr * 0.5 * (1 + cos(pi * (e - W + 1) / (E - W + 1))).
- `warmup_step` (LDAM-DRW, CE, BCL): lr * (e + 1) / W for e < W, then lr times the factor of the
  last `lr_steps` entry [epoch, factor] with e >= epoch (e.g. x0.01 from 160, x0.0001 from 180).
- `cosine` (Decoupling's CE baseline: torch's CosineAnnealingLR to 0, stepped per epoch, no
  warmup; `warmup_epochs` is ignored): lr * 0.5 * (1 + cos(pi * e / E)).
- `cosine_stepped_first` (Decoupling's classifier stage, `run_networks.py`: CosineAnnealingLR to
  `eta_min` 0, its `step()` called at the start of every epoch, before training; no warmup):
  epoch e trains at lr * 0.5 * (1 + cos(pi * (e + 1) / E)), so the last epoch runs at lr 0.
- `warmup_cosine_stepped_first` (BalancedMetaSoftmax's `utils.py` CosineAnnealingLRWarmup, its
  `step()` called at the start of every epoch, before training, as `run_networks.py` does): the
  scheduler's epoch is k = e + 1; for k < W the lr rises linearly from `warmup_start_lr` (the
  release's base_lr, a method option) at k = 1 to lr (its warmup_lr) at k = W, then
  lr * 0.5 * (1 + cos(pi * (k - W) / (E - W))) down to 0 (its endlr) in the last epoch.
- `paco_step` (PaCo release): lr * (e + 1) / W for e <= W (so epoch W itself runs at
  lr * (W + 1) / W, as released), then as `warmup_step`; W = 0 means no warmup (the release
  would divide by zero).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from benchmarks import LTBenchError


def _step_factor(epoch: int, steps: list) -> float:
    factor = 1.0
    for start, step_factor in sorted(steps):
        if epoch >= start:
            factor = float(step_factor)
    return factor


def warmup_cosine(epoch: int, cfg: dict[str, Any]) -> float:
    lr, warmup, epochs = cfg["lr"], cfg["warmup_epochs"], cfg["epochs"]
    if epoch < warmup:
        return lr * (epoch + 1) / warmup
    return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup + 1) / (epochs - warmup + 1)))


def warmup_step(epoch: int, cfg: dict[str, Any]) -> float:
    lr, warmup = cfg["lr"], cfg["warmup_epochs"]
    if epoch < warmup:
        return lr * (epoch + 1) / warmup
    return lr * _step_factor(epoch, cfg["lr_steps"])


def cosine(epoch: int, cfg: dict[str, Any]) -> float:
    return cfg["lr"] * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg["epochs"]))


def cosine_stepped_first(epoch: int, cfg: dict[str, Any]) -> float:
    return cfg["lr"] * 0.5 * (1.0 + math.cos(math.pi * (epoch + 1) / cfg["epochs"]))


def warmup_cosine_stepped_first(epoch: int, cfg: dict[str, Any]) -> float:
    if "warmup_start_lr" not in cfg:
        raise LTBenchError(f"lr_schedule warmup_cosine_stepped_first needs the option warmup_start_lr (the lr of "
                           f"the first warmup epoch), which method {cfg.get('method')!r} does not have")
    lr, start, warmup, epochs = cfg["lr"], cfg["warmup_start_lr"], cfg["warmup_epochs"], cfg["epochs"]
    k = epoch + 1
    if k < warmup:  # so warmup >= 2 here, as the release asserts
        return start + (lr - start) * (k - 1) / (warmup - 1)
    if epochs <= warmup:
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * (k - warmup) / (epochs - warmup)))


def paco_step(epoch: int, cfg: dict[str, Any]) -> float:
    lr, warmup = cfg["lr"], cfg["warmup_epochs"]
    if 0 < warmup and epoch <= warmup:
        return lr * (epoch + 1) / warmup
    return lr * _step_factor(epoch, cfg["lr_steps"])


SCHEDULES: dict[str, Callable[[int, dict[str, Any]], float]] = {
    "warmup_cosine": warmup_cosine,
    "warmup_step": warmup_step,
    "paco_step": paco_step,
    "cosine": cosine,
    "cosine_stepped_first": cosine_stepped_first,
    "warmup_cosine_stepped_first": warmup_cosine_stepped_first,
}


def learning_rate(epoch: int, cfg: dict[str, Any]) -> float:
    name = cfg["lr_schedule"]
    if name not in SCHEDULES:
        raise LTBenchError(f"unknown lr_schedule {name!r}; known: {', '.join(SCHEDULES)}")
    return SCHEDULES[name](epoch, cfg)
