"""Seed aggregation and verdicts: does a method reproduce its published number?

Cells. Finished runs (state `done`) are grouped by (dataset label, IF, method, recipe variant). The
variant is the run's list of recipe deviations, so seeds trained with different settings are never
averaged together: each variant is its own row, labelled by its deviations (a variant named with
`--name` is labelled "NAME (deviations)", so two named variants are never merged either). Runs in any other state
are never aggregated; the report lists them separately.

Seed statistics. Over the n seeds of a cell: the mean of the best-epoch top-1 (the figure the
releases report: the best test-set epoch of a run), its sample standard deviation (ddof=1, the
unbiased estimate across seeds), and the same for the last-epoch top-1; many / medium / few are the
means of the best-epoch group accuracies (an empty group, null in metrics.json, stays n/a). With
n = 1 a sample std is undefined: it is NaN (an empty CSV field) and the tables show the mean with
"(n=1)" and no "±". Beside them: the 95 % Student-t interval of the best top-1 (`stats.mean_ci`;
none with n = 1), clipped to [0, 100] (`stats.clip_interval`: with two scattered seeds the t
interval reaches far outside the range an accuracy can take), the mean best-epoch top-5 (NaN for
runs written before it was recorded; the report shows it for datasets of >= 100 classes) and the mean expected calibration error of the best and last epochs (NaN for
runs written before ECE was recorded).

Against the paper number, besides the verdict: whether the paper's top-1 lies inside that 95 %
interval (of the compared epoch's top-1, below; `paper_in_ci`; unknown with n = 1), and how many seeds would resolve a 1-point
difference from it at the observed seed std (`seeds_for_1pt`: a two-sided one-sample t-test,
alpha 0.05, power 0.8, `stats.seeds_needed`). The verdict's tolerance and the interval answer
different questions: the tolerance is how close counts as reproduced, the interval how well the
seeds pin the mean down; a cell can be "reproduced" with the paper outside a narrow interval, or
"below" with the paper inside a wide one.

Verdicts, in this order:
1. "recipe differs" when the cell's runs deviate from their method's paper recipe (the deviations
   recorded in metrics.json, or recomputed with `recipe_deviations` when absent), or are tiny-subset
   runs (dataset label ending in "-tiny", or train/test_cap_per_class > 0), or the published
   number's own recipe (its epochs or backbone) differs from the run's config, e.g. PaCo's paper
   trains 400 epochs where a run trained 200. Such a run does not test the published claim, so it
   gets no pass/fail verdict, whether or not a paper number exists. The differing keys are listed
   in the `differences` column as "key run≠paper" (e.g. "epochs 6≠200").
   A recipe that no release gives (marked `reconstructed` in the method's YAML, `recipe_status:`)
   keeps its verdict, but the cell is labelled "reconstructed recipe" (`recipe_label`): the
   comparison tests our reading of the paper, not a released configuration.
2. "no paper number" when the paper-numbers file has no entry for (method, dataset, IF): the
   figure was never published, and no substitute is invented.
3. Otherwise diff = mean top-1 - paper top-1 (in points), like with like: the run's best-epoch
   top-1 when the paper entry reports the best epoch, its last-epoch top-1 when the entry reports
   the final epoch (`reported_epoch` in paper_numbers.yaml; `compared_epoch` says which), rounded to 1e-6 so that decimal
   figures such as 85.22 - 1.0 compare as written: |diff| <= tolerance -> "reproduced";
   diff < -tolerance -> "below"; diff > tolerance -> "above". The default tolerance is 1.0 point.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from benchmarks.reporting.paper_numbers import PaperNumber, lookup
from benchmarks.reporting.load import GROUPS
from benchmarks.reporting.recipe import format_deviations, recipe_label, run_deviations
from benchmarks.reporting.stats import clip_interval, mean_ci, seeds_needed
from benchmarks.run.variants import is_named, variant_name

REPRODUCED, BELOW, ABOVE = "reproduced", "below", "above"
NO_PAPER, RECIPE_DIFFERS = "no paper number", "recipe differs"
VERDICTS = (REPRODUCED, BELOW, ABOVE, NO_PAPER, RECIPE_DIFFERS)
DEFAULT_TOLERANCE = 1.0

# Paper order of the methods; others follow alphabetically.
METHOD_ORDER = ("bccl", "bcl", "paco", "ce")
CELL_KEYS = ["dataset_label", "if_label", "method", "variant"]


def method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def paper_mismatch(entry: PaperNumber | None, epochs: Any, backbone: Any) -> dict[str, dict[str, Any]]:
    """Where the published number's recipe (epochs, backbone) differs from the run's."""
    if entry is None:
        return {}
    return {key: {"paper": paper, "run": run}
            for key, paper, run in (("epochs", entry.epochs, epochs), ("backbone", entry.backbone, backbone))
            if run is not None and run == run and paper != run}


def format_views(views) -> str:
    """A paper entry's views for the report ("" when the entry does not record them)."""
    if views is None:
        return ""
    return views if isinstance(views, str) else ", ".join(views)


