"""Datasets declared by a YAML file alone: `configs/datasets/<name>.yaml` with a `source:` section.

Bringing one's own long-tailed image dataset needs no Python: the file's name is the dataset's
registry name, its `source:` says where the images are and how to read them, and its other keys
are the dataset's config defaults (e.g. `backbone`), as in every other file of configs/datasets/.
See docs/datasets.md for the keys and a worked example. Two layouts:

- `format: image_folder`: `train` and `test` (and optionally `val`) are folders with one
  subfolder per class; the classes are the subfolder names of `train`, sorted, labelled 0..C-1
  (the test folder must have the same names; a class may lack test images).
- `format: file_lists`: `train` and `test` (optionally `val`) are ImageNet-LT-style text files,
  one "relative/path label" per line, paths relative to `root`; C = the largest label + 1.

Every image is decoded with PIL (`.convert("RGB")`), resized to `image_size` x `image_size`
(bilinear) and kept in memory as uint8, so the CIFAR-sized views and loaders apply; a dataset
must fit in memory at that size. `mean` / `std` are the normalisation (per channel, in [0, 1]),
or `measure` for the statistics of the training subset (as the digits dataset does).

`long_tail: given` takes the training set as it is (it is already long-tailed): its imbalance
factor is max count / min count, and a cell with another IF is refused. `long_tail: protocol`
makes it long-tailed by the CIFAR protocol (`benchmarks.data.datasets.lt.long_tailed_subset`, the
LDAM-DRW procedure): class i of C keeps int(n_max * (1/IF) ** (i / (C-1))) images, in label
order, with `n_max` the smallest class's count unless given, and the run's `subset_seed`.
Relative paths are under `<data-root>/<root>` (`root` defaults to the dataset's name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks import LTBenchError
from benchmarks.data.datasets import DATASETS, DatasetEntry, DatasetRequest, LTData
from benchmarks.data.datasets.lt import long_tailed_subset

SOURCE_KEY = "source"
FORMATS = ("image_folder", "file_lists")
LONG_TAILS = ("given", "protocol")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
SOURCE_KEYS = {"format", "root", "train", "test", "val", "image_size", "mean", "std", "long_tail", "n_max"}
REQUIRED = ("format", "train", "test", "image_size", "mean", "std", "long_tail")


@dataclass(frozen=True)
class Source:
    """A checked `source:` section."""

    name: str
    path: Path  # the YAML file, for messages
    format: str
    root: str
    splits: dict[str, str]  # train, test[, val] -> folder or list file, relative to the root
    image_size: int
    mean: tuple[float, float, float] | None  # None: measured on the training subset
    std: tuple[float, float, float] | None
    long_tail: str
    n_max: int | None

    def folder(self, request: DatasetRequest) -> Path:
        root = Path(self.root)
        return root if root.is_absolute() else Path(request.data_root) / root


def _stats(value: Any, key: str, path: Path) -> tuple[float, float, float] | None:
    if value == "measure":
        return None
    ok = (isinstance(value, list) and len(value) == 3
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in value))
    if not ok or (key == "std" and min(value) <= 0):
        raise LTBenchError(f"{path}: source.{key} must be three numbers in [0, 1] (per channel, RGB{', > 0' if key == 'std' else ''}) "
                           f"or 'measure', got {value!r}")
    return tuple(float(v) for v in value)


def parse_source(name: str, path: Path, section: Any) -> Source:
    """The `source:` section of `path`, checked, or LTBenchError naming the key and what is accepted."""
    if not isinstance(section, dict):
        raise LTBenchError(f"{path}: source must be a mapping (format, train, test, image_size, mean, std, long_tail)")
    unknown = set(section) - SOURCE_KEYS
    if unknown:
        raise LTBenchError(f"{path}: unknown source key(s) {sorted(unknown)}; accepted: {', '.join(sorted(SOURCE_KEYS))}")
    missing = [k for k in REQUIRED if k not in section]
    if missing:
        raise LTBenchError(f"{path}: source lacks {', '.join(missing)}")
    if section["format"] not in FORMATS:
        raise LTBenchError(f"{path}: source.format must be one of {', '.join(FORMATS)}, got {section['format']!r}")
    if section["long_tail"] not in LONG_TAILS:
        raise LTBenchError(f"{path}: source.long_tail must be given (already long-tailed) or protocol (made "
                           f"long-tailed like CIFAR), got {section['long_tail']!r}")
    size = section["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise LTBenchError(f"{path}: source.image_size must be an integer >= 8 (pixels per side), got {size!r}")
    n_max = section.get("n_max")
    if n_max is not None and (isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < 1
                              or section["long_tail"] != "protocol"):
        raise LTBenchError(f"{path}: source.n_max must be an integer >= 1, and only with long_tail: protocol; got {n_max!r}")
    splits = {k: section[k] for k in ("train", "test", "val") if k in section}
    for key, value in splits.items():
        if not isinstance(value, str) or not value:
            raise LTBenchError(f"{path}: source.{key} must be a path (a folder or a list file), got {value!r}")
    root = section.get("root", name)
    if not isinstance(root, str) or not root:
        raise LTBenchError(f"{path}: source.root must be a folder path, got {root!r}")
    return Source(name, path, section["format"], root, splits, size, _stats(section["mean"], "mean", path),
                  _stats(section["std"], "std", path), section["long_tail"], n_max)


# -- reading -----------------------------------------------------------------------------------------
def _listing(source: Source, request: DatasetRequest, split: str,
             classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """(image paths, labels, class names) of one split, without decoding anything."""
    root = source.folder(request)
    where = root / source.splits[split]
    if source.format == "image_folder":
        if not where.is_dir():
            raise LTBenchError(f"dataset {source.name}: {split} folder {where} does not exist ({source.path} source.{split}, "
                               "under --data-root)")
        names = classes or sorted(p.name for p in where.iterdir() if p.is_dir())
        if not names:
            raise LTBenchError(f"dataset {source.name}: {where} has no class subfolders (one per class expected)")
        extra = sorted(p.name for p in where.iterdir() if p.is_dir() and p.name not in names)
        if extra:
            raise LTBenchError(f"dataset {source.name}: {where} has classes that train does not: {', '.join(extra[:5])}")
        paths, labels = [], []
        for label, cls in enumerate(names):
            files = sorted(p for p in (where / cls).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
                if (where / cls).is_dir() else []
            paths += files
            labels += [label] * len(files)
        return paths, labels, names
    if not where.is_file():
        raise LTBenchError(f"dataset {source.name}: {split} list {where} does not exist ({source.path} source.{split})")
    paths, labels = [], []
    for number, line in enumerate(where.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise LTBenchError(f"dataset {source.name}: {where} line {number}: expected 'relative/path label', got {line!r}")
        paths.append(root / parts[0])
        labels.append(int(parts[1]))
    if not paths:
        raise LTBenchError(f"dataset {source.name}: {where} lists no images")
    return paths, labels, classes or [str(c) for c in range(max(labels) + 1)]


def _decode(paths: list[Path], size: int) -> np.ndarray:
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                out[i] = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))
        except (OSError, ValueError) as exc:
            raise LTBenchError(f"cannot read image {path}: {exc}") from None
    return out


def _given_imb_factor(counts: np.ndarray) -> float:
    return float(counts.max() / counts.min()) if counts.min() > 0 else float("inf")


def _check(source: Source, request: DatasetRequest) -> None:
    _, labels, classes = _listing(source, request, "train")
    for split in ("test", "val"):
        if split in source.splits:
            _listing(source, request, split, classes)
    if request.need_val and "val" not in source.splits:
        raise LTBenchError(f"dataset {source.name} declares no val split ({source.path} source.val); use select_on=test")
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() == 0:
        raise LTBenchError(f"dataset {source.name}: class {classes[int(counts.argmin())]!r} has no training images")
    if source.long_tail == "given":
        given = _given_imb_factor(counts)
        if not np.isclose(request.imb_factor, given, rtol=1e-6):
            raise LTBenchError(f"dataset {source.name} is long-tailed as given (long_tail: given): its imbalance "
                               f"factor is {given:g} (max/min training images per class), not {request.imb_factor:g}; "
                               f"use --imb-factors {given:g}")


def _build(source: Source, request: DatasetRequest) -> LTData:
    _check(source, request)
    train_paths, train_labels, classes = _listing(source, request, "train")
    train_labels = np.asarray(train_labels, dtype=np.int64)
    info: dict[str, Any] = {"protocol": f"declared by {source.path.name} ({source.format}, long_tail: {source.long_tail})",
                            "classes": classes}
    if source.long_tail == "protocol":
        n_max = source.n_max or int(np.bincount(train_labels, minlength=len(classes)).min())
        sel, counts = long_tailed_subset(train_labels, len(classes), request.imb_factor, n_max=n_max,
                                         seed=request.subset_seed)
        train_paths, train_labels = [train_paths[i] for i in sel], train_labels[sel]
        info.update(n_max=n_max, class_counts=counts)
    test_paths, test_labels, _ = _listing(source, request, "test", classes)
    train_images = _decode(train_paths, source.image_size)
    if source.mean is None or source.std is None:
        pixels = train_images.reshape(-1, 3) / 255.0
    mean = source.mean or tuple(float(m) for m in pixels.mean(0))
    std = source.std or tuple(float(s) for s in pixels.std(0))
    val_images = val_labels = None
    if "val" in source.splits and request.need_val:
        val_paths, val, _ = _listing(source, request, "val", classes)
        val_images, val_labels = _decode(val_paths, source.image_size), np.asarray(val, dtype=np.int64)
    return LTData(source.name, len(classes), train_images, train_labels,
                  _decode(test_paths, source.image_size), np.asarray(test_labels, dtype=np.int64),
                  mean, std, info, val_images, val_labels)


def declared_entry(name: str, path: Path, section: Any) -> DatasetEntry:
    """The registry entry of a dataset declared by the `source:` section of `path`."""
    source = parse_source(name, Path(path), section)
    return DatasetEntry(build=lambda request: _build(source, request), check=lambda request: _check(source, request),
                        has_val_split="val" in source.splits)


def declared_files(config_dir: Path) -> list[Path]:
    """The files of `config_dir/datasets/` that declare a dataset (they have a `source:` key)."""
    from benchmarks.config import load_yaml

    return [p for p in sorted((Path(config_dir) / "datasets").glob("*.yaml")) if SOURCE_KEY in load_yaml(p)]


def register_declared(config_dir: Path) -> None:
    """Register every dataset declared in `config_dir/datasets/` (at import: the registry imports
    this module with the others)."""
    from benchmarks.config import load_yaml

    for path in declared_files(config_dir):
        DATASETS.register(path.stem)(declared_entry(path.stem, path, load_yaml(path)[SOURCE_KEY]))


def _register_project_declarations() -> None:
    from benchmarks import CONFIG_DIR

    register_declared(CONFIG_DIR)


_register_project_declarations()
