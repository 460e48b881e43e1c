"""The command lines, and the `ltbench` console entry point that dispatches to them.

    ltbench run [options]      = python run_benchmark.py [options]   (benchmarks.commands.run)
    ltbench report [options]   = python report.py [options]          (benchmarks.commands.report)

The two scripts at the top of a checkout stay (the README's quick start uses them); they and the
entry point call the same `main` functions. The entry point exists so that an installed ltbench
(a wheel, a plain `pip install .`) has its commands without a checkout.
"""

from __future__ import annotations

import sys

COMMANDS = {
    "run": ("benchmarks.commands.run", "train a grid of runs (python run_benchmark.py)"),
    "report": ("benchmarks.commands.report", "compare finished runs with the published numbers (python report.py)"),
}


def usage() -> str:
    lines = ["usage: ltbench {run,report} [options]", "", "commands:"]
    lines += [f"  {name:8s} {what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "ltbench <command> --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; known: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(COMMANDS[name][0]).main(rest, prog=f"ltbench {name}")


if __name__ == "__main__":
    sys.exit(main())
