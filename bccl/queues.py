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
    def push(self, z: torch.Tensor, labels: torch.Tensor) -> None:
        """Append the rows of `z` (N, D) to the queues of `labels` (N,), in row order.

        BCCL passes z = [view 1; view 2] with labels [y; y], so within a class the order of
        arrival is v1's projections in batch order, then v2's, as released. When a class receives
        more than Q entries in one push only its newest Q (the last in row order) are kept.
        Classes absent from the batch are untouched. One scatter, no loop over classes.
        """
        z = z.detach().to(self.features.dtype)
        labels = labels.to(self.counts.device)
        onehot = torch.nn.functional.one_hot(labels, self.num_classes)  # (N, C)
        rank = onehot.cumsum(0).gather(1, labels[:, None]).squeeze(1) - 1  # 0-based arrival order in class
        arrived = onehot.sum(0)  # (C,)
        dropped = (arrived - self.size).clamp(min=0)  # older entries of this push that do not fit
        offset = rank - dropped[labels]
        keep = offset >= 0
        slot = (self.ptr[labels] + offset) % self.size
        self.features[labels[keep], slot[keep]] = z[keep]
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
