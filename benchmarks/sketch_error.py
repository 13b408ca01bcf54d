"""How far the gradient alignment's coordinate sketch reads from the alignment on every coordinate.

``GradientAlignment`` reads a fixed random sketch of at most 8,192 coordinates, drawn from the
controller's seed: ``8192 / WINDOW`` windows of ``WINDOW`` consecutive coordinates in parameter
tensors picked with probability proportional to their size. The gate compares what it reads
with fixed bars (a raise at the first evaluation needs ``grad_alignment >= 0.1``), so its sampling
error matters. This trains the constant schedule through the standard Trainer up to the first
evaluation (without evaluating) and reads the first interval's ``grad_alignment`` on every
coordinate and on the sketches of ``--sketch-seeds`` seeds, for each window length in
``--windows`` (32 is the shipped one, 256 the one before it; the module constant is set for the draw and put back).
Per run it prints the exact value, the sketches' range and standard deviation, and how many
parameter tensors a sketch reads on average (one ``index_select`` each per read: the per-step
cost). Nothing acts on it.

    python benchmarks/sketch_error.py --task digits --multiplier 10 --seeds 0,5,9 --windows 256,32
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings
from pathlib import Path

from transformers import TrainerCallback

import hf_metalr.controller.alignment as alignment
from hf_metalr.compare.runner import build_trainer
from hf_metalr.tasks import get_task


class SketchProbe(TrainerCallback):
    """Feeds one exact ``GradientAlignment`` (every coordinate) and one per (window, sketch seed)
    at every optimizer step; takes their windows at the first evaluation's step and stops."""

    def __init__(self, windows: list[int], sketch_seeds: list[int]):
        self.windows, self.sketch_seeds = windows, sketch_seeds
        self.exact, self.sketches, self.read, self.parameters = None, {}, None, 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        params = [p for p in model.parameters() if p.requires_grad]
        self.parameters = sum(p.numel() for p in params)
        self.exact = alignment.GradientAlignment(params, sketch_size=self.parameters)
        shipped = alignment.WINDOW
        try:
            for window in self.windows:
                alignment.WINDOW = window
                self.sketches[window] = [alignment.GradientAlignment(params, seed=s) for s in self.sketch_seeds]
        finally:
            alignment.WINDOW = shipped
        self.interval = args.eval_steps

    def _all(self):
        return [self.exact] + [a for sketches in self.sketches.values() for a in sketches]

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        for a in self._all():
            a.before_step()

    def on_optimizer_step(self, args, state, control, **kwargs):
        for a in self._all():
            a.after_step()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.interval:
            self.read = {"exact": self.exact.take().ratio,
                         **{w: [a.take().ratio for a in sketches] for w, sketches in self.sketches.items()}}
            control.should_training_stop = True


def first_interval(task, multiplier: float, seed: int, windows: list[int], sketch_seeds: list[int]) -> SketchProbe:
    probe = SketchProbe(windows, sketch_seeds)
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = build_trainer(task, "constant", seed, Path(out), callbacks=[probe], lr=task.learning_rate * multiplier)
        trainer.args.eval_strategy = "no"  # the probe stops at the first evaluation's step
        trainer.train()
    return probe


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="digits")
    p.add_argument("--multiplier", type=float, default=10.0, help="initial LR = this x the task's good LR")
    p.add_argument("--seeds", default="0", help="training seeds")
    p.add_argument("--sketch-seeds", default="0,1,2,3,4,5,6,7")
    p.add_argument("--windows", default="256,32", help="window lengths to draw sketches with (32: the shipped one, 256: the one before)")
    a = p.parse_args(argv)
    task = get_task(a.task)
    windows = [int(w) for w in a.windows.split(",")]
    sketch_seeds = [int(s) for s in a.sketch_seeds.split(",")]
    for seed in map(int, a.seeds.split(",")):
        probe = first_interval(task, a.multiplier, seed, windows, sketch_seeds)
        cells = []
        for window in windows:
            reads = probe.read[window]
            tensors = statistics.mean(len(s._owners) for s in probe.sketches[window])
            spread = statistics.stdev(reads) if len(reads) > 1 else 0.0
            cells.append(f"window {window}: {min(reads):+.3f} to {max(reads):+.3f}, sd {spread:.3f}, "
                         f"{tensors:.0f} tensors read")
        print(f"{a.task} x{a.multiplier:g} seed {seed} ({probe.parameters} parameters in "
              f"{len(probe.exact._owners)} tensors): every coordinate {probe.read['exact']:+.3f} | " + " | ".join(cells),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
