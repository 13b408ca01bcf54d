"""The gradient-alignment signal and the direction gate: sign, scale-freeness, bounded sketch,
same value on every rank, resume, and the gate holding the policy to the evidence."""

import json
import math

import pytest
import torch

from hf_metalr import MetaLRController
from hf_metalr.controller import early_guard
from hf_metalr.controller.alignment import WINDOW, AlignmentWindow, GradientAlignment
from hf_metalr.controller.serialization import tensors_to_text, text_to_tensors
from hf_metalr.controller.gate import (CLEAR_OVERSHOOT_CUT, EVIDENCE_T, OVERSHOOT_ALIGNMENT, PLATEAU_EVIDENCE_T, MOVED,
                                       PROGRESS, RAISE_PUNISHED, STUCK, STUCK_EVALUATIONS, UNDERSHOOT_ALIGNMENT,
                                       clear_overshoot, direction_gate, punished_raise_undo)
from hf_metalr.controller.policy import PolicyNetwork, random_policy
from signed_steps import signed_steps


def quadratic_run(lr, steps=30, *, grad_scale=1.0, alignment=None, dim=50, seed=0):
    """SGD on 0.5 * |A θ|^2 with a noiseless gradient; returns the watched parameter's alignment."""
    torch.manual_seed(seed)
    theta = torch.nn.Parameter(torch.randn(dim))
    curvature = torch.linspace(0.5, 1.0, dim)
    optimizer = torch.optim.SGD([theta], lr=lr)
    alignment = alignment or GradientAlignment([theta], seed=0)
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * (curvature * theta**2).sum() * grad_scale).backward()
        if grad_scale != 1.0:
            theta.grad /= grad_scale  # what an optimizer sees after unscaling; the cosine must not care either way
        alignment.before_step()
        optimizer.step()
        alignment.after_step()
    return alignment


def test_sign_says_which_way_the_lr_is_wrong():
    too_low = quadratic_run(0.05).take()
    overshooting = quadratic_run(3.5).take()  # lr * curvature in (1.75, 3.5): every step jumps past the minimum
    assert too_low.steps == 29 and too_low.ratio > 0.9 and too_low.t > EVIDENCE_T
    assert overshooting.ratio < -0.9 and overshooting.t < -EVIDENCE_T


def test_cosine_is_scale_free():
    plain = quadratic_run(0.05).take()

    def scaled_run():
        torch.manual_seed(0)
        theta = torch.nn.Parameter(torch.randn(50))
        curvature = torch.linspace(0.5, 1.0, 50)
        optimizer = torch.optim.SGD([theta], lr=0.05)
        alignment = GradientAlignment([theta], seed=0)
        for _ in range(30):
            optimizer.zero_grad()
            (0.5 * (curvature * theta**2).sum()).backward()
            unscaled = theta.grad.clone()
            theta.grad *= 1024.0  # an fp16 loss scale left in the gradient the alignment reads
            alignment.before_step()
            theta.grad.copy_(unscaled)
            optimizer.step()
            alignment.after_step()
        return alignment.take()

    scaled = scaled_run()
    assert scaled.ratio == pytest.approx(plain.ratio, rel=1e-5) and scaled.t == pytest.approx(plain.t, rel=1e-4)


def test_sketch_is_bounded_and_the_same_for_the_same_seed():
    params = [torch.nn.Parameter(torch.zeros(1000, 1000)), torch.nn.Parameter(torch.zeros(3000)), torch.nn.Parameter(torch.zeros(7))]
    a = GradientAlignment(params, sketch_size=1024, seed=3)
    b = GradientAlignment(params, sketch_size=1024, seed=3)
    c = GradientAlignment(params, sketch_size=1024, seed=4)
    assert 1000 <= a.coordinates <= 1024
    assert a._runs == b._runs and a._runs != c._runs
    assert len(a._runs) <= 1024 // WINDOW, "windows of WINDOW: at most sketch_size / WINDOW runs to copy per step"
    small = GradientAlignment([torch.nn.Parameter(torch.zeros(10))], sketch_size=1024)
    assert small.coordinates == 10, "a model smaller than the sketch is read whole"
    tiny_sketch = GradientAlignment(params, sketch_size=100, seed=3)
    assert tiny_sketch.coordinates <= 100, "a sketch smaller than one window still keeps its bound"


def test_a_parameter_without_gradient_does_not_silence_the_signal():
    """An unused head (requires_grad, but never in the loss) keeps grad None; its coordinates read
    as zeros instead of dropping every step."""
    torch.manual_seed(0)
    used, unused = torch.nn.Parameter(torch.randn(4000)), torch.nn.Parameter(torch.randn(4000))
    optimizer = torch.optim.SGD([used, unused], lr=0.05)
    alignment = GradientAlignment([used, unused], sketch_size=2048, seed=1)
    assert {i for i, _, _ in alignment._runs} == {0, 1}, "both parameters are in the sketch"
    for _ in range(20):
        optimizer.zero_grad(set_to_none=True)
        (0.5 * (used**2).sum()).backward()
        alignment.before_step()
        optimizer.step()
        alignment.after_step()
    window = alignment.take()
    assert window.steps == 19 and window.ratio > 0.9 and window.t > 2


def test_non_contiguous_parameters_are_read_fresh():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(8, 6).t())  # a transposed, non-contiguous parameter
    assert not weight.is_contiguous()
    optimizer = torch.optim.SGD([weight], lr=0.05)
    alignment = GradientAlignment([weight])
    for _ in range(10):
        optimizer.zero_grad()
        (0.5 * (weight**2).sum()).backward()
        alignment.before_step()
        optimizer.step()
        alignment.after_step()
    window = alignment.take()
    assert window.steps == 9 and window.ratio > 0.9, "a frozen copy would show no update and add no step"


def test_skipped_step_adds_nothing():
    theta = torch.nn.Parameter(torch.ones(4))
    alignment = GradientAlignment([theta])
    for grad in (torch.ones(4), torch.ones(4), torch.full((4,), float("inf"))):
        theta.grad = grad.clone()
        alignment.before_step()
        if torch.isfinite(grad).all():
            with torch.no_grad():
                theta -= 0.1 * grad
        alignment.after_step()  # the inf step updates nothing (as a skipped fp16 step): a zero update
    theta.grad = torch.ones(4)
    alignment.before_step()
    window = alignment.take()
    assert window.steps == 1 and window.ratio == pytest.approx(1.0), "the inf gradient and the zero update are skipped"


def test_state_dict_resumes_exactly():
    full = quadratic_run(0.05, steps=30)
    uninterrupted = full.take()
    first = quadratic_run(0.05, steps=12)
    state = json.loads(json.dumps(first.state_dict()))
    # a new process: same model at the checkpoint, same seed; the remaining 18 steps
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.randn(50))
    curvature = torch.linspace(0.5, 1.0, 50)
    optimizer = torch.optim.SGD([theta], lr=0.05)
    for _ in range(12):
        optimizer.zero_grad()
        (0.5 * (curvature * theta**2).sum()).backward()
        optimizer.step()
    resumed = GradientAlignment([theta], seed=0)
    resumed.load_state_dict(state)
    for _ in range(18):
        optimizer.zero_grad()
        (0.5 * (curvature * theta**2).sum()).backward()
        resumed.before_step()
        optimizer.step()
        resumed.after_step()
    window = resumed.take()
    assert window.to_list() == pytest.approx(uninterrupted.to_list(), rel=1e-5)
    assert resumed.distance.value() == pytest.approx(full.distance.value(), rel=1e-5) and full.distance.value() > 0
    with pytest.raises(ValueError, match="does not fit this model"):
        GradientAlignment([torch.nn.Parameter(torch.zeros(7))], seed=0).load_state_dict(state)


FEATURES = {"objective_trend": -0.1, "objective_vs_first": -1.0, "grad_alignment": 0.2, "grad_alignment_t": 4.0}
SETTLING = {"objective_trend": 0.2, "objective_vs_first": -1.0, "grad_alignment": -0.01, "grad_alignment_t": -0.5}


