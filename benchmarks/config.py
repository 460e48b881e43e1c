"""Resolve one run's configuration from the YAML layers, with strict key and type checks.

Layers, later wins:
  1. `configs/defaults.yaml`                     keys shared by every run
  2. `configs/datasets/<dataset>.yaml`           dataset defaults (e.g. its backbone)
  3. `configs/methods/<method>.yaml` `recipe:`   the method's paper recipe for the shared keys,
     plus `options:`                             the method's own keys (release values);
     `base: <other method>` starts from that method's YAML (`method_yaml`)
  4. `configs/methods/<method>.yaml` `datasets: <dataset>:`   per-dataset recipe changes
  5. grid overrides (`overrides:` and `method_overrides: <method>:` of the grid YAML)
  6. command-line `--set key=value`
Layers 1-4 are the *paper recipe*; whatever layers 5-6 change is a deviation, listed by
`recipe_deviations` and written to the run's metadata. A method's YAML also says, per dataset, how
its recipe was obtained (`recipe_status:`, `recipe_status()`: read in a release, or reconstructed);
the report labels reconstructed recipes; and the precision its release trained in
(`release_precision:`, `release_precision()`, see `benchmarks.train.precision`). A method YAML is checked
whole, whichever dataset runs: `datasets:` and `recipe_status:` name registered datasets, every
status is known, and `options:` holds exactly the keys the method's code reads (`Method.option_keys`).

Every key must exist in layer 1 or in the method's `options:`; every value must have the type of
the key's default (an int is accepted where a float is expected). Anything else raises
`LTBenchError` naming the key, where it came from, and what is accepted.

`validate_config` is the one place that checks a resolved config's *values* (finite numbers in
range, known names, the method's own options through `Method.check_config`); `resolve_config`
calls it, so every run the planner produces has passed it before anything is written.

Every YAML file the project reads (configs, grids, run folders' config.yaml, the paper numbers)
and every `--set` value goes through `yaml_load`: YAML 1.2 floats (`1e-3` is a float, not the
string PyYAML's YAML 1.1 resolver makes of it) and duplicate keys refused.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks import CONFIG_DIR, LTBenchError
from benchmarks.checks import _non_finite, _where, check_ranges  # noqa: F401 (check_ranges re-exported)
from benchmarks.store.results import ADDED_KEYS, ADDED_OPTIONS, with_added_keys  # noqa: F401 (re-exported)
from benchmarks.store.yamlio import ProjectYAMLLoader, load_yaml, yaml_load, yaml_problem  # noqa: F401 (re-exported)

# What names a run (its folder): `variant` is set by the grid planner, and only on runs that are
# not the paper recipe (see benchmarks.run.variants).
IDENTITY_KEYS = ("dataset", "imb_factor", "method", "variant", "seed")

# How a run executes, not what it computes: changing these is not a deviation from the recipe
# (they are still recorded in config.yaml and env.json).
EXECUTION_KEYS = ("pipeline", "amp", "memory_format", "compile", "num_workers", "eval_batch_size", "sync_bn")

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


METHOD_SECTIONS = ("base", "recipe", "options", "datasets", "recipe_status", "release_precision", "release_eval_precision")


def _merge_sections(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """`child` over `base`, one level into `recipe`/`options`/`recipe_status` and two into
    `datasets` (a child's `datasets: cifar10: {lr: 0.2}` changes lr only, keeping the base's other
    cifar10 keys); scalars (`release_precision`) and lists (`lr_steps`) are replaced whole."""
    merged = dict(base)
    for name, value in child.items():
        if name == "datasets" and isinstance(value, dict) and isinstance(base.get(name), dict):
            merged[name] = dict(base[name])
            for dataset, keys in value.items():
                inherited = base[name].get(dataset)
                both = isinstance(inherited, dict) and isinstance(keys, dict)
                merged[name][dataset] = {**inherited, **keys} if both else keys
        elif isinstance(value, dict) and isinstance(base.get(name), dict):
            merged[name] = {**base[name], **value}
        else:
            merged[name] = value
    return merged


def method_yaml(method: str, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """A method's YAML with its `base:` resolved: `base: ce` starts from ce's YAML (its own base
    resolved first), merged with this file's sections (`_merge_sections`), so that a variant of a
    recipe states only what differs. An unknown base or a cycle (`a: base b`, `b: base a`) is an
    LTBenchError naming the chain."""
    path = method_file(method)
    if not path.exists():
        if _chain:
            raise LTBenchError(f"{method_file(_chain[-1])}: base {method!r} is not a method recipe (no {path}); "
                               f"known: {', '.join(sorted(p.stem for p in path.parent.glob('*.yaml')))}")
        raise LTBenchError(f"method {method!r} has no recipe file {path}")
    data = load_yaml(path)
    extra = set(data) - set(METHOD_SECTIONS)
    if extra:
        raise LTBenchError(f"{path}: unknown section(s) {sorted(extra)}; accepted: {sorted(METHOD_SECTIONS)}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise LTBenchError(f"{path}: base must be a method name (e.g. base: ce), got {base!r}")
    chain = (*_chain, method)
    if base in chain:
        raise LTBenchError(f"{path}: base {base!r} makes a cycle ({' -> '.join((*chain, base))}); "
                           "a recipe can start from another only if that one does not start from it")
    return _merge_sections(method_yaml(base, chain), data)


# How a method's recipe on a dataset was obtained (the `recipe_status:` section of its YAML, a
# mapping dataset -> status; datasets it does not name are `release`):
#   release        read in the release's code or its README command
#   reconstructed  no release code for that dataset: restated from the paper's text, a secondary
#                  source, or another dataset's release recipe (the report labels such cells)
#   none           no recipe for that dataset at all: the paper grids skip the method there, and
#                  the dry run and the report list it as "no recipe" instead of leaving it absent
RECIPE_STATUSES = ("release", "reconstructed", "none")
NO_RECIPE = "none"


def _precision_section(method: str, section: str) -> str:
    """A precision section of the method's YAML (`release_precision`, `release_eval_precision`),
    fp32 when absent, checked against `benchmarks.train.precision.PRECISIONS`."""
    from benchmarks.train.precision import PRECISIONS

    path = method_file(method)
    value = method_yaml(method).get(section, "fp32") if path.exists() else "fp32"
    if value not in PRECISIONS:
        raise LTBenchError(f"{path}: {section} must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def release_precision(method: str) -> str:
    """The precision the method's release trained in (`release_precision:` of its YAML, default
    fp32; see `benchmarks.train.precision`)."""
    return _precision_section(method, "release_precision")


def release_eval_precision(method: str) -> str:
    """The precision the method's release evaluated in (`release_eval_precision:` of its YAML,
    default fp32; `Execution.eval_precision`, `benchmarks.train.precision`)."""
    return _precision_section(method, "release_eval_precision")


def recipe_status(method: str, dataset: str) -> str:
    """`release` or `reconstructed`: how `method`'s recipe on `dataset` was obtained."""
    path = method_file(method)
    if not path.exists():
        raise LTBenchError(f"method {method!r} has no recipe file {path}")
    statuses = _section(method_yaml(method), "recipe_status", path)
    _check_dataset_names(statuses, path, "recipe_status")
    for name, status in statuses.items():  # every entry, not only the dataset asked about
        if status not in RECIPE_STATUSES:
            raise LTBenchError(f"{path}: recipe_status.{name} must be one of {', '.join(RECIPE_STATUSES)}, "
                               f"got {status!r}")
    return statuses.get(dataset, "release")


