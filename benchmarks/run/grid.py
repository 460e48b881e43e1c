"""Grids: expand a YAML grid into runs, check everything before anything is written, run them.

A grid file `configs/grids/<name>.yaml` names datasets, imbalance factors, methods (`all` or a
list), seeds, and optional `overrides` (for every run), `method_overrides` (per method) and
`sweeps` (per method: the variants to run, see `benchmarks.run.variants`; only for methods the grid
lists, every key and value checked even when the command line leaves the method out). The command line can narrow
or change each of them (`--sweep` replaces the grid file's sweeps).

Folders: a run of the paper recipe lives in `<method>/seed<S>/`, any other configuration in
`<method>@<variant>/seed<S>/` (`run_dir`, `benchmarks.run.variants`), under a dataset folder that
carries the grid label when the grid's `overrides:` or --tiny promise keys to every method
(`grid_promise`; those keys are then left out of the variant labels). A run that an older version
wrote elsewhere (before grid labels: `<dataset>-tiny/.../<method>@<all deviations>/`; before
variants: `<method>/seed<S>/`) is still found there: while its folder has nothing, an older
folder whose config.yaml is this very configuration as that version wrote it is the run's folder
(`place_run`), so it is skipped or resumed, not trained again elsewhere.

Order of work: plan (resolve and validate every run's config) -> preflight (data present, results
folder writable, no run folder or checkpoint holding a different config) -> run each cell. Bad
input is found in the first two stages, so it writes nothing. Finished runs are skipped; an
interrupted run resumes from its checkpoint; a failed run is marked `failed: reason` and the grid
goes on. Who runs the cells (this process, N worker processes, SLURM jobs) is
`benchmarks.run.launchers`; every one of them ends in `run_grid` for one or more cells.

Integrity (see `benchmarks.store.results`): a cell is trained only under its run folder's lock, so two
runners never train it at once (a runner that finds it locked skips it and says so); a folder
that says `done` counts only if its config.yaml and metrics.json are whole (`done_problem`),
otherwise it is trained again (resuming from its checkpoint, which costs one evaluation when the
checkpoint is complete); stray temporary files of a killed writer are removed first.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks import CONFIG_DIR, LTBenchError
from benchmarks.config import EXECUTION_KEYS, check_keys, has_recipe, load_yaml, paper_recipe, resolve_config
from benchmarks.data.datasets import DATASETS, DatasetRequest, LTData, build_dataset
from benchmarks.store.environment import environment_record
from benchmarks.store.logs import LOGGER, run_log
from benchmarks.train.methods import METHODS
from benchmarks.store.results import (
    DONE, FAILED, RUNNING, UNREADABLE_STATUS, RunLock, RunLocked, atomic_write_json, atomic_write_text,
    atomic_write_yaml, check_locking, check_writable_dir, done_problem, format_imb_factor, read_config, read_metrics,
    read_status, remove_stale_temp_files, run_dir, write_status,
)
from benchmarks.run.variants import check_sweeps, config_grid_label, sweep_points, variant_name, with_variant

GRID_KEYS = {"description", "datasets", "imb_factors", "methods", "seeds", "overrides", "method_overrides", "sweeps"}
TINY_TRAIN_CAP, TINY_TEST_CAP, TINY_EPOCHS = 20, 10, 2


def grid_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "grids").glob("*.yaml"))


def load_grid(name: str) -> dict[str, Any]:
    """A grid by name (`configs/grids/<name>.yaml`) or by the path of a YAML file."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONFIG_DIR / "grids" / f"{name}.yaml"
    if path.is_dir() or (not path.exists() and Path(name).is_dir()):
        raise LTBenchError(f"--grid {name}: a folder, not a grid file; give a grid name "
                           f"({', '.join(grid_names())}) or the path of a .yaml file")
    if not path.exists():
        raise LTBenchError(f"unknown grid {name!r}; known: {', '.join(grid_names())} (or a path to a .yaml file)")
    grid = load_yaml(path)
    unknown = set(grid) - GRID_KEYS
    if unknown:
        raise LTBenchError(f"{path}: unknown key(s) {sorted(unknown)}; accepted: {', '.join(sorted(GRID_KEYS))}")
    missing = {"datasets", "imb_factors", "methods", "seeds"} - set(grid)
    if missing:
        raise LTBenchError(f"{path}: missing key(s) {sorted(missing)}")
    for key in ("datasets", "imb_factors", "seeds", "methods"):
        value = grid[key]
        if not isinstance(value, list) and not (key == "methods" and value == "all"):
            accepted = "a list or 'all'" if key == "methods" else "a list"
            raise LTBenchError(f"{path}: {key!r} must be {accepted}, got {value!r}")
    for key in ("overrides", "method_overrides", "sweeps"):
        if not isinstance(grid.get(key) or {}, dict):
            raise LTBenchError(f"{path}: {key!r} must be a mapping, got {grid[key]!r}")
    for method, over in (grid.get("method_overrides") or {}).items():
        if not isinstance(over or {}, dict):
            raise LTBenchError(f"{path}: method_overrides.{method} must be a mapping of keys, got {over!r}")
    for method, sweeps in (grid.get("sweeps") or {}).items():
        check_sweeps(sweeps, f"{path}: sweeps.{method}")
        METHODS.get(method)  # a sweep of an unknown method is a typo, whichever methods run
        if grid["methods"] != "all" and method not in grid["methods"]:
            raise LTBenchError(f"{path}: sweeps.{method}: method {method} is not in the grid's methods "
                               f"({', '.join(map(str, grid['methods']))}); its sweeps would never run")
    return grid


