"""The report's figures, rendered to PNG bytes with matplotlib's Agg backend (no display needed).

- per-class accuracy against training count (log axis), one figure per dataset x IF: where a
  method gains or loses along the tail, which the top-1 average hides;
- training curves (test top-1 against epoch, mean ± std over seeds, the paper number dashed), one
  figure per dataset x IF: whether a run had converged, and best vs last;
- a heatmap of run − paper over the whole grid (methods x cells), the one-glance verdict;
- a reliability diagram per dataset x IF (accuracy against confidence in the 15 ECE bins, best
  epoch, seeds pooled, from predictions.npz): where a method is over- or under-confident;
- a sensitivity plot per swept key of a method in a cell (best top-1 and few-shot accuracy against
  the key's value, 95 % interval bars over seeds): how much a setting the paper fixed matters.

Figures are returned as bytes, not written: the PNG files and the HTML page's data URIs both come
from the same bytes. Line colours are distinct per method and variant within a cell and the
legends name what tells a method's variants apart (`line_styles`). The heatmap is omitted when no
cell has a paper number.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.calibration import calibration_bins, ece_from_confidences  # noqa: E402
from benchmarks.reporting.aggregate import RECIPE_DIFFERS, method_rank  # noqa: E402
from benchmarks.reporting.recipe import plain  # noqa: E402
from benchmarks.reporting.load import load_history, load_per_class  # noqa: E402
from benchmarks.reporting.tables import cell_title  # noqa: E402


@dataclass
class Plot:
    key: str  # file stem, e.g. per_class_cifar10_if100
    caption: str
    png: bytes


def plot_key(kind: str, dataset_label: str, if_label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{kind}_{dataset_label}_if{if_label}")


def _style(variant: str) -> str:
    """Runs on the paper recipe solid, deviating variants dotted."""
    return "-" if not variant else ":"


def _legend_label(method: str, variant: str) -> str:
    label = method if not variant else f"{method} [{variant}]"
    return label if len(label) <= 48 else label[:45] + "..."


def _deviation_value(deviations: dict, key: str):
    d = deviations.get(key)
    return "recipe" if d is None else plain(d.get("run"))


def line_styles(cell: pd.DataFrame, done: pd.DataFrame) -> dict[tuple[str, str], tuple[str, tuple]]:
    """(method, variant) -> (legend label, colour) for the lines of one cell's figures.

    A method with one variant in the cell is labelled by its name. Variants of one method are
    labelled by what tells them apart: the deviation keys whose values differ between them
    ("bccl eta=0.2", "bccl eta=recipe"), plus a --name when they have one; never a cut-off
    label. Colours are distinct per line within the cell (tab10, then tab20 past ten lines), the
    same in every figure of the cell, since all of them draw the cell's rows in the same order."""
    lines = [(r.method, r.variant) for r in cell.itertuples()]
    deviations = {}
    for method, variant in lines:
        runs = done[(done["method"] == method) & (done["variant"] == variant)
                    & (done["dataset_label"] == cell["dataset_label"].iloc[0])
                    & (done["if_label"] == cell["if_label"].iloc[0])]
        first = runs["deviations"].iloc[0] if len(runs) and "deviations" in runs else {}
        deviations[(method, variant)] = first if isinstance(first, dict) else {}
    palette = plt.get_cmap("tab10" if len(lines) <= 10 else "tab20")
    styles = {}
    for i, (method, variant) in enumerate(lines):
        siblings = [v for m, v in lines if m == method]
        if len(siblings) == 1:
            label = _legend_label(method, variant)
        else:
            keys = sorted(set().union(*(deviations[(method, v)] for v in siblings)))
            differing = [k for k in keys
                         if len({repr(_deviation_value(deviations[(method, v)], k)) for v in siblings}) > 1]
            parts = [f"{k}={_deviation_value(deviations[(method, variant)], k)}" for k in differing]
            name = variant.split(" (")[0] if variant and "≠" not in variant.split(" (")[0] else ""
            label = f"{method} " + ", ".join(([name] if name else []) + (parts or ["recipe"]))
        styles[(method, variant)] = (label, palette(i % palette.N))
    return styles


