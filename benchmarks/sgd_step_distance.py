"""Under SGD with momentum, the distance check's reading with the step in place of the LR.

With Adam the LR is each coordinate's step, and the distance check compares it with D-adaptation's
estimate (``hf_metalr/controller/distance.py``); with SGD the check is off, because the step is the
LR times the gradient (and momentum's sum of them). Its analogue there is the mean step per sketched
coordinate, ``|θ_before - θ_after|`` averaged over the interval's optimizer steps, over the estimate:
``step_over_distance``. This trains the constant schedule on SGD with momentum 0.9 (the Trainer's
``optim="sgd"``, as ``benchmarks/unseen_families.py --optimizer sgd`` does) at 0.1x/1x/10x the
family's SGD grid pick, read from that sweep's runs, with the controller's own ``GradientAlignment``,
and prints at the end of each evaluation interval ``step_over_distance/grad_alignment/grad_alignment_t``
("inf": no positive estimate yet). Nothing acts on it.

    python benchmarks/sgd_step_distance.py --tasks gru-series,segformer-shapes --seeds 0,1 --evals 10
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import unseen_families  # noqa: E402
from first_interval_alignment import AlignmentFeed  # noqa: E402

SGD_SWEEP = Path(__file__).resolve().parent / "results" / "unseen_families_sgd"


class StepDistanceProbe(AlignmentFeed):
    """Reads ``(step_over_distance, grad_alignment, grad_alignment_t)`` at the end of each of the first
    ``evals`` evaluation intervals, then stops training."""

    def __init__(self, evals: int):
        super().__init__()
        self.evals, self.readings, self._steps = evals, [], []

    def on_optimizer_step(self, args, state, control, **kwargs):
        super().on_optimizer_step(args, state, control, **kwargs)
        if self.alignment._descent is not None:
            self._steps.append(float(self.alignment._descent.abs().mean()))

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.interval:
            return
        window, distance = self.alignment.take(), self.alignment.distance.value()
        step = sum(self._steps) / len(self._steps) if self._steps else 0.0
        self._steps = []
        self.readings.append((step / distance if distance > 0 else math.inf, window.ratio, window.t))
        if len(self.readings) >= self.evals:
            control.should_training_stop = True


def sgd_good_lr(task, sweep: Path = SGD_SWEEP) -> float:
    """The family's SGD pick (``unseen_families.pick``, as ``good_lr`` made it), read from the sweep's runs: a
    ``ValueError`` for a family the sweep has not picked for."""
    done = unseen_families._runs(sweep / "runs.jsonl")
    finals = {lr: done.get((task.name, lr, 0, "constant", "sgd"), {}).get("final_val_loss")
              for lr in unseen_families.SGD_LR_GRID}
    if None in finals.values():
        raise ValueError(f"{task.name} has no SGD pick in {sweep}: run benchmarks/unseen_families.py --optimizer sgd "
                         f"--tasks {task.name} --out {sweep} first")
    return unseen_families.pick(finals)


def readings(task, multiplier: float, seed: int, evals: int, good_lr: float) -> list[tuple[float, float, float]]:
    probe = StepDistanceProbe(evals)
    probe.train(task, multiplier, seed, good_lr=good_lr, **unseen_families.optimizer_arguments("constant", "sgd"))
    return probe.readings


def cell(ratio: float, alignment: float, t: float) -> str:
    return f"{'inf' if math.isinf(ratio) else f'{ratio:.2g}'}/{alignment:+.2f}/{t:+.1f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(sorted({row["task"] for row in unseen_families._runs(
        SGD_SWEEP / "runs.jsonl").values()})), help="families of benchmarks/unseen_families.py in the SGD sweep")
    p.add_argument("--multipliers", default="0.1,1,10", help="LR = each of these x the family's SGD pick")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--evals", type=int, default=10)
    a = p.parse_args(argv)
    for name in a.tasks.split(","):
        task = unseen_families.TASKS[name]
        good = sgd_good_lr(task)
        for multiplier in map(float, a.multipliers.split(",")):
            for seed in map(int, a.seeds.split(",")):
                row = " ".join(cell(*r) for r in readings(task, multiplier, seed, a.evals, good))
                print(f"{name} x{multiplier:g} (lr {good * multiplier:g}) seed {seed}: {row}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
