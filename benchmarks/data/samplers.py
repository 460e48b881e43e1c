"""Which training images an epoch draws, and in what order: the recipe key `sampler`.

- `instance` (instance-balanced, every release's default): each image once per epoch, in a random
  order (a permutation).
- `class_balanced`: Decoupling's `ClassAwareSampler` (facebookresearch/classifier-balancing,
  `data/ClassAwareSampler.py`; its cRT stage). An epoch holds max_c n_c * C draws. Classes come up
  in cycles, each cycle a random permutation of the classes; each time a class comes up it gives
  its next `sampler_samples_per_class` images (the release's `num_samples_cls`; its cRT recipe
  uses 4), taken from the class's own cycles, each cycle a random permutation of the class's
  images. So every class is drawn equally often, and within a class every image equally often.
- `sqrt` (square-root sampling, Mahajan et al. 2018, as Decoupling's `MixedPrioritizedSampler`
  with `nroot: 2, manual_only: true, lam: 1` in its `feat_squareroot.yaml`): N independent draws
  with replacement, image i with probability proportional to n_{y_i}^(-1/2), so class c with
  probability proportional to n_c^(1/2).

Randomness. An epoch's draw is a function of the generator it is given: the loop's global torch
generator (seeded from (seed, epoch) at every epoch start, `training.seed_epoch`), or under
torchrun the generator all ranks seed alike (`loaders.ShardedBatches`). Nothing carries over from
one epoch to the next, which is what makes a resumed run repeat the uninterrupted one. The
release's cycle iterators do carry their position over epochs; restarting the cycles every epoch
draws from the same distribution whenever an epoch consumes whole cycles (classes: max n_c * C /
samples_per_class picks, a multiple of C when samples_per_class divides max n_c; images: every
class's max n_c draws, a multiple of n_c when n_c divides max n_c), and otherwise only changes which
part of a shuffled cycle an epoch's last, partial cycle takes.

Everything is vectorised (no Python loop over images or classes): one sort of random keys orders
all cycles at once. A CIFAR-LT epoch's draw takes milliseconds; an iNaturalist one (8,142
classes, 8.1 M class-balanced draws) some seconds, against hours of training.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler

from benchmarks import LTBenchError

SAMPLERS = ("instance", "class_balanced", "sqrt")
# How long an epoch of an EpochSampler is: its own length, or the dataset's (its first N draws:
# Decoupling's classifier stage, whose epoch stops after int(N / batch_size) steps).
SAMPLER_EPOCHS = ("sampler", "dataset")


def check_sampler(name: str, samples_per_class: int) -> None:
    if name not in SAMPLERS:
        raise LTBenchError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    if samples_per_class < 1:
        raise LTBenchError(f"sampler_samples_per_class must be >= 1, got {samples_per_class}")


def epoch_length(name: str, labels: torch.Tensor) -> int:
    """How many draws one epoch of sampler `name` makes over the training labels."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long))
    if name == "class_balanced":
        return int(counts.max()) * int((counts > 0).sum())
    return len(labels)


def epoch_order(name: str, labels: torch.Tensor, generator: torch.Generator | None = None,
                samples_per_class: int = 1) -> torch.Tensor:
    """One epoch's training indices, in order, drawn by sampler `name` from `generator` (None:
    torch's global generator). `labels` are the training labels (CPU); the result is on the CPU."""
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    if name == "instance":
        return torch.randperm(len(labels), generator=generator)
    if name == "sqrt":
        counts = torch.bincount(labels).double()
        weights = counts[labels].rsqrt()
        return torch.multinomial(weights, len(labels), replacement=True, generator=generator)
    if name == "class_balanced":
        return _class_aware_order(labels, generator, samples_per_class)
    raise LTBenchError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")


class EpochSampler(Sampler):
    """The sampler `name` over `labels`, as a torch `Sampler` (the reference DataLoader's) and as
    `order(generator)` (the fast loader's and the sharded batches')."""

    def __init__(self, name: str, labels, samples_per_class: int = 1, epoch: str = "sampler"):
        check_sampler(name, samples_per_class)
        self.name = name
        self.labels = torch.as_tensor(labels, dtype=torch.long).cpu()
        self.samples_per_class = samples_per_class
        self.length = epoch_length(name, self.labels) if epoch == "sampler" else len(self.labels)

    def order(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return epoch_order(self.name, self.labels, generator, self.samples_per_class)[: self.length]

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return iter(self.order().tolist())


def _cycles(group: torch.Tensor, cycles: torch.Tensor,
            generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated random permutations: for every group g (members: the positions where
    `group == g`), cycles[g] independent random permutations of its members, one after the other.

    Returns (members, owner): `members` lists, group after group, the positions into `group`
    of each group's cycles; `owner` the group of each entry. Done with one sort: every
    (member, cycle) pair gets a random key, and sorting by (group, cycle, key) orders each cycle
    randomly.
    """
    order = torch.argsort(group, stable=True)  # members grouped by group
    reps = cycles[group[order]]  # how many cycles each member appears in
    member = torch.repeat_interleave(order, reps)
    owner = group[member]
    # the cycle index of each repeated entry: 0..reps-1 for each member
    starts = torch.cumsum(reps, 0) - reps
    cycle = torch.arange(len(member)) - torch.repeat_interleave(starts, reps)
    keys = torch.rand(len(member), generator=generator, dtype=torch.float64)
    # sort by key, then stably by (group, cycle): a random order within each (group, cycle)
    by_key = torch.argsort(keys)
    composite = owner[by_key] * (int(cycles.max()) + 1) + cycle[by_key]
    final = by_key[torch.argsort(composite, stable=True)]
    return member[final], owner[final]


def _class_aware_order(labels: torch.Tensor, generator: torch.Generator | None, k: int) -> torch.Tensor:
    counts = torch.bincount(labels)
    present = torch.nonzero(counts > 0).flatten()  # the release cycles over the classes it sees
    num_classes = len(present)
    length = int(counts.max()) * num_classes
    picks = math.ceil(length / k)  # each pick gives k consecutive images of one class
    # The class stream: ceil(picks / C) random permutations of the classes, cut at `picks`.
    class_cycles = math.ceil(picks / num_classes)
    classes, _ = _cycles(torch.zeros(num_classes, dtype=torch.long), torch.tensor([class_cycles]), generator)
    picked = present[classes[:picks]]
    # How many images each class gives, and its image stream: enough cycles of its images.
    per_class = torch.bincount(picked, minlength=len(counts)) * k
    cycles = torch.where(counts > 0, (per_class + counts.clamp(min=1) - 1) // counts.clamp(min=1),
                         torch.zeros_like(counts))
    members, _ = _cycles(labels, cycles, generator)
    stream_start = torch.cumsum(counts * cycles, 0) - counts * cycles  # where each class's stream begins
    # The j-th pick of class c takes images j*k .. j*k + k - 1 of c's stream.
    rank = _rank_within(picked, len(counts))
    offsets = stream_start[picked] + rank * k
    take = (offsets[:, None] + torch.arange(k)[None, :]).flatten()
    return members[take][:length]


def _rank_within(values: torch.Tensor, num_values: int) -> torch.Tensor:
    """For each entry, how many earlier entries have the same value (0, 1, 2, ... per value)."""
    order = torch.argsort(values, stable=True)
    counts = torch.bincount(values, minlength=num_values)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(values)
    rank[order] = torch.arange(len(values)) - starts[values[order]]
    return rank
