"""benchmarks/cut_response.py: a halving of the LR against the same run without it."""

import math

import numpy as np
from benchmark_scripts import load_benchmark

from hf_metalr.tasks import get_task


def test_the_halved_branch_shares_the_plain_ones_steps_up_to_the_cut_and_differs_after_it():
    module = load_benchmark("cut_response")
    task = get_task("digits")
    plain, plain_eval = module.branch(task, 1.0, 0, None, 48, 16)
    halved, halved_eval = module.branch(task, 1.0, 0, 32, 48, 16)
    assert sorted(plain) == sorted(halved) == list(range(1, 49))
    assert all(plain[s] == halved[s] for s in range(1, 34)), "the same batches and weights up to the first step after the cut"
    assert any(plain[s] != halved[s] for s in range(34, 49)) and plain_eval != halved_eval


def test_the_trend_z_reads_a_drop_below_the_line_and_nothing_on_the_line():
    module = load_benchmark("cut_response")
    rng = np.random.default_rng(0)
    noise = {s: math.exp(rng.normal(0, 0.01)) for s in range(1, 41)}
    on_line = {s: math.exp(1.0 - 0.01 * s) * noise[s] for s in noise}
    dropped = {s: v * (0.9 if s > 20 else 1.0) for s, v in on_line.items()}
    assert abs(module.trend_z(on_line, 20, 20)) < 3
    assert module.trend_z(dropped, 20, 20) < -10
