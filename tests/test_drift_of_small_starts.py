"""benchmarks/drift_of_small_starts.py: the drift with and without the weights that start at zero."""

import torch

from benchmark_scripts import load_benchmark


def test_the_drift_leaves_out_only_the_tensors_that_started_at_zero():
    module = load_benchmark("drift_of_small_starts")
    start = [torch.tensor([3.0, 4.0]), torch.zeros(2)]
    now = [torch.tensor([3.0, 4.0 + 5.0]), torch.tensor([0.0, 5.0])]
    full, kept = module.drifts(now, start, [True, False])
    assert abs(full - (50 ** 0.5) / 5) < 1e-9 and abs(kept - 1.0) < 1e-9


def test_the_probe_prints_a_row_per_family_and_lr_with_both_drifts(capsys):
    module = load_benchmark("drift_of_small_starts")
    assert module.main(["--tasks", "linear-lstsq", "--multipliers", "1,10", "--steps", "8,40", "--epochs", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| linear-lstsq")]
    assert len(rows) == 2
    readings = [[float(x) for x in cell.replace("(", "").replace(")", "").split()] for cell in rows[1].split("|")[3:5]]
    assert all(full == kept for full, kept in readings), "nn.Linear starts with no zero tensor: the two drifts agree"
    assert readings[0][0] > 1, "at 10x the layer has moved past its starting norm by step 8"
