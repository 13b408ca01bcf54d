"""benchmarks/sgd_step_distance.py: the distance check's reading with SGD's step in place of the LR."""

import math

import pytest
from benchmark_scripts import load_benchmark


def test_the_picks_are_the_sweeps_and_a_family_it_never_picked_for_is_named():
    module = load_benchmark("sgd_step_distance")
    families = module.unseen_families.TASKS
    assert module.sgd_good_lr(families["gru-series"]) == 0.1 and module.sgd_good_lr(families["patchtst-damping"]) == 0.03
    with pytest.raises(ValueError, match="t5-reverse has no SGD pick"):
        module.sgd_good_lr(families["t5-reverse"])


def test_one_reading_an_interval_on_sgd_and_the_step_grows_with_the_lr():
    module = load_benchmark("sgd_step_distance")
    task = module.unseen_families.TASKS["gru-series"]
    low, high = (module.readings(task, multiplier, 0, 2, good_lr=0.1) for multiplier in (0.1, 10))
    assert len(low) == len(high) == 2
    assert all(0 < ratio < math.inf and -1 <= alignment <= 1 for ratio, alignment, _ in low)
    assert high[-1][0] > 10 * low[-1][0], "a hundredfold LR takes far longer steps against the estimate"
    assert module.cell(math.inf, -0.25, -3.04) == "inf/-0.25/-3.0" and module.cell(0.0123, 0.1, 2.0) == "0.012/+0.10/+2.0"
