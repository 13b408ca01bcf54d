"""``regression``: Friedman's #1 regression problem, a plain PyTorch MLP in the Trainer.

Data: ``sklearn.datasets.make_friedman1`` (Friedman 1991, a standard regression benchmark:
``y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5 + noise``, with five more inputs that do
not matter), 3,000 rows at noise 1.0 from a fixed seed, split 2,000 / 500 / 500. The target is
standardised with the training split's mean and standard deviation, so the best achievable mean
squared error is about the noise's share of the variance (R^2 about 0.96).

The model is an ``nn.Module`` that returns ``{"loss", "logits"}``, as a user's own model in the
Trainer would: 10 -> 128 -> 128 -> 1, ReLU. Metrics: R^2 (the threshold metric) and the MSE.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from .base import ArrayDataset, R2Task, TaskData, regression_output, seeded

__all__ = ["RegressionTask", "RegressionMLP"]

SPLIT_SEED = 2718
N_TRAIN, N_VALIDATION, N_TEST = 2000, 500, 500
N_FEATURES = 10
NOISE = 1.0


@functools.lru_cache(maxsize=1)
def _regression_split() -> TaskData:
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=N_TRAIN + N_VALIDATION + N_TEST, n_features=N_FEATURES, noise=NOISE,
                          random_state=SPLIT_SEED)
    mean, std = y[:N_TRAIN].mean(), y[:N_TRAIN].std()
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor((y - mean) / std, dtype=torch.float32)
    cuts = (slice(0, N_TRAIN), slice(N_TRAIN, N_TRAIN + N_VALIDATION), slice(N_TRAIN + N_VALIDATION, None))
    return TaskData(*(ArrayDataset(features=x[part], labels=y[part]) for part in cuts))


class RegressionMLP(nn.Module):
    """An MLP with the Trainer's conventions: ``forward(features, labels=None)`` returns the MSE
    as ``loss`` when labels are given, and the predictions as ``logits``."""

    def __init__(self, width: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(N_FEATURES, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, 1))

    def forward(self, features, labels=None):
        return regression_output(self.net(features).squeeze(-1), labels)


class RegressionTask(R2Task):
    name = "regression"
    description = "Friedman #1 (scikit-learn, 10 inputs, noise 1.0), a plain PyTorch MLP (2 x 128, ReLU)"
    threshold = 0.9
    learning_rate = 1e-2
    epochs = 10
    batch_size = 32
    evals_per_epoch = 2

    def load(self) -> TaskData:
        return _regression_split()

    def model(self, seed: int) -> nn.Module:
        return seeded(seed, RegressionMLP)
