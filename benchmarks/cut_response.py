"""What a halving of the LR does to the training loss right after it, against the same run without it.

A trial cut (halve the LR for one evaluation interval, keep it only if it pays) needs a test that
the run can read by itself: there is no second run to compare with. The gain of the interval
after the cut against the interval before it does not work (docs/controller.md, "Tried first"):
runs slow down by themselves, and one evaluation's noise is as large as the effect. This measures
a test with many more samples: the per-step training losses after the cut against the straight
line fitted to the interval before it (in log loss), as a z score of their mean residual. At an LR
far too high a cut should drop the loss at once, below the line; at a good LR it should slow the
descent, above it.

For each task, LR multiplier and seed it trains the constant schedule through the standard
Trainer twice on the same batches, up to ``--at`` evaluation intervals and one interval on: once
as it is, once with the LR halved from step ``at x interval`` on. It prints, per seed, the z score
with the cut and without it (the second is the test's null: what the line's bend reads by itself),
and the truth: the mean log training loss of the interval after the cut, and its end's validation
loss, with the cut minus without (negative: the cut helped). Nothing acts on it.

    python benchmarks/cut_response.py --task char-lm --multipliers 1,10 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
from transformers import TrainerCallback

from hf_metalr.compare.runner import build_trainer, training_arguments
from hf_metalr.tasks import get_task


class HalveAt(TrainerCallback):
    """Halves every param group's LR, and the scheduler's base LRs, after optimizer step ``step``."""

    def __init__(self, step: int | None):
        self.step = step

    def on_step_end(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        if self.step is not None and state.global_step == self.step:
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
            lr_scheduler.base_lrs = [lr * 0.5 for lr in lr_scheduler.base_lrs]


def branch(task, multiplier: float, seed: int, cut_at: int | None, steps: int, interval: int):
    """(per-step training losses by step, the validation loss at the last step)."""
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = build_trainer(task, "constant", seed, Path(out), callbacks=[HalveAt(cut_at)],
                                lr=task.learning_rate * multiplier, max_steps=steps, logging_steps=1,
                                eval_steps=interval)
        trainer.train()
    losses = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    evals = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    return losses, evals[-1]


def trend_z(losses: dict[int, float], cut_at: int, window: int) -> float:
    """The z score of the mean residual of the log losses of steps ``cut_at + 1 .. cut_at + window``
    from the line fitted to those of ``cut_at - window + 1 .. cut_at``: the residual's mean over its
    standard error, the steps' scatter about the line and the line's own error where it is
    extrapolated to (independent steps assumed)."""
    before = np.array([[s, math.log(losses[s])] for s in range(cut_at - window + 1, cut_at + 1)])
    after = np.array([[s, math.log(losses[s])] for s in range(cut_at + 1, cut_at + window + 1)])
    slope, intercept = np.polyfit(before[:, 0], before[:, 1], 1)
    spread = np.std(before[:, 1] - (intercept + slope * before[:, 0]), ddof=2)
    residual = after[:, 1] - (intercept + slope * after[:, 0])
    centre = before[:, 0].mean()
    line_error = 1 / len(before) + (after[:, 0].mean() - centre) ** 2 / ((before[:, 0] - centre) ** 2).sum()
    return float(residual.mean() / (spread * math.sqrt(1 / len(after) + line_error)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="char-lm", help="an embedded task, or path/to/file.py:TaskClass")
    p.add_argument("--multipliers", default="1,10", help="initial LR = each of these x the task's good LR")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--at", type=int, default=2, help="the cut comes after this many evaluation intervals")
    a = p.parse_args(argv)
    task = get_task(a.task)
    name = a.task.rpartition(":")[2] or a.task
    for multiplier in map(float, a.multipliers.split(",")):
        cells = []
        for seed in map(int, a.seeds.split(",")):
            interval = training_arguments(task, "constant", seed, Path(tempfile.gettempdir())).eval_steps
            cut_at, steps = a.at * interval, (a.at + 1) * interval
            plain, plain_eval = branch(task, multiplier, seed, None, steps, interval)
            halved, halved_eval = branch(task, multiplier, seed, cut_at, steps, interval)
            after = range(cut_at + 1, steps + 1)
            truth = np.mean([math.log(halved[s]) - math.log(plain[s]) for s in after])
            cells.append(f"s{seed} z cut {trend_z(halved, cut_at, interval):+.1f} none {trend_z(plain, cut_at, interval):+.1f}"
                         f" | truth train {truth:+.3f} eval {math.log(halved_eval / plain_eval):+.3f}")
        print(f"{name} x{multiplier:g} (cut after step {cut_at}, {interval}-step intervals): " + " || ".join(cells),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
