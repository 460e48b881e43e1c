"""Training speed of the CPU track's levers, side by side in one run (issue 25).

For each method (default CE, BCCL, PaCo) and each lever, one real epoch of the harness's own
training loop (`Trainer.train_epoch`: views, forward, losses, backward, optimiser, hooks) on a
capped Fashion-MNIST-LT IF-100 subset, timed after a warm-up epoch, in training images per second.
The levers are tried in turn per round and the rounds repeated, so a load change on this shared
machine hits every lever alike; the median over rounds is printed with its ratio to the baseline.

Levers (each one change from the baseline = today's CPU path: fp32, contiguous, reference views,
ResNet-32 on 32x32):
  channels_last   memory_format channels_last (an execution choice)
  fast_views      pipeline fast: the batched tensor views instead of the per-image PIL ones
  bf16            bf16 autocast (oneDNN; a precision deviation)
  compile         torch.compile of the method's networks (CPU inductor)
  native28        fashion_mnist28: the 28x28 images without the 2-pixel padding (a dataset change)
  resnet20/resnet8  a shallower backbone of the CIFAR family (a recipe deviation)
  combined        the levers adopted for fmnist-study together
  combined_compile  those and torch.compile

    python benchmarks/perf/cpu_levers.py --data-root /usr/share/datasets/fashion-mnist \
        [--threads 2] [--rounds 2] [--methods ce bccl paco] [--levers baseline bf16 ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from benchmarks.config import resolve_config  # noqa: E402
from benchmarks.data.datasets import DatasetRequest, build_dataset  # noqa: E402
from benchmarks.train.training import Trainer  # noqa: E402

COMBINED = {"pipeline": "fast", "amp": "bf16", "memory_format": "channels_last", "backbone": "resnet8"}
LEVERS: dict[str, tuple[str, dict]] = {  # name: (dataset, overrides)
    "baseline": ("fashion_mnist", {}),
    "channels_last": ("fashion_mnist", {"memory_format": "channels_last"}),
    "fast_views": ("fashion_mnist", {"pipeline": "fast"}),
    "bf16": ("fashion_mnist", {"amp": "bf16"}),
    "compile": ("fashion_mnist", {"compile": True}),
    "native28": ("fashion_mnist28", {}),
    "resnet20": ("fashion_mnist", {"backbone": "resnet20"}),
    "resnet8": ("fashion_mnist", {"backbone": "resnet8"}),
    "combined": ("fashion_mnist28", COMBINED),
    "combined_compile": ("fashion_mnist28", {**COMBINED, "compile": True}),
}


def epoch_images_per_s(method: str, lever: str, data_cache: dict, data_root: Path, cap: int) -> float:
    dataset, overrides = LEVERS[lever]
    overrides = dict(overrides)
    compile_cpu = overrides.pop("compile", False)
    config = resolve_config(method, dataset, 100, 0, overrides={"epochs": 200, "train_cap_per_class": cap,
                                                                 "test_cap_per_class": 1, **overrides})
    if dataset not in data_cache:
        data_cache[dataset] = build_dataset(dataset, DatasetRequest(100, data_root)).capped(cap, 1)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, data_cache[dataset], Path(tmp), torch.device("cpu"), progress=False)
        if compile_cpu:  # the harness compiles on CUDA only; here the CPU inductor, to measure it
            for module in trainer.method.children():
                module.compile()
        trainer.train_epoch(20)  # warm-up (and compilation)
        start = time.perf_counter()
        seen = trainer.images_seen
        trainer.train_epoch(21)
        return (trainer.images_seen - seen) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--cap", type=int, default=256, help="training images per class (IF 100 keeps fewer in the tail)")
    p.add_argument("--methods", nargs="+", default=["ce", "bccl", "paco"])
    p.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds, cap {args.cap}/class, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    data_cache: dict = {}
    figures: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for method in args.methods:
            for lever in args.levers:
                ips = epoch_images_per_s(method, lever, data_cache, args.data_root, args.cap)
                figures.setdefault((method, lever), []).append(ips)
                print(f"  round {r} {method:5s} {lever:14s} {ips:8.1f} images/s", flush=True)
    print("\n| method | lever | images/s (median) | x baseline |\n|---|---|---:|---:|")
    for method in args.methods:
        base = statistics.median(figures[(method, "baseline")]) if (method, "baseline") in figures else None
        for lever in args.levers:
            med = statistics.median(figures[(method, lever)])
            ratio = f"{med / base:.2f}" if base else "n/a"
            print(f"| {method} | {lever} | {med:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
