"""Figures of the analyses beyond top-1 (docs/analyses.md), drawn like `plots.py`'s (same method
colours, PNG bytes, Agg backend):

- shift: accuracy against the test distribution, forward IF 50 ... uniform ... backward IF 50,
  one line per method (mean over seeds, bars ±1 std), per cell;
- cost: best top-1 against training time, one point per method, bars ±1 std over seeds, per cell;
- weight norms: classifier weight norm per class against training count (log), per cell;
- confusion: the row-normalised best-epoch confusion matrix of one run, classes by count.

Each returns None where nothing can be drawn (old folders without the records), and the report
says n/a instead.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.reporting.diagnostics import weight_norms  # noqa: E402
from benchmarks.reporting.plots import Plot, _style, _to_png, _variant_runs, line_styles, plot_key  # noqa: E402,F401
from benchmarks.reporting.shift import CELL_KEYS, FAMILY, family_label  # noqa: E402
from benchmarks.reporting.tables import cell_title  # noqa: E402


def _same_series(frame: pd.DataFrame, row) -> pd.DataFrame:
    return frame[np.logical_and.reduce([frame[k] == getattr(row, k) for k in CELL_KEYS])]


def shift_plot(cell: pd.DataFrame, summary: pd.DataFrame, styles: dict) -> Plot | None:
    """`cell`: the report summary rows of one dataset x IF; `summary`: `shift.shift_summary`;
    `styles`: the cell's `plots.line_styles` (legend label and colour per line)."""
    first = cell.iloc[0]
    fig, ax = plt.subplots(figsize=(8, 4))
    positions = {d: i for i, d in enumerate(FAMILY)}
    drawn = 0
    for row in cell.itertuples():
        part = _same_series(summary, row)
        if part.empty:
            continue
        x = [positions[(d, r)] for d, r in zip(part["distribution"], part["test_imb_factor"])]
        ax.errorbar(x, part["top1_mean"], yerr=np.nan_to_num(part["top1_std"].to_numpy(dtype=float)),
                    marker="o", markersize=3, capsize=2, linewidth=1, linestyle=_style(row.variant),
                    color=styles[(row.method, row.variant)][1], label=styles[(row.method, row.variant)][0])
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xticks(range(len(FAMILY)), [family_label(*d) for d in FAMILY], rotation=30, fontsize=8)
    ax.axvline(positions[("uniform", 1.0)], color="grey", linewidth=0.6, linestyle="--")
    ax.set_xlabel("test label distribution (forward: head classes frequent; backward: tail classes frequent)")
    ax.set_ylabel("expected top-1 (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    title = cell_title(first.dataset_label, first.if_label)
    ax.set_title(f"Test-distribution shift, best epoch — {title}", fontsize=9)
    return Plot(plot_key("shift", first.dataset_label, first.if_label),
                f"Accuracy under shifted test distributions, {title}", _to_png(fig))


def cost_plot(cell: pd.DataFrame, styles: dict) -> Plot | None:
    """Best top-1 against training time; None when no run of the cell recorded its time."""
    first = cell.iloc[0]
    if "train_seconds_mean" not in cell or cell["train_seconds_mean"].isna().all():
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in cell.itertuples():
        if pd.isna(row.train_seconds_mean) or pd.isna(row.best_top1_mean):
            continue
        ax.errorbar(row.train_seconds_mean, row.best_top1_mean,
                    xerr=np.nan_to_num(row.train_seconds_std), yerr=np.nan_to_num(row.best_top1_std),
                    marker="o" if not row.variant else "s", markersize=5, capsize=3,
                    color=styles[(row.method, row.variant)][1], label=styles[(row.method, row.variant)][0])
    ax.set_xlabel("training wall time (s, mean over seeds)")
    ax.set_ylabel("best top-1 (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    title = cell_title(first.dataset_label, first.if_label)
    ax.set_title(f"Accuracy against training cost (bars ±1 std over seeds) — {title}", fontsize=9)
    return Plot(plot_key("cost", first.dataset_label, first.if_label),
                f"Best top-1 against training time, {title}", _to_png(fig))


def weight_norm_plot(cell: pd.DataFrame, done: pd.DataFrame, styles: dict) -> Plot | None:
    """Per-class classifier weight norm (mean over seeds) against training count; None when no
    run of the cell recorded `classifier_weight_norms`."""
    first = cell.iloc[0]
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = 0
    for row in cell.itertuples():
        found = [weight_norms(f) for f in _variant_runs(done, row)["folder"]]
        found = [f for f in found if f is not None]
        if not found or len({len(c) for c, _ in found}) != 1:
            continue
        counts = found[0][0]
        norms = np.mean([n for _, n in found], axis=0)
        order = np.argsort(counts, kind="stable")
        ax.plot(counts[order], norms[order], marker="o", markersize=3, linewidth=1,
                linestyle=_style(row.variant), color=styles[(row.method, row.variant)][1],
                label=styles[(row.method, row.variant)][0])
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log)")
    ax.set_ylabel("classifier weight norm (L2)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    title = cell_title(first.dataset_label, first.if_label)
    ax.set_title(f"Classifier weight norms, end of training — {title}", fontsize=9)
    return Plot(plot_key("weight_norms", first.dataset_label, first.if_label),
                f"Classifier weight norm per class against training count, {title}", _to_png(fig))


def confusion_plot(run, matrix: np.ndarray, order: np.ndarray) -> Plot:
    """One run's row-normalised confusion matrix (`diagnostics.run_confusion`)."""
    size = min(10.0, 3.0 + 0.08 * len(order))
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0, vmax=1)
    if len(order) <= 20:
        ax.set_xticks(range(len(order)), [str(c) for c in order], fontsize=7)
        ax.set_yticks(range(len(order)), [str(c) for c in order], fontsize=7)
    ax.set_xlabel("predicted class (by training count, most first)")
    ax.set_ylabel("true class (by training count, most first)")
    fig.colorbar(image, ax=ax, label="fraction of the true class's test images")
    variant = f" [{run.variant}]" if run.variant else ""
    name = f"{run.method}{variant} seed {run.seed}"
    title = cell_title(run.dataset_label, run.if_label)
    ax.set_title(f"Confusion, best epoch, rows normalised — {name}, {title}", fontsize=8)
    # the method folder (`ce`, `ce@<variant>`) and the seed name the run uniquely within its cell
    kind = f"confusion_{Path(run.folder).parent.name}_seed{run.seed}"
    return Plot(plot_key(kind, run.dataset_label, run.if_label), f"Confusion matrix, {name}, {title}", _to_png(fig))
