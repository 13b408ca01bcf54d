"""MetaLRCallback inside a real Trainer: setup checks, bad input, logs, trace, evaluate() outside training."""

import dataclasses
import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import Trainer, TrainerCallback

from hf_metalr import MetaLRCallback, MetaLRController, read_trace
from hf_metalr.integration.callback_handler import calling_handler
from hf_metalr.integration.checkpoint_files import checkpoint_folders
from hf_metalr.integration.lr_binding import check_training_args
from tiny_job import accuracy, make_trainer

TRACE_FIELDS = {"global_step", "epoch", "metric", "value", "action", "by_policy", "reward", "lr"}


def test_no_argument_callback_runs_and_traces_every_decision(tmp_path):
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback()])
    trainer.train()
    trace = read_trace(tmp_path / "metalr_trace.jsonl")
    assert [e["global_step"] for e in trace] == list(range(5, 41, 5))
    for e in trace:
        assert TRACE_FIELDS <= set(e)
        assert e["metric"] == "eval_loss" and e["greater_is_better"] is False and math.isfinite(e["value"]) and e["lr"] > 0
    assert trace[0]["reward"] is None and all(isinstance(e["reward"], float) for e in trace[1:])
    # the callback watches the gradients, so the policy decides from the first evaluation on, each move
    # held by the gate or let through on stated evidence
    assert all(e["by_policy"] for e in trace)
    assert all((e["applied"] == 1.0) == (e["evidence"] is None) for e in trace)
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert [h["metalr/lr"] for h in evals] == [e["lr"] for e in trace]
    assert all("metalr/action" in h and "metalr/scale" in h for h in evals)
    # why the LR moved, for TensorBoard and W&B: what took effect and the alignment the gate read
    assert [h["metalr/applied"] for h in evals] == [e["applied"] for e in trace]
    for key in ("grad_alignment", "grad_alignment_t"):
        assert [h[f"metalr/{key}"] for h in evals] == [e["features"][key] for e in trace]
    # one LR scale: logged as metalr/scale, traced as scale (and as lr_scale, its older name)
    assert [h["metalr/scale"] for h in evals] == [e["scale"] for e in trace] == [e["lr_scale"] for e in trace]
    assert (tmp_path / "metalr_policy.safetensors").exists() and (tmp_path / "metalr_policy.json").exists()


class _RaiseAtStep(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError("a crash in the middle of training")


def test_a_new_callback_on_the_model_of_a_crashed_run_removes_the_stale_hooks(tmp_path):
    """A train() that raises skips on_train_end, which removes the callback's forward hooks; a new
    Trainer with a new callback on the same model (a notebook after a crash) takes their place
    instead of adding its own beside them, and at its end the model has none left."""
    crashed = MetaLRCallback()
    first = make_trainer(tmp_path / "first", callbacks=[crashed, _RaiseAtStep(7)])
    with pytest.raises(RuntimeError, match="a crash"):
        first.train()
    model = first.model
    assert len(model._forward_hooks) == 2, "the crashed run left its loss tap and eval-batch capture"
    left = crashed._tap.pending()
    second = Trainer(model=model, args=dataclasses.replace(first.args, output_dir=str(tmp_path / "second")),
                     train_dataset=first.train_dataset, eval_dataset=first.eval_dataset,
                     compute_metrics=accuracy, callbacks=[MetaLRCallback()])
    second.train()
    assert len(model._forward_hooks) == 0
    assert crashed._tap.pending() == left and crashed._eval_batches.captured == 0, "the stale hooks read nothing more"
    assert read_trace(tmp_path / "second" / "metalr_trace.jsonl")


def test_metric_defaults_to_metric_for_best_model(tmp_path):
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback()], metric_for_best_model="accuracy", max_steps=10)
    trainer.train()
    trace = read_trace(tmp_path / "metalr_trace.jsonl")
    assert {e["metric"] for e in trace} == {"eval_accuracy"} and all(e["greater_is_better"] is True for e in trace)
    cb = next(c for c in trainer.callback_handler.callbacks if isinstance(c, MetaLRCallback))
    assert cb.controller.tracker.greater_is_better is True and cb.controller.tracker.mode == "error"


def test_decisions_reach_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback()], report_to="tensorboard", max_steps=15)
    trainer.train()
    event_files = list(tmp_path.rglob("events.out.tfevents*"))
    assert event_files, "TensorBoard wrote no event file"
    tags = set()
    for f in event_files:
        acc = EventAccumulator(str(f))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert any(t.endswith("metalr/lr") for t in tags), sorted(tags)
    assert any(t.endswith("metalr/action") for t in tags), sorted(tags)


def test_the_callback_runs_ahead_of_the_reporting_callbacks(tmp_path):
    """transformers passes a callback no reference to its CallbackHandler, and puts the reporting
    callbacks before the user's; MetaLRCallback finds the handler as the caller of its event and
    moves itself first at train begin (see integration/callback_handler.py), also when a subclass overrides
    the event. Called directly, outside a Trainer, it finds no handler and changes nothing."""
    from transformers.integrations import TensorBoardCallback

    class Subclassed(MetaLRCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            return super().on_train_begin(args, state, control, **kwargs)

    for cb in (MetaLRCallback(), Subclassed()):
        trainer = make_trainer(tmp_path / type(cb).__name__, callbacks=[cb], report_to="tensorboard", max_steps=5)
        names = [type(c) for c in trainer.callback_handler.callbacks]
        assert names.index(TensorBoardCallback) < names.index(type(cb)), "the Trainer puts the reporters first"
        trainer.train()
        assert trainer.callback_handler.callbacks[0] is cb
        assert TensorBoardCallback in [type(c) for c in trainer.callback_handler.callbacks[1:]]
    assert calling_handler(MetaLRCallback()) is None


@pytest.mark.parametrize("scheduler", ["reduce_lr_on_plateau", "greedy"])
def test_metric_driven_trainer_schedulers_conflict(tmp_path, scheduler):
    with pytest.raises(ValueError, match=f"cannot run together with lr_scheduler_type='{scheduler}'"):
        make_trainer(tmp_path, callbacks=[MetaLRCallback()], lr_scheduler_type=scheduler, metric_for_best_model="eval_loss")


def test_deepspeed_config_with_its_own_scheduler_conflicts(tmp_path):
    # deepspeed itself is not installed here, so the check is exercised on the arguments it reads
    config = {"scheduler": {"type": "WarmupLR", "params": {}}, "train_batch_size": 8}
    with pytest.raises(ValueError, match="DeepSpeed config.*scheduler"):
        check_training_args(SimpleNamespace(lr_scheduler_type="linear", deepspeed=config))
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="DeepSpeed"):
        check_training_args(SimpleNamespace(lr_scheduler_type="linear", deepspeed=str(path)))
    check_training_args(SimpleNamespace(lr_scheduler_type="linear", deepspeed={"train_batch_size": 8}))