@dataclass
class GridOptions:
    """Everything the command line can say about a grid (None = take the grid file's value)."""

    grid: str = "smoke"
    datasets: list[str] | None = None
    methods: list[str] | None = None
    imb_factors: list[float] | None = None
    seeds: list[int] | None = None
    epochs: int | None = None
    tiny: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    sweeps: dict[str, list[Any]] | None = None  # --sweep: {key: [values]}, their product (replaces the grid's)
    name: str | None = None  # --name: the variant label of this invocation's configuration
    data_root: Path = Path("data")
    download: bool = False
    split_dir: Path | None = None  # imagenet_lt / inat2018: folder of the split files (None: under data_root)
    results_dir: Path = Path("results")
    device: str = "auto"
    tensorboard: bool = False
    progress: bool = True
    train_stage1: bool = False  # --train-stage1: train a missing stage-1 run that the grid does not list
    log_interval: int = 0  # a train.log / console line every N steps within an epoch (0: per epoch only)


@dataclass
class Run:
    config: dict[str, Any]
    folder: Path
    stage1: "Run | None" = None  # two-stage methods: the run whose final checkpoint this one starts from

    @property
    def variant(self) -> str:
        return variant_name(self.config)

    @property
    def label(self) -> str:
        c, variant = self.config, self.variant
        method = f"{c['method']}@{variant}" if variant else c["method"]
        return f"{c['dataset']} IF{format_imb_factor(c['imb_factor'])} {method} seed{c['seed']}"


def dataset_label(config: dict[str, Any]) -> str:
    """Folder name of the dataset: tiny-subset runs live apart from real ones, and runs under a
    grid promise (`grid_promise`) in a folder named by it (`digits-tiny@<hash>`), read from the
    config's `variant` entry."""
    tiny = config["train_cap_per_class"] > 0 or config["test_cap_per_class"] > 0
    return config["dataset"] + ("-tiny" if tiny else "") + config_grid_label(config)


def grid_promise(grid: dict[str, Any], options: GridOptions) -> dict[str, Any]:
    """What the grid promises every method: its `overrides:` and what --tiny sets (the subset
    caps, and its epochs: 2, or --epochs given with --tiny), less execution keys (they never name
    a folder) and less a key the command line sets with --set (that one is the user's change, and
    its method labels say it). Empty for a grid without overrides run without --tiny: then every
    folder is where it always was."""
    promise = {k: v for k, v in (grid.get("overrides") or {}).items() if k not in options.overrides}
    if options.tiny:
        tiny = {"train_cap_per_class": TINY_TRAIN_CAP, "test_cap_per_class": TINY_TEST_CAP,
                "epochs": TINY_EPOCHS if options.epochs is None else options.epochs}
        promise.update({k: v for k, v in tiny.items() if k not in options.overrides})
    elif options.epochs is not None:
        promise.pop("epochs", None)  # --epochs alone changes every run: its labels say so
    defaults = load_yaml(CONFIG_DIR / "defaults.yaml")  # types as the configs have them (1 -> 1.0 for a float key)
    typed = check_keys({k: v for k, v in promise.items() if k in defaults}, defaults, f"grid {options.grid!r} overrides")
    return {k: typed.get(k, v) for k, v in sorted(promise.items()) if k not in EXECUTION_KEYS}


def _has_run_files(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("config.yaml", "status", "checkpoint.pt"))


def _holds_config(folder: Path, config: dict[str, Any]) -> bool:
    try:
        return read_config(folder) == config
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return False


