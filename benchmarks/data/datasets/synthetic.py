"""Synthetic CIFAR-shaped data with the real CIFAR-LT class counts, for tests and timing.

Each class has a fixed random template (seeded, independent of the run's seed): a random 4x4
colour grid upsampled to 32x32, so that it survives crops, flips and colour jitter the way a real
image's coarse structure does; an image is its class template plus uniform per-pixel noise. The task is learnable, so a short run
must beat chance, yet it costs nothing to make and needs no download. `synthetic` mirrors
CIFAR-10-LT (10 classes, n_max 5000, 1,000 test images per class), `synthetic100` CIFAR-100-LT.
"""

from __future__ import annotations

import numpy as np

from benchmarks.data.datasets import DATASETS, DatasetEntry, DatasetRequest, LTData
from benchmarks.data.datasets.cifar import CIFAR_MEAN, CIFAR_STD
from benchmarks.data.datasets.lt import lt_class_counts

NOISE = 96


def make_images(labels: np.ndarray, templates: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    noise = rng.randint(-NOISE, NOISE + 1, size=(len(labels),) + templates.shape[1:])
    return np.clip(templates[labels].astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _build(num_classes: int, n_max: int, test_per_class: int, request: DatasetRequest) -> LTData:
    rng = np.random.RandomState(1234 + request.subset_seed)
    coarse = rng.randint(0, 256, size=(num_classes, 4, 4, 3)).astype(np.uint8)
    templates = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    counts = lt_class_counts(n_max, num_classes, request.imb_factor)
    train_labels = np.repeat(np.arange(num_classes), counts).astype(np.int64)
    test_labels = np.repeat(np.arange(num_classes), test_per_class).astype(np.int64)
    return LTData(
        name=f"synthetic{'' if num_classes == 10 else num_classes}",
        num_classes=num_classes,
        train_images=make_images(train_labels, templates, rng),
        train_labels=train_labels,
        test_images=make_images(test_labels, templates, rng),
        test_labels=test_labels,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        info={"protocol": "synthetic templates + noise", "n_max": n_max, "class_counts": counts},
    )


DATASETS.register("synthetic")(DatasetEntry(build=lambda r: _build(10, 5000, 1000, r)))
DATASETS.register("synthetic100")(DatasetEntry(build=lambda r: _build(100, 500, 100, r)))
