"""The framework-agnostic controller: metric in, learning rate out.

Use it from any training loop::

    ctrl = MetaLRController(initial_lr=1e-3, seed=0)
    ctrl.watch(model.parameters())               # the direction signal, the gate and the early-divergence guard
    for epoch in range(epochs):
        for batch in loader:
            loss = loss_of(model, batch)
            optimizer.zero_grad(); loss.backward()
            ctrl.before_optimizer_step()              # reads the final gradient
            optimizer.step()
            ctrl.after_optimizer_step()               # reads the update
            if ctrl.observe_train_loss(loss.item()):   # every step's loss: the trend and noise features, and
                ctrl.scale_param_groups(optimizer)      # True when the early-divergence guard cut the LR
        decision = ctrl.observe(evaluate(model), progress=(epoch + 1) / epochs)
        ctrl.scale_param_groups(optimizer)      # every group: its initial LR x decision.scale

(the whole recipe, with a scheduler and the iterate average: docs/controller.md).

The controller's LR is ``initial_lr * scale``; ``scale`` starts at 1 and is moved by the policy's
multiplicative actions, clipped to ``[min_lr, max_lr] / initial_lr``. Randomness is derived from
``(seed, decision index)`` alone, so the same stream of metrics gives the same decisions on every
rank and after a resume.

With the parameters watched (``watch`` plus ``before_optimizer_step`` / ``after_optimizer_step``
around each ``optimizer.step()``), the controller measures which way the LR is wrong (see
``alignment``), and its *direction gate* (``gate``) holds the policy to that evidence: a raise
goes through only when the gradient keeps pointing along the previous steps, a cut only on
evidence that the steps are too long (an overshoot, a bounce around a valley floor, a run that
moved far without progress, the distance check), a raise the next evaluation punishes is taken
back, so is a cut while nothing reads an overshoot, and a clear overshoot is cut whatever the
policy asks. The rules, and why each is there, are in ``gate``'s docstring. The decision records
what the policy asked for and why it was not applied (``Decision.gate``), or what let it through
(``Decision.evidence``). With the gate on:

- since the direction needs no trend, the policy acts from the first evaluation on;
- before the first evaluation, the *early-divergence guard* (``early_guard``) reads every step's
  training loss: a loss that climbs, record after record (each above ``EARLY_SPIKE`` times every
  loss before it, two in a row, or one ``EXTREME`` one, or a non-finite loss), says the LR is far
  too high, and the LR is cut to a quarter at once, at most twice, so the damage an LR far too high
  does in the first steps (dead units, a collapsed output) is not left to the first decision; and
  every ``gate.EARLY_DISTANCE_EVERY`` steps the distance check (``gate.past_the_distance``) halves
  it while the steps are too long by both of its measures. ``observe_train_loss`` returns True
  when either cut; ``early_cuts`` lists each cut.

The policy's choice stays the RL action (``Decision.action_index``, what the online learner and
meta-training learn from) when the gate holds it, the fixed cut replaces it or the undo takes a
raise back: those are part of what follows the choice, as the environment is for any RL action.

Without watched parameters there is no evidence, the gate and its safeguards are off, and the
first evaluation keeps the LR.
"""

from __future__ import annotations

import math
import numbers
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..checks import is_positive_finite, real_number
from .actions import apply_multiplier, divergence_multiplier
from .alignment import DEFAULT_SKETCH_SIZE, GradientAlignment
from .early_guard import CUT as EARLY_CUT
from .early_guard import EarlyDivergenceGuard
from .features import RunTracker, is_finite, log_objective, select
from .gate import (CREEP_EVALUATIONS, DRIFT_GROWTH_INTERVALS, EARLY_DISTANCE_CUT, EARLY_DISTANCE_EVERY, RAISE_CEILING,
                   distance_floor, gate_move, long_plateau, long_plateau_calls_for_a_cut, lr_over_distance,
                   made_progress, moved_but_stuck, past_the_distance, short_plateau, wrecked)
from .iterate_average import IterateAverage
from .learner import ActorCriticConfig, ActorCriticLearner
from .policy import PolicyNetwork, load_policy, load_policy_weights, random_policy
from .scheduler_binding import apply_scale, check_scheduler_supported, reference_lr, unwrap_scheduler
from .scheduler_binding import heavy_ball_momentum, normalises_steps
from .scheduler_binding import schedule_anneals as decays_by_itself
from .start_weights import StartWeights, clear_optimizer_state
from .warmup_replay import REPLAYED, WarmupReplay
from .threads import single_threaded
from .serialization import optimizer_state_from_json, optimizer_state_to_json, tensors_to_text, text_to_tensors

__all__ = ["Decision", "MetaLRController", "check_options", "resolve_policy", "is_early_distance_cut", "DEFAULT_MIN_LR_RATIO",
           "DEFAULT_MAX_LR_RATIO"]


DEFAULT_MIN_LR_RATIO = 1e-3
DEFAULT_MAX_LR_RATIO = 1e2
STATE_FORMAT = 5  # 5: the early-divergence guard; 4: gradient alignment; 3: training losses kept per step; 2: the
# last logged one. 2 to 4 still load (without a guard state, the guard starts afresh)
READABLE_STATE_FORMATS = (2, 3, 4, 5)
_STATE_KEYS = ("seed", "initial_lr", "scale", "decision_index", "previous_multiplier", "pending", "tracker", "history",
               "policy")  # in every readable format; the others are read with a default


_RULE_EVIDENCE = (("restore:", "restore"), ("undo: the metric got worse right after the last raise", "undo_raise"),
                  ("undo: the metric got worse right after the last cut", "undo_cut"),
                  ("undo: the metric is ", "unpaid_undo"),
                  ("undo: the gradient now opposes", "opposed_undo"))  # how a history saved before ``rule`` names its moves


def is_early_distance_cut(cut: dict) -> bool:
    """Whether an ``early_cuts`` entry is the distance check's (``kind`` "distance"; it records the
    ``param_drift`` and ``lr_over_distance`` it read) rather than the early-divergence guard's
    (``kind`` "divergence"; it records the ``reference`` loss the step's loss climbed above). An
    entry from before ``kind`` was recorded is told by its fields."""
    if "kind" in cut:
        return cut["kind"] == "distance"
    return "lr_over_distance" in cut


def _joined(*parts: str | None) -> str | None:
    """The parts that are not None, joined by '; ' (None when there are none)."""
    present = [part for part in parts if part]
    return "; ".join(present) if present else None


def _is_bool(value) -> bool:
    """A Python or a numpy bool (not 0 or 1, which are more often a typo than a choice)."""
    import numpy as np

    return isinstance(value, (bool, np.bool_))


def check_options(*, min_lr=None, max_lr=None, meta_lr=1e-4, greedy=None, policy="default", initial_lr=None,
                  learn_online=True, gate=True, seed=None, greater_is_better=None,
                  owner: str = "MetaLRController", text_policy: bool = False, origins: dict[str, str] | None = None) -> None:
    """The one check of the controller's options, for ``MetaLRController``, ``MetaLRCallback``, the
    launcher and the recipes. Raises ``ValueError`` (``TypeError`` for a policy of the wrong kind)
    naming ``owner`` and the option.

    - ``min_lr``, ``max_lr``: None or a finite number > 0, with ``min_lr <= max_lr``;
    - ``meta_lr``: a finite number > 0; ``greedy``, ``greater_is_better``: None, True or False;
      ``learn_online``, ``gate``: True or False; ``seed``: None or a whole number >= 0;
    - ``policy``: ``"default"``, ``"random"`` or a path; also None or a ``PolicyNetwork`` unless
      ``text_policy`` (``MetaLRCallback`` saves its arguments in checkpoints as JSON);
    - with ``initial_lr``: a finite number > 0 within ``[min_lr, max_lr]``; ``origins`` says where
      each bound came from (``{"min_lr": "flag --metalr_min_lr"}``), and the initial LR
      (``{"initial_lr": "param group 0's"}``), for the message.
    """
    for name, value in (("min_lr", min_lr), ("max_lr", max_lr)):
        if value is not None and not is_positive_finite(value):
            raise ValueError(f"{owner}({name}={value!r}): must be a finite number > 0, or None")
    if min_lr is not None and max_lr is not None and min_lr > max_lr:
        raise ValueError(f"{owner}: min_lr={min_lr} is above max_lr={max_lr}; swap them")
    if not is_positive_finite(meta_lr):
        raise ValueError(f"{owner}(meta_lr={meta_lr!r}): must be a finite number > 0")
    if not (greedy is None or _is_bool(greedy)):
        raise ValueError(f"{owner}(greedy={greedy!r}): must be True, False or None (the policy's own default)")
    if not (greater_is_better is None or _is_bool(greater_is_better)):  # "False" would read as true
        raise ValueError(f"{owner}(greater_is_better={greater_is_better!r}): must be True (a score) or False (a loss)"
                         f"{'' if owner == 'MetaLRController' else ', or None (from the metric)'}")
    for name, value in (("learn_online", learn_online), ("gate", gate)):
        if not _is_bool(value):  # "False" or "no" would read as true
            raise ValueError(f"{owner}({name}={value!r}): must be True or False")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"{owner}(seed={seed!r}): must be a whole number >= 0, or None")
    if not (isinstance(policy, (str, Path)) or (not text_policy and (policy is None or isinstance(policy, PolicyNetwork)))):
        raise TypeError(f"{owner}(policy=...) takes 'default', 'random'{'' if text_policy else ', None, a PolicyNetwork'} or a "
                        f"file path, got {type(policy).__name__}")
    if initial_lr is None:
        return
    if not is_positive_finite(initial_lr):
        raise ValueError(f"initial_lr must be a finite number > 0, got {initial_lr!r}")
    outside = [(name, bound) for name, bound, wrong in (("min_lr", min_lr, min_lr is not None and min_lr > initial_lr),
                                                         ("max_lr", max_lr, max_lr is not None and max_lr < initial_lr)) if wrong]
    if outside:
        named = " and ".join(f"{bound} from {(origins or {}).get(name, name)}" for name, bound in outside)
        low = min_lr if min_lr is not None else f"{initial_lr * DEFAULT_MIN_LR_RATIO:g} (default)"
        high = max_lr if max_lr is not None else f"{initial_lr * DEFAULT_MAX_LR_RATIO:g} (default)"
        what = (origins or {}).get("initial_lr")
        crossed = ""  # a bound given past the other, default, one: the defaults follow the initial LR
        if min_lr is not None and max_lr is None and min_lr > initial_lr * DEFAULT_MAX_LR_RATIO:
            crossed = f"; min_lr is above even the default max_lr, {DEFAULT_MAX_LR_RATIO:g}x the initial learning rate"
        elif max_lr is not None and min_lr is None and max_lr < initial_lr * DEFAULT_MIN_LR_RATIO:
            crossed = f"; max_lr is below even the default min_lr, {DEFAULT_MIN_LR_RATIO:g}x the initial learning rate"
        raise ValueError(f"the initial learning rate {initial_lr}{f' ({what})' if what else ''} must lie within "
                         f"[min_lr, max_lr] = [{low}, {high}] "
                         f"({named}){crossed}; widen the bounds or change the initial learning rate")


