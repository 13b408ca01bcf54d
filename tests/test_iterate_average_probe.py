"""benchmarks/iterate_average_probe.py: what the iterate-average check reads at a constant LR."""

import math
import re

from benchmark_scripts import load_benchmark

from hf_metalr.controller.controller import AVERAGE_GAIN


def test_probe_prints_the_gain_and_progress_of_every_evaluation(capsys):
    module = load_benchmark("iterate_average_probe")
    assert module.main(["--task", "digits", "--multipliers", "1", "--seeds", "0", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("x1 seed 0:"))
    cells = re.findall(r"([+-][\d.]+|-)/([+-][\d.]+|-)([* ]) ([\d.]+)", line)
    assert len(cells) == 4  # 2 epochs of 32 steps, evaluated every 16
    gains = [float(g) for g, *_ in cells]
    assert all(math.isfinite(g) for g in gains)
    assert cells[0][1] == "-" and all(p != "-" for _, p, _, _ in cells[1:])  # no earlier check at the first
    # at its good LR the digits ResNet descends: its average lags, and nothing reads as a bounce
    assert all(g < AVERAGE_GAIN for g in gains) and all(mark == " " for *_, mark, _ in cells)
    assert float(cells[-1][3]) > 0.5, "the metric column is the task's accuracy"
