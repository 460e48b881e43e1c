"""Logging: one `ltbench` logger for every line the runner says, a console handler for the
command lines, and a `train.log` file in every run folder.

Why logging rather than print: a run's lines must reach two places, the console (or a worker's
`worker.log`) and the run folder's own `train.log`, whichever launcher ran the cell; a handler
attached for the duration of one run (`run_log`) does that without threading a file through
every function. A run folder's `train.log` holds what the console showed for that run (its
header line, resume and checkpoint notes, its outcome) plus one line per epoch and, with
`--log-interval N`, one line every N steps, each with a timestamp; it is appended to on resume,
so it tells the whole story of the folder.

The command lines call `setup_console()`; a Python caller who wants the lines on the console
calls it too (or configures `logging` as it likes: the lines are INFO records of "ltbench").
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator

LOGGER = logging.getLogger("ltbench")
TRAIN_LOG = "train.log"
FILE_ONLY = {"file_only": True}  # `extra=` of a record the console does not show (it has a progress bar)


class _Stdout(logging.StreamHandler):
    """A StreamHandler on whatever `sys.stdout` is at each record (so that redirections made after
    setup, such as pytest's capture or contextlib.redirect_stdout, see the lines)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "file_only", False):
            return
        self.stream = sys.stdout
        super().emit(record)


def setup_console(level: int = logging.INFO) -> None:
    """Show the ltbench lines on stdout, as plain messages (once per process)."""
    LOGGER.setLevel(logging.INFO)
    if not any(isinstance(h, _Stdout) for h in LOGGER.handlers):
        handler = _Stdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(handler)
    for handler in LOGGER.handlers:
        if isinstance(handler, _Stdout):
            handler.setLevel(level)
    LOGGER.propagate = False


@contextlib.contextmanager
def run_log(folder: Path, enabled: bool = True) -> Iterator[None]:
    """Append every ltbench line logged inside the block to `<folder>/train.log`.

    `enabled=False` (torchrun ranks other than 0, which write no files) does nothing.
    """
    if not enabled:
        yield
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(Path(folder) / TRAIN_LOG, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.INFO)
    if LOGGER.level == logging.NOTSET or LOGGER.level > logging.INFO:
        LOGGER.setLevel(logging.INFO)
    LOGGER.addHandler(handler)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        handler.close()
