"""The LR schedule and the evaluation cadence of a recipe run.

- :func:`configure_schedule` makes ``TrainingArguments`` run ``--lr_schedule`` (before the Trainer):
  ``metalr`` keeps your ``--lr_scheduler_type`` (the controller scales it) and checks the
  ``--metalr_*`` flags; a baseline sets ``--lr_scheduler_type`` (and ``--optim``) itself. The
  recipe then builds ``MetaLRCallback`` from the flags, or attaches the baseline.
- :func:`configure_evaluation` makes the run evaluate often enough for ``--num_evaluations``
  controller decisions, with the number of optimizer steps the Trainer itself computes.
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback, TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SchedulerType
from transformers.training_args import OptimizerNames

from hf_metalr.baselines import MissingPeerError, require_schedule, schedule_training_overrides
from hf_metalr.checks import is_positive_finite
from hf_metalr.integration.arguments import MetaLROptionError, check_metalr_options

from .arguments import ScheduleArguments

logger = logging.getLogger("recipes")


WITHOUT_WARMUP = ("constant", "reduce_lr_on_plateau", "greedy")  # the Trainer's scheduler types that ignore warmup_steps


def _value(x):
    return getattr(x, "value", x)


def configure_schedule(schedule_args: ScheduleArguments, training_args: TrainingArguments) -> dict | None:
    """Make ``training_args`` run ``--lr_schedule``; return the ``MetaLRCallback`` kwargs (None for a baseline).

    - ``metalr`` (and ``metalr-*`` variants): ``--lr_scheduler_type`` (the recipes' default: ``constant``) and ``--warmup_steps``
      are kept: the controller multiplies that schedule (the callback warns at train begin when the type has no warmup to apply it to). A metric-driven type (plateau, greedy) would
      fight the controller and is refused.
    - a baseline: it sets ``--lr_scheduler_type`` (with a warning if you asked for another); your
      ``--warmup_steps`` (default 0, as in the comparison tool) is kept, which ``cosine``, ``linear``
      and ``schedule-free`` (its optimizer's own warmup) apply and the others ignore, with a warning. ``plateau``/``greedy`` need
      ``--metric_for_best_model`` (every recipe sets one).
    """
    name = schedule_args.lr_schedule
    if not is_positive_finite(training_args.learning_rate):
        raise ValueError(f"--learning_rate must be a finite number > 0, got {training_args.learning_rate!r}")
    requested = _value(training_args.lr_scheduler_type)
    if schedule_args.uses_controller:
        conflict = schedule_args.metric_driven_conflict(requested)
        if conflict:
            raise ValueError(conflict)
        try:
            return check_metalr_options(schedule_args, learning_rate=training_args.learning_rate)
        except MetaLROptionError as err:
            raise ValueError(str(err)) from None
    try:
        require_schedule(name)
    except MissingPeerError as err:
        raise ValueError(f"--lr_schedule {name}: {err}") from None
    overrides = schedule_training_overrides(name)
    wanted = overrides["lr_scheduler_type"]
    if requested not in (wanted, "constant"):
        logger.warning("--lr_schedule %s sets lr_scheduler_type=%s; your --lr_scheduler_type %s is ignored", name, wanted, requested)
    training_args.lr_scheduler_type = SchedulerType(wanted)
    if training_args.warmup_steps and wanted in WITHOUT_WARMUP and name != "schedule-free":  # (step: a MultiStepLR
        # on the constant type; schedule-free: transformers hands warmup_steps to AdamWScheduleFree itself)
        logger.warning("--lr_schedule %s has no warmup: --warmup_steps %g has no effect (cosine, linear and "
                       "schedule-free warm up)",
                       name, training_args.warmup_steps)
    if "optim" in overrides:
        training_args.optim = OptimizerNames(overrides["optim"])
    if name == "prodigy":
        logger.info("--lr_schedule prodigy runs Prodigy at lr=1.0: --learning_rate %g has no effect", training_args.learning_rate)
    if name in ("plateau", "greedy") and not training_args.metric_for_best_model:
        raise ValueError(f"--lr_schedule {name} steps on the validation metric: set --metric_for_best_model")
    ignored = schedule_args.non_default()
    if ignored:
        logger.warning("--lr_schedule %s: the --metalr_* settings %s are ignored", name, sorted(ignored))
    return None


class EvaluationCadence(TrainerCallback):
    """At train begin, with the step count the Trainer computed (``state.max_steps``): evaluate every
    ``max(1, max_steps // num_evaluations)`` optimizer steps when the recipe chose the cadence
    (``derive=True``), else warn when the run's own cadence gives fewer evaluations.

    Why not ``TrainingArguments(eval_steps=1 / num_evaluations)``: the Trainer rounds a ratio up
    (``ceil(max_steps * ratio)``), so a 12-step run at ratio 0.1 evaluates every 2 steps, 6 times,
    fewer than the 10 decisions promised.
    """

    def __init__(self, num_evaluations: int, derive: bool):
        self.num_evaluations, self.derive = num_evaluations, derive
        self.expected: int | None = None  # evaluations this run will make, known at train begin

    def on_train_begin(self, args, state, control, **kwargs):
        if self.derive:
            state.eval_steps = max(1, state.max_steps // self.num_evaluations)
            logger.info("evaluating every %d of %d optimizer steps", state.eval_steps, state.max_steps)
        if _value(args.eval_strategy) == "steps":
            self.expected = state.max_steps // state.eval_steps
        else:  # epoch: one at the end of each epoch the Trainer runs, a last partial one (max_steps) too
            self.expected = int(state.num_train_epochs)
        if self.expected < self.num_evaluations:
            if state.max_steps < self.num_evaluations:
                fix = (f"the run has only {state.max_steps} optimizer steps: raise --max_steps (or --num_train_epochs) "
                       "or lower --num_evaluations")
            elif _value(args.eval_strategy) == "epoch":
                fix = "raise --num_train_epochs, or leave --eval_strategy unset (the recipe then evaluates often enough)"
            else:
                fix = "leave --eval_strategy unset, or lower --eval_steps"
            logger.warning("only %d evaluations (controller decisions) in this run, fewer than --num_evaluations %d; %s",
                           self.expected, self.num_evaluations, fix)


def configure_evaluation(training_args: TrainingArguments, num_evaluations: int) -> EvaluationCadence:
    """Evaluate often enough for ``num_evaluations`` controller decisions; returns the callback that
    sets (or checks) the cadence once the Trainer knows its step count: pass it in ``callbacks``.

    ``--eval_strategy no`` (the Trainer's default) becomes ``steps``; an explicit strategy is kept.
    """
    if num_evaluations < 1:
        raise ValueError(f"--num_evaluations must be >= 1, got {num_evaluations}")
    derive = _value(training_args.eval_strategy) == "no"
    if derive:
        training_args.eval_strategy = IntervalStrategy.STEPS
        training_args.do_eval = True
    return EvaluationCadence(num_evaluations, derive)
