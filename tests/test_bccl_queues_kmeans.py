"""BCCL's per-class FIFO queues and batched k-means."""

from __future__ import annotations

import numpy as np
import torch

from bccl.kmeans import _lloyd, batched_kmeans, random_initial_centres
from bccl.queues import ClassQueues


def rows(*values: float) -> torch.Tensor:
    """1-d features: one row per value (the value identifies the entry)."""
    return torch.tensor(values, dtype=torch.float32)[:, None]


def ids(q: ClassQueues, c: int) -> list[float]:
    return q.ordered(c)[:, 0].tolist()


# ----------------------------------------------------------------------------------------------
# Queues
# ----------------------------------------------------------------------------------------------

def test_queue_fills_in_arrival_order_below_capacity():
    q = ClassQueues(num_classes=3, size=4, dim=1)
    q.push(rows(1, 2, 3), torch.tensor([0, 1, 0]))
    assert q.counts.tolist() == [2, 1, 0]
    assert ids(q, 0) == [1, 3] and ids(q, 1) == [2] and ids(q, 2) == []
    assert q.valid_mask().tolist() == [[True, True, False, False], [True, False, False, False], [False] * 4]


def test_queue_at_and_past_capacity_keeps_newest():
    q = ClassQueues(num_classes=2, size=3, dim=1)
    q.push(rows(1, 2, 3), torch.tensor([0, 0, 0]))  # exactly full
    assert ids(q, 0) == [1, 2, 3] and q.counts[0] == 3
    q.push(rows(4), torch.tensor([0]))  # one past: the oldest goes
    assert ids(q, 0) == [2, 3, 4]
    q.push(rows(5, 6), torch.tensor([0, 0]))
    assert ids(q, 0) == [4, 5, 6] and q.counts[0] == 3
    # more than Q at once: only the newest Q of this push survive
    q.push(rows(7, 8, 9, 10, 11), torch.tensor([0, 0, 0, 0, 0]))
    assert ids(q, 0) == [9, 10, 11]
    assert q.counts.tolist() == [3, 0]


def test_queue_partial_then_overflow_in_one_push():
    q = ClassQueues(num_classes=1, size=4, dim=1)
    q.push(rows(1, 2), torch.tensor([0, 0]))
    q.push(rows(3, 4, 5), torch.tensor([0, 0, 0]))
    assert ids(q, 0) == [2, 3, 4, 5]


def test_queue_classes_absent_from_batch_are_untouched():
    q = ClassQueues(num_classes=3, size=2, dim=1)
    q.push(rows(1, 2, 3), torch.tensor([0, 1, 2]))
    before = q.features.clone()
    q.push(rows(4, 5, 6), torch.tensor([1, 1, 1]))
    assert ids(q, 1) == [5, 6]
    assert torch.equal(q.features[0], before[0]) and torch.equal(q.features[2], before[2])
    assert q.counts.tolist() == [1, 2, 1]


def test_queue_keeps_view1_then_view2_order():
    # BCCL pushes [z1; z2] with labels [y; y]: a class sees its view-1 rows, then its view-2 rows.
    q = ClassQueues(num_classes=2, size=3, dim=1)
    z1, z2 = rows(10, 11, 12), rows(20, 21, 22)
    y = torch.tensor([0, 1, 0])
    q.push(torch.cat([z1, z2]), torch.cat([y, y]))
    assert ids(q, 0) == [12, 20, 22]  # newest 3 of [10, 12, 20, 22]
    assert ids(q, 1) == [11, 21]


def test_queue_first_arrival_twice_reproduces_release_update():
    """The release's list-based update (BCCL main.py), restated: at the very first step a class's
    queue is its rows; afterwards a class never seen before gets its rows assigned and then,
    by the next `if`, appended again; then rows are appended keeping the newest Q. Random pushes
    with classes arriving late, bursts past capacity and absent classes; compared entry by entry."""
    size, classes = 5, 4
    gen = torch.Generator().manual_seed(0)
    q = ClassQueues(classes, size, dim=1)
    plain = ClassQueues(classes, size, dim=1)
    release: dict[int, list[float]] = {}
    next_id = 0
    differed = False
    for step in range(40):
        n = int(torch.randint(1, 9, (1,), generator=gen))
        top = 2 if step < 3 else classes  # classes 2 and 3 first arrive later
        labels = torch.randint(0, top, (n,), generator=gen)
        values = list(range(next_id, next_id + n))
        next_id += n
        for c in labels.unique().tolist():
            new = [float(v) for v, y in zip(values, labels.tolist()) if y == c]
            if step == 0:
                release[c] = new[-size:]
                continue
            stored = release.get(c)
            if stored is None:
                stored = new  # the release assigns, then appends again below
            release[c] = (stored + new)[-size:]
        q.push(rows(*values), labels, first_arrival_twice=True)
        plain.push(rows(*values), labels)
        for c in range(classes):
            assert ids(q, c) == release.get(c, []), (step, c)
            differed |= ids(q, c) != ids(plain, c)
    assert differed  # the quirk acted (and the plain queue does not have it)


