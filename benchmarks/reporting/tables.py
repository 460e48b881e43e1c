"""The report's tables: numbers -> display text, and the markdown, LaTeX and CSV writers.

The report is a list of `Section`s (a title, text, one table of display strings, the keys of its
plots). Every text format renders the same sections, so markdown, LaTeX and HTML cannot drift
apart; the CSV files carry the unformatted numbers instead, for anyone who wants to compute.
pandas' own `to_markdown` / `to_latex` are not used: they need tabulate / jinja2, which the
project does not depend on, and the tables here are simple.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmarks.config import no_recipe_methods
from benchmarks.reporting.aggregate import NO_PAPER, RECIPE_DIFFERS, REPRODUCED
from benchmarks.reporting.cost import cost_text
from benchmarks.reporting.load import GROUPS, epochs_done
from benchmarks.reporting.recipe import RECONSTRUCTED
from benchmarks.store.results import atomic_write_text

NA = "n/a"


@dataclass
class Section:
    title: str
    intro: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    html_only: bool = False  # a view the HTML page adds (the leaderboard); markdown and LaTeX skip it


# ----------------------------------------------------------------------------- number formatting

def _missing(value) -> bool:
    """None, NaN and pandas' NA (nullable integer columns) all read as missing."""
    return value is None or bool(pd.isna(value))


def fmt(value, digits: int = 2) -> str:
    return NA if _missing(value) else f"{value:.{digits}f}"


def fmt_paper(value) -> str:
    """Published figures as published (65.3 stays 65.3, 52.0 stays 52.0)."""
    return "—" if _missing(value) else str(float(value))


def fmt_mean_std(mean, std, n=None) -> str:
    """'85.00 ± 1.41 (n=2)'; with n = 1 (std undefined) '85.00 (n=1)'."""
    if _missing(mean):
        return NA
    text = f"{mean:.2f}" if _missing(std) else f"{mean:.2f} ± {std:.2f}"
    return text if n is None else f"{text} (n={n})"


def fmt_diff(value) -> str:
    return "—" if _missing(value) else f"{value:+.2f}"


def fmt_int(value) -> str:
    return "—" if _missing(value) else str(int(value))


def fmt_interval(low, high, digits: int = 2) -> str:
    """'[83.10, 86.90]'; n/a when the interval is undefined (one seed)."""
    return NA if _missing(low) or _missing(high) else f"[{low:.{digits}f}, {high:.{digits}f}]"


