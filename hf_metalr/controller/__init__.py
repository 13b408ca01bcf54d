"""The framework-agnostic controller: features, actions, policy, learner."""

from .actions import DEFAULT_MULTIPLIERS
from .controller import Decision, MetaLRController
from .features import FEATURE_NAMES
from .policy import PolicyConfig, PolicyLoadError, PolicyNetwork, load_policy, random_policy, save_policy

__all__ = [
    "DEFAULT_MULTIPLIERS",
    "FEATURE_NAMES",
    "Decision",
    "MetaLRController",
    "PolicyConfig",
    "PolicyLoadError",
    "PolicyNetwork",
    "load_policy",
    "random_policy",
    "save_policy",
]
