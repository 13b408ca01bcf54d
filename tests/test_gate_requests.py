"""benchmarks/gate_requests.py: what the policy asks for per band, and what the gate lets through."""

import re

import pytest
from benchmark_scripts import load_benchmark


def decision(action, applied, alignment, gain=None, diverged=False):
    """A trace line; a move asked for and not applied was held by the gate."""
    features = {"grad_alignment": alignment}
    if gain is not None:
        features["iterate_average_gain"] = gain
    gate = "held: ..." if action != 1 and applied == 1 else None
    return {"action": action, "applied": applied, "diverged": diverged, "gate": gate,
            "features": None if diverged else features}


def test_summarize_counts_requests_applied_moves_and_held_cuts():
    module = load_benchmark("gate_requests")
    traces = [[decision(0.5, 1.0, -0.1), decision(0.5, 0.5, -0.2, 0.1), decision(2.0, 2.0, 0.3, 0.2)],
              [decision(0.8, 1.0, 0.0, 0.3), decision(1.0, 1.0, 0.1, 0.4), decision(0.5, 0.5, 0.0, diverged=True)]]
    s = module.summarize(traces)
    assert s["decisions"] == 5  # the fixed cut at a divergence is no request of the policy's
    assert s["asked_cut"] == pytest.approx(3 / 5) and s["asked_raise"] == pytest.approx(1 / 5)
    assert (s["cuts"], s["raises"], s["held_cuts"]) == (1, 1, 2)
    at_the_floor = {**decision(0.5, 1.0, -0.1), "gate": None}  # let through by the gate, stopped by min_lr
    assert module.summarize([[at_the_floor]])["held_cuts"] == 0
    assert s["gain"] == "+0.125 / +0.250 / +0.375"  # the four decisions that measured one
    assert s["alignment"].count("/") == 2 and module.summarize([traces[1][:2]])["alignment"] == "–"


def test_gate_requests_runs_a_cell_reads_its_traces_and_names_missing_ones(tmp_path, capsys):
    module = load_benchmark("gate_requests")
    args = ["--out", str(tmp_path), "--tasks", "digits", "--seeds", "1", "--multipliers", "10"]
    assert module.main(args) == 0
    row = re.search(r"^\| digits \| x10 \| (\d+) \| (\d+)% \| (\d+)% \| (\d+) \| (\d+) \| (\d+) \|", capsys.readouterr().out, re.M)
    assert row and int(row[1]) > 0 and int(row[2]) + int(row[3]) <= 100
    trace = tmp_path / "digits-lr_x10" / "runs" / "metalr-seed0" / "metalr_trace.jsonl"
    trace.unlink()  # as in a clone, where git keeps results.json but not the runs' folders
    with pytest.raises(SystemExit, match="without their traces.*pass another --out"):
        module.main(args)
