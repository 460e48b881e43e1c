"""The analyses beyond top-1 (docs/analyses.md) on a hand-made results tree: test-distribution
shift against a hand computation, cost per run and per cell, confusion matrices and classifier
weight norms, and old folders without the new records reported as n/a.

Every expected number is computed here independently of benchmarks.reporting: pure-Python loops
over the metrics.json the tree holds (ranks counted, not sorted), or literal hand arithmetic.
"""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest

from benchmarks.config import resolve_config
from benchmarks.store.predictions import EpochPredictions, write_predictions
from benchmarks.reporting import build_report
from benchmarks.reporting.cost import cost_fields
from benchmarks.reporting.diagnostics import confusion_matrix, run_confusion, weight_norms
from benchmarks.reporting.shift import FAMILY, count_ranks, shifted_accuracy
from benchmarks.store.results import atomic_write_json
from test_report import PNG_MAGIC, write_run

# cifar10 IF100, ce: a tie at 300 (classes 0 and 2: class 0 ranks first), class 9 has no test image
COUNTS = [300, 500, 300, 100, 80, 50, 30, 20, 10, 5]
PER_CLASS = {0: [90.0, 95.0, 85.0, 70.0, 60.0, 50.0, 40.0, 30.0, 20.0, None],
             1: [80.0, 99.0, 75.0, 72.0, 50.0, 45.0, 20.0, 10.0, 0.0, None]}
COST = {0: {"train_seconds": 10.0, "train_images_per_s": 500.0, "eval_seconds": 2.0, "peak_memory_mb": 100.0,
            "device": "cpu"},
        1: {"train_seconds": 20.0, "train_images_per_s": 700.0, "eval_seconds": 4.0, "peak_memory_mb": 300.0,
            "device": "cpu"}}
NORMS = {0: [3.0, 4.0, 2.9, 2.0, 1.9, 1.5, 1.2, 1.0, 0.8, 0.5],
         1: [3.0, 4.0, -1.0, 2.0, 1.9, 1.5, 1.2, 1.0, 0.8, 0.5]}  # seed 1: malformed (a negative norm)
# ce seed 0's best epoch: 4 test images of each class 0..8; class c's 4th image predicted as class 1
LABELS = np.repeat(np.arange(9), 4)
PREDICTIONS = np.where(np.arange(36) % 4 == 3, 1, LABELS)


def edit_metrics(folder, **values):
    path = folder / "metrics.json"
    metrics = json.loads(path.read_text())
    for key, value in values.items():
        if value is None:
            metrics.pop(key, None)
        else:
            metrics[key] = value
    path.write_text(json.dumps(metrics))
    return metrics


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """cifar10 IF100: ce seeds 0, 1 with every new record (seed 1's weight norms malformed; seed 0
    with predictions) and bccl seed 0 as written before them; cifar100 IF100: ce seed 0 written
    before even train_seconds was kept."""
    root = tmp_path_factory.mktemp("results")
    for seed in (0, 1):
        folder = write_run(root, resolve_config("ce", "cifar10", 100, seed), best=70.0 + seed)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["best"]["per_class"] = PER_CLASS[seed]
        edit_metrics(folder, class_counts=COUNTS, best=metrics["best"], classifier_weight_norms=NORMS[seed],
                     **COST[seed])
        if seed == 0:
            kept = EpochPredictions.compact(5, PREDICTIONS, np.full(36, 0.8), 10)
            write_predictions(folder, LABELS, {"best": kept, "last": kept})
    write_run(root, resolve_config("bccl", "cifar10", 100, 0), best=80.0)
    old = write_run(root, resolve_config("ce", "cifar100", 100, 0), best=40.0)
    edit_metrics(old, train_seconds=None, train_images_per_s=None)
    return root


