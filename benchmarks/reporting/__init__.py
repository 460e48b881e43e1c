"""The report: run folders in, tables, verdicts and plots out. It never trains anything.

    load.py       run folders -> one pandas row per run (any state); per-class / history on demand
    recipe.py     a run's deviations from its method's paper recipe
    aggregate.py  seed statistics per cell and the verdict rules (documented there)
    stats.py      confidence intervals, Welch, paired bootstrap, McNemar, seeds needed
    compare.py    within a cell: method pairs, variants against their recipe, swept keys
    tables.py     sections of display text; markdown, LaTeX and CSV writers
    plots.py      matplotlib (Agg) figures as PNG bytes
    html.py       one self-contained HTML page with the figures embedded
    shift.py, cost.py, diagnostics.py, analyses.py, analysis_plots.py
                  analyses beyond top-1: test-distribution shift, compute cost, per-class
                  diagnostics (docs/analyses.md), as sections placed after each cell's own
    kept.py       the kept summary (runs.csv, per_class.csv, comparisons.csv) and reading it back

`build_report` ties them together; `report.py` is its command line. Nothing here imports the
training code (torch, datasets, methods), so reporting works on a machine that only holds results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmarks import LTBenchError
from benchmarks.reporting.paper_numbers import PAPER_NUMBERS_FILE, load_paper_numbers
from benchmarks.reporting.aggregate import DEFAULT_TOLERANCE, aggregate, label_variants, report_order
from benchmarks.reporting.analyses import build_analyses, insert_cell_sections
from benchmarks.reporting.compare import (
    comparisons as compare_cells, sensitivity as sensitivity_rows, wins_ties_losses,
)
from benchmarks.reporting.cost import add_cell_cost
from benchmarks.reporting.load import load_history, load_per_class, load_runs
from benchmarks.reporting.shift import run_shift_means, shift_frame
from benchmarks.reporting.recipe import recipe_diff_frame
from benchmarks.reporting.tables import (
    build_sections, render_latex, render_markdown, write_csv_frame,
)
from benchmarks.reporting.kept import (
    curves_frame, per_class_frame, read_comparisons, read_curves, read_per_class, read_runs_csv, runs_csv_frame,
)
from benchmarks.store.results import atomic_write_bytes, atomic_write_text, check_writable_dir

FORMATS = ("md", "csv", "tex", "html", "png")
PLOTS_DIR = "plots"


@dataclass
class Report:
    """What `build_report` found and wrote."""

    markdown: str  # the tables as printed (no image links)
    runs: pd.DataFrame  # one row per run folder, any state
    summary: pd.DataFrame  # one row per cell (dataset label, IF, method, recipe variant)
    files: list[Path] = field(default_factory=list)
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)  # compare.comparisons
    sensitivity: pd.DataFrame = field(default_factory=pd.DataFrame)  # compare.sensitivity
    shift: pd.DataFrame = field(default_factory=pd.DataFrame)  # shift.csv (shift.shift_frame)

    @property
    def empty(self) -> bool:
        return self.runs.empty


def build_report(results_dir: Path, out_dir: Path, tolerance: float = DEFAULT_TOLERANCE,
                 formats: tuple[str, ...] | list[str] = FORMATS, plots: bool = True,
                 paper_numbers_file: Path = PAPER_NUMBERS_FILE) -> Report:
    """Read every run folder under `results_dir`; write the requested formats into `out_dir`.

    Writes nothing when there are no runs (the caller says so). `plots=False` skips matplotlib
    entirely: no PNG files, and an HTML page without figures.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise LTBenchError(f"results dir {results_dir} does not exist (run run_benchmark.py first, or pass --results-dir)")
    _check_options(formats, tolerance)

    numbers = load_paper_numbers(paper_numbers_file)
    runs = load_runs(results_dir)
    if runs.empty:
        return Report("", runs, pd.DataFrame())
    return _render(runs, str(results_dir), out_dir, numbers, tolerance, formats, plots)


