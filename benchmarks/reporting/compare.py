"""Within a cell: methods against each other, variants against their recipe, swept keys.

Comparisons (`comparisons`). In each dataset x IF cell, every pair of methods (each on its
recipe variant, below) and every other variant of a method against that method's recipe variant:
the difference of best-epoch top-1 (a − b, in points), its 95 % interval and a two-sided p-value.
- Both sides with >= 2 seeds: Welch over the seeds' top-1 (`stats.welch`).
- One seed each: the runs are paired image by image (their predictions.npz, which must hold the
  same test labels in the same order): paired bootstrap interval over images
  (`stats.paired_bootstrap`) and the exact McNemar p-value (`stats.mcnemar`).
- Otherwise (one seed against several, or runs without predictions.npz: written before
  predictions were kept) the difference is given and the interval and p-value are n/a, with why.
A comparison is significant when p < ALPHA (0.05, uncorrected for the number of comparisons).
The image-level test speaks about this test set and these seeds, not about seed-to-seed scatter.

The recipe variant of a method in a cell is its variant with the fewest recipe deviations (the
paper recipe itself when it was run; in the smoke grid, the grid's shortened recipe).

Sensitivity (`sensitivity`). A swept key of a method in a cell is a config key whose value differs
between the method's variants there (identity and execution keys excluded). For each swept key,
the variants are grouped by the values of the other swept keys (a one-at-a-time sweep gives one
group, through the recipe variant; a cartesian one, one group per combination); each group with
at least two values of the key is a series: best top-1 and few-shot accuracy per value, mean over
seeds with the 95 % Student-t interval (`stats.mean_ci`; none with one seed).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import LTBenchError
from benchmarks.config import EXECUTION_KEYS, IDENTITY_KEYS
from benchmarks.predictions import paired_correctness, read_predictions
from benchmarks.reporting.aggregate import CELL_KEYS, method_rank
from benchmarks.reporting.stats import mcnemar, mean_ci, paired_bootstrap, welch

ALPHA = 0.05
LEVEL = 0.95
WELCH = "Welch over seeds"
PAIRED = "paired bootstrap over images, McNemar"

COMPARISON_COLUMNS = [
    "dataset_label", "if_label", "kind", "a_method", "a_variant", "b_method", "b_variant", "n_a", "n_b",
    "test", "diff", "low", "high", "p", "significant", "note",
]
SENSITIVITY_COLUMNS = [
    "dataset_label", "if_label", "method", "key", "value", "others", "variant", "recipe", "n",
    "top1_mean", "top1_low", "top1_high", "few_mean", "few_low", "few_high",
]


def _cells(done: pd.DataFrame):
    """(dataset_label, if_label) -> {method: {variant: that variant's runs}} in report order."""
    cells: dict[tuple[str, str], dict[str, dict[str, pd.DataFrame]]] = {}
    for (label, if_label, method, variant), runs in done.groupby(CELL_KEYS, sort=False):
        cells.setdefault((label, if_label), {}).setdefault(method, {})[variant] = runs
    return cells


def recipe_variant(variants: dict[str, pd.DataFrame]) -> str:
    """The variant the others are compared with: the fewest recipe deviations, then its label."""
    return min(variants, key=lambda v: (len(variants[v]["deviations"].iloc[0] or {}), v))


def _paired(a: pd.DataFrame, b: pd.DataFrame) -> tuple[float, float, float, float, str]:
    """Image-level comparison of two one-seed runs: (diff, low, high, p, note)."""
    try:
        pa, pb = read_predictions(a["folder"].iloc[0]), read_predictions(b["folder"].iloc[0])
        if pa is None or pb is None:
            return np.nan, np.nan, np.nan, np.nan, "no predictions.npz (run written before predictions were kept)"
        ca, cb = paired_correctness(pa, pb, "best")
    except LTBenchError as exc:
        return np.nan, np.nan, np.nan, np.nan, str(exc)
    diff, low, high = paired_bootstrap(ca, cb, level=LEVEL)
    return diff, low, high, mcnemar(ca, cb), ""


def compare_runs(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, Any]:
    """The comparison of two groups of runs (rows of the runs frame) on best top-1, a − b."""
    na, nb = len(a), len(b)
    diff = float(a["best_top1"].mean() - b["best_top1"].mean())
    low = high = p = np.nan
    test, note = "", ""
    if na >= 2 and nb >= 2:
        diff, low, high, p = welch(a["best_top1"], b["best_top1"], level=LEVEL)
        test = WELCH
    elif na == 1 and nb == 1:
        pdiff, plow, phigh, pp, note = _paired(a, b)
        test = PAIRED
        if not note:
            diff, low, high, p = pdiff, plow, phigh, pp
    else:
        note = "Welch needs >= 2 seeds on each side, the image-level test one seed on each"
    return {"n_a": na, "n_b": nb, "test": test, "diff": diff, "low": low, "high": high, "p": p,
            "significant": bool(p < ALPHA) if p == p else False, "note": note}


def comparisons(done: pd.DataFrame) -> pd.DataFrame:
    """Every comparison of every cell (see the module docstring), one row each."""
    rows = []
    if done.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    for (label, if_label), methods in _cells(done).items():
        ordered = sorted(methods, key=method_rank)
        base = {m: recipe_variant(methods[m]) for m in ordered}
        for i, ma in enumerate(ordered):
            for mb in ordered[i + 1:]:
                rows.append({"dataset_label": label, "if_label": if_label, "kind": "methods",
                             "a_method": ma, "a_variant": base[ma], "b_method": mb, "b_variant": base[mb],
                             **compare_runs(methods[ma][base[ma]], methods[mb][base[mb]])})
        for m in ordered:
            for variant, runs in methods[m].items():
                if variant != base[m]:
                    rows.append({"dataset_label": label, "if_label": if_label, "kind": "variant vs recipe",
                                 "a_method": m, "a_variant": variant, "b_method": m, "b_variant": base[m],
                                 **compare_runs(runs, methods[m][base[m]])})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


# ----------------------------------------------------------------------------- sensitivity

def _key(value: Any) -> str:
    """A hashable, order-stable form of a config value (lists and dicts included)."""
    return json.dumps(value, sort_keys=True, default=str)


def swept_keys(configs: dict[str, dict[str, Any]]) -> list[str]:
    """Config keys whose value differs between the variants' configs (`configs`: variant -> a run's
    config), identity and execution keys excluded."""
    if len(configs) < 2:
        return []
    skip = set(IDENTITY_KEYS) | set(EXECUTION_KEYS)
    keys = sorted(set().union(*configs.values()) - skip)
    return [k for k in keys if len({_key(c.get(k)) for c in configs.values()}) > 1]


def _sort_value(value: Any) -> tuple:
    if isinstance(value, (bool, np.bool_)):
        return (1, float(value), "")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return (0, float(value), "")
    return (2, 0.0, _key(value))


def sensitivity(done: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, method, swept key, series, value); see the module docstring."""
    rows = []
    if done.empty:
        return pd.DataFrame(columns=SENSITIVITY_COLUMNS)
    for (label, if_label), methods in _cells(done).items():
        for method in sorted(methods, key=method_rank):
            variants = methods[method]
            configs = {v: runs["config"].iloc[0] or {} for v, runs in variants.items()}
            keys = swept_keys(configs)
            base = recipe_variant(variants)
            for key in keys:
                others = [k for k in keys if k != key]
                series: dict[str, list[str]] = {}
                for variant, config in configs.items():
                    name = ", ".join(f"{k}={config.get(k)}" for k in others)
                    series.setdefault(name, []).append(variant)
                for name, members in series.items():
                    if len({_key(configs[v].get(key)) for v in members}) < 2:
                        continue
                    for variant in sorted(members, key=lambda v: _sort_value(configs[v].get(key))):
                        runs = variants[variant]
                        top1 = mean_ci(runs["best_top1"], LEVEL)
                        few = mean_ci(runs["best_few"].dropna(), LEVEL)
                        rows.append({"dataset_label": label, "if_label": if_label, "method": method, "key": key,
                                     "value": configs[variant].get(key), "others": name, "variant": variant,
                                     "recipe": variant == base, "n": len(runs),
                                     "top1_mean": top1[0], "top1_low": top1[1], "top1_high": top1[2],
                                     "few_mean": few[0], "few_low": few[1], "few_high": few[2]})
    return pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)
