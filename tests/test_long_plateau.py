"""The gate's halving on a long plateau: a run still at its first evaluation's level whose parameters
have moved and stopped moving while the LR is far past the distance estimate, at four evaluations in a
row, while a cut would start it over; the halving starts the run over from its first weights."""

import pytest
import torch

from hf_metalr import MetaLRController
from hf_metalr.controller.gate import (ANNEALED_DISTANCE_FLOOR, CLEAR_OVERSHOOT_CUT, DISTANCE_FLOOR, DRIFT_GROWTH_INTERVALS, LONG_PLATEAU_DISTANCE,
                                       LONG_PLATEAU_DRIFT, LONG_PLATEAU_DRIFT_GROWTH, LONG_PLATEAU_EVALUATIONS,
                                       NO_DISTANCE, STUCK, gate_move, long_plateau, long_plateau_calls_for_a_cut,
                                       long_plateau_cut)
from hf_metalr.reporting.trace_view import decision_kind
from test_alignment import always

PLATEAU = {"objective_trend": 0.0, "objective_vs_first": 0.0, "grad_alignment": 0.01, "grad_alignment_t": 0.3,
           "param_drift": 0.6, "lr_over_distance": 8.0, "drift_growth": 0.02,
           "long_plateau_evaluations": LONG_PLATEAU_EVALUATIONS, "start_weights_kept": 1.0, "log10_lr_scale": 0.0}


@pytest.mark.parametrize("changes, reads", [
    ({}, True),
    ({"lr_over_distance": LONG_PLATEAU_DISTANCE}, True),
    ({"lr_over_distance": LONG_PLATEAU_DISTANCE * 0.99}, False),  # steps not far past the estimate
    ({"lr_over_distance": 2.49}, True),  # a BART at 10x, on its plateau at chance after its early start-overs
    ({"lr_over_distance": 1.67}, False),  # the ALBERT at its good LR under cosine, on its plateau: left alone
    ({"lr_over_distance": NO_DISTANCE}, False),  # no positive estimate yet
    ({"lr_over_distance": None}, False),  # no reading (an optimizer whose step is not its LR)
    ({"param_drift": LONG_PLATEAU_DRIFT}, True),
    ({"param_drift": LONG_PLATEAU_DRIFT * 0.99}, False),  # the parameters have not gone anywhere
    ({"param_drift": None}, False),
    ({"objective_vs_first": -STUCK}, False),  # the run left its first level
    ({"objective_vs_first": -STUCK + 0.001}, True),
    ({"drift_growth": 5.0}, True),  # the state itself does not read whether the weights still move
    # the LR of the steps, under any schedule, not the LR an annealing schedule decays from
    ({"lr_over_distance": 1.0, "planned_lr_over_distance": 8.0}, False),
    ({"lr_over_distance": 8.0, "planned_lr_over_distance": 1.0}, True),
])
def test_a_long_plateau_is_read_on_the_level_the_drift_and_the_distance(changes, reads):
    features = {key: value for key, value in {**PLATEAU, **changes}.items() if value is not None}
    assert long_plateau(features) is reads


@pytest.mark.parametrize("changes, first, scale, cut", [
    ({}, False, 1.0, CLEAR_OVERSHOOT_CUT),
    ({}, True, 1.0, None),  # the first evaluation: nothing to count
    ({"long_plateau_evaluations": LONG_PLATEAU_EVALUATIONS - 1}, False, 1.0, None),
    ({"long_plateau_evaluations": LONG_PLATEAU_EVALUATIONS + 3}, False, 1.0, CLEAR_OVERSHOOT_CUT),  # again while it holds
    ({"drift_growth": LONG_PLATEAU_DRIFT_GROWTH}, False, 1.0, None),  # the weights still move
    ({"drift_growth": LONG_PLATEAU_DRIFT_GROWTH * 0.99}, False, 1.0, CLEAR_OVERSHOOT_CUT),
    ({"drift_growth": -0.5}, False, 1.0, CLEAR_OVERSHOOT_CUT),  # a fall: a plateau's bounce, not a way out
    ({"drift_growth": None}, False, 1.0, None),  # no reading (too few decisions, or a start-over among them)
    ({"start_weights_kept": 0.0}, False, 1.0, None),  # the cut would not start the run over (a warmup, progress)
    ({"start_weights_kept": None}, False, 1.0, None),
    ({"lr_over_distance": 1.0}, False, 1.0, None),  # a count not read on this decision's state
    ({}, False, 1.5 * DISTANCE_FLOOR, DISTANCE_FLOOR / (1.5 * DISTANCE_FLOOR)),  # as far as the floor
    ({}, False, DISTANCE_FLOOR, None),  # at the floor: nothing left to cut
])
def test_the_cut_on_a_long_plateau_halves_after_four_evaluations_once_the_weights_stop(changes, first, scale, cut):
    features = {key: value for key, value in {**PLATEAU, **changes}.items() if value is not None}
    result = long_plateau_cut(features, first=first, scale=scale)
    assert result == (None if cut is None else pytest.approx(cut))


