"""benchmarks/unseen_families.py: twenty-three model families defined only there, run as a user would."""

import json
import statistics
from pathlib import Path

import pytest
import torch

from benchmark_scripts import load_benchmark


def test_masked_lm_rows_mask_the_same_tokens_every_time_and_at_least_one_per_row():
    module = load_benchmark("unseen_families")
    from hf_metalr.tasks.sentiment import build_tokenizer

    tokenizer = build_tokenizer()
    task = module.MaskedLMTask()
    train = task.load().train.columns
    masked = train["labels"] != -100
    assert bool(masked.any(1).all())
    # a masked position holds [MASK] in the input and the word in the label; the others, the word and -100
    assert bool((train["input_ids"][masked] == tokenizer.mask_token_id).all())
    assert not bool(torch.isin(train["labels"][masked], torch.tensor(tokenizer.all_special_ids)).any())
    share = float(masked.sum()) / float((train["attention_mask"] == 1).sum())
    assert 0.08 < share < 0.2, share
    module._mlm_split.cache_clear()  # drawn again from the fixed seed: the same masks
    assert torch.equal(module.MaskedLMTask().load().train.columns["labels"], train["labels"])
    out = task.model(0)(input_ids=train["input_ids"][:4], attention_mask=train["attention_mask"][:4],
                        labels=train["labels"][:4])
    assert out.loss.item() > 0


@pytest.mark.slow
def test_unseen_families_runs_each_schedule_and_pairs_the_callback_with_its_plain_schedule(tmp_path, capsys):
    module = load_benchmark("unseen_families")
    out = tmp_path / "uf"
    common = ["--tasks", "gru-series", "--seeds", "1", "--multipliers", "1", "--lr-grid", "0.001,0.01", "--epochs", "1",
              "--out", str(out)]
    argv = common + ["--good-lr", "grid"]
    assert module.main(argv) == 0
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    finals = {r["lr"]: r["final_val_loss"] for r in runs if r["schedule"] == "constant"}
    picked = min(finals, key=finals.get)  # the grid's LR with the lowest final validation loss
    assert sorted(r["schedule"] for r in runs if r["lr"] == picked) == sorted(
        ["constant", "prodigy", "metalr", "linear", "linear+metalr", "schedule-free"])
    folders = {r["schedule"]: out / "runs" / "gru-series" / f"lr{picked:g}-seed0-{r['schedule']}" for r in runs if r["lr"] == picked}
    # the callback decided in the runs that have it (a trace), and not in the plain ones
    for schedule, folder in folders.items():
        assert (folder / "metalr_trace.jsonl").is_file() == (schedule in ("metalr", "linear+metalr")), schedule
    test = {r["schedule"]: r["test"]["r2"] for r in runs if r["lr"] == picked}
    printed = capsys.readouterr().out
    diff = test["linear+metalr"] - test["linear"]
    count = "1/0/0" if diff > 1e-9 else "0/0/1" if diff < -1e-9 else "0/1/0"
    assert f"| linear {test['linear']:.4f} | linear+metalr {test['linear+metalr']:.4f} | {count} |" in printed
    assert (out / "unseen_families.md").read_text().strip() in printed
    # rerun: every run is reused, none trained again
    assert module.main(argv) == 0
    assert len((out / "runs.jsonl").read_text().splitlines()) == len(runs)
    assert Path(out / "unseen_families.md").is_file()
    # by default the cells scale the task's recorded pick (3e-3, off this grid), and the table says the grid's differs
    assert module.main(common) == 0
    recorded = module.SeriesTask.learning_rate
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["schedule"] for r in rows if r["lr"] == recorded) == sorted(
        ["constant", "prodigy", "metalr", "linear", "linear+metalr", "schedule-free"])
    table = (out / "unseen_families.md").read_text()
    assert f"x1 ({recorded:.3g})" in table
    assert f"the grid's pick here is {picked:g}, the task's recorded pick {recorded:g}" in table


