"""Evaluation: top-1, per-class accuracy, the many / medium / few-shot groups, calibration.

Shot groups are defined by a class's *training* count: many > 100, few < 20, medium 20..100
(both ends included). A group's accuracy is the mean of its classes' accuracies. The releases
report 0 for an empty group (CIFAR-10-LT has no few-shot class); that would read as a total
failure, so an empty group is `None` here (null in JSON, "n/a" in the report). The whole protocol:
docs/protocol.md.

Calibration: the expected calibration error of Guo et al. 2017 ("On Calibration of Modern Neural
Networks"), as OpenLT and MiSLAS report it for long-tailed methods (none of the BCCL, BCL or PaCo
releases does): the max softmax probability of each image is binned into 15 equal-width bins
(b/15, (b+1)/15], and ECE = sum over bins of |B|/N * |accuracy(B) - mean confidence(B)|, in
[0, 1]. Per shot group, the images whose true class is in the group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.calibration import ECE_BINS, calibration_bins, ece_from_confidences  # noqa: F401  (re-exported)

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


def expected_calibration_error(probs, labels, n_bins: int = ECE_BINS) -> float:
    """Guo et al.'s ECE in [0, 1] of class probabilities `probs` (N, C) against `labels` (N,)
    (numpy arrays or tensors): the prediction is the argmax, its confidence the max probability."""
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().float().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be (N, C) and labels (N,); got {probs.shape} and {labels.shape}")
    return ece_from_confidences(probs.max(axis=1), probs.argmax(axis=1) == labels, n_bins)


def calibration_metrics(predictions, confidences, labels, class_counts, n_bins: int = ECE_BINS
                        ) -> dict[str, float | None]:
    """{"overall", "many", "medium", "few"}: ECE over all test images and over the images of each
    shot group's classes (None for a group without test images)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = predictions == labels
    result: dict[str, float | None] = {"overall": ece_from_confidences(confidences, correct, n_bins)}
    for group, classes in shot_groups(class_counts).items():
        mask = np.isin(labels, classes)
        result[group] = ece_from_confidences(confidences[mask], correct[mask], n_bins) if mask.any() else None
    if np.isnan(result["overall"]):
        result["overall"] = None
    return result


def evaluation_metrics(outputs: "EvalOutputs", labels, class_counts) -> dict[str, Any]:
    """Accuracy metrics (`accuracy_metrics`) plus the calibration `ece` of one evaluation."""
    metrics = accuracy_metrics(outputs.predictions, labels, class_counts)
    metrics["ece"] = calibration_metrics(outputs.predictions, outputs.confidences, labels, class_counts)
    if outputs.top5 is not None:
        metrics["top5"] = top5_accuracy(outputs.top5, labels)
    return metrics


def top5_accuracy(top5, labels) -> float:
    """Percent of images whose label is among their TOP_K highest logits (all of them when a
    dataset has fewer classes: 100 %, which is why the report shows top-5 only from 100 classes)."""
    top5, labels = np.asarray(top5), np.asarray(labels)
    if not len(labels):
        return float("nan")
    return float(100.0 * (top5 == labels[:, None]).any(axis=1).mean())


@dataclass
class EvalOutputs:
    """One evaluation of the test set, in test-set order: the argmax class of every image and the
    softmax probability of that class (its confidence), from the same logits."""

    predictions: np.ndarray  # int64 (N,)
    confidences: np.ndarray  # float32 (N,)
    top5: np.ndarray | None = None  # int64 (N, min(TOP_K, classes)): the highest logits' classes


TOP_K = 5


def _predict_batch(logits: torch.Tensor) -> torch.Tensor:
    """(N, 2 + k): the argmax of the logits, its softmax probability (float32) and the classes of
    the k = min(TOP_K, classes) highest logits (for top-5), side by side so that one gather moves
    them all. The argmax is taken on the logits themselves, as before confidences were kept, so a
    near-tie rounded equal by the softmax cannot flip a prediction."""
    logits = logits.float()
    preds = logits.argmax(dim=1)
    conf = torch.softmax(logits, dim=1).gather(1, preds[:, None])[:, 0]
    top = logits.topk(min(TOP_K, logits.shape[1]), dim=1).indices
    return torch.cat([preds.to(torch.float64)[:, None], conf.to(torch.float64)[:, None], top.to(torch.float64)], dim=1)


@torch.no_grad()
def predict(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """(N, 2 + k) argmax predictions, confidences and top-k classes (`_predict_batch`) of `logits_fn` over `images`
    (already on the device, normalised)."""
    parts = [_predict_batch(logits_fn(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, 2, dtype=torch.float64, device=images.device)


class _TestImages(Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images.open(index) if hasattr(self.images, "open") else self.images[index]
        return self.transform(image)


class TestEvaluator:
    """Argmax predictions and their softmax confidences of a model on the whole test set, on one
    device or across ranks (one forward pass gives both).

    Two paths, both ending in predictions in test-set order:
    - in-memory images with the plain `test` view (CIFAR-sized data): normalised once into one
      device tensor and predicted in slices, without a DataLoader (what the fast loop wants);
    - file-based images, or any other test view (`test224`: Resize 256 + CenterCrop 224):
      streamed through a DataLoader that decodes and views each image, since a decoded 224-pixel
      test set (50,000 x 600 KB for ImageNet-LT) cannot sit on the device.
    Under torchrun, each rank predicts the images r, r + W, ... (`distributed.shard_indices`: no
    padding) and the predictions are gathered back (`gather_sharded`), so every test image is
    counted exactly once and every rank gets the same predictions.
    """

    def __init__(self, data, device: torch.device, batch_size: int, test_view: str = "test",
                 num_workers: int = 0, channels_last: bool = False):
        from benchmarks.train import distributed
        from benchmarks.data.loaders import normalised_tensor

        self.device = device
        self.batch_size = batch_size
        self.channels_last = channels_last
        self.n = len(data.test_labels)
        sharded = distributed.world_size() > 1
        indices = distributed.shard_indices(self.n).numpy()
        images = data.test_images[indices] if sharded else data.test_images
        self.images: torch.Tensor | None = None
        self.loader: DataLoader | None = None
        if test_view == "test" and not data.file_based:
            self.images = normalised_tensor(images, data.mean, data.std, device)
            if channels_last:
                self.images = self.images.contiguous(memory_format=torch.channels_last)
        else:
            from benchmarks.data.views.large import view_transform

            self.loader = DataLoader(
                _TestImages(images, view_transform(test_view, data.mean, data.std)), batch_size=batch_size,
                shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda",
            )

    @torch.no_grad()
    def outputs(self, logits_fn: Callable[[torch.Tensor], torch.Tensor]) -> EvalOutputs:
        from benchmarks.train import distributed

        if self.images is not None:
            both = predict(logits_fn, self.images, self.batch_size)
        else:
            parts = []
            for batch in self.loader:
                batch = batch.to(self.device, non_blocking=True)
                if self.channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                parts.append(_predict_batch(logits_fn(batch)))
            both = torch.cat(parts) if parts else torch.zeros(0, 2, dtype=torch.float64, device=self.device)
        # float64 holds every class index exactly; the gather moves one tensor
        both = distributed.gather_sharded(both, self.n).cpu().numpy()
        top5 = both[:, 2:].astype(np.int64) if both.shape[1] > 2 else None
        return EvalOutputs(both[:, 0].astype(np.int64), both[:, 1].astype(np.float32), top5)

    def predictions(self, logits_fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        """The argmax predictions alone (`outputs` without the confidences)."""
        return self.outputs(logits_fn).predictions
