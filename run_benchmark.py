#!/usr/bin/env python
"""Run a benchmark grid (the checkout's script; `ltbench run` is the same command when installed).

See `benchmarks/commands/run.py` for the options, or `python run_benchmark.py --help`.
"""

import sys

from benchmarks.commands.run import main

if __name__ == "__main__":
    sys.exit(main())
