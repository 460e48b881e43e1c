"""The LDAM-DRW long-tailed subsets: golden counts and the exact selection procedure."""

import numpy as np
import pytest

from benchmarks import LTBenchError
from benchmarks.data.datasets import cap_per_class, long_tailed_subset, lt_class_counts

GOLDEN_TOTALS = {
    ("cifar10", 100): 12406, ("cifar10", 50): 13996, ("cifar10", 10): 20431,
    ("cifar100", 100): 10847, ("cifar100", 50): 12608, ("cifar100", 10): 19573,
}


def test_cifar10_if100_golden_counts():
    assert lt_class_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_cifar10_if50_and_if10_golden_counts():
    assert lt_class_counts(5000, 10, 50) == [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100]
    assert lt_class_counts(5000, 10, 10) == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]


@pytest.mark.parametrize("dataset,imb", sorted(GOLDEN_TOTALS))
def test_golden_totals_of_all_six_cells(dataset, imb):
    n_max, classes = (5000, 10) if dataset == "cifar10" else (500, 100)
    counts = lt_class_counts(n_max, classes, imb)
    assert sum(counts) == GOLDEN_TOTALS[(dataset, imb)]
    assert counts[0] == n_max and counts[-1] == int(n_max / imb)
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def _reference_selection(labels, counts, seed):
    """The protocol written out independently: global seed once, shuffle each class in turn."""
    np.random.seed(seed)
    out = []
    for cls, n in enumerate(counts):
        idx = np.where(labels == cls)[0]
        np.random.shuffle(idx)
        out.extend(idx[:n].tolist())
    return out


def test_selection_matches_the_protocol_on_synthetic_labels():
    rng = np.random.RandomState(7)
    labels = rng.permutation(np.repeat(np.arange(10), 300))
    idx, counts = long_tailed_subset(labels, 10, 100)
    assert counts == [300, 179, 107, 64, 38, 23, 13, 8, 5, 3]
    assert idx.tolist() == _reference_selection(labels, counts, 0)
    assert np.bincount(labels[idx], minlength=10).tolist() == counts
    # class blocks in label order
    assert (np.diff(labels[idx]) >= 0).all()
    assert len(set(idx.tolist())) == len(idx)


def test_selection_depends_on_seed_and_restores_global_state():
    labels = np.repeat(np.arange(5), 50)
    np.random.seed(123)
    before = np.random.get_state()
    expected_next = np.random.rand()
    np.random.set_state(before)
    a, _ = long_tailed_subset(labels, 5, 10, seed=0)
    assert np.random.rand() == expected_next  # global state untouched
    b, _ = long_tailed_subset(labels, 5, 10, seed=1)
    assert a.tolist() != b.tolist()
    assert a.tolist() == long_tailed_subset(labels, 5, 10, seed=0)[0].tolist()


def test_if_one_is_balanced_and_fractional_if_accepted():
    labels = np.repeat(np.arange(4), 10)
    assert long_tailed_subset(labels, 4, 1)[1] == [10, 10, 10, 10]
    assert long_tailed_subset(labels, 4, 2.5)[1] == [10, 7, 5, 4]


def test_bad_imbalance_factor_and_short_class():
    labels = np.repeat(np.arange(3), 10)
    with pytest.raises(LTBenchError, match=">= 1"):
        long_tailed_subset(labels, 3, 0.5)
    with pytest.raises(LTBenchError, match="class 0 has 10 images"):
        long_tailed_subset(labels, 3, 10, n_max=20)


def test_cap_per_class_keeps_the_first_images_of_each_class():
    labels = np.array([0, 0, 0, 1, 1, 2, 0])
    assert cap_per_class(labels, 2).tolist() == [0, 1, 3, 4, 5]
    assert cap_per_class(labels, 0).tolist() == list(range(7))