def _to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _variant_runs(done: pd.DataFrame, row) -> pd.DataFrame:
    return done[(done["dataset_label"] == row.dataset_label) & (done["if_label"] == row.if_label)
                & (done["method"] == row.method) & (done["variant"] == row.variant)]


def per_class_plot(cell: pd.DataFrame, done: pd.DataFrame, per_class_of=load_per_class) -> Plot:
    """Best-epoch per-class accuracy (mean over seeds) against the class's training count."""
    first = cell.iloc[0]
    styles = line_styles(cell, done)
    fig, ax = plt.subplots(figsize=(7, 4))
    for row in cell.itertuples():
        frames = [per_class_of(f) for f in _variant_runs(done, row)["folder"]]
        frames = [f for f in frames if len(f)]
        if not frames:
            continue
        per_class = pd.concat(frames).groupby("class").agg(train_count=("train_count", "first"),
                                                           accuracy=("accuracy", "mean"))
        per_class = per_class.sort_values("train_count")
        label, colour = styles[(row.method, row.variant)]
        ax.plot(per_class["train_count"], per_class["accuracy"], marker="o", markersize=3, linewidth=1,
                linestyle=_style(row.variant), color=colour, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log)")
    ax.set_ylabel("test accuracy of the class (%)")
    ax.set_ylim(-2, 102)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Per-class accuracy, best epoch — {cell_title(first.dataset_label, first.if_label)}")
    return Plot(plot_key("per_class", first.dataset_label, first.if_label),
                f"Per-class accuracy against training count, {cell_title(first.dataset_label, first.if_label)}",
                _to_png(fig))


def curves_plot(cell: pd.DataFrame, done: pd.DataFrame, history_of=load_history) -> Plot | None:
    """Test top-1 per epoch, mean over seeds with a ±1 std band; the paper number dashed. None
    when no run has a history (a kept summary without curves.csv). `history_of`: a run's history
    (its folder's history.csv, or a kept summary's curves.csv)."""
    first = cell.iloc[0]
    styles = line_styles(cell, done)
    drawn = 0
    fig, ax = plt.subplots(figsize=(7, 4))
    for row in cell.itertuples():
        histories = [history_of(f) for f in _variant_runs(done, row)["folder"]]
        histories = [h for h in histories if {"epoch", "top1"} <= set(h.columns) and len(h)]
        if not histories:
            continue
        drawn += 1
        curve = pd.concat(histories).groupby("epoch")["top1"].agg(["mean", "std"])
        label, colour = styles[(row.method, row.variant)]
        ax.plot(curve.index, curve["mean"], color=colour, linewidth=1.2, linestyle=_style(row.variant),
                label=label)
        if len(histories) > 1:
            ax.fill_between(curve.index, curve["mean"] - curve["std"], curve["mean"] + curve["std"],
                            color=colour, alpha=0.2, linewidth=0)
        if not np.isnan(row.paper_top1):
            ax.axhline(row.paper_top1, color=colour, linestyle="--", linewidth=0.8)
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch (0-based)")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Training curves (dashed: paper) — {cell_title(first.dataset_label, first.if_label)}")
    return Plot(plot_key("curves", first.dataset_label, first.if_label),
                f"Test top-1 against epoch, {cell_title(first.dataset_label, first.if_label)}", _to_png(fig))


