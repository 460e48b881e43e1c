"""SIGKILL at a random moment, rerun: the resumed run ends with exactly the uninterrupted metrics.

Two runners of the same one-cell grid start together (CPU, one thread each, fixed seed): one is
left alone, the other is killed with SIGKILL at a random moment after its first checkpoint
exists (mid-epoch, mid-evaluation or mid-write: whatever the moment is) and then rerun to
completion. best, last (with per-class accuracies) and the whole history must be equal.
"""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from _folders import planned_folder

ROOT = Path(__file__).resolve().parent.parent
# 40 epochs: the smoke grid's ResNet-8 in bf16 trains a tiny epoch in about 0.1 s, and the kill below
# must land while epochs are left (with 4 epochs the runner could finish within the random delay,
# and its rerun then skipped a done folder: resumed_from 0).
ARGS = ["--datasets", "digits", "--imb-factors", "10", "--methods", "ce", "--seeds", "0", "--tiny", "--epochs", "40",
        "--set", "train_cap_per_class=12", "test_cap_per_class=5", "batch_size=16", "--no-progress"]
TIMING = {"train_seconds", "train_images_per_s", "images_per_s", "checkpoints", "eval_seconds", "peak_memory_mb"}  # checkpoint.pt holds its wall time


def start(results: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "run_benchmark.py"), *ARGS, "--results-dir", str(results)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def folder(results: Path) -> Path:
    return planned_folder(ARGS + ["--results-dir", str(results)])


def without_timing(path: Path):
    if path.suffix == ".json":
        return {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING}
    return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(path.open())]


def test_sigkill_at_a_random_moment_then_rerun_gives_the_uninterrupted_metrics(tmp_path):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    reference = start(tmp_path / "reference")
    victim = start(tmp_path / "killed")
    checkpoint = folder(tmp_path / "killed") / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        assert victim.poll() is None, victim.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.02)
    # 39 of 40 epochs are left: a delay of at most 1 s (about 10 epochs here) kills the runner before it is done.
    time.sleep(rng.uniform(0.0, 1.0))
    assert victim.poll() is None, f"the runner finished before the kill (random seed {seed})"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    victim.stdout.close()
    assert json.loads((folder(tmp_path / "killed") / "env.json").read_text())["resumed_from_epoch"] == 0

    rerun = start(tmp_path / "killed")
    out_rerun, _ = rerun.communicate(timeout=180)
    out_reference, _ = reference.communicate(timeout=180)
    assert rerun.returncode == 0, out_rerun
    assert reference.returncode == 0, out_reference

    killed, uninterrupted = folder(tmp_path / "killed"), folder(tmp_path / "reference")
    resumed_from = json.loads((killed / "env.json").read_text())["resumed_from_epoch"]
    assert 1 <= resumed_from < 40, (resumed_from, out_rerun)
    assert (killed / "status").read_text() == "done\n"
    assert not list(killed.glob(".*.tmp"))
    assert without_timing(killed / "metrics.json") == without_timing(uninterrupted / "metrics.json"), \
        f"random seed {seed}, resumed from epoch {resumed_from}"
    assert without_timing(killed / "history.csv") == without_timing(uninterrupted / "history.csv")


def test_sigterm_is_handled_like_ctrl_c_one_line_interrupted_then_the_rerun_resumes(tmp_path):
    """SIGTERM (a scheduler's or `kill`'s default) mid-run: one line, exit 143, the folder is
    interrupted (status running, no lock held) and the rerun resumes from its checkpoint."""
    from benchmarks.reporting.load import load_run

    victim = subprocess.Popen([sys.executable, str(ROOT / "run_benchmark.py"), *ARGS, "--results-dir",
                               str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    run = folder(tmp_path)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists():
        assert victim.poll() is None and time.monotonic() < deadline, victim.communicate()
        time.sleep(0.02)
    victim.send_signal(signal.SIGTERM)
    _, err = victim.communicate(timeout=60)
    assert victim.returncode == 143, err
    assert err.strip().splitlines() == ["terminated (SIGTERM): finished runs are kept; rerun the same command "
                                        "to resume"], err
    assert (run / "status").read_text() == "running\n" and load_run(run)["state"] == "interrupted"
    rerun = subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), *ARGS, "--results-dir", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resumed from its checkpoint after epoch" in rerun.stdout and (run / "status").read_text() == "done\n"
