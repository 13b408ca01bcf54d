"""``gate_move``: the direction gate and its safeguards as one pure function of a decision's features."""

import math

import pytest

from hf_metalr.controller.gate import (AVERAGE_GAIN, CLEAR_OVERSHOOT_CUT, DISTANCE_FLOOR, DISTANCE_OVERSHOOT, EVIDENCE_T,
                                       MOVED, NO_DISTANCE, OPPOSED_UNDO_DISTANCE, RAISE_CEILING, RAISE_PUNISHED, GatedMove,
                                       gate_move,
                                       opposed_raise_undo, punished_cut_undo)


def features(**overrides):
    base = {"objective_trend": -0.05, "grad_alignment": 0.0, "grad_alignment_t": 0.0, "objective_vs_first": -0.5,
            "param_drift": 0.2, "log10_lr_scale": 0.0}
    base.update(overrides)
    return base


def move(requested, feats, *, scale=1.0, min_scale=1e-3, last_applied=1.0, first=False, anneals=False,
         standing_raise=1.0, distance_debt=1.0, restore_punished=False, last_rule=None, max_scale=math.inf,
         raise_in_force=1.0):
    return gate_move(requested, feats, first=first, schedule_anneals=anneals, scale=scale, min_scale=min_scale,
                     last_applied=last_applied, standing_raise=standing_raise, distance_debt=distance_debt,
                     restore_punished=restore_punished, last_rule=last_rule, max_scale=max_scale,
                     raise_in_force=raise_in_force)


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


def test_under_heavy_ball_momentum_an_opposed_gradient_cuts_only_with_a_worse_metric():
    overshoot = features(grad_alignment=-0.3, grad_alignment_t=-4.0, heavy_ball=1.0)
    for requested in (0.5, 1.0, 2.0):
        kept = move(requested, overshoot)
        assert kept.multiplier == 1.0 and (kept.held or requested == 1.0)
    held = move(0.5, overshoot)
    assert held.why.startswith("cut held: the gradient opposes the previous steps (alignment -0.30, t=-4.0), but under "
                               "heavy-ball momentum (SGD)")
    assert move(1.0, overshoot).why.startswith("no fixed cut: the gradient opposes the previous steps (t=-4.0), but under "
                                               "heavy-ball momentum (SGD)")
    assert move(1.0, {k: v for k, v in overshoot.items() if k != "heavy_ball"}).multiplier == CLEAR_OVERSHOOT_CUT
    worse = dict(overshoot, objective_trend=0.05)
    cut = move(0.5, worse)
    assert cut.multiplier == 0.5 and cut.why.startswith("cut: the metric got worse and the gradient opposes")


def test_the_distance_cut_stops_at_its_floor_and_a_punished_raise_is_taken_back_whatever_the_policy_asks():
    far = features(param_drift=2 * MOVED, lr_over_distance=4 * DISTANCE_OVERSHOOT, log10_lr_scale=-1.1)
    scale = 10 ** -1.1  # above 1/16: one more halving would go below it
    cut = move(0.5, far, scale=scale)
    assert cut.multiplier == pytest.approx(DISTANCE_FLOOR / scale) and "as far as 1/16 of the user's LR" in cut.why
    punished = features(objective_trend=RAISE_PUNISHED + 0.01, grad_alignment=0.05, grad_alignment_t=3.0)
    undo = move(2.0, punished, scale=2.0, last_applied=2.0)
    assert undo.multiplier == 0.5 and not undo.held and undo.why.startswith("undo: the metric got worse")
    assert move(2.0, punished, scale=2.0, last_applied=1.0).held, "no raise to undo: a worse metric holds the raise"


