"""The embedded tasks: fixed splits, deterministic models, metrics, fixtures, and one real training each.

Everything here runs offline on the CPU; the spoken-digits audio is the committed fixture, so
espeak-ng is not needed.
"""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest
import torch

from hf_metalr.tasks import TASKS, get_task

TASK_NAMES = ("digits", "sentiment", "spoken-digits", "char-lm", "regression", "vit-digits")
INPUT_KEY = {"digits": "pixel_values", "sentiment": "input_ids", "spoken-digits": "input_values", "char-lm": "input_ids", "regression": "features",
             "vit-digits": "pixel_values"}
EXPECTED_SIZES = {"digits": (1000, 300, 497), "sentiment": (2000, 400, 600), "char-lm": (1500, 187, 187),
                  "regression": (2000, 500, 500), "vit-digits": (1000, 300, 497)}


@pytest.fixture(scope="module", params=TASK_NAMES)
def task(request):
    return get_task(request.param)


def _fingerprints(dataset, key: str) -> list[str]:
    return [hashlib.sha1(dataset[i][key].numpy().tobytes()).hexdigest() for i in range(len(dataset))]


def test_registry_lists_the_tasks():
    assert set(TASK_NAMES) <= set(TASKS)
    for name in TASK_NAMES:
        assert get_task(name).name == name


def test_task_contract(task):
    assert task.epochs > 0 and task.batch_size > 0 and task.evals_per_epoch > 0 and task.learning_rate > 0
    assert task.reached(task.threshold)


def test_split_sizes_and_disjointness(task):
    data = task.load()
    sizes = (len(data.train), len(data.validation), len(data.test))
    if task.name in EXPECTED_SIZES:
        assert sizes == EXPECTED_SIZES[task.name]
    else:
        from hf_metalr.tasks.spoken_digits import read_manifest

        rows = read_manifest()
        assert sizes == tuple(sum(r["split"] == s for r in rows) for s in ("train", "validation", "test"))
        assert min(sizes) >= 100
    prints = {
        split: _fingerprints(getattr(data, split), INPUT_KEY[task.name]) for split in ("train", "validation", "test")
    }
    for split, fps in prints.items():
        assert len(set(fps)) == len(fps), f"duplicate example inside {split}"
    assert not set(prints["train"]) & set(prints["validation"])
    assert not set(prints["train"]) & set(prints["test"])
    assert not set(prints["validation"]) & set(prints["test"])


def test_model_is_deterministic_in_seed_and_leaves_global_rng_alone(task):
    torch.manual_seed(12345)
    state = torch.get_rng_state()
    first, again, other = task.model(0), task.model(0), task.model(1)
    assert torch.equal(torch.get_rng_state(), state)
    a, b, c = first.state_dict(), again.state_dict(), other.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


# ---------------------------------------------------------------------------------------------
# metrics on hand-made predictions


def test_digits_metrics_known_values():
    task = get_task("digits")
    labels = np.array([0, 1, 2, 3])
    logits = np.eye(10)[[0, 1, 2, 0]]  # the last one is wrong
    metrics = task.compute_metrics((logits, labels))
    assert {task.metric, *task.test_metrics} <= set(metrics)
    assert metrics["accuracy"] == pytest.approx(0.75)
    # F1 per class: 0 -> 2/3 (p 1/2, r 1), 1 -> 1, 2 -> 1, 3 -> 0
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1 + 1 + 0) / 4)