def _check_dataset_names(section: dict[str, Any], path: Path, name: str) -> None:
    """Every key of a method YAML's per-dataset `section` names a registered dataset: a typo would
    otherwise silently drop that dataset's entry."""
    from benchmarks.data.datasets import DATASETS

    known = DATASETS.names()
    for key in section:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise LTBenchError(f"{path}: {name}: unknown dataset {key!r}{hint}; known: {', '.join(known)}")


def _check_option_keys(method: str, options: dict[str, Any], path: Path) -> None:
    """The YAML's `options:` are exactly the keys the method's code reads (`Method.option_keys`)."""
    from benchmarks.train.methods import METHODS

    reads = METHODS.get(method).option_keys
    unread = [key for key in options if key not in reads]
    if unread:
        raise LTBenchError(f"{path}: options: {', '.join(map(str, unread))} is read by no code of method {method} "
                           f"(it reads: {', '.join(sorted(reads)) or 'none'}; a new option is also named in the "
                           f"method's option_keys)")
    missing = [key for key in reads if key not in options]
    if missing:
        raise LTBenchError(f"{path}: options: lacks {', '.join(missing)}, which method {method} reads "
                           "(give each its release value)")


def has_recipe(method: str, dataset: str) -> bool:
    """Whether `method` has a recipe (released or reconstructed) for `dataset`."""
    return recipe_status(method, dataset) != NO_RECIPE


