"""Run-folder integrity: locks, damaged finished runs, corrupt checkpoints, stale temporary files,
NaN runs in a grid, RNG states in checkpoints, and the report agreeing with the runner."""

import json
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import run_benchmark
from _folders import planned_folder
from benchmarks.config import resolve_config
from benchmarks.data.datasets import DatasetRequest, build_dataset
from benchmarks.reporting.load import load_run
from benchmarks.store.results import RunLock, RunLocked, done_problem, read_status
from benchmarks.train.training import Trainer

ARGS = ["--datasets", "digits", "--imb-factors", "10", "--methods", "ce", "--seeds", "0", "--tiny", "--epochs", "2",
        "--set", "train_cap_per_class=8", "test_cap_per_class=4", "batch_size=16", "--no-progress"]
TIMING = ("train_seconds", "train_images_per_s", "checkpoints", "eval_seconds", "peak_memory_mb")  # checkpoint.pt holds its wall time: its hash too


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def folder_of(results, seed=0, *extra):
    i = ARGS.index("--seeds")  # list options accumulate: replace ARGS's seed
    return planned_folder(ARGS[:i + 1] + [str(seed)] + ARGS[i + 2:] + ["--results-dir", str(results), *extra])


def metrics_of(folder):
    metrics = json.loads((folder / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING}


def run(results, capsys, *extra):
    code = run_benchmark.main(ARGS + ["--results-dir", str(results), *extra])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One finished run (its folder), to damage copies of and compare against."""
    torch.set_num_threads(1)
    results = tmp_path_factory.mktemp("reference") / "results"
    assert run_benchmark.main(ARGS + ["--results-dir", str(results)]) == 0
    return folder_of(results)


@pytest.fixture
def copy(reference, tmp_path):
    import shutil

    results = tmp_path / "results"
    shutil.copytree(reference.parents[3], results)
    return results


# -- locks -----------------------------------------------------------------------------------------
def test_a_cell_locked_by_a_live_runner_is_skipped_and_said_so(tmp_path, capsys):
    results = tmp_path / "results"
    with RunLock(folder_of(results)):
        code, out, _ = run(results, capsys)
    assert code == 0
    assert "being trained by another runner (pid" in out and "locked elsewhere 1" in out
    assert read_status(folder_of(results)) is None  # nothing was trained or written


def test_the_lock_of_a_killed_process_is_free(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from benchmarks.store.results import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)",
         str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"pid {holder.pid} on "):
            RunLock(folder).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(folder):  # the kernel released it with the process: no timeout, no manual cleanup
        assert f"pid {os.getpid()}" in (folder / ".lock").read_text()
    assert (folder / ".lock").exists() and (folder / ".lock").read_text() == ""


# -- damaged folders -------------------------------------------------------------------------------
DAMAGE = {
    "truncated metrics.json": lambda f: (f / "metrics.json").write_text((f / "metrics.json").read_text()[:50]),
    "metrics.json without per-class accuracies": lambda f: (f / "metrics.json").write_text(json.dumps(
        {**json.loads((f / "metrics.json").read_text()), "best": {"top1": 1.0}})),
    "missing metrics.json": lambda f: (f / "metrics.json").unlink(),
    "missing config.yaml": lambda f: (f / "config.yaml").unlink(),
    "corrupt config.yaml": lambda f: (f / "config.yaml").write_text("dataset: [digits\n"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_done_folder_is_rerun_and_never_reported(damage, reference, copy, capsys):
    folder = folder_of(copy)
    DAMAGE[damage](folder)
    assert done_problem(folder) is not None
    row = load_run(folder)
    assert row["state"] in ("incomplete", "unreadable") and np.isnan(row["best_top1"])  # listed, not averaged

    code, out, _ = run(copy, capsys)
    assert code == 0
    assert "folder says done but" in out and "training it again" in out
    assert done_problem(folder) is None and load_run(folder)["state"] == "done"
    assert metrics_of(folder) == metrics_of(reference)  # resumed from the complete checkpoint
    assert yaml.safe_load((folder / "config.yaml").read_text()) == yaml.safe_load(
        (reference / "config.yaml").read_text())


def test_a_corrupt_checkpoint_restarts_the_run_from_scratch(reference, copy, capsys):
    folder = folder_of(copy)
    (folder / "status").write_text("running\n")  # killed while writing, say
    (folder / "metrics.json").unlink()
    data = (folder / "checkpoint.pt").read_bytes()
    (folder / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    (folder / ".checkpoint.pt.x1y2z3.tmp").write_bytes(data[:100])  # a killed writer's leftover

    code, out, _ = run(copy, capsys)
    assert code == 0
    assert "corrupt checkpoint" in out and "restarts from scratch" in out
    assert "removed .checkpoint.pt.x1y2z3.tmp" in out
    assert not list(folder.glob(".*.tmp"))
    assert json.loads((folder / "env.json").read_text())["resumed_from_epoch"] == 0
    assert metrics_of(folder) == metrics_of(reference)


# -- failures --------------------------------------------------------------------------------------
def test_a_nan_run_fails_with_its_step_and_the_grid_goes_on(tmp_path, capsys, monkeypatch):
    from baselines.ce import CrossEntropy as CE

    original = CE.training_step

    def poisoned(self, views, labels, epoch, step):
        losses = original(self, views, labels, epoch, step)
        if self.config["seed"] == 1 and step == 1:
            losses["loss"] = losses["loss"] * float("inf")
        return losses

    monkeypatch.setattr(CE, "training_step", poisoned)
    results = tmp_path / "results"
    i = ARGS.index("--seeds")  # list options accumulate: ARGS's seed 0 replaced by 1 0 (the failing one first)
    code = run_benchmark.main(ARGS[:i + 1] + ["1", "0"] + ARGS[i + 2:] + ["--results-dir", str(results), "--epochs", "1"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "1 of 2 runs failed" in err and "trained 1" in out and "failed 1" in out
    status = read_status(folder_of(results, 1, "--epochs", "1"))
    assert status == "failed: NonFiniteLoss: non-finite loss at epoch 0 step 1"
    assert read_status(folder_of(results, 0, "--epochs", "1")) == "done"


# -- checkpoint contents ---------------------------------------------------------------------------
def test_checkpoints_hold_and_restore_every_rng_state(tmp_path):
    data = build_dataset("synthetic", DatasetRequest(imb_factor=10, train_cap_per_class=4, test_cap_per_class=1))
    config = resolve_config("ce", "synthetic", 10, 0, overrides={"epochs": 1, "batch_size": 8, "pipeline": "reference"})
    trainer = Trainer(config, data, tmp_path, torch.device("cpu"), progress=False)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    trainer.save_checkpoint(0)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert set(state["rng"]) >= {"python", "numpy", "torch"}

    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    assert Trainer(config, data, tmp_path, torch.device("cpu"), progress=False).load_checkpoint()
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_platform_without_flock_fails_at_start_and_still_reports(tmp_path, capsys, monkeypatch):
    import benchmarks.store.results as results_module

    monkeypatch.setattr(results_module, "fcntl", None)  # what a Windows interpreter has
    results = tmp_path / "results"
    assert run_benchmark.main(ARGS + ["--results-dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert "fcntl.flock" in err and len(err.strip().splitlines()) == 1
    assert not results.exists()  # refused before anything was written
    folder = tmp_path / "some-run"
    folder.mkdir()
    assert RunLock.is_held(folder) is False  # the report's probe works without fcntl
