"""``report.md``: title, config line, findings written from the numbers, the aggregate table, notes
on diverged and missing runs, and the plots embedded by relative link.

The findings (:func:`findings`) are sentences built only from the aggregates:

1. which schedule reached the threshold first: the lowest median evals to threshold over all its
   runs, a run that never reached it counting as never (so a schedule whose median run never
   reached it is not ranked), ties broken by median seconds at the printed 0.1 s, then by config
   order; and by how much against the next one and ``metalr``;
2. ``metalr`` against the best baseline (the fastest schedule other than ``metalr`` and its
   random-init ablation ``metalr-random``; if none's median run reached the threshold, the best by
   the first test metric, else by best val loss): evals/seconds ratio and test metric differences
   (best val loss when there are no test metrics);
3. the measures on which ``metalr`` was behind the best schedule, and where it was worst;
4. the LR stability contrast (median std of Δlog LR, direction changes, LR range).

Numbers are compared at the precision they are printed, so two that print alike are a tie. The
findings read sensibly with one schedule, without ``metalr``, and when nothing reached the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from .aggregate import Measure, ScheduleSummary, Stat, Summary, number

__all__ = ["findings", "render_markdown", "stat_cell"]

METALR = "metalr"
_PLOT_TITLES = {
    "lr_curve": "Learning rate per step (first seed)",
    "val_metric": "Validation metric over seeds",
    "time_to_threshold": "Seconds to threshold",
}


def stat_cell(measure: Measure, st: Stat) -> str:
    """``median [min–max]`` in the measure's format, or ``–`` without values."""
    if st.n == 0:
        return "–"
    return f"{measure.format(st.median)} [{measure.format(st.min)}–{measure.format(st.max)}]"


# ---------------------------------------------------------------- small phrases


def _evals(x: float) -> str:
    return f"{x:g} eval" + ("" if x == 1 else "s")


def _ratio(a: float, b: float) -> str:
    return "n/a" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}×"


def _threshold_phrase(summary: Summary) -> str | None:
    threshold = number(summary.config.get("threshold"))
    if math.isnan(threshold):
        return None
    sign = "≥" if summary.config.get("greater_is_better", True) else "≤"
    return f"{summary.threshold_metric} {sign} {threshold:g}"


def _names(schedules: list[ScheduleSummary]) -> str:
    """``a/b/c``, or ``a/b/c and 2 more`` beyond three."""
    names = [s.schedule for s in schedules]
    return "/".join(names) if len(names) <= 3 else "/".join(names[:3]) + f" and {len(names) - 3} more"


def _quality_measures(summary: Summary) -> list[Measure]:
    """The final-quality measures metalr is compared on: the test metrics, else the best val loss."""
    tests = [m for m in summary.measures if m.key.startswith("test_")]
    return tests or [m for m in summary.measures if m.key == "best_val_loss"]


