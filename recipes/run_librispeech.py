#!/usr/bin/env python
"""Wav2Vec2 CTC on LibriSpeech with the Trainer, the LR driven by MetaLRCallback or a baseline schedule.

Model: ``Wav2Vec2ForCTC`` from ``facebook/wav2vec2-base`` (or ``--model_type wav2vec2`` from
scratch), with a character vocabulary built from the training transcripts (``|`` between words,
``[UNK]``, ``[PAD]`` as the CTC blank) unless ``--tokenizer_name`` gives one. The convolutional
feature encoder is frozen by default (``--freeze_feature_encoder``). Batches are grouped by length
(``--train_sampling_strategy group_by_length``, lengths precomputed from the file headers).
Metric: WER with jiwer (plus CER), greedy CTC decoding, no language model.

Data: ``openslr/librispeech_asr`` config ``clean``: ``train.100`` (train-clean-100) for training,
``validation`` (dev-clean) for the controller's decisions (``--max_eval_samples`` of it during
training, 500 by default) and ``test`` (test-clean) at the end. Audio is decoded with soundfile and
resampled to 16 kHz with ``scipy.signal.resample_poly``: no torchcodec, no FFmpeg. Local files
keep the hub schema (``text``) with the audio as a file path in ``audio`` (or, if there is no
``audio`` column, ``file``); relative paths are relative to the data file.

    python recipes/run_librispeech.py --output_dir runs/librispeech --bf16
    accelerate launch --multi_gpu --num_processes 4 recipes/run_librispeech.py --output_dir runs/librispeech --bf16
    python recipes/run_librispeech.py recipes/configs/librispeech.json    # a preset: lr 1e-3, 50 epochs, a decision per epoch
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import DatasetDict, concatenate_datasets
from transformers import (
    AutoFeatureExtractor,
    AutoModelForCTC,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Processor,
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
    require_examples,
    setup_logging,
    train_evaluate_test,
)
from hf_metalr import MetaLRCallback
from hf_metalr.baselines import attach_baseline
from hf_metalr.media import SAMPLING_RATE, audio_num_samples, load_audio

logger = logging.getLogger("recipes.librispeech")
AUDIO_COLUMNS = ("audio", "file")


@dataclass
class ModelArguments(BaseModelArguments):
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "A CTC tokenizer (hub id or local dir); default: a character vocabulary built from the training text."}
    )
    feature_extractor_name: str | None = field(
        default=None,
        metadata={"help": "Feature extractor (hub id or local dir); default: --model_name_or_path's, or a standard 16 kHz one with --model_type."},
    )
    freeze_feature_encoder: bool = field(
        default=True, metadata={"help": "Freeze the convolutional feature encoder (--no_freeze_feature_encoder trains it)."}
    )


@dataclass
class DataArguments(BaseDataArguments):
    min_duration_in_seconds: float = field(default=0.0, metadata={"help": "Drop training clips shorter than this."})
    max_duration_in_seconds: float = field(default=20.0, metadata={"help": "Drop training clips longer than this."})


DEFAULTS = dict(
    model_name_or_path="facebook/wav2vec2-base",
    dataset_name="openslr/librispeech_asr",
    dataset_config_name="clean",
    train_split_name="train.100",
    validation_split_name="validation",
    test_split_name="test",
    validation_split_size=0.05,
    max_eval_samples=500,
    # the transformers CTC example's wav2vec2-base LibriSpeech setting
    learning_rate=1e-4,
    weight_decay=0.005,
    per_device_train_batch_size=32,
    per_device_eval_batch_size=16,
    num_train_epochs=30.0,
    metric_for_best_model="wer",
    greater_is_better=False,
    train_sampling_strategy="group_by_length",
)


def get_parser():
    return build_parser(__doc__, (ModelArguments, DataArguments, ScheduleArguments, TrainingArguments), **DEFAULTS)


def normalize_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def build_char_vocab(texts) -> dict[str, int]:
    """Every character of ``texts``, space as ``|``, then ``[UNK]`` and ``[PAD]`` (the CTC blank)."""
    chars = sorted({c for text in texts for c in text} - {" "})
    vocab = {"[PAD]": 0, "[UNK]": 1, "|": 2}
    for char in chars:
        vocab.setdefault(char, len(vocab))
    return vocab


def build_tokenizer(model_args, train_texts) -> Wav2Vec2CTCTokenizer:
    if model_args.tokenizer_name:
        with from_the_hub("tokenizer", model_args.tokenizer_name, "a local folder as --tokenizer_name, or leave it "
                          "out to build a character vocabulary from the training text"):
            return AutoTokenizer.from_pretrained(model_args.tokenizer_name, cache_dir=model_args.cache_dir)
    vocab = build_char_vocab(train_texts)
    with tempfile.TemporaryDirectory() as tmp:  # every rank builds the same vocab; nothing shared on disk
        path = Path(tmp) / "vocab.json"
        path.write_text(json.dumps(vocab))
        tokenizer = Wav2Vec2CTCTokenizer(str(path), unk_token="[UNK]", pad_token="[PAD]", word_delimiter_token="|")
    logger.info("character vocabulary of %d symbols built from the training text", len(vocab))
    return tokenizer


def build_feature_extractor(model_args, config_norm: str | None):
    name = model_args.feature_extractor_name or (None if model_args.model_type else model_args.model_name_or_path)
    if name:
        with from_the_hub("feature extractor", name, "a local folder as --feature_extractor_name or "
                          "--model_name_or_path, or --model_type to build one"):
            return AutoFeatureExtractor.from_pretrained(name, cache_dir=model_args.cache_dir)
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLING_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=config_norm == "layer",  # as the released checkpoints: masks only with layer norm
    )


@dataclass
class SpeechCollator:
    """Decodes and resamples the audio of a batch, pads it, and encodes the transcripts as CTC labels."""

    processor: Wav2Vec2Processor

    def __call__(self, examples: list[dict]) -> dict:
        audio = [load_audio(e["audio"]) for e in examples]
        batch = self.processor.feature_extractor(audio, sampling_rate=SAMPLING_RATE, padding=True, return_tensors="pt")
        labels = self.processor.tokenizer([e["text"] for e in examples], padding=True, return_tensors="pt")
        batch["labels"] = labels["input_ids"].masked_fill(labels["attention_mask"].ne(1), -100)
        return batch


def wer_metrics(tokenizer):
    import jiwer

    def compute(eval_pred) -> dict:
        predictions = np.where(eval_pred.predictions == -100, tokenizer.pad_token_id, eval_pred.predictions)
        label_ids = np.where(eval_pred.label_ids == -100, tokenizer.pad_token_id, eval_pred.label_ids)
        hypotheses = tokenizer.batch_decode(predictions)
        references = tokenizer.batch_decode(label_ids, group_tokens=False)
        pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
        refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
        return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps))}

    return compute


def with_lengths(dataset, length_column: str, data_args):
    """Columns ``audio`` (path or bytes, undecoded), normalized ``text`` and the length in 16 kHz samples.

    The length comes from the file header (no decoding). Only the small columns are written anew;
    the audio column is joined back as it is.
    """
    audio_column = next(c for c in AUDIO_COLUMNS if c in dataset.column_names)

    def measure(batch):
        return {
            "text": [normalize_text(t) for t in batch["text"]],
            length_column: [audio_num_samples(a) for a in batch[audio_column]],
        }

    meta = dataset.map(
        measure, batched=True, remove_columns=dataset.column_names, num_proc=data_args.preprocessing_num_workers, desc="reading audio headers"
    )
    audio = dataset.select_columns([audio_column])
    if audio_column != "audio":
        audio = audio.rename_column(audio_column, "audio")
    return concatenate_datasets([audio, meta], axis=1)


def argmax_logits(logits, labels):
    return logits.argmax(dim=-1)


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, schedule_args, training_args = parse_args(get_parser(), argv)
    setup_logging(training_args)
    configure_schedule(schedule_args, training_args)  # a baseline sets --lr_scheduler_type; metalr checks its flags
    cadence = configure_evaluation(training_args, schedule_args.num_evaluations)
    # the collator reads the raw audio/text columns, which the Trainer would otherwise drop
    training_args.remove_unused_columns = False
    set_seed(training_args.seed)

    with training_args.main_process_first(desc="loading LibriSpeech and measuring the clips"):
        raw = load_splits(data_args, training_args, columns=("text", AUDIO_COLUMNS), path_columns=AUDIO_COLUMNS)
        splits = DatasetDict({role: with_lengths(ds, training_args.length_column_name, data_args) for role, ds in raw.items()})
        low, high = data_args.min_duration_in_seconds * SAMPLING_RATE, data_args.max_duration_in_seconds * SAMPLING_RATE
        splits["train"] = splits["train"].filter(
            lambda n: low <= n <= high, input_columns=[training_args.length_column_name], desc="duration filter"
        )
        require_examples(splits["train"], "train", f"--min_duration_in_seconds {data_args.min_duration_in_seconds:g} and "
                         f"--max_duration_in_seconds {data_args.max_duration_in_seconds:g} (every clip was outside them)")

    tokenizer = build_tokenizer(model_args, splits["train"]["text"])
    config = load_config(
        model_args,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        ctc_loss_reduction="mean",
        ctc_zero_infinity=True,
    )
    processor = Wav2Vec2Processor(feature_extractor=build_feature_extractor(model_args, config.feat_extract_norm), tokenizer=tokenizer)
    model = load_model(AutoModelForCTC, model_args, config)
    if model_args.freeze_feature_encoder:
        model.freeze_feature_encoder()

    callbacks = [cadence]
    if schedule_args.uses_controller:  # the controller, built from the --metalr_* flags
        callbacks.append(MetaLRCallback(**schedule_args.callback_kwargs()))
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=processor,
        data_collator=SpeechCollator(processor),
        compute_metrics=wer_metrics(tokenizer),
        preprocess_logits_for_metrics=argmax_logits,
        callbacks=callbacks,
    )
    if not schedule_args.uses_controller:
        attach_baseline(trainer, schedule_args.lr_schedule)  # step: MultiStepLR; prodigy: its optimizer
    return train_evaluate_test(trainer, splits)


if __name__ == "__main__":
    main()
    end_distributed()
