"""When the user's schedule decays the LR by itself, the gate cuts only on an overshoot or a run that
moved far without progress: the two cuts that anneal (a bounce around a valley floor, the
after-progress one) are left to the schedule."""

import pytest
import torch
from transformers import get_scheduler

from hf_metalr import MetaLRCallback
from hf_metalr.controller.gate import direction_verdict
from hf_metalr.controller.scheduler_binding import schedule_anneals
from signed_steps import signed_steps
from tiny_job import make_trainer

CALM = {"objective_trend": 0.01, "grad_alignment": -0.02, "grad_alignment_t": -0.5, "objective_vs_first": -1.0,
        "param_drift": 0.3, "stuck_evaluations": 0, "log10_lr_scale": 0.0}


@pytest.mark.parametrize("name, kwargs, anneals", [
    ("linear", {}, True), ("cosine", {}, True), ("warmup_stable_decay", {"num_decay_steps": 10}, True),
    ("cosine_with_min_lr", {"min_lr_rate": 0.1}, True), ("constant", {}, False), ("constant_with_warmup", {}, False),
])
def test_which_schedules_anneal_by_themselves(name, kwargs, anneals):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_scheduler(name, opt, num_warmup_steps=5, num_training_steps=100, scheduler_specific_kwargs=kwargs)
    assert schedule_anneals(scheduler, 100) is anneals
    assert schedule_anneals(torch.optim.lr_scheduler.StepLR(opt, step_size=10), 100) and not schedule_anneals(None, 100)


def test_under_an_annealing_schedule_only_an_overshoot_cuts():
    bounce = {**CALM, "iterate_average_gain": 0.4, "iterate_average_progress": 0.01}
    held, evidence = direction_verdict(0.5, bounce)
    assert not held and evidence.startswith("cut: the average of the iterates")
    held, why = direction_verdict(0.5, bounce, schedule_anneals=True)
    assert held and why.startswith("cut held: the average of the iterates") and "the schedule anneals by itself" in why

    after_progress = {**CALM}  # worse, after progress, the gradient no longer along the steps
    assert direction_verdict(0.5, after_progress)[0] is False
    assert direction_verdict(0.5, after_progress, schedule_anneals=True)[0] is True

    overshoot = {**CALM, "grad_alignment": -0.2, "grad_alignment_t": -4.0}
    assert direction_verdict(0.5, overshoot, schedule_anneals=True)[0] is False


@pytest.mark.parametrize("schedule, anneals", [("linear", True), ("constant", False)])
def test_the_callback_reads_the_trainers_schedule(tmp_path, schedule, anneals):
    callback = MetaLRCallback(policy="random")
    make_trainer(tmp_path, callbacks=[callback], lr_scheduler_type=schedule, max_steps=5).train()
    assert callback.controller.schedule_anneals is anneals


def test_under_an_annealing_schedule_an_overshoot_cut_waits_for_a_second_reading_in_a_row():
    # the gradient opposing the steps (t <= -bar) and the metric worse, once: a constant schedule cuts at once
    overshoot = {**CALM, "objective_trend": 0.05, "grad_alignment": -0.2, "grad_alignment_t": -4.0}
    once, twice = {**overshoot, "previous_grad_alignment_t": -0.8}, {**overshoot, "previous_grad_alignment_t": -2.5}
    held, why = direction_verdict(0.5, once, schedule_anneals=True)
    assert held and "second reading in a row" in why and "t=-0.8" in why
    assert direction_verdict(0.5, twice, schedule_anneals=True)[0] is False
    assert direction_verdict(0.5, once)[0] is False, "a constant schedule: the cut at once, as before"
    assert direction_verdict(0.5, once, first=True, schedule_anneals=True)[0] is False, "the first evaluation: no previous"
    opposed = {**CALM, "objective_trend": 0.05, "grad_alignment": -0.05, "grad_alignment_t": -2.5}  # not a clear one
    assert direction_verdict(0.5, {**opposed, "previous_grad_alignment_t": -1.0}, schedule_anneals=True)[0] is True
    assert direction_verdict(0.5, {**opposed, "previous_grad_alignment_t": -2.1}, schedule_anneals=True)[0] is False
    # a clear overshoot with the metric still improving: held under the rule, in the rule's words
    held, why = direction_verdict(0.5, {**once, "objective_trend": -0.05}, schedule_anneals=True)
    assert held and "second reading in a row" in why


