"""``summary.csv``: one row per schedule with ``schedule, n, reached, diverged`` and, per measure,
``<key>_median, <key>_min, <key>_max`` (empty when the schedule has no finite value for it)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from .aggregate import Summary

__all__ = ["summary_rows", "write_summary_csv"]


def _cell(x: float) -> str:
    return "" if math.isnan(x) else format(x, ".10g")


def summary_rows(summary: Summary) -> list[dict[str, str | int]]:
    rows = []
    for s in summary.schedules:
        row: dict[str, str | int] = {"schedule": s.schedule, "n": s.n, "reached": s.reached, "diverged": s.diverged}
        for m in summary.measures:
            st = s.stats[m.key]
            row.update({f"{m.key}_median": _cell(st.median), f"{m.key}_min": _cell(st.min), f"{m.key}_max": _cell(st.max)})
        rows.append(row)
    return rows


def write_summary_csv(summary: Summary, path: str | Path) -> Path:
    """Write the summary rows to ``path`` (overwriting it) and return the path."""
    path = Path(path)
    fields = ["schedule", "n", "reached", "diverged"]
    fields += [f"{m.key}_{part}" for m in summary.measures for part in ("median", "min", "max")]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(summary_rows(summary))
    return path
