"""Recipe variants and sweeps: which folder a non-recipe configuration lives in.

A run's identity is (dataset, grid promise, IF, method, variant, seed). The grid promise is what
a grid's `overrides:` and `--tiny` apply to every method (its epochs, batch size, subset caps: the
smoke grid's compression); it names the dataset-level folder (`digits-tiny@<hash>`, `grid_label`)
and is left out of each method's label, which names only what differs from it (`beyond_grid`).
Without a promise (a real grid, `--set` only) nothing changes: the variant is empty for the
method's paper recipe (its folder is `<method>/seed<S>/`, as it always was); any other
configuration gets a label and lives in `<method>@<label>/seed<S>/`, next to the recipe's folder,
so that an ablation and the recipe run of the same seed never collide. The label is `--name NAME` when given, else
`variant_label` of the run's recipe deviations (`benchmarks.config.recipe_deviations`, so
execution keys such as `pipeline` or `amp` never make a variant). The run's config.yaml records
it under the key `variant`: {name, deviations: {key: value}}, the full mapping even when the label
is shortened. The paper recipe's config has no such key, so folders written before variants
existed still compare equal to their resolved configuration.

Sweeps (`--sweep key=v1,v2` and a grid file's `sweeps:`) expand into points, each a mapping of
keys to values applied on top of the grid's overrides; every point is one variant.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from typing import Any

from benchmarks import LTBenchError
from benchmarks.store.results import VARIANT_KEY, variant_name  # noqa: F401 (re-exported)

MAX_LABEL_LENGTH = 120  # longer labels keep a readable prefix and end in "~" + HASH_LENGTH hex digits
HASH_LENGTH = 10
SAFE_TEXT = re.compile(r"[A-Za-z0-9._+-]+")  # a value's characters that need no escaping in a folder name
# `--name` labels have their own namespace: no `=` or `,` (and no leading `~`), which every label
# derived from deviations has (`variant_label`), so a name never takes a derived label's folder.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,79}")


def _render(value: Any) -> str | None:
    """A value as label text, or None when it cannot be written losslessly with safe characters
    (lists, strings with spaces or separators, ...)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        return None
    return text if SAFE_TEXT.fullmatch(text) else None


def _digest(values: dict[str, Any]) -> str:
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]


def variant_label(values: dict[str, Any]) -> str:
    """The folder label of a configuration that deviates from its recipe in `values` ({key: value}).

    `key=value` pairs sorted by key and joined by commas (`centroids_per_class=3,eta=0.0`): the
    same mapping gives the same label whatever its order, and different mappings give different
    labels. A value that cannot be written exactly in safe characters (a list, a string with
    spaces) is written as `key=~` and the label gets the hash of the full mapping; a label over
    MAX_LABEL_LENGTH characters keeps whole pairs up to the limit and ends in `~<hash>`. The
    hash (sha256 of the mapping as sorted JSON) keeps such labels distinct; config.yaml holds the
    full mapping. Labels use only letters, digits and `._+-=,~`: safe as a folder name anywhere.
    """
    if not values:
        raise ValueError("the paper recipe has no variant label")
    pairs, exact = [], True
    for key in sorted(values):
        text = _render(values[key])
        exact &= text is not None
        pairs.append(f"{key}={text if text is not None else '~'}")
    label = ",".join(pairs)
    if exact and len(label) <= MAX_LABEL_LENGTH:
        return label
    suffix = "~" + _digest(values)
    kept = ""
    for pair in pairs:
        candidate = f"{kept},{pair}" if kept else pair
        if len(candidate) + 1 + len(suffix) > MAX_LABEL_LENGTH:
            break
        kept = candidate
    return f"{kept},{suffix}" if kept else suffix


