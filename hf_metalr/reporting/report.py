"""``write_report(out_dir)``: read ``<out_dir>/results.json`` and (re)write, into ``out_dir``,
``summary.csv``, ``report.md`` and the PNGs of :mod:`.plots`. Safe to call after every run."""

from __future__ import annotations

import json
from pathlib import Path

from .aggregate import aggregate
from .summary_csv import write_summary_csv
from .markdown import render_markdown
from .plots import write_plots

__all__ = ["FORMAT", "REPORT_NAME", "RESULTS_NAME", "SUMMARY_NAME", "ResultsError", "load_results", "write_report"]

FORMAT = 1
RESULTS_NAME = "results.json"
SUMMARY_NAME = "summary.csv"
REPORT_NAME = "report.md"


class ResultsError(ValueError):
    """``results.json`` is missing, unreadable, or not of format 1."""


def load_results(path: str | Path) -> dict:
    """Parse a ``results.json`` (NaN and null both accepted) and check it is format 1."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"no {path.name} at {path}")
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path} is not readable JSON: {e}") from e
    if not isinstance(results, dict) or results.get("format") != FORMAT:
        found = results.get("format") if isinstance(results, dict) else type(results).__name__
        raise ResultsError(f"{path} is not a format-{FORMAT} results file (format: {found!r})")
    if not isinstance(results.get("config"), dict) or not isinstance(results.get("runs"), list):
        raise ResultsError(f"{path} needs a 'config' object and a 'runs' list")
    return results


def write_report(out_dir: str | Path) -> Path:
    """Rebuild the report of ``out_dir`` from its ``results.json``; returns the ``report.md`` path."""
    out_dir = Path(out_dir)
    summary = aggregate(load_results(out_dir / RESULTS_NAME))
    write_summary_csv(summary, out_dir / SUMMARY_NAME)
    plots = write_plots(summary, out_dir)
    report = out_dir / REPORT_NAME
    report.write_text(render_markdown(summary, {name: p.name for name, p in plots.items()}))
    return report
