"""A start-over under a warmup plays the warmup again (``controller/warmup_replay.py``): the recording,
the replay's multipliers, the steps a plain loop and the Trainer take, and a resume in the middle of
a replay."""

import json
import math

import pytest
import torch

from hf_metalr import MetaLRController, read_trace
from hf_metalr.controller.warmup_replay import WarmupReplay
from hf_metalr.reporting.trace_view import _early_cut_rows, format_trace
from test_alignment import always
from test_distance import _start_over_quadratic, _step, _stuck_quadratic, resumed_after_four_steps
from test_resume_and_ranks import applied, run_job


def test_the_recording_holds_the_rise_and_ends_at_the_first_step_that_does_not_rise():
    replay = WarmupReplay()
    for factor in (0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 0.9, 1.5):
        assert replay.multiplier(factor) == 1.0, "nothing is replayed before a start-over"
    assert replay.factors == [0.0, 0.25, 0.5, 0.75, 1.0] and not replay.rising and replay.steps == 5
    flat = WarmupReplay()
    for factor in (1.0, 1.0, 0.99):
        flat.multiplier(factor)
    assert flat.factors == [1.0] and not flat.rising, "no warmup: one step"
    unknown = WarmupReplay()
    unknown.multiplier(None)
    assert not unknown.under_way and unknown.factors == [], "a loop that gives no factor: nothing to record"


def test_a_replay_gives_each_step_the_first_warmup_s_factor_and_ends_after_it():
    replay = WarmupReplay()
    for factor in (0.0, 0.25, 0.5, 0.75, 1.0, 0.98):
        replay.multiplier(factor)
    replay.start_over()
    assert replay.under_way
    # under a decay at 0.96 .. 0.90: the recorded factor over the schedule's, at most 1
    taken = [replay.multiplier(f) for f in (0.96, 0.95, 0.94, 0.93, 0.92, 0.91, 0.90)]
    assert taken == pytest.approx([0.0, 0.25 / 0.95, 0.5 / 0.94, 0.75 / 0.93, 1.0, 1.0, 1.0])
    assert replay.position is None and not replay.under_way, "ended once the recording is played"
    without = WarmupReplay()
    for factor in (1.0, 1.0):
        without.multiplier(factor)
    without.start_over()
    assert [without.multiplier(1.0) for _ in range(3)] == [1.0, 1.0, 1.0], "no warmup: nothing changes"


def test_a_start_over_while_the_warmup_rises_replays_it_whole():
    """Started over at step 3 of a warmup over 8 steps: the replay gives the steps after it the
    factors 0, 1/8, ..., 7/8, and the recording goes on through the replay to the warmup's end."""
    schedule = [min(1.0, s / 8) for s in range(20)]
    replay = WarmupReplay()
    for s in range(3):
        replay.multiplier(schedule[s])
    replay.start_over()
    taken = [replay.multiplier(schedule[s]) * schedule[s] for s in range(3, 20)]
    assert taken[:9] == pytest.approx([k / 8 for k in range(9)])
    assert taken[9:] == pytest.approx(schedule[12:]), "then the schedule's own"
    assert replay.factors == pytest.approx([k / 8 for k in range(9)])


def test_forgetting_drops_the_recording_but_not_a_replay_under_way():
    replay = WarmupReplay()
    for factor in (0.25, 0.5, 0.75):
        replay.multiplier(factor)
    replay.start_over()
    replay.multiplier(1.0)
    replay.forget()
    assert [replay.multiplier(1.0) for _ in range(4)] == [0.5, 0.75, 1.0, 1.0], "the replay plays on to its end"
    replay.forget()
    assert replay.factors == [] and not replay.under_way


