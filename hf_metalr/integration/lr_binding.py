"""Make a decided LR the LR the optimizer uses, whatever schedule the user picked.

Every Hugging Face schedule is a ``LambdaLR``, which recomputes ``group['lr'] = base_lr *
lambda(step)`` at each ``step()``: a plain write to ``group['lr']`` is gone one step later. So the
controller's scale goes into the scheduler's ``base_lrs`` instead: the schedule's shape (warmup,
decay) is kept, and the controller multiplies it. ``base_lrs`` is part of the scheduler's own
``state_dict``, so ``scheduler.pt`` carries the scale across a resume. Each group's reference is
its ``initial_lr``, so several param groups keep their ratios.
"""

from __future__ import annotations

import json

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

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


def unwrap_scheduler(scheduler):
    """The torch scheduler under accelerate's ``AcceleratedScheduler`` wrapper, if any."""
    while scheduler is not None and not isinstance(scheduler, (LRScheduler, ReduceLROnPlateau)) and hasattr(
        scheduler, "scheduler"
    ):
        scheduler = scheduler.scheduler
    return scheduler


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


def check_scheduler_supported(scheduler) -> None:
    scheduler = unwrap_scheduler(scheduler)
    if isinstance(scheduler, _metric_driven_classes()):
        raise _conflict(f"a metric-driven scheduler ({type(scheduler).__name__})")


def apply_scale(optimizer: torch.optim.Optimizer, scheduler, scale: float) -> list[float]:
    """Set every group's base LR to ``initial_lr * scale`` and its current LR accordingly.

    Returns the LR of each group for the next optimizer step. The scheduler's ``_last_lr`` is
    updated too, so the Trainer logs the LR the optimizer really uses.
    """
    scheduler = unwrap_scheduler(scheduler)
    for i, group in enumerate(optimizer.param_groups):
        group.setdefault("initial_lr", group["lr"])
        base = group["initial_lr"] * scale
        if isinstance(scheduler, LambdaLR):
            scheduler.base_lrs[i] = base
            group["lr"] = base * scheduler.lr_lambdas[i](scheduler.last_epoch)
        elif isinstance(scheduler, LRScheduler):
            # chainable torch schedulers derive the next LR from the current one
            ratio = base / scheduler.base_lrs[i]
            scheduler.base_lrs[i] = base
            group["lr"] = group["lr"] * ratio
        else:
            group["lr"] = base
    lrs = [group["lr"] for group in optimizer.param_groups]
    if isinstance(scheduler, LRScheduler):
        scheduler._last_lr = list(lrs)
    return lrs
