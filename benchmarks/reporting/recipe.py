"""How a run's configuration differs from its method's paper recipe.

Two views of the same question:
- `run_deviations`: the deviations that decide the verdict. A finished run recorded them in its
  metrics.json when it ran (the recipe files may have changed since, and the run's own record is
  what it was measured against); older runs without that record are recomputed from config.yaml
  with `recipe_deviations`.
- `recipe_diff`: the listing of the report's recipe-diff section, recomputed for every run (also
  the failed and unfinished ones) against `paper_recipe(method, dataset)`, including keys the
  recipe does not know. Execution keys (pipeline, amp, ...) change how a run executes, not what it
  computes, so neither view lists them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from benchmarks import LTBenchError
from benchmarks.config import EXECUTION_KEYS, IDENTITY_KEYS, method_yaml, paper_recipe, recipe_deviations, recipe_status

Deviations = dict[str, dict[str, Any]]
NOT_IN_RECIPE = "(not in recipe)"
RECONSTRUCTED = "reconstructed recipe"  # the report's label of a recipe no release gives (config.RECIPE_STATUSES)
MATCHES = "matches the paper recipe"


def recipe_label(method: Any, dataset: Any) -> str:
    """RECONSTRUCTED where the method's YAML marks its recipe on `dataset` reconstructed, else ""."""
    try:
        return RECONSTRUCTED if recipe_status(str(method), str(dataset)) == "reconstructed" else ""
    except LTBenchError:
        return ""  # no recipe file (a method since removed): the recipe diff says so


def recorded_deviations(metrics: dict[str, Any] | None, config: dict[str, Any]) -> Deviations | None:
    """metrics.json's `deviations`, completed for runs written before evaluation followed the
    release's precision (their `precision` record has `release` but no `eval`): those evaluated in fp32, which
    is the deviation `eval_precision` where the method's release evaluated otherwise (BCCL's fp16,
    `release_eval_precision:`), so that they group with the runs that record it."""
    recorded = (metrics or {}).get("deviations")
    precision = (metrics or {}).get("precision") or {}
    if not isinstance(recorded, dict) or "release" not in precision or "eval" in precision \
            or "eval_precision" in recorded or not config.get("method"):
        return recorded  # no precision record at all: older still, what it evaluated in is unknown
    try:  # the YAML itself: config.release_eval_precision validates with torch's module, the report has none
        release_eval = method_yaml(str(config["method"])).get("release_eval_precision", "fp32")
    except LTBenchError:
        return recorded  # a method since removed
    if release_eval == "fp32":
        return recorded
    return {**recorded, "eval_precision": {"paper": release_eval, "run": "fp32"}}


def run_deviations(config: dict[str, Any], recorded: Deviations | None) -> tuple[Deviations, str]:
    """The run's deviations and a note ("" or why they could not be computed)."""
    if isinstance(recorded, dict):
        return recorded, ""
    if not config:
        return {}, "no config.yaml"
    try:
        return recipe_deviations(config), ""
    except (LTBenchError, KeyError) as exc:
        return {}, f"no recipe to compare with ({exc})"


def format_deviations(deviations: Deviations, suffix: str = "") -> list[str]:
    """{"epochs": {"paper": 200, "run": 6}} -> ["epochs 6≠200"], sorted by key."""
    return [f"{key} {plain(d['run'])}≠{plain(d['paper'])}{suffix}" for key, d in sorted(deviations.items())]


def recipe_diff(config: dict[str, Any]) -> tuple[Deviations, str]:
    """Every recipe key where `config` differs from the paper recipe, and a note on failure.

    Unlike `recipe_deviations` this also lists keys the recipe does not have (paper value
    NOT_IN_RECIPE), so that a stale or hand-edited config shows up.
    """
    if not config or "method" not in config or "dataset" not in config:
        return {}, "no usable config.yaml"
    try:
        recipe, _ = paper_recipe(config["method"], config["dataset"])
    except LTBenchError as exc:
        return {}, str(exc)
    skip = set(EXECUTION_KEYS) | set(IDENTITY_KEYS)
    keys = [k for k in list(recipe) + [k for k in config if k not in recipe] if k not in skip]
    return {
        key: {"paper": recipe.get(key, NOT_IN_RECIPE), "run": config.get(key)}
        for key in keys
        if key not in recipe or config.get(key) != recipe[key]
    }, ""


def plain(value: Any) -> Any:
    """A whole float as an integer (200.0 -> 200), inside lists and dicts too; other values as they
    are. YAML and CSV round trips turn integers into floats; the recipe diff shows what was meant."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


DIFF_COLUMNS = ["folder", "dataset_label", "imb_factor", "method", "variant", "seed", "state", "key", "run",
                "paper", "note"]


def recipe_diff_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Long format, one row per (run folder, differing key); a run without differences gets one row
    with an empty key and a note, so every run folder appears, with its variant label."""
    rows = []
    for run in runs.itertuples():
        diff, note = recipe_diff(run.config)
        ident = {"folder": run.folder, "dataset_label": run.dataset_label, "imb_factor": run.if_label,
                 "method": run.method, "variant": getattr(run, "variant", ""), "seed": run.seed, "state": run.state}
        label = recipe_label(run.method, run.config.get("dataset", run.dataset)) if not note else ""
        if not diff:
            rows.append({**ident, "key": "", "run": "", "paper": "", "note": note or label or MATCHES})
        for key, d in diff.items():
            rows.append({**ident, "key": key, "run": plain(d["run"]), "paper": plain(d["paper"]), "note": label})
    return pd.DataFrame(rows, columns=DIFF_COLUMNS)
