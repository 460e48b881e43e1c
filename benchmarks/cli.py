"""Shared command-line plumbing: a user error is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable

from benchmarks import LTBenchError


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are LTBenchErrors: one `error:` line and exit 2, like every other
    bad input, instead of a usage block."""

    def error(self, message: str):
        raise LTBenchError(f"{message} (see --help)")


def main_guard(main: Callable[..., int]) -> Callable[..., int]:
    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None, *args, **kwargs) -> int:
        from benchmarks.logs import setup_console

        setup_console()  # the runner's lines (logging) on stdout
        try:
            return main(argv, *args, **kwargs)
        except LTBenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: finished runs are kept; rerun the same command to resume", file=sys.stderr)
            return 130

    return wrapped
