"""The CPU track's study grid (configs/grids/fmnist-study.yaml) cannot rot: its schedules are the
written policy's output (`compress_schedule`), the whole grid plans its 84 runs, and a few of its
methods, a two-stage one among them, run end to end with `--tiny` on a tiny Fashion-MNIST that the
test writes (the real files are not needed in CI)."""

import json
from pathlib import Path

import pytest

import run_benchmark
from benchmarks.config import resolve_config
from benchmarks.run.grid import GridOptions, load_grid, plan
from benchmarks.train.methods import METHODS
from benchmarks.train.schedules import compress_schedule
from test_fashion_mnist import write_fmnist

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = "fmnist-study"
STUDY_EPOCHS = 15


def _study():
    return load_grid(GRID)


def test_every_method_override_is_the_compression_policy_of_its_recipe():
    """Each entry equals compress_schedule(the method's recipe under the grid's overrides, 15); a
    stage-2 method's (cRT, LWS) is compressed by its stage 1's factor, 15 / CE's 200 epochs."""
    grid = _study()
    dataset = grid["datasets"][0]
    overrides = grid["overrides"]
    method_overrides = grid["method_overrides"]
    for method in grid["methods"]:
        spec = METHODS.get(method)
        recipe = resolve_config(method, dataset, grid_overrides=overrides)
        if not spec.trains:  # tau_norm, la_posthoc: nothing to compress, no entry
            assert method not in method_overrides, method
            continue
        if spec.stage1 is not None:
            stage1 = resolve_config(spec.stage1, dataset, grid_overrides=overrides)
            expected = compress_schedule(recipe, factor=STUDY_EPOCHS / stage1["epochs"])
        else:
            expected = compress_schedule(recipe, STUDY_EPOCHS)
        assert method_overrides.get(method) == expected, method
    assert set(method_overrides) <= set(grid["methods"])


def test_the_stage2_entries_follow_ce_s_200_epochs():
    """The factor of cRT and LWS is that of their stage 1 as the study trains it (CE, 200 -> 15)."""
    grid = _study()
    assert resolve_config("ce", grid["datasets"][0])["epochs"] == 200
    assert grid["method_overrides"]["ce"]["epochs"] == STUDY_EPOCHS


def test_the_whole_study_plans_84_runs(tmp_path, capsys):
    runs = plan(GridOptions(grid=GRID, results_dir=tmp_path))
    assert len(runs) == 14 * 2 * 3
    assert {r.config["method"] for r in runs} == set(METHODS.names())
    assert all(r.config["backbone"] == "resnet8" and r.config["amp"] == "bf16" for r in runs)
    code = run_benchmark.main(["--grid", GRID, "--dry-run", "--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and out.splitlines()[-1] == "84 runs"
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_study_methods_run_end_to_end_with_tiny_on_a_written_fashion_mnist(tmp_path, capsys):
    """CE, its stage 2 cRT and BCCL through the study's config (ResNet-8, bf16, native 28x28,
    compressed schedules) with --tiny: every run finishes and records the study's deviations."""
    # 200 a class: every class of the IF-10 subset (200 .. 20) keeps --tiny's 20, so that BCCL's
    # recipe batch of 128 (drop_last) fits the 200 images
    write_fmnist(tmp_path / "fm", per_class_train=200, per_class_test=2)
    results = tmp_path / "results"
    code = run_benchmark.main(["--grid", GRID, "--tiny", "--methods", "ce", "crt", "bccl", "--imb-factors", "10",
                               "--seeds", "0", "--epochs", "2", "--data-root", str(tmp_path / "fm"),
                               "--results-dir", str(results), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    folders = sorted(results.glob("fashion_mnist28-tiny*/if10/*/seed0"))
    assert sorted(f.parent.name.split("@")[0] for f in folders) == ["bccl", "ce", "crt"]
    for folder in folders:
        assert (folder / "status").read_text().strip() == "done", folder
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["last"]["top1"] is not None
        deviations = json.dumps(metrics["deviations"])
        assert "backbone" in deviations and "precision" in deviations, (folder, deviations)
