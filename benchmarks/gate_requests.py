"""What the policy asks for, band by band, and what the direction gate lets through.

Runs ``metalr`` alone on each task at 0.1x, 1x and 10x its good LR (``hf-metalr compare``, resumed
when ``--out`` already holds a cell) and reads the decision traces. Per task and band it prints:
the decisions; the share at which the policy asked to cut and to raise the LR; the cuts and raises
applied; the cuts the gate held; and the quartiles of the two readings the gate decides on, the
interval's gradient alignment and the iterate-average gain. It answers "does the policy's own
choice, or either reading, tell an LR 10x too high from a good one on tasks it never saw?"

    python benchmarks/gate_requests.py --out runs/gate_requests     # all six tasks: about 20 min of one core
    python benchmarks/gate_requests.py --out runs/gate_requests --tasks vit-digits --seeds 2

Its cells are named and run as ``make meta-eval``'s (``<task>-lr_x<multiplier>``, the LR the task's
good one times the multiplier), so ``--out`` at a sweep that ``make meta-eval`` ran here reads its
traces and runs nothing again (git does not keep the ``runs/`` folders that hold them).
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from pathlib import Path

import torch

from hf_metalr.compare.session import compare
from hf_metalr.integration.trace import read_trace
from hf_metalr.tasks import get_task

TASK_SEEDS = {"digits": 10, "sentiment": 5, "spoken-digits": 5, "char-lm": 3, "regression": 5, "vit-digits": 5}
MULTIPLIERS = (0.1, 1.0, 10.0)


def quartiles(values: list[float]) -> str:
    if len(values) < 4:
        return "–"
    low, mid, high = statistics.quantiles(values, n=4)
    return f"{low:+.3f} / {mid:+.3f} / {high:+.3f}"


def summarize(traces: list[list[dict]]) -> dict:
    """The counts and quartiles of one cell's decisions (every seed's trace)."""
    decisions = [d for trace in traces for d in trace if not d["diverged"]]
    n = max(len(decisions), 1)
    gains = [d["features"]["iterate_average_gain"] for d in decisions
             if d["features"].get("iterate_average_gain") is not None]
    return {
        "decisions": len(decisions),
        "asked_cut": sum(d["action"] < 1 for d in decisions) / n,
        "asked_raise": sum(d["action"] > 1 for d in decisions) / n,
        "cuts": sum(d["applied"] < 1 for d in decisions),
        "raises": sum(d["applied"] > 1 for d in decisions),
        "held_cuts": sum(d["action"] < 1 and d["gate"] is not None for d in decisions),  # not a cut min_lr stopped
        "alignment": quartiles([d["features"]["grad_alignment"] for d in decisions]),
        "gain": quartiles(gains),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tasks", default=",".join(TASK_SEEDS))
    p.add_argument("--seeds", type=int, default=None, help="seeds per task (default: the sweeps' own, 3 to 10)")
    p.add_argument("--multipliers", default=",".join(f"{m:g}" for m in MULTIPLIERS))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1, as the sweeps run)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    print("| task | LR | decisions | policy asks to cut | to raise | cuts applied | raises applied | cuts held | "
          "alignment (quartiles) | iterate-average gain (quartiles) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in a.tasks.split(","):
        task = get_task(name)
        seeds = list(range(a.seeds or TASK_SEEDS.get(name, 5)))
        for multiplier in (float(m) for m in a.multipliers.split(",")):
            out = a.out / f"{name}-lr_x{multiplier:g}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compare(name, ["metalr"], seeds, out, lr=task.learning_rate * multiplier, resume=True, log=lambda *_: None)
            paths = [out / "runs" / f"metalr-seed{seed}" / "metalr_trace.jsonl" for seed in seeds]
            missing = [str(path) for path in paths if not path.exists()]
            if missing:
                raise SystemExit(f"{out}: results.json holds metalr runs without their traces ({', '.join(missing)}); "
                                 "git does not keep them: pass another --out to run these cells here")
            s = summarize([read_trace(path) for path in paths])
            print(f"| {name} | x{multiplier:g} | {s['decisions']} | {s['asked_cut']:.0%} | {s['asked_raise']:.0%} | "
                  f"{s['cuts']} | {s['raises']} | {s['held_cuts']} | {s['alignment']} | {s['gain']} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
