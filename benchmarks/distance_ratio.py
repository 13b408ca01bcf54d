"""What the distance check reads along constant-LR runs: ``lr_over_distance`` and ``param_drift``.

The gate cuts when the steps are too long by two measures at once (``past_the_distance``): the
parameters have moved by their starting norm (``param_drift >= MOVED``) and the LR is
``DISTANCE_OVERSHOOT`` times the distance estimate or more (``lr_over_distance``: the LR over
D-adaptation's lower bound on the distance to a solution, which Prodigy takes as Adam's step; see
``hf_metalr/controller/distance.py``). This trains the constant schedule through the standard
Trainer with the controller's own ``GradientAlignment`` (its sketch, its drift, its distance
estimate) and prints both at the end of each evaluation interval, ``*`` where both hold. Nothing
acts on it.

    python benchmarks/distance_ratio.py --task char-lm --multipliers 0.1,1,10 --seeds 0,1,2 --evals 12
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from transformers import TrainerCallback

from hf_metalr.compare.runner import build_trainer
from hf_metalr.controller.alignment import GradientAlignment
from hf_metalr.controller.controller import DISTANCE_OVERSHOOT, MOVED, NO_DISTANCE
from hf_metalr.tasks import get_task


class DistanceProbe(TrainerCallback):
    """Feeds a ``GradientAlignment`` at every optimizer step and reads ``(lr_over_distance,
    param_drift)`` at the end of each of the first ``evals`` evaluation intervals, then stops."""

    def __init__(self, evals: int):
        self.evals, self.alignment, self.interval, self.readings = evals, None, None, []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.alignment = GradientAlignment([p for p in model.parameters() if p.requires_grad])
        self.interval = args.eval_steps

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.alignment.before_step()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.alignment.after_step()

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if state.global_step % self.interval:
            return
        estimate = self.alignment.distance.value()
        lr = optimizer.param_groups[0]["lr"]
        self.readings.append((min(lr / estimate, NO_DISTANCE) if estimate > 0 else NO_DISTANCE, self.alignment.drift()))
        if len(self.readings) >= self.evals:
            control.should_training_stop = True


def readings(task, multiplier: float, seed: int, evals: int) -> list[tuple[float, float]]:
    """``(lr_over_distance, param_drift)`` at the end of each of the first ``evals`` intervals."""
    probe = DistanceProbe(evals)
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = build_trainer(task, "constant", seed, Path(out), callbacks=[probe], lr=task.learning_rate * multiplier)
        trainer.args.eval_strategy = "no"  # the probe reads at the evaluation steps and stops
        trainer.train()
    return probe.readings


def cell(ratio: float, drift: float) -> str:
    both = "*" if ratio >= DISTANCE_OVERSHOOT and drift >= MOVED else ""
    return f"{'inf' if ratio >= NO_DISTANCE else f'{ratio:.3g}'}/{drift:.2f}{both}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="char-lm", help="an embedded task, or path/to/file.py:TaskClass")
    p.add_argument("--multipliers", default="0.1,1,10", help="initial LR = each of these x the task's good LR")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--evals", type=int, default=12)
    a = p.parse_args(argv)
    task = get_task(a.task)
    name = a.task.rpartition(":")[2] or a.task
    for multiplier in map(float, a.multipliers.split(",")):
        rows = [" ".join(cell(*r) for r in readings(task, multiplier, seed, a.evals)) for seed in map(int, a.seeds.split(","))]
        print(f"{name} x{multiplier:g} lr_over_distance/param_drift by interval (* both past): " + " | ".join(rows),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
