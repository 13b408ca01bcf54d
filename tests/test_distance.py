"""The distance estimate (D-adaptation's bound, as Prodigy reads it) and the gate's distance cut."""

import functools
import json
import math
import warnings

import pytest
import torch

from hf_metalr import MetaLRController
from hf_metalr.controller.controller import is_early_distance_cut
from hf_metalr.controller.gate import (ANNEALED_DISTANCE_FLOOR, DISTANCE_FLOOR, DISTANCE_OVERSHOOT, DISTANCE_SHORT, MOVED, PROGRESS,
                                       NO_DISTANCE, RAISE_CEILING, STUCK, STUCK_DISTANCE_OVERSHOOT, STUCK_EVALUATIONS,
                                       _verdict, direction_gate, gate_move, past_the_distance, short_of_the_distance,
                                       wrecked)
from hf_metalr.controller.distance import DistanceEstimate
from hf_metalr.controller.scheduler_binding import heavy_ball_momentum, normalises_steps
from test_alignment import FEATURES, always


def _adam_on_a_quadratic(lr, steps=300, estimate=None):
    """Adam from 0 on 0.5 * sum(c_i (x_i - x*_i)^2); the estimate fed as the alignment feeds it. Returns
    (the estimate, |x_0 - x*|_inf)."""
    torch.manual_seed(0)
    target = torch.randn(50) * 0.5
    x = torch.nn.Parameter(torch.zeros(50))
    optimizer = torch.optim.Adam([x], lr=lr)
    curvature = torch.linspace(0.5, 1.0, 50)
    estimate = estimate or DistanceEstimate(50, "cpu")
    start = x.detach().clone()
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * (curvature * (x - target) ** 2).sum()).backward()
        estimate.observe(x.grad.detach().clone(), x.detach().clone(), start)
        optimizer.step()
    return estimate, float((start - target).abs().max())


def test_the_estimate_bounds_the_distance_from_below_and_the_lr_over_it_grows_with_the_lr():
    ratios = []
    for lr in (0.003, 0.03, 0.3):
        estimate, distance = _adam_on_a_quadratic(lr)
        assert 0 < estimate.value() <= distance, "a convex loss: a lower bound on the distance to the solution"
        ratios.append(lr / estimate.value())
    assert ratios == sorted(ratios) and ratios[0] < 0.1 and ratios[-1] > 1


def test_a_step_whose_gradient_is_not_finite_adds_nothing_and_the_state_round_trips():
    estimate, _ = _adam_on_a_quadratic(0.03, steps=40)
    state = json.loads(json.dumps(estimate.state_dict()))
    estimate.observe(torch.full((50,), float("nan")), torch.zeros(50), torch.ones(50))
    assert estimate.state_dict() == state
    resumed = DistanceEstimate(50, "cpu")
    resumed.load_state_dict(state)
    assert resumed.value() == estimate.value() > 0
    gradient, params = torch.randn(50), torch.randn(50)
    for one in (estimate, resumed):
        one.observe(gradient, params, torch.zeros(50))
    assert resumed.state_dict() == estimate.state_dict()
    assert DistanceEstimate(50, "cpu").value() == 0.0, "no step: no estimate"


PAST = {**FEATURES, "param_drift": MOVED, "lr_over_distance": DISTANCE_OVERSHOOT, "objective_trend": -0.1,
        "objective_vs_first": 0.0, "grad_alignment": 0.0, "grad_alignment_t": 0.0}


@pytest.mark.parametrize("changes, past", [
    ({}, True),
    ({"lr_over_distance": NO_DISTANCE}, True),  # no positive estimate: the gradients never pointed back to the start
    ({"param_drift": MOVED - 0.01}, False),  # a plateau's early reading: far past the estimate, but it has not moved
    ({"lr_over_distance": DISTANCE_OVERSHOOT - 0.01}, False),  # moved far, within the estimate: a good LR's long run
    ({"lr_over_distance": None}, False),  # no reading: an optimizer whose step is not the LR per coordinate
    ({"log10_lr_scale": math.log10(DISTANCE_FLOOR)}, False),  # at the distance cut's floor
    # stuck at the first evaluation's level at two evaluations in a row: the bar is halved
    ({"lr_over_distance": STUCK_DISTANCE_OVERSHOOT, "stuck_evaluations": STUCK_EVALUATIONS, "start_weights_kept": 1}, True),
    ({"lr_over_distance": STUCK_DISTANCE_OVERSHOOT, "stuck_evaluations": STUCK_EVALUATIONS, "start_weights_kept": 0},
     False),  # a cut would not start it over (a warmup, SGD)
    ({"lr_over_distance": STUCK_DISTANCE_OVERSHOOT, "stuck_evaluations": STUCK_EVALUATIONS - 1, "start_weights_kept": 1},
     False),
    ({"lr_over_distance": STUCK_DISTANCE_OVERSHOOT - 0.01, "stuck_evaluations": STUCK_EVALUATIONS,
      "start_weights_kept": 1}, False),
    ({"lr_over_distance": STUCK_DISTANCE_OVERSHOOT, "stuck_evaluations": STUCK_EVALUATIONS, "start_weights_kept": 1,
      "objective_vs_first": -STUCK - 0.01}, False),  # gained more than the stuck margin: not stuck
])
def test_the_distance_cut_needs_both_measures_above_its_floor(changes, past):
    features = {k: v for k, v in {**PAST, **changes}.items() if v is not None}
    assert past_the_distance(features) is past
    for first in (True, False):
        cut = direction_gate(0.5, features, first=first)
        raise_ = direction_gate(2.0, features, first=first)
        if past:
            assert cut is None, "a cut goes through, at the first evaluation too"
            assert raise_.startswith("raise held: the steps are too long by two measures")
        else:
            assert cut is not None and cut.startswith("cut held"), "the other rules hold this cut"
    if past:
        from hf_metalr.controller.gate import direction_verdict

        _, why = direction_verdict(0.5, features)
        ratio = features["lr_over_distance"]
        words = "no positive distance estimate yet" if ratio >= NO_DISTANCE else f"{ratio:g} times the distance estimate"
        assert why.startswith("cut: the steps are too long by two measures") and words in why
        stuck_words = f"{STUCK_DISTANCE_OVERSHOOT:g} or more is too far for a run stuck at its first evaluation's level"
        assert (stuck_words in why) is ("stuck_evaluations" in changes)
        assert why.endswith("that can start over)") is ("stuck_evaluations" in changes)
        assert wrecked(features), "and a cut then starts the run over"


