"""PPO over whole-run episodes, readable top to bottom (after cleanrl's ``ppo.py``).

Input: the :class:`~hf_metalr.meta.episode.Episode` s of one meta-iteration, each a list of
(observation, action, reward) plus ``baseline_rewards``: the rewards of a constant-LR run of the
same problem, initial weights and data order (a counterfactual baseline). The old
log-probabilities are those of the policy that collected the episodes.

- The actor's advantage of a decision is the discounted sum, from that decision on, of the
  episode's reward minus the baseline's: how much the policy's LR choices beat keeping the LR
  on *this* problem. The baseline removes the problem's own difficulty from the signal, which no
  critic can see from the features.
- The critic learns the plain discounted return (the same discount as the online A2C learner in
  :class:`~hf_metalr.MetaLRController`, which bootstraps from it during a run).

:class:`PPOConfig` holds the one set of PPO settings; ``hf-metalr meta-train`` takes its defaults
(``--ppo_lr``, ``--ppo_epochs``, ``--ppo_minibatch`` override three of them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..controller.learner import DISCOUNT
from ..controller.policy import PolicyNetwork
from .episode import Episode

__all__ = ["PPOConfig", "ppo_update", "relative_rewards"]


@dataclass
class PPOConfig:
    """The PPO settings of meta-training (these defaults are ``hf-metalr meta-train``'s)."""

    lr: float = 1e-3  # Adam LR of the update (the optimizer is built by meta-training with ``adam_eps``)
    adam_eps: float = 1e-5
    epochs: int = 8  # passes over each iteration's transitions
    minibatch_size: int = 64
    gamma: float = DISCOUNT
    clip: float = 0.2  # the ratio's clip range: [1 - clip, 1 + clip]
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    max_grad_norm: float = 0.5


def ppo_update(policy: PolicyNetwork, optimizer: torch.optim.Optimizer, episodes: list[Episode], config: PPOConfig,
               generator: torch.Generator) -> dict[str, float]:
    """One PPO update of ``policy`` (actor and critic) from the transitions of ``episodes``.

    ``config.epochs`` passes over all transitions in minibatches of ``config.minibatch_size``,
    shuffled by ``generator`` (so the update is reproducible); each minibatch takes one clipped
    policy-gradient step with the advantage normalised within the minibatch, a value-loss step and
    an entropy bonus, its gradient clipped to ``config.max_grad_norm``. Episodes without
    transitions are skipped.

    Returns the diagnostics, for the meta-training curve: ``policy_loss``, ``value_loss``,
    ``entropy`` and ``approx_kl`` (the estimator ``(ratio - 1) - log ratio`` of cleanrl) of the last
    minibatch; ``clipfrac``, the fraction of transitions whose ratio was clipped, over every
    minibatch; ``explained_variance`` of the returns by the critic before the update (1 is
    perfect, <= 0 no better than their mean; NaN when the returns do not vary); ``transitions``.
    """
    episodes = [e for e in episodes if e.actions]
    if not episodes:
        return {"transitions": 0}
    obs = torch.tensor([o for e in episodes for o in e.obs], dtype=torch.float32)
    actions = torch.tensor([a for e in episodes for a in e.actions])
    with torch.no_grad():
        old_logprobs = policy.distribution(obs).log_prob(actions)
        old_values = policy(obs)[1]

    advantages = torch.tensor([a for e in episodes for a in _discounted(relative_rewards(e), config.gamma)])
    returns = torch.tensor([g for e in episodes for g in _discounted(e.rewards, config.gamma)])

    stats, clipped = {}, []
    for _ in range(config.epochs):
        order = torch.randperm(len(actions), generator=generator)
        for start in range(0, len(actions), config.minibatch_size):
            mb = order[start : start + config.minibatch_size]
            logits, values = policy(obs[mb])
            dist = torch.distributions.Categorical(logits=logits)
            logratio = dist.log_prob(actions[mb]) - old_logprobs[mb]
            ratio = logratio.exp()
            adv = advantages[mb]
            adv = (adv - adv.mean()) / (adv.std() + 1e-8) if len(mb) > 1 else adv
            policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - config.clip, 1 + config.clip)).mean()
            value_loss = (returns[mb] - values).pow(2).mean()
            entropy = dist.entropy().mean()
            loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                approx_kl = ((ratio - 1) - logratio).mean().item()
                clipped.append(((ratio - 1).abs() > config.clip).float())
            stats = {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy.item(),
                     "approx_kl": approx_kl}
    stats["clipfrac"] = torch.cat(clipped).mean().item()
    stats["explained_variance"] = _explained_variance(old_values, returns)
    stats["transitions"] = len(actions)
    return stats


def relative_rewards(episode: Episode) -> list[float]:
    """Per decision: the episode's reward minus the constant-LR baseline's at the same decision."""
    baseline = list(episode.baseline_rewards[: len(episode.rewards)])
    baseline += [0.0] * (len(episode.rewards) - len(baseline))
    return [r - b for r, b in zip(episode.rewards, baseline)]


def _discounted(rewards: list[float], gamma: float) -> list[float]:
    out, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def _explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """``1 - Var(target - predicted) / Var(target)``; NaN when the target does not vary."""
    variance = target.var(unbiased=False).item()
    return float("nan") if variance == 0 else 1.0 - (target - predicted).var(unbiased=False).item() / variance