def test_copy_rows_repeat_their_words_and_the_metrics_read_the_next_token():
    module = load_benchmark("unseen_families")
    task = module.CopyLMTask()
    ids = task.load().train.columns["input_ids"]
    k = module.COPY_PREFIX
    assert bool((ids[:, 0] == module.BOS).all()) and bool((ids[:, k + 1] == module.SEP).all())
    assert torch.equal(ids[:, 1:k + 1], ids[:, k + 2:])
    assert int(ids[:, 1:k + 1].min()) >= 3 and int(ids.max()) < module.COPY_VOCABULARY  # words, never a special token
    rows = ids[:6]
    # logits that put everything on the true next token: no loss, every repeated word right
    perfect = torch.full((*rows.shape, module.COPY_VOCABULARY), -30.0)
    perfect[:, :-1].scatter_(2, rows[:, 1:, None], 30.0)
    metrics = task.compute_metrics(_prediction(perfect, rows))
    assert metrics["copy_accuracy"] == 1.0 and metrics["lm_loss"] < 1e-6
    # shifted by one position (each position "predicts" itself): every repeated word wrong
    itself = torch.full((*rows.shape, module.COPY_VOCABULARY), -30.0).scatter_(2, rows[:, :, None], 30.0)
    assert task.compute_metrics(_prediction(itself, rows))["copy_accuracy"] < 0.2
    out = task.model(0)(input_ids=rows, labels=rows)
    assert out.logits.shape == (*rows.shape, module.COPY_VOCABULARY) and out.loss.item() > 0


def test_seen_token_labels_mark_exactly_the_repeats():
    module = load_benchmark("unseen_families")
    task = module.SeenTokenTask()
    columns = task.load().validation.columns
    for ids, labels in zip(columns["input_ids"][:20].tolist(), columns["labels"][:20].tolist()):
        assert labels == [int(token in ids[:i]) for i, token in enumerate(ids)]
    share = float(columns["labels"].float().mean())
    assert 0.15 < share < 0.35, share
    labels = columns["labels"][:8]
    right = torch.nn.functional.one_hot(labels, 2).float()
    assert task.compute_metrics(_prediction(right, labels)) == {"token_accuracy": 1.0, "token_f1": 1.0}
    never = task.compute_metrics(_prediction(torch.tensor([1.0, 0.0]).expand(*labels.shape, 2), labels))
    assert never["token_f1"] == 0.0 and abs(never["token_accuracy"] - (1 - float(labels.float().mean()))) < 1e-6
    assert task.model(0)(input_ids=columns["input_ids"][:4], labels=labels[:4]).logits.shape == (4, labels.shape[1], 2)


