"""A sweep grid end to end (issue 13, "Done means"): the offline digits data, 3 seeds, two methods,
one swept key. Every variant gets its own folder; a runner killed with SIGKILL in the middle of the
sweep is rerun and resumes the interrupted variant in its own folder (and trains the rest); a
third run trains nothing; the report has one row per variant with its 3 seeds."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import run_benchmark
from _folders import planned_folders
from benchmarks.reporting import build_report
from benchmarks.reporting.aggregate import aggregate, label_variants
from benchmarks.reporting.load import load_runs
from benchmarks.store.results import find_runs, read_config, read_status

ROOT = Path(__file__).resolve().parent.parent
GRID = {
    "datasets": ["digits"], "imb_factors": [10], "methods": ["ce", "bccl"], "seeds": [0, 1, 2],
    "overrides": {"epochs": 2, "batch_size": 16, "warmup_epochs": 1, "train_cap_per_class": 8,
                  "test_cap_per_class": 4},
    "method_overrides": {"bccl": {"epochs": 1}},  # bccl is the slow one; only ce's runs are killed
    "sweeps": {"ce": {"lr": [0.05, 0.2]}},  # ce: two variants per seed; bccl: its (overridden) recipe only
}


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "run_benchmark.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def finish(capsys):
    """run_benchmark.main in this process, one thread (the killed runner was a real process)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def call(args: list[str]) -> str:
        code = run_benchmark.main(args)
        out, err = capsys.readouterr()
        assert code == 0, out + err
        return out

    yield call
    torch.set_num_threads(threads)


def test_a_sweep_grid_gives_every_variant_a_folder_resumes_after_a_kill_and_reruns_nothing(tmp_path, finish):
    grid = tmp_path / "sweep.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    results = tmp_path / "results"
    args = ["--grid", str(grid), "--results-dir", str(results), "--no-progress"]
    folders = planned_folders(args)  # in the runner's order: ce lr 0.05, ce lr 0.2 per seed, then bccl
    assert len(folders) == 9 and len(set(folders)) == 9
    lr_of = {f: ("0.05" if "lr=0.05" in f.parent.name else "0.2") for f in folders[:6]}
    assert [lr_of[f] for f in folders[:6]] == ["0.05", "0.2"] * 3
    assert {f.parent.name for f in folders[6:]} == {folders[6].parent.name} and folders[6].parent.name.startswith("bccl@")

    # kill the runner while the 4th run (ce lr 0.2, seed 1) is between its two epochs' checkpoints
    victim = start(args)
    checkpoint = folders[3] / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists():
        assert victim.poll() is None, victim.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint of the 4th run after 240 s"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    victim.stdout.close()
    assert [read_status(f) for f in folders[:3]] == ["done"] * 3
    assert read_status(folders[3]) == "running", "the 4th run finished before the kill"
    assert not any(f.exists() for f in folders[4:])

    out = finish(args)
    assert "trained 6, skipped (done) 3" in out, out
    assert f"-> {folders[3]}\n    resumed from its checkpoint after epoch 1" in out
    assert json.loads((folders[3] / "env.json").read_text())["resumed_from_epoch"] == 1
    assert sorted(find_runs(results)) == sorted(folders)  # nothing anywhere else
    for i, folder in enumerate(folders):
        config = read_config(folder)
        assert read_status(folder) == "done" and config["seed"] == int(folder.name[4:])
        if i < 6:
            assert config["lr"] == float(lr_of[folder]) and config["variant"]["deviations"]["lr"] == config["lr"]

    out = finish(args)
    assert "trained 0, skipped (done) 9" in out, out

    summary = aggregate(label_variants(load_runs(results)), [])
    assert sorted(zip(summary["method"], summary["n"], summary["seeds"])) == [
        ("bccl", 3, "0 1 2"), ("ce", 3, "0 1 2"), ("ce", 3, "0 1 2")]
    assert sum("lr 0.05≠0.1" in v for v in summary["variant"]) == 1
    assert sum("lr 0.2≠0.1" in v for v in summary["variant"]) == 1

    # the report (benchmarks.reporting.compare): comparisons and the sensitivity to the swept key
    report = build_report(results, tmp_path / "reports", formats=["md"], plots=False)
    assert "Comparisons — " in report.markdown and "Sensitivity — " in report.markdown
    ce = report.sensitivity[report.sensitivity["method"] == "ce"]
    assert set(ce["key"]) == {"lr"} and sorted(ce["value"]) == [0.05, 0.2]
    # ce against bccl, and ce's other lr variant against the one taken as its recipe variant
    assert set(report.comparisons["kind"]) == {"methods", "variant vs recipe"}, report.comparisons