@pytest.mark.parametrize("anneals", [False, True])
def test_an_earlier_raise_is_taken_back_once_the_run_has_lost_all_it_gained_since(anneals):
    lost = features(objective_trend=RAISE_PUNISHED + 0.04, objective_since_raise=RAISE_PUNISHED + 0.01)
    undo = move(0.8, lost, scale=2.0, standing_raise=2.0, anneals=anneals)  # the policy's milder cut is held
    assert undo.multiplier == 0.5 and not undo.held
    assert undo.why.startswith("undo: the metric is 2.0% worse than at the evaluation that made the last raise (x2)")
    assert undo.why.endswith("the raise did not pay and is taken back (x0.5), the policy asked for x0.8")
    assert move(2.0, lost, scale=2.0, standing_raise=2.0).multiplier == 0.5, "whatever the policy asks"
    assert move(0.5, lost, scale=4.0, standing_raise=1.25).multiplier == 0.5, "a deeper cut that goes through stays"
    # still ahead of where the raise was made, or not worse since the last decision: the raise stands
    assert move(1.0, features(objective_trend=0.05, objective_since_raise=RAISE_PUNISHED), scale=2.0,
                standing_raise=2.0).multiplier == 1.0
    assert move(1.0, features(objective_trend=RAISE_PUNISHED, objective_since_raise=0.2), scale=2.0,
                standing_raise=2.0).multiplier == 1.0
    assert move(1.0, lost, scale=2.0, standing_raise=1.0).multiplier == 1.0, "no raise standing"


@pytest.mark.parametrize("anneals", [False, True])
def test_a_raise_in_force_is_taken_back_once_the_gradient_opposes_the_steps_while_the_metric_still_improves(anneals):
    # a pretrained GPT-2 fine-tuned at its good LR: raised on its aligned first steps, then t = -2 to -5 with the
    # alignment a few hundredths below zero (no clear overshoot) while the loss still fell
    opposed = features(objective_trend=-0.03, grad_alignment=-0.02, grad_alignment_t=-EVIDENCE_T, alignment_steps=32,
                       lr_over_distance=0.5)
    for requested in (0.8, 1.0, 2.0):  # a milder cut, a keep, a raise: the raise is taken back whatever the policy asks
        undo = move(requested, opposed, scale=2.0, raise_in_force=2.0, anneals=anneals)
        assert undo.multiplier == 0.5 and not undo.held and undo.rule == "opposed_undo"
        assert undo.why == ("undo: the gradient now opposes the previous steps (alignment -0.02, t=-2.0) after the last "
                            "raise (x2), and the LR is 0.5 times the distance estimate: the steps are no longer too short, "
                            f"the raise is taken back (x0.5), the policy asked for x{requested:g}")
    assert move(1.0, opposed, scale=4.0, raise_in_force=1.5).multiplier == pytest.approx(1 / 1.5), "what it applied"
    worse = {**opposed, "objective_trend": RAISE_PUNISHED + 0.01, "previous_grad_alignment_t": -EVIDENCE_T}
    assert move(0.25, worse, scale=2.0, raise_in_force=2.0, anneals=anneals).multiplier == 0.25, "a deeper cut stays"
    for why, feats, in_force in [
            ("no raise in force", opposed, 1.0),
            ("the gradient short of the bar", {**opposed, "grad_alignment_t": -EVIDENCE_T + 0.01}, 2.0),
            ("the alignment not below zero", {**opposed, "grad_alignment": 0.0}, 2.0),
            ("under heavy-ball momentum", {**opposed, "heavy_ball": 1.0}, 2.0),
            ("no step of the interval measured", {**opposed, "alignment_steps": 0}, 2.0),
            # far short of the distance estimate: Adam's short-horizon bias on a run still climbing toward its LR
            ("short of the estimate", {**opposed, "lr_over_distance": OPPOSED_UNDO_DISTANCE - 0.01}, 2.0),
            ("no positive estimate", {**opposed, "lr_over_distance": NO_DISTANCE}, 2.0),
            ("no distance reading", {k: v for k, v in opposed.items() if k != "lr_over_distance"}, 2.0),
            # the interval after the raise gained at least as much as the one before it: the raise paid
            ("the raise sped the metric up", {**opposed, "objective_trend_before_raise": -0.05,
                                              "objective_trend_after_raise": -0.05}, 2.0)]:
        assert opposed_raise_undo(feats, in_force) is None, why
        assert move(1.0, feats, scale=2.0, raise_in_force=in_force).multiplier == 1.0, why
    assert opposed_raise_undo(opposed, 2.0) == 0.5
    slowed = {**opposed, "objective_trend_before_raise": -0.10, "objective_trend_after_raise": -0.06}
    assert opposed_raise_undo(slowed, 2.0) == 0.5, "the fine-tune's: 10% before the raise, 6% after"
    assert opposed_raise_undo({**opposed, "lr_over_distance": OPPOSED_UNDO_DISTANCE}, 2.0) == 0.5, "the bar itself"


