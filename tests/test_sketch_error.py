"""benchmarks/sketch_error.py: the alignment sketch's reading against every coordinate's."""

import math

from benchmark_scripts import load_benchmark

import hf_metalr.controller.alignment as alignment
from hf_metalr.tasks import get_task


def test_sketches_of_each_window_read_near_the_exact_alignment_and_the_window_is_put_back():
    module = load_benchmark("sketch_error")
    probe = module.first_interval(get_task("digits"), 0.1, 0, [256, 32], [0, 1, 2])
    assert alignment.WINDOW == 32  # the shipped window, put back after the probe drew with each
    assert math.isfinite(probe.read["exact"]) and probe.read["exact"] > 0.1  # an LR 10x too low: a clear undershoot
    for window in (256, 32):
        assert len(probe.read[window]) == 3
        assert all(abs(r - probe.read["exact"]) < 0.2 for r in probe.read[window])
    # the windows drew different sketches: shorter windows land in more of the model's tensors
    assert probe.sketches[32][0]._runs != probe.sketches[256][0]._runs
    tensors = {w: sum(len(s._owners) for s in probe.sketches[w]) for w in (256, 32)}
    assert tensors[32] > tensors[256]
