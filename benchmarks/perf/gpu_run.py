"""The GPU speed benchmark: per-method epoch times, concurrent runs, and a full 200-epoch BCCL run.

All on synthetic data shaped like CIFAR-10-LT IF100 (12,406 training images with the real class
counts, 10,000 test images), with the fast pipeline (uint8 data and every view on the device),
channels-last, each method at its release precision (`amp: auto`: BCCL fp16 autocast with loss
scaling, the others float32 with PyTorch's default TF32 convolutions; `--amp` changes it for
parts 2 and 3), evaluating on the test set after every epoch like a real run.

1. Per-method epoch time: each method alone for `--grid-epochs` epochs (wall time of the run
   divided by its epochs, first-epoch warm-up included), and from it the time the whole CIFAR
   grid (2 datasets x 3 IFs x 4 methods at their recipe epochs, PaCo 400, the others 200) takes
   with the runs back to back, scaled to each cell's training-set size.
1b. Precision: the same run of each method again under bf16 autocast (the speed option, a recorded
   deviation): epoch time and best top-1 against part 1's release-precision run, one run each way
   (the top-1 of a few epochs on synthetic data says whether training broke, not which is better).
2. Concurrent runs: N subprocesses at once (N in `--concurrent`), methods round-robin, each
   training `--grid-epochs` epochs. Speed-up = the work done (sum over runs of epochs x that
   method's solo epoch time from part 1) / the window from the first run's training start to
   the last run's end (process start-up, which overlaps, is outside the window). Projected grid
   time = part 1's projection / speed-up. Goal: <= 15 minutes.
3. BCCL for `--epochs` (200, the recipe): wall time, training images/s, peak device memory.
   Goal on one H200: <= 60 s. If part 1's BCCL epoch time says the run would not fit in what is
   left of `--budget-s`, it trains as many epochs as fit and prints the projection for all of
   them, marked as projected.

Parts run in this order so that a cut-off run still leaves the short measurements. Every line is
flushed as it is printed, and with `--json PATH` every part's figures are written there as soon
as they exist. Paste the output into RESULTS.md with the date and machine.

    python benchmarks/perf/gpu_run.py --json $OUT/gpu_run.json        # CUDA (about 6 min on an H200)
    python benchmarks/perf/gpu_run.py --device cpu --epochs 1 --grid-epochs 1 --concurrent 1 2 --cap 13
                                                                       # a functional check anywhere
"""

from __future__ import annotations

import argparse
import functools
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
from benchmarks.data.datasets import DatasetRequest, build_dataset  # noqa: E402
from benchmarks.run.launchers import _die_with_parent  # noqa: E402
from benchmarks.train.training import Trainer  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001  (a cut-off run keeps what it printed)

GRID_CELLS = {"bccl": 6, "ce": 6, "bcl": 6, "paco": 6}  # 2 datasets x 3 IFs each
RECIPE_EPOCHS = {"bccl": 200, "ce": 200, "bcl": 200, "paco": 400}
# Images per epoch of the CIFAR grid, averaged over its 6 cells (C10/C100 x IF 100/50/10).
MEAN_TRAIN_IMAGES = (12406 + 13996 + 20431 + 10847 + 12608 + 19573) / 6


def config_for(method: str, epochs: int, cap: int, compile_: bool, amp: str = "auto") -> dict:
    return resolve_config(method, "synthetic", 100, 0, overrides={
        "epochs": epochs, "pipeline": "fast", "amp": amp,
        "train_cap_per_class": cap, "test_cap_per_class": cap, "compile": compile_,
    })


def single_run(method: str, epochs: int, device: torch.device, cap: int, compile_: bool, amp: str = "auto") -> dict:
    """One run; `run_start` / `run_end` are wall-clock stamps around the training loop itself."""
    data = build_dataset("synthetic", DatasetRequest(imb_factor=100, train_cap_per_class=cap, test_cap_per_class=cap))
    config = config_for(method, epochs, cap, compile_, amp)
    with tempfile.TemporaryDirectory() as folder:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        trainer = Trainer(config, data, Path(folder), device, progress=False)
        run_start = time.time()
        metrics = trainer.run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        run_end = time.time()
        wall = time.perf_counter() - start
    return {
        "method": method, "epochs": epochs, "train_images": len(data.train_labels),
        "precision": metrics["precision"]["run"], "loss_scale": trainer.scaler.get_scale() if trainer.scaler.is_enabled() else None,
        "wall_s": wall, "run_s": run_end - run_start, "run_start": run_start, "run_end": run_end,
        "train_s": metrics["train_seconds"], "train_images_per_s": metrics["train_images_per_s"],
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "best_top1": metrics["best"]["top1"],
    }