def test_the_gate_takes_the_distance_cuts_back_by_itself_only_while_nothing_reads_against_it():
    crawling = features(log10_lr_scale=-1.2, lr_over_distance=0.3, param_drift=2 * MOVED, grad_alignment_t=-1.0)
    scale = 1 / 16
    restored = move(0.8, crawling, scale=scale, distance_debt=1 / 16)
    assert restored.multiplier == 2.0 and not restored.held and restored.rule == "restore"
    assert restored.why.startswith("restore: the distance check cut the LR, and the estimate has since grown past it "
                                   "(the LR is 0.3 times the distance estimate)")
    assert restored.why.endswith("the cut is taken back (x2, toward the user's LR), the policy asked for x0.8")
    # under a schedule that anneals by itself, the LR it decays from is read, not the decayed one
    annealed = move(0.8, {**crawling, "lr_over_distance": 0.05, "planned_lr_over_distance": 0.3}, scale=scale,
                    distance_debt=1 / 16, anneals=True)
    assert annealed.multiplier == 2.0 and annealed.rule == "restore"
    assert "(the LR the schedule decays from is 0.3 times the distance estimate)" in annealed.why
    # as far as the check's own cuts, and the user's LR, at most: another rule's cut stays
    assert move(1.0, crawling, scale=scale, distance_debt=0.8).multiplier == pytest.approx(1.25)
    assert move(2.0, crawling, scale=0.75, distance_debt=1 / 16).multiplier == pytest.approx(1 / 0.75)
    assert move(1.0, crawling, scale=scale, distance_debt=1 / 16, last_applied=0.5, last_rule="distance").multiplier == 2.0
    # max_lr: as far as it, and no try at it
    assert move(1.0, crawling, scale=scale, distance_debt=1 / 16, max_scale=1.5 * scale).multiplier == pytest.approx(1.5)
    at_bound = move(1.0, crawling, scale=scale, distance_debt=1 / 16, max_scale=scale)
    assert at_bound.multiplier == 1.0 and at_bound.rule is None
    for why, feats, options in [
            ("the check's cuts are all taken back", crawling, {"distance_debt": 1.0}),
            ("under a schedule that anneals, the LR it decays from is past DISTANCE_SHORT",
             {**crawling, "lr_over_distance": 0.05, "planned_lr_over_distance": 0.6}, {"anneals": True}),
            ("the first evaluation", crawling, {"first": True}),
            ("right after another rule's cut", crawling, {"last_applied": 0.5}),
            ("a restore was taken back", crawling, {"restore_punished": True}),
            ("at the user's LR", {**crawling, "log10_lr_scale": 0.0}, {"scale": 1.0}),
            ("past DISTANCE_SHORT", {**crawling, "lr_over_distance": 0.6}, {}),
            ("the metric got worse", {**crawling, "objective_trend": RAISE_PUNISHED + 0.01}, {}),
            ("the gradient opposes the steps", {**crawling, "grad_alignment_t": -EVIDENCE_T}, {}),
            ("no step of the interval was measured", {**crawling, "alignment_steps": 0}, {}),
            ("right after a divergence's halving", crawling, {"last_rule": "divergence"}),
            ("the iterates bounce", {**crawling, "iterate_average_gain": AVERAGE_GAIN, "iterate_average_progress": 0.1},
             {})]:
        options = {"scale": scale, "min_scale": scale, "distance_debt": 1 / 16, **options}  # no fixed cut at the floor
        assert move(1.0, feats, **options).multiplier <= 1.0, why
    # a cut the gate lets through (the metric a little worse after progress, the gradient no longer along the
    # steps: a bounce on the valley floor) stays a cut
    floor = {**crawling, "objective_trend": RAISE_PUNISHED / 2, "grad_alignment": -0.01}
    cut = move(0.8, floor, scale=scale, distance_debt=1 / 16)
    assert cut.multiplier == 0.8 and cut.rule is None
    # the policy's own raise, as far as the restore or further, counts as the restore (the debt falls by it)
    aligned = {**crawling, "grad_alignment": 0.05, "grad_alignment_t": 3.0}
    own = move(2.0, aligned, scale=scale, distance_debt=1 / 16)
    assert own.multiplier == 2.0 and own.rule == "restore" and own.why.startswith("raise: the gradient keeps")


