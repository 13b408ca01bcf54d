"""The decision trace: ``<output_dir>/metalr_trace.jsonl``, one JSON object per decision.

Only the world's main process writes it (the callback checks that). A fresh run starts a new
file; a resumed run keeps the lines up to the checkpoint's step and drops any written after it by
the interrupted run, so the file always reads as one uninterrupted run. A last line torn by a kill
during a write is dropped, with a warning.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

__all__ = ["TRACE_NAME", "TraceWriter", "read_trace"]

TRACE_NAME = "metalr_trace.jsonl"  # the decision trace's file name in the Trainer's output_dir (see read_trace)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "nan" / "inf": strict JSON has no literal for them
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


class TraceWriter:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def start(self, resume_step: int | None = None) -> None:
        """Begin a run: truncate, or on resume keep only the lines with ``global_step <= resume_step``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [line for line in read_trace(self.path) if line["global_step"] <= resume_step]
        with self.path.open("w") as f:
            for line in kept:
                f.write(json.dumps(line) + "\n")

    def append(self, entry: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(_json_safe(entry)) + "\n")


def read_trace(path: str | Path) -> list[dict]:
    """The decisions in ``path`` (a ``metalr_trace.jsonl``), one dict per decision, in order.

    Each dict holds: ``global_step`` and ``epoch`` of the evaluation; ``metric`` (the monitored
    key), ``greater_is_better`` (its direction in use) and its ``value``; ``action`` (the multiplier asked for), ``applied`` (the one that took
    effect: 1 when the direction gate held the action, 0.5 where a clear overshoot cut it whatever
    the policy asked, nearer 1 when a bound capped it) and ``gate`` (why the gate held it, or None);
    ``evidence`` (what let a raise or a cut through the gate, what made the fixed cut at a clear
    overshoot, what took back a raise or a cut ("undo: ..."), or what restored the distance check's
    cuts ("restore: ..."), in words, ending with ``capped by max_lr=...`` (or
    ``min_lr``) when a bound cut the move short, or None); ``action_index`` (the policy's choice; None for
    the fixed response to a divergence) and ``by_policy`` (False for the cut at a divergence, and
    for the fixed keep at the first evaluation when the direction gate is off); ``reward`` (None at
    the first decision); ``lr`` (param group 0's LR from now on, a schedule's factor included),
    ``lrs`` (every group's), ``initial_lr`` (param group 0's initial LR, which the scale multiplies;
    absent from traces before 2026-12-04) and ``scale`` (the controller's LR scale, also logged as
    ``metalr/scale``; ``lr_scale`` is the same number, kept for readers of older traces);
    ``learned`` (whether the policy was updated);
    ``diverged``; ``features`` (every feature, by name, and the gate's own readings beside them:
    ``param_drift``, ``stuck_evaluations``, ``short_plateau_evaluations`` (how many evaluations in a row
    the run has read a short plateau, ``gate.short_plateau``; from the forty-third session, 2026-12-07),
    ``long_plateau_evaluations`` (the same for a long plateau, ``gate.long_plateau``) and ``drift_growth`` (how
    much ``param_drift`` changed over the last three intervals, relative to the drift now; absent before the
    fourth decision and for three decisions after a start-over; from the forty-fifth session, 2026-12-07),
    ``start_weights_kept`` (1.0 while a cut may start the run over from its first weights, which the distance check's bar reads; from 2026-12-07),
    ``alignment_steps`` (the steps the alignment counted in
    the interval), ``grad_alignment_late`` (on the decision that reads the run's first alignment
    window, the first one: the alignment of the later half of its interval's steps), ``previous_grad_alignment_t`` (the last interval's reading, when it had one),
    ``objective_since_raise`` (while a raise of the controller's stands: the log of the objective over
    its value at that raise's evaluation), ``objective_trend_before_raise`` /
    ``objective_trend_after_raise`` (while a raise of the controller's is in force: the metric's trend
    over the interval before it and over the one after it, which tell whether it paid), ``creep_gain`` (when the metric improved at each of the last
    four evaluations: the log objective gained over them, which a raise may follow when it is tiny),
    ``heavy_ball`` (1.0 under SGD with momentum, where an opposed gradient cuts only with a worse
    metric), ``planned_lr_over_distance`` (under a schedule that anneals by itself: the LR it decays
    from over the distance estimate, which the restore of the distance check's cuts reads; from
    2026-12-07) and
    the iterate average's ``iterate_average_gain`` / ``iterate_average_progress``; None at a
    divergence); ``rule`` (the safeguard that made the move, where later decisions read it:
    "distance", "restore", "short_plateau", "long_plateau", "undo_raise", "unpaid_undo", "opposed_undo", "undo_cut";
    None otherwise,
    and absent from traces before 2026-12-06); ``early_cuts``
    (on the first decision's line: the cuts before it, each with its ``kind`` ("divergence", the
    early-divergence guard's, or "distance", the distance check's), the optimizer ``step`` (counted
    from the run's start), its training ``loss`` (text when not finite), and the ``applied``
    multiplier, ``scale`` and ``lr`` after it; an early-divergence guard's cut also has the highest
    loss before it as ``reference``, a distance check's cut ``reference`` None and the
    ``param_drift`` and ``lr_over_distance`` it read (``is_early_distance_cut``); empty on the other
    lines). Non-finite numbers
    are the strings ``"nan"`` and ``"inf"``.

    ``path`` may also be the Trainer's ``output_dir`` that holds the trace. A torn last line (a kill
    during a write) is dropped with a ``RuntimeWarning``; an unreadable line before it is a
    ``ValueError`` naming the file and line."""
    path = Path(path)
    if path.is_dir():
        path = path / TRACE_NAME
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()]
    entries = []
    for i, (n, line) in enumerate(lines):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i < len(lines) - 1:
                raise ValueError(f"{path}, line {n}, is not a JSON object ({exc}); the trace is corrupt: "
                                 "move it away to start a fresh one") from exc
            warnings.warn(f"{path}: dropping the torn last line {n} ({line[:60]!r}...), left by a run killed while "
                          "writing it", RuntimeWarning, stacklevel=2)
    return entries
