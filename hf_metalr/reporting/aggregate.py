"""Per-schedule aggregates of a ``results.json`` (format 1): median, min and max over seeds.

:func:`aggregate` turns the parsed results into a :class:`Summary`: one :class:`ScheduleSummary`
per schedule (config order first, then any other schedule found in the runs), each holding its
runs (sorted by seed), the counts ``n`` / ``reached`` / ``diverged``, and one :class:`Stat` per
:class:`Measure`.

Rules:

- a value that is ``null``, NaN, infinite or not a number is missing and left out of the statistics;
- the ``*_to_threshold`` measures are taken over the runs that reached the threshold only (the
  table's cells, beside its "reached k/n"); :meth:`ScheduleSummary.median_counting_misses` gives
  their median over all runs, a run that never reached the threshold counting as never (infinity),
  which is what the findings rank by, as ``make meta-eval`` does;
  every other measure over all runs of the schedule, diverged ones included (their NaNs drop out);
- a schedule's runs are the ones present: a seed missing from an interrupted compare just lowers
  ``n`` and shows up in :attr:`ScheduleSummary.missing_seeds`; a repeated (schedule, seed) keeps
  the last run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..controller.direction import greater_is_better_by_name

__all__ = [
    "Measure",
    "ScheduleSummary",
    "Stat",
    "Summary",
    "aggregate",
    "lower_is_better",
    "measures",
    "number",
    "stat",
    "threshold_metric",
]


def number(value) -> float:
    """``value`` as a finite float, or NaN when it is null, NaN, infinite or not a number."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def threshold_metric(config: dict) -> str:
    """The validation key the threshold applies to: ``"eval_" + config["metric"]``."""
    metric = str(config.get("metric", "loss"))
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def lower_is_better(test_metric: str, config: dict) -> bool:
    """Direction of a test metric: the config's for ``config["metric"]``, else by its name."""
    if test_metric == threshold_metric(config)[len("eval_"):]:
        return not config.get("greater_is_better", True)
    return not greater_is_better_by_name(test_metric)


@dataclass(frozen=True)
class Measure:
    """One aggregated quantity: where it sits in a run, how to print it, which way is better.

    ``path`` is the chain of keys into a run dict; ``lower_is_better`` is None for measures
    that describe behaviour rather than quality (the LR stability ones).
    """

    key: str
    label: str
    path: tuple[str, ...]
    fmt: str
    lower_is_better: bool | None
    reached_only: bool = False

    def value(self, run: dict) -> float:
        node = run
        for part in self.path:
            node = node.get(part) if isinstance(node, dict) else None
        return number(node)

    def format(self, x: float) -> str:
        return "–" if math.isnan(x) else self.fmt.format(x)

    def rounded(self, x: float) -> float:
        """``x`` at the precision the report prints it, so that numbers printed alike compare equal."""
        return float(self.fmt.format(x)) if math.isfinite(x) else x


def measures(config: dict) -> list[Measure]:
    """The measures of a results file, in table order (one ``test_<name>`` per config test metric)."""
    out = [
        Measure("evals_to_threshold", "evals to threshold", ("threshold", "evals"), "{:g}", True, True),
        Measure("epochs_to_threshold", "epochs to threshold", ("threshold", "epoch"), "{:.2f}", True, True),
        Measure("seconds_to_threshold", "seconds to threshold", ("threshold", "seconds"), "{:.1f}", True, True),
    ]
    for name in config.get("test_metrics") or []:
        out.append(Measure(f"test_{name}", f"test {name}", ("test", name), "{:.3f}", lower_is_better(name, config)))
    out += [
        Measure("best_val_loss", "best val loss", ("best_val_loss",), "{:.3f}", True),
        Measure("std_dlog_lr", "std Δlog LR", ("lr_stability", "std_dlog_lr"), "{:.3f}", None),
        Measure("direction_changes", "LR direction changes", ("lr_stability", "direction_changes"), "{:g}", None),
        Measure("lr_min", "LR min", ("lr_stability", "lr_min"), "{:.2e}", None),
        Measure("lr_max", "LR max", ("lr_stability", "lr_max"), "{:.2e}", None),
    ]
    return out


@dataclass(frozen=True)
class Stat:
    """Median, min and max of the ``n`` finite values (all NaN when ``n == 0``)."""

    median: float
    min: float
    max: float
    n: int


def stat(values) -> Stat:
    xs = np.array([number(v) for v in values], dtype=float)
    xs = xs[np.isfinite(xs)]
    if xs.size == 0:
        return Stat(math.nan, math.nan, math.nan, 0)
    return Stat(float(np.median(xs)), float(xs.min()), float(xs.max()), int(xs.size))


def _reached(run: dict) -> bool:
    threshold = run.get("threshold")
    return isinstance(threshold, dict) and threshold.get("reached") is True


@dataclass
class ScheduleSummary:
    schedule: str
    runs: list[dict]
    n: int
    reached: int
    diverged: int
    stats: dict[str, Stat]
    missing_seeds: list = field(default_factory=list)
    medians_counting_misses: dict[str, float] = field(default_factory=dict)

    def median(self, key: str) -> float:
        return self.stats[key].median

    def median_counting_misses(self, key: str) -> float:
        """The median of a ``*_to_threshold`` measure over all runs, a run that never reached the
        threshold counting as infinity: ``inf`` when the median run never reached it, NaN without runs."""
        return self.medians_counting_misses.get(key, math.nan)


@dataclass
class Summary:
    config: dict
    threshold_metric: str
    measures: list[Measure]
    schedules: list[ScheduleSummary]

    def get(self, name: str) -> ScheduleSummary | None:
        return next((s for s in self.schedules if s.schedule == name), None)

    @property
    def present(self) -> list[ScheduleSummary]:
        """The schedules with at least one run."""
        return [s for s in self.schedules if s.n > 0]


def _seed_key(run: dict):
    seed = run.get("seed")
    return (0, seed) if isinstance(seed, (int, float)) else (1, str(seed))


def aggregate(results: dict) -> Summary:
    """Aggregate a parsed ``results.json`` over seeds, one :class:`ScheduleSummary` per schedule."""
    config = results.get("config") or {}
    ms = measures(config)
    runs_of: dict[str, dict] = {str(name): {} for name in config.get("schedules") or []}
    for run in results.get("runs") or []:
        runs_of.setdefault(str(run.get("schedule")), {})[run.get("seed")] = run
    schedules = []
    for name, by_seed in runs_of.items():
        runs = sorted(by_seed.values(), key=_seed_key)
        reached = [r for r in runs if _reached(r)]
        stats = {m.key: stat(m.value(r) for r in (reached if m.reached_only else runs)) for m in ms}
        counting_misses = {m.key: float(np.median([m.value(r) if _reached(r) else math.inf for r in runs]))
                           for m in ms if m.reached_only and runs}
        schedules.append(
            ScheduleSummary(
                schedule=name,
                runs=runs,
                n=len(runs),
                reached=len(reached),
                diverged=sum(r.get("status") == "diverged" for r in runs),
                stats=stats,
                missing_seeds=[s for s in config.get("seeds") or [] if s not in by_seed],
                medians_counting_misses=counting_misses,
            )
        )
    return Summary(config=config, threshold_metric=threshold_metric(config), measures=ms, schedules=schedules)