def place_run(config: dict[str, Any], options: GridOptions, grid: dict[str, Any] | None = None,
              promised: dict[str, Any] | None = None) -> Run:
    """The run of a resolved `config` and its folder (see the module docstring): under the grid
    label of `grid` (the grid promise; `promised`: the part that applies to this method), the
    recipe in `<method>/seed<S>/`, a variant in `<method>@<variant>/seed<S>/`, with the `variant`
    entry added to its config. While that folder has nothing yet, an older version's folder that
    holds this very configuration stays its folder, with the config as that version wrote it:
    first the layout before grid labels (`<dataset>[-tiny]/if<IF>/<method>@<all deviations>/`),
    then the one before variants (`<method>/seed<S>/`, no `variant` entry)."""
    named = with_variant(config, options.name, grid, promised)
    where = (config["imb_factor"], config["method"], config["seed"])
    folder = run_dir(options.results_dir, dataset_label(named), *where, variant=variant_name(named))
    plain_label = dataset_label({k: v for k, v in config.items() if k != "variant"})
    older = []
    if grid:
        flat = with_variant(config, options.name)  # the record the version before grid labels wrote
        older.append((run_dir(options.results_dir, plain_label, *where, variant=variant_name(flat)), flat))
    if options.name is None:
        older.append((run_dir(options.results_dir, plain_label, *where), config))
    if not _has_run_files(folder):
        for old_folder, old_config in older:
            if old_folder != folder and _holds_config(old_folder, old_config):
                return Run(old_config, old_folder)
    return Run(named, folder)


def datasets_outside_grid(options: GridOptions) -> list[str]:
    """The `--datasets` the grid file does not list. `--datasets` filters the grid's datasets;
    one the grid does not list is still run, with the grid's IFs, methods, seeds and overrides
    (so `--grid smoke --datasets synthetic` works), and the command says so in a note."""
    if not options.datasets:
        return []
    listed = load_grid(options.grid)["datasets"]
    return [name for name in dict.fromkeys(options.datasets) if name not in listed]


def _sweep_points(method: str, dataset: str, options: GridOptions, grid: dict[str, Any]) -> list[dict[str, Any]]:
    """The sweep points of `method` ([{}]: none), their keys checked; --sweep wins over the grid's."""
    if options.sweeps:
        points, where = sweep_points([options.sweeps]), f"--sweep (method {method})"
    elif method in (grid.get("sweeps") or {}):
        where = f"grid {options.grid!r} sweeps.{method}"
        points = sweep_points(check_sweeps(grid["sweeps"][method], where))
    else:
        return [{}]
    schema = paper_recipe(method, dataset)[1]
    explicit = set(options.overrides) | ({"epochs"} if options.epochs is not None else set())
    for point in points:
        check_keys(point, schema, where)
        both = sorted(set(point) & explicit)
        if both:
            raise LTBenchError(f"{where}: {', '.join(both)} also given by --set/--epochs; sweep it or set it, not both")
    if options.name is not None and len(points) > 1:
        raise LTBenchError(f"--name names one configuration, but {where} has {len(points)} points; "
                           "drop --name (each point is labelled by its values)")
    return points


