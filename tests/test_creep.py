"""The creep: a metric that improves at every evaluation by almost nothing lets a raise through while the
alignment stays under its bar (``gate.creeping``, the controller's ``creep_gain``)."""

import json
import math

import pytest
import torch

from hf_metalr import MetaLRController
from hf_metalr.controller.gate import CREEP_EVALUATIONS, CREEP_GAIN, EVIDENCE_T, MOVED, RAISE_CEILING, gate_move
from signed_steps import signed_steps
from test_alignment import always

MIXED = [1, 1, 1, -1, -1, -1]  # 4 of the 5 counted steps along the previous one: t between 0 and the bar


def move(requested, **features):
    base = {"objective_trend": -0.0002, "grad_alignment": 0.05, "grad_alignment_t": 1.0, "objective_vs_first": -0.001,
            "param_drift": 0.02, "log10_lr_scale": 0.0}
    return gate_move(requested, {**base, **features}, first=False, schedule_anneals=False, scale=1.0, min_scale=1e-3,
                     last_applied=1.0, standing_raise=1.0, distance_debt=1.0, restore_punished=False, last_rule=None,
                     max_scale=math.inf)


def test_a_creep_lets_a_raise_through_only_while_the_gradient_does_not_oppose_the_steps():
    through = move(2.0, creep_gain=CREEP_GAIN / 4)
    assert through.multiplier == 2.0 and not through.held
    assert through.why.startswith(f"raise: the metric improved at each of the last {CREEP_EVALUATIONS} evaluations")
    assert move(2.0).held, "no creep: the alignment's bar holds the raise"
    assert move(2.0, creep_gain=CREEP_GAIN * 2).held, "a gain past the bar is progress, not a creep"
    assert move(2.0, creep_gain=CREEP_GAIN / 4, grad_alignment_t=-0.5).held, "the gradient opposes the steps"
    assert move(2.0, creep_gain=CREEP_GAIN / 4, grad_alignment_t=0.0).held, "t must be positive, not zero"
    assert move(2.0, creep_gain=CREEP_GAIN).held, "the bar itself is not a creep"
    assert move(1.0, creep_gain=CREEP_GAIN / 4).multiplier == 1.0, "a keep stays a keep"
    # the holds of every raise still hold it: the distance ceiling, a run that moved far without progress
    ceiling = move(2.0, creep_gain=CREEP_GAIN / 4, lr_over_distance=RAISE_CEILING)
    assert ceiling.held and "distance" in ceiling.why
    far = move(2.0, creep_gain=CREEP_GAIN / 4, param_drift=2 * MOVED)
    assert far.held and far.why.startswith("raise held: the parameters have moved by 2.00")
    # with the alignment past its bar the raise is the alignment's, and says so
    assert move(2.0, creep_gain=CREEP_GAIN / 4, grad_alignment_t=EVIDENCE_T).why.startswith("raise: the gradient keeps")


def _creeping_run(values, signs=MIXED):
    """A controller (always asking x2) that decided on ``values``, with ``signs`` steps before each."""
    theta = torch.nn.Parameter(torch.ones(8))
    ctrl = MetaLRController(0.01, policy=always(4), learn_online=False)
    ctrl.watch([theta])
    decisions = []
    for value in values:
        signed_steps(ctrl, theta, signs)
        decisions.append(ctrl.observe(value, stepped=True))
    return ctrl, theta, decisions


def test_the_controller_reads_the_creep_from_its_history_raises_on_it_and_counts_on_after_a_resume():
    values = [1.0, 0.99995, 0.9999, 0.99985, 0.9998]
    _, _, decisions = _creeping_run(values)
    assert all(0 < d.features["grad_alignment_t"] < EVIDENCE_T for d in decisions[1:]), "the alignment alone holds"
    assert [("creep_gain" in d.features) for d in decisions] == [False] * 4 + [True]
    assert decisions[-1].features["creep_gain"] == pytest.approx(math.log(1.0 / 0.9998), rel=1e-4)
    assert [d.applied for d in decisions] == [1.0] * 4 + [2.0]
    assert decisions[-1].evidence.startswith("raise: the metric improved at each of the last 4 evaluations, by 0.020%")
    # one evaluation that does not improve breaks the creep; so does a faster gain
    for broken in ([1.0, 0.99995, 0.99995, 0.99985, 0.9998], [1.0, 0.999, 0.998, 0.997, 0.996]):
        _, _, decisions = _creeping_run(broken)
        assert "creep_gain" not in decisions[-1].features or decisions[-1].features["creep_gain"] >= CREEP_GAIN
        assert decisions[-1].applied == 1.0
    # a resumed run reads the creep from the history its checkpoint carried
    ctrl, theta, _ = _creeping_run(values[:4])
    resumed = MetaLRController(0.01, policy=always(4), learn_online=False)
    resumed.watch([theta])
    resumed.load_state_dict(json.loads(json.dumps(ctrl.state_dict())))
    signed_steps(resumed, theta, MIXED)
    decision = resumed.observe(values[4], stepped=True)
    assert decision.applied == 2.0 and decision.features["creep_gain"] == pytest.approx(math.log(1.0 / 0.9998), rel=1e-4)


def test_a_divergence_breaks_the_creep():
    with pytest.warns(RuntimeWarning, match="treating it as a divergence"):
        _, _, decisions = _creeping_run([1.0, 0.99995, float("nan"), 0.9999, 0.99985, 0.9998])
    assert decisions[2].diverged and all("creep_gain" not in d.features for d in decisions[3:])
