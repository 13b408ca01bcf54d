"""The distribution of cheap training problems that the controller is meta-trained on.

A *problem* is a plain dict (picklable, JSON-able): family, data and init seeds, architecture
sizes, optimizer, batch size, epoch budget, and the initial LR. ``sample_problem`` draws one;
``build_problem`` turns it into tensors, a model and an optimizer for the plain-loop episode.

Training families: MLP on Gaussian blobs, MLP on spirals, MLP regression, small CNN / ResNet on
generated pattern images, tiny post-LN transformer on token sequences, a small-init MLP on XOR
labels whose loss sits on a plateau at ln 2 until the LR is large enough to leave it (a metric that
plateaus, like a pretrained classifier's head at a too-low LR), and a tiny pre-LN causal
transformer language model on text from a random Markov chain, whose loss stays smooth even at a
too-high LR (it levels off above the floor rather than jumping, so the loss's texture does not
tell the LR is too high). Held-out families, never used in
meta-training: a GRU on sequences (an unseen architecture) and an MLP on scikit-learn's real
digits (an unseen dataset). The initial LR is the family's good LR (``GOOD_LR``, calibrated by
``benchmarks/calibrate_families.py``) times a factor spanning 10**±1.7 (2500x): a third of the
problems start well chosen, a third too low and a third too high (``initial_lr_factor``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["TRAIN_FAMILIES", "HELD_OUT_FAMILIES", "Problem", "build_problem", "sample_problem", "problem_at_lr_factor"]

TRAIN_FAMILIES = ("blobs_mlp", "spirals_mlp", "regression_mlp", "patterns_cnn", "sequence_transformer", "xor_mlp", "char_lm")
HELD_OUT_FAMILIES = ("sequence_gru", "digits_mlp")
LR_LOG10_SPAN = 1.7
GOOD_BAND = 0.3  # |log10(lr / good lr)| below this counts as a well-chosen LR
# (family, "adam" | "sgd") -> good constant LR; Adam and AdamW share an entry. The training
# families' values are the best of a x0.03-x30 grid of constant LRs on 4 problems each (the middle
# of a tie), measured by benchmarks/calibrate_families.py (benchmarks/results/calibrate_families.txt).
GOOD_LR = {
    ("blobs_mlp", "adam"): 1e-2, ("blobs_mlp", "sgd"): 5e-2,
    ("spirals_mlp", "adam"): 1e-2, ("spirals_mlp", "sgd"): 1e-1,
    ("regression_mlp", "adam"): 6e-3, ("regression_mlp", "sgd"): 5e-2,
    ("patterns_cnn", "adam"): 1e-2, ("patterns_cnn", "sgd"): 5e-2,
    ("sequence_transformer", "adam"): 2e-3, ("sequence_transformer", "sgd"): 4e-2,
    ("xor_mlp", "adam"): 1e-2, ("xor_mlp", "sgd"): 1e-1,
    ("char_lm", "adam"): 3e-3, ("char_lm", "sgd"): 3e-1,
    ("sequence_gru", "adam"): 1e-3, ("sequence_gru", "sgd"): 2.5e-2,
    ("digits_mlp", "adam"): 2e-3, ("digits_mlp", "sgd"): 5e-2,
}


def good_lr(family: str, optimizer: str) -> float:
    return GOOD_LR[(family, "sgd" if optimizer == "sgd" else "adam")]


def initial_lr_factor(rng: np.random.Generator) -> float:
    """The initial LR over the good LR: a third each well chosen (within 10**±0.3), too low, too
    high (up to 10**±1.7), like the x1 / x0.1 / x10 evaluation sweep."""
    band = int(rng.integers(3))
    if band == 0:
        return float(10 ** rng.uniform(-GOOD_BAND, GOOD_BAND))
    sign = -1.0 if band == 1 else 1.0
    return float(10 ** (sign * rng.uniform(GOOD_BAND, LR_LOG10_SPAN)))


@dataclass
class Problem:
    """Everything an episode needs, built from a problem dict."""

    model: nn.Module
    loss: str  # "ce" or "mse"
    train: tuple[torch.Tensor, torch.Tensor]
    validation: tuple[torch.Tensor, torch.Tensor]
    optimizer: torch.optim.Optimizer
    batch_size: int
    epochs: int
    evals_per_epoch: int


def sample_problem(rng: np.random.Generator, family: str) -> dict:
    optimizer = str(rng.choice(["adam", "adamw", "sgd"]))
    good = good_lr(family, optimizer)
    spec = {
        "family": family,
        "data_seed": int(rng.integers(2**31)),
        "init_seed": int(rng.integers(2**31)),
        "width": int(rng.choice([32, 64, 128])),
        "depth": int(rng.integers(1, 4)),
        "optimizer": optimizer,
        "batch_size": int(rng.choice([16, 32, 64])),
        "epochs": int(rng.integers(4, 11)),
        "evals_per_epoch": int(rng.choice([2, 3])),
        "good_lr": good,
        "lr": float(good * initial_lr_factor(rng)),
    }
    if family == "xor_mlp":  # drawn last: a problem of another family is drawn exactly as before this family existed
        spec["init_scale"] = float(rng.uniform(0.1, 0.3))
    return spec


def problem_at_lr_factor(seed: int, family: str, lr_factor: float) -> dict:
    """The problem of ``family`` drawn from ``seed``, run at ``lr_factor`` times the family's good
    LR (the benchmarks' bands: x0.1, x1, x10)."""
    spec = sample_problem(np.random.default_rng(seed), family)
    return dict(spec, lr=spec["good_lr"] * lr_factor)


# -- data -----------------------------------------------------------------------------------------


def _split(x, y, n_val):
    return (x[n_val:], y[n_val:]), (x[:n_val], y[:n_val])


def _noisy_labels(rng, y, k):
    """Relabel 2-15% of the examples at random, so the validation loss has a floor as in real
    data (a perfectly learnable task rewards ever larger LRs as its loss heads to 0)."""
    flip = rng.random(len(y)) < rng.uniform(0.02, 0.15)
    return np.where(flip, rng.integers(0, k, len(y)), y)


def _blobs(rng, n=900):
    d, k = int(rng.integers(8, 33)), int(rng.integers(3, 11))
    centers = rng.normal(0, 1, (k, d)) * rng.uniform(1.5, 3.0) / math.sqrt(d)  # overlapping classes
    y = rng.integers(0, k, n)
    x = centers[y] + rng.normal(0, 1, (n, d))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(_noisy_labels(rng, y, k)), k


def _spirals(rng, n=900):
    arms = int(rng.integers(2, 4))
    y = rng.integers(0, arms, n)
    r = rng.uniform(0.1, 1.0, n)
    theta = r * rng.uniform(2.5, 4.0) * np.pi + y * 2 * np.pi / arms
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], 1) + rng.normal(0, 0.04, (n, 2))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(_noisy_labels(rng, y, arms)), arms