@pytest.mark.parametrize("anneals", [False, True])
def test_the_cut_floors_are_the_users_lr_for_a_stuck_run_and_a_sixteenth_or_a_quarter_for_the_distance(anneals):
    quiet = {"objective_trend": -0.01, "grad_alignment": 0.0, "grad_alignment_t": 0.0}
    stuck = {**quiet, "param_drift": 2.0, "objective_vs_first": 0.0, "stuck_evaluations": 2, "log10_lr_scale": 0.3}
    verdict = _verdict(0.5, stuck, first=False, schedule_anneals=anneals)
    assert verdict.why.startswith("cut: the parameters have moved by") and verdict.floor == (1.0, "the user's LR")
    floor, words = (ANNEALED_DISTANCE_FLOOR, "1/4") if anneals else (DISTANCE_FLOOR, "1/16")
    verdict = _verdict(0.5, {**quiet, **PAST}, first=False, schedule_anneals=anneals)
    assert verdict.why.startswith("cut: the steps are too long by two measures")
    assert verdict.floor == (floor, f"{words} of the user's LR")
    overshoot = {**quiet, "grad_alignment": -0.3, "grad_alignment_t": -4.0, "objective_vs_first": -0.5}
    verdict = _verdict(0.5, overshoot, first=False, schedule_anneals=anneals)
    assert verdict.why.startswith("cut: the gradient clearly opposes the previous steps") and verdict.floor is None
    at_floor = {**PAST, "log10_lr_scale": math.log10(floor)}
    assert not past_the_distance(at_floor, schedule_anneals=anneals)
    assert past_the_distance({**PAST, "log10_lr_scale": math.log10(ANNEALED_DISTANCE_FLOOR) - 0.1}) is True
    assert past_the_distance({**PAST, "log10_lr_scale": math.log10(ANNEALED_DISTANCE_FLOOR) - 0.1},
                             schedule_anneals=True) is False


def _controlled_adam(lr, optimizer_class=torch.optim.Adam, policy=2, decisions=7, anneal=False, start_over=False):
    """Decisions every 20 steps of ``optimizer_class`` on a quadratic, the controller attached; the
    policy always picks ``policy`` (2: keep); ``anneal``: under a cosine schedule over the run.
    ``start_over``: an early cut goes back to the start weights, as it does in a run; off, the run
    goes on from where the early cuts found it (as a resume without the start weights does), so
    that the tests of the rules at the evaluations see a run past the distance at them."""
    x, _, _, quadratic = _start_over_quadratic(lr)
    optimizer = optimizer_class([x], lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=20 * decisions) if anneal else None
    ctrl = MetaLRController(lr, policy=always(policy), learn_online=False).attach(optimizer, scheduler)
    if not start_over:
        ctrl.start_weights = None
    out = [_interval(ctrl, optimizer, quadratic, scheduler=scheduler) for _ in range(decisions)]
    return ctrl, out, optimizer


