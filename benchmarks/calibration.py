"""Calibration in numpy only: the equal-width bins of Guo et al. 2017 and the ECE over them.

`benchmarks.train.evaluation` computes a run's ECE with these at evaluation time; the report draws its
reliability diagrams from the same bins without importing torch. The definition (bins
(b/15, (b+1)/15] of the max softmax probability, ECE = sum |B|/N |accuracy(B) - confidence(B)|)
is restated in `benchmarks.train.evaluation`, whose `expected_calibration_error` is the public entry.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15


def _bin_calibration(confidences: np.ndarray, correct: np.ndarray, n_bins: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin (b/n, (b+1)/n]: (image count, accuracy, mean confidence); empty bins are NaN."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted(side="left") finds the first upper edge >= c, i.e. c in (lower, upper]; c = 0
    # (impossible for a max softmax probability) joins the first bin
    bins = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / counts
        confidence = np.bincount(bins, weights=confidences, minlength=n_bins) / counts
    return counts, accuracy, confidence


def calibration_bins(confidences, correct, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """The reliability diagram's data: per equal-width bin, count, accuracy and mean confidence."""
    counts, accuracy, confidence = _bin_calibration(np.asarray(confidences, dtype=np.float64),
                                                    np.asarray(correct, dtype=np.float64), n_bins)
    return {"edges": np.linspace(0.0, 1.0, n_bins + 1), "count": counts, "accuracy": accuracy,
            "confidence": confidence}


def ece_from_confidences(confidences, correct, n_bins: int = ECE_BINS) -> float:
    """ECE from each image's max probability and whether its prediction is right (nan: no image)."""
    confidences = np.asarray(confidences, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    if len(confidences) == 0:
        return float("nan")
    counts, accuracy, confidence = _bin_calibration(confidences, correct, n_bins)
    filled = counts > 0
    return float(np.sum(counts[filled] / len(confidences) * np.abs(accuracy[filled] - confidence[filled])))