def _regression(rng, n=900):
    d = int(rng.integers(4, 17))
    w, v = rng.normal(0, 1, (d, 16)), rng.normal(0, 1, 16)
    x = rng.normal(0, 1, (n, d))
    y = np.sin(x @ w / math.sqrt(d)) @ v / 4 + rng.normal(0, rng.uniform(0.1, 0.3), n)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).unsqueeze(1), 1


def _patterns(rng, n=900, size=12):
    k = int(rng.integers(3, 8))
    templates = rng.normal(0, 1, (k, size, size))
    y = rng.integers(0, k, n)
    shifts = rng.integers(-2, 3, (n, 2))
    x = np.stack([np.roll(templates[c], tuple(s), axis=(0, 1)) for c, s in zip(y, shifts)])
    x = x + rng.normal(0, rng.uniform(0.8, 1.5), x.shape)
    return torch.tensor(x, dtype=torch.float32).unsqueeze(1), torch.tensor(_noisy_labels(rng, y, k)), k


def _sequences(rng, n=900, length=14, vocab=10):
    x = rng.integers(0, vocab, (n, length))
    y = ((x == 1).sum(1) > (x == 2).sum(1)).astype(np.int64)  # needs counting, not position
    return torch.tensor(x), torch.tensor(_noisy_labels(rng, y, 2)), 2


def _xor(rng, n=900):
    d = int(rng.integers(4, 17))
    directions = np.linalg.qr(rng.normal(0, 1, (d, 2)))[0].T
    x = rng.normal(0, 1, (n, d))
    y = ((x @ directions[0] > 0) ^ (x @ directions[1] > 0)).astype(np.int64)  # no linear signal: a saddle at init
    return torch.tensor(x, dtype=torch.float32), torch.tensor(_noisy_labels(rng, y, 2)), 2


def _markov_text(rng, n=900, length=17):
    """Sequences from a random order-2 Markov chain with peaked transitions (the next token depends
    on the two before it, so the model has to attend); x predicts y = x shifted by one."""
    vocab = int(rng.integers(8, 17))
    transitions = rng.dirichlet(np.full(vocab, rng.uniform(0.1, 0.5)), size=vocab * vocab)
    seqs = np.empty((n, length), dtype=np.int64)
    seqs[:, :2] = rng.integers(0, vocab, (n, 2))
    cumulative = transitions.cumsum(1)
    for t in range(2, length):
        u = rng.random(n)[:, None]
        seqs[:, t] = np.minimum((u > cumulative[seqs[:, t - 2] * vocab + seqs[:, t - 1]]).sum(1), vocab - 1)
    return torch.tensor(seqs[:, :-1]), torch.tensor(seqs[:, 1:]), vocab


