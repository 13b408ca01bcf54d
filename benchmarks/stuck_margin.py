"""How close does a run at a good LR come to the stuck-run rules, when it evaluates less often?

The stuck-run rules (``hf_metalr.controller.gate``: ``MOVED``, ``STUCK``,
``STUCK_EVALUATIONS``) read a run as stuck when its parameters moved by their whole starting norm
(``param_drift >= 1``) while its objective is not ``STUCK`` (0.05 in log, 4.9%) below the first
evaluation's. A first evaluation that comes late leaves little to gain by the next one, so a run
at a good LR can come near that state. This runs ``metalr`` on a task at ``--multiplier`` x its
good LR with ``--evals-per-epoch`` evaluations per epoch and prints, per evaluation, the objective
against the first evaluation's (in percent), the drift, the count of stuck evaluations, and what
the gate did with the policy's choice.

    python benchmarks/stuck_margin.py --task char-lm --evals-per-epoch 1 --epochs 10 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import warnings
from pathlib import Path

from hf_metalr.compare.runner import run_one
from hf_metalr.controller.gate import MOVED, STUCK, STUCK_EVALUATIONS
from hf_metalr.tasks import get_task


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="char-lm")
    p.add_argument("--multiplier", type=float, default=1.0, help="initial LR = this x the task's good LR")
    p.add_argument("--evals-per-epoch", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=None, help="the task's own budget if not given")
    p.add_argument("--seeds", default="0,1,2")
    a = p.parse_args(argv)
    base = get_task(a.task)
    task = type(f"{type(base).__name__}Evaluated{a.evals_per_epoch:g}PerEpoch", (type(base),),
                {"evals_per_epoch": a.evals_per_epoch})()
    print(f"{a.task} at {a.multiplier:g}x its good LR, {a.evals_per_epoch:g} evaluations per epoch; stuck: drift >= "
          f"{MOVED:g} and less than {1 - math.exp(-STUCK):.1%} below the first evaluation; a cut the policy asks for "
          f"goes through after {STUCK_EVALUATIONS} stuck evaluations in a row")
    for seed in map(int, a.seeds.split(",")):
        with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = run_one(task, "metalr", seed, Path(out), lr=task.learning_rate * a.multiplier, epochs=a.epochs)
            trace = [json.loads(line) for line in (Path(out) / "metalr_trace.jsonl").read_text().splitlines()]
        key = next(iter(run["test"]))
        print(f"seed {seed}: test {key} {run['test'][key]:.4f}, threshold reached at evaluation "
              f"{run['threshold'].get('evals') or '-'}")
        for index, decision in enumerate(trace, start=1):
            f = decision["features"]
            below = 1 - math.exp(f["objective_vs_first"])
            why = (decision.get("evidence") or decision.get("gate") or "kept").split(":")[0]
            print(f"  evaluation {index:2d}: {below:6.1%} below the first, drift {f['param_drift']:5.2f}, stuck "
                  f"evaluations {f.get('stuck_evaluations', 0)}, asked x{decision['action']:g}, applied "
                  f"x{decision['applied']:.3g} ({why})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
