"""The gate's doubling on a short plateau: a run still at its first evaluation's level whose parameters
have barely moved and whose LR is short of the distance estimate, at three evaluations in a row."""

import pytest

from hf_metalr import MetaLRController
from hf_metalr.controller.gate import (NO_DISTANCE, RAISE_CEILING, RAISE_PUNISHED, RESTORE_RAISE, SHORT_PLATEAU_DISTANCE,
                                       SHORT_PLATEAU_DRIFT, SHORT_PLATEAU_EVALUATIONS, STUCK, gate_move, short_plateau,
                                       short_plateau_raise)
from hf_metalr.reporting.trace_view import decision_kind
from test_alignment import always
from test_distance import _stuck_quadratic

PLATEAU = {"objective_trend": 0.0, "objective_vs_first": 0.0, "grad_alignment": 0.01, "grad_alignment_t": 0.3,
           "param_drift": SHORT_PLATEAU_DRIFT / 2, "lr_over_distance": SHORT_PLATEAU_DISTANCE / 4,
           "short_plateau_evaluations": SHORT_PLATEAU_EVALUATIONS, "log10_lr_scale": -1.0}


@pytest.mark.parametrize("changes, anneals, reads", [
    ({}, False, True),
    ({"lr_over_distance": SHORT_PLATEAU_DISTANCE}, False, True),
    ({"lr_over_distance": SHORT_PLATEAU_DISTANCE * 1.01}, False, False),  # steps as long as the estimate says
    ({"lr_over_distance": NO_DISTANCE}, False, False),  # no positive estimate yet
    ({"lr_over_distance": None}, False, False),  # no reading (an optimizer whose step is not its LR)
    ({"param_drift": SHORT_PLATEAU_DRIFT}, False, False),  # the parameters moved
    ({"objective_vs_first": -STUCK}, False, False),  # the run left its first level
    ({"objective_vs_first": -STUCK + 0.001}, False, True),
    # under annealing the LR the schedule decays from, not the decayed one, where it is read
    ({"lr_over_distance": 0.01, "planned_lr_over_distance": 0.9}, True, False),
    ({"lr_over_distance": 0.9, "planned_lr_over_distance": 0.1}, True, True),
    ({"lr_over_distance": 0.9, "planned_lr_over_distance": 0.1}, False, False),
    ({"lr_over_distance": 0.1}, True, True),  # no planned reading: the decayed one
])
def test_a_short_plateau_is_read_on_the_level_the_drift_and_the_distance(changes, anneals, reads):
    features = {key: value for key, value in {**PLATEAU, **changes}.items() if value is not None}
    assert short_plateau(features, schedule_anneals=anneals) is reads


@pytest.mark.parametrize("changes, first, raised", [
    ({}, False, RESTORE_RAISE),
    ({}, True, None),  # the first evaluation: nothing to count
    ({"short_plateau_evaluations": SHORT_PLATEAU_EVALUATIONS - 1}, False, None),
    ({"short_plateau_evaluations": SHORT_PLATEAU_EVALUATIONS + 4}, False, RESTORE_RAISE),  # again while it holds
    ({"objective_trend": RAISE_PUNISHED * 1.5}, False, None),  # the metric got worse beyond noise
    ({"objective_trend": RAISE_PUNISHED}, False, RESTORE_RAISE),  # the noise of a plateau
    # at half the estimate the raise ceiling (the estimate) leaves exactly the doubling
    ({"lr_over_distance": RAISE_CEILING * SHORT_PLATEAU_DISTANCE}, False, RESTORE_RAISE),
    ({"lr_over_distance": RAISE_CEILING}, False, None),  # steps as long as the estimate: no short plateau
    ({"param_drift": SHORT_PLATEAU_DRIFT}, False, None),  # a count not read on this decision's state
])
def test_the_raise_on_a_short_plateau_doubles_after_three_evaluations_under_the_ceiling(changes, first, raised):
    result = short_plateau_raise({**PLATEAU, **changes}, first=first)
    assert result == (None if raised is None else pytest.approx(raised))


def _move(requested, features, **options):
    options = {"first": False, "schedule_anneals": False, "scale": 0.1, "min_scale": 1e-3, "last_applied": 1.0,
               **options}
    return gate_move(requested, features, **options)