def test_evaluation_switched_off_is_an_error_at_train_begin(tmp_path):
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback()], eval_strategy="no")
    with pytest.raises(ValueError, match="eval_strategy='steps'"):
        trainer.train()


@pytest.mark.parametrize("overrides, warned", [
    (dict(max_steps=8, eval_steps=10), True),  # the only evaluation is the Trainer's at the last step
    (dict(max_steps=10, eval_steps=10), True),
    (dict(max_steps=11, eval_steps=10), False),  # step 10's decision trains step 11
    (dict(max_steps=None, num_train_epochs=1, eval_strategy="epoch"), True),
    (dict(max_steps=None, num_train_epochs=2, eval_strategy="epoch"), False),
    (dict(max_steps=20, eval_steps=5, eval_delay=20), True),  # the Trainer's eval_delay holds every one before
    (dict(max_steps=20, eval_steps=5, eval_delay=12), False),  # step 15's
])
def test_a_run_whose_decisions_cannot_act_is_warned_about_at_train_begin(tmp_path, overrides, warned):
    overrides = {k: v for k, v in overrides.items() if v is not None} | (
        {"max_steps": -1} if overrides.get("max_steps", 0) is None else {})
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback(policy="random")], **overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    said = [str(w.message) for w in caught if "no evaluation comes before the run's last step" in str(w.message)]
    assert len(said) == (1 if warned else 0), said
    if warned:
        assert "so no decision can change the LR of any step" in said[0]
    assert read_trace(tmp_path / "metalr_trace.jsonl"), "the run still trains and traces its decision"


def test_absent_metric_names_the_key_and_lists_the_available_ones(tmp_path):
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback(metric="f1")])
    with pytest.raises(ValueError, match=r"'eval_f1'.*Available: \['eval_accuracy', 'eval_loss'\]"):
        trainer.train()
    assert trainer.state.global_step == 5  # raised at the first evaluation


def test_nan_metric_lowers_the_lr_and_training_goes_on(tmp_path):
    calls = {"n": 0}

    def metrics_with_a_nan(eval_pred):
        calls["n"] += 1
        out = accuracy(eval_pred)
        out["score"] = float("nan") if calls["n"] == 4 else 1.0 - out["accuracy"]
        return out

    trainer = make_trainer(
        tmp_path, callbacks=[MetaLRCallback(metric="score", greater_is_better=False)], compute_metrics=metrics_with_a_nan,
    )
    with pytest.warns(RuntimeWarning, match="divergence"):
        trainer.train()
    assert trainer.state.global_step == 40
    trace = read_trace(tmp_path / "metalr_trace.jsonl")
    assert len(trace) == 8
    assert trace[3]["diverged"] and trace[3]["value"] == "nan"
    assert trace[3]["lr"] < trace[2]["lr"]
    assert trace[3]["learned"] is False and trace[4]["learned"] is False
    # a divergence computes no features: its log entry says what took effect, but carries no alignment
    evals = [h for h in trainer.state.log_history if "eval_score" in h]
    assert evals[3]["metalr/applied"] == trace[3]["applied"] < 1 and "metalr/grad_alignment" not in evals[3]
    assert all("metalr/grad_alignment" in h for i, h in enumerate(evals) if i != 3)
    assert all(h["metalr/param_drift"] == t["features"]["param_drift"] > 0 for h, t in zip(evals[4:], trace[4:]))
    # the Trainer's AdamW steps each coordinate by its LR: the LR is read against the distance estimate
    assert all(h["metalr/lr_over_distance"] == t["features"]["lr_over_distance"] > 0 for h, t in zip(evals[4:], trace[4:]))
    assert all(t["features"]["distance_estimate"] >= 0 for t in trace[4:])


def test_nothing_watched_logs_no_alignment(tmp_path, monkeypatch):
    import hf_metalr.integration.callback as callback_module

    monkeypatch.setattr(callback_module, "watchable", lambda args: False)  # as with sharded parameters
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback()], max_steps=10)
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evals) == 2 and all("metalr/applied" in h for h in evals)
    assert not any(key.startswith(("metalr/grad_alignment", "metalr/param_drift", "metalr/lr_over_distance"))
                   for h in evals for key in h)


def test_evaluate_outside_training_changes_nothing(tmp_path):
    cb = MetaLRCallback()
    trainer = make_trainer(tmp_path, callbacks=[cb])
    trainer.evaluate()  # before training: no controller yet, nothing happens
    assert cb.controller is None and not (tmp_path / "metalr_trace.jsonl").exists()
    trainer.train()
    trace_before = (tmp_path / "metalr_trace.jsonl").read_text()
    state_before = json.dumps(cb.controller.state_dict(), sort_keys=True)
    lrs_before = [g["lr"] for g in trainer.optimizer.param_groups]
    base_before = list(trainer.lr_scheduler.base_lrs)
    trainer.evaluate()
    trainer.evaluate(eval_dataset=trainer.eval_dataset)
    assert (tmp_path / "metalr_trace.jsonl").read_text() == trace_before
    assert json.dumps(cb.controller.state_dict(), sort_keys=True) == state_before
    assert [g["lr"] for g in trainer.optimizer.param_groups] == lrs_before
    assert list(trainer.lr_scheduler.base_lrs) == base_before


@pytest.mark.parametrize("monitored", ["eval_b_loss", "eval_a_loss", "eval_a_b_loss"])  # last, first, a name with
# another's as its prefix
def test_dict_of_eval_datasets_acts_on_the_named_one_only(tmp_path, monitored):
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback(metric=monitored)], max_steps=10)
    names = ("a", "a_b") if monitored == "eval_a_b_loss" else ("a", "b")
    trainer.eval_dataset = {name: trainer.eval_dataset for name in names}
    trainer.train()
    trace = read_trace(tmp_path / "metalr_trace.jsonl")
    assert [e["metric"] for e in trace] == [monitored, monitored]