def plan(options: GridOptions) -> list[Run]:
    """Resolve every run of the grid; raises LTBenchError on any bad name, key, type or value
    (values: `benchmarks.config.validate_config`, through `resolve_config`)."""
    grid = load_grid(options.grid)
    datasets = options.datasets or list(grid["datasets"])
    methods = options.methods or grid["methods"]
    if methods == "all":
        methods = METHODS.names()
    imb_factors = options.imb_factors or list(grid["imb_factors"])
    seeds = options.seeds if options.seeds is not None else list(grid["seeds"])
    for name in datasets:
        DATASETS.get(name) if isinstance(name, str) else _bad_name("dataset", name)
    for name in methods:
        METHODS.get(name) if isinstance(name, str) else _bad_name("method", name)
    # The values (IF, seed, every key) are checked by resolve_config -> config.validate_config.

    promise = grid_promise(grid, options)
    cli = dict(options.overrides)
    if options.tiny:
        cli.setdefault("train_cap_per_class", TINY_TRAIN_CAP)
        cli.setdefault("test_cap_per_class", TINY_TEST_CAP)
        cli.setdefault("epochs", TINY_EPOCHS)
    if options.epochs is not None:
        cli["epochs"] = options.epochs
    method_overrides = grid.get("method_overrides") or {}
    for name, over in method_overrides.items():
        METHODS.get(name)
        if not isinstance(over, dict) and over is not None:
            raise LTBenchError(f"grid {options.grid!r}: method_overrides.{name} must be a mapping, got {over!r}")
        schema = paper_recipe(name, datasets[0] if datasets else "synthetic")[1]
        check_keys(over or {}, schema, f"grid {options.grid!r} method_overrides.{name}")
        # Also for methods the command line left out: a typo in the grid file is an error now,
        # not on the day someone runs that method.
        resolve_config(name, datasets[0] if datasets else "synthetic",
                       grid_overrides={**(grid.get("overrides") or {}), **(over or {})})

    def method_layers(method: str, cli: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The grid's and the command line's layers for `method`: a post-hoc method's `epochs`
        (0 in its recipe) is not the grid's or --epochs' to change (an explicit --set is checked)."""
        grid_over = {**(grid.get("overrides") or {}), **(method_overrides.get(method) or {})}
        if not METHODS.get(method).trains:
            grid_over.pop("epochs", None)
            cli = {k: v for k, v in cli.items() if k != "epochs" or "epochs" in options.overrides}
        return grid_over, cli

    def promised(grid_over: dict[str, Any], method_cli: dict[str, Any]) -> dict[str, Any]:
        """The part of the grid promise that a method's layers apply (a post-hoc method keeps its 0 epochs)."""
        return {k: v for k, v in promise.items() if k in grid_over or k in method_cli}

    def make_stage1(method: str, config: dict[str, Any]) -> Run:
        """The run this command line trains for `method` in the cell of `config` (no sweep points):
        its --set keys that `method` has (a stage-2 method's own options are not the stage 1's)."""
        schema = paper_recipe(method, config["dataset"])[1]
        grid_over, method_cli = method_layers(method, {k: v for k, v in cli.items() if k in schema})
        return place_run(resolve_config(method, config["dataset"], config["imb_factor"], config["seed"],
                                        grid_overrides=grid_over, overrides=method_cli), options,
                         promise, promised(grid_over, method_cli))

    for name, sweeps in (grid.get("sweeps") or {}).items():
        # every point's keys and values, also of methods the command line left out (as method_overrides)
        where = f"grid {options.grid!r} sweeps.{name}"
        dataset = datasets[0] if datasets else "synthetic"
        schema = paper_recipe(name, dataset)[1]
        grid_over = method_layers(name, {})[0]
        for point in sweep_points(check_sweeps(sweeps, where)):
            check_keys(point, schema, where)
            resolve_config(name, dataset, grid_overrides=grid_over, overrides=point)
    runs = []
    for dataset in datasets:
        for imb in imb_factors:
            for method in methods:
                if options.methods is None and not has_recipe(method, dataset):
                    continue  # the grid's own list: "no recipe" (`no_recipe_in_grid`), not an error
                grid_over, method_cli = method_layers(method, cli)
                points = _sweep_points(method, dataset, options, grid)
                for seed in seeds:
                    configs: list[dict[str, Any]] = []
                    for point in points:  # points that resolve alike (e.g. the recipe's value) run once
                        config = resolve_config(method, dataset, imb, seed, grid_overrides=grid_over,
                                                overrides={**method_cli, **point})
                        if config not in configs:
                            configs.append(config)
                    runs.extend(place_run(config, options, promise, promised(grid_over, method_cli))
                                for config in configs)
    if not runs:
        raise LTBenchError(f"grid {options.grid!r} has no runs (an empty list of datasets, IFs, methods or seeds)")
    seen: dict[Path, Run] = {}
    for run in runs:
        if run.folder in seen:
            other = seen[run.folder]
            if other.config == run.config:
                raise LTBenchError(f"duplicate cell {run.label} (listed twice; both would write {run.folder})")
            raise LTBenchError(
                f"{run.label}: two configurations would share {run.folder} (they differ in: "
                f"{_differing_keys(other.config, run.config)}); execution keys ({', '.join(EXECUTION_KEYS)}) "
                "make no variant of their own, and --name gives one name to one configuration")
        seen[run.folder] = run
    results_dir = Path(options.results_dir)
    if results_dir.exists() and not results_dir.is_dir():  # before any folder under it is read (stage 1)
        raise LTBenchError(f"results dir {results_dir} is a file, not a folder")
    return link_stages(runs, options, make_stage1)


def no_recipe_in_grid(options: GridOptions) -> list[tuple[str, str]]:
    """(method, dataset) pairs of the grid's own method list that `plan` leaves out because the
    method has no recipe for the dataset (`recipe_status: none`); a method named with --methods is
    never left out: it is an error there (`paper_recipe`)."""
    if options.methods is not None:
        return []
    grid = load_grid(options.grid)
    methods = METHODS.names() if grid["methods"] == "all" else grid["methods"]
    datasets = options.datasets or list(grid["datasets"])
    return [(m, d) for d in datasets for m in methods if not has_recipe(m, d)]

# What a stage-2 run must share with the run it starts from: the same training images and network.
STAGE1_MATCHING_KEYS = ("subset_seed", "train_cap_per_class", "test_cap_per_class", "backbone")


def link_stages(runs: list[Run], options: GridOptions, make_stage1) -> list[Run]:
    """Give every run of a two-stage method its stage-1 run, and order the grid so that each
    stage-1 run comes before the runs that start from it.

    One rule, whichever methods the command line lists: the stage-1 run is the stage-1 method's
    run of the same cell and seed that this command line trains for that method
    (`make_stage1(method, config)`: the grid's overrides and method_overrides for it and the
    --set/--tiny/--epochs keys it has, no sweep point). That run is the one this grid trains when
    it lists it, else the finished run found in its folder, else, with `--train-stage1`, trained
    first. Otherwise the grid is refused before anything is written. Both runs must train on the
    same images with the same backbone (`STAGE1_MATCHING_KEYS`).
    """
    by_folder = {run.folder: run for run in runs}
    added: list[Run] = []
    for run in list(runs):
        needed = METHODS.get(run.config["method"]).stage1
        if needed is None:
            continue
        wanted = make_stage1(needed, run.config)
        if wanted.folder in by_folder:
            run.stage1 = by_folder[wanted.folder]
        elif done_problem(wanted.folder) is None:
            run.stage1 = Run(read_config(wanted.folder), wanted.folder)
        elif options.train_stage1:
            by_folder[wanted.folder] = run.stage1 = wanted
            added.append(wanted)
        else:
            status = read_status(wanted.folder)
            state = "does not exist" if status is None else f"is not finished (status {status!r})"
            raise LTBenchError(
                f"{run.label} starts from the finished {needed} run of its cell, but {wanted.folder} {state}; "
                f"add {needed} to --methods, or pass --train-stage1 to train it first")
        differing = [k for k in STAGE1_MATCHING_KEYS if run.stage1.config.get(k) != run.config[k]]
        if differing:
            raise LTBenchError(
                f"{run.label} would start from {run.stage1.folder}, trained with another "
                + ", ".join(f"{k} ({run.stage1.config.get(k)!r}, this run {run.config[k]!r})" for k in differing)
                + "; use the same data and backbone for both stages")
    return sorted(runs + added, key=stage_depth)  # stable: the grid's order within each stage


def stage_depth(run: Run) -> int:
    """0 for a run that starts from nothing, 1 for one that starts from a stage-1 run, ..."""
    return 0 if run.stage1 is None else 1 + stage_depth(run.stage1)


def stage1_problem(run: Run) -> str | None:
    """Why `run` cannot start now (its stage-1 run is not a finished run), or None."""
    if run.stage1 is None:
        return None
    problem = done_problem(run.stage1.folder, run.stage1.config)
    return None if problem is None else f"its stage-1 run {run.stage1.label} is not finished ({problem})"


def _bad_name(kind: str, name: Any) -> None:
    raise LTBenchError(f"{kind} names must be strings, got {name!r}")


def _differing_keys(a: dict[str, Any], b: dict[str, Any]) -> str:
    return ", ".join(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))