@pytest.fixture(scope="module")
def out(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    report = build_report(tree, out)
    assert not report.empty
    return out


def cell_of(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n")[1].split("\n## ")[0]


def table_value(section: str, first_cell: str, column: str) -> str:
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    columns = [c.strip() for c in lines[0].strip(" |").split(" | ")]
    row = next(line for line in lines if line.startswith(f"| {first_cell} "))
    return [c.strip() for c in row.strip(" |").split(" | ")][columns.index(column)]


# ----------------------------------------------------------------------------- independent computation

def hand_rank(counts, c):
    """Classes with more images, plus equal ones with a smaller index."""
    return sum(1 for k, n in enumerate(counts) if n > counts[c] or (n == counts[c] and k < c))


def hand_shift(accuracy, counts, distribution, rho):
    span = len(counts) - 1
    num = den = 0.0
    for c, acc in enumerate(accuracy):
        if acc is None:
            continue
        r = hand_rank(counts, c)
        p = {"forward": rho ** (-r / span), "backward": rho ** (-(span - r) / span), "uniform": 1.0}[distribution]
        num, den = num + p * acc, den + p
    return num / den


def folder_metrics(folder):
    return json.loads((__import__("pathlib").Path(folder) / "metrics.json").read_text())


# ----------------------------------------------------------------------------- shift

def test_shift_formula_by_hand():
    # counts 10, 30, 20 -> ranks 2, 0, 1; rho 4, C - 1 = 2
    counts, acc = [10, 30, 20], [30.0, 90.0, 60.0]
    assert list(count_ranks(counts)) == [2, 0, 1]
    # forward p = 4^(-r/2): 0.25, 1, 0.5 -> (7.5 + 90 + 30) / 1.75
    assert shifted_accuracy(acc, counts, "forward", 4.0) == pytest.approx(127.5 / 1.75)
    # backward p = 4^(-(2-r)/2): 1, 0.25, 0.5 -> (30 + 22.5 + 30) / 1.75
    assert shifted_accuracy(acc, counts, "backward", 4.0) == pytest.approx(82.5 / 1.75)
    assert shifted_accuracy(acc, counts, "uniform", 1.0) == pytest.approx(60.0)
    # class 0 without a test image is left out: (90 + 30) / 1.5
    assert shifted_accuracy([np.nan, 90.0, 60.0], counts, "forward", 4.0) == pytest.approx(80.0)
    # a tie is ranked by class index: ranks 0, 1, 2 -> (100 + 0 + 12.5) / 1.75
    assert list(count_ranks([20, 20, 10])) == [0, 1, 2]
    assert shifted_accuracy([100.0, 0.0, 50.0], [20, 20, 10], "forward", 4.0) == pytest.approx(112.5 / 1.75)
    assert shifted_accuracy([42.0], [7], "forward", 50.0) == 42.0  # C = 1: every weight 1


def test_shift_csv_matches_a_hand_computation(out):
    shift = pd.read_csv(out / "shift.csv")
    for column in ("folder", "method", "seed", "distribution", "test_imb_factor", "top1"):
        assert column in shift
    assert len(shift) == 4 * 11  # four finished runs, eleven test distributions
    assert list(zip(shift["distribution"][:11], shift["test_imb_factor"][:11])) == [
        ("forward", 50), ("forward", 25), ("forward", 10), ("forward", 5), ("forward", 2), ("uniform", 1),
        ("backward", 2), ("backward", 5), ("backward", 10), ("backward", 25), ("backward", 50)]
    for r in shift.itertuples():
        metrics = folder_metrics(r.folder)
        expected = hand_shift(metrics["best"]["per_class"], metrics["class_counts"], r.distribution,
                              r.test_imb_factor)
        assert r.top1 == pytest.approx(expected), (r.folder, r.distribution, r.test_imb_factor)
    uniform = shift[(shift["method"] == "ce") & (shift["seed"] == 0) & (shift["distribution"] == "uniform")
                    & shift["folder"].str.contains("cifar10/")]
    assert uniform["top1"].iloc[0] == pytest.approx(sum(PER_CLASS[0][:9]) / 9)  # mean over classes with images


def test_shift_table_mean_std_over_seeds(out):
    section = cell_of((out / "report.md").read_text(), "Test-distribution shift — cifar10, IF 100")
    assert "rho^(-r_c/(C-1))" in section  # the formula is stated in the report
    for distribution, rho in FAMILY:
        values = [hand_shift(PER_CLASS[s], COUNTS, distribution, rho) for s in (0, 1)]
        label = "uniform" if distribution == "uniform" else \
            f"{ {'forward': 'fwd', 'backward': 'bwd'}[distribution]} {rho:g}"
        expected = f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
        assert table_value(section, "ce", label) == expected, label
    family = statistics.mean(statistics.mean(hand_shift(PER_CLASS[s], COUNTS, d, r) for d, r in FAMILY)
                             for s in (0, 1))
    assert table_value(section, "ce", "family mean") == f"{family:.2f}"
    assert table_value(section, "ce", "n") == "2" and table_value(section, "bccl", "n") == "1"
    assert "±" not in table_value(section, "bccl", "uniform")  # one seed: no std
    assert (out / "plots" / "shift_cifar10_if100.png").read_bytes().startswith(PNG_MAGIC)


# ----------------------------------------------------------------------------- cost

def test_runs_csv_has_the_cost_columns_beside_top1_speed(out):
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False, na_values=[""])
    columns = list(runs.columns)
    at = columns.index("train_seconds")
    assert columns[at:at + 4] == ["train_seconds", "images_per_s", "peak_memory_mb", "eval_seconds"]
    ce = runs[(runs["dataset_label"] == "cifar10") & (runs["method"] == "ce")].set_index("seed")
    for seed in (0, 1):
        assert ce.loc[seed, "peak_memory_mb"] == COST[seed]["peak_memory_mb"]
        assert ce.loc[seed, "eval_seconds"] == COST[seed]["eval_seconds"]
        assert ce.loc[seed, "device"] == "cpu"
    old = runs[runs["method"] == "bccl"].iloc[0]
    assert math.isnan(old["peak_memory_mb"]) and math.isnan(old["eval_seconds"]) and pd.isna(old["device"])
    assert old["train_seconds"] == 12.5  # recorded since long before


def test_cost_column_per_cell(out):
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False, na_values=[""])
    ce = summary[(summary["dataset_label"] == "cifar10") & (summary["method"] == "ce")].iloc[0]
    assert ce["train_seconds_mean"] == pytest.approx(15.0)
    assert ce["train_seconds_std"] == pytest.approx(statistics.stdev([10.0, 20.0]))
    assert ce["eval_seconds_mean"] == pytest.approx(3.0) and ce["peak_memory_mb_mean"] == pytest.approx(200.0)
    assert ce["images_per_s_mean"] == pytest.approx(600.0)
    cell = cell_of((out / "report.md").read_text(), "cifar10, IF 100")
    assert table_value(cell, "ce", "cost") == "train 15.0 ± 7.1 s; eval 3.0 s; 600 img/s; peak 200 MB; cpu"
    assert table_value(cell, "bccl", "cost") == "train 12.5 s; eval n/a; 1000 img/s; peak n/a; n/a"
    old = cell_of((out / "report.md").read_text(), "cifar100, IF 100")
    assert table_value(old, "ce", "cost") == "train n/a; eval n/a; n/a img/s; peak n/a; n/a"
    columns = cell.splitlines()[[i for i, l in enumerate(cell.splitlines()) if l.startswith("| method")][0]]
    assert columns.index("| best top-1 |") < columns.index("| cost |")  # beside top-1
    assert (out / "plots" / "cost_cifar10_if100.png").read_bytes().startswith(PNG_MAGIC)
    assert not (out / "plots" / "cost_cifar100_if100.png").exists()  # no training time recorded
    assert "Cost plot: n/a" in cell_of((out / "report.md").read_text(), "Cost and per-class diagnostics — cifar100, IF 100")