def test_signal_targets_are_standardised_on_the_training_rows():
    module = load_benchmark("unseen_families")
    task = module.SignalTask()
    data = task.load()
    targets = data.train.columns["labels"]
    assert targets.shape[1] == 2 and torch.allclose(targets.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(targets.std(0, unbiased=False), torch.ones(2), atol=1e-4)
    out = task.model(0)(signal=data.test.columns["signal"][:5], labels=data.test.columns["labels"][:5])
    assert out["logits"].shape == (5, 2) and out["loss"].item() > 0


def test_reverse_targets_are_the_rows_reversed_and_the_metrics_read_the_first_prediction():
    module = load_benchmark("unseen_families")
    task = module.ReverseTask()
    columns = task.load().validation.columns
    assert torch.equal(columns["labels"], columns["input_ids"].flip(1))
    assert int(columns["input_ids"].min()) >= 3  # words only: no pad (0), eos (1) or unused (2) id
    labels = columns["labels"][:6]
    perfect = torch.full((*labels.shape, module.REVERSE_VOCABULARY), -30.0).scatter_(2, labels[:, :, None], 30.0)
    encoder_states = torch.zeros(6, labels.shape[1], 64)  # the Trainer hands T5's predictions as (logits, encoder states)
    metrics = task.compute_metrics(_prediction((perfect, encoder_states), labels))
    assert metrics["token_accuracy"] == 1.0 and metrics["target_loss"] < 1e-6
    unreversed = torch.full_like(perfect, -30.0).scatter_(2, columns["input_ids"][:6, :, None], 30.0)
    assert task.compute_metrics(_prediction(unreversed, labels))["token_accuracy"] < 0.3
    out = task.model(0)(input_ids=columns["input_ids"][:4], labels=labels[:4])
    assert out.logits.shape == (4, labels.shape[1], module.REVERSE_VOCABULARY) and 2.0 < out.loss.item() < 8.0


def test_bigram_rows_hold_each_marker_once_and_label_exactly_the_adjacent_order():
    module = load_benchmark("unseen_families")
    columns = module.BigramTask().load().train.columns
    ids, labels = columns["input_ids"], columns["labels"]
    assert bool(((ids == module.BIGRAM_FIRST).sum(1) == 1).all()) and bool(((ids == module.BIGRAM_SECOND).sum(1) == 1).all())
    first = (ids == module.BIGRAM_FIRST).long().argmax(1)
    second = (ids == module.BIGRAM_SECOND).long().argmax(1)
    assert torch.equal(labels, (second == first + 1).long())
    assert 0.45 < float(labels.float().mean()) < 0.55
    assert bool((second < first).any()) and bool((second > first + 1).any())  # negatives both before and further on
    out = module.BigramTask().model(0)(input_ids=ids[:4], labels=labels[:4])
    assert out.logits.shape == (4, 2) and out.loss.item() > 0


def test_friedman_targets_are_standardised_on_the_training_rows():
    module = load_benchmark("unseen_families")
    data = module.FriedmanTask().load()
    targets = data.train.columns["labels"]
    assert abs(float(targets.mean())) < 1e-5 and abs(float(targets.std(unbiased=False)) - 1.0) < 1e-4
    assert data.train.columns["features"].shape == (2000, 10) and len(data.test.columns["labels"]) == 500
    out = module.FriedmanTask().model(0)(features=data.test.columns["features"][:5], labels=data.test.columns["labels"][:5])
    assert out["logits"].shape == (5,) and out["loss"].item() > 0


def test_max_rows_score_only_the_answer_and_the_metrics_read_the_position_before_it():
    module = load_benchmark("unseen_families")
    task = module.MaxDigitTask()
    columns = task.load().validation.columns
    ids, labels = columns["input_ids"], columns["labels"]
    assert torch.equal(ids[:, -1] - 3, (ids[:, 1:-2] - 3).max(1).values), "the answer is the largest digit"
    assert bool((labels[:, :-1] == -100).all()) and torch.equal(labels[:, -1], ids[:, -1])
    logits = torch.full((6, ids.shape[1], 13), -30.0)
    logits[torch.arange(6), -2, labels[:6, -1]] = 30.0  # right at the position before the answer only
    metrics = task.compute_metrics(_prediction(logits, labels[:6]))
    assert metrics["answer_accuracy"] == 1.0 and metrics["answer_loss"] < 1e-6
    out = task.model(0)(input_ids=ids[:4], labels=labels[:4])
    assert out.logits.shape == (4, ids.shape[1], 13) and 1.5 < out.loss.item() < 4.0, "near log(13) untrained"


def test_convnext_digits_splits_are_disjoint_images_in_the_unit_range():
    module = load_benchmark("unseen_families")
    data = module.ConvNextDigitsTask().load()
    sizes = [len(split.columns["labels"]) for split in (data.train, data.validation, data.test)]
    assert sizes == [1100, 300, 397]
    x = data.train.columns["pixel_values"]
    assert x.shape[1:] == (1, 8, 8) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert len(set(data.train.columns["labels"].tolist())) == 10
    out = module.ConvNextDigitsTask().model(0)(pixel_values=x[:4], labels=data.train.columns["labels"][:4])
    assert out.logits.shape == (4, 10) and out.loss.item() > 0


def test_match_targets_sum_the_values_flagged_like_the_first_and_are_standardised():
    module = load_benchmark("unseen_families")
    data = module.MatchSumTask().load()
    pairs, targets = data.train.columns["pairs"], data.train.columns["labels"]
    raw = (pairs[..., 0] * (pairs[..., 1] == pairs[:, :1, 1]).float()).sum(1)
    assert torch.allclose((raw - raw.mean()) / raw.std(), targets, atol=1e-5)
    assert abs(float(targets.mean())) < 1e-5
    out = module.MatchSumTask().model(0)(pairs=pairs[:5], labels=targets[:5])
    assert out["logits"].shape == (5,) and out["loss"].item() > 0


def test_sort_rows_score_only_the_sorted_part_and_the_metrics_read_the_position_before_each():
    module = load_benchmark("unseen_families")
    task = module.SortLMTask()
    columns = task.load().validation.columns
    ids, labels = columns["input_ids"], columns["labels"]
    n = module.SORT_DIGITS
    assert torch.equal(ids[:, -n:], ids[:, 1:1 + n].sort(1).values) and bool((ids[:, n + 1] == module.DIGIT_SEP).all())
    assert bool((labels[:, :-n] == -100).all()) and torch.equal(labels[:, -n:], ids[:, -n:])
    logits = torch.full((6, ids.shape[1], 13), -30.0)
    for k in range(n):  # each sorted digit predicted at the position just before it, nowhere else
        logits[torch.arange(6), ids.shape[1] - n - 1 + k, labels[:6, ids.shape[1] - n + k]] = 30.0
    metrics = task.compute_metrics(_prediction(logits, labels[:6]))
    assert metrics["sorted_accuracy"] == 1.0 and metrics["sorted_loss"] < 1e-6
    shifted = task.compute_metrics(_prediction(logits.roll(1, dims=1), labels[:6]))
    assert shifted["sorted_accuracy"] < 0.5, "one position off must not read as right"
    out = task.model(0)(input_ids=ids[:4], labels=labels[:4])
    assert out.logits.shape == (4, ids.shape[1], 13) and 1.5 < out.loss.item() < 4.0, "near log(13) untrained"


def test_order_rows_hold_each_marker_once_and_label_a_close_enough_order_half_the_time():
    module = load_benchmark("unseen_families")
    data = module.OrderTask().load()
    ids, labels = data.train.columns["input_ids"], data.train.columns["labels"]
    assert bool(((ids == module.MARK_A).sum(1) == 1).all()) and bool(((ids == module.MARK_B).sum(1) == 1).all())
    gap = (ids == module.MARK_B).float().argmax(1) - (ids == module.MARK_A).float().argmax(1)
    assert torch.equal(labels, ((gap > 0) & (gap <= module.ORDER_REACH)).long())
    assert 0.45 < float(labels.float().mean()) < 0.55
    out = module.OrderTask().model(0)(input_ids=ids[:4], labels=labels[:4])
    assert out.logits.shape == (4, 2) and out.loss.item() > 0


def test_damping_targets_are_the_standardised_log_rate_and_the_model_returns_one_number_per_series():
    module = load_benchmark("unseen_families")
    data = module.DampingTask().load()
    series, targets = data.train.columns["series"], data.train.columns["labels"]
    assert series.shape == (module.TRAIN_ROWS, module.DAMPING_LENGTH)
    assert abs(float(targets.mean())) < 1e-5 and abs(float(targets.std()) - 1) < 1e-5
    late, early = series[:, -16:].abs().mean(1), series[:, :16].abs().mean(1)
    fast = targets > 1.0  # the fastest-damped series have faded by their last quarter, the slowest have not
    assert float((late / early)[fast].mean()) < float((late / early)[targets < -1.0].mean())
    out = module.DampingTask().model(0)(series=series[:5], labels=targets[:5])
    assert out["logits"].shape == (5,) and out["loss"].item() > 0


def _prediction(predictions, labels):
    from transformers import EvalPrediction

    if isinstance(predictions, tuple):
        return EvalPrediction(predictions=tuple(p.numpy() for p in predictions), label_ids=labels.numpy())
    return EvalPrediction(predictions=predictions.numpy(), label_ids=labels.numpy())


def test_each_family_reports_first_the_metric_whose_direction_it_declares():
    """The tables read ``test_metrics[0]`` in the direction of ``greater_is_better``, which is the direction of
    ``metric``: the two must be one metric."""
    module = load_benchmark("unseen_families")
    assert len(module.TASKS) == 32
    for task in module.TASKS.values():
        assert task.test_metrics[0] == task.metric, task.name


def test_sgd_runs_every_schedule_on_sgd_with_momentum_but_the_peers_on_their_own(tmp_path):
    module = load_benchmark("unseen_families")
    import schedulefree
    from prodigyopt import Prodigy

    from hf_metalr.compare.runner import build_trainer

    task = module.FriedmanTask()

    def optimizer(schedule):
        plain = schedule.partition("+")[0]
        trainer = build_trainer(task, plain, 0, tmp_path / schedule, lr=0.05,
                                **module.optimizer_arguments(schedule, "sgd"))
        if trainer.optimizer is None:
            trainer.create_optimizer()
        return trainer.optimizer

    for schedule in ("constant", "metalr", "linear", "linear+metalr"):
        sgd = optimizer(schedule)
        assert type(getattr(sgd, "optimizer", sgd)) is torch.optim.SGD, schedule
        assert all(group["momentum"] == 0.9 and group["lr"] == 0.05 for group in sgd.param_groups), schedule
    free = optimizer("schedule-free")
    assert isinstance(getattr(free, "optimizer", free), schedulefree.SGDScheduleFree)
    prodigy = optimizer("prodigy")
    assert isinstance(getattr(prodigy, "optimizer", prodigy), Prodigy)
    assert module.optimizer_arguments("constant", "adamw") == {}


def test_sgd_rows_are_kept_apart_from_adamw_rows_and_the_recorded_adamw_lrs_are_refused(tmp_path, capsys):
    module = load_benchmark("unseen_families")
    out = tmp_path / "uf"
    out.mkdir()
    row = {"task": "friedman-mlp", "lr": 0.01, "seed": 0, "schedule": "constant", "test": {"r2": 0.5}}
    (out / "runs.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({**row, "optimizer": "sgd", "test": {"r2": 0.7}}) + "\n")
    done = module._runs(out / "runs.jsonl")
    assert done[("friedman-mlp", 0.01, 0, "constant", "adamw")]["test"]["r2"] == 0.5
    assert done[("friedman-mlp", 0.01, 0, "constant", "sgd")]["test"]["r2"] == 0.7
    assert module.run(module.FriedmanTask(), 0.01, 0, "constant", out, done, optimizer="sgd")["test"]["r2"] == 0.7
    try:
        module.main(["--optimizer", "sgd", "--good-lr", "task", "--tasks", "friedman-mlp", "--out", str(out)])
    except SystemExit as refused:
        assert refused.code == 2
    else:
        raise AssertionError("--good-lr task under sgd must be refused")
    assert "recorded LRs, which are AdamW's" in capsys.readouterr().err


def test_running_sum_rows_score_only_the_sums_mod_ten_and_the_metrics_read_the_position_before_each():
    module = load_benchmark("unseen_families")
    task = module.RunningSumTask()
    columns = task.load().validation.columns
    ids, labels = columns["input_ids"], columns["labels"]
    n = module.RUNNING_DIGITS
    assert torch.equal(ids[:, -n:] - 3, (ids[:, 1:1 + n] - 3).cumsum(1) % 10)
    assert bool((labels[:, :-n] == -100).all()) and torch.equal(labels[:, -n:], ids[:, -n:])
    logits = torch.full((6, ids.shape[1], 13), -30.0)
    for k in range(n):  # each sum predicted at the position just before it, nowhere else
        logits[torch.arange(6), ids.shape[1] - n - 1 + k, labels[:6, ids.shape[1] - n + k]] = 30.0
    metrics = task.compute_metrics(_prediction(logits, labels[:6]))
    assert metrics["sums_accuracy"] == 1.0 and metrics["sums_loss"] < 1e-6
    assert task.compute_metrics(_prediction(logits.roll(1, dims=1), labels[:6]))["sums_accuracy"] < 0.5
    out = task.model(0)(input_ids=ids[:4], labels=labels[:4])
    assert out.logits.shape == (4, ids.shape[1], 13) and 1.5 < out.loss.item() < 4.0, "near log(13) untrained"


def test_shape_labels_mark_the_rectangle_and_the_disk_in_their_colours_and_the_iou_reads_them():
    module = load_benchmark("unseen_families")
    task = module.ShapesTask()
    columns = task.load().train.columns
    images, labels = columns["pixel_values"], columns["labels"]
    assert images.shape[1:] == (3, 16, 16) and labels.shape[1:] == (16, 16)
    for i in range(5):  # every shape pixel holds its shape's one colour
        for c in (1, 2):
            pixels = images[i].permute(1, 2, 0)[labels[i] == c]
            assert len(pixels) > 0 and torch.allclose(pixels, pixels[:1].expand_as(pixels))
    shares = [float((labels == c).float().mean()) for c in range(3)]
    assert shares[0] > 0.6 and 0.03 < shares[1] < 0.2 and 0.05 < shares[2] < 0.2
    right = torch.nn.functional.one_hot(labels[:6], 3).permute(0, 3, 1, 2).float() * 10
    assert task.compute_metrics(_prediction(right, labels[:6])) == {"mean_iou": 1.0, "pixel_accuracy": 1.0}
    background = torch.zeros(6, 3, 8, 8)
    background[:, 0] = 10.0  # at half the side, as the model gives them: upsampled to the labels
    metrics = task.compute_metrics(_prediction(background, labels[:6]))
    share = float((labels[:6] == 0).float().mean())
    assert abs(metrics["mean_iou"] - share / 3) < 1e-6 and abs(metrics["pixel_accuracy"] - share) < 1e-6
    out = task.model(0)(pixel_values=images[:4], labels=labels[:4])
    assert out.logits.shape == (4, 3, 8, 8) and out.loss.item() > 0


def test_ratings_are_standardised_on_the_training_rows_and_the_factorization_scores_every_pair():
    module = load_benchmark("unseen_families")
    data = module.RatingsTask().load()
    columns = data.train.columns
    assert abs(float(columns["labels"].mean())) < 1e-5 and abs(float(columns["labels"].std()) - 1) < 1e-5
    assert int(columns["user"].max()) < module.USERS and int(columns["item"].max()) < module.ITEMS
    pairs = set(zip(columns["user"].tolist(), columns["item"].tolist()))
    test = set(zip(data.test.columns["user"].tolist(), data.test.columns["item"].tolist()))
    assert len(pairs) == len(columns["user"]) and not pairs & test, "each pair rated once: the test pairs are unseen"
    out = module.RatingsTask().model(0)(user=columns["user"][:5], item=columns["item"][:5], labels=columns["labels"][:5])
    assert out["logits"].shape == (5,) and out["loss"].item() > 0


def test_markov_rows_follow_one_sparse_second_order_chain_and_every_token_after_bos_is_scored():
    module = load_benchmark("unseen_families")
    task = module.MarkovLMTask()
    columns = task.load().train.columns
    ids, labels = columns["input_ids"], columns["labels"]
    n, base = module.MARKOV_LENGTH, module.MARKOV_BASE
    assert ids.shape[1] == n + 1 and bool((ids[:, 0] == module.DIGIT_BOS).all())
    assert bool((labels[:, 0] == -100).all()) and torch.equal(labels[:, 1:], ids[:, 1:])
    tokens = ids[:, 1:] - base
    assert int(tokens.min()) >= 0 and int(tokens.max()) < module.MARKOV_TOKENS
    # a sparse chain: most pairs of tokens are followed by only a few of the 24
    followers: dict[tuple, set] = {}
    for row in tokens.tolist():
        for a, b, c in zip(row, row[1:], row[2:]):
            followers.setdefault((a, b), set()).add(c)
    seen = statistics.median(len(f) for f in followers.values())
    assert seen <= 8, seen
    rows = 6
    logits = torch.full((rows, n + 1, base + module.MARKOV_TOKENS), -30.0)
    for k in range(n):  # each token predicted at the position just before it
        logits[torch.arange(rows), k, ids[:rows, k + 1]] = 30.0
    metrics = task.compute_metrics(_prediction(logits, labels[:rows]))
    assert metrics["token_accuracy"] == 1.0 and metrics["token_loss"] < 1e-6
    assert task.compute_metrics(_prediction(logits.roll(1, dims=1), labels[:rows]))["token_accuracy"] < 0.5
    out = task.model(0)(input_ids=ids[:4], labels=labels[:4])
    assert out.logits.shape == (4, n + 1, base + module.MARKOV_TOKENS) and 2.5 < out.loss.item() < 4.0, "near log(27)"


def test_least_squares_features_are_ill_conditioned_and_the_model_is_one_linear_layer():
    module = load_benchmark("unseen_families")
    task = module.LeastSquaresTask()
    columns = task.load().train.columns
    x, y = columns["features"], columns["labels"]
    assert abs(float(y.mean())) < 1e-5 and abs(float(y.std()) - 1) < 1e-5
    eigenvalues = torch.linalg.eigvalsh(torch.cov(x.T))
    assert 300 < float(eigenvalues.max() / eigenvalues.min()) < 3000, "a condition number near 1000"
    # the best linear fit explains most but not all of the target (the noise's share stays)
    design = torch.cat([x, torch.ones(len(x), 1)], 1)
    fit = torch.linalg.lstsq(design, y[:, None]).solution
    r2 = 1 - float(((design @ fit).squeeze(1) - y).pow(2).mean())
    assert 0.7 < r2 < 0.9, r2
    model = task.model(0)
    assert [name for name, _ in model.named_parameters()] == ["linear.weight", "linear.bias"]
    out = model(features=x[:5], labels=y[:5])
    assert out["logits"].shape == (5,) and out["loss"].item() > 0


def test_negation_labels_are_the_polar_words_reading_flipped_by_a_not_right_before_it():
    module = load_benchmark("unseen_families")
    task = module.NegationTask()
    columns = task.load().train.columns
    ids, labels = columns["input_ids"], columns["labels"]
    assert ids.shape[1] == module.NEGATION_LENGTH + 1 and bool((ids[:, 0] == 1).all())
    negated_rows = 0
    for row, label in zip(ids.tolist(), labels.tolist()):
        polar = [k for k, token in enumerate(row) if token in module.POSITIVE or token in module.NEGATIVE]
        assert len(polar) == 1
        negated = row[polar[0] - 1] == module.NEGATION_NOT
        negated_rows += negated
        assert label == int((row[polar[0]] in module.POSITIVE) != negated)
    assert 0.3 < negated_rows / len(labels) < 0.5
    assert 0.4 < float(labels.float().mean()) < 0.6
    nots_elsewhere = int((ids == module.NEGATION_NOT).sum()) - negated_rows
    assert nots_elsewhere > 0.5 * len(labels), "NOTs before neutral words too, which flip nothing"
    out = task.model(0)(input_ids=ids[:4], labels=labels[:4])
    assert out.logits.shape == (4, 2) and out.loss.item() > 0


def test_the_lora_and_the_full_fine_tune_start_from_one_pretrained_gpt2_adapted_to_a_changed_chain(monkeypatch):
    module = load_benchmark("unseen_families")
    original, shifted = module._markov_chain(), module._markov_chain(module.SHIFT_SHARE)
    changed = (original - shifted).abs().sum(-1) > 1e-6
    assert 0.4 < float(changed.float().mean()) < 0.6, "about half the token pairs' next-token distributions redrawn"
    monkeypatch.setattr(module, "PRETRAIN_EPOCHS", 1)  # the sweep's base trains 10 epochs; one shows the contract
    module._pretrained_gpt2_state.cache_clear()
    try:
        task = module.LoraShiftTask()
        first, second = task.model(0), task.model(1)
        trained = {name for name, p in first.named_parameters() if p.requires_grad}
        assert trained and all("lora_" in name for name in trained)
        base_first = {n: p for n, p in first.named_parameters() if not p.requires_grad}
        base_second = dict(second.named_parameters())
        assert all(torch.equal(p, base_second[n]) for n, p in base_first.items()), "one pretrained base for every seed"
        lora_a = next(n for n in trained if "lora_A" in n)
        assert not torch.equal(dict(first.named_parameters())[lora_a], base_second[lora_a]), "adapters drawn per seed"
        rows = task.load().validation.columns["input_ids"][:64]
        pretrained_rows = module._markov_split().validation.columns["input_ids"][:64]
        with torch.no_grad():  # the base fits the chain it was trained on better than the changed one
            assert first(input_ids=pretrained_rows, labels=pretrained_rows).loss < first(input_ids=rows, labels=rows).loss
        full = module.FineTuneShiftTask().model(0)  # the full fine-tune: the same base, every weight trained
        assert all(p.requires_grad for p in full.parameters())
        full_weights = dict(full.named_parameters())
        assert all(torch.equal(p, full_weights[n.replace("base_model.model.", "").replace(".base_layer", "")])
                   for n, p in base_first.items())
    finally:
        module._pretrained_gpt2_state.cache_clear()


def test_the_eighth_three_build_their_rows_and_their_models_train():
    """The shifted digits are the digits plus 3 mod 10 and alone are scored; the substitution is one
    fixed permutation of the words; the digits are resized to 16x16; each model returns a finite loss."""
    module = load_benchmark("unseen_families")
    rows = module.DigitShiftTask().load().train.columns
    ids, labels = rows["input_ids"], rows["labels"]
    digits, shifted = ids[:, 1:9] - 3, ids[:, 10:] - 3
    assert torch.equal(shifted, (digits + 3) % 10) and (labels[:, :10] == -100).all() and torch.equal(labels[:, 10:], ids[:, 10:])
    cipher = module.SubstituteTask().load().train.columns
    pairs = {(int(a), int(b)) for a, b in zip(cipher["input_ids"].flatten(), cipher["labels"].flatten())}
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}) == module.SUBSTITUTE_VOCABULARY - 3
    images = module.MobileNetDigitsTask().load().validation.columns["pixel_values"]
    assert images.shape[1:] == (1, 16, 16) and len(images) == 300
    for task in (module.DigitShiftTask(), module.MobileNetDigitsTask(), module.SubstituteTask()):
        batch = {name: column[:4] for name, column in task.load().train.columns.items()}
        assert torch.isfinite(task.model(0)(**batch).loss), task.name


