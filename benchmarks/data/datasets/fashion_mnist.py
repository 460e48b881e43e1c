"""Fashion-MNIST-LT: Zalando's Fashion-MNIST made long-tailed by the LDAM-DRW protocol.

A real 10-class image benchmark that is small enough to train on a CPU and is reachable offline
(Debian's `dataset-fashion-mnist` package installs the four original files under
`/usr/share/datasets/fashion-mnist/`), so the methods can be compared on real pixels where no
CIFAR copy exists.

Reading: torchvision's `FashionMNIST(root, train=...)` reader, on `--data-root` in torchvision's
layout (`<data-root>/FashionMNIST/raw/train-images-idx3-ubyte`, ...; `--download` fetches it
there). A folder that holds the four original `*-ubyte.gz` files directly (`--data-root` itself,
e.g. `/usr/share/datasets/fashion-mnist`, or a `FashionMNIST/raw/` holding only the archives) is
accepted too: the files are decompressed into a temporary folder in torchvision's layout and read
by the same reader (nothing is written under `--data-root`).

Protocol: the 60,000 training images (6,000 per class) are made long-tailed by
`long_tailed_subset` with n_max 6,000 (len / C) and numpy seed 0, in the files' order, exactly as
CIFAR-LT is; the 10,000 test images (1,000 per class) stay complete. IF 100 keeps 6,000 .. 60
images per class, so the few-shot group (< 20 images) is empty at IF 100, 50 and 10 (as on
CIFAR-10-LT); many > 100, medium 20..100.

Pixels: each 28x28 grey image is padded with 2 zero (black, the background colour) pixels on
every side to 32x32, and its one channel repeated to three identical R, G, B channels (uint8,
HxWx3), so every CIFAR recipe (ResNet-32, crop with 4-pixel padding, flips, AutoAugment,
contrastive views) applies unchanged. The normalisation constants are Fashion-MNIST's own,
computed on all 60,000 training images *after* the padding (the pixels the network sees): mean
0.2190, std 0.3318 per channel, of pixel values in [0, 1] (`normalisation_constants`
recomputes them; without the padding they would be 0.2860 / 0.3530).
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import LTBenchError
from benchmarks.data.datasets import DATASETS, DatasetEntry, DatasetRequest, LTData
from benchmarks.data.datasets.lt import long_tailed_subset

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
PAD = 2  # 28 + 2 * 2 = 32
FMNIST_MEAN = (0.2190, 0.2190, 0.2190)  # all 60,000 training images padded to 32x32, in [0, 1]
FMNIST_STD = (0.3318, 0.3318, 0.3318)
# `fashion_mnist28`: the same images at their native 28x28 (no padding), for the CPU track, where
# the padded border is 23 % of every convolution's work; constants of the unpadded training set.
FMNIST28_MEAN = (0.2860, 0.2860, 0.2860)
FMNIST28_STD = (0.3530, 0.3530, 0.3530)

_HOW = (
    "expected torchvision's layout <data-root>/FashionMNIST/raw/ (pass --download to fetch it) "
    "or a folder holding the four files " + ", ".join(f + ".gz" for f in FILES) + " (--data-root that folder, "
    "e.g. /usr/share/datasets/fashion-mnist of Debian's dataset-fashion-mnist package)"
)


def _has(folder: Path, suffix: str) -> bool:
    return all((folder / (name + suffix)).is_file() for name in FILES)


def _source(request: DatasetRequest) -> tuple[str, Path]:
    """Where the files are: ("torchvision", data_root) or ("gz", folder holding the archives)."""
    raw = request.data_root / "FashionMNIST" / "raw"
    if _has(raw, "") or request.download:
        return "torchvision", request.data_root
    for folder in (request.data_root, raw):
        if _has(folder, ".gz"):
            return "gz", folder
    raise LTBenchError(f"fashion_mnist not found under {request.data_root}: {_HOW}")


def _read_torchvision(root: Path, download: bool, shown: Path | None = None) -> tuple[np.ndarray, ...]:
    """The arrays torchvision reads under `root`; messages name `shown` (the user's folder, where
    `root` is a temporary copy) and always say what went wrong."""
    from torchvision.datasets import FashionMNIST

    shown = shown or root

    arrays = []
    for train in (True, False):
        try:
            ds = FashionMNIST(root=str(root), train=train, download=download)
        except RuntimeError:  # torchvision: "Dataset not found. You can use download=True ..."
            raise LTBenchError(f"fashion_mnist under {shown} is incomplete: {_HOW}") from None
        except OSError as exc:  # no network, refused connection, disk full, permissions ...
            raise LTBenchError(
                f"downloading fashion_mnist into {root} failed ({exc}); check the network, or point "
                f"--data-root at a folder holding the four *-ubyte.gz files"
            ) from None
        except (AssertionError, ValueError, TypeError) as exc:  # torchvision's idx parser
            detail = str(exc).splitlines()[0] if str(exc) else f"{type(exc).__name__} in torchvision's reader"
            raise LTBenchError(f"fashion_mnist under {shown} is corrupt (not idx files: {detail}): {_HOW}") from None
        arrays += [ds.data.numpy().astype(np.uint8), ds.targets.numpy().astype(np.int64)]
    return tuple(arrays)


def _read_gz(folder: Path) -> tuple[np.ndarray, ...]:
    """Decompress the four archives into a temporary torchvision layout and read that."""
    with tempfile.TemporaryDirectory(prefix="ltbench-fmnist-") as tmp:
        raw = Path(tmp) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for name in FILES:
            try:
                with gzip.open(folder / (name + ".gz"), "rb") as src, open(raw / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError) as exc:
                raise LTBenchError(f"fashion_mnist: cannot decompress {folder / (name + '.gz')} ({exc})") from None
        return _read_torchvision(Path(tmp), download=False, shown=folder)


def _read(request: DatasetRequest) -> tuple[np.ndarray, ...]:
    """(train images (N, 28, 28) uint8, train labels, test images, test labels)."""
    kind, where = _source(request)
    arrays = _read_torchvision(where, request.download) if kind == "torchvision" else _read_gz(where)
    for images, labels, split in ((arrays[0], arrays[1], "train"), (arrays[2], arrays[3], "test")):
        if images.shape[1:] != (28, 28) or len(images) != len(labels) or labels.min() < 0 or labels.max() > 9:
            raise LTBenchError(
                f"fashion_mnist {split} files under {where} are not Fashion-MNIST: images {images.shape}, "
                f"{len(labels)} labels in {labels.min()}..{labels.max()} (expected N x 28 x 28, labels 0..9)"
            )
    return arrays


def to_rgb32(images_28: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 32, 32, 3) uint8: 2 zero pixels on each side, grey in R = G = B."""
    padded = np.pad(images_28, ((0, 0), (PAD, PAD), (PAD, PAD)), mode="constant", constant_values=0)
    return to_rgb(padded)


