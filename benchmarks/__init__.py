"""ltbench: a reproducibility benchmark suite for long-tailed image recognition.

The package holds the harness (datasets, views, models, the epoch loop, evaluation, the results
store, grids and the report); the methods live in `bccl/` and `baselines/` and register themselves
in `benchmarks.methods.METHODS`.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"


class LTBenchError(Exception):
    """A user-facing error: bad input, missing data, unwritable folders.

    The command lines print its message on one line and exit with status 2, having written nothing.
    """
