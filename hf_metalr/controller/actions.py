"""Actions: a bounded multiplicative change of the learning rate.

The policy picks one multiplier from a small fixed set at each decision. The controller's LR is
``initial_lr * scale``; a multiplier moves ``scale`` and the result is clipped to the bounds.
A non-finite metric (a divergence) always takes the smallest multiplier.
"""

from __future__ import annotations

import math

__all__ = ["DEFAULT_MULTIPLIERS", "KEEP_INDEX", "apply_multiplier", "divergence_multiplier"]

DEFAULT_MULTIPLIERS: tuple[float, ...] = (0.5, 0.8, 1.0, 1.25, 2.0)
KEEP_INDEX = DEFAULT_MULTIPLIERS.index(1.0)


def divergence_multiplier(multipliers: tuple[float, ...] = DEFAULT_MULTIPLIERS) -> float:
    return min(multipliers)


def apply_multiplier(scale: float, multiplier: float, min_scale: float, max_scale: float) -> float:
    """The next scale: ``scale * multiplier`` clipped to [min_scale, max_scale]; always finite and > 0."""
    new = scale * multiplier
    if not math.isfinite(new) or new <= 0:
        new = min_scale
    return float(min(max(new, min_scale), max_scale))