def _better(a: float, b: float, lower: bool) -> bool:
    """Whether ``a`` beats ``b``; NaN never beats anything and loses to any number."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a < b if lower else a > b


# ---------------------------------------------------------------- 1. who reached first


def _to_threshold(s: ScheduleSummary, key: str) -> float:
    """The median of a ``*_to_threshold`` measure over all of ``s``'s runs, a miss counting as never
    (``inf``), at the precision the report prints it."""
    value = s.median_counting_misses(key)
    digits = {"seconds_to_threshold": 1, "epochs_to_threshold": 2}.get(key)  # as the report prints them
    return round(value, digits) if digits is not None and math.isfinite(value) else value


def _seconds_ratio(a: ScheduleSummary, b: ScheduleSummary) -> str:
    """``a``'s median seconds to threshold over ``b``'s, from the medians before the report's rounding
    (seconds under 1 would otherwise be ratios of tenths)."""
    key = "seconds_to_threshold"
    return _ratio(a.median_counting_misses(key), b.median_counting_misses(key))


def _median_run_reached(s: ScheduleSummary) -> bool:
    return math.isfinite(_to_threshold(s, "evals_to_threshold"))


def _by_speed(schedules: list[ScheduleSummary]) -> list[ScheduleSummary]:
    """The schedules whose median run reached the threshold, fastest first (stable: config order breaks ties)."""
    def key(s: ScheduleSummary):
        seconds = _to_threshold(s, "seconds_to_threshold")
        return (_to_threshold(s, "evals_to_threshold"), math.inf if math.isnan(seconds) else seconds)

    return sorted((s for s in schedules if _median_run_reached(s)), key=key)


def _speed(s: ScheduleSummary) -> str:
    return f"{_evals(_to_threshold(s, 'evals_to_threshold'))} ({_to_threshold(s, 'seconds_to_threshold'):.1f} s)"


def _partly_reached(schedules: list[ScheduleSummary]) -> str:
    """``a 1/3, b 2/5``: the schedules some of whose runs reached the threshold, but not the median run."""
    return ", ".join(f"{s.schedule} {s.reached}/{s.n}" for s in schedules if s.reached and not _median_run_reached(s))


def _first_sentence(summary: Summary, threshold: str) -> str:
    present = summary.present
    ranked = _by_speed(present)
    partly = _partly_reached(present)
    if not ranked:
        if partly:
            return (f"No schedule's median run reached the threshold ({threshold}); some runs did: {partly} "
                    "(reached / runs).")
        return f"No schedule reached the threshold ({threshold}) in any run."
    first = ranked[0]
    fe, fs = _to_threshold(first, "evals_to_threshold"), _to_threshold(first, "seconds_to_threshold")
    out = [
        f"**{first.schedule}** reached the threshold ({threshold}) first: median {_evals(fe)} "
        f"(epoch {_to_threshold(first, 'epochs_to_threshold'):.2f}, {fs:.1f} s) over its runs, a run that never "
        f"reached it counting as never; {first.reached}/{first.n} runs reached it."
    ]
    compared = {first.schedule}
    if len(ranked) > 1:
        nxt = ranked[1]
        compared.add(nxt.schedule)
        ne, ns = _to_threshold(nxt, "evals_to_threshold"), _to_threshold(nxt, "seconds_to_threshold")
        if ne == fe:
            out.append(
                f"The next one, **{nxt.schedule}**, tied at {_evals(ne)} but took longer ({ns:.1f} s vs {fs:.1f} s)."
                if ns != fs
                else f"**{nxt.schedule}** tied with it on both evals and seconds."
            )
        else:
            out.append(
                f"The next best, **{nxt.schedule}**, needed {_speed(nxt)} in {nxt.reached}/{nxt.n} runs: "
                f"{first.schedule} needed {_evals(ne - fe)} fewer "
                f"({_ratio(fe, ne)} the evals, {_seconds_ratio(first, nxt)} the seconds)."
            )
    elif len(present) > 1:
        out.append("No other schedule's median run reached it" + (f" (some runs did: {partly})." if partly else "."))
    metalr = summary.get(METALR)
    if metalr is not None and metalr.n and metalr.schedule not in compared:
        if _median_run_reached(metalr):
            out.append(
                f"metalr needed {_speed(metalr)} in {metalr.reached}/{metalr.n} runs, "
                f"{_ratio(_to_threshold(metalr, 'evals_to_threshold'), fe)} {first.schedule}'s evals."
            )
        elif metalr.reached and len(ranked) < 2:
            pass  # named among the partly reached above
        elif metalr.reached:
            out.append(f"metalr's median run never reached it ({metalr.reached}/{metalr.n} runs did).")
        else:
            out.append(f"metalr never reached it (0/{metalr.n} runs).")
    return " ".join(out)


# ---------------------------------------------------------------- 2. metalr vs the best baseline


def _best_baseline(summary: Summary, baselines: list[ScheduleSummary]) -> tuple[ScheduleSummary, str]:
    """The best non-metalr schedule and how it was chosen."""
    ranked = _by_speed(baselines)
    if ranked:
        return ranked[0], "fastest to the threshold"
    for m in _quality_measures(summary):
        scored = [s for s in baselines if s.stats[m.key].n]
        if scored:
            best = scored[0]
            for s in scored[1:]:
                if _better(m.rounded(s.median(m.key)), m.rounded(best.median(m.key)), m.lower_is_better):
                    best = s
            return best, f"{'lowest' if m.lower_is_better else 'highest'} {m.label}"
    return baselines[0], "the only candidate" if len(baselines) == 1 else "first listed"


def _quality_comparison(summary: Summary, a: ScheduleSummary, b: ScheduleSummary) -> str:
    """``Final test accuracy 0.940 vs 0.960 (-0.020, worse); ...`` (``a`` first)."""
    parts = []
    for m in _quality_measures(summary):
        x, y = m.rounded(a.median(m.key)), m.rounded(b.median(m.key))
        if math.isnan(x) or math.isnan(y):
            parts.append(f"{m.label} {m.format(x) if not math.isnan(x) else 'n/a'} vs {m.format(y) if not math.isnan(y) else 'n/a'}")
            continue
        verdict = "better" if _better(x, y, m.lower_is_better) else "worse" if _better(y, x, m.lower_is_better) else "equal"
        parts.append(f"{m.label} {m.format(x)} vs {m.format(y)} ({x - y:+.3f}, {verdict})")
    text = "; ".join(parts)
    if text.startswith("test "):
        text = "final " + text
    return (text[0].upper() + text[1:] + ".") if text else ""


def _metalr_sentence(summary: Summary) -> str | None:
    metalr = summary.get(METALR)
    present = summary.present
    if metalr is None or metalr.n == 0:
        return "There are no metalr runs in these results, so metalr is not compared." if present else None
    others = [s for s in present if s.schedule != METALR]
    if not others:
        return "Only metalr was run, so there is no baseline to compare it with."
    baselines = [s for s in others if not s.schedule.startswith(METALR)] or others  # metalr-random: an ablation
    best, how = _best_baseline(summary, baselines)
    head = f"Against the best baseline, **{best.schedule}** ({how}),"
    m_reached, b_reached = _median_run_reached(metalr), _median_run_reached(best)
    if m_reached and b_reached:
        me, be = _to_threshold(metalr, "evals_to_threshold"), _to_threshold(best, "evals_to_threshold")
        ms, bs = _to_threshold(metalr, "seconds_to_threshold"), _to_threshold(best, "seconds_to_threshold")
        speed = (
            f"{head} metalr needed {_ratio(me, be)} the evals to threshold (median {me:g} vs {be:g}) "
            f"and {_seconds_ratio(metalr, best)} the seconds ({ms:.1f} vs {bs:.1f}); "
            f"it reached the threshold in {metalr.reached}/{metalr.n} runs vs {best.reached}/{best.n}."
        )
    elif b_reached:
        speed = (
            f"{head} metalr's median run never reached the threshold ({metalr.reached}/{metalr.n} runs did), while "
            f"{best.schedule}'s did ({best.reached}/{best.n} runs, median {_evals(_to_threshold(best, 'evals_to_threshold'))})."
        )
    elif m_reached:
        speed = (
            f"{head} metalr reached the threshold in {metalr.reached}/{metalr.n} runs "
            f"(median {_evals(_to_threshold(metalr, 'evals_to_threshold'))}); no baseline's median run did."
        )
    elif _threshold_phrase(summary) is not None:
        speed = f"{head} neither metalr's median run nor any baseline's reached the threshold."
    else:
        speed = f"Comparing metalr with the best baseline, **{best.schedule}** ({how}):"
    return f"{speed} {_quality_comparison(summary, metalr, best)}".strip()


# ---------------------------------------------------------------- 3. where metalr lost

# (label, value per schedule, lower is better, how to print a value)
_Judged = tuple[str, Callable[[ScheduleSummary], float], bool, Callable[[ScheduleSummary], str]]


def _judged(summary: Summary) -> list[_Judged]:
    items: list[_Judged] = []
    if _threshold_phrase(summary) is not None:
        items.append(("runs reaching the threshold", lambda s: s.reached / s.n, False, lambda s: f"{s.reached}/{s.n}"))
    for m in summary.measures:
        if m.lower_is_better is None:
            continue
        if m.reached_only:  # over all runs, a miss counting as never: "never reached" when the median run missed
            value = lambda s, k=m.key: _to_threshold(s, k)  # noqa: E731
            show = lambda s, m=m: m.format(_to_threshold(s, m.key)) if _median_run_reached(s) else "never reached"  # noqa: E731
        else:
            value = lambda s, m=m: m.rounded(s.median(m.key))  # noqa: E731
            show = lambda s, m=m: m.format(s.median(m.key)) if s.stats[m.key].n else "n/a"  # noqa: E731
        items.append((m.label, value, m.lower_is_better, show))
    items.append(("diverged runs", lambda s: s.diverged / s.n, True, lambda s: f"{s.diverged}/{s.n}"))
    return items


def _lost_sentence(summary: Summary) -> str | None:
    metalr = summary.get(METALR)
    present = summary.present
    if metalr is None or metalr.n == 0 or len(present) < 2:
        return None
    behind, ahead = [], []
    judged = 0
    for label, value, lower, show in _judged(summary):
        values = {s.schedule: value(s) for s in present}
        if all(not math.isfinite(v) for v in values.values()):  # no value, or no median run reached the threshold
            continue
        judged += 1
        best_value = next(v for v in values.values() if not any(_better(w, v, lower) for w in values.values()))
        best = [s for s in present if not _better(best_value, values[s.schedule], lower) and not math.isnan(values[s.schedule])]
        mine = values[METALR]
        if _better(best_value, mine, lower):
            worse_than_me = [s for s in present if _better(mine, values[s.schedule], lower)]
            tied = [s for s in present if s.schedule != METALR and not _better(mine, values[s.schedule], lower)
                    and not _better(values[s.schedule], mine, lower)]
            where = "" if worse_than_me else (f"; worst of {len(present)}" if not tied else "; tied worst")
            behind.append(f"{label} ({show(metalr)} vs {show(best[0])} for {_names(best)}{where})")
        else:
            ahead.append(f"{label} ({show(metalr)})")
    if not behind:
        return f"metalr was not behind any other schedule on any of the {judged} judged measures."
    text = f"metalr was behind the best schedule on {len(behind)} of {judged} measures: " + "; ".join(behind) + "."
    if ahead:
        text += " It was best or tied best on: " + "; ".join(ahead) + "."
    return text


# ---------------------------------------------------------------- 4. LR stability


def _lr_profile(s: ScheduleSummary) -> str:
    lo, hi = s.median("lr_min"), s.median("lr_max")
    lr_range = f"LR {lo:.2e}" if lo == hi else f"LR {lo:.2e}–{hi:.2e}"
    changes = s.median("direction_changes")
    return (f"median std Δlog LR {s.median('std_dlog_lr'):.3f}, {changes:g} direction change{'' if changes == 1 else 's'}, "
            f"{lr_range}")


def _variability(s: ScheduleSummary) -> float:
    """The median std Δlog LR at the printed precision (3 decimals)."""
    return round(s.median("std_dlog_lr"), 3)


def _stability_sentence(summary: Summary) -> str | None:
    scored = sorted((s for s in summary.present if s.stats["std_dlog_lr"].n), key=lambda s: -_variability(s))
    if not scored:
        return None
    if len(scored) == 1:
        return f"LR stability of {scored[0].schedule}: {_lr_profile(scored[0])}."
    if len({_variability(s) for s in scored}) == 1:
        return (f"LR stability: all {len(scored)} schedules had the same median std Δlog LR "
                f"({scored[0].median('std_dlog_lr'):.3f}); " + "; ".join(f"{s.schedule}: {_lr_profile(s)}" for s in scored)
                + ".")
    metalr = next((s for s in scored if s.schedule == METALR), None)
    others = [s for s in scored if s.schedule != METALR]

    def level_with(s: ScheduleSummary) -> str:
        """``s``'s name, or the names of every baseline at its printed value (``a/b/c``)."""
        return _names([o for o in others if _variability(o) == _variability(s)])

    kind = "baseline" if metalr else "schedule"
    if len(others) == 1:
        extremes = f"the {kind}, {others[0].schedule}: {_lr_profile(others[0])}"
    elif _variability(others[-1]) == _variability(others[0]):  # no most variable one to name
        extremes = f"the {kind}s were level ({level_with(others[0])}: {_lr_profile(others[0])})"
    else:
        extremes = (f"the most variable {kind} was {level_with(others[0])} ({_lr_profile(others[0])}) and the "
                    f"steadiest {level_with(others[-1])} ({_lr_profile(others[-1])})")
    if metalr is None:
        return f"LR stability: {extremes}."
    mine = _variability(metalr)
    above = sum(_variability(o) > mine for o in others)
    level = sum(_variability(o) == mine for o in others)
    where = (
        f"{'tied ' if level else ''}the most variable of {len(scored)} schedules" if above == 0
        else f"{'tied ' if level else ''}the steadiest of {len(scored)} schedules" if above + level == len(others)
        else f"number {above + 1} of {len(scored)} from most to least variable" + (" (tied)" if level else "")
    )
    contrast = f", {_ratio(metalr.median('std_dlog_lr'), others[0].median('std_dlog_lr'))} the std Δlog LR of {others[0].schedule}"
    return f"LR stability: metalr's LR was {where} ({_lr_profile(metalr)}{contrast if 'n/a' not in contrast else ''}); {extremes}."


