"""The decided LR is the LR the optimizer uses, from the next step on, under every HF schedule."""

import json

import pytest
import torch
from transformers import get_scheduler

from hf_metalr import read_trace
from hf_metalr.integration.lr_binding import apply_scale
from tiny_job import AppliedLRRecorder, make_trainer

from hf_metalr import MetaLRCallback

SCHEDULES = {
    "constant": {},
    "constant_with_warmup": {"warmup_steps": 8},
    "linear": {"warmup_steps": 4},
    "cosine": {"warmup_steps": 4},
    "cosine_with_min_lr": {"warmup_steps": 4, "lr_scheduler_kwargs": {"min_lr": 1e-4}},
    "warmup_stable_decay": {"warmup_steps": 4, "lr_scheduler_kwargs": {"num_decay_steps": 10}},
}


def reference_lrs(name, extra, lr, steps, groups=1):
    """LR used at steps 1..N by the same schedule with no controller."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(groups)]
    opt = torch.optim.SGD([{"params": [p]} for p in params], lr=lr)
    sched = get_scheduler(
        name, opt, num_warmup_steps=extra.get("warmup_steps", 0), num_training_steps=steps,
        scheduler_specific_kwargs=extra.get("lr_scheduler_kwargs"),
    )
    out = {}
    for step in range(1, steps + 1):
        out[step] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_apply_scale_composes_with_the_schedule(name):
    extra = SCHEDULES[name]
    ref = reference_lrs(name, extra, 1e-2, 40)
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD([{"params": [params[0]]}, {"params": [params[1]], "lr": 1e-3}], lr=1e-2)
    sched = get_scheduler(name, opt, num_warmup_steps=extra.get("warmup_steps", 0), num_training_steps=40,
                          scheduler_specific_kwargs=extra.get("lr_scheduler_kwargs"))
    scale = 1.0
    for step in range(1, 41):
        if step in (3, 11, 25):
            scale *= {3: 0.5, 11: 4.0, 25: 0.25}[step]
            lrs = apply_scale(opt, sched, scale)
            assert lrs[0] == opt.param_groups[0]["lr"]
            assert sched.get_last_lr() == lrs  # what the Trainer logs
        assert opt.param_groups[0]["lr"] == pytest.approx(ref[step] * scale, rel=1e-12, abs=1e-15)
        assert opt.param_groups[1]["lr"] == pytest.approx(0.1 * ref[step] * scale, rel=1e-12, abs=1e-15)
        opt.step()
        sched.step()
    # the scale travels in the scheduler's own state_dict (scheduler.pt)
    assert sched.state_dict()["base_lrs"] == pytest.approx([1e-2 * scale, 1e-3 * scale])


TORCH_SCHEDULERS = {
    "LambdaLR": lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5) * 0.97 ** s),
    "StepLR": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5),
    "ExponentialLR": lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.95),
    "CosineAnnealingLR, eta_min": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40, eta_min=1e-3),
    "CosineAnnealingWarmRestarts, eta_min": lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=9, eta_min=1e-3),
}


@pytest.mark.parametrize("name", list(TORCH_SCHEDULERS))
def test_a_plain_loops_scheduler_keeps_the_controllers_scale(name):
    """MetaLRController.scale_param_groups(optimizer, scheduler) in a plain loop: the LR the optimizer
    uses is the schedule's times the scale, from the decision on, at every later step (a cosine's
    eta_min floor included: it used to pull the LR back to the unscaled curve)."""
    from hf_metalr import MetaLRController

    def optimizer():
        params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
        return torch.optim.SGD([{"params": [params[0]]}, {"params": [params[1]], "lr": 2e-3}], lr=1e-2)

    ref_opt = optimizer()
    ref_sched = TORCH_SCHEDULERS[name](ref_opt)
    opt = optimizer()
    sched = TORCH_SCHEDULERS[name](opt)
    ctrl = MetaLRController(initial_lr=1e-2, policy="random", seed=0)
    for step in range(1, 41):
        if step in (4, 13, 26):
            ctrl.scale *= {4: 2.0, 13: 0.25, 26: 4.0}[step]  # what a decision does to the scale
            assert ctrl.scale_param_groups(opt, sched) == [g["lr"] for g in opt.param_groups]
        for group, ref in zip(opt.param_groups, ref_opt.param_groups):
            assert group["lr"] == pytest.approx(ref["lr"] * ctrl.scale, rel=1e-9), f"step {step}"
        for o, sc in ((opt, sched), (ref_opt, ref_sched)):
            o.step()
            sc.step()


def test_a_plain_loop_with_a_scheduler_that_cannot_carry_the_scale_is_refused():
    from hf_metalr import MetaLRController

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=10)
    with pytest.raises(ValueError, match="cannot carry its scale through OneCycleLR: it sets the LR at every step"):
        MetaLRController(initial_lr=1e-2, policy="random").scale_param_groups(opt, one_cycle)


def test_a_resume_with_tighter_bounds_brings_the_lr_inside_them_at_once():
    from hf_metalr import MetaLRController

    first = MetaLRController(initial_lr=1e-3, policy="random", seed=0)
    first.scale = 8.0
    state = first.state_dict()
    tighter = MetaLRController(initial_lr=1e-3, policy="random", seed=0, max_lr=2e-3)
    with pytest.warns(UserWarning, match=r"holds the LR 0.008, outside .* \[min_lr, max_lr\] = \[1e-06, 0.002\]: the run "
                                         r"goes on at 0.002"):
        tighter.load_state_dict(state)
    assert tighter.scale == 2.0 and tighter.lr == 2e-3


def read_applied(output_dir):
    return {d["step"]: d["lrs"] for d in map(json.loads, (output_dir / "applied_lrs.rank0.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_trainer_applies_decided_lr_from_next_step(tmp_path, name):
    extra = SCHEDULES[name]
    trainer = make_trainer(
        tmp_path, callbacks=[MetaLRCallback(policy="random", seed=1), AppliedLRRecorder(tmp_path / "applied_lrs.rank0.jsonl")],
        lr_scheduler_type=name, eval_steps=4, logging_steps=1, **extra,
    )
    trainer.train()
    applied = read_applied(tmp_path)
    trace = read_trace(tmp_path / "metalr_trace.jsonl")
    ref = reference_lrs(name, extra, 3e-3, 40)
    assert len(trace) == 10 and len(applied) == 40
    assert {d["lr_scale"] for d in trace} != {1.0}, "the random policy should have moved the LR"

    for entry in trace[:-1]:
        # the LR decided at step k is the one used by the optimizer step k+1
        assert applied[entry["global_step"] + 1][0] == entry["lr"]
    for step in range(1, 41):
        scale = next((e["lr_scale"] for e in reversed(trace) if e["global_step"] < step), 1.0)
        assert applied[step][0] == pytest.approx(ref[step] * scale, rel=1e-9, abs=1e-15)
    if extra.get("warmup_steps"):
        assert applied[1][0] < applied[2][0] < applied[3][0], "warmup must still happen"
    logged = {h["step"]: h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h}
    assert len(logged) == 40
    for step, lr in logged.items():
        assert lr == applied[step][0], f"logged learning_rate at step {step} is not the LR the optimizer used"


def test_several_param_groups_keep_their_ratios(tmp_path):
    trainer = make_trainer(
        tmp_path, two_groups=True, callbacks=[MetaLRCallback(policy="random", seed=2), AppliedLRRecorder(tmp_path / "applied_lrs.rank0.jsonl")],
    )
    trainer.train()
    applied = read_applied(tmp_path)
    assert len({round(lrs[0], 12) for lrs in applied.values()}) > 1
    for lrs in applied.values():
        assert lrs[1] / lrs[0] == pytest.approx(0.1)


def test_the_plain_loops_refusals_name_the_plain_loops_fix():
    from hf_metalr import MetaLRController

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    ctrl = MetaLRController(initial_lr=1e-2, policy="random")
    for scheduler in (torch.optim.lr_scheduler.CyclicLR(opt, base_lr=1e-3, max_lr=1e-2),
                      torch.optim.lr_scheduler.ReduceLROnPlateau(opt)):
        with pytest.raises(ValueError, match=r"MetaLRController.scale_param_groups") as info:
            ctrl.scale_param_groups(opt, scheduler)
        assert "callback" not in str(info.value) and "lr_scheduler_type" not in str(info.value)


def test_a_warmup_the_constant_schedule_drops_is_warned_about(tmp_path):
    """transformers' ``constant`` schedule ignores ``warmup_steps`` without a word; the callback says so, with
    the schedule that warms up. The applied LRs show the drop is real (full LR from step 1)."""
    import warnings

    recorder = AppliedLRRecorder(tmp_path / "constant" / "lrs.jsonl")
    (tmp_path / "constant").mkdir()
    trainer = make_trainer(tmp_path / "constant", callbacks=[MetaLRCallback(policy="random"), recorder],
                           lr_scheduler_type="constant", warmup_steps=10, max_steps=6)
    with pytest.warns(UserWarning, match=r"warmup_steps=10 has no effect under lr_scheduler_type='constant'.*"
                                         r"lr_scheduler_type='constant_with_warmup'"):
        trainer.train()
    first = json.loads((tmp_path / "constant" / "lrs.jsonl").read_text().splitlines()[0])
    assert first["lrs"][0] == pytest.approx(3e-3), "the constant schedule started at the full LR"

    for name, overrides in (("with_warmup", {"lr_scheduler_type": "constant_with_warmup", "warmup_steps": 10}),
                            ("no_warmup", {"lr_scheduler_type": "constant"})):
        trainer = make_trainer(tmp_path / name, callbacks=[MetaLRCallback(policy="random")], max_steps=6, **overrides)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train()
        assert not [w for w in caught if "has no effect under" in str(w.message)], name

    # a scheduler of the user's own (optimizers=...) decides the warmup, whatever lr_scheduler_type says
    trainer = make_trainer(tmp_path / "own", callbacks=[MetaLRCallback(policy="random")], max_steps=6,
                           lr_scheduler_type="constant", warmup_steps=10)
    optimizer = torch.optim.AdamW(trainer.model.parameters(), lr=3e-3)
    trainer.optimizer, trainer.lr_scheduler = optimizer, get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "has no effect under" in str(w.message)], "own scheduler"

    # Schedule-Free AdamW gets warmup_steps from the Trainer: it warms up under the constant schedule
    trainer = make_trainer(tmp_path / "sf", callbacks=[MetaLRCallback(policy="random")], max_steps=6,
                           lr_scheduler_type="constant", warmup_steps=10, optim="schedule_free_adamw")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "has no effect under" in str(w.message)], "schedule-free"
