"""``spoken-digits``: 1-3 spoken digit words per clip (espeak-ng voices), a tiny wav2vec2 with CTC.

Data: the committed fixture ``data/spoken_digits/`` (720 clips of 16 kHz 8-bit FLAC plus
``manifest.csv``; 480 train / 120 validation / 120 test), made by ``data/make_spoken_digits.py``
(espeak-ng is only needed to regenerate it). Validation and test clips come from voice /
speaking-rate combinations that never occur in training. Audio is decoded with soundfile (not
``datasets.Audio``), resampled with ``scipy.signal.resample_poly`` if a file is not at 16 kHz, and
normalized per clip by the ``Wav2Vec2FeatureExtractor``.

Model: ``Wav2Vec2ForCTC`` from a ``Wav2Vec2Config`` (``MODEL_CONFIG``: 4 conv layers with
group norm, total stride 320 = 50 frames/s; hidden 64, 2 layers, 2 heads; no dropout or
SpecAugment) over a character vocabulary: ``<pad>`` (id 0, the CTC blank), ``<unk>``, ``|`` (the
word delimiter) and the letters of the digit words. The processor (``Wav2Vec2CTCTokenizer`` +
``Wav2Vec2FeatureExtractor``) is built offline from a vocab json in a temporary directory.

Batches are zero-padded without an ``attention_mask`` (see ``CTCCollator``), as for the
group-norm wav2vec2-base models. Metric: word error rate of greedy CTC decoding (jiwer), plus CER.
"""

from __future__ import annotations

import csv
import functools
import json
import tempfile
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch

from ..media import load_audio
from .base import ArrayDataset, Task, TaskData, seeded

__all__ = [
    "SpokenDigitsTask",
    "CTCCollator",
    "DATA_DIR",
    "DIGIT_WORDS",
    "MODEL_CONFIG",
    "SAMPLE_RATE",
    "build_processor",
    "greedy_decode",
    "load_clip",
    "read_manifest",
    "vocabulary",
]

DATA_DIR = Path(__file__).resolve().parent / "data" / "spoken_digits"
SAMPLE_RATE = 16_000
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PAD, UNK, DELIMITER = "<pad>", "<unk>", "|"
SPLITS = ("train", "validation", "test")
MODEL_CONFIG = MappingProxyType(dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    conv_dim=(16, 32, 32, 32),
    conv_stride=(10, 4, 4, 2),  # 320 samples per frame: 50 frames/s
    conv_kernel=(20, 8, 8, 4),
    feat_extract_norm="group",
    conv_bias=True,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    do_stable_layer_norm=True,
    hidden_dropout=0.0,
    activation_dropout=0.0,
    attention_dropout=0.0,
    feat_proj_dropout=0.0,
    final_dropout=0.0,
    layerdrop=0.0,
    mask_time_prob=0.0,
    ctc_loss_reduction="mean",
    ctc_zero_infinity=True,
))


def vocabulary() -> dict[str, int]:
    """``<pad>`` first (id 0: the CTC blank, and what all-``-100`` padded logits argmax to)."""
    letters = sorted({c for word in DIGIT_WORDS for c in word})
    return {token: i for i, token in enumerate([PAD, UNK, DELIMITER, *letters])}


