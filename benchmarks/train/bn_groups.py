"""BatchNorm per DataParallel chunk, emulated in one process (the `bn_groups` options).

Why: several releases wrap their networks in `nn.DataParallel` (BCL on ImageNet-LT / iNat, the
classifier-balancing stage 1 that ltbench's `ce` follows there). DataParallel scatters a batch in G
contiguous chunks (`Tensor.chunk` sizes), each replica's BatchNorm layers normalise their own
chunk, the outputs are gathered in order, and the running statistics that survive are the first
replica's (the other replicas' updates are discarded with them). Normalising the whole batch at
once computes something else (other batch statistics, so other gradients), so a method that
follows such a release takes `bn_groups: G` and forwards its batch with `forward_in_groups`:
the chunks pass one after the other, the later ones with the BatchNorm momentum at 0. Gradients
are those of the gathered loss, as with DataParallel. Under torchrun with W ranks each rank holds
B / W of the batch, so W must divide G and each rank emulates G / W replicas (`local_groups`).
"""

from __future__ import annotations

import contextlib
from typing import Callable, TypeVar

import torch
import torch.nn as nn

from benchmarks import LTBenchError
from benchmarks.train import distributed

T = TypeVar("T")


@contextlib.contextmanager
def running_stats_frozen(*modules: nn.Module):
    """Inside: the BatchNorm layers of `modules` normalise with their batch statistics (train
    mode) but leave their running statistics as they are (momentum 0: r = 1 * r + 0 * batch; the
    batch counter is restored too), as a discarded DataParallel replica's do."""
    norms = [m for module in modules for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def local_groups(groups: int, method: str) -> int:
    """The replicas this process emulates: `groups` (the release's DataParallel replicas) over
    the torchrun processes, which must divide it (known only at run time)."""
    world = distributed.world_size()
    if groups % world:
        raise LTBenchError(f"{method}: bn_groups (DataParallel replicas of the release) must be a multiple of the "
                           f"{world} processes, got {groups}; --set bn_groups={world} gives one per rank")
    return groups // world


def forward_in_groups(forward: Callable[[torch.Tensor], T], images: torch.Tensor, groups: int,
                      *modules: nn.Module) -> list[T]:
    """`forward` of each of the `groups` contiguous chunks of `images` (DataParallel's scatter),
    the BatchNorm layers of `modules` keeping only the first chunk's running statistics. One
    group is one plain forward of the whole batch."""
    if groups == 1:
        return [forward(images)]
    outputs = []
    for i, chunk in enumerate(images.chunk(groups)):
        with running_stats_frozen(*modules) if i else contextlib.nullcontext():
            outputs.append(forward(chunk))
    return outputs