def test_an_lr_far_past_the_distance_is_halved_early_and_at_each_evaluation_down_to_a_sixteenth():
    """Adam at an LR of 1 on a quadratic whose solution lies 0.5 away: the steps bounce across it, the
    parameters move by several times their starting norm, and the gradients never point back toward
    the start (no positive estimate). Before the first evaluation (at step 20) the check halves the
    LR at steps 8 and 16; then, with a policy that always asks to keep the LR, the fixed cut halves
    it at each evaluation, and stops at 1/16 of the user's LR. At an LR of 0.03 nothing is cut."""
    ctrl, decisions, optimizer = _controlled_adam(1.0)
    assert [(c["step"], c["applied"], c["lr"]) for c in ctrl.early_cuts] == [(8, 0.5, 0.5), (16, 0.5, 0.25)]
    assert all(c["param_drift"] >= MOVED and c["lr_over_distance"] == NO_DISTANCE for c in ctrl.early_cuts)
    assert [c["kind"] for c in ctrl.early_cuts] == ["distance", "distance"]
    assert all(is_early_distance_cut(c) for c in ctrl.early_cuts)
    assert [d.applied for d in decisions] == [0.5, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert ctrl.scale == pytest.approx(DISTANCE_FLOOR) and optimizer.param_groups[0]["lr"] == pytest.approx(1 / 16)
    for d in decisions[:2]:
        assert d.features["param_drift"] >= MOVED and d.features["lr_over_distance"] >= DISTANCE_OVERSHOOT
        assert d.evidence.startswith("cut: the steps are too long by two measures")
        assert d.evidence.endswith("a fixed cut (x0.5), the policy asked for x1")
    assert decisions[-1].value < decisions[0].value / 100
    ctrl, decisions, _ = _controlled_adam(0.03)
    assert not ctrl.early_cuts and all(d.applied == 1.0 for d in decisions)
    assert all(d.features["lr_over_distance"] < 1 for d in decisions)


def test_a_cut_asked_past_the_distance_goes_no_lower_than_a_sixteenth():
    """After the two early cuts (scale 1/4), a policy asking for x0.8 each time: six cuts of x0.8, then
    one as far as 1/16 of the user's LR (the trace says so), then held there."""
    ctrl, decisions, _ = _controlled_adam(1.0, policy=1, decisions=8)  # 1: x0.8
    scales = [d.scale for d in decisions]
    assert scales[:6] == pytest.approx([0.25 * 0.8 ** k for k in range(1, 7)])
    assert scales[6:] == pytest.approx([DISTANCE_FLOOR] * 2)
    last = 0.25 * 0.8 ** 6
    assert decisions[6].applied == pytest.approx(DISTANCE_FLOOR / last)
    assert decisions[6].evidence.endswith(f"as far as 1/16 of the user's LR (x{DISTANCE_FLOOR / last:.3g}, the policy "
                                          "asked for x0.8)")
    assert decisions[7].applied == 1.0 and decisions[7].gate is not None


def test_an_sgd_run_is_not_read_against_the_distance():
    """SGD's step scales with the gradient, not the LR alone: no lr_over_distance, no distance cut."""
    ctrl, decisions, _ = _controlled_adam(0.5, optimizer_class=torch.optim.SGD, decisions=3)
    assert not ctrl.steps_per_coordinate
    assert all("lr_over_distance" not in d.features and d.features["distance_estimate"] >= 0 for d in decisions)
    assert not any((d.evidence or "").startswith("cut: the steps are too long") for d in decisions)


def test_heavy_ball_momentum_swings_within_the_stability_edge_and_its_opposed_gradient_cuts_nothing():
    """SGD with momentum 0.9 at an LR of 1 on the quadratic (curvatures 0.5 to 1: lr x curvature <= 1, far
    inside heavy-ball's edge of 2 x 1.9): the run converges, and the alignment reads the gradient
    clearly against the steps at every evaluation, heavy-ball's swing (plain SGD there reads +0.8 to +1).
    A policy that always asks for x0.5 gets no cut while the metric improves, and the trace says why."""
    sgd = functools.partial(torch.optim.SGD, momentum=0.9)
    ctrl, decisions, _ = _controlled_adam(1.0, optimizer_class=sgd, policy=0, decisions=5)
    assert ctrl.heavy_ball and not ctrl.steps_per_coordinate
    assert all(d.features["grad_alignment"] <= -0.3 and d.features["grad_alignment_t"] <= -3 for d in decisions)
    assert all(d.applied == 1.0 and "under heavy-ball momentum (SGD)" in d.gate for d in decisions)
    assert all(d.features["heavy_ball"] == 1.0 for d in decisions)
    assert decisions[-1].value < 0.01 * decisions[0].value, "the run converges: the swing is no overshoot"


def test_heavy_ball_momentum_is_read_from_the_optimizers_groups():
    params = [torch.nn.Parameter(torch.ones(2))]

    class Wrapped:  # accelerate's AcceleratedOptimizer keeps the torch one as .optimizer
        def __init__(self, optimizer):
            self.optimizer = optimizer

    assert heavy_ball_momentum(torch.optim.SGD(params, lr=0.1, momentum=0.9))
    assert heavy_ball_momentum(Wrapped(torch.optim.SGD(params, lr=0.1, momentum=0.5, nesterov=True)))
    assert not heavy_ball_momentum(torch.optim.SGD(params, lr=0.1)), "plain SGD: the textbook reading"

    class SGD8bit(torch.optim.Optimizer):  # bitsandbytes keeps SGD's momentum in betas[0]
        def __init__(self, params, lr, momentum):
            super().__init__(params, {"lr": lr, "betas": (momentum, 0.0)})

    assert heavy_ball_momentum(SGD8bit(params, 0.1, 0.9)) and not heavy_ball_momentum(SGD8bit(params, 0.1, 0.0))
    import schedulefree
    assert not heavy_ball_momentum(schedulefree.SGDScheduleFree(params, lr=0.1, momentum=0.9)), "it averages iterates"
    assert not heavy_ball_momentum(torch.optim.AdamW(params)) and not heavy_ball_momentum(torch.optim.RMSprop(
        params, momentum=0.9)), "a normalised step keeps its reading"
    ctrl = MetaLRController(0.1, policy=always(2))
    ctrl.read_optimizer(torch.optim.SGD(params, lr=0.1, momentum=0.9))
    assert ctrl.heavy_ball and not ctrl.steps_per_coordinate
    ctrl.read_optimizer(torch.optim.AdamW(params, lr=0.1))
    assert not ctrl.heavy_ball and ctrl.steps_per_coordinate


def test_normalised_steps_are_read_from_the_optimizers_class():
    params = [torch.nn.Parameter(torch.ones(2))]

    class MyAdamW(torch.optim.AdamW):
        pass

    class Wrapped:  # accelerate's AcceleratedOptimizer keeps the torch one as .optimizer
        def __init__(self, optimizer):
            self.optimizer = optimizer

    class DAdaptAdam(torch.optim.Adam):  # named like Adam, but its own estimate scales the step
        pass

    assert normalises_steps(torch.optim.AdamW(params)) and normalises_steps(MyAdamW(params))
    assert normalises_steps(torch.optim.RMSprop(params)) and normalises_steps(Wrapped(torch.optim.Adam(params)))
    assert not normalises_steps(torch.optim.SGD(params, lr=0.1)) and not normalises_steps(None)
    assert not normalises_steps(DAdaptAdam(params)) and not normalises_steps(torch.optim.Adagrad(params))
    assert not normalises_steps(torch.optim.Adafactor(params)) if hasattr(torch.optim, "Adafactor") else True


def test_at_the_floor_a_cut_is_held_and_a_raise_too():
    at_floor = {**PAST, "log10_lr_scale": math.log10(DISTANCE_FLOOR), "objective_vs_first": -1.0,
                "grad_alignment": 0.3, "grad_alignment_t": 5.0}  # progress made, the gradient along the steps
    assert direction_gate(0.5, at_floor) is not None
    assert direction_gate(2.0, at_floor).startswith("raise held: the steps are too long by two measures")
    below_the_check = direction_gate(2.0, {**at_floor, "lr_over_distance": DISTANCE_OVERSHOOT - 0.1})
    assert below_the_check.startswith("raise held: the LR is 7.9 times the distance estimate")  # the ceiling, not the check
    assert direction_gate(2.0, {**at_floor, "lr_over_distance": RAISE_CEILING / 2}) is None


def test_an_early_distance_cut_at_min_lr_is_no_cut():
    torch.manual_seed(0)
    target = torch.randn(50) * 0.5
    x = torch.nn.Parameter(torch.randn(50) * 0.1)
    optimizer = torch.optim.Adam([x], lr=1.0)
    ctrl = MetaLRController(1.0, policy=always(2), learn_online=False, min_lr=0.9).attach(optimizer)
    cuts = []
    for _ in range(32):
        optimizer.zero_grad()
        loss = (0.5 * (x - target) ** 2).sum()
        loss.backward()
        optimizer.step()
        cuts.append(ctrl.observe_train_loss(loss.item()))
    assert [c["applied"] for c in ctrl.early_cuts] == [pytest.approx(0.9)] and sum(cuts) == 1


def test_under_a_schedule_that_anneals_the_distance_cuts_stop_at_a_quarter():
    """The LR of 1 again, under a cosine schedule: the two early halvings reach 1/4 of the user's LR
    (its floor there: the schedule takes the LR the rest of the way), and the evaluations cut no
    further, the trace saying why a cut asked for is held."""
    ctrl, decisions, _ = _controlled_adam(1.0, policy=0, anneal=True, decisions=3)  # 0: x0.5
    assert ctrl.schedule_anneals and [c["applied"] for c in ctrl.early_cuts] == [0.5, 0.5]
    assert [d.applied for d in decisions] == [1.0, 1.0, 1.0] and ctrl.scale == pytest.approx(ANNEALED_DISTANCE_FLOOR)
    assert all(d.features["lr_over_distance"] >= DISTANCE_OVERSHOOT and d.gate.startswith("cut held") for d in decisions)


def _climbing_then_calm(start_over):
    """Adam at an LR of 1 on x^2, fed a training loss that climbs (the early-divergence guard cuts to
    a quarter at its second record, step 3) and then stays calm, for 32 steps."""
    torch.manual_seed(0)
    x = torch.nn.Parameter(torch.randn(50) * 0.1)
    optimizer = torch.optim.Adam([x], lr=1.0)
    ctrl = MetaLRController(1.0, policy=always(0), learn_online=False).attach(optimizer)
    if not start_over:
        ctrl.start_weights = None
    for loss in [1.0, 5.0, 30.0] + [0.5] * 29:
        optimizer.zero_grad()
        (x ** 2).sum().backward()
        optimizer.step()
        ctrl.observe_train_loss(loss)
    return ctrl


def test_after_an_early_divergence_cut_the_distance_check_stands_down():
    """Without a start-over (no start weights): from the guard's cut on there is no lr_over_distance,
    so no distance cut, early or later, though the parameters went far; the estimate itself is still
    traced. With one, the climb's steps are undone and both readings start afresh: the distance check
    reads the run again (here it cuts at step 8, and starts over again)."""
    ctrl = _climbing_then_calm(start_over=False)
    assert [("lr_over_distance" in c, c["applied"], c["rewound"]) for c in ctrl.early_cuts] == [(False, 0.25, False)]
    decision = ctrl.observe(0.5)
    assert "lr_over_distance" not in decision.features and "distance_estimate" in decision.features
    assert decision.features["param_drift"] >= MOVED and decision.applied == 1.0

    ctrl = _climbing_then_calm(start_over=True)
    assert [(c["kind"], c["step"], c["rewound"]) for c in ctrl.early_cuts][:2] == [("divergence", 3, True),
                                                                                   ("distance", 8, True)]
    assert "lr_over_distance" in ctrl.observe(0.5).features


def test_the_device_path_without_host_syncs_reads_as_the_cpu_path():
    """Off the CPU the two numbers stay tensors on the device (no host sync per step); the same
    steps read the same estimate as the CPU's Python floats, a non-finite step skipped in both."""
    torch.manual_seed(0)
    cpu = DistanceEstimate(50, "cpu")
    device = DistanceEstimate(50, "cpu")
    device._on_cpu = False
    device._numerator = torch.zeros(())
    device._largest = torch.zeros(())
    start = torch.randn(50)
    params = start.clone()
    for step in range(30):
        gradient = torch.full((50,), float("inf")) if step == 7 else params - 1.0 + 0.1 * torch.randn(50)
        for one in (cpu, device):
            one.observe(gradient, params, start if step else None)
        if step != 7:
            params = params - 0.05 * gradient.sign()
    assert cpu.value() == pytest.approx(device.value(), rel=1e-5) and cpu.value() > 0
    assert cpu.state_dict()["numerator"] == pytest.approx(device.state_dict()["numerator"], rel=1e-5)
    assert torch.isfinite(device._gradient_sum).all()


SHORT = {**PAST, "lr_over_distance": DISTANCE_SHORT, "log10_lr_scale": math.log10(DISTANCE_FLOOR),
         "grad_alignment": 0.3, "grad_alignment_t": 5.0}  # moved far, no progress, the gradient along the steps


@pytest.mark.parametrize("changes, short, through", [
    ({}, True, True),
    ({"lr_over_distance": DISTANCE_SHORT + 0.01}, False, False),  # not short enough: doubled, past the estimate
    ({"log10_lr_scale": 0.0}, False, False),  # at the user's LR: nothing of the controller's cuts to take back
    ({"lr_over_distance": None}, False, False),  # no reading (SGD, or after an early-divergence cut)
    ({"grad_alignment_t": 1.0}, True, False),  # no evidence that the steps are too short
    ({"objective_trend": 0.05}, True, False),  # the metric got worse since the last decision
])
def test_below_the_users_lr_and_short_of_the_distance_a_raise_is_not_held_for_having_moved_far(changes, short, through):
    features = {k: v for k, v in {**SHORT, **changes}.items() if v is not None}
    assert short_of_the_distance(features) is short
    why = direction_gate(2.0, features)
    if through:
        assert why is None
    else:
        assert why.startswith("raise held")
    if "lr_over_distance" in changes or "log10_lr_scale" in changes:
        assert why.startswith("raise held: the parameters have moved by"), "the moved-far hold, as before"


def _collapsed_then_marching(policy, decisions, metric=lambda k: 1.0, anneals=False):
    """Adam at an LR of 1 bouncing across a solution 0.5 away (the distance check cuts it early and
    at the first evaluation, to 1/8), then the solution moved 20 per coordinate further along the
    way the parameters went: the steps at 1/8 are far too short. The metric reported (``metric`` of
    the decision's index) is constant by default, so the run never counts as making progress, and
    it has moved far."""
    torch.manual_seed(0)
    target = torch.randn(50) * 0.5
    x = torch.nn.Parameter(torch.randn(50) * 0.1)
    start = x.detach().clone()
    optimizer = torch.optim.Adam([x], lr=1.0)
    ctrl = MetaLRController(1.0, policy=always(policy), learn_online=False).attach(optimizer)
    ctrl.start_weights = None  # the early cuts do not start it over: see _controlled_adam's start_over
    ctrl.schedule_anneals = anneals  # as a decaying scheduler's attach sets it; the LR is the controller's alone
    out = []
    for k in range(decisions):
        if k == 1:
            away = x.detach() - start
            target = start + 20.0 * away / away.norm() * 50 ** 0.5
        for _ in range(20):
            optimizer.zero_grad()
            loss = 0.5 * ((x - target) ** 2).sum()
            loss.backward()
            optimizer.step()
            ctrl.observe_train_loss(loss.item())
        out.append(ctrl.observe(metric(k)))
    return ctrl, out, optimizer


def test_the_distance_cuts_of_a_run_stuck_after_them_are_taken_back_as_far_as_the_users_lr():
    ctrl, decisions, optimizer = _collapsed_then_marching(policy=4, decisions=6)  # 4: x2
    assert [c["scale"] for c in ctrl.early_cuts] == [0.5, 0.25]
    assert decisions[0].scale == pytest.approx(0.125)
    assert decisions[0].evidence.startswith("cut: the steps are too long by two measures")
    assert [d.scale for d in decisions[1:]] == pytest.approx([0.25, 0.5, 1.0, 1.0, 1.0])
    for d in decisions[1:4]:
        assert d.features["param_drift"] >= MOVED and d.features["lr_over_distance"] <= DISTANCE_SHORT
        assert "times the distance estimate, below the user's LR: the steps are too short" in d.evidence
    assert decisions[4].gate.startswith("raise held: the parameters have moved by"), "at the user's LR, held as before"
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.0)


