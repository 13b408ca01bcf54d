"""benchmarks/distance_ratio.py: the distance check's two readings along a constant-LR run."""

from benchmark_scripts import load_benchmark

from hf_metalr.controller.gate import NO_DISTANCE
from hf_metalr.tasks import get_task


def test_the_readings_come_once_an_interval_and_an_lr_far_too_low_is_well_within_the_estimate():
    module = load_benchmark("distance_ratio")
    low = module.readings(get_task("digits"), 0.1, 0, 3)
    assert len(low) == 3
    drifts = [drift for _, drift in low]
    assert drifts == sorted(drifts) and 0 < drifts[0] < 0.1, "a slow run's drift grows from near zero"
    assert all(0 < ratio < 1 for ratio, _ in low), "an LR 10x too low is a fraction of the distance estimate"
    assert module.cell(NO_DISTANCE, 2.0) == "inf/2.00*" and module.cell(7.9, 2.0) == "7.9/2.00"
    assert module.cell(8.0, 0.99) == "8/0.99"