def test_under_annealing_the_cut_stops_at_the_annealed_floor():
    assert long_plateau_cut(PLATEAU, first=False, scale=1.0, schedule_anneals=True) == CLEAR_OVERSHOOT_CUT
    assert long_plateau_cut(PLATEAU, first=False, scale=0.3, schedule_anneals=True) == pytest.approx(
        ANNEALED_DISTANCE_FLOOR / 0.3)
    assert long_plateau_cut(PLATEAU, first=False, scale=ANNEALED_DISTANCE_FLOOR, schedule_anneals=True) is None


def _move(requested, features, **options):
    options = {"first": False, "schedule_anneals": False, "scale": 1.0, "min_scale": 1e-3, "last_applied": 1.0,
               **options}
    return gate_move(requested, features, **options)


def test_the_gate_halves_whatever_the_policy_asks_and_says_why():
    for requested in (0.5, 1.0, 2.0):
        move = _move(requested, PLATEAU)
        assert move.multiplier == CLEAR_OVERSHOOT_CUT and not move.held and move.rule == "long_plateau"
        assert move.why == ("long plateau: still at the first evaluation's level at 4 evaluations in a row, the "
                            "parameters 0.6 of their starting norm from it and no longer moving away (the drift changed by +2% "
                            f"over {DRIFT_GROWTH_INTERVALS} intervals), the LR 8 times the distance estimate: cut (x0.5), "
                            f"the policy asked for x{requested:g}")
        entry = {"action": requested, "applied": move.multiplier, "evidence": move.why}
        assert decision_kind(entry) == "fixed", "also when the policy asked for the same halving"
    held = _move(0.25, PLATEAU)  # no evidence of an overshoot: the policy's cut is held, and the halving replaces it
    assert held.multiplier == CLEAR_OVERSHOOT_CUT and held.rule == "long_plateau"
    overshoot = {**PLATEAU, "grad_alignment": -0.3, "grad_alignment_t": -4.0}
    deeper = _move(0.25, overshoot)
    assert deeper.multiplier == pytest.approx(0.25) and deeper.rule != "long_plateau", "a deeper cut let through stands"
    for changes in ({"long_plateau_evaluations": 3}, {"drift_growth": 0.5}, {"objective_vs_first": -0.2}):
        assert _move(1.0, {**PLATEAU, **changes}).rule != "long_plateau", changes