def build_report_from_csv(runs_csv: Path, out_dir: Path, tolerance: float = DEFAULT_TOLERANCE,
                          formats: tuple[str, ...] | list[str] = FORMATS, plots: bool = True,
                          paper_numbers_file: Path = PAPER_NUMBERS_FILE) -> Report:
    """The report re-rendered from a kept summary (`kept.py`: a report's runs.csv, with the
    per_class.csv and comparisons.csv beside it when present), without any run folder. Same
    tables as the report from the folders; plots: per-class, sensitivity and the heatmap."""
    _check_options(formats, tolerance)
    numbers = load_paper_numbers(paper_numbers_file)
    runs = read_runs_csv(Path(runs_csv))
    if runs.empty:
        return Report("", runs, pd.DataFrame())
    per_class, curves = read_per_class(Path(runs_csv)), read_curves(Path(runs_csv))
    empty = pd.DataFrame(columns=["class", "train_count", "accuracy"])
    return _render(runs, str(runs_csv), Path(out_dir), numbers, tolerance, formats, plots,
                   kept_comparisons=read_comparisons(Path(runs_csv)),
                   per_class_of=lambda folder: per_class.get(str(folder), empty),
                   history_of=lambda folder: curves.get(str(folder), pd.DataFrame(columns=["epoch", "top1"])))


def _check_options(formats, tolerance) -> None:
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise LTBenchError(f"unknown report format(s) {sorted(unknown)}; known: {', '.join(FORMATS)}")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise LTBenchError(f"tolerance must be a finite number >= 0, got {tolerance!r}")


def _render(runs: pd.DataFrame, source: str, out_dir: Path, numbers, tolerance: float, formats, plots: bool,
            kept_comparisons: pd.DataFrame | None = None, per_class_of=None, history_of=None) -> Report:
    """Everything after reading: statistics, sections, files (shared by both entry points)."""
    check_writable_dir(out_dir, "report folder")
    runs = report_order(label_variants(runs), "seed")
    per_class_of, history_of = per_class_of or load_per_class, history_of or load_history
    shift = shift_frame(runs[runs["state"] == "done"], per_class_of)
    runs = runs.assign(shift=runs["folder"].astype(str).map(run_shift_means(shift)))  # the leaderboard's
    summary = add_cell_cost(aggregate(runs, numbers, tolerance), runs)
    diff = recipe_diff_frame(runs)
    done = runs[runs["state"] == "done"]
    comparisons = compare_cells(done) if kept_comparisons is None else kept_comparisons
    sensitivity = sensitivity_rows(done)
    wins = wins_ties_losses(comparisons)

    figures, cell_plots, overview = {}, {}, []
    drawing = plots and bool({"png", "html"} & set(formats))
    if drawing:
        from benchmarks.reporting.plots import build_plots  # matplotlib only when drawing

        figures, cell_plots, overview = build_plots(done, summary, tolerance, sensitivity, per_class_of, history_of)
    analyses = build_analyses(done, summary, drawing, shift)
    figures.update(analyses.figures)
    sections = build_sections(Path(source), runs, summary, diff, tolerance, cell_plots, overview,
                              comparisons, sensitivity, wins)
    sections = insert_cell_sections(sections, analyses.sections)
    markdown = render_markdown(sections)

    try:
        files = _write_report(out_dir, formats, sections, figures, summary, runs, diff, comparisons, sensitivity,
                              wins, per_class_of, analyses.shift, history_of)
    except OSError as exc:  # a full disk or a folder made read-only since the check
        raise LTBenchError(f"cannot write the report into {out_dir}: {exc.strerror or exc}") from None
    return Report(markdown, runs, summary, files, comparisons, sensitivity, analyses.shift)


def _write_report(out_dir: Path, formats, sections, figures, summary, runs, diff, comparisons,
                  sensitivity, wins, per_class_of=None, shift=None, history_of=None) -> list[Path]:
    files: list[Path] = []

    def write(name: str, text: str) -> None:
        atomic_write_text(out_dir / name, text)
        files.append(out_dir / name)

    images = {}
    if "png" in formats:
        for key, plot in figures.items():
            path = out_dir / PLOTS_DIR / f"{key}.png"
            atomic_write_bytes(path, plot.png)
            files.append(path)
            images[key] = f"{PLOTS_DIR}/{key}.png"
    if "md" in formats:
        write("report.md", render_markdown(sections, images))
    if "csv" in formats:
        for name, frame in (("summary.csv", summary), ("runs.csv", runs_csv_frame(runs)),
                            ("recipe_diff.csv", diff), ("comparisons.csv", comparisons),
                            ("per_class.csv", per_class_frame(runs, *([per_class_of] if per_class_of else []))),
                            ("curves.csv", curves_frame(runs, *([history_of] if history_of else []))),
                            ("sensitivity.csv", sensitivity), ("wins.csv", wins), ("shift.csv", shift)):
            write_csv_frame(out_dir / name, frame)
            files.append(out_dir / name)
    if "tex" in formats:
        write("report.tex", render_latex(sections))
    if "html" in formats:
        from benchmarks.reporting.html import render_html

        write("report.html", render_html(sections, figures))
    return files
