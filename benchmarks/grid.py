"""Grids: expand a YAML grid into runs, check everything before anything is written, run them.

A grid file `configs/grids/<name>.yaml` names datasets, imbalance factors, methods (`all` or a
list), seeds, and optional `overrides` (for every run) and `method_overrides` (per method). The
command line can narrow or change each of them.

Order of work: plan (resolve and validate every run's config) -> preflight (data present, results
folder writable, no finished run folder holding a different config) -> run each cell. Bad input
is found in the first two stages, so it writes nothing. Finished runs are skipped; an interrupted
run resumes from its checkpoint; a failed run is marked `failed: reason` and the grid goes on.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks import CONFIG_DIR, LTBenchError
from benchmarks.config import load_yaml, recipe_deviations, resolve_config
from benchmarks.datasets import DATASETS, DatasetRequest, LTData, build_dataset
from benchmarks.environment import environment_record
from benchmarks.methods import METHODS
from benchmarks.results import (
    DONE, FAILED, RUNNING, atomic_write_json, atomic_write_yaml, format_imb_factor,
    read_config, read_metrics, read_status, run_dir, write_status,
)

GRID_KEYS = {"description", "datasets", "imb_factors", "methods", "seeds", "overrides", "method_overrides"}
TINY_TRAIN_CAP, TINY_TEST_CAP, TINY_EPOCHS = 20, 10, 2


def grid_names() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "grids").glob("*.yaml"))


def load_grid(name: str) -> dict[str, Any]:
    """A grid by name (`configs/grids/<name>.yaml`) or by the path of a YAML file."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONFIG_DIR / "grids" / f"{name}.yaml"
    if not path.exists():
        raise LTBenchError(f"unknown grid {name!r}; known: {', '.join(grid_names())} (or a path to a .yaml file)")
    grid = load_yaml(path)
    unknown = set(grid) - GRID_KEYS
    if unknown:
        raise LTBenchError(f"{path}: unknown key(s) {sorted(unknown)}; accepted: {', '.join(sorted(GRID_KEYS))}")
    missing = {"datasets", "imb_factors", "methods", "seeds"} - set(grid)
    if missing:
        raise LTBenchError(f"{path}: missing key(s) {sorted(missing)}")
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
    data_root: Path = Path("data")
    download: bool = False
    results_dir: Path = Path("results")
    device: str = "auto"
    tensorboard: bool = False
    progress: bool = True


@dataclass
class Run:
    config: dict[str, Any]
    folder: Path

    @property
    def label(self) -> str:
        c = self.config
        return f"{c['dataset']} IF{format_imb_factor(c['imb_factor'])} {c['method']} seed{c['seed']}"


def dataset_label(config: dict[str, Any]) -> str:
    """Folder name of the dataset: tiny-subset runs live apart from real ones."""
    tiny = config["train_cap_per_class"] > 0 or config["test_cap_per_class"] > 0
    return config["dataset"] + ("-tiny" if tiny else "")


def plan(options: GridOptions) -> list[Run]:
    """Resolve every run of the grid; raises LTBenchError on any bad name, key, type or value."""
    grid = load_grid(options.grid)
    datasets = options.datasets or list(grid["datasets"])
    methods = options.methods or grid["methods"]
    if methods == "all":
        methods = METHODS.names()
    imb_factors = options.imb_factors or list(grid["imb_factors"])
    seeds = options.seeds if options.seeds is not None else list(grid["seeds"])
    for name in datasets:
        DATASETS.get(name)
    for name in methods:
        METHODS.get(name)
    for imb in imb_factors:
        if not isinstance(imb, (int, float)) or isinstance(imb, bool) or imb < 1:
            raise LTBenchError(f"imbalance factor must be a number >= 1, got {imb!r}")
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise LTBenchError(f"seed must be a non-negative integer, got {seed!r}")

    cli = dict(options.overrides)
    if options.tiny:
        cli.setdefault("train_cap_per_class", TINY_TRAIN_CAP)
        cli.setdefault("test_cap_per_class", TINY_TEST_CAP)
        cli.setdefault("epochs", TINY_EPOCHS)
    if options.epochs is not None:
        cli["epochs"] = options.epochs
    method_overrides = grid.get("method_overrides") or {}
    for name in method_overrides:
        METHODS.get(name)

    runs = []
    for dataset in datasets:
        for imb in imb_factors:
            for method in methods:
                for seed in seeds:
                    grid_over = {**(grid.get("overrides") or {}), **(method_overrides.get(method) or {})}
                    config = resolve_config(method, dataset, imb, seed, grid_overrides=grid_over, overrides=cli)
                    if config["epochs"] < 1 or config["batch_size"] < 1:
                        raise LTBenchError(f"epochs and batch_size must be >= 1 (run {method} on {dataset})")
                    folder = run_dir(options.results_dir, dataset_label(config), imb, method, seed)
                    runs.append(Run(config, folder))
    return runs


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LTBenchError(f"results dir {folder} is not writable: {exc.strerror or exc}") from None


