"""env.json's provenance: every package that can change a number, threads, CPU and CUDA records."""

from __future__ import annotations

import json

import numpy as np
import PIL
import scipy
import sklearn
import torch

from benchmarks.store.environment import RECORDED_PACKAGES, environment_record


def test_env_record_names_every_package_that_can_change_a_number():
    record = json.loads(json.dumps(environment_record(torch.device("cpu"), {"pipeline": "reference"})))
    packages = record["packages"]
    assert set(packages) == set(RECORDED_PACKAGES)
    assert {"torch", "torchvision", "numpy", "Pillow", "numba", "scikit-learn", "pandas", "scipy"} <= set(packages)
    assert packages["torch"] == torch.__version__.split("+")[0] or packages["torch"] == torch.__version__
    assert packages["numpy"] == np.__version__ and packages["Pillow"] == PIL.__version__
    assert packages["scikit-learn"] == sklearn.__version__ and packages["scipy"] == scipy.__version__
    try:
        import numba
    except ImportError:  # an optional extra: recorded as absent
        assert packages["numba"] is None
    else:
        assert packages["numba"] == numba.__version__
    assert record["torch"] == torch.__version__ and record["numpy"] == np.__version__  # the old keys stay
    assert record["threads"]["torch_intra_op"] == torch.get_num_threads() >= 1
    assert "OMP_NUM_THREADS" in record["threads"]
    assert record["cpu"] and record["cpu"] in record["device_name"]
    cuda = record["cuda_details"]
    assert cuda["runtime"] == torch.version.cuda and cuda["available"] == torch.cuda.is_available()
    assert len(cuda["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert record["pipeline"] == "reference"


def test_git_provenance_counts_untracked_files_and_hashes_the_uncommitted_changes(tmp_path, monkeypatch):
    """A new method module not yet committed makes the tree dirty, and the hash of the uncommitted
    diff (untracked files included) tells two dirty trees on the same commit apart."""
    import subprocess

    from benchmarks.store import environment

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / ".gitignore").write_text("results/\n")
    git("add", ".")
    git("commit", "-qm", "init")
    monkeypatch.setattr(environment, "PROJECT_ROOT", tmp_path)
    clean = environment.git_revision()
    assert clean["dirty"] is False and clean["diff_sha256"] is None and len(clean["commit"]) == 40
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.json").write_text("{}")  # ignored: not part of the code
    assert environment.git_revision()["dirty"] is False
    (tmp_path / "new_method.py").write_text("A = 1\n")  # untracked, not ignored
    first = environment.git_revision()
    assert first["dirty"] is True and first["untracked_files"] == 1 and len(first["diff_sha256"]) == 64
    (tmp_path / "new_method.py").write_text("A = 2\n")
    assert environment.git_revision()["diff_sha256"] != first["diff_sha256"]
    (tmp_path / "new_method.py").unlink()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # a tracked change
    tracked = environment.git_revision()
    assert tracked["dirty"] is True and tracked["untracked_files"] == 0 and tracked["diff_sha256"] not in (
        None, first["diff_sha256"])
