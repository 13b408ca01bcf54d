"""The early-divergence guard: before the first evaluation, a training loss that blows up cuts the
LR at once, in the controller, in meta-training's episodes and in the Trainer."""

import json
import math

import pytest
import torch

import forked_job
from hf_metalr import MetaLRCallback, MetaLRController, read_trace
from hf_metalr.controller.controller import is_early_distance_cut
from hf_metalr.controller.early_guard import CUT as EARLY_CUT, EARLY_SPIKE
from hf_metalr.controller.early_guard import EXTREME
from hf_metalr.controller.policy import random_policy, save_policy
from hf_metalr.integration.checkpoint_files import START_WEIGHTS_FILE
from hf_metalr.meta.episode import run_episode
from hf_metalr.meta.families import build_problem
from test_alignment import always
from test_meta import quick_spec
from test_resume_and_ranks import ENV, applied, assert_one_process_group, features, run_job
from tiny_job import AppliedLRRecorder, make_trainer


def watched_controller(*, gate=True, watch=True):
    ctrl = MetaLRController(1e-3, policy=always(2), learn_online=False, gate=gate)  # 2: keep
    if watch:
        ctrl.watch([torch.nn.Parameter(torch.zeros(4))])
    return ctrl


def test_a_climb_of_records_cuts_and_a_single_high_batch_does_not():
    ctrl = watched_controller()
    losses = [1.0, 5.0, 2.0, 4.5, 30.0, 200.0, 100.0, 1.0, 3000.0, 50000.0, float("nan"), float("nan")]
    cuts = [ctrl.observe_train_loss(loss) for loss in losses]
    # records (above 4x every loss before): 5.0 (one high batch, no cut), 30.0 then 200.0 (a climb: cut), 3000.0 then
    # 50000.0 (cut again); then the cap: two cuts at the most, whatever follows
    assert cuts == [False, False, False, False, False, True, False, False, False, True, False, False]
    assert [c["step"] for c in ctrl.early_cuts] == [6, 10]
    assert [c["reference"] for c in ctrl.early_cuts] == [30.0, 3000.0], "the highest loss before the cut's step"
    assert all(c["applied"] == EARLY_CUT for c in ctrl.early_cuts)
    assert [c["kind"] for c in ctrl.early_cuts] == ["divergence", "divergence"]
    assert not any(is_early_distance_cut(c) for c in ctrl.early_cuts)
    assert ctrl.scale == EARLY_CUT**2 and ctrl.early_cuts[-1]["scale"] == ctrl.scale and ctrl.early_cuts[-1]["lr"] == ctrl.lr
    json.dumps(ctrl.state_dict(), allow_nan=False)  # plain JSON, the non-finite losses included


def test_one_extreme_jump_cuts_alone_and_a_non_finite_loss_is_one():
    jump = watched_controller()
    assert [jump.observe_train_loss(x) for x in (1.0, 0.9, EXTREME * 1.01)] == [False, False, True]
    nan = watched_controller()
    assert [nan.observe_train_loss(x) for x in (1.0, float("nan"))] == [False, True]
    assert nan.early_cuts[0]["loss"] == "nan", "stored as text, so the state stays plain JSON"
    json.dumps(nan.state_dict(), allow_nan=False)


def test_heavy_tailed_batch_noise_does_not_cut():
    # a fine-tuned classifier: 0.02 on a batch it gets all right, 0.2 with one mistake in 16, 0.4 with two; the first
    # batch is the lucky one
    ctrl = watched_controller()
    losses = [0.02, 0.2, 0.02, 0.4, 0.2, 0.02, 0.6, 0.02, 0.2, 0.4] * 5
    assert not any(ctrl.observe_train_loss(x) for x in losses) and ctrl.scale == 1.0