def preflight(runs: list[Run], options: GridOptions) -> None:
    for name in sorted({r.config["dataset"] for r in runs}):
        DATASETS.get(name).check(DatasetRequest(imb_factor=1, data_root=options.data_root, download=options.download))
    for run in runs:
        existing = read_config(run.folder)
        if existing is not None and existing != run.config:
            diff = sorted(k for k in set(existing) | set(run.config) if existing.get(k) != run.config.get(k))
            raise LTBenchError(
                f"{run.folder} holds a run with another configuration (differs in: {', '.join(diff)}); "
                "use another --results-dir or delete that folder"
            )
    _check_writable(Path(options.results_dir))


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
            test_cap_per_class=config["test_cap_per_class"],
        )
        key = (config["dataset"], request)
        if key not in self._cache:
            self._cache[key] = build_dataset(config["dataset"], request)
        return self._cache[key]


def execute_run(run: Run, data: LTData, device: torch.device, options: GridOptions) -> Outcome:
    from benchmarks.training import Trainer, write_metrics

    start = time.perf_counter()
    run.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_yaml(run.folder / "config.yaml", run.config)
    write_status(run.folder, RUNNING)
    try:
        trainer = Trainer(run.config, data, run.folder, device, tensorboard=options.tensorboard,
                          progress=options.progress)
        trainer.load_checkpoint()
        ex = trainer.ex
        atomic_write_json(run.folder / "env.json", environment_record(
            device, {"pipeline": ex.pipeline, "amp": ex.amp, "channels_last": ex.channels_last,
                     "compile": ex.compile, "resumed_from_epoch": trainer.start_epoch}))
        metrics = trainer.run()
        metrics["deviations"] = recipe_deviations(run.config)
        metrics["dataset_info"] = {k: v for k, v in data.info.items() if k != "class_counts"}
        from benchmarks.training import write_metrics

        write_metrics(run.folder, metrics)
        write_status(run.folder, DONE)
        return Outcome(run, DONE, metrics, time.perf_counter() - start)
    except KeyboardInterrupt:
        raise  # status stays `running`: the next invocation resumes from the checkpoint
    except LTBenchError:
        raise
    except Exception as exc:  # one failed cell must not stop the grid
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        write_status(run.folder, f"{FAILED}: {reason}")
        (run.folder / "error.log").write_text(traceback.format_exc())
        return Outcome(run, f"{FAILED}: {reason}", None, time.perf_counter() - start)


def run_grid(runs: list[Run], options: GridOptions, device: torch.device, log=print) -> list[Outcome]:
    cache = DataCache(options)
    outcomes = []
    for i, run in enumerate(runs, 1):
        if read_status(run.folder) == DONE and read_metrics(run.folder) is not None:
            log(f"[{i}/{len(runs)}] {run.label}: done already, skipped ({run.folder})")
            outcomes.append(Outcome(run, "skipped (done)", read_metrics(run.folder)))
            continue
        log(f"[{i}/{len(runs)}] {run.label} -> {run.folder}")
        outcome = execute_run(run, cache.get(run.config), device, options)
        if outcome.metrics:
            b, l = outcome.metrics["best"], outcome.metrics["last"]
            log(f"    best top-1 {b['top1']:.2f} (epoch {b['epoch']}), last {l['top1']:.2f}, {outcome.seconds:.1f} s")
        else:
            log(f"    {outcome.status}")
        outcomes.append(outcome)
    return outcomes


def summary_table(outcomes: list[Outcome]) -> str:
    def fmt(value):
        return "n/a" if value is None else f"{value:.2f}"

    lines = ["| dataset | IF | method | seed | status | best top-1 | last top-1 | many | medium | few | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        c, m = o.run.config, o.metrics
        best = m["best"] if m else {}
        lines.append(
            f"| {dataset_label(c)} | {format_imb_factor(c['imb_factor'])} | {c['method']} | {c['seed']} | {o.status} | "
            f"{fmt(best.get('top1'))} | {fmt(m['last']['top1'] if m else None)} | {fmt(best.get('many'))} | "
            f"{fmt(best.get('medium'))} | {fmt(best.get('few'))} | {o.seconds:.1f} |"
        )
    return "\n".join(lines)