def test_the_gate_doubles_whatever_the_policy_asks_and_says_why():
    for requested in (0.5, 1.0):
        move = _move(requested, PLATEAU)
        assert move.multiplier == RESTORE_RAISE and not move.held and move.rule == "short_plateau"
        assert move.why == ("short plateau: still at the first evaluation's level at 3 evaluations in a row, the "
                            "parameters 0.05 of their starting norm from it and the LR 0.12 times the distance "
                            f"estimate: raised (x2), the policy asked for x{requested:g}")
        entry = {"action": requested, "applied": move.multiplier, "evidence": move.why}
        assert decision_kind(entry) == "fixed"
    asked_more = _move(4.0, {**PLATEAU, "grad_alignment_t": 3.0, "grad_alignment": 0.2})
    assert asked_more.rule is None and asked_more.multiplier > RESTORE_RAISE, "a larger raise the gate let through stands"
    for changes in ({"short_plateau_evaluations": 2}, {"objective_trend": 2 * RAISE_PUNISHED}):
        assert _move(1.0, {**PLATEAU, **changes}).rule != "short_plateau", changes


def test_a_cut_the_gate_lets_through_and_max_lr_stop_the_doubling():
    """A clear overshoot on the plateau (the gradient opposing the steps past the plateau's bar): the
    gate's cut stands, not the doubling; a keep at max_lr stays a keep. A cut the gate holds is
    replaced by the doubling."""
    overshoot = {**PLATEAU, "grad_alignment": -0.3, "grad_alignment_t": -4.0, "objective_trend": 0.005}
    cut = _move(0.5, overshoot)
    assert cut.multiplier < 1 and cut.rule != "short_plateau"
    assert _move(1.0, PLATEAU, max_scale=0.1).rule != "short_plateau"
    assert _move(1.0, PLATEAU, max_scale=0.2).multiplier == RESTORE_RAISE
    held = _move(0.5, {**PLATEAU, "grad_alignment_t": -0.5})
    assert held.multiplier == RESTORE_RAISE and held.rule == "short_plateau"


def test_under_annealing_the_doubling_reads_the_lr_the_schedule_decays_from():
    decayed_far_below = {**PLATEAU, "lr_over_distance": 0.05, "planned_lr_over_distance": 0.8}
    assert _move(1.0, decayed_far_below, schedule_anneals=True).rule != "short_plateau"
    planned_short = {**PLATEAU, "lr_over_distance": 0.05, "planned_lr_over_distance": 0.3}
    move = _move(1.0, planned_short, schedule_anneals=True)
    assert move.rule == "short_plateau" and "the LR 0.3 times the distance estimate" in move.why


def test_adam_at_a_tiny_lr_on_a_stuck_run_is_doubled_at_its_fourth_decision_and_the_count_is_traced():
    """Adam at 1e-4 on the quadratic, its metric held at the first evaluation's level, the policy
    always keeping: the count runs 0, 1, 2, 3 and the fourth decision doubles the LR; the longer steps
    then carry the parameters past the drift bar and the count drops to 0. At 1e-3 the parameters
    move past the bar in the first interval, and the gate never doubles."""
    _, _, optimizer, ctrl, decisions, _ = _stuck_quadratic(1e-4, decisions=6)
    counts = [d.features["short_plateau_evaluations"] for d in decisions]
    assert counts == [0, 1, 2, 3, 0, 0]
    assert [d.applied for d in decisions] == [1.0, 1.0, 1.0, RESTORE_RAISE, 1.0, 1.0]
    doubled = decisions[3]
    assert doubled.evidence.startswith("short plateau: still at the first evaluation's level at 3 evaluations in a row")
    assert ctrl.history[3]["rule"] == "short_plateau" and ctrl.history[3]["features"]["short_plateau_evaluations"] == 3
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-4)
    assert all(d.features["lr_over_distance"] <= SHORT_PLATEAU_DISTANCE for d in decisions[:4])
    assert decisions[4].features["param_drift"] >= SHORT_PLATEAU_DRIFT
    _, _, _, _, moved, _ = _stuck_quadratic(1e-3, decisions=6)
    assert all(d.applied == 1.0 for d in moved) and moved[0].features["param_drift"] >= SHORT_PLATEAU_DRIFT
    assert all(d.features["short_plateau_evaluations"] == 0 for d in moved)


def test_the_count_is_read_back_from_the_history_so_a_resumed_run_counts_on():
    ctrl = MetaLRController(1e-3, policy=always(2))
    ctrl.history = [{"features": {"short_plateau_evaluations": 2}, "rule": None}]
    assert ctrl._short_plateau_evaluations(PLATEAU, first=False) == 3
    assert ctrl._short_plateau_evaluations(PLATEAU, first=True) == 0
    assert ctrl._short_plateau_evaluations({**PLATEAU, "param_drift": 1.0}, first=False) == 0
    ctrl.history = [{"features": None, "diverged": True}]
    assert ctrl._short_plateau_evaluations(PLATEAU, first=False) == 1
