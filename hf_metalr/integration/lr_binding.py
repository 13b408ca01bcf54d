"""What LR control the callback composes with, and how a decided LR reaches the optimizer.

The binding itself, :func:`apply_scale` (the scale goes into the scheduler's ``base_lrs``, so
``scheduler.pt`` carries it across a resume), is torch-only and lives in
``hf_metalr.controller.scheduler_binding``, shared with plain loops; it is re-exported here.

Schedulers that set the LR from bounds of their own (``OneCycleLR``, ``CyclicLR``) would undo the
controller's change at their next step, and composites (``SequentialLR``, ``ChainedScheduler``)
have no single ``base_lrs`` to scale: ``check_scheduler_supported`` refuses them, saying what to use.
"""

from __future__ import annotations

import json

from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from ..controller.scheduler_binding import apply_scale, unwrap_scheduler

__all__ = ["apply_scale", "check_scheduler_supported", "check_training_args", "unwrap_scheduler"]

METRIC_DRIVEN_TYPES = ("reduce_lr_on_plateau", "greedy")


def _metric_driven_classes() -> tuple[type, ...]:
    try:
        from transformers.optimization import GreedyLR

        return (ReduceLROnPlateau, GreedyLR)
    except ImportError:  # pragma: no cover - older transformers without GreedyLR
        return (ReduceLROnPlateau,)


def _conflict(what: str) -> ValueError:
    return ValueError(
        f"MetaLRCallback cannot run together with {what}: both would set the learning rate from the validation "
        "metric and overwrite each other. Use a time-based schedule with the callback (lr_scheduler_type="
        "'constant', 'linear', 'cosine', ...), or drop the callback to keep the other scheduler."
    )


def check_training_args(args) -> None:
    """Fail fast on ``TrainingArguments`` whose LR control conflicts with the callback."""
    scheduler_type = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    if scheduler_type in METRIC_DRIVEN_TYPES:
        raise _conflict(f"lr_scheduler_type={scheduler_type!r}")
    deepspeed = getattr(args, "deepspeed", None)
    if deepspeed:
        config = deepspeed
        if isinstance(deepspeed, str):
            with open(deepspeed) as f:
                config = json.load(f)
        if isinstance(config, dict) and config.get("scheduler"):
            raise _conflict(
                "a DeepSpeed config that defines its own 'scheduler' (DeepSpeed then owns the LR and the Trainer's "
                "scheduler is a no-op); remove the 'scheduler' section from the DeepSpeed config"
            )


_ABSOLUTE = {
    "OneCycleLR": "it sets the LR at every step from its own max_lr, so the controller's change would last one step",
    "CyclicLR": "it sets the LR at every step between its own base_lr and max_lr, so the controller's change would "
                "last one step",
    "SequentialLR": "it hands the LR from one scheduler to the next, which the controller cannot scale as one",
    "ChainedScheduler": "it combines several schedulers, which the controller cannot scale as one",
}
_USE_INSTEAD = ("Use a Trainer schedule (lr_scheduler_type='constant', 'linear', 'cosine', 'cosine_with_restarts', "
                "'warmup_stable_decay', ...: the controller scales it, warmup and decay included), a LambdaLR, or a "
                "single torch scheduler such as StepLR, MultiStepLR, ExponentialLR or CosineAnnealingLR; or drop "
                "the callback to keep this scheduler.")


def check_scheduler_supported(scheduler) -> None:
    """Fail on a scheduler the controller cannot compose with: metric-driven ones (two controllers),
    and those that set the LR absolutely or combine several schedulers."""
    scheduler = unwrap_scheduler(scheduler)
    if isinstance(scheduler, _metric_driven_classes()):
        raise _conflict(f"a metric-driven scheduler ({type(scheduler).__name__})")
    if isinstance(scheduler, LRScheduler):
        why = next((w for cls in type(scheduler).__mro__ for name, w in _ABSOLUTE.items() if cls.__name__ == name), None)
        if why is None and not isinstance(getattr(scheduler, "base_lrs", None), list):
            why = "it keeps no base_lrs, which is where the controller puts its scale"
        if why is not None:
            raise ValueError(f"MetaLRCallback cannot drive the LR through {type(scheduler).__name__}: {why}, while the "
                             f"trace and the logs would report the controller's LR. {_USE_INSTEAD}")
