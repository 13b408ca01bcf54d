"""Nothing lost, nothing silently wrong: one output folder per process, resumes that work, one
controller per optimizer, schedulers it cannot compose with, metric directions, what the trace
records, stored compare settings, independent train() calls, a torn trace line."""

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_metalr import MetaLRCallback, MetaLRController, random_policy, read_trace, save_policy
from hf_metalr import launch
from hf_metalr.baselines import attach_schedule
from hf_metalr.compare import compare
from hf_metalr.compare.cli import main as compare_main
from hf_metalr.controller.direction import greater_is_better_by_name
from hf_metalr.integration.trace import TraceWriter
from hf_metalr.meta.cli import main as meta_main
from hf_metalr.output_dir import locked_output_dir
from tiny_job import TinyClassifier, accuracy, make_trainer

TINY_META = ["--iterations", "1", "--episodes-per-iteration", "1", "--held-out-per-family", "1", "--eval-every", "1",
             "--backend", "serial", "--workers", "1"]
HOLD_LOCK = """
import sys, time
from hf_metalr.output_dir import locked_output_dir
with locked_output_dir(sys.argv[1], "a compare in another terminal"):
    print("locked", flush=True)
    time.sleep(120)
"""


# -- 1. one process per output folder --------------------------------------------------------------
def test_a_second_compare_into_a_folder_in_use_fails_at_once_naming_folder_and_holder(tmp_path):
    out = tmp_path / "cmp"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit, match=rf"--out {out} is in use by pid {holder.pid} .*a compare in another "
                                             r"terminal.*choose another --out"):
            compare_main(["--task", "digits", "--schedules", "constant", "--seeds", "1", "--epochs", "1",
                          "--out", str(out), "--resume"])
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "results.json").exists()


def test_a_second_meta_train_into_a_folder_in_use_fails_at_once(tmp_path):
    with locked_output_dir(tmp_path, "hf-metalr meta-train"):
        with pytest.raises(SystemExit, match=rf"{tmp_path} is in use by pid \d+ .*hf-metalr meta-train"):
            meta_main(["--out", str(tmp_path), *TINY_META])
    assert not (tmp_path / "meta_checkpoint.json").exists()


