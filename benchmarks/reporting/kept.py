"""A kept summary: the report's own CSV files, enough to re-render its tables without run folders.

Why: a study's run folders (checkpoints, predictions, logs) are too large to publish, yet a reader
should be able to re-render the published tables with one command (`report.py --from-csv
PATH/runs.csv`). A kept summary is three files side by side, all written by every report:

    runs.csv         one row per run folder, every state: the scalars of load.load_run plus the
                     run's resolved config and recorded deviations as JSON (`config`,
                     `recorded_deviations`) and `epochs_done`; everything summary, verdicts,
                     recipe differences, sensitivity and the Welch comparisons are computed from
    per_class.csv    per run folder the best epoch's per-class accuracy against training count
                     (`folder`, `class`, `train_count`, `accuracy`): the per-class plot
    comparisons.csv  the comparisons as the report computed them: the image-level tests need
                     predictions.npz, which a kept summary does not hold, so they are read back
                     instead of recomputed (when the file is absent, the comparisons are
                     recomputed and the image-level ones are n/a with a note)
    curves.csv       per run folder its history's test top-1 per epoch (`folder`, `epoch`,
                     `top1`): the training curves plot, and what a study's schedule length is
                     judged by (has the curve flattened?)

Only runs.csv is required. Reliability diagrams need predictions.npz; a re-render leaves them out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import LTBenchError
from benchmarks.reporting.load import epochs_done, load_history, load_per_class

RUNS_CSV, PER_CLASS_CSV, COMPARISONS_CSV, CURVES_CSV = "runs.csv", "per_class.csv", "comparisons.csv", "curves.csv"
JSON_COLUMNS = ("config", "recorded_deviations")
REQUIRED = ("folder", "dataset_label", "if_label", "imb_factor", "method", "seed", "state", "best_top1",
            "config", "recorded_deviations")
STRING_COLUMNS = ("folder", "dataset_label", "if_label", "method", "variant_name", "state", "reason", "status",
                  "dataset", "backbone", "precision", "selected_on")
PER_CLASS_COLUMNS = ["folder", "class", "train_count", "accuracy"]
CURVES_COLUMNS = ["folder", "epoch", "top1"]


def runs_csv_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """runs.csv of a report: the per-run frame with its config and recorded deviations as JSON
    (the derived `deviations` dict is left out: it is recomputed from those two) and how many
    epochs each run folder holds."""
    frame = runs.drop(columns=[c for c in ("deviations",) if c in runs]).copy()
    for column in JSON_COLUMNS:
        if column in frame:
            frame[column] = [json.dumps(v, sort_keys=True, default=str) for v in frame[column]]
    if "views" in frame:
        frame["views"] = [json.dumps(list(v or ())) for v in frame["views"]]
    if "epochs_done" not in frame:  # a re-render keeps the count it read (its folders are not there)
        frame["epochs_done"] = [epochs_done(f) for f in frame["folder"]]
    return frame


def per_class_frame(runs: pd.DataFrame, per_class_of=load_per_class) -> pd.DataFrame:
    """per_class.csv: the best epoch's per-class accuracy of every finished run (`per_class_of`:
    from its folder, or from the kept per_class.csv of a re-render, so that it is kept again)."""
    parts = [per_class_of(f).assign(folder=f) for f in runs.loc[runs["state"] == "done", "folder"]]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=PER_CLASS_COLUMNS)
    return pd.concat(parts, ignore_index=True)[PER_CLASS_COLUMNS]


def curves_frame(runs: pd.DataFrame, history_of=load_history) -> pd.DataFrame:
    """curves.csv: every finished run's test top-1 per epoch (`history_of`: its folder's
    history.csv, or the kept curves.csv of a re-render, so that it is kept again)."""
    parts = []
    for folder in runs.loc[runs["state"] == "done", "folder"]:
        history = history_of(folder)
        if {"epoch", "top1"} <= set(history.columns) and len(history):
            parts.append(history[["epoch", "top1"]].assign(folder=folder))
    if not parts:
        return pd.DataFrame(columns=CURVES_COLUMNS)
    return pd.concat(parts, ignore_index=True)[CURVES_COLUMNS]


def read_curves(path: Path) -> dict[str, pd.DataFrame]:
    """curves.csv beside a kept runs.csv: folder -> its (epoch, top1) frame ({} when absent); a
    damaged number is a gap in the curve, not a crash."""
    return _read_per_folder(path, CURVES_CSV, CURVES_COLUMNS, numeric=("epoch", "top1"))


def _read_per_folder(path: Path, name: str, columns: list[str], numeric: tuple[str, ...] = ()
                     ) -> dict[str, pd.DataFrame]:
    """The kept file `name` beside a runs.csv, split by its `folder` column into frames of the
    other `columns` ({} when the file is absent); `numeric` columns are read as numbers."""
    file = (Path(path) if Path(path).is_dir() else Path(path).parent) / name
    if not file.is_file():
        return {}
    try:
        frame = pd.read_csv(file, dtype={"folder": str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LTBenchError(f"--from-csv: {file} is not a readable CSV ({type(exc).__name__})") from None
    if not set(columns) <= set(frame):
        raise LTBenchError(f"--from-csv: {file} needs the columns {', '.join(columns)}")
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    rest = [c for c in columns if c != "folder"]
    return {folder: part[rest].reset_index(drop=True) for folder, part in frame.groupby("folder", sort=False)}


def _json(text: Any, column: str, row: int) -> Any:
    if not isinstance(text, str) or not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise LTBenchError(f"--from-csv: runs.csv row {row + 2}: column {column} is not JSON ({text[:40]!r})") from None


def _numeric_or_text(column: pd.Series) -> pd.Series:
    """A column of numbers (empty fields: NaN) as floats or integers; any other column as read."""
    try:
        return pd.to_numeric(column.replace("", np.nan))
    except (ValueError, TypeError):
        return column


def read_runs_csv(path: Path) -> pd.DataFrame:
    """A kept runs.csv back as the runs frame of `load.load_runs` (before `label_variants`)."""
    path = Path(path)
    if path.is_dir():
        path = path / RUNS_CSV
    if not path.is_file():
        raise LTBenchError(f"--from-csv: {path} is not a file (give a report's runs.csv, or the folder holding it)")
    try:
        frame = pd.read_csv(path, dtype={c: str for c in STRING_COLUMNS}, keep_default_na=False,
                            na_values={c: [""] for c in ("best_top1",)})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LTBenchError(f"--from-csv: {path} is not a readable CSV ({type(exc).__name__})") from None
    missing = [c for c in REQUIRED if c not in frame]
    if missing:
        raise LTBenchError(f"--from-csv: {path} lacks the column(s) {', '.join(missing)}; a kept summary is the "
                           "runs.csv a report of this version writes")
    if frame.empty:
        return frame
    for column in JSON_COLUMNS:
        frame[column] = [_json(v, column, i) for i, v in enumerate(frame[column])]
    frame["config"] = [c if isinstance(c, dict) else {} for c in frame["config"]]
    frame["views"] = [tuple(c.get("views") or ()) for c in frame["config"]]
    for column in frame:
        if column in STRING_COLUMNS or column in JSON_COLUMNS or column == "views":
            continue
        if column in ("tiny",):
            frame[column] = frame[column].astype(str).str.lower().eq("true")
        else:
            frame[column] = _numeric_or_text(frame[column])
    frame["seed"] = frame["seed"].astype(int)
    frame["backbone"] = frame["backbone"].replace("", None)
    # label_variants recomputes these from config and recorded deviations
    return frame.drop(columns=[c for c in ("variant", "deviation_note") if c in frame])


def read_per_class(path: Path) -> dict[str, pd.DataFrame]:
    """per_class.csv beside a kept runs.csv: folder -> its per-class frame ({} when absent)."""
    return _read_per_folder(path, PER_CLASS_CSV, PER_CLASS_COLUMNS)


def read_comparisons(path: Path) -> pd.DataFrame | None:
    """comparisons.csv beside a kept runs.csv, or None when absent."""
    from benchmarks.reporting.compare import COMPARISON_COLUMNS

    file = (Path(path) if Path(path).is_dir() else Path(path).parent) / COMPARISONS_CSV
    if not file.is_file():
        return None
    text = {c: str for c in ("dataset_label", "if_label", "kind", "a_method", "a_variant", "b_method", "b_variant",
                             "test", "note")}
    try:
        frame = pd.read_csv(file, dtype=text, keep_default_na=False, na_values={"diff": [""], "low": [""],
                                                                              "high": [""], "p": [""], "p_holm": [""]})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LTBenchError(f"--from-csv: {file} is not a readable CSV ({type(exc).__name__})") from None
    missing = [c for c in COMPARISON_COLUMNS if c not in frame]
    if missing:
        raise LTBenchError(f"--from-csv: {file} lacks the column(s) {', '.join(missing)}")
    frame["significant"] = frame["significant"].astype(str).str.lower().eq("true")
    return frame[COMPARISON_COLUMNS]
