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
