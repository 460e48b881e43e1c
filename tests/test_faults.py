"""Faults built by the tests themselves (issue 16): a kill between two writes, two overlapping
runners, unreadable status files, cells that fail only when they run, evaluations of checkpoints
with the same name, locks and reports on a full disk, file modes, and the thread count of a
resumed run. Each asserts what is kept, what is refused and that nothing finished is lost.
"""

import csv
import errno
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import run_benchmark
from benchmarks.store import results as results_module
from benchmarks.commands import report as report_cli
from benchmarks.run.grid import GridOptions, plan, run_grid
from benchmarks.store.results import atomic_write_text, done_problem, read_status
from test_integrity import ARGS, copy, folder_of, metrics_of, reference, run  # noqa: F401  (fixtures too)

HISTORY_TIMING = ("train_seconds", "images_per_s", "eval_seconds", "posthoc_seconds")


class Killed(BaseException):
    """Stands for SIGKILL: no `except Exception` catches it, no later write happens."""


def history_of(folder):
    rows = list(csv.DictReader(io.StringIO((folder / "history.csv").read_text())))
    return [{k: v for k, v in row.items() if k not in HISTORY_TIMING} for row in rows]


def kill_after(monkeypatch, name, nth):
    """Make the process 'die' right after its nth atomic write of a file called `name`."""
    original = results_module.atomic_write_bytes
    seen = {"n": 0}

    def writing(path, data):
        original(path, data)
        if Path(path).name == name:
            seen["n"] += 1
            if seen["n"] == nth:
                raise Killed(f"after write {nth} of {name}")

    monkeypatch.setattr(results_module, "atomic_write_bytes", writing)


def single_thread_args(results, *extra):
    return ARGS + ["--results-dir", str(results), *extra]


# -- class 4: a kill between two writes -----------------------------------------------------------
# A fresh 2-epoch run writes: config.yaml, status (running), history.csv (empty), env.json, then per
# epoch history.csv and checkpoint.pt, then metrics.json and status (done). Kill after each write of
# the last epoch but the final status (an earlier kill is a plain resume, tested in test_integrity).
KILL_POINTS = [("history.csv", 3), ("checkpoint.pt", 2), ("metrics.json", 1)]


@pytest.mark.parametrize("name, nth", KILL_POINTS, ids=[f"after {n} #{i}" for n, i in KILL_POINTS])
def test_a_kill_between_two_writes_resumes_to_the_uninterrupted_result(name, nth, reference, tmp_path, capsys,
                                                                       monkeypatch):
    results = tmp_path / "results"
    with monkeypatch.context() as patch:
        kill_after(patch, name, nth)
        with pytest.raises(Killed):
            run_benchmark.main(single_thread_args(results))
    folder = folder_of(results)
    assert read_status(folder) == "running"
    code, out, _ = run(results, capsys)
    assert code == 0, out
    assert done_problem(folder) is None
    assert metrics_of(folder) == metrics_of(reference)
    assert history_of(folder) == history_of(reference)  # each epoch once, the same numbers


def test_a_done_folder_with_a_short_history_is_repaired_from_its_checkpoint(reference, copy, capsys):
    """What the old write order (checkpoint, then history) left after a kill between the two in the
    last epoch, once a rerun had marked it done: the runner now sees it and rebuilds the history."""
    folder = folder_of(copy)
    lines = (folder / "history.csv").read_text().splitlines()
    (folder / "history.csv").write_text("\n".join(lines[:-1]) + "\n")
    assert "history.csv holds epochs 0..0" in done_problem(folder)
    code, out, _ = run(copy, capsys)
    assert code == 0 and "folder says done but history.csv holds epochs 0..0" in out
    assert history_of(folder) == history_of(reference)
    assert metrics_of(folder) == metrics_of(reference)


# -- class 5: two overlapping runners --------------------------------------------------------------
def test_a_cell_finished_by_another_runner_with_another_config_is_refused(tmp_path, capsys):
    """Runner A plans and preflights an empty cell; runner B then trains it with other settings;
    A takes the lock, re-reads the folder and refuses, writing nothing; the grid goes on. B differs
    in an execution key only (a recipe key would make B a variant, in another folder)."""
    results = tmp_path / "results"
    torch.set_num_threads(1)
    options = GridOptions(datasets=["digits"], methods=["ce"], imb_factors=[10], seeds=[0, 1], epochs=2, tiny=True,
                          overrides={"train_cap_per_class": 8, "test_cap_per_class": 4, "batch_size": 16},
                          results_dir=results, progress=False)
    runs = plan(options)  # A's plan: both cells empty
    assert run_benchmark.main(single_thread_args(results, "--set", "eval_batch_size=7")) == 0  # B: seed 0
    folder = folder_of(results)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}
    capsys.readouterr()
    outcomes = run_grid(runs, options, torch.device("cpu"))
    out = capsys.readouterr().out
    assert outcomes[0].status.startswith("failed: ") and "another configuration (differs in: eval_batch_size)" in out
    assert "refused, nothing written" in out
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"} == before
    assert outcomes[1].status == "done"  # the grid went on