@pytest.mark.parametrize("policy", [2, 3])  # keep; x1.25
def test_the_gate_takes_the_distance_cuts_back_by_itself_as_far_as_the_users_lr(policy):
    """Whatever the policy asks, the gate doubles the LR back from 1/8 (``distance_restore``) while it
    is short of the distance estimate and nothing reads an overshoot; at the user's LR it stops."""
    ctrl, decisions, _ = _collapsed_then_marching(policy=policy, decisions=6)
    assert [d.scale for d in decisions] == pytest.approx([0.125, 0.25, 0.5, 1.0, 1.0, 1.0])
    for d in decisions[1:4]:
        assert d.applied == pytest.approx(2.0) and d.features["lr_over_distance"] <= DISTANCE_SHORT
        assert d.evidence.startswith("restore: the distance check cut the LR, and the estimate has since grown past it")
        assert d.evidence.endswith(f"the policy asked for x{[0.5, 0.8, 1, 1.25, 2][policy]:g}")
    assert all(d.applied == 1.0 for d in decisions[4:]), "at the user's LR: no restore past it"


@pytest.mark.parametrize("policy", [2, 3])  # keep; x1.25
def test_under_an_annealing_schedule_the_gate_takes_the_distance_cuts_back_from_the_annealed_floor(policy):
    """The same restore under a schedule that anneals by itself: from 1/4 (the annealed floor) the gate
    doubles the LR back as far as the user's LR, whatever the policy asks, and no further; the schedule's
    decay stays the schedule's."""
    torch.manual_seed(0)
    ctrl, decisions, _ = _collapsed_then_marching(policy=policy, decisions=6, anneals=True)
    assert [d.scale for d in decisions] == pytest.approx([ANNEALED_DISTANCE_FLOOR, 0.5, 1.0, 1.0, 1.0, 1.0])
    for d in decisions[1:3]:
        assert d.rule == "restore" and d.applied == pytest.approx(2.0)
        assert d.evidence.startswith("restore: the distance check cut the LR, and the estimate has since grown past it")
    assert all(d.applied == 1.0 for d in decisions[3:]), "at the user's LR: no restore past it"


def test_under_a_decaying_schedule_the_restore_reads_the_lr_the_schedule_decays_from():
    """``planned_lr_over_distance`` is the controller's LR alone over the estimate: the decayed LR's ratio
    over the schedule's factor of the last step; without a schedule that anneals by itself it is absent."""
    for decays in (True, False):
        torch.manual_seed(0)
        x = torch.nn.Parameter(torch.randn(50) * 0.1)
        optimizer = torch.optim.Adam([x], lr=0.01)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, (lambda s: 1 - s / 100) if decays else (lambda s: 1.0))
        ctrl = MetaLRController(0.01, policy=always(2), learn_online=False).attach(optimizer, scheduler, total_steps=100)
        assert ctrl.schedule_anneals is decays
        target = torch.randn(50)
        for step in range(40):
            optimizer.zero_grad()
            loss = 0.5 * ((x - target) ** 2).sum()
            loss.backward()
            factor = optimizer.param_groups[0]["lr"] / ctrl.lr  # the factor of the step about to be taken
            optimizer.step()
            scheduler.step()
            ctrl.observe_train_loss(loss.item())
        features = ctrl.observe(loss.item()).features
        assert 0 < features["lr_over_distance"] < NO_DISTANCE
        if decays:
            assert factor == pytest.approx(0.61)
            assert features["planned_lr_over_distance"] == pytest.approx(features["lr_over_distance"] / factor)
        else:
            assert "planned_lr_over_distance" not in features