def test_with_a_dict_of_eval_datasets_the_default_eval_loss_is_refused(tmp_path):
    trainer = make_trainer(tmp_path / "default", callbacks=[MetaLRCallback()], max_steps=10)
    trainer.eval_dataset = {"a": trainer.eval_dataset, "b": trainer.eval_dataset}
    with pytest.raises(ValueError, match=r"'eval_loss'.*eval_a_loss"):
        trainer.train()


@pytest.mark.parametrize("max_steps", [10, 5])  # refused at the next step; at train end (the last evaluation) a warning
def test_a_metric_that_no_eval_dataset_of_a_dict_returns_is_refused_after_the_evaluation_step(tmp_path, max_steps):
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback(metric="c_loss")], max_steps=max_steps)
    trainer.eval_dataset = {"a": trainer.eval_dataset, "b": trainer.eval_dataset}
    message = (r"'eval_c_loss', but none of the eval datasets returned it at step 5\. "
               r"Available: \['eval_a_accuracy', 'eval_a_loss', 'eval_b_accuracy', 'eval_b_loss'\]")
    if max_steps == 5:  # the run is over: the other callbacks' train end and the script's saving still happen
        with pytest.warns(RuntimeWarning, match=message + ".*made no decision"):
            trainer.train()
        assert (tmp_path / "metalr_policy.safetensors").exists()
    else:
        with pytest.raises(ValueError, match=message):
            trainer.train()
    assert trainer.state.global_step == 5
    assert not (tmp_path / "metalr_trace.jsonl").exists() or read_trace(tmp_path / "metalr_trace.jsonl") == []


def test_an_extra_evaluation_from_another_callback_is_not_the_controllers(tmp_path):
    """A callback that evaluates another set (``metric_key_prefix="eval_ood"``) off the Trainer's
    cadence neither stops the run nor makes a decision."""

    class ExtraEvaluation(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (3, 7):  # off the cadence: an evaluate() here at step 5 would take the Trainer's
                trainer.evaluate(metric_key_prefix="eval_ood")  # own (the handler clears should_evaluate after it)

    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback(metric="accuracy"), ExtraEvaluation()], max_steps=10)
    trainer.train()
    assert [h["step"] for h in trainer.state.log_history if "eval_ood_accuracy" in h] == [3, 7]
    assert [e["global_step"] for e in read_trace(tmp_path / "metalr_trace.jsonl")] == [5, 10]


def test_an_evaluation_before_the_first_step_is_no_decision_and_keeps_the_early_guard(tmp_path):
    """eval_on_start evaluates the initial weights: no step to judge, so no decision; the guard,
    which reads every step's loss until the first decision, stays on, and nothing warns that the
    model's outputs carry no loss."""
    cb = MetaLRCallback()
    trainer = make_trainer(tmp_path, callbacks=[cb], max_steps=10, eval_on_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        trainer.train()
    assert [h["step"] for h in trainer.state.log_history if "eval_loss" in h] == [0, 5, 10]
    trace = read_trace(tmp_path / "metalr_trace.jsonl")
    assert [e["global_step"] for e in trace] == [5, 10] and trace[0]["reward"] is None
    assert cb.controller.decision_index == 2
    assert not any("metalr/lr" in h for h in trainer.state.log_history if h.get("step") == 0)
    make_trainer(tmp_path / "without", callbacks=[MetaLRCallback()], max_steps=10).train()
    assert trace == read_trace(tmp_path / "without" / "metalr_trace.jsonl"), "the same decisions, the check's included"


def test_a_run_resumed_with_eval_on_start_repeats_the_uninterrupted_trace(tmp_path):
    """On a resume, eval_on_start evaluates the checkpoint's weights before any new step: the
    decision at that step was made before the save, so this evaluation is none."""
    options = dict(max_steps=15, save_strategy="steps", save_steps=5)
    make_trainer(tmp_path, callbacks=[MetaLRCallback()], **options).train()
    whole = read_trace(tmp_path / "metalr_trace.jsonl")
    assert [e["global_step"] for e in whole] == [5, 10, 15]
    resumed = make_trainer(tmp_path, callbacks=[MetaLRCallback()], eval_on_start=True, **options)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-10"))
    assert [h["step"] for h in resumed.state.log_history if "eval_loss" in h][-2:] == [10, 15]  # it did evaluate at 10
    assert read_trace(tmp_path / "metalr_trace.jsonl") == whole


def _interval_noise(losses):
    logs = np.log(np.asarray(losses))
    return float(np.abs(np.diff(logs)).mean())


def test_controller_sees_every_steps_training_loss(tmp_path):
    """The forward hook hands the controller each step's loss: the trace's training-loss features
    match those computed from the Trainer's own per-step logs (logging_steps=1, rounded to 4 digits),
    not from the logged means alone; with gradient accumulation a step is the mean of its micro-batches."""
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback()], logging_steps=1, max_steps=20)
    trainer.train()
    logged = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    trace = read_trace(tmp_path / "metalr_trace.jsonl")
    for previous, e in zip([None] + trace, trace):
        start = previous["global_step"] if previous else 0
        interval = [logged[s] for s in range(start + 1, e["global_step"] + 1)]
        assert e["features"]["train_loss_noise"] == pytest.approx(_interval_noise(interval), abs=2e-3)
        assert e["features"]["train_loss_noise"] > 0.01
    second = trace[1]["features"]["train_loss_trend"]
    means = [np.mean([logged[s] for s in range(a + 1, a + 6)]) for a in (0, 5)]
    assert second == pytest.approx(math.log(means[1] / means[0]), abs=2e-3)

    accumulating = make_trainer(tmp_path / "ga", callbacks=[MetaLRCallback()], max_steps=10, gradient_accumulation_steps=2,
                                per_device_train_batch_size=16)
    accumulating.train()
    steps = read_trace(tmp_path / "ga" / "metalr_trace.jsonl")
    assert len(steps) == 2 and all(0.0 < e["features"]["train_loss_noise"] < 1.0 for e in steps)


def test_model_without_a_training_loss_falls_back_to_the_logged_losses(tmp_path):
    """A custom loss outside the model: no per-step losses to see. The controller gets the logged
    means (so the trend still works), its noise feature reads 0, and a warning says why."""

    def loss_outside_the_model(outputs, labels, num_items_in_batch=None):
        return torch.nn.functional.cross_entropy(outputs["logits"], labels)

    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback()], max_steps=15)
    trainer.compute_loss_func = loss_outside_the_model
    with pytest.warns(RuntimeWarning, match="carry no 'loss'.*train_loss_noise feature reads 0"):
        trainer.train()
    trace = read_trace(tmp_path / "metalr_trace.jsonl")
    assert [e["features"]["train_loss_noise"] for e in trace] == [0.0, 0.0, 0.0]
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trace[1]["features"]["train_loss_trend"] == pytest.approx(math.log(logged[1] / logged[0]))


