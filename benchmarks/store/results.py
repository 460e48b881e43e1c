"""The results store: one folder per run, written atomically, read back by the report.

`results/<dataset>/if<IF>/<method>/seed<S>/` is a run of the method's paper recipe;
`results/<dataset>/if<IF>/<method>@<variant>/seed<S>/` a run of another configuration, labelled as
`benchmarks.run.variants` says (its config.yaml's `variant` entry holds the full mapping). Each holds
- `config.yaml`   the fully resolved configuration (and the recipe deviations)
- `metrics.json`  final metrics: best and last epoch (top-1, many/medium/few, per-class, ECE
                  overall and per group), counts, wall time, images/s
- `predictions.npz` the predicted class and its confidence of every test image, best and last
                  epoch, with the test labels' fingerprint (`benchmarks.store.predictions`)
- `history.csv`   one row per epoch
- `env.json`      versions, device, git commit, pipeline
- `status`        `running`, `done` or `failed: <reason>`
- `checkpoint.pt` the last epoch's full state, for resuming
- `.lock`         the per-run lock (see `RunLock`); its content only says who holds it
- `worker.log`    with `--jobs`: the output of the worker processes that ran this cell
- `train.log`     every run: its console lines, one line per epoch, `--log-interval` step lines (`benchmarks.store.logs`)

Every file is written to a temporary name in the same folder and renamed into place, so a killed
process leaves either the old file or the new one, never half of one (plus, at worst, a stray
`.<name>.*.tmp` file, which `remove_stale_temp_files` deletes before the run is trained again).
The lock file is one exception: it must keep its inode for `flock` to mean anything, so it is
never replaced or deleted, and its content is informational only. The logs (`train.log`,
`worker.log`) are the others: appended to line by line, a killed writer leaves a log that ends early. Users' description of all of
this: docs/results-layout.md.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks import LTBenchError
from benchmarks.store.yamlio import yaml_load

# Keys added to the configuration after results were first written, each with the value that
# computes what the code before it computed. A config.yaml or checkpoint written before a key
# existed lacks it; `with_added_keys` fills it in when such a file is read, so that the run still
# counts as finished with today's configuration, resumes and reports.
ADDED_KEYS: dict[str, Any] = {
    "sampler": "instance",
    "sampler_samples_per_class": 1,
    "sampler_epoch": "sampler",
    "select_on": "test",
    "reweight": "none",
    "reweight_beta": 0.9999,
    "reweight_epoch": 0,
    "momentum_form": "pytorch",
}
# The same for keys of one method's `options:` (added only to that method's configs).
ADDED_OPTIONS: dict[str, dict[str, Any]] = {
    "bcl": {"bn_groups": 1},  # before bn_groups, BCL normalised the whole 3B batch at once
    # before bn_groups, the CE family normalised the whole batch at once
    **{m: {"bn_groups": 1} for m in ("ce", "ce_drw", "focal", "cb_focal", "ldam_drw", "balanced_softmax", "logit_adjust")},
    # before stage1_checkpoint, stage 2 started from the final stage-1 epoch where the stage-1 run
    # selected on test (every run written then: the select_on val recipes had never run)
    **{m: {"stage1_checkpoint": "final"} for m in ("crt", "lws", "tau_norm", "la_posthoc")},
}


def with_added_keys(config: Any) -> Any:
    """`config` (a run's config as read from a file) with every missing `ADDED_KEYS` key at its
    old-behaviour value; anything that is not a mapping is returned as it is."""
    if not isinstance(config, dict):
        return config
    added = {**ADDED_KEYS, **ADDED_OPTIONS.get(config.get("method"), {})}
    return {**{k: v for k, v in added.items() if k not in config}, **config}

try:
    import fcntl  # the run lock (`RunLock`): POSIX only
except ImportError:  # Windows: no flock; training refuses to start (`check_locking`), reading works
    fcntl = None  # type: ignore[assignment]

RUNNING, DONE, FAILED = "running", "done", "failed"


def format_imb_factor(imb_factor: float) -> str:
    """100 -> "100", 12.5 -> "12.5": the folder name and table label of an IF."""
    value = float(imb_factor)
    return str(int(value)) if value.is_integer() else repr(value)


VARIANT_SEPARATOR = "@"


def method_folder(method: str, variant: str = "") -> str:
    """`bccl` for the paper recipe, `bccl@eta=0.0` for a variant (a sibling of the recipe's
    folder, so the depth of every run folder, and `find_runs`' pattern, stay as they were)."""
    return f"{method}{VARIANT_SEPARATOR}{variant}" if variant else method


def split_method_folder(name: str) -> tuple[str, str]:
    """`bccl@eta=0.0` -> ("bccl", "eta=0.0"); `bccl` -> ("bccl", "")."""
    method, _, variant = name.partition(VARIANT_SEPARATOR)
    return method, variant


def run_dir(results_root: Path, dataset_label: str, imb_factor: float, method: str, seed: int,
            variant: str = "") -> Path:
    return (Path(results_root) / dataset_label / f"if{format_imb_factor(imb_factor)}"
            / method_folder(method, variant) / f"seed{seed}")


def _umask() -> int:
    """The process's umask (which can only be read by setting it, so it is set back at once)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _file_mode() -> int:
    """The mode `open(path, "w")` would give a new file: 0o666 less the umask. mkstemp's own 0600
    would hide results from the rest of a group on shared storage."""
    return 0o666 & ~_umask()


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks: what a stage-2 run and an evaluated checkpoint
    record of the checkpoint they read."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def atomic_write_yaml(path: Path, data: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def atomic_torch_save(path: Path, obj: Any) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        atomic_write_text(path, "")
        return
    out = io.StringIO()
    fields = list(rows[0])
    for row in rows[1:]:
        fields += [k for k in row if k not in fields]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, out.getvalue())


UNREADABLE_STATUS = "unreadable status file"


def read_status(folder: Path) -> str | None:
    """The folder's status line, None without a status file, or `unreadable status file (why)`
    for one that is not text or not a file (random bytes, a folder): such a folder is simply not
    finished, and one damaged folder must not stop a grid or a report."""
    path = Path(folder) / "status"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else (exc.strerror or str(exc))
        return f"{UNREADABLE_STATUS} ({why})"


def write_status(folder: Path, status: str) -> None:
    atomic_write_text(Path(folder) / "status", status + "\n")


def _load_if_present(path: Path, load) -> Any:
    if not path.exists():
        return None
    with open(path) as f:
        return load(f)


def read_config(folder: Path) -> dict[str, Any] | None:
    """A run folder's config.yaml, with the keys added since it was written (`config.ADDED_KEYS`)."""
    return with_added_keys(_load_if_present(Path(folder) / "config.yaml", yaml_load))


def read_metrics(folder: Path) -> dict[str, Any] | None:
    return _load_if_present(Path(folder) / "metrics.json", json.load)


def find_runs(results_root: Path) -> list[Path]:
    """Every run folder under `results_root` (a folder holding a `status` file): the paper
    recipe's `<method>/seed<S>` and the variants' `<method>@<variant>/seed<S>` alike."""
    root = Path(results_root)
    if not root.exists():
        return []
    return sorted(p.parent for p in root.glob("*/if*/*/seed*/status"))


# -- integrity of a finished run -------------------------------------------------------------------
SUMMARY_KEYS = ("epoch", "top1", "many", "medium", "few", "per_class")
METRICS_KEYS = ("best", "last", "epochs", "num_classes", "class_counts", "train_images", "test_images")


def _accuracy_problem(value: Any, allow_none: bool) -> bool:
    """Whether `value` cannot be an accuracy in percent: a finite number in [0, 100] (or None for
    an empty group / a class without test images, where `allow_none`)."""
    if value is None:
        return not allow_none
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return not (math.isfinite(value) and 0 <= value <= 100)


def metrics_problem(metrics: Any) -> str | None:
    """Why a parsed metrics.json cannot be a finished run's, or None if it can.

    Checks the structure the report and the runner rely on (the best and last summaries with
    top-1, groups and one accuracy per class) and that every accuracy is a finite percentage: a
    run folder that a crash, a full disk or a hand edit left half-written or garbled must be
    rerun, never averaged into a table.
    """
    if not isinstance(metrics, dict):
        return "metrics.json is not a mapping"
    missing = [k for k in METRICS_KEYS if k not in metrics]
    if missing:
        return f"metrics.json lacks {', '.join(missing)}"
    classes = metrics["num_classes"]
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        return f"metrics.json has a malformed num_classes {classes!r}"
    for which in ("best", "last"):
        summary = metrics[which]
        if not isinstance(summary, dict) or any(k not in summary for k in SUMMARY_KEYS):
            return f"metrics.json {which!r} lacks epoch/top1/groups/per_class"
        if _accuracy_problem(summary["top1"], allow_none=False):
            return f"metrics.json {which!r} top1 {summary['top1']!r} is not a percentage in [0, 100]"
        for group in ("many", "medium", "few"):
            if _accuracy_problem(summary[group], allow_none=True):
                return f"metrics.json {which!r} {group} {summary[group]!r} is not a percentage in [0, 100]"
        if not isinstance(summary["per_class"], list):
            return f"metrics.json {which!r} has a malformed per_class"
        if len(summary["per_class"]) != classes:
            return f"metrics.json {which!r} has {len(summary['per_class'])} per-class values " \
                   f"for {classes} classes"
        bad = [v for v in summary["per_class"] if _accuracy_problem(v, allow_none=True)]
        if bad:
            return f"metrics.json {which!r} per_class holds {bad[0]!r}, not a percentage in [0, 100]"
    return None


def history_epochs(epochs: int) -> list[int]:
    """The epoch numbers a finished run's history.csv holds, once each and in order: 0 .. epochs-1
    for a training run; a run without training epochs (a post-hoc method, `epochs: 0`) records its
    one evaluation as the single row 0. The trainer writes, and the runner, the resume check and
    the report check, this one record."""
    return list(range(epochs)) if epochs > 0 else [0]


def history_problem(folder: Path, epochs: Any) -> str | None:
    """Why a run's history.csv does not hold `history_epochs(epochs)` (missing, not text, or cut
    short by a kill between two writes), or None."""
    path = Path(folder) / "history.csv"
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        found = [int(row["epoch"]) for row in rows]
    except FileNotFoundError:
        return "history.csv is missing"
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, csv.Error) as exc:
        return f"history.csv unreadable ({type(exc).__name__})"
    if isinstance(epochs, int) and not isinstance(epochs, bool) and found != history_epochs(epochs):
        expected = history_epochs(epochs)
        return f"history.csv holds epochs {_span(found)}, not {expected[0]}..{expected[-1]}"
    return None


def _span(epochs: list[int]) -> str:
    if not epochs:
        return "none"
    return f"{epochs[0]}..{epochs[-1]} ({len(epochs)} rows)" if epochs == list(range(epochs[0], epochs[-1] + 1)) \
        else str(epochs[:10])


# The config keys the report reads from every folder, and the types they must have.
CONFIG_TYPES = {"dataset": str, "method": str, "imb_factor": (int, float), "seed": int, "epochs": int,
                "backbone": str, "train_cap_per_class": int, "test_cap_per_class": int}


def config_problem(config: Any) -> str | None:
    """Why a parsed config.yaml cannot describe a run (for the runner and the report) (not a mapping, or a key the
    report reads with the wrong type), or None."""
    if not isinstance(config, dict):
        return f"config.yaml is not a mapping (a {type(config).__name__})"
    for key, types in CONFIG_TYPES.items():
        value = config.get(key)
        if key in config and (isinstance(value, bool) or not isinstance(value, types)):
            return f"config.yaml {key} {value!r} is malformed"
    return None


VARIANT_KEY = "variant"  # config.yaml's record of the variant a run belongs to (see benchmarks.run.variants)


def variant_name(config: dict[str, Any] | None) -> str:
    """The variant label a config was run under ("" for the paper recipe and for old folders)."""
    record = (config or {}).get(VARIANT_KEY)
    return record.get("name", "") if isinstance(record, dict) else ""


def identity_problem(folder: Path, config: dict[str, Any]) -> str | None:
    """Why a seed folder's config.yaml names another run than its path (another method, variant
    or seed), or None. The method is the folder name's part before `@`, the variant the part after
    it (none: the paper recipe, or an older version's folder of a configuration whose config.yaml
    has no `variant` entry). Evaluation folders (`eval-*`) sit beside the seeds and are not checked."""
    folder = Path(folder)
    if not folder.name.startswith("seed"):
        return None
    method, variant = split_method_folder(folder.parent.name)
    if config.get("method") != method:
        return f"config.yaml names method {config.get('method')!r}, the folder {method!r}"
    if variant_name(config) != variant:
        return (f"config.yaml names variant {variant_name(config) or '(the recipe)'!r}, "
                f"the folder {variant or '(the recipe)'!r}")
    if f"seed{config.get('seed')}" != folder.name:
        return f"config.yaml names seed {config.get('seed')!r}, the folder {folder.name!r}"
    return None


def done_problem(folder: Path, config: dict[str, Any] | None = None) -> str | None:
    """Why a folder is not a trustworthy finished run, or None if it is one.

    A finished run is: status `done`, a config.yaml that parses to a mapping naming this folder's
    method and seed (and equals `config` when given), a metrics.json that parses and passes
    `metrics_problem`, and (for a trained run, not an evaluated checkpoint) a history.csv with
    every epoch once. The runner reruns every folder for which this returns a reason (a resumed
    run rewrites its history from the checkpoint); the report lists such folders as incomplete,
    so the two never disagree about which runs count.
    """
    folder = Path(folder)
    status = read_status(folder)
    if status != DONE:
        return f"status is {status!r}" if status is not None else "no status file"
    try:
        existing = read_config(folder)
    except (yaml.YAMLError, OSError, UnicodeDecodeError, ValueError):
        return "config.yaml unreadable"
    if existing is None:
        return "config.yaml missing"
    problem = config_problem(existing)
    if problem is not None:
        return problem
    if config is not None and existing != config:
        return "config.yaml differs from the run's configuration"
    problem = identity_problem(folder, existing)
    if problem is not None:
        return problem
    try:
        metrics = read_metrics(folder)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        return f"metrics.json unreadable ({type(exc).__name__})"
    if metrics is None:
        return "status is done but metrics.json is missing"
    problem = metrics_problem(metrics)
    if problem is None and folder.name.startswith("seed"):
        problem = history_problem(folder, metrics.get("epochs"))
    return problem


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the `.<name>.*.tmp` files a killed writer left behind; only call under the run lock."""
    stale = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    return stale


# -- one runner per run folder ---------------------------------------------------------------------
def check_locking() -> None:
    """Fail at start, before anything is written, where the run lock cannot work.

    The lock is `flock`, which the kernel releases when its holder dies however it dies; Windows
    has no equivalent with those semantics in the standard library, and a lock that may outlive a
    killed runner (or none at all) would let two runners train one cell. Reading results (the
    report) needs no lock and works everywhere.
    """
    if fcntl is None:
        raise LTBenchError(f"training needs the per-run lock (fcntl.flock), which this platform ({sys.platform}) "
                           "does not have; run the grid on Linux or macOS (on Windows: WSL). report.py works here")


class RunLocked(Exception):
    """Another live process holds the run folder's lock; `holder` says who (pid, host, since)."""

    def __init__(self, folder: Path, holder: str):
        super().__init__(f"{folder} is locked by {holder}")
        self.folder = folder
        self.holder = holder


class RunLock:
    """An exclusive, non-blocking lock on one run folder: `fcntl.flock` on `<folder>/.lock`.

    Why flock: the kernel drops the lock when the holding process dies, however it dies (SIGKILL,
    OOM killer, a node reboot), so a dead runner never holds a cell forever and no staleness
    timeout or heartbeat is needed, and nothing can break a live holder's lock by mistake. The
    file holds `pid host start-time` of the holder, written after the lock is taken, only so that
    a runner that finds the cell taken can say by whom.

    The lock file is never deleted: deleting it would let a second runner lock a new inode at the
    same path while a first one still holds the old inode.

    NFS and cluster file systems: since Linux 2.6.12 flock on NFS is emulated with POSIX byte-range
    locks, which are cluster-wide on NFSv4 (and v3 with lockd), but a file system mounted with
    `nolock` (NFS) or `localflock` (Lustre) only sees locks taken on the same node, and some
    parallel file systems need a mount option (Lustre `-o flock`). There, two runners on different
    nodes could train one cell at once; the SLURM launcher submits each cell once per invocation,
    so this only matters when two invocations run at the same time.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / ".lock"
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        check_locking()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask, like any new file
        except OSError as exc:  # a read-only folder, a full disk, a symlink loop
            raise LTBenchError(f"cannot take the lock {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLocked(self.folder, self.holder()) from None
            raise LTBenchError(f"cannot take the lock {self.path}: {exc.strerror or exc} (does this file "
                               "system support flock?)") from None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        except OSError:
            pass  # the holder line is informational only (a full disk must not stop the lock)
        self._fd = fd
        return self

    @staticmethod
    def is_held(folder: Path) -> bool:
        """Whether a live process holds the folder's lock now (a shared, non-blocking probe
        that is released at once; False when there is no lock file). For the report: a runner
        that tries to take the lock during those microseconds skips the cell as locked.
        Without fcntl (Windows) nothing can hold a lock: False."""
        if fcntl is None:
            return False
        try:
            fd = os.open(Path(folder) / ".lock", os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def holder(self) -> str:
        try:
            text = self.path.read_text().strip()
        except OSError:
            text = ""
        return text or "another process"

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)  # nobody holds it now; the empty file says so
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_writable_dir(folder: Path, what: str) -> None:
    """Create `folder` if needed and write a probe file there, or raise LTBenchError saying why
    (`what`: "results dir", "report folder", ...)."""
    folder = Path(folder)
    try:
        folder.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LTBenchError(f"{what} {folder} is a symlink loop; point it at a real folder") from None
    if folder.is_symlink() and not folder.exists():
        raise LTBenchError(f"{what} {folder} is a symlink to {os.readlink(folder)}, which does not exist") from None
    if folder.exists() and not folder.is_dir():
        raise LTBenchError(f"{what} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LTBenchError(f"{what} {folder} is not writable: {exc.strerror or exc}") from None
