"""run_benchmark.py end to end on tiny data, and every bad input: one line, exit 2, nothing written."""

import re
from pathlib import Path

import pytest
import yaml

import run_benchmark
from _folders import planned_folder
from benchmarks.store.results import read_status

TINY = ["--datasets", "digits", "--imb-factors", "10", "--no-progress"]


def snapshot(folder: Path) -> dict:
    if not folder.exists():
        return {}
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def run_cli(args, capsys):
    code = run_benchmark.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_dry_run_lists_every_run_and_its_folder(tmp_path, capsys):
    code, out, _ = run_cli(["--grid", "cifar", "--dry-run", "--results-dir", str(tmp_path)], capsys)
    assert code == 0
    assert "84 runs" in out  # every method (14) x 2 datasets x 3 IFs (issue 22)
    assert str(tmp_path / "cifar100" / "if50" / "bccl" / "seed0") in out
    assert not any(tmp_path.iterdir())


def test_tiny_run_writes_the_run_folder_and_is_skipped_when_rerun(tmp_path, capsys):
    results = tmp_path / "results"
    args = TINY + ["--methods", "ce", "--tiny", "--epochs", "1", "--results-dir", str(results)]
    code, out, _ = run_cli(args, capsys)
    assert code == 0, out
    folder = planned_folder(args)
    assert read_status(folder) == "done"
    for name in ("config.yaml", "metrics.json", "history.csv", "env.json", "checkpoint.pt"):
        assert (folder / name).exists(), name
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["train_cap_per_class"] == 20 and config["epochs"] == 1
    assert re.search(r"\| digits-tiny@[0-9a-f]{10} \| 10 \| ce \| 0 \| done \|", out)  # the folder's grid label

    before = snapshot(results)
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and "skipped" in out
    assert snapshot(results) == before


def write_grid(tmp_path, **changes):
    grid = {"datasets": ["digits"], "imb_factors": [10], "methods": ["ce"], "seeds": [0], **changes}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return str(path)


BAD_INPUTS = {
    "unknown dataset": (["--datasets", "mnist"], "unknown dataset 'mnist'; known: .*digits"),
    "unknown method": (["--methods", "mixup"], "unknown method 'mixup'; known: .*bccl"),
    "unknown grid": (["--grid", "imagenet21k"], "unknown grid 'imagenet21k'; known: .*smoke"),
    "imbalance factor below 1": (["--imb-factors", "0.5"], "imbalance factor must be a finite number >= 1"),
    "missing CIFAR without --download": (["--datasets", "cifar10", "--data-root", "{tmp}/none"],
                                         "cifar10 not found.*--download"),
    "mistyped --set key": (["--set", "batchsize=64"], "unknown key 'batchsize' \\(did you mean 'batch_size'\\?\\)"),
    "wrong --set type": (["--set", "epochs=many"], "key 'epochs' must be int"),
    "malformed --set": (["--set", "lr"], "--set expects key=value"),
    "bad device": (["--device", "tpu"], "unknown device 'tpu'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    extra, message = BAD_INPUTS[case]
    results = tmp_path / "results"
    results.mkdir()
    (results / "keep.txt").write_text("existing results")
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code, out, err = run_cli(TINY + ["--results-dir", str(results)] + extra, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]
    assert snapshot(results) == {results / "keep.txt": b"existing results"}


def test_unknown_key_in_a_grid_yaml_is_named(tmp_path, capsys):
    grid = write_grid(tmp_path, overrides={"weight_decy": 0.001})
    code, _, err = run_cli(["--grid", grid, "--results-dir", str(tmp_path / "r"), "--no-progress"], capsys)
    assert code == 2
    assert "unknown key 'weight_decy' (did you mean 'weight_decay'?)" in err
    assert not (tmp_path / "r").exists()


def test_unknown_top_level_grid_key(tmp_path, capsys):
    grid = write_grid(tmp_path, seed=[1])
    code, _, err = run_cli(["--grid", grid, "--results-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and "unknown key(s) ['seed']" in err


def test_unwritable_results_dir(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(TINY + ["--results-dir", str(blocker / "results")], capsys)
    assert code == 2 and "is not writable" in err
    code, _, err = run_cli(TINY + ["--results-dir", str(blocker)], capsys)
    assert code == 2 and "is a file, not a folder" in err
    assert blocker.read_text() == "not a folder"


def test_finished_run_with_another_config_is_not_overwritten(tmp_path, capsys):
    """Another configuration under the same --name would share a folder: refused, nothing touched.
    (Without --name each configuration has a folder of its own: tests/test_variants.py.)"""
    results = tmp_path / "results"
    args = TINY + ["--methods", "ce", "--tiny", "--epochs", "1", "--name", "quick", "--results-dir", str(results)]
    assert run_cli(args, capsys)[0] == 0
    [done] = results.glob("digits-tiny@*/if10/ce@quick/seed0")
    assert read_status(done) == "done"
    before = snapshot(results)
    code, _, err = run_cli(args + ["--set", "lr=0.2"], capsys)
    assert code == 2 and "another configuration (differs in: lr, variant)" in err
    assert snapshot(results) == before
    # --tiny's epochs are part of the grid promise: another promise is another dataset folder, never this one
    code, out, _ = run_cli(args[:-2] + ["--epochs", "2", "--results-dir", str(results), "--dry-run"], capsys)
    assert code == 0 and "/ce@quick/seed0" in out and str(done) not in out
