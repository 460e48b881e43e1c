"""Resolve one run's configuration from the YAML layers, with strict key and type checks.

Layers, later wins:
  1. `configs/defaults.yaml`                     keys shared by every run
  2. `configs/datasets/<dataset>.yaml`           dataset defaults (e.g. its backbone)
  3. `configs/methods/<method>.yaml` `recipe:`   the method's paper recipe for the shared keys,
     plus `options:`                             the method's own keys (release values)
  4. `configs/methods/<method>.yaml` `datasets: <dataset>:`   per-dataset recipe changes
  5. grid overrides (`overrides:` and `method_overrides: <method>:` of the grid YAML)
  6. command-line `--set key=value`
Layers 1-4 are the *paper recipe*; whatever layers 5-6 change is a deviation, listed by
`recipe_deviations` and written to the run's metadata. A method's YAML also says, per dataset, how
its recipe was obtained (`recipe_status:`, `recipe_status()`: read in a release, or reconstructed);
the report labels reconstructed recipes.

Every key must exist in layer 1 or in the method's `options:`; every value must have the type of
the key's default (an int is accepted where a float is expected). Anything else raises
`LTBenchError` naming the key, where it came from, and what is accepted.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from benchmarks import CONFIG_DIR, LTBenchError

IDENTITY_KEYS = ("dataset", "imb_factor", "method", "seed")

# How a run executes, not what it computes: changing these is not a deviation from the recipe
# (they are still recorded in config.yaml and env.json).
EXECUTION_KEYS = ("pipeline", "amp", "memory_format", "compile", "num_workers", "eval_batch_size", "sync_bn")


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise LTBenchError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LTBenchError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_value(key: str, value: Any, default: Any, source: str) -> Any:
    """Return `value` if it has the type of `default` (int -> float is widened), else raise."""
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, (int, float)):
        return float(value)
    elif isinstance(value, type(default)):
        return value
    raise LTBenchError(
        f"{source}: key {key!r} must be {_type_name(default)} (like {default!r}), got {value!r}"
    )


def check_keys(layer: dict[str, Any], schema: dict[str, Any], source: str) -> dict[str, Any]:
    checked = {}
    for key, value in layer.items():
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise LTBenchError(
                f"{source}: unknown key {key!r}{hint}; accepted: {', '.join(sorted(schema))}"
            )
        checked[key] = _check_value(key, value, schema[key], source)
    return checked


def _section(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    section = data.get(name) or {}
    if not isinstance(section, dict):
        raise LTBenchError(f"{path}: {name!r} must be a mapping, got {section!r}")
    return section


def method_file(method: str) -> Path:
    return CONFIG_DIR / "methods" / f"{method}.yaml"


# How a method's recipe on a dataset was obtained (the `recipe_status:` section of its YAML, a
# mapping dataset -> status; datasets it does not name are `release`):
#   release        read in the release's code or its README command
#   reconstructed  no release code for that dataset: restated from the paper's text, a secondary
#                  source, or another dataset's release recipe (the report labels such cells)
RECIPE_STATUSES = ("release", "reconstructed")


def recipe_status(method: str, dataset: str) -> str:
    """`release` or `reconstructed`: how `method`'s recipe on `dataset` was obtained."""
    path = method_file(method)
    if not path.exists():
        raise LTBenchError(f"method {method!r} has no recipe file {path}")
    statuses = _section(load_yaml(path), "recipe_status", path)
    status = statuses.get(dataset, "release")
    if status not in RECIPE_STATUSES:
        raise LTBenchError(f"{path}: recipe_status.{dataset} must be one of {', '.join(RECIPE_STATUSES)}, "
                           f"got {status!r}")
    return status


def paper_recipe(method: str, dataset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The paper recipe of `method` on `dataset` (layers 1-4) and the schema of accepted keys."""
    defaults = load_yaml(CONFIG_DIR / "defaults.yaml")
    path = method_file(method)
    if not path.exists():
        raise LTBenchError(f"method {method!r} has no recipe file {path}")
    method_yaml = load_yaml(path)
    allowed = {"recipe", "options", "datasets", "recipe_status"}
    extra = set(method_yaml) - allowed
    if extra:
        raise LTBenchError(f"{path}: unknown section(s) {sorted(extra)}; accepted: {sorted(allowed)}")
    options = _section(method_yaml, "options", path)
    clash = set(options) & set(defaults)
    if clash:
        raise LTBenchError(f"{path}: options {sorted(clash)} shadow shared keys; set them under recipe:")
    schema = {**defaults, **options}
    recipe_status(method, dataset)  # a bad recipe_status value is an error here, not in the report

    config = dict(schema)
    dataset_path = CONFIG_DIR / "datasets" / f"{dataset}.yaml"
    if dataset_path.exists():
        config.update(check_keys(load_yaml(dataset_path), defaults, str(dataset_path)))
    config.update(check_keys(_section(method_yaml, "recipe", path), defaults, f"{path} recipe"))
    per_dataset = _section(method_yaml, "datasets", path)
    config.update(
        check_keys(per_dataset.get(dataset) or {}, schema, f"{path} datasets.{dataset}")
    )
    return config, schema


def resolve_config(
    method: str,
    dataset: str = "cifar10",
    imb_factor: float = 100,
    seed: int = 0,
    grid_overrides: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fully resolved, validated configuration of one run (a flat dict)."""
    config, schema = paper_recipe(method, dataset)
    config.update(check_keys(grid_overrides or {}, schema, f"grid overrides (method {method})"))
    config.update(check_keys(overrides or {}, schema, f"--set (method {method})"))
    config.update(dataset=dataset, imb_factor=imb_factor, method=method, seed=seed)
    return config


def recipe_deviations(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Keys where `config` differs from its method's paper recipe: {key: {paper, run}}."""
    recipe, _ = paper_recipe(config["method"], config["dataset"])
    return {
        key: {"paper": recipe[key], "run": config[key]}
        for key in recipe
        if key in config and key not in EXECUTION_KEYS and config[key] != recipe[key]
    }


def parse_set_arguments(items: list[str]) -> dict[str, Any]:
    """`["lr=0.15", "lr_steps=[[160, 0.01]]"]` -> {"lr": 0.15, ...}; values are parsed as YAML."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise LTBenchError(f"--set expects key=value, got {item!r}")
        try:
            parsed[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise LTBenchError(f"--set {key}: cannot parse value {raw!r}") from None
    return parsed
