"""``CurveRecorder``: what one comparison run measures, collected from Trainer events."""

from __future__ import annotations

import math
import time

from transformers import TrainerCallback

__all__ = ["CurveRecorder"]


class CurveRecorder(TrainerCallback):
    """Records the LR of param group 0 at every optimizer step (for Prodigy, the step size it
    applies: ``lr * d``, its own estimate), every evaluation (with seconds since train begin) and every logged training loss. A non-finite training loss or monitored
    metric marks the run diverged and stops training."""

    def __init__(self, monitored: str = "eval_loss"):
        self.monitored = monitored
        self.lr_curve: list[list[float]] = []
        self.evals: list[dict] = []
        self.train_loss: list[list[float]] = []
        self.diverged = False
        self._start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        step = state.global_step + 1
        group = optimizer.param_groups[0]
        lr = group["lr"] * group.get("d", 1.0)
        self.lr_curve.append([step, step / state.max_steps * state.num_train_epochs, lr])

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.train_loss.append([state.global_step, state.epoch, logs["loss"]])
            self._check(logs["loss"], control)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self._start is None:  # an evaluate() outside training
            return
        entry = {"step": state.global_step, "epoch": state.epoch, "seconds": time.perf_counter() - self._start}
        entry.update({k: v for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, (int, float))})
        self.evals.append(entry)
        self._check(metrics.get(self.monitored), control)

    def on_train_end(self, args, state, control, **kwargs):
        self._start = None

    def _check(self, value, control):
        if value is not None and not math.isfinite(value):
            self.diverged = True
            control.should_training_stop = True