def folder_conflict(run: Run) -> str | None:
    """Why `run.folder` holds another configuration's run (its config.yaml or its checkpoint), or
    None. Such a folder is someone's result: refused, never overwritten. A config.yaml that does
    not parse is judged by the checkpoint next to it (retrained if neither says otherwise)."""
    from benchmarks.train.training import read_checkpoint

    try:
        existing = read_config(run.folder)
    except (yaml.YAMLError, OSError, ValueError):
        existing = None
    if isinstance(existing, dict) and existing != run.config:
        return (f"{run.folder} holds a run with another configuration (differs in: "
                f"{_differing_keys(existing, run.config)}); use another --results-dir or delete that folder")
    state = read_checkpoint(run.folder / "checkpoint.pt", map_location=None)
    if state is not None and state["config"] != run.config:
        return (f"{run.folder / 'checkpoint.pt'} was written by another configuration (differs in: "
                f"{_differing_keys(state['config'], run.config)}); use another --results-dir or delete that folder")
    return None


def preflight(runs: list[Run], options: GridOptions, cache: "DataCache | None" = None) -> None:
    """Everything that can be checked before a file is written: data, folders, old results, and
    each distinct method config built once, dry.

    A run folder whose config.yaml or checkpoint belongs to another configuration is an error
    (`folder_conflict`). Each (dataset, IF, subset) is built (into `cache`, which the runner then
    reuses) to check that its training set gives at least one batch; each distinct method config
    is built on two fake classes, so that an option its constructor refuses stops the grid here
    rather than in the middle of it. What only a run can find marks that cell failed.
    """
    from benchmarks.train.training import dry_build, loader_problem

    check_locking()  # a platform without flock fails here, not when a cell starts
    for name, imb in sorted({(r.config["dataset"], r.config["imb_factor"]) for r in runs}):
        # with the cell's IF: a dataset with a natural long tail (imagenet_lt, inat2018) refuses other IFs
        need_val = any(r.config["select_on"] == "val" for r in runs if r.config["dataset"] == name)
        DATASETS.get(name).check(DatasetRequest(imb_factor=imb, data_root=options.data_root,
                                                download=options.download, split_dir=options.split_dir,
                                                need_val=need_val))
    pending = []
    for run in runs:
        if done_problem(run.folder, run.config) is None:
            continue  # finished with this very config: it will be skipped
        conflict = folder_conflict(run)
        if conflict is not None:
            raise LTBenchError(conflict)
        pending.append(run)
    check_writable_dir(Path(options.results_dir), "results dir")
    if options.tensorboard:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise LTBenchError("--tensorboard needs the tensorboard package: pip install 'ltbench[tensorboard]'") from None
    cache = cache or DataCache(options)
    from benchmarks.train import distributed

    built: set[str] = set()
    for run in pending:
        trains = METHODS.get(run.config["method"]).trains  # post-hoc methods have no training batches
        problem = trains and loader_problem(run.config, len(cache.get(run.config).train_labels),
                                            distributed.world_size())
        if problem:
            raise LTBenchError(f"{run.label}: {problem}")
        key = yaml.safe_dump({k: v for k, v in run.config.items() if k != "seed"}, sort_keys=True)
        if key not in built:
            built.add(key)
            dry_build(run.config)


