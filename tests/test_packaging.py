"""ltbench as an installed package: the package list, the configs shipped as package data, the
`ltbench` entry point, workers started with `python -m`, and a wheel installed into a fresh
virtual environment outside the checkout that runs a tiny grid (two `--jobs` workers) and the report."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import benchmarks
from benchmarks import CONFIG_DIR
from benchmarks.commands import main as ltbench
from benchmarks.run.launchers import worker_base_env, worker_command

ROOT = Path(__file__).resolve().parents[1]


def test_package_list_covers_every_source_package():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {str(p.parent.relative_to(ROOT)).replace(os.sep, ".")
             for top in ("benchmarks", "bccl", "baselines") for p in (ROOT / top).rglob("__init__.py")}
    assert listed == found | {"benchmarks.configs"}


def test_checkout_reads_the_top_level_configs():
    assert CONFIG_DIR == ROOT / "configs"
    assert (CONFIG_DIR / "defaults.yaml").is_file()


def test_workers_are_started_as_a_module_with_this_code_on_the_path(tmp_path):
    cmd = worker_command(["--grid", "smoke"], tmp_path / "cell", tmp_path / "out.json")
    assert cmd[:4] == [sys.executable, "-u", "-m", "benchmarks.commands.run"]
    assert not any(part.endswith(".py") for part in cmd)
    root = str(Path(benchmarks.__file__).resolve().parent.parent)
    assert worker_base_env()["PYTHONPATH"].split(os.pathsep)[0] == root  # a checkout: not site-packages


def test_ltbench_entry_point_dispatches(tmp_path, capsys):
    assert ltbench(["--help"]) == 0 and "ltbench {run,report}" in capsys.readouterr().out
    assert ltbench(["train"]) == 2 and "unknown command 'train'" in capsys.readouterr().err
    assert ltbench(["run", "--dry-run", "--methods", "ce", "--results-dir", str(tmp_path)]) == 0
    # under the smoke grid's label; ce's own label carries what the grid's method_overrides change
    assert re.search(r"digits-tiny@[0-9a-f]{10}/if100/ce(@[^/\s]+)?/seed0", capsys.readouterr().out)
    assert ltbench(["report", "--results-dir", str(tmp_path / "none")]) == 2


def _copy_source(dest: Path) -> None:
    """The files git would ship (tracked, and new ones not ignored), so the build sees this tree."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def running_site_packages() -> list[str]:
    """The site-packages folders this test process imports from: a venv's own, and (for a venv made
    with --system-site-packages) its base interpreter's, and the user site when it is on."""
    import site

    folders = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        folders.append(site.getusersitepackages())
    return [f for f in dict.fromkeys(folders) if Path(f).is_dir()]


def expose_site_packages(python: Path) -> None:
    """Give the venv of `python` the running environment's packages (torch & co) through a .pth
    file, appended after its own site-packages, so its own ltbench comes first. Not
    `--system-site-packages`: that exposes the *base* interpreter's packages, which is not where
    they are when the tests themselves run in a venv (the usual case). The folders are added as
    plain paths, so their own .pth files (an editable ltbench of the checkout) are not processed."""
    own = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    (Path(own) / "running-environment.pth").write_text("\n".join(running_site_packages()) + "\n")


@pytest.mark.packaging  # ~40-90 s: deselect with -m 'not packaging' while developing
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    src, dist, venv, work = (tmp_path / d for d in ("src", "dist", "venv", "work"))
    for folder in (src, work):
        folder.mkdir()
    _copy_source(src)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*cmd, cwd=work):
        result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{cmd}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    # Offline: build with this interpreter's setuptools, install without dependencies (the venv sees
    # the *running* environment's site-packages for torch & co, but ltbench must be the venv's own copy).
    run(sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "-q", "-w", dist)
    wheel = next(dist.glob("ltbench-*.whl"))
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    expose_site_packages(python)
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel)

    where = run(python, "-c", "import benchmarks, bccl, baselines; print(benchmarks.__file__); "
                              "print(bccl.__file__); print(benchmarks.CONFIG_DIR)").split()
    for path in where:
        assert Path(path).resolve().is_relative_to(venv.resolve()), where  # not the checkout, not an editable copy
    ltbench_cmd = python.parent / ("ltbench.exe" if os.name == "nt" else "ltbench")
    out = run(ltbench_cmd, "run", "--methods", "ce", "--imb-factors", "100", "10", "--tiny", "--epochs", "1",
              "--jobs", "2", "--no-progress", "--device", "cpu")
    assert "trained 2" in out, out
    for cell in ("if100", "if10"):
        folder, = (work / "results").glob(f"digits-tiny@*/{cell}/ce*/seed0")  # --tiny: the grid label says it; ce@<smoke overrides>
        assert (folder / "status").read_text().strip() == "done"
        assert (folder / "worker.log").is_file()  # written by the `python -m` worker that trained it
    out = run(ltbench_cmd, "report", "--formats", "md", "--no-plots")
    report = (work / "reports" / "report.md").read_text()
    assert "ce" in report and "recipe differs" in report