def test_the_gate_names_the_rule_of_each_move_a_later_decision_asks_about():
    far = features(param_drift=2 * MOVED, lr_over_distance=4 * DISTANCE_OVERSHOOT, log10_lr_scale=-0.3)
    assert move(1.0, far, scale=0.5).rule == "distance" and move(0.5, far, scale=0.5).rule == "distance"
    clipped = move(0.5, {**far, "log10_lr_scale": -1.0}, scale=0.1)  # the floor clips it: still the check's cut
    assert clipped.multiplier == pytest.approx(DISTANCE_FLOOR / 0.1) and clipped.rule == "distance"
    worse = features(objective_trend=RAISE_PUNISHED + 0.01, objective_since_raise=0.05)
    assert move(1.0, worse, scale=2.0, last_applied=2.0).rule == "undo_raise"
    assert move(1.0, worse, scale=2.0, standing_raise=2.0).rule == "unpaid_undo"
    assert move(1.0, worse, scale=0.5, last_applied=0.5).rule == "undo_cut"
    assert move(1.0, worse, scale=0.5, last_applied=0.5, last_rule="unpaid_undo").multiplier == 1.0, (
        "an unpaid raise's undo is not taken back as a punished cut")
    assert move(1.0, features()).rule is None


def test_the_stuck_run_cut_stops_at_the_users_lr_and_the_raise_past_the_hold_at_it_too():
    stuck = features(param_drift=2 * MOVED, objective_vs_first=0.0, stuck_evaluations=2, log10_lr_scale=0.176)
    cut = move(0.5, stuck, scale=1.5)
    assert cut.multiplier == pytest.approx(1 / 1.5) and "as far as the user's LR" in cut.why
    assert cut.why.startswith("cut: the parameters have moved by 2.00 of their starting norm")
    short = features(param_drift=2 * MOVED, objective_vs_first=-0.1, lr_over_distance=0.2, log10_lr_scale=-0.125,
                     grad_alignment=0.05, grad_alignment_t=3.0)
    raised = move(2.0, short, scale=0.75)
    assert raised.multiplier == pytest.approx(1 / 0.75) and raised.why.endswith("the policy asked for x2)")
    assert "as far as the user's LR" in raised.why


ALIGNED = {"grad_alignment": 0.05, "grad_alignment_t": 3.0}  # the gradient along the steps: a raise has evidence


def test_a_raise_goes_as_far_as_the_distance_estimate_and_is_held_there():
    capped = move(2.0, features(**ALIGNED, lr_over_distance=0.8 * RAISE_CEILING))
    assert not capped.held and capped.multiplier == pytest.approx(1.25)
    assert capped.why.startswith("raise: the gradient keeps pointing along the previous steps (t=+3.0)")
    assert capped.why.endswith("as far as the distance estimate (1 times it, x1.25, the policy asked for x2)")
    assert move(2.0, features(**ALIGNED, lr_over_distance=0.4 * RAISE_CEILING)).multiplier == 2.0, "room for x2"
    at = move(1.25, features(**ALIGNED, lr_over_distance=RAISE_CEILING))
    assert at.held and at.multiplier == 1.0
    assert at.why.startswith("raise held: the LR is 1 times the distance estimate (D-adaptation's bound")
    past = move(2.0, features(**ALIGNED, lr_over_distance=3.0), scale=4.0)
    assert past.held and past.multiplier == 1.0 and "the LR is 3 times the distance estimate" in past.why


