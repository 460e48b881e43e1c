"""Batches of views for the epoch loop: the reference DataLoader path and the on-device fast path.

Both yield `(views, labels)` with `views` a list of (B, 3, H, W) float tensors on the device, one
per view name, normalised; both shuffle with torch's global generator (seeded per epoch by the
loop) and drop the last incomplete batch when asked (the releases do).

- `ReferenceLoader`: a torch `DataLoader` over per-image torchvision transforms (PIL), as the
  releases do; the fidelity baseline.
- `FastLoader`: the uint8 training set lives on the device; each epoch is a `randperm` there and
  every view is built batched on the device (`benchmarks.views.fast`), so no image crosses the
  host boundary and no worker process is needed.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class _ViewDataset(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transforms):
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        return tuple(t(image) for t in self.transforms), self.labels[index]


class ReferenceLoader:
    def __init__(self, images, labels, view_names: Sequence[str], mean, std, batch_size: int,
                 drop_last: bool, device: torch.device, num_workers: int = 0):
        from benchmarks.views import reference_transform

        transforms = [reference_transform(name, mean, std) for name in view_names]
        self.device = device
        self.loader = DataLoader(
            _ViewDataset(images, labels, transforms),
            batch_size=batch_size,
            shuffle=True,
            drop_last=drop_last,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        for views, labels in self.loader:
            yield [v.to(self.device, non_blocking=True) for v in views], labels.to(self.device, non_blocking=True)


class FastLoader:
    def __init__(self, images, labels, view_names: Sequence[str], mean, std, batch_size: int,
                 drop_last: bool, device: torch.device):
        from benchmarks.views import FastView

        # (N, H, W, 3) uint8 -> (N, 3, H, W) uint8 on the device: 3 KB an image.
        self.images = torch.as_tensor(images).permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = torch.as_tensor(labels, dtype=torch.long, device=device)
        self.views = [FastView(name, mean, std) for name in view_names]
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        order = torch.randperm(len(self.labels), device=self.labels.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            batch = self.images.index_select(0, idx)
            yield [view(batch) for view in self.views], self.labels.index_select(0, idx)


def normalised_tensor(images: np.ndarray, mean, std, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float on `device`: ToTensor + Normalize, batched."""
    x = torch.as_tensor(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return ((x - mean_t) / std_t).contiguous()