@functools.lru_cache(maxsize=1)
def build_processor():
    """A ``Wav2Vec2Processor`` built offline (no hub): tokenizer from a temporary vocab json."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    vocab = vocabulary()
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab))
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file),
            unk_token=UNK,
            pad_token=PAD,
            word_delimiter_token=DELIMITER,
            bos_token=None,
            eos_token=None,
        )
    if len(tokenizer) != len(vocab):
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, expected {len(vocab)}")
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=False
    )
    return Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def read_manifest(root: Path = DATA_DIR) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def load_clip(path: Path) -> np.ndarray:
    """Decode one clip to float32 mono at 16 kHz (``hf_metalr.media.load_audio``)."""
    return load_audio(path, SAMPLE_RATE)


@functools.lru_cache(maxsize=4)
def _spoken_digits_split(root: Path = DATA_DIR) -> TaskData:
    processor = build_processor()
    columns: dict[str, dict[str, list]] = {s: {"input_values": [], "labels": []} for s in SPLITS}
    for row in read_manifest(root):
        audio = load_clip(root / row["path"])
        features = processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE).input_values[0]
        labels = processor.tokenizer(row["text"]).input_ids
        columns[row["split"]]["input_values"].append(torch.tensor(np.asarray(features), dtype=torch.float32))
        columns[row["split"]]["labels"].append(torch.tensor(labels, dtype=torch.long))
    return TaskData(**{s: ArrayDataset(**columns[s]) for s in SPLITS})


class CTCCollator:
    """Pads ``input_values`` with 0 (silence) and ``labels`` with -100.

    No ``attention_mask`` on purpose: the model then sees the padding as trailing silence and CTC
    trains it to emit blanks there. With a mask, the frames past a clip's end are never trained,
    emit arbitrary characters, and greedy decoding in ``compute_metrics`` (which only gets the
    padded logits) would read them as words. (The first conv layer's group norm does see the
    padding, so a clip's logits depend a little on the longest clip of its batch, as with HF's
    wav2vec2-base.)
    """

    def __call__(self, features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        n = len(features)
        audio_len = max(len(f["input_values"]) for f in features)
        label_len = max(len(f["labels"]) for f in features)
        input_values = torch.zeros(n, audio_len)
        labels = torch.full((n, label_len), -100, dtype=torch.long)
        for i, f in enumerate(features):
            input_values[i, : len(f["input_values"])] = f["input_values"]
            labels[i, : len(f["labels"])] = f["labels"]
        return {"input_values": input_values, "labels": labels}


def greedy_decode(logits: np.ndarray) -> list[str]:
    """Greedy CTC decoding: argmax, merge repeats, drop blanks, ``|`` -> space.

    Rows that are entirely -100 (the Trainer's padding of logits across batches) argmax to id 0,
    the blank, so they decode to nothing.
    """
    ids = np.asarray(logits).argmax(axis=-1)
    return [text.strip() for text in build_processor().tokenizer.batch_decode(ids)]


def decode_labels(label_ids: np.ndarray) -> list[str]:
    tokenizer = build_processor().tokenizer
    texts = []
    for row in np.asarray(label_ids):
        texts.append(tokenizer.decode([int(i) for i in row if i >= 0], group_tokens=False).strip())
    return texts


def transcription_metrics(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    import jiwer

    return {"wer": float(jiwer.wer(references, hypotheses)), "cer": float(jiwer.cer(references, hypotheses))}


class SpokenDigitsTask(Task):
    name = "spoken-digits"
    description = "1-3 spoken digit words per clip (espeak-ng, 16 kHz), tiny Wav2Vec2ForCTC from Wav2Vec2Config, greedy-CTC WER"
    metric = "wer"
    greater_is_better = False
    threshold = 0.5
    test_metrics = ("wer",)
    learning_rate = 5e-3
    epochs = 12
    batch_size = 8
    evals_per_epoch = 1

    def __init__(self, data_dir: Path | str = DATA_DIR):
        """``data_dir`` holds ``manifest.csv`` and the clips; the committed fixture by default."""
        self.data_dir = Path(data_dir)

    def load(self) -> TaskData:
        return _spoken_digits_split(self.data_dir)

    def model(self, seed: int) -> torch.nn.Module:
        from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

        vocab = vocabulary()
        config = Wav2Vec2Config(vocab_size=len(vocab), pad_token_id=vocab[PAD], **dict(MODEL_CONFIG))
        return seeded(seed, lambda: Wav2Vec2ForCTC(config))

    def data_collator(self):
        return CTCCollator()

    def compute_metrics(self, eval_pred) -> dict[str, float]:
        logits, label_ids = eval_pred
        return transcription_metrics(greedy_decode(logits), decode_labels(label_ids))
