"""Per-run measurements computed from a run's curves: time to threshold and LR stability."""

from __future__ import annotations

import math

from ..tasks.base import reaches

__all__ = ["lr_at_decisions", "lr_stability", "time_to_threshold"]


def time_to_threshold(evals: list[dict], key: str, threshold: float, greater_is_better: bool) -> dict:
    """The first evaluation whose ``key`` reaches ``threshold``; counts are 1-based evaluations."""
    for i, e in enumerate(evals, start=1):
        value = e.get(key)
        if value is None or not math.isfinite(value):
            continue
        if reaches(value, threshold, greater_is_better):
            return {"reached": True, "evals": i, "epoch": e["epoch"], "seconds": e["seconds"], "step": e["step"]}
    return {"reached": False, "evals": None, "epoch": None, "seconds": None, "step": None}


def lr_at_decisions(lr_curve: list[list[float]], evals: list[dict]) -> list[float]:
    """The LR in force after each evaluation: the LR of the first step after it (or the last LR)."""
    out = []
    for e in evals:
        later = [lr for step, _, lr in lr_curve if step > e["step"]]
        out.append(later[0] if later else (lr_curve[-1][2] if lr_curve else float("nan")))
    return out


def lr_stability(lr_curve: list[list[float]], evals: list[dict]) -> dict:
    """How the LR moved from evaluation to evaluation: ``std_dlog_lr``, the standard deviation of the
    change in log LR from the first optimizer step's LR to the LR in force after the first evaluation,
    and from each evaluation's to the next's (so a move at the first evaluation, a cut before it, or
    Prodigy's ramp from its tiny start counts); ``direction_changes``, how often those moves switch
    between up and down; and ``lr_min`` / ``lr_max`` over every optimizer step."""
    first = [lr_curve[0][2]] if lr_curve else []
    lrs = [lr for lr in first + lr_at_decisions(lr_curve, evals) if lr > 0 and math.isfinite(lr)]
    all_lrs = [lr for _, _, lr in lr_curve if math.isfinite(lr)]
    deltas = [math.log(b) - math.log(a) for a, b in zip(lrs, lrs[1:])]
    if deltas:
        mean = sum(deltas) / len(deltas)
        std = math.sqrt(sum((d - mean) ** 2 for d in deltas) / len(deltas))
    else:
        std = 0.0
    signs = [1 if d > 1e-12 else -1 for d in deltas if abs(d) > 1e-12]
    changes = sum(1 for a, b in zip(signs, signs[1:]) if a != b)
    return {
        "std_dlog_lr": std,
        "direction_changes": changes,
        "lr_min": min(all_lrs) if all_lrs else None,
        "lr_max": max(all_lrs) if all_lrs else None,
    }
