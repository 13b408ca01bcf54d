"""Kill/resume and multi-process runs of the real Trainer job in tiny_job.py, each in processes of its own
(forked_job; one test launches through torch.distributed.run)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import forked_job
from hf_metalr import FEATURE_NAMES, read_trace

HERE = Path(__file__).resolve().parent
JOB = str(HERE / "tiny_job.py")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}


def run_job(*args, expect_rc=0):
    """tiny_job.py's ``main(args)`` in one process (forked_job: a fresh process without the imports' cost)."""
    proc = forked_job.run("tiny_job", *args, env=ENV)
    assert proc.returncode == expect_rc, proc.stderr[-3000:]
    return proc


def applied(output_dir, rank=0):
    steps = {}
    for line in (Path(output_dir) / f"applied_lrs.rank{rank}.jsonl").read_text().splitlines():
        d = json.loads(line)
        steps[d["step"]] = d["lrs"]  # a resumed run re-records the steps after the checkpoint
    return steps


def assert_one_process_group(output_dir, proc):
    """Both ranks of a two-process run trained in one process group of 2 (not as two runs of one each)."""
    for rank in (0, 1):
        state = json.loads((Path(output_dir) / f"state.rank{rank}.json").read_text())
        assert state["world_size"] == 2, proc.stderr[-3000:]


def decisions(output_dir):
    return [(e["global_step"], e["value"], e["action"], e["reward"], e["lr"]) for e in read_trace(Path(output_dir) / "metalr_trace.jsonl")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run_job("--output_dir", out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("restore_flag", [False, True])
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, uninterrupted, restore_flag):
    flag = ["--restore_callback_states"] if restore_flag else []
    run_job("--output_dir", tmp_path, "--kill_after_step", 20, *flag, expect_rc=-9)
    assert len(read_trace(tmp_path / "metalr_trace.jsonl")) == 4  # decisions at 5, 10, 15, 20 before the kill
    state = json.loads((tmp_path / "checkpoint-20" / "trainer_state.json").read_text())
    saved = state["stateful_callbacks"]["MetaLRCallback"]["attributes"]["controller_state"]
    assert saved["decision_index"] == 4 and saved["meta_optimizer"] is not None and len(saved["history"]) == 4

    run_job("--output_dir", tmp_path, "--resume", tmp_path / "checkpoint-20", *flag)
    expected = decisions(uninterrupted)
    assert len(expected) == 8
    assert decisions(tmp_path) == expected
    assert applied(tmp_path) == applied(uninterrupted)
    assert len({round(lrs[0], 12) for lrs in applied(tmp_path).values()}) > 1


def features(output_dir, rank=0):
    return json.loads((Path(output_dir) / f"features.rank{rank}.json").read_text())


@pytest.mark.slow
def test_checkpoint_between_evaluations_keeps_the_pending_training_losses(tmp_path, uninterrupted):
    """Saved at step 14, between the decisions at 10 and 15: the losses of steps 11-14 ride in the
    checkpoint, so the resumed run sees the same training-loss features at 15 as an uninterrupted one."""
    run_job("--output_dir", tmp_path, "--save_steps", 7, "--kill_after_step", 14, expect_rc=-9)
    state = json.loads((tmp_path / "checkpoint-14" / "trainer_state.json").read_text())
    attributes = state["stateful_callbacks"]["MetaLRCallback"]["attributes"]
    assert len(attributes["pending_train_losses"]) == 4
    # the average of the iterates of steps 11-14 rides in the checkpoint's own file (the weights' size)
    assert attributes["iterate_average_steps"] == 4
    assert (tmp_path / "checkpoint-14" / "metalr_iterate_average.safetensors").is_file()
    # one process writes no rank-averaged losses file, and one left in the folder by another run is not read
    assert attributes["train_losses_file"] is False
    (tmp_path / "checkpoint-14" / "metalr_train_losses.json").write_text(json.dumps({"global_step": 14, "losses": [99.0] * 4}))
    run_job("--output_dir", tmp_path, "--save_steps", 7, "--resume", tmp_path / "checkpoint-14")
    assert decisions(tmp_path) == decisions(uninterrupted)
    resumed, expected = features(tmp_path), features(uninterrupted)
    traced = (*FEATURE_NAMES, "param_drift", "stuck_evaluations", "short_plateau_evaluations",
              "long_plateau_evaluations", "alignment_steps",
              "distance_estimate",
              "lr_over_distance", "start_weights_kept")  # the policy's features, the distance estimate (its sums ride in
    # the checkpoint), whether the start weights are kept (so does the copy, while kept); from the second decision the
    # iterate average's gain (its average rides in the checkpoint) and its progress (the last check's loss rides
    # along; the first decision reads neither: its average holds the run's start), and the gate's drift (the
    # starting sketch rides along) and its counts of stuck evaluations and of a short and a long plateau's (read back
    # from the history; that a resume counts on is tested in test_alignment.py, test_short_plateau.py and
    # test_long_plateau.py)
    assert len(resumed) == len(expected) == 8
    checked = ("iterate_average_gain", "iterate_average_progress", "previous_grad_alignment_t")  # the last read
    # back from the history, which rides in the checkpoint
    # the first decision also reads the later half of its interval's steps (those rows ride in the checkpoint)
    assert set(resumed[0]) == {*traced, "grad_alignment_late"}
    read_back = ("creep_gain", "objective_trend_before_raise", "objective_trend_after_raise", "drift_growth")
    assert [i for i, f in enumerate(expected) if "drift_growth" in f] == [3, 4, 5, 6, 7], "three intervals back"
    assert all(set(f) - set(read_back) == {*traced, *checked} for f in resumed[1:])
    # the creep (improvements in a row), a raise in force's trends and the drift's growth, read back from the
    # history, are there at the
    # same decisions, with the same values
    for name in read_back:
        at = [i for i, f in enumerate(expected) if name in f]
        assert [i for i, f in enumerate(resumed) if name in f] == at
        assert [resumed[i][name] for i in at] == pytest.approx([expected[i][name] for i in at], rel=1e-6)
    assert [f[n] for f in resumed for n in traced] == pytest.approx([f[n] for f in expected for n in traced], rel=1e-6)
    assert resumed[0]["grad_alignment_late"] == pytest.approx(expected[0]["grad_alignment_late"], rel=1e-6)
    assert [f[n] for f in resumed[1:] for n in checked] == pytest.approx(
        [f[n] for f in expected[1:] for n in checked], rel=1e-6)


@pytest.mark.slow
def test_two_processes_apply_identical_lrs_and_trace_once(tmp_path):
    """Launched by torch.distributed.run itself, as a user launches (the other two-process tests fork their
    ranks, forked_job.run_ranks)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", JOB,
           "--output_dir", str(tmp_path), "--max_steps", "20", "--save_steps", "100", "--no_gate"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_one_process_group(tmp_path, proc)
    rank0, rank1 = applied(tmp_path, 0), applied(tmp_path, 1)
    assert len(rank0) == 20 and rank0 == rank1
    assert len({round(lrs[0], 12) for lrs in rank0.values()}) > 1
    trace = read_trace(tmp_path / "metalr_trace.jsonl")
    assert [e["global_step"] for e in trace] == [5, 10, 15, 20]  # written once, by rank 0
    for e in trace[:-1]:
        assert rank0[e["global_step"] + 1][0] == e["lr"]
    # both ranks saw the same features: the per-step training losses are averaged across ranks
    assert features(tmp_path, 0) == features(tmp_path, 1)
    assert all(f["train_loss_noise"] > 0 for f in features(tmp_path, 0))
    # the gradient alignment is read from the synchronised gradients: the same, non-zero, on both ranks
    assert all(f["grad_alignment"] != 0 and f["grad_alignment_t"] != 0 for f in features(tmp_path, 0))