def test_cost_fields_of_malformed_or_absent_records():
    assert all(math.isnan(v) for k, v in cost_fields(None).items() if k != "device")
    assert cost_fields(None)["device"] == ""
    odd = cost_fields({"train_seconds": "fast", "peak_memory_mb": -3, "eval_seconds": True, "device": 7,
                       "train_images_per_s": float("inf")})
    assert all(math.isnan(odd[k]) for k in ("train_seconds", "peak_memory_mb", "eval_seconds", "images_per_s"))
    assert odd["device"] == ""


# ----------------------------------------------------------------------------- diagnostics

def test_confusion_matrix_by_hand():
    # rows: class 0 -> 1/2, 1/2; class 1 -> 1/3, 2/3; class 2 no test image (NaN); by count: 1, 0, 2
    matrix = confusion_matrix([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], 3, counts=[1, 5, 0])
    expected = [[2 / 3, 1 / 3, 0], [1 / 2, 1 / 2, 0], [np.nan, np.nan, np.nan]]
    np.testing.assert_allclose(matrix, expected, equal_nan=True)


def test_confusion_of_a_run_and_its_plot(tree, out):
    folder = tree / "cifar10" / "if100" / "ce" / "seed0"
    matrix, order = run_confusion(folder)
    hand_order = sorted(range(10), key=lambda c: hand_rank(COUNTS, c))
    assert list(order) == hand_order == [1, 0, 2, 3, 4, 5, 6, 7, 8, 9]
    for i, true in enumerate(hand_order):
        images = [k for k, label in enumerate(LABELS) if label == true]
        for j, predicted in enumerate(hand_order):
            if not images:
                assert math.isnan(matrix[i, j])
            else:
                share = sum(1 for k in images if PREDICTIONS[k] == predicted) / len(images)
                assert matrix[i, j] == pytest.approx(share)
    assert (out / "plots" / "confusion_ce_seed0_cifar10_if100.png").read_bytes().startswith(PNG_MAGIC)
    assert len(list((out / "plots").glob("confusion_*.png"))) == 1  # the other runs have no predictions


