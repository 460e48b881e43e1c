"""ImageNet-LT and iNaturalist 2018: the two large benchmarks, read from split files, images lazily.

Both are long-tailed by nature, not by construction: the published split files fix every image of
the training set, so there is no subset to draw and no seed. Their imbalance factors are the
published ones and are the cells' keys (`imagenet_lt` IF 256 = 1,280 / 5; `inat2018` IF 500 =
1,000 / 2, as in `benchmarks/reporting/paper_numbers.yaml`); any other IF is refused.

Split files (the user provides them; see docs/datasets.md, "ImageNet-LT and iNaturalist 2018"):
- ImageNet-LT (Liu et al., CVPR 2019, "OLTR"): `ImageNet_LT_train.txt` (115,846 images, 1,000
  classes, 1,280 .. 5 per class) and `ImageNet_LT_test.txt` (50,000 images, 50 per class), lines
  "relative/path label" with paths relative to the ImageNet ILSVRC-2012 root
  (`train/n01440764/n01440764_190.JPEG 0`). The releases of BCCL, BCL and PaCo ship these files
  (e.g. PaCo's `imagenet_inat/data/ImageNet_LT/`) and report the test split.
- iNaturalist 2018 (8,142 classes): either the text lists the LT releases use
  (`iNaturalist18_train.txt`, 437,513 images; `iNaturalist18_val.txt`, 24,426 images; lines
  "train_val2018/<kingdom>/<id>/<file>.jpg label") or the competition's own `train2018.json` /
  `val2018.json` (COCO style: `images` with `id` and `file_name`, `annotations` with `image_id`
  and `category_id`; the label is `category_id`, which is what the text lists hold). Text lists
  are preferred when both are present. The releases report the validation split.

Where things are looked for: images under `<data-root>/<dataset>/` (the folder the split files'
paths are relative to: the ImageNet root for `imagenet_lt`, the iNaturalist root for
`inat2018`), split files in `--split-dir` if given, else in that same folder.

The number of classes and the per-class counts (hence the shot groups and the logit adjustment)
come from the training list: C = max label + 1. A file list of fewer classes (a test tree, a
subset) is therefore a smaller dataset, not an error; the published class count is recorded in
`info` next to the measured one.

Images are never loaded into memory: `FileImages` keeps the paths and decodes image i with PIL
(`.convert("RGB")`, as every release does) when it is indexed, so a DataLoader's workers do the
decoding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from benchmarks import LTBenchError
from benchmarks.data.datasets import DATASETS, DatasetEntry, DatasetRequest, LTData

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INAT_MEAN, INAT_STD = (0.466, 0.471, 0.380), (0.195, 0.194, 0.192)  # every iNat release's statistics


class FileImages:
    """A lazy sequence of images stored as files: `images[i]` decodes one, `images[idx]` subsets.

    Indexing with an int returns an HxWx3 uint8 array (the contract of `LTData` images);
    indexing with an index array, a list or a slice returns another `FileImages`, so
    `LTData.capped` and any other subsetting work unchanged. Only paths are pickled, so it crosses
    into DataLoader worker processes cheaply.
    """

    def __init__(self, paths: Sequence[str] | np.ndarray):
        self.paths = np.asarray(paths, dtype=object)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self.load(int(index))
        return FileImages(self.paths[index])

    def open(self, index: int) -> Image.Image:
        """Image `index` as an RGB PIL image (what the 224 views consume)."""
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot read image {path}: {exc}") from exc

    def load(self, index: int) -> np.ndarray:
        return np.asarray(self.open(index), dtype=np.uint8)

    def __repr__(self) -> str:
        return f"FileImages({len(self)} files)"


# ----------------------------------------------------------------------------------------------
# Split files
# ----------------------------------------------------------------------------------------------

def read_text_list(path: Path) -> tuple[list[str], np.ndarray]:
    """"relative/path label" lines -> (paths, int64 labels); blank lines are skipped."""
    paths, labels = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise LTBenchError(f"{path}:{number}: expected 'relative/path label', got {line[:100]!r}")
            label = int(parts[1])
            if label < 0:
                raise LTBenchError(f"{path}:{number}: negative label {label}")
            paths.append(parts[0])
            labels.append(label)
    if not paths:
        raise LTBenchError(f"{path}: no images listed")
    return paths, np.asarray(labels, dtype=np.int64)


def read_coco_json(path: Path) -> tuple[list[str], np.ndarray]:
    """iNaturalist's train2018.json / val2018.json -> (file names, category ids), in `images` order."""
    try:
        with open(path) as f:
            data = json.load(f)
        category = {a["image_id"]: int(a["category_id"]) for a in data["annotations"]}
        images = data["images"]
        paths = [img["file_name"] for img in images]
        labels = [category[img["id"]] for img in images]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise LTBenchError(f"{path}: not an iNaturalist-style annotation file ({type(exc).__name__}: {exc})") from None
    if not paths:
        raise LTBenchError(f"{path}: no images listed")
    return paths, np.asarray(labels, dtype=np.int64)


