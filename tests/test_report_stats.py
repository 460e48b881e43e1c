"""The report's statistics on fixture run folders: comparisons (Welch over seeds, paired bootstrap
and McNemar over images, n/a without predictions, refused on another test order), variants
against their recipe, sensitivity per swept key, ECE beside top-1, the paper number against the
run's interval and the seeds needed, reliability diagrams, and every format carrying them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchmarks.config import resolve_config
from benchmarks.store.predictions import EpochPredictions, write_predictions
from benchmarks.reporting import build_report
from benchmarks.reporting.compare import swept_keys
from benchmarks.reporting.stats import mcnemar, paired_bootstrap, seeds_needed, welch
from test_report import write_run

N_TEST = 400
LABELS = np.arange(N_TEST) % 10


def correctness(accuracy: float, seed: int) -> np.ndarray:
    """A per-image correctness vector with exactly `accuracy` percent right."""
    right = np.zeros(N_TEST, dtype=bool)
    right[np.random.default_rng(seed).permutation(N_TEST)[: int(round(accuracy / 100 * N_TEST))]] = True
    return right


def run(root, method, dataset, seed, best, overrides=None, ece=None, right=None, labels=LABELS):
    """A finished run folder; `ece` adds calibration to metrics.json, `right` a predictions.npz."""
    config = resolve_config(method, dataset, 100, seed, overrides=overrides or {})
    folder = write_run(root, config, best=best, last=best - 1.0)
    if ece is not None:
        metrics = json.loads((folder / "metrics.json").read_text())
        for which, value in (("best", ece), ("last", ece + 0.01)):
            metrics[which]["ece"] = {"overall": value, "many": value, "medium": value, "few": None}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if right is not None:
        preds = np.where(right, labels, (labels + 1) % 10)
        conf = np.where(right, 0.9, 0.6)
        epoch = json.loads((folder / "metrics.json").read_text())["best"]["epoch"]  # the file matches the record
        kept = EpochPredictions.compact(epoch, preds, conf, 10)
        write_predictions(folder, labels, {"best": kept, "last": kept})
    return folder


SEED_TOP1 = {"bccl": (84.0, 85.0, 86.0), "ce": (70.0, 71.0, 72.0)}
ETA_TOP1 = {0.2: (80.0, 81.0, 82.0), 0.05: (85.0, 86.0, 87.0)}
RIGHT = {"bccl": correctness(60.0, 1), "ce": correctness(52.0, 2)}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """cifar10 IF100: bccl (3 seeds each: recipe, eta 0.2, eta 0.05) and ce (3 seeds), with ECE.
    cifar100 IF100, one seed each: bccl and ce with predictions, paco with another test order,
    bcl without predictions (as written before they were kept)."""
    root = tmp_path_factory.mktemp("results")
    for method, values in SEED_TOP1.items():
        for seed, best in enumerate(values):
            run(root, method, "cifar10", seed, best, ece=0.05 + 0.01 * seed)
    for offset, (eta, values) in enumerate(ETA_TOP1.items(), start=1):
        for seed, best in enumerate(values):  # other seeds: folders of their own in any layout
            run(root, "bccl", "cifar10", 3 * offset + seed, best, overrides={"eta": eta})
    for method, right in RIGHT.items():
        run(root, method, "cifar100", 0, 100 * right.mean(), right=right)
    run(root, "paco", "cifar100", 0, 55.0, right=correctness(55.0, 3), labels=LABELS[::-1])
    run(root, "bcl", "cifar100", 0, 50.0)
    out = tmp_path_factory.mktemp("reports")
    return build_report(root, out), out


def comparison(report, label, a, b, a_variant=None):
    c = report.comparisons
    rows = c[(c["dataset_label"] == label) & (c["a_method"] == a) & (c["b_method"] == b)]
    if a_variant is not None:
        rows = rows[rows["a_variant"].str.contains(a_variant, regex=False)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_methods_compared_with_welch_over_seeds(report):
    row = comparison(report[0], "cifar10", "bccl", "ce")
    diff, low, high, p = welch(SEED_TOP1["bccl"], SEED_TOP1["ce"])
    assert row["test"] == "Welch over seeds" and (row["n_a"], row["n_b"]) == (3, 3)
    assert (row["diff"], row["low"], row["high"], row["p"]) == pytest.approx((diff, low, high, p))
    assert row["significant"] and diff == pytest.approx(14.0)


def test_variants_compared_with_their_recipe(report):
    row = comparison(report[0], "cifar10", "bccl", "bccl", a_variant="eta 0.2")
    assert row["kind"] == "variant vs recipe" and row["b_variant"] == ""
    assert row["diff"] == pytest.approx(-4.0)
    assert row["p"] == pytest.approx(welch(ETA_TOP1[0.2], SEED_TOP1["bccl"])[3])
    c = report[0].comparisons
    assert len(c[(c["dataset_label"] == "cifar10") & (c["kind"] == "variant vs recipe")]) == 2
    # method pairs use each method's recipe variant only: one bccl-ce row in the cell
    assert len(c[(c["dataset_label"] == "cifar10") & (c["kind"] == "methods")]) == 1


def test_one_seed_each_is_paired_over_images(report):
    row = comparison(report[0], "cifar100", "bccl", "ce")
    diff, low, high = paired_bootstrap(RIGHT["bccl"], RIGHT["ce"])
    assert row["test"].startswith("paired bootstrap")
    assert (row["diff"], row["low"], row["high"]) == pytest.approx((diff, low, high))
    assert row["diff"] == pytest.approx(8.0)
    assert row["p"] == pytest.approx(mcnemar(RIGHT["bccl"], RIGHT["ce"]))
    assert row["significant"] == (row["p"] < 0.05)


def test_pairing_without_predictions_or_on_another_order_is_na_with_why(report):
    no_file = comparison(report[0], "cifar100", "bccl", "bcl")
    assert np.isnan(no_file["p"]) and "no predictions.npz" in no_file["note"]
    assert no_file["diff"] == pytest.approx(60.0 - 50.0)  # the difference of the means stays
    reordered = comparison(report[0], "cifar100", "bccl", "paco")
    assert np.isnan(reordered["low"]) and "same test set in the same order" in reordered["note"]


def test_sensitivity_per_swept_key(report):
    s = report[0].sensitivity
    eta = s[(s["dataset_label"] == "cifar10") & (s["key"] == "eta")]
    assert list(eta["value"]) == [0.05, 0.1, 0.2] and list(eta["recipe"]) == [False, True, False]
    assert list(eta["top1_mean"]) == pytest.approx([86.0, 85.0, 81.0])
    half = 4.302652729749464 / np.sqrt(3)  # t(0.975, 2) * std 1 / sqrt(3)
    assert list(eta["top1_high"] - eta["top1_mean"]) == pytest.approx([half] * 3)
    assert set(s["key"]) == {"eta"}  # no other key varies; ce has one variant
    assert s[s["dataset_label"] == "cifar100"].empty


def test_swept_keys_ignore_identity_and_execution_keys():
    configs = {"": {"seed": 0, "eta": 0.1, "amp": "off", "views": ["a", "b"]},
               "x": {"seed": 1, "eta": 0.2, "amp": "bf16", "views": ["a", "b"]},
               "y": {"seed": 0, "eta": 0.1, "amp": "off", "views": ["a", "c"], "extra": 1}}
    assert swept_keys(configs) == ["eta", "extra", "views"]
    assert swept_keys({"": {"eta": 0.1}}) == []


def test_ece_interval_paper_in_ci_and_seeds_needed(report):
    summary = report[0].summary
    bccl = summary[(summary["dataset_label"] == "cifar10") & (summary["method"] == "bccl")
                   & (summary["variant"] == "")].iloc[0]
    assert bccl["best_ece_mean"] == pytest.approx(0.06) and bccl["last_ece_mean"] == pytest.approx(0.07)
    assert bccl["best_top1_ci_low"] == pytest.approx(85.0 - 4.302652729749464 / np.sqrt(3))
    assert bccl["paper_in_ci"] == True  # noqa: E712  (85.22 in [82.5, 87.5])
    assert bccl["seeds_for_1pt"] == seeds_needed(1.0) == 10
    eta = summary[summary["variant"].str.contains("eta 0.2", regex=False)].iloc[0]
    assert eta["paper_in_ci"] == False and eta["verdict"] == "recipe differs"  # noqa: E712
    one_seed = summary[(summary["dataset_label"] == "cifar100") & (summary["method"] == "bccl")].iloc[0]
    assert pd.isna(one_seed["paper_in_ci"]) and np.isnan(one_seed["seeds_for_1pt"])
    assert np.isnan(one_seed["best_ece_mean"])  # metrics.json without ECE: n/a


def test_every_format_carries_the_new_sections(report):
    result, out = report
    md = (out / "report.md").read_text()
    cell = md.split("## cifar10, IF 100")[1].split("\n## ")[0]
    bccl_line = next(line for line in cell.splitlines() if line.startswith("| bccl | "))
    assert "0.060 / 0.070" in bccl_line and "| yes | 10 |" in bccl_line  # ECE, paper in CI, seeds
    assert "Reliability diagram: n/a" in cell  # no predictions in that cell
    assert "## Comparisons — cifar10, IF 100" in md and "## Sensitivity — cifar10, IF 100" in md
    comparisons = md.split("## Comparisons — cifar10, IF 100")[1].split("\n## ")[0]
    assert "| bccl | ce | 3/3 | +14.00 |" in comparisons and "| * |" in comparisons
    assert "0.1 (recipe)" in md.split("## Sensitivity — cifar10, IF 100")[1]
    csv = pd.read_csv(out / "comparisons.csv")
    assert len(csv) == len(result.comparisons) == 3 + 6  # cifar10: 1 pair + 2 variants; cifar100: 4 methods
    assert len(pd.read_csv(out / "sensitivity.csv")) == 3
    assert {"paper_in_ci", "seeds_for_1pt", "best_ece_mean", "best_top1_ci_low"} <= set(pd.read_csv(out / "summary.csv"))
    tex = (out / "report.tex").read_text()
    assert r"Comparisons --- cifar10, IF 100" in tex and r"Sensitivity --- cifar10, IF 100" in tex
    html = (out / "report.html").read_text()
    assert "Comparisons — cifar10, IF 100" in html and "Sensitivity to eta" in html
    plots = {p.name for p in (out / "plots").glob("*.png")}
    assert "reliability_cifar100_if100.png" in plots and "reliability_cifar10_if100.png" not in plots
    assert "sensitivity_bccl_eta_cifar10_if100.png" in plots
