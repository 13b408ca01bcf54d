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
import sys
from pathlib import Path

from hf_metalr.controller.gate import DISTANCE_OVERSHOOT, MOVED, NO_DISTANCE, lr_over_distance
from hf_metalr.tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from first_interval_alignment import AlignmentFeed  # noqa: E402


class DistanceProbe(AlignmentFeed):
    """Reads ``(lr_over_distance, param_drift)`` at the end of each of the first ``evals`` evaluation
    intervals, then stops training."""

    def __init__(self, evals: int):
        super().__init__()
        self.evals, self.readings = evals, []

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if state.global_step % self.interval:
            return
        ratio = lr_over_distance(optimizer.param_groups[0]["lr"], self.alignment.distance.value())
        self.readings.append((ratio, self.alignment.drift()))
        if len(self.readings) >= self.evals:
            control.should_training_stop = True


def readings(task, multiplier: float, seed: int, evals: int) -> list[tuple[float, float]]:
    """``(lr_over_distance, param_drift)`` at the end of each of the first ``evals`` intervals."""
    probe = DistanceProbe(evals)
    probe.train(task, multiplier, seed)
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