def compared_epoch(entry: PaperNumber | None) -> str:
    """`best` or `last`: the run's epoch whose top-1 is set against the paper entry (the epoch the
    entry itself reports; `best` when there is no entry)."""
    return entry.reported_epoch if entry is not None else "best"


def verdict(diff: float, has_paper: bool, differs: bool, tolerance: float) -> str:
    """The rules of the module docstring, on one cell."""
    if differs:
        return RECIPE_DIFFERS
    if not has_paper:
        return NO_PAPER
    diff = round(diff, 6)
    if abs(diff) <= tolerance:
        return REPRODUCED
    return BELOW if diff < 0 else ABOVE


def _variant_text(config: dict[str, Any], deviations: dict[str, Any]) -> str:
    """"lr 0.2≠0.15" (the deviations), "NAME (lr 0.2≠0.15)" for a --name variant, "" on the recipe."""
    text = "; ".join(format_deviations(deviations))
    if not is_named(config):
        return text
    return f"{variant_name(config)} ({text})" if text else variant_name(config)


def label_variants(runs: pd.DataFrame) -> pd.DataFrame:
    """Adds each run's deviations (dict), their label (`variant`, "" on the paper recipe) and a
    note saying why they could not be computed, if so. The plots group runs by the same label."""
    runs = runs.copy()
    found = [run_deviations(c, r) for c, r in zip(runs["config"], runs["recorded_deviations"])]
    runs["deviations"] = [d for d, _ in found]
    runs["deviation_note"] = [n for _, n in found]
    runs["variant"] = [_variant_text(c, d) for c, (d, _) in zip(runs["config"], found)]
    return runs


