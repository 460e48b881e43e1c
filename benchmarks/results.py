"""The results store: one folder per run, written atomically, read back by the report.

`results/<dataset>/if<IF>/<method>/seed<S>/` holds
- `config.yaml`   the fully resolved configuration (and the recipe deviations)
- `metrics.json`  final metrics: best and last epoch (top-1, many/medium/few, per-class), counts,
                  wall time, images/s
- `history.csv`   one row per epoch
- `env.json`      versions, device, git commit, pipeline
- `status`        `running`, `done` or `failed: <reason>`
- `checkpoint.pt` the last epoch's full state, for resuming

Every file is written to a temporary name in the same folder and renamed into place, so a killed
process leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

RUNNING, DONE, FAILED = "running", "done", "failed"


def format_imb_factor(imb_factor: float) -> str:
    """100 -> "100", 12.5 -> "12.5": the folder name and table label of an IF."""
    value = float(imb_factor)
    return str(int(value)) if value.is_integer() else repr(value)


def run_dir(results_root: Path, dataset_label: str, imb_factor: float, method: str, seed: int) -> Path:
    return Path(results_root) / dataset_label / f"if{format_imb_factor(imb_factor)}" / method / f"seed{seed}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def read_status(folder: Path) -> str | None:
    path = Path(folder) / "status"
    return path.read_text().strip() if path.exists() else None


def write_status(folder: Path, status: str) -> None:
    atomic_write_text(Path(folder) / "status", status + "\n")


def read_config(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / "config.yaml"
    if not path.exists():
        return None
    with open(path) as f:
        return yaml.safe_load(f)


def read_metrics(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / "metrics.json"
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def find_runs(results_root: Path) -> list[Path]:
    """Every run folder under `results_root` (a folder holding a `status` file)."""
    root = Path(results_root)
    if not root.exists():
        return []
    return sorted(p.parent for p in root.glob("*/if*/*/seed*/status"))