def read_split(path: Path) -> tuple[list[str], np.ndarray]:
    return read_coco_json(path) if path.suffix == ".json" else read_text_list(path)


@dataclass(frozen=True)
class FileListDataset:
    """What distinguishes the two file-list datasets."""

    name: str
    imb_factor: int              # the published, natural IF: the only cell key accepted
    classes: int                 # published number of classes (recorded, not enforced)
    train_files: tuple[str, ...]  # candidate split file names, first found wins
    test_files: tuple[str, ...]
    test_split: str              # what the "test" list is: the releases' evaluation split
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str                  # where the split files come from (for error messages)
    val_files: tuple[str, ...] = ()  # a validation split for model selection (select_on: val), optional

    def image_root(self, request: DatasetRequest) -> Path:
        return Path(request.data_root) / self.name

    def split_dir(self, request: DatasetRequest) -> Path:
        return Path(request.split_dir) if request.split_dir is not None else self.image_root(request)

    def find(self, request: DatasetRequest, candidates: tuple[str, ...], which: str) -> Path:
        folder = self.split_dir(request)
        for name in candidates:
            if (folder / name).is_file():
                return folder / name
        where = "--split-dir" if request.split_dir is not None else "the default split folder <data-root>/" + self.name
        raise LTBenchError(
            f"{self.name}: no {which} split file in {folder}/ ({where}); looked for "
            f"{' or '.join(candidates)}. {self.source}"
        )

    def check(self, request: DatasetRequest) -> None:
        """Fail fast, before anything is written: the IF, the image root, the split files."""
        if float(request.imb_factor) != float(self.imb_factor):
            raise LTBenchError(
                f"{self.name} is long-tailed by nature: its only imbalance factor is {self.imb_factor} "
                f"(the published split), got {request.imb_factor:g}; use --imb-factors {self.imb_factor}"
            )
        root = self.image_root(request)
        if not root.is_dir():
            raise LTBenchError(
                f"{self.name}: image folder {root}/ not found (--data-root {request.data_root}); it must hold the "
                f"images at the paths the split files list (a symlink to the dataset's root is fine). {self.source}"
            )
        self.find(request, self.train_files, "training")
        self.find(request, self.test_files, self.test_split)
        if request.need_val:
            self.find(request, self.val_files or ("(none)",), "validation (select_on: val)")

    def val_file(self, request: DatasetRequest) -> Path | None:
        folder = self.split_dir(request)
        return next((folder / n for n in self.val_files if (folder / n).is_file()), None)

    def build(self, request: DatasetRequest) -> LTData:
        self.check(request)
        root = self.image_root(request)
        train_file = self.find(request, self.train_files, "training")
        test_file = self.find(request, self.test_files, self.test_split)
        train_paths, train_labels = read_split(train_file)
        test_paths, test_labels = read_split(test_file)
        val_file = self.val_file(request)
        val_paths, val_labels = read_split(val_file) if val_file is not None else ([], None)
        num_classes = int(train_labels.max()) + 1
        for file, labels in ((test_file, test_labels), (val_file, val_labels)):
            if labels is not None and labels.max() >= num_classes:
                raise LTBenchError(
                    f"{file} has label {int(labels.max())}, but the training list {train_file} "
                    f"only has labels 0..{num_classes - 1}"
                )
        counts = np.bincount(train_labels, minlength=num_classes)
        if (counts == 0).any():
            empty = np.where(counts == 0)[0]
            raise LTBenchError(
                f"{train_file}: {len(empty)} of the classes 0..{num_classes - 1} have no training image "
                f"(e.g. {', '.join(map(str, empty[:5]))}); labels must be 0..C-1"
            )
        for file, paths in ((train_file, train_paths), (test_file, test_paths), (val_file, val_paths)):
            if not paths:
                continue
            first = root / paths[0]
            if not first.is_file():  # one probe per list: a wrong root fails here, not mid-epoch
                raise LTBenchError(f"{file} lists {paths[0]}, but {first} does not exist; is --data-root right?")
        return LTData(
            name=self.name,
            num_classes=num_classes,
            train_images=FileImages([str(root / p) for p in train_paths]),
            train_labels=train_labels,
            test_images=FileImages([str(root / p) for p in test_paths]),
            test_labels=test_labels,
            mean=self.mean,
            std=self.std,
            val_images=FileImages([str(root / p) for p in val_paths]) if val_file is not None else None,
            val_labels=val_labels,
            info={
                "protocol": f"natural long tail, published split files ({self.name})",
                "train_split_file": str(train_file),
                "test_split_file": str(test_file),
                "test_split": self.test_split,
                "val_split_file": str(val_file) if val_file is not None else None,
                "image_root": str(root),
                "published_classes": self.classes,
                "imb_factor_measured": float(counts.max() / counts.min()),
                "class_counts": counts.tolist(),
            },
        )