def _controller_with(history: list[dict], early_cuts: list[dict] = ()) -> MetaLRController:
    ctrl = MetaLRController(1.0, policy=always(2), learn_online=False)
    ctrl.history.extend(history)
    ctrl.early_cuts.extend(early_cuts)
    return ctrl


def test_the_distance_debt_counts_the_checks_cuts_and_the_restores_only_and_survives_a_resume():
    early = [{"kind": "distance", "step": 8, "applied": 0.5}, {"kind": "divergence", "step": 3, "applied": 0.25}]
    history = [{"applied": 0.5, "rule": "distance", "features": {}},  # the check's cut at a decision
               {"applied": 0.5, "rule": None, "features": {}},  # another rule's cut: not the check's
               {"applied": 2.0, "rule": "restore", "features": {}}]
    ctrl = _controller_with(history, early)
    assert ctrl._distance_debt() == pytest.approx(0.5 * 0.5 * 2.0)
    # any raise since the check's first cut pays it back; the takeback of another rule's punished cut does not,
    # that of the check's own does
    other = [{"applied": 0.5, "rule": "distance"}, {"applied": 0.5, "rule": None}, {"applied": 2.0, "rule": "undo_cut"}]
    assert _controller_with(other)._distance_debt() == 0.5
    own = [{"applied": 0.5, "rule": "distance"}, {"applied": 2.0, "rule": "undo_cut"}]
    assert _controller_with(own)._distance_debt() == 1.0
    assert _controller_with([{"applied": 0.25, "rule": "distance"}, {"applied": 1.25, "rule": None}])._distance_debt() == 0.3125
    assert _controller_with([{"applied": 2.0, "rule": None}, {"applied": 0.5, "rule": "distance"}])._distance_debt() == 0.5
    resumed = MetaLRController(1.0, policy=always(2), learn_online=False)
    resumed.load_state_dict(json.loads(json.dumps(ctrl.state_dict())))
    assert resumed._distance_debt() == ctrl._distance_debt() and not resumed._restore_punished()
    assert _controller_with([], [{"kind": "divergence", "step": 3, "applied": 0.25}])._distance_debt() == 1.0
    # a history saved before rule was recorded: a cut whose features read past the distance is the check's
    past = {**PAST, "log10_lr_scale": 0.0}
    assert _controller_with([{"applied": 0.5, "features": past}])._distance_debt() == 0.5
    assert _controller_with([{"applied": 0.5, "features": {**past, "param_drift": 0.5}}])._distance_debt() == 1.0
    assert _controller_with(history + [{"applied": 4.0, "rule": "restore"}])._distance_debt() == 1.0, "at most 1"


def test_once_a_restore_is_taken_back_the_gate_restores_no_more():
    restored = [{"applied": 0.5, "rule": "distance"}, {"applied": 2.0, "rule": "restore"}]
    assert not _controller_with(restored)._restore_punished()
    for undo in ("undo_raise", "unpaid_undo"):
        assert _controller_with(restored + [{"applied": 0.5, "rule": undo}])._restore_punished()
    assert not _controller_with([{"applied": 0.5, "rule": "undo_raise"}] + restored)._restore_punished(), "before it"
    kept = restored + [{"applied": 1.0, "rule": None}]
    assert _controller_with(kept + [{"applied": 0.5, "rule": "unpaid_undo"}])._restore_punished(), "its standing raise"
    policy = kept + [{"applied": 2.0, "rule": None}]  # the policy's raise, then its undo: not the restore's
    for undo in ("undo_raise", "unpaid_undo"):
        assert not _controller_with(policy + [{"applied": 0.5, "rule": undo}])._restore_punished(), undo
    ctrl, decisions, _ = _collapsed_then_marching(policy=2, decisions=6, metric=lambda k: 1.05 if k == 2 else 1.0)
    assert decisions[1].evidence.startswith("restore:") and decisions[2].evidence.startswith("undo: the metric got worse")
    assert ctrl._restore_punished()
    assert [d.scale for d in decisions[3:]] == pytest.approx([0.125] * 3), "no restore after its undo"
    assert all(not (d.evidence or "").startswith("restore") for d in decisions[3:])


def test_a_history_saved_before_rule_names_its_moves_by_their_evidence():
    ctrl = _controller_with([])
    assert ctrl._rule_of({"applied": 2.0, "evidence": "restore: the distance check cut the LR, ..."}) == "restore"
    assert ctrl._rule_of({"applied": 2.0, "evidence": "undo: the metric got worse right after the last cut ..."}) == "undo_cut"
    assert ctrl._rule_of({"applied": 0.5, "evidence": "undo: the metric got worse right after the last raise ..."}) == (
        "undo_raise")
    assert ctrl._rule_of({"applied": 0.5, "evidence": "undo: the metric is 3.6% worse than at ..."}) == "unpaid_undo"
    assert ctrl._rule_of({"applied": 0.5, "diverged": True, "rule": None}) == "divergence"
    assert ctrl._rule_of({"applied": 0.5, "evidence": "cut: the gradient clearly opposes ..."}) is None


def test_a_raise_let_through_short_of_the_distance_is_taken_back_when_the_next_evaluation_punishes_it():
    """The first raise back (at the second evaluation, to 1/4) is followed by a metric 5% worse: it
    is taken back, whatever the policy asks."""
    ctrl, decisions, _ = _collapsed_then_marching(policy=4, decisions=4, metric=lambda k: 1.05 if k == 2 else 1.0)
    assert decisions[1].scale == pytest.approx(0.25) and "below the user's LR" in decisions[1].evidence
    assert decisions[2].evidence.startswith("undo: the metric got worse right after the last raise")
    assert decisions[2].scale == pytest.approx(0.125)


def test_a_reading_without_a_positive_estimate_is_said_so_not_as_a_ratio():
    from hf_metalr.controller.gate import direction_verdict, lr_over_distance_in_words

    assert lr_over_distance_in_words(NO_DISTANCE) == "there is no positive distance estimate yet"
    assert lr_over_distance_in_words(12.34) == "the LR is 12.3 times the distance estimate"
    _, why = direction_verdict(0.5, {**PAST, "lr_over_distance": NO_DISTANCE})
    assert "and there is no positive distance estimate yet (D-adaptation's bound" in why and "1e+06" not in why


def test_an_early_cut_recorded_before_kind_is_told_by_its_fields():
    """Traces and checkpoints written before ``kind`` was recorded: the distance check's cuts hold
    ``lr_over_distance``, the early-divergence guard's do not."""
    assert is_early_distance_cut({"step": 8, "reference": None, "param_drift": 2.0, "lr_over_distance": 40.0})
    assert not is_early_distance_cut({"step": 3, "reference": 18.8, "applied": 0.25})
    assert not is_early_distance_cut({"kind": "divergence", "step": 3, "reference": 18.8})