def check_variant_name(name: str) -> str:
    """A `--name` as given, or LTBenchError saying what a name may contain (`NAME_PATTERN`)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise LTBenchError(f"--name {name!r}: a variant name is 1-80 characters of letters, digits and ._+- "
                           "starting with a letter or digit, with no '=' or ',' (those mark the labels derived "
                           "from a configuration's deviations; the name becomes part of a folder name)")
    return name


def beyond_grid(config: dict[str, Any], deviations: dict[str, Any], promised: dict[str, Any]) -> dict[str, Any]:
    """What `config` changes beyond its recipe with the grid's promise applied: each key whose
    value differs from `promised` where the grid promises the key, from the recipe elsewhere
    (`deviations`: {key: run value} against the recipe). A promised key that a method override
    or `--set` changes again is included (`batch_size=16` under a grid that promises 32), and so is
    one left at the recipe's value against the promise: the grid label and this mapping together
    determine the configuration."""
    beyond = {k: v for k, v in deviations.items() if k not in promised or promised[k] != v}
    beyond.update({k: config[k] for k in promised if k not in deviations and k in config and config[k] != promised[k]})
    return dict(sorted(beyond.items()))


def grid_label(grid: dict[str, Any]) -> str:
    """The dataset-level folder suffix of a grid promise ({key: value} that the grid's
    `overrides:` and --tiny apply to every method): "" for none, else "@" and the first
    HASH_LENGTH hex digits of its sha256 (the same digest as the variant labels')."""
    return "@" + _digest(grid) if grid else ""


def variant_record(config: dict[str, Any], name: str | None = None, grid: dict[str, Any] | None = None,
                   promised: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The `variant` entry of a resolved config.

    Without a grid promise: {name, deviations}, or None on the paper recipe (unless a name is
    given: a named run of the recipe is its own variant), as it always was. With one (`grid`,
    and `promised`: the part of it that applies to this method, default all of it):
    {name, deviations, grid, beyond_grid}, always, where the label names only `beyond_grid`
    (`beyond_grid()`), since the dataset folder's grid label says the rest."""
    from benchmarks.config import recipe_deviations

    deviations = {key: d["run"] for key, d in sorted(recipe_deviations(config).items())}
    if grid:
        beyond = beyond_grid(config, deviations, grid if promised is None else promised)
        label = name if name is not None else (variant_label(beyond) if beyond else "")
        return {"name": label, "deviations": deviations, "grid": dict(sorted(grid.items())), "beyond_grid": beyond}
    if name is None and not deviations:
        return None
    return {"name": name if name is not None else variant_label(deviations), "deviations": deviations}


def with_variant(config: dict[str, Any], name: str | None = None, grid: dict[str, Any] | None = None,
                 promised: dict[str, Any] | None = None) -> dict[str, Any]:
    """`config` with its `variant` entry (none on the paper recipe without a name or a grid promise)."""
    config = {k: v for k, v in config.items() if k != VARIANT_KEY}
    record = variant_record(config, name, grid, promised)
    return config if record is None else {**config, VARIANT_KEY: record}


def config_grid_label(config: dict[str, Any] | None) -> str:
    """The grid label of the dataset folder a config lives under ("" without a grid promise)."""
    record = (config or {}).get(VARIANT_KEY)
    return grid_label(record.get("grid") or {}) if isinstance(record, dict) else ""



def is_named(config: dict[str, Any] | None) -> bool:
    """Whether the variant was named with --name (rather than labelled by its deviations)."""
    record = (config or {}).get(VARIANT_KEY)
    if not isinstance(record, dict) or not record.get("name"):
        return False
    labelled = record.get("beyond_grid", record.get("deviations")) or {}
    return not labelled or record["name"] != variant_label(labelled)


# -- sweeps ----------------------------------------------------------------------------------------
def parse_sweep_arguments(items: list[str]) -> dict[str, list[Any]]:
    """`["eta=0,0.05", "recluster_once_per_epoch=true,false"]` -> {"eta": [0, 0.05], ...}.

    Each value is parsed by `benchmarks.config.parse_value`, the parser of `--set` (the whole
    right-hand side is read as a YAML flow list, so `lr_steps=[[160,0.01]],[[100,0.1]]` is two
    values, and `lr=1e-1,0.05` two floats)."""
    from benchmarks.config import parse_value, split_assignment

    sweeps: dict[str, list[Any]] = {}
    for item in items:
        key, raw = split_assignment(item, "--sweep", "key=value1,value2,...")
        if not raw.strip():
            raise LTBenchError(f"--sweep expects key=value1,value2,..., got {item!r}")
        if key in sweeps:
            raise LTBenchError(f"--sweep {key} is given twice; list all its values in one --sweep")
        sweeps[key] = parse_value(raw, "--sweep", key, several=True)
    return sweeps


def check_sweeps(sweeps: Any, where: str) -> list[dict[str, list[Any]]]:
    """A grid file's sweeps of one method: one mapping {key: [values]} (their cartesian product)
    or a list of such mappings (the union of their products). Returns the list form."""
    blocks = sweeps if isinstance(sweeps, list) else [sweeps]
    accepted = "a mapping of key: [values] (their product) or a list of such mappings (one sweep each)"
    if not blocks:
        raise LTBenchError(f"{where}: an empty list of sweeps; expected {accepted}")
    for block in blocks:
        if not isinstance(block, dict) or not block:
            raise LTBenchError(f"{where}: expected {accepted}, got {block!r}")
        for key, values in block.items():
            if not isinstance(values, list) or not values:
                raise LTBenchError(f"{where}: {key} must list one or more values, got {values!r}")
    return blocks


def sweep_points(blocks: list[dict[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every point of the sweeps, in order, without repeats: each block's cartesian product."""
    points: list[dict[str, Any]] = []
    for block in blocks:
        keys = list(block)
        for values in itertools.product(*(block[k] for k in keys)):
            point = dict(zip(keys, values))
            if point not in points:
                points.append(point)
    return points