def aggregate(runs: pd.DataFrame, numbers: list[PaperNumber], tolerance: float = DEFAULT_TOLERANCE) -> pd.DataFrame:
    """One row per cell (see the module docstring) with seed statistics, the paper number and the
    verdict, in `report_order`."""
    if runs.empty or not (runs["state"] == "done").any():
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    done = runs[runs["state"] == "done"]
    if "variant" not in done:
        done = label_variants(done)
    if "shift" not in done:  # the shift analysis' per-run mean top-1 over its test distributions
        done = done.assign(shift=np.nan)
    stats = done.groupby(CELL_KEYS, sort=False).agg(
        n=("seed", "size"),
        seeds=("seed", lambda s: " ".join(str(x) for x in sorted(s))),
        best_top1_mean=("best_top1", "mean"),
        best_top1_std=("best_top1", lambda s: s.std(ddof=1)),
        last_top1_mean=("last_top1", "mean"),
        last_top1_std=("last_top1", lambda s: s.std(ddof=1)),
        best_top1_ci_low=("best_top1", lambda s: clip_interval(*mean_ci(s)[1:])[0]),
        best_top1_ci_high=("best_top1", lambda s: clip_interval(*mean_ci(s)[1:])[1]),
        best_top5_mean=("best_top5", "mean"),
        num_classes=("num_classes", "max"),
        train_seconds_mean=("train_seconds", "mean"),
        shift_mean=("shift", "mean"),
        last_top1_ci_low=("last_top1", lambda s: clip_interval(*mean_ci(s)[1:])[0]),
        last_top1_ci_high=("last_top1", lambda s: clip_interval(*mean_ci(s)[1:])[1]),
        best_ece_mean=("best_ece", "mean"),
        last_ece_mean=("last_ece", "mean"),
        best_epoch_mean=("best_epoch", "mean"),
        **{f"{g}_mean": (f"best_{g}", "mean") for g in GROUPS},
        dataset=("dataset", "first"),
        imb_factor=("imb_factor", "first"),
        epochs=("epochs", "first"),
        backbone=("backbone", "first"),
        views=("views", "first"),
        selected_on=("selected_on", "first"),
        best_on_test_mean=("best_on_test_top1", "mean"),
        precision=("precision", lambda s: "/".join(sorted({str(x) for x in s if x}))),
        tiny=("tiny", "any"),
        deviations=("deviations", "first"),
        deviation_note=("deviation_note", "first"),
    ).reset_index()

    rows = []
    for cell in stats.to_dict("records"):
        entry = lookup(numbers, cell["method"], cell["dataset"], cell["imb_factor"], cell["backbone"],
                       cell.get("views"))
        mismatch = {k: v for k, v in paper_mismatch(entry, cell["epochs"], cell["backbone"]).items()
                    if cell["deviations"].get(k, {}).get("paper") != v["paper"]}
        differences = format_deviations(cell["deviations"]) + format_deviations(mismatch, " (published recipe)")
        if cell["tiny"] and not differences:
            differences = ["tiny subset"]
        compared = compared_epoch(entry)
        diff = cell[f"{compared}_top1_mean"] - entry.top1 if entry else np.nan
        rows.append({
            **cell,
            "paper_top1": entry.top1 if entry else np.nan,
            **{f"paper_{g}": (getattr(entry, g) if entry and getattr(entry, g) is not None else np.nan)
               for g in GROUPS},
            "paper_epochs": entry.epochs if entry else np.nan,
            "paper_backbone": entry.backbone if entry else "",
            "paper_views": format_views(entry.views) if entry else "",
            "paper_source": entry.source if entry else "",
            "paper_status": entry.status if entry else "",
            "compared_epoch": compared if entry else "",
            "diff": diff,
            "paper_in_ci": (pd.NA if entry is None or np.isnan(cell[f"{compared}_top1_ci_low"])
                            else bool(cell[f"{compared}_top1_ci_low"] <= entry.top1 <= cell[f"{compared}_top1_ci_high"])),
            "seeds_for_1pt": seeds_needed(cell["best_top1_std"]),
            "verdict": verdict(diff, entry is not None, bool(differences) or bool(cell["tiny"]), tolerance),
            "differences": "; ".join(differences),
            "recipe_label": recipe_label(cell["method"], cell["dataset"]),
            "tolerance": tolerance,
        })
    summary = pd.DataFrame(rows)
    summary["paper_epochs"] = summary["paper_epochs"].astype("Int64")  # an integer, or empty
    summary["paper_in_ci"] = summary["paper_in_ci"].astype("boolean")  # True / False / empty
    return report_order(summary, "variant")[SUMMARY_COLUMNS]


def report_order(frame: pd.DataFrame, last: str) -> pd.DataFrame:
    """The report's reading order: real datasets before their tiny-subset smoke runs, IF
    descending (as the papers' tables), methods in paper order, then `last` (seed or variant)."""
    ranked = frame.assign(_rank=frame["method"].map(method_rank))
    ranked = ranked.sort_values(["tiny", "dataset", "dataset_label", "imb_factor", "_rank", last],
                                ascending=[True, True, True, False, True, True], kind="stable")
    return ranked.drop(columns="_rank").reset_index(drop=True)


SUMMARY_COLUMNS = [
    "dataset_label", "dataset", "imb_factor", "if_label", "method", "n", "seeds",
    "best_top1_mean", "best_top1_std", "best_top1_ci_low", "best_top1_ci_high", "last_top1_mean",
    "last_top1_std", "best_top5_mean", "num_classes", "best_epoch_mean", *[f"{g}_mean" for g in GROUPS], "best_ece_mean", "last_ece_mean",
    "train_seconds_mean", "shift_mean", "paper_top1", *[f"paper_{g}" for g in GROUPS], "paper_source", "paper_status",
    "compared_epoch", "diff", "paper_in_ci", "seeds_for_1pt", "verdict", "tolerance", "epochs", "paper_epochs", "backbone", "paper_backbone",
    "paper_views", "precision", "selected_on", "best_on_test_mean",
    "tiny", "differences", "recipe_label", "deviation_note", "variant",
]
