"""CIFAR-10-LT and CIFAR-100-LT through torchvision's own readers (the releases' loading path).

The data is read with `torchvision.datasets.CIFAR10/100(root, train=..., download=...)`; nothing
is downloaded unless the user passes `--download`. The LT subset is `long_tailed_subset` on the
training labels in torchvision's order (the order the releases index), the test set is complete.
"""

from __future__ import annotations

import numpy as np

from benchmarks import LTBenchError
from benchmarks.data.datasets import DATASETS, DatasetEntry, DatasetRequest, LTData
from benchmarks.data.datasets.lt import long_tailed_subset

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def _torchvision_class(name: str):
    from torchvision import datasets

    return {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]


def _check(name: str, request: DatasetRequest) -> None:
    """The preflight check (before any run folder is written): the folder is there, or is
    downloaded now with --download, and torchvision can open both splits (its md5 check)."""
    folder = request.data_root / _FOLDERS[name]
    if not request.download and not folder.is_dir():
        raise LTBenchError(
            f"{name} not found: expected {folder}/ (torchvision's layout); "
            f"pass --download to fetch it, or --data-root to point at the folder holding it"
        )
    for train in (True, False):
        _open(name, request, train)


def _open(name: str, request: DatasetRequest, train: bool):
    """torchvision's dataset object, downloading first with --download; errors as LTBenchError."""
    folder = request.data_root / _FOLDERS[name]
    try:
        return _torchvision_class(name)(root=str(request.data_root), train=train, download=request.download)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise LTBenchError(
            f"{name} under {folder}/ is incomplete or corrupt (torchvision's checksum test failed); "
            f"pass --download to fetch it again, or --data-root to point at a complete copy"
        ) from None
    except OSError as exc:  # no network, refused connection, disk full, permissions ...
        raise LTBenchError(
            f"downloading {name} into {request.data_root} failed ({exc}); check the network, or put "
            f"torchvision's {_FOLDERS[name]}/ folder there by hand and run without --download"
        ) from None


def _read(name: str, request: DatasetRequest, train: bool):
    ds = _open(name, request, train)
    return np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)


def _build(name: str, num_classes: int, request: DatasetRequest) -> LTData:
    _check(name, request)
    train_x, train_y = _read(name, request, train=True)
    test_x, test_y = _read(name, request, train=False)
    idx, counts = long_tailed_subset(train_y, num_classes, request.imb_factor, seed=request.subset_seed)
    return LTData(
        name=name,
        num_classes=num_classes,
        train_images=train_x[idx],
        train_labels=train_y[idx],
        test_images=test_x,
        test_labels=test_y,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        info={"protocol": "LDAM-DRW", "n_max": len(train_y) // num_classes, "class_counts": counts},
    )


for _name, _classes in (("cifar10", 10), ("cifar100", 100)):
    DATASETS.register(_name)(
        DatasetEntry(
            build=lambda request, n=_name, c=_classes: _build(n, c, request),
            check=lambda request, n=_name: _check(n, request),
        )
    )
