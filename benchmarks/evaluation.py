"""Evaluation: top-1, per-class accuracy and the many / medium / few-shot groups.

Shot groups are defined by a class's *training* count: many > 100, few < 20, medium 20..100
(both ends included). A group's accuracy is the mean of its classes' accuracies. The releases
report 0 for an empty group (CIFAR-10-LT has no few-shot class); that would read as a total
failure, so an empty group is `None` here (null in JSON, "n/a" in the report).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

MANY_THRESHOLD = 100  # many-shot: more than this many training images
FEW_THRESHOLD = 20  # few-shot: fewer than this many


def shot_groups(class_counts) -> dict[str, np.ndarray]:
    """Class indices of each shot group, by training count."""
    counts = np.asarray(class_counts)
    return {
        "many": np.where(counts > MANY_THRESHOLD)[0],
        "medium": np.where((counts >= FEW_THRESHOLD) & (counts <= MANY_THRESHOLD))[0],
        "few": np.where(counts < FEW_THRESHOLD)[0],
    }


def accuracy_metrics(predictions, labels, class_counts) -> dict[str, Any]:
    """Top-1 (over images), per-class accuracy and group accuracies, all in percent."""
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    num_classes = len(class_counts)
    correct = np.bincount(labels, weights=(predictions == labels), minlength=num_classes)
    total = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(total > 0, 100.0 * correct / np.maximum(total, 1), np.nan)
    result: dict[str, Any] = {
        "top1": float(100.0 * (predictions == labels).mean()) if len(labels) else float("nan"),
        "per_class": [None if np.isnan(a) else float(a) for a in per_class],
    }
    for group, classes in shot_groups(class_counts).items():
        accs = per_class[classes]
        accs = accs[~np.isnan(accs)]
        result[group] = float(accs.mean()) if len(accs) else None
    return result


@torch.no_grad()
def predict(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """Argmax predictions of `logits_fn` over `images` (already on the device, normalised)."""
    preds = [logits_fn(images[i : i + batch_size]).argmax(dim=1) for i in range(0, len(images), batch_size)]
    return torch.cat(preds)