@dataclass
class Outcome:
    run: Run
    status: str
    metrics: dict[str, Any] | None = None
    seconds: float = 0.0


class DataCache:
    """Builds each (dataset, IF, subset options) once per grid invocation."""

    def __init__(self, options: GridOptions):
        self.options = options
        self._cache: dict[tuple, LTData] = {}

    def get(self, config: dict[str, Any]) -> LTData:
        request = DatasetRequest(
            imb_factor=config["imb_factor"], data_root=self.options.data_root, download=self.options.download,
            subset_seed=config["subset_seed"], train_cap_per_class=config["train_cap_per_class"],
            test_cap_per_class=config["test_cap_per_class"], split_dir=self.options.split_dir,
            need_val=config["select_on"] == "val",
        )
        key = (config["dataset"], request)
        if key not in self._cache:
            self._cache[key] = build_dataset(config["dataset"], request)
        return self._cache[key]


def execute_run(run: Run, data: LTData, device: torch.device, options: GridOptions) -> Outcome:
    """Train one cell (its lock held by the caller) and record the outcome in its folder.

    Order of writes: nothing until the checkpoint has been read and loaded (a checkpoint that does
    not fit this method is an LTBenchError, exit 2, and leaves the folder as it was); then
    config.yaml, status `running`, history.csv rebuilt from the checkpoint (whole again if a kill
    cut it short) and env.json; per epoch history.csv before the checkpoint (`Trainer.run`); at
    the end metrics.json, then status `done`. A kill between any two of these writes leaves a
    folder that the next invocation resumes to the same result. Any other error, an LTBenchError
    found only now included, marks this cell `failed: reason` and the grid goes on.
    """
    from benchmarks.train import distributed
    from benchmarks.train.training import NonFiniteLoss, Trainer, write_metrics

    main = distributed.is_main()  # under torchrun only rank 0 writes; in one process always true
    start = time.perf_counter()
    trainer = None
    try:
        trainer = Trainer(run.config, data, run.folder, device, tensorboard=options.tensorboard,
                          progress=options.progress, log_interval=options.log_interval,
                          stage1=run.stage1.folder if run.stage1 else None)
        distributed.main_first(trainer.load_checkpoint)  # rank 0 may delete a corrupt one first
        if main:
            run.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_yaml(run.folder / "config.yaml", run.config)
            write_status(run.folder, RUNNING)
            trainer.write_history()
        ex = trainer.ex
        if main:
            atomic_write_json(run.folder / "env.json", environment_record(
                device, {"pipeline": ex.pipeline, "precision": ex.precision, "channels_last": ex.channels_last,
                         "compile": ex.compile, "cudnn_benchmark": ex.cudnn_benchmark,
                         "resumed_from_epoch": trainer.start_epoch, "world_size": distributed.world_size()}))
            if trainer.start_epoch:
                LOGGER.info(f"    resumed from its checkpoint after epoch {trainer.start_epoch}")
        metrics = trainer.run()
        if main:
            write_metrics(run.folder, metrics)
            write_status(run.folder, DONE)
        return Outcome(run, DONE, metrics, time.perf_counter() - start)
    except KeyboardInterrupt:
        raise  # status stays `running`: the next invocation resumes from the checkpoint
    except LTBenchError as exc:
        if trainer is not None and trainer.checkpoint_loaded is None:
            raise  # from load_checkpoint: nothing was written
        return _failed(run, exc, main, start)
    except Exception as exc:  # one failed cell must not stop the grid
        outcome = _failed(run, exc, main, start)
        if distributed.world_size() > 1 and not isinstance(exc, NonFiniteLoss):
            # Only a NaN is known to hit every rank at once; after any other failure the ranks may be
            # out of step, so this process exits and torchrun stops the others.
            raise
        return outcome
    finally:
        if trainer is not None:
            trainer.restore_threads()


