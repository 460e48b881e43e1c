"""Within a cell: methods against each other, variants against their recipe, swept keys.

Comparisons (`comparisons`). In each dataset x IF cell, every pair of methods (each on its
recipe variant, below) and every other variant of a method against that method's recipe variant:
the difference of best-epoch top-1 (a − b, in points), its 95 % interval and a two-sided p-value.
- Both sides with >= 2 seeds: Welch over the seeds' top-1 (`stats.welch`).
- One seed each: the runs are paired image by image (their predictions.npz, which must hold the
  same test labels in the same order): paired bootstrap interval over images
  (`stats.paired_bootstrap`) and the exact McNemar p-value (`stats.mcnemar`).
- Both sides with >= 2 seeds and >= 2 seeds in common: besides the Welch row, a second row with
  the seed-matched paired test (`stats.seed_matched`): runs paired by seed, each pair image by
  image; mean over seed pairs of the accuracy difference, a bootstrap interval stratified by seed
  (images resampled within each pair) and the exact McNemar p on the discordant images pooled
  over the pairs. Seeds that only one side has are left out (n_a / n_b count the pairs). No row
  when no run of either side has a predictions.npz (runs written before predictions were kept).
- Otherwise (one seed against several, or runs without a usable predictions.npz) the difference is
  given and the interval and p-value are n/a, with why.
Every predictions.npz is checked before a test uses it (`predictions.check_fields`, against the
run's class count, and its best-epoch top-1 and epoch against metrics.json): a file that fails
gives a note on that run's comparisons (which run, what is wrong), never a test on its data.
Intervals of a difference are clipped to [-100, 100] (`stats.clip_interval`).

Multiplicity. A family is the rows of one cell, one kind ("methods" or "variant vs recipe") and
one test (Welch, image-level one seed each, seed-matched): `p_holm` is Holm's adjusted p within
it (`stats.holm`), the raw `p` is kept beside it. A comparison is significant when p_holm < ALPHA
(0.05). The image-level tests speak about this test set and these seeds, not about seed-to-seed
scatter.

Wins / ties / losses (`wins_ties_losses`): per cell, each method's recipe variant against every
other method's, on the seed-level test of the pair (Welch; with one seed each, the image-level
test): a win where a − b > 0 with p_holm < ALPHA, a loss where < 0, a tie otherwise (including
an untestable pair).

The recipe variant of a method in a cell is its variant with the fewest recipe deviations (the
paper recipe itself when it was run; in the smoke grid, the grid's shortened recipe).

Sensitivity (`sensitivity`). A swept key of a method in a cell is a config key whose value differs
between the method's variants there (identity and execution keys excluded). For each swept key,
the variants are grouped by the values of the other swept keys (a one-at-a-time sweep gives one
group, through the recipe variant; a cartesian one, one group per combination); each group with
at least two values of the key is a series: best top-1 and few-shot accuracy per value, mean over
seeds with the 95 % Student-t interval (`stats.mean_ci`; none with one seed) clipped to [0, 100];
`best` marks the value of the highest mean best top-1 in its series.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import LTBenchError
from benchmarks.config import EXECUTION_KEYS, IDENTITY_KEYS
from benchmarks.store.predictions import PREDICTIONS_FILE, paired_correctness, read_predictions
from benchmarks.reporting.aggregate import CELL_KEYS, method_rank
from benchmarks.reporting.stats import clip_interval, holm, mcnemar, mean_ci, paired_bootstrap, seed_matched, welch

ALPHA = 0.05
LEVEL = 0.95
WELCH = "Welch over seeds"
PAIRED = "paired bootstrap over images, McNemar"
SEED_MATCHED = "seed-matched: bootstrap over images within seed pairs, McNemar pooled over seeds"
TOP1_TOLERANCE = 0.01  # points: a kept best epoch must score the top-1 metrics.json records

COMPARISON_COLUMNS = [
    "dataset_label", "if_label", "kind", "a_method", "a_variant", "b_method", "b_variant", "n_a", "n_b",
    "test", "diff", "low", "high", "p", "p_holm", "significant", "note",
]
WTL_COLUMNS = ["dataset_label", "if_label", "method", "variant", "wins", "ties", "losses", "untested"]
SENSITIVITY_COLUMNS = [
    "dataset_label", "if_label", "method", "key", "value", "others", "variant", "recipe", "n",
    "top1_mean", "top1_low", "top1_high", "few_mean", "few_low", "few_high", "best",
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


def run_predictions(run) -> tuple[Any, str]:
    """(the run's checked predictions, "") or (None, why they cannot be used). `run`: a row of the
    runs frame. Beyond the file's own fields (`check_fields`), its best epoch must be the one
    metrics.json records and score the same top-1 (within TOP1_TOLERANCE)."""
    folder = run["folder"]
    num_classes = run.get("num_classes")
    num_classes = int(num_classes) if num_classes is not None and num_classes == num_classes else None
    try:
        kept = read_predictions(folder, num_classes)
    except LTBenchError as exc:
        return None, str(exc)
    if kept is None:
        return None, f"no predictions.npz in {folder} (missing: written before predictions were kept, or deleted)"
    if "best" not in kept.epochs:
        return None, f"{folder}/predictions.npz has no best-epoch predictions"
    best = kept.epochs["best"]
    top1 = 100.0 * float(kept.correct("best").mean()) if len(kept.labels) else float("nan")
    recorded_epoch = run.get("best_epoch")
    if recorded_epoch is not None and recorded_epoch == recorded_epoch and int(recorded_epoch) != best.epoch:
        return None, (f"{folder}/predictions.npz: best epoch {best.epoch} is not metrics.json's "
                      f"{int(recorded_epoch)}; not used")
    if not abs(top1 - float(run["best_top1"])) <= TOP1_TOLERANCE:
        return None, (f"{folder}/predictions.npz: its best-epoch top-1 {top1:.2f} contradicts metrics.json's "
                      f"{float(run['best_top1']):.2f}; not used")
    return kept, ""


def _paired(a: pd.DataFrame, b: pd.DataFrame) -> tuple[float, float, float, float, str]:
    """Image-level comparison of two one-seed runs: (diff, low, high, p, note)."""
    pairs, note = _correctness_pairs([(a.iloc[0], b.iloc[0])])
    if note:
        return np.nan, np.nan, np.nan, np.nan, note
    diff, low, high = paired_bootstrap(*pairs[0], level=LEVEL)
    return diff, *clip_interval(low, high, -100.0, 100.0), mcnemar(*pairs[0]), ""


def _correctness_pairs(runs) -> tuple[list, str]:
    """Per-image correctness of each (run a, run b) pair, or ([], the notes of unusable files)."""
    pairs, notes = [], []
    for ra, rb in runs:
        pa, note_a = run_predictions(ra)
        pb, note_b = run_predictions(rb)
        notes += [n for n in (note_a, note_b) if n and n not in notes]
        if pa is None or pb is None:
            continue
        try:
            pairs.append(paired_correctness(pa, pb, "best"))
        except LTBenchError as exc:
            notes.append(str(exc))
    return ([], "; ".join(notes)) if notes else (pairs, "")


def _seed_matched(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, Any] | None:
    """The seed-matched row of two groups of runs (>= 2 shared seeds), or None."""
    shared = sorted(set(a["seed"]) & set(b["seed"]))
    if len(shared) < 2:
        return None
    if not any((Path(f) / PREDICTIONS_FILE).exists() for f in list(a["folder"]) + list(b["folder"])):
        return None  # no run of either side kept predictions (older runs): Welch is the comparison
    by_seed = [(a[a["seed"] == s].iloc[0], b[b["seed"] == s].iloc[0]) for s in shared]
    pairs, note = _correctness_pairs(by_seed)
    row = {"n_a": len(shared), "n_b": len(shared), "test": SEED_MATCHED,
           "diff": float(np.mean([ra["best_top1"] - rb["best_top1"] for ra, rb in by_seed])),
           "low": np.nan, "high": np.nan, "p": np.nan, "note": note}
    if not note:
        diff, low, high, p = seed_matched(pairs, level=LEVEL)
        row.update(diff=diff, p=p)
        row["low"], row["high"] = clip_interval(low, high, -100.0, 100.0)
    return row


def compare_runs(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, Any]:
    """The comparison of two groups of runs (rows of the runs frame) on best top-1, a − b."""
    na, nb = len(a), len(b)
    diff = float(a["best_top1"].mean() - b["best_top1"].mean())
    low = high = p = np.nan
    test, note = "", ""
    if na >= 2 and nb >= 2:
        diff, low, high, p = welch(a["best_top1"], b["best_top1"], level=LEVEL)
        low, high = clip_interval(low, high, -100.0, 100.0)
        test = WELCH
    elif na == 1 and nb == 1:
        pdiff, plow, phigh, pp, note = _paired(a, b)
        test = PAIRED
        if not note:
            diff, low, high, p = pdiff, plow, phigh, pp
    else:
        note = "Welch needs >= 2 seeds on each side, the image-level test one seed on each"
    return {"n_a": na, "n_b": nb, "test": test, "diff": diff, "low": low, "high": high, "p": p, "note": note}


def _both(a: pd.DataFrame, b: pd.DataFrame) -> list[dict[str, Any]]:
    """The seed-level row of a pair and, where seeds match, its seed-matched image-level row."""
    rows = [compare_runs(a, b)]
    if len(a) >= 2 and len(b) >= 2:
        matched = _seed_matched(a, b)
        if matched is not None:
            rows.append(matched)
    return rows


def comparisons(done: pd.DataFrame) -> pd.DataFrame:
    """Every comparison of every cell (see the module docstring), one row each, with p_holm."""
    rows = []
    if done.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    for (label, if_label), methods in _cells(done).items():
        ordered = sorted(methods, key=method_rank)
        base = {m: recipe_variant(methods[m]) for m in ordered}
        for i, ma in enumerate(ordered):
            for mb in ordered[i + 1:]:
                for result in _both(methods[ma][base[ma]], methods[mb][base[mb]]):
                    rows.append({"dataset_label": label, "if_label": if_label, "kind": "methods",
                                 "a_method": ma, "a_variant": base[ma], "b_method": mb, "b_variant": base[mb],
                                 **result})
        for m in ordered:
            for variant, runs in methods[m].items():
                if variant != base[m]:
                    for result in _both(runs, methods[m][base[m]]):
                        rows.append({"dataset_label": label, "if_label": if_label, "kind": "variant vs recipe",
                                     "a_method": m, "a_variant": variant, "b_method": m, "b_variant": base[m],
                                     **result})
    frame = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c not in ("p_holm", "significant")])
    return with_holm(frame)


def with_holm(frame: pd.DataFrame) -> pd.DataFrame:
    """`p_holm` within each family (cell, kind, test) and `significant` (p_holm < ALPHA)."""
    frame = frame.copy()
    frame["p_holm"] = np.nan
    for _, family in frame.groupby(["dataset_label", "if_label", "kind", "test"], sort=False):
        frame.loc[family.index, "p_holm"] = holm(family["p"].to_numpy(dtype=float))
    frame["significant"] = frame["p_holm"].lt(ALPHA)
    return frame[COMPARISON_COLUMNS]


def wins_ties_losses(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per cell and method (its recipe variant): wins, ties and losses against every other method
    at the Holm-adjusted level (module docstring); `untested` counts the ties without a p-value."""
    rows: dict[tuple, dict[str, Any]] = {}
    primary = comparisons[(comparisons["kind"] == "methods") & (comparisons["test"] != SEED_MATCHED)]
    for r in primary.itertuples():
        for side, other, sign in ((r.a_method, r.a_variant, 1), (r.b_method, r.b_variant, -1)):
            key = (r.dataset_label, r.if_label, side)
            row = rows.setdefault(key, {"dataset_label": r.dataset_label, "if_label": r.if_label, "method": side,
                                        "variant": other, "wins": 0, "ties": 0, "losses": 0, "untested": 0})
            if r.p_holm == r.p_holm and r.p_holm < ALPHA and r.diff != 0:
                row["wins" if sign * r.diff > 0 else "losses"] += 1
            else:
                row["ties"] += 1
                row["untested"] += int(r.p_holm != r.p_holm)
    return pd.DataFrame(list(rows.values()), columns=WTL_COLUMNS)


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


def _clipped(ci: tuple[float, float, float]) -> tuple[float, float, float]:
    return (ci[0], *clip_interval(ci[1], ci[2]))


def best_values(sensitivity: pd.DataFrame) -> pd.Series:
    """Per sensitivity row: is its mean best top-1 the highest of its series (cell, method, key,
    other swept keys)? Ties all count as best."""
    if sensitivity.empty:
        return pd.Series([], dtype=bool)
    top = sensitivity.groupby(["dataset_label", "if_label", "method", "key", "others"], sort=False)[
        "top1_mean"].transform("max")
    return sensitivity["top1_mean"].eq(top)


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
                        top1 = _clipped(mean_ci(runs["best_top1"], LEVEL))
                        few = _clipped(mean_ci(runs["best_few"].dropna(), LEVEL))
                        rows.append({"dataset_label": label, "if_label": if_label, "method": method, "key": key,
                                     "value": configs[variant].get(key), "others": name, "variant": variant,
                                     "recipe": variant == base, "n": len(runs),
                                     "top1_mean": top1[0], "top1_low": top1[1], "top1_high": top1[2],
                                     "few_mean": few[0], "few_low": few[1], "few_high": few[2]})
    frame = pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)
    frame["best"] = best_values(frame).astype(bool)
    return frame