@pytest.mark.parametrize(
    "multiplier, changes, held",
    [
        (2.0, {}, None),  # aligned and improving: the LR is too low, a raise goes through
        (2.0, {"grad_alignment_t": 1.0}, "raise held: no evidence"),
        (2.0, {"grad_alignment": -0.01}, "raise held: no evidence"),
        (2.0, {"objective_trend": RAISE_PUNISHED + 0.001}, "raise held: the metric got worse"),
        (2.0, {"objective_trend": RAISE_PUNISHED}, None),  # worse by a plateau's noise: the evidence decides
        # the parameters went a long way while the metric stayed at its first level: whatever the alignment, no raise
        (2.0, {"param_drift": MOVED, "objective_vs_first": 0.0}, "raise held: the parameters have moved by 1.00"),
        (2.0, {"param_drift": 4.0, "objective_vs_first": -STUCK + 0.001}, "raise held: the parameters have moved"),
        # ... nor while the metric is not yet PROGRESS below its first level (a run just leaving a plateau at a good
        # LR, whose steps went far before it moved: a raise then overshoots)
        (2.0, {"param_drift": 4.0, "objective_vs_first": -STUCK}, "raise held: the parameters have moved"),
        (2.0, {"param_drift": MOVED, "objective_vs_first": -PROGRESS + 0.001}, "raise held: the parameters have moved"),
        (2.0, {"param_drift": 4.0, "objective_vs_first": -PROGRESS}, None),  # progress: the evidence decides
        (2.0, {"param_drift": MOVED - 0.01, "objective_vs_first": 0.0}, None),  # not that far yet
        # ... and, stuck there for STUCK_EVALUATIONS evaluations in a row above the user's LR (after a raise of the
        # controller's), a cut the policy asks for goes through, whatever the alignment and the trend: the raise went
        # far and gained nothing
        (0.5, {"param_drift": MOVED, "objective_vs_first": 0.0, "stuck_evaluations": STUCK_EVALUATIONS,
               "log10_lr_scale": 0.3}, None),
        (0.8, {"param_drift": 4.0, "objective_vs_first": -STUCK + 0.001, "grad_alignment": 0.3, "stuck_evaluations": 5,
               "log10_lr_scale": 0.3}, None),
        (0.5, {"param_drift": 4.0, "objective_vs_first": 0.0, "stuck_evaluations": 3, "log10_lr_scale": 1e-5}, None),
        (0.5, {"param_drift": 4.0, "objective_vs_first": 0.0, "stuck_evaluations": STUCK_EVALUATIONS - 1,
               "log10_lr_scale": 0.3},
         "cut held: the metric did not get worse"),  # stuck at one evaluation only: a late first evaluation can do that
        # the count alone is not enough: the state must hold now
        (0.5, {"param_drift": 4.0, "objective_vs_first": -STUCK, "stuck_evaluations": 3, "log10_lr_scale": 0.3},
         "cut held: the metric did not"),
        (0.5, {"param_drift": MOVED - 0.01, "objective_vs_first": 0.0, "stuck_evaluations": 3, "log10_lr_scale": 0.3},
         "cut held: the metric did"),
        # ... never at or below the user's LR: a post-LN transformer on its plateau at a good LR drifts as far as a
        # collapsed one at 10x, so being stuck does not say which way the LR is wrong (and the trace says so)
        (0.5, {"param_drift": 4.0, "objective_vs_first": 0.0, "stuck_evaluations": 3},
         "cut held: the parameters have moved by 4.00 of their starting norm while the metric stayed at its first "
         "evaluation's level (3 evaluations in a row), but the LR is not above the user's"),
        (0.5, {"param_drift": 4.0, "objective_vs_first": 0.0, "stuck_evaluations": 3, "log10_lr_scale": 1e-9},
         "cut held: the parameters have moved by 4.00"),
        (0.5, {"param_drift": 4.0, "objective_vs_first": 0.0, "stuck_evaluations": 3, "log10_lr_scale": -0.1},
         "cut held: the parameters have moved by 4.00"),
        # a worse metric before progress with no opposing gradient would hold it; here it goes through
        (0.5, {"param_drift": 4.0, "objective_vs_first": 0.0, "objective_trend": 0.05, "grad_alignment_t": 0.0,
               "stuck_evaluations": 2, "log10_lr_scale": 0.3}, None),
        # worse (by more than a plateau's noise) while moved far without progress: the steps go far and lose ground,
        # a cut goes through at once, whatever the alignment (below the initial LR it says nothing: held as any cut
        # before progress)
        (0.5, {"param_drift": MOVED, "objective_vs_first": -PROGRESS + 0.01, "objective_trend": RAISE_PUNISHED + 0.001,
               "grad_alignment_t": 0.0}, None),
        (0.5, {"param_drift": 4.0, "objective_vs_first": -0.1, "objective_trend": RAISE_PUNISHED, "grad_alignment_t": 0.0},
         "cut held: the metric got worse, but before the run has made progress"),  # a plateau's noise: no
        (0.8, {"param_drift": 4.0, "objective_vs_first": 0.1, "objective_trend": 0.05, "grad_alignment": 0.3,
               "grad_alignment_t": 4.0}, None),
        (0.5, {"param_drift": 4.0, "objective_vs_first": -0.1, "objective_trend": 0.05, "grad_alignment_t": 0.0,
               "log10_lr_scale": -0.1}, "cut held: the metric got worse, but before the run has made progress"),
        (0.5, {"param_drift": 4.0, "objective_vs_first": -0.1, "objective_trend": 0.05, "grad_alignment_t": 0.0,
               "log10_lr_scale": -1e-5}, "cut held: the metric got worse, but before the run has made progress"),
        (0.5, {"param_drift": 4.0, "objective_vs_first": -0.1, "objective_trend": 0.05, "grad_alignment_t": 0.0,
               "log10_lr_scale": -1e-9}, None),  # the user's LR, up to rounding
        # the drift and the metric are its evidence: it does not need a measured alignment (a warmup's interval)
        (0.5, {"param_drift": 4.0, "objective_vs_first": -0.1, "objective_trend": 0.05, "grad_alignment_t": 0.0,
               "alignment_steps": 0}, None),
        # a keep or a raise in that state: the keep goes through, the raise is held as in any run that went far
        (1.0, {"param_drift": 4.0, "objective_vs_first": -0.1, "objective_trend": 0.05}, None),
        (2.0, {"param_drift": 4.0, "objective_vs_first": -0.1, "objective_trend": 0.005}, "raise held: the parameters"),
        (0.5, {"param_drift": 4.0, "objective_vs_first": -0.1, "objective_trend": 0.0, "grad_alignment_t": 0.0},
         "cut held: the metric did not get worse"),
        (0.5, {"param_drift": MOVED - 0.01, "objective_vs_first": -0.1, "objective_trend": 0.05, "grad_alignment_t": 0.0},
         "cut held: the metric got worse, but before the run has made progress"),
        (0.5, {"param_drift": 4.0, "objective_vs_first": -PROGRESS, "objective_trend": 0.05, "grad_alignment": 0.2},
         "cut held: the metric got worse, but the gradient still points"),  # after progress: the usual rules
        (0.5, {"param_drift": 0.5, "objective_vs_first": 0.0, "objective_trend": 0.05, "grad_alignment_t": 0.0},
         "cut held: the metric got worse, but before the run has made progress (the objective, the loss or 1 - the score, 26% below"),
        (0.5, {}, "cut held: the metric did not get worse"),  # improving with no sign of overshoot: keep
        # worse and overshooting: a cut goes through
        (0.5, {"grad_alignment_t": -EVIDENCE_T, "grad_alignment": -0.05, "objective_trend": 0.05}, None),
        # improving (or level): a slight but significant overshoot, what Adam reads at a good LR (the short-horizon
        # bias), is held; a clear one goes through
        (0.5, {"grad_alignment_t": -5.0, "grad_alignment": -0.05}, "cut held: the metric did not get worse"),
        (0.5, {"grad_alignment_t": -5.0, "grad_alignment": -0.05, "objective_trend": 0.0}, "cut held: the metric did"),
        (0.5, {"grad_alignment_t": -EVIDENCE_T, "grad_alignment": -OVERSHOOT_ALIGNMENT}, None),
        (0.5, {"grad_alignment_t": -EVIDENCE_T + 0.1, "grad_alignment": -0.5}, "cut held: the metric did not get worse"),
        # before any progress the clear overshoot needs the plateau's stricter t as well
        (0.5, {"grad_alignment_t": -2.5, "grad_alignment": -0.3, "objective_vs_first": 0.0},
         "cut held: the metric did not get worse"),
        (0.5, {"grad_alignment_t": -PLATEAU_EVIDENCE_T, "grad_alignment": -0.3, "objective_vs_first": 0.0}, None),
        # before any progress (a plateau at the initial loss) a cut needs the stricter evidence: one by chance traps the run
        (0.5, {"grad_alignment_t": -EVIDENCE_T, "grad_alignment": -0.05, "objective_vs_first": 0.0, "objective_trend": 0.05},
         "cut held: the metric got worse, but before the run has made progress (the objective, the loss or 1 - the score, 26% below"),
        (0.5, {"grad_alignment_t": -PLATEAU_EVIDENCE_T, "grad_alignment": -0.05, "objective_vs_first": 0.0,
               "objective_trend": 0.05}, None),
        # worse by noise on a plateau at the first level: no cut
        (0.5, {"grad_alignment_t": 0.0, "objective_trend": 0.02, "objective_vs_first": 0.0},
         "cut held: the metric got worse, but before"),
        (0.5, SETTLING, None),  # worse after progress, steps no longer aligned: bouncing on a valley floor, cut
        (0.8, {**SETTLING, "objective_vs_first": -PROGRESS}, None),  # progress exactly at the bar counts
        (0.5, {**SETTLING, "objective_vs_first": -PROGRESS + 0.01}, "cut held: the metric got worse, but before"),  # no
        # progress yet
        (0.5, {**SETTLING, "grad_alignment": 0.01}, "cut held: the metric got worse, but the gradient still points"),
        (0.5, {**SETTLING, "objective_trend": 0.0}, "cut held: the metric did not get worse"),
        (1.0, {"grad_alignment_t": -4.0, "objective_trend": 0.5}, None),  # keep is never held
    ],
)
def test_direction_gate(multiplier, changes, held):
    reason = direction_gate(multiplier, {**FEATURES, **changes})
    assert (reason is None) if held is None else reason.startswith(held)