def test_alignment_reads_each_optimizer_step_once_and_is_traced(tmp_path):
    """With gradient accumulation the signal is fed per optimizer step (not per micro-batch), and
    every trace line shows the alignment, the policy's request and the gate's reason."""
    callback = MetaLRCallback()
    trainer = make_trainer(tmp_path, callbacks=[callback], max_steps=10, gradient_accumulation_steps=2,
                           per_device_train_batch_size=16)
    calls = []
    original = MetaLRController.before_optimizer_step

    def counting(self, schedule_factor=None):
        calls.append(self.alignment is not None)
        original(self, schedule_factor)

    MetaLRController.before_optimizer_step = counting
    try:
        trainer.train()
    finally:
        MetaLRController.before_optimizer_step = original
    assert calls == [True] * 10, "one alignment read per optimizer step (10), not per micro-batch (20)"
    trace = read_trace(tmp_path / "metalr_trace.jsonl")
    assert all({"action", "applied", "gate", "evidence", "rule"} <= set(e) for e in trace)
    assert all((e["gate"] is None) or (e["evidence"] is None) for e in trace), "held and let through are exclusive"
    assert all({"grad_alignment", "grad_alignment_t"} <= set(e["features"]) for e in trace)
    assert callback.controller.alignment is not None and callback.controller.alignment.coordinates > 0


def test_sharded_parameters_switch_the_signal_off_with_one_warning(tmp_path):
    from hf_metalr.integration.watched_parameters import watchable

    with pytest.warns(RuntimeWarning, match="sharded \\(fsdp\\).*signal is off"):
        assert watchable(SimpleNamespace(fsdp=["full_shard"], deepspeed=None)) is False
    with pytest.warns(RuntimeWarning, match="sharded \\(deepspeed\\)"):
        assert watchable(SimpleNamespace(fsdp=[], deepspeed={"zero_optimization": {"stage": 3}})) is False

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert watchable(SimpleNamespace(fsdp=[], deepspeed=None)) is True


def test_the_iterate_average_check_reads_the_eval_batches_and_leaves_the_weights_as_they_were(tmp_path):
    """Every decision's trace line and log entry carry the gain of the interval's average (the gate
    reads it from the second evaluation on: the first average still holds the run's start); the check runs with the weights swapped in and out, so a run whose decisions it does not change
    trains to the same weights as one without it."""
    def train(folder, average_iterates, bar):
        trainer = make_trainer(folder, callbacks=[MetaLRCallback(average_iterates=average_iterates)], max_steps=20)
        import hf_metalr.controller.gate as gate_module

        saved_bar, gate_module.AVERAGE_GAIN = gate_module.AVERAGE_GAIN, bar
        try:
            trainer.train()
        finally:
            gate_module.AVERAGE_GAIN = saved_bar
        return trainer

    with_check = train(tmp_path / "with", True, float("inf"))  # measured, never acted on
    without = train(tmp_path / "without", False, float("inf"))
    trace = read_trace(tmp_path / "with" / "metalr_trace.jsonl")
    gains = [e["features"].get("iterate_average_gain") for e in trace]
    assert len(gains) == 4 and gains[0] is None, "the first evaluation's average holds the run's start: not read"
    assert all(isinstance(g, float) and math.isfinite(g) for g in gains[1:])
    evals = [h for h in with_check.state.log_history if "eval_loss" in h]
    assert [h.get("metalr/iterate_average_gain") for h in evals] == gains
    assert all("iterate_average_gain" not in e["features"] for e in read_trace(tmp_path / "without" / "metalr_trace.jsonl"))
    for a, b in zip(with_check.model.parameters(), without.model.parameters()):
        assert torch.equal(a, b)
    assert with_check.model.training is without.model.training


def test_the_check_takes_the_current_loss_from_the_trainers_evaluation_and_replays_its_batches(tmp_path, monkeypatch):
    """The current weights' loss on the check's batches is the one the Trainer's evaluation computed
    (kept by a forward hook), so the check's own forward passes are the average's, one per batch;
    replaying them all, it reads the same gains as the fallback that computes the current losses
    itself. By default the replay, after either, settles on its heaviest batches when the gain
    there is far below the bar."""
    from transformers import TrainerCallback

    from hf_metalr.integration import check_batches
    from hf_metalr.integration.check_batches import (AVERAGE_CHECK_BATCHES, FIRST_CHECK_BATCHES, SETTLED_GAIN,
                                                     EvalBatchCapture)

    kept_after_decisions = []

    class KeptAfterTheDecision(TrainerCallback):  # runs after MetaLRCallback's on_log
        def on_log(self, args, state, control, logs=None, **kwargs):
            if "eval_loss" in logs:
                kept_after_decisions.append(metalr._eval_batches.captured)

    def train(folder):
        nonlocal metalr
        metalr = MetaLRCallback()
        trainer = make_trainer(folder, callbacks=[metalr, KeptAfterTheDecision()], max_steps=20,
                               per_device_eval_batch_size=20)
        calls = []
        trainer.model.register_forward_hook(
            lambda module, args, out: calls.append(not module.training and not torch.is_grad_enabled()))
        trainer.train()
        evaluation_batches = len(trainer.get_eval_dataloader())
        return read_trace(folder / "metalr_trace.jsonl"), sum(calls), evaluation_batches

    metalr = None
    settled, settled_forwards, batches = train(tmp_path / "settled")
    monkeypatch.setattr(check_batches, "SETTLED_GAIN", -math.inf)  # every replay reads all the kept batches
    trace, eval_forwards, _ = train(tmp_path / "kept")
    assert batches > AVERAGE_CHECK_BATCHES and len(trace) == 4
    assert kept_after_decisions == [0] * 8, "the kept eval batches are released after each decision"
    # the first evaluation's average is not read (it holds the run's start); the three others' are
    assert eval_forwards == 4 * batches + 3 * AVERAGE_CHECK_BATCHES
    full_gains = [e["features"]["iterate_average_gain"] for e in trace[1:]]
    assert max(full_gains) < SETTLED_GAIN - 0.05, "this run's averages are nowhere near clearly better"
    assert settled_forwards == 4 * batches + 3 * FIRST_CHECK_BATCHES < eval_forwards
    assert [e["lr"] for e in settled] == [e["lr"] for e in trace]
    assert [e["features"]["iterate_average_progress"] for e in settled[1:]] == pytest.approx(
        [e["features"]["iterate_average_progress"] for e in trace[1:]], rel=1e-6)  # from the current loss on all 4
    monkeypatch.setattr(EvalBatchCapture, "captured", property(lambda self: 0))  # as if the evaluation gave no loss
    fallback, fallback_forwards, _ = train(tmp_path / "fallback")
    assert fallback_forwards == 4 * batches + (1 + 3 * 2) * AVERAGE_CHECK_BATCHES
    assert all(math.isfinite(g) for g in full_gains)
    assert full_gains == pytest.approx([e["features"]["iterate_average_gain"] for e in fallback[1:]], rel=1e-5,
                                       abs=1e-7)
    progress = [e["features"]["iterate_average_progress"] for e in trace[1:]]
    assert progress == pytest.approx([e["features"]["iterate_average_progress"] for e in fallback[1:]], rel=1e-5,
                                     abs=1e-7)
    assert [e["lr"] for e in trace] == [e["lr"] for e in fallback]
    monkeypatch.setattr(check_batches, "SETTLED_GAIN", SETTLED_GAIN)  # the fallback's replay settles the same way
    settled_fallback, settled_fallback_forwards, _ = train(tmp_path / "settled-fallback")
    assert settled_fallback_forwards == 4 * batches + (1 + 3) * AVERAGE_CHECK_BATCHES + 3 * FIRST_CHECK_BATCHES
    assert [e["lr"] for e in settled_fallback] == [e["lr"] for e in trace]
    assert [e["features"]["iterate_average_gain"] for e in settled_fallback[1:]] == pytest.approx(
        [e["features"]["iterate_average_gain"] for e in settled[1:]], rel=1e-5, abs=1e-7)


