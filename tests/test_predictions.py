"""Calibration (ECE, hand-worked), the evaluator's confidences, and per-image predictions:
predictions.npz (shape, dtype, size), its fingerprint, and pairing refused on another test order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import LTBenchError
from benchmarks.train import evaluation
from benchmarks.train.evaluation import (
    EvalOutputs, calibration_bins, calibration_metrics, evaluation_metrics,
    expected_calibration_error,
)
from benchmarks.store.predictions import (
    PREDICTIONS_FILE, EpochPredictions, labels_fingerprint, paired_correctness, read_predictions,
    write_predictions,
)

# ----------------------------------------------------------------------------- ECE


def test_ece_one_image_per_bin():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 0])  # right at 0.9, wrong at 0.8, right at 0.7, wrong at 0.6
    # each image alone in its bin: (0.1 + 0.8 + 0.3 + 0.6) / 4
    assert expected_calibration_error(probs, labels) == pytest.approx(0.45)


def test_ece_shared_bin_averages_before_the_gap():
    probs = np.array([[0.62, 0.38], [0.64, 0.36], [1.0, 0.0]])
    labels = np.array([0, 1, 0])
    # bin (9/15, 10/15]: accuracy 1/2, confidence 0.63, weight 2/3; bin 15: perfect
    assert expected_calibration_error(probs, labels) == pytest.approx(2 / 3 * 0.13)
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0  # sure and right


def test_ece_bins_are_closed_on_the_right():
    # 0.2 = 3/15 belongs to (2/15, 3/15] with 0.15: one bin (acc 1/2, conf 0.175) -> 0.325; had 0.2
    # opened the next bin, the ECE would be (0.8 + 0.15) / 2 = 0.475
    a = np.r_[[0.2] * 5, [0.0] * 5]
    b = np.r_[0.15, [0.85 / 9] * 9]
    assert expected_calibration_error(np.stack([a, b]), np.array([0, 1])) == pytest.approx(0.325)
    assert list(np.flatnonzero(calibration_bins([0.2, 0.2 + 1e-12], [1, 0])["count"])) == [2, 3]


def test_ece_tensors_numpy_range_and_bad_shape():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 7)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 7, 500)
    ece = expected_calibration_error(probs, labels)
    assert 0.0 <= ece <= 1.0
    assert expected_calibration_error(torch.tensor(probs), torch.tensor(labels)) == pytest.approx(ece)
    with pytest.raises(ValueError, match="N, C"):
        expected_calibration_error(probs[:, 0], labels)


def test_calibration_per_shot_group_and_bins():
    counts = [200, 50, 5]  # many, medium, few
    labels = np.array([0, 0, 1, 2])
    preds = np.array([0, 1, 1, 0])
    conf = np.array([0.9, 0.6, 0.7, 0.8])
    ece = calibration_metrics(preds, conf, labels, counts)
    assert ece["many"] == pytest.approx((0.1 + 0.6) / 2)  # images of class 0 only
    assert ece["medium"] == pytest.approx(0.3)
    assert ece["few"] == pytest.approx(0.8)
    assert ece["overall"] == pytest.approx((0.1 + 0.6 + 0.3 + 0.8) / 4)
    assert calibration_metrics(preds[:3], conf[:3], labels[:3], counts)["few"] is None  # no test image
    bins = calibration_bins(conf, preds == labels)
    assert bins["count"].sum() == 4 and bins["count"][13] == 1 and np.isnan(bins["accuracy"][0])


# ----------------------------------------------------------------------------- the evaluator


class _Data:
    file_based = False
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    def __init__(self, n):
        rng = np.random.default_rng(1)
        self.test_images = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
        self.test_labels = rng.integers(0, 5, n)


def test_evaluator_gives_predictions_and_softmax_confidences_in_one_pass():
    data = _Data(37)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    calls = []

    def logits_fn(x):
        calls.append(len(x))
        return model(x)

    evaluator = evaluation.TestEvaluator(data, torch.device("cpu"), batch_size=10)
    out = evaluator.outputs(logits_fn)
    assert calls == [10, 10, 10, 7]  # one forward pass over the test set
    with torch.no_grad():
        logits = model(evaluator.images)
    assert out.predictions.dtype == np.int64 and out.confidences.dtype == np.float32
    np.testing.assert_array_equal(out.predictions, logits.argmax(1).numpy())
    np.testing.assert_allclose(out.confidences, torch.softmax(logits, 1).max(1).values.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(evaluator.predictions(model), out.predictions)
    metrics = evaluation_metrics(out, data.test_labels, [200, 200, 50, 5, 5])
    probs = torch.softmax(logits, 1).numpy()
    assert metrics["ece"]["overall"] == pytest.approx(expected_calibration_error(probs, data.test_labels), rel=1e-5)


# ----------------------------------------------------------------------------- predictions.npz


def _epoch(epoch, n, num_classes, seed):
    rng = np.random.default_rng(seed)
    return EpochPredictions.compact(epoch, rng.integers(0, num_classes, n), rng.uniform(0.1, 1, n), num_classes)


def test_predictions_file_shape_dtype_and_size(tmp_path):
    n, num_classes = 10_000, 100
    labels = np.random.default_rng(9).integers(0, num_classes, n)
    best, last = _epoch(7, n, num_classes, 1), _epoch(9, n, num_classes, 2)
    path = write_predictions(tmp_path, labels, {"best": best, "last": last})
    assert path.name == PREDICTIONS_FILE
    assert path.stat().st_size < 2 * 50_000  # two epochs kept: under 50 KB each (random, incompressible-ish)
    run = read_predictions(tmp_path)
    assert set(run.epochs) == {"best", "last"} and run.epochs["best"].epoch == 7
    for kept, original in ((run.epochs["best"], best), (run.epochs["last"], last)):
        assert kept.predictions.shape == (n,) and kept.predictions.dtype == np.int16
        assert kept.confidences.shape == (n,) and kept.confidences.dtype == np.float16
        np.testing.assert_array_equal(kept.predictions, original.predictions)
    np.testing.assert_array_equal(run.labels, labels)
    assert run.fingerprint == labels_fingerprint(labels)
    np.testing.assert_array_equal(run.correct("last"), last.predictions == labels)


def test_old_run_folder_without_predictions_and_missing_best(tmp_path):
    assert read_predictions(tmp_path) is None  # written before predictions were kept
    labels = np.arange(6) % 3
    write_predictions(tmp_path, labels, {"best": None, "last": _epoch(2, 6, 3, 0)})
    run = read_predictions(tmp_path)
    assert list(run.epochs) == ["last"]
    with pytest.raises(LTBenchError, match="no best-epoch predictions"):
        run.correct("best")


def test_damaged_file_is_a_clear_error(tmp_path):
    (tmp_path / PREDICTIONS_FILE).write_bytes(b"not a zip")
    with pytest.raises(LTBenchError, match="damaged"):
        read_predictions(tmp_path)


def test_fingerprint_depends_on_order_not_dtype():
    labels = np.array([0, 1, 2, 2])
    assert labels_fingerprint(labels) == labels_fingerprint(labels.astype(np.int16))
    assert labels_fingerprint(labels) != labels_fingerprint(labels[::-1])


def test_pairing_refuses_another_test_order(tmp_path):
    labels = np.random.default_rng(3).integers(0, 10, 200)
    for name, order in (("a", labels), ("b", labels), ("shuffled", labels[::-1])):
        write_predictions(tmp_path / name, order, {"best": _epoch(1, 200, 10, len(name)), "last": _epoch(2, 200, 10, 5)})
    a, b, shuffled = (read_predictions(tmp_path / k) for k in ("a", "b", "shuffled"))
    ca, cb = paired_correctness(a, b)
    assert ca.dtype == bool and ca.shape == cb.shape == (200,)
    with pytest.raises(LTBenchError, match="same test set in the same order"):
        paired_correctness(a, shuffled)


def test_class_indices_beyond_int16():
    kept = EpochPredictions.compact(0, [40_000, 3], [0.5, 0.9], num_classes=40_001)
    assert kept.predictions.dtype == np.int32 and kept.predictions[0] == 40_000


def test_eval_outputs_is_a_plain_record():
    out = EvalOutputs(np.array([1]), np.array([0.5], dtype=np.float32))
    assert out.predictions[0] == 1