def _noisy_valley(metric, decisions, warmup_steps=0):
    """Adam at 0.01 in a noisy quadratic valley whose floor lies 0.3 of the parameters' starting norm away
    (a gradient of 1-sigma noise per coordinate at every step), a decision every 20 steps, the policy
    always keeping, the metric reported ``metric(k)`` at decision ``k``. The parameters reach the valley
    and bounce around its floor: they have moved, and stop moving, with the LR several times the
    distance estimate. ``warmup_steps``: a linear warmup from a tenth of the LR, by a scheduler.
    ``(x, its start, the optimizer, the controller, the decisions, at each decision (x equals its start,
    len(optimizer.state)))``."""
    torch.manual_seed(0)
    start = torch.randn(50) * 0.1
    direction = torch.randn(50)
    floor = start + 0.3 * start.norm() * direction / direction.norm()
    x = torch.nn.Parameter(start.clone())
    noise = torch.Generator().manual_seed(1)
    optimizer = torch.optim.Adam([x], lr=0.01)
    scheduler = None
    if warmup_steps:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, 0.1 + 0.9 * step / warmup_steps))
    ctrl = MetaLRController(0.01, policy=always(2), learn_online=False).attach(optimizer, scheduler,
                                                                               total_steps=20 * decisions)
    out, seen = [], []
    for k in range(decisions):
        for _ in range(20):
            optimizer.zero_grad()
            loss = 1.5 * ((x - floor) ** 2).sum() + (torch.randn(50, generator=noise) * x).sum()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            ctrl.observe_train_loss(loss.item())
        out.append(ctrl.observe(metric(k)))
        seen.append((torch.equal(x.detach(), start), len(optimizer.state)))
    return x, start, optimizer, ctrl, out, seen


def test_adam_bouncing_on_a_valley_floor_at_its_first_level_is_halved_and_started_over_at_its_fifth_decision():
    """The metric held at the first evaluation's level: the count runs 0 to 4, the drift's growth is
    read from the fourth decision on (three intervals back) and is under the bar at the fifth, which
    halves the LR and starts the run over: the weights back, Adam's state cleared, the evidence and the
    history say so. After the start-over the drift's growth is not read until three decisions have
    passed without one. With a metric that leaves the first level the gate never cuts. Under a warmup
    the same run is halved and started over at its fifth decision as well, and plays its warmup again
    (before the replay a cut there would not have started the run over, and the rule held it: the
    halving alone cost more runs than it helped)."""
    x, start, optimizer, ctrl, decisions, seen = _noisy_valley(lambda k: 1.0, decisions=7)
    assert [d.features["long_plateau_evaluations"] for d in decisions[:5]] == [0, 1, 2, 3, 4]
    assert ["drift_growth" in d.features for d in decisions] == [False, False, False, True, True, False, False]
    assert [d.applied for d in decisions[:5]] == [1.0, 1.0, 1.0, 1.0, CLEAR_OVERSHOOT_CUT]
    cut = decisions[4]
    assert cut.features["drift_growth"] < LONG_PLATEAU_DRIFT_GROWTH
    assert cut.features["param_drift"] >= LONG_PLATEAU_DRIFT
    assert cut.features["lr_over_distance"] >= LONG_PLATEAU_DISTANCE
    assert cut.evidence.startswith("long plateau: still at the first evaluation's level at 4 evaluations in a row")
    assert cut.evidence.endswith("; a start-over on a long plateau: the weights went back to where the run started, and "
                                 "the optimizer's state is cleared: the run starts over at the cut LR")
    assert cut.rewound is True and cut.start_over == "long plateau" and seen[4] == (True, 0)
    assert ctrl.history[4]["rule"] == "long_plateau" and ctrl.history[4]["rewound"] is True
    assert ctrl.history[4]["start_over"] == "long plateau"
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005)
    assert decisions[5].features["param_drift"] < cut.features["param_drift"]
    from hf_metalr.reporting.trace_view import format_trace
    rows = format_trace([{"global_step": 100, "value": 1.0, "action": cut.multiplier, "applied": cut.applied,
                          "lr": cut.lr, "evidence": cut.evidence, "rewound": True}]).splitlines()
    assert rows[-1] == "  started over: a long plateau's cut, and the weights went back to where the run started"
    named = format_trace([{"global_step": 100, "value": 1.0, "action": 0.5, "applied": 0.5, "lr": 0.005,
                           "evidence": "cut", "rewound": True, "start_over": "long plateau"}]).splitlines()
    assert named[-1] == rows[-1], "the trace's start_over names the reason, whatever the evidence's words"
    _, _, _, leaving, left, _ = _noisy_valley(lambda k: 0.8 ** k, decisions=7)
    assert all(d.features["long_plateau_evaluations"] == 0 for d in left)
    assert all(h.get("rule") != "long_plateau" and not h.get("rewound") for h in leaving.history)
    _, _, _, warming, warmed, _ = _noisy_valley(lambda k: 1.0, decisions=7, warmup_steps=20)
    assert all(d.features["start_weights_kept"] == 1.0 for d in warmed[:5]), "kept under a warmup"
    assert [d.applied for d in warmed[:5]] == [1.0, 1.0, 1.0, 1.0, CLEAR_OVERSHOOT_CUT]
    assert warmed[4].rewound is True and warming.history[4]["rule"] == "long_plateau"
    assert warmed[4].evidence.endswith("the run starts over at the cut LR, its warmup played again")
    assert warming.warmup.factors == pytest.approx([min(1.0, 0.1 + 0.9 * k / 20) for k in range(21)])