def test_with_a_compute_loss_func_the_check_computes_the_current_losses_itself(tmp_path):
    """The Trainer pops the labels for a ``compute_loss_func`` (and for label smoothing), so the
    model's evaluation forwards carry no loss to keep: the check falls back to building the first
    batches and computing the current weights' losses on them itself, and only when it will read
    them (not with fewer than two optimizer steps since the last check)."""
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback()], max_steps=10)  # 2 evaluations of 2 batches
    trainer.compute_loss_func = lambda outputs, labels, num_items_in_batch=None: torch.nn.functional.cross_entropy(
        outputs["logits"], labels, label_smoothing=0.1)
    evaluation_forwards = []
    trainer.model.register_forward_hook(lambda module, args, out: evaluation_forwards.append(not module.training))
    with pytest.warns(RuntimeWarning):  # no per-step training loss either: the logged losses stand in
        trainer.train()
    gains = [e["features"].get("iterate_average_gain") for e in read_trace(tmp_path / "metalr_trace.jsonl")]
    assert len(gains) == 2 and isinstance(gains[1], float) and math.isfinite(gains[1])
    # the Trainer's 2 x 2, then the check's own: the current weights at the first (2), both at the second (2 + 2)
    assert sum(evaluation_forwards) == 4 + 2 + 4
    every_step = make_trainer(tmp_path / "every-step", callbacks=[MetaLRCallback()], max_steps=4, eval_steps=1,
                              logging_steps=1)
    every_step.compute_loss_func = trainer.compute_loss_func
    evaluation_forwards.clear()
    every_step.model.register_forward_hook(lambda module, args, out: evaluation_forwards.append(not module.training))
    with pytest.warns(RuntimeWarning):
        every_step.train()
    gains = [e["features"].get("iterate_average_gain") for e in read_trace(tmp_path / "every-step" / "metalr_trace.jsonl")]
    assert gains == [None] * 4  # one step between two checks: nothing to read
    assert sum(evaluation_forwards) == 4 * 2 + 2  # the Trainer's, and the current weights' at the first only


def test_with_several_eval_datasets_the_check_reads_the_monitored_ones_batches(tmp_path, monkeypatch):
    from torch.utils.data import Subset

    from hf_metalr.integration.check_batches import EvalBatchCapture

    replayed = []
    original = EvalBatchCapture.replayed_loss

    def recording(self, model, **options):
        replayed.append([kwargs["x"][0].clone() for _, kwargs, *_ in self._calls])
        return original(self, model, **options)

    monkeypatch.setattr(EvalBatchCapture, "replayed_loss", recording)
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback(metric="eval_b_loss")], max_steps=10,
                           per_device_eval_batch_size=20)
    evaluation = trainer.eval_dataset
    trainer.eval_dataset = {"a": Subset(evaluation, range(100)), "b": Subset(evaluation, range(100, 200))}
    trainer.train()
    assert len(replayed) == 1, "the second evaluation's check replays the kept batches"
    assert all(torch.equal(first_row, evaluation[100 + 20 * i]["x"]) for i, first_row in enumerate(replayed[0]))
    assert len(replayed[0]) == 4


class _ScaledPower(torch.nn.Module):
    """Returns the loss ``c * w ** x`` of a batch: its ratio between two ``w`` differs from batch to batch."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, c, x, labels):
        return {"loss": (c * self.w ** x).mean()}


def _capture_batches(rows):
    """A capture attached to a ``_ScaledPower`` (in eval mode), having kept one batch of 2 per ``(c, x)`` in ``rows``,
    and a list that records the losses of the model's later forwards."""
    from hf_metalr.integration.check_batches import EvalBatchCapture

    model = _ScaledPower().eval()
    capture = EvalBatchCapture()
    capture.attach(model)
    capture.arm()
    with torch.no_grad():
        for c, x in rows:
            model(c=torch.full((2,), c), x=torch.full((2,), x), labels=torch.zeros(2))
    forwards = []
    model.register_forward_hook(lambda module, args, out: forwards.append(float(out["loss"])))
    return model, capture, forwards


