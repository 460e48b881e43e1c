"""Compare finished runs with the published numbers: tables, verdicts, plots, recipe differences.

The same command as `python report.py` (a checkout) and `ltbench report` (any install).

    python report.py                              # results/ -> reports/ (md csv tex html png)
    python report.py --results-dir results --out reports --tolerance 0.5
    python report.py --formats md csv --no-plots  # tables only, no matplotlib
    python report.py --from-csv kept/runs.csv --out reports/kept   # re-render a kept summary

Reads run folders (or, with --from-csv, a kept summary: docs/report-statistics.md) only: it never
trains anything and imports no training code. The markdown tables are printed and written with
the other formats under --out. Verdict rules: benchmarks/reporting/aggregate.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.commands.cli import ArgumentParser, main_guard
from benchmarks.reporting import FORMATS, build_report, build_report_from_csv
from benchmarks.reporting.aggregate import DEFAULT_TOLERANCE


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--results-dir", type=Path, default=Path("results"), help="where the run folders are (default: results)")
    source.add_argument("--from-csv", type=Path, metavar="PATH",
                        help="re-render from a kept summary instead of run folders: a report's runs.csv (per_class.csv "
                             "and comparisons.csv beside it are used when present)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="where the report files go (default: reports)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"|run - paper| in top-1 points that counts as reproduced (default: {DEFAULT_TOLERANCE})")
    p.add_argument("--formats", nargs="+", action="extend", choices=FORMATS,
                   help=f"what to write (default: all of {' '.join(FORMATS)})")
    p.add_argument("--no-plots", action="store_true", help="no figures: no PNG files, HTML without images")
    return p.parse_args(argv)


@main_guard
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    options = dict(tolerance=args.tolerance, formats=args.formats or list(FORMATS), plots=not args.no_plots)
    if args.from_csv is not None:
        report = build_report_from_csv(args.from_csv, args.out, **options)
    else:
        report = build_report(args.results_dir, args.out, **options)
    if report.empty:
        where = args.from_csv if args.from_csv is not None else f"under {args.results_dir}"
        print(f"no runs {where}: nothing to report (run run_benchmark.py first)")
        return 0
    print(report.markdown)
    print(f"wrote {len(report.files)} files to {args.out}: "
          + ", ".join(sorted({str(p.relative_to(args.out).parts[0]) for p in report.files})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
