"""Replay a run folder: train its config.yaml again, as it is, into another results folder.

A run's config.yaml is complete (every key of the resolved configuration, its `variant` entry
included), so it is all a replay needs: `run_benchmark.py --replay results/<...>/seed0
--results-dir replays` trains that configuration into `replays/<the same four folder levels>`,
and on the same software and device the replay's metrics equal the original's (tested on tiny
digits). The config is re-resolved through `resolve_config` with its own values as `--set`, so
a folder that lacks a key, carries an unknown one or a value that is no longer accepted is
refused before anything is written. A two-stage run (crt, lws, ...) starts from the stage-1
folder its metrics.json names, which must still be a finished run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import LTBenchError
from benchmarks.config import IDENTITY_KEYS, resolve_config
from benchmarks.store.results import done_problem, read_config, read_metrics

DEFAULT_REPLAY_DIR = Path("replays")


def replay_config(source: Path) -> dict[str, Any]:
    """The config.yaml of the run folder `source`, checked complete and valid as of today."""
    source = Path(source)
    if not (source / "config.yaml").is_file():
        raise LTBenchError(f"--replay {source}: not a run folder (no config.yaml); give a "
                           "<results>/<dataset>/if<IF>/<method>[@<variant>]/seed<S> folder")
    try:
        config = read_config(source)
    except Exception as exc:  # noqa: BLE001 - YAML, decoding and OS errors alike: a user-facing message
        raise LTBenchError(f"--replay {source}: config.yaml cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(config, dict) or not all(k in config for k in ("method", "dataset", "imb_factor", "seed")):
        raise LTBenchError(f"--replay {source}: config.yaml is not a run's configuration (a mapping with method, "
                           "dataset, imb_factor and seed)")
    rest = {k: v for k, v in config.items() if k not in IDENTITY_KEYS}
    try:
        resolved = resolve_config(config["method"], config["dataset"], config["imb_factor"], config["seed"],
                                  overrides=rest)
    except LTBenchError as exc:
        raise LTBenchError(f"--replay {source}: config.yaml is not a valid configuration today: {exc}") from None
    missing = sorted(set(resolved) - set(config))
    if missing:
        raise LTBenchError(f"--replay {source}: config.yaml lacks {', '.join(missing)}; it is not a complete "
                           "configuration (was it edited?)")
    return config


def replay_target(source: Path, results_dir: Path) -> Path:
    """Where the replay of `source` goes: its last four folder levels under `results_dir`."""
    source = Path(source)
    if len(source.resolve().parts) < 5:
        raise LTBenchError(f"--replay {source}: expected a <results>/<dataset>/if<IF>/<method>/seed<S> folder")
    target = Path(results_dir).joinpath(*source.resolve().parts[-4:])
    if target.resolve() == source.resolve():
        raise LTBenchError(f"--replay {source}: the replay would write into the folder it replays; "
                           f"give another --results-dir (e.g. {DEFAULT_REPLAY_DIR})")
    return target


def stage1_folder(source: Path, config: dict[str, Any]) -> Path | None:
    """The stage-1 folder a two-stage run started from (its metrics.json `stage1.folder`), or None."""
    from benchmarks.train.methods import METHODS

    if METHODS.get(config["method"]).stage1 is None:
        return None
    record = (read_metrics(source) or {}).get("stage1") or {}
    folder = record.get("folder")
    if not folder:
        raise LTBenchError(f"--replay {source}: a {config['method']} run starts from a stage-1 run, and its "
                           "metrics.json does not name one (replay only finished two-stage runs)")
    problem = done_problem(Path(folder))
    if problem is not None:
        raise LTBenchError(f"--replay {source}: its stage-1 run {folder} is not a finished run ({problem})")
    return Path(folder)


def replay_runs(source: Path, results_dir: Path) -> list:
    """The run(s) a replay trains: the folder's configuration at its place under `results_dir`,
    with its stage-1 run (read, never retrained) for a two-stage method."""
    from benchmarks.run.grid import Run

    config = replay_config(source)
    stage1 = stage1_folder(source, config)
    return [Run(config, replay_target(source, results_dir),
                None if stage1 is None else Run(read_config(stage1), stage1))]
