"""benchmarks/first_interval_alignment.py: the alignment over each half of the first interval."""

import math

from benchmark_scripts import load_benchmark

from hf_metalr.tasks import get_task


def test_the_halves_split_the_first_interval_and_pool_into_the_whole():
    module = load_benchmark("first_interval_alignment")
    whole, first, second, interval = module.halves(get_task("digits"), 0.1, 0)
    assert interval == 16 and first.steps + second.steps == whole.steps
    assert first.steps >= interval // 2 - 1 and second.steps == interval // 2  # the first step has no earlier update
    # a ratio of sums lies between the halves' ratios
    assert min(first.ratio, second.ratio) <= whole.ratio <= max(first.ratio, second.ratio)
    assert all(math.isfinite(w.t) for w in (whole, first, second))
    assert first.ratio > 0.1 and second.ratio > 0.1, "an LR 10x too low reads a clear undershoot in both halves"