def to_rgb(images: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N, H, W, 3) uint8, grey in R = G = B."""
    return np.repeat(images[..., None], 3, axis=-1)


def normalisation_constants(images_rgb32: np.ndarray) -> tuple[float, float]:
    """Mean and std of the pixel values in [0, 1] (one grey channel): how FMNIST_MEAN/STD were made,
    from `to_rgb32` of all 60,000 training images."""
    grey = images_rgb32[..., 0].astype(np.float64) / 255.0
    return float(grey.mean()), float(grey.std())


def _check(request: DatasetRequest) -> None:
    """Preflight: the files are there (or --download fetches them now) and both splits open."""
    _read(request)


def _build(request: DatasetRequest, native: bool = False) -> LTData:
    train_x, train_y, test_x, test_y = _read(request)
    idx, counts = long_tailed_subset(train_y, 10, request.imb_factor, seed=request.subset_seed)
    pixels = to_rgb if native else to_rgb32
    return LTData(
        name="fashion_mnist28" if native else "fashion_mnist",
        num_classes=10,
        train_images=pixels(train_x[idx]),
        train_labels=train_y[idx],
        test_images=pixels(test_x),
        test_labels=test_y,
        mean=FMNIST28_MEAN if native else FMNIST_MEAN,
        std=FMNIST28_STD if native else FMNIST_STD,
        info={"protocol": "LDAM-DRW", "n_max": len(train_y) // 10, "class_counts": counts,
              "pixels": "28x28 grey repeated to 3 channels (native size)" if native
              else "28x28 grey zero-padded by 2 to 32x32, repeated to 3 channels"},
    )


def _build_native(request: DatasetRequest) -> LTData:
    return _build(request, native=True)


DATASETS.register("fashion_mnist")(DatasetEntry(build=_build, check=_check))
DATASETS.register("fashion_mnist28")(DatasetEntry(build=_build_native, check=_check))
