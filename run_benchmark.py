#!/usr/bin/env python
"""Run a benchmark grid: every (dataset, IF, method, seed) cell, one run folder each.

    python run_benchmark.py                       # the smoke grid on the offline digits data
    python run_benchmark.py --grid cifar --data-root data --download
    python run_benchmark.py --grid cifar --tiny   # tiny subsets: a minute-long end-to-end check
    python run_benchmark.py --grid cifar10 --methods bccl --seeds 0 1 2 --set lr=0.15 batch_size=128

Finished runs are skipped; interrupted ones resume from their checkpoint. See README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.cli import main_guard
from benchmarks.config import parse_set_arguments
from benchmarks.grid import GridOptions, grid_names, plan, preflight, run_grid, summary_table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default="smoke", help=f"grid in configs/grids/ (known: {', '.join(grid_names())})")
    p.add_argument("--datasets", nargs="+", help="only these datasets of the grid")
    p.add_argument("--methods", nargs="+", help="only these methods")
    p.add_argument("--imb-factors", nargs="+", type=float, help="imbalance factors (>= 1)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds")
    p.add_argument("--epochs", type=int, help="override every run's epochs")
    p.add_argument("--tiny", action="store_true",
                   help="tiny subsets for a quick end-to-end check: <= 20 train and 10 test images per "
                        "class, 2 epochs unless --epochs (results go to <dataset>-tiny/)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="config overrides, validated like YAML keys (e.g. lr=0.15 batch_size=128)")
    p.add_argument("--data-root", type=Path, default=Path("data"), help="where the datasets live (default: data)")
    p.add_argument("--download", action="store_true", help="download missing datasets (CIFAR) into --data-root")
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="where run folders go (default: results)")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda or cuda:N")
    p.add_argument("--tensorboard", action="store_true", help="write TensorBoard event files into each run folder")
    p.add_argument("--dry-run", action="store_true", help="list every run and its folder, then stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def _integral(values):
    return None if values is None else [int(v) if float(v).is_integer() else v for v in values]


@main_guard
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = GridOptions(
        grid=args.grid, datasets=args.datasets, methods=args.methods,
        imb_factors=_integral(args.imb_factors), seeds=args.seeds, epochs=args.epochs, tiny=args.tiny,
        overrides=parse_set_arguments(args.overrides), data_root=args.data_root, download=args.download,
        results_dir=args.results_dir, device=args.device, tensorboard=args.tensorboard,
        progress=not args.no_progress,
    )
    runs = plan(options)
    if args.dry_run:
        for run in runs:
            print(f"{run.label:45s} {run.folder}")
        print(f"{len(runs)} runs")
        return 0
    from benchmarks.training import resolve_device

    device = resolve_device(options.device)
    preflight(runs, options)
    print(f"grid {options.grid}: {len(runs)} runs on {device}, results in {options.results_dir}")
    outcomes = run_grid(runs, options, device)
    print()
    print(summary_table(outcomes))
    failed = [o for o in outcomes if o.status.startswith("failed")]
    if failed:
        print(f"\n{len(failed)} of {len(outcomes)} runs failed; see their status and error.log", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
