"""``hf-metalr report DIR``: rebuild ``DIR/report.md``, ``summary.csv`` and the plots from ``DIR/results.json``.

Prints the report path and returns 0; on a missing directory or a bad results file prints
``hf-metalr report: error: ...`` to stderr and returns 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .report import RESULTS_NAME, ResultsError, write_report

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hf-metalr report", description="Rebuild report.md, summary.csv and the plots of a compare directory from its results.json.")
    p.add_argument("dir", type=Path, help=f"a compare output directory holding {RESULTS_NAME}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    error = None
    if not args.dir.is_dir():
        error = f"no such directory: {args.dir}"
    else:
        try:
            print(write_report(args.dir))
        except ResultsError as e:
            error = str(e)
    if error:
        print(f"hf-metalr report: error: {error}", file=sys.stderr)
        return 2
    return 0
