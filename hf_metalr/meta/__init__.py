"""Meta-training: PPO across a distribution of cheap training runs (see ``train``)."""

from .episode import Episode, run_episode
from .ppo import PPOConfig, ppo_update
from .train import MetaTrainConfig, meta_train

__all__ = ["Episode", "MetaTrainConfig", "PPOConfig", "meta_train", "ppo_update", "run_episode"]