def test_no_confusion_beyond_100_classes(tmp_path):
    atomic_write_json(tmp_path / "metrics.json", {"class_counts": [5] * 101})
    labels = np.arange(101)
    write_predictions(tmp_path, labels, {"best": EpochPredictions.compact(0, labels, np.ones(101), 101)})
    assert run_confusion(tmp_path) is None


def test_weight_norms_plotted_and_malformed_or_absent_are_na(tree, out):
    counts, norms = weight_norms(tree / "cifar10" / "if100" / "ce" / "seed0")
    assert list(counts) == COUNTS and list(norms) == NORMS[0]
    assert weight_norms(tree / "cifar10" / "if100" / "ce" / "seed1") is None  # a negative norm
    assert weight_norms(tree / "cifar10" / "if100" / "bccl" / "seed0") is None  # not recorded
    assert (out / "plots" / "weight_norms_cifar10_if100.png").read_bytes().startswith(PNG_MAGIC)
    old = cell_of((out / "report.md").read_text(), "Cost and per-class diagnostics — cifar100, IF 100")
    assert "Classifier weight norms: n/a" in old and "Confusion matrices: n/a" in old


def test_without_plots_the_analyses_still_write_their_tables(tree, tmp_path):
    build_report(tree, tmp_path, formats=("md", "csv"), plots=False)
    assert (tmp_path / "shift.csv").exists() and not (tmp_path / "plots").exists()
    assert "## Test-distribution shift — cifar10, IF 100" in (tmp_path / "report.md").read_text()


def test_hand_edited_class_counts_are_na_not_a_crash(tmp_path):
    root = tmp_path / "results"
    folder = write_run(root, resolve_config("ce", "cifar10", 100, 0), best=70.0)
    labels = np.arange(10)
    write_predictions(folder, labels, {"best": EpochPredictions.compact(0, labels, np.ones(10), 10)})
    edit_metrics(folder, class_counts=["many"] * 10, classifier_weight_norms=[1.0] * 10)
    report = build_report(root, tmp_path / "out")
    assert report.shift.empty and "n/a: no run of this cell records per-class" in report.markdown
    assert run_confusion(folder) is None and weight_norms(folder) is None
