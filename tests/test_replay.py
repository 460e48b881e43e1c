"""`run_benchmark.py --replay <run folder>` trains the folder's config.yaml again into another
results folder, with the same metrics; and `--datasets` filters the grid's datasets (one the grid
does not list is run with a note)."""

import csv
import json
import shutil

import pytest
import yaml

import run_benchmark
from benchmarks.store.results import find_runs, read_status

CELL = ["--datasets", "digits", "--imb-factors", "10", "--methods", "ce", "--seeds", "0", "--tiny", "--epochs", "1",
        "--set", "lr=0.05", "--no-progress"]


def run_cli(args, capsys):
    code = run_benchmark.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


HISTORY_TIMING = ("train_seconds", "images_per_s", "eval_seconds", "posthoc_seconds", "peak_memory_mb")  # wall clock, memory


def _history(folder):
    with open(folder / "history.csv") as f:
        return [{k: v for k, v in row.items() if k not in HISTORY_TIMING} for row in csv.DictReader(f)]


def _metrics(folder):
    m = json.loads((folder / "metrics.json").read_text())
    return {k: m[k] for k in ("best", "last", "class_counts", "deviations", "train_images", "test_images")}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    root = tmp_path_factory.mktemp("original")
    assert run_benchmark.main([*CELL, "--results-dir", str(root)]) == 0
    [folder] = find_runs(root)
    return folder


def test_a_replay_reproduces_the_metrics(original, tmp_path, capsys):
    code, out, err = run_cli(["--replay", original, "--results-dir", tmp_path / "again"], capsys)
    assert code == 0, err
    assert "replay of" in out
    [replayed] = find_runs(tmp_path / "again")
    assert replayed.relative_to(tmp_path / "again").parts == original.parts[-4:]
    assert read_status(replayed) == "done"
    assert yaml.safe_load((replayed / "config.yaml").read_text()) == yaml.safe_load((original / "config.yaml").read_text())
    assert _metrics(replayed) == _metrics(original)
    assert _history(replayed) == _history(original)
    code, out, _ = run_cli(["--replay", original, "--results-dir", tmp_path / "again"], capsys)
    assert code == 0 and "done already, skipped" in out  # a replay is resumable and idempotent like a grid


def _copy(original, tmp_path):
    """A copy of the original's results tree, whose config.yaml the test may edit."""
    root = tmp_path / "copy"
    shutil.copytree(original.parents[3], root)
    return root.joinpath(*original.parts[-4:])


@pytest.mark.parametrize("case, args, message", [
    ("into itself", lambda f, t: ["--replay", f, "--results-dir", f.parents[3]],
     r"would write into the folder it replays; give another --results-dir"),
    ("not a run folder", lambda f, t: ["--replay", t], r"not a run folder \(no config.yaml\)"),
    ("grid options", lambda f, t: ["--replay", f, "--results-dir", t / "x", "--set", "lr=0.1", "--tiny"],
     r"--replay runs the folder's config.yaml as it is: --tiny, --set do not apply"),
])
def test_replay_refusals(original, tmp_path, capsys, case, args, message):
    import re

    code, out, err = run_cli(args(original, tmp_path), capsys)
    assert code == 2 and re.search(message, err), err
    assert not (tmp_path / "x").exists() and not (tmp_path / "replays").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("lr"), r"config.yaml lacks lr; it is not a complete configuration"),
    (lambda c: c.update(lr=-1.0), r"config.yaml is not a valid configuration today: lr must be >= 0"),
    (lambda c: c.update(learning_rate=0.1), r"unknown key 'learning_rate'"),
])
def test_an_incomplete_or_invalid_config_is_refused(original, tmp_path, capsys, edit, message):
    import re

    folder = _copy(original, tmp_path)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    edit(config)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    code, out, err = run_cli(["--replay", folder, "--results-dir", tmp_path / "again"], capsys)
    assert code == 2 and re.search(message, err), err
    assert not (tmp_path / "again").exists()


def test_datasets_filters_the_grid_and_notes_a_dataset_it_does_not_list(tmp_path, capsys):
    base = ["--methods", "ce", "--imb-factors", "10", "--seeds", "0", "--tiny", "--dry-run",
            "--results-dir", tmp_path]
    code, out, _ = run_cli(["--grid", "smoke", "--datasets", "digits", *base], capsys)
    assert code == 0 and "note:" not in out and "1 runs" in out
    code, out, _ = run_cli(["--grid", "smoke", "--datasets", "synthetic", "digits", *base], capsys)
    assert code == 0 and "2 runs" in out
    assert "note: grid smoke does not list synthetic (its datasets: digits); running it with the grid's" in out