def fmt_p(p) -> str:
    return NA if _missing(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def fmt_yes_no(value) -> str:
    return NA if _missing(value) else ("yes" if value else "no")


def fmt_seeds(value) -> str:
    """Seeds needed: an integer, '>10000' beyond the search, n/a when the std is unknown."""
    if _missing(value):
        return NA
    return f">{10_000}" if value == float("inf") else str(int(value))


def fmt_ece(best, last) -> str:
    if _missing(best) and _missing(last):
        return NA
    return f"{fmt(best, 3)} / {fmt(last, 3)}"


# ----------------------------------------------------------------------------- sections

def cell_title(dataset_label: str, if_label: str) -> str:
    return f"{dataset_label}, IF {if_label}"


TOP5_MIN_CLASSES = 100


def shows_top5(cell: pd.DataFrame) -> bool:
    """Top-5 is shown for datasets of >= TOP5_MIN_CLASSES classes (below, top-5 of 10 classes says
    little); the class count comes from metrics.json (older runs: from the dataset name)."""
    counts = pd.to_numeric(cell.get("num_classes", pd.Series(dtype=float)), errors="coerce")
    if counts.notna().any():
        return bool(counts.max() >= TOP5_MIN_CLASSES)
    return bool(cell["dataset"].astype(str).str.contains("100|imagenet|inat|places", case=False).any())


def results_table(cell: pd.DataFrame) -> pd.DataFrame:
    """The display table of one dataset x IF: one row per method (and recipe variant); top-5 (best
    epoch, mean over seeds; n/a for runs written before it was recorded) for >= 100 classes."""
    with_top5 = shows_top5(cell)
    rows = []
    for r in cell.itertuples():
        groups = {}
        for g in GROUPS:
            run, paper = getattr(r, f"{g}_mean"), getattr(r, f"paper_{g}")
            groups[g] = fmt(run) + ("" if _missing(paper) else f" (paper {fmt_paper(paper)})")
        rows.append({
            "method": r.method,
            "paper top-1": f"{fmt_paper(r.paper_top1)} ({r.paper_status})" if r.paper_status else "none published",
            "best top-1": fmt_mean_std(r.best_top1_mean, r.best_top1_std, r.n),
            "cost": cost_text(r),  # cost.py: train / eval time, speed, memory, device
            "last top-1": fmt_mean_std(r.last_top1_mean, r.last_top1_std),
            **({"top-5": fmt(getattr(r, "best_top5_mean", None))} if with_top5 else {}),
            "diff": fmt_diff(r.diff),
            "verdict": r.verdict,
            "95% CI": fmt_interval(r.best_top1_ci_low, r.best_top1_ci_high),
            "paper in CI": fmt_yes_no(r.paper_in_ci) if not _missing(r.paper_top1) else "—",
            "seeds for 1 pt": fmt_seeds(r.seeds_for_1pt),
            "ECE best/last": fmt_ece(r.best_ece_mean, r.last_ece_mean),
            **groups,
            "epochs run/paper": f"{fmt_int(r.epochs)}/{fmt_int(r.paper_epochs)}",
            "precision": r.precision or NA,
            "best epoch chosen on": (f"val (best on test: {fmt(r.best_on_test_mean)})"
                                     if r.selected_on == "val" else "test"),
            "recipe differences": "; ".join(x for x in (r.differences, r.recipe_label) if x) or "—",
        })
    return pd.DataFrame(rows)


def source_notes(cell: pd.DataFrame) -> list[str]:
    """Where each paper number of the table comes from (one line per method and paper entry: a
    method run with two backbones, e.g. BCL ResNet-50 and ResNeXt-50, has a line for each)."""
    notes = []
    for r in cell.drop_duplicates(["method", "paper_source", "paper_top1"]).itertuples():
        if r.paper_source:
            groups = "/".join(fmt_paper(getattr(r, f"paper_{g}")) for g in GROUPS)
            split = "" if groups == "—/—/—" else f", many/medium/few {groups}"
            views = f", views {r.paper_views}" if getattr(r, "paper_views", "") else ""  # entries that record them
            last = " (final epoch; compared with the run's last epoch)" \
                if getattr(r, "compared_epoch", "") == "last" else ""
            notes.append(f"{r.method}: {fmt_paper(r.paper_top1)}{split}, {r.paper_backbone}{views}, "
                         f"{fmt_int(r.paper_epochs)} epochs{last} — {r.paper_source} [{r.paper_status}]")
        else:
            notes.append(f"{r.method}: no published figure for {r.dataset} IF {r.if_label}")
    if not cell.empty:  # methods that no grid runs here: listed, not silently absent
        dataset = cell["dataset"].iloc[0]
        notes.extend(f"{m}: no recipe for {dataset} (not run; docs/methods/{m}.md)" for m in no_recipe_methods(dataset))
    return notes


def _side(method: str, variant: str, with_variant: bool) -> str:
    return f"{method} [{variant}]" if with_variant and variant else method


def comparisons_table(comparisons: pd.DataFrame) -> pd.DataFrame:
    """One cell's comparisons (rows of `compare.comparisons`) as display text."""
    rows = []
    for r in comparisons.itertuples():
        variants = r.kind != "methods"
        rows.append({
            "a": _side(r.a_method, r.a_variant, variants),
            "b": _side(r.b_method, r.b_variant or "recipe", variants),
            "n a/b": f"{r.n_a}/{r.n_b}",
            "diff a − b": fmt_diff(r.diff),
            "95% interval": fmt_interval(r.low, r.high),
            "p": fmt_p(r.p),
            "p (Holm)": fmt_p(getattr(r, "p_holm", None)),
            "sig.": "*" if r.significant else "",
            "test": r.test or NA,
            "note": r.note or "",
        })
    return pd.DataFrame(rows)


def _with_interval(mean, low, high) -> str:
    if _missing(mean):
        return NA
    interval = fmt_interval(low, high)
    return fmt(mean) if interval == NA else f"{fmt(mean)} {interval}"


def sensitivity_table(sensitivity: pd.DataFrame) -> pd.DataFrame:
    """One cell's sensitivity rows (`compare.sensitivity`) as display text."""
    rows = []
    for r in sensitivity.itertuples():
        rows.append({
            "method": r.method, "key": r.key,
            "value": str(r.value) + (" (recipe)" if r.recipe else "") + (" (best)" if getattr(r, "best", False) else ""),
            "other swept keys": r.others or "—", "n": r.n,
            "best top-1 [95% CI]": _with_interval(r.top1_mean, r.top1_low, r.top1_high),
            "few-shot [95% CI]": _with_interval(r.few_mean, r.few_low, r.few_high),
        })
    return pd.DataFrame(rows)


def _epochs_done(run) -> int:
    """A kept runs.csv carries the count (its folder is not there); run folders are read."""
    kept = getattr(run, "epochs_done", None)
    return int(kept) if not _missing(kept) else epochs_done(run.folder)


def unfinished_table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in runs.itertuples():
        rows.append({
            "dataset": r.dataset_label, "IF": r.if_label, "method": r.method, "seed": r.seed,
            "state": r.state, "status": r.reason or r.status,
            "epochs done": f"{_epochs_done(r)}/{fmt_int(r.epochs)}", "folder": r.folder,
        })
    return pd.DataFrame(rows)


def recipe_diff_table(diff: pd.DataFrame) -> pd.DataFrame:
    """One row per run folder: its variant, its differing keys as 'key run≠paper', or why there are none."""
    rows = []
    for _, group in diff.groupby("folder", sort=False):
        first = group.iloc[0]
        keyed = group[group["key"] != ""]
        text = "; ".join(f"{k} {run}≠{paper}" for k, run, paper in zip(keyed["key"], keyed["run"], keyed["paper"]))
        note = first["note"]
        if text and note:  # a reconstructed recipe with differences says both
            text = f"{text} ({note})"
        rows.append({"run": f"{first['dataset_label']} IF {first['imb_factor']} {first['method']} seed {first['seed']}",
                     "variant": first["variant"] or "recipe", "state": first["state"],
                     "differences from the paper recipe (run≠paper)": text or note})
    return pd.DataFrame(rows)


def wins_table(wtl: pd.DataFrame) -> pd.DataFrame:
    """One cell's wins / ties / losses (`compare.wins_ties_losses`) as display text."""
    return pd.DataFrame([{"method": r.method, "wins": r.wins, "ties": r.ties, "losses": r.losses,
                          "of which untested": r.untested} for r in wtl.itertuples()])


SHIFT_COLUMN = "shift_mean"  # the summary column the shift analysis fills (mean over its test distributions)


def leaderboard_table(cell: pd.DataFrame) -> pd.DataFrame:
    """One cell's methods sorted by mean best top-1 (highest first): interval, groups, ECE, cost
    (training seconds, mean over seeds) and the shift summary (SHIFT_COLUMN; n/a until the shift
    analysis provides it), with the paper number beside."""
    rows = []
    ranked = cell.sort_values("best_top1_mean", ascending=False, kind="stable")
    for rank, r in enumerate(ranked.itertuples(), start=1):
        rows.append({
            "#": rank,
            "method": f"{r.method} [{r.variant}]" if r.variant else r.method,
            "best top-1 [95% CI]": _with_interval(r.best_top1_mean, r.best_top1_ci_low, r.best_top1_ci_high),
            "paper top-1": fmt_paper(r.paper_top1),
            "many/medium/few": "/".join(fmt(getattr(r, f"{g}_mean")) for g in GROUPS),
            "ECE (best)": fmt(r.best_ece_mean, 3),
            "cost (train s)": fmt(getattr(r, "train_seconds_mean", None), 1),
            "shift (mean top-1)": fmt(getattr(r, SHIFT_COLUMN, None)),
            "n": r.n,
        })
    return pd.DataFrame(rows)


CHANCE_MARGIN = 2.0  # points above 100 / C that still read as "learned nothing" (one class predicted)


def chance_level_runs(runs: pd.DataFrame) -> list[str]:
    """The finished runs whose best top-1 is within CHANCE_MARGIN of chance, as 'dataset IF n method
    seed s' labels: a reader must see at the top that such a cell learned nothing, and why."""
    if "num_classes" not in runs or "best_top1" not in runs:
        return []
    done = runs[(runs["state"] == "done") & runs["num_classes"].notna() & runs["best_top1"].notna()]
    near = done[done["best_top1"] <= 100.0 / done["num_classes"] + CHANCE_MARGIN]
    return [f"{r.dataset_label} IF {r.if_label} {r.method} seed {r.seed}" for r in near.itertuples()]


def build_sections(results_dir: Path, runs: pd.DataFrame, summary: pd.DataFrame, diff: pd.DataFrame,
                   tolerance: float, cell_plots: dict[tuple[str, str], list[str]],
                   overview_plots: list[str], comparisons: pd.DataFrame | None = None,
                   sensitivity: pd.DataFrame | None = None, wins: pd.DataFrame | None = None) -> list[Section]:
    """The whole report as sections, in reading order: per cell its results table, then its
    comparisons and (when a method's variants differ in some key) its sensitivity."""
    done = int((runs["state"] == "done").sum())
    header = Section(
        "ltbench report",
        intro=[
            f"Results: {results_dir} — {len(runs)} run folder(s), {done} done, {len(runs) - done} not finished "
            "(listed at the end, never averaged).",
            f"Top-1 of the best test-set epoch, mean ± sample std over seeds (n seeds; no std with n=1); "
            f"diff = run − paper. Verdict: {REPRODUCED} if |diff| ≤ {tolerance:g} point, else below / above; "
            f"'{RECIPE_DIFFERS}' when the run's recipe (or a tiny subset) differs from the published one; "
            f"'{NO_PAPER}' when no figure was published. Many/medium/few: best epoch, paper's in parentheses. "
            f"'{RECONSTRUCTED}': no release gives that method's recipe on that dataset (it is marked "
            "`reconstructed` in configs/methods/<method>.yaml, recipe_status); the comparison tests a reading "
            "of the paper, not a released configuration. Precision: what the training step ran in (fp32, fp16 with "
            "loss scaling, bf16); one other than the method's release precision is the deviation 'precision'.",
            "Model selection: 'best' is the epoch chosen on the split in 'best epoch chosen on'. The CIFAR "
            "releases pick the best test-set epoch, and so does ltbench by default (select_on: test): the "
            "published CIFAR figures are such maxima, biased upward by the choice. Where a release selects on a "
            "validation split (BCL on ImageNet-LT: ImageNet_LT_val.txt), the run does too (select_on: val) and "
            "its best top-1 is the test accuracy of the selected epoch; the best test-set epoch's top-1 is shown "
            "beside it as 'best on test'.",
            "Statistics: 95% CI = Student-t interval of the best top-1 over seeds (n/a with one seed); 'paper in "
            "CI' = whether the paper's top-1 lies inside it; 'seeds for 1 pt' = seeds needed to resolve a 1-point "
            "difference from the paper number at the observed seed std (two-sided t-test, alpha 0.05, power 0.8). "
            "ECE = expected calibration error (15 bins, a fraction: 0 is perfectly calibrated), best / last epoch. "
            "Comparisons: a − b in best top-1 points with its 95% interval and two-sided p: Welch over seeds, or "
            "with one seed each a paired bootstrap over test images and McNemar's exact test; with >= 2 seeds in "
            "common on both sides also a seed-matched row (runs paired by seed: bootstrap over images within each "
            "seed pair, McNemar on the discordant images pooled over the pairs). p (Holm) = Holm-adjusted p within "
            "the family (one cell, one kind of comparison, one test); * p (Holm) < 0.05. Wins / ties / losses: each "
            "method against every other at that adjusted level. Intervals are clipped to the range of the "
            "quantity (0-100 for an accuracy, -100-100 for a difference).",
        ],
        plots=overview_plots,
    )
    if summary.empty:
        header.intro.append("No run has finished yet: there is nothing to compare with the paper numbers.")
    at_chance = chance_level_runs(runs)
    if at_chance:
        header.intro.insert(0, f"At chance (best top-1 within {CHANCE_MARGIN:g} points of 100 / classes): "
                               f"{', '.join(at_chance)}: these runs learned nothing beyond one class in their "
                               "schedule (too short for the method, or a defect); the grid file's description "
                               "(configs/grids/<grid>.yaml) says why for its cells.")
    sections = [header]
    comparisons = comparisons if comparisons is not None else pd.DataFrame(columns=["dataset_label", "if_label"])
    sensitivity = sensitivity if sensitivity is not None else pd.DataFrame(columns=["dataset_label", "if_label"])
    for (label, if_label), cell in summary.groupby(["dataset_label", "if_label"], sort=False):
        plots = cell_plots.get((label, if_label), [])
        cell_plots_main = [k for k in plots if not k.startswith("sensitivity_")]
        intro = []
        if plots and not any(k.startswith("reliability_") for k in plots):
            intro.append("Reliability diagram: n/a (no run of this cell has per-image predictions, predictions.npz).")
        sections.append(Section(cell_title(label, if_label), intro=intro, table=results_table(cell),
                                notes=["Paper numbers:"] + source_notes(cell), plots=cell_plots_main))
        sections.append(Section(
            f"Leaderboard — {cell_title(label, if_label)}",
            intro=["Methods by mean best top-1 (95% Student-t interval over seeds, clipped to 0-100); cost = "
                   "training seconds, mean over seeds; shift = mean top-1 over the shift analysis' test "
                   "distributions (n/a where it is not available)."],
            table=leaderboard_table(cell), html_only=True))
        here = comparisons[(comparisons["dataset_label"] == label) & (comparisons["if_label"] == if_label)]
        sections.append(Section(
            f"Comparisons — {cell_title(label, if_label)}",
            intro=[] if len(here) else ["n/a: one method and one variant only, nothing to compare."],
            table=comparisons_table(here) if len(here) else None))
        if wins is not None:
            tally = wins[(wins["dataset_label"] == label) & (wins["if_label"] == if_label)]
            if len(tally):
                sections.append(Section(
                    f"Wins / ties / losses — {cell_title(label, if_label)}",
                    intro=["Each method's recipe variant against every other method of the cell: a win (loss) "
                           "where it is higher (lower) with p (Holm) < 0.05, a tie otherwise (untested: no "
                           "p-value, e.g. one seed against several)."],
                    table=wins_table(tally)))
        swept = sensitivity[(sensitivity["dataset_label"] == label) & (sensitivity["if_label"] == if_label)]
        if len(swept):
            sections.append(Section(
                f"Sensitivity — {cell_title(label, if_label)}",
                intro=["Best top-1 and few-shot accuracy (mean over seeds, 95% Student-t interval clipped to 0-100) "
                       "per value of each swept key; '(recipe)' marks the method's recipe variant, '(best)' the "
                       "value of the highest mean best top-1 in its series."],
                table=sensitivity_table(swept), plots=[k for k in plots if k.startswith("sensitivity_")]))
    unfinished = runs[runs["state"] != "done"]
    sections.append(Section(
        "Unfinished and failed runs",
        intro=[] if len(unfinished) else ["None: every run folder is done."],
        table=unfinished_table(unfinished) if len(unfinished) else None,
    ))
    sections.append(Section(
        "Recipe differences per run",
        intro=["Each run's resolved config against its method's paper recipe (configs/methods/<method>.yaml); "
               "execution keys (pipeline, amp, ...) are not recipe and are left out."],
        table=recipe_diff_table(diff) if len(diff) else None,
    ))
    return sections


# ----------------------------------------------------------------------------- markdown

def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(_md_cell(c) for c in table.columns) + " |",
             "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def render_markdown(sections: list[Section], images: dict[str, str] | None = None) -> str:
    """Markdown of the sections; `images` (plot key -> relative path) adds image links."""
    parts = []
    for i, s in enumerate(sections):
        if s.html_only:
            continue
        parts.append(("# " if i == 0 else "## ") + s.title)
        parts += s.intro
        if s.table is not None:
            parts.append(markdown_table(s.table))
        if s.notes:
            parts.append("\n".join([s.notes[0]] + [f"- {n}" for n in s.notes[1:]]))
        for key in s.plots if images else []:
            if key in images:
                parts.append(f"![{key}]({images[key]})")
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- LaTeX

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "|": r"\textbar{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "±": r"$\pm$", "≠": r"$\neq$", "≤": r"$\leq$", "−": "--", "—": "---", "`": "",
}


def latex_escape(text) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def latex_table(table: pd.DataFrame) -> str:
    lines = [r"\begin{tabular}{" + "l" * len(table.columns) + "}", r"\hline",
             " & ".join(r"\textbf{" + latex_escape(c) + "}" for c in table.columns) + r" \\", r"\hline"]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines)


def render_latex(sections: list[Section]) -> str:
    """A complete, compilable document (landscape: the tables are wide)."""
    body = []
    for i, s in enumerate(sections):
        if s.html_only:
            continue
        body.append((r"\section*{" if i == 0 else r"\subsection*{") + latex_escape(s.title) + "}")
        body += [latex_escape(p) + "\n" for p in s.intro]
        if s.table is not None:
            body.append("{\\scriptsize\n" + latex_table(s.table) + "\n}\n")
        if s.notes:
            body.append(latex_escape(s.notes[0]) + "\n\\begin{itemize}\n"
                        + "\n".join(r"\item " + latex_escape(n) for n in s.notes[1:]) + "\n\\end{itemize}")
    return "\n".join([
        r"\documentclass[landscape]{article}",
        r"\usepackage[utf8]{inputenc}",
        r"\usepackage[margin=1.5cm]{geometry}",
        r"\begin{document}",
        *body,
        r"\end{document}",
    ]) + "\n"


# ----------------------------------------------------------------------------- CSV

def write_csv_frame(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))