def concurrent_runs(n: int, epochs: int, device: str, cap: int, compile_: bool, amp: str = "auto") -> dict:
    """n worker subprocesses at once, methods round-robin, CPU threads shared out; a failed
    worker is reported (its stderr tail) and the others are stopped."""
    methods = list(GRID_CELLS)
    threads = max(1, (os.cpu_count() or 1) // n)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
    procs = []
    try:
        for i in range(n):
            cmd = [sys.executable, __file__, "--worker", methods[i % len(methods)], "--epochs", str(epochs),
                   "--device", device, "--cap", str(cap), "--amp", amp] + (["--compile"] if compile_ else [])
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                          preexec_fn=_die_with_parent()))
        results = []
        for proc in procs:
            out, err = proc.communicate()
            if proc.returncode != 0:
                return {"n": n, "failed": f"worker exit {proc.returncode}: {err.strip()[-400:]}"}
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    window = max(r["run_end"] for r in results) - min(r["run_start"] for r in results)
    return {"n": n, "window_s": window, "runs": results}


def project_grid_minutes(per_method_epoch_s: dict[str, float], train_images: int) -> float:
    """Grid time if cells run back to back at the measured per-epoch speed, scaled to real sizes."""
    scale = MEAN_TRAIN_IMAGES / train_images
    seconds = sum(GRID_CELLS[m] * RECIPE_EPOCHS[m] * per_method_epoch_s[m] * scale for m in GRID_CELLS)
    return seconds / 60


