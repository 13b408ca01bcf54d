"""benchmarks/between_bands.py: metalr against the constant LR at multipliers outside the sweep's bands."""

import json

import pytest

from benchmark_scripts import load_benchmark


def test_between_bands_pairs_metalr_with_the_constant_lr_by_seed(tmp_path, capsys):
    module = load_benchmark("between_bands")
    out = tmp_path / "bb"
    assert module.main(["--tasks", "regression", "--multipliers", "3", "--seeds", "2", "--epochs", "1",
                        "--schedules", "metalr,constant", "--out", str(out)]) == 0
    rows = json.loads((out / "between_bands.json").read_text())
    assert [(r["task"], r["multiplier"]) for r in rows] == [("regression", 3.0)]
    row = rows[0]
    results = json.loads((out / "regression-lr_x3" / "results.json").read_text())
    assert results["config"]["lr"] == pytest.approx(3 * 1e-2)  # 3x the task's good LR
    test = {(r["schedule"], r["seed"]): r["test"]["r2"] for r in results["runs"]}
    assert sorted(test) == [("constant", 0), ("constant", 1), ("metalr", 0), ("metalr", 1)]
    diffs = [test["metalr", s] - test["constant", s] for s in (0, 1)]
    paired = row["test_vs_constant"]
    assert (paired["better"], paired["worse"]) == (sum(d > 1e-9 for d in diffs), sum(d < -1e-9 for d in diffs))
    worst = min((0, 1), key=lambda s: test["metalr", s] - test["constant", s])
    assert row["worst_seed"] == {"seed": worst, "metalr": test["metalr", worst], "constant": test["constant", worst]}
    assert sum(row["evals_vs_constant"][k] for k in ("sooner", "same", "later")) == 2
    printed = capsys.readouterr().out
    assert "| regression (r2) | x3 |" in printed and (out / "between_bands.md").read_text() in printed


def test_between_bands_refuses_a_comparison_without_the_constant_lr(capsys):
    module = load_benchmark("between_bands")
    with pytest.raises(SystemExit):
        module.main(["--tasks", "regression", "--schedules", "metalr,schedule-free"])
    assert "must include metalr and constant" in capsys.readouterr().err
