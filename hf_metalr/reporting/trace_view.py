"""``hf-metalr trace PATH``: a run's decision trace as a table a person reads, a summary, and a plot.

``PATH`` is a Trainer ``output_dir`` holding ``metalr_trace.jsonl``, or the trace file itself. One
row per decision: the step and epoch of the evaluation, the monitored metric's value, the
multiplier the policy asked for and the one applied, param group 0's LR from then on, and why (the
gate's reason when it held a move, the evidence when one went through, the early-divergence
guard's cuts before the first decision, and a line under a decision that started the run over).
Then a summary: how many moves went through or were held, and the LR from start to end. ``--plot FILE`` draws the LR and the metric against the step
(matplotlib's Agg canvas). Reads the file only; writes nothing but the plot.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from pathlib import Path

from ..controller.controller import is_early_distance_cut
from ..controller.gate import lr_over_distance_in_words
from ..controller.warmup_replay import REPLAYED
from ..integration.trace import TRACE_NAME, read_trace

__all__ = ["decision_kind", "format_trace", "lr_series", "main", "plot_trace", "summarize_trace", "trace_path"]


def trace_path(path: str | Path) -> Path:
    """The trace file for ``path`` (a directory holding ``metalr_trace.jsonl``, or the file); a
    ``FileNotFoundError`` saying what is missing and where the trace is written otherwise."""
    path = Path(path)
    if path.is_dir():
        found = path / TRACE_NAME
        if not found.is_file():
            runs = sorted(str(t.parent) for t in path.glob(f"runs/*/{TRACE_NAME}"))  # a compare folder
            hint = (f"; it is a compare folder: each metalr run has its own, e.g. {', '.join(runs[:3])}"
                    + (f" ({len(runs)} in all)" if len(runs) > 3 else "") if runs else "")
            raise FileNotFoundError(f"{path} holds no {TRACE_NAME}: give the output_dir of a run trained with "
                                    "MetaLRCallback (the main process writes the trace there at each decision), "
                                    f"or the trace file itself{hint}")
        return found
    if not path.is_file():
        raise FileNotFoundError(f"no such file or directory: {path}")
    return path


def _number(value) -> float:
    """A trace number as a float; the strings "nan"/"inf" the trace writes for non-finite ones too."""
    if value is None:
        return math.nan
    return float(value)


def _multiplier(value) -> str:
    if value is None:
        return "-"
    return f"x{_number(value):g}"


def _why(entry: dict) -> str:
    if entry.get("diverged"):
        return "divergence: the metric is not finite, the LR is halved" + (
            ", and the weights went back to where the run started" if entry.get("rewound") else "")
    if entry.get("gate"):
        return entry["gate"]
    if entry.get("evidence"):
        return entry["evidence"]
    return ""


def _early_cut_rows(entry: dict) -> list[str]:
    rows = []
    for cut in entry.get("early_cuts") or []:
        if is_early_distance_cut(cut):
            rows.append(f"  early distance cut at step {cut['step']}: the parameters moved by "
                        f"{_number(cut['param_drift']):.2f} of their starting norm, and "
                        f"{lr_over_distance_in_words(_number(cut['lr_over_distance']))}, LR "
                        f"x{_number(cut['applied']):g} -> {_number(cut['lr']):.3g}{_rewound(cut)}")
            continue
        rows.append(f"  early-divergence guard at step {cut['step']}: training loss {_number(cut['loss']):.4g} against "
                    f"at most {_number(cut['reference']):.4g} before it, LR x{_number(cut['applied']):g} -> "
                    f"{_number(cut['lr']):.3g}{_rewound(cut)}")
    return rows


def _rewound(cut: dict) -> str:
    """The words for an early cut that started the run over (``rewound``; absent from older traces),
    with its warmup played again (``replays_warmup``); traces from before 2026-12-07's replay say when
    a warmup kept the weights (``kept_weights``)."""
    if cut.get("rewound"):
        return (", and the weights went back to where the run started"
                + (REPLAYED if cut.get("replays_warmup") else ""))
    if cut.get("kept_weights") == "warmup":
        return " (the weights kept: starting over would skip the warmup's first steps)"
    return ""


def format_trace(entries: list[dict], full: bool = False, width: int = 120) -> str:
    """The decisions as a fixed-width table, one row each; ``full=False`` cuts the reason to ``width``."""
    if not entries:
        return "no decisions yet"
    metric = entries[0].get("metric", "metric")
    direction = entries[0].get("greater_is_better")
    header = f"{'step':>7} {'epoch':>6} {metric:>12} {'asked':>6} {'applied':>7} {'lr':>9}  why"
    lines = [f"{metric}: {'higher' if direction else 'lower'} is better" if direction is not None else metric, header]
    for entry in entries:
        lines += _early_cut_rows(entry)
        epoch = entry.get("epoch")
        row = (f"{entry['global_step']:>7} {'' if epoch is None else f'{_number(epoch):.2f}':>6} "
               f"{_number(entry.get('value')):>12.4g} {_multiplier(entry.get('action')):>6} "
               f"{_multiplier(entry.get('applied')):>7} {_number(entry.get('lr')):>9.3g}  ")
        why = _why(entry)
        room = width - len(row)
        if not full and len(why) > room:
            head, capped, tail = why.partition("; capped by ")  # the cap's note explains the applied multiplier:
            tail = f"; capped by {tail}" if capped else ""  # kept whole where it fits beside a start of the reason
            if not tail or len(tail) + 13 > room:
                head, tail = why, ""
            why = head[: max(room - len(tail) - 3, 10)] + "..." + tail
        lines.append(row + why)
        if entry.get("rewound") and not entry.get("diverged"):  # (the divergence's reason says it whole)
            on_a_plateau = (entry["start_over"] == "long plateau" if entry.get("start_over") else
                            "a start-over on a long plateau" in (entry.get("evidence") or ""))  # (older traces)
            whose = "a long plateau's" if on_a_plateau else "a wrecked run's"
            warmup = REPLAYED if REPLAYED in (entry.get("evidence") or "") else ""
            lines.append(f"  started over: {whose} cut, and the weights went back to where the run started{warmup}")
    return "\n".join(lines)


def decision_kind(entry: dict) -> str:
    """What happened at one decision: ``"divergence"`` (a non-finite metric: the fixed cut);
    ``"held"`` (the gate kept the LR against the policy's move); ``"capped"`` (``min_lr``/``max_lr``
    cut the move short); ``"fixed"`` (a move the policy did not ask for: a clear overshoot's or a
    bounce's halving, a punished raise or cut taken back, a restore of the distance check's cuts, a short
    plateau's doubling or a long plateau's halving, also
    when it happens to equal what the policy asked); ``"policy"`` (the policy's move, or keep, as asked)."""
    if entry.get("diverged"):
        return "divergence"
    asked, applied = _number(entry.get("action")), _number(entry.get("applied"))
    evidence = entry.get("evidence") or ""
    if entry.get("gate") and applied == 1 and asked != 1:
        return "held"
    if "capped by" in evidence:
        return "capped"
    if applied != asked or evidence.startswith(("restore:", "undo:", "short plateau:", "long plateau:")):
        return "fixed"
    return "policy"


def summarize_trace(entries: list[dict]) -> dict:
    """Counts and LRs of a trace: ``decisions``; ``raised`` / ``cut`` (decisions whose applied
    multiplier moved the LR up / down, whoever made the move); ``held``, ``fixed``, ``capped`` and
    ``divergences`` (decisions of that :func:`decision_kind`); ``early_cuts`` (the early-divergence
    guard's, before the first decision) and ``early_distance_cuts`` (the distance check's, then);
    ``started_over`` (the early cuts and the decisions that put the weights back to the run's start);
    ``initial_lr`` (the user's, param group 0), ``final_scale`` (the controller's scale at the end)
    and ``final_lr`` (the controller's LR then, initial x scale,
    without a schedule's factor); ``moved_at_end`` (1 when the last decision, made at the run's final
    step, ``progress`` 1, moved the LR, which no step then used; it is counted in ``raised``/``cut``
    and in ``final_scale``); ``best`` (the best metric value, by its direction) and ``best_step``."""
    if not entries:
        return {"decisions": 0}
    applied = [_number(e.get("applied")) for e in entries]
    kinds = [decision_kind(e) for e in entries]
    first = entries[0]
    scale = _number(first.get("scale", first.get("lr_scale")))
    final_scale = _number(entries[-1].get("scale", entries[-1].get("lr_scale")))
    # older traces lack initial_lr: their lr over their scale is it under a constant schedule
    initial_lr = _number(first["initial_lr"]) if "initial_lr" in first else (
        _number(first.get("lr")) / scale if scale > 0 else math.nan)
    finite = [(_number(e.get("value")), e["global_step"]) for e in entries if math.isfinite(_number(e.get("value")))]
    sign = -1.0 if first.get("greater_is_better") else 1.0
    best = min(finite, key=lambda vs: sign * vs[0]) if finite else (math.nan, None)
    return {
        "decisions": len(entries),
        "raised": sum(a > 1 for a in applied),
        "cut": sum(a < 1 for a in applied),
        "held": kinds.count("held"),
        "fixed": kinds.count("fixed"),
        "capped": kinds.count("capped"),
        "divergences": kinds.count("divergence"),
        "early_cuts": sum(not is_early_distance_cut(cut) for cut in first.get("early_cuts") or []),
        "early_distance_cuts": sum(is_early_distance_cut(cut) for cut in first.get("early_cuts") or []),
        "started_over": (sum(bool(cut.get("rewound")) for cut in first.get("early_cuts") or [])
                         + sum(bool(e.get("rewound")) for e in entries)),
        "initial_lr": initial_lr,
        "final_scale": final_scale,
        "final_lr": initial_lr * final_scale,
        "moved_at_end": int(math.isfinite(applied[-1]) and applied[-1] != 1
                            and _number((entries[-1].get("features") or {}).get("progress")) >= 1),
        "best": best[0],
        "best_step": best[1],
    }


def _summary_text(summary: dict, metric: str) -> str:
    if not summary["decisions"]:
        return ""

    decisions = f"{summary['decisions']} decision{'s' if summary['decisions'] != 1 else ''}"
    counts = [f"{decisions}: {summary['raised']} raised the LR, {summary['cut']} cut it",
              f"{summary['held']} of the policy's moves held by the gate"]
    for key, one, many in (("fixed", "move the policy did not ask for", "moves the policy did not ask for"),
                           ("capped", "move cut short by min_lr/max_lr", "moves cut short by min_lr/max_lr"),
                           ("divergences", "divergence", "divergences"),
                           ("early_cuts", "early-divergence cut", "early-divergence cuts"),
                           ("early_distance_cuts", "early distance cut", "early distance cuts"),
                           ("started_over", "start-over", "start-overs")):
        if summary[key]:
            why = {"fixed": " (a safeguard's)", "divergences": " (LR halved)", "early_cuts": " before the first decision",
                   "early_distance_cuts": " before the first decision",
                   "started_over": " from the weights the run started from"}
            counts.append(f"{summary[key]} {one if summary[key] == 1 else many}{why.get(key, '')}")
    parts = [", ".join(counts)]
    if summary.get("moved_at_end"):
        parts[0] += " (the last move, at the run's final step, applied to no step)"
    best = (f"best {metric} {summary['best']:.4g} at step {summary['best_step']}" if summary["best_step"] is not None
            else f"no finite {metric}")
    parts.append(f"LR {summary['initial_lr']:.3g} -> {summary['final_lr']:.3g} (the controller's scale "
                 f"x{summary['final_scale']:.3g}; a schedule's warmup and decay multiply it); {best}")
    return "\n".join(parts)


def lr_series(entries: list[dict]) -> dict[str, tuple[list, list]]:
    """The LR curves ``plot_trace`` draws, each as (steps, LRs) of param group 0: ``"base"``, the
    controller's LR (the initial LR x its scale) from the run's start through the early-divergence
    guard's cuts to each decision, a step curve; and ``"scheduled"``, the trace's ``lr`` at each
    decision (the base times a Trainer schedule's warmup or decay factor, the LR the table shows),
    only when it differs from the base somewhere (under a schedule)."""
    if not entries:
        return {"base": ([], [])}
    summary = summarize_trace(entries)
    steps = [e["global_step"] for e in entries]
    base = [summary["initial_lr"] * _number(e.get("scale", e.get("lr_scale"))) for e in entries]
    early = [(cut["step"], summary["initial_lr"] * _number(cut["scale"])) for cut in entries[0].get("early_cuts") or []]
    series = {"base": ([0] + [s for s, _ in early] + steps, [summary["initial_lr"]] + [lr for _, lr in early] + base)}
    scheduled = [_number(e.get("lr")) for e in entries]
    if any(not math.isclose(lr, b, rel_tol=1e-6) for lr, b in zip(scheduled, base) if math.isfinite(lr)):
        series["scheduled"] = (steps, scheduled)
    return series


def plot_trace(entries: list[dict], path: str | Path) -> Path:
    """Draw param group 0's LR (log scale) and the metric against the global step into ``path``:
    the controller's LR (initial x scale) as a step curve and, under a schedule that moves the LR
    (warmup, decay), the trace's ``lr`` at each decision as points (``lr_series``)."""
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(9, 6), dpi=100, layout="constrained")
    ax_lr, ax_metric = fig.subplots(2, 1, sharex=True)
    series = lr_series(entries)
    scheduled = "scheduled" in series
    ax_lr.step(*series["base"], where="post", color="black",
               label="controller's LR (initial x scale)" if scheduled else None)
    if scheduled:
        xs, ys = series["scheduled"]
        positive = [(x, y) for x, y in zip(xs, ys) if y > 0]  # a decay's last LR of 0 has no place on a log axis
        ax_lr.plot([x for x, _ in positive], [y for _, y in positive], "o", color="C1", markersize=4,
                   label="LR at the decision (x the schedule's factor)")
        ax_lr.legend(loc="best", fontsize="small")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("LR (param group 0)")
    ax_lr.grid(True, alpha=0.3)
    metric = entries[0].get("metric", "metric") if entries else "metric"
    ax_metric.plot([e["global_step"] for e in entries], [_number(e.get("value")) for e in entries], marker="o", color="C0")
    ax_metric.set_ylabel(metric)
    ax_metric.set_xlabel("global step")
    ax_metric.grid(True, alpha=0.3)
    fig.suptitle("MetaLR decisions")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hf-metalr trace", description="Print a run's MetaLR decisions as a table, "
                                "with why each move went through or was held, and a summary.")
    p.add_argument("path", type=Path, help=f"a Trainer output_dir holding {TRACE_NAME}, or the trace file")
    p.add_argument("--full", action="store_true", help="print every reason whole instead of cutting it to the terminal")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw the LR and the metric against the step")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        entries = read_trace(trace_path(args.path))
    except (FileNotFoundError, ValueError) as e:
        print(f"hf-metalr trace: error: {e}", file=sys.stderr)
        return 2
    plot = plot_trace(entries, args.plot) if args.plot else None  # drawn first: a reader that stops early (| head)
    try:  # does not cost the file
        print(format_trace(entries, full=args.full, width=shutil.get_terminal_size((120, 24)).columns))
        if entries:
            print()
            print(_summary_text(summarize_trace(entries), entries[0].get("metric", "metric")))
        if plot is not None:
            print(f"plot: {plot}")
    except BrokenPipeError:  # | head: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (so the interpreter's flush at exit stays quiet)
    return 0
