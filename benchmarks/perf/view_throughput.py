"""Throughput of the view pipelines: per-image reference (PIL) vs batched FastView, side by side.

Run: `python benchmarks/perf/view_throughput.py [--batch 512] [--seconds 1.0] [--rounds 2]`.

Both CPU pipelines run on ONE thread (`torch.set_num_threads(1)`, the reference without
DataLoader workers) on the same random CIFAR-shaped uint8 data, in one process. Time is this
thread's CPU time (`time.thread_time`, including the kernel time of its page faults), so other
processes on a shared machine do not inflate it; each measurement runs for about `--seconds`,
the pipelines alternate for `--rounds` rounds and the best round of each is kept.

Columns: the reference, FastView with its CPU defaults (strategy "grouped": samples sorted by
op and ops run in place on slices; chunks of 256 images, 1024 for the AutoAugment views), and
FastView with strategy "masked" (the sync-free strategy used on accelerators). FastView applies
`keep_freed_memory()` on its first CPU call (glibc keeps freed memory: no page-fault churn), so
the process runs with it for every column. (The `--compile` column of earlier RESULTS.md entries
timed torch.compile'd view kernels; they were slower than the eager path and were removed.)
When CUDA is available the fast pipeline is also timed there (wall clock, synchronised; batches
of 512 and 4096). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.data.views import VIEW_NAMES, FastView, reference_transform  # noqa: E402
from benchmarks.data.views.batch import keep_freed_memory  # noqa: E402

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def _rate(step, items_per_call: int, seconds: float, sync=None) -> float:
    """Items per second of `step()` run repeatedly for about `seconds` (after one warm-up call):
    thread CPU time on CPU, wall clock with synchronisation for a device (`sync` given)."""
    clock = time.perf_counter if sync else time.thread_time
    step()
    if sync:
        sync()
    calls = 0
    start = clock()
    while True:
        step()
        calls += 1
        if sync:
            sync()
        elapsed = clock() - start
        if elapsed >= seconds:
            return calls * items_per_call / elapsed


def reference_rate(name: str, images: np.ndarray, seconds: float) -> float:
    transform = reference_transform(name, CIFAR_MEAN, CIFAR_STD)
    chunk = images[:64]

    def step():
        for img in chunk:
            transform(img)

    return _rate(step, len(chunk), seconds)


def fast_rate(name: str, batch: torch.Tensor, seconds: float, strategy: str = "auto") -> float:
    view = FastView(name, CIFAR_MEAN, CIFAR_STD, strategy=strategy)
    sync = torch.cuda.synchronize if batch.is_cuda else None
    return _rate(lambda: view(batch), batch.shape[0], seconds, sync)


def best_rates(name: str, images: np.ndarray, batch: torch.Tensor, args, strategies) -> list[float]:
    """Best-of-rounds rates: [reference, fast for each strategy], alternating within a round."""
    best = [0.0] * (1 + len(strategies))
    for _ in range(args.rounds):
        rates = [reference_rate(name, images, args.seconds)]
        rates += [fast_rate(name, batch, args.seconds, s) for s in strategies]
        best = [max(a, b) for a, b in zip(best, rates)]
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--views", nargs="*", default=list(VIEW_NAMES))
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.batch, 32, 32, 3), dtype=np.uint8)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    keep_freed_memory()  # what FastView does on its first CPU call, applied before any timing
    rates = {}
    for name in args.views:
        rates[name] = best_rates(name, images, batch, args, ["auto", "masked"])

    print(f"torch {torch.__version__}, 1 CPU thread (thread CPU time), fast batch {args.batch}, 32x32 uint8, "
          f"best of {args.rounds} rounds of ~{args.seconds:g} s")
    print()
    header = "| view | reference img/s | fast img/s | speed-up | fast masked img/s | speed-up masked |"
    sep = "|---|---:|---:|---:|---:|---:|"
    cuda = torch.cuda.is_available()
    if cuda:
        header += " CUDA b512 img/s | CUDA b4096 img/s |"
        sep += "---:|---:|"
    print(header)
    print(sep)
    for name in args.views:
        ref, fast, masked = rates[name][:3]
        row = f"| {name} | {ref:,.0f} | {fast:,.0f} | {fast / ref:.1f}x | {masked:,.0f} | {masked / ref:.1f}x |"
        if cuda:
            gpu = batch.cuda()
            big = gpu.repeat(max(1, 4096 // args.batch), 1, 1, 1)
            row += f" {fast_rate(name, gpu, args.seconds):,.0f} | {fast_rate(name, big, args.seconds):,.0f} |"
        print(row, flush=True)
    print()
    print("fast = FastView on CPU with its defaults (strategy 'grouped', chunks of 256, 1024 for "
          "the AutoAugment views).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