START_OVER_REASONS = {  # a decision's ``start_over``, in the evidence's words
    "diverged": "a wrecked run (the metric is not finite)",
    "long plateau": "a start-over on a long plateau",
    "wrecked": "a wrecked run (the steps too long by both measures, the metric still at its first evaluation's level)",
}


@dataclass
class Decision:
    """One decision: what was seen and what LR follows."""

    index: int
    value: float | None
    reward: float | None
    multiplier: float  # the LR multiplier asked for: the policy's choice, or a fixed response (trace key "action")
    applied: float  # the multiplier that took effect (new scale / old scale): 1 when the gate held it,
    # gate.CLEAR_OVERSHOOT_CUT or the undo's when a safeguard replaced it, nearer 1 when a bound caps it
    action_index: int | None  # the RL action: the index of ``multiplier`` in the policy's action set; None for the
    # fixed divergence response
    by_policy: bool  # False where no policy choice was made: the cut at a divergence, and the keep at the first evaluation
    # when there is no gate evidence (nothing watched, or gate=False)
    lr: float  # the controller's LR from now on (initial_lr * scale)
    scale: float  # the LR scale: lr / initial_lr (logged as metalr/scale, traced as scale)
    learned: bool  # whether the policy was updated at this decision
    diverged: bool
    features: dict | None  # every feature computed, by name (the policy reads those it was trained on)
    gate: str | None = None  # why the direction gate kept the LR instead of ``multiplier`` (None: not held)
    evidence: str | None = None  # what let a raise or a cut through the gate, what made the fixed cut at a clear
    # overshoot, what took back a raise or a cut ("undo: ..."), or what restored the distance check's cuts
    # ("restore: ..."), and how min_lr or max_lr capped the move if one did (None: a keep, held, or no gate and no cap)
    rule: str | None = None  # the safeguard that made the move, where later decisions ask (``gate.GatedMove.rule``)
    rewound: bool | None = None  # a wrecked run's decision (a divergence, or a cut while the steps are too long by both
    # of the distance check's measures and the metric stays at its first evaluation's level, ``gate.wrecked``) or a cut
    # on a long plateau (``gate.long_plateau_calls_for_a_cut``): whether the weights went back to where the run
    # started (None: not asked)
    start_over: str | None = None  # why the run was to start over, where it was asked: "diverged", "long plateau" or
    # "wrecked" (the keys of ``START_OVER_REASONS``)

    @property
    def action(self) -> float:
        """Deprecated alias of ``multiplier`` (the trace and the logs keep the key ``action``)."""
        return self.multiplier

    def as_dict(self) -> dict:
        """The fields by name, ``features`` copied (every other field is a scalar or a string): what
        ``dataclasses.asdict`` gives, without its recursive walk (about 30 us less per decision)."""
        return {**vars(self), "features": dict(self.features) if self.features is not None else None}


def resolve_policy(policy: str | Path | PolicyNetwork | None, seed: int) -> PolicyNetwork:
    """``"default"``: the shipped meta-trained policy; ``"random"`` (or None): a fresh seeded
    policy; a path: a saved policy; a network: itself."""
    if isinstance(policy, PolicyNetwork):
        return policy
    if policy is None or policy == "random":
        return random_policy(seed)
    if policy == "default":
        from ..policies import default_policy_path

        return load_policy(default_policy_path())
    return load_policy(policy)


