r"""``char-lm``: a character-level language model, a tiny GPT-2, on English technical prose.

Data: ``data/python_docs.txt`` (committed; read, never regenerated), the first 120,000 characters
of the Python 3.11.7 language reference topics that CPython ships for ``help()``, made once with::

    text = "\n".join(topics[k] for k in sorted(topics))  # from pydoc_data.topics import topics
    text = "".join(c if 32 <= ord(c) < 127 or c == "\n" else "?" for c in text)[:120000]

Copyright Python Software Foundation, under the PSF License Agreement (``data/python_docs.NOTICE``).
The text is cut into three contiguous parts (train 80%, validation 10%, test 10%) and each part
into ``CONTEXT``-character rows, so no character is in two splits. The vocabulary is the text's own
characters, sorted.

Metric: bits per character on the next-character prediction (the model's cross-entropy over
``ln 2``), lower is better; also the next-character accuracy. The model is ``GPT2LMHeadModel``
from a ``GPT2Config`` (2 layers, 64 wide), trained with AdamW as the harness sets it up.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch

from .base import ArrayDataset, Task, TaskData, seeded

__all__ = ["CharLMTask", "CORPUS", "CONTEXT", "vocabulary"]

CORPUS = Path(__file__).parent / "data" / "python_docs.txt"
CONTEXT = 64  # characters per row
SPLITS = (0.8, 0.1)  # train, validation; the rest is test


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    return tuple(sorted(set(CORPUS.read_text(encoding="ascii"))))


@functools.lru_cache(maxsize=1)
def _char_lm_split() -> TaskData:
    text = CORPUS.read_text(encoding="ascii")
    index = {c: i for i, c in enumerate(vocabulary())}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    n_train, n_validation = (int(len(ids) * share) for share in SPLITS)
    parts = (ids[:n_train], ids[n_train : n_train + n_validation], ids[n_train + n_validation :])

    def rows(part: torch.Tensor) -> ArrayDataset:
        usable = len(part) // CONTEXT * CONTEXT
        chunks = part[:usable].view(-1, CONTEXT)
        return ArrayDataset(input_ids=chunks, labels=chunks.clone())  # GPT-2 shifts the labels itself

    return TaskData(*(rows(part) for part in parts))


class CharLMTask(Task):
    name = "char-lm"
    description = "character-level LM on the Python docs' English prose (120k chars), GPT-2 (2 layers, 64 wide) from GPT2Config"
    metric = "bits_per_char"
    greater_is_better = False
    threshold = 2.8
    test_metrics = ("bits_per_char", "accuracy")
    learning_rate = 3e-3
    epochs = 10
    batch_size = 32
    evals_per_epoch = 2

    def load(self) -> TaskData:
        return _char_lm_split()

    def model(self, seed: int) -> torch.nn.Module:
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=len(vocabulary()), n_positions=CONTEXT, n_embd=64, n_layer=2, n_head=4,
                            bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            use_cache=False)
        return seeded(seed, lambda: GPT2LMHeadModel(config))

    def compute_metrics(self, eval_pred) -> dict[str, float]:
        """Bits per character and accuracy of each next character (position t predicts t + 1)."""
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        logits = torch.as_tensor(np.asarray(logits))[:, :-1].reshape(-1, np.shape(logits)[-1]).float()
        targets = torch.as_tensor(np.asarray(labels))[:, 1:].reshape(-1)
        nats = torch.nn.functional.cross_entropy(logits, targets).item()
        accuracy = (logits.argmax(-1) == targets).float().mean().item()
        return {"bits_per_char": nats / math.log(2), "accuracy": accuracy}
