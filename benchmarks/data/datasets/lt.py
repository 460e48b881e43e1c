"""Long-tailed subset construction, exactly as the LDAM-DRW protocol that BCL, PaCo and BCCL reuse.

Class i of C keeps n_i = int(n_max * (1 / IF) ** (i / (C - 1))) images, classes in label order.
The images are chosen by seeding numpy's *global* generator once (`np.random.seed(0)`) and then,
class by class in label order, shuffling that class's indices (in the original order) in place with
`np.random.shuffle` and keeping the first n_i. Matching the global-generator calls exactly is what
makes the subsets identical to the releases'; we restore the global state afterwards so that no
caller's randomness is disturbed.
"""

from __future__ import annotations

import numpy as np

from benchmarks import LTBenchError


def lt_class_counts(n_max: int, num_classes: int, imb_factor: float) -> list[int]:
    """Per-class image counts of the exponential profile: n_i = int(n_max * (1/IF) ** (i / (C-1)))."""
    if imb_factor < 1:
        raise LTBenchError(f"imbalance factor must be >= 1, got {imb_factor}")
    if num_classes == 1:
        return [int(n_max)]
    ratio = 1.0 / imb_factor
    return [int(n_max * ratio ** (i / (num_classes - 1.0))) for i in range(num_classes)]


def largest_imb_factor(n_max: int, num_classes: int) -> int:
    """The largest whole-number IF whose profile keeps at least one image of every class: n_max,
    or a little less where the float power rounds the last class's n_max / IF just below 1."""
    imb = max(int(n_max), 1)
    while imb > 1 and min(lt_class_counts(n_max, num_classes, imb)) < 1:
        imb -= 1
    return imb


def long_tailed_subset(
    labels,
    num_classes: int,
    imb_factor: float,
    n_max: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, list[int]]:
    """Select the long-tailed subset of a balanced labelled set.

    Args:
        labels: the labels of the full training set, in its original order.
        num_classes: C; labels are 0..C-1.
        imb_factor: IF = n_max / n_min (>= 1; 1 keeps n_max of every class).
        n_max: images kept of class 0; default len(labels) // C (5000 for CIFAR-10, 500 for CIFAR-100).
        seed: the seed given to numpy's global generator (the protocol uses 0).

    Returns:
        (indices, counts): indices into `labels`, class 0's first then class 1's and so on, each
        class's in its shuffled order; counts[c] = images kept of class c.

    numpy's global random state is the same after the call as before it.
    """
    labels = np.asarray(labels)
    if n_max is None:
        n_max = len(labels) // num_classes
    counts = lt_class_counts(n_max, num_classes, imb_factor)
    if min(counts) < 1:
        raise LTBenchError(
            f"imbalance factor {imb_factor:g} leaves class {counts.index(min(counts))} without a training image "
            f"(the largest class keeps {n_max}); the largest whole-number IF this data allows is "
            f"{largest_imb_factor(n_max, num_classes)}")
    saved_state = np.random.get_state()
    try:
        np.random.seed(seed)
        selected = []
        for cls, count in enumerate(counts):
            idx = np.where(labels == cls)[0]
            if len(idx) < count:
                raise LTBenchError(
                    f"class {cls} has {len(idx)} images, the LT profile asks for {count}"
                )
            np.random.shuffle(idx)
            selected.append(idx[:count])
    finally:
        np.random.set_state(saved_state)
    return np.concatenate(selected).astype(np.int64), counts


def cap_per_class(labels: np.ndarray, cap: int) -> np.ndarray:
    """Indices keeping at most `cap` images of each class, the first ones in the given order.

    This is the tiny-subset option for smoke runs; cap <= 0 keeps everything.
    """
    labels = np.asarray(labels)
    if cap <= 0:
        return np.arange(len(labels))
    keep = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        keep[np.where(labels == cls)[0][:cap]] = True
    return np.where(keep)[0]
