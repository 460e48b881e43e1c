"""Who runs a grid's cells: this process, N local worker processes, or one SLURM job per cell.

- `benchmarks.run.grid.run_grid`: the cells one after the other in this process (`--jobs 1`, the
  default).
- `LocalParallel`: `--jobs N` worker processes. Each worker is the run command itself
  (`python -m benchmarks.commands.run`, so it needs no checkout and no script path), restricted to one cell (`--cell <run folder>`), so a worker is an ordinary runner: it plans,
  preflights, locks, resumes and writes its run folder exactly as the sequential runner does.
  Subprocesses rather than a `multiprocessing` pool because a worker that dies (segfault, OOM
  killer, a CUDA fatal error) takes only its own cell down: the parent sees an exit status, marks
  that cell failed and goes on, where a dead pool worker breaks the whole pool. It also makes
  `CUDA_VISIBLE_DEVICES` simple to set (before the worker imports torch): GPUs are dealt out
  round-robin over worker slots, so a slot keeps its GPU for every cell it runs.
- `Slurm`: `--launcher slurm`, through submitit (an optional dependency, imported only here):
  every unfinished cell is one job of a job array, running the same one-cell worker. A job that
  reaches its time limit is requeued by submitit (the job callable is checkpointable) and resumes
  from the run's last epoch checkpoint.

Every launcher returns one `Outcome` per cell, so the summary table and the exit status are the
same whichever one ran. The parent never trains; it never writes into a run folder except to mark
a cell failed whose worker died without saying why (under the run's lock).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import benchmarks
from benchmarks import LTBenchError
from benchmarks.store.logs import LOGGER
from benchmarks.store.results import (
    DONE, FAILED, RUNNING, RunLock, RunLocked, atomic_write_json, read_metrics, read_status, write_status,
)

if TYPE_CHECKING:
    from benchmarks.run.grid import GridOptions, Outcome, Run

# This module imports neither torch nor benchmarks.run.grid at import time: a SLURM job unpickles
# `CellJob` from here, and all it does is start the one-cell worker, which imports them itself.

RUN_MODULE = "benchmarks.commands.run"  # started as `python -m` (installed or not)
LAUNCHERS = ("local", "slurm")
SUBMITTED = "submitted"  # + " (slurm job <id>)": --no-wait


# -- worker processes ------------------------------------------------------------------------------
def worker_command(argv: list[str], folder: Path, outcome_path: Path, device: str | None = None) -> list[str]:
    """The command line of a one-cell worker: the parent's own arguments, narrowed to `run`.

    Later options win in argparse, so appending `--jobs 1 --launcher local` turns the parent's
    command into a sequential runner, and `--cell` keeps only the run whose folder is `folder`
    (identity by folder, so a grid file edited in between cannot silently swap the cell).
    """
    cmd = [sys.executable, "-u", "-m", RUN_MODULE, *argv, "--jobs", "1", "--launcher", "local", "--no-progress",
           "--cell", str(Path(folder).resolve()), "--worker-outcome", str(outcome_path)]
    if device is not None:
        cmd += ["--device", device]
    return cmd


def worker_base_env() -> dict[str, str]:
    """The environment of a worker: this process's, plus the folder this `benchmarks` package was
    imported from on PYTHONPATH when that is not where the interpreter finds it anyway.

    `python -m` looks in the working directory first, then the interpreter's own paths; a runner
    started from a checkout (the scripts, or pytest's pythonpath) whose working directory is
    elsewhere would otherwise start workers running another installed copy. An installed package
    is left to the interpreter's own search (its site-packages never go onto PYTHONPATH).
    """
    import site

    env = dict(os.environ)
    root = str(Path(benchmarks.__file__).resolve().parent.parent)
    installed = {str(Path(p).resolve()) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if root not in installed:
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def write_worker_outcome(path: Path, outcome: "Outcome") -> None:
    atomic_write_json(Path(path), {"status": outcome.status, "seconds": outcome.seconds})


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGKILL the worker when its parent dies (Linux only).

    Without it, a runner killed with SIGKILL (OOM killer, a lost session) leaves orphan workers
    training on, invisible to the next runner except as locked cells. With it the runner and its
    workers live and die together, and the next invocation resumes every cell. prctl is resolved
    here, in the parent, so the child only makes one async-signal-safe call between fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    PR_SET_PDEATHSIG = 1

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def worker_result(folder: Path, returncode: int, outcome_path: Path, log_path: Path | None,
                  seconds: float) -> tuple[str, float]:
    """What a finished worker did, as (status, seconds): its outcome file, or a failure built from
    its exit status.

    A worker that died without an outcome file (a signal, a crash) leaves its folder `running`;
    it is marked `failed: worker ...` here, under the run's lock, so the folder says what happened.
    Exit status 2 is a user error found by the worker's checks: those write nothing, nor does this.
    """
    try:
        recorded = json.loads(Path(outcome_path).read_text())
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, dict) and isinstance(recorded.get("status"), str):
        return recorded["status"], float(recorded.get("seconds") or seconds)
    tail = _last_line(log_path) if log_path is not None else ""
    reason = f"worker {describe_exit(returncode)}" + (f" ({tail})" if tail else "")
    status = f"{FAILED}: {reason}"
    if returncode != 2 and Path(folder).is_dir():
        try:
            with RunLock(folder):
                if read_status(folder) == RUNNING:
                    write_status(folder, status)
        except (RunLocked, OSError):
            pass  # another runner has the cell now: its status is its own
    return status, seconds


def _outcome(run: "Run", status: str, seconds: float) -> "Outcome":
    from benchmarks.run.grid import SKIPPED_DONE, Outcome

    metrics = read_metrics(run.folder) if status in (DONE, SKIPPED_DONE) else None
    return Outcome(run, status, metrics, seconds)


def _split_finished(runs: list["Run"], log: Callable) -> tuple[dict[int, "Outcome"], list[tuple[int, "Run"]]]:
    """Finished cells become `skipped (done)` outcomes here, without starting a worker for them."""
    from benchmarks.run.grid import SKIPPED_DONE, Outcome, finished

    done, todo = {}, []
    for i, run in enumerate(runs):
        if finished(run, log, prefix=f"[{i + 1}/{len(runs)}] "):
            log(f"[{i + 1}/{len(runs)}] {run.label}: done already, skipped ({run.folder})")
            done[i] = Outcome(run, SKIPPED_DONE, read_metrics(run.folder))
        else:
            todo.append((i, run))
    return done, todo


def visible_gpus(device: str) -> list[str]:
    """The GPU ids workers are spread over ([] = CPU): CUDA_VISIBLE_DEVICES or every device."""
    if device == "cpu":
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    ids = [g.strip() for g in listed.split(",") if g.strip()] if listed else \
        [str(i) for i in range(torch.cuda.device_count())]
    if device.startswith("cuda:"):
        index = int(device.split(":", 1)[1])
        if index >= len(ids):
            raise LTBenchError(f"--device {device}: only {len(ids)} GPU(s) visible")
        return [ids[index]]
    return ids


class LocalParallel:
    """`--jobs N`: N one-cell workers at a time, GPUs dealt round-robin over the worker slots."""

    def __init__(self, jobs: int, argv: list[str], device: str, poll_s: float = 0.2):
        self.jobs = jobs
        self.argv = list(argv)
        self.device = device
        self.poll_s = poll_s

    def worker_env(self, slot: int, gpus: list[str]) -> tuple[dict[str, str], str | None, str]:
        env = worker_base_env()
        # N workers each using every core would oversubscribe the CPU; an explicit setting wins.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.jobs)))
        if not gpus:
            return env, None, "cpu" if self.device in ("auto", "cpu") else self.device
        gpu = gpus[slot % len(gpus)]
        env["CUDA_VISIBLE_DEVICES"] = gpu
        return env, "cuda", f"GPU {gpu}"

    def run(self, runs: list["Run"], options: "GridOptions", log: Callable = LOGGER.info) -> list["Outcome"]:
        from benchmarks.run.grid import log_outcome

        gpus = visible_gpus(self.device)
        outcomes, todo = _split_finished(runs, log)
        pending = deque(todo)
        index = {run.folder: i for i, run in enumerate(runs)}
        free = list(range(self.jobs))
        running: dict[subprocess.Popen, tuple[int, int, "Run", Path, Path, float]] = {}
        preexec = _die_with_parent()
        tmp = Path(tempfile.mkdtemp(prefix="ltbench-workers-"))
        try:
            while pending or running:
                while free:
                    ready = _next_ready(pending, outcomes, index, log, len(runs))
                    if ready is None:
                        break
                    i, run = ready
                    slot = free.pop(0)
                    env, device, where = self.worker_env(slot, gpus)
                    outcome_path = tmp / f"outcome-{i}.json"
                    run.folder.mkdir(parents=True, exist_ok=True)
                    log_path = run.folder / "worker.log"
                    with open(log_path, "ab") as log_file:
                        log_file.write(f"\n=== worker for {run.label}, started {time.ctime()} ===\n".encode())
                        log_file.flush()
                        proc = subprocess.Popen(worker_command(self.argv, run.folder, outcome_path, device), env=env,
                                                stdout=log_file, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, preexec_fn=preexec)
                    running[proc] = (slot, i, run, outcome_path, log_path, time.perf_counter())
                    log(f"[{i + 1}/{len(runs)}] {run.label} -> {run.folder} (worker {proc.pid} on {where})")
                for proc in [p for p in running if p.poll() is not None]:
                    slot, i, run, outcome_path, log_path, start = running.pop(proc)
                    free.append(slot)
                    free.sort()
                    outcome = _outcome(run, *worker_result(run.folder, proc.returncode, outcome_path, log_path,
                                                           time.perf_counter() - start))
                    log(f"[{i + 1}/{len(runs)}] {run.label}: {outcome.status.split(':')[0]}")
                    log_outcome(outcome, log)
                    outcomes[i] = outcome
                if running:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            _stop(list(running))
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return [outcomes[i] for i in range(len(runs))]


def _next_ready(pending: deque, outcomes: dict[int, "Outcome"], index: dict[Path, int], log: Callable,
                total: int) -> tuple[int, "Run"] | None:
    """Take the first pending cell that may start now: one whose stage-1 run (two-stage methods)
    is not a cell of this grid, or has finished in it. A cell whose stage-1 cell failed becomes a
    failed outcome without a worker; one whose stage-1 cell is still pending or running waits."""
    from benchmarks.run.grid import SKIPPED_DONE, Outcome, stage1_problem

    for entry in list(pending):
        i, run = entry
        k = index.get(run.stage1.folder) if run.stage1 is not None else None
        if k is not None and k not in outcomes:
            continue  # its stage-1 cell has not finished yet
        if k is not None and outcomes[k].status not in (DONE, SKIPPED_DONE) or \
                k is None and stage1_problem(run) is not None:
            pending.remove(entry)
            reason = f"not started: {stage1_problem(run)}"
            log(f"[{i + 1}/{total}] {run.label}: {reason}")
            outcomes[i] = Outcome(run, f"{FAILED}: {reason}")
            continue
        pending.remove(entry)
        return entry
    return None


def _stop(procs: list[subprocess.Popen], grace_s: float = 30.0) -> None:
    """Interrupt the workers (they keep their checkpoints and say `running`), then wait or kill."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


# -- SLURM through submitit ------------------------------------------------------------------------
@dataclass
class SlurmOptions:
    partition: str | None = None
    time_min: int = 1440
    gpus: int = 1
    cpus: int = 8
    folder: Path = Path("slurm-logs")
    cluster: str = "slurm"  # "local": submitit's local executor (tests, a machine without SLURM)
    wait: bool = True

    def check(self) -> None:
        if self.time_min < 1:
            raise LTBenchError(f"--slurm-time must be >= 1 minute, got {self.time_min}")
        if self.gpus < 0:
            raise LTBenchError(f"--slurm-gpus must be >= 0, got {self.gpus}")
        if self.cpus < 1:
            raise LTBenchError(f"--slurm-cpus must be >= 1, got {self.cpus}")
        if self.cluster not in ("slurm", "local"):
            raise LTBenchError(f"--slurm-cluster must be slurm or local, got {self.cluster!r}")


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise LTBenchError("--launcher slurm needs submitit: pip install 'ltbench[slurm]'") from None
    return submitit


class CellJob:
    """One cell as a submitit job: the one-cell worker, run in a subprocess of the job.

    Checkpointable in submitit's sense (it has `checkpoint`): when the job nears its time limit,
    submitit calls `checkpoint` and requeues the same callable; the new job resumes the run from
    its last epoch checkpoint. The worker dies with the job process (PDEATHSIG), releasing the
    run's lock for the requeued job.
    """

    def __init__(self, argv: list[str], cwd: str, folder: str, label: str):
        self.argv = list(argv)
        self.cwd = cwd
        self.folder = folder
        self.label = label

    def __call__(self) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="ltbench-job-") as tmp:
            outcome_path = Path(tmp) / "outcome.json"
            start = time.perf_counter()
            proc = subprocess.run(worker_command(self.argv, Path(self.folder), outcome_path), cwd=self.cwd,
                                  env=worker_base_env(), preexec_fn=_die_with_parent())
            status, seconds = worker_result(Path(self.folder), proc.returncode, outcome_path, None,
                                            time.perf_counter() - start)
        return {"status": status, "seconds": seconds, "returncode": proc.returncode}

    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


