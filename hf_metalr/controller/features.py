"""Observation and reward: the scale-free view of a training run that every policy sees.

This is the single implementation of the observation and the reward. The Trainer callback and
meta-training both go through :class:`RunTracker`, so a policy trained in one place acts the same
in the other.

The validation metric is first mapped to a positive *objective* where lower is better:

- lower-is-better metrics (``eval_loss``, WER) are used as they are;
- greater-is-better metrics whose first value is at most 1 become ``1 - value``: scores bounded by 1
  (accuracy, F1; a correlation, Matthews' coefficient or R^2, which can start negative). A metric
  that is not bounded by 1 but starts at or below it (BLEU on 0-100 at initialisation) saturates
  there once it passes 1; the tracker warns once when that happens;
- other greater-is-better metrics (BLEU on 0-100 that starts above 1, say) become ``1 / value``.

Every feature and the reward are differences of ``log(objective)`` (the training-loss features:
of ``log(training loss)``), so they do not depend on the metric's units or the task's loss scale.

Training losses come in per optimizer step (``observe_train_loss``, or a stretch of them at once
with ``observe_train_losses``). Between two decisions they give two features: the trend of their
mean, and their *noise*, the mean absolute change of the log loss from one step to the next. The
noise separates a run whose LR is too low (a smooth, slowly falling loss, or a flat plateau where
every batch scores the same) from one whose LR is too high (a loss that jumps from batch to batch).
Where the controller watches the parameters (see ``alignment``), each optimizer step also gives
the cosine between its gradient and the previous descent step. Between two decisions these give
``grad_alignment`` (the sum of the dot products over the sum of the norm products) and
``grad_alignment_t`` (the mean cosine over its standard error): positive when the LR is too low,
negative when it overshoots, near zero without evidence either way. Both read 0 where nothing
is watched.

A policy reads the features it was trained on, by name (``select``), so a policy trained before a
feature existed keeps working unchanged.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

from .alignment import AlignmentWindow

__all__ = ["DIVERGENCE_REWARD", "FEATURE_NAMES", "RunTracker", "is_finite", "log_objective", "objective_mode", "select",
           "unknown_features"]

# Every feature RunTracker.features computes, in the policy's input order (a policy file lists the ones it reads)
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
    "train_loss_noise",  # mean |change of log train loss| between consecutive steps since the last decision
    "grad_alignment",  # sum of g_t . (-u_{t-1}) over sum of |g_t| |u_{t-1}| since the last decision, in [-1, 1]
    "grad_alignment_t",  # mean per-step cosine of g_t and -u_{t-1} over its standard error, clipped to +-5
)

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
    return "error" if first_value <= 1.0 else "inverse"  # 1 - value > 0 for any score below 1, negative ones too


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


def select(features: dict[str, float], names) -> list[float]:
    """The observation a policy reads: ``features`` in the order of the policy's feature ``names``."""
    return [features[name] for name in names]


def unknown_features(names) -> list[str]:
    """The names among ``names`` that this version does not compute."""
    return [name for name in names if name not in FEATURE_NAMES]


def _clip(x: float, lo: float = -_CLIP, hi: float = _CLIP) -> float:
    return max(lo, min(hi, x))


