"""benchmarks/stuck_margin.py: per evaluation, how far a run is from the stuck-run state."""

import math
import re

from benchmark_scripts import load_benchmark


def test_stuck_margin_prints_one_line_per_evaluation_from_the_trace(capsys):
    module = load_benchmark("stuck_margin")
    assert module.main(["--task", "digits", "--epochs", "1", "--seeds", "0", "--evals-per-epoch", "4"]) == 0
    out = capsys.readouterr().out
    assert "digits at 1x its good LR, 4 evaluations per epoch" in out and "less than 4.9% below" in out
    rows = re.findall(r"evaluation +(\d+): +(-?[\d.]+)% below the first, drift +([\d.]+), stuck evaluations (\d+), "
                      r"asked x([\d.]+), applied x([\d.]+) \(([^)]*)\)", out)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]  # 32 steps, evaluated every 8
    assert float(rows[0][1]) == 0.0 and all(float(r[1]) > 0 for r in rows[1:])  # the digits MLP learns at its good LR
    drifts = [float(r[2]) for r in rows]
    assert drifts == sorted(drifts) and 0 < drifts[0] < 1
    assert all(int(r[3]) == 0 for r in rows)  # nowhere near stuck
    for row in rows:  # each line says what the gate did with what the policy asked for
        asked, applied, why = float(row[4]), float(row[5]), row[6]
        assert why in ("raise", "cut", "kept", "raise held", "cut held", "undo")
        assert math.isclose(applied, 1.0) if why in ("kept", "raise held", "cut held") else applied != 1.0
        assert why != "raise" or 1.0 < applied <= asked * (1 + 1e-9)  # as asked, or as far as the raise ceiling
