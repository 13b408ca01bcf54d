"""benchmarks/meta_eval.py: the held-out summary (best static, oracle, ratios) and the policy card it writes."""

import json
import math

import pytest
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def meta_eval():
    return load_benchmark("meta_eval")


def _run(schedule, seed, evals, accuracy):
    return {"schedule": schedule, "seed": seed, "threshold": {"reached": evals is not None, "evals": evals},
            "test": {"accuracy": accuracy}}


def _by_lr(meta_eval):
    """digits at two LRs: at x1 cosine is fastest among the statics and metalr ties it; at x10
    nothing static reaches the threshold and metalr does in 2 of 3 runs."""
    x1, x10 = [], []
    for seed in range(3):
        for schedule in meta_eval.ALL:
            x1.append(_run(schedule, seed, {"cosine": 5, "metalr": 5}.get(schedule, 7), 0.98))
            x10.append(_run(schedule, seed, (4 if seed else None) if schedule == "metalr" else None, 0.9))
    config = {"epochs": 5, "evals_per_epoch": 2}
    return {1.0: {"runs": x1, "config": config}, 10.0: {"runs": x10, "config": config}}


def test_summary_finds_the_best_static_and_the_oracle(meta_eval):
    summary = meta_eval.summarize("digits", _by_lr(meta_eval))
    x1, x10 = summary["by_multiplier"]["1.0"], summary["by_multiplier"]["10.0"]
    assert x1["best_static"] == "cosine" and x1["metalr_vs_best_static"] == 1.0
    assert x10["median_evals"]["metalr"] == 4 and math.isinf(x10["median_evals"]["constant"])
    assert x10["metalr_vs_best_static"] is None  # no static schedule reaches: no ratio
    assert summary["oracle"] == {"schedule": "cosine", "lr_multiplier": 1.0, "median_evals": 5}
    assert x1["best_lr_free"] == "prodigy" and x1["metalr_vs_best_lr_free"] == pytest.approx(5 / 7)
    assert x10["metalr_vs_best_lr_free"] is None  # neither LR-free peer reaches
    assert summary["reach_rate"]["metalr"] == pytest.approx(5 / 6) and summary["reach_rate"]["constant"] == 0.5


def test_final_test_metric_is_paired_with_constant_by_seed(meta_eval):
    metalr = [_run("metalr", seed, 5, acc) for seed, acc in enumerate([0.9, 0.8, 0.7])]
    constant = [_run("constant", seed, 5, acc) for seed, acc in enumerate([0.85, 0.8, 0.75])]
    paired = meta_eval.paired_test_by_seed(metalr, constant, "accuracy", greater_is_better=True)
    assert (paired["better"], paired["same"], paired["worse"]) == (1, 1, 1)
    assert paired["median_difference"] == pytest.approx(0.0)
    wer = meta_eval.paired_test_by_seed(metalr, constant, "accuracy", greater_is_better=False)
    assert (wer["better"], wer["worse"]) == (1, 1), "for a lower-is-better metric the signs flip"
    summary = meta_eval.summarize("digits", _by_lr(meta_eval))
    assert summary["by_multiplier"]["1.0"]["metalr_vs_constant_test_by_seed"]["same"] == 3


def test_pooled_by_band_counts_a_miss_as_the_budget_plus_one(meta_eval):
    summary = meta_eval.summarize("digits", _by_lr(meta_eval))
    assert summary["budget_evals"] == 10
    bands = meta_eval.pooled_by_band([summary, summary])  # two identical tasks: everything doubles
    assert bands["x1"]["metalr"] == 10 and bands["x1"]["constant"] == 14 and bands["x1"]["best peer"] == 10
    assert bands["x10"]["metalr"] == 8 and bands["x10"]["prodigy"] == 22, "never reached: 10 + 1 per task"
    assert bands["x10"]["metalr / best LR-free"] == pytest.approx(8 / 22)
    text = meta_eval.to_markdown([summary])
    assert "## Pooled over the tasks, by LR band" in text and "| x10 | 4 |" in text


def test_card_section_is_written_into_the_policy_json(meta_eval, tmp_path):
    summary = meta_eval.summarize("digits", _by_lr(meta_eval))
    policy_json = tmp_path / "policy.json"
    policy_json.write_text(json.dumps({"hidden": 64, "card": {"seed": 0}}))
    meta_eval.write_card_section(policy_json, meta_eval.card_section([summary], "results/meta_eval.md"))
    config = json.loads(policy_json.read_text())
    section = config["card"]["held_out_trainer_eval"]
    assert config["card"]["seed"] == 0 and config["hidden"] == 64  # the rest of the file is kept
    assert section["digits x1"] == {"metalr_median_evals": 5, "best_static": "cosine", "best_static_median_evals": 5,
                                    "best_lr_free": "prodigy", "best_lr_free_median_evals": 7}
    assert section["digits x10"]["metalr_median_evals"] == 4 and section["digits x10"]["best_static_median_evals"] is None
    assert section["digits reach_rate"]["metalr"] == pytest.approx(0.833)
    assert section["source"].startswith("results/meta_eval.md (seeds: digits 3;")


