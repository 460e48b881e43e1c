"""The GPU speed benchmark: a full 200-epoch BCCL run, then grid throughput with concurrent runs.

Part 1 trains BCCL for `--epochs` (200, the recipe) on synthetic data shaped like CIFAR-10-LT
IF100 (12,406 training images with the real class counts, 10,000 test images), with the fast
pipeline (uint8 data and every view on the device), bf16 autocast and channels-last, evaluating
on the test set after every epoch exactly like a real run. It prints wall time, training images/s
and peak device memory. Goal on one H200: <= 60 s.

Part 2 starts N runs at once (N in `--concurrent`), each a subprocess training one method for
`--grid-epochs` epochs, and measures the aggregate images/s; from it, the time the whole CIFAR
grid (2 datasets x 3 IFs x 4 methods at their recipe epochs, PaCo 400, the others 200) would take
on this device is projected. Goal: <= 15 minutes.

Everything it measures is printed; paste the output into RESULTS.md with the date and machine.

    python benchmarks/perf/gpu_run.py                      # on a CUDA machine (< 8 min on an H200)
    python benchmarks/perf/gpu_run.py --device cpu --epochs 1 --grid-epochs 1 --concurrent 1 --cap 13
                                                            # a functional check anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.config import resolve_config  # noqa: E402
from benchmarks.datasets import DatasetRequest, build_dataset  # noqa: E402
from benchmarks.training import Trainer  # noqa: E402

GRID_CELLS = {"bccl": 6, "ce": 6, "bcl": 6, "paco": 6}  # 2 datasets x 3 IFs each
# Images per epoch of the CIFAR grid, averaged over its 6 cells (C10/C100 x IF 100/50/10).
MEAN_TRAIN_IMAGES = (12406 + 13996 + 20431 + 10847 + 12608 + 19573) / 6


def config_for(method: str, epochs: int, device: torch.device, cap: int, compile_: bool) -> dict:
    return resolve_config(method, "synthetic", 100, 0, overrides={
        "epochs": epochs, "pipeline": "fast", "amp": "bf16" if device.type == "cuda" else "off",
        "train_cap_per_class": cap, "test_cap_per_class": cap, "compile": compile_,
    })


def single_run(method: str, epochs: int, device: torch.device, cap: int, compile_: bool) -> dict:
    data = build_dataset("synthetic", DatasetRequest(imb_factor=100, train_cap_per_class=cap, test_cap_per_class=cap))
    config = config_for(method, epochs, device, cap, compile_)
    with tempfile.TemporaryDirectory() as folder:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        trainer = Trainer(config, data, Path(folder), device, progress=False)
        metrics = trainer.run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
    return {
        "method": method, "epochs": epochs, "train_images": len(data.train_labels),
        "wall_s": wall, "train_s": metrics["train_seconds"],
        "train_images_per_s": metrics["train_images_per_s"],
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "best_top1": metrics["best"]["top1"],
    }


def concurrent_runs(n: int, epochs: int, device: str, cap: int, compile_: bool) -> dict:
    """n subprocesses at once, methods round-robin; returns aggregate images/s."""
    methods = list(GRID_CELLS)
    procs = []
    start = time.perf_counter()
    for i in range(n):
        cmd = [sys.executable, __file__, "--worker", methods[i % len(methods)], "--epochs", str(epochs),
               "--device", device, "--cap", str(cap)] + (["--compile"] if compile_ else [])
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}))
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"worker failed with {proc.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    wall = time.perf_counter() - start
    images = sum(r["train_images"] * r["epochs"] * len(VIEWS_PER_METHOD.get(r["method"], "x")) for r in results)
    return {"n": n, "wall_s": wall, "runs": results,
            "epochs_per_s": sum(r["epochs"] for r in results) / wall,
            "image_views_per_s": images / wall}


# How many views each method pushes through its network (for the aggregate figure only).
VIEWS_PER_METHOD = {"ce": "a", "bccl": "ab", "bcl": "abc", "paco": "ab"}


def project_grid_minutes(per_method_epoch_s: dict[str, float], train_images: int) -> float:
    """Grid time if cells run back to back at the measured per-epoch speed, scaled to real sizes."""
    recipe_epochs = {"bccl": 200, "ce": 200, "bcl": 200, "paco": 400}
    scale = MEAN_TRAIN_IMAGES / train_images
    seconds = sum(GRID_CELLS[m] * recipe_epochs[m] * per_method_epoch_s[m] * scale for m in GRID_CELLS)
    return seconds / 60


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--grid-epochs", type=int, default=5)
    p.add_argument("--concurrent", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--cap", type=int, default=0, help="images per class cap (0 = full CIFAR-10-LT shape)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    device = torch.device(args.device)

    if args.worker:  # one run inside a concurrency measurement
        print(json.dumps(single_run(args.worker, args.epochs, device, args.cap, args.compile)))
        return

    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    r = single_run("bccl", args.epochs, device, args.cap, args.compile)
    print(f"\n## 1. BCCL, {r['epochs']} epochs, synthetic CIFAR-10-LT IF100 ({r['train_images']} train images)")
    print(f"wall {r['wall_s']:.1f} s (training {r['train_s']:.1f} s, the rest evaluation and checkpoints), "
          f"{r['train_images_per_s']:.0f} train images/s (2 views each), peak memory "
          + (f"{r['peak_memory_gib']:.2f} GiB" if r["peak_memory_gib"] is not None else "n/a (cpu)")
          + f"; goal <= 60 s: {'met' if r['wall_s'] <= 60 else 'not met'}")

    print(f"\n## 2. Per-method epoch time ({args.grid_epochs} epochs each, one run at a time)")
    per_epoch = {}
    for method in GRID_CELLS:
        m = single_run(method, args.grid_epochs, device, args.cap, args.compile)
        per_epoch[method] = m["wall_s"] / m["epochs"]
        print(f"{method:5s} {per_epoch[method]:.3f} s/epoch  {m['train_images_per_s']:.0f} train images/s")
    minutes = project_grid_minutes(per_epoch, r["train_images"])
    print(f"projected CIFAR grid, runs back to back: {minutes:.1f} min")

    print(f"\n## 3. Concurrent runs ({args.grid_epochs} epochs each)")
    print("| runs at once | wall s | epochs/s | image-views/s | projected grid min |")
    print("|---|---|---|---|---|")
    base = None
    for n in args.concurrent:
        c = concurrent_runs(n, args.grid_epochs, args.device, args.cap, args.compile)
        base = base or c["epochs_per_s"]
        speedup = c["epochs_per_s"] / base
        print(f"| {n} | {c['wall_s']:.1f} | {c['epochs_per_s']:.2f} | {c['image_views_per_s']:.0f} | "
              f"{minutes / speedup:.1f} |")


if __name__ == "__main__":
    main()
