"""One comparison run: a task, a schedule, a seed, through the standard ``Trainer``.

Every schedule gets, for a given seed, the same initial weights (``task.model(seed)``), the same
data order (``TrainingArguments.seed``) and the same evaluation cadence. The controller and the
metric-driven baselines see the validation split only; final numbers are on test.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

from ..baselines import attach_schedule, schedule_training_overrides
from ..tasks import Task
from .measures import lr_stability, time_to_threshold
from .recorder import CurveRecorder

__all__ = ["build_trainer", "run_one", "training_arguments"]


def training_arguments(task: Task, schedule: str, seed: int, output_dir: Path, *, lr: float | None = None,
                       epochs: int | None = None, **overrides):
    from transformers import TrainingArguments

    data = task.load()
    steps_per_epoch = math.ceil(len(data.train) / task.batch_size)
    eval_steps = max(1, math.ceil(steps_per_epoch / task.evals_per_epoch))
    kwargs = dict(
        output_dir=str(output_dir),
        learning_rate=lr if lr is not None else task.learning_rate,
        num_train_epochs=epochs if epochs is not None else task.epochs,
        per_device_train_batch_size=task.batch_size,
        per_device_eval_batch_size=max(64, task.batch_size),
        weight_decay=1e-5,
        eval_strategy="steps",
        eval_steps=eval_steps,
        logging_steps=eval_steps,
        save_strategy="no",
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        seed=seed,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        log_level="error",
        dataloader_num_workers=0,
        logging_nan_inf_filter=False,  # a non-finite training loss is logged as it is, so the recorder sees a
        # divergence (the default logs the running average in its place)
    )
    kwargs.update(schedule_training_overrides(schedule))
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def build_trainer(task: Task, schedule: str, seed: int, output_dir: Path, *, metalr_options: dict | None = None,
                  callbacks=(), **arg_overrides):
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    data = task.load()
    trainer = Trainer(
        model=task.model(seed),
        args=training_arguments(task, schedule, seed, output_dir, **arg_overrides),
        train_dataset=data.train,
        eval_dataset=data.validation,
        compute_metrics=task.compute_metrics,
        data_collator=task.data_collator(),
        callbacks=list(callbacks),
    )
    for console_printer in (PrinterCallback, ProgressCallback):  # the comparison prints one line per run instead
        trainer.remove_callback(console_printer)
    attach_schedule(trainer, schedule, **(metalr_options or {}))
    return trainer


def run_one(task: Task, schedule: str, seed: int, output_dir: Path, *, lr: float | None = None,
            epochs: int | None = None, metalr_options: dict | None = None, extra_callbacks=(), **arg_overrides) -> dict:
    """Train, evaluate on test, and return the run's record (the ``runs`` entry of results.json).
    ``extra_callbacks`` and ``arg_overrides`` (``TrainingArguments`` fields) are for studies beyond
    the named schedules, e.g. ``MetaLRCallback`` on the ``linear`` schedule with warmup."""
    start = time.perf_counter()
    recorder = CurveRecorder()
    trainer = build_trainer(task, schedule, seed, output_dir, metalr_options=metalr_options,
                            callbacks=[recorder, *extra_callbacks], lr=lr, epochs=epochs, **arg_overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a divergence is recorded, not shouted
        trainer.train()
        prediction = trainer.predict(task.load().test, metric_key_prefix="test")
    key = f"eval_{task.metric}"
    losses = [e["eval_loss"] for e in recorder.evals if "eval_loss" in e and math.isfinite(e["eval_loss"])]
    return {
        "schedule": schedule,
        "seed": seed,
        "status": "diverged" if recorder.diverged else "ok",
        "wall_seconds": time.perf_counter() - start,
        "evals": recorder.evals,
        "lr_curve": recorder.lr_curve,
        "train_loss": recorder.train_loss,
        "threshold": time_to_threshold(recorder.evals, key, task.threshold, task.greater_is_better),
        "test": {name: prediction.metrics.get(f"test_{name}") for name in task.test_metrics},
        "best_val_loss": min(losses) if losses else None,
        "lr_stability": lr_stability(recorder.lr_curve, recorder.evals),
    }
