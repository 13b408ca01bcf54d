"""What the gradient alignment reads in each half of the first evaluation interval, at a constant LR.

A raise at the first evaluation needs a clear undershoot (``grad_alignment >= UNDERSHOOT_ALIGNMENT``
with ``grad_alignment_t >= 2``), read over the whole first interval. A run's first steps from its
initial weights might point the same way at any LR, which would inflate that reading at an LR far
too high; if so, its second half would read lower than its first. This trains the constant schedule
through the standard Trainer up to the first evaluation (without evaluating) and prints, per seed,
``grad_alignment`` (the ratio of sums) and its t over the whole interval, its first half and its
second half, with the controller's own ``GradientAlignment``. Nothing acts on it.

    python benchmarks/first_interval_alignment.py --task digits --multipliers 0.1,1,10 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from transformers import TrainerCallback

from hf_metalr.compare.runner import build_trainer
from hf_metalr.controller.alignment import AlignmentWindow, GradientAlignment
from hf_metalr.tasks import get_task


class AlignmentFeed(TrainerCallback):
    """Builds a ``GradientAlignment`` over the trainable parameters at train begin and feeds it at
    every optimizer step; ``interval`` is the run's evaluation interval. A probe subclasses it and
    reads the alignment in ``on_step_end``."""

    def __init__(self):
        self.alignment, self.interval = None, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.alignment = GradientAlignment([p for p in model.parameters() if p.requires_grad])
        self.interval = args.eval_steps

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.alignment.before_step()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.alignment.after_step()

    def train(self, task, multiplier: float, seed: int, good_lr: float | None = None, **arg_overrides) -> None:
        """Train ``task``'s constant schedule at ``multiplier`` x its good LR (``good_lr``, else the
        task's), this probe fed, without evaluating (the probe reads at the evaluation steps and stops
        the run); ``arg_overrides`` are ``TrainingArguments`` fields (an ``optim``, say)."""
        with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lr = (good_lr or task.learning_rate) * multiplier
            trainer = build_trainer(task, "constant", seed, Path(out), callbacks=[self], lr=lr, **arg_overrides)
            trainer.args.eval_strategy = "no"
            trainer.train()


class HalvesProbe(AlignmentFeed):
    """Takes the alignment's window half-way through the first evaluation interval and at its end,
    then stops training."""

    def __init__(self):
        super().__init__()
        self.windows = []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in (self.interval // 2, self.interval):
            self.windows.append(self.alignment.take())
        if state.global_step >= self.interval:
            control.should_training_stop = True


def halves(task, multiplier: float, seed: int) -> tuple[AlignmentWindow, AlignmentWindow, AlignmentWindow, int]:
    """(whole first interval, first half, second half, the interval's optimizer steps)."""
    probe = HalvesProbe()
    probe.train(task, multiplier, seed)
    first, second = probe.windows
    whole = AlignmentWindow()
    whole.add(first)
    whole.add(second)
    return whole, first, second, probe.interval


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="digits")
    p.add_argument("--multipliers", default="0.1,1,10", help="initial LR = each of these x the task's good LR")
    p.add_argument("--seeds", default="0,1,2")
    a = p.parse_args(argv)
    task = get_task(a.task)
    for multiplier in map(float, a.multipliers.split(",")):
        cells = []
        for seed in map(int, a.seeds.split(",")):
            whole, first, second, interval = halves(task, multiplier, seed)
            cells.append(f"s{seed} all {whole.ratio:+.3f} (t {whole.t:+.1f}) 1st {first.ratio:+.3f} (t {first.t:+.1f}) "
                         f"2nd {second.ratio:+.3f} (t {second.t:+.1f})")
        print(f"{a.task} x{multiplier:g} (first interval {interval} steps): " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
