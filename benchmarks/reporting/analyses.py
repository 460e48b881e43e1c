"""The analyses beyond top-1 as report sections: test-distribution shift (`shift.py`), compute
cost (`cost.py`) and per-class diagnostics (`diagnostics.py`); docs/analyses.md explains each.

`build_analyses` computes them from the finished runs and the cell summary; `insert_cell_sections`
places each cell's sections after that cell's own sections (its results, comparisons and
sensitivity), so `tables.build_sections` needs no knowledge of them. Figures are drawn only when
asked (matplotlib is imported then), as for the other plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from benchmarks.reporting.shift import (
    CELL_KEYS, FAMILY, family_label, shift_family_mean, shift_frame, shift_summary,
)
from benchmarks.reporting.tables import NA, Section, cell_title, fmt, fmt_mean_std

SHIFT_FORMULA = (
    "Accuracy under shifted test label distributions, from each run's best-epoch per-class accuracy acc_c: "
    "sum_c p(c) acc_c / sum_c p(c) over the classes with a test image, where r_c is the class's rank by training "
    "count (0 = most images, ties by class index), C the number of classes and rho the test imbalance factor: "
    "forward p(c) = rho^(-r_c/(C-1)), uniform p(c) = 1, backward p(c) = rho^(-(C-1-r_c)/(C-1)). "
    "Mean ± sample std over seeds; 'family mean' = mean over the 11 distributions. Per run: shift.csv.")
COST_INTRO = (
    "Cost per run (metrics.json; n/a for folders written before a record was kept): the 'cost' column of the "
    "results table gives training wall time (mean ± std over seeds), evaluation wall time, training images "
    "per second, peak memory (RSS on CPU, max allocated on CUDA) and the device; runs.csv has them per run. "
    "The plot puts best top-1 against training time, one point per method, bars ±1 std over seeds.")
DIAGNOSTICS_INTRO = (
    "Per-class diagnostics: accuracy per class against training count is the cell's per-class plot above. "
    "Classifier weight norm per class (end of training, metrics.json classifier_weight_norms) against training "
    "count: a classifier biased to the head has norms growing with count. Confusion matrices: best epoch, rows "
    "normalised (each true class sums to 1), classes ordered by training count, most first.")


@dataclass
class Analyses:
    shift: pd.DataFrame  # shift.csv: one row per run and test distribution
    shift_summary: pd.DataFrame  # mean / std over seeds per cell, method, variant, distribution
    shift_mean: pd.DataFrame  # per cell, method, variant: the mean over the family
    sections: dict[tuple[str, str], list[Section]] = field(default_factory=dict)
    figures: dict = field(default_factory=dict)  # plot key -> plots.Plot


def shift_table(cell: pd.DataFrame, summary: pd.DataFrame, family_mean: pd.DataFrame) -> pd.DataFrame | None:
    """One row per method (and variant) of a cell, one column per test distribution."""
    rows = []
    for row in cell.itertuples():
        match = lambda f: f[(f["dataset_label"] == row.dataset_label) & (f["if_label"] == row.if_label)  # noqa: E731
                            & (f["method"] == row.method) & (f["variant"] == row.variant)]
        part = match(summary)
        values = {(d, r): (m, s) for d, r, m, s in zip(part["distribution"], part["test_imb_factor"],
                                                      part["top1_mean"], part["top1_std"])}
        mean = match(family_mean)["shift_mean"]
        rows.append({
            "method": f"{row.method} [{row.variant}]" if row.variant else row.method,
            "n": int(part["n"].max()) if len(part) else 0,
            **{family_label(*d): fmt_mean_std(*values[d]) if d in values else NA for d in FAMILY},
            "family mean": fmt(mean.iloc[0]) if len(mean) else NA,
        })
    return pd.DataFrame(rows) if rows else None


def build_analyses(done: pd.DataFrame, summary: pd.DataFrame, draw: bool, shift: pd.DataFrame | None = None
                   ) -> Analyses:
    """Every cell's shift and diagnostics sections (and figures when `draw`); `summary` must
    already carry the cost columns (`cost.add_cell_cost`). `shift`: `shift_frame(done)` when the
    caller has it already."""
    shift = shift_frame(done) if shift is None else shift
    per_method, family_mean = shift_summary(shift), shift_family_mean(shift)
    result = Analyses(shift, per_method, family_mean)
    if summary.empty:
        return result
    if draw:
        from benchmarks.reporting import analysis_plots as ap  # matplotlib only when drawing
    for (label, if_label), cell in summary.groupby(["dataset_label", "if_label"], sort=False):
        title = cell_title(label, if_label)
        table = shift_table(cell, per_method, family_mean)
        has_shift = table is not None and (table["n"] > 0).any()
        shift_section = Section(f"Test-distribution shift — {title}", intro=[SHIFT_FORMULA],
                                table=table if has_shift else None)
        if not has_shift:
            shift_section.intro.append("n/a: no run of this cell records per-class accuracies and class counts.")
        diag = Section(f"Cost and per-class diagnostics — {title}", intro=[COST_INTRO, DIAGNOSTICS_INTRO])
        if draw:
            styles = ap.line_styles(cell, done)  # the same label and colour per line as the cell's other figures
            plots = [ap.shift_plot(cell, per_method, styles), ap.cost_plot(cell, styles), ap.weight_norm_plot(cell, done, styles)]
            for plot in plots:
                if plot is not None:
                    result.figures[plot.key] = plot
            if plots[0] is not None:
                shift_section.plots.append(plots[0].key)
            diag.plots += [p.key for p in plots[1:] if p is not None]
            if plots[1] is None:
                diag.intro.append("Cost plot: n/a (no run of this cell records its training time).")
            if plots[2] is None:
                diag.intro.append("Classifier weight norms: n/a (no run of this cell records classifier_weight_norms).")
            confusions = _confusion_plots(cell, done, ap)
            for plot in confusions:
                result.figures[plot.key] = plot
                diag.plots.append(plot.key)
            if not confusions:
                diag.intro.append("Confusion matrices: n/a (no run of this cell has best-epoch predictions.npz, "
                                  "or the dataset has more than 100 classes).")
        result.sections[(label, if_label)] = [shift_section, diag]
    return result


def _confusion_plots(cell: pd.DataFrame, done: pd.DataFrame, ap) -> list:
    from benchmarks.reporting.diagnostics import run_confusion

    runs = done.merge(cell[CELL_KEYS], on=CELL_KEYS)
    plots = []
    for run in runs.itertuples():
        found = run_confusion(run.folder)
        if found is not None:
            plots.append(ap.confusion_plot(run, *found))
    return plots


def insert_cell_sections(sections: list[Section], extra: dict[tuple[str, str], list[Section]]) -> list[Section]:
    """`sections` with each cell's `extra` sections after the last section about that cell (titled
    by its `cell_title`, alone or after ' — ')."""
    out = list(sections)
    for (label, if_label), added in extra.items():
        title = cell_title(label, if_label)
        about = [i for i, s in enumerate(out) if s.title == title or s.title.endswith(f" — {title}")]
        at = (about[-1] + 1) if about else len(out)
        out[at:at] = added
    return out