def test_the_replay_state_round_trips_and_a_state_without_it_replays_nothing():
    replay = WarmupReplay()
    for factor in (0.1, 0.2, 0.3, 0.3):
        replay.multiplier(factor)
    replay.start_over()
    replay.multiplier(0.3)
    again = WarmupReplay.from_dict(json.loads(json.dumps(replay.state_dict())))
    assert [again.multiplier(0.3) for _ in range(3)] == [replay.multiplier(0.3) for _ in range(3)]
    old = WarmupReplay.from_dict(None)
    old.start_over()
    assert old.multiplier(0.5) == 1.0 and not old.under_way


def _warmup(optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 40))


def test_under_a_warmup_an_early_cut_starts_over_and_plays_the_warmup_again():
    """Adam at an LR of 10 under a warmup over 40 steps: the early distance cuts at steps 8 and 16
    start the run over (before the replay they only cut), and the steps after each take the first
    warmup's factors at the cut LR: (k + 1) / 40 of it at the k-th step. Between steps the optimizer
    holds the scheduler's LR, and the trace view says the warmup was played again."""
    x, start, optimizer, quadratic = _start_over_quadratic(10.0)
    scheduler = _warmup(optimizer)
    ctrl = MetaLRController(10.0, policy=always(2), learn_online=False).attach(optimizer, scheduler, total_steps=200)
    taken, between = [], []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: taken.append(opt.param_groups[0]["lr"]))
    for _ in range(20):
        _step(ctrl, optimizer, quadratic, scheduler)
        between.append(optimizer.param_groups[0]["lr"] == pytest.approx(scheduler.get_last_lr()[0]))
    cuts = ctrl.early_cuts
    assert [(c["step"], c["rewound"], c.get("replays_warmup")) for c in cuts] == [(8, True, True), (16, True, True)]
    assert taken[:8] == pytest.approx([10.0 * (k + 1) / 40 for k in range(8)])
    assert taken[8:16] == pytest.approx([cuts[0]["lr"] * (k + 1) / 40 for k in range(8)])
    assert taken[16:] == pytest.approx([cuts[1]["lr"] * (k + 1) / 40 for k in range(4)])
    assert all(between) and ctrl.start_weights.kept
    assert _early_cut_rows({"early_cuts": cuts})[0].endswith(
        "and the weights went back to where the run started, its warmup played again")


def test_a_chainable_scheduler_s_warmup_is_replayed_alike():
    """A torch ``LinearLR`` warmup derives each step's LR from the group's current one: the replay's
    shortening is put back after each step, so the steps after the early cuts take the same LRs as
    under the ``LambdaLR`` above, not a compounded multiplier."""
    x, start, optimizer, quadratic = _start_over_quadratic(10.0)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / 40, end_factor=1.0, total_iters=39)
    ctrl = MetaLRController(10.0, policy=always(2), learn_online=False).attach(optimizer, scheduler, total_steps=200)
    taken = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: taken.append(opt.param_groups[0]["lr"]))
    for _ in range(20):
        _step(ctrl, optimizer, quadratic, scheduler)
    cuts = ctrl.early_cuts
    assert [(c["step"], c["rewound"], c.get("replays_warmup")) for c in cuts] == [(8, True, True), (16, True, True)]
    assert taken[8:16] == pytest.approx([cuts[0]["lr"] * (k + 1) / 40 for k in range(8)])
    assert taken[16:] == pytest.approx([cuts[1]["lr"] * (k + 1) / 40 for k in range(4)])