def test_a_checkpoint_left_by_another_config_is_refused_under_the_lock(tmp_path, capsys):
    """The same race, when B was killed mid-run: only its checkpoint tells its config."""
    results = tmp_path / "results"
    options = GridOptions(datasets=["digits"], methods=["ce"], imb_factors=[10], seeds=[0], epochs=2, tiny=True,
                          overrides={"train_cap_per_class": 8, "test_cap_per_class": 4, "batch_size": 16},
                          results_dir=results, progress=False)
    runs = plan(options)
    with pytest.MonkeyPatch.context() as patch:
        kill_after(patch, "checkpoint.pt", 1)
        with pytest.raises(Killed):
            run_benchmark.main(single_thread_args(results, "--set", "eval_batch_size=7"))
    folder = folder_of(results)
    (folder / "config.yaml").unlink()  # as if B died before writing it
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}
    outcomes = run_grid(runs, options, torch.device("cpu"))
    assert outcomes[0].status.startswith("failed: ") and "checkpoint.pt was written by another configuration" \
        in outcomes[0].status
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"} == before


# -- class 7: an unreadable status file ------------------------------------------------------------
def test_a_status_of_random_bytes_is_taken_as_unfinished_and_resumed(reference, copy, capsys):
    folder = folder_of(copy)
    (folder / "status").write_bytes(bytes(range(128, 256)))
    code, out, _ = run(copy, capsys)
    assert code == 0
    assert "unreadable status file (not UTF-8 text): taken as unfinished, resuming it" in out
    assert read_status(folder) == "done" and metrics_of(folder) == metrics_of(reference)