def test_a_cut_at_the_lr_floor_is_not_one():
    ctrl = MetaLRController(1e-3, policy=always(2), learn_online=False, min_lr=1e-3)
    ctrl.watch([torch.nn.Parameter(torch.zeros(4))])
    assert not any(ctrl.observe_train_loss(x) for x in (1.0, 10.0, 100.0)) and ctrl.early_cuts == []


def test_the_guard_stops_at_the_first_decision_and_needs_the_gate():
    ctrl = watched_controller()
    assert not ctrl.observe_train_loss(1.0)
    ctrl.observe(1.0)
    assert not ctrl.guards_early_divergence
    assert not any(ctrl.observe_train_loss(x) for x in (10.0, 100.0, 1000.0)) and ctrl.scale == 1.0
    for off in (watched_controller(gate=False), watched_controller(watch=False)):
        assert not off.guards_early_divergence
        assert not any(off.observe_train_loss(x) for x in (1.0, 10.0, 100.0)) and off.scale == 1.0 and off.early_cuts == []
    stretch = watched_controller()  # logged means or another process's stretch: not one step at a time, not guarded
    stretch.observe_train_losses([1.0, 10.0, 100.0, 1000.0])
    stretch.observe(1.0, train_loss=1e6)
    assert stretch.early_cuts == [] and stretch.scale == 1.0