@pytest.mark.parametrize("reading", [NO_DISTANCE, None])  # no positive estimate yet; no reading (SGD)
def test_without_a_positive_estimate_there_is_no_ceiling(reading):
    feats = features(**ALIGNED) if reading is None else features(**ALIGNED, lr_over_distance=reading)
    raised = move(2.0, feats)
    assert not raised.held and raised.multiplier == 2.0 and "distance estimate" not in raised.why


def test_the_ceiling_never_cuts_the_users_lr():
    past = features(**ALIGNED, lr_over_distance=5.0)  # far past the estimate, but below the distance check's bar
    assert move(1.0, past) == GatedMove(1.0, False, None)
    assert move(1.25, past, scale=0.5).multiplier == 1.0, "below the user's LR too: held, not cut"


def test_at_the_first_evaluation_a_raise_needs_a_clear_undershoot():
    faint = features(grad_alignment=0.05, grad_alignment_t=3.0)
    assert move(2.0, faint, first=True).held and not move(2.0, faint).held
    assert move(2.0, features(grad_alignment=0.3, grad_alignment_t=5.0), first=True).multiplier == 2.0


PUNISHED = {"objective_trend": RAISE_PUNISHED + 0.01}  # the metric worse right after the last decision, beyond noise


@pytest.mark.parametrize("requested", [0.5, 0.8, 1.0, 1.25])
def test_a_cut_the_next_evaluation_punishes_is_taken_back_whatever_the_policy_asks(requested):
    # after progress, with the gradient not opposing the steps: the last cut (x0.5) did not answer an overshoot
    undo = move(requested, features(**PUNISHED, grad_alignment=-0.05, grad_alignment_t=-1.5), scale=0.25,
                last_applied=0.5)
    assert undo.multiplier == 2.0 and not undo.held
    assert undo.why.startswith("undo: the metric got worse right after the last cut (by more than 1%)")
    assert undo.why.endswith(f"the cut is taken back (x2), the policy asked for x{requested:g}")
    assert move(requested, features(**PUNISHED), scale=0.25, last_applied=1.0).multiplier <= 1.0, "no cut to undo"


def test_a_punished_cut_is_taken_back_as_far_as_the_users_lr_at_most():
    undo = move(1.0, features(**PUNISHED), scale=0.8, last_applied=0.5)  # cut from 1.6, a raise of the controller's
    assert undo.multiplier == pytest.approx(1.25) and "as far as the user's LR" in undo.why
    assert punished_cut_undo(features(**PUNISHED), 0.5, scale=1.0) is None, "at the user's LR: nothing to take back"
    assert punished_cut_undo(features(**PUNISHED), 0.5, scale=2.0) is None, "above it: the cut took back a raise"


@pytest.mark.parametrize("reading, why", [
    ({"objective_trend": RAISE_PUNISHED}, "worse by no more than the noise bar"),
    ({"objective_vs_first": -0.1}, "before the run made progress (a plateau's noise, a stuck run)"),
    ({"grad_alignment": -0.05, "grad_alignment_t": -EVIDENCE_T}, "the gradient opposes the steps now"),
    ({"iterate_average_gain": AVERAGE_GAIN + 0.1, "iterate_average_progress": 0.0}, "the iterates bounce"),
    ({"param_drift": 2 * MOVED, "lr_over_distance": DISTANCE_OVERSHOOT}, "the steps are too long by both measures"),
    ({"lr_over_distance": DISTANCE_OVERSHOOT / 2}, "the takeback would take the LR past the distance check's bar"),
])
def test_a_punished_cut_stands_where_something_reads_an_overshoot_or_the_worse_metric_is_noise(reading, why):
    feats = features(**PUNISHED)
    feats.update(reading)
    assert punished_cut_undo(feats, 0.5, scale=0.25) is None, why
    assert punished_cut_undo(features(**PUNISHED), 0.5, scale=0.25) == 2.0
