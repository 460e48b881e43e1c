"""Datasets by name, in one registry, each made long-tailed by the same protocol.

A dataset builder takes a `DatasetRequest` and returns an `LTData`: uint8 HxWx3 images and int64
labels for the long-tailed training subset and the balanced test set, plus normalisation
statistics. Everything downstream (views, loaders, evaluation, shot groups) reads only `LTData`.
Images are either one in-memory (N, H, W, 3) uint8 array (CIFAR-sized data) or, for datasets too
large for memory, a `FileImages` sequence of paths that decodes image i with PIL on access
(`LTData.file_based`); both index the same way (`images[i]` -> HxWx3 uint8, `images[idx]` -> subset).

Registered: `cifar10`, `cifar100` (torchvision's readers), `digits` (scikit-learn's bundled
digits, the offline default), `fashion_mnist` (Fashion-MNIST-LT, torchvision's reader or the
four original idx archives), `synthetic`, `synthetic100` (CIFAR-shaped, learnable, for tests and
timing), `imagenet_lt`, `inat2018` (file lists, `benchmarks.data.datasets.large`), and every dataset
declared by a YAML file alone (`benchmarks.data.datasets.declared`, docs/datasets.md). The registry
imports every module of this package on first use; importing a module registers its datasets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.data.datasets.lt import cap_per_class, long_tailed_subset, lt_class_counts
from benchmarks.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetRequest",
    "LTData",
    "build_dataset",
    "cap_per_class",
    "long_tailed_subset",
    "lt_class_counts",
]


@dataclass(frozen=True)
class DatasetRequest:
    """What a builder needs: the cell (IF), where the data lives, and the subset options."""

    imb_factor: float
    data_root: Path = Path("data")
    download: bool = False
    subset_seed: int = 0
    train_cap_per_class: int = 0
    test_cap_per_class: int = 0
    split_dir: Path | None = None  # file-list datasets: where the split files are (None: their default)
    need_val: bool = False  # a run selects its best epoch on the validation split: it must exist


@dataclass
class LTData:
    name: str
    num_classes: int
    train_images: Any  # (N, H, W, 3) uint8 array, or FileImages (lazy, decoded per access)
    train_labels: np.ndarray  # (N,) int64
    test_images: Any
    test_labels: np.ndarray
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    info: dict[str, Any] = field(default_factory=dict)
    val_images: Any = None  # a validation split for model selection (select_on: val), if the dataset has one
    val_labels: np.ndarray | None = None

    @property
    def file_based(self) -> bool:
        """Images are read from files on access (they cannot be stacked on the device)."""
        return not isinstance(self.train_images, np.ndarray)

    @property
    def class_counts(self) -> np.ndarray:
        """Training images per class: what the shot groups and the logit adjustment use."""
        return np.bincount(self.train_labels, minlength=self.num_classes)

    def capped(self, train_cap: int, test_cap: int) -> "LTData":
        """The tiny-subset option: at most `train_cap` / `test_cap` images per class (0 = all)."""
        tr = cap_per_class(self.train_labels, train_cap)
        te = cap_per_class(self.test_labels, test_cap)
        info = dict(self.info, train_cap_per_class=train_cap, test_cap_per_class=test_cap)
        val = cap_per_class(self.val_labels, test_cap) if self.val_labels is not None else None
        return LTData(
            self.name, self.num_classes,
            self.train_images[tr], self.train_labels[tr],
            self.test_images[te], self.test_labels[te],
            self.mean, self.std, info,
            None if val is None else self.val_images[val], None if val is None else self.val_labels[val],
        )

    def validation_as_test(self) -> "LTData":
        """The same data with the validation split in the test slots (what an evaluator reads)."""
        return dataclasses.replace(self, test_images=self.val_images, test_labels=self.val_labels)


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: `build` makes the data, `check` fails fast if it is unavailable."""

    build: Callable[[DatasetRequest], LTData]
    check: Callable[[DatasetRequest], None] = lambda request: None
    has_val_split: bool = False  # provides LTData.val_* (select_on: val), when its split file exists


# Every module of this package is imported on first lookup (as the methods registry does for
# bccl/ and baselines/): a new dataset is its module, or a YAML file alone (`declared`), never an
# edit here.
DATASETS: Registry[DatasetEntry] = Registry("dataset", packages=("benchmarks.data.datasets",))


def build_dataset(name: str, request: DatasetRequest) -> LTData:
    data = DATASETS.get(name).build(request)
    if request.train_cap_per_class > 0 or request.test_cap_per_class > 0:
        data = data.capped(request.train_cap_per_class, request.test_cap_per_class)
    return data
