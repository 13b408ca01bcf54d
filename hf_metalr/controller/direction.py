"""A metric's direction from its name, for when nobody states it.

The Trainer takes every name that does not end in ``loss`` as greater-is-better; error rates,
perplexity and regression errors are not. This is the one place that decides it, for the callback,
the launcher's banner and the reports.
"""

from __future__ import annotations

import re

__all__ = ["LOWER_IS_BETTER_WORDS", "greater_is_better_by_name"]

LOWER_IS_BETTER_WORDS = ("loss", "nll", "error", "wer", "cer", "mer", "wil", "perplexity", "ppl", "mse", "mae", "rmse",
                         "mape", "bits", "bpc", "bpb")


def greater_is_better_by_name(metric: str) -> bool:
    """False when a part of ``metric`` between ``_ - . /`` is one of ``LOWER_IS_BETTER_WORDS``
    (``eval_loss``, ``eval_wer``, ``word_error_rate``, ``test_rmse``) or it ends in ``loss``; else True."""
    words = re.split(r"[_\-./\s]+", metric.lower())
    return not (metric.lower().endswith("loss") or any(word in LOWER_IS_BETTER_WORDS for word in words))
