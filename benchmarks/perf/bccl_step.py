"""Where a BCCL training step spends its time on CPU: the network vs BCCL's own work.

Setting: ResNet-32 + cosine classifier + 64-512-128 head, batch 128 (two views -> 256 images
through the network), C = 100 classes (CIFAR-100-LT IF100 counts), queues full (100 x 128-d per
class), K = 5. BCCL's own work is the queue push, the k-means (re-clustering steps only) and the
three loss terms, forward and backward. The step is cut exactly where `BCCL.training_step` cuts
it, and the backward is split with `autograd.grad` into the loss part (loss -> z, logits) and the
network part (z, logits -> parameters), so no share is estimated by subtraction.

Two k-means rows: the queues filled with clustered synthetic projections (five noisy directions per
class, roughly what a trained head gives; the iteration count is printed), and a worst case forced
to run all 100 Lloyd iterations (tol = -1).

Run: python benchmarks/perf/bccl_step.py [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bccl.kmeans import batched_kmeans  # noqa: E402
from bccl.losses import centroid_loss, class_averaged_supcon, logit_adjusted_ce  # noqa: E402
from bccl.method import BCCL  # noqa: E402
from benchmarks.config import resolve_config  # noqa: E402

C = 100
B = 128


def cifar100_if100_counts() -> torch.Tensor:
    return torch.tensor([int(500 * (1 / 100) ** (i / (C - 1))) for i in range(C)])


def fill_queues(m: BCCL, g: torch.Generator) -> None:
    """Full queues of clustered unit vectors: 5 directions per class, 20 noisy copies each."""
    q, d = m.queues.size, m.queues.dim
    dirs = F.normalize(torch.randn(C, 5, d, generator=g), dim=2)
    pts = dirs.repeat_interleave(q // 5, dim=1) + 0.3 * torch.randn(C, q, d, generator=g) / d**0.5
    m.queues.features.copy_(F.normalize(pts, dim=2))
    m.queues.counts.fill_(q)
    m.queues.ptr.zero_()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) * 1e3


def one_step(m: BCCL, views, labels, recluster: bool) -> dict[str, float]:
    """One step cut into its parts; returns milliseconds per part."""
    ms: dict[str, float] = {}
    v1, v2 = views

    def forward():
        h = m.backbone(torch.cat([v1, v2]))
        return m.classifier(h[:B]), m.project(h)

    (logits, z), ms["network forward"] = timed(forward)
    ms["k-means"] = 0.0
    if recluster:
        _, ms["k-means"] = timed(lambda: m.recluster(10))

    def losses():
        la = logit_adjusted_ce(logits, labels, m.log_prior)
        scl = class_averaged_supcon(z, labels, C, m.temperature)
        cen = centroid_loss(z, labels, m.centroids)
        return m.alpha * scl + m.beta * la + m.eta * cen

    loss, ms["losses forward"] = timed(losses)
    _, ms["queue push"] = timed(lambda: m.queues.push(z.detach(), torch.cat([labels, labels])))
    (g_logits, g_z), ms["losses backward"] = timed(lambda: torch.autograd.grad(loss, [logits, z], retain_graph=True))
    _, ms["network backward"] = timed(lambda: torch.autograd.backward([logits, z], [g_logits, g_z]))
    m.zero_grad(set_to_none=True)
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    config = resolve_config("bccl", dataset="cifar100")
    m = BCCL(config, C, cifar100_if100_counts()).train()
    fill_queues(m, g)
    m.recluster(10)
    labels = torch.randint(0, C, (B,), generator=g)
    views = [torch.randn(B, 3, 32, 32, generator=g) for _ in range(2)]

    rows: dict[str, dict[str, list[float]]] = {"normal": {}, "re-clustering": {}}
    for rep in range(args.repeats + 1):  # the first round warms up and is dropped
        for kind in rows:
            fill_queues(m, g)
            ms = one_step(m, views, labels, recluster=(kind == "re-clustering"))
            if rep:
                for key, value in ms.items():
                    rows[kind].setdefault(key, []).append(value)

    # k-means alone on the same queues: iterations, and the worst case of 100 iterations
    fill_queues(m, g)
    res = batched_kmeans(m.queues.features, m.queues.counts, m.k, m.kmeans_max_iter, m.kmeans_tol)
    worst = []
    for _ in range(args.repeats):
        _, t = timed(lambda: batched_kmeans(m.queues.features, m.queues.counts, m.k, 100, -1.0))
        worst.append(t)

    own = ("queue push", "k-means", "losses forward", "losses backward")
    print(f"BCCL step on CPU, {args.threads} thread(s), torch {torch.__version__}: ResNet-32, batch {B} "
          f"(2 views = {2 * B} images), C = {C}, queues {m.queues.size} x {m.queues.dim}, K = {m.k}; "
          f"median of {args.repeats}")
    print(f"k-means iterations on the synthetic queues: mean {res.iterations.float().mean():.1f}, "
          f"max {int(res.iterations.max())} (tol {m.kmeans_tol:g}, max_iter {m.kmeans_max_iter})")
    print()
    print(f"{'part':<22}{'normal ms':>12}{'share':>8}{'re-cluster ms':>16}{'share':>8}")
    med = {kind: {k: statistics.median(v) for k, v in parts.items()} for kind, parts in rows.items()}
    totals = {kind: sum(parts.values()) for kind, parts in med.items()}
    order = ["network forward", "network backward", "queue push", "k-means", "losses forward", "losses backward"]
    for key in order:
        n, r = med["normal"][key], med["re-clustering"][key]
        print(f"{key:<22}{n:>12.2f}{n / totals['normal']:>8.1%}{r:>16.2f}{r / totals['re-clustering']:>8.1%}")
    own_n = sum(med["normal"][k] for k in own)
    own_r = sum(med["re-clustering"][k] for k in own)
    print(f"{'BCCL own work':<22}{own_n:>12.2f}{own_n / totals['normal']:>8.1%}"
          f"{own_r:>16.2f}{own_r / totals['re-clustering']:>8.1%}")
    print(f"{'step total':<22}{totals['normal']:>12.2f}{'':>8}{totals['re-clustering']:>16.2f}")
    w = statistics.median(worst)
    print()
    print(f"k-means worst case (all 100 iterations): {w:.2f} ms = "
          f"{w / (totals['normal'] + w):.1%} of a step that would include it")
    goal = max(own_n / totals["normal"], own_r / totals["re-clustering"])
    print(f"goal: BCCL's own work <= 10% of the step -> {'met' if goal <= 0.10 else 'NOT met'} ({goal:.1%})")


if __name__ == "__main__":
    main()
