"""``benchmarks/warmup_in_front.py``: the join of the warmup runs with the unseen families' runs, and its counts."""

import json

import pytest
from benchmark_scripts import load_benchmark

wif = load_benchmark("warmup_in_front")


def unseen_rows(family="mlm", good=0.003):
    rows = []
    for seed, (constant, metalr) in enumerate([(2.0, 1.5), (2.2, 1.4), (1.9, 1.9)]):
        for band in (0.1, 1.0, 10.0):
            rows.append({"task": family, "lr": band * good, "seed": seed, "schedule": "constant", "status": "ok",
                         "test": {"masked_loss": constant}})
            rows.append({"task": family, "lr": band * good, "seed": seed, "schedule": "metalr", "status": "ok",
                         "test": {"masked_loss": metalr}})
        rows.append({"task": family, "lr": 1.0, "seed": seed, "schedule": "prodigy", "status": "ok",
                     "test": {"masked_loss": 3.0}})
    return rows


def warmup_rows():
    rows = []
    for seed, (plain, with_callback) in enumerate([(2.1, 1.0), (2.1, 1.4), (2.1, 2.5)]):
        for variant, value in ((wif.WARMUP, plain), (wif.WARMUP_METALR, with_callback)):
            rows.append({"task": "benchmarks/unseen_families.py:MaskedLMTask", "multiplier": 10.0, "warmup": 0.06,
                         "seed": seed, "variant": variant, "status": "ok", "test": {"masked_loss": value}})
    return rows


def test_pairs_by_family_band_and_seed_with_the_metric_direction(tmp_path, capsys):
    rows = wif.cells(warmup_rows(), unseen_rows())
    assert [(r["family"], r["band"]) for r in rows] == [("mlm", 10.0)], "only the bands with warmup runs"
    values = rows[0]["values"]
    assert values["metalr"] == {0: 1.5, 1: 1.4, 2: 1.9} and values["prodigy"] == {0: 3.0, 1: 3.0, 2: 3.0}
    # a lower masked loss is better: seed 0 better (1.0 < 1.5), seed 1 level, seed 2 worse (2.5 > 1.9)
    assert wif.paired(values[wif.WARMUP_METALR], values["metalr"], True) == (1, 1, 1, 0.0)
    table, totals = wif.to_markdown(rows)
    assert "| mlm (masked_loss) | x10 | 2.0000 | 1.5000 | 2.1000 | 1.4000 | 1/1/1, +0.0000 | 2/0/1, +0.8000 |" in table
    assert totals[("metalr vs constant", 10.0)] == [2, 1, 0] and totals[("metalr vs constant", 0.1)] == [0, 0, 0]
    for name, rows_ in (("warmup.jsonl", warmup_rows()), ("unseen.jsonl", unseen_rows())):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows_))
    assert wif.main([str(tmp_path / "warmup.jsonl"), str(tmp_path / "unseen.jsonl")]) == 0
    assert "| warmup + metalr vs metalr | 0/0/0 | 0/0/0 | 1/1/1 | 1/1/1 |" in capsys.readouterr().out


def test_a_family_without_metalr_at_three_lrs_is_refused():
    with pytest.raises(ValueError, match="mlm: expected metalr at 3 LRs"):
        wif.cells(warmup_rows(), [r for r in unseen_rows() if r["lr"] != 0.03])


def test_runs_of_two_warmup_lengths_are_refused():
    mixed = warmup_rows() + [dict(r, warmup=0.02) for r in warmup_rows()]
    with pytest.raises(ValueError, match="2 warmup lengths"):
        wif.cells(mixed, unseen_rows())
