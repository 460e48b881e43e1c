"""Batches of views for the epoch loop: the reference DataLoader path and the on-device fast path.

Both yield `(views, labels)` with `views` a list of (B, 3, H, W) float tensors on the device, one
per view name, normalised; both shuffle with torch's global generator (seeded per epoch by the
loop) and drop the last incomplete batch when asked (the releases do).

- `ReferenceLoader`: a torch `DataLoader` over per-image torchvision transforms (PIL), as the
  releases do; the fidelity baseline.
- `FastLoader`: the uint8 training set lives on the device; each epoch is a `randperm` there and
  every view is built batched on the device (`benchmarks.data.views.fast`), for a whole epoch's
  batches at once, so no image crosses the host boundary and no worker process is needed.

File-based datasets (`FileImages`, ImageNet-LT / iNaturalist) only take the reference path: the
images are decoded per access by the DataLoader's workers and viewed by the 224-pixel views.

Which images an epoch holds is the recipe's `sampler` (`benchmarks.data.samplers`): `instance` is a
permutation (drawn as before samplers existed), `class_balanced` and `sqrt` an `EpochSampler`'s
draw from the same per-epoch seeded generator.

Under torchrun (`shard=(rank, world)` with world > 1) both take their batches from
`ShardedBatches`: one order per epoch, the same on every rank, cut into global batches of
which each rank takes its part (see `benchmarks.train.distributed`).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.data.samplers import EpochSampler


class ShardedBatches:
    """The batches of one rank: the rank's share of each global batch of a per-epoch order.

    The order (a permutation, or the draw of the recipe's `sampler`, `benchmarks.data.samplers`) comes
    from a generator seeded with (seed, epoch) (`set_epoch`), so every rank draws the same one
    without communicating. Global batch i = order[i G:(i + 1) G] with G = batch_size * world;
    rank r takes its r-th slice of batch_size images. A last, partial global batch (drop_last
    false) is padded with the order's first images up to a multiple of the world size, as
    DistributedSampler pads, so that every rank has a non-empty, equal share (at most world - 1
    images are seen twice per epoch).
    """

    def __init__(self, n: int, batch_size: int, drop_last: bool, rank: int, world: int, seed: int = 0,
                 sampler: EpochSampler | None = None):
        self.sampler = sampler
        self.n = len(sampler) if sampler is not None else n
        self.batch_size, self.drop_last = batch_size, drop_last
        self.rank, self.world, self.seed = rank, world, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        size = self.batch_size * self.world
        return self.n // size if self.drop_last else math.ceil(self.n / size)

    def __iter__(self) -> Iterator[list[int]]:
        state = np.random.SeedSequence([self.seed, self.epoch, 0x5EED]).generate_state(2)
        generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        perm = self.sampler.order(generator) if self.sampler is not None else torch.randperm(self.n, generator=generator)
        size = self.batch_size * self.world
        for i in range(len(self)):
            chunk = perm[i * size: (i + 1) * size]
            if len(chunk) < size:
                padded = math.ceil(len(chunk) / self.world) * self.world
                chunk = torch.cat([chunk, perm[: padded - len(chunk)]])
            share = len(chunk) // self.world
            yield chunk[self.rank * share: (self.rank + 1) * share].tolist()


def epoch_sampler(labels, sampler: str, samples_per_class: int, epoch: str = "sampler") -> EpochSampler | None:
    """The recipe's sampler over the training labels; None for `instance`, whose permutation the
    loaders draw as they always did (so runs written before samplers existed repeat exactly).
    `epoch` (`sampler_epoch`): the sampler's own epoch length, or the dataset's."""
    return None if sampler == "instance" else EpochSampler(sampler, labels, samples_per_class, epoch)


class _ViewDataset(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transforms):
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        # File-based images are opened once as PIL images (what the 224 views take).
        image = self.images.open(index) if hasattr(self.images, "open") else self.images[index]
        return tuple(t(image) for t in self.transforms), self.labels[index]


class ReferenceLoader:
    def __init__(self, images, labels, view_names: Sequence[str], mean, std, batch_size: int,
                 drop_last: bool, device: torch.device, num_workers: int = 0,
                 shard: tuple[int, int] = (0, 1), seed: int = 0, sampler: str = "instance",
                 samples_per_class: int = 1, sampler_epoch: str = "sampler"):
        from benchmarks.data.views.large import view_transform

        transforms = [view_transform(name, mean, std) for name in view_names]
        self.device = device
        dataset = _ViewDataset(images, labels, transforms)
        common = dict(num_workers=num_workers, pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)
        self.sharded = None
        drawn = epoch_sampler(labels, sampler, samples_per_class, sampler_epoch)
        if shard[1] > 1:
            self.sharded = ShardedBatches(len(labels), batch_size, drop_last, shard[0], shard[1], seed, drawn)
            self.loader = DataLoader(dataset, batch_sampler=self.sharded, **common)
        elif drawn is not None:
            self.loader = DataLoader(dataset, batch_size=batch_size, sampler=drawn, drop_last=drop_last, **common)
        else:
            self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=drop_last, **common)

    def set_epoch(self, epoch: int) -> None:
        if self.sharded is not None:
            self.sharded.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        for views, labels in self.loader:
            yield [v.to(self.device, non_blocking=True) for v in views], labels.to(self.device, non_blocking=True)


# Images per rendered block of the fast path: a whole CIFAR-LT epoch (at most 20,431 images) is
# one block; memory per block is 12 KB per image and view plus the rendering's temporaries.
VIEW_BLOCK_IMAGES = 32768


class FastLoader:
    """The fast path: the uint8 training set on the device, views rendered there for blocks of
    whole batches (`block_images`, default a whole CIFAR-LT epoch), then yielded batch by batch
    as slices of the block.

    Why blocks: on a GPU a batched view costs some 1,600 kernel launches whatever the number of
    images (each launch takes the CPU a few microseconds, while a 32x32 image costs the GPU next
    to nothing), so rendering the epoch's views at once instead of per batch of 128 divides the
    view cost by ~100. Every sample still gets independent draws from the same distributions;
    which draws a seed gives depends on the block size (the epoch's order does not: the
    permutation is drawn first), and a resumed run repeats an uninterrupted one because the loop
    seeds every epoch. `memory_format`: the views come out in it (channels-last on CUDA), so the
    loop's conversion per step is a no-op.
    """

    def __init__(self, images, labels, view_names: Sequence[str], mean, std, batch_size: int,
                 drop_last: bool, device: torch.device, shard: tuple[int, int] = (0, 1), seed: int = 0,
                 memory_format: torch.memory_format = torch.contiguous_format,
                 block_images: int = VIEW_BLOCK_IMAGES, sampler: str = "instance", samples_per_class: int = 1,
                 sampler_epoch: str = "sampler"):
        from benchmarks.data.views import FastView

        # (N, H, W, 3) uint8 -> (N, 3, H, W) uint8 on the device: 3 KB an image.
        self.images = torch.as_tensor(images).permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = torch.as_tensor(labels, dtype=torch.long, device=device)
        self.views = [FastView(name, mean, std) for name in view_names]
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.memory_format = memory_format
        self.batches_per_block = max(1, block_images // batch_size)
        self.drawn = epoch_sampler(labels, sampler, samples_per_class, sampler_epoch)
        self.sharded = ShardedBatches(len(labels), batch_size, drop_last, shard[0], shard[1], seed, self.drawn) \
            if shard[1] > 1 else None

    def set_epoch(self, epoch: int) -> None:
        if self.sharded is not None:
            self.sharded.set_epoch(epoch)

    def __len__(self) -> int:
        if self.sharded is not None:
            return len(self.sharded)
        n = len(self.drawn) if self.drawn is not None else len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch_batches(self) -> list[torch.Tensor]:
        """This epoch's batches as index tensors on the device: a `randperm` there (instance
        sampling), the sampler's draw (made on the CPU from the global generator, copied once),
        or this rank's shares of the sharded order (copied to the device once per epoch)."""
        device = self.labels.device
        if self.sharded is not None:
            batches = list(self.sharded)
            flat = torch.tensor([i for batch in batches for i in batch], dtype=torch.long, device=device)
            return list(flat.split([len(batch) for batch in batches]))
        if self.drawn is not None:
            order = self.drawn.order().to(device)
        else:
            order = torch.randperm(len(self.labels), device=device)
        return list(order.split(self.batch_size))[: len(self)]

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        batches = self.epoch_batches()
        for first in range(0, len(batches), self.batches_per_block):
            block = batches[first: first + self.batches_per_block]
            idx = torch.cat(block)
            images = self.images.index_select(0, idx)
            views = [view(images).contiguous(memory_format=self.memory_format) for view in self.views]
            labels = self.labels.index_select(0, idx)
            start = 0
            for batch in block:
                end = start + batch.shape[0]
                yield [v[start:end] for v in views], labels[start:end]
                start = end


def normalised_tensor(images: np.ndarray, mean, std, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float on `device`: ToTensor + Normalize, batched."""
    x = torch.as_tensor(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return ((x - mean_t) / std_t).contiguous()
