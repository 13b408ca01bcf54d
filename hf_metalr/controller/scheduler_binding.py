"""Make the controller's LR scale the LR the optimizer uses, under any schedule (torch only).

Every Hugging Face schedule is a ``LambdaLR``, which recomputes ``group['lr'] = base_lr *
lambda(step)`` at each ``step()``: a plain write to ``group['lr']`` is gone one step later. So the
scale goes into the scheduler's ``base_lrs`` instead: the schedule's shape (warmup, decay) is
kept, and the controller multiplies it. A chainable torch scheduler (``StepLR``,
``ExponentialLR``, ``CosineAnnealingLR``, ...) derives the next LR from the current one, so the
current LR is rescaled with it, and so is a floor it adds (``eta_min``), so that the whole curve is
multiplied. ``base_lrs`` (and ``eta_min``) are part of the scheduler's own ``state_dict``, so a
saved scheduler carries the scale across a resume. Each group's reference is its ``initial_lr``,
so several param groups keep their ratios. Used by ``MetaLRCallback`` and by
``MetaLRController.scale_param_groups`` in a plain loop.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from ..checks import is_positive_finite

__all__ = ["apply_scale", "check_scheduler_supported", "conflict", "normalises_steps", "reference_lr", "schedule_anneals",
           "unwrap_scheduler"]

# torch schedulers that decay the LR (CosineAnnealingWarmRestarts decays within each cycle); OneCycleLR and CyclicLR
# are refused, LinearLR and ConstantLR are mostly warmups: they count as not annealing
_DECAYING = ("StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "PolynomialLR")


def schedule_anneals(scheduler, total_steps: int) -> bool:
    """Whether ``scheduler`` decays the LR by itself over ``total_steps`` optimizer steps: a
    ``LambdaLR`` (every Hugging Face schedule) whose factor for param group 0 (the group the
    controller's scale is read against) at the last step is at most half its peak (``linear``,
    ``cosine``, ``warmup_stable_decay``; not ``constant`` or ``constant_with_warmup``), or a torch
    scheduler that decays the LR (``StepLR``, ``ExponentialLR``, ``CosineAnnealingLR``, ...,
    matched by class)."""
    scheduler = unwrap_scheduler(scheduler)
    if isinstance(scheduler, LambdaLR):
        last = max(int(total_steps), 1) - 1  # the last step's factor: steps 0 .. total_steps - 1 are the ones taken
        factors = [scheduler.lr_lambdas[0](round(i * last / 100)) for i in range(101)]
        return max(factors) > 0 and factors[-1] <= 0.5 * max(factors)
    return type(scheduler).__name__ in _DECAYING


_NORMALISED = ("Adam", "Lion", "RMSprop")  # class names that hold one: each coordinate's step is the LR times a
# gradient normalised by its own running scale (AdamW, NAdam, RAdam, bitsandbytes' AdamW8bit and paged variants, ...)
_OWN_STEP_SIZE = ("DAdapt", "Prodigy", "GaLore", "ScheduleFree")  # named like those, but the LR is not the step per
# coordinate there: an LR-free optimizer scales it by its own estimate, GaLore steps in a projected space. Adafactor
# (a step relative to the parameter's scale by default) and Adagrad (a step that shrinks over the run) are left out too


def normalises_steps(optimizer) -> bool:
    """Whether ``optimizer`` (or the one under accelerate's wrapper) steps each coordinate by its LR
    times a normalised gradient, as Adam does: its class, or a base class, is named like Adam, Lion
    or RMSprop, and none like an optimizer that sets its own step size (D-Adaptation, Prodigy,
    GaLore, Schedule-Free). The controller compares such an LR with the distance estimate
    (``MetaLRController.steps_per_coordinate``); SGD's step scales with the gradient instead."""
    return _named_like(optimizer, _NORMALISED) and not _named_like(optimizer, _OWN_STEP_SIZE)


def heavy_ball_momentum(optimizer) -> bool:
    """Whether ``optimizer`` (or the one under accelerate's wrapper) is SGD with heavy-ball momentum:
    its class, or a base class, is named like SGD (torch's, bitsandbytes' 8-bit one, apex's fused
    one) and none like an optimizer that sets its own step size (Schedule-Free SGD averages its
    iterates instead), and a param group holds a momentum above 0 (``momentum``, or bitsandbytes'
    ``betas[0]``). Nesterov's variant counts. Under heavy-ball momentum the gradient opposes the
    previous step at LRs that train well (``gate.clear_overshoot``)."""
    if not _named_like(optimizer, ("SGD",)) or _named_like(optimizer, _OWN_STEP_SIZE):
        return False
    target = getattr(optimizer, "optimizer", optimizer)
    return any(_positive(group.get("momentum", (group.get("betas") or (0.0,))[0])) for group in target.param_groups)


def _named_like(optimizer, keys: tuple[str, ...]) -> bool:
    """Whether the class of ``optimizer`` (or of the one under accelerate's wrapper), or a base class,
    has one of ``keys`` in its name."""
    target = getattr(optimizer, "optimizer", optimizer)
    return any(key in cls.__name__ for cls in type(target).__mro__ for key in keys)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def reference_lr(optimizer, *, owner: str = "MetaLRCallback") -> float:
    """Param group 0's initial LR (``initial_lr``, else ``lr``), against which the controller scales
    every group. A ``ValueError`` naming the fix, in ``owner``'s name, for an optimizer that ignores
    the groups' ``lr`` (Adafactor's ``relative_step``), keeps it as a tensor, or starts group 0 at an
    LR that is not a finite number > 0."""
    first_group = optimizer.param_groups[0]
    initial_lr = first_group.get("initial_lr", first_group.get("lr"))
    trainer = owner == "MetaLRCallback"
    if first_group.get("relative_step"):
        raise ValueError(
            f"{owner} cannot drive {type(getattr(optimizer, 'optimizer', optimizer)).__name__} with "
            "relative_step=True: it computes its own step size and ignores the param groups' lr, so the controller's "
            "LR would have no effect. Build it with relative_step=False, scale_parameter=False, warmup_init=False and "
            "an lr" + (" (what TrainingArguments(optim='adafactor') does)" if trainer else "")
            + (", or drop the callback." if trainer else ", or drop the controller."))
    if isinstance(initial_lr, torch.Tensor):
        raise ValueError(
            f"{owner} writes plain float LRs into the param groups, and param group 0's LR is a tensor "
            f"({initial_lr!r}). Pass the optimizer a float lr (lr={float(initial_lr):g})"
            + (", or drop the callback." if trainer else "."))
    if not is_positive_finite(initial_lr):
        raise ValueError(
            f"{owner} scales every param group relative to param group 0, whose LR is {initial_lr!r}. "
            + ("Give the Trainer a learning_rate > 0 (--learning_rate), and with an optimizer of your own put a group "
               if trainer else "Put a group ")
            + "with a finite LR > 0 first in the optimizer's param_groups (freeze parameters with requires_grad=False "
            "rather than lr=0).")
    return initial_lr


def unwrap_scheduler(scheduler):
    """The torch scheduler under accelerate's ``AcceleratedScheduler`` wrapper, if any."""
    while scheduler is not None and not isinstance(scheduler, (LRScheduler, ReduceLROnPlateau)) and hasattr(
        scheduler, "scheduler"
    ):
        scheduler = scheduler.scheduler
    return scheduler


def apply_scale(optimizer: torch.optim.Optimizer, scheduler, scale: float) -> list[float]:
    """Set every group's base LR to ``initial_lr * scale`` and its current LR accordingly.

    Returns the LR of each group for the next optimizer step. The scheduler's ``_last_lr`` is
    updated too, so the Trainer logs the LR the optimizer really uses.
    """
    scheduler = unwrap_scheduler(scheduler)
    floor_ratio = None
    for i, group in enumerate(optimizer.param_groups):
        group.setdefault("initial_lr", group["lr"])
        base = group["initial_lr"] * scale
        if isinstance(scheduler, LambdaLR):
            scheduler.base_lrs[i] = base
            group["lr"] = base * scheduler.lr_lambdas[i](scheduler.last_epoch)
        elif isinstance(scheduler, LRScheduler):
            # chainable torch schedulers derive the next LR from the current one
            ratio = base / scheduler.base_lrs[i] if scheduler.base_lrs[i] else 1.0
            scheduler.base_lrs[i] = base
            group["lr"] = group["lr"] * ratio
            floor_ratio = ratio if floor_ratio is None else floor_ratio
        else:
            group["lr"] = base
    eta_min = getattr(scheduler, "eta_min", None)
    if floor_ratio is not None and isinstance(eta_min, (int, float)) and not isinstance(eta_min, bool):
        # CosineAnnealingLR, CosineAnnealingWarmRestarts: LR = eta_min + (...), so the floor scales with the curve (the
        # same ratio for every group, whose base LRs all move from one scale to the next)
        scheduler.eta_min = eta_min * floor_ratio
    lrs = [group["lr"] for group in optimizer.param_groups]
    if isinstance(scheduler, LRScheduler):
        scheduler._last_lr = list(lrs)
    return lrs


def _metric_driven_classes() -> tuple[type, ...]:
    try:
        from transformers.optimization import GreedyLR

        return (ReduceLROnPlateau, GreedyLR)
    except ImportError:  # pragma: no cover - older transformers without GreedyLR
        return (ReduceLROnPlateau,)


def conflict(what: str) -> ValueError:
    """The error for LR control driven by the metric too: two controllers would fight."""
    return ValueError(
        f"MetaLRCallback cannot run together with {what}: both would set the learning rate from the validation "
        "metric and overwrite each other. Use a time-based schedule with the callback (lr_scheduler_type="
        "'constant', 'linear', 'cosine', ...), or drop the callback to keep the other scheduler."
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


def _unsupported_reason(scheduler) -> str | None:
    """Why a (non metric-driven) torch scheduler cannot carry the controller's scale, or None."""
    if not isinstance(scheduler, LRScheduler):
        return None
    why = next((w for cls in type(scheduler).__mro__ for name, w in _ABSOLUTE.items() if cls.__name__ == name), None)
    if why is None and not isinstance(getattr(scheduler, "base_lrs", None), list):
        why = "it keeps no base_lrs, which is where the controller puts its scale"
    return why


def check_scheduler_supported(scheduler, *, plain_loop: bool = False) -> None:
    """Fail on a scheduler the controller cannot compose with: metric-driven ones (two controllers),
    and those that set the LR absolutely or combine several schedulers. ``plain_loop``: the
    message is for ``MetaLRController.scale_param_groups``, not for the Trainer's callback."""
    scheduler = unwrap_scheduler(scheduler)
    name = type(scheduler).__name__
    if isinstance(scheduler, _metric_driven_classes()):
        if plain_loop:
            raise ValueError(f"MetaLRController.scale_param_groups cannot run beside {name}: both would set the LR "
                             "from the validation metric and overwrite each other. Drop that scheduler, or use a "
                             "time-based one (a LambdaLR, StepLR, CosineAnnealingLR, ...).")
        raise conflict(f"a metric-driven scheduler ({name})")
    why = _unsupported_reason(scheduler)
    if why is None:
        return
    if plain_loop:
        raise ValueError(f"MetaLRController.scale_param_groups cannot carry its scale through {name}: {why}. Use a "
                         "LambdaLR or a single torch scheduler such as StepLR, ExponentialLR or CosineAnnealingLR, or "
                         "none (scheduler=None).")
    raise ValueError(f"MetaLRCallback cannot drive the LR through {name}: {why}, while the trace and the logs would "
                     f"report the controller's LR. {_USE_INSTEAD}")
