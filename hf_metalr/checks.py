"""Input checks shared by every entry point: numbers and whole numbers, with messages naming the input.

``what`` names the input as its user knows it (``"--lr"``, ``"MetaLRCallback(min_lr=...)"``,
``"the metric 'eval_wer'"``). Type errors raise ``TypeError``, out-of-range values ``ValueError``.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["finite_number", "is_positive_finite", "real_number", "whole_number"]


def real_number(value, what: str) -> float:
    """``value`` as a float when it is a real scalar: an int or float, a numpy number, a 0-d numpy
    array or torch tensor (NaN and infinities included). Anything else (a bool, a string, None, a
    sequence, a complex number) is a ``TypeError`` naming ``what`` and the value's type."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        item = value.item()
        if isinstance(item, numbers.Real) and not isinstance(item, bool):
            return float(item)
    raise TypeError(f"{what} must be a real number (an int, a float, or a numpy / 0-d torch scalar), "
                    f"got {type(value).__name__} {value!r:.80}")


def is_positive_finite(value) -> bool:
    """Whether ``value`` is a real number (not a bool), finite and > 0: an LR, a bound, a multiplier."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def finite_number(value, what: str, *, above: float | None = None, at_least: float | None = None) -> float:
    """``real_number(value)`` that must be finite, and ``> above`` / ``>= at_least`` when given."""
    x = real_number(value, what)
    bound = f" > {above:g}" if above is not None else f" >= {at_least:g}" if at_least is not None else ""
    if not math.isfinite(x) or (above is not None and not x > above) or (at_least is not None and not x >= at_least):
        raise ValueError(f"{what} must be a finite number{bound}, got {value!r}")
    return x


def whole_number(value, what: str, *, at_least: int) -> int:
    """``value`` as an int when it is a whole number ``>= at_least`` (a bool or 2.5 is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be a whole number >= {at_least}, got {type(value).__name__} {value!r:.80}")
    if value < at_least:
        raise ValueError(f"{what} must be a whole number >= {at_least}, got {value}")
    return int(value)