def _failed(run: Run, exc: BaseException, main: bool, start: float) -> Outcome:
    """Record a failed cell (status `failed: reason`, error.log, and config.yaml if the folder has
    none) and return its outcome; a folder that cannot take the record (a full disk) is logged."""
    reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    if main:
        try:
            if not (run.folder / "config.yaml").exists():
                atomic_write_yaml(run.folder / "config.yaml", run.config)
            write_status(run.folder, f"{FAILED}: {reason}")
            atomic_write_text(run.folder / "error.log", traceback.format_exc())
        except OSError as write_error:
            LOGGER.error(f"    could not record the failure in {run.folder}: {write_error}")
    return Outcome(run, f"{FAILED}: {reason}", None, time.perf_counter() - start)


SKIPPED_DONE = "skipped (done)"
SKIPPED_LOCKED = "skipped (locked"  # + " by <holder>)"


def finished(run: Run, log=None, prefix: str = "") -> bool:
    """Whether the cell is a whole finished run; says why a `done` folder is not trusted."""
    problem = done_problem(run.folder, run.config)
    if problem is not None and log is not None:
        status = read_status(run.folder)
        if status == DONE:
            log(f"{prefix}{run.label}: folder says done but {problem}: training it again")
        elif status is not None and status.startswith(UNREADABLE_STATUS):
            log(f"{prefix}{run.label}: {status}: taken as unfinished, resuming it")
    return problem is None


def claim_problem(run: Run) -> str | None:
    """Under the cell's lock, before anything is written: why this runner must not train the cell
    after all. Another runner may have trained it between our preflight and our lock, with another
    configuration (`folder_conflict`), or the folder may be damaged beyond rewriting (a `status`
    that is a folder)."""
    if (run.folder / "status").is_dir():
        return f"{run.folder / 'status'} is a folder, not a status file; remove it to train this cell"
    return folder_conflict(run)


def log_outcome(outcome: Outcome, log=LOGGER.info) -> None:
    if outcome.metrics and outcome.status == DONE:
        b, l = outcome.metrics["best"], outcome.metrics["last"]
        log(f"    best top-1 {b['top1']:.2f} (epoch {b['epoch']}), last {l['top1']:.2f}, {outcome.seconds:.1f} s")
    else:
        log(f"    {outcome.status}")


def run_cell(run: Run, options: GridOptions, device: torch.device, cache: DataCache, log=LOGGER.info,
             prefix: str = "") -> Outcome:
    """Train one cell under its lock: skipped when finished, or when another live runner has it."""
    from benchmarks.train import distributed

    if not finished(run) and stage1_problem(run) is not None:  # its stage-1 run failed or was never trained
        log(f"{prefix}{run.label}: not started: {stage1_problem(run)}")
        return Outcome(run, f"{FAILED}: not started: {stage1_problem(run)}")
    if distributed.world_size() > 1:
        return run_cell_distributed(run, options, device, cache, log, prefix)
    if finished(run, log, prefix):
        log(f"{prefix}{run.label}: done already, skipped ({run.folder})")
        return Outcome(run, SKIPPED_DONE, read_metrics(run.folder))
    try:
        lock = RunLock(run.folder).acquire()
    except RunLocked as exc:
        log(f"{prefix}{run.label}: being trained by another runner ({exc.holder}), skipped")
        return Outcome(run, f"{SKIPPED_LOCKED} by {exc.holder})")
    try:
        if finished(run):  # another runner finished it between our check and our lock
            log(f"{prefix}{run.label}: done already, skipped ({run.folder})")
            return Outcome(run, SKIPPED_DONE, read_metrics(run.folder))
        problem = claim_problem(run)  # the folder re-read under the lock, before any write
        if problem is not None:
            log(f"{prefix}{run.label}: refused, nothing written: {problem}")
            return Outcome(run, f"{FAILED}: {problem}")
        with run_log(run.folder):  # from here on, every line also goes to the folder's train.log
            for path in remove_stale_temp_files(run.folder):
                log(f"    removed {path.name}, left by a killed writer")
            log(f"{prefix}{run.label} -> {run.folder}")
            outcome = execute_run(run, cache.get(run.config), device, options)
            log_outcome(outcome, log)
    finally:
        lock.release()
    return outcome


