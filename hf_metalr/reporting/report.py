"""``write_report(out_dir)``: read ``<out_dir>/results.json`` and (re)write, into ``out_dir``,
``summary.csv``, ``report.md`` and the PNGs of :mod:`.plots`. Safe to call after every run."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .aggregate import aggregate, number, threshold_metric
from .summary_csv import write_summary_csv
from .markdown import render_markdown
from .plots import write_plots

__all__ = ["FORMAT", "REPORT_NAME", "RESULTS_NAME", "SUMMARY_NAME", "ResultsError", "crossings_at_threshold", "load_results",
           "write_report"]

FORMAT = 1
RESULTS_NAME = "results.json"
SUMMARY_NAME = "summary.csv"
REPORT_NAME = "report.md"


class ResultsError(ValueError):
    """``results.json`` is missing, unreadable, not of format 1, or not of its shape."""


def load_results(path: str | Path) -> dict:
    """Parse a ``results.json`` (NaN and null both accepted) and check it is format 1, with the shape
    that the report and ``compare --resume`` read (values inside may be null, NaN or junk)."""
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
    problem = _shape_problem(results)
    if problem:
        raise ResultsError(f"{path} is not shaped like a results.json written by hf-metalr compare: {problem}. "
                           "Restore the file, or rerun the comparison into a fresh --out.")
    return results


def _shape_problem(results: dict) -> str | None:
    """The first place where ``results`` departs from the shape the readers index into, or None."""
    config = results["config"]
    for key in ("schedules", "seeds", "test_metrics"):
        if key in config and not isinstance(config[key], list):
            return f"config.{key} must be a list, got {type(config[key]).__name__}"
    if not all(_whole(seed) for seed in config.get("seeds") or []):
        return "config.seeds must be whole numbers"
    for i, run in enumerate(results["runs"]):
        if not isinstance(run, dict):
            return f"runs[{i}] must be an object, got {type(run).__name__}"
        if not isinstance(run.get("schedule"), str) or not _whole(run.get("seed")):
            return f"runs[{i}] needs a 'schedule' name and a whole-number 'seed'"
        for key, item_type, item_name in (("evals", dict, "objects"), ("lr_curve", list, "[step, epoch, lr] lists"),
                                          ("train_loss", list, "[step, epoch, loss] lists")):
            if run.get(key) is not None and not (isinstance(run[key], list) and all(isinstance(x, item_type) for x in run[key])):
                return f"runs[{i}].{key} must be a list of {item_name}"
        for key in ("test", "threshold", "lr_stability"):
            if run.get(key) is not None and not isinstance(run[key], dict):
                return f"runs[{i}].{key} must be an object, got {type(run[key]).__name__}"
    return None


def crossings_at_threshold(results: dict) -> dict:
    """``results`` with each run's ``threshold`` (when it first reached the config's threshold)
    recomputed from its stored evaluations, so that the report always reads the threshold it names
    (one edited into ``results.json`` by hand, say); a run whose evaluations cannot be read counts as
    not reaching it. Unchanged without a threshold."""
    from ..compare.measures import time_to_threshold

    config = results["config"]
    threshold = number(config.get("threshold"))
    if math.isnan(threshold):  # no threshold to recompute against: the stored crossings stand
        return results
    key, greater = threshold_metric(config), bool(config.get("greater_is_better", True))
    runs = []
    for run in results["runs"]:
        try:
            crossing = time_to_threshold(run["evals"], key, threshold, greater)
        except (KeyError, TypeError, ValueError):  # evaluations that cannot be read: no crossing of this threshold
            crossing = {"reached": False, "evals": None, "epoch": None, "seconds": None, "step": None}
        runs.append({**run, "threshold": crossing})
    return {**results, "runs": runs}


def write_report(out_dir: str | Path) -> Path:
    """Rebuild the report of ``out_dir`` from its ``results.json`` (the crossings of its threshold
    recomputed from the runs' evaluations); returns the ``report.md`` path."""
    out_dir = Path(out_dir)
    summary = aggregate(crossings_at_threshold(load_results(out_dir / RESULTS_NAME)))
    write_summary_csv(summary, out_dir / SUMMARY_NAME)
    plots = write_plots(summary, out_dir)
    report = out_dir / REPORT_NAME
    report.write_text(render_markdown(summary, {name: p.name for name, p in plots.items()}))
    return report


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