def _digits(rng, n=None):
    from sklearn.datasets import load_digits

    d = load_digits()
    order = rng.permutation(len(d.target))
    x = torch.tensor(d.data[order] / 16.0, dtype=torch.float32)
    return x, torch.tensor(d.target[order]), 10


# -- models ---------------------------------------------------------------------------------------


def _mlp(d_in, width, depth, d_out):
    layers, d = [], d_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, d_out))


class _SmallResNet(nn.Module):
    def __init__(self, channels, k, residual):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.residual = residual
        self.head = nn.Linear(channels, k)

    def forward(self, x):
        h = self.stem(x)
        h = h + self.block(h) if self.residual else self.block(h)
        return self.head(h.mean((2, 3)))


class _TinyTransformer(nn.Module):
    def __init__(self, vocab, width, depth, k, length=14):
        super().__init__()
        d = min(width, 64)
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, length, d))
        layer = nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=2 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=min(depth, 2), enable_nested_tensor=False)
        self.head = nn.Linear(d, k)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x) + self.pos).mean(1))


class _CharLM(nn.Module):
    """A GPT-2-like causal transformer (pre-LN); returns logits as (batch, vocab, length)."""

    def __init__(self, vocab, width, depth, length=16):
        super().__init__()
        d = min(width, 64)
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, length, d))
        layer = nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_layers=min(depth, 2), enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length), persistent=False)

    def forward(self, x):
        n = x.shape[1]
        h = self.blocks(self.embed(x) + self.pos[:, :n], mask=self.mask[:n, :n], is_causal=True)
        return self.head(self.norm(h)).transpose(1, 2)


class _GRU(nn.Module):
    def __init__(self, vocab, width, k):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.gru = nn.GRU(16, min(width, 64), batch_first=True)
        self.head = nn.Linear(min(width, 64), k)

    def forward(self, x):
        return self.head(self.gru(self.embed(x))[0][:, -1])


def _small_init_mlp(d_in, width, depth, d_out, init_scale):
    model = _mlp(d_in, width, depth, d_out)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(init_scale)
    return model


def _optimizer(name, params, lr):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    return torch.optim.Adam(params, lr=lr)


def build_problem(spec: dict) -> Problem:
    rng = np.random.default_rng(spec["data_seed"])
    family, width, depth = spec["family"], spec["width"], spec["depth"]
    loss = "ce"
    if family == "blobs_mlp":
        x, y, k = _blobs(rng)
        make = lambda: _mlp(x.shape[1], width, depth, k)  # noqa: E731
    elif family == "spirals_mlp":
        x, y, k = _spirals(rng)
        make = lambda: _mlp(2, width, max(depth, 2), k)  # noqa: E731
    elif family == "regression_mlp":
        x, y, k = _regression(rng)
        loss = "mse"
        make = lambda: _mlp(x.shape[1], width, depth, 1)  # noqa: E731
    elif family == "patterns_cnn":
        x, y, k = _patterns(rng)
        make = lambda: _SmallResNet(8 if width < 64 else 16, k, residual=depth > 1)  # noqa: E731
    elif family == "sequence_transformer":
        x, y, k = _sequences(rng)
        make = lambda: _TinyTransformer(10, width, depth, k)  # noqa: E731
    elif family == "xor_mlp":
        x, y, k = _xor(rng)
        make = lambda: _small_init_mlp(x.shape[1], width, max(depth, 2), k, spec["init_scale"])  # noqa: E731
    elif family == "char_lm":
        x, y, k = _markov_text(rng)
        make = lambda: _CharLM(k, width, depth)  # noqa: E731
    elif family == "sequence_gru":
        x, y, k = _sequences(rng)
        make = lambda: _GRU(10, width, k)  # noqa: E731
    elif family == "digits_mlp":
        x, y, k = _digits(rng)
        make = lambda: _mlp(64, width, depth, k)  # noqa: E731
    else:
        raise ValueError(f"unknown problem family {family!r}; known: {TRAIN_FAMILIES + HELD_OUT_FAMILIES}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["init_seed"])
        model = make()
    train, validation = _split(x, y, n_val=len(y) // 5)
    return Problem(
        model=model,
        loss=loss,
        train=train,
        validation=validation,
        optimizer=_optimizer(spec["optimizer"], model.parameters(), spec["lr"]),
        batch_size=spec["batch_size"],
        epochs=spec["epochs"],
        evals_per_epoch=spec["evals_per_epoch"],
    )