def test_sentiment_metrics_known_values():
    task = get_task("sentiment")
    labels = np.array([1, 0, 1, 1])
    logits = np.eye(2)[[1, 0, 0, 1]]
    metrics = task.compute_metrics((logits, labels))
    assert {task.metric, *task.test_metrics} <= set(metrics)
    assert metrics["accuracy"] == pytest.approx(0.75)
    # class 1: p 1, r 2/3 -> f 0.8; class 0: p 1/2, r 1 -> f 2/3
    assert metrics["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_spoken_digits_metrics_known_values():
    from hf_metalr.tasks.spoken_digits import build_processor, vocabulary

    task = get_task("spoken-digits")
    vocab = vocabulary()
    tokenizer = build_processor().tokenizer

    def frames(tokens: list[str], length: int) -> np.ndarray:
        out = np.full((length, len(vocab)), -100.0)  # the Trainer pads logits across batches with -100
        for t, token in enumerate(tokens):
            out[t] = 0.0
            out[t, vocab[token]] = 5.0
        return out

    blank = "<pad>"
    # "three seven": repeats merge, a blank separates the double e, "|" is the space
    first = [blank, "t", "h", "h", "r", "e", blank, "e", "e", "|", "|", "s", "e", "v", "v", "e", "n", blank]
    second = ["w", "o", "o", blank, "n", "e", "e"]  # decodes to "wone", one wrong word of 1
    logits = np.stack([frames(first, 20), frames(second, 20)])
    refs = ["three seven", "one"]
    label_ids = np.full((2, 12), -100)
    for i, text in enumerate(refs):
        ids = tokenizer(text).input_ids
        label_ids[i, : len(ids)] = ids
    metrics = task.compute_metrics((logits, label_ids))
    assert {task.metric, *task.test_metrics} <= set(metrics)
    assert metrics["wer"] == pytest.approx(1 / 3)  # 1 substitution in 3 reference words
    assert metrics["cer"] == pytest.approx(1 / 14)  # 1 insertion ("w") in 14 reference characters


# ---------------------------------------------------------------------------------------------
# sentiment specifics


def test_char_lm_metrics_known_values():
    from transformers import EvalPrediction

    from hf_metalr.tasks.char_lm import vocabulary

    task = get_task("char-lm")
    vocabulary_size = len(vocabulary())
    labels = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    sure = np.full(labels.shape + (vocabulary_size,), -30.0, dtype=np.float32)
    for row, col in np.ndindex(labels.shape):
        if col + 1 < labels.shape[1]:
            sure[row, col, labels[row, col + 1]] = 30.0  # position t predicts the character at t + 1
    perfect = task.compute_metrics(EvalPrediction(predictions=sure, label_ids=labels))
    assert perfect["accuracy"] == 1.0 and perfect["bits_per_char"] < 1e-6
    uniform = task.compute_metrics(EvalPrediction(predictions=np.zeros_like(sure), label_ids=labels))
    assert uniform["bits_per_char"] == pytest.approx(np.log2(vocabulary_size), rel=1e-5)


def test_regression_metrics_known_values():
    from transformers import EvalPrediction

    task = get_task("regression")
    labels = np.array([1.0, -1.0, 2.0, 0.0])
    exact = task.compute_metrics(EvalPrediction(predictions=labels.copy(), label_ids=labels))
    assert exact == {"r2": 1.0, "mse": 0.0}
    mean_only = task.compute_metrics(EvalPrediction(predictions=np.full(4, labels.mean()), label_ids=labels))
    assert mean_only["r2"] == pytest.approx(0.0) and mean_only["mse"] == pytest.approx(np.var(labels))


def test_regression_data_is_pinned():
    # make_friedman1 draws from numpy's legacy RandomState, whose stream is fixed: a change here is a change of data
    data = get_task("regression").load()
    assert data.train[0]["features"].tolist() == pytest.approx(
        [0.4262, 0.7029, 0.8486, 0.0044, 0.0841, 0.0073, 0.5039, 0.481, 0.8757, 0.8715], abs=1e-4)
    assert data.train[0]["labels"].item() == pytest.approx(-0.2854, abs=1e-4)
    assert data.test[len(data.test) - 1]["labels"].item() == pytest.approx(0.5521, abs=1e-4)
    labels = data.train.columns["labels"]
    assert abs(float(labels.mean())) < 1e-5 and float(labels.std()) == pytest.approx(1.0, abs=1e-3)


def test_regression_model_returns_the_trainers_loss():
    model = get_task("regression").model(0)
    batch = get_task("regression").load().train[:4]
    out = model(**batch)
    assert out["logits"].shape == (4,)
    assert out["loss"].item() == pytest.approx(torch.mean((out["logits"] - batch["labels"]) ** 2).item())
    assert "loss" not in model(batch["features"])


def test_char_lm_rows_are_the_corpus_in_order():
    from hf_metalr.tasks.char_lm import CONTEXT, CORPUS, vocabulary

    data = get_task("char-lm").load()
    chars = vocabulary()
    first = "".join(chars[i] for i in data.train[0]["input_ids"].tolist())
    assert first == CORPUS.read_text(encoding="ascii")[:CONTEXT]
    assert torch.equal(data.train[0]["labels"], data.train[0]["input_ids"])


def test_sentiment_tokenizer_vocabulary():
    from hf_metalr.tasks.sentiment import build_tokenizer, vocabulary

    tokenizer, vocab = build_tokenizer(), vocabulary()
    assert len(tokenizer) == len(vocab) > 80  # BertTokenizerFast(vocab_file=...) would give 5
    ids = tokenizer("i would not say the plot was good").input_ids
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.convert_ids_to_tokens(ids)[1:-1] == "i would not say the plot was good".split()


@pytest.mark.parametrize(
    "text, label",
    [
        ("the movie was good", 1),
        ("the movie was not bad at all", 1),
        ("i would not say the plot was good", 0),
        ("i do not think the film was not good", 1),  # double negation
        ("nobody thinks the old script was hardly clever on tuesday", 1),
        ("the plot was good but the acting was not great", 0),
        ("the acting was not great but the plot was good", 1),  # same words, other order
    ],
)
def test_sentiment_labelling_rule(text, label):
    from hf_metalr.tasks.sentiment import label_of

    assert label_of(text) == label


def test_sentiment_generated_labels_follow_the_rule():
    from hf_metalr.tasks.sentiment import _texts, label_of

    for split, (texts, labels) in _texts().items():
        assert [label_of(t) for t in texts] == labels, split
        assert 0.4 < np.mean(labels) < 0.6, split
    texts, _ = _texts()["train"]
    assert sum(" but " in t for t in texts) > 0.4 * len(texts)
    assert sum(len(set(t.split()) & {"not", "never", "hardly", "nobody"}) >= 2 for t in texts) > 100


def test_sentiment_generation_is_deterministic():
    from hf_metalr.tasks.sentiment import SPLIT_SEED, _texts, generate

    texts, labels = generate(3000, SPLIT_SEED)
    splits = _texts()
    assert texts == [t for split in ("train", "validation", "test") for t in splits[split][0]]
    assert labels == [l for split in ("train", "validation", "test") for l in splits[split][1]]
    assert generate(50, 1) == generate(50, 1) != generate(50, 2)


def test_sentiment_bag_of_words_baseline_stays_below_threshold():
    from hf_metalr.tasks.sentiment import bow_baseline

    task = get_task("sentiment")
    scores = bow_baseline()
    assert scores["validation"] < task.threshold - 0.25
    assert scores["test"] < task.threshold - 0.25


# ---------------------------------------------------------------------------------------------
# spoken-digits fixture


def test_spoken_digits_fixture():
    import soundfile as sf

    from hf_metalr.tasks.spoken_digits import DATA_DIR, DIGIT_WORDS, SAMPLE_RATE, load_clip, read_manifest

    rows = read_manifest()
    assert len(rows) >= 300
    total = (DATA_DIR / "manifest.csv").stat().st_size
    for row in rows:
        path = DATA_DIR / row["path"]
        assert path.is_file(), path
        total += path.stat().st_size
        assert row["split"] in ("train", "validation", "test")
        assert 1 <= len(row["text"].split()) <= 3 and set(row["text"].split()) <= set(DIGIT_WORDS)
    assert total < 5_000_000
    info = sf.info(DATA_DIR / rows[0]["path"])
    assert (info.samplerate, info.channels, info.format) == (SAMPLE_RATE, 1, "FLAC")
    audio = load_clip(DATA_DIR / rows[0]["path"])
    assert audio.dtype == np.float32 and audio.ndim == 1 and 0.2 < len(audio) / SAMPLE_RATE < 4
    assert 0.1 < np.abs(audio).max() <= 1.0
    # voice/rate conditions never cross splits
    conditions = {}
    for row in rows:
        conditions.setdefault((row["voice"], row["speed"]), set()).add(row["split"])
    assert all(len(splits) == 1 for splits in conditions.values())
    assert {s for splits in conditions.values() for s in splits} == {"train", "validation", "test"}


def test_spoken_digits_manifest_matches_the_generator_script():
    """The committed manifest is what ``make_spoken_digits.py`` plans (no espeak-ng needed)."""
    from hf_metalr.tasks.spoken_digits import DATA_DIR, read_manifest

    script = DATA_DIR.parent / "make_spoken_digits.py"
    spec = importlib.util.spec_from_file_location("make_spoken_digits", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    planned = [{k: str(v) for k, v in row.items()} for row in module.plan()]
    assert planned == read_manifest()
    assert module.SAMPLE_RATE == 16_000


def test_spoken_digits_tokenizer_vocabulary():
    from hf_metalr.tasks.spoken_digits import DIGIT_WORDS, build_processor, vocabulary

    tokenizer = build_processor().tokenizer
    letters = {c for word in DIGIT_WORDS for c in word}
    assert len(tokenizer) == len(vocabulary()) == len(letters) + 3  # <pad>, <unk>, "|"
    assert tokenizer.pad_token_id == 0
    ids = tokenizer("seven two").input_ids
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, group_tokens=False) == "seven two"


def test_spoken_digits_collator_pads():
    task = get_task("spoken-digits")
    data = task.load()
    batch = task.data_collator()([data.train[0], data.train[1]])
    n0, n1 = len(data.train[0]["input_values"]), len(data.train[1]["input_values"])
    assert batch["input_values"].shape == (2, max(n0, n1))
    shorter = int(n0 > n1)
    assert torch.all(batch["input_values"][shorter, min(n0, n1) :] == 0)
    assert (batch["labels"] == -100).any() or len(data.train[0]["labels"]) == len(data.train[1]["labels"])


# ---------------------------------------------------------------------------------------------
# one short real training per task, through transformers.Trainer


def _single_word_clips(dataset, limit=None):
    """The spoken-digits clips of one digit word (no "|" delimiter id in the labels): short, fast."""
    from hf_metalr.tasks.base import ArrayDataset
    from hf_metalr.tasks.spoken_digits import DELIMITER, vocabulary

    delimiter = vocabulary()[DELIMITER]
    keep = [i for i, labels in enumerate(dataset.columns["labels"]) if not (labels == delimiter).any()][:limit]
    return ArrayDataset(**{k: [v[i] for i in keep] for k, v in dataset.columns.items()})


def _short_run(name):
    """(train, eval, epochs, learning rate) of the short training, ~10 s each on one CPU core."""
    task = get_task(name)
    data = task.load()
    if name == "spoken-digits":  # 128 one-word training clips; the one-word validation clips
        return _single_word_clips(data.train, 128), _single_word_clips(data.validation), 20, task.learning_rate
    return data.train, data.validation, {"digits": 2, "sentiment": 4, "char-lm": 1, "regression": 2, "vit-digits": 2}[name], task.learning_rate


@pytest.fixture
def one_thread():
    """Train on one intra-op thread: these models are too small to gain from two, and two threads
    on a busy 2-core machine (a parallel job, another test run) spin-wait and run 5-10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("name", TASK_NAMES)
def test_short_training_improves_the_metric(name, tmp_path, one_thread):
    from transformers import Trainer, TrainingArguments

    task = get_task(name)
    train, evaluation, epochs, learning_rate = _short_run(name)
    assert len(evaluation) >= 30
    args = TrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=learning_rate,
        per_device_train_batch_size=task.batch_size,
        per_device_eval_batch_size=64,
        num_train_epochs=epochs,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        lr_scheduler_type="constant",
        seed=0,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=task.model(0),
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        compute_metrics=task.compute_metrics,
        data_collator=task.data_collator(),
    )
    key = "eval_" + task.metric
    before = trainer.evaluate()[key]
    trainer.train()
    after = trainer.evaluate()[key]
    improvement = after - before if task.greater_is_better else before - after
    assert improvement > 0.2, (before, after)
    assert not task.reached(before)


def test_vit_digits_is_a_vision_transformer_on_the_digits_split():
    """The fresh transformer classifier reads the digits task's images and labels, split for split,
    through 16 patches of 4x4 and a [CLS] token."""
    from transformers import ViTForImageClassification

    vit, digits = get_task("vit-digits"), get_task("digits")
    for split in ("train", "validation", "test"):
        ours, theirs = getattr(vit.load(), split), getattr(digits.load(), split)
        assert torch.equal(ours.columns["pixel_values"], theirs.columns["pixel_values"])
        assert torch.equal(ours.columns["labels"], theirs.columns["labels"])
    model = vit.model(0)
    assert isinstance(model, ViTForImageClassification)
    batch = {k: v[:4] for k, v in vit.load().train.columns.items()}
    out = model(**batch, output_hidden_states=True)
    assert out.logits.shape == (4, 10) and out.loss.ndim == 0
    assert out.hidden_states[-1].shape == (4, 17, 64)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), vit.model(0).state_dict().values()))