def _loop_at_a_far_too_high_lr(evaluate_at_start: bool):
    """A plain loop on a regression with Adam at LR 1.0 (far too high): the docs' calls at every
    step, an evaluation every 8 steps and, when asked, one before the first step."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    ctrl = MetaLRController(1.0, policy=always(2), learn_online=False, seed=0)  # 2: keep
    ctrl.watch(model.parameters())
    loss_now = lambda: float(torch.nn.functional.mse_loss(model(x), y).detach())  # noqa: E731
    decisions = [ctrl.observe(loss_now(), progress=0.0)] if evaluate_at_start else []
    for step in range(1, 17):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        ctrl.before_optimizer_step()
        optimizer.step()
        ctrl.after_optimizer_step()
        if ctrl.observe_train_loss(loss.item()):
            ctrl.scale_param_groups(optimizer)
        if step % 8 == 0:
            decisions.append(ctrl.observe(loss_now(), progress=step / 16))
            ctrl.scale_param_groups(optimizer)
    return ctrl, decisions


def test_an_evaluation_before_the_first_step_of_a_plain_loop_is_no_decision_and_keeps_the_guard():
    plain, plain_decisions = _loop_at_a_far_too_high_lr(evaluate_at_start=False)
    assert plain.early_cuts, "the run at LR 1.0 needs the guard's cut for this test"
    ctrl, decisions = _loop_at_a_far_too_high_lr(evaluate_at_start=True)
    start = decisions[0]
    assert start.gate.startswith("no decision: no optimizer step since the last decision")
    assert (start.index, start.applied, start.by_policy, start.features) == (0, 1.0, False, None)
    assert ctrl.early_cuts == plain.early_cuts, "the guard still cuts as without the evaluation at the start"
    assert [d.as_dict() for d in decisions[1:]] == [d.as_dict() for d in plain_decisions]
    assert ctrl.history == plain.history and ctrl.decision_index == 2
    # an evaluation right after a decision, with no step between, is none either; the next one after steps is
    again = ctrl.observe(1.0, progress=1.0)
    assert again.gate.startswith("no decision") and again.index == 2 and len(ctrl.history) == 2


def test_a_loop_that_never_reports_a_step_is_told_and_decides_from_its_second_evaluation():
    ctrl = MetaLRController(1e-3, policy=always(4), learn_online=False)
    ctrl.watch([torch.nn.Parameter(torch.zeros(4))])
    first = ctrl.observe(1.0)  # as an evaluation before the first step
    with pytest.warns(RuntimeWarning, match=r"before_optimizer_step\(\) and after_optimizer_step\(\) were never called "
                                            r"since watch\(\), so the controller sees no optimizer step: the first "
                                            r"evaluation was no decision, and each one since decides"):
        decisions = [ctrl.observe(v) for v in (0.9, 0.8)]
    assert first.gate.startswith("no decision") and [d.index for d in decisions] == [0, 1]
    assert len(ctrl.history) == 2 and not any((d.gate or "").startswith("no decision") for d in decisions)


def test_what_counts_as_a_step_and_what_is_decided_whatever_the_steps():
    ctrl = MetaLRController(1e-3, policy=always(2), learn_online=False)  # 2: keep
    ctrl.watch([torch.nn.Parameter(torch.zeros(4))])
    ctrl.observe_train_loss(1.0)
    assert ctrl.observe(1.0, train_loss=1.0).index == 0, "a step's loss: a decision"
    assert ctrl.observe(0.9).gate.startswith("no decision"), "observe's own train_loss is not a step after it"
    assert ctrl.observe(0.9, train_loss=0.9).index == 1, "a train_loss given with the evaluation says steps were made"
    with pytest.warns(RuntimeWarning, match="treating it as a divergence"):
        diverged = ctrl.observe(float("nan"))  # no step, but a NaN is a divergence whenever it comes
    assert diverged.diverged and diverged.index == 2
    assert ctrl.observe(0.9).gate.startswith("no decision"), "none after the divergence's decision either"
    unwatched = MetaLRController(1e-3, policy=always(2), learn_online=False)
    assert unwatched.observe(1.0).index == 0 and unwatched.observe(1.0).index == 1, "nothing watched: every call decides"
    assert unwatched.observe(1.0, stepped=False).gate.startswith("no decision"), "the caller's own answer"


def test_the_guard_state_rides_in_the_controller_state():
    losses = [2.0, 3.0, 13.0, 60.0, 10.0, 300.0, 1.0, 1300.0, 6000.0]
    whole = watched_controller()
    expected = [whole.observe_train_loss(x) for x in losses]
    first = watched_controller()
    got = [first.observe_train_loss(x) for x in losses[:4]]
    second = watched_controller()
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    got += [second.observe_train_loss(x) for x in losses[4:]]
    assert got == expected and second.early_cuts == whole.early_cuts and second.scale == whole.scale
    assert expected.count(True) == 2, "13 and 60 are a climb; 300 after a calm step starts another, 1300 ends it"


def test_the_callback_cuts_a_diverging_trainer_run_before_the_first_evaluation(tmp_path):
    keep = tmp_path / "keep"
    save_policy(always(2), keep)
    keep = str(keep) + ".safetensors"
    trainer = make_trainer(tmp_path / "high", callbacks=[MetaLRCallback(policy=keep), AppliedLRRecorder(tmp_path / "lrs.jsonl")],
                           learning_rate=3.0, max_steps=10, logging_steps=1)
    trainer.train()
    trace = read_trace(tmp_path / "high" / "metalr_trace.jsonl")
    cuts = trace[0]["early_cuts"]
    assert cuts and all(isinstance(c["loss"], str) or c["loss"] > EARLY_SPIKE * c["reference"] for c in cuts)
    assert all(e["early_cuts"] == [] for e in trace[1:])
    applied = {json.loads(line)["step"]: json.loads(line)["lrs"][0] for line in (tmp_path / "lrs.jsonl").read_text().splitlines()}
    # a cut after step s takes effect from step s + 1, in the optimizer itself
    assert applied[cuts[0]["step"]] == 3.0 and math.isclose(applied[cuts[0]["step"] + 1], 3.0 * EARLY_CUT)
    assert math.isclose(applied[5], cuts[-1]["lr"]) and cuts[-1]["rewound"]
    # started over, the run is still far too fast for its weights, and the distance check (not stood down by a cut
    # that started the run over) halves the LR at the first decision, with the metric at its first level: the run
    # is wrecked again, and starts over again
    assert trace[0]["evidence"].startswith("cut: the steps are too long by two measures")
    assert math.isclose(trace[0]["lr"], cuts[-1]["lr"] / 2)
    assert trace[0]["rewound"] is True and "a wrecked run" in trace[0]["evidence"]
    assert trace[1]["rewound"] is None and trace[1]["features"]["param_drift"] < trace[0]["features"]["param_drift"]

    early = make_trainer(tmp_path / "eval_on_start", callbacks=[MetaLRCallback(policy=keep)], learning_rate=3.0,
                         max_steps=10, logging_steps=1, eval_on_start=True)
    early.train()  # the evaluation of the initial weights is no decision: the guard still reads the first steps
    assert read_trace(tmp_path / "eval_on_start" / "metalr_trace.jsonl")[0]["early_cuts"] == cuts

    calm = make_trainer(tmp_path / "calm", callbacks=[MetaLRCallback(policy=keep)], max_steps=10)
    calm.train()
    calm_trace = read_trace(tmp_path / "calm" / "metalr_trace.jsonl")
    assert calm_trace[0]["early_cuts"] == [] and calm_trace[0]["lr"] == 3e-3


def test_a_meta_training_episode_runs_the_same_guard():
    # SGD at lr 300 diverges at the second evaluation without the guard (tests/test_meta.py); with it, the episode's
    # controller cuts the LR at the first steps' climb and starts the run over from its start weights, and it stays
    # finite
    spec = quick_spec(optimizer="sgd", lr=300.0, epochs=3, evals_per_epoch=1)
    episode = run_episode(spec, random_policy(0), seed=0)
    assert not episode.diverged and all(math.isfinite(v) for v in episode.values)
    problem = build_problem(spec)
    first_evaluation = math.ceil(math.ceil(len(problem.train[1]) / problem.batch_size) / problem.evals_per_epoch)
    # the second step's loss is over 100x the first's (one extreme record); started over at a quarter of the LR, the
    # run climbs again from its start, and the guard reads that climb afresh
    first, second = episode.early_cuts
    assert first["step"] == 2 and first["loss"] > EXTREME * first["reference"]
    assert second["reference"] < first["loss"], "the second climb is read against the losses after the start-over"
    assert first["lr"] == pytest.approx(300.0 * EARLY_CUT) and second["lr"] == pytest.approx(300.0 * EARLY_CUT**2)
    assert first["rewound"] and second["rewound"]
    assert second["step"] < first_evaluation, "both before the first evaluation"


def guard_run(output_dir, *extra, nproc=1, expect_rc=0):
    """tiny_job.py at LR 3.0 (the first steps' loss goes 2.3 -> about 2000) for 10 steps, decisions at 5 and 10."""
    job = ["--output_dir", str(output_dir), "--max_steps", "10", "--learning_rate", "3.0", *map(str, extra)]
    if nproc == 1:
        return run_job(*job, expect_rc=expect_rc)
    proc = forked_job.run_ranks("tiny_job", *job, nproc=nproc, env=ENV)
    assert proc.returncode == expect_rc, proc.stderr[-3000:]
    if expect_rc == 0:
        assert_one_process_group(output_dir, proc)
    return proc


@pytest.mark.slow
def test_the_guard_cuts_alike_on_every_rank(tmp_path):
    guard_run(tmp_path, "--save_steps", 100, nproc=2)
    rank0, rank1 = applied(tmp_path, 0), applied(tmp_path, 1)
    assert len(rank0) == 10 and rank0 == rank1
    cuts = read_trace(tmp_path / "metalr_trace.jsonl")[0]["early_cuts"]
    assert cuts and rank0[cuts[0]["step"] + 1][0] == cuts[0]["lr"] < 3.0
    # every rank fed the guard the same (averaged) losses: the same guard state and the same features
    guards = [json.loads((tmp_path / f"early_guard.rank{r}.json").read_text()) for r in (0, 1)]
    assert guards[0] == guards[1] and guards[0]["early_guard"]["steps"] == 5
    features = [json.loads((tmp_path / f"features.rank{r}.json").read_text()) for r in (0, 1)]
    assert features[0] == features[1]
    # the first decision starts the run over on both ranks (the drift of the last decision, read from each rank's
    # own weights, is the same)
    assert read_trace(tmp_path / "metalr_trace.jsonl")[0]["rewound"] is True


@pytest.mark.slow
@pytest.mark.parametrize("stays", [1, 0])
def test_ranks_that_disagree_on_starting_over_go_on_as_rank_0(tmp_path, stays):
    """One rank's controller never goes back to its start weights (``stays``): at the early cut (and at
    any later start-over) the ranks disagree. Every rank then goes on with rank 0's weights and rank 0's
    controller state, so the LRs, the controllers' whole states and the weights agree to the end."""
    proc = guard_run(tmp_path, "--save_steps", 100, "--never_start_over_on_rank", stays, nproc=2)
    assert "the processes disagreed on going back to the start weights" in proc.stderr
    assert applied(tmp_path, 0) == applied(tmp_path, 1)
    states = [json.loads((tmp_path / f"state.rank{r}.json").read_text()) for r in (0, 1)]
    assert states[0]["weights"] == states[1]["weights"]
    assert states[0]["controller"] == states[1]["controller"]
    assert states[0]["start_weights_kept"] == states[1]["start_weights_kept"]
    cuts = read_trace(tmp_path / "metalr_trace.jsonl")[0]["early_cuts"]
    assert cuts and cuts[0]["rewound"] is (stays == 1), "the trace is rank 0's"


@pytest.mark.slow
def test_a_resume_keeps_the_start_weights_only_where_every_rank_read_them(tmp_path):
    """Two processes resumed from step 5, where the start weights were kept, and rank 1 cannot read
    them: both ranks drop them, so both read the same distance bar (``start_weights_kept`` 0 at the
    next decision on both) and decide alike."""
    guard_run(tmp_path, "--save_steps", 5, "--kill_after_step", 5, nproc=2, expect_rc=1)
    checkpoint = tmp_path / "checkpoint-5"
    assert (checkpoint / START_WEIGHTS_FILE).is_file()
    guard_run(tmp_path, "--save_steps", 100, "--resume", checkpoint, "--start_weights_unread_on_rank", 1, nproc=2)
    rank0, rank1 = features(tmp_path, 0), features(tmp_path, 1)
    assert rank0 == rank1 and rank0[-1]["start_weights_kept"] == 0.0
    assert applied(tmp_path, 0) == applied(tmp_path, 1)


@pytest.mark.slow
def test_a_run_resumed_before_the_first_evaluation_keeps_the_guard(tmp_path):
    guard_run(tmp_path / "whole", "--save_steps", 100)
    guard_run(tmp_path / "cut", "--save_steps", 3, "--kill_after_step", 3, expect_rc=-9)
    saved = json.loads((tmp_path / "cut" / "checkpoint-3" / "trainer_state.json").read_text())
    controller = saved["stateful_callbacks"]["MetaLRCallback"]["attributes"]["controller_state"]
    assert controller["early_guard"]["steps"] == 3 and controller["early_guard"]["cuts"] == 1, "killed after the blow-up"
    assert controller["early_cuts"][0]["rewound"] and controller["start_weights_kept"]
    assert (tmp_path / "cut" / "checkpoint-3" / START_WEIGHTS_FILE).is_file(), "the start weights ride in the checkpoint"
    guard_run(tmp_path / "cut", "--save_steps", 3, "--resume", tmp_path / "cut" / "checkpoint-3")
    whole = read_trace(tmp_path / "whole" / "metalr_trace.jsonl")
    assert whole[0]["early_cuts"] and read_trace(tmp_path / "cut" / "metalr_trace.jsonl") == whole
    assert applied(tmp_path / "cut") == applied(tmp_path / "whole")
    guard_state = [json.loads((tmp_path / run / "early_guard.rank0.json").read_text()) for run in ("cut", "whole")]
    assert guard_state[0] == guard_state[1] and guard_state[1]["early_guard"]["steps"] == 5


@pytest.mark.slow
def test_the_start_weights_ride_in_checkpoints_until_the_run_makes_progress(tmp_path):
    """The run starts over at its first decision (step 5) and keeps the copy until the run makes
    progress (the decision at step 10): the checkpoint at step 5 holds the start weights, the one at
    step 10 does not, and the run resumed from step 5 repeats the uninterrupted one without a
    warning."""
    whole_run = guard_run(tmp_path / "whole", "--save_steps", 5)
    assert ("at step 5 the run is wrecked (a cut with the steps too long by both of the distance check's measures and "
            "the metric still at its first evaluation's level): the LR is cut to") in whole_run.stderr

    def kept(checkpoint):
        saved = json.loads((checkpoint / "trainer_state.json").read_text())
        return saved["stateful_callbacks"]["MetaLRCallback"]["attributes"]["controller_state"]["start_weights_kept"]

    assert kept(tmp_path / "whole" / "checkpoint-5") and (tmp_path / "whole" / "checkpoint-5" / START_WEIGHTS_FILE).is_file()
    assert not kept(tmp_path / "whole" / "checkpoint-10")
    assert not (tmp_path / "whole" / "checkpoint-10" / START_WEIGHTS_FILE).exists()
    guard_run(tmp_path / "cut", "--save_steps", 5, "--kill_after_step", 5, expect_rc=-9)
    proc = guard_run(tmp_path / "cut", "--save_steps", 100, "--resume", tmp_path / "cut" / "checkpoint-5")
    assert START_WEIGHTS_FILE not in proc.stderr, "read back without a warning"
    whole = read_trace(tmp_path / "whole" / "metalr_trace.jsonl")
    assert whole[0]["rewound"] is True and whole[0]["start_over"] == "wrecked"
    assert read_trace(tmp_path / "cut" / "metalr_trace.jsonl") == whole
    assert applied(tmp_path / "cut") == applied(tmp_path / "whole")


@pytest.mark.slow
def test_a_run_resumed_before_its_early_cut_goes_back_to_the_same_start_weights(tmp_path):
    """Killed after its first step, before the blow-up: the checkpoint holds the start weights, and the
    resumed run's cut at step 2 goes back to them, as the uninterrupted run's does (the same
    decisions, LRs and evaluations). Without the file, the resume warns and its cut only cuts."""
    guard_run(tmp_path / "whole", "--save_steps", 100)
    guard_run(tmp_path / "cut", "--save_steps", 1, "--kill_after_step", 1, expect_rc=-9)
    checkpoint = tmp_path / "cut" / "checkpoint-1"
    assert (checkpoint / START_WEIGHTS_FILE).is_file()
    guard_run(tmp_path / "cut", "--save_steps", 100, "--resume", checkpoint)
    whole = read_trace(tmp_path / "whole" / "metalr_trace.jsonl")
    assert whole[0]["early_cuts"][0]["step"] == 2 and whole[0]["early_cuts"][0]["rewound"]
    assert read_trace(tmp_path / "cut" / "metalr_trace.jsonl") == whole
    assert applied(tmp_path / "cut") == applied(tmp_path / "whole")

    (checkpoint / START_WEIGHTS_FILE).unlink()
    proc = guard_run(tmp_path / "cut", "--save_steps", 100, "--resume", checkpoint)
    assert f"no {START_WEIGHTS_FILE} of that step could be read" in proc.stderr
    cut = read_trace(tmp_path / "cut" / "metalr_trace.jsonl")[0]["early_cuts"][0]
    assert cut["step"] == 2 and cut["rewound"] is False
