"""Logging: every run folder gets train.log (the console's lines for that run, one line per epoch,
`--log-interval` step lines), appended on resume; lines marked file-only (the per-epoch lines when
a progress bar shows them) stay off the console."""

from __future__ import annotations

import logging
import re

import run_benchmark
from benchmarks.store.logs import LOGGER, run_log, setup_console

ARGS = ["--datasets", "digits", "--imb-factors", "10", "--methods", "ce", "--tiny", "--epochs", "2",
        "--set", "batch_size=32"]  # at most 20 images per class, LT: 6 steps of 32 (drop_last false)


def test_train_log_holds_the_console_lines_epochs_and_steps(tmp_path, capsys):
    results = tmp_path / "results"
    assert run_benchmark.main(ARGS + ["--no-progress", "--log-interval", "2", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    (folder,) = [f.parent for f in results.glob("digits-tiny*/if10/ce*/seed0/status")]  # under the grid label
    log = (folder / "train.log").read_text()
    lines = log.splitlines()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[1/1\] digits IF10 ce\S* seed0 -> ", lines[0])
    epochs = [line for line in lines if re.search(r"epoch \d \(\d of 2\): lr", line)]
    assert len(epochs) == 2 and "top-1" in epochs[0] and "loss" in epochs[0]
    steps = [line for line in lines if " step " in line]
    assert [re.search(r"step (\d+)/(\d+)", s).groups() for s in steps] == [("2", "6"), ("4", "6"), ("6", "6")] * 2
    assert "best top-1" in lines[-1]
    for line in lines:  # every line of the file was on the console (no progress bar here)
        assert line.split(" ", 2)[2] in out
    assert "grid smoke" not in log  # the grid's own lines are not this run's

    # A rerun of the finished cell appends nothing; a retrained one appends (train.log tells the folder's story).
    assert run_benchmark.main(ARGS + ["--no-progress", "--results-dir", str(results)]) == 0
    assert (folder / "train.log").read_text() == log
    (folder / "status").write_text("failed: test\n")
    assert run_benchmark.main(ARGS + ["--results-dir", str(results)]) == 0  # progress bars on (not a tty)
    out = capsys.readouterr().out
    grown = (folder / "train.log").read_text()
    assert grown.startswith(log) and "resumed from its checkpoint after epoch 2" in grown[len(log):]
    assert "resumed from its checkpoint after epoch 2" in out


def test_bad_log_interval_is_one_line_and_writes_nothing(tmp_path, capsys):
    assert run_benchmark.main(ARGS + ["--log-interval", "-1", "--results-dir", str(tmp_path / "r")]) == 2
    assert "--log-interval must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_run_log_collects_only_inside_its_block(tmp_path, capsys):
    setup_console()
    LOGGER.info("before")
    with run_log(tmp_path / "run"):
        LOGGER.info("inside")
        LOGGER.info("file only", extra={"file_only": True})
    LOGGER.info("after")
    text = (tmp_path / "run" / "train.log").read_text()
    assert "inside" in text and "file only" in text and "before" not in text and "after" not in text
    out = capsys.readouterr().out
    assert "inside" in out and "file only" not in out
    assert not any(isinstance(h, logging.FileHandler) for h in LOGGER.handlers)