def test_under_an_annealing_schedule_the_drift_cuts_do_not_wait():
    """The stuck-run cut and the lost-ground cut read the drift and the metric, not an overshoot of
    the gradient: under a decaying schedule they go through at once, as on a constant one (the
    stuck-run cut above the user's LR only, as there)."""
    far = {**CALM, "param_drift": 4.0, "objective_vs_first": -0.1, "previous_grad_alignment_t": 0.0}
    lost_ground = {**far, "objective_trend": 0.05, "grad_alignment_t": -4.0}  # an overshoot read once, too
    held, why = direction_verdict(0.5, lost_ground, schedule_anneals=True)
    assert not held and why.startswith("cut: the metric got worse (by more than 1%) while the parameters have moved by 4.00")
    stuck = {**far, "objective_vs_first": 0.0, "objective_trend": 0.0, "stuck_evaluations": 2, "log10_lr_scale": 0.3}
    held, why = direction_verdict(0.5, stuck, schedule_anneals=True)
    assert not held and why.startswith("cut: the parameters have moved by 4.00")
    held, why = direction_verdict(0.5, {**stuck, "log10_lr_scale": 0.0}, schedule_anneals=True)  # at the user's LR: never
    assert held and why.startswith("cut held: the parameters have moved by 4.00")


@pytest.mark.parametrize("anneals", [False, True])
def test_the_fixed_cut_at_a_clear_overshoot_waits_under_an_annealing_schedule(anneals):
    """A plain loop whose steps flip the gradient's sign (a clear overshoot, the policy asking to keep):
    on a constant schedule the first such evaluation halves the LR; under an annealing one the
    fixed cut waits for the second, and the trace says why."""
    from hf_metalr import MetaLRController
    from hf_metalr.controller.policy import random_policy

    controller = MetaLRController(1e-3, policy=random_policy(seed=0), seed=0, learn_online=False, greedy=True)
    controller._select = lambda obs, index: controller.keep_index
    controller.schedule_anneals = anneals
    theta = torch.nn.Parameter(torch.ones(8))
    controller.watch([theta])
    signed_steps(controller, theta, [1] * 10)  # steps along the gradient: no overshoot at the first evaluation
    first = controller.observe(1.0, progress=0.1)
    assert first.applied == 1.0
    signed_steps(controller, theta, [-1, 1] * 5)
    second = controller.observe(0.5, progress=0.2)
    assert second.features["grad_alignment_t"] <= -2 and second.features["previous_grad_alignment_t"] > 0
    signed_steps(controller, theta, [-1, 1] * 5)
    third = controller.observe(0.4, progress=0.3)
    if anneals:
        assert second.applied == 1.0 and second.evidence.startswith("no fixed cut") and "second reading" in second.evidence
        assert third.applied == 0.5 and third.evidence.startswith("cut: the gradient clearly opposes")
    else:
        assert second.applied == 0.5 and third.applied == 0.5


def test_the_callback_gives_the_alignment_the_factor_of_the_trainers_schedule(tmp_path, monkeypatch):
    """A warmup's steps reach the alignment with the schedule's factor (the LR over the controller's), so the
    pairs it lengthens are left out; a raise of the controller's own does not count as the schedule's."""
    from hf_metalr.controller.alignment import GradientAlignment

    factors, counted = [], []
    before = GradientAlignment.before_step

    def recorded(self, schedule_factor=None):
        factors.append(schedule_factor)
        pending = len(self._pending)
        before(self, schedule_factor)
        counted.append(len(self._pending) > pending)

    monkeypatch.setattr(GradientAlignment, "before_step", recorded)
    callback = MetaLRCallback(policy="random", gate=False)  # without the gate the random policy moves the LR
    make_trainer(tmp_path, callbacks=[callback], lr_scheduler_type="constant_with_warmup", warmup_steps=4,
                 max_steps=20).train()
    assert factors[:6] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    assert factors[4:] == pytest.approx([1.0] * 16), "the controller's moves leave the factor at 1"
    assert any(r["applied"] != 1.0 for r in callback.controller.history), "the controller moved the LR"
    assert counted[:5] == [False] * 5 and all(counted[5:]), "the warmup's pairs are left out, the rest counted"
    steps = [r["features"]["alignment_steps"] for r in callback.controller.history]
    assert steps == [0, 5, 5, 5], "the first interval (steps 1-5) lies in the warmup: nothing measured"
    held, why = direction_verdict(2.0, {**CALM, "grad_alignment": 0.0, "grad_alignment_t": 0.0, "alignment_steps": 0})
    assert held and "no step of this evaluation interval was measured" in why and "warmup" in why
    held, why = direction_verdict(0.5, {**CALM, "objective_trend": 0.0, "grad_alignment": 0.0, "grad_alignment_t": 0.0,
                                        "alignment_steps": 0}, first=True)
    assert held and why.startswith("cut held: no evidence that the steps overshoot: no step of this evaluation interval")