@pytest.mark.parametrize("ratio, late, held", [
    (UNDERSHOOT_ALIGNMENT, None, None), (UNDERSHOOT_ALIGNMENT - 0.01, None, "raise held: at the first"),
    # the later half of the first interval's steps must read a clear undershoot as well: the descent from the
    # initialization reads as too short at any LR, and a run that reaches a plateau within it reads the descent
    (0.13, UNDERSHOOT_ALIGNMENT, None), (0.13, 0.3, None),
    (0.13, UNDERSHOOT_ALIGNMENT - 0.01, "raise held: at the first evaluation a raise needs a clear undershoot up to the "
                                        "interval's end, and the later half of its steps reads +0.09"),
])
def test_a_raise_at_the_first_evaluation_needs_a_clear_undershoot(ratio, late, held):
    features = {**FEATURES, "grad_alignment": ratio, "grad_alignment_t": 5.0}
    if late is not None:
        features["grad_alignment_late"] = late
    reason = direction_gate(2.0, features, first=True)
    assert (reason is None) if held is None else reason.startswith(held)
    assert direction_gate(2.0, features) is None, "later, with a metric that did not get worse, the reading is enough"


@pytest.mark.parametrize("initial_lr, scale, cut", [(0.0175, 2.0, 0.5), (0.028, 1.25, 0.8)])
def test_a_stuck_run_whose_parameters_went_far_gets_one_cut(initial_lr, scale, cut):
    """The linear loss of test_a_stuck_run_whose_parameters_went_far_gets_no_raise, above the user's
    LR (after a raise of the controller's, say: x2, or x1.25), with a policy that always asks for a
    halving: held while the drift is under 1 (the metric does not get worse and the alignment reads
    +1), held at the first evaluation past it (stuck at one evaluation), let through at the next (two
    in a row), but only as far as the user's LR (from x1.25, x0.8), and held there, the trace saying
    why. The count of stuck evaluations is read back from the history, so a run resumed between them
    counts on."""
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.ones(16))
    optimizer = torch.optim.SGD([theta], lr=initial_lr)

    def controller():
        ctrl = MetaLRController(initial_lr, policy=always(0), learn_online=False)  # 0: x0.5
        ctrl.watch([theta])
        return ctrl

    ctrl = controller()
    ctrl.scale = scale  # the same 0.035 in both cases
    ctrl.scale_param_groups(optimizer)
    decisions = []
    for _ in range(8):
        for _ in range(10):
            optimizer.zero_grad()
            theta.sum().backward()
            ctrl.before_optimizer_step()
            optimizer.step()
            ctrl.after_optimizer_step()
        decisions.append(ctrl.observe(1.0))
        ctrl.scale_param_groups(optimizer)
        if decisions[-1].features["stuck_evaluations"] == 1:  # resume between the two stuck evaluations
            state = json.loads(json.dumps(ctrl.state_dict()))
            ctrl = controller()
            ctrl.load_state_dict(state)
    applied = [d.applied for d in decisions]
    first_far = next(i for i, d in enumerate(decisions) if d.features["param_drift"] >= MOVED)
    assert [d.features["stuck_evaluations"] for d in decisions[first_far:first_far + 3]] == [1, 2, 3]
    assert first_far >= 2 and applied[:first_far + 1] == [1.0] * (first_far + 1)
    assert decisions[first_far].gate.startswith("cut held: the metric did not get worse")
    assert applied[first_far + 1] == pytest.approx(cut)
    assert decisions[first_far + 1].evidence.startswith("cut: the parameters have moved")
    assert "(2 evaluations in a row)" in decisions[first_far + 1].evidence
    assert ("as far as the user's LR (x0.8, the policy asked for x0.5)" in decisions[first_far + 1].evidence) == (cut == 0.8)
    assert applied[first_far + 2:] == [1.0] * (len(decisions) - first_far - 2)
    assert all(d.gate.startswith("cut held: the parameters have moved by") and "not above the user's" in d.gate
               for d in decisions[first_far + 2:])
    assert ctrl.scale == pytest.approx(1.0) and optimizer.param_groups[0]["lr"] == pytest.approx(initial_lr)


def test_the_stuck_count_skips_the_first_evaluation_and_restarts_after_progress():
    """The linear loss again, with 30 steps before the first evaluation (a drift of 1.05 there) and a
    policy that always asks for a cut: the count is 0 at the first evaluation, 1 at the second, and
    back to 0 at an evaluation 10% below the first. No cut at the second (stuck at one evaluation
    only, the metric level); the fourth, back at the first level, lost ground after moving far, so
    its cut goes through at once; none after it, below the initial LR, though the count goes on."""
    theta = torch.nn.Parameter(torch.ones(16))
    optimizer = torch.optim.SGD([theta], lr=0.035)
    ctrl = MetaLRController(0.035, policy=always(0), learn_online=False)  # 0: x0.5
    ctrl.watch([theta])
    decisions = []
    for steps, value in ((30, 1.0), (10, 1.0), (10, 0.9), (10, 1.0), (10, 1.0), (10, 1.0)):
        for _ in range(steps):
            optimizer.zero_grad()
            theta.sum().backward()
            ctrl.before_optimizer_step()
            optimizer.step()
            ctrl.after_optimizer_step()
        decisions.append(ctrl.observe(value))
        ctrl.scale_param_groups(optimizer)
    assert decisions[0].features["param_drift"] >= MOVED
    assert [d.features["stuck_evaluations"] for d in decisions] == [0, 1, 0, 1, 2, 3]
    assert [d.applied for d in decisions] == [1.0, 1.0, 1.0, 0.5, 1.0, 1.0]
    assert decisions[3].evidence.startswith("cut: the metric got worse (by more than 1%) while the parameters have moved by")
    assert "the objective (the loss, or 1 - the score) is not yet 26% below its first evaluation's" in decisions[3].evidence
    assert decisions[4].gate.startswith("cut held: the parameters have moved by")  # stuck twice, but below the initial LR
    assert "(2 evaluations in a row), but the LR is not above the user's" in decisions[4].gate


def test_a_stuck_run_that_went_far_is_not_cut_at_its_first_evaluation():
    """At the first evaluation every run is at its first level: the drift alone (a good LR can read above 1 there
    when the first evaluation comes late) does not let a cut through."""
    features = {**FEATURES, "param_drift": 4.0, "objective_vs_first": 0.0, "stuck_evaluations": 4, "log10_lr_scale": 0.3}
    assert direction_gate(0.5, features, first=True).startswith("cut held: the metric did not get worse")
    assert direction_gate(0.5, features) is None
    worse = {**features, "objective_trend": 0.1, "stuck_evaluations": 0}  # nor does the lost-ground cut go through there
    assert direction_gate(0.5, worse, first=True).startswith("cut held: the metric got worse, but before")
    assert direction_gate(0.5, worse) is None


def test_the_controller_holds_a_weak_raise_at_its_first_evaluation():
    # SGD at 1.18 on the quadratic: the first interval reads alignment +0.05 at t = +5 (steps that almost reach the
    # floor in the stiff coordinates), the second +1.0. The metric is given (the loss itself reaches the objective's
    # floor of 1e-8 by then, which reads as a run stuck at its first level)
    decisions = controlled_quadratic(always(4), 1.18, values=[1.0, 0.5])
    first, second = (d.features["grad_alignment"] for d in decisions)
    assert 0 < first < UNDERSHOOT_ALIGNMENT and decisions[0].features["grad_alignment_t"] >= EVIDENCE_T
    assert decisions[0].features["param_drift"] < MOVED, "converging to the origin: the drift tends to 1 from below"
    assert decisions[0].applied == 1.0 and decisions[0].gate.startswith("raise held: at the first evaluation")
    assert second >= UNDERSHOOT_ALIGNMENT and decisions[1].applied == 2.0


def always(action_index: int) -> PolicyNetwork:
    """A policy that always picks ``action_index``."""
    policy = random_policy(0)
    with torch.no_grad():
        policy.actor[-1].weight.zero_()
        policy.actor[-1].bias.zero_()
        policy.actor[-1].bias[action_index] = 10.0
    return policy