def _start_over_quadratic(lr):
    """A quadratic in 50 coordinates whose solution lies 0.5 away, with Adam at ``lr``: ``(x, its start,
    the optimizer, the loss at x)``."""
    torch.manual_seed(0)
    target = torch.randn(50) * 0.5
    x = torch.nn.Parameter(torch.randn(50) * 0.1)
    curvature = torch.linspace(0.5, 1.0, 50)
    return x, x.detach().clone(), torch.optim.Adam([x], lr=lr), lambda: 0.5 * (curvature * (x - target) ** 2).sum()


def _step(ctrl, optimizer, quadratic, scheduler=None) -> bool:
    """One optimizer step on the quadratic (and the scheduler's), its loss to the controller; True
    when the controller cut the LR early on it."""
    optimizer.zero_grad()
    loss = quadratic()
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return ctrl.observe_train_loss(loss.item())


def _interval(ctrl, optimizer, quadratic, value=None, scheduler=None):
    """20 steps (``_step``), then a decision on ``value`` (the quadratic's loss when None)."""
    for _ in range(20):
        _step(ctrl, optimizer, quadratic, scheduler)
    with torch.no_grad():
        return ctrl.observe(float(quadratic()) if value is None else value)


def test_an_early_cut_starts_the_run_over_from_its_start_weights_with_the_optimizer_state_cleared():
    """Adam at an LR of 1 on the quadratic: the first 8 steps move the parameters by several times
    their starting norm, the early distance check cuts, and the run goes back to where it started,
    with Adam's moments cleared and the drift read afresh from there; the copy outlives the first
    decision (no progress to read yet) and is dropped at the second, 86% below the first. At an LR of
    0.03 nothing is cut, and the run is not touched."""
    x, start, optimizer, quadratic = _start_over_quadratic(1.0)
    ctrl = MetaLRController(1.0, policy=always(2), learn_online=False).attach(optimizer)
    at_cuts = []
    for _ in range(20):
        if _step(ctrl, optimizer, quadratic):
            at_cuts.append((torch.equal(x.detach(), start), len(optimizer.state), ctrl.alignment.drift(),
                            ctrl.tracker.window_count, ctrl.early_guard.highest))
    assert [c["step"] for c in ctrl.early_cuts] == [8, 16] and all(c["rewound"] for c in ctrl.early_cuts)
    assert at_cuts == [(True, 0, 0.0, 0, None), (True, 0, 0.0, 0, None)], "the undone steps' losses leave with them"
    assert ctrl.start_weights.kept and ctrl.state_dict()["start_weights_kept"] is True
    kept = []
    for _ in range(2):
        _interval(ctrl, optimizer, quadratic)
        kept.append((ctrl.start_weights.kept, ctrl.state_dict()["start_weights_kept"]))
    assert kept == [(True, True), (False, False)]
    assert ctrl.history[1]["features"]["objective_vs_first"] <= -PROGRESS

    calm, _, _ = _controlled_adam(0.03, decisions=2, start_over=True)
    assert not calm.early_cuts and not calm.start_weights.kept


def _stuck_quadratic(lr, decisions, metric=lambda k: 1.0, optimizer_class=torch.optim.Adam, scheduler=None,
                     learn_online=False):
    """Decisions every 20 steps of ``optimizer_class`` at ``lr`` on the quadratic, the policy always
    keeping, the metric reported ``metric(k)`` at decision ``k`` (constant by default: the run never
    leaves its first evaluation's level). ``(x, its start, the optimizer, the controller, the
    decisions, at each decision (x equals its start, len(optimizer.state), the copy kept))``."""
    x, start, _, quadratic = _start_over_quadratic(lr)
    optimizer = optimizer_class([x], lr=lr)
    if scheduler is not None:
        scheduler = scheduler(optimizer)
    ctrl = MetaLRController(lr, policy=always(2), learn_online=learn_online).attach(optimizer, scheduler,
                                                                                total_steps=20 * decisions)
    out, seen = [], []
    for k in range(decisions):
        out.append(_interval(ctrl, optimizer, quadratic, metric(k), scheduler))
        seen.append((torch.equal(x.detach(), start), len(optimizer.state), ctrl.start_weights.kept))
    return x, start, optimizer, ctrl, out, seen


def test_a_cut_at_a_decision_on_a_wrecked_run_starts_it_over():
    """Adam at an LR of 10 on the quadratic, its metric stuck at the first evaluation's level: the
    early cuts (the guard's at step 2, the distance check's at 8 and 16) start it over three times,
    but their LR still throws the parameters 8 times their starting norm away with no positive
    distance estimate by the first decision, whose cut (the gradient opposes the steps) then starts
    the run over too: the weights back, Adam's state cleared, the decision's ``rewound`` and its
    evidence say so, and the trace view's row and summary. The next decision, the steps no longer too
    long by both measures, does not."""
    x, start, optimizer, ctrl, decisions, seen = _stuck_quadratic(10.0, decisions=2)
    first = decisions[0]
    assert first.applied < 1 and first.features["param_drift"] >= MOVED
    assert first.features["lr_over_distance"] >= DISTANCE_OVERSHOOT and first.features["objective_vs_first"] == 0
    assert first.rewound is True and first.start_over == "wrecked" and seen[0] == (True, 0, True)
    assert first.evidence.endswith("a wrecked run (the steps too long by both measures, the metric still at its first "
                                   "evaluation's level): the weights went back to where the run started, and the "
                                   "optimizer's state is cleared: the run starts over at the cut LR")
    assert ctrl.history[0]["rewound"] is True and ctrl.history[0]["evidence"] == first.evidence
    assert ctrl.history[0]["start_over"] == "wrecked" and ctrl.history[1]["start_over"] is None
    assert ctrl.alignment.drift() > 0 and decisions[1].features["param_drift"] < first.features["param_drift"]
    assert decisions[1].rewound is None and decisions[1].start_over is None and seen[1][0] is False
    assert ctrl.start_weights.kept, "no progress yet: a later wreck may still start it over"
    from hf_metalr.reporting.trace_view import format_trace
    rows = format_trace([{"global_step": 20, "value": 1.0, "action": first.multiplier, "applied": first.applied,
                          "lr": first.lr, "evidence": first.evidence, "rewound": True}]).splitlines()
    assert rows[-1] == "  started over: a wrecked run's cut, and the weights went back to where the run started"
    from hf_metalr.reporting.trace_view import _summary_text, summarize_trace
    entries = [{"global_step": 20 * (k + 1), "value": 1.0, "action": d.multiplier, "applied": d.applied, "lr": d.lr,
                "scale": d.scale, "initial_lr": 10.0, "rewound": d.rewound, "early_cuts": ctrl.early_cuts if k == 0 else []}
               for k, d in enumerate(decisions)]
    summary = summarize_trace(entries)
    assert summary["started_over"] == sum(c["rewound"] for c in ctrl.early_cuts) + 1 == 4
    assert "4 start-overs from the weights the run started from" in _summary_text(summary, "loss")