def test_the_callback_watches_the_parameters_the_optimizer_updates(tmp_path):
    callback = MetaLRCallback(policy="random")
    trainer = make_trainer(tmp_path, callbacks=[callback], max_steps=5)
    model = trainer.model  # the body is left trainable but only the head is optimized: a linear probe's slip
    trainer.optimizer = torch.optim.AdamW(model.head.parameters(), lr=3e-3)
    with pytest.warns(UserWarning, match=r"2 parameter tensors of the model \(2,080 values\) require grad but are not "
                                         r"in the optimizer"):
        trainer.train()
    assert [id(p) for p in callback.controller.alignment.params] == [id(p) for p in model.head.parameters()]
    assert [id(p) for p in callback.controller.iterate_average.params] == [id(p) for p in model.head.parameters()]

    callback = MetaLRCallback(policy="random")
    trainer = make_trainer(tmp_path / "all", callbacks=[callback], max_steps=5)
    trainer.train()
    assert [id(p) for p in callback.controller.alignment.params] == [id(p) for p in trainer.model.parameters()]


def test_an_interval_that_measured_nothing_does_not_make_an_overshoot_cut_wait():
    """A warmup that covers a whole interval leaves its alignment empty (t reads 0): that is no reading, so the
    next evaluation's overshoot is not held for want of a second one."""
    from hf_metalr import MetaLRController
    from hf_metalr.controller.policy import random_policy

    controller = MetaLRController(1e-3, policy=random_policy(seed=0), seed=0, learn_online=False, greedy=True)
    controller._select = lambda obs, index: controller.keep_index
    controller.schedule_anneals = True
    theta = torch.nn.Parameter(torch.ones(8))
    controller.watch([theta])
    for factor in (0.1, 0.2, 0.3, 0.4, 0.5):  # all warmup: nothing counted
        theta.grad = torch.ones_like(theta)
        controller.before_optimizer_step(schedule_factor=factor)
        with torch.no_grad():
            theta.sub_(0.1 * theta.grad)
        controller.after_optimizer_step()
    first = controller.observe(1.0, progress=0.1)
    assert first.features["alignment_steps"] == 0 and first.features["grad_alignment_t"] == 0
    signed_steps(controller, theta, [-1, 1] * 5)
    second = controller.observe(0.5, progress=0.2)
    assert "previous_grad_alignment_t" not in second.features
    assert second.applied == 0.5 and second.evidence.startswith("cut: the gradient clearly opposes")


def test_a_held_overshoot_that_also_bounces_says_it_waits_for_a_second_reading():
    features = {**CALM, "objective_trend": 0.05, "grad_alignment": -0.2, "grad_alignment_t": -2.5,
                "previous_grad_alignment_t": -0.5, "iterate_average_gain": 0.4, "iterate_average_progress": 0.01}
    held, why = direction_verdict(0.5, features, schedule_anneals=True)
    assert held and "second reading in a row" in why and "a cut needs the gradient to oppose" not in why
    held, why = direction_verdict(0.5, {**features, "grad_alignment_t": -1.0}, schedule_anneals=True)
    assert held and why.startswith("cut held: the average of the iterates")


def test_the_callback_watches_every_trainable_parameter_when_none_is_in_the_optimizer(tmp_path):
    """An optimizer that holds copies of the parameters (a wrapper's flat buffers): nothing matches, so the
    controller watches the trainable parameters, without a warning."""
    import warnings as warnings_module

    from hf_metalr.integration.watched_parameters import trained_parameters

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    copies = torch.optim.SGD([torch.nn.Parameter(p.detach().clone()) for p in model.parameters()], lr=0.1)
    with warnings_module.catch_warnings():
        warnings_module.simplefilter("error")
        assert trained_parameters(model, copies) == list(model.parameters())


def test_a_checkpoint_whose_sketch_covered_parameters_outside_the_optimizer_resumes(tmp_path, monkeypatch):
    """Earlier versions watched every trainable parameter. A checkpoint they wrote for a run whose body was left
    trainable outside the optimizer resumes, watching them all again (with a warning), instead of failing on
    the sketch's size."""
    from hf_metalr.integration import watched_parameters as watched_module

    def make(callback):
        trainer = make_trainer(tmp_path, callbacks=[callback], max_steps=10, save_strategy="steps", save_steps=5)
        trainer.optimizer = torch.optim.AdamW(trainer.model.head.parameters(), lr=3e-3)
        return trainer

    real = watched_module.trained_parameters
    monkeypatch.setattr(watched_module, "trained_parameters",
                        lambda model, optimizer: [p for p in model.parameters() if p.requires_grad])  # as before
    make(MetaLRCallback(policy="random")).train()
    monkeypatch.setattr(watched_module, "trained_parameters", real)
    callback = MetaLRCallback(policy="random")
    with pytest.warns(UserWarning, match="the checkpoint's gradient sketch was drawn over every trainable parameter"):
        make(callback).train(resume_from_checkpoint=str(tmp_path / "checkpoint-5"))
    assert len(callback.controller.alignment.params) == 4 and len(callback.controller.history) == 2
