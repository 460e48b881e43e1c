"""Run a benchmark grid: every (dataset, IF, method, seed) cell, one run folder each.

The same command as `python run_benchmark.py` (a checkout), `ltbench run` (any install) and
`python -m benchmarks.commands.run` (how `--jobs` and SLURM workers are started).

    python run_benchmark.py                       # the smoke grid on the offline digits data
    python run_benchmark.py --grid cifar --data-root data --download
    python run_benchmark.py --grid cifar --tiny   # tiny subsets: a minute-long end-to-end check
    python run_benchmark.py --grid cifar10 --methods bccl --seeds 0 1 2 --set lr=0.15 batch_size=128
    python run_benchmark.py --grid cifar10 --methods bccl --sweep eta=0,0.05,0.2 --sweep centroids_per_class=1,10
    python run_benchmark.py --grid bccl-ablation --data-root data   # BCCL's one-at-a-time ablations
    python run_benchmark.py --grid cifar --jobs 4                 # 4 worker processes, GPUs round-robin
    python run_benchmark.py --grid cifar --launcher slurm --slurm-partition gpu --slurm-time 600
    python run_benchmark.py --grid imagenet --data-root /data --split-dir /data/splits/ImageNet_LT
    torchrun --nproc_per_node 4 run_benchmark.py --grid imagenet --data-root /data   # one run on 4 GPUs
    python run_benchmark.py --grid cifar100 --methods bccl --imb-factors 100 --eval-checkpoint ckpt.pth.tar

A run of the paper recipe lives in <dataset>/if<IF>/<method>/seed<S>/, any other configuration
(--set, --sweep, a grid's overrides or sweeps) in <dataset>/if<IF>/<method>@<variant>/seed<S>/.
Finished runs are skipped; interrupted ones resume from their checkpoint; a cell another runner is
training is skipped. Exit status: 0 all good, 1 some runs failed, 2 bad input. Every option: docs/cli.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import LTBenchError
from benchmarks.commands.cli import ArgumentParser, main_guard
from benchmarks.config import parse_set_arguments
from benchmarks.run.grid import (
    DataCache, GridOptions, count_outcomes, datasets_outside_grid, finished, grid_names, load_grid, no_recipe_in_grid,
    plan, preflight, run_grid, summary_table,
)
from benchmarks.store.logs import LOGGER
from benchmarks.run.launchers import LAUNCHERS, LocalParallel, Slurm, SlurmOptions, write_worker_outcome
from benchmarks.run.replay import DEFAULT_REPLAY_DIR, replay_runs
from benchmarks.run.variants import check_variant_name, parse_sweep_arguments


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    # No abbreviations: `--epoch 3` must be an error, not silently `--epochs 3` (or a grid started).
    p = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--grid", default="smoke", help=f"grid in configs/grids/ (known: {', '.join(grid_names())})")
    # List options accumulate: `--set a=1 --set b=2` keeps both (argparse's default would keep the last).
    p.add_argument("--datasets", nargs="+", action="extend",
                   help="only these of the grid's datasets; a dataset the grid does not list is run with the grid's "
                        "IFs, methods, seeds and overrides, and a note says so")
    p.add_argument("--methods", nargs="+", action="extend", help="only these methods")
    p.add_argument("--imb-factors", nargs="+", action="extend", type=float, help="imbalance factors (>= 1)")
    p.add_argument("--seeds", nargs="+", action="extend", type=int, help="seeds")
    p.add_argument("--epochs", type=int, help="override every run's epochs")
    p.add_argument("--tiny", action="store_true",
                   help="tiny subsets for a quick end-to-end check: <= 20 train and 10 test images per "
                        "class, 2 epochs unless --epochs (results go to <dataset>-tiny/)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="config overrides, validated like YAML keys (e.g. lr=0.15 batch_size=128); repeatable "
                        "(every --set is kept; a key set twice takes its last value)")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="run one variant per value (values written as for --set); repeat for the cartesian "
                        "product; replaces the grid file's sweeps. Each variant gets its own folder "
                        "<method>@<variant>/")
    p.add_argument("--name", help="label of this configuration's variant folder (<method>@NAME/) instead of "
                                  "the one derived from its recipe deviations")
    p.add_argument("--data-root", type=Path, default=Path("data"), help="where the datasets live (default: data)")
    p.add_argument("--download", action="store_true", help="download missing datasets (CIFAR) into --data-root")
    p.add_argument("--split-dir", type=Path,
                   help="imagenet_lt / inat2018: the folder holding the split files (default: <data-root>/<dataset>/)")
    p.add_argument("--eval-checkpoint", type=Path, metavar="PATH",
                   help="evaluate this checkpoint instead of training (ltbench's checkpoint.pt or the BCCL/BCL/PaCo "
                        "release format) on the one cell named by --datasets/--methods/--imb-factors; results in "
                        "<dataset>/if<IF>/<method>/eval-<checkpoint name>/ (eval-<name>-<sha256 prefix>/ for "
                        "another file of the same name)")
    p.add_argument("--unsafe-load", action="store_true",
                   help="--eval-checkpoint: unpickle the file fully (weights_only=False) when it holds types outside "
                        "the release formats' allow-list; only for files you trust (unpickling can run code)")
    p.add_argument("--results-dir", type=Path,
                   help="where run folders go (default: results; with --replay: replays)")
    p.add_argument("--replay", type=Path, metavar="RUN_FOLDER",
                   help="train a run folder's config.yaml again, as it is, into --results-dir (default replays/) "
                        "under the same <dataset>/if<IF>/<method>/seed<S> path; no grid options apply")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda or cuda:N")
    p.add_argument("--tensorboard", action="store_true", help="write TensorBoard event files into each run folder")
    p.add_argument("--train-stage1", action="store_true",
                   help="two-stage methods (crt, lws, tau_norm, la_posthoc): train the stage-1 run they start from "
                        "(ce of the same cell and seed) when it is missing and not in --methods; without it such a "
                        "grid is refused")
    p.add_argument("--dry-run", action="store_true",
                   help="list every run and its folder (and the stage-1 run a two-stage run waits for), then stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (the per-epoch lines go to the console instead)")
    p.add_argument("--log-interval", type=int, default=0, metavar="N",
                   help="also log a line every N training steps (loss, images/s) to the console and the run's "
                        "train.log: progress within long epochs (default 0: per epoch only)")
    p.add_argument("--jobs", type=int, default=1,
                   help="run cells in N worker processes, spread round-robin over the visible GPUs (default 1: "
                        "one after the other in this process)")
    p.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local (this machine) or slurm (one job per cell through submitit; "
                        "pip install 'ltbench[slurm]')")
    s = p.add_argument_group("SLURM (--launcher slurm)")
    s.add_argument("--slurm-partition", help="partition to submit to (default: the cluster's)")
    s.add_argument("--slurm-time", type=int, default=1440, metavar="MINUTES",
                   help="time limit per job; a job that reaches it is requeued and resumes (default 1440)")
    s.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per job (default 1)")
    s.add_argument("--slurm-cpus", type=int, default=8, help="CPUs per job (default 8)")
    s.add_argument("--slurm-folder", type=Path, default=Path("slurm-logs"),
                   help="submitit's folder for job scripts and logs, named by job id (default slurm-logs)")
    s.add_argument("--slurm-cluster", choices=("slurm", "local"), default="slurm",
                   help="local: run the jobs as local processes through submitit's local executor (testing)")
    s.add_argument("--no-wait", action="store_true",
                   help="submit and exit; rerun the same command later to collect (finished cells are skipped)")
    # A worker of --jobs / --launcher slurm: only the cell in this run folder, outcome to a file.
    p.add_argument("--cell", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--worker-outcome", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _integral(values):
    return None if values is None else [int(v) if float(v).is_integer() else v for v in values]


def select_cell(runs, folder: Path):
    wanted = Path(folder).resolve()
    chosen = [run for run in runs if run.folder.resolve() == wanted]
    if not chosen:
        raise LTBenchError(f"--cell {folder}: no run of this grid has that folder (was the grid changed?)")
    return chosen


def make_launcher(args: argparse.Namespace, argv: list[str], options: GridOptions, cache: DataCache):
    """Check the launch options and return (what runs the cells, a phrase for the header line)."""
    if args.jobs < 1:
        raise LTBenchError(f"--jobs must be >= 1, got {args.jobs}")
    from benchmarks.train import distributed
    from benchmarks.train.training import parse_device, resolve_device

    parse_device(options.device)  # the name, here; whether CUDA is present, where the runs happen

    if distributed.launched_by_torchrun():  # one run across the torchrun processes (benchmarks/train/distributed.py)
        if args.jobs != 1 or args.launcher != "local":
            raise LTBenchError("under torchrun every process works on the same run: --jobs and --launcher slurm "
                               "do not combine with it")
        device = distributed.init(options.device)
        log = LOGGER.info if distributed.is_main() else (lambda *a, **k: None)
        where = f"on {device.type}, {distributed.world_size()} processes (torchrun)"
        return (lambda runs: run_grid(runs, options, device, log=log, cache=cache)), where
    if args.launcher == "slurm":
        if args.jobs != 1:
            raise LTBenchError("--jobs is for --launcher local; with slurm every cell is its own job")
        slurm = Slurm(SlurmOptions(
            partition=args.slurm_partition, time_min=args.slurm_time, gpus=args.slurm_gpus, cpus=args.slurm_cpus,
            folder=args.slurm_folder, cluster=args.slurm_cluster, wait=not args.no_wait), argv)
        where = f"as {'SLURM' if args.slurm_cluster == 'slurm' else 'local submitit'} jobs"
        return (lambda runs: slurm.run(runs, options)), where
    device = resolve_device(options.device)
    if args.jobs == 1:
        return (lambda runs: run_grid(runs, options, device, cache=cache)), f"on {device}"
    parallel = LocalParallel(args.jobs, argv, options.device)
    return (lambda runs: parallel.run(runs, options)), f"on {device.type}, {args.jobs} worker processes"


def grid_options(args: argparse.Namespace) -> GridOptions:
    """The parsed command line as the grid planner's options (bad --set/--sweep/--name raise)."""
    return GridOptions(
        grid=args.grid, datasets=args.datasets, methods=args.methods,
        imb_factors=_integral(args.imb_factors), seeds=args.seeds, epochs=args.epochs, tiny=args.tiny,
        overrides=parse_set_arguments(args.overrides), data_root=args.data_root, download=args.download,
        split_dir=args.split_dir,
        sweeps=parse_sweep_arguments(args.sweep) or None,
        name=None if args.name is None else check_variant_name(args.name),
        results_dir=args.results_dir or (DEFAULT_REPLAY_DIR if args.replay else Path("results")),
        device=args.device, tensorboard=args.tensorboard,
        progress=not args.no_progress, log_interval=args.log_interval, train_stage1=args.train_stage1,
    )


