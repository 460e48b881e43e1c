"""Bad input, beyond tests/test_cli.py: each is one `error:` line, exit status 2, and a results
folder holding a finished run comes out byte-identical (nothing written, nothing deleted).

The finished run is trained once per module and copied into each test's folder, so the check
covers real run files (checkpoint, metrics, status), not just a marker file.
"""

import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

import run_benchmark
from _folders import planned_folder

CELL = ["--datasets", "digits", "--imb-factors", "10", "--methods", "ce", "--seeds", "0"]
TINY = ["--tiny", "--epochs", "1", "--set", "train_cap_per_class=8", "test_cap_per_class=4", "batch_size=16",
        "--no-progress"]


def folder_of(results: Path, seed: int = 0) -> Path:
    return planned_folder(CELL[:-1] + [str(seed)] + TINY + ["--results-dir", str(results)])  # CELL ends in its seed


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A results folder with one finished run of CELL + TINY."""
    torch.set_num_threads(1)
    results = tmp_path_factory.mktemp("finished") / "results"
    assert run_benchmark.main(CELL + TINY + ["--results-dir", str(results)]) == 0
    assert (folder_of(results) / "status").read_text().strip() == "done"
    return results


@pytest.fixture
def results(finished, tmp_path):
    copy = tmp_path / "results"
    shutil.copytree(finished, copy)
    return copy


def grid_file(tmp_path: Path, text: str | None = None, **changes) -> str:
    grid = {"datasets": ["digits"], "imb_factors": [10], "methods": ["ce"], "seeds": [0], **changes}
    path = tmp_path / "grid.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(grid))
    return str(path)


def grid_args(tmp_path, text=None, **changes):
    return ["--grid", grid_file(tmp_path, text, **changes)]


# name -> (arguments after the base ones (a callable of tmp_path for grid files), expected message)
BAD = {
    "negative --epochs": (CELL + ["--epochs", "-1"], r"epochs must be >= 1, got -1"),
    "batch_size 0": (CELL + ["--set", "batch_size=0"], r"batch_size must be >= 1, got 0"),
    "negative seed": (CELL + ["--seeds", "-1"], r"seed must be a non-negative integer, got -1"),
    "seed not an integer": (CELL + ["--seeds", "one"], r"argument --seeds: invalid int value: 'one'"),
    "IF not a number": (CELL + ["--imb-factors", "ten"], r"argument --imb-factors: invalid float value: 'ten'"),
    "duplicate cells": (CELL + ["--seeds", "0", "0"], r"duplicate cell digits IF10 ce@\S+ seed0"),
    "negative lr": (CELL + ["--set", "lr=-0.1"], r"lr must be >= 0, got -0.1"),
    "unknown amp mode": (CELL + ["--set", "amp=fp8"], r"amp must be one of auto, off, fp32, fp16, bf16; got 'fp8'"),
    "unknown lr_schedule": (CELL + ["--set", "lr_schedule=linear"], r"unknown lr_schedule 'linear'"),
    "malformed lr_steps": (CELL + ["--set", "lr_steps=[5]"], r"lr_steps must be a list of \[epoch, factor\] pairs"),
    "unknown classifier": (CELL + ["--set", "classifier=mlp"], r"unknown classifier 'mlp'"),
    "mistyped option": (CELL + ["--epoch", "3"], r"unrecognized arguments: --epoch 3"),
    "--jobs 0": (CELL + ["--jobs", "0"], r"--jobs must be >= 1, got 0"),
    "unknown launcher": (CELL + ["--launcher", "pbs"], r"argument --launcher: invalid choice: 'pbs'"),
    "--jobs with slurm": (CELL + ["--launcher", "slurm", "--jobs", "2"], r"--jobs is for --launcher local"),
    "--slurm-time 0": (CELL + ["--launcher", "slurm", "--slurm-time", "0"], r"--slurm-time must be >= 1 minute"),
    "--slurm-cpus 0": (CELL + ["--launcher", "slurm", "--slurm-cpus", "0"], r"--slurm-cpus must be >= 1"),
    "grid file not YAML": (lambda t: grid_args(t, "datasets: [digits\n"), r"grid.yaml: not valid YAML"),
    "grid file not a mapping": (lambda t: grid_args(t, "- digits\n"), r"expected a mapping at the top level"),
    "grid methods neither a list nor all": (lambda t: grid_args(t, methods="ce"),
                                            r"'methods' must be a list or 'all', got 'ce'"),
    "grid seeds not a list": (lambda t: grid_args(t, seeds=0), r"'seeds' must be a list, got 0"),
    "grid IF not a number": (lambda t: grid_args(t, imb_factors=["ten"]),
                             r"imbalance factor must be a finite number >= 1, got 'ten'"),
    "grid without runs": (lambda t: grid_args(t, datasets=[]), r"has no runs"),
    "grid overrides not a mapping": (lambda t: grid_args(t, overrides=[1, 2]), r"'overrides' must be a mapping"),
    "unknown key in method_overrides": (lambda t: grid_args(t, method_overrides={"bccl": {"queue_sise": 5}}),
                                        r"method_overrides.bccl: unknown key 'queue_sise' "
                                        r"\(did you mean 'queue_size'\?\)"),
    "another method's option": (CELL + ["--set", "temperature=0.2"], r"--set \(method ce\): unknown key 'temperature'"),
    "wrong type in method_overrides": (lambda t: grid_args(t, method_overrides={"ce": {"epochs": "five"}}),
                                       r"key 'epochs' must be int"),
    "method_overrides of an unknown method": (lambda t: grid_args(t, method_overrides={"mixup": {"lr": 0.1}}),
                                              r"unknown method 'mixup'"),
    # Values that pass the type check but are not usable numbers (issue 16, class 1).
    "NaN IF on the command line": (CELL[:2] + ["--imb-factors", "nan"] + CELL[4:],
                                   r"imbalance factor must be a finite number >= 1, got nan"),
    "infinite IF on the command line": (CELL[:2] + ["--imb-factors", "inf"] + CELL[4:],
                                        r"imbalance factor must be a finite number >= 1, got inf"),
    "NaN IF in a grid file": (lambda t: grid_args(t, "datasets: [digits]\nimb_factors: [.nan]\nmethods: [ce]\n"
                                                     "seeds: [0]\n"),
                              r"imbalance factor must be a finite number >= 1, got nan"),
    "NaN lr": (CELL + ["--set", "lr=.nan"], r"lr must be finite, got nan"),
    "infinite weight decay": (CELL + ["--set", "weight_decay=.inf"], r"weight_decay must be finite, got inf"),
    "momentum above 1": (CELL + ["--set", "momentum=1.5"], r"momentum must be <= 1, got 1.5"),
    "negative lr step factor": (CELL + ["--set", "lr_steps=[[1,-0.1]]"],
                                r"lr_steps: each \[epoch, factor\] needs epoch >= 0 and factor > 0, got \[1, -0.1\]"),
    "NaN in lr_steps": (CELL + ["--set", "lr_steps=[[1,.nan]]"], r"lr_steps must be finite"),
    "cosine_scale 0": (CELL + ["--set", "cosine_scale=0"], r"cosine_scale must be > 0, got 0"),
    # A method option out of range in method_overrides: an error at plan time, also for a method
    # the command line leaves out (class 2).
    "queue size 0 in method_overrides": (lambda t: grid_args(t, methods=["ce", "paco"],
                                                             method_overrides={"paco": {"queue_size": 0}}),
                                         r"queue_size must be >= 1, got 0 \(run paco on digits\)"),
    "queue size 0 of a method not run": (lambda t: grid_args(t, method_overrides={"bccl": {"queue_size": 0}}),
                                         r"queue_size must be >= 1, got 0 \(run bccl"),
    "temperature 0": (lambda t: grid_args(t, methods=["bcl"], method_overrides={"bcl": {"temperature": 0.0}}),
                      r"temperature must be > 0, got 0.0 \(run bcl on digits\)"),
    "NaN temperature": (lambda t: grid_args(t, methods=["paco"], method_overrides={"paco": {"temperature": float("nan")}}),
                        r"temperature must be finite, got nan"),
    # Found when a cell starts until issue 16: now at preflight, before anything is written.
    "batch larger than the training set with drop_last": (CELL[:-1] + ["1", "--set", "batch_size=512", "drop_last=true"],
                                                          r"digits IF10 ce@\S+ seed1: \d+ training images give no batch "
                                                          r"of 512 \(drop_last=True\); lower batch_size or set "
                                                          r"drop_last false"),
    "an IF that leaves a class without a training image": (
        CELL[:2] + ["--imb-factors", "10000"] + CELL[4:],
        r"imbalance factor 10000 leaves class \d+ without a training image \(the largest class keeps \d+\); "
        r"the largest whole-number IF this data allows is \d+$"),
    "--device mps": (CELL + ["--device", "mps"], r"unknown device 'mps'; use auto, cpu, cuda or cuda:N"),
    "--device meta": (CELL + ["--device", "meta"], r"unknown device 'meta'"),
    "--device cpu:1": (CELL + ["--device", "cpu:1"], r"unknown device 'cpu:1'"),
    "grid path that is a folder": (lambda t: ["--grid", str(t)], r"a folder, not a grid file"),
    "grid path that is a folder named .yaml": (lambda t: (t / "g.yaml").mkdir() or ["--grid", str(t / "g.yaml")],
                                               r"a folder, not a grid file"),
    "duplicate key in a grid file": (lambda t: grid_args(t, "datasets: [digits]\nimb_factors: [10]\nmethods: [ce]\n"
                                                            "seeds: [0]\nseeds: [1]\n"),
                                     r"grid.yaml: not valid YAML \(found duplicate key 'seeds' at line 5"),
    "duplicate key in a grid's overrides": (lambda t: grid_args(t, "datasets: [digits]\nimb_factors: [10]\n"
                                                                   "methods: [ce]\nseeds: [0]\n"
                                                                   "overrides: {lr: 0.1, lr: 0.2}\n"),
                                            r"found duplicate key 'lr'"),
}


def run_bad(args, results, capsys):
    code = run_benchmark.main(args + ["--results-dir", str(results)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, message):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_and_leaves_results_untouched(case, results, tmp_path, capsys):
    extra, message = BAD[case]
    extra = extra(tmp_path) if callable(extra) else extra
    before = snapshot(results)
    code, out, err = run_bad(TINY + extra, results, capsys)
    assert_one_line_error(code, err, message)
    assert snapshot(results) == before


def test_checkpoint_of_another_config_is_an_error(results, capsys):
    """A seed-1 folder holding seed 0's checkpoint (no config.yaml): someone's work, not ours."""
    other = folder_of(results, seed=1)
    other.mkdir(parents=True)
    shutil.copy(folder_of(results) / "checkpoint.pt", other / "checkpoint.pt")
    (other / "status").write_text("running\n")
    before = snapshot(results)
    code, _, err = run_bad(TINY + CELL + ["--seeds", "1"], results, capsys)
    assert_one_line_error(code, err, r"seed1/checkpoint.pt was written by another configuration \(differs in: seed\)")
    assert snapshot(results) == before


def test_slurm_without_submitit(results, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` now raises ImportError
    before = snapshot(results)
    code, _, err = run_bad(TINY + CELL + ["--launcher", "slurm"], results, capsys)
    assert_one_line_error(code, err, r"--launcher slurm needs submitit: pip install 'ltbench\[slurm\]'")
    assert snapshot(results) == before


def test_slurm_without_sbatch(results, monkeypatch, tmp_path, capsys):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on it
    before = snapshot(results)
    code, _, err = run_bad(TINY + CELL + ["--launcher", "slurm"], results, capsys)
    assert_one_line_error(code, err, r"sbatch not found")
    assert snapshot(results) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(results, capsys):
    before = snapshot(results)
    code, _, err = run_bad(TINY + CELL + ["--device", "cuda"], results, capsys)
    assert_one_line_error(code, err, r"CUDA is not available")
    assert snapshot(results) == before

