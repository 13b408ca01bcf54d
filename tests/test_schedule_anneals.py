"""When the user's schedule decays the LR by itself, the gate cuts only on an overshoot: the two
cuts that anneal (a bounce around a valley floor, the after-progress one) are left to the schedule."""

import pytest
import torch
from transformers import get_scheduler

from hf_metalr import MetaLRCallback
from hf_metalr.controller.controller import direction_verdict
from hf_metalr.controller.scheduler_binding import schedule_anneals
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
