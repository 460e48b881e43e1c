#!/usr/bin/env python
"""Write the report from the run folders (the checkout's script; `ltbench report` when installed).

See `benchmarks/commands/report.py` for the options, or `python report.py --help`.
"""

import sys

from benchmarks.commands.report import main

if __name__ == "__main__":
    sys.exit(main())