def controlled_quadratic(policy, lr, *, gate=True, decisions=6, steps_per_decision=10, values=None, **options):
    """Decisions on a quadratic under SGD at ``lr``; the controller sees the loss, or ``values``
    (one per decision) in its place. ``options`` go to ``MetaLRController``."""
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.randn(50))
    curvature = torch.linspace(0.5, 1.0, 50)
    optimizer = torch.optim.SGD([theta], lr=lr)
    ctrl = MetaLRController(lr, policy=policy, learn_online=False, gate=gate, **options)
    ctrl.watch([theta])
    out = []
    for decision in range(decisions if values is None else len(values)):
        for _ in range(steps_per_decision):
            optimizer.zero_grad()
            loss = 0.5 * (curvature * theta**2).sum()
            loss.backward()
            ctrl.before_optimizer_step()
            optimizer.step()
            ctrl.after_optimizer_step()
            if ctrl.observe_train_loss(loss.item()):  # the early-divergence guard cut the LR
                ctrl.scale_param_groups(optimizer)
        with torch.no_grad():
            value = float(0.5 * (curvature * theta**2).sum()) if values is None else values[decision]
        out.append(ctrl.observe(value))
        ctrl.scale_param_groups(optimizer)
    return out


def test_gate_lets_a_raise_through_at_a_too_low_lr():
    decisions = controlled_quadratic(always(4), 0.01)  # 4: x2
    # with the gate's evidence the policy acts from the first decision on: no trend is needed to see the direction
    assert decisions[0].by_policy and decisions[0].reward is None
    assert [d.multiplier for d in decisions] == [2.0] * 6
    assert all(d.gate is None and d.applied == 2.0 for d in decisions)
    assert all(d.evidence.startswith("raise: the gradient keeps pointing along the previous steps") for d in decisions)
    assert decisions[-1].scale == 64.0
    assert decisions[-1].features["grad_alignment_t"] >= EVIDENCE_T

    capped = controlled_quadratic(always(4), 0.01, decisions=3, max_lr=0.03)  # the gate lets x2 through, max_lr caps it
    assert [d.applied for d in capped] == [2.0, pytest.approx(1.5), 1.0] and capped[-1].gate is None
    assert capped[1].evidence.startswith("raise: the gradient keeps pointing along the previous steps")
    assert capped[1].evidence.endswith("; capped by max_lr=0.03: x1.5 applied instead of x2")
    assert capped[0].evidence.startswith("raise:") and "capped" not in capped[0].evidence
    assert capped[2].evidence.endswith("; capped by max_lr=0.03: x1 applied instead of x2")  # at the bound: no move


def test_gate_holds_a_raise_at_an_overshooting_lr_and_a_blind_cut_at_a_too_low_one(monkeypatch):
    # SGD at 3.5 on this quadratic grows the loss 4-fold within the first interval, which the early-divergence guard
    # (tests/test_early_guard.py) would cut first: off here, to see the gate's own verdicts at an overshooting LR
    monkeypatch.setattr(early_guard, "MAX_CUTS", 0)
    for index, asked in ((4, 2.0), (2, 1.0)):  # a policy that always raises, one that always keeps
        overshooting = controlled_quadratic(always(index), 3.5, decisions=3)
        assert [d.multiplier for d in overshooting] == [asked] * 3
        # a clear overshoot (alignment -1.0 at t = -5) is cut whatever the policy asks: the fixed x0.5
        assert [d.applied for d in overshooting] == [CLEAR_OVERSHOOT_CUT, CLEAR_OVERSHOOT_CUT, 1.0]
        for d in overshooting[:2]:
            assert clear_overshoot(d.features) and d.gate is None
            assert d.evidence.startswith("cut: the gradient clearly opposes the previous steps")
            assert d.evidence.endswith(f"a fixed cut (x{CLEAR_OVERSHOOT_CUT:g}), the policy asked for x{asked:g}")
        # then the alignment reads -0.9 at t = +4 (a few large steps against many small ones along): no clear
        # overshoot, and no evidence that the LR is too low either, so the raise is held
        last = overshooting[2]
        assert not clear_overshoot(last.features) and last.evidence is None
        assert last.gate is None if asked == 1.0 else last.gate.startswith("raise held: no evidence")
        # the RL action (what the online learner and meta-training learn from) stays the policy's choice
        assert [d.action_index for d in overshooting] == [index] * 3 and all(d.by_policy for d in overshooting)
    assert CLEAR_OVERSHOOT_CUT == 0.5
    # a cut the policy asks for at a clear overshoot goes through as asked, even a milder one than the fixed cut
    milder = controlled_quadratic(always(1), 3.5, decisions=3)  # 1: x0.8
    assert [d.applied for d in milder] == [0.8] * 3 and all(clear_overshoot(d.features) for d in milder)
    assert not any("a fixed cut" in d.evidence for d in milder)
    # at the LR floor the fixed cut changes nothing, so it is not made (and not traced as made)
    at_floor = controlled_quadratic(always(2), 3.5, decisions=2, min_lr=3.5)
    assert clear_overshoot(at_floor[0].features)
    assert [d.applied for d in at_floor] == [1.0, 1.0] and all(d.evidence is None for d in at_floor)
    too_low_cut = controlled_quadratic(always(0), 0.01, decisions=3)  # 0: x0.5
    assert all(d.applied == 1.0 and d.multiplier == 0.5 and d.gate.startswith("cut held") for d in too_low_cut[1:])
    assert all(d.evidence is None for d in too_low_cut)
    overshoot_cut = controlled_quadratic(always(0), 3.5, decisions=3)  # lr x curvature up to 3.5: overshooting
    assert [d.applied for d in overshoot_cut] == [0.5, 0.5, 1.0], "cut while it overshoots, then hold"
    assert overshoot_cut[0].evidence.startswith("cut: the gradient clearly opposes the previous steps")
    assert overshoot_cut[0].features["grad_alignment"] <= -OVERSHOOT_ALIGNMENT
    assert overshoot_cut[1].evidence.startswith("cut: ") and "opposes the previous steps" in overshoot_cut[1].evidence
    assert overshoot_cut[2].gate.startswith("cut held") and overshoot_cut[2].features["grad_alignment_t"] > 0
    ungated = controlled_quadratic(always(4), 3.5, decisions=3, gate=False)
    assert [d.applied for d in ungated[1:]] == [2.0, 2.0], "gate=False: the policy's choice is applied"
    assert not ungated[0].by_policy and ungated[0].applied == 1.0, "gate=False: the fixed keep at the first decision"


@pytest.mark.parametrize("gate, applied", [(True, [2.0, 0.5, 2.0]), (False, [1.0, 2.0, 2.0])])
def test_a_raise_the_next_evaluation_punishes_is_taken_back(gate, applied):
    # lr 0.01, far below 1 / curvature: the gradient keeps its direction; the policy always asks x2 (index 4);
    # the metric gets worse right after the first raise, then better again
    decisions = controlled_quadratic(always(4), 0.01, gate=gate, values=(1.0, 1.2, 1.1))
    assert [d.applied for d in decisions] == applied
    assert all(d.multiplier == 2.0 for d in decisions[gate is False:]), "the policy asked for x2 every time"
    if gate:
        assert decisions[1].evidence.startswith("undo: the metric got worse right after the last raise")
        assert decisions[1].scale == 1.0 and decisions[2].scale == 2.0


def test_a_plateaus_noise_neither_takes_a_raise_back_nor_holds_the_next():
    # worse by less than RAISE_PUNISHED after the raise (a plateau's few parts in a thousand): the raise stands,
    # and the next one goes through; worse by more: taken back, and the next one held
    noise = math.exp(RAISE_PUNISHED) - 0.001
    kept = controlled_quadratic(always(4), 0.01, values=(1.0, noise, noise * noise))
    assert [d.applied for d in kept] == [2.0, 2.0, 2.0] and kept[1].features["objective_trend"] > 0
    punished = controlled_quadratic(always(4), 0.01, values=(1.0, 1.02, 1.0404))
    assert [d.applied for d in punished] == [2.0, 0.5, 1.0]
    assert punished[1].evidence.startswith("undo:") and punished[2].gate.startswith("raise held: the metric got worse")
    # the bar itself: worse by exactly RAISE_PUNISHED is not a punished raise, by a hair more is
    assert punished_raise_undo({"objective_trend": RAISE_PUNISHED}, last_applied=2.0) is None
    assert punished_raise_undo({"objective_trend": RAISE_PUNISHED + 1e-9}, last_applied=2.0) == 0.5
    assert punished_raise_undo({"objective_trend": 1.0}, last_applied=1.0) is None, "no raise to take back"


def test_without_watched_parameters_the_gate_is_off():
    ctrl = MetaLRController(1e-3, policy=always(4), learn_online=False)
    decisions = [ctrl.observe(v) for v in (1.0, 0.9, 0.8)]
    assert [d.applied for d in decisions] == [1.0, 2.0, 2.0] and all(d.gate is None for d in decisions)
    assert not decisions[0].by_policy, "no evidence: the first decision is the fixed keep"
    assert decisions[-1].features["grad_alignment"] == 0.0 and decisions[-1].features["grad_alignment_t"] == 0.0