class Slurm:
    """`--launcher slurm`: one job per unfinished cell (a job array), then wait and collect."""

    def __init__(self, options: SlurmOptions, argv: list[str]):
        options.check()
        self.options = options
        self.argv = list(argv)
        self.submitit = import_submitit()
        if options.cluster == "slurm" and shutil.which("sbatch") is None:
            raise LTBenchError("--launcher slurm: sbatch not found; run on a SLURM login node "
                               "(--slurm-cluster local runs the jobs as local processes, for testing)")

    def executor(self):
        o = self.options
        executor = self.submitit.AutoExecutor(folder=str(o.folder), cluster=o.cluster)
        params: dict[str, Any] = dict(name="ltbench", timeout_min=o.time_min, gpus_per_node=o.gpus,
                                      cpus_per_task=o.cpus, tasks_per_node=1, nodes=1)
        if o.partition:
            params["slurm_partition"] = o.partition
        executor.update_parameters(**params)
        return executor

    def run(self, runs: list["Run"], options: "GridOptions", log: Callable = LOGGER.info) -> list["Outcome"]:
        """Submit the unfinished cells in stages (`grid.stage_depth`): the cells that start from
        nothing as one job array, then each cell of a two-stage method as a job that SLURM holds
        until its stage-1 cell's job has ended (`--dependency=afterany:<job>`; the worker then
        checks that the stage-1 run finished, and fails the cell saying so if not, instead of a
        job pending forever). submitit's local executor has no dependencies: there each stage
        is submitted when the previous one has ended."""
        from benchmarks.run.grid import stage_depth

        outcomes, todo = _split_finished(runs, log)
        jobs: dict[int, Any] = {}  # index in runs -> submitted job
        job_of_folder: dict[Path, Any] = {}
        cwd = os.getcwd()
        for depth in sorted({stage_depth(run) for _, run in todo}):
            wave = [(i, run) for i, run in todo if stage_depth(run) == depth]
            if self.options.cluster == "local" and jobs:
                self._collect(runs, jobs, outcomes, log)  # no dependencies there: wait for the earlier stages
            after = {i: job_of_folder.get(run.stage1.folder) if run.stage1 is not None else None for i, run in wave}
            free = [(i, run) for i, run in wave if after[i] is None or self.options.cluster == "local"]
            held = [(i, run) for i, run in wave if (i, run) not in free]
            submitted = self._submit(free, cwd) if free else []
            submitted += [self._submit([(i, run)], cwd, after_job=after[i].job_id)[0] for i, run in held]
            for (i, run), job in zip(free + held, submitted):
                jobs[i] = job
                job_of_folder[run.folder] = job
                wait = f", after job {after[i].job_id}" if after[i] is not None and (i, run) in held else ""
                log(f"[{i + 1}/{len(runs)}] {run.label} -> slurm job {job.job_id} ({run.folder}{wait})")
        if self.options.wait:
            self._collect(runs, jobs, outcomes, log)
        else:
            from benchmarks.run.grid import Outcome

            for i, job in jobs.items():
                outcomes.setdefault(i, Outcome(runs[i], f"{SUBMITTED} (slurm job {job.job_id})"))
        return [outcomes[i] for i in range(len(runs))]

    def _submit(self, cells: list[tuple[int, "Run"]], cwd: str, after_job: str | None = None) -> list[Any]:
        """Submit `cells` (one job array), held until job `after_job` has ended when given."""
        executor = self.executor()
        if after_job is not None:
            executor.update_parameters(slurm_dependency=f"afterany:{after_job}")
        try:
            with executor.batch():
                return [executor.submit(CellJob(self.argv, cwd, str(run.folder.resolve()), run.label))
                        for _, run in cells]
        except Exception as exc:  # sbatch refused (partition, limits, dependency)
            raise LTBenchError(f"SLURM submission failed: {str(exc).strip().splitlines()[-1]}") from None

    def _collect(self, runs: list["Run"], jobs: dict[int, Any], outcomes: dict[int, "Outcome"], log: Callable) -> None:
        """Wait for every job not yet collected and record its cell's outcome."""
        from benchmarks.run.grid import Outcome, log_outcome

        for i, job in jobs.items():
            if i in outcomes:
                continue
            run = runs[i]
            start = time.perf_counter()
            try:
                result = job.result()
                outcome = _outcome(run, result["status"], result["seconds"])
            except Exception as exc:  # the job itself failed: timeout without requeue, node failure
                lines = [ln for ln in str(exc).splitlines() if ln.strip()]
                outcome = Outcome(run, f"{FAILED}: slurm job {job.job_id}: {lines[-1] if lines else exc!r}",
                                  None, time.perf_counter() - start)
            log(f"[{i + 1}/{len(runs)}] {run.label}: slurm job {job.job_id} {outcome.status.split(':')[0]}")
            log_outcome(outcome, log)
            outcomes[i] = outcome