class MetaLRController:
    """Decides the LR at each evaluation from the validation metric.

    Args:
        initial_lr: the LR the run starts at (param group 0's); the scale multiplies it.
        policy, seed, min_lr, max_lr, learn_online, meta_lr, greedy, gate: as ``MetaLRCallback``'s.
        greater_is_better: the direction of the values ``observe`` is given; False (a loss) by
            default. The callback infers it from the metric's name; here it is stated.

    ``state_dict()`` is JSON-serializable and holds everything needed to continue exactly from a
    decision: policy weights, meta-optimizer state, run history (tracker, scale, previous action,
    the pending transition), the decision index that seeds the action RNG, the gradient
    alignment's sketches and sums, and the iterate-average check's last loss. ``watch`` and
    ``load_state_dict`` may come in either order. The iterate average of an interval in progress
    is not in it (it is as large as the weights): ``iterate_average.state_dict()`` holds it.
    """

    def __init__(
        self,
        initial_lr: float,
        *,
        policy: str | Path | PolicyNetwork | None = "default",
        seed: int = 0,
        min_lr: float | None = None,
        max_lr: float | None = None,
        learn_online: bool = True,
        meta_lr: float = 1e-4,
        greater_is_better: bool = False,
        greedy: bool | None = None,
        gate: bool = True,
    ):
        check_options(min_lr=min_lr, max_lr=max_lr, meta_lr=meta_lr, greedy=greedy, policy=policy, initial_lr=initial_lr,
                      learn_online=learn_online, gate=gate, seed=seed, greater_is_better=greater_is_better)
        if greater_is_better is None:
            raise ValueError("MetaLRController(greater_is_better=None): must be True (a score) or False (a loss)")
        if seed is None:  # (the callback's None means the Trainer's seed; a controller has no Trainer)
            raise ValueError("MetaLRController(seed=None): must be a whole number >= 0")
        self.initial_lr = float(initial_lr)
        self.min_lr = float(min_lr) if min_lr is not None else self.initial_lr * DEFAULT_MIN_LR_RATIO
        self.max_lr = float(max_lr) if max_lr is not None else self.initial_lr * DEFAULT_MAX_LR_RATIO
        self.seed = int(seed)
        # a trained policy is exploited; a fresh one has to explore to learn anything
        self.greedy = (policy not in (None, "random")) if greedy is None else bool(greedy)
        self.learn_online = bool(learn_online)
        with single_threaded():
            self.policy = resolve_policy(policy, self.seed)
        self.multipliers = tuple(self.policy.config.multipliers)
        if 1.0 not in self.multipliers:
            raise ValueError(f"the policy's multipliers {self.multipliers} lack 1.0, which the controller needs to keep the "
                             "LR at the first evaluation; retrain the policy with a keep action (hf-metalr meta-train)")
        self.keep_index = self.multipliers.index(1.0)
        self.gate = bool(gate)
        self.alignment: GradientAlignment | None = None
        self.iterate_average: IterateAverage | None = None
        self.start_weights: StartWeights | None = None  # while a cut may start the run over: _may_start_over_later
        self._optimizer = None  # read_optimizer's: its state is cleared when the weights go back to their start
        self._start_copy_due = True  # the first optimizer step takes the copy; a loaded state's run has begun
        self.warmup = WarmupReplay()  # the schedule's warmup, played again after a start-over
        self._lrs_before_replay: list | None = None  # the groups' LRs of a step the replay shortens, put back after it
        # a loaded state was saved while the start weights were kept: whoever loads it loads them too (the callback
        # from its checkpoint file, a plain loop with start_weights.load_state_dict); a start-over without them warns
        self.start_weights_expected = False
        self.learner = ActorCriticLearner(self.policy, ActorCriticConfig(lr=meta_lr)) if learn_online else None
        self.tracker = RunTracker(greater_is_better=greater_is_better)
        self.scale = 1.0
        self.decision_index = 0
        self.previous_multiplier = 1.0
        self.pending: dict | None = None
        self.history: list[dict] = []
        self.early_guard = EarlyDivergenceGuard()
        self.early_cuts: list[dict] = []
        self._watched_state: dict | None = None  # loaded before watch(): see _restore_watched
        self._warned: set[str] = set()  # the warnings given once so far, by key (_warn_once)
        self._lr_written: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # optimizer -> group 0's LR
        # that the last scale_param_groups without a scheduler wrote into it
        self._train_losses_since_decision = 0  # observe_train_loss(es) calls since the last decision: steps were made
        self._train_losses_seen = False  # any training loss at all (a loop that reports its steps)
        self._attached: dict | None = None  # attach(): the optimizer, its scheduler and the step hooks
        self._watched_by_attach = False  # the watch is attach's own (not a watch() call)
        self._unheld_carry: float | None = None  # a restored scheduler's base LR that attach found and no state held
        self._average_steps_saved = 0  # steps of the loaded state's interval average, for _warn_unrestored_average
        self._evaluations_without_steps = 0  # observe calls that found no step since the last decision (_no_step)
        # the user's schedule decays the LR by itself (set by the callback from the scheduler at train begin, or by a
        # plain loop): the gate then keeps only the cuts that answer an overshoot (see gate.direction_verdict)
        self.schedule_anneals = False
        # the optimizer's step per coordinate is its LR times a normalised update (Adam, AdamW, Lion, RMSprop...), so
        # the LR compares with the distance estimate (see past_the_distance); set by the callback and by attach from
        # the optimizer's class, by a plain loop that only watches itself
        self.steps_per_coordinate = False
        # the optimizer steps by its LR times a momentum buffer of raw gradients (SGD with momentum): the gradient then
        # opposes the previous step at LRs that train well, so the alignment alone does not cut (gate.clear_overshoot)
        self.heavy_ball = False

    def read_optimizer(self, optimizer) -> None:
        """Set what the gate reads of the optimizer's kind: ``steps_per_coordinate`` and ``heavy_ball``
        (the callback at train begin, ``attach``, and meta-training's episodes call it alike)."""
        self.steps_per_coordinate = normalises_steps(optimizer)
        self.heavy_ball = heavy_ball_momentum(optimizer)
        self._optimizer = optimizer

    # -- the LR -------------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        return self.initial_lr * self.scale

    @property
    def min_scale(self) -> float:
        return self.min_lr / self.initial_lr

    @property
    def max_scale(self) -> float:
        return self.max_lr / self.initial_lr

    def scale_param_groups(self, optimizer: torch.optim.Optimizer, scheduler=None) -> list[float]:
        """For a plain loop: make the controller's scale the optimizer's, each group at its initial LR
        x scale, times the ``scheduler``'s factor when there is one (its ``base_lrs`` carry the
        scale, so its next ``step()`` keeps it: see ``scheduler_binding``). Returns each group's LR
        for the next step. Call after every decision (and after ``load_state_dict``). A scheduler
        that cannot carry the scale (``OneCycleLR``, ``CyclicLR``, a composite, a metric-driven one),
        param group 0 at an LR that is a tensor, not > 0 or not this controller's ``initial_lr``, and
        an optimizer that ignores the groups' ``lr`` (Adafactor's ``relative_step``) are each a
        ``ValueError`` saying what to use. Without a ``scheduler``, a param group 0 LR that changed
        since the last call (most likely a scheduler of the loop's own: it and the controller then
        undo each other's changes) is a warning, once; ``load_state_dict`` resets that comparison."""
        check_scheduler_supported(scheduler, plain_loop=True)
        inner = unwrap_scheduler(scheduler)
        if inner is not None and getattr(inner, "optimizer", None) not in (None, optimizer, getattr(optimizer, "optimizer", None)):
            raise ValueError("MetaLRController.scale_param_groups(optimizer, scheduler): the scheduler belongs to another "
                             "optimizer; pass the scheduler built on this optimizer (or none)")
        base = reference_lr(optimizer, owner="MetaLRController.scale_param_groups")
        if not math.isclose(base, self.initial_lr, rel_tol=1e-6):
            raise ValueError(f"MetaLRController(initial_lr={self.initial_lr:g}) drives an optimizer whose param group 0 "
                             f"starts at lr={base:g}: the scale multiplies the group's own LR, so bounds, trace and "
                             "schedule factor would all be off. Build the controller with "
                             "initial_lr=optimizer.param_groups[0].get('initial_lr', optimizer.param_groups[0]['lr']) "
                             "(a scheduler's first step, at its construction, may already have moved 'lr')")
        if scheduler is None:
            self._warn_rewritten_lr(optimizer)
        lrs = apply_scale(optimizer, scheduler, self.scale)
        if scheduler is None:
            self._lr_written[optimizer] = lrs[0]
        else:
            self._lr_written.pop(optimizer, None)
        return lrs

    def _warn_rewritten_lr(self, optimizer) -> None:
        """Once: param group 0's LR is not what the last ``scale_param_groups`` without a scheduler
        wrote into this optimizer: something rewrote it since, most likely a scheduler's ``step()``
        that is not passed here, and the two then undo each other's changes. ``load_state_dict``
        forgets what was written (a resume restores the optimizer's LR too)."""
        written = self._lr_written.get(optimizer)
        lr = optimizer.param_groups[0].get("lr") if optimizer.param_groups else None
        if (written is None or not isinstance(lr, numbers.Real) or isinstance(lr, bool)
                or math.isclose(lr, written, rel_tol=1e-6)):
            return
        self._warn_once("schedule", f"MetaLRController.scale_param_groups: param group 0's LR is {float(lr):.4g}, not "
                        f"the {written:.4g} the last call wrote: something rewrote it since. If that is a scheduler "
                        "stepping this optimizer, it and the controller undo each other's changes; pass it: "
                        "scale_param_groups(optimizer, scheduler), or attach(optimizer, scheduler)", UserWarning,
                        stacklevel=3)

    def attach(self, optimizer: torch.optim.Optimizer, scheduler=None, *, total_steps: int | None = None,
               average_iterates: bool = False) -> MetaLRController:
        """For a plain loop, the calls a step needs, made for you: watch the parameters ``optimizer``
        updates, read every ``optimizer.step()`` through the optimizer's own step hooks
        (``before_optimizer_step`` with the schedule's factor, then ``after_optimizer_step``: after
        any clipping, an accumulation's last micro-batch or a ``GradScaler``'s unscaling, and not at
        a step a scaler skips), and write every decision, every early-divergence cut and a loaded
        state into the optimizer and ``scheduler`` at once (``scale_param_groups``, whose checks run
        here, before any work). ``total_steps``: the run's optimizer steps, which a ``LambdaLR``
        (every Hugging Face schedule) needs for ``schedule_anneals``; a torch scheduler is read by
        its class. Left to you: ``observe_train_loss`` after each step and ``observe`` at each
        evaluation. Refused: a second attach (``detach`` first), an optimizer another controller is
        attached to, and parameters watched already by ``watch`` (``attach`` watches them itself).
        The hooks hold the controller weakly. Returns ``self``."""
        if self._attached is not None:
            raise ValueError("MetaLRController.attach: already attached to an optimizer; detach() first")
        target = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one
        other = getattr(target, "_metalr_attached", lambda: None)()
        if other is not None and other is not self:
            raise ValueError("MetaLRController.attach: another MetaLRController is attached to this optimizer (two "
                             "would fight over its LR); detach() that one first")
        params = [p for group in target.param_groups for p in group["params"]]
        if self.alignment is not None and [id(p) for p in self.alignment.params] != [id(p) for p in params if p.requires_grad]:
            raise ValueError("MetaLRController.attach watches the parameters the optimizer updates itself, and this "
                             "controller already watches others (watch()): drop the watch() call")
        if isinstance(unwrap_scheduler(scheduler), torch.optim.lr_scheduler.LambdaLR) and total_steps is None:
            raise ValueError("MetaLRController.attach(optimizer, scheduler): the scheduler is a LambdaLR, whose decay "
                             "is known only over the run's length: pass total_steps= (the run's optimizer steps)")
        if total_steps is not None and (isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral)
                                        or total_steps < 1):
            raise ValueError(f"MetaLRController.attach(total_steps={total_steps!r}): the run's optimizer steps, a whole "
                             "number >= 1")
        carried = getattr(unwrap_scheduler(scheduler), "base_lrs", None)
        # a scale the scheduler carries and the controller does not: said at the first step unless a state is loaded
        self._unheld_carry = (carried[0] if carried and isinstance(carried[0], (int, float))
                              and not math.isclose(carried[0], self.lr, rel_tol=1e-6) else None)
        if self._watched_by_attach and average_iterates != (self.iterate_average is not None):
            self.alignment = self.iterate_average = None  # attach's own watch: made again below, as asked
        if self.alignment is not None and average_iterates != (self.iterate_average is not None):
            raise ValueError(f"MetaLRController.attach(average_iterates={average_iterates}): the parameters are watched "
                             f"already, with average_iterates={not average_iterates}; pass that, or drop the watch() call")
        self.scale_param_groups(optimizer, scheduler)  # its checks first, then the scale (a loaded one, say)
        if scheduler is not None:
            self.schedule_anneals = decays_by_itself(scheduler, total_steps or 1)
        self.read_optimizer(optimizer)
        if self.alignment is None:
            self.watch(params, average_iterates=average_iterates)
            self._watched_by_attach = True
        controller = weakref.ref(self)

        def before(opt, args, kwargs):
            if (ctrl := controller()) is not None:
                ctrl._warn_unheld_carry()
                factor = ctrl.schedule_factor(opt)
                ctrl._warn_unattached_schedule(factor)
                ctrl._before_step(factor)

        def after(opt, args, kwargs):
            if (ctrl := controller()) is not None:
                ctrl._after_step()

        handles = (target.register_step_pre_hook(before), target.register_step_post_hook(after))
        target._metalr_attached = controller
        self._attached = {"optimizer": optimizer, "scheduler": scheduler, "handles": handles, "target": target}
        return self

    def detach(self) -> None:
        """Remove ``attach``'s step hooks: no step is read any more, and decisions are no longer
        written into the optimizer (make the step calls and ``scale_param_groups`` yourself, or
        attach again)."""
        if self._attached is not None:
            for handle in self._attached["handles"]:
                handle.remove()
            self._attached["target"]._metalr_attached = lambda: None
            self._attached = None

    def _warn_unheld_carry(self) -> None:
        """Once, at the first step after ``attach``: the scheduler had carried a scale (a restored
        one) that the controller did not hold, and no state was loaded since; attach set it to the
        controller's."""
        carried, self._unheld_carry = self._unheld_carry, None
        if carried is not None:
            warnings.warn(f"MetaLRController.attach: the scheduler's base LR was {carried:.4g} (a scale of "
                          f"{carried / self.initial_lr:.4g}, from a saved state?), and this controller's LR is "
                          f"{self.lr:.4g}: the run goes on at the controller's. To resume a run, load the controller's "
                          "state too (load_state_dict, before the first step), which brings its scale back",
                          UserWarning, stacklevel=5)

    def _warn_unattached_schedule(self, factor: float | None) -> None:
        """Once: the optimizer's LR is not the controller's at a step while no scheduler was given to
        ``attach``: a scheduler of the loop's own rewrites the LR, and undoes every decision."""
        if (self._attached is None or self._attached["scheduler"] is not None or factor is None
                or math.isclose(factor, 1.0, rel_tol=1e-6)):
            return
        self._warn_once("schedule", f"MetaLRController: param group 0 steps at {factor:.4g}x the controller's LR, and "
                        "attach() was given no scheduler: if a scheduler steps this optimizer, its next step() undoes "
                        "each decision. Pass it: attach(optimizer, scheduler)", UserWarning, stacklevel=4)

    def _warn_once(self, key: str, message: str, category: type[Warning], stacklevel: int) -> None:
        """``warnings.warn`` the first time ``key`` comes up, and nothing after (``stacklevel`` as the
        caller's own would be)."""
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, category, stacklevel=stacklevel + 1)

    def _apply_if_attached(self) -> None:
        if self._attached is not None:
            self.scale_param_groups(self._attached["optimizer"], self._attached["scheduler"])

    # -- gradient alignment --------------------------------------------------------------------
    def watch(self, params, *, sketch_size: int = DEFAULT_SKETCH_SIZE, average_iterates: bool = False,
              keep_start: bool = True) -> GradientAlignment:
        """Measure the gradient alignment of ``params`` (see ``alignment``); the sketch is drawn
        from the controller's seed, so every rank draws the same one. ``average_iterates``: also keep
        the average of the iterates since the last decision (see ``iterate_average``), whose gain
        ``observe`` measures with the ``validation_loss`` it is given. ``keep_start`` (with the
        gate): keep the weights from before the first step in host memory, so that a cut on a
        wrecked run starts it over from them (see ``start_weights``), until the run has made progress
        or nothing can start it over any more (``_may_start_over_later``)."""
        params = list(params)
        self.alignment = GradientAlignment(params, sketch_size=sketch_size, seed=self.seed)
        self.iterate_average = IterateAverage(params) if average_iterates else None
        self.start_weights = StartWeights(params) if keep_start and self.gate else None
        self._restore_watched()
        return self.alignment

    def _warn_unmeasured_loop(self, consequence: str | None = None, stacklevel: int = 4) -> None:
        """Once, from the second decision on: a warning when the loop has never called
        ``before_optimizer_step`` or ``after_optimizer_step`` since ``watch``, or called the first only
        while there was no gradient (before ``backward()``): the alignment then measures nothing, and
        the gate holds every move for lack of evidence (``consequence``: another one, in words)."""
        calls = self.alignment.calls
        if self._attached is not None and calls["before"] == calls["after"] == 0:
            self._warn_once("loop", "MetaLRController: the attached optimizer has made no step since attach(), "
                            f"{consequence or 'so the gradient alignment measured nothing'}. Evaluate after training "
                            "steps (optimizer.step() between evaluations)", RuntimeWarning, stacklevel=stacklevel)
            return
        if calls["before"] == 0 or calls["after"] == 0:
            missing = " and ".join(name for name, key in (("before_optimizer_step()", "before"),
                                                         ("after_optimizer_step()", "after")) if calls[key] == 0)
            problem = f"{missing} {'was' if ' and ' not in missing else 'were'} never called since watch()"
        elif calls["without_gradient"] == calls["before"]:
            problem = "before_optimizer_step() found no gradient at any step: it was called before loss.backward()"
        else:
            return
        consequence = consequence or "so the gradient alignment measured no step and the gate keeps the LR for lack of evidence"
        self._warn_once("loop", f"MetaLRController: {problem}, {consequence}. At every optimizer step call "
                        "before_optimizer_step() after loss.backward() (and any clipping), then optimizer.step(), then "
                        "after_optimizer_step().", RuntimeWarning, stacklevel=stacklevel)

    def schedule_factor(self, optimizer) -> float | None:
        """The factor a schedule gives the LR of the step about to be taken: param group 0's LR over
        the controller's (``lr``), read before ``optimizer.step()``; None when that LR is not a number."""
        lr = optimizer.param_groups[0].get("lr") if optimizer is not None and optimizer.param_groups else None
        return lr / self.lr if isinstance(lr, (int, float)) and not isinstance(lr, bool) and self.lr > 0 else None

    def before_optimizer_step(self, schedule_factor: float | None = None) -> None:
        """Call once per optimizer step, with the final gradients, before ``optimizer.step()``.
        ``schedule_factor``: the factor a schedule of yours gives this step's LR
        (``schedule_factor(optimizer)``), if any; the alignment leaves out the steps that a rise of
        the schedule (a warmup) lengthens (``GradientAlignment.before_step``). Refused while
        attached: ``attach`` makes this call itself (a second one would count each step twice)."""
        self._refuse_when_attached("before_optimizer_step")
        self._before_step(schedule_factor)

    def after_optimizer_step(self, step_skipped: bool = False) -> None:
        """Call right after ``optimizer.step()`` (refused while attached, as ``before_optimizer_step``).
        ``step_skipped``: the optimizer skipped the step (accelerate's ``optimizer.step_was_skipped``,
        a ``GradScaler``'s overflow), so the schedule gives its factor again at the next step."""
        self._refuse_when_attached("after_optimizer_step")
        self._after_step(step_skipped)

    def _refuse_when_attached(self, call: str) -> None:
        if self._attached is not None:
            raise ValueError(f"MetaLRController.{call}(): this controller is attached to the optimizer, whose step hooks "
                             "make this call at every optimizer.step(); drop the call (a second one would spoil the "
                             "gradient alignment), or detach() to make the calls yourself")

    def _before_step(self, schedule_factor: float | None) -> None:
        if self.start_weights is not None and self._start_copy_due and self.decision_index == 0:  # the run's first step
            self.start_weights.keep()
        self._start_copy_due = False
        self._put_back_the_lrs()  # (a step that raised before reaching _after_step)
        # recorded only while a start-over can come (the copy dropped, the recording is too: WarmupReplay.forget)
        multiplier = self.warmup.multiplier(schedule_factor) if self.start_weights is not None else 1.0
        if multiplier != 1.0 and self._optimizer is not None:  # a replayed warmup's step: shortened for this step only
            self._lrs_before_replay = [group["lr"] for group in self._optimizer.param_groups]
            for group in self._optimizer.param_groups:
                group["lr"] = group["lr"] * multiplier
            schedule_factor *= multiplier  # the factor of the step as taken: the alignment leaves the rise out
        if self.alignment is not None:
            self.alignment.before_step(schedule_factor)

    def _after_step(self, step_skipped: bool = False) -> None:
        self._put_back_the_lrs()
        if step_skipped:
            self.warmup.undo_step()
        if self.alignment is not None:
            self.alignment.after_step()
        if self.iterate_average is not None and self.tracker.previous is not None:  # the steps before the first
            # evaluation are not folded: its average would still hold the run's start, and the rule does not read it
            self.iterate_average.after_step()

    def _put_back_the_lrs(self) -> None:
        """After a step the replayed warmup shortened: the groups' LRs as the schedule left them."""
        if self._lrs_before_replay is not None:
            for group, lr in zip(self._optimizer.param_groups, self._lrs_before_replay):
                group["lr"] = lr
            self._lrs_before_replay = None

    # -- decisions -----------------------------------------------------------------------------
    def observe_train_loss(self, loss: float) -> bool:
        """One optimizer step's training loss (consecutive calls form a stretch, see ``RunTracker``).
        Any real scalar (a float, a numpy number, a 0-d tensor); anything else is a ``TypeError``.

        Returns True when the early-divergence guard or the early distance check cut the LR (before
        the first evaluation, with the gate on): apply it now, with ``scale_param_groups`` or the
        callback's binding."""
        loss = real_number(loss, "MetaLRController.observe_train_loss(loss)")
        self._train_losses_since_decision += 1
        self._train_losses_seen = True
        self.tracker.observe_train_loss(loss)
        cut = self._guard_early_divergence(loss)
        if cut:
            self._apply_if_attached()
        return cut

    def observe_train_losses(self, losses) -> None:
        """A stretch of consecutive steps' training losses, such as one process's since the last
        decision, or logged means. The early-divergence guard reads only ``observe_train_loss``,
        one optimizer step at a time as they come."""
        losses = [real_number(x, "MetaLRController.observe_train_losses(losses)") for x in losses]
        self._train_losses_since_decision += len(losses)
        self._train_losses_seen = self._train_losses_seen or bool(losses)
        self.tracker.observe_train_losses(losses)

    @property
    def guards_early_divergence(self) -> bool:
        """Whether the next training loss goes to the early-divergence guard: the gate is on, the
        parameters are watched, and no evaluation has been decided on yet."""
        return self.gate and self.alignment is not None and self.decision_index == 0

    def _guard_early_divergence(self, loss: float) -> bool:
        """The early-divergence guard (see ``early_guard``), and every ``EARLY_DISTANCE_EVERY`` steps the
        distance check (``past_the_distance``, which a first interval's collapse would otherwise meet
        only at the first decision); True when either cut the LR (a cut at the LR floor changes nothing
        and is not one)."""
        if not self.guards_early_divergence:
            return False
        reference = self.early_guard.highest
        if not self.early_guard.observe(loss):
            return self._early_distance_cut(loss)
        applied = self._rescale(EARLY_CUT)
        if applied == 1.0:
            return False
        self.early_cuts.append({"kind": "divergence", "step": self.early_guard.steps,
                                "loss": loss if is_finite(loss) else repr(loss), "reference": reference,
                                "applied": applied, "scale": self.scale, "lr": self.lr})
        self._go_back_to_the_start()
        return True

    def _early_distance_cut(self, loss: float) -> bool:
        """Before the first decision, every ``EARLY_DISTANCE_EVERY`` steps: halve the LR when the steps
        are too long by both measures (``past_the_distance``, down to ``distance_floor`` of the user's
        LR), and record it in ``early_cuts``; True when it cut."""
        if not self.steps_per_coordinate or self.early_guard.steps % EARLY_DISTANCE_EVERY:
            return False
        reading = {"param_drift": self.alignment.drift(), "log10_lr_scale": math.log10(self.scale),
                   **self._distance_features()}
        if not past_the_distance(reading, schedule_anneals=self.schedule_anneals):
            return False
        applied = self._rescale(max(EARLY_DISTANCE_CUT, distance_floor(self.schedule_anneals) / self.scale))
        if applied == 1.0:  # at min_lr: no cut
            return False
        self.early_cuts.append({"kind": "distance", "step": self.early_guard.steps,
                                "loss": loss if is_finite(loss) else repr(loss),
                                "reference": None, "applied": applied, "scale": self.scale, "lr": self.lr,
                                "param_drift": reading["param_drift"], "lr_over_distance": reading["lr_over_distance"]})
        self._go_back_to_the_start()
        return True

    def _go_back_to_the_start(self) -> None:
        """After an early cut: the first steps at the LR just cut did their damage (a model wrecked in
        them stays wrecked at any LR after), so the run starts over at the cut LR (``_start_over``).
        The cut's ``early_cuts`` entry says whether it did (``rewound``), and whether a warmup is
        played again (``replays_warmup``)."""
        cut = self.early_cuts[-1]
        outcome = self._start_over(stacklevel=6)
        cut["rewound"] = outcome == "rewound"
        if cut["rewound"] and self.replays_a_warmup:
            cut["replays_warmup"] = True

    def _start_over(self, *, stacklevel: int) -> str:
        """Put the weights back to where the run started (``start_weights``), clear the optimizer's
        state (Adam's second moment would otherwise hold the wrecking steps' gradients, and shorten
        every step at the cut LR), and start the alignment, the distance estimate, the
        early-divergence guard's record of losses, the interval's training losses and the iterate
        average afresh: the run starts over at the LR just cut, and a warmup is played again
        (``warmup_replay``: the start weights meet steps as long as the warmup first gave them, at the
        cut LR). Returns ``"rewound"``; ``"no copy"`` without the start weights (dropped, or
        a resume whose state did not bring them, which is told once); ``"no optimizer state"``
        without an optimizer whose state it can clear; ``"no warmup record"`` after a resume from a
        state saved before the replay existed (whether the run had a warmup is not known)."""
        if self.start_weights is not None and not self.start_weights.kept and self.start_weights_expected:
            self._warn_once("start_weights", "MetaLRController: this run's state was saved while the weights it started "
                            "from were kept, but they were not loaded with it, so a cut for a wrecked run only cuts the "
                            "LR: save ctrl.start_weights.state_dict() beside the controller's state and load it with "
                            "ctrl.start_weights.load_state_dict() (MetaLRCallback does so in its checkpoints)",
                            RuntimeWarning, stacklevel=stacklevel)
        if self.start_weights is None or not self.start_weights.kept:
            return "no copy"
        if not self.warmup.known:
            return "no warmup record"
        if self._optimizer is None or not clear_optimizer_state(self._optimizer):
            return "no optimizer state"
        self.start_weights.restore()
        self.early_guard.start_over()
        self.tracker.start_over()
        if self.iterate_average is not None:  # its interval and last loss are the wrecked weights'
            self.iterate_average.forget()
        old = self.alignment
        self.alignment = GradientAlignment(old.params, sketch_size=old.sketch_size, seed=self.seed)
        self.warmup.start_over()
        return "rewound"

    def lrs_of_the_next_step(self, optimizer) -> list[float]:
        """The LR each of ``optimizer``'s groups holds, times the replayed warmup's multiplier of the next
        step (``warmup_replay``): the LRs the next step will take, for a log (the groups themselves
        hold the schedule's LR between steps)."""
        multiplier = self.warmup.next_multiplier(self.schedule_factor(optimizer))
        return [group["lr"] * multiplier for group in optimizer.param_groups]

    @property
    def replays_a_warmup(self) -> bool:
        """Whether a replay of a warmup is under way (``warmup_replay``): after a start-over, under a
        schedule whose factor rose over more than its first step."""
        return self.warmup.position is not None and self.warmup.steps > 1

    def _start_over_if_called_for(self, decision: Decision) -> None:
        """At a decision that cuts the LR of a wrecked run, while the start weights are kept
        (``_may_start_over_later``): a divergence (the metric not finite), or a cut (any rule's) while
        the steps are too long by both of the distance check's measures and the metric is not even
        ``gate.STUCK`` below the first evaluation's (``gate.wrecked``), or a cut (the gate's halving, or a
        deeper one) on a long plateau (``gate.long_plateau_calls_for_a_cut``). The steps so far bought
        nothing, and the weights they left train badly at any LR after them, so the run starts over
        at the LR just cut (``_start_over``). The decision and its ``history`` entry say why
        (``start_over``) and whether it did (``rewound``), and the evidence says both in words. The
        interval just decided on measured the wrecked weights, not the move: after a start-over the
        decision's transition is not learned from at the next (``pending`` cleared, as after a
        divergence), and the next decision's training-loss trend has no interval before it to
        compare with."""
        if self.start_weights is None or not (self.start_weights.kept or self.start_weights_expected):
            return  # (a resume that did not bring the copy it was saved with is told, and only cuts)
        features = decision.features or {}
        reason = ("diverged" if decision.diverged else
                  "long plateau" if decision.applied < 1 and long_plateau_calls_for_a_cut(features) else
                  "wrecked" if decision.applied < 1 and wrecked(features) else None)
        if reason is None:
            return
        outcome = self._start_over(stacklevel=5)
        words = {"rewound": "the weights went back to where the run started, and the optimizer's state is cleared: the "
                            "run starts over at the cut LR" + (REPLAYED if self.replays_a_warmup else ""),
                 "no copy": "the weights kept: the resumed state came without the weights the run started from",
                 "no optimizer state": "the weights kept: the optimizer's state cannot be cleared",
                 "no warmup record": "the weights kept: the resumed state is from before hf_metalr recorded a warmup to "
                                     "play again"}[outcome]
        if outcome == "rewound":
            self.pending = None
            self.tracker.train_loss_at_decision = None
        decision.start_over, decision.rewound = reason, outcome == "rewound"
        decision.evidence = _joined(decision.evidence, f"{START_OVER_REASONS[reason]}: {words}")
        self.history[-1].update(rewound=decision.rewound, start_over=reason, evidence=decision.evidence)

    def _may_start_over_later(self, decision: Decision) -> bool:
        """Whether the start weights are still kept after this decision: while a later decision may
        start the run over (``_start_over_if_called_for``), that is while the distance check reads the
        steps (an Adam-like optimizer), the optimizer is known (``read_optimizer``: its state is
        cleared at a start-over), the metric has not made ``gate.PROGRESS`` below the first
        evaluation's, and the LR of the steps is above the distance estimate (``gate.RAISE_CEILING``:
        at or below it, no raise the gate lets through takes it back to ``gate.DISTANCE_OVERSHOOT``
        times the estimate, which only grows, so the run cannot read as wrecked again but by a
        divergence) or a warmup, first or replayed, may still lengthen them (``warmup_replay``);
        after a divergence, until the next decision says."""
        if not self.steps_per_coordinate or self._optimizer is None:
            return False
        features = decision.features
        if features is None:
            return True
        return not made_progress(features) and (features.get("lr_over_distance", 0.0) > RAISE_CEILING
                                                 or self.warmup.under_way)

    def observation(self, features: dict[str, float]) -> list[float]:
        """The policy's input: the features it was trained on, in its order."""
        return select(features, self.policy.config.features)

    def measures_iterate_average(self) -> bool:
        """Whether the next ``observe`` runs the ``validation_loss`` it is given: at the run's first
        evaluation (the current loss, kept for the next check's progress), and later when two or
        more optimizer steps were folded since the last check (with fewer, the gain reads nothing).
        The callback builds or keeps the check's batches only then."""
        return self.iterate_average is not None and (self.tracker.previous is None or self.iterate_average.steps >= 2)

    def observe(self, value: float, *, progress: float = 0.0, train_loss: float | None = None,
                validation_loss: Callable[[], float] | None = None, current_loss: float | None = None,
                stepped: bool | None = None) -> Decision:
        """Take one validation metric value and decide the next LR. ``train_loss``, if given, is
        one more training loss (a mean over the interval, say), added on its own stretch.

        An evaluation with no optimizer step since the last decision (one before the first step, or
        right after a resume) is no decision, as in the callback: the returned ``Decision`` keeps the
        LR, says so in ``gate``, is not in ``history``, and the next decision takes its ``index``; the
        early-divergence guard goes on. The controller knows of steps from the watched parameters'
        ``before_optimizer_step`` / ``after_optimizer_step``, from ``observe_train_loss`` and from a
        ``train_loss`` given here; with nothing watched every call decides, and so does a NaN or
        infinite ``value``, and a loop that has reported no step at all from its second evaluation on
        (with a warning). ``stepped``: the caller's own answer (the callback's).

        ``validation_loss``: with the iterates averaged (``watch(..., average_iterates=True)``), a
        function returning the loss (a float) at the model's parameters as they are when it is
        called, on the same fixed data at every decision, in eval mode and without grad (it sets
        both up and restores them itself); under DDP every rank passes one or none does, since its
        reductions are collective. The iterate-average check calls it with the average of the
        interval swapped in, and at the current parameters unless ``current_loss`` gives that loss
        (see ``IterateAverage.gain``); at the run's first evaluation, whose average the gate does not
        read, at the current parameters only (``IterateAverage.restart``). Without it the
        interval's average is dropped unread, and the next check has no progress to compare with.
        Both are ignored when the iterates are not averaged.

        ``value`` is any real scalar (a float, a numpy number, a 0-d tensor); NaN or infinite is a
        divergence. Anything else (None, a string) is a ``TypeError``, not a divergence."""
        value = real_number(value, "MetaLRController.observe(value)")
        progress = real_number(progress, "MetaLRController.observe(progress)")
        if not math.isfinite(progress):
            raise ValueError(f"MetaLRController.observe(progress={progress!r}): must be the fraction of the run done, "
                             "a finite number in [0, 1] (values outside are clipped)")
        if not -1e-6 <= progress <= 1 + 1e-6:
            self._warn_once("progress", f"MetaLRController.observe(progress={progress!r}): the policy reads the "
                            "fraction of the run done, in [0, 1], and this value is clipped to it; pass step / "
                            "total_steps (not an epoch number or a percentage)", UserWarning, stacklevel=2)
        if validation_loss is not None and not callable(validation_loss):
            raise TypeError(f"MetaLRController.observe(validation_loss=...) takes a function that returns the loss at "
                            f"the parameters as they are when it is called (the iterate-average check calls it twice), "
                            f"got {type(validation_loss).__name__} (a loss already computed at the current "
                            "parameters goes in current_loss=, beside the function)")
        if validation_loss is None and stepped is None and self.iterate_average is not None:
            # (a plain loop's: the callback passes stepped=, and a check it skips on purpose)
            self._warn_once("average", "MetaLRController.observe: the iterates are averaged (average_iterates=True), "
                            "but no validation_loss= was given, so the iterate-average check is off at this evaluation. "
                            "Pass a function that returns the loss on a few fixed validation batches", UserWarning,
                            stacklevel=2)
        stepped_by_caller = stepped
        if stepped is None:
            stepped = self._stepped_since_decision(train_loss)
        if not stepped and is_finite(value):  # (a NaN is a divergence, whenever it comes)
            return self._no_step(value)
        if stepped_by_caller is None:
            self._warn_unrestored_average()
        average_gain = None
        if self.iterate_average is not None:  # the forward passes keep the caller's threads
            if validation_loss is None:
                self.iterate_average.forget()
            elif self.tracker.previous is None:  # the first evaluation: its average still holds the run's start, and
                # the gate does not read it; the current loss is kept for the next check's progress
                self.iterate_average.restart(validation_loss, current=current_loss)
            else:
                average_gain = self.iterate_average.gain(validation_loss, current=current_loss)
        with single_threaded():
            decision = self._observe(value, progress, train_loss, average_gain)
        self._start_over_if_called_for(decision)
        self._mark_decision()
        if self.start_weights is not None and not self._may_start_over_later(decision):
            self.start_weights.drop()
            self.start_weights_expected = False  # not needed any more, so not missed
            self.warmup.forget()
        self._apply_if_attached()
        return decision

    def _observe(self, value, progress, train_loss, average_gain=None) -> Decision:
        if train_loss is not None:
            self.observe_train_losses([train_loss])
        index = self.decision_index
        self.decision_index += 1
        if not is_finite(value):
            return self._diverged(index, value)

        if self.alignment is not None:
            window = self.alignment.take()
            self.tracker.observe_alignment(window)
            if index >= 1:
                self._warn_unmeasured_loop()
        _, reward = self.tracker.observe(float(value))
        features = self.tracker.features(progress, self.scale, self.previous_multiplier)
        standing_raise = raise_in_force = 1.0
        if self.alignment is not None:  # for the gate and the trace; a policy reads only the features in its file
            features["param_drift"] = self.alignment.drift()
            features.update(self._distance_features())
            features["stuck_evaluations"] = self._stuck_evaluations(features, first=reward is None)
            features["short_plateau_evaluations"] = self._short_plateau_evaluations(features, first=reward is None)
            features["long_plateau_evaluations"] = self._long_plateau_evaluations(features, first=reward is None)
            growth = self._drift_growth(features["param_drift"])
            if growth is not None:
                features["drift_growth"] = growth
            # whether a cut now may start the run over (gate.distance_bar reads it)
            features["start_weights_kept"] = float(self.start_weights is not None and self.start_weights.kept)
            features["alignment_steps"] = window.steps  # the steps the alignment counted since the last decision
            if window.late is not None and window.late.steps > 0:  # the run's first window: its later half
                features["grad_alignment_late"] = window.late.ratio
            previous = self._last_features()
            if "grad_alignment_t" in previous and previous.get("alignment_steps", 2) >= 2:  # a reading (t needs 2)
                features["previous_grad_alignment_t"] = float(previous["grad_alignment_t"])
            creep = self._creep_gain(features)
            if creep is not None:
                features["creep_gain"] = creep
            standing_raise, raised_at = self._standing_raise()
            raise_in_force, raise_trends = self._raise_in_force(features["objective_trend"])
            features.update(raise_trends)
            if raised_at is not None:
                features["objective_since_raise"] = (log_objective(float(value), self.tracker.mode)
                                                     - log_objective(raised_at, self.tracker.mode))
        if average_gain is not None:  # measured by observe, which also set the average's progress
            features["iterate_average_gain"] = float(average_gain)
            if self.iterate_average.progress is not None:
                features["iterate_average_progress"] = float(self.iterate_average.progress)
        obs = self.observation(features)
        learned = False
        if self.learner is not None and self.pending is not None and reward is not None:
            self.learner.update(self.pending["obs"], self.pending["action"], reward, obs)
            learned = True
        # the first evaluation has no trend to act on: without the gate's evidence, keep the LR instead of betting
        # blind; with it, the policy may act on the direction the gradient alignment measured
        gated = self.gate and self.alignment is not None
        by_policy = reward is not None or gated
        action = self._select(obs, index) if by_policy else self.keep_index
        requested = self.multipliers[action]
        if gated:
            move = gate_move(requested, features, first=reward is None, schedule_anneals=self.schedule_anneals,
                             scale=self.scale, min_scale=self.min_scale, last_applied=self._last_applied(),
                             standing_raise=standing_raise, distance_debt=self._distance_debt(),
                             restore_punished=self._restore_punished(), last_rule=self._last_rule(),
                             max_scale=self.max_scale, raise_in_force=raise_in_force)
            multiplier, held, why, rule = move.multiplier, move.held, move.why, move.rule
        else:
            multiplier, held, why, rule = requested, False, None, None
        applied = self._rescale(multiplier)
        self.pending = {"obs": obs, "action": action} if by_policy else None
        self.tracker.commit()
        self.previous_multiplier = multiplier
        evidence = None if held else _joined(why, self._bound_note(multiplier, applied))
        return self._record(index, float(value), reward, requested, action, by_policy, learned, False, features, applied,
                            why if held else None, evidence, rule)

    def _distance_features(self) -> dict[str, float]:
        """``distance_estimate`` (``.distance``, in the parameters' units per coordinate) and, when the
        optimizer's step per coordinate is the LR's (``steps_per_coordinate``), ``lr_over_distance``:
        the LR of the last step read (the controller's times the schedule's factor) over it,
        ``gate.NO_DISTANCE`` while it is not positive; under a schedule that anneals by itself also
        ``planned_lr_over_distance``, the controller's LR alone over it (the LR the schedule decays
        from, which ``gate.distance_restore`` reads). Not after an early-divergence cut that did not
        start the run over: the steps of the loss's climb are then in both of the check's cumulative
        readings (the drift and the estimate) for the rest of the run, and the guard has answered the
        LR already (a start-over undoes those steps and starts both readings afresh)."""
        estimate = self.alignment.distance.value()
        features = {"distance_estimate": estimate}
        if self.heavy_ball:
            features["heavy_ball"] = 1.0
        if self.steps_per_coordinate and all(is_early_distance_cut(cut) or cut.get("rewound") for cut in self.early_cuts):
            factor = self.alignment.step_factor
            features["lr_over_distance"] = lr_over_distance(self.lr * (1.0 if factor is None else factor), estimate)
            if self.schedule_anneals:  # the restore reads the LR the schedule decays from
                features["planned_lr_over_distance"] = lr_over_distance(self.lr, estimate)
        return features

    def _stepped_since_decision(self, train_loss) -> bool:
        """Whether the loop made an optimizer step since the last decision, as far as the controller
        can tell: a step call on the watched parameters, a training loss (``observe_train_loss``, or
        ``train_loss`` given to this ``observe``). True with nothing watched, and for a loop that has
        never reported a step, past its first evaluation: such a loop decides at every evaluation, as
        before this rule, with the missing-call warning."""
        if self.alignment is None or train_loss is not None or self._train_losses_since_decision > 0:
            return True
        if self.alignment.stepped_since_mark:
            return True
        if self.alignment.ever_stepped or self._train_losses_seen or not self._evaluations_without_steps:
            return False
        self._warn_unmeasured_loop(consequence="so the controller sees no optimizer step: the first evaluation was "
                                               "no decision, and each one since decides without the alignment's "
                                               "evidence", stacklevel=5)
        return True

    def _warn_unrestored_average(self) -> None:
        """Once, at the first decision after a load: a warning when the loaded state's interval had
        folded steps into the iterate average and the loop did not give them back
        (``iterate_average.load_state_dict``): the check then averages this interval from the resume
        on only (the callback restores it from its checkpoint itself)."""
        saved, self._average_steps_saved = self._average_steps_saved, 0
        if not saved or self.iterate_average is None or self.alignment is None:
            return
        if self.iterate_average.steps < saved + self.alignment.calls["after"]:
            warnings.warn(f"MetaLRController: the loaded state's interval had folded {saved} steps into the iterate "
                          "average, which were not given back, so this evaluation's check averages the steps since the "
                          "resume only. Save ctrl.iterate_average.state_dict() with the state, and give it to "
                          "ctrl.iterate_average.load_state_dict() after watch/attach and load_state_dict", UserWarning,
                          stacklevel=3)

    def _mark_decision(self) -> None:
        """A decision is made: the next one asks about the steps from here."""
        self._train_losses_since_decision = 0
        if self.alignment is not None:
            self.alignment.mark()

    def _no_step(self, value: float) -> Decision:
        """The answer to an evaluation with no optimizer step since the last decision: no decision (see
        ``observe``)."""
        self._evaluations_without_steps += 1
        return Decision(index=self.decision_index, value=value, reward=None, multiplier=1.0, applied=1.0,
                        action_index=None, by_policy=False, lr=self.lr, scale=self.scale, learned=False,
                        diverged=False, features=None,
                        gate="no decision: no optimizer step since the last decision (or since watch(), or the resume); "
                             "the LR stays")

    def _stuck_evaluations(self, features: dict[str, float], *, first: bool) -> int:
        """How many evaluations in a row, this one included, the run has been stuck after moving far
        (``gate.moved_but_stuck``), not counting the first evaluation; read back from the last decision in
        ``history``, so a resumed run counts on (a history saved before it counts from 0). After a decision
        that started the run over the count starts afresh: the steps before it were another run's."""
        count = self._in_a_row("stuck_evaluations", moved_but_stuck(features), first=first)
        return 1 if count and self.history and self.history[-1].get("rewound") else count

    def _in_a_row(self, name: str, holds: bool, *, first: bool) -> int:
        """How many evaluations in a row, this one included, a state has held (``holds`` at this one), not
        counting the first evaluation: the count ``name`` in the last decision's features, plus one; 0 at
        the first evaluation or when the state does not hold. Read back from ``history``, so a resumed
        run counts on (a history saved before the count counts from 0)."""
        if first or not holds:
            return 0
        return int(self._last_features().get(name, 0)) + 1

    def _short_plateau_evaluations(self, features: dict[str, float], *, first: bool) -> int:
        """How many evaluations in a row, this one included, the run has read a short plateau
        (``gate.short_plateau``), not counting the first evaluation; read back from the last decision in
        ``history``, so a resumed run counts on. A doubling of the gate's does not reset it: while the state
        holds, the gate doubles at each evaluation."""
        return self._in_a_row("short_plateau_evaluations", short_plateau(features, schedule_anneals=self.schedule_anneals),
                              first=first)

    def _long_plateau_evaluations(self, features: dict[str, float], *, first: bool) -> int:
        """How many evaluations in a row, this one included, the run has read a long plateau
        (``gate.long_plateau``), not counting the first evaluation; read back from the last decision in
        ``history``, so a resumed run counts on. A cut of the gate's, and the start-over it makes, do not
        reset it; after a start-over the drift's growth is not read for three decisions, so the next cut
        comes four decisions later at the earliest."""
        return self._in_a_row("long_plateau_evaluations", long_plateau(features), first=first)

    def _drift_growth(self, drift: float) -> float | None:
        """How much ``param_drift`` grew over the last ``gate.DRIFT_GROWTH_INTERVALS`` intervals, relative to
        itself now: (drift now - drift then) / drift now, read back from the decision that many before
        this one in ``history`` (so a resumed run reads it on). None with fewer decisions, no drift then
        (a divergence's decision has no features) or none now, and when one of those decisions started the
        run over: the drift was measured from the start again after it, and its fall says nothing of how
        the weights move now."""
        window = self.history[-DRIFT_GROWTH_INTERVALS:]
        if len(window) < DRIFT_GROWTH_INTERVALS or not drift > 0 or any(entry.get("rewound") for entry in window):
            return None
        then = (window[0].get("features") or {}).get("param_drift")
        return (drift - then) / drift if then else None

    def _creep_gain(self, features: dict[str, float]) -> float | None:
        """The log objective gained over the last ``CREEP_EVALUATIONS`` trends (``gate.creeping``) when
        the metric improved at each of them, this one included; None otherwise. Read back from
        ``history``, so a resumed run counts on; a divergence, or a decision without features, breaks
        the run of improvements."""
        trends = [features["objective_trend"]]
        for entry in reversed(self.history):
            if len(trends) == CREEP_EVALUATIONS:
                break
            previous = entry.get("features")
            if entry.get("diverged") or not previous:
                return None
            trends.append(previous["objective_trend"])
        if len(trends) < CREEP_EVALUATIONS or any(trend >= 0 for trend in trends):
            return None
        return -sum(trends)

    def _last_features(self) -> dict:
        """The features of the last decision in ``history`` (none after a divergence, or at the start)."""
        return (self.history[-1].get("features") or {}) if self.history else {}

    def _last_applied(self) -> float:
        """The multiplier the last decision applied (1 at the start, after a divergence's cut, and for older
        saved histories)."""
        if not self.history or self.history[-1].get("diverged"):
            return 1.0
        return self.history[-1].get("applied", 1.0)

    def _standing_raise(self) -> tuple[float, float | None]:
        """The multiplier the controller's last raise applied and the metric's value at its decision, when
        that raise was made before the last decision (the last decision's raise is ``punished_raise_undo``'s)
        and no cut or divergence has followed it; ``(1.0, None)`` otherwise, and for a raise that took back a
        punished cut (rule "undo_cut": no bet of its own). Read back from ``history``, so a resumed run
        sees the same."""
        for position in range(len(self.history) - 1, -1, -1):
            entry = self.history[position]
            applied = entry.get("applied", 1.0)
            if entry.get("diverged") or applied < 1:
                return 1.0, None
            if applied > 1:
                if position == len(self.history) - 1 or self._rule_of(entry) == "undo_cut":
                    return 1.0, None
                return applied, float(entry["value"])
        return 1.0, None

    def _raise_in_force(self, trend: float) -> tuple[float, dict[str, float]]:
        """The multiplier of the controller's last raise made by the policy through the gate (no ``rule``: not
        a restore of the distance check's cuts, nor the takeback of a cut), at the last decision or before,
        when no cut or divergence has followed it but the takebacks of later raises by ``opposed_raise_undo``
        (each passes over one raise: the one before it is in force again), with the metric's trend over the
        interval before it (``objective_trend_before_raise``, absent for a raise at the first decision) and
        over the one after it (``objective_trend_after_raise``; ``trend``, this decision's, when the raise was
        the last decision's); ``(1.0, {})`` otherwise. Read back from ``history``, so a resumed run sees the
        same."""
        taken_back = 0
        for position in range(len(self.history) - 1, -1, -1):
            entry = self.history[position]
            applied = entry.get("applied", 1.0)
            if entry.get("diverged"):
                return 1.0, {}
            if applied < 1:
                if self._rule_of(entry) != "opposed_undo":
                    return 1.0, {}
                taken_back += 1
                continue
            if applied > 1:
                if self._rule_of(entry) is not None:
                    return 1.0, {}
                if taken_back:
                    taken_back -= 1
                    continue
                trends = {}
                if position > 0 and "objective_trend" in (entry.get("features") or {}):
                    trends["objective_trend_before_raise"] = float(entry["features"]["objective_trend"])
                after = (self.history[position + 1].get("features") or {}).get("objective_trend") if (
                    position + 1 < len(self.history)) else trend
                if after is not None:
                    trends["objective_trend_after_raise"] = float(after)
                return applied, trends
        return 1.0, {}

    def _rule_of(self, entry: dict) -> str | None:
        """The ``rule`` of a ``history`` entry: "divergence" for a divergence's halving, else the one it
        recorded; for an entry saved before ``rule`` was recorded, read off its evidence (and a cut whose
        features read ``gate.past_the_distance`` is the distance check's)."""
        if entry.get("diverged"):
            return "divergence"
        if "rule" in entry:
            return entry["rule"]
        evidence = entry.get("evidence") or ""
        for prefix, rule in _RULE_EVIDENCE:
            if evidence.startswith(prefix):
                return rule
        if entry.get("applied", 1.0) < 1 and entry.get("features") and past_the_distance(
                entry["features"], schedule_anneals=self.schedule_anneals):
            return "distance"
        return None

    def _distance_debt(self) -> float:
        """How much of the distance check's cuts the run still carries, at most 1 (1 when the check has not
        cut): the product of its cuts (``early_cuts`` of kind "distance", decisions whose rule is
        "distance") and of every raise since its first cut (a restore, the policy's own, the takeback of
        a punished cut of the check's), each raise taking the debt no higher than 1; the takeback of
        another rule's cut does not count. Read back from ``early_cuts`` and ``history``, so a resumed run
        sees the same."""
        debt = 1.0
        for cut in self.early_cuts:
            if is_early_distance_cut(cut):
                debt *= float(cut.get("applied", 1.0))
        previous = None
        for entry in self.history:
            rule, applied = self._rule_of(entry), float(entry.get("applied", 1.0))
            if rule == "distance":
                debt *= applied
            elif debt < 1.0 and applied > 1 and (rule != "undo_cut" or previous == "distance"):
                debt = min(1.0, debt * applied)
            previous = rule
        return min(debt, 1.0)

    def _restore_punished(self) -> bool:
        """Whether a restore of the distance check's cuts (rule "restore") was taken back: by the undo of a
        punished raise right after it, or by the undo of an unpaid raise whose standing raise it was. The
        gate then restores no more in this run."""
        previous = last_raise = None
        for entry in self.history:
            rule, applied = self._rule_of(entry), float(entry.get("applied", 1.0))
            if (rule == "undo_raise" and previous == "restore") or (rule == "unpaid_undo" and last_raise == "restore"):
                return True
            if applied != 1.0:
                last_raise = rule if applied > 1 else None
            previous = rule
        return False

    def _last_rule(self) -> str | None:
        """The rule of the last decision in ``history`` (``_rule_of``; None at the start)."""
        return self._rule_of(self.history[-1]) if self.history else None

    def _diverged(self, index: int, value) -> Decision:
        multiplier = divergence_multiplier(self.multipliers)
        warnings.warn(
            f"hf_metalr: the monitored metric is {value!r} at decision {index}; treating it as a divergence: "
            f"the LR is multiplied by {multiplier} and this transition is not learned from.",
            RuntimeWarning,
            stacklevel=3,
        )
        applied = self._rescale(multiplier)
        self.pending = None
        self.previous_multiplier = multiplier
        return self._record(index, None, None, multiplier, None, False, False, True, None, applied,
                            evidence=self._bound_note(multiplier, applied))

    def _rescale(self, multiplier: float) -> float:
        """Apply ``multiplier`` within the bounds; returns the multiplier that took effect."""
        before = self.scale
        self.scale = apply_multiplier(self.scale, multiplier, self.min_scale, self.max_scale)
        return multiplier if self.scale == before * multiplier else self.scale / before

    def _bound_note(self, multiplier: float, applied: float) -> str | None:
        """In words, how ``min_lr`` or ``max_lr`` cut short a move (None when it took effect as asked)."""
        if multiplier == 1 or math.isclose(applied, multiplier, rel_tol=1e-9):
            return None
        name, bound = ("max_lr", self.max_lr) if multiplier > 1 else ("min_lr", self.min_lr)
        return f"capped by {name}={bound:g}: x{applied:.3g} applied instead of x{multiplier:g}"

    def _select(self, obs: list[float], index: int) -> int:
        with torch.no_grad():
            logits = self.policy.actor(torch.tensor([obs], dtype=torch.float32))[0]
        if self.greedy:
            return int(torch.argmax(logits))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))

    def _record(self, index, value, reward, multiplier, action, by_policy, learned, diverged, features, applied,
                gate=None, evidence=None, rule=None) -> Decision:
        decision = Decision(
            index=index,
            value=value,
            reward=reward,
            multiplier=multiplier,
            applied=applied,
            action_index=action,
            by_policy=by_policy,
            lr=self.lr,
            scale=self.scale,
            learned=learned,
            diverged=diverged,
            features=features,
            gate=gate,
            evidence=evidence,
            rule=rule,
        )
        self.history.append(decision.as_dict())
        return decision

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": STATE_FORMAT,
            "seed": self.seed,
            "initial_lr": self.initial_lr,
            "scale": self.scale,
            "decision_index": self.decision_index,
            "previous_multiplier": self.previous_multiplier,
            "pending": self.pending,
            "tracker": self.tracker.to_dict(),
            "history": self.history,
            "policy": tensors_to_text(self.policy.state_dict()),
            "meta_optimizer": optimizer_state_to_json(self.learner.state_dict()) if self.learner else None,
            # before watch(), a loaded state still waiting for it (see _restore_watched) is saved as it came
            "alignment": (self.alignment.state_dict() if self.alignment is not None
                          else (self._watched_state or {}).get("alignment")),
            # the last check's loss, for the next one's progress; the interval's average itself (as large as the
            # weights) is in iterate_average.state_dict(), which a checkpoint keeps in a file of its own
            "iterate_average": ({"last_loss": self.iterate_average.last_loss, "steps": self.iterate_average.steps}
                                if self.iterate_average is not None
                                else (self._watched_state or {}).get("iterate_average")),
            "early_guard": self.early_guard.to_dict(),
            "early_cuts": list(self.early_cuts),
            # the weights themselves (as large as the trainable ones) are in start_weights.state_dict(), which a
            # checkpoint keeps in a file of its own
            "start_weights_kept": self.start_weights is not None and self.start_weights.kept,
            "warmup": self.warmup.state_dict(),
        }

    def load_state_dict(self, state: dict, *, source: str = "the controller state") -> None:
        """Continue from ``state_dict()``. A state saved for another initial LR is a ``ValueError``
        naming both (its ``scale`` multiplies that LR, not this one); a policy of another shape than
        this controller's is a ``PolicyLoadError``; both name ``source`` (where the state came from).
        Anything but a dict is a ``TypeError``, a dict without the keys of a state a ``ValueError``
        naming them."""
        if not isinstance(state, dict):
            hint = " (the JSON text: pass json.loads(text))" if isinstance(state, (str, bytes)) else ""
            raise TypeError(f"MetaLRController.load_state_dict takes the dict that state_dict() returned, got "
                            f"{type(state).__name__}{hint}")
        if state.get("format") not in READABLE_STATE_FORMATS:
            raise ValueError(f"controller state has format {state.get('format')!r}; this hf_metalr reads formats "
                             f"{', '.join(map(str, READABLE_STATE_FORMATS))}")
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"{source} lacks {', '.join(missing)}: it is not a whole state_dict() of a MetaLRController "
                             "(truncated or edited?); restore it, or start the controller fresh")
        if not math.isclose(state["initial_lr"], self.initial_lr, rel_tol=1e-9):
            raise ValueError(f"{source} was saved with initial_lr={state['initial_lr']}, and this controller's initial_lr is "
                             f"{self.initial_lr}: its LR scale would apply to another LR. Continue with the learning rate "
                             "the state was saved with, or start the controller fresh.")
        self.seed = state["seed"]
        self.scale = min(max(state["scale"], self.min_scale), self.max_scale)
        if self.scale != state["scale"]:
            warnings.warn(f"the resumed controller state holds the LR {self.initial_lr * state['scale']:.4g}, outside "
                          f"this controller's [min_lr, max_lr] = [{self.min_lr:.4g}, {self.max_lr:.4g}]: the run goes "
                          f"on at {self.lr:.4g}. Resume with the earlier bounds to keep its LR", UserWarning, stacklevel=2)
        self.decision_index = state["decision_index"]
        self.previous_multiplier = state["previous_multiplier"]
        self.pending = state["pending"]
        self.tracker = RunTracker.from_dict(state["tracker"])
        self.history = list(state["history"])
        self.early_guard = EarlyDivergenceGuard.from_dict(state.get("early_guard"))
        self.early_cuts = list(state.get("early_cuts") or [])
        self._start_copy_due = False  # the run has begun: its start weights come with the state, or not at all
        self.start_weights_expected = bool(state.get("start_weights_kept"))
        self.warmup = WarmupReplay.from_dict(state.get("warmup"))
        load_policy_weights(self.policy, text_to_tensors(state["policy"]), source)
        if self.learner is not None and state.get("meta_optimizer"):
            self.learner.load_state_dict(optimizer_state_from_json(state["meta_optimizer"]))
        self._watched_state = {"alignment": state.get("alignment"), "iterate_average": state.get("iterate_average")}
        self._restore_watched()
        self._unheld_carry = None  # the loaded state holds the run's scale
        self._lr_written.clear()  # a resume restores the optimizer's LR as well: not a rewrite to warn about
        self._apply_if_attached()

    def adopt_state(self, state: dict, *, source: str) -> None:
        """Go on from another controller's ``state_dict()`` in the middle of a run whose weights
        just changed under this one (the callback's fallback when processes disagreed on starting
        over, each with rank 0's weights after it): as ``load_state_dict``, and the iterate
        average's interval starts afresh, as every process's does then (``forget_interval``)."""
        expected = self.start_weights_expected  # this process's own copy, not one a checkpoint should bring
        self.load_state_dict(state, source=source)
        self.start_weights_expected = expected
        self.forget_interval()

    def forget_interval(self) -> None:
        """Drop the iterate average's interval in progress and its last check's loss: the weights it
        averaged are no longer the run's."""
        self._average_steps_saved = 0  # nothing to give back: no warning that the interval was not restored
        if self.iterate_average is not None:
            self.iterate_average.forget()

    def _restore_watched(self) -> None:
        """Hand the loaded state of the gradient alignment and of the iterate average to them: at
        ``load_state_dict`` when the parameters are watched already, else at ``watch``, so the two
        calls may come in either order."""
        saved = self._watched_state
        if saved is None or self.alignment is None:
            return
        self._watched_state = None
        if saved["alignment"]:
            if self.alignment.seed != self.seed:  # the sketch is drawn from the seed the state was saved with
                self.alignment = GradientAlignment(self.alignment.params, sketch_size=self.alignment.sketch_size,
                                                   seed=self.seed)
            self.alignment.load_state_dict(saved["alignment"])
        if self.iterate_average is not None and saved["iterate_average"]:
            self.iterate_average.last_loss = saved["iterate_average"].get("last_loss")
            # the interval's average is in iterate_average.state_dict(), which the loop restores itself
            self._average_steps_saved = int(saved["iterate_average"].get("steps") or 0)
