"""PPO over whole-run episodes, readable top to bottom (after cleanrl's ``ppo.py``).

Input: the episodes of one meta-iteration, each a list of (observation, action, reward). The old
log-probabilities and values are those of the policy before this update, which is the policy
that collected the episodes. Advantages use GAE; each episode ends at its last transition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..controller.policy import PolicyNetwork

__all__ = ["PPOConfig", "ppo_update"]


@dataclass
class PPOConfig:
    gamma: float = 0.95
    gae_lambda: float = 0.95
    clip: float = 0.2
    epochs: int = 4
    minibatch_size: int = 256
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    max_grad_norm: float = 0.5


def ppo_update(policy: PolicyNetwork, optimizer: torch.optim.Optimizer, episodes: list[dict], config: PPOConfig,
               generator: torch.Generator) -> dict[str, float]:
    episodes = [e for e in episodes if e["actions"]]
    if not episodes:
        return {"transitions": 0}
    obs = torch.tensor([o for e in episodes for o in e["obs"]], dtype=torch.float32)
    actions = torch.tensor([a for e in episodes for a in e["actions"]])
    with torch.no_grad():
        old_logits, old_values = policy(obs)
        old_logprobs = torch.distributions.Categorical(logits=old_logits).log_prob(actions)

    # GAE, episode by episode; the value after an episode's last transition is 0
    advantages = torch.zeros(len(actions))
    offset = 0
    for e in episodes:
        n = len(e["actions"])
        values = old_values[offset : offset + n]
        rewards = torch.tensor(e["rewards"], dtype=torch.float32)
        gae = 0.0
        for t in reversed(range(n)):
            next_value = values[t + 1] if t + 1 < n else 0.0
            delta = rewards[t] + config.gamma * next_value - values[t]
            gae = delta + config.gamma * config.gae_lambda * gae
            advantages[offset + t] = gae
        offset += n
    returns = advantages + old_values

    stats = {}
    for _ in range(config.epochs):
        order = torch.randperm(len(actions), generator=generator)
        for start in range(0, len(actions), config.minibatch_size):
            mb = order[start : start + config.minibatch_size]
            logits, values = policy(obs[mb])
            dist = torch.distributions.Categorical(logits=logits)
            ratio = (dist.log_prob(actions[mb]) - old_logprobs[mb]).exp()
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
            stats = {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy.item()}
    stats["transitions"] = len(actions)
    return stats
