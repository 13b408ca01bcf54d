"""``vit-digits``: the ``digits`` images, a tiny Vision Transformer: a pre-LN transformer classifier.

Data: the ``digits`` task's split (scikit-learn's 1,797 real 8x8 scans, upsampled to 16x16; 1,000
train, 300 validation, 497 test). The model is ``ViTForImageClassification`` from a ``ViTConfig``
(patches of 4x4, so 16 tokens and a [CLS]; 2 pre-LN layers, 64 wide, 4 heads, no dropout), trained
with AdamW as the harness sets it up. Added after the shipped policy was picked, as a check on a
transformer classifier that shaped neither the controller nor the policy: its good LR and
threshold come from constant-LR runs only (``MEASURED.md``).
"""

from __future__ import annotations

import torch

from .base import seeded
from .digits import IMAGE_SIZE, DigitsTask

__all__ = ["ViTDigitsTask"]


class ViTDigitsTask(DigitsTask):
    """The digits task (its split, metrics and budget) with a ViT and its own threshold."""

    name = "vit-digits"
    description = "scikit-learn digits (16x16), a 2-layer pre-LN Vision Transformer from ViTConfig (patches 4x4, 64 wide)"
    threshold = 0.9

    def model(self, seed: int) -> torch.nn.Module:
        from transformers import ViTConfig, ViTForImageClassification

        config = ViTConfig(
            image_size=IMAGE_SIZE,
            patch_size=4,
            num_channels=1,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            num_labels=10,
        )
        return seeded(seed, lambda: ViTForImageClassification(config))