@pytest.mark.slow
def test_two_processes_agree_when_only_one_sees_step_losses(tmp_path):
    """Rank 1 computes its loss outside the model (a custom compute_loss), so only rank 0's tap sees
    step losses. The ranks must still join the same collectives: both fall back to the logged losses,
    the early-divergence guard reads no step on either, and both apply the same LRs (a rank that fed
    its guard alone used to all-reduce against the other's gradient buckets)."""
    proc = forked_job.run_ranks("tiny_job", "--output_dir", tmp_path, "--max_steps", 20, "--save_steps", 100,
                                "--loss_outside_the_model_on_rank", 1, env=ENV, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_one_process_group(tmp_path, proc)
    assert applied(tmp_path, 0) == applied(tmp_path, 1) and len(applied(tmp_path, 0)) == 20
    assert features(tmp_path, 0) == features(tmp_path, 1) and len(features(tmp_path, 0)) == 4
    guards = [json.loads((tmp_path / f"early_guard.rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [g["early_guard"]["steps"] for g in guards] == [0, 0]
    assert "carry no 'loss'" in proc.stderr


def run_two_processes(*args, expect_rc=0):
    """tiny_job.py on two ranks of one process group (forked_job.run_ranks: torchrun's worker environment)."""
    proc = forked_job.run_ranks("tiny_job", *args, env=ENV)
    assert (proc.returncode == 0) == (expect_rc == 0), proc.stderr[-3000:]
    if expect_rc == 0:
        assert_one_process_group(args[args.index("--output_dir") + 1], proc)
    return proc


@pytest.fixture(scope="module")
def two_processes_uninterrupted(tmp_path_factory):
    """The gated job on two processes, 20 steps, no checkpoint."""
    out = tmp_path_factory.mktemp("two_processes")
    run_two_processes("--output_dir", out, "--max_steps", 20, "--save_steps", 100)
    return out


@pytest.mark.slow
def test_two_processes_with_the_gate_read_one_iterate_average_gain(two_processes_uninterrupted):
    """With the gate the iterate-average check runs on both ranks: each evaluates its own shard of the
    eval batches, the loss sums are all-reduced, so both ranks read the same gain and progress."""
    tmp_path = two_processes_uninterrupted
    assert applied(tmp_path, 0) == applied(tmp_path, 1)
    rank0, rank1 = features(tmp_path, 0), features(tmp_path, 1)
    assert len(rank0) == 4 and "iterate_average_gain" not in rank0[0], "the first evaluation's average is not read"
    assert all("iterate_average_gain" in f for f in rank0[1:])
    assert [f.get("iterate_average_gain") for f in rank0] == [f.get("iterate_average_gain") for f in rank1]
    assert [f.get("iterate_average_progress") for f in rank0] == [f.get("iterate_average_progress") for f in rank1]


@pytest.mark.slow
def test_two_processes_resumed_between_evaluations_repeat_the_uninterrupted_run(tmp_path, two_processes_uninterrupted):
    """Killed after the checkpoint at step 14, between the decisions at 10 and 15, and resumed: the
    training losses of steps 11-14 a resume goes on from are the mean over the two processes, as
    the uninterrupted run averages them, not the main process's own, which is all trainer_state.json
    holds (the resumed runs' train_loss_noise read 0.0110 against 0.0074 with those)."""
    run_two_processes("--output_dir", tmp_path, "--max_steps", 20, "--save_steps", 7, "--kill_after_step", 14,
                      expect_rc=1)
    checkpoint = tmp_path / "checkpoint-14"
    shared = json.loads((checkpoint / "metalr_train_losses.json").read_text())
    own = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["MetaLRCallback"]
    assert shared["global_step"] == 14 and len(shared["losses"]) == len(own["attributes"]["pending_train_losses"]) == 4
    assert shared["losses"] != own["attributes"]["pending_train_losses"], "the ranks' batches differ, so do their losses"

    run_two_processes("--output_dir", tmp_path, "--max_steps", 20, "--save_steps", 7, "--resume", checkpoint)
    assert decisions(tmp_path) == decisions(two_processes_uninterrupted)
    expected = features(two_processes_uninterrupted, 0)
    assert len(expected) == 4
    for rank in (0, 1):
        resumed = features(tmp_path, rank)
        assert [f["train_loss_noise"] for f in resumed] == pytest.approx([f["train_loss_noise"] for f in expected], rel=1e-9)
        assert resumed == [pytest.approx(f, rel=1e-6) for f in expected]
    assert applied(tmp_path, 0) == applied(tmp_path, 1) == applied(two_processes_uninterrupted, 0)
