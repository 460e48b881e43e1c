"""Helpers shared by the large-dataset tests: a tiny ImageNet-LT-like file tree and a tiny CNN.

The tree mimics the published layout (paths relative to the image root, "path label" split
files) with a few 32x32 JPEG/PNG files, so that the real readers, views (Resize 256 + CenterCrop
224, RandomResizedCrop 224) and loaders run in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch.nn as nn
from PIL import Image

# class -> (train images, test images); 3 classes, a long tail, an odd number of test images
TRAIN_COUNTS = (5, 3, 1)
TEST_COUNTS = (2, 2, 1)


def write_image(path: Path, colour: int, seed: int, size=(32, 32)) -> None:
    rng = np.random.RandomState(seed)
    array = np.clip(colour + rng.randint(-40, 41, size=size + (3,)), 0, 255).astype(np.uint8)
    array[..., colour % 3] = 255  # a class-specific channel, so a model can learn the classes
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_imagenet_lt_tree(data_root: Path, split_dir: Path | None = None) -> Path:
    """<data_root>/imagenet_lt/{train,val}/n<c>/... plus ImageNet_LT_train.txt / _test.txt."""
    root = Path(data_root) / "imagenet_lt"
    split_dir = Path(split_dir) if split_dir is not None else root
    split_dir.mkdir(parents=True, exist_ok=True)
    lines = {"train": [], "test": []}
    for split, counts in (("train", TRAIN_COUNTS), ("test", TEST_COUNTS)):
        folder = "train" if split == "train" else "val"
        for cls, count in enumerate(counts):
            for i in range(count):
                ext = "JPEG" if i % 2 == 0 else "png"
                rel = f"{folder}/n0000{cls}/img_{split}_{cls}_{i}.{ext}"
                write_image(root / rel, 60 * cls + 40, seed=1000 * cls + i + (500 if split == "test" else 0),
                            size=(32, 40) if i == 1 else (32, 32))  # one non-square image per class
                lines[split].append(f"{rel} {cls}")
    (split_dir / "ImageNet_LT_train.txt").write_text("\n".join(lines["train"]) + "\n")
    (split_dir / "ImageNet_LT_test.txt").write_text("\n".join(lines["test"]) + "\n")
    return root


class TinyCNN(nn.Module):
    """A 224-pixel-capable backbone that costs nothing: strided conv, BN, ReLU, global pool."""

    out_dim = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=16, stride=16)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return nn.functional.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


def register_tiny_backbone() -> None:
    from benchmarks.train.models import BACKBONES

    BACKBONES.setdefault("tiny_cnn", TinyCNN)
