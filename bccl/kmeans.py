"""Batched k-means: all C class queues clustered in one computation.

The release clusters each class's queue separately (a Python loop over classes calling a GPU
k-means on one class at a time). This module runs the same per-class algorithm for all classes at
once on a (C, Q, D) tensor:

* **Initial centres**: K distinct points drawn uniformly at random among the class's valid points
  (a random permutation of the valid slots, first K). Randomness comes from torch's global RNG on
  the points' device, or from `generator`, so seeded runs repeat.
* **Lloyd iterations** with squared Euclidean distance: assign every valid point to its nearest
  centre, then move each centre to the mean of its points.
* **Empty cluster** -> the centre becomes the zero vector (and stays a centre: later iterations may
  assign points to it).
* **Stopping, per class**: class c stops once sum_k ||new_ck - old_ck||^2 <= tol, or after
  `max_iter` iterations. Because the release clusters classes one by one, each class has its own
  stopping test: a class that has converged keeps its centres while the others continue. (A single
  test summed over all classes would let the slowest class hold the others' centres moving, or
  the sum of C small shifts stop a class that had not converged.)
* **Fewer than K valid points** (n_c < K, only possible for queues that have not filled yet, e.g. the
  first steps of a run or tiny-subset runs): the n_c points are the first n_c centres and the other
  K - n_c centroids are zero vectors that take no points. This is the empty-cluster rule applied to
  clusters that could not be seeded: a zero centroid adds exactly 0 to BCCL's centroid loss, so a
  class contributes only the centres its data supports. An empty queue (n_c = 0) gives K zeros.
  This rule is ltbench's, not the release's: there, drawing K initial points from fewer raises
  and a class never seen crashes the clustering. It never acts in the recipe on full CIFAR-LT
  (by epoch 10, the first clustering, even a 5-image class has filled its 100 slots), only in
  runs on tiny subsets or with other warmup / queue settings.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from benchmarks.train.precision import islands_enabled


class KMeansResult(NamedTuple):
    centroids: torch.Tensor  # (C, K, D)
    assignments: torch.Tensor  # (C, Q) long, centre index per point (-1 for invalid slots)
    iterations: torch.Tensor  # (C,) long, Lloyd iterations each class ran


def random_initial_centres(
    points: torch.Tensor, counts: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """K distinct random valid points per class: ((C, K, D) centres, (C, K) bool seeded mask).

    Centres that cannot be seeded (k > n_c) are zero and marked False in the mask.
    """
    c, q, d = points.shape
    slots = torch.arange(q, device=points.device)
    valid = slots[None, :] < counts[:, None]
    keys = torch.rand(c, q, device=points.device, generator=generator)
    keys = keys.masked_fill(~valid, 2.0)  # invalid slots sort after every valid one
    take = min(k, q)
    idx = keys.argsort(dim=1)[:, :take]  # (C, take): a random permutation of the valid slots first
    centres = torch.zeros(c, k, d, dtype=points.dtype, device=points.device)
    centres[:, :take] = points.gather(1, idx[:, :, None].expand(-1, -1, d))
    seeded = torch.arange(k, device=points.device)[None, :] < counts.clamp(max=k)[:, None]
    return centres * seeded[:, :, None], seeded


@torch.no_grad()
def batched_kmeans(
    points: torch.Tensor,
    counts: torch.Tensor,
    k: int,
    max_iter: int = 100,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
    init: torch.Tensor | None = None,
) -> KMeansResult:
    """Cluster every class's valid points into K centres; see the module docstring for the rules.

    points: (C, Q, D), of which slots [0, counts[c]) of class c are valid (a `ClassQueues` row).
    init: optional (C, K, D) initial centres (tests use it to pin the start); when given, a centre
    counts as seeded for class c iff its index is < counts[c].
    Precision: BCCL re-clusters inside its training step, so under autocast. The release clusters
    inside its fp16 autocast block; a fp16 run here does the same (the Lloyd matmuls in fp16, as
    autocast decides). Under bf16 (the speed option, no release) k-means is one of the float32
    islands of `benchmarks.train.precision`: bf16 matmuls moved centroids by up to ~0.08 and changed
    ~10 % of the assignments in a test. Outside a training step (tests) it runs in float32.
    """
    check_every = 1 if points.device.type == "cpu" else 8
    if not islands_enabled():  # a fp16 step at the release's precision: inside its autocast, as released
        return _lloyd(points, counts, k, max_iter, tol, generator, init, check_every)
    with torch.autocast(points.device.type, enabled=False):
        return _lloyd(points.float(), counts, k, max_iter, tol, generator, init, check_every)


def _lloyd(points, counts, k, max_iter, tol, generator, init, check_every: int = 1) -> KMeansResult:
    """`batched_kmeans`' body (float32 with autocast off, or under a fp16 step's autocast).

    Reading whether any class is still active synchronises an accelerator, so there it is read
    every `check_every` iterations only: a converged class is frozen (`torch.where`), so the extra
    iterations change nothing but time."""
    c, q, d = points.shape
    counts = counts.to(points.device)
    if init is None:
        centres, seeded = random_initial_centres(points, counts, k, generator)
    else:
        centres = init.float().clone()
        seeded = torch.arange(k, device=points.device)[None, :] < counts.clamp(max=k)[:, None]
        centres = centres * seeded[:, :, None]
    valid = torch.arange(q, device=points.device)[None, :] < counts[:, None]  # (C, Q)
    valid_f = valid.to(points.dtype)
    active = counts > 0
    iterations = torch.zeros(c, dtype=torch.long, device=points.device)
    assign = torch.full((c, q), -1, dtype=torch.long, device=points.device)
    for iteration in range(max_iter):
        if iteration % check_every == 0 and not bool(active.any()):
            break
        # ||x - m||^2 = ||x||^2 - 2 x.m + ||m||^2; ||x||^2 is the same for every centre of a point.
        dist = (centres * centres).sum(-1)[:, None, :] - 2.0 * (points @ centres.transpose(1, 2))  # (C, Q, K)
        dist = dist.masked_fill(~seeded[:, None, :], float("inf"))
        new_assign = dist.min(dim=2).indices  # (C, Q); ties go to the lowest centre index
        # Cluster sums by a one-hot matmul: deterministic on every device (a scatter-add is not on GPU).
        member = torch.nn.functional.one_hot(new_assign, k).to(points.dtype) * valid_f[:, :, None]
        sums = member.transpose(1, 2) @ points  # (C, K, D)
        sizes = member.sum(1)  # (C, K)
        new = sums / sizes.clamp(min=1.0)[:, :, None]  # empty cluster: 0 / 1 = the zero vector
        shift = ((new - centres) ** 2).sum(dim=(1, 2))  # (C,)
        centres = torch.where(active[:, None, None], new, centres)
        assign = torch.where(active[:, None] & valid, new_assign, assign)
        iterations += active.long()
        active = active & (shift > tol)
    return KMeansResult(centres, assign, iterations)