def work_speedup(concurrent: dict, per_epoch: dict[str, float]) -> float:
    """Solo-equivalent seconds of work done / the window in which it was done."""
    work = sum(r["epochs"] * per_epoch[r["method"]] for r in concurrent["runs"])
    return work / concurrent["window_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--epochs", type=int, default=200, help="epochs of the BCCL run (part 3)")
    p.add_argument("--grid-epochs", type=int, default=4, help="epochs of each run in parts 1 and 2")
    p.add_argument("--concurrent", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--cap", type=int, default=0, help="images per class cap (0 = full CIFAR-10-LT shape)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks")
    p.add_argument("--amp", default="auto", help="precision of parts 2 and 3 (auto: each method's release precision)")
    p.add_argument("--skip-precision", action="store_true", help="leave out part 1b (the bf16 runs)")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="wall seconds for the whole script; part 3 trains fewer epochs (and projects) if needed")
    p.add_argument("--json", type=Path, help="write every figure here as soon as it is measured")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    device = torch.device(args.device)

    if args.worker:  # one run inside a concurrency measurement
        print(json.dumps(single_run(args.worker, args.epochs, device, args.cap, args.compile, args.amp)))
        return

    started = time.perf_counter()
    record: dict = {"torch": torch.__version__, "device": str(device), "args": {k: str(v) for k, v in vars(args).items()}}

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(record, indent=1))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {device} ({name})")
    record["device_name"] = name

    print(f"\n## 1. Per-method epoch time ({args.grid_epochs} epochs each, one run at a time)")
    per_epoch, solo = {}, {}
    for method in GRID_CELLS:
        m = single_run(method, args.grid_epochs, device, args.cap, args.compile)
        solo[method] = m
        per_epoch[method] = m["run_s"] / m["epochs"]
        memory = f"{m['peak_memory_gib']:.2f} GiB" if m["peak_memory_gib"] is not None else "n/a"
        print(f"{method:5s} {per_epoch[method]:.3f} s/epoch (train + eval) in {m['precision']}, "
              f"{m['train_images_per_s']:.0f} train images/s, peak memory {memory}, process {m['wall_s']:.1f} s")
        record["solo"] = solo
        save()
    train_images = solo["bccl"]["train_images"]
    minutes = project_grid_minutes(per_epoch, train_images)
    record["grid_minutes_back_to_back"] = minutes
    print(f"projected CIFAR grid, runs back to back: {minutes:.1f} min")
    save()

    if not args.skip_precision:
        print(f"\n## 1b. Release precision vs bf16 ({args.grid_epochs} epochs each, one run each way)")
        print("| method | release: precision, s/epoch, best top-1, final loss scale | bf16: s/epoch, best top-1 | bf16 speed-up |")
        print("|---|---|---|---|")
        record["bf16"] = {}
        for method in GRID_CELLS:
            b = single_run(method, args.grid_epochs, device, args.cap, args.compile, "bf16")
            record["bf16"][method] = b
            save()
            r, b_epoch = solo[method], b["run_s"] / b["epochs"]
            scale = "—" if r["loss_scale"] is None else f"{r['loss_scale']:.0f}"
            print(f"| {method} | {r['precision']}, {per_epoch[method]:.3f}, {r['best_top1']:.2f}, {scale} | "
                  f"{b_epoch:.3f}, {b['best_top1']:.2f} | {per_epoch[method] / b_epoch:.2f}x |")

    print(f"\n## 2. Concurrent runs ({args.grid_epochs} epochs each, methods round-robin)")
    print("| runs at once | window s | speed-up (work / window) | projected grid min | per run: method, train images/s, peak GiB |")
    print("|---|---|---|---|---|")
    record["concurrent"] = []
    for n in args.concurrent:
        c = concurrent_runs(n, args.grid_epochs, args.device, args.cap, args.compile, args.amp)
        record["concurrent"].append(c)
        save()
        if "failed" in c:
            print(f"| {n} | failed: {c['failed']} | | | |")
            continue
        speedup = work_speedup(c, per_epoch)
        c["speedup"], c["grid_minutes"] = speedup, minutes / speedup
        runs = "; ".join(f"{r['method']} {r['train_images_per_s']:.0f} "
                         + (f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] is not None else "n/a")
                         for r in c["runs"])
        print(f"| {n} | {c['window_s']:.1f} | {speedup:.2f} | {minutes / speedup:.1f} | {runs} |")
        save()
    measured = [c["grid_minutes"] for c in record["concurrent"] if "grid_minutes" in c] + [minutes]
    print(f"best projected CIFAR grid: {min(measured):.1f} min; goal <= 15 min: "
          + ("met" if min(measured) <= 15 else "not met") + ("" if args.cap == 0 else " (capped data: not comparable)"))

    left = args.budget_s - (time.perf_counter() - started)
    fits = int(left / (per_epoch["bccl"] * 1.15)) - 1  # part 1's BCCL epoch, with a margin
    epochs = max(1, min(args.epochs, fits))
    r = single_run("bccl", epochs, device, args.cap, args.compile, args.amp)
    record["bccl_run"] = r
    projected = r["wall_s"] + (args.epochs - epochs) * r["run_s"] / epochs
    record["bccl_run"]["projected_wall_s"] = projected
    save()
    what = f"{epochs} epochs" if epochs == args.epochs else f"{epochs} of {args.epochs} epochs (time budget)"
    print(f"\n## 3. BCCL, {what}, synthetic CIFAR-10-LT IF100 ({r['train_images']} train images)")
    print(f"wall {r['wall_s']:.1f} s (training {r['train_s']:.1f} s, the rest evaluation, checkpoints and set-up), "
          f"{r['train_images_per_s']:.0f} train images/s (2 views each), peak memory "
          + (f"{r['peak_memory_gib']:.2f} GiB" if r["peak_memory_gib"] is not None else "n/a (cpu)"))
    label = "measured" if epochs == args.epochs else "projected"
    full = args.epochs == 200 and args.cap == 0
    goal = f"goal <= 60 s: {'met' if projected <= 60 else 'not met'}" if full else "(the goal is for 200 epochs, no cap)"
    print(f"{args.epochs} epochs: {projected:.1f} s ({label}); {goal}")
    print(f"\nscript wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
