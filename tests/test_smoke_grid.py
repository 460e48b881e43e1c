"""The smoke grid (the offline default, configs/grids/smoke.yaml) is an end-to-end check whose
methods learn: its schedules are the CPU track's policy (the same entries as fmnist-study's, each
recipe's lr scaled to batch 32), and its recipe takes CE well above chance on digits in seconds."""

import json

import pytest

import run_benchmark
from benchmarks.config import resolve_config
from benchmarks.run.grid import load_grid
from benchmarks.train.methods import METHODS

pytestmark = pytest.mark.usefixtures("one_thread")


def test_smoke_schedules_are_the_study_policy_with_the_lr_scaled_to_its_batch():
    smoke, study = load_grid("smoke"), load_grid("fmnist-study")
    batch = smoke["overrides"]["batch_size"]
    assert smoke["methods"] == "all"
    trained = [m for m in METHODS.names() if METHODS.get(m).trains]
    assert sorted(smoke["method_overrides"]) == sorted(trained)
    for method in trained:
        entry = dict(smoke["method_overrides"][method])
        recipe = resolve_config(method, "digits")
        assert entry.pop("lr") == pytest.approx(recipe["lr"] * batch / recipe["batch_size"]), method
        assert entry == study["method_overrides"][method], method
    # what the end-to-end check must still exercise within its 15 epochs
    over = smoke["method_overrides"]
    assert over["ce_drw"]["reweight_epoch"] < over["ce_drw"]["epochs"]
    assert over["ldam_drw"]["reweight_epoch"] < over["ldam_drw"]["epochs"]
    assert over["bccl"]["warmup_epochs"] < over["bccl"]["epochs"]  # re-clustering and the centroid term run


def test_the_smoke_recipe_learns(tmp_path, capsys):
    """CE through the smoke grid's own config at IF 10, and the post-hoc LA on it: well above
    chance (10 %) on the 250 balanced test images (measured: 72.8 and 82.8)."""
    results = tmp_path / "results"
    code = run_benchmark.main(["--methods", "ce", "la_posthoc", "--imb-factors", "10", "--results-dir", str(results),
                               "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    for method in ("ce", "la_posthoc"):
        folder, = [p for p in results.glob("digits-tiny*/if10/*/seed0") if p.parent.name.split("@")[0] == method]
        assert (folder / "status").read_text().strip() == "done"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["test_images"] == 250
        assert metrics["best"]["top1"] >= 40 and metrics["last"]["top1"] >= 40, (method, metrics["best"]["top1"])


def test_the_report_names_runs_at_chance_at_its_top():
    """A cell that learned nothing (best top-1 within 2 points of 100 / C) is listed in the report's
    first line, pointing to the grid file that says why; learned and unfinished runs are not."""
    import pandas as pd

    from benchmarks.reporting.tables import chance_level_runs

    runs = pd.DataFrame([
        {"dataset_label": "digits-tiny", "if_label": "10", "method": "paco", "seed": 0, "state": "done",
         "num_classes": 10, "best_top1": 11.6},
        {"dataset_label": "digits-tiny", "if_label": "10", "method": "ce", "seed": 0, "state": "done",
         "num_classes": 10, "best_top1": 72.8},
        {"dataset_label": "digits-tiny", "if_label": "100", "method": "bccl", "seed": 0, "state": "failed",
         "num_classes": 10, "best_top1": 10.0},
    ])
    assert chance_level_runs(runs) == ["digits-tiny IF 10 paco seed 0"]
    assert chance_level_runs(runs.drop(columns="num_classes")) == []  # runs written before num_classes