def test_queue_state_is_in_state_dict_and_detached():
    q = ClassQueues(num_classes=2, size=3, dim=2)
    z = torch.randn(4, 2, requires_grad=True)
    q.push(z * 2, torch.tensor([0, 1, 1, 1]))
    assert not q.features.requires_grad
    sd = q.state_dict()
    assert set(sd) == {"features", "counts", "ptr"}
    fresh = ClassQueues(num_classes=2, size=3, dim=2)
    fresh.load_state_dict(sd)
    fresh.push(torch.ones(1, 2), torch.tensor([1]))
    q.push(torch.ones(1, 2), torch.tensor([1]))
    assert torch.equal(fresh.features, q.features) and torch.equal(fresh.ptr, q.ptr)


# ----------------------------------------------------------------------------------------------
# k-means
# ----------------------------------------------------------------------------------------------

def naive_lloyd(x: np.ndarray, init: np.ndarray, max_iter: int, tol: float) -> tuple[np.ndarray, int]:
    """One class, straight from the rules: assign, mean (empty -> 0), stop on sum of sq. shifts."""
    cents = init.copy()
    for it in range(1, max_iter + 1):
        d = ((x[:, None, :] - cents[None, :, :]) ** 2).sum(-1)
        a = d.argmin(1)
        new = np.zeros_like(cents)
        for k in range(len(cents)):
            if (a == k).any():
                new[k] = x[a == k].mean(0)
        shift = ((new - cents) ** 2).sum()
        cents = new
        if shift <= tol:
            return cents, it
    return cents, max_iter


def test_kmeans_recovers_separated_clusters_with_random_init():
    # Two classes, each two tight blobs far apart; with K = 2 Lloyd finds the blobs from any start.
    g = torch.Generator().manual_seed(0)
    blobs = torch.tensor([[[5.0, 0.0], [-5.0, 0.0]], [[0.0, 5.0], [0.0, -5.0]]])  # (C, 2, D)
    pts = blobs.repeat_interleave(6, dim=1) + 0.05 * torch.randn(2, 12, 2, generator=g)
    truth = pts.view(2, 2, 6, 2).mean(2)
    for seed in range(5):
        res = batched_kmeans(pts, torch.tensor([12, 12]), k=2, generator=torch.Generator().manual_seed(seed))
        for c in range(2):
            got = sorted(res.centroids[c].tolist())
            assert np.allclose(got, sorted(truth[c].tolist()), atol=1e-5)


def test_kmeans_recovers_three_clusters_from_one_seed_each():
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    pts = centres.repeat_interleave(5, dim=0) + 0.1 * torch.randn(15, 3, generator=g)
    init = pts[[0, 5, 10]][None]
    res = batched_kmeans(pts[None], torch.tensor([15]), k=3, init=init)
    assert torch.allclose(res.centroids[0], pts.view(3, 5, 3).mean(1), atol=1e-5)
    assert res.assignments[0].tolist() == [0] * 5 + [1] * 5 + [2] * 5


def test_random_init_picks_distinct_valid_points():
    q = 10
    pts = torch.arange(q, dtype=torch.float32).view(1, q, 1).repeat(3, 1, 1)
    counts = torch.tensor([5, 10, 7])
    for seed in range(5):
        cents, seeded = random_initial_centres(pts, counts, 5, torch.Generator().manual_seed(seed))
        assert seeded.all()
        for c in range(3):
            picked = cents[c, :, 0].tolist()
            assert len(set(picked)) == 5 and all(v < counts[c] for v in picked)
        if seed == 0:
            assert sorted(cents[0, :, 0].tolist()) == [0, 1, 2, 3, 4]  # 5 valid points, K = 5: all
    a = random_initial_centres(pts, counts, 3, torch.Generator().manual_seed(7))[0]
    b = random_initial_centres(pts, counts, 3, torch.Generator().manual_seed(7))[0]
    assert torch.equal(a, b)


def test_kmeans_empty_cluster_becomes_zero():
    # Third centre seeded far away: it takes no point and becomes the zero vector, and stays so
    # (no point is nearer to the origin than to its own blob).
    pts = torch.tensor([[[1.0, 0.0], [1.1, 0.0], [0.0, 1.0], [0.0, 1.1]]])
    init = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-100.0, -100.0]]])
    res = batched_kmeans(pts, torch.tensor([4]), k=3, init=init)
    assert torch.allclose(res.centroids[0], torch.tensor([[1.05, 0.0], [0.0, 1.05], [0.0, 0.0]]))