def test_a_status_that_is_a_folder_fails_that_cell_and_the_grid_goes_on(copy, capsys):
    folder = folder_of(copy)
    (folder / "status").unlink()
    (folder / "status").mkdir()
    i = ARGS.index("--seeds")
    code = run_benchmark.main(ARGS[:i + 1] + ["0", "1"] + ARGS[i + 2:] + ["--results-dir", str(copy)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "is a folder, not a status file" in out and "trained 1" in out and "failed 1" in out
    assert (folder / "status").is_dir()  # left for the user, not deleted
    assert read_status(folder_of(copy, 1)) == "done"


# -- class 2: errors found only when a cell runs ---------------------------------------------------
def test_an_error_found_only_in_a_run_fails_that_cell_and_the_grid_goes_on(tmp_path, capsys, monkeypatch):
    from benchmarks import LTBenchError
    from benchmarks.train.training import Trainer

    original = Trainer.run

    def failing(self):
        if self.config["seed"] == 1:
            raise LTBenchError("something only a run can see")
        return original(self)

    monkeypatch.setattr(Trainer, "run", failing)
    results = tmp_path / "results"
    i = ARGS.index("--seeds")
    code = run_benchmark.main(ARGS[:i + 1] + ["1", "0"] + ARGS[i + 2:] + ["--results-dir", str(results)])
    out, err = capsys.readouterr()
    assert code == 1 and "| failed: LTBenchError: something only a run can see |" in out  # the summary table
    assert read_status(folder_of(results, 1)) == \
        "failed: LTBenchError: something only a run can see"
    assert read_status(folder_of(results)) == "done"


def test_a_method_its_constructor_refuses_stops_the_grid_before_anything_is_written(tmp_path, capsys, monkeypatch):
    from baselines.ce import CrossEntropy

    original = CrossEntropy.__init__

    def refusing(self, config, num_classes, class_counts):
        original(self, config, num_classes, class_counts)
        if config["lr"] == 0.05:
            raise ValueError("this lr and this backbone do not combine")

    monkeypatch.setattr(CrossEntropy, "__init__", refusing)
    results = tmp_path / "results"
    code = run_benchmark.main(single_thread_args(results, "--set", "lr=0.05"))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: the ce method cannot be built with this config (ValueError: this lr")
    assert not results.exists() or not any(results.rglob("*"))


# -- weaker ones: checkpoints ----------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["config missing", "config a list", "history a string"])
def test_a_checkpoint_with_a_missing_or_mistyped_entry_is_corrupt(damage, reference, copy, capsys):
    folder = folder_of(copy)
    state = torch.load(folder / "checkpoint.pt", weights_only=False)
    if damage == "config missing":
        del state["config"]
    elif damage == "config a list":
        state["config"] = [1, 2]
    else:
        state["history"] = "epoch 0"
    torch.save(state, folder / "checkpoint.pt")
    (folder / "status").write_text("running\n")
    code, out, _ = run(copy, capsys)
    assert code == 0 and "corrupt checkpoint" in out and "restarts from scratch" in out
    assert metrics_of(folder) == metrics_of(reference)


def test_a_mis_shaped_checkpoint_is_an_error_before_any_file_is_rewritten(copy, capsys):
    folder = folder_of(copy)
    state = torch.load(folder / "checkpoint.pt", weights_only=False)
    state["method"]["classifier.weight"] = torch.zeros(3, 3)
    torch.save(state, folder / "checkpoint.pt")
    (folder / "status").write_text("running\n")
    kept = lambda p: p.is_file() and p.name not in (".lock", "train.log")  # noqa: E731  (the log says it tried)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if kept(p)}
    code, _, err = run(copy, capsys)
    assert code == 2 and "does not fit this method's state" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in folder.iterdir() if kept(p)} == before


# -- weaker ones: disks, locks, reports, modes ------------------------------------------------------
def test_a_full_disk_when_taking_a_lock_is_one_line(tmp_path, capsys, monkeypatch):
    real_open = os.open

    def full(path, flags, *args):
        if str(path).endswith(".lock"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", full)
    code, _, err = run(tmp_path / "results", capsys)
    assert code == 2 and err.startswith("error: cannot take the lock ") and "No space left on device" in err
    assert len(err.strip().splitlines()) == 1


def test_a_full_disk_when_writing_the_report_is_one_line(reference, tmp_path, capsys, monkeypatch):
    from benchmarks import reporting

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(reporting, "atomic_write_text", full)
    code = report_cli.main(["--results-dir", str(reference.parents[3]), "--out", str(tmp_path / "r"), "--no-plots",
                            "--formats", "md"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write the report into" in err and "No space left on device" in err


def test_a_results_dir_that_is_a_symlink_loop_is_named(tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    code, _, err = run(loop, capsys)
    assert code == 2 and "is a symlink loop" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_files_get_the_mode_the_umask_gives(umask, tmp_path):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~umask


# -- class 8: evaluations of different checkpoints with one name ------------------------------------
def test_eval_checkpoint_never_overwrites_another_files_evaluation(reference, tmp_path, capsys):
    cell = ARGS + ["--results-dir", str(tmp_path / "results")]
    first, second = tmp_path / "a" / "ckpt.pth.tar", tmp_path / "b" / "ckpt.pth.tar"
    first.parent.mkdir()
    second.parent.mkdir()
    shutil.copy(reference / "checkpoint.pt", first)
    state = torch.load(reference / "checkpoint.pt", weights_only=False)
    state["method"] = {k: (v * 0 if v.is_floating_point() else v) for k, v in state["method"].items()}
    torch.save(state, second)
    assert run_benchmark.main(cell + ["--eval-checkpoint", str(first)]) == 0
    assert run_benchmark.main(cell + ["--eval-checkpoint", str(second)]) == 0
    assert run_benchmark.main(cell + ["--eval-checkpoint", str(first)]) == 0  # the same file: same folder
    capsys.readouterr()
    cell_folder = folder_of(tmp_path / "results").parent  # the evaluations sit beside the seeds
    evals = sorted(p.name for p in cell_folder.glob("eval-*"))
    assert len(evals) == 2 and evals[0] == "eval-ckpt" and evals[1].startswith("eval-ckpt-")
    records = {name: json.loads((cell_folder / name / "metrics.json").read_text())["checkpoint"] for name in evals}
    assert records["eval-ckpt"]["path"] == str(first.resolve())
    assert records[evals[1]]["path"] == str(second.resolve())
    assert evals[1] == f"eval-ckpt-{records[evals[1]]['sha256'][:12]}"


def test_eval_checkpoint_into_an_unwritable_results_dir_is_one_line(reference, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = run_benchmark.main(ARGS + ["--results-dir", str(blocker), "--eval-checkpoint",
                                      str(reference / "checkpoint.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "is a file, not a folder" in err and blocker.read_text() == "x"


# -- determinism across thread counts --------------------------------------------------------------
def test_a_resumed_run_takes_its_checkpoints_thread_count(reference, tmp_path, capsys, monkeypatch):
    results = tmp_path / "results"
    with monkeypatch.context() as patch:
        kill_after(patch, "checkpoint.pt", 1)
        with pytest.raises(Killed):
            run_benchmark.main(single_thread_args(results))  # trained with 1 thread (the fixture's)
    folder = folder_of(results)
    assert torch.load(folder / "checkpoint.pt", weights_only=False)["threads"] == 1
    torch.set_num_threads(2)
    try:
        code, out, _ = run(results, capsys)
        assert torch.get_num_threads() == 2  # given back after the run
    finally:
        torch.set_num_threads(1)
    assert code == 0 and "resuming with 1 CPU threads, as its checkpoint records (this process had 2)" in out
    assert json.loads((folder / "env.json").read_text())["threads"]["torch_intra_op"] == 1
    assert metrics_of(folder) == metrics_of(reference)
