"""scikit-learn's bundled digits, made long-tailed: the offline default (no download anywhere).

1,797 real 8x8 grey images of 10 classes (174-183 per class). Each is scaled to 0-255, resized
to 32x32 with bilinear interpolation and repeated to 3 channels, so every CIFAR recipe (ResNet-32,
crops, AutoAugment) applies unchanged. Per class, a fixed `TEST_PER_CLASS` images (chosen by a
private RandomState(0), independent of the run's seed) form a balanced held-out test set; the rest
are the balanced pool from which the LDAM-DRW procedure takes the long-tailed training subset,
with n_max = the smallest class's pool so that every class can supply its share.

Why through scikit-learn rather than a copy of the array in ltbench: scikit-learn ships the
UCI data (CC BY 4.0) with its provenance, and ltbench then redistributes no data at all.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from benchmarks.data.datasets import DATASETS, DatasetEntry, DatasetRequest, LTData
from benchmarks.data.datasets.lt import long_tailed_subset

TEST_PER_CLASS = 50
SIZE = 32


def _to_rgb32(images_8x8: np.ndarray) -> np.ndarray:
    out = np.empty((len(images_8x8), SIZE, SIZE, 3), dtype=np.uint8)
    for i, img in enumerate(images_8x8):
        grey = Image.fromarray(np.round(img * (255.0 / 16.0)).astype(np.uint8), mode="L")
        out[i] = np.asarray(grey.resize((SIZE, SIZE), Image.BILINEAR))[..., None]
    return out


def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _to_rgb32(digits.images), digits.target.astype(np.int64)


def _build(request: DatasetRequest) -> LTData:
    images, labels = _load()
    rng = np.random.RandomState(0)
    test_idx, pool_idx = [], []
    for cls in range(10):
        idx = np.where(labels == cls)[0]
        idx = idx[rng.permutation(len(idx))]
        test_idx.append(idx[:TEST_PER_CLASS])
        pool_idx.append(np.sort(idx[TEST_PER_CLASS:]))
    test_idx = np.concatenate(test_idx)
    pool_idx = np.sort(np.concatenate(pool_idx))
    pool_labels = labels[pool_idx]
    n_max = int(np.bincount(pool_labels).min())
    sel, counts = long_tailed_subset(pool_labels, 10, request.imb_factor, n_max=n_max, seed=request.subset_seed)
    train_idx = pool_idx[sel]
    pixels = images[train_idx].reshape(-1, 3) / 255.0
    return LTData(
        name="digits",
        num_classes=10,
        train_images=images[train_idx],
        train_labels=labels[train_idx],
        test_images=images[test_idx],
        test_labels=labels[test_idx],
        mean=tuple(float(m) for m in pixels.mean(0)),
        std=tuple(float(s) for s in pixels.std(0)),
        info={"protocol": "LDAM-DRW on sklearn digits", "n_max": n_max, "class_counts": counts,
              "test_per_class": TEST_PER_CLASS},
    )


DATASETS.register("digits")(DatasetEntry(build=_build))