@pytest.mark.parametrize(
    "values, applied",
    [
        ((1.0, 0.5, 0.6), [1.0, 1.0, 0.5]),  # progress, then worse with no forward alignment: the cut goes through
        ((1.0, 0.99, 1.01), [1.0, 1.0, 1.0]),  # worse by noise on a plateau at the first level: held
        ((1.0, 0.5, 0.45), [1.0, 1.0, 1.0]),  # still improving: held
    ],
)
def test_gate_lets_a_cut_through_when_the_metric_worsens_after_progress(values, applied):
    ctrl = MetaLRController(1e-3, policy=always(0), learn_online=False)  # 0: x0.5
    ctrl.watch([torch.nn.Parameter(torch.zeros(4))])  # watched, but no steps: alignment 0, no evidence either way
    with pytest.warns(RuntimeWarning, match="were never called since watch"):  # (which a real loop is told)
        decisions = [ctrl.observe(v, stepped=True) for v in values]  # (stepped: no step is made here)
    assert [d.applied for d in decisions] == applied
    assert [d.gate is None for d in decisions[1:]] == [a != 1.0 for a in applied[1:]]
    assert [d.evidence is not None for d in decisions] == [a != 1.0 for a in applied]
    if applied[-1] != 1.0:
        assert decisions[-1].evidence.startswith("cut: the metric got worse after progress")


def controller_after_steps(seed, steps=12):
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.randn(50))
    optimizer = torch.optim.SGD([theta], lr=0.01)
    ctrl = MetaLRController(0.01, policy=always(4), learn_online=False, seed=seed)
    ctrl.watch([theta])
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * (theta**2).sum()).backward()
        ctrl.before_optimizer_step()
        optimizer.step()
        ctrl.after_optimizer_step()
    return ctrl, theta


def test_controller_state_carries_the_alignment():
    first = controlled_quadratic(always(4), 0.01, decisions=2)
    assert first[-1].features["grad_alignment"] > 0.5
    ctrl, theta = controller_after_steps(seed=0)
    state = json.loads(json.dumps(ctrl.state_dict()))
    assert state["format"] == 5 and state["alignment"]["coordinates"] == 50 and state["alignment"]["sums"][4] == 11
    other = MetaLRController(0.01, policy=always(4), learn_online=False)
    other.watch([theta])
    other.load_state_dict(state)
    restored = other.alignment.state_dict()
    assert restored == ctrl.alignment.state_dict() and restored["tensors"] is not None
    assert other.alignment.take().to_list() == ctrl.alignment.take().to_list()


def test_resume_under_another_seed_takes_the_saved_seed_and_its_sketch():
    saved, theta = controller_after_steps(seed=3)
    state = json.loads(json.dumps(saved.state_dict()))
    resumed = MetaLRController(0.01, policy=always(4), learn_online=False, seed=0)
    resumed.watch([theta])
    resumed.load_state_dict(state)
    assert resumed.seed == 3 and resumed.alignment.seed == 3
    assert resumed.alignment.state_dict() == saved.alignment.state_dict()


def test_the_sketch_reads_exactly_its_runs_in_order():
    """One index_select per parameter, written into a reused buffer, reads the same coordinates, in
    the same order, as slicing each run: on several parameters, a non-contiguous and a float64 one,
    and a missing gradient, then the same buffer again once that gradient is there."""
    generator = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(40, 30, generator=generator).t()),  # non-contiguous
              torch.nn.Parameter(torch.randn(700, generator=generator, dtype=torch.float64)),
              torch.nn.Parameter(torch.randn(25, 20, generator=generator)),
              torch.nn.Parameter(torch.randn(5, generator=generator))]
    for p in params[:2] + params[3:]:  # the third parameter, in the sketch, gets no gradient
        p.grad = torch.randn(p.shape, generator=generator, dtype=p.dtype)
    alignment = GradientAlignment(params, sketch_size=2048, seed=1)  # 2048 / WINDOW windows over 2,405 coordinates
    assert {i for i, _, _ in alignment._runs} == {0, 1, 2}, "the sketch spans several parameters"

    def by_runs(tensors):
        return torch.cat([tensors[i].reshape(-1)[b:s].float() if tensors[i] is not None else torch.zeros(s - b)
                          for i, b, s in alignment._runs])

    assert torch.equal(alignment._current_params(), by_runs(params))
    grads = [p.grad for p in params]
    assert torch.equal(alignment._read(grads, 0), by_runs(grads))
    assert alignment._current_params().numel() == alignment.coordinates
    with torch.no_grad():
        params[2].grad = torch.ones_like(params[2])  # the buffer is reused: a gradient that was missing now reads
    assert torch.equal(alignment._read([p.grad for p in params], 0), by_runs([p.grad for p in params]))


def test_the_pointer_gathers_tables_address_what_the_index_select_reads_read():
    """The GPU's one-launch read (``pointer_gather``) loads coordinate ``c`` from owner ``slot[c]`` at
    ``offset[c]``: emulated here with plain indexing, its tables give the index_select read's values
    in its order. The kernel itself needs CUDA and Triton (``make gpu-smoke`` and
    ``benchmarks/gpu_step_cost.py`` compare the two reads there, bit for bit); on the CPU the
    fallback is the only path."""
    from hf_metalr.controller.pointer_gather import gather_tables, pointer_gather_available

    generator = torch.Generator().manual_seed(5)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in ((300, 40), (900,), (64, 64), (700,))]
    alignment = GradientAlignment(params, sketch_size=1024, seed=2)
    assert len(alignment._owners) >= 3
    slot, offset = gather_tables([index for _, index in alignment._owners])
    owned = [params[i].detach().reshape(-1) for i, _ in alignment._owners]
    emulated = torch.stack([owned[k][o] for k, o in zip(slot.tolist(), offset.tolist())])
    assert torch.equal(emulated, alignment._current_params())
    assert not pointer_gather_available(torch.device("cpu")) and alignment._gather is None


@pytest.mark.parametrize("fault", ["raises", "reads wrong values"])
def test_a_one_launch_read_that_fails_its_first_check_falls_back_with_a_warning(monkeypatch, fault):
    """On a GPU the one-launch read is checked against the index_select read once, at the start; a
    Triton that cannot build the kernel, or a read that differs, leaves the index_select read, with a
    warning that names it, and the signal keeps working."""
    import hf_metalr.controller.alignment as alignment_module

    class Faulty:
        def __init__(self, indices, device, dtypes=None):
            pass

        def accepts(self, tensors):
            return True

        def __call__(self, tensors, out):
            if fault == "raises":
                raise RuntimeError("no kernel")
            return out.fill_(1.0)

    monkeypatch.setattr(alignment_module, "pointer_gather_available", lambda device: True)
    monkeypatch.setattr(alignment_module, "PointerGather", Faulty)
    with pytest.warns(RuntimeWarning, match="one index_select per parameter instead"):
        alignment = quadratic_run(lr=0.1)
    assert alignment._gather is None
    assert alignment.take().t > EVIDENCE_T, "the fallback read still says the steps are too short"


@pytest.mark.parametrize("missing_reads_as", [0.0, 1.0])
def test_the_one_launch_read_is_kept_only_if_it_reads_a_missing_gradient_as_zeros(monkeypatch, missing_reads_as):
    """A parameter without a gradient this step (wav2vec2's LayerDrop drops a layer) must read as zeros
    on the one-launch path too, or that read would fall back to index_select at every such step (a
    third of the reads on wav2vec2-base on an H200). Emulated here with the real tables: the start-up
    check keeps a read that gives zeros for a missing tensor, and sends one that does not back
    to index_select with a warning; a kept read takes the steps with a missing gradient."""
    import hf_metalr.controller.alignment as alignment_module
    from hf_metalr.controller.pointer_gather import PointerGather, gather_tables

    class Emulated:
        def __init__(self, indices, device, dtypes=None):
            self.slot, self.offset = gather_tables(indices)
            self.calls = 0

        def accepts(self, tensors):
            return True

        def __call__(self, tensors, out):
            self.calls += 1
            flat = [None if t is None else t.detach().reshape(-1) for t in tensors]
            values = [torch.tensor(missing_reads_as) if flat[k] is None else flat[k][o]
                      for k, o in zip(self.slot.tolist(), self.offset.tolist())]
            return out.copy_(torch.stack(values))

    monkeypatch.setattr(alignment_module, "pointer_gather_available", lambda device: True)
    monkeypatch.setattr(alignment_module, "PointerGather", Emulated)
    generator = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in ((300, 40), (900,), (64, 64))]
    if missing_reads_as:
        with pytest.warns(RuntimeWarning, match="one index_select per parameter instead"):
            alignment = GradientAlignment(params, sketch_size=1024, seed=2)
        assert alignment._gather is None
        return
    alignment = GradientAlignment(params, sketch_size=1024, seed=2)
    assert isinstance(alignment._gather, Emulated)
    first = alignment._owners[0][0]
    grads = [None if i == first else torch.randn(p.shape, generator=generator) for i, p in enumerate(params)]
    calls = alignment._gather.calls
    read = alignment._read(grads, 0).clone()
    assert alignment._gather.calls == calls + 1, "a missing gradient no longer sends the read to index_select"
    alignment._gather = None
    assert torch.equal(read, alignment._read(grads, 0))
    # the real gather's own test: a missing tensor qualifies, a wrong one does not
    gather = PointerGather.__new__(PointerGather)
    gather.device, gather._sizes, gather.dtypes = torch.device("cpu"), [4, 4], [torch.float32] * 2
    assert gather.accepts([None, torch.zeros(4)])
    assert not gather.accepts([None, torch.zeros(4, dtype=torch.float64)])