def test_the_ninth_three_build_their_rows_and_their_models_train():
    """The sums are each digit plus the one before it (the first's: the last) mod 10 and alone are
    scored; a row's halves match exactly when its label is 1, and otherwise its second half is drawn
    anew; the disk targets are standardised on the training rows; each model returns a finite
    loss."""
    module = load_benchmark("unseen_families")
    rows = module.PairSumTask().load().train.columns
    ids, labels = rows["input_ids"], rows["labels"]
    digits, sums = ids[:, 1:9] - 3, ids[:, 10:] - 3
    assert torch.equal(sums, (digits + digits.roll(1, dims=1)) % 10)
    assert (labels[:, :10] == -100).all() and torch.equal(labels[:, 10:], ids[:, 10:])
    copies = module.CopyDetectTask().load().train.columns
    differing = (copies["input_ids"][:, 1:11] != copies["input_ids"][:, 11:]).sum(1)
    assert torch.equal(differing == 0, copies["labels"] == 1) and differing[copies["labels"] == 0].float().mean() > 8
    assert 0.4 < copies["labels"].float().mean() < 0.6
    disks = module.DiskTask().load()
    targets = disks.train.columns["labels"]
    assert torch.allclose(targets.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(targets.std(0, unbiased=False), torch.ones(3), atol=1e-5)
    assert disks.validation.columns["pixel_values"].shape[1:] == (1, 16, 16)
    for task in module.NINTH_THREE:
        batch = {name: column[:4] for name, column in task.load().train.columns.items()}
        assert torch.isfinite(task.model(0)(**batch)["loss"]), task.name


def test_the_tenth_three_build_their_rows_and_their_models_train():
    """The answer is the digits reversed and alone is scored; a row's label is 1 exactly when most of its
    words are among 3..20, about half of them; the bar targets lie on the unit circle (cos and sin of twice
    the angle); each model returns a finite loss."""
    module = load_benchmark("unseen_families")
    rows = module.MirrorLMTask().load().train.columns
    ids, labels = rows["input_ids"], rows["labels"]
    assert torch.equal(ids[:, 10:], ids[:, 1:9].flip(1))
    assert (labels[:, :10] == -100).all() and torch.equal(labels[:, 10:], ids[:, 10:])
    majority = module.MajorityTask().load().train.columns
    words = majority["input_ids"][:, 1:]
    assert words.shape[1] == 15 and ((words >= 3) & (words <= 38)).all()
    assert torch.equal((words <= 20).sum(1) >= 8, majority["labels"] == 1)
    assert 0.4 < majority["labels"].float().mean() < 0.6
    bars = module.BarAngleTask().load()
    targets = bars.train.columns["labels"]
    assert torch.allclose(targets.norm(dim=1), torch.ones(len(targets)), atol=1e-5)
    assert bars.validation.columns["pixel_values"].shape[1:] == (1, 16, 16)
    for task in module.TENTH_THREE:
        batch = {name: column[:4] for name, column in task.load().train.columns.items()}
        assert torch.isfinite(task.model(0)(**batch)["loss"]), task.name


def test_no_family_rebinds_another_familys_module_name():
    """Each family's data builder reads its constants from the module at call time, so a later family
    that binds the same name (a ``FIRST`` marker, a ``_copy_split``) silently changes an earlier
    family's data: every top-level name is bound once."""
    import ast
    import collections
    from pathlib import Path

    tree = ast.parse((Path(__file__).resolve().parents[1] / "benchmarks" / "unseen_families.py").read_text())
    bound = collections.Counter()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound[node.name] += 1
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                bound.update(name.id for name in ast.walk(target) if isinstance(name, ast.Name))
    assert [name for name, count in bound.items() if count > 1] == []
