"""Kill the grid runner at random moments, rerun it, and check that nothing was lost or duplicated.

1. Runs a small grid once, uninterrupted, into `<work>/reference` (the expected result).
2. Runs the same grid into `<work>/killed`, killing the runner with SIGKILL at a random moment,
   `--kills` times. Moments alternate between anywhere after the start (startup included) and
   somewhere in training (a random delay after the attempt's first checkpoint write, so that the
   grid moves on between kills); ways of dying alternate in pairs between the whole process group
   at once (runner and workers, like a node crash or preemption) and the runner alone (its workers
   must then die with it, by PDEATHSIG, and release their cells' locks).
3. Kills at the moments between consecutive writes of a cell's last epoch (`--write-kills`, on
   by default): the runner (`--jobs 1`, so that the cells train in the runner itself) is started
   with a hook that SIGKILLs it right after one chosen write: the last epoch's history.csv (its
   checkpoint not yet written), the last epoch's checkpoint.pt (metrics.json not yet written), or
   metrics.json (status not yet `done`). The three moments are taken in turn, each once per cell.
4. Reruns it to completion and checks, for every cell: exactly one run folder (the set of run
   folders equals the grid's plan, nothing else), status done and a whole finished run (the
   runner's `done_problem` test), no stray temporary files, the lock free, history.csv with
   each epoch exactly once and in order, and metrics.json and history.csv equal to the
   uninterrupted grid's, except wall-clock fields.

Prints the kills, the time lost (killed sequence minus uninterrupted wall time), the worker starts
per cell (from each cell's worker.log) and the verdict; exits 1 if any check fails.

Run: python benchmarks/perf/kill_resume.py [--kills 10] [--jobs 2] [--seed 0] [--epochs 3] [--seeds 2]
     [--methods M ...] [--no-write-kills] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.store.results import RunLock, RunLocked, done_problem, find_runs  # noqa: E402

TIMING = {"train_seconds", "train_images_per_s", "images_per_s"}
WRITE_MOMENTS = ("history.csv", "checkpoint.pt", "metrics.json")  # kill right after this write of the last epoch


def child_killed_after_write(moment: str, epochs: int, argv: list[str]) -> int:
    """The runner with a hook: SIGKILL this process right after the last epoch's write `moment`.

    history.csv: a history holding all `epochs` rows (its checkpoint is written next);
    checkpoint.pt: the first checkpoint written after such a history (metrics.json next);
    metrics.json: any (status `done` next). Patching the one function every run-folder write goes
    through (`results.atomic_write_bytes`) keeps the hook out of the runner's code.
    """
    import benchmarks.store.results as results

    original = results.atomic_write_bytes
    seen = {"full_history": False}

    def write(path, data):
        original(path, data)
        name = Path(path).name
        last_history = name == "history.csv" and len(data.decode().splitlines()) == epochs + 1
        if (moment == "history.csv" and last_history) or moment == "metrics.json" == name or (
                moment == "checkpoint.pt" == name and seen["full_history"]):
            os.kill(os.getpid(), signal.SIGKILL)
        seen["full_history"] |= last_history

    results.atomic_write_bytes = write
    import run_benchmark

    return run_benchmark.main(argv)


def grid_args(epochs: int, jobs: int, seeds: int, methods: list[str] | None = None) -> list[str]:
    """The smoke grid's every method (or `methods`) at IF 10, tiny subsets: method state (BCCL
    queues and centroids (re-clustered in epoch 2 by the smoke grid), PaCo's momentum encoder and
    queue) is resumed too."""
    return ["--grid", "smoke", *(["--methods", *methods] if methods else []), "--imb-factors", "10",
            "--seeds", *map(str, range(seeds)),
            "--tiny", "--epochs", str(epochs),
            "--set", "train_cap_per_class=12", "test_cap_per_class=5", "batch_size=16",
            "--jobs", str(jobs), "--no-progress"]


def start(args: list[str], results: Path, log, kill_after_write: tuple[str, int] | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "run_benchmark.py")]
    if kill_after_write is not None:
        moment, epochs = kill_after_write
        command = [sys.executable, str(Path(__file__).resolve()), "--child-kill-after", moment,
                   "--child-epochs", str(epochs), "--"]
    return subprocess.Popen([*command, *args, "--results-dir", str(results)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def with_jobs_1(args: list[str]) -> list[str]:
    i = args.index("--jobs")
    return args[:i + 1] + ["1"] + args[i + 2:]


def write_kills(grid: list[str], killed: Path, expected: set[Path], epochs: int, log) -> list[tuple[str, str]]:
    """Kill the runner between consecutive writes of the last epoch: each moment once per unfinished
    cell, in turn; returns (moment, cell) of every kill that happened."""
    kills = []
    grid = with_jobs_1(grid)
    for _ in range(len(expected)):
        for moment in WRITE_MOMENTS:
            before = {f: done_problem(f) is None for f in expected}
            if all(before.values()):
                return kills
            runner = start(grid, killed, log, kill_after_write=(moment, epochs))
            code = runner.wait()
            group_gone(runner.pid, timeout=10)
            if code != -signal.SIGKILL:
                print(f"  the runner was not killed after {moment} (exit {code})")
                continue
            # the cell that was killed: the one whose run files were written last
            cell = max(sorted(expected), key=last_run_write)
            name = str(cell.relative_to(killed.resolve())) if cell else "?"
            kills.append((moment, name))
            print(f"  write kill {len(kills):2d}: after the last epoch's {moment:13s} of {name}", flush=True)
    return kills


def group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def planned_folders(args: list[str], results: Path) -> set[Path]:
    out = subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), *args, "--results-dir", str(results),
                          "--dry-run"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {Path(line.split()[-1]).resolve() for line in out.splitlines()[:-1]}


def last_checkpoint_write(results: Path) -> float:
    """When a checkpoint (or, for a cell whose checkpoint was already complete, metrics.json) was
    last written: the sign that an attempt is past its startup and training."""
    times = []
    for name in ("checkpoint.pt", "metrics.json"):
        for path in results.glob(f"*/if*/*/seed*/{name}"):
            try:
                times.append(path.stat().st_mtime)
            except FileNotFoundError:
                pass
    return max(times, default=0.0)


def last_run_write(folder: Path) -> float:
    """When a run file of `folder` was last written (logs aside: every start appends to them)."""
    times = [p.stat().st_mtime for p in folder.glob("*") if p.is_file() and p.suffix != ".log" and p.name != ".lock"]
    return max(times, default=0.0)


def epochs_saved(folder: Path) -> int:
    path = folder / "history.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def without_timing(path: Path):
    if path.suffix == ".json":
        return {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING}
    return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(path.open())]


def check(killed: Path, reference: Path, expected: set[Path], epochs: int) -> list[str]:
    """Every way the killed-and-rerun grid could differ from the uninterrupted one."""
    problems = []
    found = {p.resolve() for p in find_runs(killed)}
    if found != expected:
        problems.append(f"run folders: missing {sorted(map(str, expected - found))}, "
                        f"extra {sorted(map(str, found - expected))}")
    for folder in sorted(expected):
        rel = folder.relative_to(killed.resolve())
        name = str(rel)
        if (problem := done_problem(folder)) is not None:
            problems.append(f"{name}: {problem}")
            continue
        if stray := [p.name for p in folder.glob(".*.tmp")]:
            problems.append(f"{name}: stray temporary files {stray}")
        try:
            RunLock(folder).acquire().release()
        except RunLocked as exc:
            problems.append(f"{name}: still locked by {exc.holder}")
        rows = list(csv.DictReader((folder / "history.csv").open()))
        if [int(r["epoch"]) for r in rows] != list(range(epochs)):
            problems.append(f"{name}: history epochs {[r['epoch'] for r in rows]}")
        for file in ("metrics.json", "history.csv"):
            if without_timing(folder / file) != without_timing(reference / rel / file):
                problems.append(f"{name}: {file} differs from the uninterrupted run")
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=10, help="how many times to kill the runner (default 10)")
    p.add_argument("--jobs", type=int, default=2, help="--jobs of the runner (default 2)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per cell (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random kill moments (default 0)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per method (cells = 4 methods x seeds; default 2)")
    p.add_argument("--min-delay", type=float, default=1.0, help="odd kills: earliest, s after the start (default 1)")
    p.add_argument("--max-delay", type=float, default=25.0, help="odd kills: latest, s after the start (default 25)")
    p.add_argument("--max-train-delay", type=float, default=6.0,
                   help="even kills: latest, s after the attempt's first checkpoint write (default 6)")
    p.add_argument("--methods", nargs="+", help="only these methods of the smoke grid (default: all)")
    p.add_argument("--no-write-kills", action="store_true",
                   help="skip the kills between consecutive writes of each cell's last epoch")
    p.add_argument("--workdir", type=Path, help="keep the results here (default: a temporary folder, removed)")
    p.add_argument("--child-kill-after", choices=WRITE_MOMENTS, help=argparse.SUPPRESS)
    p.add_argument("--child-epochs", type=int, help=argparse.SUPPRESS)
    p.add_argument("child_argv", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_kill_after:
        return child_killed_after_write(args.child_kill_after, args.child_epochs, args.child_argv)

    rng = random.Random(args.seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ltbench-kill-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    reference, killed = work / "reference", work / "killed"
    for folder in (reference, killed):
        shutil.rmtree(folder, ignore_errors=True)
    grid = grid_args(args.epochs, args.jobs, args.seeds, args.methods)
    expected = planned_folders(grid, killed)
    print(f"grid: {' '.join(grid)}  ({len(expected)} cells)")

    with open(work / "reference.log", "wb") as log:
        t0 = time.perf_counter()
        code = start(grid, reference, log).wait()
        uninterrupted = time.perf_counter() - t0
    if code != 0:
        print(f"the uninterrupted grid failed (exit {code}); see {work / 'reference.log'}")
        return 1
    print(f"uninterrupted grid: {uninterrupted:.1f} s")

    kills, finished_early, orphans = [], 0, 0
    total = 0.0
    with open(work / "killed.log", "wb") as log:
        while len(kills) < args.kills:
            # Two kinds of random moment, alternating: anywhere after the start (startup, planning,
            # writing config and status, training), and somewhere in training (after this attempt's
            # first checkpoint write), so that every such attempt makes progress and the kills are
            # spread over the grid's whole life. Each kind kills both ways, alternating in pairs.
            in_training = len(kills) % 2 == 1
            whole_group = (len(kills) // 2) % 2 == 0
            t0 = time.perf_counter()
            started = time.time()
            runner = start(grid, killed, log)
            if in_training:
                while runner.poll() is None and last_checkpoint_write(killed) <= started:
                    time.sleep(0.05)
            delay = (rng.uniform(0.0, args.max_train_delay) if in_training
                     else rng.uniform(args.min_delay, args.max_delay))
            try:
                runner.wait(timeout=delay)
                finished_early += 1  # the grid completed before this kill; start it over to go on killing
                total += time.perf_counter() - t0
                shutil.rmtree(killed)
                print("  the grid finished before the kill: results removed, killing goes on")
                continue
            except subprocess.TimeoutExpired:
                pass
            moment = time.perf_counter() - t0
            if whole_group:
                os.killpg(runner.pid, signal.SIGKILL)
            else:
                os.kill(runner.pid, signal.SIGKILL)
            runner.wait()
            if not group_gone(runner.pid, timeout=10):
                orphans += 1
                os.killpg(runner.pid, signal.SIGKILL)
                group_gone(runner.pid, timeout=10)
            total += time.perf_counter() - t0
            done = sum(done_problem(f) is None for f in expected)
            saved = sum(epochs_saved(f) for f in expected)
            kills.append((moment, "group" if whole_group else "runner", done))
            when = f"{delay:4.1f} s after a checkpoint" if in_training else "                    "
            print(f"  kill {len(kills):2d}: {'runner + workers' if whole_group else 'runner only     '} "
                  f"at {moment:5.1f} s {when}: {done}/{len(expected)} cells done, "
                  f"{saved}/{len(expected) * args.epochs} epochs checkpointed", flush=True)
        write_killed = []
        if not args.no_write_kills:
            t0 = time.perf_counter()
            write_killed = write_kills(grid, killed, expected, args.epochs, log)
            total += time.perf_counter() - t0
        t0 = time.perf_counter()
        code = start(grid, killed, log).wait()
        total += time.perf_counter() - t0
    print(f"final rerun: exit status {code}")

    problems = check(killed, reference, expected, args.epochs)
    if code != 0:
        problems.append(f"the final rerun exited with {code}")
    if orphans:
        problems.append(f"{orphans} kills of the runner alone left workers alive for 10 s")
    starts = {str(f.relative_to(killed.resolve())): (f / "worker.log").read_text().count("=== worker for")
              for f in sorted(expected) if (f / "worker.log").exists()}
    print()
    print(f"kills:                 {len(kills)} ({sum(k[1] == 'group' for k in kills)} runner + workers, "
          f"{sum(k[1] == 'runner' for k in kills)} runner only; {finished_early} grids finished before the kill)")
    print(f"kill moments (s after each start): {', '.join(f'{k[0]:.1f}' for k in kills)}")
    if not args.no_write_kills:
        moments = {m: sum(k[0] == m for k in write_killed) for m in WRITE_MOMENTS}
        print(f"write kills:           {len(write_killed)} (after the last epoch's "
              + ", ".join(f"{m}: {n}" for m, n in moments.items()) + f"; {len({k[1] for k in write_killed})} cells)")
    print(f"uninterrupted grid:    {uninterrupted:.1f} s")
    print(f"killed + reruns:       {total:.1f} s  (time lost {total - uninterrupted:.1f} s, "
          f"{(total - uninterrupted) / max(len(kills), 1):.1f} s per kill)")
    print(f"worker starts per cell: {', '.join(f'{k} {v}' for k, v in starts.items())}")
    folders = {p.resolve() for p in find_runs(killed)}
    print(f"cells:                 {len(expected)} planned, {len(folders)} run folders")
    if problems:
        print("NOT EQUAL / BROKEN:")
        for problem in problems:
            print(f"  - {problem}")
    else:
        print(f"verdict:               every cell exactly one folder, done, lock free, no temporary files, "
              f"each epoch once; metrics.json and history.csv equal to the uninterrupted grid "
              f"({len(expected)}/{len(expected)} cells)")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
