"""benchmarks/iterate_average_probe.py: what the iterate-average check reads at a constant LR."""

import math
import re

from benchmark_scripts import load_benchmark

from hf_metalr.controller.gate import AVERAGE_GAIN


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


def test_reads_between_evaluations_leave_the_evaluations_reads_alone(capsys):
    """``--reads-per-interval 2`` adds one read half-way through every interval after the first
    evaluation, in brackets, and changes neither the run nor the evaluation's own reads."""
    module = load_benchmark("iterate_average_probe")
    common = ["--task", "digits", "--multipliers", "10", "--seeds", "0", "--epochs", "2"]
    assert module.main(common) == 0
    plain = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("x10 seed 0:"))
    assert module.main(common + ["--reads-per-interval", "2"]) == 0
    probed = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("x10 seed 0:"))
    inside = re.findall(r"\[([^\]]*)\]", probed)
    assert len(inside) == 3  # intervals 2 to 4; none before the first evaluation, which has no earlier check
    assert all(re.fullmatch(r"8:[+-][\d.]+/[+-][\d.]+\*?", read) for read in inside)  # half of 16 steps
    assert re.sub(r"\[[^\]]*\] ", "", probed) == plain