def test_a_missing_card_file_is_refused_before_any_run(meta_eval, tmp_path, capsys):
    with pytest.raises(SystemExit):
        meta_eval.main(["--card", str(tmp_path / "nope.json"), "--out", str(tmp_path / "out")])
    assert "--card" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_task_seeds_give_one_task_more_seeds(meta_eval, tmp_path, monkeypatch):
    calls = {}

    def fake_compare(task_name, schedules, seeds, out, **kwargs):
        calls.setdefault(task_name, set()).update(seeds)
        return {"runs": [_run(s, seed, 5, 0.9) for s in schedules for seed in seeds],
                "config": {"epochs": 3, "evals_per_epoch": 2}}

    monkeypatch.setattr(meta_eval, "compare", fake_compare)
    monkeypatch.setattr(meta_eval, "write_report", lambda out: None)
    meta_eval.main(["--tasks", "digits,sentiment", "--seeds", "2", "--task-seeds", "digits=4", "--out", str(tmp_path)])
    assert calls == {"digits": {0, 1, 2, 3}, "sentiment": {0, 1}}
    summaries = json.loads((tmp_path / "meta_eval.json").read_text())
    assert [s["seeds"] for s in summaries] == [[0, 1, 2, 3], [0, 1]]


def test_a_task_of_ones_own_runs_the_protocol_in_folders_named_by_its_name(meta_eval, tmp_path, monkeypatch):
    outs = []

    def fake_compare(task_name, schedules, seeds, out, **kwargs):
        outs.append((task_name, out))
        return {"runs": [_run(s, seed, 5, 0.9) for s in schedules for seed in seeds],
                "config": {"epochs": 3, "evals_per_epoch": 2}}

    monkeypatch.setattr(meta_eval, "compare", fake_compare)
    monkeypatch.setattr(meta_eval, "write_report", lambda out: None)
    spec = "hf_metalr.tasks.regression:RegressionTask"
    meta_eval.main(["--tasks", spec, "--seeds", "1", "--multipliers", "1", "--task-seeds", f"{spec}=2", "--out", str(tmp_path)])
    assert outs == [(spec, tmp_path / "regression-lr_x1")]  # the spec for the harness, the name for the folder
    (summary,) = json.loads((tmp_path / "meta_eval.json").read_text())
    assert summary["task"] == "regression" and summary["seeds"] == [0, 1]


@pytest.mark.parametrize("bad, message", [("digit=10", "is not one of --tasks"), ("digits=0", "is not TASK=N"),
                                          ("digits=10,digits=3", "given twice")])
def test_bad_task_seeds_are_refused_before_any_run(meta_eval, tmp_path, capsys, bad, message):
    with pytest.raises(SystemExit):
        meta_eval.main(["--task-seeds", bad, "--out", str(tmp_path / "out")])
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_paired_by_seed_counts_each_seed_and_runs_a_sign_test(meta_eval):
    metalr = [_run("metalr", 0, 5, 0.9), _run("metalr", 1, 7, 0.9), _run("metalr", 2, None, 0.9), _run("metalr", 3, 4, 0.9)]
    cosine = [_run("cosine", 0, 4, 0.9), _run("cosine", 1, 7, 0.9), _run("cosine", 2, 9, 0.9), _run("cosine", 3, None, 0.9),
              _run("cosine", 9, 1, 0.9)]  # seed 9 has no metalr partner
    paired = meta_eval.paired_by_seed(metalr, cosine)
    # seed 0 later, seed 1 the same, seed 2 never reached (later), seed 3 reached where cosine never did (sooner)
    assert {k: paired[k] for k in ("sooner", "same", "later")} == {"sooner": 1, "same": 1, "later": 2}
    assert paired["sign_test_p"] == pytest.approx(1.0)  # 1 of 3 differing seeds: no evidence either way
    all_later = meta_eval.paired_by_seed([_run("metalr", s, 9, 0.9) for s in range(5)], [_run("cosine", s, 4, 0.9) for s in range(5)])
    assert all_later["later"] == 5 and all_later["sign_test_p"] == pytest.approx(2 / 32)
    assert meta_eval.paired_by_seed(metalr[:2], metalr[:2])["sign_test_p"] is None  # nothing differs
    x10 = meta_eval.summarize("digits", _by_lr(meta_eval))["by_multiplier"]["10.0"]
    assert x10["metalr_vs_best_static_by_seed"]["sooner"] == 2  # metalr reached in seeds 1 and 2; no static did


def test_the_shipped_policy_card_holds_the_committed_held_out_sweep(meta_eval):
    """The card's held_out_trainer_eval is what card_section makes of the committed sweep's
    meta_eval.json: a partial rerun written into the shipped card, or a sweep committed without
    refreshing the card, fails here."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    summaries = json.loads((root / "benchmarks/results/meta_eval/meta_eval.json").read_text())
    expected = meta_eval.card_section(summaries, "benchmarks/results/meta_eval/meta_eval.md")
    card = json.loads((root / "hf_metalr/policies/default.json").read_text())["card"]["held_out_trainer_eval"]
    assert card == expected
