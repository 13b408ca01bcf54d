"""The report's PNGs, drawn headless with matplotlib's Agg canvas (no pyplot, no global backend).

- ``lr_curve.png``: LR of param group 0 against epoch, one line per schedule (its first seed), log y;
- ``val_metric.png``: the threshold metric against epoch, median line and min–max band over seeds,
  threshold as a dashed line (the axis cut to the bulk of the curves when some points lie grossly
  outside it, with a note saying so);
- ``time_to_threshold.png``: median seconds to threshold per schedule, min–max error bars, labelled
  with the median and "k/n" (runs that reached it / runs); a hatched full-height "not reached" column for schedules none of whose runs reached it.

Each file is 900 x 500 pixels. Missing values (null/NaN) are left out; non-positive LRs too (log scale).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .aggregate import ScheduleSummary, Summary, number

__all__ = ["PLOT_FILES", "plot_lr_curve", "plot_time_to_threshold", "plot_val_metric", "robust_ylim", "schedule_style",
           "write_plots"]

PLOT_FILES = {"lr_curve": "lr_curve.png", "val_metric": "val_metric.png", "time_to_threshold": "time_to_threshold.png"}
FIGSIZE = (9, 5)
DPI = 100
_LINESTYLES = ("-", "--", "-.", ":")


def schedule_style(summary: Summary, name: str) -> dict:
    """Colour and line style of a schedule, the same in every plot; ``metalr`` is drawn black and thick."""
    if name == "metalr":
        return {"color": "black", "linewidth": 2.4, "linestyle": "-"}
    others = [s.schedule for s in summary.schedules if s.schedule != "metalr"]
    i = others.index(name) if name in others else len(others)
    return {"color": f"C{i % 10}", "linewidth": 1.6, "linestyle": _LINESTYLES[i % len(_LINESTYLES)]}


def _figure(title: str):
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="gray")


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def plot_lr_curve(summary: Summary, path: str | Path) -> Path:
    fig, ax = _figure("Learning rate per optimizer step (first seed of each schedule)")
    drawn = 0
    for s in summary.present:
        run = s.runs[0]
        points = np.array([(number(p[1]), number(p[2])) for p in run.get("lr_curve") or [] if len(p) >= 3], dtype=float)
        if points.size == 0:
            continue
        keep = np.isfinite(points).all(axis=1) & (points[:, 1] > 0)
        if not keep.any():
            continue
        ax.plot(points[keep, 0], points[keep, 1], label=f"{s.schedule} (seed {run.get('seed')})", **schedule_style(summary, s.schedule))
        drawn += 1
    if drawn:
        ax.set_yscale("log")
        ax.legend(loc="best", fontsize=9)
    else:
        _no_data(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    return _save(fig, Path(path))


def _val_bands(s: ScheduleSummary, key: str) -> np.ndarray:
    """Rows ``(epoch, median, min, max)`` of ``key`` over the seeds that have a finite value at that epoch."""
    by_epoch: dict[float, list[float]] = {}
    for run in s.runs:
        for e in run.get("evals") or []:
            epoch, value = number(e.get("epoch")), number(e.get(key))
            if not (math.isnan(epoch) or math.isnan(value)):
                by_epoch.setdefault(round(epoch, 6), []).append(value)
    rows = [(ep, float(np.median(v)), min(v), max(v)) for ep, v in sorted(by_epoch.items())]
    return np.array(rows, dtype=float).reshape(-1, 4)


BULK_SHARE = 0.01  # the y range is cut when the central half of the points would fill less than this share of it


def robust_ylim(values, threshold: float = math.nan) -> tuple[float, float] | None:
    """Y limits for curves with gross outliers (a run at a far too high LR whose first R² is -2e4
    would flatten every other curve to a line): when the central half of ``values`` (every point
    drawn, the bands' too) spans less than ``BULK_SHARE`` of their whole range, that central span
    widened by half of it on each side, and the threshold; None otherwise (matplotlib's own
    limits: an accuracy curve's early points, far below its plateau, do not squeeze the rest)."""
    values = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if values.size < 4:
        return None
    lo, hi = np.percentile(values, [25, 75])
    if math.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    span, whole = hi - lo, values.max() - values.min()
    if span <= 0 or span >= BULK_SHARE * whole:
        return None
    low = max(min(values.min(), lo), lo - span / 2)  # (lo and hi hold the threshold: its line stays in view)
    high = min(max(values.max(), hi), hi + span / 2)
    pad = 0.05 * (high - low)
    return float(low - pad), float(high + pad)


def plot_val_metric(summary: Summary, path: str | Path) -> Path:
    key = summary.threshold_metric
    n_seeds = max((s.n for s in summary.present), default=0)
    fig, ax = _figure(f"Validation {key[len('eval_'):]}: median and min–max over seeds (up to {n_seeds})")
    drawn, medians = 0, []
    for s in summary.present:
        rows = _val_bands(s, key)
        if rows.size == 0:
            continue
        medians.extend(rows[:, 1:].ravel())  # the medians and the bands: every point drawn
        style = schedule_style(summary, s.schedule)
        ax.plot(rows[:, 0], rows[:, 1], marker="o", markersize=3, label=s.schedule, **style)
        ax.fill_between(rows[:, 0], rows[:, 2], rows[:, 3], color=style["color"], alpha=0.12, linewidth=0)
        drawn += 1
    threshold = number(summary.config.get("threshold"))
    if not math.isnan(threshold):
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=1.2, label=f"threshold {threshold:g}")
    if drawn:
        ax.legend(loc="best", fontsize=9)
    else:
        _no_data(ax)
    limits = robust_ylim(medians, threshold)
    if limits is not None:
        ax.set_ylim(*limits)
        ax.text(0.01, 0.01, "axis cut to the bulk of the curves: some points lie far beyond it", transform=ax.transAxes,
                fontsize=8, color="gray", va="bottom")
    ax.set_xlabel("epoch")
    ax.set_ylabel(key)
    return _save(fig, Path(path))


def plot_time_to_threshold(summary: Summary, path: str | Path) -> Path:
    fig, ax = _figure("Seconds to the threshold: median, min–max over the runs that reached it (k/n: runs that did)")
    present = summary.present
    if not present:
        _no_data(ax)
        return _save(fig, Path(path))
    stats = [s.stats["seconds_to_threshold"] for s in present]
    top = max((st.max for st in stats if st.n), default=1.0)
    x = np.arange(len(present))
    for i, (s, st) in enumerate(zip(present, stats)):
        color = schedule_style(summary, s.schedule)["color"]
        if st.n:
            err = [[st.median - st.min], [st.max - st.median]]
            ax.bar(i, st.median, color=color, alpha=0.85, yerr=err, capsize=6, ecolor="dimgray")
            ax.text(i, st.max + 0.02 * top, f"{st.median:.1f} s\n{s.reached}/{s.n}", ha="center", va="bottom",
                    fontsize=9 if len(present) <= 6 else 8)
        else:
            # a full-height hatched column: "off the chart", not a number of seconds
            ax.bar(i, 1.25 * top, facecolor="none", edgecolor="lightgray", hatch="//", linewidth=0)
            ax.text(i, 0.6 * top, f"not reached\n0/{s.n}", ha="center", va="center", fontsize=9, color="dimgray",
                    bbox={"facecolor": "white", "edgecolor": "lightgray", "boxstyle": "round"})
    ax.set_axisbelow(True)
    ax.grid(False, axis="x")
    ax.set_xticks(x, [s.schedule for s in present], rotation=30, ha="right")  # ten names do not fit side by side
    ax.set_ylim(0, top * 1.25)
    ax.set_ylabel("seconds")
    if not any(st.n for st in stats):
        ax.set_yticks([])
        ax.text(0.5, 0.95, "no schedule reached the threshold", transform=ax.transAxes, ha="center", va="top",
                bbox={"facecolor": "white", "edgecolor": "none"})
    return _save(fig, Path(path))


def write_plots(summary: Summary, out_dir: str | Path) -> dict[str, Path]:
    """Write the three PNGs into ``out_dir``; returns ``{plot name: path}`` (names as in :data:`PLOT_FILES`)."""
    out_dir = Path(out_dir)
    draw = {"lr_curve": plot_lr_curve, "val_metric": plot_val_metric, "time_to_threshold": plot_time_to_threshold}
    return {name: draw[name](summary, out_dir / file) for name, file in PLOT_FILES.items()}