def test_the_one_launch_read_is_built_for_each_owners_dtype_and_only_for_those_it_reads(monkeypatch):
    """The GPU's one-launch read takes float32, bfloat16 and float16 tensors, mixed (a bf16 model that
    keeps its norms in float32), widening to float32 as the index_select read's copy does: it is built
    with each owning parameter's dtype and accepts a tensor only of that dtype. A parameter of another
    dtype (float64) leaves the index_select read. The kernel itself runs in ``make gpu-smoke``."""
    import hf_metalr.controller.alignment as alignment_module
    from hf_metalr.controller.pointer_gather import PointerGather

    built = []

    class Recorded:
        def __init__(self, indices, device, dtypes=None):
            built.append(list(dtypes))

        def accepts(self, tensors):
            return False  # the index_select read then: the check below compares nothing

    monkeypatch.setattr(alignment_module, "pointer_gather_available", lambda device: True)
    monkeypatch.setattr(alignment_module, "PointerGather", Recorded)
    generator = torch.Generator().manual_seed(4)
    params = [torch.nn.Parameter(torch.randn(300, 40, generator=generator).to(torch.bfloat16)),
              torch.nn.Parameter(torch.randn(9000, generator=generator)),
              torch.nn.Parameter(torch.randn(64, 64, generator=generator).to(torch.float16))]
    alignment = GradientAlignment(params, sketch_size=1024, seed=2)
    assert built == [[params[i].dtype for i, _ in alignment._owners]]
    assert set(built[0]) == {torch.bfloat16, torch.float32, torch.float16}
    built.clear()
    GradientAlignment([*params, torch.nn.Parameter(torch.randn(2000, dtype=torch.float64))], sketch_size=1024, seed=2)
    assert built == []  # a float64 owner: no one-launch read is built
    with pytest.raises(ValueError, match="float64"):
        PointerGather([torch.arange(4)], torch.device("cpu"), [torch.float64])
    gather = PointerGather.__new__(PointerGather)
    gather.device, gather._sizes, gather.dtypes = torch.device("cpu"), [4, 4], [torch.bfloat16, torch.float32]
    assert gather.accepts([torch.zeros(4, dtype=torch.bfloat16), torch.zeros(4)])
    assert not gather.accepts([torch.zeros(4), torch.zeros(4)])  # float32 where the owner is bfloat16


def test_a_refused_sketch_read_names_the_tensor_and_the_reason():
    """``PointerGather.refusal``: the first tensor ``accepts`` refuses, in words (``make gpu-smoke``
    reports them); a missing tensor is read as zeros, not refused."""
    from hf_metalr.controller.pointer_gather import PointerGather

    gather = PointerGather.__new__(PointerGather)
    gather.device, gather._sizes = torch.device("cpu"), [4, 4, 4]
    gather.dtypes = [torch.float32, torch.bfloat16, torch.float32]
    fine, narrow = torch.zeros(8), torch.zeros(8, dtype=torch.bfloat16)
    assert gather.refusal([None, narrow, fine]) is None and gather.accepts([None, narrow, fine])
    cases = {"owner 1: torch.float32 on cpu, torch.bfloat16 on cpu expected": [fine, fine, fine],
             "owner 0: strides (1, 4) for shape (4, 4)": [torch.zeros(4, 4).t(), narrow, fine],
             "owner 2: 3 elements, 4 needed": [fine, narrow, torch.zeros(3)]}
    for reason, tensors in cases.items():
        assert gather.refusal(tensors) == reason and not gather.accepts(tensors)


@pytest.mark.parametrize("last_applied, scale, undo", [(2.0, 2.0, 0.5), (0.5, 0.5, 2.0)])  # a raise; a cut
def test_the_undo_of_a_punished_move_survives_a_resume(last_applied, scale, undo):
    ctrl = MetaLRController(0.01, policy=always(2), learn_online=False)  # 2: keep
    theta = torch.nn.Parameter(torch.ones(8))
    ctrl.watch([theta])
    ctrl.history.append({"applied": last_applied})  # the last decision's move
    ctrl.scale = scale
    for value in (2.0, 1.0):  # earlier values for both: progress (2.0 -> 1.0), and a trend for the next one
        ctrl.tracker.observe(value)
        ctrl.tracker.commit()
    resumed = MetaLRController(0.01, policy=always(2), learn_online=False)
    resumed.watch([theta])
    resumed.load_state_dict(json.loads(json.dumps(ctrl.state_dict())))
    a, b = ctrl.observe(1.2, stepped=True), resumed.observe(1.2, stepped=True)  # worse right after the move
    assert a.applied == b.applied == undo and a.scale == b.scale == 1.0
    assert a.evidence == b.evidence and a.evidence.startswith("undo")


def _after_a_raise(history: list[dict], scale: float = 2.0) -> MetaLRController:
    """A controller whose decisions so far are ``history`` (values 1.0 then 0.9), at ``scale``."""
    ctrl = MetaLRController(0.01, policy=always(2), learn_online=False)  # 2: keep
    ctrl.watch([torch.nn.Parameter(torch.ones(8))])
    ctrl.history.extend(history)
    ctrl.scale = scale
    for entry in history:
        ctrl.tracker.observe(entry["value"])
        ctrl.tracker.commit()
    return ctrl


def test_an_earlier_raise_is_taken_back_when_a_later_evaluation_loses_all_it_gained_and_after_a_resume():
    raised_then_kept = [{"applied": 2.0, "value": 1.0}, {"applied": 1.0, "value": 0.9}]
    ahead = _after_a_raise(raised_then_kept).observe(0.98, stepped=True)  # worse since 0.9, still below 1.0
    assert ahead.applied == 1.0 and ahead.features["objective_since_raise"] == pytest.approx(math.log(0.98))
    ctrl = _after_a_raise(raised_then_kept)
    resumed = MetaLRController(0.01, policy=always(2), learn_online=False)
    resumed.watch([torch.nn.Parameter(torch.ones(8))])
    resumed.load_state_dict(json.loads(json.dumps(ctrl.state_dict())))
    a, b = ctrl.observe(1.05, stepped=True), resumed.observe(1.05, stepped=True)  # 5% above the raise's level
    assert a.applied == b.applied == 0.5 and a.scale == b.scale == 1.0 and a.multiplier == 1.0, "the policy kept"
    assert a.evidence == b.evidence and a.evidence.startswith("undo: the metric is 5.0% worse than at the evaluation")
    # a cut since the raise, or a divergence, leaves no raise standing; the last decision's raise is the
    # punished-raise undo's (the metric got worse right after it)
    for between in ({"applied": 0.8, "value": 0.9}, {"applied": 1.0, "value": None, "diverged": True}):
        ctrl = _after_a_raise(raised_then_kept[:1], scale=1.6)
        ctrl.history.append(between)
        if between["value"] is not None:
            ctrl.tracker.observe(0.9)
            ctrl.tracker.commit()
        decision = ctrl.observe(1.05, stepped=True)
        assert "objective_since_raise" not in decision.features and not (decision.evidence or "").startswith("undo")
    right_after = _after_a_raise(raised_then_kept[:1]).observe(1.05, stepped=True)
    assert "objective_since_raise" not in right_after.features
    assert right_after.evidence.startswith("undo: the metric got worse right after the last raise")


def test_a_raise_that_took_back_a_punished_cut_is_no_bet_and_an_unpaid_undo_is_not_taken_back():
    took_back = [{"applied": 2.0, "value": 1.0, "rule": "undo_cut"}, {"applied": 1.0, "value": 0.9, "rule": None}]
    decision = _after_a_raise(took_back).observe(1.05, stepped=True)
    assert "objective_since_raise" not in decision.features and decision.applied == 1.0
    ctrl = _after_a_cut({"applied": 0.5, "rule": "unpaid_undo"})
    kept = ctrl.observe(1.05, stepped=True)  # 5% worse right after the unpaid raise's undo, after progress
    assert kept.applied == 1.0 and not (kept.evidence or "").startswith("undo")
    undone = _after_a_cut({"applied": 0.5, "rule": None}).observe(1.05, stepped=True)
    assert undone.applied == 2.0 and undone.rule == "undo_cut", "another cut is taken back, and says so"


