"""Per-class diagnostics: where (which classes) a method's accuracy comes from.

- Per-class accuracy against training count is `plots.per_class_plot` (all methods of a cell).
- Confusion matrix of a run's best epoch, from predictions.npz: entry (i, j) is the fraction of
  the test images of true class i predicted as class j, so every row with a test image sums to 1
  (a row without one is NaN). Classes are ordered by training count, most images first (ties by
  class index, the ranks of `shift.count_ranks`), so a long-tailed model shows its errors as mass
  to the left of the diagonal in the lower rows: tail images predicted as head classes. Drawn only
  for datasets of at most `MAX_CONFUSION_CLASSES` classes (beyond, a cell per class pair is
  unreadable).
- Classifier weight norms: metrics.json's `classifier_weight_norms` (the L2 norm of each class's
  classifier weight at the end of training, one positive number per class), the diagnostic of the
  Decoupling paper: a plain CE classifier's norms grow with the class's training count, and
  re-balancing methods flatten that slope. Absent (runs written before it was recorded, methods
  without a per-class linear classifier) or malformed lists read as None: n/a in the report.

numpy and pandas only; the figures are drawn in `analysis_plots.py`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks import LTBenchError
from benchmarks.store.predictions import read_predictions
from benchmarks.reporting.shift import count_ranks
from benchmarks.store.results import read_metrics

MAX_CONFUSION_CLASSES = 100


def _metrics(folder: Path) -> dict:
    try:
        metrics = read_metrics(Path(folder))
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def _counts(metrics: dict) -> list | None:
    """metrics.json's class_counts when it is a non-empty list of non-negative numbers."""
    counts = metrics.get("class_counts")
    if not isinstance(counts, list) or not counts or not all(
            isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) and n >= 0 for n in counts):
        return None
    return counts


def class_order(counts) -> np.ndarray:
    """Class indices from the most to the fewest training images (ties by class index)."""
    return np.argsort(count_ranks(counts), kind="stable")


def confusion_matrix(labels, predictions, num_classes: int, counts=None) -> np.ndarray:
    """Row-normalised confusion matrix (rows true class, columns predicted class); rows and columns
    reordered by `class_order(counts)` when counts are given."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    matrix = np.zeros((num_classes, num_classes))
    np.add.at(matrix, (labels, predictions), 1.0)
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.where(totals > 0, matrix / np.where(totals > 0, totals, 1), np.nan)
    if counts is not None:
        order = class_order(counts)
        matrix = matrix[np.ix_(order, order)]
    return matrix


def run_confusion(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(matrix ordered by count, the class index of each row) of a run's best epoch, or None when
    the run has no best-epoch predictions, more than `MAX_CONFUSION_CLASSES` classes, or records
    that disagree (a damaged predictions.npz, labels beyond the class count)."""
    counts = _counts(_metrics(folder))
    if counts is None or len(counts) > MAX_CONFUSION_CLASSES:
        return None
    try:
        kept = read_predictions(folder)
    except LTBenchError:
        return None
    if kept is None or "best" not in kept.epochs:
        return None
    labels, predictions = kept.labels.astype(np.int64), kept.epochs["best"].predictions.astype(np.int64)
    num_classes = len(counts)
    if len(labels) == 0 or min(labels.min(), predictions.min()) < 0 \
            or max(labels.max(), predictions.max()) >= num_classes:
        return None
    return confusion_matrix(labels, predictions, num_classes, counts), class_order(counts)


def weight_norms(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(training counts, classifier weight norms) of a run, or None when metrics.json has no
    usable `classifier_weight_norms` (absent, not one positive finite number per class)."""
    metrics = _metrics(folder)
    norms, counts = metrics.get("classifier_weight_norms"), _counts(metrics)
    if not isinstance(norms, list) or counts is None or len(norms) != len(counts):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
               for v in norms):
        return None
    return np.asarray(counts, dtype=float), np.asarray(norms, dtype=float)
