"""A metric's direction from its name, for when nobody states it.

The Trainer takes every name that does not end in ``loss`` as greater-is-better; error rates,
perplexity and regression errors are not. This is the one place that decides it, for the callback,
the launcher's banner and the reports.
"""

from __future__ import annotations

import re

__all__ = ["LOWER_IS_BETTER_WORDS", "greater_is_better_by_name"]

LOWER_IS_BETTER_WORDS = ("loss", "nll", "error", "err", "wer", "cer", "mer", "wil", "perplexity", "ppl", "mse", "mae",
                         "rmse", "msle", "rmsle", "mape", "smape", "bits", "bpc", "bpb")


def greater_is_better_by_name(metric: str) -> bool:
    """False when a part of ``metric`` between ``_ - . /`` is one of ``LOWER_IS_BETTER_WORDS``
    (``eval_loss``, ``eval_wer``, ``word_error_rate``, ``test_rmse``, ``top1_err``), it ends in
    ``loss``, or it is a negative log-likelihood spelled out (``neg_log_likelihood``); else True."""
    words = re.split(r"[_\-./\s]+", metric.lower())
    negated_likelihood = "likelihood" in words and ("neg" in words or "negative" in words)  # an NLL spelled out
    return not (metric.lower().endswith("loss") or negated_likelihood
                or any(word in LOWER_IS_BETTER_WORDS for word in words))
