"""The iterate-average check: the running average, the exact swap, the gain's sign, its state, and the gate."""

import math

import pytest
import torch

from hf_metalr.controller.controller import MetaLRController
from hf_metalr.controller.gate import AVERAGE_GAIN, CLEAR_OVERSHOOT_CUT, direction_gate
from hf_metalr.controller.iterate_average import IterateAverage


def _walk(points):
    """An IterateAverage over one 2-d parameter that visits ``points`` (one optimizer step each)."""
    theta = torch.nn.Parameter(torch.zeros(2))
    average = IterateAverage([theta])
    for point in points:
        with torch.no_grad():
            theta.copy_(torch.tensor(point, dtype=torch.float32))
        average.after_step()
    return theta, average


def _bowl(theta):
    return lambda: float((theta.detach() ** 2).sum() + 1.0)  # lowest (1) at the origin


def test_the_average_is_the_mean_of_the_iterates_and_the_swap_puts_the_parameters_back_exactly():
    theta, average = _walk([[1.0, 3.0], [2.0, -1.0], [0.5, 0.25]])
    assert average.steps == 3
    with average.swapped_in():
        assert theta.detach().tolist() == pytest.approx([3.5 / 3, 2.25 / 3])
    assert theta.detach().tolist() == [0.5, 0.25]
    with pytest.raises(RuntimeError, match="boom"), average.swapped_in():
        raise RuntimeError("boom")
    assert theta.detach().tolist() == [0.5, 0.25], "put back after an error too"


def test_narrow_parameters_fold_in_chunks_to_the_same_average_as_one_float_copy_each(monkeypatch):
    """bfloat16 and float16 parameters (a model trained in pure bf16, its norms in float32) are widened
    a chunk at a time into a bounded float32 scratch and folded with one ``_foreach_lerp_`` per chunk
    (per tensor, two launches each, they took 3.2 ms a step on an H200 for BERT-base): the average is
    bit for bit the one that a ``float()`` copy of each gives, the chunks fit the scratch, a tensor
    larger than it goes on its own, and the swap rounds the average into each dtype as ``copy_`` does
    and puts back the exact parameters."""
    import hf_metalr.controller.iterate_average as module

    monkeypatch.setattr(module, "WIDENING_SCRATCH", 700)
    generator = torch.Generator().manual_seed(0)
    shapes_dtypes = [((40,), torch.float32), ((20, 30), torch.bfloat16), ((10, 30), torch.float16),
                     ((300,), torch.bfloat16), ((900,), torch.bfloat16), ((25,), torch.float16)]
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator).to(dtype)) for shape, dtype in shapes_dtypes]
    average = IterateAverage(params)
    expected = None
    for step in range(1, 6):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn(p.shape, generator=generator).to(p.dtype), alpha=0.1)
        average.after_step()
        if expected is None:
            expected = [p.detach().float().clone() for p in params]
        else:
            for e, p in zip(expected, params):
                e.lerp_(p.detach().float(), 1.0 / step)
    assert all(torch.equal(a, e) for a, e in zip(average._average, expected))
    assert [p.numel() for _, p in average._other] == [900]  # over the scratch: on its own
    chunks = [[(p.numel(), p.dtype) for p in params_] for _, params_, _ in average._chunks]
    assert chunks == [[(600, torch.bfloat16)], [(300, torch.bfloat16)],  # each fits the scratch, one dtype each
                      [(300, torch.float16), (25, torch.float16)]]
    before = [p.detach().clone() for p in params]
    copy = torch._foreach_copy_

    def one_dtype_each(destinations, sources):  # a CUDA fast path of some torch releases took every destination
        assert len({t.dtype for t in destinations}) == 1  # for the first one's dtype
        return copy(destinations, sources)

    monkeypatch.setattr(torch, "_foreach_copy_", one_dtype_each)
    with average.swapped_in():
        assert all(torch.equal(p.detach(), e.to(p.dtype)) for p, e in zip(params, expected))
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


@pytest.mark.parametrize("end", ["gain", "restart", "forget", "load an empty state"])
def test_the_average_of_an_interval_is_freed_when_it_ends(end):
    """One float32 copy of the weights at a time: once an interval ends, nothing holds its average,
    so the next interval's copy is not allocated beside it; a fold after it still gives the mean."""
    import gc
    import weakref

    theta, average = _walk([[1.0, 3.0], [2.0, -1.0]])
    copy = weakref.ref(average._average[0])
    if end == "gain":
        average.gain(_bowl(theta))
    elif end == "restart":
        average.restart(_bowl(theta))
    elif end == "forget":
        average.forget()
    else:
        average.load_state_dict({"steps": 0, "average": [], "last_loss": None})
    gc.collect()
    assert copy() is None
    for point in ([4.0, 0.0], [0.0, 2.0]):
        with torch.no_grad():
            theta.copy_(torch.tensor(point))
        average.after_step()
    with average.swapped_in():
        assert theta.detach().tolist() == pytest.approx([2.0, 1.0])


