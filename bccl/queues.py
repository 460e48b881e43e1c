"""Per-class FIFO queues of detached projections, held as tensors (buffers of an nn.Module).

Layout: `features` (C, Q, D) float32, `counts` (C,) valid entries per class, `ptr` (C,) the slot the
next entry of each class is written to. Each class's row is a ring buffer: while it fills, entries
occupy slots 0..count-1 (so `ptr == count`); once full every slot is valid and `ptr` points at the
oldest entry, which the next push overwrites. The valid points of class c are therefore always
slots [0, counts[c]), which is all k-means needs (their order inside the queue never matters).

Being buffers, the three tensors travel in the method's `state_dict()`, so a resumed run continues
with exactly the queues it had.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class ClassQueues(nn.Module):
    def __init__(self, num_classes: int, size: int, dim: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self.num_classes = num_classes
        self.size = size
        self.dim = dim
        self.register_buffer("features", torch.zeros(num_classes, size, dim))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros(num_classes, dtype=torch.long))

    @torch.no_grad()
    def push(self, z: torch.Tensor, labels: torch.Tensor, first_arrival_twice: bool = False) -> None:
        """Append the rows of `z` (N, D) to the queues of `labels` (N,), in row order.

        BCCL passes z = [view 1; view 2] with labels [y; y], so within a class the order of
        arrival is v1's projections in batch order, then v2's, as released. When a class receives
        more than Q entries in one push only its newest Q (the last in row order) are kept.
        Classes absent from the batch are untouched.

        first_arrival_twice: the release's queue update (main.py of the BCCL release) stores the
        first projections of a class twice when the class first appears after the very first
        step (it assigns the class's rows to its empty queue and then, in the next `if`, appends
        them again); classes present in the first step are stored once. Here: the rows of a
        class whose queue is empty, once anything has been pushed, are pushed a second time
        right after their first copy, which gives the release's queue in every case (below,
        at and past capacity).

        No loop over classes and nothing that synchronises an accelerator: the targets are
        written by zero-fill then index_add_ (each target gets exactly one non-zero addend, so
        the result is exact in any order), with rows that do not survive added as zeros.
        """
        z = z.detach().to(self.features.dtype)
        labels = labels.to(self.counts.device)
        if first_arrival_twice:
            started = self.counts.sum() > 0
            again = ((self.counts == 0) & started)[labels]  # rows pushed a second time
            z = torch.cat([z, z])
            labels = torch.cat([labels, labels])
            valid = torch.cat([torch.ones_like(again), again])
        else:
            valid = torch.ones_like(labels, dtype=torch.bool)
        onehot = torch.nn.functional.one_hot(labels, self.num_classes) * valid[:, None]  # (N, C)
        rank = onehot.cumsum(0).gather(1, labels[:, None]).squeeze(1) - 1  # 0-based arrival order in class
        arrived = onehot.sum(0)  # (C,)
        dropped = (arrived - self.size).clamp(min=0)  # older entries of this push that do not fit
        offset = rank - dropped[labels]
        keep = (offset >= 0) & valid
        target = labels * self.size + (self.ptr[labels] + offset) % self.size
        flat = self.features.view(-1, self.dim)
        flat.index_fill_(0, target, 0.0)
        flat.index_add_(0, target, z * keep[:, None].to(z.dtype))
        written = arrived.clamp(max=self.size)
        self.ptr.copy_((self.ptr + written) % self.size)
        self.counts.copy_((self.counts + arrived).clamp(max=self.size))

    def valid_mask(self) -> torch.Tensor:
        """(C, Q) bool: which slots hold an entry."""
        slots = torch.arange(self.size, device=self.counts.device)
        return slots[None, :] < self.counts[:, None]

    def ordered(self, c: int) -> torch.Tensor:
        """Class c's entries oldest first (for inspection and tests; k-means does not need order)."""
        n = int(self.counts[c])
        if n < self.size:
            return self.features[c, :n]
        return torch.roll(self.features[c], -int(self.ptr[c]), dims=0)