def test_a_run_stuck_at_two_evaluations_in_a_row_is_started_over_at_half_the_distance_bar():
    """The same run's third decision: stuck at the first evaluation's level at two evaluations in a
    row after moving far, with the LR 4.4 times the distance estimate, under the bar of a run that
    improves (8) and past a stuck run's (4): wrecked, so its cut (the gradient opposes the steps; the
    LR is below the distance cut's floor after the early cuts) starts the run over. At the second
    decision, stuck once, the same reading was not wrecked."""
    x, start, optimizer, ctrl, decisions, seen = _stuck_quadratic(10.0, decisions=3)
    second, third = decisions[1], decisions[2]
    assert second.features["stuck_evaluations"] == STUCK_EVALUATIONS - 1 and second.rewound is None
    assert STUCK_DISTANCE_OVERSHOOT <= second.features["lr_over_distance"] < DISTANCE_OVERSHOOT
    assert third.features["stuck_evaluations"] == STUCK_EVALUATIONS
    assert STUCK_DISTANCE_OVERSHOOT <= third.features["lr_over_distance"] < DISTANCE_OVERSHOOT
    assert third.applied == 0.5 and third.rewound is True and seen[2][:2] == (True, 0)
    assert not wrecked(second.features) and wrecked(third.features) and third.features["start_weights_kept"] == 1
    assert not wrecked({**third.features, "start_weights_kept": 0}), "only where a cut would start the run over"
    assert third.evidence.endswith("the run starts over at the cut LR")
    assert ctrl.history[2]["rewound"] is True



STUCK_PAST = {**PAST, "lr_over_distance": STUCK_DISTANCE_OVERSHOOT + 1, "stuck_evaluations": STUCK_EVALUATIONS,
              "start_weights_kept": 1.0, "log10_lr_scale": 0.0}


def test_a_keep_on_a_stuck_run_past_half_the_bar_becomes_the_fixed_halving():
    """The policy keeps; the gate halves a stuck run whose start weights are kept at 5 times the
    estimate, and only such a run."""
    move = gate_move(1.0, STUCK_PAST, first=False, schedule_anneals=False, scale=1.0, min_scale=1e-3, last_applied=1.0)
    assert move.multiplier == 0.5 and move.rule == "distance" and "that can start over" in move.why
    for changes in ({"start_weights_kept": 0.0}, {"stuck_evaluations": STUCK_EVALUATIONS - 1}):
        move = gate_move(1.0, {**STUCK_PAST, **changes}, first=False, schedule_anneals=False, scale=1.0, min_scale=1e-3,
                         last_applied=1.0)
        assert move.multiplier == 1.0, changes


@pytest.mark.parametrize("ratio, anneals, words", [
    (STUCK_DISTANCE_OVERSHOOT - 1, False, "the LR is 3 times the distance estimate, under the stuck run's bar of 4"),
    (STUCK_DISTANCE_OVERSHOOT + 2, False, "the distance check's cuts took it to their floor, 1/16 of the user's"),
    (NO_DISTANCE, True, "the distance check's cuts took it to their floor, 1/4 of the user's"),
])
def test_a_stuck_runs_held_cut_says_why_its_distance_bar_did_not_cut(ratio, anneals, words):
    """Stuck at or below the user's LR with the start weights kept: under the halved bar, or at the
    distance cut's floor (where the bar no longer cuts), the words say which."""
    floor = ANNEALED_DISTANCE_FLOOR if anneals else DISTANCE_FLOOR
    features = {**STUCK_PAST, "lr_over_distance": ratio, "objective_trend": -0.01,
                "log10_lr_scale": 0.0 if ratio < STUCK_DISTANCE_OVERSHOOT else math.log10(floor)}
    verdict = _verdict(0.5, features, first=False, schedule_anneals=anneals)
    assert verdict.held and verdict.why.startswith("cut held: the parameters have moved") and words in verdict.why


def test_the_stuck_count_starts_afresh_after_a_start_over():
    """The evaluations in a row a run has been stuck are the steps since its start: after a decision
    that started the run over, the next stuck evaluation counts 1, not one more than before it."""
    ctrl = MetaLRController(1e-3, policy=always(2))
    stuck = {"param_drift": 2 * MOVED, "objective_vs_first": 0.0}
    ctrl.history = [{"features": {"stuck_evaluations": 2}, "rewound": True}]
    assert ctrl._stuck_evaluations(stuck, first=False) == 1
    ctrl.history = [{"features": {"stuck_evaluations": 2}, "rewound": None}]
    assert ctrl._stuck_evaluations(stuck, first=False) == 3


def test_the_interval_of_a_start_over_is_not_learned_from():
    """The interval decided on at a start-over measured the wrecked weights, not the cut: the online
    learner does not learn that transition at the next decision (it does at the one after), and the
    next decision's training-loss trend has no interval before it (0)."""
    _, _, _, ctrl, decisions, _ = _stuck_quadratic(10.0, decisions=3, learn_online=True)
    assert decisions[0].rewound is True
    assert [d.learned for d in decisions] == [False, False, True]
    assert decisions[1].features["train_loss_trend"] == 0.0 and decisions[2].features["train_loss_trend"] != 0.0


def test_a_plain_loop_resumed_while_the_copy_is_kept_past_the_first_decision_starts_over_alike():
    """The run at an LR of 1 keeps the copy after its first decision (no progress, its LR 2.3 times the
    estimate); saved there and resumed with the start weights, a NaN metric at the next decision
    starts both runs over alike, to the weights the run started from. Resumed without them, it
    warns and only cuts; resumed with them and then past the need of them, a divergence neither
    starts over nor warns."""
    def make():
        x, start, _, quadratic = _start_over_quadratic(1.0)
        optimizer = torch.optim.Adam([x], lr=1.0)
        return x, start, optimizer, quadratic, MetaLRController(1.0, policy=always(2), learn_online=False)

    def resume(saved, *, with_start):
        """A fresh run given the saved weights, Adam's state and the controller's (and the start weights)."""
        x, start, optimizer, quadratic, resumed = make()
        with torch.no_grad():
            x.copy_(saved[3])
        optimizer.load_state_dict(saved[2])
        resumed.load_state_dict(saved[0])
        resumed.attach(optimizer)
        if with_start:
            resumed.start_weights.load_state_dict(saved[1])
        return x, start, optimizer, quadratic, resumed

    x, start, optimizer, quadratic, whole = make()
    whole.attach(optimizer)
    _interval(whole, optimizer, quadratic, 1.0)
    assert whole.start_weights.kept and whole.decision_index == 1
    saved = (json.loads(json.dumps(whole.state_dict())), whole.start_weights.state_dict(),
             optimizer.state_dict(), x.detach().clone())
    with pytest.warns(RuntimeWarning, match="treating it as a divergence"):
        after = _interval(whole, optimizer, quadratic, math.nan)
    assert after.rewound is True and torch.equal(x.detach(), start)

    for with_start in (True, False):
        x, start, optimizer, quadratic, resumed = resume(saved, with_start=with_start)
        if with_start:
            with pytest.warns(RuntimeWarning, match="treating it as a divergence"):
                again = _interval(resumed, optimizer, quadratic, math.nan)
            assert again.rewound is True and torch.equal(x.detach(), start) and again.scale == after.scale
        else:
            with pytest.warns(RuntimeWarning, match="load it with ctrl.start_weights.load_state_dict"):
                again = _interval(resumed, optimizer, quadratic, math.nan)
            assert again.rewound is False and not torch.equal(x.detach(), start)

    # resumed with them, then past the need of them (the metric 30% below the first evaluation's): a later
    # divergence neither starts over nor warns of weights that were not loaded
    x, start, optimizer, quadratic, resumed = resume(saved, with_start=True)
    _interval(resumed, optimizer, quadratic, 0.7)
    assert not resumed.start_weights.kept
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _interval(resumed, optimizer, quadratic, math.nan)
    assert again.rewound is None and [str(w.message) for w in caught if "start_weights" in str(w.message)] == []


