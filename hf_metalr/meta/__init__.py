"""Meta-training: PPO across a distribution of cheap training runs (see ``train``)."""

from .train import MetaTrainConfig, meta_train

__all__ = ["MetaTrainConfig", "meta_train"]