IMAGENET_LT = FileListDataset(
    name="imagenet_lt", imb_factor=256, classes=1000,
    train_files=("ImageNet_LT_train.txt",), test_files=("ImageNet_LT_test.txt",), test_split="test",
    val_files=("ImageNet_LT_val.txt",),  # 20,000 images (20 per class), OLTR's validation split
    mean=IMAGENET_MEAN, std=IMAGENET_STD,
    source="The ImageNet-LT split files (ImageNet_LT_train.txt, ImageNet_LT_test.txt) are published with the "
           "OLTR benchmark (Liu et al., CVPR 2019) and shipped by the BCL/PaCo/BCCL releases; the images are "
           "ImageNet ILSVRC-2012's (image-net.org). See docs/datasets.md, 'ImageNet-LT and iNaturalist 2018'.",
)
INAT2018 = FileListDataset(
    name="inat2018", imb_factor=500, classes=8142,
    train_files=("iNaturalist18_train.txt", "train2018.json"),
    test_files=("iNaturalist18_val.txt", "val2018.json"), test_split="validation",
    mean=INAT_MEAN, std=INAT_STD,
    source="iNaturalist 2018's train2018.json / val2018.json come with the competition's images "
           "(github.com/visipedia/inat_comp, 2018); the text lists iNaturalist18_train.txt / _val.txt are "
           "shipped by the BCL/PaCo releases. See docs/datasets.md, 'ImageNet-LT and iNaturalist 2018'.",
)

FILE_LIST_DATASETS = {d.name: d for d in (IMAGENET_LT, INAT2018)}

for _spec in FILE_LIST_DATASETS.values():
    DATASETS.register(_spec.name)(DatasetEntry(build=_spec.build, check=_spec.check,
                                               has_val_split=bool(_spec.val_files)))
