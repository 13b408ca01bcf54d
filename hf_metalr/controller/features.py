"""Observation and reward: the scale-free view of a training run that every policy sees.

This is the single implementation of the observation and the reward. The Trainer callback and
meta-training both go through :class:`RunTracker`, so a policy trained in one place acts the same
in the other.

The validation metric is first mapped to a positive *objective* where lower is better:

- lower-is-better metrics (``eval_loss``, WER) are used as they are;
- greater-is-better metrics whose first value lies in [0, 1] (accuracy, F1) become ``1 - value``;
- other greater-is-better metrics (BLEU on 0-100, say) become ``1 / value``.

Every feature and the reward are differences of ``log(objective)``, so they do not depend on the
metric's units or the task's loss scale.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["DIVERGENCE_REWARD", "FEATURE_NAMES", "OBS_DIM", "RunTracker", "is_finite", "log_objective", "objective_mode"]

FEATURE_NAMES: tuple[str, ...] = (
    "objective_vs_best",  # log(obj / best obj): >= 0, how far above the best so far
    "objective_trend",  # log(obj / previous obj): < 0 means improving
    "previous_objective_trend",  # the trend one decision earlier (with previous_action: how the last change worked)
    "objective_vs_first",  # log(obj / first obj): the progress of the whole run
    "train_loss_trend",  # log(train loss now / train loss at the previous decision)
    "progress",  # fraction of the run done, in [0, 1]
    "log10_lr_scale",  # log10(controller LR / initial LR)
    "previous_action",  # log2 of the previous multiplier
    "evals_since_best",  # evaluations since the best, /10, capped at 1
    "improving_streak",  # consecutive evaluations that improved on the one before, /10, capped at 1
)
OBS_DIM = len(FEATURE_NAMES)

_EPS = 1e-8
_CLIP = 5.0
REWARD_CLIP = 2.0
DIVERGENCE_REWARD = -REWARD_CLIP  # meta-training's reward for an action that a divergence followed


def is_finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def objective_mode(first_value: float, greater_is_better: bool) -> str:
    """How a metric becomes a positive lower-is-better objective; fixed by its first finite value."""
    if not greater_is_better:
        return "loss"
    return "error" if 0.0 <= first_value <= 1.0 else "inverse"


def log_objective(value: float, mode: str) -> float:
    if mode == "loss":
        objective = value
    elif mode == "error":
        objective = 1.0 - value
    elif mode == "inverse":
        objective = 1.0 / value if value > 0 else 1.0 / _EPS
    else:
        raise ValueError(f"unknown objective mode {mode!r}")
    return math.log(max(objective, _EPS))


def _clip(x: float, lo: float = -_CLIP, hi: float = _CLIP) -> float:
    return max(lo, min(hi, x))


@dataclass
class RunTracker:
    """The history of one run that the observation and the reward are computed from.

    Holds plain numbers only, so it round-trips through JSON (``to_dict`` / ``from_dict``).
    ``observe`` is called once per decision with a finite metric value; ``observe_train_loss``
    whenever a training loss is logged.
    """

    greater_is_better: bool = False
    mode: str | None = None
    first: float | None = None
    best: float | None = None
    previous: float | None = None
    evals_since_best: int = 0
    train_loss: float | None = None
    train_loss_at_decision: float | None = None
    current: float | None = None  # log objective of the decision in progress
    trend: float = 0.0  # current - previous log objective
    previous_trend: float = 0.0  # the trend at the decision before
    improving_streak: int = 0

    def observe_train_loss(self, loss: float) -> None:
        if is_finite(loss) and loss > 0:
            self.train_loss = float(loss)

    def observe(self, value: float) -> tuple[float, float | None]:
        """Record a finite metric value. Returns (log objective, reward or None for the first)."""
        if self.mode is None:
            self.mode = objective_mode(value, self.greater_is_better)
        current = log_objective(value, self.mode)
        reward = None if self.previous is None else _clip(self.previous - current, -REWARD_CLIP, REWARD_CLIP)
        if self.previous is not None:
            self.previous_trend, self.trend = self.trend, current - self.previous
            self.improving_streak = self.improving_streak + 1 if current < self.previous else 0
        if self.first is None:
            self.first = current
        if self.best is None or current < self.best:
            self.best = current
            self.evals_since_best = 0
        else:
            self.evals_since_best += 1
        self.current = current
        return current, reward

    def features(self, progress: float, lr_scale: float, previous_multiplier: float) -> list[float]:
        """The observation after ``observe``, in ``FEATURE_NAMES`` order."""
        if self.train_loss is not None and self.train_loss_at_decision is not None:
            train_trend = math.log(self.train_loss) - math.log(self.train_loss_at_decision)
        else:
            train_trend = 0.0
        return [
            _clip(self.current - self.best, 0.0, _CLIP),
            _clip(self.trend),
            _clip(self.previous_trend),
            _clip(self.current - self.first),
            _clip(train_trend),
            _clip(float(progress), 0.0, 1.0),
            _clip(math.log10(lr_scale)),
            _clip(math.log2(previous_multiplier), -2.0, 2.0),
            min(self.evals_since_best, 10) / 10.0,
            min(self.improving_streak, 10) / 10.0,
        ]

    def commit(self) -> None:
        """Close the decision: the current value becomes the previous one."""
        self.previous = self.current
        self.train_loss_at_decision = self.train_loss

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunTracker":
        return cls(**d)
