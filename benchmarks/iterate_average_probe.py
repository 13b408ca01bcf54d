"""What the iterate-average check reads at a constant LR, by task and LR band.

Runs the constant schedule through the standard Trainer at ``--multipliers`` x the task's good LR
and, at every evaluation, measures what ``MetaLRCallback``'s check measures (the same
``IterateAverage`` and the same loss over the eval dataloader's first batches, all 4 of them, where
the callback's replay may settle on the 2 that carry the most loss): ``gain``, the log of the current
iterate's validation loss over the loss of the average of the iterates since the last
evaluation, and ``progress``, the log of the last evaluation's loss over the current one. The
controller reads the steps as bouncing around a valley floor where ``gain >= AVERAGE_GAIN`` and
``gain > progress`` (marked ``*``). Nothing acts on it here: the LR stays constant.

``--reads-per-interval N`` (N > 1) also reads the check at ``N - 1`` points inside each interval
after the first evaluation (every ``eval_steps / N`` optimizer steps), against the average since the
last evaluation and with the progress since it, without starting a new interval: what a check
between evaluations would read. Those reads appear in brackets before the evaluation's own.

    python benchmarks/iterate_average_probe.py --task digits --multipliers 0.1,1,10 --seeds 0
    python benchmarks/iterate_average_probe.py --task digits --multipliers 10 --seeds 0,1 --reads-per-interval 4
"""

from __future__ import annotations

import argparse
import math
import tempfile
import warnings
from pathlib import Path

from transformers import TrainerCallback

from hf_metalr.compare.runner import build_trainer
from hf_metalr.controller.gate import AVERAGE_GAIN, bouncing
from hf_metalr.controller.iterate_average import IterateAverage
from hf_metalr.integration.check_batches import validation_loss
from hf_metalr.tasks import get_task


class Probe(TrainerCallback):
    """Folds in the parameters after every optimizer step; at every evaluation records
    ``(gain, progress, the task's metric, [(step in the interval, gain, progress) read inside it])``."""

    def __init__(self, metric: str, reads_per_interval: int = 1):
        self.metric, self.average, self.rows = metric, None, []
        self.reads_per_interval, self.inside, self.every = reads_per_interval, [], None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.average = IterateAverage(model.parameters())
        self.every = max(1, args.eval_steps // self.reads_per_interval) if self.reads_per_interval > 1 else None

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.average.after_step()

    def on_step_end(self, args, state, control, model=None, eval_dataloader=None, **kwargs):
        steps, last = self.average.steps, self.average.last_loss
        if self.every is None or last is None or steps < 2 or steps % self.every or steps >= args.eval_steps:
            return
        current = validation_loss(model, eval_dataloader)
        with self.average.swapped_in():
            averaged = validation_loss(model, eval_dataloader)
        self.inside.append((steps, math.log(current / averaged), math.log(last / current)))

    def on_log(self, args, state, control, logs=None, model=None, eval_dataloader=None, **kwargs):
        if logs and self.metric in logs:
            gain = self.average.gain(lambda: validation_loss(model, eval_dataloader))
            self.rows.append((gain, self.average.progress, logs[self.metric], self.inside))
            self.inside = []


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="digits")
    p.add_argument("--multipliers", default="0.1,1,10", help="initial LR = each of these x the task's good LR")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=None, help="the task's own budget if not given")
    p.add_argument("--reads-per-interval", type=int, default=1,
                   help="N > 1: also read the check N - 1 times inside each interval, in brackets (step: gain/progress)")
    a = p.parse_args(argv)
    task = get_task(a.task)
    key = f"eval_{task.metric}"
    print(f"{a.task}: per evaluation, gain / progress (log, * = the check would read a bounce: gain >= {AVERAGE_GAIN:g} "
          f"and gain > progress) and {task.metric}")
    for multiplier in map(float, a.multipliers.split(",")):
        for seed in map(int, a.seeds.split(",")):
            probe = Probe(key, a.reads_per_interval)
            with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trainer = build_trainer(task, "constant", seed, Path(out), callbacks=[probe],
                                        lr=task.learning_rate * multiplier, epochs=a.epochs)
                trainer.train()
            cells = []
            for gain, progress, value, inside in probe.rows:
                mark = "*" if bouncing({"iterate_average_gain": gain, "iterate_average_progress": progress}) else " "
                text = ""
                if inside:
                    reads = [f"{step}:{g:+.2f}/{pr:+.2f}" + ("*" if bouncing({"iterate_average_gain": g,
                                                                             "iterate_average_progress": pr}) else "")
                             for step, g, pr in inside]
                    text = "[" + " ".join(reads) + "] "
                text += "-" if gain is None else f"{gain:+.2f}"
                text += "/" + ("-" if progress is None else f"{progress:+.2f}")
                cells.append(f"{text}{mark} {value:.3f}")
            print(f"x{multiplier:g} seed {seed}: " + "  ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