def no_recipe_methods(dataset: str) -> list[str]:
    """The methods (one recipe file each in configs/methods/) without a recipe for `dataset`
    (`recipe_status: none`), sorted. Reads the YAML files only: the report imports no training code."""
    return [path.stem for path in sorted((CONFIG_DIR / "methods").glob("*.yaml"))
            if not has_recipe(path.stem, dataset)]


@dataclass(frozen=True)
class Execution:
    """How the run executes on this machine, resolved from the `auto` settings (`EXECUTION_KEYS`).

    It lives with the configuration (not the trainer) so that checking a config's execution keys
    needs no trainer; torch and `benchmarks.train.precision` are imported by the methods that use them.
    """

    device: "torch.device"
    pipeline: str  # reference | fast
    precision: str  # fp32 | fp16 | bf16: what the training step runs in (benchmarks/train/precision.py)
    release_precision: str  # what the method's release trained in
    release_eval_precision: str  # what the method's release evaluated in (see `eval_precision`)
    channels_last: bool
    cudnn_benchmark: bool  # cuDNN picks the fastest kernels for the fixed shapes (CUDA; the releases do too)
    compile: bool

    @classmethod
    def resolve(cls, config: dict[str, Any], device: "torch.device") -> "Execution":
        from benchmarks.train import precision  # torch: imported when a run executes, not to read keys

        cuda = device.type == "cuda"
        pipeline = config["pipeline"] if config["pipeline"] != "auto" else ("fast" if cuda else "reference")
        memory_format = config["memory_format"]
        if memory_format == "auto":
            memory_format = "channels_last" if cuda else "contiguous"
        for key, value, allowed in (
            ("pipeline", pipeline, ("reference", "fast")),
            ("amp", config["amp"], precision.AMP_MODES[1:]),
            ("memory_format", memory_format, ("channels_last", "contiguous")),
        ):
            if value not in allowed and value != "auto":
                raise LTBenchError(f"{key} must be one of auto, {', '.join(allowed)}; got {value!r}")
        release = release_precision(config["method"])
        run_precision = precision.resolve_precision(config["amp"], release, device.type)
        return cls(
            device=device,
            pipeline=pipeline,
            precision=run_precision,
            release_precision=release,
            release_eval_precision=release_eval_precision(config["method"]),
            channels_last=memory_format == "channels_last",
            cudnn_benchmark=cuda,
            compile=bool(config["compile"]) and cuda,
        )

    @property
    def fp32_islands(self) -> bool:
        """Heads, classifiers, losses and k-means leave the training step's autocast (bf16 only)."""
        from benchmarks.train import precision

        return precision.islands_for(self.precision)

    @property
    def eval_precision(self) -> str:
        """What evaluation runs in: the release's evaluation precision when the run trains in the
        release's precision (BCCL on CUDA: fp16 autocast, as its test loop), else float32."""
        return self.release_eval_precision if self.precision == self.release_precision else "fp32"

    def autocast(self):
        """The training step's precision context: autocast and whether float32 islands apply."""
        return self._precision_context(self.precision)

    def eval_autocast(self):
        """The evaluation's precision context (`eval_precision`; none for float32)."""
        return self._precision_context(self.eval_precision)

    def _precision_context(self, run_precision: str):
        import contextlib

        from benchmarks.train import precision

        stack = contextlib.ExitStack()
        stack.enter_context(precision.autocast(run_precision, self.device.type))
        stack.enter_context(precision.islands(precision.islands_for(run_precision)))
        return stack

    def record(self) -> dict[str, Any]:
        """metrics.json's `precision`: what ran, what the release ran, and the TF32 flags."""
        import torch

        return {"run": self.precision, "release": self.release_precision, "fp32_islands": self.fp32_islands,
                "eval": self.eval_precision, "release_eval": self.release_eval_precision,
                "tf32_conv": bool(torch.backends.cudnn.allow_tf32),
                "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32)}


def paper_recipe(method: str, dataset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The paper recipe of `method` on `dataset` (layers 1-4) and the schema of accepted keys."""
    defaults = load_yaml(CONFIG_DIR / "defaults.yaml")
    path = method_file(method)
    if not path.exists():
        raise LTBenchError(f"method {method!r} has no recipe file {path}")
    sections = method_yaml(method)
    options = _section(sections, "options", path)
    clash = set(options) & set(defaults)
    if clash:
        raise LTBenchError(f"{path}: options {sorted(clash)} shadow shared keys; set them under recipe:")
    _check_option_keys(method, options, path)
    schema = {**defaults, **options}
    if recipe_status(method, dataset) == NO_RECIPE:  # bad values are errors here, not in a run or report
        raise LTBenchError(f"method {method} has no recipe for {dataset} (recipe_status.{dataset}: none in {path}; "
                           f"see docs/methods/{method}.md); the datasets it has one for are its paper grids'")
    release_precision(method)
    release_eval_precision(method)

    config = dict(schema)
    dataset_path = CONFIG_DIR / "datasets" / f"{dataset}.yaml"
    if dataset_path.exists():  # its `source:` declares the dataset itself (benchmarks.data.datasets.declared)
        dataset_defaults = {k: v for k, v in load_yaml(dataset_path).items() if k != "source"}
        config.update(check_keys(dataset_defaults, defaults, str(dataset_path)))
    config.update(check_keys(_section(sections, "recipe", path), defaults, f"{path} recipe"))
    per_dataset = _section(sections, "datasets", path)
    _check_dataset_names(per_dataset, path, "datasets")
    config.update(
        check_keys(per_dataset.get(dataset) or {}, schema, f"{path} datasets.{dataset}")
    )
    config["lr_steps"] = canonical_lr_steps(config.get("lr_steps"))  # what resolved configs hold
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
    validate_config(config)
    config["lr_steps"] = canonical_lr_steps(config["lr_steps"])
    return config


def canonical_lr_steps(steps: Any) -> Any:
    """lr_steps' [epoch, factor] pairs sorted by epoch: the schedule sorts them
    (`benchmarks.train.schedules`), so their order is not part of a configuration, and another order
    than the recipe's must not make a new variant. Anything malformed comes back as it is, for
    `validate_config` to refuse."""
    if isinstance(steps, list) and all(isinstance(s, list) and len(s) == 2 for s in steps):
        try:
            return sorted(steps)
        except TypeError:
            return steps
    return steps


# Ranges of the shared keys (configs/defaults.yaml), as conditions `check_ranges` reads. A method's
# own options are checked by its `Method.check_config`, also with `check_ranges`.
SHARED_RANGES = {
    "imb_factor": ">= 1",
    "seed": ">= 0",
    "epochs": ">= 1",
    "batch_size": ">= 1",
    "eval_batch_size": ">= 1",
    "lr": ">= 0",
    "momentum": ">= 0 <= 1",
    "weight_decay": ">= 0",
    "warmup_epochs": ">= 0",
    "cosine_scale": "> 0",
    "cosine_init_max_norm": "> 0",
    "subset_seed": ">= 0",
    "train_cap_per_class": ">= 0",
    "test_cap_per_class": ">= 0",
    "num_workers": ">= 0",
    "sampler_samples_per_class": ">= 1",
    "reweight_beta": ">= 0 < 1",
    "reweight_epoch": ">= 0",
}
CLASSIFIERS = ("linear", "cosine")  # what benchmarks.train.models.build_classifier builds
LINEAR_INITS = ("kaiming", "default")
def validate_config(config: dict[str, Any]) -> None:
    """Every value check of one resolved run config: the one place where they live.

    Called by `resolve_config`, so at plan time, before anything is written (a value found wrong
    in the middle of a grid would leave a half-written run folder). Checks: every number anywhere
    in the config is finite; the shared keys' ranges (`SHARED_RANGES`); lr_steps pairs with factor
    > 0; the names of schedule, execution modes, backbone, classifier, init and views; and the
    method's own options through its `Method.check_config` hook, so a new method brings its
    checks with it.
    """
    from benchmarks.train.methods import METHODS

    where = _where(config)
    for key in ("dataset", "method"):
        if not isinstance(config.get(key), str):
            raise LTBenchError(f"{key} names must be strings, got {config.get(key)!r}")
    imb = config["imb_factor"]
    if isinstance(imb, bool) or not isinstance(imb, (int, float)) or not (math.isfinite(imb) and imb >= 1):
        raise LTBenchError(f"imbalance factor must be a finite number >= 1, got {imb!r}")
    seed = config["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise LTBenchError(f"seed must be a non-negative integer, got {seed!r}")
    for key, value in config.items():
        if _non_finite(value):
            raise LTBenchError(f"{key} must be finite, got {value!r} {where}")
    method = METHODS.get(config["method"])
    if not method.trains and config["epochs"] != 0:
        raise LTBenchError(f"{config['method']} is post-hoc and trains nothing: epochs must be 0, got "
                           f"{config['epochs']} {where}")
    check_ranges(config, SHARED_RANGES if method.trains else {k: v for k, v in SHARED_RANGES.items() if k != "epochs"},
                 where)
    steps = config["lr_steps"]
    if not (isinstance(steps, list) and all(
            isinstance(s, list) and len(s) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in s) for s in steps)):
        raise LTBenchError(f"lr_steps must be a list of [epoch, factor] pairs, got {steps!r} {where}")
    for epoch, factor in steps:
        if epoch < 0 or factor <= 0:
            raise LTBenchError(f"lr_steps: each [epoch, factor] needs epoch >= 0 and factor > 0, got "
                               f"{[epoch, factor]!r} {where}")
    _check_names(config, where)
    if config["reweight"] != "none" and not method.takes_class_weights:
        raise LTBenchError(f"method {config['method']} takes no per-class loss weights: reweight must be none, "
                           f"got {config['reweight']!r}")
    method.check_config(config)


def _check_names(config: dict[str, Any], where: str) -> None:
    """The keys that name something: each must name a thing that exists."""
    import torch

    from baselines.reweighting import REWEIGHT_RULES
    from benchmarks.data.datasets import DATASETS
    from benchmarks.train.models import BACKBONES
    from benchmarks.train.optimizers import MOMENTUM_FORMS
    from benchmarks.data.samplers import SAMPLER_EPOCHS, SAMPLERS
    from benchmarks.train.schedules import learning_rate
    from benchmarks.data.views.large import check_views_config
    from benchmarks.train.methods import METHODS

    learning_rate(0, config)  # unknown lr_schedule
    Execution.resolve(config, torch.device("cpu"))  # pipeline, amp, memory_format
    check_views_config(config, METHODS.get(config["method"]).views)  # known names; one image family
    for key, choices in (("backbone", BACKBONES), ("classifier", CLASSIFIERS), ("linear_init", LINEAR_INITS),
                         ("select_on", ("test", "val")), ("momentum_form", MOMENTUM_FORMS), ("sampler", SAMPLERS),
                         ("sampler_epoch", SAMPLER_EPOCHS),
                         ("reweight", REWEIGHT_RULES)):
        if config[key] not in choices:
            raise LTBenchError(f"unknown {key} {config[key]!r}; known: {', '.join(choices)} {where}")
    if config["select_on"] == "val" and not DATASETS.get(config["dataset"]).has_val_split:
        raise LTBenchError(f"select_on val: dataset {config['dataset']} has no validation split "
                           f"(datasets with one: {', '.join(n for n in DATASETS.names() if DATASETS.get(n).has_val_split)}); "
                           f"use select_on=test")


def recipe_deviations(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Keys where `config` differs from its method's paper recipe: {key: {paper, run}}."""
    recipe, _ = paper_recipe(config["method"], config["dataset"])
    return {
        key: {"paper": recipe[key], "run": config[key]}
        for key in recipe
        if key in config and key not in EXECUTION_KEYS and config[key] != recipe[key]
    }


def split_assignment(item: str, option: str, form: str = "key=value") -> tuple[str, str]:
    """`"key=text"` -> ("key", "text"), or LTBenchError saying what `option` expects."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise LTBenchError(f"{option} expects {form}, got {item!r}")
    return key, raw


def parse_value(raw: str, option: str, key: str, several: bool = False) -> Any:
    """The one parser of values written on the command line (`--set` and `--sweep`): YAML through
    `yaml_load` (YAML 1.2 numbers: `1e-1` is a float). With `several`, `raw` is a comma-separated
    list of such values, read as a YAML flow list (`[[160,0.01]],[[100,0.1]]` is two values)."""
    try:
        return yaml_load(f"[{raw}]" if several else raw)
    except yaml.YAMLError as exc:
        what = "values" if several else "value"
        raise LTBenchError(f"{option} {key}: cannot parse {what} {raw!r} ({yaml_problem(exc)})") from None


def parse_set_arguments(items: list[str]) -> dict[str, Any]:
    """`["lr=0.15", "lr_steps=[[160, 0.01]]"]` -> {"lr": 0.15, ...}; values are parsed by
    `parse_value` (`lr=1e-3` is a float). A key given again overrides its earlier value, as
    later layers override earlier ones (a script can append `--set epochs=1` to any command)."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, raw = split_assignment(item, "--set")
        parsed[key] = parse_value(raw, "--set", key)
    return parsed
