"""Shared command-line plumbing: a user error is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import functools
import signal
import sys
import threading
from typing import Callable

from benchmarks import LTBenchError


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are LTBenchErrors: one `error:` line and exit 2, like every other
    bad input, instead of a usage block."""

    def error(self, message: str):
        raise LTBenchError(f"{message} (see --help)")


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill's and schedulers' default signal), raised where the program is, so that it
    takes Ctrl-C's path: locks released, workers told to stop, the run folder left `running` with
    its last checkpoint (the report shows it interrupted), and the rerun resumes."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within: SIGTERM raises `Terminated` (main thread only; elsewhere signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main_guard(main: Callable[..., int]) -> Callable[..., int]:
    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None, *args, **kwargs) -> int:
        from benchmarks.store.logs import setup_console

        setup_console()  # the runner's lines (logging) on stdout
        try:
            with sigterm_as_interrupt():
                return main(argv, *args, **kwargs)
        except LTBenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except Terminated:
            print("terminated (SIGTERM): finished runs are kept; rerun the same command to resume", file=sys.stderr)
            return 143
        except KeyboardInterrupt:
            print("interrupted: finished runs are kept; rerun the same command to resume", file=sys.stderr)
            return 130

    return wrapped