def run_cell_distributed(run: Run, options: GridOptions, device: torch.device, cache: DataCache, log=LOGGER.info,
                         prefix: str = "") -> Outcome:
    """`run_cell` for torchrun: rank 0 decides (finished? locked? its lock, its stale files) and
    tells the others, so that every rank trains the same cells in the same order."""
    from benchmarks.train import distributed

    decision, lock = None, None
    if distributed.is_main():
        if finished(run, log, prefix):
            decision = ("done",)
        else:
            try:
                lock = RunLock(run.folder).acquire()
            except RunLocked as exc:
                decision = ("locked", exc.holder)
            else:
                decision = ("done",) if finished(run) else ("train",)
                problem = claim_problem(run) if decision == ("train",) else None
                if problem is not None:
                    decision = ("refused", problem)
                if decision == ("train",):
                    for path in remove_stale_temp_files(run.folder):
                        log(f"    removed {path.name}, left by a killed writer")
    decision = distributed.broadcast_object(decision)
    try:
        if decision[0] == "done":
            log(f"{prefix}{run.label}: done already, skipped ({run.folder})")
            return Outcome(run, SKIPPED_DONE, read_metrics(run.folder) if distributed.is_main() else None)
        if decision[0] == "locked":
            log(f"{prefix}{run.label}: being trained by another runner ({decision[1]}), skipped")
            return Outcome(run, f"{SKIPPED_LOCKED} by {decision[1]})")
        if decision[0] == "refused":
            log(f"{prefix}{run.label}: refused, nothing written: {decision[1]}")
            return Outcome(run, f"{FAILED}: {decision[1]}")
        with run_log(run.folder, enabled=distributed.is_main()):  # rank 0's lines into train.log
            log(f"{prefix}{run.label} -> {run.folder} ({distributed.world_size()} processes)")
            outcome = execute_run(run, cache.get(run.config), device, options)
            log_outcome(outcome, log)
    finally:
        if lock is not None:
            lock.release()
    return outcome


def run_grid(runs: list[Run], options: GridOptions, device: torch.device, log=LOGGER.info,
             cache: DataCache | None = None) -> list[Outcome]:
    """Run the cells one after the other in this process (the sequential local launcher); `cache`:
    the datasets preflight built, if it was given one."""
    cache = cache or DataCache(options)
    return [run_cell(run, options, device, cache, log, prefix=f"[{i}/{len(runs)}] ") for i, run in enumerate(runs, 1)]


def count_outcomes(outcomes: list[Outcome]) -> dict[str, int]:
    """How many cells were trained, found finished, found locked, submitted (SLURM --no-wait), failed."""
    counts = {"trained": 0, "skipped (done)": 0, "locked elsewhere": 0, "submitted": 0, "failed": 0}
    for o in outcomes:
        if o.status == DONE:
            counts["trained"] += 1
        elif o.status == SKIPPED_DONE:
            counts["skipped (done)"] += 1
        elif o.status.startswith(SKIPPED_LOCKED):
            counts["locked elsewhere"] += 1
        elif o.status.startswith("submitted"):
            counts["submitted"] += 1
        else:
            counts["failed"] += 1
    return counts


def summary_table(outcomes: list[Outcome]) -> str:
    def fmt(value):
        return "n/a" if value is None else f"{value:.2f}"

    lines = ["| dataset | IF | method | seed | status | best top-1 | last top-1 | many | medium | few | seconds "
             "| variant |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        c, m = o.run.config, o.metrics
        best = m["best"] if m else {}
        lines.append(
            f"| {o.run.folder.parts[-4]} | {format_imb_factor(c['imb_factor'])} | {c['method']} | {c['seed']} | {o.status} | "
            f"{fmt(best.get('top1'))} | {fmt(m['last']['top1'] if m else None)} | {fmt(best.get('many'))} | "
            f"{fmt(best.get('medium'))} | {fmt(best.get('few'))} | {o.seconds:.1f} | {o.run.variant} |"
        )
    return "\n".join(lines)
