"""Run folders -> one pandas row per run; per-class accuracies and histories on demand.

Every folder `find_runs` sees becomes a row, whatever its state, so that a failed, interrupted or
damaged run is listed in the report instead of silently vanishing from the averages. The row
carries the run's scalars (best / last top-1, groups, epochs) and its parsed config; the bulky
per-class lists and epoch histories are read only by the plots that need them.

The identity of a run (dataset label, IF, method, variant, seed) comes from its folder path
(`<method>/seed<S>` for the paper recipe, `<method>@<variant>/seed<S>` for any other configuration;
a dataset folder's grid label, `digits-tiny@<hash>`, is dropped: cells group by dataset, then deviations),
which is what the grid runner keys on; the config supplies the real dataset name (`cifar10` for a
`cifar10-tiny/` folder), the recipe keys and the backbone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from benchmarks.store.yamlio import yaml_problem
from benchmarks.reporting.cost import cost_fields
from benchmarks.reporting.recipe import recorded_deviations
from benchmarks.store.results import (
    DONE, FAILED, RUNNING, UNREADABLE_STATUS, RunLock, config_problem, done_problem, find_runs, format_imb_factor,
    read_config, read_metrics, read_status, split_method_folder,
)

TINY_SUFFIX = "-tiny"
GROUPS = ("many", "medium", "few")

# Run states of the report: `done` runs are aggregated; every other state is listed as unfinished.
INCOMPLETE = "incomplete"  # says done, but metrics.json, config.yaml or history.csv is missing, unreadable or partial
INTERRUPTED = "interrupted"  # says running, but no live runner holds its lock
UNREADABLE = "unreadable"  # config.yaml or status that does not parse, or a config.yaml with malformed values


def _identity_from_path(folder: Path) -> dict[str, Any]:
    """`.../<dataset_label>/if<IF>/<method>[@<variant>]/seed<S>` -> its parts (what the folder claims)."""
    label, if_part, method_part, seed_part = folder.parts[-4:]
    label = label.partition("@")[0]  # `digits-tiny@<grid label>`: the report's cells group by dataset, then by deviations
    method, variant = split_method_folder(method_part)
    imb = if_part[2:]
    seed = seed_part[4:]
    return {
        "dataset_label": label,
        "imb_factor": float(imb) if imb.replace(".", "", 1).isdigit() else np.nan,
        "method": method,
        "variant_name": variant,
        "seed": int(seed) if seed.isdigit() else -1,
    }


def _state(status: str | None) -> tuple[str, str]:
    """`failed: CUDA OOM` -> ("failed", "CUDA OOM"); unknown words are kept as their own state."""
    if status is None:
        return "unknown", "no status file"
    if status.startswith(UNREADABLE_STATUS):
        return UNREADABLE, status
    word, _, reason = status.partition(":")
    word = word.strip()
    if word in (DONE, RUNNING, FAILED):
        return word, reason.strip()
    return "unknown", status


def _group_values(summary: dict[str, Any] | None, prefix: str) -> dict[str, Any]:
    """The top-1, epoch, group accuracies and calibration errors (`<prefix>_ece` overall,
    `<prefix>_ece_<group>`) of a best/last summary; null groups, and the ECE of runs written
    before it was recorded, become NaN."""
    summary = summary or {}
    out = {f"{prefix}_epoch": summary.get("epoch", np.nan), f"{prefix}_top1": summary.get("top1", np.nan),
           f"{prefix}_top5": summary.get("top5", np.nan)}  # runs written before top-5 was recorded: NaN
    for group in GROUPS:
        value = summary.get(group)
        out[f"{prefix}_{group}"] = np.nan if value is None else value
    ece = summary.get("ece") if isinstance(summary.get("ece"), dict) else {}
    for name, part in (("ece", "overall"), *((f"ece_{g}", g) for g in GROUPS)):
        value = ece.get(part)
        out[f"{prefix}_{name}"] = np.nan if value is None else value
    return out


def _read_config(folder: Path) -> tuple[dict[str, Any], str | None]:
    """(config, None), or ({}, why it cannot be used)."""
    try:
        config = read_config(folder)
    except yaml.YAMLError as exc:
        return {}, f"config.yaml: {yaml_problem(exc)}"
    except (OSError, ValueError) as exc:  # UnicodeDecodeError (binary garbage) is a ValueError
        return {}, f"config.yaml unreadable ({type(exc).__name__})"
    if config is None:
        return {}, None
    problem = config_problem(config)
    return ({}, problem) if problem else (config, None)


def load_run(folder: Path) -> dict[str, Any]:
    """One run folder as a flat record (the row of `load_runs`); a damaged folder is a row too,
    with state unreadable or incomplete and the reason (`unreadable_row` if even that fails)."""
    folder = Path(folder)
    row: dict[str, Any] = {"folder": str(folder), **_identity_from_path(folder)}
    state, reason = _state(read_status(folder))
    config, problem = _read_config(folder)
    if problem is not None:
        state, reason = UNREADABLE, problem
    metrics = None
    if state == RUNNING and not RunLock.is_held(folder):
        state, reason = INTERRUPTED, "no runner holds its lock (killed?); rerun the grid to resume it"
    if state == DONE:
        # The runner's own test of a finished run, so that the report aggregates exactly the
        # folders the runner would skip, and lists as incomplete exactly those it would retrain.
        problem = done_problem(folder)
        if problem is not None:
            state, reason = INCOMPLETE, problem
        else:
            metrics = read_metrics(folder)
    label = row["dataset_label"]
    row.update(
        state=state,
        reason=reason,
        status=read_status(folder) or "",
        dataset=config.get("dataset", label.removesuffix(TINY_SUFFIX)),
        imb_factor=float(config.get("imb_factor", row["imb_factor"])),
        if_label=format_imb_factor(config.get("imb_factor", row["imb_factor"])),
        tiny=label.endswith(TINY_SUFFIX)
        or config.get("train_cap_per_class", 0) > 0
        or config.get("test_cap_per_class", 0) > 0,
        epochs=config.get("epochs", (metrics or {}).get("epochs", np.nan)),
        backbone=config.get("backbone"),
        views=tuple(config.get("views") or ()),  # matched against a paper entry's views
        config=config,
        recorded_deviations=recorded_deviations(metrics, config),
        precision=((metrics or {}).get("precision") or {}).get("run", ""),
        selected_on=((metrics or {}).get("selection") or {}).get("split", "test"),  # the split that chose "best"
        best_on_test_top1=((metrics or {}).get("best_on_test") or {}).get("top1", np.nan),  # what the step ran in ("": older runs)
        num_classes=(metrics or {}).get("num_classes", np.nan),  # chance level = 100 / num_classes
        **cost_fields(metrics),  # train_seconds, images_per_s, peak_memory_mb, eval_seconds, device
        **_group_values((metrics or {}).get("best"), "best"),
        **_group_values((metrics or {}).get("last"), "last"),
    )
    return row


def unreadable_row(folder: Path, reason: str) -> dict[str, Any]:
    """The row of a folder nothing can be read from: its identity from the path, the reason."""
    folder = Path(folder)
    row: dict[str, Any] = {"folder": str(folder), **_identity_from_path(folder)}
    label = row["dataset_label"]
    row.update(state=UNREADABLE, reason=reason, status="", dataset=label.removesuffix(TINY_SUFFIX),
               if_label=format_imb_factor(row["imb_factor"]) if row["imb_factor"] == row["imb_factor"] else "?",
               tiny=label.endswith(TINY_SUFFIX), epochs=np.nan, backbone=None, views=(), config={},
               recorded_deviations=None, precision="", selected_on="test", best_on_test_top1=np.nan,
               num_classes=np.nan, **cost_fields(None),
               **_group_values(None, "best"), **_group_values(None, "last"))
    return row


def _load_run_or_reason(folder: Path) -> dict[str, Any]:
    try:
        return load_run(folder)
    except Exception as exc:  # one damaged folder must not take the whole report down
        return unreadable_row(folder, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def load_runs(results_dir: Path) -> pd.DataFrame:
    """Every run folder under `results_dir`, one row each (empty frame when there are none)."""
    rows = [_load_run_or_reason(folder) for folder in find_runs(Path(results_dir))]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    for column in [c for c in frame if c.startswith(("best_", "last_"))] + [
            "train_seconds", "images_per_s", "peak_memory_mb", "eval_seconds", "num_classes"]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame.sort_values(["dataset_label", "imb_factor", "method", "seed"]).reset_index(drop=True)


def load_history(folder: Path) -> pd.DataFrame:
    """history.csv of a run (epoch, lr, losses, top1, groups, speed); empty if absent or empty."""
    path = Path(folder) / "history.csv"
    try:
        if path.stat().st_size == 0:
            return pd.DataFrame()
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):  # missing, binary garbage, ragged rows
        return pd.DataFrame()


def load_per_class(folder: Path, which: str = "best") -> pd.DataFrame:
    """Per-class accuracy of the best (or last) epoch against each class's training count.

    Columns: class, train_count, accuracy (NaN for a class without test images).
    """
    try:
        metrics = read_metrics(Path(folder)) or {}
    except (OSError, ValueError):
        metrics = {}
    accs = (metrics.get(which) or {}).get("per_class") or []
    counts = metrics.get("class_counts") or []
    if len(accs) != len(counts):
        return pd.DataFrame(columns=["class", "train_count", "accuracy"])
    return pd.DataFrame({
        "class": range(len(counts)),
        "train_count": counts,
        "accuracy": [np.nan if a is None else a for a in accs],
    })


def epochs_done(folder: Path) -> int:
    """How many epochs an unfinished run has completed (rows of its history)."""
    return len(load_history(folder))