def test_a_settled_replay_reads_the_gain_on_its_heaviest_batches():
    """When the average gains less than ``SETTLED_GAIN`` on the ``FIRST_CHECK_BATCHES`` batches that
    carry the most of the current loss, the loss returned makes the caller's gain (over the current
    loss on all the kept batches) those batches' gain; when it gains more, every batch is replayed."""
    from hf_metalr.integration.check_batches import SETTLED_GAIN

    rows = [(1.0, 1.0), (3.0, 2.0), (0.5, 8.0), (2.0, 1.0)]  # current losses 1, 3, 0.5, 2: the heaviest are 3 and 2
    model, capture, forwards = _capture_batches(rows)
    current = capture.current_loss(torch.device("cpu"))
    assert current == pytest.approx(6.5 / 4)
    with torch.no_grad():
        model.w.fill_(0.95)
    heaviest = (3 * 0.95 ** 2 + 2 * 0.95) / 5
    everything = sum(c * 0.95 ** x for c, x in rows) / 6.5
    assert math.log(1 / heaviest) < SETTLED_GAIN
    assert math.log(current / capture.replayed_loss(model)) == pytest.approx(math.log(1 / heaviest))
    assert forwards == pytest.approx([3 * 0.95 ** 2, 2 * 0.95])
    assert capture.replayed_loss(model, settle=False) == pytest.approx(everything * current)
    assert len(forwards) == 6
    with torch.no_grad():
        model.w.fill_(0.5)
    forwards.clear()
    assert capture.replayed_loss(model) == pytest.approx(sum(c * 0.5 ** x for c, x in rows) / 4)
    assert len(forwards) == 4


def test_the_replay_reads_first_the_batches_that_carry_the_most_of_the_current_loss():
    """The gain on all the kept batches weighs each batch by its share of the current loss: two
    batches of tiny loss that read no gain must not settle a check whose heavy batches read a large one."""
    model, capture, forwards = _capture_batches([(0.01, 0.0), (0.01, 0.0), (1.0, 3.0), (1.0, 3.0)])  # light first
    with torch.no_grad():
        model.w.fill_(0.5)
    everything = (0.01 + 0.01 + 0.125 + 0.125) / 4
    assert capture.replayed_loss(model) == pytest.approx(everything)
    assert forwards[:2] == pytest.approx([0.125, 0.125]) and len(forwards) == 4, "the heavy batches first, then all"


def test_a_kept_loss_that_is_not_positive_makes_the_replay_read_every_batch():
    """The heaviest batches' gain bounds the whole's only when every loss is positive: with a zero
    (or negative) current loss among the kept batches nothing settles."""
    for light in (0.0, -0.5):
        model, capture, forwards = _capture_batches([(1.0, 1.0), (1.0, 1.0), (light, 1.0), (0.5, 1.0)])
        with torch.no_grad():
            model.w.fill_(0.95)  # a gain of log(1 / 0.95) on the heaviest two: it would settle
        assert capture.replayed_loss(model) == pytest.approx(0.95 * (2.5 + light) / 4)
        assert len(forwards) == 4, light


def test_the_capture_keeps_the_first_evaluation_forwards_after_a_step_and_replays_them_exactly():
    from hf_metalr.integration.check_batches import AVERAGE_CHECK_BATCHES, EvalBatchCapture

    received = []

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x, labels=None, scale=1.0):
            received.append((self.training, scale))
            return {"loss": (self.w * x).mean() * scale} if labels is not None else {"logits": x}

    model = Model()
    capture = EvalBatchCapture()
    capture.attach(model)
    batch = lambda v, n: {"x": torch.full((n,), float(v)), "labels": torch.zeros(n)}  # noqa: E731
    model.eval()
    with torch.no_grad():
        model(**batch(9, 2))  # not armed yet: not kept
    capture.arm()
    model.train()
    model(**batch(9, 2))  # a training forward
    model.eval()
    model(**batch(9, 2))  # with grad: not the Trainer's evaluation
    with torch.no_grad():
        model(x=torch.ones(2))  # no loss
        for v, n in [(1, 2), (2, 6), (3, 2), (4, 2), (5, 2), (6, 2)]:
            model(**batch(v, n), scale=2.0)
    assert capture.captured == AVERAGE_CHECK_BATCHES == 4
    assert capture.current_loss(torch.device("cpu")) == pytest.approx(2 * (1 * 2 + 2 * 6 + 3 * 2 + 4 * 2) / 12)
    capture.disarm()
    with torch.no_grad():
        model(**batch(7, 2))
    assert capture.captured == 4
    model.train()
    received.clear()
    with torch.no_grad():
        model.w.fill_(0.5)
    assert capture.replayed_loss(model) == pytest.approx(0.5 * 2 * (1 * 2 + 2 * 6 + 3 * 2 + 4 * 2) / 12)
    assert received == [(False, 2.0)] * 4 and model.training and capture.captured == 4  # the replay is not kept
    # a gain of log(1 / 0.95) on the first two batches, below SETTLED_GAIN: the replay settles there
    received.clear()
    with torch.no_grad():
        model.w.fill_(0.95)
    assert capture.replayed_loss(model) == pytest.approx(0.95 * capture.current_loss(torch.device("cpu")))
    assert received == [(False, 2.0)] * 2
    received.clear()
    assert capture.replayed_loss(model, settle=False) == pytest.approx(0.95 * capture.current_loss(torch.device("cpu")))
    assert received == [(False, 2.0)] * 4
    import copy

    capture.arm()
    replica = copy.copy(model)  # as nn.DataParallel replicates: a shallow copy that shares the module's hooks
    with torch.no_grad():
        model.eval()
        replica(**batch(1, 2))
    assert capture.captured == 0, "a replica's call is not kept (its chunk may live on another device)"
    capture.release()
    assert capture.captured == 0 and math.isnan(capture.current_loss(torch.device("cpu")))
    with torch.no_grad():
        model.eval()
        model(**batch(1, 2))
    assert capture.captured == 0, "released: nothing kept until the next arm()"
    capture.arm()
    with torch.no_grad():
        model(**batch(1, 2))
    assert capture.captured == 1
    capture.arm()
    assert capture.captured == 0
    capture.detach()
    model.eval()
    with torch.no_grad():
        model(**batch(1, 2))
    assert capture.captured == 0


def test_under_several_processes_a_token_count_weighs_its_share_of_every_process_tokens(monkeypatch):
    """A model called with ``num_items_in_batch`` returns its own tokens' loss sum over a count that
    the Trainer gathers across processes (by default): value and weight then give the loss per
    token over every process. One process weighs batches by their size, as the fallback does."""
    from hf_metalr.integration.check_batches import EvalBatchCapture

    capture = EvalBatchCapture()
    values = [torch.zeros(8, 3)]
    assert capture._weighting(values, torch.tensor(40)) == (8.0, 8.0)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 4)
    assert capture._weighting(values, torch.tensor(40)) == (40.0, 10.0)
    assert capture._weighting(values, None) == (8.0, 8.0)
    capture.attach(torch.nn.Linear(1, 1), counts_across_processes=False)  # average_tokens_across_devices=False
    assert capture._weighting(values, 40) == (40.0, 40.0)


