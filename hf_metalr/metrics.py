"""``compute_metrics`` functions shared by the embedded tasks, the benchmarks and the recipes (scikit-learn, offline)."""

from __future__ import annotations

import numpy as np

__all__ = ["classification_metrics", "regression_metrics"]


def classification_metrics(eval_pred) -> dict[str, float]:
    """Accuracy and F1 of a classifier, usable as the Trainer's ``compute_metrics``.

    ``eval_pred`` is the Trainer's ``EvalPrediction`` or a ``(logits, labels)`` pair; when the
    model returns a tuple of outputs, its first element is taken as the logits. Keys:

    - ``accuracy``;
    - ``f1``: the F1 of class 1 with two classes, the macro F1 otherwise;
    - ``macro_f1``: the macro F1 whatever the number of classes.

    A class that is never predicted counts as F1 0 (no warning).
    """
    from sklearn.metrics import accuracy_score, f1_score

    if hasattr(eval_pred, "predictions"):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
    else:
        logits, labels = eval_pred
    if isinstance(logits, tuple):
        logits = logits[0]
    logits, labels = np.asarray(logits), np.asarray(labels)
    predictions = np.argmax(logits, axis=-1)
    macro = float(f1_score(labels, predictions, average="macro", zero_division=0))
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1": float(f1_score(labels, predictions, average="binary", zero_division=0)) if logits.shape[-1] == 2 else macro,
        "macro_f1": macro,
    }


def regression_metrics(eval_pred) -> dict[str, float]:
    """R^2 (1 - MSE / the labels' variance, over every predicted value) and the MSE of a regressor's
    predictions, usable as the Trainer's ``compute_metrics``."""
    predictions = np.asarray(eval_pred.predictions, dtype=np.float64)
    labels = np.asarray(eval_pred.label_ids, dtype=np.float64)
    mse = float(np.mean((predictions - labels) ** 2))
    return {"r2": 1.0 - mse / float(np.var(labels)), "mse": mse}
