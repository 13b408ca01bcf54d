"""What LR control the callback composes with, and how a decided LR reaches the optimizer.

The torch-only part, shared with plain loops, lives in ``hf_metalr.controller.scheduler_binding``
and is re-exported here: :func:`apply_scale` (the scale goes into the scheduler's ``base_lrs``,
so ``scheduler.pt`` carries it across a resume) and :func:`check_scheduler_supported`, which
refuses metric-driven schedulers, those that set the LR from bounds of their own (``OneCycleLR``,
``CyclicLR``) and composites (``SequentialLR``, ``ChainedScheduler``), saying what to use. Here:
:func:`check_training_args`, the Trainer's own arguments (a metric-driven ``lr_scheduler_type``,
a DeepSpeed config with its own scheduler).
"""

from __future__ import annotations

import json

from torch.optim.lr_scheduler import LambdaLR

from ..controller.scheduler_binding import apply_scale, check_scheduler_supported, conflict, unwrap_scheduler

__all__ = ["apply_scale", "check_scheduler_supported", "check_training_args", "ignored_warmup", "unwrap_scheduler"]

METRIC_DRIVEN_TYPES = ("reduce_lr_on_plateau", "greedy")


_OPTIMIZERS_WITH_WARMUP = ("schedule_free_adamw", "schedule_free_sgd")  # the Trainer passes warmup_steps to them


def ignored_warmup(args, lr_scheduler) -> str | None:
    """The warning for a warmup the Trainer's schedule drops: ``lr_scheduler_type="constant"``
    (transformers' ``get_constant_schedule``) ignores ``warmup_steps``, without a word. None otherwise,
    when the scheduler in use is not that constant schedule (one passed in ``optimizers=``), and when
    the optimizer warms up itself (transformers hands ``warmup_steps`` to Schedule-Free AdamW and SGD)."""
    import transformers.optimization

    constant = getattr(transformers.optimization, "_get_constant_lambda", None)  # (private: absent, no warning)
    scheduler_type = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    warmup = getattr(args, "warmup_steps", 0) or 0
    scheduler = unwrap_scheduler(lr_scheduler)
    optim = getattr(getattr(args, "optim", None), "value", getattr(args, "optim", None))
    if optim in _OPTIMIZERS_WITH_WARMUP or scheduler_type != "constant" or warmup <= 0 or not (
            constant is not None and isinstance(scheduler, LambdaLR) and all(f is constant for f in scheduler.lr_lambdas)):
        return None
    return (f"MetaLRCallback: warmup_steps={warmup:g} has no effect under lr_scheduler_type='constant' (transformers' "
            "constant schedule has no warmup), so the run starts at the full LR. For a warmup under the controller, "
            "use lr_scheduler_type='constant_with_warmup' (--lr_scheduler_type constant_with_warmup); for none, drop "
            "warmup_steps.")


def check_training_args(args) -> None:
    """Fail fast on ``TrainingArguments`` whose LR control conflicts with the callback."""
    scheduler_type = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    if scheduler_type in METRIC_DRIVEN_TYPES:
        raise conflict(f"lr_scheduler_type={scheduler_type!r}")
    deepspeed = getattr(args, "deepspeed", None)
    if deepspeed:
        config = deepspeed
        if isinstance(deepspeed, str):
            with open(deepspeed) as f:
                config = json.load(f)
        if isinstance(config, dict) and config.get("scheduler"):
            raise conflict(
                "a DeepSpeed config that defines its own 'scheduler' (DeepSpeed then owns the LR and the Trainer's "
                "scheduler is a no-op); remove the 'scheduler' section from the DeepSpeed config"
            )
