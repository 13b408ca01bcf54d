#!/usr/bin/env python
"""ResNet-50 on CIFAR-10 with the Trainer, the LR driven by MetaLRCallback or a baseline schedule.

Model: transformers' ``ResNetForImageClassification``, fine-tuned from ``microsoft/resnet-50``
(default; the 1000-class head is replaced by a 10-class one) or, with ``--model_type resnet``,
trained from scratch from ``ResNetConfig`` (whose defaults are ResNet-50). Data:
``uoft-cs/cifar10`` (columns ``img``, ``label``). Metrics: accuracy and macro F1 (scikit-learn).

Splits: the validation set that drives the controller is carved from train (5,000 images, seeded
with ``--seed``); the official test split is the test set. Local files (csv/json/parquet) keep the
hub schema, with ``img`` either the path of an image file (relative paths are relative to the data
file) or the pixels as a nested ``[H][W][3]`` uint8 list.

Preprocessing, in torch (no torchvision): training images get a random crop after 4-pixel
reflection padding and a random horizontal flip at their native 32x32; then every image is resized
(bilinear) to ``--image_size`` (224, as the ImageNet-pretrained network expects) and normalized with
the ImageNet mean and std.

    python recipes/run_cifar10.py --output_dir runs/cifar10 --bf16
    accelerate launch --multi_gpu --num_processes 4 recipes/run_cifar10.py --output_dir runs/cifar10 --bf16
    python recipes/run_cifar10.py recipes/configs/cifar10.json    # a preset: lr 1e-3, 50 epochs, a decision per epoch
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForImageClassification, Trainer, TrainingArguments, set_seed

from common import (
    BaseDataArguments,
    BaseModelArguments,
    ScheduleArguments,
    build_parser,
    configure_evaluation,
    configure_schedule,
    decode_image,
    end_distributed,
    load_config,
    load_model,
    load_splits,
    parse_args,
    setup_logging,
    train_evaluate_test,
)
from hf_metalr import MetaLRCallback
from hf_metalr.baselines import attach_baseline
from hf_metalr.metrics import classification_metrics

logger = logging.getLogger("recipes.cifar10")
CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelArguments(BaseModelArguments):
    classifier_dropout: float | None = field(
        default=None, metadata={"help": "Dropout before the classification head (ResNet has none by default)."}
    )


@dataclass
class DataArguments(BaseDataArguments):
    image_size: int = field(default=224, metadata={"help": "Images are resized to image_size x image_size."})
    random_crop_padding: int = field(
        default=4, metadata={"help": "Training augmentation: random crop after this much reflection padding (0: off)."}
    )
    horizontal_flip: bool = field(default=True, metadata={"help": "Training augmentation: random horizontal flip."})

    def __post_init__(self):
        if self.image_size < 1:
            raise ValueError(f"--image_size must be at least 1 (pixels a side; 224 for an ImageNet-pretrained ResNet), "
                             f"got {self.image_size}")
        if self.random_crop_padding < 0:
            raise ValueError(f"--random_crop_padding must be 0 (off) or more pixels, got {self.random_crop_padding}")


DEFAULTS = dict(
    model_name_or_path="microsoft/resnet-50",
    dataset_name="uoft-cs/cifar10",
    train_split_name="train",
    test_split_name="test",
    validation_split_size=5000.0,
    # a standard AdamW fine-tuning setting for an ImageNet ResNet-50 on CIFAR-10
    learning_rate=1e-4,
    weight_decay=0.01,
    per_device_train_batch_size=64,
    per_device_eval_batch_size=128,
    num_train_epochs=10.0,
)


def get_parser():
    return build_parser(__doc__, (ModelArguments, DataArguments, ScheduleArguments, TrainingArguments), **DEFAULTS)


class ImageTransform:
    """``img`` column -> normalized ``pixel_values`` (3 x S x S); ``label`` -> ``labels``."""

    def __init__(self, image_size: int, *, train: bool, crop_padding: int = 4, flip: bool = True):
        self.size, self.train, self.padding, self.flip = image_size, train, crop_padding, flip
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def pixels(self, value) -> torch.Tensor:
        image = torch.from_numpy(np.ascontiguousarray(decode_image(value))).permute(2, 0, 1).float().div_(255)
        if self.train:
            image = self._augment(image)
        if image.shape[-2:] != (self.size, self.size):
            image = nn.functional.interpolate(
                image[None], size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
            )[0]
        return (image - self.mean) / self.std

    def _augment(self, image: torch.Tensor) -> torch.Tensor:
        if self.padding > 0:
            height, width = image.shape[-2:]
            padded = nn.functional.pad(image[None], [self.padding] * 4, mode="reflect")[0]
            top, left = torch.randint(0, 2 * self.padding + 1, (2,)).tolist()
            image = padded[:, top : top + height, left : left + width]
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image

    def __call__(self, batch: dict) -> dict:
        return {
            "pixel_values": [self.pixels(value) for value in batch["img"]],
            "labels": list(batch["label"]),
        }


def add_classifier_dropout(model, p: float) -> None:
    """Dropout in front of the head's Linear; the parameter names (and saved checkpoints) stay as they are."""
    flatten = model.classifier[0]
    model.classifier[0] = nn.Sequential(flatten, nn.Dropout(p))
    model.config.classifier_dropout = p


def image_processor(image_size: int):
    """An image processor matching the eval transform, saved with the model for inference (None if unavailable)."""
    try:
        from transformers import ConvNextImageProcessorPil
    except ImportError:  # pragma: no cover - depends on the transformers version
        return None
    return ConvNextImageProcessorPil(
        size={"shortest_edge": image_size}, crop_pct=1.0, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD)
    )


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, schedule_args, training_args = parse_args(get_parser(), argv)
    setup_logging(training_args)
    configure_schedule(schedule_args, training_args)  # a baseline sets --lr_scheduler_type; metalr checks its flags
    cadence = configure_evaluation(training_args, schedule_args.num_evaluations)
    # the transforms read the raw `img`/`label` columns, which the Trainer would otherwise drop
    training_args.remove_unused_columns = False
    set_seed(training_args.seed)

    with training_args.main_process_first(desc="loading CIFAR-10"):
        splits = load_splits(data_args, training_args, columns=("img", "label"), path_columns=("img",))
    label_feature = splits["train"].features["label"]
    labels = list(getattr(label_feature, "names", None) or CIFAR10_LABELS)

    splits["train"].set_transform(
        ImageTransform(data_args.image_size, train=True, crop_padding=data_args.random_crop_padding, flip=data_args.horizontal_flip)
    )
    for role in ("validation", "test"):
        if role in splits:
            splits[role].set_transform(ImageTransform(data_args.image_size, train=False))

    config = load_config(
        model_args,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    model = load_model(AutoModelForImageClassification, model_args, config, ignore_mismatched_sizes=True)
    if model_args.classifier_dropout:
        add_classifier_dropout(model, model_args.classifier_dropout)

    callbacks = [cadence]
    if schedule_args.uses_controller:  # the controller, built from the --metalr_* flags
        callbacks.append(MetaLRCallback(**schedule_args.callback_kwargs()))
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=image_processor(data_args.image_size),
        data_collator=collate,
        compute_metrics=classification_metrics,
        callbacks=callbacks,
    )
    if not schedule_args.uses_controller:
        attach_baseline(trainer, schedule_args.lr_schedule)  # step: MultiStepLR; prodigy: its optimizer
    return train_evaluate_test(trainer, splits)


def collate(examples: list[dict]) -> dict:
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([int(e["labels"]) for e in examples]),
    }


if __name__ == "__main__":
    main()
    end_distributed()
