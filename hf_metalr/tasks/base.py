"""The contract of an embedded benchmark task.

A task owns its data split (train / validation / test, fixed whatever the seed), a model built
from a config (no hub access), the metrics, and the threshold that "time to threshold" refers
to. The controller and the baselines only ever see the validation split; final numbers are on
test. ``model(seed)`` is deterministic in ``seed`` and leaves the global RNG untouched, so every
schedule starts from the same weights for a given seed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from ..metrics import classification_metrics, regression_metrics  # re-exported: the tasks' compute_metrics

__all__ = ["Task", "R2Task", "TaskData", "ArrayDataset", "classification_metrics", "regression_metrics", "reaches",
           "regression_output", "seeded"]


@dataclass
class TaskData:
    train: torch.utils.data.Dataset
    validation: torch.utils.data.Dataset
    test: torch.utils.data.Dataset


class ArrayDataset(torch.utils.data.Dataset):
    """Rows of named tensors, as the Trainer's default collator expects."""

    def __init__(self, **columns: torch.Tensor):
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"columns have different lengths: { {k: len(v) for k, v in columns.items()} }")
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.columns.items()}


def reaches(value: float, threshold: float, greater_is_better: bool) -> bool:
    """Whether a metric value meets a threshold, in the metric's direction."""
    return value >= threshold if greater_is_better else value <= threshold


def regression_output(prediction: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """What a plain regressor's ``forward`` gives the Trainer: ``logits``, and the MSE ``loss`` when there are labels."""
    out = {"logits": prediction}
    if labels is not None:
        out["loss"] = torch.nn.functional.mse_loss(prediction, labels)
    return out


def seeded(seed: int, build: Callable[[], Any]) -> Any:
    """Run ``build`` under ``torch.manual_seed(seed)`` without disturbing the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class Task(ABC):
    """One embedded task. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    description: ClassVar[str]
    metric: ClassVar[str]  # the threshold metric, a key of compute_metrics' result (no eval_ prefix)
    greater_is_better: ClassVar[bool]
    threshold: ClassVar[float]
    test_metrics: ClassVar[tuple[str, ...]]  # reported on the test split
    learning_rate: ClassVar[float] = 1e-3
    epochs: ClassVar[int] = 10
    batch_size: ClassVar[int] = 32
    evals_per_epoch: ClassVar[int] = 2

    @abstractmethod
    def load(self) -> TaskData:
        """The fixed split; may be cached."""

    @abstractmethod
    def model(self, seed: int) -> torch.nn.Module:
        """A freshly initialized model, deterministic in ``seed``."""

    @abstractmethod
    def compute_metrics(self, eval_pred) -> dict[str, float]:
        """``compute_metrics`` for the Trainer: includes ``self.metric`` and every name in ``test_metrics``."""

    def data_collator(self):
        """A collator for the Trainer, or None for the default one."""
        return None

    def reached(self, value: float) -> bool:
        return reaches(value, self.threshold, self.greater_is_better)


class R2Task(Task):
    """A regression task scored by R^2 (higher is better), with the MSE beside it on test. Subclasses
    set ``name``, ``description`` and ``threshold`` (an R^2), and implement ``load`` and ``model``."""

    metric = "r2"
    greater_is_better = True
    test_metrics = ("r2", "mse")

    def compute_metrics(self, eval_pred) -> dict[str, float]:
        """R^2 (1 - MSE / the labels' variance) and the MSE of the predictions."""
        return regression_metrics(eval_pred)
