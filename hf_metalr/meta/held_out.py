"""Meta-training's validation: the policy against a constant LR on the held-out families.

The held-out problems come from families never trained on (``HELD_OUT_FAMILIES``), a third of
them at each LR band. On each problem the greedy policy and a constant-LR run train the same
problem, initial weights and data order. Two scores compare them:

- ``evals_ratio``, the measure the evaluation protocol uses: evaluations until the validation
  accuracy reaches ``TARGET_FRACTION`` of the best accuracy either run reached (a run that never
  reaches it, or diverged first, counts the whole run's evaluations + 1), policy over constant LR, geometric mean over problems.
  < 1 is faster. Meta-training keeps the policy of the iteration with the lowest ratio;
- ``loss_score``: the constant-LR run's mean log validation loss minus the policy's, averaged
  over problems. > 0 is better.
"""

from __future__ import annotations

import math

import numpy as np

from .families import GOOD_BAND, HELD_OUT_FAMILIES, sample_problem

__all__ = ["TARGET_FRACTION", "evals_to_target", "held_out_problems", "held_out_scores", "lr_band"]

TARGET_FRACTION = 0.97


def held_out_problems(seed: int, per_family: int) -> list[tuple[dict, int]]:
    """``per_family`` problems of each held-out family, each with the seed of its runs."""
    rng = np.random.default_rng([seed, 999_983])
    return [(sample_problem(rng, family), int(rng.integers(2**31))) for family in HELD_OUT_FAMILIES for _ in range(per_family)]


def lr_band(spec: dict) -> str:
    """Where a problem's initial LR lies: "good" (within GOOD_BAND decades of the good LR), "low" or "high"."""
    offset = math.log10(spec["lr"] / spec["good_lr"])
    return "good" if abs(offset) < GOOD_BAND else ("low" if offset < 0 else "high")


def evals_to_target(accuracies: list[float | None], target: float, miss: int | None = None) -> int:
    """1-based index of the first evaluation at or above ``target``; ``miss`` (default
    ``len + 1``) if none is."""
    for i, accuracy in enumerate(accuracies):
        if accuracy is not None and math.isfinite(accuracy) and accuracy >= target:
            return i + 1
    return len(accuracies) + 1 if miss is None else miss


def _geomean(log_ratios: list[float]) -> float:
    return math.exp(float(np.mean(log_ratios))) if log_ratios else float("nan")


def _mean_log_objective(run: dict) -> float:
    # "auc": the name in checkpoints written before it was called what it is
    return run["mean_log_objective"] if "mean_log_objective" in run else run["auc"]


def held_out_scores(problems: list[tuple[dict, int]], constant: list[dict], policy: list[dict]) -> dict:
    """Score the policy's episodes against the constant-LR episodes of the same ``problems``.

    Each run is ``Episode.held_out_summary()``: its ``accuracies`` and ``mean_log_objective``."""
    log_ratios, by_band = [], {}
    for (spec, _), base_run, run in zip(problems, constant, policy):
        accuracies = [a for a in base_run["accuracies"] + run["accuracies"] if a is not None and math.isfinite(a)]
        if not accuracies:  # a regression problem, or both runs diverged at once
            continue
        target = TARGET_FRACTION * max(accuracies)
        # a run that diverged stopped early: its miss still counts the whole run's evaluations + 1
        miss = max(len(base_run["accuracies"]), len(run["accuracies"])) + 1
        ratio = math.log(evals_to_target(run["accuracies"], target, miss) / evals_to_target(base_run["accuracies"], target, miss))
        log_ratios.append(ratio)
        by_band.setdefault(lr_band(spec), []).append(ratio)
    return {
        "evals_ratio": _geomean(log_ratios),
        "evals_ratio_by_band": {band: _geomean(v) for band, v in sorted(by_band.items())},
        "loss_score": float(np.mean([_mean_log_objective(b) - _mean_log_objective(r) for b, r in zip(constant, policy)])),
    }
