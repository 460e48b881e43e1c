"""Test-distribution shift: each run's accuracy under a family of test label distributions.

Why: the test sets of the LT benchmarks are balanced, but a deployed model meets whatever label
distribution the world has. Test-agnostic long-tail work (LADE, SADE) therefore reports accuracy
under forward long-tailed, uniform and backward (reversed) long-tailed test distributions. Every
run already records its best epoch's per-class accuracy, so these accuracies cost no inference:
they are expectations over the per-class accuracies.

Formula. For a run with C classes, training counts n_c and best-epoch per-class accuracy acc_c,
let r_c be class c's rank by training count (0 = most images; ties broken by class index). For a
test imbalance factor rho the class weight is

    forward   p(c) = rho ^ (-r_c / (C - 1))          (head classes most frequent at test time)
    uniform   p(c) = 1                                (rho = 1: the mean per-class accuracy)
    backward  p(c) = rho ^ (-(C - 1 - r_c) / (C - 1)) (tail classes most frequent)

and the accuracy under that distribution is sum_c p(c) acc_c / sum_c p(c), the sums running over
the classes that have a test image (acc_c is null for the others: they are left out, and the
weights of the rest renormalised). Ranks are taken over all C classes, so a class keeps its weight
whether or not a neighbour lacks test images. With C = 1 every weight is 1.

The family is forward IF 50, 25, 10, 5, 2, uniform, backward IF 2, 5, 10, 25, 50 (`FAMILY`, in
that order, which is also the x axis of the shift plot). Seeds are aggregated per method (and
recipe variant) as everywhere in the report: mean and sample std (ddof=1; none with one seed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.reporting.load import load_per_class

FORWARD, UNIFORM, BACKWARD = "forward", "uniform", "backward"
SHIFT_IFS = (50, 25, 10, 5, 2)
# (distribution, test_imb_factor) from forward IF 50 to backward IF 50
FAMILY: tuple[tuple[str, float], ...] = (
    *((FORWARD, float(r)) for r in SHIFT_IFS), (UNIFORM, 1.0), *((BACKWARD, float(r)) for r in reversed(SHIFT_IFS)))
SHIFT_COLUMNS = ["folder", "dataset_label", "if_label", "method", "variant", "seed", "distribution",
                 "test_imb_factor", "top1"]
CELL_KEYS = ["dataset_label", "if_label", "method", "variant"]


def family_label(distribution: str, test_imb_factor: float) -> str:
    """Short column / tick label: 'fwd 50', 'uniform', 'bwd 2'."""
    if distribution == UNIFORM:
        return "uniform"
    return f"{'fwd' if distribution == FORWARD else 'bwd'} {test_imb_factor:g}"


def count_ranks(counts) -> np.ndarray:
    """r_c: 0 for the class with the most training images; equal counts ranked by class index."""
    counts = np.asarray(counts, dtype=float)
    order = np.lexsort((np.arange(len(counts)), -counts))  # last key is primary: count descending
    ranks = np.empty(len(counts), dtype=int)
    ranks[order] = np.arange(len(counts))
    return ranks


def class_weights(counts, distribution: str, test_imb_factor: float) -> np.ndarray:
    """p(c) of the module docstring for every class (unnormalised)."""
    ranks = count_ranks(counts)
    span = len(ranks) - 1
    if distribution == UNIFORM or span == 0:
        return np.ones(len(ranks))
    if distribution == FORWARD:
        return test_imb_factor ** (-ranks / span)
    if distribution == BACKWARD:
        return test_imb_factor ** (-(span - ranks) / span)
    raise ValueError(f"unknown test distribution {distribution!r}; known: {FORWARD}, {UNIFORM}, {BACKWARD}")


def shifted_accuracy(accuracy, counts, distribution: str, test_imb_factor: float) -> float:
    """sum p(c) acc_c / sum p(c) over the classes with an accuracy (NaN: no test image)."""
    accuracy = np.asarray(accuracy, dtype=float)
    weights = class_weights(counts, distribution, test_imb_factor)
    seen = ~np.isnan(accuracy)
    if not seen.any():
        return float("nan")
    return float(np.sum(weights[seen] * accuracy[seen]) / np.sum(weights[seen]))


def run_shift_rows(per_class: pd.DataFrame) -> list[dict]:
    """The family for one run's per-class frame (`load.load_per_class`); [] when it has none."""
    if per_class.empty:
        return []
    accuracy = pd.to_numeric(per_class["accuracy"], errors="coerce")
    counts = pd.to_numeric(per_class["train_count"], errors="coerce")
    if accuracy.isna().all() or counts.isna().any():  # a hand-edited class_counts: n/a, not a crash
        return []
    return [{"distribution": d, "test_imb_factor": rho, "top1": shifted_accuracy(accuracy, counts, d, rho)}
            for d, rho in FAMILY]


def shift_frame(done: pd.DataFrame, per_class_of=load_per_class) -> pd.DataFrame:
    """One row per finished run and test distribution (the columns of `shift.csv`). Runs whose
    metrics.json lacks per-class accuracies or class counts contribute no rows. `per_class_of`
    reads a run's per-class frame (its folder's metrics.json, or a kept summary's per_class.csv)."""
    rows = []
    for run in done.itertuples():
        for part in run_shift_rows(per_class_of(run.folder)):
            rows.append({"folder": run.folder, "dataset_label": run.dataset_label, "if_label": run.if_label,
                         "method": run.method, "variant": getattr(run, "variant", ""), "seed": run.seed, **part})
    return pd.DataFrame(rows, columns=SHIFT_COLUMNS)


def shift_summary(shift: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1) over seeds per cell, method, variant and test distribution,
    in the family's order; `n` seeds."""
    columns = [*CELL_KEYS, "distribution", "test_imb_factor", "n", "top1_mean", "top1_std"]
    if shift.empty:
        return pd.DataFrame(columns=columns)
    out = shift.groupby([*CELL_KEYS, "distribution", "test_imb_factor"], sort=False)["top1"].agg(
        n="size", top1_mean="mean", top1_std=lambda s: s.std(ddof=1)).reset_index()
    return out[columns]


def shift_family_mean(shift: pd.DataFrame) -> pd.DataFrame:
    """Per cell, method and variant: the mean over seeds of each run's mean over the family
    (one number summarising robustness to the test distribution)."""
    if shift.empty:
        return pd.DataFrame(columns=[*CELL_KEYS, "shift_mean"])
    per_run = shift.groupby([*CELL_KEYS, "folder"], sort=False)["top1"].mean().reset_index()
    return per_run.groupby(CELL_KEYS, sort=False)["top1"].mean().rename("shift_mean").reset_index()


def run_shift_means(shift: pd.DataFrame) -> dict[str, float]:
    """Each run's mean top-1 over the family (folder -> value): the report's per-run `shift`
    column, which the summary averages into `shift_mean` (the leaderboard's shift summary)."""
    if shift.empty:
        return {}
    return {str(k): float(v) for k, v in shift.groupby("folder", sort=False)["top1"].mean().items()}
