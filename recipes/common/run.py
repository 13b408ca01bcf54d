"""The run of a recipe: train, save, evaluate on validation and test, write ``all_results.json``."""

from __future__ import annotations

import logging
from pathlib import Path

from hf_metalr import TRACE_NAME, MetaLRCallback, read_trace

logger = logging.getLogger("recipes")


def train_evaluate_test(trainer, splits) -> dict:
    """Train, save the model, evaluate on validation and test, write ``all_results.json``.

    Returns the combined metrics. ``all_results.json`` gathers the ``train_``, ``eval_`` and
    ``test_`` metrics, as in transformers' example scripts, and with ``MetaLRCallback`` the number
    of its decisions (``train_metalr_decisions``).
    """
    args = trainer.args
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model()
    metrics = dict(result.metrics, train_samples=len(splits["train"]))
    trace = Path(args.output_dir) / TRACE_NAME
    with_controller = any(isinstance(cb, MetaLRCallback) for cb in trainer.callback_handler.callbacks)
    if with_controller and trainer.is_world_process_zero() and trace.exists():
        metrics["train_metalr_decisions"] = len(read_trace(trace))
        logger.info("the controller's decisions: %s (as a table: hf-metalr trace %s)", trace, args.output_dir)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    everything = dict(metrics)

    metrics = trainer.evaluate()
    metrics["eval_samples"] = len(splits["validation"])
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    everything.update(metrics)

    if "test" in splits:
        metrics = trainer.evaluate(splits["test"], metric_key_prefix="test")
        metrics["test_samples"] = len(splits["test"])
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)
        everything.update(metrics)
    else:
        logger.warning("no test split: skipped the test evaluation")
    return everything