def test_validation_loss_reads_at_most_the_cap_and_restores_the_mode(tmp_path, monkeypatch):
    import hf_metalr.integration.check_batches as check_batches

    seen = []

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x, labels=None):
            seen.append(self.training)
            return {"loss": (self.w * x).mean() + labels.float().mean()}

    batches = [{"x": torch.full((4,), float(i)), "labels": torch.zeros(4)} for i in range(10)]
    monkeypatch.setattr(check_batches, "AVERAGE_CHECK_BATCHES", 3)
    model = Model().train()
    assert check_batches.validation_loss(model, batches) == pytest.approx((0 + 1 + 2) / 3)
    assert seen == [False] * 3 and model.training
    # no loss to read: a ModelOutput without one, or batches that are tuples; NaN, and the check reads nothing
    from transformers.modeling_outputs import SequenceClassifierOutput

    class NoLoss(Model):
        def forward(self, x, labels=None):
            return SequenceClassifierOutput(logits=self.w * x)

    assert math.isnan(check_batches.validation_loss(NoLoss(), batches))
    assert math.isnan(check_batches.validation_loss(model, [(torch.ones(4), torch.zeros(4))] * 3))


def test_the_interval_average_rides_in_a_checkpoint_and_a_missing_file_skips_one_check(tmp_path):
    def callback_watching(theta):
        cb = MetaLRCallback()
        cb.controller = MetaLRController(1e-3, policy="random", seed=0)
        cb.controller.watch([theta], average_iterates=True)
        cb.controller.observe(0.5, stepped=True)  # past the first evaluation, before which the steps are not folded
        return cb

    theta = torch.nn.Parameter(torch.zeros(3))
    saving = callback_watching(theta)
    for value in (1.0, 3.0):
        with torch.no_grad():
            theta.fill_(value)
        saving.controller.after_optimizer_step()
    (tmp_path / "checkpoint-14").mkdir()
    args, state = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=None, should_save=True), SimpleNamespace(
        global_step=14, is_world_process_zero=True)
    saving._in_training = True
    saving.on_save(args, state, None)
    assert saving.state()["attributes"]["iterate_average_steps"] == 2

    resumed = callback_watching(torch.nn.Parameter(theta.detach().clone()))
    resumed._restore_iterate_average(checkpoint_folders(args, state), state, 2)
    assert resumed.controller.iterate_average.steps == 2 and not resumed._skip_average_check
    with resumed.controller.iterate_average.swapped_in():
        assert resumed.controller.iterate_average.params[0].tolist() == [2.0, 2.0, 2.0]

    elsewhere = callback_watching(torch.nn.Parameter(torch.zeros(3)))
    with pytest.warns(RuntimeWarning, match="no metalr_iterate_average.safetensors of that step.*skips the next evaluation"):
        other_folder = SimpleNamespace(output_dir=str(tmp_path / "other"), resume_from_checkpoint=None)
        elsewhere._restore_iterate_average(checkpoint_folders(other_folder, state), state, 2)
    assert elsewhere._skip_average_check and elsewhere.controller.iterate_average.steps == 0
    # a file of another interval (another run's checkpoint at the same step) is not used
    other_run = callback_watching(torch.nn.Parameter(torch.zeros(3)))
    with pytest.warns(RuntimeWarning, match="skips the next evaluation"):
        other_run._restore_iterate_average(checkpoint_folders(args, state), state, 3)
    assert other_run._skip_average_check and other_run.controller.iterate_average.steps == 0
    # the folder Trainer.train(resume_from_checkpoint=...) resumed from comes first, found on the call stack
    (tmp_path / "checkpoint-14").rename(tmp_path / "moved")

    def train(resume_from_checkpoint):
        found = callback_watching(torch.nn.Parameter(torch.zeros(3)))
        found._restore_iterate_average(checkpoint_folders(args, state), state, 2)
        return found

    assert train(str(tmp_path / "moved")).controller.iterate_average.steps == 2


def test_the_iterate_average_is_on_by_default_up_to_the_size_bar_and_can_be_forced(monkeypatch):
    import hf_metalr.integration.watched_parameters as watched_module

    model = torch.nn.Linear(10, 10)  # 110 trainable parameters
    assert watched_module.average_iterates(None, model) is True
    monkeypatch.setattr(watched_module, "AVERAGE_ITERATES_AUTO_MAX", 100)
    with pytest.warns(RuntimeWarning, match="trainable parameters; the iterate-average check would keep.*it is off"):
        assert watched_module.average_iterates(None, model) is False
    assert watched_module.average_iterates(True, model) is True
    assert watched_module.average_iterates(False, torch.nn.Linear(1, 1)) is False


def test_a_checkpoint_from_before_the_controller_kept_the_checks_last_loss_still_resumes_exactly(tmp_path):
    """Older checkpoints hold the iterate-average check's last loss beside the controller state, in
    the callback's own attributes; a resume reads it from there when the controller state lacks it."""
    options = dict(max_steps=15, save_strategy="steps", save_steps=7)
    make_trainer(tmp_path, callbacks=[MetaLRCallback()], **options).train()
    whole = read_trace(tmp_path / "metalr_trace.jsonl")
    assert "iterate_average_progress" in whole[1]["features"]  # at step 10, against the check at step 5
    state_file = tmp_path / "checkpoint-7" / "trainer_state.json"
    saved = json.loads(state_file.read_text())
    attributes = saved["stateful_callbacks"]["MetaLRCallback"]["attributes"]
    last_loss = attributes["controller_state"].pop("iterate_average")["last_loss"]
    assert last_loss > 0

    def resumed_trace(old_attribute):
        attributes.pop("iterate_average_last_loss", None)
        if old_attribute:
            attributes["iterate_average_last_loss"] = last_loss
        state_file.write_text(json.dumps(saved))
        make_trainer(tmp_path, callbacks=[MetaLRCallback()], **options).train(resume_from_checkpoint=str(tmp_path / "checkpoint-7"))
        return read_trace(tmp_path / "metalr_trace.jsonl")

    assert resumed_trace(old_attribute=True) == whole
    assert "iterate_average_progress" not in resumed_trace(old_attribute=False)[1]["features"]  # lost without either


