"""``gate_move``: the direction gate and its safeguards as one pure function of a decision's features."""

import pytest

from hf_metalr.controller.gate import (CLEAR_OVERSHOOT_CUT, DISTANCE_FLOOR, DISTANCE_OVERSHOOT, MOVED, RAISE_PUNISHED,
                                       GatedMove, gate_move)


def features(**overrides):
    base = {"objective_trend": -0.05, "grad_alignment": 0.0, "grad_alignment_t": 0.0, "objective_vs_first": -0.5,
            "param_drift": 0.2, "log10_lr_scale": 0.0}
    base.update(overrides)
    return base


def move(requested, feats, *, scale=1.0, min_scale=1e-3, last_applied=1.0, first=False, anneals=False):
    return gate_move(requested, feats, first=first, schedule_anneals=anneals, scale=scale, min_scale=min_scale,
                     last_applied=last_applied)


def test_a_keep_with_no_evidence_stays_a_keep_and_a_raise_without_evidence_is_held():
    assert move(1.0, features()) == GatedMove(1.0, False, None)
    held = move(2.0, features())
    assert held.held and held.multiplier == 1.0 and held.why.startswith("raise held: no evidence")
    through = move(2.0, features(grad_alignment=0.05, grad_alignment_t=3.0))
    assert not through.held and through.multiplier == 2.0 and through.why.startswith("raise: the gradient keeps")


@pytest.mark.parametrize("requested", [1.0, 2.0])
def test_a_clear_overshoot_replaces_a_keep_or_a_raise_with_the_fixed_cut_but_not_at_the_floor(requested):
    overshoot = features(grad_alignment=-0.3, grad_alignment_t=-4.0)
    cut = move(requested, overshoot)
    assert cut.multiplier == CLEAR_OVERSHOOT_CUT and not cut.held
    assert cut.why.endswith(f"a fixed cut (x{CLEAR_OVERSHOOT_CUT:g}), the policy asked for x{requested:g}")
    at_floor = move(requested, overshoot, scale=1e-3, min_scale=1e-3)
    assert at_floor.multiplier == 1.0


def test_the_distance_cut_stops_at_its_floor_and_a_punished_raise_is_taken_back_whatever_the_policy_asks():
    far = features(param_drift=2 * MOVED, lr_over_distance=4 * DISTANCE_OVERSHOOT, log10_lr_scale=-1.1)
    scale = 10 ** -1.1  # above 1/16: one more halving would go below it
    cut = move(0.5, far, scale=scale)
    assert cut.multiplier == pytest.approx(DISTANCE_FLOOR / scale) and "as far as 1/16 of the user's LR" in cut.why
    punished = features(objective_trend=RAISE_PUNISHED + 0.01, grad_alignment=0.05, grad_alignment_t=3.0)
    undo = move(2.0, punished, scale=2.0, last_applied=2.0)
    assert undo.multiplier == 0.5 and not undo.held and undo.why.startswith("undo: the metric got worse")
    assert move(2.0, punished, scale=2.0, last_applied=1.0).held, "no raise to undo: a worse metric holds the raise"
