"""Compute cost per run: what each result cost to obtain, so that a gain is read beside its price.

The trainer records in metrics.json `train_seconds` (wall time of the training epochs),
`train_images_per_s`, `eval_seconds` (total wall time of the test evaluations), `peak_memory_mb`
(peak resident memory on a CPU; the largest CUDA allocation on a GPU), `device` and `precision`
(a dict, its `run` entry being what the step ran in). Folders written before a key was recorded
read NaN / "" for it, which every table shows as n/a.

Per cell (dataset x IF x method x variant), over the seeds: the mean and sample std (ddof=1) of
the training time, the means of evaluation time, images per second and peak memory, and the
devices seen. Only numbers are computed here; the display text is `cost_text`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

COST_RUN_COLUMNS = ("train_seconds", "images_per_s", "peak_memory_mb", "eval_seconds")
CELL_KEYS = ["dataset_label", "if_label", "method", "variant"]
COST_SUMMARY_COLUMNS = ["train_seconds_mean", "train_seconds_std", "eval_seconds_mean", "images_per_s_mean",
                        "peak_memory_mb_mean", "device"]


def _number(value: Any) -> float:
    """A finite non-negative number, else NaN (absent, malformed or hand-edited values)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    return float(value) if math.isfinite(value) and value >= 0 else float("nan")


def cost_fields(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """A run's cost columns from its metrics.json (runs.csv: beside top-1, in this order)."""
    metrics = metrics or {}
    device = metrics.get("device")
    return {
        "train_seconds": _number(metrics.get("train_seconds")),
        "images_per_s": _number(metrics.get("train_images_per_s")),
        "peak_memory_mb": _number(metrics.get("peak_memory_mb")),
        "eval_seconds": _number(metrics.get("eval_seconds")),
        "device": device if isinstance(device, str) else "",
    }


def add_cell_cost(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """`summary` (one row per cell) with the cost columns of the module docstring, from the
    finished runs of each cell."""
    if summary.empty:
        return summary.assign(**{c: pd.Series(dtype=float) for c in COST_SUMMARY_COLUMNS})
    done = runs[runs["state"] == "done"].copy()
    for column in COST_RUN_COLUMNS:
        if column not in done:
            done[column] = np.nan
    if "device" not in done:
        done["device"] = ""
    cost = done.groupby(CELL_KEYS, sort=False).agg(
        train_seconds_mean=("train_seconds", "mean"),
        train_seconds_std=("train_seconds", lambda s: s.std(ddof=1)),
        eval_seconds_mean=("eval_seconds", "mean"),
        images_per_s_mean=("images_per_s", "mean"),
        peak_memory_mb_mean=("peak_memory_mb", "mean"),
        device=("device", lambda s: "/".join(sorted({str(x) for x in s if isinstance(x, str) and x}))),
    ).reset_index()
    merged = summary.drop(columns=[c for c in COST_SUMMARY_COLUMNS if c in summary]).merge(
        cost, on=CELL_KEYS, how="left")
    merged["device"] = merged["device"].fillna("")
    return merged


def _missing(value) -> bool:
    return value is None or bool(pd.isna(value))


def _seconds(value) -> str:
    return "n/a" if _missing(value) else f"{value:.1f} s"


def cost_text(row) -> str:
    """'train 12.5 ± 0.5 s; eval 1.2 s; 1000 img/s; peak 512 MB; cpu' (n/a for what a run did
    not record); `row` is a summary row with the columns of `add_cell_cost`."""
    mean, std = getattr(row, "train_seconds_mean", np.nan), getattr(row, "train_seconds_std", np.nan)
    train = "n/a" if _missing(mean) else (f"{mean:.1f} s" if _missing(std) else f"{mean:.1f} ± {std:.1f} s")
    speed = getattr(row, "images_per_s_mean", np.nan)
    memory = getattr(row, "peak_memory_mb_mean", np.nan)
    device = getattr(row, "device", "") or "n/a"
    return (f"train {train}; eval {_seconds(getattr(row, 'eval_seconds_mean', np.nan))}; "
            f"{'n/a' if _missing(speed) else f'{speed:.0f}'} img/s; "
            f"peak {'n/a' if _missing(memory) else f'{memory:.0f} MB'}; {device}")
