"""`env.json`: what produced a run (versions, device, code revision, pipeline, command line).

A reproducibility suite must record everything that can change a number, so `packages` lists the
installed version of every package a run's arithmetic or data path goes through (absent ones as
null): torch and torchvision (kernels, reference transforms), numpy (the LT subsets, seeding),
Pillow (the reference views and the fast views' copies of its rounding), numba (the CPU fast
views) and llvmlite under it, scikit-learn (the digits data), scipy and pandas (the report's
statistics and tables), PyYAML (config parsing) and ltbench itself. `threads` holds the CPU
parallelism that changes float summation order (torch intra- and inter-op threads, the
OMP/MKL settings), `cpu` the processor model, `cuda` the CUDA runtime, cuDNN and driver-visible
GPU models. Versions come from the installed distributions' metadata (`importlib.metadata`), so
recording them imports nothing.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import torch

from benchmarks import PROJECT_ROOT

# Distribution names (as pip knows them) of every package that can change a number.
RECORDED_PACKAGES = ("torch", "torchvision", "numpy", "Pillow", "numba", "llvmlite", "scikit-learn", "scipy",
                     "pandas", "PyYAML", "ltbench")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def package_versions(names=RECORDED_PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision() -> dict[str, Any]:
    """The commit of the code that ran, whether the working tree differed from it, and a hash of
    the difference.

    `dirty` counts untracked files that git does not ignore too (a new method module not yet
    committed: the commit alone does not contain the code that ran); `untracked_files` is their
    number and `diff_sha256` the SHA-256 of the uncommitted changes (`git diff HEAD --binary`, then
    each untracked file's path and bytes), null for a clean tree, so two dirty runs on the same
    commit can be told apart.

    Only for a checkout (the package's parent holds pyproject.toml): an installed copy is
    identified by its `ltbench` version in `packages`, and asking git there could name the commit
    of an unrelated repository that happens to contain the environment.
    """
    unknown = {"commit": None, "dirty": None, "untracked_files": None, "diff_sha256": None}
    if not (PROJECT_ROOT / "pyproject.toml").is_file():
        return unknown

    def git(*args: str) -> bytes | None:
        try:
            out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return unknown
    diff = git("diff", "HEAD", "--binary")
    untracked = git("ls-files", "--others", "--exclude-standard", "-z")
    if diff is None or untracked is None:
        return {**unknown, "commit": commit.decode().strip()}
    names = sorted(name for name in untracked.split(b"\0") if name)
    digest = hashlib.sha256(diff)
    for name in names:
        digest.update(b"\0" + name + b"\0")
        try:
            digest.update((PROJECT_ROOT / os.fsdecode(name)).read_bytes())
        except OSError:  # vanished or unreadable meanwhile: its name still counts
            pass
    dirty = bool(diff) or bool(names)
    return {"commit": commit.decode().strip(), "dirty": dirty, "untracked_files": len(names),
            "diff_sha256": digest.hexdigest() if dirty else None}


def cpu_model() -> str:
    """The processor's model name (Linux: /proc/cpuinfo; elsewhere what `platform` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or platform.processor()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def thread_settings() -> dict[str, Any]:
    return {
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        **{name: os.environ.get(name) for name in THREAD_VARIABLES},
    }


def cuda_record() -> dict[str, Any]:
    """CUDA runtime and cuDNN versions torch was built with, and the visible GPUs' models."""
    record: dict[str, Any] = {
        "runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "available": torch.cuda.is_available(),
        "gpus": [],
    }
    if record["available"]:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            record["gpus"].append({"name": props.name, "capability": f"{props.major}.{props.minor}",
                                   "memory_gib": round(props.total_memory / 2**30, 1)})
        record["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return record


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def environment_record(device: torch.device, execution: dict[str, Any]) -> dict[str, Any]:
    packages = package_versions()
    return {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        # The three top-level keys the report and older folders know, kept beside `packages`.
        "torch": torch.__version__,
        "torchvision": packages["torchvision"],
        "numpy": packages["numpy"],
        "packages": packages,
        "cuda": torch.version.cuda,
        "cuda_details": cuda_record(),
        "cpu": cpu_model(),
        "threads": thread_settings(),
        "device": str(device),
        "device_name": device_description(device),
        "git": git_revision(),
        **execution,
    }