# -- 2. resuming a checkpoint made without the callback ----------------------------------------------
def test_resume_from_a_checkpoint_made_without_the_callback_starts_fresh_and_saves(tmp_path, caplog):
    saving = dict(save_strategy="steps", save_steps=10)
    make_trainer(tmp_path, max_steps=10, **saving).train()
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback(policy="random")], max_steps=20, **saving)
    with caplog.at_level(logging.INFO, logger="hf_metalr"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-10"))
    assert "holds no MetaLRCallback state" in caplog.text and "starts fresh" in caplog.text
    saved = json.loads((tmp_path / "checkpoint-20" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["MetaLRCallback"]["attributes"]["controller_state"]["decision_index"] == 2
    assert [e["global_step"] for e in read_trace(tmp_path / "metalr_trace.jsonl")] == [15, 20]

    again = make_trainer(tmp_path, callbacks=[MetaLRCallback(policy="random")], max_steps=30, **saving)
    again.train(resume_from_checkpoint=str(tmp_path / "checkpoint-20"))
    assert [e["global_step"] for e in read_trace(tmp_path / "metalr_trace.jsonl")] == [15, 20, 25, 30]


# -- 3. one controller per optimizer ---------------------------------------------------------------
def test_two_controllers_on_one_trainer_are_refused_at_train_begin(tmp_path):
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback()], max_steps=10)
    trainer.add_callback(MetaLRCallback())
    with pytest.raises(ValueError, match="2 MetaLRCallbacks: they would fight.*Keep one"):
        trainer.train()
    assert trainer.state.global_step == 0

    with launch.patched({"policy": "random"}):
        launched = make_trainer(tmp_path / "launched", max_steps=10)
        attach_schedule(launched, "metalr")  # a script that adds its own after building the Trainer (as the compare tool does)
        with pytest.raises(ValueError, match="The launcher .* added one, and the script adds its own"):
            launched.train()
    assert launched.state.global_step == 0


# -- 6. schedulers that set the LR themselves --------------------------------------------------------
def _scheduler(name, optimizer):
    s = torch.optim.lr_scheduler
    return {
        "OneCycleLR": lambda: s.OneCycleLR(optimizer, max_lr=3e-2, total_steps=40),
        "CyclicLR": lambda: s.CyclicLR(optimizer, base_lr=1e-3, max_lr=1e-2, step_size_up=5),
        "SequentialLR": lambda: s.SequentialLR(optimizer, [s.ConstantLR(optimizer), s.ExponentialLR(optimizer, 0.9)],
                                               milestones=[5]),
        "ChainedScheduler": lambda: s.ChainedScheduler([s.ConstantLR(optimizer), s.ExponentialLR(optimizer, 0.9)]),
    }[name]()


@pytest.mark.parametrize("name", ["OneCycleLR", "CyclicLR", "SequentialLR", "ChainedScheduler"])
def test_schedulers_that_set_the_lr_themselves_are_refused_with_what_to_use(tmp_path, name):
    trainer = make_trainer(tmp_path, max_steps=10)
    trainer.add_callback(MetaLRCallback())  # added after Trainer(...): refused at train begin
    optimizer = torch.optim.SGD(trainer.model.parameters(), lr=3e-3)
    trainer.optimizer, trainer.lr_scheduler = optimizer, _scheduler(name, optimizer)
    with pytest.raises(ValueError, match=rf"cannot drive the LR through {name}: .*Use a Trainer schedule"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_a_scheduler_passed_to_the_trainer_is_refused_when_it_is_built(tmp_path):
    from transformers import Trainer

    base = make_trainer(tmp_path)
    optimizer = torch.optim.SGD(base.model.parameters(), lr=3e-3)
    with pytest.raises(ValueError, match="cannot drive the LR through OneCycleLR"):
        Trainer(model=base.model, args=base.args, train_dataset=base.train_dataset, eval_dataset=base.eval_dataset,
                callbacks=[MetaLRCallback()], optimizers=(optimizer, _scheduler("OneCycleLR", optimizer)))


# -- 7. metric direction -------------------------------------------------------------------------------
@pytest.mark.parametrize("name, greater", [
    ("eval_loss", False), ("eval_wer", False), ("cer", False), ("eval_perplexity", False), ("eval_error", False),
    ("eval_word_error_rate", False), ("eval_mse", False), ("eval_mae", False), ("test_rmse", False),
    ("eval_bits_per_char", False), ("eval_bpc", False), ("eval_rmsle", False), ("eval_msle", False),
    ("eval_top1_err", False), ("eval_smape", False), ("eval_neg_log_likelihood", False),
    ("eval_negative_log_likelihood", False), ("eval_log_likelihood", True), ("eval_errand", True),
    ("eval_accuracy", True), ("eval_f1", True), ("eval_bleu", True), ("eval_answer_f1", True), ("eval_cersei", True),
])
def test_direction_is_inferred_from_the_name(name, greater):
    assert greater_is_better_by_name(name) is greater


def test_the_readme_lists_every_lower_is_better_word():
    from hf_metalr.controller.direction import LOWER_IS_BETTER_WORDS

    readme = Path(__file__).resolve().parents[1] / "README.md"
    row = next(line for line in readme.read_text().splitlines() if line.startswith("| `greater_is_better` |"))
    listed = row.split("(", 2)[-1].split(")")[0]
    assert [w.strip() for w in listed.split(",")] == list(LOWER_IS_BETTER_WORDS)


def _with_wer(eval_pred):
    out = accuracy(eval_pred)
    out["wer"] = 1.0 - out["accuracy"]
    return out


def test_error_like_metric_is_lower_is_better_and_the_direction_is_logged(tmp_path, caplog):
    cb = MetaLRCallback(metric="wer")
    trainer = make_trainer(tmp_path, callbacks=[cb], compute_metrics=_with_wer, max_steps=10)
    with caplog.at_level(logging.INFO, logger="hf_metalr"):
        trainer.train()
    assert cb.controller.tracker.greater_is_better is False
    assert "monitoring eval_wer, lower is better" in caplog.text

    cb = MetaLRCallback()  # metric_for_best_model="wer": the Trainer guesses greater_is_better=True for it
    trainer = make_trainer(tmp_path / "best", callbacks=[cb], compute_metrics=_with_wer, max_steps=10,
                           metric_for_best_model="wer")
    with pytest.warns(UserWarning, match="'eval_wer' as lower is better"):
        trainer.train()
    assert cb.controller.tracker.greater_is_better is False


def test_the_launcher_banner_states_the_metric_direction(tmp_path, capsys):
    script = tmp_path / "noop.py"
    script.write_text("print('no trainer here')\n")
    assert launch.main(["--metalr_metric", "wer", str(script)]) == 0
    assert "metric: eval_wer, lower is better (from its name)" in capsys.readouterr().err


# -- 8. the trace records the multiplier asked for and the one applied ---------------------------------
def _always_doubling(tmp_path):
    policy = random_policy(0)
    with torch.no_grad():
        policy.actor[-1].bias[policy.config.multipliers.index(2.0)] = 100.0
    return save_policy(policy, tmp_path / "doubler")


def test_trace_records_the_requested_and_the_applied_multiplier(tmp_path):
    path = _always_doubling(tmp_path)
    ctrl = MetaLRController(1e-3, policy=str(path), max_lr=1.5e-3)
    decisions = [ctrl.observe(v) for v in (1.0, 0.9, 0.8)]
    assert [(d.action, d.applied) for d in decisions] == [(1.0, 1.0), (2.0, 1.5), (2.0, 1.0)]

    trainer = make_trainer(tmp_path / "run", callbacks=[MetaLRCallback(policy=str(path), max_lr=3e-3)], max_steps=15)
    trainer.train()
    trace = read_trace(tmp_path / "run" / "metalr_trace.jsonl")
    # the callback watches the gradients, so the policy asks from the first evaluation on; each x2 is held by the
    # gate or capped by max_lr (the job's LR is already at it)
    assert [(e["action"], e["applied"], e["lr_scale"]) for e in trace] == [(2.0, 1.0, 1.0)] * 3


# -- 9. compare --resume stores and checks every run-changing setting ----------------------------------
def test_compare_resume_refuses_other_metalr_settings(tmp_path):
    base = ["--task", "digits", "--schedules", "constant", "--seeds", "1", "--epochs", "1", "--out", str(tmp_path)]
    assert compare_main(base) == 0
    stored = json.loads((tmp_path / "results.json").read_text())["config"]
    assert stored["metalr_learn_online"] is True and stored["metalr_options"] == {}
    with pytest.raises(SystemExit, match=r"other settings \(online learning \(--metalr-no-learn-online turns it off\): "
                                         r"True stored, False given\)"):
        compare_main(base + ["--resume", "--metalr-no-learn-online"])

    data = json.loads((tmp_path / "results.json").read_text())  # a results.json from before these were stored
    del data["config"]["metalr_learn_online"], data["config"]["metalr_options"]
    (tmp_path / "results.json").write_text(json.dumps(data))
    assert compare_main(base + ["--resume"]) == 0
    with pytest.raises(ValueError, match=r"the metalr options: \{\} stored, \{.max_lr.: 1.0\} given"):
        compare("digits", ["constant"], [0], tmp_path, epochs=1, resume=True, metalr_options={"max_lr": 1.0})

    # another hf_metalr version may run metalr differently: its runs are not mixed into this comparison
    data = json.loads((tmp_path / "results.json").read_text())
    data["config"]["hf_metalr_version"] = "0.0.1"
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit, match=r"made with hf_metalr 0\.0\.1, and this is .*Use another --out"):
        compare_main(base + ["--resume"])


# -- 10. every train() starts from the configured policy -------------------------------------------------
def test_a_second_train_starts_from_the_configured_policy_not_the_learned_one(tmp_path):
    cb = MetaLRCallback(policy="random")  # learns online, so a run changes the policy it ends with
    trainer = make_trainer(tmp_path, callbacks=[cb], max_steps=20)
    trainer.model_init = lambda: (torch.manual_seed(0), TinyClassifier())[1]
    trainer.train()
    first_trace, first_policy = read_trace(tmp_path / "metalr_trace.jsonl"), (tmp_path / "metalr_policy.safetensors").read_bytes()
    trainer.train()
    assert read_trace(tmp_path / "metalr_trace.jsonl") == first_trace
    assert (tmp_path / "metalr_policy.safetensors").read_bytes() == first_policy


# -- 14. a torn last trace line --------------------------------------------------------------------------
def test_a_torn_last_trace_line_is_dropped_with_a_warning_and_resume_goes_on(tmp_path):
    path = tmp_path / "metalr_trace.jsonl"
    lines = [json.dumps({"global_step": s, "lr": 1e-3}) for s in (5, 10, 15)]
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:12])
    with pytest.warns(RuntimeWarning, match="torn last line 3"):
        TraceWriter(path).start(resume_step=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [e["global_step"] for e in read_trace(path)] == [5, 10]

    path.write_text(lines[0] + "\n{broken\n" + lines[2] + "\n")
    with pytest.raises(ValueError, match="line 2, is not a JSON object"):
        read_trace(path)


# -- 4. numbers of any real type ----------------------------------------------------------------------
@pytest.mark.parametrize("value", [np.float32(0.5), np.float64(0.5), np.array(0.5), torch.tensor(0.5),
                                   torch.tensor(0.5, dtype=torch.float16)])
def test_numeric_scalars_are_metrics_and_losses_not_divergences(value):
    ctrl = MetaLRController(1e-3, policy="random")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ctrl.observe_train_loss(value)
        ctrl.observe_train_losses([value, value])
        decision = ctrl.observe(value, train_loss=value)
    assert not decision.diverged and decision.value == 0.5 and decision.scale == 1.0
    assert ctrl.tracker.train_loss_at_decision == 0.5


@pytest.mark.parametrize("bad", [None, "0.5", [0.5], torch.tensor([0.5, 0.4]), 1j, True])
def test_anything_but_a_real_scalar_is_a_type_error(bad):
    ctrl = MetaLRController(1e-3, policy="random")
    for call in (ctrl.observe, ctrl.observe_train_loss, lambda v: ctrl.observe_train_losses([v])):
        with pytest.raises(TypeError, match="must be a real number"):
            call(bad)
    assert ctrl.decision_index == 0 and ctrl.scale == 1.0
