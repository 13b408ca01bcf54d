"""Reporting of a compare run: ``results.json`` -> ``summary.csv``, ``report.md`` and PNG plots."""

from .aggregate import Summary, aggregate
from .report import ResultsError, load_results, write_report

__all__ = ["ResultsError", "Summary", "aggregate", "load_results", "write_report"]
