"""benchmarks/unseen_families.py: three model families defined only there, run as a user would."""

import json
from pathlib import Path

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


def test_unseen_families_runs_each_schedule_and_pairs_the_callback_with_its_plain_schedule(tmp_path, capsys):
    module = load_benchmark("unseen_families")
    out = tmp_path / "uf"
    argv = ["--tasks", "gru-series", "--seeds", "1", "--multipliers", "1", "--lr-grid", "0.001,0.01", "--epochs", "1",
            "--out", str(out)]
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