def test_a_resume_with_the_other_direction_keeps_the_checkpoints_and_says_so(tmp_path):
    options = dict(max_steps=10, save_strategy="steps", save_steps=5, metric_for_best_model="accuracy")
    make_trainer(tmp_path, callbacks=[MetaLRCallback()], **options).train()
    resumed = make_trainer(tmp_path, callbacks=[MetaLRCallback(greater_is_better=False)], **options)
    with pytest.warns(UserWarning, match="reads 'eval_accuracy' as greater is better.*this run's settings say lower"):
        resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-5"))
    assert [e["greater_is_better"] for e in read_trace(tmp_path / "metalr_trace.jsonl")] == [True, True]


def test_a_compiled_model_gives_the_same_decisions(tmp_path, monkeypatch):
    """--torch_compile wraps the model in torch.compile's OptimizedModule (the Trainer's model_wrapped);
    the callback's hooks sit on the module the Trainer passes, and still read every step's loss and the
    evaluation batches through the compiled forward. The "eager" backend runs the same graph capture as
    inductor without compiling kernels, so the decisions match the uncompiled run's."""
    import hf_metalr.integration.callback as callback_module

    def rebuilt(*args, **kwargs):  # the fallback when the hook captured no evaluation batch
        raise AssertionError("the evaluation batches were not captured by the hook")

    monkeypatch.setattr(callback_module, "first_batches", rebuilt)

    def decisions(compiled):
        callback = MetaLRCallback()
        options = dict(torch_compile=True, torch_compile_backend="eager") if compiled else {}
        trainer = make_trainer(tmp_path / str(compiled), callbacks=[callback], max_steps=20, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no fallback to the logged losses
            trainer.train()
        assert callback._tap.seen_any
        wrapped = type(trainer.model_wrapped).__name__
        return wrapped, [(t["action"], t["applied"], t["value"], t["features"]["train_loss_noise"],
                          t["features"].get("iterate_average_gain")) for t in read_trace(tmp_path / str(compiled))]

    plain_wrapper, plain = decisions(False)
    compiled_wrapper, compiled = decisions(True)
    assert compiled_wrapper == "OptimizedModule" != plain_wrapper
    assert len(compiled) == 4 and compiled[-1][-1] is not None
    assert all(c[3] > 0 for c in compiled)  # every step's loss was read: the noise of 5 of them
    assert [c[:2] for c in compiled] == [p[:2] for p in plain]
    assert compiled[0][-1] is None is plain[0][-1]  # the first evaluation reads no iterate average
    readings = [value for c in compiled for value in c[2:] if value is not None]
    assert readings == pytest.approx([value for p in plain for value in p[2:] if value is not None], rel=1e-5)


def test_a_resume_that_finds_its_average_checks_whatever_an_earlier_train_left(tmp_path):
    """A resume that could not find its interval's iterate average skips the next check. Should that
    run stop before its next evaluation, a later resume with the same callback that does find the
    average checks at its next decision, as the uninterrupted run does (each train() starts afresh)."""
    def run(callback, **kwargs):
        trainer = make_trainer(tmp_path, callbacks=[callback], max_steps=15, save_strategy="steps", save_steps=7)
        trainer.train(**kwargs)
        return [(t["global_step"], t["features"].get("iterate_average_gain")) for t in read_trace(tmp_path)]

    uninterrupted = run(MetaLRCallback())
    assert (tmp_path / "checkpoint-7" / "metalr_iterate_average.safetensors").is_file()
    callback = MetaLRCallback()
    callback._skip_average_check = True  # as left by a resume that found no average and stopped early
    resumed = run(callback, resume_from_checkpoint=str(tmp_path / "checkpoint-7"))
    assert [step for step, _ in resumed] == [step for step, _ in uninterrupted] == [5, 10, 15]
    assert uninterrupted[1][1] is not None and resumed[1][1] == pytest.approx(uninterrupted[1][1])


def test_accumulation_clipping_and_the_best_model_at_the_end_run_as_with_the_trainer_alone(tmp_path):
    """The flags of a typical fine-tuning script together: gradient accumulation (a decision's steps are
    optimizer steps), clipping, checkpoints at each evaluation with a limit, and the best model loaded at
    the end by ``metric_for_best_model``, which the callback then acts on."""
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback()], learning_rate=3e-4, gradient_accumulation_steps=2,
                           max_grad_norm=0.5, save_strategy="steps", save_steps=5, save_total_limit=2,
                           load_best_model_at_end=True, metric_for_best_model="accuracy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    trace = read_trace(tmp_path / "metalr_trace.jsonl")
    assert [entry["global_step"] for entry in trace] == list(range(5, 41, 5))
    assert {entry["metric"] for entry in trace} == {"eval_accuracy"} and all(e["greater_is_better"] for e in trace)
    assert trainer.state.best_metric == max(entry["value"] for entry in trace)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(trace[-1]["lr"])
    assert any(entry["applied"] != 1.0 for entry in trace), "the controller moved the LR"
    saved = json.loads((Path(trainer.state.best_model_checkpoint) / "trainer_state.json").read_text())
    assert "metalr" in json.dumps(saved), "the controller's state rides in the best checkpoint too"


def test_the_callback_reads_heavy_ball_momentum_from_the_trainers_optimizer(tmp_path):
    """optim="sgd" with momentum: the trace's features say heavy_ball (the gate then needs a worse metric
    to cut on an opposed gradient); the Trainer's AdamW: no such key."""
    for name, extra in (("sgd", dict(optim="sgd", optim_args="momentum=0.9", learning_rate=0.05)), ("adamw", {})):
        callback = MetaLRCallback()
        trainer = make_trainer(tmp_path / name, callbacks=[callback], max_steps=15, **extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train()
        trace = read_trace(tmp_path / name / "metalr_trace.jsonl")
        assert callback.controller.heavy_ball == (name == "sgd")
        assert [entry["features"].get("heavy_ball") for entry in trace] == [1.0 if name == "sgd" else None] * 3


def test_every_reason_to_start_over_has_the_callbacks_warning():
    from hf_metalr.controller.controller import START_OVER_REASONS
    from hf_metalr.integration import callback

    assert set(callback._START_OVER_WARNINGS) == set(START_OVER_REASONS) == {"diverged", "long plateau", "wrecked"}
