"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 real images), a small ResNet."""

from __future__ import annotations

import functools

import numpy as np
import torch

from .base import ArrayDataset, Task, TaskData, classification_metrics, seeded

SPLIT_SEED = 1234
N_TRAIN, N_VALIDATION = 1000, 300  # the remaining 497 images are the test split
IMAGE_SIZE = 16


@functools.lru_cache(maxsize=1)
def _digits_split() -> TaskData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    images = torch.nn.functional.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    images = (images - 0.5) / 0.5
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    parts = np.split(order, [N_TRAIN, N_TRAIN + N_VALIDATION])
    train, validation, test = (ArrayDataset(pixel_values=images[idx], labels=labels[idx]) for idx in parts)
    return TaskData(train=train, validation=validation, test=test)


class DigitsTask(Task):
    name = "digits"
    description = "scikit-learn digits (8x8, upsampled to 16x16), ResNet (basic blocks, 2 stages) from ResNetConfig"
    metric = "accuracy"
    greater_is_better = True
    threshold = 0.95
    test_metrics = ("accuracy", "macro_f1")
    learning_rate = 1e-3
    epochs = 12
    batch_size = 32
    evals_per_epoch = 2

    def load(self) -> TaskData:
        return _digits_split()

    def model(self, seed: int) -> torch.nn.Module:
        from transformers import ResNetConfig, ResNetForImageClassification

        config = ResNetConfig(
            num_channels=1,
            embedding_size=16,
            hidden_sizes=[16, 32],
            depths=[1, 1],
            layer_type="basic",
            num_labels=10,
        )
        return seeded(seed, lambda: ResNetForImageClassification(config))

    def compute_metrics(self, eval_pred) -> dict[str, float]:
        return classification_metrics(eval_pred)