def test_kmeans_zero_centre_still_takes_points_and_stopping_rule():
    # 1-d, points 1, .9, .05; centres start at 1 and -100.
    # it 1: all -> c0 = .65, c1 empty -> 0          shift .1225 + 1e4
    # it 2: .05 is nearer 0 -> c0 = .95, c1 = .05   shift .09 + .0025 = .0925
    # it 3: unchanged                               shift 0 -> stop after 3 iterations
    pts = torch.tensor([[[1.0], [0.9], [0.05]]])
    init = torch.tensor([[[1.0], [-100.0]]])
    res = batched_kmeans(pts, torch.tensor([3]), k=2, init=init, tol=1e-4)
    assert res.iterations.tolist() == [3]
    assert torch.allclose(res.centroids[0, :, 0], torch.tensor([0.95, 0.05]))
    # tol 0.1 >= .0925: stops after iteration 2 (same centres); max_iter 1: one Lloyd step only
    res = batched_kmeans(pts, torch.tensor([3]), k=2, init=init, tol=0.1)
    assert res.iterations.tolist() == [2]
    res = batched_kmeans(pts, torch.tensor([3]), k=2, init=init, max_iter=1)
    assert res.iterations.tolist() == [1]
    assert torch.allclose(res.centroids[0, :, 0], torch.tensor([0.65, 0.0]))
    # a huge tol also stops after the first step: the rule is "shift <= tol"
    res = batched_kmeans(pts, torch.tensor([3]), k=2, init=init, tol=1e5 + 1)
    assert res.iterations.tolist() == [1]


def test_kmeans_batched_equals_one_class_at_a_time():
    # Per-class stopping: each class runs exactly as if clustered alone (as the release does).
    rng = np.random.default_rng(0)
    c, q, d, k = 5, 12, 3, 3
    pts = rng.normal(size=(c, q, d)).astype(np.float32)
    counts = np.array([12, 9, 4, 12, 6])
    init = np.stack([pts[i, :k] for i in range(c)])
    res = batched_kmeans(torch.tensor(pts), torch.tensor(counts), k, max_iter=100, tol=1e-4, init=torch.tensor(init))
    iters = []
    for i in range(c):
        want, it = naive_lloyd(pts[i, : counts[i]].astype(np.float64), init[i].astype(np.float64), 100, 1e-4)
        assert np.allclose(res.centroids[i].numpy(), want, atol=1e-5)
        iters.append(it)
    assert res.iterations.tolist() == iters
    assert len(set(iters)) > 1  # the classes really stopped at different iterations


def test_kmeans_fewer_points_than_k_and_empty_queue():
    pts = torch.zeros(3, 4, 2)
    pts[0, :2] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pts[1] = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    counts = torch.tensor([2, 4, 0])
    res = batched_kmeans(pts, counts, k=3, generator=torch.Generator().manual_seed(0))
    # class 0: the two points are the first two centres, the third is zero and takes no point
    assert sorted(res.centroids[0, :2].tolist()) == [[0.0, 1.0], [1.0, 0.0]]
    assert torch.equal(res.centroids[0, 2], torch.zeros(2))
    assert set(res.assignments[0, :2].tolist()) == {0, 1} and res.assignments[0, 2:].tolist() == [-1, -1]
    # class 2 (empty queue): K zero centroids, no iteration
    assert torch.equal(res.centroids[2], torch.zeros(3, 2)) and res.iterations[2] == 0
    assert res.iterations[1] >= 1


def test_kmeans_is_float32_under_autocast_and_sparse_checks_change_nothing():
    """Under bf16 autocast (BCCL clusters inside its autocast training step) the result is the
    float32 one, bit for bit; checking for convergence every 8 iterations (the accelerator
    setting) gives the same centres, assignments and per-class iteration counts."""
    g = torch.Generator().manual_seed(7)
    points = torch.randn(10, 40, 16, generator=g)
    counts = torch.tensor([40, 40, 3, 0, 40, 17, 40, 40, 5, 40])
    plain = batched_kmeans(points, counts, 4, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = batched_kmeans(points, counts, 4, generator=torch.Generator().manual_seed(1))
    sparse = _lloyd(points, counts, 4, 100, 1e-4, torch.Generator().manual_seed(1), None, check_every=8)
    for other in (mixed, sparse):
        assert torch.equal(other.centroids, plain.centroids)
        assert torch.equal(other.assignments, plain.assignments)
        assert torch.equal(other.iterations, plain.iterations)
    assert int(plain.iterations.max()) % 8 != 0  # the sparse check did run extra iterations
