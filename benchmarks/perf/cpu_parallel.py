"""Threads per run against runs in parallel on this 2-core CPU (issue 25): which way should a grid
use the cores?

(a) one run with `--threads` 2, alone; (b) two runs with 1 thread each, side by side (two
processes started together). Each run is `cpu_levers.py --levers combined` (the fmnist-study
path: ResNet-8, bf16, channels_last, fast views, 28x28) for one method; the figure is the machine's
total training images/s: (a) the run's own, (b) the sum of both.

    python benchmarks/perf/cpu_parallel.py [--methods ce bccl] [--cap 64]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

LEVERS = Path(__file__).with_name("cpu_levers.py")


def start(method: str, threads: int, cap: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(LEVERS), "--threads", str(threads), "--rounds", "1", "--cap", str(cap),
                             "--methods", method, "--levers", "combined"], stdout=subprocess.PIPE, text=True,
                            env={"OMP_NUM_THREADS": str(threads), **{k: v for k, v in __import__("os").environ.items()
                                                                     if k != "OMP_NUM_THREADS"}})


def images_per_s(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    found = re.findall(r"combined\s+([0-9.]+) images/s", out)
    if not found:
        raise RuntimeError(f"no figure in the output of cpu_levers.py:\n{out}")
    return float(found[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["ce", "bccl"])
    p.add_argument("--cap", type=int, default=64)
    args = p.parse_args()
    print("| method | 1 run x 2 threads (images/s) | 2 runs x 1 thread (total images/s) | ratio |\n|---|---:|---:|---:|")
    for method in args.methods:
        one = images_per_s(start(method, 2, args.cap))
        pair = [start(method, 1, args.cap) for _ in range(2)]
        two = sum(images_per_s(proc) for proc in pair)
        print(f"| {method} | {one:.0f} | {two:.0f} | {two / one:.2f} |", flush=True)


if __name__ == "__main__":
    main()