def findings(summary: Summary) -> list[str]:
    """The generated sentences, one paragraph each, in the order described in the module docstring."""
    out = []
    threshold = _threshold_phrase(summary)
    if not summary.present:
        return ["There are no runs in these results yet."]
    if threshold is None:
        out.append("No threshold is configured, so there is no time-to-threshold comparison.")
    else:
        out.append(_first_sentence(summary, threshold))
    out += [s for s in (_metalr_sentence(summary), _lost_sentence(summary), _stability_sentence(summary)) if s]
    return out


# ---------------------------------------------------------------- the document


def _config_lines(summary: Summary) -> list[str]:
    c = summary.config
    items = [
        f"**Task** {c.get('task', '?')}",
        f"**schedules** {', '.join(s.schedule for s in summary.schedules) or '–'}",
        f"**seeds** {', '.join(str(s) for s in c.get('seeds') or []) or '–'}",
        f"**LR** {number(c.get('lr')):g}",
        f"**epochs** {c.get('epochs', '?')}",
        f"**threshold** {_threshold_phrase(summary) or 'none'}",
    ]
    extra = [
        f"{label} {c[key]}"
        for key, label in (("batch_size", "batch size"), ("evals_per_epoch", "evals per epoch"),
                           ("hf_metalr_version", "hf_metalr"), ("metalr_policy", "metalr policy"))
        if c.get(key) is not None
    ]
    if c.get("metalr_learn_online") is False:
        extra.append("metalr learns online: no (--metalr-no-learn-online)")
    lines = [" · ".join(items)]
    if extra:
        lines += ["", ", ".join(extra) + "."]
    return lines