def test_a_cut_on_a_run_that_has_made_progress_or_reads_short_steps_does_not_start_it_over(monkeypatch):
    """The same run with its metric falling 30% at each decision: the first decision's cut starts it
    over (no progress can be read at the first), and the second, 30% below the first, drops the copy.
    At an LR of 1, with the metric stuck, the steps after the early start-overs are not too long by
    the distance check's measures (2.3 times the estimate), and with the long plateau's rule out of
    the way the policy's cut at the fifth decision only cuts. With the rule, that cut is a long
    plateau's (stuck at the first level, the weights moved and stopped, the LR at least twice the
    estimate), and it starts the run over for that reason."""
    _, _, _, ctrl, decisions, seen = _stuck_quadratic(10.0, decisions=3, metric=lambda k: 0.7 ** k)
    assert [d.rewound for d in decisions] == [True, None, None]
    assert [kept for _, _, kept in seen] == [True, False, False]
    _, _, _, _, with_the_rule, _ = _stuck_quadratic(1.0, decisions=6)
    assert [(d.index, d.start_over) for d in with_the_rule if d.rewound] == [(4, "long plateau")]
    import hf_metalr.controller.gate as gate
    monkeypatch.setattr(gate, "LONG_PLATEAU_DISTANCE", math.inf)
    _, _, optimizer, ctrl, decisions, seen = _stuck_quadratic(1.0, decisions=6)
    cuts = [d for d in decisions if d.applied < 1]
    assert cuts and all(d.rewound is None and d.features["lr_over_distance"] < DISTANCE_OVERSHOOT for d in cuts)
    assert len(optimizer.state) == 1 and ctrl.start_weights.kept


def test_a_divergence_at_a_decision_starts_the_run_over_while_the_copy_is_kept():
    """A NaN metric at the second decision of a run at an LR of 1 that has made no progress (its LR
    still 2.3 times the distance estimate after the early start-overs): the LR is halved and the
    weights go back to their start (the trace view says so). At an LR of 0.03 the LR of the steps is
    within the estimate at the first decision, nothing the gate allows takes it back past the
    distance check's bar, and the copy is dropped there; with SGD, where the distance check is off,
    too."""
    metric = lambda k: math.nan if k == 1 else 1.0
    with pytest.warns(RuntimeWarning, match="treating it as a divergence"):
        _, _, _, ctrl, decisions, seen = _stuck_quadratic(1.0, decisions=2, metric=metric)
    assert RAISE_CEILING < decisions[0].features["lr_over_distance"] < DISTANCE_OVERSHOOT
    assert decisions[1].diverged and decisions[1].rewound is True and decisions[1].start_over == "diverged"
    assert seen[1] == (True, 0, True)
    assert "a wrecked run (the metric is not finite)" in decisions[1].evidence
    from hf_metalr.reporting.trace_view import _why
    assert _why({"diverged": True, "rewound": True}).endswith("and the weights went back to where the run started")
    with pytest.warns(RuntimeWarning, match="treating it as a divergence"):
        _, _, _, ctrl, decisions, seen = _stuck_quadratic(0.03, decisions=2, metric=metric)
    assert decisions[0].features["lr_over_distance"] <= RAISE_CEILING
    assert [kept for _, _, kept in seen] == [False, False] and decisions[1].rewound is None
    with pytest.warns(RuntimeWarning, match="treating it as a divergence"):
        _, _, _, ctrl, decisions, seen = _stuck_quadratic(0.03, decisions=2, metric=metric,
                                                          optimizer_class=torch.optim.SGD)
    assert [kept for _, _, kept in seen] == [False, False] and decisions[1].rewound is None


def test_without_the_start_weights_an_early_cut_only_cuts():
    """A controller whose start weights were not kept (a resume whose checkpoint lacked them, or
    watch(keep_start=False)) cuts as before and says it did not go back."""
    x, _, optimizer, quadratic = _start_over_quadratic(1.0)
    ctrl = MetaLRController(1.0, policy=always(2), learn_online=False)
    ctrl.watch([x], keep_start=False)
    ctrl.read_optimizer(optimizer)
    for _ in range(8):
        optimizer.zero_grad()
        loss = quadratic()
        loss.backward()
        ctrl.before_optimizer_step()
        optimizer.step()
        ctrl.after_optimizer_step()
        ctrl.observe_train_loss(loss.item())
    assert [(c["step"], c["rewound"]) for c in ctrl.early_cuts] == [(8, False)]
    assert len(optimizer.state) == 1 and ctrl.alignment.drift() > 1


def test_the_copy_is_of_the_weights_before_the_first_optimizer_step_whatever_came_before_it():
    """A loop that reports a training loss before its first optimizer step (a step a GradScaler
    skipped, a loss per micro-batch) still gets the weights before the first real step, and its
    early cut goes back to them."""
    x, start, optimizer, quadratic = _start_over_quadratic(1.0)
    ctrl = MetaLRController(1.0, policy=always(2), learn_online=False).attach(optimizer)
    ctrl.observe_train_loss(1.0)  # a skipped step: a loss, no optimizer step
    at_cut = None
    for _ in range(7):
        if _step(ctrl, optimizer, quadratic):
            at_cut = x.detach().clone()
    assert [(c["step"], c["rewound"]) for c in ctrl.early_cuts] == [(8, True)]  # the guard counts the skipped step
    assert torch.equal(at_cut, start)


def resumed_after_four_steps(*, load_start, edit_state=lambda state: None):
    """A plain loop at an LR of 1 on the quadratic, its state saved after 4 steps (the start weights kept),
    ``edit_state``'s change made to it, loaded into a fresh controller (with the start weights when
    ``load_start``), and 4 more steps, over the early cut at step 8: ``(the resumed controller, x, the
    start weights)``."""
    x, _, optimizer, quadratic = _start_over_quadratic(1.0)
    first = MetaLRController(1.0, policy=always(2), learn_online=False).attach(optimizer)
    for _ in range(4):
        _step(first, optimizer, quadratic)
    state, kept = first.state_dict(), first.start_weights.state_dict()
    first.detach()
    assert state["start_weights_kept"] is True and len(kept["weights"]) == 1
    edit_state(state)
    resumed = MetaLRController(1.0, policy=always(2), learn_online=False)
    resumed.load_state_dict(state)
    resumed.attach(optimizer)
    if load_start:
        resumed.start_weights.load_state_dict(kept)
    for _ in range(4):
        _step(resumed, optimizer, quadratic)
    return resumed, x.detach().clone(), kept["weights"][0]


def test_a_plain_loop_resumed_without_its_start_weights_is_told_at_its_early_cut():
    """A state saved while the start weights were kept, loaded without them: the next early cut only
    cuts, and says what to save and load; loaded with them, it goes back to them."""
    with pytest.warns(RuntimeWarning, match=r"load it with ctrl.start_weights.load_state_dict\(\)"):
        resumed, _, _ = resumed_after_four_steps(load_start=False)
    assert [(c["step"], c["rewound"]) for c in resumed.early_cuts] == [(8, False)]
    resumed, x, start = resumed_after_four_steps(load_start=True)
    assert [(c["step"], c["rewound"]) for c in resumed.early_cuts] == [(8, True)] and torch.equal(x, start)