def _after_a_cut(last: dict) -> MetaLRController:
    """A controller whose last decision was ``last``, at half the user's LR, after progress (2.0 -> 1.0)."""
    ctrl = MetaLRController(0.01, policy=always(2), learn_online=False)  # 2: keep
    ctrl.watch([torch.nn.Parameter(torch.ones(8))])
    ctrl.history.append(last)
    ctrl.scale = 0.5
    for value in (2.0, 1.0):
        ctrl.tracker.observe(value)
        ctrl.tracker.commit()
    return ctrl


def test_a_punished_cut_is_taken_back_by_the_controller_but_not_a_divergences_halving():
    undone = _after_a_cut({"applied": 0.5}).observe(1.05, stepped=True)  # 5% worse right after the cut
    assert undone.applied == 2.0 and undone.scale == 1.0 and undone.multiplier == 1.0, "the policy asked to keep"
    assert undone.evidence.startswith("undo: the metric got worse right after the last cut")
    assert _after_a_cut({"applied": 0.5}).observe(1.0, stepped=True).applied == 1.0, "not worse: the cut stands"
    after_nan = _after_a_cut({"applied": 0.5, "diverged": True}).observe(1.05, stepped=True)
    assert after_nan.applied == 1.0 and after_nan.scale == 0.5, "a NaN's halving is no cut to take back"


