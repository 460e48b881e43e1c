"""Evaluation: top-1, per-class accuracy and the many / medium / few-shot groups.

Shot groups are defined by a class's *training* count: many > 100, few < 20, medium 20..100
(both ends included). A group's accuracy is the mean of its classes' accuracies. The releases
report 0 for an empty group (CIFAR-10-LT has no few-shot class); that would read as a total
failure, so an empty group is `None` here (null in JSON, "n/a" in the report). The whole protocol:
docs/protocol.md.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

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


class _TestImages(Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images.open(index) if hasattr(self.images, "open") else self.images[index]
        return self.transform(image)


class TestEvaluator:
    """Argmax predictions of a model on the whole test set, on one device or across ranks.

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
        from benchmarks import distributed
        from benchmarks.loaders import normalised_tensor

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
            from benchmarks.views.large import view_transform

            self.loader = DataLoader(
                _TestImages(images, view_transform(test_view, data.mean, data.std)), batch_size=batch_size,
                shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda",
            )

    @torch.no_grad()
    def predictions(self, logits_fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        from benchmarks import distributed

        if self.images is not None:
            preds = predict(logits_fn, self.images, self.batch_size)
        else:
            parts = []
            for batch in self.loader:
                batch = batch.to(self.device, non_blocking=True)
                if self.channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                parts.append(logits_fn(batch).argmax(dim=1))
            preds = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=self.device)
        return distributed.gather_sharded(preds, self.n).cpu().numpy()
