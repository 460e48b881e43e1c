"""Where the grid runner puts the runs of a command line (tests name folders through the planner,
so they follow the results layout, variants included, instead of spelling it out)."""

from pathlib import Path

from benchmarks.commands.run import grid_options, parse_args
from benchmarks.run.grid import plan


def planned_folders(argv: list[str]) -> list[Path]:
    """The run folders `run_benchmark.py argv` trains, in its order (nothing is written)."""
    return [run.folder for run in plan(grid_options(parse_args(list(argv))))]


def planned_folder(argv: list[str]) -> Path:
    """The one run folder of a one-cell command line."""
    folders = planned_folders(argv)
    assert len(folders) == 1, folders
    return folders[0]
