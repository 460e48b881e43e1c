"""Launchers: --jobs N worker processes, SLURM through submitit's local executor, dead workers."""

import json
import os

import pytest

from benchmarks.run.launchers import LocalParallel, worker_result
from benchmarks.store.results import read_status, write_status
from _folders import planned_folders

CELLS = ["--datasets", "digits", "--imb-factors", "10", "--methods", "ce", "--seeds", "0", "1", "--tiny",
         "--epochs", "1", "--set", "train_cap_per_class=8", "test_cap_per_class=4", "batch_size=16", "--no-progress"]
TIMING = ("train_seconds", "train_images_per_s", "checkpoints", "eval_seconds", "peak_memory_mb")  # checkpoint.pt holds its wall time: its hash too


@pytest.fixture
def cli(capsys, monkeypatch):
    """run_benchmark.main in this process (its workers are still real processes, one thread each)."""
    import run_benchmark

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")

    def call(*args):
        code = run_benchmark.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return call


def cell_folders(results):
    return planned_folders(CELLS + ["--results-dir", str(results)])


def metrics(folder):
    return {k: v for k, v in json.loads((folder / "metrics.json").read_text()).items() if k not in TIMING}


def test_jobs_runs_each_cell_in_its_own_worker_and_collects_the_outcomes(tmp_path, cli):
    results = tmp_path / "results"
    code, out, err = cli(*CELLS, "--results-dir", str(results), "--jobs", "2")
    assert code == 0, out + err
    assert "2 worker processes" in out and "trained 2," in out
    pids = set()
    for folder in cell_folders(results):
        assert read_status(folder) == "done"
        log = (folder / "worker.log").read_text()
        assert "grid smoke: 1 runs on cpu" in log  # the worker is a one-cell runner
        pids.add(out.split(f"{folder} (worker ")[1].split()[0])
    assert len(pids) == 2

    code, out, _ = cli(*CELLS, "--results-dir", str(results), "--jobs", "2")
    assert code == 0 and "skipped (done) 2" in out and "(worker " not in out  # no worker for finished cells


def test_slurm_launcher_submits_one_job_per_cell_through_submitit(tmp_path, cli):
    pytest.importorskip("submitit")
    results, logs = tmp_path / "results", tmp_path / "slurm-logs"
    code, out, err = cli(*CELLS, "--results-dir", str(results), "--launcher", "slurm", "--slurm-cluster", "local",
                         "--slurm-gpus", "0", "--slurm-cpus", "1", "--slurm-time", "10", "--slurm-folder", str(logs))
    assert code == 0, out + err
    assert out.count("-> slurm job ") == 2 and "trained 2," in out
    for folder in cell_folders(results):
        assert read_status(folder) == "done" and metrics(folder)["best"]["per_class"]
    assert len(list(logs.glob("*_submitted.pkl"))) == 2  # one job per cell


def test_a_worker_that_dies_marks_its_cell_failed(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    write_status(folder, "running")
    log = tmp_path / "worker.log"
    log.write_text("epoch 3\n")
    status, _ = worker_result(folder, -9, tmp_path / "no-outcome.json", log, 1.0)
    assert status == "failed: worker signal SIGKILL (epoch 3)"
    assert read_status(folder) == status

    write_status(folder, "running")
    status, _ = worker_result(folder, 2, tmp_path / "no-outcome.json", None, 1.0)
    assert status == "failed: worker exit status 2" and read_status(folder) == "running"  # bad input: untouched


def test_gpus_are_dealt_round_robin_over_worker_slots(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    parallel = LocalParallel(jobs=3, argv=[], device="auto")
    assigned = [parallel.worker_env(slot, ["4", "7"]) for slot in range(3)]
    assert [env["CUDA_VISIBLE_DEVICES"] for env, _, _ in assigned] == ["4", "7", "4"]
    assert all(device == "cuda" for _, device, _ in assigned)
    env, device, where = parallel.worker_env(0, [])  # CPU: the environment's CUDA setting is left alone
    assert device is None and where == "cpu"
    assert env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")
    assert int(env["OMP_NUM_THREADS"]) == max(1, (os.cpu_count() or 1) // 3)