def test_the_count_and_the_drift_growth_are_read_back_from_the_history_so_a_resumed_run_reads_them_on():
    ctrl = MetaLRController(1e-3, policy=always(2))
    ctrl.history = [{"features": {"long_plateau_evaluations": 2}, "rule": None}]
    assert ctrl._long_plateau_evaluations(PLATEAU, first=False) == 3
    assert ctrl._long_plateau_evaluations(PLATEAU, first=True) == 0
    assert ctrl._long_plateau_evaluations({**PLATEAU, "param_drift": 0.1}, first=False) == 0
    ctrl.history = [{"features": None, "diverged": True}]
    assert ctrl._long_plateau_evaluations(PLATEAU, first=False) == 1

    def entry(drift, **more):
        return {"features": {"param_drift": drift}, "rule": None, **more}

    ctrl.history = [entry(0.5), entry(0.55), entry(0.58)]
    assert ctrl._drift_growth(0.6) == pytest.approx((0.6 - 0.5) / 0.6), "three intervals back"
    ctrl.history = [entry(0.1), *ctrl.history]
    assert ctrl._drift_growth(0.6) == pytest.approx((0.6 - 0.5) / 0.6), "not four"
    ctrl.history = [entry(0.5), entry(0.55)]
    assert ctrl._drift_growth(0.6) is None, "two decisions: no reading"
    ctrl.history = [entry(0.9), entry(0.3, rewound=True), entry(0.4)]
    assert ctrl._drift_growth(0.5) is None, "a start-over among them"
    ctrl.history = [entry(0.9, rewound=True), entry(0.3), entry(0.4)]
    assert ctrl._drift_growth(0.5) is None, "the oldest measured before its own start-over"
    ctrl.history = [{"features": None, "diverged": True}, entry(0.3), entry(0.4)]
    assert ctrl._drift_growth(0.5) is None
    ctrl.history = [entry(0.5), entry(0.55), entry(0.58)]
    assert ctrl._drift_growth(0.0) is None


def test_a_cut_on_a_long_plateau_starts_the_run_over_whoever_made_it_and_no_keep_does():
    """The start-over is the long plateau's, not the gate's halving's: a cut of the policy's the gate let
    through (rule None) starts the run over too; a keep (a min_lr the halving cannot pass) does not."""
    import dataclasses

    x, start, optimizer, ctrl, decisions, _ = _noisy_valley(lambda k: 1.0, decisions=4)
    assert decisions[3].features["long_plateau_evaluations"] == 3 and not decisions[3].rewound
    state = {**decisions[3].features, "long_plateau_evaluations": LONG_PLATEAU_EVALUATIONS, "drift_growth": 0.02}
    assert long_plateau_calls_for_a_cut(state) and not torch.equal(x.detach(), start)
    kept = dataclasses.replace(decisions[3], applied=1.0, rule=None, features=state, evidence=None)
    ctrl._start_over_if_called_for(kept)
    assert kept.rewound is None and not torch.equal(x.detach(), start)
    let_through = dataclasses.replace(decisions[3], applied=0.25, rule=None, features=state, evidence="a cut")
    ctrl._start_over_if_called_for(let_through)
    assert let_through.rewound is True and torch.equal(x.detach(), start) and len(optimizer.state) == 0
    assert let_through.evidence.startswith("a cut; a start-over on a long plateau: the weights went back")
