"""One meta-training episode: a whole training run in a plain PyTorch loop.

The controller acting in the episode is :class:`~hf_metalr.MetaLRController` itself (frozen,
``learn_online=False``), so observation, action and reward come from exactly the code that the
Trainer callback runs. The episode returns the transitions for PPO: the observation and action
of each decision the policy made (not the cut at a divergence or the keep at the first evaluation
without the gate, where it made none; where the gate held its action, the fixed cut at a clear
overshoot replaced it or the undo took a raise back, the action is still the policy's choice and
the safeguard is part of what followed it), and as its reward the one the controller computes at
the next decision. An action followed by a
divergence gets ``DIVERGENCE_REWARD`` and ends the episode. All of it comes back as an
:class:`Episode`, which meta-training hands to PPO once it has added the constant-LR baseline's
rewards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..controller.controller import MetaLRController
from ..controller.features import DIVERGENCE_REWARD, RunTracker, is_finite
from ..controller.policy import PolicyNetwork
from .families import build_problem

__all__ = ["Episode", "run_episode", "mean_log_objective", "objective_auc", "decision_rewards"]


@dataclass
class Episode:
    """One training run under the controller, as meta-training uses it.

    The PPO transitions, one per decision the policy made (from the first evaluation on, since the
    episode watches the gradients and the gate is on), in order:

    - ``obs``: the policy's input at the decision (its features, in its order);
    - ``actions``: the action index the policy chose;
    - ``rewards``: the reward the controller computed at the next decision
      (``DIVERGENCE_REWARD`` when a divergence followed, which ends the episode);
    - ``baseline_rewards``: the rewards a constant-LR run of the same problem, initial weights and
      data order got at the same decisions (set by meta-training; the PPO advantage is the
      difference, see ``ppo.relative_rewards``).

    The run itself: ``values`` (the validation loss at every evaluation), ``accuracies`` (None for
    a regression problem), ``lrs`` (the LR after every decision; empty for a constant-LR run),
    ``first_decision`` (the decision index of the first transition), ``diverged``,
    ``mean_log_objective`` (see :func:`mean_log_objective`) and ``early_cuts`` (the controller's
    early-divergence cuts before the first evaluation, as in its ``early_cuts``; empty for a
    constant-LR run).
    """

    obs: list[list[float]]
    actions: list[int]
    rewards: list[float]
    baseline_rewards: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    accuracies: list[float | None] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    first_decision: int = 0
    diverged: bool = False
    mean_log_objective: float = float("nan")
    early_cuts: list[dict] = field(default_factory=list)

    def held_out_summary(self) -> dict:
        """What held-out scoring needs of a run, as stored in the meta-training checkpoint."""
        return {"mean_log_objective": self.mean_log_objective, "accuracies": self.accuracies}


def _replay(values: list[float]) -> tuple[list[float], list[float]]:
    """Feed ``values`` up to the first non-finite one to a ``RunTracker``: (log objectives, rewards)."""
    tracker, logs, rewards = RunTracker(), [], []
    for v in values:
        if not is_finite(v):
            break
        log, reward = tracker.observe(v)
        tracker.commit()
        logs.append(log)
        if reward is not None:
            rewards.append(reward)
    return logs, rewards


def decision_rewards(values: list[float]) -> list[float]:
    """The reward the controller computes at each decision after the first, for a run whose
    validation values were ``values`` (``RunTracker``'s reward, so the same code). A divergence
    gets ``DIVERGENCE_REWARD`` and the rewards after it are 0: the run is over."""
    logs, rewards = _replay(values)
    if len(logs) < len(values):  # diverged at evaluation len(logs)
        if logs:
            rewards.append(DIVERGENCE_REWARD)
        rewards += [0.0] * (len(values) - 1 - len(rewards))
    return rewards


def mean_log_objective(values: list[float]) -> float:
    """Mean log-objective over the run's evaluations (lower is better); a divergence counts as
    the first value's log plus ``-DIVERGENCE_REWARD`` for every evaluation from then on."""
    logs, _ = _replay(values)
    penalty = (logs[0] if logs else 0.0) - DIVERGENCE_REWARD
    logs += [penalty] * (len(values) - len(logs))
    return sum(logs) / len(logs) if logs else float("nan")


def objective_auc(values: list[float]) -> float:
    """Deprecated name of :func:`mean_log_objective` (it is a mean, not an area); removed in the next release."""
    import warnings

    warnings.warn("hf_metalr.meta.episode.objective_auc is renamed mean_log_objective", DeprecationWarning, stacklevel=2)
    return mean_log_objective(values)


def _evaluate(problem, model) -> tuple[float, float | None]:
    """Validation loss, and accuracy for a classification problem (None for regression); a
    sequence model's logits are (batch, classes, length), as cross-entropy takes them."""
    x, y = problem.validation
    model.eval()
    with torch.no_grad():
        out = model(x)
        if problem.loss == "ce":
            loss, accuracy = torch.nn.functional.cross_entropy(out, y), float((out.argmax(1) == y).float().mean())
        else:
            loss, accuracy = torch.nn.functional.mse_loss(out, y), None
    model.train()
    return float(loss), accuracy


def run_episode(spec: dict, policy: PolicyNetwork | None, seed: int, *, greedy: bool = False) -> Episode:
    """Train ``spec``'s problem; the controller sets the LR at every evaluation (the policy's choice
    under the direction gate, from the first evaluation on; None: constant LR).

    Returns the :class:`Episode`: the transitions (``obs``, ``actions``, ``rewards``) and the run's
    validation values (the loss the controller sees, and the accuracy of a classification problem).
    """
    problem = build_problem(spec)
    model, optimizer = problem.model, problem.optimizer
    controller = None
    if policy is not None:
        controller = MetaLRController(spec["lr"], policy=policy, seed=seed, learn_online=False, greedy=greedy)
        controller.watch(model.parameters(), average_iterates=True)
        controller.read_optimizer(optimizer)  # as attach and the callback do
    x, y = problem.train
    steps_per_epoch = math.ceil(len(y) / problem.batch_size)
    total = steps_per_epoch * problem.epochs
    eval_every = max(1, math.ceil(steps_per_epoch / problem.evals_per_epoch))
    order = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.functional.cross_entropy if problem.loss == "ce" else torch.nn.functional.mse_loss

    decisions, values, accuracies = [], [], []
    step, stop = 0, False
    for _ in range(problem.epochs):
        perm = torch.randperm(len(y), generator=order)
        for start in range(0, len(y), problem.batch_size):
            idx = perm[start : start + problem.batch_size]
            loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            if controller is not None:
                controller.before_optimizer_step()
            optimizer.step()
            step += 1
            if controller is not None:
                controller.after_optimizer_step()
                if controller.observe_train_loss(loss.item()):  # the early-divergence guard cut the LR
                    controller.scale_param_groups(optimizer)
            if step % eval_every and step != total:
                continue
            value, accuracy = _evaluate(problem, model)
            values.append(value)
            accuracies.append(accuracy)
            if controller is not None:
                decision = _quiet(controller.observe, value, progress=step / total,
                                  validation_loss=lambda: _evaluate(problem, model)[0], current_loss=value)
                decisions.append(decision)
                controller.scale_param_groups(optimizer)
            if not is_finite(value):
                stop = True
                break
        if stop:
            break

    # transitions: the policy's decisions (not the fixed responses), each rewarded at the next one
    obs, actions, rewards, first = [], [], [], None
    for t, (current, following) in enumerate(zip(decisions, decisions[1:])):
        if not current.by_policy or current.rewound:  # the fixed keep at the first evaluation without the gate (a
            # divergence ends the run); a decision that started the run over, whose reward measures the start-over
            continue
        first = t if first is None else first
        obs.append(controller.observation(current.features))
        actions.append(current.action_index)
        rewards.append(DIVERGENCE_REWARD if following.diverged else following.reward)
        if following.diverged:
            break
    return Episode(
        obs=obs,
        actions=actions,
        rewards=rewards,
        values=values,
        accuracies=accuracies,
        lrs=[d.lr for d in decisions],
        first_decision=first if first is not None else 0,
        diverged=any(not is_finite(v) for v in values),
        mean_log_objective=mean_log_objective(values),
        early_cuts=list(controller.early_cuts) if controller is not None else [],
    )


def _quiet(fn, *args, **kwargs):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)
