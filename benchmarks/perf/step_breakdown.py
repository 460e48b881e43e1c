"""Where one training step of each method spends its time on the CPU.

For every registered method at its recipe batch size (128; Balanced Softmax 512) on
CIFAR-100-LT-shaped synthetic data, at the last epoch (so DRW's class weights are on):
building the step's views (reference per-image pipeline vs the fast batched one, same views),
`training_step` (forward and losses), backward, and the optimiser step plus the method's
`after_step` hook. Median of `--repeats` steps after one warm-up step; one thread by default so
that the figures do not depend on what else the machine runs.

    python benchmarks/perf/step_breakdown.py [--threads 1] [--repeats 3] [--methods ce bccl]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.config import resolve_config  # noqa: E402
from benchmarks.data.datasets import DatasetRequest, build_dataset  # noqa: E402
from benchmarks.train.methods import METHODS, build_method  # noqa: E402
from benchmarks.data.views import FastView, reference_transform  # noqa: E402


def ms(fn):
    start = time.perf_counter()
    out = fn()
    return out, 1000 * (time.perf_counter() - start)


def measure(method_name: str, data, repeats: int) -> tuple[int, dict[str, float]]:
    config = resolve_config(method_name, "synthetic100", 100, 0, overrides={"epochs": 200})
    batch = config["batch_size"]
    method = build_method(config, data.num_classes, torch.as_tensor(data.class_counts))
    method.train()
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    names = method.view_names()
    ref = [reference_transform(n, data.mean, data.std) for n in names]
    fast = [FastView(n, data.mean, data.std) for n in names]
    rng = np.random.RandomState(0)
    parts: dict[str, list[float]] = {k: [] for k in ("views_reference", "views_fast", "forward", "backward", "optimizer")}
    for step in range(repeats + 1):
        idx = rng.choice(len(data.train_labels), batch, replace=False)
        images = data.train_images[idx]
        labels = torch.as_tensor(data.train_labels[idx])
        _, t_ref = ms(lambda: [torch.stack([t(img) for img in images]) for t in ref])
        uint8 = torch.as_tensor(images).permute(0, 3, 1, 2).contiguous()
        views, t_fast = ms(lambda: [v(uint8) for v in fast])
        losses, t_fwd = ms(lambda: method.training_step(views, labels, 200 - 1 if method_name != "bccl" else 20, step))
        _, t_bwd = ms(lambda: losses["loss"].backward())

        def opt():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            method.after_step(0, step)

        _, t_opt = ms(opt)
        if step == 0:
            continue  # warm-up
        for key, value in zip(parts, (t_ref, t_fast, t_fwd, t_bwd, t_opt)):
            value_list = parts[key]
            value_list.append(value)
    return batch, {k: statistics.median(v) for k, v in parts.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = build_dataset("synthetic100", DatasetRequest(imb_factor=100))
    methods = args.methods or METHODS.names()
    print(f"CPU step breakdown, torch {torch.__version__}, {args.threads} thread(s), recipe batch, "
          f"C = 100, median of {args.repeats} steps (BCCL at a re-clustering epoch)\n")
    print("| method | batch | views (reference) ms | views (fast) ms | forward ms | backward ms | optimizer ms | "
          "step with fast views ms | views share, reference -> fast |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in methods:
        batch, r = measure(name, data, args.repeats)
        compute = r["forward"] + r["backward"] + r["optimizer"]
        share_ref = r["views_reference"] / (r["views_reference"] + compute)
        share_fast = r["views_fast"] / (r["views_fast"] + compute)
        print(f"| {name} | {batch} | {r['views_reference']:.0f} | {r['views_fast']:.0f} | {r['forward']:.0f} | "
              f"{r['backward']:.0f} | {r['optimizer']:.0f} | {compute + r['views_fast']:.0f} | "
              f"{100 * share_ref:.0f}% -> {100 * share_fast:.0f}% |")


if __name__ == "__main__":
    main()