def _table(summary: Summary) -> list[str]:
    header = ["Schedule", "Reached"] + [m.label[0].upper() + m.label[1:] for m in summary.measures] + ["Diverged"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for s in summary.schedules:
        cells = [s.schedule, f"{s.reached}/{s.n}"] + [stat_cell(m, s.stats[m.key]) for m in summary.measures] + [str(s.diverged)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _notes(summary: Summary) -> list[str]:
    notes = [
        "Cells are `median [min–max]` over seeds; the threshold columns only over the runs that reached it "
        "(the findings rank by the median over all runs, a run that never reached it counting as never); "
        "null/NaN values are left out; `Reached` is runs that reached the threshold / runs present.",
        "Evals, epochs and seconds to threshold: at the first evaluation whose validation metric reaches the "
        "threshold, counted from 1; seconds from the start of training, evaluations included.",
        "Std Δlog LR: the standard deviation of the change in log LR from the first step's LR to the LR after the "
        "first evaluation, then from evaluation to evaluation; LR direction changes: how often those changes switch "
        "between up and down; LR min and max: over every optimizer step (param group 0).",
    ]
    diverged = [f"{s.schedule} seed {r.get('seed')}" for s in summary.schedules for r in s.runs if r.get("status") == "diverged"]
    if diverged:
        notes.append("Diverged runs: " + ", ".join(diverged) + ".")
    if any(s.schedule == "prodigy" and s.n for s in summary.schedules):
        notes.append(
            f"prodigy runs Prodigy at lr=1.0 and estimates its own step size, so its results do not depend on the "
            f"configured LR ({number(summary.config.get('lr')):g}); its LR curve is the step size it applies, lr × d."
        )
    ran = {s.schedule: s for s in summary.schedules if s.n}
    skipped = {name: package for name, package in (summary.config.get("skipped_schedules") or {}).items()
               if name not in ran or ran[name].missing_seeds}  # a schedule a later call ran in full is no longer
    if skipped:
        notes.append("Not run, their package missing (pip install 'hf_metalr[peers]'): " + ", ".join(
            f"{name} ({package}" + (f"; seeds {', '.join(map(str, ran[name].missing_seeds))})" if name in ran else ")")
            for name, package in skipped.items()) + ".")
    missing = [f"{s.schedule} seed {seed}" for s in summary.schedules if s.schedule not in skipped
               for seed in s.missing_seeds]
    if missing:
        notes.append("Missing runs (interrupted compare?): " + ", ".join(missing) + ".")
    return [f"- {n}" for n in notes]


def render_markdown(summary: Summary, plot_files: Mapping[str, str]) -> str:
    """The whole report; ``plot_files`` maps plot names to paths relative to the report."""
    c = summary.config
    lines = [f"# hf_metalr compare: {c.get('task', '?')}", ""]
    if c.get("task_description"):
        lines += [str(c["task_description"]), ""]
    lines += _config_lines(summary) + ["", "## Findings", ""]
    lines += [f"- {s}" for s in findings(summary)]
    lines += ["", "## Results", ""] + _table(summary) + [""] + _notes(summary)
    if plot_files:
        lines += ["", "## Plots", ""]
        for name, file in plot_files.items():
            lines += [f"![{_PLOT_TITLES.get(name, name)}]({file})", ""]
    return "\n".join(lines).rstrip() + "\n"