@dataclass
class RunTracker:
    """The history of one run that the observation and the reward are computed from.

    Holds plain numbers only, so it round-trips through JSON (``to_dict`` / ``from_dict``).
    ``observe`` is called once per decision with a finite metric value; ``observe_train_loss``
    with each optimizer step's training loss (or ``observe_train_losses`` with a stretch of them:
    the steps between two decisions, say). Losses since the last decision are kept as sums only,
    so the tracker stays a few plain numbers however long the interval.
    """

    greater_is_better: bool = False
    mode: str | None = None
    first: float | None = None
    best: float | None = None
    previous: float | None = None
    evals_since_best: int = 0
    train_loss_at_decision: float | None = None  # mean training loss of the interval before the last decision
    window_count: int = 0  # training losses since the last decision: how many, their sum,
    window_sum: float = 0.0
    window_abs_log_steps: float = 0.0  # the sum of |log loss - log previous loss| within each stretch,
    window_steps: int = 0  # and how many such steps
    last_log_train_loss: float | None = None  # the stretch in progress (None: the next loss starts one)
    current: float | None = None  # log objective of the decision in progress
    trend: float = 0.0  # current - previous log objective
    previous_trend: float = 0.0  # the trend at the decision before
    improving_streak: int = 0
    warned_unbounded: bool = False  # the one warning that a metric read as bounded by 1 went above it
    warned_nonpositive: bool = False  # the one warning that a lower-is-better metric went below 0
    alignment: list[float] | None = None  # the gradient-alignment sums since the last decision (AlignmentWindow)

    def observe_alignment(self, window: AlignmentWindow) -> None:
        """Add the gradient-alignment sums of some steps (``GradientAlignment.take``)."""
        total = AlignmentWindow(*self.alignment) if self.alignment else AlignmentWindow()
        total.add(window)
        self.alignment = total.to_list()

    def observe_train_loss(self, loss: float) -> None:
        """One step's training loss, continuing the current stretch of consecutive steps."""
        if not (is_finite(loss) and loss > 0):
            self.last_log_train_loss = None  # a non-finite loss breaks the stretch
            return
        log = math.log(loss)
        if self.last_log_train_loss is not None:
            self.window_abs_log_steps += abs(log - self.last_log_train_loss)
            self.window_steps += 1
        self.last_log_train_loss = log
        self.window_count += 1
        self.window_sum += float(loss)

    def observe_train_losses(self, losses) -> None:
        """A new stretch of consecutive steps' training losses (one process's, say). A single
        value, such as a logged mean, adds to the mean but not to the noise."""
        self.last_log_train_loss = None
        for loss in losses:
            self.observe_train_loss(loss)
        self.last_log_train_loss = None

    def observe(self, value: float) -> tuple[float, float | None]:
        """Record a finite metric value. Returns (log objective, reward or None for the first)."""
        if self.mode is None:
            self.mode = objective_mode(value, self.greater_is_better)
        if self.mode == "error" and value > 1 and not self.warned_unbounded:
            self.warned_unbounded = True
            warnings.warn(
                f"hf_metalr: the greater-is-better metric started at or below 1, so it is read as a score bounded by 1 "
                f"(accuracy, F1, a correlation) and mapped to 1 - value; it is now {value!r}, above 1, where that "
                "mapping saturates and the controller no longer sees it improve. Monitor eval_loss (the default) or a "
                "metric bounded by 1 instead (MetaLRCallback(metric=...)).", RuntimeWarning, stacklevel=3)
        if self.mode == "loss" and value < 0 and not self.warned_nonpositive:
            self.warned_nonpositive = True
            warnings.warn(
                f"hf_metalr: the lower-is-better metric is {value!r}, below 0; the controller reads a loss through "
                "its log, which stops at a floor there, so it no longer sees the metric change. Monitor a positive loss "
                "(eval_loss of a classifier or an LM, an MSE), or shift a metric that can be negative (a Gaussian "
                "negative log-likelihood) by a constant.", RuntimeWarning, stacklevel=3)
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

    def _train_loss(self) -> float | None:
        """The mean training loss since the last decision (the last interval's if none came in)."""
        return self.window_sum / self.window_count if self.window_count else self.train_loss_at_decision

    def features(self, progress: float, lr_scale: float, previous_multiplier: float) -> dict[str, float]:
        """Every feature after ``observe``, by name, in ``FEATURE_NAMES`` order."""
        train_loss = self._train_loss()
        if train_loss is not None and self.train_loss_at_decision is not None:
            train_trend = math.log(train_loss) - math.log(self.train_loss_at_decision)
        else:
            train_trend = 0.0
        noise = self.window_abs_log_steps / self.window_steps if self.window_steps else 0.0
        alignment = AlignmentWindow(*self.alignment) if self.alignment else AlignmentWindow()
        values = [
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
            _clip(noise, 0.0, _CLIP),
            _clip(alignment.ratio, -1.0, 1.0),
            _clip(alignment.t),
        ]
        return dict(zip(FEATURE_NAMES, values))

    def start_over(self) -> None:
        """The run went back to its start weights (see ``start_weights``): the training losses of the
        steps undone leave the interval in progress."""
        self.window_count, self.window_sum, self.window_abs_log_steps, self.window_steps = 0, 0.0, 0.0, 0
        self.last_log_train_loss = None

    def commit(self) -> None:
        """Close the decision: the current value becomes the previous one, and the training
        losses seen so far become the previous interval's."""
        self.previous = self.current
        self.train_loss_at_decision = self._train_loss()
        self.window_count, self.window_sum, self.window_abs_log_steps, self.window_steps = 0, 0.0, 0.0, 0
        self.last_log_train_loss = None
        self.alignment = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunTracker":
        """Also reads a tracker saved by controller state format 2 (no loss window: it starts empty)."""
        d = dict(d)
        if "train_loss" in d:  # format 2 kept the last logged training loss, not a window
            d.pop("train_loss")
        return cls(**d)