def test_the_window_matches_a_step_by_step_reference_through_the_reused_buffers():
    """The preallocated buffers (two parameter sketches taking turns, the gradient, the descent)
    give the same per-step cosines as vectors built afresh each step: Adam on a noisy quadratic,
    two parameters read whole."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(30)), torch.nn.Parameter(torch.randn(5, 4))]
    optimizer = torch.optim.Adam(params, lr=0.3)
    alignment = GradientAlignment(params)
    assert alignment.coordinates == 50, "read whole"
    flat = lambda tensors: torch.cat([t.detach().reshape(-1) for t in tensors]).double()  # noqa: E731
    previous, descent, cosines, dots, norms = None, None, [], 0.0, 0.0
    for _ in range(25):
        optimizer.zero_grad()
        loss = sum((p**2).sum() for p in params) + sum((p * torch.randn_like(p)).sum() for p in params)
        loss.backward()
        alignment.before_step()
        g = flat([p.grad for p in params])
        if descent is not None:
            cosines.append(float(g @ descent / (g.norm() * descent.norm())))
            dots += float(g @ descent)
            norms += float(g.norm() * descent.norm())
        before = flat(params)
        optimizer.step()
        alignment.after_step()
        descent = before - flat(params)
    window = alignment.take()
    mean = sum(cosines) / len(cosines)
    std = (sum((c - mean) ** 2 for c in cosines) / (len(cosines) - 1)) ** 0.5
    assert window.steps == 24
    assert window.ratio == pytest.approx(dots / norms, abs=1e-5)
    assert window.mean == pytest.approx(mean, abs=1e-5)
    assert window.t == pytest.approx(mean / (std / len(cosines) ** 0.5), rel=1e-3)
    assert any(c < 0 for c in cosines) and any(c > 0 for c in cosines), "a window of both signs"
    # the run's first window also has its later half: the last 12 of the 24 counted steps
    late = cosines[12:]
    assert window.late.steps == 12 and window.late.mean == pytest.approx(sum(late) / 12, abs=1e-5)
    assert window.late.ratio != pytest.approx(window.ratio, abs=1e-3), "a half of its own, not the whole again"


def test_the_first_window_reads_its_later_half_of_counted_steps_once_and_through_a_resume():
    """Steps along the gradient (+1), then steps that flip it (-1) with a skipped one among them: the whole
    window mixes them, its later half (the last ceil(n / 2) counted steps; the skipped step and the one after
    it, whose previous step moved nothing, do not count) reads the flips alone. Only the first window has it,
    and rows of a first interval in progress ride in the state."""
    theta = torch.nn.Parameter(torch.ones(8))
    alignment = GradientAlignment([theta])
    signed_steps(alignment, theta, [1] * 7)  # 6 counted steps along (the first has no previous step)
    state = json.loads(json.dumps(alignment.state_dict()))
    flips = [1, -1, 1, -1, None, 1, -1, 1, -1, 1, -1]  # 1 counted along, 3 flips, 2 not counted, 5 flips
    signed_steps(alignment, theta, flips)
    window = alignment.take()
    # 15 counted of 17 rows: the later 8 counted are all flips (the later 9 rows would hold only 7 counted)
    assert window.steps == 15 and window.late.steps == 8
    assert window.late.ratio == pytest.approx(-1.0) and window.ratio > -0.2
    signed_steps(alignment, theta, [1, 1])
    assert alignment.take().late is None, "the first window only"
    # resumed between the two parts: the same later half
    theta = torch.nn.Parameter(torch.ones(8) - 0.7)  # where the first 7 steps left it
    resumed = GradientAlignment([theta])
    resumed.load_state_dict(state)
    signed_steps(resumed, theta, flips)
    again = resumed.take()
    assert again.steps == window.steps and again.late.to_list() == pytest.approx(window.late.to_list())
    # a state saved after the first window (or by a version that kept no later half) brings none back
    after = json.loads(json.dumps(resumed.state_dict()))
    assert state["keeps_first_window"] is True and after["keeps_first_window"] is False
    legacy = {k: v for k, v in state.items() if k != "keeps_first_window"}
    for saved in (after, legacy):
        fresh = GradientAlignment([theta])
        fresh.load_state_dict(saved)
        signed_steps(fresh, theta, [1, 1, 1])
        assert fresh.take().late is None



def test_drift_is_the_distance_from_the_start_over_the_starting_norm_and_survives_a_resume():
    theta = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # norm 5
    alignment = GradientAlignment([theta])
    assert alignment.drift() == 0.0, "nothing read yet"
    for step in range(3):
        theta.grad = torch.ones(2)
        alignment.before_step()
        with torch.no_grad():
            theta -= 1.0  # each step moves by (1, 1)
        alignment.after_step()
    assert alignment.drift() == pytest.approx(math.sqrt(18) / 5)
    state = json.loads(json.dumps(alignment.state_dict()))
    resumed = GradientAlignment([theta])
    resumed.load_state_dict(state)
    assert resumed.drift() == pytest.approx(math.sqrt(18) / 5)
    tensors = text_to_tensors(state["tensors"])
    del tensors["initial_params"]  # an older checkpoint, without the starting sketch: it counts from the resumed parameters
    old = GradientAlignment([theta])
    old.load_state_dict({**state, "tensors": tensors_to_text(tensors)})
    assert old.drift() == 0.0
    theta.grad = torch.ones(2)
    old.before_step()
    with torch.no_grad():
        theta -= 1.0
    old.after_step()
    assert old.drift() == pytest.approx(math.sqrt(2) / math.sqrt(0.0**2 + 1.0**2))  # from (0, 1), resumed, to (-1, 0)


def test_a_stuck_run_whose_parameters_went_far_gets_no_raise():
    """SGD on a linear loss: every step the same, so the alignment reads +1 and the parameters move
    in a straight line (0.35 of their starting norm per decision); the metric given stays at its first
    level. The first raises go through, then, past a drift of 1, every raise is held."""
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.ones(16))
    direction = torch.ones(16)
    optimizer = torch.optim.SGD([theta], lr=0.035)
    ctrl = MetaLRController(0.035, policy=always(3), learn_online=False, max_lr=0.035 * 1.25**4)  # 3: x1.25
    ctrl.watch([theta])
    decisions = []
    for _ in range(6):
        for _ in range(10):
            optimizer.zero_grad()
            (theta * direction).sum().backward()
            ctrl.before_optimizer_step()
            optimizer.step()
            ctrl.after_optimizer_step()
        decisions.append(ctrl.observe(1.0))
        ctrl.scale_param_groups(optimizer)
    drifts = [d.features["param_drift"] for d in decisions]
    assert drifts == sorted(drifts) and drifts[0] == pytest.approx(0.35, rel=0.01)
    for d in decisions:
        assert d.features["grad_alignment"] > 0.99
        if d.features["param_drift"] >= MOVED:
            assert d.applied == 1.0 and d.gate.startswith("raise held: the parameters have moved")
        elif d.index > 0:
            assert d.applied == 1.25, d.gate
    assert any(d.features["param_drift"] >= MOVED for d in decisions)


def test_a_step_that_a_warmup_lengthens_adds_nothing_and_the_factor_rides_in_the_state():
    """Under a warmup the previous step was shorter by the schedule's doing, so its gradient reads "too short"
    about an LR already gone: a step whose schedule factor is above the last one's adds nothing. Flat and
    falling factors count, and so does every step when no factor is given (a constant schedule, meta-training)."""
    import json

    def stepper(alignment, theta):
        def step(factor, sign=1.0):
            theta.grad = torch.full_like(theta, sign)
            alignment.before_step(factor)
            with torch.no_grad():
                theta.sub_(0.1 * (factor or 1.0) * theta.grad)
            alignment.after_step()
        return step

    theta = torch.nn.Parameter(torch.ones(8))
    alignment = GradientAlignment([theta])
    step = stepper(alignment, theta)
    for factor in (0.25, 0.5, 0.75, 1.0):
        step(factor)
    assert alignment.take().steps == 0
    for factor in (1.0, 1.0, 0.9, 0.8):
        step(factor)
    window = alignment.take()
    assert window.steps == 4 and window.mean == pytest.approx(1.0)
    for _ in range(4):
        step(None)
    assert alignment.take().steps == 4

    # resumed in the middle of a warmup: the saved factor of the last step keeps the next one out, as in the whole run
    step(0.5)
    alignment.take()
    state = json.loads(json.dumps(alignment.state_dict()))
    assert state["descent_factor"] == 0.5
    resumed = GradientAlignment([theta])
    resumed.load_state_dict(state)
    stepper(resumed, theta)(0.75)
    assert resumed.take().steps == 0
    older = GradientAlignment([theta])  # a checkpoint from before the factor was kept counts the step
    older.load_state_dict({k: v for k, v in state.items() if k != "descent_factor"})
    stepper(older, theta)(0.75)
    assert older.take().steps == 1


def test_a_first_interval_longer_than_the_kept_rows_gets_no_later_half(monkeypatch):
    """The rows kept for the later half are bounded: past FIRST_WINDOW_ROWS steps they are let go, and the first
    window has no later half (the first raise is then read on the whole interval, as before the rule)."""
    from hf_metalr.controller import alignment as module

    monkeypatch.setattr(module, "FIRST_WINDOW_ROWS", 300)
    monkeypatch.setattr(module, "_FOLD_EVERY", 100)
    theta = torch.nn.Parameter(torch.ones(8))
    alignment = GradientAlignment([theta])
    signed_steps(alignment, theta, [1] * 301)  # 300 counted (the first step has no previous one)
    assert alignment.state_dict()["keeps_first_window"] is True, "300 rows: still kept"
    signed_steps(alignment, theta, [1])
    assert alignment.state_dict()["keeps_first_window"] is False, "301: let go"
    window = alignment.take()
    assert window.steps == 301 and window.late is None


@pytest.mark.parametrize("signs, raised", [([1] * 30, True), ([1] * 20 + [1, -1] * 5, False)])
def test_the_first_raise_needs_the_later_half_of_the_interval_to_read_too_short(signs, raised):
    """A policy that always doubles, on a plain loop: 30 steps along the gradient raise at the first
    evaluation. 20 along and then 10 that flip it read a whole-interval undershoot (alignment +0.38 at
    t = +2.2, as a run that descends onto a plateau within the interval), but the later half reads
    -0.2: held, and the trace says why."""
    theta = torch.nn.Parameter(torch.full((8,), 10.0))  # far from 0: the drift stays small
    ctrl = MetaLRController(0.1, policy=always(4), learn_online=False)  # 4: x2
    ctrl.watch([theta])
    signed_steps(ctrl, theta, signs)
    decision = ctrl.observe(1.0)
    features = decision.features
    assert features["grad_alignment"] >= UNDERSHOOT_ALIGNMENT and features["grad_alignment_t"] >= EVIDENCE_T
    assert features["param_drift"] < MOVED
    if raised:
        assert decision.applied == 2.0 and features["grad_alignment_late"] == pytest.approx(1.0, abs=1e-5)
    else:
        assert features["grad_alignment_late"] == pytest.approx(-0.2, abs=1e-5)
        assert decision.applied == 1.0 and decision.gate.startswith("raise held: at the first evaluation a raise needs")


def _opposed_window(steps: int = 32, mean: float = -0.03, std: float = 0.05, ratio: float = -0.02) -> AlignmentWindow:
    """An interval whose gradients oppose the previous steps a little (t = mean / (std / sqrt(steps)))."""
    return AlignmentWindow(dot=ratio, norms=1.0, cos=steps * mean, cos_sq=(steps - 1) * std**2 + steps * mean**2,
                           steps=steps)


@pytest.mark.parametrize("history, undone", [
    ([{"applied": 2.0, "value": 1.0, "rule": None}], True),  # the last decision's raise
    ([{"applied": 2.0, "value": 1.0, "rule": None}, {"applied": 1.0, "value": 0.9}], True),  # an earlier one, kept since
    ([{"applied": 2.0, "value": 1.0, "rule": None}, {"applied": 0.8, "value": 0.9}], False),  # a cut followed it
    ([{"applied": 2.0, "value": 1.0, "rule": "restore"}], False),  # the distance check's cut taken back: no bet
    ([{"applied": 2.0, "value": 1.0, "rule": "undo_cut"}], False),  # a punished cut taken back: no bet
    ([{"applied": 1.0, "value": 1.0}], False)])  # no raise
def test_the_controller_takes_its_raise_back_once_the_gradient_opposes_the_steps_and_after_a_resume(
        monkeypatch, history, undone):
    ctrl = _after_a_raise(history)
    resumed = MetaLRController(0.01, policy=always(2), learn_online=False)
    resumed.watch([torch.nn.Parameter(torch.ones(8))])
    resumed.load_state_dict(json.loads(json.dumps(ctrl.state_dict())))
    decisions = []
    for controller in (ctrl, resumed):
        controller.steps_per_coordinate = True  # an Adam-like optimizer: the distance check reads its LR
        monkeypatch.setattr(controller.alignment, "take", _opposed_window)
        monkeypatch.setattr(controller.alignment.distance, "value", lambda: 0.04)  # the LR (0.02) at half the estimate
        decisions.append(controller.observe(0.85, stepped=True))  # the metric still improves
    a, b = decisions
    assert a.features["grad_alignment_t"] == pytest.approx(-0.03 / (0.05 / 32**0.5))
    assert a.features["grad_alignment_t"] < -EVIDENCE_T and a.features["lr_over_distance"] == pytest.approx(0.5)
    assert a.applied == b.applied == (0.5 if undone else 1.0) and a.multiplier == 1.0, "the policy kept"
    assert a.evidence == b.evidence and (a.rule == "opposed_undo") == undone
    if undone:
        assert a.evidence.startswith("undo: the gradient now opposes the previous steps (alignment -0.02, t=-3.4) after "
                                     "the last raise (x2), and the LR is 0.5 times the distance estimate")


@pytest.mark.parametrize("value, undone", [(0.98, True), (0.85, False)])
def test_a_raise_after_which_the_metric_gained_faster_than_before_it_stands(monkeypatch, value, undone):
    """The raise at the second decision came after a 9.5% gain (1.1 -> 1.0); the interval after it gains
    2% (slower: the raise did not pay, and the opposed gradient takes it back) or 15% (it paid)."""
    ctrl = _after_a_raise([{"applied": 1.0, "value": 1.1, "features": {"objective_trend": 0.0}},
                           {"applied": 2.0, "value": 1.0, "rule": None,
                            "features": {"objective_trend": math.log(1.0 / 1.1)}}])
    ctrl.steps_per_coordinate = True
    monkeypatch.setattr(ctrl.alignment, "take", _opposed_window)
    monkeypatch.setattr(ctrl.alignment.distance, "value", lambda: 0.04)
    decision = ctrl.observe(value, stepped=True)
    assert decision.features["objective_trend_before_raise"] == pytest.approx(math.log(1.0 / 1.1))
    assert decision.features["objective_trend_after_raise"] == pytest.approx(math.log(value))
    assert decision.applied == (0.5 if undone else 1.0) and (decision.rule == "opposed_undo") == undone


@pytest.mark.filterwarnings("ignore:MetaLRController. before_optimizer_step:RuntimeWarning")  # take() is replaced here
def test_each_opposed_reading_takes_back_one_more_raise_of_a_run_that_raised_twice(monkeypatch):
    """A fine-tune that raised at its first two evaluations: the first opposed reading takes the second
    raise back, the next one the first (not paid: no interval before it), and no further."""
    ctrl = _after_a_raise([{"applied": 2.0, "value": 1.1, "rule": None, "features": {"objective_trend": 0.0}},
                           {"applied": 2.0, "value": 1.0, "rule": None,
                            "features": {"objective_trend": math.log(1.0 / 1.1)}}], scale=4.0)
    ctrl.steps_per_coordinate = True
    monkeypatch.setattr(ctrl.alignment, "take", _opposed_window)
    monkeypatch.setattr(ctrl.alignment.distance, "value", lambda: 0.01)  # the LR (0.04) at 4 times the estimate
    first, second, third = (ctrl.observe(value, stepped=True) for value in (0.98, 0.97, 0.96))
    assert [d.applied for d in (first, second, third)] == [0.5, 0.5, 1.0]
    assert [d.rule for d in (first, second)] == ["opposed_undo", "opposed_undo"] and third.rule is None
    assert ctrl.scale == 1.0, "back at the user's LR, never below it"
    assert "objective_trend_before_raise" not in second.features, "the first decision's raise: no interval before it"
