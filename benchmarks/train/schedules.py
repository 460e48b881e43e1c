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


# ----------------------------------------------------------------------------------------------
# Compressing a recipe's schedule to fewer epochs (the CPU track, configs/grids/fmnist-study.yaml)
# ----------------------------------------------------------------------------------------------

# Recipe keys counted in epochs besides `epochs` and the epochs of `lr_steps`: every phase boundary
# of the releases' schedules (warmups, DRW's switch, BCCL's re-clustering period).
EPOCH_KEYS = ("warmup_epochs", "reweight_epoch", "recluster_interval")


def scale_epoch(value: int, factor: float) -> int:
    """One epoch count scaled by `factor`, rounded half up, and at least 1 where it was positive
    (so that no phase of the release's schedule vanishes)."""
    return 0 if value <= 0 else max(1, math.floor(value * factor + 0.5))


def compress_schedule(recipe: dict[str, Any], epochs: int | None = None, factor: float | None = None) -> dict[str, Any]:
    """The overrides that compress `recipe` (a resolved config) to `epochs` epochs, every phase
    boundary scaled by the same factor epochs / recipe["epochs"] (`scale_epoch`); or, for a stage-2
    recipe, by its stage 1's `factor` (its length keeps the release's ratio to stage 1, at least 2
    epochs: one epoch of a cosine stepped first would train at lr 0). Only the keys that change
    are returned. One policy for every method, so that no method's schedule is tuned by hand."""
    if (epochs is None) == (factor is None):
        raise ValueError("give either epochs (a single-stage or stage-1 recipe) or factor (stage 2)")
    if factor is None:
        factor = epochs / recipe["epochs"]
    else:
        epochs = max(2, scale_epoch(recipe["epochs"], factor))
    out: dict[str, Any] = {"epochs": epochs}
    for key in EPOCH_KEYS:
        if key in recipe and scale_epoch(recipe[key], factor) != recipe[key]:
            out[key] = scale_epoch(recipe[key], factor)
    steps = [[scale_epoch(e, factor), f] for e, f in recipe.get("lr_steps") or []]
    if recipe.get("lr_schedule") in ("warmup_step", "paco_step") and steps != recipe.get("lr_steps"):
        out["lr_steps"] = steps
    return {k: v for k, v in out.items() if recipe.get(k) != v}