# What a replay takes from the command line: where and how to run, never what to compute.
REPLAY_REFUSES = ("--grid", "--datasets", "--methods", "--imb-factors", "--seeds", "--epochs", "--tiny", "--set",
                  "--sweep", "--name", "--eval-checkpoint", "--train-stage1", "--cell", "--jobs", "--launcher")


def _replay(args: argparse.Namespace, argv: list[str], options: GridOptions):
    given = [flag for flag in REPLAY_REFUSES if any(a == flag or a.startswith(flag + "=") for a in argv)]
    if given:
        raise LTBenchError(f"--replay runs the folder's config.yaml as it is: {', '.join(given)} do not apply "
                           "(to change a key, run the grid with --set instead)")
    return replay_runs(args.replay, options.results_dir)


@main_guard
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, prog)
    if args.unsafe_load and args.eval_checkpoint is None:
        raise LTBenchError("--unsafe-load applies to --eval-checkpoint only")
    if args.log_interval < 0:
        raise LTBenchError(f"--log-interval must be >= 0 (0: per epoch only), got {args.log_interval}")
    options = grid_options(args)
    if args.replay is not None:
        runs, skipped = _replay(args, argv, options), []
    else:
        runs = plan(options)
        skipped = no_recipe_in_grid(options)
    for method, dataset in skipped:  # listed, not silently absent (docs/methods/<method>.md says why)
        (print if args.dry_run else LOGGER.info)(f"no recipe: {method} on {dataset} (not run)")
    if args.cell is not None:
        runs = select_cell(runs, args.cell)
    outside = datasets_outside_grid(options) if args.cell is None else []
    if outside:
        LOGGER.info(f"note: grid {options.grid} does not list {', '.join(outside)} (its datasets: "
                    f"{', '.join(map(str, load_grid(options.grid)['datasets']))}); running "
                    f"{'it' if len(outside) == 1 else 'them'} with the grid's IFs, methods, seeds and overrides")
    if args.dry_run:
        for run in runs:
            print(f"{run.label:45s} {run.folder}")
            if run.stage1 is not None:
                state = "finished" if finished(run.stage1) else "trained first, in this grid"
                print(f"{'':45s}   after stage 1 {run.stage1.label} ({state}): {run.stage1.folder}")
        print(f"{len(runs)} runs")
        return 0
    if args.eval_checkpoint is not None:
        from benchmarks.run.checkpoint_eval import evaluate_checkpoint

        return evaluate_checkpoint(args.eval_checkpoint, runs, options, unsafe_load=args.unsafe_load)
    cache = DataCache(options)  # the datasets preflight builds are the ones the cells train on
    launch, where = make_launcher(args, argv, options, cache)
    preflight(runs, options, cache)
    from benchmarks.train import distributed

    if not distributed.is_main():  # torchrun: rank 0 reports, the others only compute
        launch(runs)
        return 0
    what = f"replay of {args.replay}" if args.replay is not None else f"grid {options.grid}"
    LOGGER.info(f"{what}: {len(runs)} runs {where}, results in {options.results_dir}")
    outcomes = launch(runs)
    if args.worker_outcome is not None:
        write_worker_outcome(args.worker_outcome, outcomes[0])
    counts = count_outcomes(outcomes)
    print()
    print(summary_table(outcomes))
    print("\n" + ", ".join(f"{name} {n}" for name, n in counts.items()))
    if counts["locked elsewhere"]:
        print(f"{counts['locked elsewhere']} runs are being trained by another runner; rerun later to collect them")
    if counts["failed"]:
        print(f"\n{counts['failed']} of {len(outcomes)} runs failed; see their status and error.log", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