def test_the_gain_is_positive_when_the_iterates_bounce_around_a_floor_and_negative_while_they_descend():
    theta, bouncing = _walk([[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])
    assert bouncing.gain(_bowl(theta)) == pytest.approx(math.log(3.0 / 1.0))  # current 1+2, average at the floor 1
    theta, descending = _walk([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    assert descending.gain(_bowl(theta)) == pytest.approx(math.log(2.0 / 5.0))  # the average lags at 2: 5 against 2
    assert descending.steps == 0 and descending.gain(_bowl(theta)) is None, "each gain starts a new interval"


def test_no_gain_from_fewer_than_two_steps_or_a_loss_that_is_not_finite_and_positive():
    theta, one = _walk([[1.0, 1.0]])
    calls = []
    assert one.gain(lambda: calls.append(1) or 1.0) is None and not calls
    theta, average = _walk([[1.0, 1.0], [2.0, 2.0]])
    assert average.gain(lambda: float("nan")) is None
    theta, average = _walk([[1.0, 1.0], [2.0, 2.0]])
    assert average.gain(lambda: 0.0) is None


def test_the_state_resumes_the_interval_in_progress():
    points = [[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [-0.5, 0.5]]
    theta, uninterrupted = _walk(points)
    expected = uninterrupted.gain(_bowl(theta))
    theta, first = _walk(points[:2])
    state = first.state_dict()
    resumed_theta = torch.nn.Parameter(theta.detach().clone())
    resumed = IterateAverage([resumed_theta])
    resumed.load_state_dict(state)
    for point in points[2:]:
        with torch.no_grad():
            resumed_theta.copy_(torch.tensor(point))
        resumed.after_step()
    assert resumed.gain(_bowl(resumed_theta)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="does not fit"):
        IterateAverage([torch.nn.Parameter(torch.zeros(3))]).load_state_dict(state)
    empty = IterateAverage([torch.nn.Parameter(torch.zeros(2))])
    empty.load_state_dict({"steps": 0, "average": []})
    assert empty.steps == 0


IMPROVING = {"objective_trend": -0.1, "objective_vs_first": -1.0, "grad_alignment": 0.2, "grad_alignment_t": 4.0}


@pytest.mark.parametrize(
    "multiplier, gain, progress, first, held",
    [
        (0.5, AVERAGE_GAIN, 0.1, False, None),  # improving, aligned: only the average's lead lets the cut through
        (0.5, AVERAGE_GAIN - 0.01, 0.1, False, "cut held: the metric did not get worse"),
        (0.5, AVERAGE_GAIN, AVERAGE_GAIN, False, "cut held"),  # the interval gained as much: the steps still pay
        (0.5, 1.0, 0.9, False, None),
        (0.5, 1.0, -0.2, False, None),  # the loss went up over the interval
        (0.5, 1.0, None, False, "cut held"),  # no earlier check to compare with
        (0.5, AVERAGE_GAIN, 0.1, True, "cut held"),  # the first average still holds the run's start
        (2.0, AVERAGE_GAIN, 0.1, False, "raise held: the average of the iterates"),
        (2.0, AVERAGE_GAIN - 0.01, 0.1, False, None),
        (2.0, AVERAGE_GAIN, AVERAGE_GAIN + 0.1, False, None),
        (0.5, None, None, False, "cut held: the metric did not get worse"),  # no measurement: as before
    ],
)
def test_the_gate_reads_the_iterate_average_gain(multiplier, gain, progress, first, held):
    features = dict(IMPROVING)
    features.update({} if gain is None else {"iterate_average_gain": gain})
    features.update({} if progress is None else {"iterate_average_progress": progress})
    reason = direction_gate(multiplier, features, first=first)
    assert (reason is None) if held is None else reason.startswith(held)



def _controller():
    from hf_metalr.controller.policy import random_policy

    controller = MetaLRController(1e-3, policy=random_policy(seed=0), seed=0, learn_online=False, greedy=True)
    theta = torch.nn.Parameter(torch.ones(4))
    controller.watch([theta], average_iterates=True)
    controller._select = lambda obs, index: controller.keep_index  # the policy keeps; the check acts alone
    return controller, theta


def _steps(controller, theta, points):
    for point in points:
        theta.grad = torch.ones_like(theta)
        controller.before_optimizer_step()
        with torch.no_grad():
            theta.copy_(torch.full_like(theta, point))
        controller.after_optimizer_step()


def test_a_keep_becomes_the_fixed_cut_when_the_average_leads_but_not_at_the_first_evaluation():
    controller, theta = _controller()
    _steps(controller, theta, [1.0, -1.0, 1.0])
    assert controller.iterate_average.steps == 0, "before the first evaluation the steps are not folded"
    calls = []

    def counted():
        calls.append(1)
        return _bowl(theta)()

    first = controller.observe(1.0, progress=0.1, validation_loss=counted)
    assert "iterate_average_gain" not in first.features and first.applied == 1.0
    assert len(calls) == 1, "at the first evaluation the average is not read: only the current loss, for the progress"
    assert controller.iterate_average.last_loss == 5.0 and controller.iterate_average.steps == 0
    _steps(controller, theta, [-1.0, 1.0, -1.0])
    assert controller.iterate_average.steps == 3
    second = controller.observe(0.9, progress=0.2, validation_loss=_bowl(theta))
    gain = second.features["iterate_average_gain"]
    assert gain == pytest.approx(math.log(5 / (4 / 9 + 1))), "the bowl at theta = -1 against at the average, -1/3"
    assert gain >= AVERAGE_GAIN and second.features["iterate_average_progress"] == pytest.approx(0.0)
    assert second.multiplier == 1.0 and second.applied == CLEAR_OVERSHOOT_CUT
    assert "the average of the iterates" in second.evidence and "a fixed cut" in second.evidence
    _steps(controller, theta, [0.5, 0.4, 0.3])
    third = controller.observe(0.8, progress=0.3, validation_loss=_bowl(theta), current_loss=_bowl(theta)())
    assert third.features["iterate_average_gain"] < 0 and third.applied == 1.0, "a descending run keeps its LR"
    _steps(controller, theta, [0.2, 0.1])
    fourth = controller.observe(0.7, progress=0.4)
    assert "iterate_average_gain" not in fourth.features and controller.iterate_average.steps == 0, \
        "no loss to read: the interval's average is dropped"
    assert controller.iterate_average.last_loss is None


def test_progress_compares_the_current_loss_with_the_last_checks_on_the_same_batches():
    theta = torch.nn.Parameter(torch.zeros(2))
    average = IterateAverage([theta])

    def visit(points):
        for point in points:
            with torch.no_grad():
                theta.copy_(torch.tensor(point))
            average.after_step()

    visit([[3.0, 0.0], [2.0, 0.0]])
    average.gain(_bowl(theta))
    assert average.progress is None and average.last_loss == 5.0
    visit([[1.0, 0.0], [0.0, 0.0]])
    average.gain(_bowl(theta))
    assert average.progress == pytest.approx(math.log(5.0 / 1.0)) and average.last_loss == 1.0
    assert IterateAverage([theta]).state_dict()["last_loss"] is None
    resumed = IterateAverage([theta])
    resumed.load_state_dict(average.state_dict())
    assert resumed.last_loss == 1.0
    visit([[1.0, 0.0]])
    assert average.gain(_bowl(theta)) is None and average.last_loss is None, "one step: no check, and no reference"
    average.forget()
    assert average.progress is None


def test_a_resume_under_another_seed_keeps_the_iterate_average():
    from hf_metalr.controller.policy import random_policy

    theta = torch.nn.Parameter(torch.ones(4))
    saved = MetaLRController(1e-3, policy=random_policy(seed=0), seed=0, learn_online=False)
    saved.watch([theta], average_iterates=True)
    _steps(saved, theta, [1.0, 2.0])
    saved.observe(1.0, validation_loss=_bowl(theta))
    resumed = MetaLRController(1e-3, policy=random_policy(seed=0), seed=5, learn_online=False)
    resumed.watch([theta], average_iterates=True)
    average = resumed.iterate_average
    resumed.load_state_dict(saved.state_dict())
    assert resumed.iterate_average is average, "rebuilding the sketch for the saved seed leaves the average alone"
    assert resumed.alignment.seed == resumed.seed == 0


def test_a_restart_keeps_the_current_loss_for_the_next_progress_without_reading_the_average():
    theta, average = _walk([[3.0, 0.0], [2.0, 0.0]])
    swaps = []
    loss = lambda: swaps.append(theta.detach().tolist()) or _bowl(theta)()  # noqa: E731
    average.restart(loss)
    assert swaps == [[2.0, 0.0]] and average.last_loss == 5.0 and average.steps == 0 and average.progress is None
    average.after_step()
    average.after_step()
    assert average.gain(_bowl(theta)) == pytest.approx(0.0) and average.progress == pytest.approx(0.0)
    theta, average = _walk([[1.0, 0.0], [2.0, 0.0]])
    average.restart(loss, current=7.0)
    assert average.last_loss == 7.0 and len(swaps) == 1, "a current loss the caller has: no call at all"
    theta = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    unfolded = IterateAverage([theta])  # the steps before a first evaluation are not folded
    unfolded.restart(loss)
    assert unfolded.last_loss == 3.0 and len(swaps) == 2, "no average needed: the loss is kept whatever the steps"
    theta, average = _walk([[1.0, 1.0], [2.0, 2.0]])
    average.restart(lambda: float("nan"))
    assert average.last_loss is None


def test_a_current_loss_the_caller_has_is_used_and_the_loss_runs_once():
    theta, average = _walk([[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])
    calls = []

    def loss():
        calls.append(1)
        return _bowl(theta)()

    assert average.gain(loss, current=3.0) == pytest.approx(math.log(3.0 / 1.0)) and len(calls) == 1


@pytest.mark.parametrize("watch_first", [True, False])
def test_a_plain_loop_resumed_from_the_state_at_a_decision_decides_as_the_uninterrupted_one(watch_first):
    """The controller state holds the last check's loss (the next check's progress reads it) and the
    alignment's sketches, and they reach the resumed controller whether ``watch`` comes before
    ``load_state_dict`` or after."""
    import json

    from hf_metalr.controller.policy import random_policy

    intervals = [[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [0.5, -0.5, 0.4], [0.3, 0.2, 0.1]]

    def fresh():
        controller = MetaLRController(1e-3, policy=random_policy(seed=0), seed=0, learn_online=False, greedy=True)
        controller._select = lambda obs, index: controller.keep_index  # the policy keeps; the check acts alone
        return controller

    def run(controller, theta, points):
        _steps(controller, theta, points)
        return controller.observe(1.0 - 0.1 * len(controller.history), validation_loss=_bowl(theta)).as_dict()

    whole, theta = fresh(), torch.nn.Parameter(torch.ones(4))
    whole.watch([theta], average_iterates=True)
    expected = [run(whole, theta, points) for points in intervals]
    assert "iterate_average_progress" in expected[2]["features"]

    first, theta = fresh(), torch.nn.Parameter(torch.ones(4))
    first.watch([theta], average_iterates=True)
    got = [run(first, theta, points) for points in intervals[:2]]
    state = json.loads(json.dumps(first.state_dict()))  # plain JSON, as a user would write it
    assert state["iterate_average"] == {"last_loss": first.iterate_average.last_loss, "steps": 0}  # at a decision: none
    assert state["iterate_average"]["last_loss"]
    unwatched = fresh()
    unwatched.load_state_dict(state)
    assert json.loads(json.dumps(unwatched.state_dict())) == state, "saved again before watch(): nothing lost"
    resumed = fresh()
    if watch_first:
        resumed.watch([theta], average_iterates=True)
        resumed.load_state_dict(state)
    else:
        resumed.load_state_dict(state)
        resumed.watch([theta], average_iterates=True)
    got += [run(resumed, theta, points) for points in intervals[2:]]
    assert got == expected


def test_under_a_schedule_that_anneals_the_bounce_makes_no_fixed_cut_and_the_trace_says_why():
    controller, theta = _controller()
    controller.schedule_anneals = True
    _steps(controller, theta, [1.0, -1.0, 1.0])
    controller.observe(1.0, progress=0.1, validation_loss=_bowl(theta))
    _steps(controller, theta, [-1.0, 1.0, -1.0])
    second = controller.observe(0.9, progress=0.2, validation_loss=_bowl(theta))
    assert second.features["iterate_average_gain"] >= AVERAGE_GAIN  # the same bounce as above, where it halved the LR
    assert second.applied == 1.0 and second.evidence.startswith("no fixed cut") and \
        "the schedule anneals by itself" in second.evidence


@pytest.mark.parametrize("restore", [True, False])
def test_a_plain_loop_resumed_mid_interval_is_told_when_it_did_not_give_the_average_back(restore):
    import json
    import warnings

    def fresh():
        controller = MetaLRController(1e-3, policy="random", seed=0, learn_online=False)
        controller.watch([theta], average_iterates=True)
        return controller

    theta = torch.nn.Parameter(torch.ones(4))
    first = fresh()
    _steps(first, theta, [1.0, -1.0])
    first.observe(2.0, validation_loss=_bowl(theta))
    _steps(first, theta, [0.5, -0.5, 0.4])  # mid-interval: 3 steps folded into the average
    state, average = json.loads(json.dumps(first.state_dict())), first.iterate_average.state_dict()
    assert state["iterate_average"]["steps"] == 3
    resumed = fresh()
    resumed.load_state_dict(state)
    if restore:
        resumed.iterate_average.load_state_dict(average)
    _steps(resumed, theta, [0.2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed.observe(1.5, validation_loss=_bowl(theta))
    said = [str(w.message) for w in caught if "were not given back" in str(w.message)]
    assert len(said) == (0 if restore else 1), said
    if not restore:
        assert "folded 3 steps into the iterate average" in said[0]