def test_a_skipped_step_is_taken_back_and_a_step_that_raised_does_not_compound():
    """A step the optimizer skipped (a GradScaler's overflow, ``after_optimizer_step(step_skipped=True)``;
    the callback reads accelerate's ``step_was_skipped``) neither ends the recording nor uses up the
    replay's position. A step that raised before ``after_optimizer_step`` has its shortening put back
    at the next ``before_optimizer_step``."""
    from types import SimpleNamespace

    from hf_metalr import MetaLRCallback

    x, _, optimizer, _ = _start_over_quadratic(1.0)
    ctrl = MetaLRController(1.0, policy=always(2), learn_online=False)
    ctrl.watch([x])
    ctrl.read_optimizer(optimizer)
    for factor, skipped in ((0.25, False), (0.5, True), (0.5, False), (0.75, False)):
        ctrl.before_optimizer_step(schedule_factor=factor)
        ctrl.after_optimizer_step(step_skipped=skipped)
    assert ctrl.warmup.factors == [0.25, 0.5, 0.75] and ctrl.warmup.rising
    ctrl.warmup.start_over()
    optimizer.param_groups[0]["lr"] = 0.9
    ctrl.before_optimizer_step(schedule_factor=0.9)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.25)
    ctrl.after_optimizer_step(step_skipped=True)
    assert optimizer.param_groups[0]["lr"] == 0.9 and ctrl.warmup.position == 0, "the skipped step is played again"
    ctrl.before_optimizer_step(schedule_factor=0.9)  # and this step raises: no after_optimizer_step
    ctrl.before_optimizer_step(schedule_factor=0.9)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5), "0.9 x 0.5 / 0.9, not compounded"
    ctrl.after_optimizer_step()
    callback = MetaLRCallback()
    callback.controller, callback._in_training = ctrl, True
    ctrl.before_optimizer_step(schedule_factor=0.9)
    callback.on_optimizer_step(None, None, None, optimizer=SimpleNamespace(step_was_skipped=True))
    assert ctrl.warmup.position == 2 and optimizer.param_groups[0]["lr"] == 0.9


def test_a_state_saved_before_the_replay_existed_does_not_start_over():
    """A controller state without ``warmup`` (saved by an hf_metalr before the replay), loaded with its
    start weights: whether its run had a warmup is unknown, so the early cut does not start it over,
    and the state saved from it says the warmup is not known."""
    resumed, _, _ = resumed_after_four_steps(load_start=True, edit_state=lambda state: state.pop("warmup"))
    assert [(c["step"], c["rewound"]) for c in resumed.early_cuts] == [(8, False)]
    assert not resumed.warmup.known and resumed.state_dict()["warmup"]["known"] is False


def test_the_copy_is_kept_while_the_warmup_rises():
    """At an LR of 0.03 the steps are within the distance estimate at the first decision, which
    without a warmup drops the copy (test_distance.py); under a warmup over 40 steps the LR of the
    steps still rises, so the copy is kept through the decisions at steps 20 and 40, and dropped at
    step 60, the warmup over."""
    _, _, _, ctrl, decisions, seen = _stuck_quadratic(0.03, decisions=3, scheduler=_warmup)
    assert [kept for _, _, kept in seen] == [True, True, False]
    assert decisions[2].features["lr_over_distance"] <= 1.0
    assert ctrl.warmup.factors == [] and not ctrl.warmup.under_way, "the recording is dropped with the copy"
    assert ctrl.state_dict()["warmup"] == {"factors": [], "rising": False, "position": None, "known": True}


def test_a_plain_loop_without_a_schedule_factor_replays_nothing():
    """``before_optimizer_step()`` without a factor: nothing is recorded, and a start-over changes no
    step's LR."""
    x, start, optimizer, quadratic = _start_over_quadratic(1.0)
    ctrl = MetaLRController(1.0, policy=always(2), learn_online=False)
    ctrl.watch([x])
    ctrl.read_optimizer(optimizer)
    lrs = []
    for _ in range(12):
        optimizer.zero_grad()
        loss = quadratic()
        loss.backward()
        ctrl.before_optimizer_step()
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        ctrl.after_optimizer_step()
        if ctrl.observe_train_loss(loss.item()):
            ctrl.scale_param_groups(optimizer)
    assert ctrl.early_cuts[0]["rewound"] and "replays_warmup" not in ctrl.early_cuts[0]
    assert lrs[8:] == [ctrl.early_cuts[0]["lr"]] * 4


