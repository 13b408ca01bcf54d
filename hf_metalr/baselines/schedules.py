"""One name per LR schedule, usable with any ``Trainer``.

- ``metalr``: constant schedule driven by ``MetaLRCallback`` (its default, meta-trained policy);
- ``metalr-random``: the same with ``policy="random"``, a fresh policy that only learns online;
- ``constant``: transformers ``constant``;
- ``step``: torch ``MultiStepLR``, x0.1 at 50% and again at 75% of the optimizer steps;
- ``cosine``: transformers ``cosine`` (cosine annealing to 0, no warmup);
- ``linear``: transformers ``linear`` (the Trainer's default);
- ``plateau``: the Trainer's own ``reduce_lr_on_plateau`` on ``metric_for_best_model``;
- ``greedy``: the Trainer's own ``greedy`` (GreedyLR) on ``metric_for_best_model``.

Use: ``TrainingArguments(**base, **schedule_training_overrides(name))``, then
``attach_schedule(trainer, name)`` before ``trainer.train()``.
"""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "STEP_MILESTONES", "STEP_GAMMA", "attach_schedule", "check_schedule", "schedule_training_overrides"]

SCHEDULES: tuple[str, ...] = ("metalr", "metalr-random", "constant", "step", "cosine", "linear", "plateau", "greedy")
STEP_MILESTONES = (0.5, 0.75)
STEP_GAMMA = 0.1

_SCHEDULER_TYPE = {
    "metalr": "constant",
    "metalr-random": "constant",
    "constant": "constant",
    "step": "constant",  # replaced by MultiStepLR in attach_schedule
    "cosine": "cosine",
    "linear": "linear",
    "plateau": "reduce_lr_on_plateau",
    "greedy": "greedy",
}


def check_schedule(name: str) -> str:
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose from: {', '.join(SCHEDULES)}")
    return name


def schedule_training_overrides(name: str) -> dict:
    """The ``TrainingArguments`` fields that select schedule ``name``."""
    return {"lr_scheduler_type": _SCHEDULER_TYPE[check_schedule(name)], "warmup_steps": 0}


def _total_optimizer_steps(trainer) -> int:
    args = trainer.args
    if args.max_steps and args.max_steps > 0:
        return args.max_steps
    per_epoch = max(1, math.ceil(len(trainer.get_train_dataloader()) / args.gradient_accumulation_steps))
    return per_epoch * math.ceil(args.num_train_epochs)


def attach_schedule(trainer, name: str, **metalr_options) -> None:
    """Finish setting up ``trainer`` for schedule ``name``.

    ``metalr`` adds a ``MetaLRCallback(**metalr_options)`` (``metalr-random`` forces
    ``policy="random"``); ``step`` creates the Trainer's own
    optimizer and a torch ``MultiStepLR`` on it. The others need nothing beyond the overrides.
    """
    check_schedule(name)
    if name in ("metalr", "metalr-random"):
        from ..integration.callback import MetaLRCallback

        if name == "metalr-random":
            metalr_options = {**metalr_options, "policy": "random"}
        trainer.add_callback(MetaLRCallback(**metalr_options))
    elif name == "step":
        import torch

        total = _total_optimizer_steps(trainer)
        optimizer = trainer.create_optimizer()
        milestones = sorted({max(1, int(total * m)) for m in STEP_MILESTONES})
        trainer.lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=STEP_GAMMA)