def diff_heatmap(summary: pd.DataFrame, tolerance: float) -> Plot:
    """run − paper for every (method, cell); '*' marks a recipe that differs, '—' no paper number.

    Where a cell holds several recipe variants of a method, the one that follows the paper recipe
    is shown (it is the one a verdict is about)."""
    table = summary.assign(_differs=summary["verdict"] == RECIPE_DIFFERS,
                           cell=[cell_title(d, i) for d, i in zip(summary["dataset_label"], summary["if_label"])])
    cells = list(dict.fromkeys(table["cell"]))
    table = table.sort_values("_differs", kind="stable").drop_duplicates(["cell", "method"])
    methods = sorted(table["method"].unique(), key=method_rank)
    values = table.pivot(index="method", columns="cell", values="diff").reindex(index=methods, columns=cells)
    differs = table.pivot(index="method", columns="cell", values="_differs").reindex(index=methods, columns=cells)

    # Colour only what a verdict is about: cells whose recipe differs are grey like missing ones
    # (their number is still written). The scale saturates at 3x the tolerance, so the tolerance
    # band reads pale and anything clearly off reads saturated, whatever the outliers.
    shown = values.where(differs != True)  # noqa: E712  (object column: True / False / NaN)
    limit = 3 * tolerance if tolerance > 0 else 1.0
    fig, ax = plt.subplots(figsize=(1.3 * len(cells) + 2.5, 0.55 * len(methods) + 1.8))
    cmap = plt.get_cmap("RdBu").with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(shown.to_numpy(dtype=float)), cmap=cmap, vmin=-limit, vmax=limit,
                      aspect="auto")
    for i, method in enumerate(methods):
        for j, cell in enumerate(cells):
            value, star, coloured = values.loc[method, cell], differs.loc[method, cell], shown.loc[method, cell]
            if pd.isna(star):
                continue  # the method was not run in this cell
            text = ("—" if pd.isna(value) else f"{value:+.2f}") + ("*" if star else "")
            dark = not pd.isna(coloured) and abs(coloured) > 0.6 * limit
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(cells)), cells, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(methods)), methods)
    fig.colorbar(image, ax=ax, label="run − paper (top-1 points)", extend="both")
    ax.set_title(f"Best top-1 minus paper (tolerance ±{tolerance:g}; * recipe differs, grey; — no paper number)",
                 fontsize=9)
    return Plot("diff_heatmap", "Difference to the paper over the grid", _to_png(fig))