def warmup_run(output_dir, *extra, expect_rc=0):
    """tiny_job.py at LR 3.0 under ``constant_with_warmup`` over 8 steps, 12 steps, decisions at 5 and 10:
    the first decision's cut starts the wrecked run over."""
    return run_job("--output_dir", str(output_dir), "--max_steps", "12", "--learning_rate", "3.0",
                   "--lr_scheduler_type", "constant_with_warmup", "--warmup_steps", "8", *map(str, extra),
                   expect_rc=expect_rc)


@pytest.mark.slow
def test_a_trainer_run_started_over_plays_its_warmup_again_and_resumes_in_the_middle_of_it(tmp_path):
    """Through the callback: the decision at step 5 cuts the wrecked run to 1.5 and starts it over,
    and steps 6-12 take the warmup's factors again (0, 1/8, ... of 1.5), as the trace and
    ``hf-metalr trace`` say. Killed after step 7, in the middle of the replay, the run resumed from
    its checkpoint takes the same LRs and makes the same decisions as the uninterrupted one."""
    whole = warmup_run(tmp_path / "whole", "--save_steps", 100)
    trace = read_trace(tmp_path / "whole" / "metalr_trace.jsonl")
    first = trace[0]
    assert first["global_step"] == 5 and first["rewound"] is True
    assert first["evidence"].endswith("the run starts over at the cut LR, its warmup played again")
    lrs = {step: lrs[0] for step, lrs in applied(tmp_path / "whole").items()}
    assert [lrs[s] for s in range(1, 6)] == pytest.approx([3.0 * k / 8 for k in range(5)])
    assert math.isclose(3.0 * first["scale"], 1.5)
    assert [lrs[s] for s in range(6, 11)] == pytest.approx([1.5 * k / 8 for k in range(5)])
    assert "its warmup played again" in format_trace(trace)
    assert "the LR is cut to 1.5 (scale 0.5)" in whole.stderr, "the warning names the LR the replay rises to, not its first step's 0"

    warmup_run(tmp_path / "cut", "--save_steps", 7, "--kill_after_step", 7, expect_rc=-9)
    saved = json.loads((tmp_path / "cut" / "checkpoint-7" / "trainer_state.json").read_text())
    state = saved["stateful_callbacks"]["MetaLRCallback"]["attributes"]["controller_state"]
    assert state["warmup"]["position"] == 2, "killed two steps into the replay"
    warmup_run(tmp_path / "cut", "--save_steps", 100, "--resume", tmp_path / "cut" / "checkpoint-7")
    assert read_trace(tmp_path / "cut" / "metalr_trace.jsonl") == trace
    assert applied(tmp_path / "cut") == applied(tmp_path / "whole")


def test_the_trainer_logs_the_lr_each_step_of_the_replay_takes(tmp_path):
    """With a log at every step, the ``learning_rate`` the Trainer logs at each step is the LR the step
    took, through the replay too (the optimizer holds the schedule's LR between steps, and the
    callback sets the scheduler's last LR, which the Trainer logs, to the replayed one)."""
    from hf_metalr import MetaLRCallback
    from tiny_job import AppliedLRRecorder, make_trainer

    callbacks = [MetaLRCallback(policy="random"), AppliedLRRecorder(tmp_path / "lrs.jsonl")]
    trainer = make_trainer(tmp_path / "run", callbacks=callbacks, learning_rate=3.0, max_steps=12, logging_steps=1,
                           lr_scheduler_type="constant_with_warmup", warmup_steps=8)
    trainer.train()
    assert read_trace(tmp_path / "run" / "metalr_trace.jsonl")[0]["rewound"] is True
    lines = (tmp_path / "lrs.jsonl").read_text().splitlines()
    lrs = {json.loads(line)["step"]: json.loads(line)["lrs"][0] for line in lines}
    logged = {e["step"]: e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e}
    assert [lrs[s] for s in range(6, 9)] == pytest.approx([0.0, 1.5 / 8, 1.5 * 2 / 8]), "the replay's first steps"
    assert [logged[s] for s in range(1, 13)] == pytest.approx([lrs[s] for s in range(1, 13)])
