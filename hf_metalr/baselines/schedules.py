"""One name per LR schedule, usable with any ``Trainer``.

- ``metalr``: constant schedule driven by ``MetaLRCallback`` (its default, meta-trained policy);
- ``metalr-random``: the same with ``policy="random"``, a fresh policy that only learns online;
- ``constant``: transformers ``constant``;
- ``step``: torch ``MultiStepLR``, x0.1 at 50% and again at 75% of the optimizer steps;
- ``cosine``: transformers ``cosine`` (cosine annealing to 0, no warmup);
- ``linear``: transformers ``linear`` (the Trainer's default);
- ``plateau``: the Trainer's own ``reduce_lr_on_plateau`` on ``metric_for_best_model``;
- ``greedy``: the Trainer's own ``greedy`` (GreedyLR) on ``metric_for_best_model``;
- ``prodigy``: the LR-free ``prodigyopt.Prodigy`` at ``lr=1.0`` on a constant schedule. It
  estimates its own step size, so the run's initial LR (``learning_rate``) has no effect on it;
- ``schedule-free``: the Trainer's own ``optim="schedule_free_adamw"`` (``schedulefree``) at the
  run's LR on a constant schedule; the Trainer evaluates with its averaged weights.

The two LR-free peers need the ``peers`` extra (``pip install 'hf_metalr[peers]'``);
:func:`available_schedules` tells which schedules this environment can run.

Use: ``TrainingArguments(**base, **schedule_training_overrides(name))``, then
``attach_baseline(trainer, name)`` (or ``attach_schedule``, which also adds ``MetaLRCallback`` for
``metalr``) before ``trainer.train()``.
"""

from __future__ import annotations

import importlib.util
import math

__all__ = ["LR_FREE", "SCHEDULES", "STEP_MILESTONES", "STEP_GAMMA", "MissingPeerError", "attach_baseline", "attach_schedule", "require_schedule",
           "available_schedules", "check_schedule", "schedule_training_overrides"]

LR_FREE: tuple[str, ...] = ("prodigy", "schedule-free")
SCHEDULES: tuple[str, ...] = ("metalr", "metalr-random", "constant", "step", "cosine", "linear", "plateau", "greedy") + LR_FREE
STEP_MILESTONES = (0.5, 0.75)
STEP_GAMMA = 0.1
PRODIGY_LR = 1.0

_SCHEDULER_TYPE = {
    "metalr": "constant",
    "metalr-random": "constant",
    "constant": "constant",
    "step": "constant",  # replaced by MultiStepLR in attach_baseline
    "cosine": "cosine",
    "linear": "linear",
    "plateau": "reduce_lr_on_plateau",
    "greedy": "greedy",
    "prodigy": "constant",
    "schedule-free": "constant",
}
_OPTIM = {"schedule-free": "schedule_free_adamw"}
_REQUIRED_PACKAGE = {"prodigy": "prodigyopt", "schedule-free": "schedulefree"}


class MissingPeerError(ImportError):
    """An LR-free peer schedule was asked for, but its package is not installed."""


def check_schedule(name: str) -> str:
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose from: {', '.join(SCHEDULES)}")
    return name


def missing_package(name: str) -> str | None:
    """The package schedule ``name`` needs and this environment lacks (None: nothing missing)."""
    package = _REQUIRED_PACKAGE.get(check_schedule(name))
    return package if package is not None and importlib.util.find_spec(package) is None else None


def require_schedule(name: str) -> str:
    """``name``, or :class:`MissingPeerError` naming the install command when its package is missing."""
    package = missing_package(name)
    if package is not None:
        raise MissingPeerError(
            f"schedule {name!r} needs the {package!r} package, which is not installed: "
            f"pip install 'hf_metalr[peers]' (or pip install {package})"
        )
    return name


def available_schedules(names=SCHEDULES) -> tuple[list[str], dict[str, str]]:
    """Split ``names`` into those this environment can run and {skipped name: missing package}."""
    skipped = {name: package for name in names if (package := missing_package(name)) is not None}
    return [name for name in names if name not in skipped], skipped


def schedule_training_overrides(name: str) -> dict:
    """The ``TrainingArguments`` fields that select schedule ``name``."""
    overrides = {"lr_scheduler_type": _SCHEDULER_TYPE[check_schedule(name)], "warmup_steps": 0}
    if name in _OPTIM:
        overrides["optim"] = _OPTIM[name]
    return overrides


def _total_optimizer_steps(trainer) -> int:
    args = trainer.args
    if args.max_steps and args.max_steps > 0:
        return args.max_steps
    per_epoch = max(1, math.ceil(len(trainer.get_train_dataloader()) / args.gradient_accumulation_steps))
    return per_epoch * math.ceil(args.num_train_epochs)


def prodigy_optimizer(trainer):
    """``Prodigy(lr=1.0)`` over the Trainer's own parameter groups: weight decay (decoupled, as
    AdamW's) on the parameters the Trainer decays, none on biases and norms."""
    from prodigyopt import Prodigy

    model, args = trainer.model, trainer.args
    decay = set(trainer.get_decay_parameter_names(model))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if n in decay], "weight_decay": args.weight_decay},
        {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0},
    ]
    return Prodigy([g for g in groups if g["params"]], lr=PRODIGY_LR, decouple=True)


def attach_baseline(trainer, name: str) -> None:
    """Finish setting up ``trainer`` for baseline schedule ``name`` (not ``metalr``).

    ``step`` creates the Trainer's own optimizer and a torch ``MultiStepLR`` on it; ``prodigy``
    gives the Trainer a ``Prodigy`` optimizer, over which it builds its constant schedule. The
    others need nothing beyond :func:`schedule_training_overrides`. A missing peer package raises
    :class:`MissingPeerError`.
    """
    require_schedule(name)
    if name in ("metalr", "metalr-random"):
        raise ValueError(f"{name!r} is not a baseline: pass MetaLRCallback(...) in Trainer(callbacks=[...]) instead")
    if name == "step":
        import torch

        total = _total_optimizer_steps(trainer)
        optimizer = trainer.create_optimizer()
        milestones = sorted({max(1, int(total * m)) for m in STEP_MILESTONES})
        trainer.lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=STEP_GAMMA)
    elif name == "prodigy":
        trainer.optimizer = prodigy_optimizer(trainer)


def attach_schedule(trainer, name: str, **metalr_options) -> None:
    """Finish setting up ``trainer`` for schedule ``name``: ``metalr`` adds a
    ``MetaLRCallback(**metalr_options)`` (``metalr-random`` forces ``policy="random"``); a baseline
    is :func:`attach_baseline`. A missing peer package raises :class:`MissingPeerError`."""
    require_schedule(name)
    if name in ("metalr", "metalr-random"):
        from ..integration.callback import MetaLRCallback

        if name == "metalr-random":
            metalr_options = {**metalr_options, "policy": "random"}
        trainer.add_callback(MetaLRCallback(**metalr_options))
    else:
        attach_baseline(trainer, name)