def pooled_best_predictions(runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """(confidences, correct) of the best epoch, pooled over the runs' predictions.npz; None when
    none of them has usable best-epoch predictions (written before they were kept, or failing
    `compare.run_predictions`' checks)."""
    from benchmarks.reporting.compare import run_predictions

    confidences, correct = [], []
    for _, run in runs.iterrows():
        kept, _ = run_predictions(run)  # checked as for the tests: a bad file is left out
        if kept is not None:
            confidences.append(kept.epochs["best"].confidences.astype(np.float64))
            correct.append(kept.correct("best"))
    if not confidences:
        return None
    return np.concatenate(confidences), np.concatenate(correct)


def reliability_plot(cell: pd.DataFrame, done: pd.DataFrame) -> Plot | None:
    """Accuracy against mean confidence per ECE bin, one line per method (and variant), the best
    epoch of every seed pooled; the diagonal is perfect calibration. None without predictions."""
    first = cell.iloc[0]
    styles = line_styles(cell, done)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    drawn = 0
    for row in cell.itertuples():
        pooled = pooled_best_predictions(_variant_runs(done, row))
        if pooled is None:
            continue
        bins = calibration_bins(*pooled)
        filled = bins["count"] > 0
        ece = ece_from_confidences(*pooled)
        ax.plot(bins["confidence"][filled], bins["accuracy"][filled], marker="o", markersize=3,
                linewidth=1, linestyle=_style(row.variant), color=styles[(row.method, row.variant)][1],
                label=f"{styles[(row.method, row.variant)][0]} (ECE {ece:.3f})")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (mean max softmax probability in the bin)")
    ax.set_ylabel("accuracy in the bin")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    title = cell_title(first.dataset_label, first.if_label)
    ax.set_title(f"Reliability, best epoch, 15 bins — {title}", fontsize=9)
    return Plot(plot_key("reliability", first.dataset_label, first.if_label),
                f"Reliability diagram (accuracy against confidence), {title}", _to_png(fig))


def sensitivity_plot(rows: pd.DataFrame) -> Plot:
    """Best top-1 and few-shot accuracy against one swept key's value (rows of
    `compare.sensitivity` for one cell, method and key), 95 % interval bars, one line per series."""
    first = rows.iloc[0]
    values = list(dict.fromkeys(_value_label(v) for v in rows["value"]))
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                  for v in rows["value"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (metric, name) in zip(axes, (("top1", "best top-1 (%)"), ("few", "few-shot, best epoch (%)"))):
        for i, (series, part) in enumerate(rows.groupby("others", sort=False)):
            x = part["value"].astype(float).to_numpy() if numeric else [values.index(_value_label(v)) for v in part["value"]]
            mean = part[f"{metric}_mean"].to_numpy(dtype=float)
            low, high = part[f"{metric}_low"].to_numpy(dtype=float), part[f"{metric}_high"].to_numpy(dtype=float)
            yerr = np.vstack([np.nan_to_num(mean - low), np.nan_to_num(high - mean)])
            ax.errorbar(x, mean, yerr=yerr, marker="o", markersize=4, capsize=3, linewidth=1,
                        color=plt.get_cmap("tab10")(i % 10), label=series or first.key)
            recipe = part["recipe"].to_numpy(dtype=bool)
            if recipe.any():
                ax.plot(np.asarray(x, dtype=float)[recipe], mean[recipe], marker="*", markersize=12,
                        linestyle="none", color="black")
        if np.isnan(rows[f"{metric}_mean"].to_numpy(dtype=float)).all():
            ax.text(0.5, 0.5, "n/a (no class in the group)", ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
            ax.set_xticks([])
        elif not numeric:
            ax.set_xticks(range(len(values)), values, fontsize=8)
        ax.set_xlabel(first.key)
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7, title="other swept keys" if rows["others"].ne("").any() else None)
    title = f"{first.method}: {first.key} — {cell_title(first.dataset_label, first.if_label)}"
    fig.suptitle(f"Sensitivity ({title}; ★ recipe variant, bars 95 % interval)", fontsize=9)
    fig.tight_layout()
    return Plot(plot_key(f"sensitivity_{first.method}_{first.key}", first.dataset_label, first.if_label),
                f"Sensitivity to {first.key}, {first.method}, {cell_title(first.dataset_label, first.if_label)}",
                _to_png(fig))


def _value_label(value) -> str:
    return str(value)


def build_plots(done: pd.DataFrame, summary: pd.DataFrame, tolerance: float,
                sensitivity: pd.DataFrame | None = None, per_class_of=load_per_class, history_of=load_history
                ) -> tuple[dict[str, Plot], dict[tuple[str, str], list[str]], list[str]]:
    """All figures: (plots by key, the keys of each dataset x IF cell, the overview keys).

    `per_class_of(folder)` gives a run's per-class frame (`load.load_per_class`; a kept summary
    gives it from per_class.csv), `history_of(folder)` its history (curves.csv). The diff heatmap is left out when no cell has a paper number
    (it would be an empty grey box)."""
    plots: dict[str, Plot] = {}
    by_cell: dict[tuple[str, str], list[str]] = {}
    if summary.empty:
        return plots, by_cell, []
    for (label, if_label), cell in summary.groupby(["dataset_label", "if_label"], sort=False):
        for plot in (per_class_plot(cell, done, per_class_of), curves_plot(cell, done, history_of),
                     reliability_plot(cell, done)):
            if plot is not None:
                plots[plot.key] = plot
                by_cell.setdefault((label, if_label), []).append(plot.key)
    if sensitivity is not None and len(sensitivity):
        for (label, if_label, _, _), rows in sensitivity.groupby(["dataset_label", "if_label", "method", "key"],
                                                                 sort=False):
            plot = sensitivity_plot(rows)
            plots[plot.key] = plot
            by_cell.setdefault((label, if_label), []).append(plot.key)
    if summary["paper_top1"].isna().all():
        return plots, by_cell, []
    heatmap = diff_heatmap(summary, tolerance)
    plots[heatmap.key] = heatmap
    return plots, by_cell, [heatmap.key]
