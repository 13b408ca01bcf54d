"""benchmarks/default_schedule.py: MetaLRCallback on the linear schedule, paired with the plain one by seed."""

import json
from pathlib import Path

from benchmark_scripts import load_benchmark


def test_default_schedule_pairs_the_callback_with_the_plain_linear_schedule(tmp_path, capsys):
    module = load_benchmark("default_schedule")
    out = tmp_path / "ds"
    assert module.main(["--tasks", "regression", "--multipliers", "1", "--warmups", "0.06", "--seeds", "2",
                        "--epochs", "1", "--out", str(out)]) == 0
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["seed"], r["variant"]) for r in runs) == [(0, "linear"), (0, "linear+metalr"), (1, "linear"),
                                                               (1, "linear+metalr")]
    # the callback's runs decided (a trace), the plain ones did not
    for r in runs:
        assert (Path(r["folder"]) / "metalr_trace.jsonl").is_file() == (r["variant"] == "linear+metalr")
    (row,) = json.loads((out / "default_schedule.json").read_text())
    test = {(r["seed"], r["variant"]): r["test"]["r2"] for r in runs}
    diffs = [test[s, "linear+metalr"] - test[s, "linear"] for s in (0, 1)]
    assert (row["better"], row["worse"]) == (sum(d > 1e-9 for d in diffs), sum(d < -1e-9 for d in diffs))
    assert "| regression (r2) | 0.06 | x1 |" in capsys.readouterr().out
    # rerun: every run is reused, none trained again
    assert module.main(["--tasks", "regression", "--multipliers", "1", "--warmups", "0.06", "--seeds", "2",
                        "--epochs", "1", "--out", str(out)]) == 0
    assert len((out / "runs.jsonl").read_text().splitlines()) == 4


def test_default_schedule_runs_the_trainer_schedule_it_is_given(tmp_path):
    """--schedule cosine: both variants run the Trainer's cosine schedule, and the callback's LR is its
    scale times the cosine factor at the step (the linear factor would differ)."""
    import math

    from hf_metalr.tasks import get_task

    module = load_benchmark("default_schedule")
    out = tmp_path / "cos"
    assert module.main(["--schedule", "cosine", "--tasks", "regression", "--multipliers", "1", "--warmups", "0",
                        "--seeds", "1", "--epochs", "2", "--out", str(out)]) == 0
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["variant"] for r in runs) == ["cosine", "cosine+metalr"]
    task = get_task("regression")
    total = 2 * math.ceil(len(task.load().train) / task.batch_size)
    (folder,) = [Path(r["folder"]) for r in runs if r["variant"] == "cosine+metalr"]
    records = [json.loads(line) for line in (folder / "metalr_trace.jsonl").read_text().splitlines()]
    decisions = [r for r in records if "global_step" in r and "scale" in r and "initial_lr" in r]
    assert decisions
    for r in decisions:
        cosine = 0.5 * (1 + math.cos(math.pi * r["global_step"] / total))
        assert math.isclose(r["lr"], r["initial_lr"] * r["scale"] * cosine, rel_tol=1e-6), r
    # at least one decision where the two curves part (they meet at the start and half way)
    assert any(abs(r["lr"] / (r["initial_lr"] * r["scale"]) - (1 - r["global_step"] / total)) > 0.01 for r in decisions)
    assert "the Trainer's cosine schedule" in (out / "default_schedule.md").read_text()


def test_a_task_of_ones_own_runs_in_a_folder_named_after_it(tmp_path):
    module = load_benchmark("default_schedule")
    out = tmp_path / "own"
    spec = "hf_metalr.tasks.regression:RegressionTask"
    assert module.main(["--tasks", spec, "--multipliers", "1", "--warmups", "0", "--seeds", "1", "--epochs", "1",
                        "--out", str(out)]) == 0
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert {r["task"] for r in runs} == {spec}  # the spec, to find the task again on a rerun
    assert all(Path(r["folder"]).parent == out / "runs" / "regression" for r in runs)
    assert "| regression (r2) | 0 | x1 |" in (out / "default_schedule.md").read_text()
