"""How early must a too-high LR be cut to save the run? (the "rescue window" of a task)

For a task at ``--multiplier`` x its good LR, runs the constant schedule through the standard
Trainer and, at optimizer step k (each of ``--cut-steps``), multiplies the LR by ``--factor``
(default: back to the good LR); ``--warmup`` runs add a linear warmup of that many steps instead
of a cut. Prints, per run, the evaluations to the task's threshold ("-" if never) and the last
validation metric. A controller decides at evaluations, so a task whose window closes before its
first evaluation cannot be rescued by any decision made there, whatever the policy.

    python benchmarks/rescue_window.py --task sentiment --multiplier 10 --cut-steps 4,8,16,32 --warmup 32
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from transformers import TrainerCallback

from hf_metalr.compare.runner import build_trainer
from hf_metalr.tasks import get_task
from hf_metalr.tasks.base import reaches


class CutAt(TrainerCallback):
    """Multiply every group's LR by ``factor`` after optimizer step ``step``: ``step`` steps run at
    the initial LR. The scheduler has already set the next step's LR when ``on_step_end`` runs, so
    the groups are cut now and the scheduler's base LRs for the steps after."""

    def __init__(self, step: int, factor: float):
        self.step, self.factor = step, factor

    def on_step_end(self, args, state, control, lr_scheduler=None, optimizer=None, **kwargs):
        if state.global_step == self.step:
            lr_scheduler.base_lrs = [lr * self.factor for lr in lr_scheduler.base_lrs]
            for group in optimizer.param_groups:
                group["lr"] *= self.factor


def run(task, lr: float, seed: int, *, cut: int | None = None, factor: float = 1.0, warmup: int = 0) -> dict:
    callbacks = [CutAt(cut, factor)] if cut else []
    overrides = {"warmup_steps": warmup, "lr_scheduler_type": "constant_with_warmup"} if warmup else {}
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = build_trainer(task, "constant", seed, Path(out), callbacks=callbacks, lr=lr, **overrides)
        trainer.train()
    key = f"eval_{task.metric}"
    values = [e[key] for e in trainer.state.log_history if key in e]
    reached = next((i for i, v in enumerate(values, start=1) if reaches(v, task.threshold, task.greater_is_better)), None)
    return {"reached": reached, "last": values[-1], "evals": len(values)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sentiment")
    p.add_argument("--multiplier", type=float, default=10.0, help="initial LR = this x the task's good LR")
    p.add_argument("--cut-steps", default="4,8,16,32", help="optimizer steps at which the LR is cut, one run each")
    p.add_argument("--factor", type=float, default=None, help="the cut (default: 1 / multiplier, back to the good LR)")
    p.add_argument("--warmup", default="", help="linear-warmup lengths in steps, one run each, no cut")
    p.add_argument("--seeds", default="0")
    a = p.parse_args(argv)
    task = get_task(a.task)
    lr = task.learning_rate * a.multiplier
    factor = a.factor if a.factor is not None else 1.0 / a.multiplier
    variants = [("constant", {})]
    variants += [(f"cut x{factor:g} at step {k}", {"cut": k, "factor": factor}) for k in map(int, filter(None, a.cut_steps.split(",")))]
    variants += [(f"warmup {w} steps", {"warmup": w}) for w in map(int, filter(None, a.warmup.split(",")))]
    print(f"{a.task} at {a.multiplier:g}x its good LR ({lr:g}); threshold {task.metric} "
          f"{'>=' if task.greater_is_better else '<='} {task.threshold}")
    for seed in map(int, a.seeds.split(",")):
        for name, kwargs in variants:
            r = run(task, lr, seed, **kwargs)
            reached = r["reached"] or "-"
            print(f"seed {seed} {name:>24}: evaluations to threshold {reached} of {r['evals']}, last {task.metric} {r['last']:.3f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
