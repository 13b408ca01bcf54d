#!/usr/bin/env python
"""BERT on SST-2 (GLUE) with the Trainer, the LR driven by MetaLRCallback or a baseline schedule.

Model: ``bert-base-uncased`` (``--model_name_or_path``), or ``--model_type bert`` from scratch.
Data: ``nyu-mll/glue`` config ``sst2`` (columns ``sentence``, ``label``). Metrics: accuracy and F1
(scikit-learn).

Splits: SST-2's test labels are hidden, so the validation set that drives the controller is
carved from train (872 examples, the size of the official dev set, seeded with ``--seed``) and the
official validation split (872 labelled sentences) is the test set reported at the end. Local
files follow the same roles: ``--train_file`` (validation carved from it unless
``--validation_file``) and ``--test_file`` (the official dev set, in the hub schema).

    python recipes/run_sst2.py --output_dir runs/sst2 --bf16
    accelerate launch --multi_gpu --num_processes 4 recipes/run_sst2.py --output_dir runs/sst2 --bf16
    python recipes/run_sst2.py recipes/configs/sst2.json       # a preset: lr 1e-3, 50 epochs, a decision per epoch
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

from common import (
    BaseDataArguments,
    BaseModelArguments,
    ScheduleArguments,
    build_parser,
    configure_evaluation,
    configure_schedule,
    end_distributed,
    from_the_hub,
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

logger = logging.getLogger("recipes.sst2")
LABELS = ("negative", "positive")


@dataclass
class ModelArguments(BaseModelArguments):
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer (hub id or local dir); default: --model_name_or_path."})
    classifier_dropout: float | None = field(
        default=None, metadata={"help": "Dropout before the classification head; default: the config's (hidden_dropout_prob)."}
    )


@dataclass
class DataArguments(BaseDataArguments):
    max_seq_length: int = field(default=128, metadata={"help": "Sentences are truncated to this many tokens."})


DEFAULTS = dict(
    model_name_or_path="bert-base-uncased",
    dataset_name="nyu-mll/glue",
    dataset_config_name="sst2",
    train_split_name="train",
    test_split_name="validation",
    validation_split_size=872.0,
    # run_glue's BERT setting: lr 2e-5, batch 32, 3 epochs, 128 tokens (no warmup, as the baselines).
    learning_rate=2e-5,
    per_device_train_batch_size=32,
    per_device_eval_batch_size=64,
    num_train_epochs=3.0,
)


def get_parser():
    return build_parser(__doc__, (ModelArguments, DataArguments, ScheduleArguments, TrainingArguments), **DEFAULTS)


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, schedule_args, training_args = parse_args(get_parser(), argv)
    setup_logging(training_args)
    configure_schedule(schedule_args, training_args)  # a baseline sets --lr_scheduler_type; metalr checks its flags
    cadence = configure_evaluation(training_args, schedule_args.num_evaluations)
    set_seed(training_args.seed)

    tokenizer_name = model_args.tokenizer_name or model_args.model_name_or_path
    with from_the_hub("tokenizer", tokenizer_name, "a local folder as --tokenizer_name or --model_name_or_path"):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name, cache_dir=model_args.cache_dir)

    def tokenize(batch):
        return tokenizer(batch["sentence"], truncation=True, max_length=data_args.max_seq_length)

    with training_args.main_process_first(desc="loading and tokenizing SST-2"):
        raw = load_splits(data_args, training_args, columns=("sentence", "label"))
        splits = raw.map(
            tokenize,
            batched=True,
            num_proc=data_args.preprocessing_num_workers,
            remove_columns=[c for c in raw["train"].column_names if c != "label"],
            desc="tokenizing",
        )

    updates = {"num_labels": 2, "id2label": dict(enumerate(LABELS)), "label2id": {n: i for i, n in enumerate(LABELS)}}
    if model_args.model_type:
        updates.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if model_args.classifier_dropout is not None:
        updates["classifier_dropout"] = model_args.classifier_dropout
    config = load_config(model_args, **updates)
    model = load_model(AutoModelForSequenceClassification, model_args, config)

    mixed = training_args.bf16 or training_args.fp16
    callbacks = [cadence]
    if schedule_args.uses_controller:  # the controller, built from the --metalr_* flags
        callbacks.append(MetaLRCallback(**schedule_args.callback_kwargs()))
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if mixed else None),
        compute_metrics=classification_metrics,
        callbacks=callbacks,
    )
    if not schedule_args.uses_controller:
        attach_baseline(trainer, schedule_args.lr_schedule)  # step: MultiStepLR; prodigy: its optimizer
    return train_evaluate_test(trainer, splits)


if __name__ == "__main__":
    main()
    end_distributed()
