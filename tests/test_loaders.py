"""The fast path's loader: every image once per epoch, batches cut from rendered blocks, the
block size not changing the epoch's order, channels-last output, torchrun shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.data.loaders import FastLoader, ShardedBatches

N, B = 50, 8
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def images_and_labels():
    """Image i is filled with the level i (so a rendered test view identifies its source)."""
    images = np.repeat(np.arange(N, dtype=np.uint8)[:, None, None, None], 32 * 32 * 3).reshape(N, 32, 32, 3)
    return images, np.arange(N) % 5


def source_ids(view: torch.Tensor) -> list[int]:
    """Undo the test view's normalisation: the level each image was filled with."""
    return torch.round((view[:, 0, 0, 0] * 0.25 + 0.5) * 255).long().tolist()


def epoch(loader: FastLoader, seed: int = 0):
    torch.manual_seed(seed)
    return list(loader)


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("block_images", [B, 3 * B, 1024])
def test_every_image_once_per_epoch_in_batches(drop_last, block_images):
    images, labels = images_and_labels()
    loader = FastLoader(images, labels, ["test", "crop_flip"], MEAN, STD, B, drop_last, torch.device("cpu"),
                        block_images=block_images)
    batches = epoch(loader)
    assert len(batches) == len(loader) == (N // B if drop_last else -(-N // B))
    seen = []
    for views, y in batches:
        assert [v.shape[1:] for v in views] == [(3, 32, 32)] * 2 and views[0].shape[0] == y.shape[0]
        ids = source_ids(views[0])
        assert y.tolist() == [i % 5 for i in ids]  # labels travel with their images
        seen += ids
    assert len(set(seen)) == len(seen) == (N // B * B if drop_last else N)  # none twice
    assert set(seen) <= set(range(N))


def test_block_size_changes_the_draws_not_the_order():
    images, labels = images_and_labels()
    per_batch = FastLoader(images, labels, ["test", "crop_flip"], MEAN, STD, B, False, torch.device("cpu"), block_images=B)
    whole = FastLoader(images, labels, ["test", "crop_flip"], MEAN, STD, B, False, torch.device("cpu"))
    a, b = epoch(per_batch), epoch(whole)
    assert [source_ids(v[0]) for v, _ in a] == [source_ids(v[0]) for v, _ in b]
    assert torch.equal(epoch(whole)[2][0][1], b[2][0][1])  # same seed, same views


def test_views_come_out_in_the_requested_memory_format():
    images, labels = images_and_labels()
    loader = FastLoader(images, labels, ["crop_flip"], MEAN, STD, B, False, torch.device("cpu"),
                        memory_format=torch.channels_last)
    for views, _ in epoch(loader):
        assert views[0].is_contiguous(memory_format=torch.channels_last)


def test_sharded_ranks_take_their_shares_of_the_same_batches():
    images, labels = images_and_labels()
    world = 2
    shards = [FastLoader(images, labels, ["test"], MEAN, STD, B // world, False, torch.device("cpu"),
                         shard=(rank, world), seed=3) for rank in range(world)]
    for loader in shards:
        loader.set_epoch(1)
    both = [[source_ids(v[0]) for v, _ in epoch(loader)] for loader in shards]
    for rank in range(world):
        reference = ShardedBatches(N, B // world, False, rank, world, seed=3)
        reference.set_epoch(1)
        assert both[rank] == list(reference)
