"""The promise between the sweep's bands: metalr against the constant LR at LRs no rule was set on.

The sweeps (``make meta-eval``, ``make fresh-check``) start every schedule at 0.1x, 1x and 10x a
task's good LR, and the gate's constants were read off runs at those bands. A user's LR is
anywhere. This runs ``metalr``, ``constant`` and ``schedule-free`` (``--schedules``) at other
multipliers (default 0.3x and 3x) through the same ``compare`` harness, and prints per task and
multiplier: the median evaluations to the threshold of each schedule ("–": the median run never
reaches it), metalr against the constant LR paired by seed in evaluations (sooner / same / later)
and in the final test metric (better / same / worse, and the median difference, > 0 when metalr is
better), and the worst single seed. Finished runs are reused, so it can be stopped and rerun.

    python benchmarks/between_bands.py --tasks regression,char-lm --multipliers 0.3,3 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hf_metalr.compare import compare
from hf_metalr.tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta_eval import NOT_REACHED, _median_evals, paired_by_seed, paired_test_by_seed, parse_task_seeds  # noqa: E402


def _cell(runs: list[dict]) -> str:
    value = _median_evals(runs)
    return "–" if value == NOT_REACHED else f"{value:g}"


def summarize(task_name: str, multiplier: float, results: dict, schedules: list[str]) -> dict:
    """One (task, multiplier): median evaluations per schedule, and metalr against the constant LR by seed."""
    task = get_task(task_name)
    metric = task.test_metrics[0]
    runs = {s: [r for r in results["runs"] if r["schedule"] == s] for s in schedules}
    sign = 1 if task.greater_is_better else -1
    constant = {r["seed"]: r["test"][metric] for r in runs["constant"]}
    worst = min(((sign * (r["test"][metric] - constant[r["seed"]]), r["seed"], r["test"][metric], constant[r["seed"]])
                 for r in runs["metalr"] if r["seed"] in constant), default=None)
    return {
        "task": task_name, "multiplier": multiplier, "metric": metric,
        "median_evals": {s: _cell(rs) for s, rs in runs.items()},
        "evals_vs_constant": paired_by_seed(runs["metalr"], runs["constant"]),
        "test_vs_constant": paired_test_by_seed(runs["metalr"], runs["constant"], metric, task.greater_is_better),
        "worst_seed": None if worst is None else {"seed": worst[1], "metalr": worst[2], "constant": worst[3]},
    }


def to_markdown(rows: list[dict], schedules: list[str]) -> str:
    lines = ["# metalr against the constant LR between the sweep's bands (benchmarks/between_bands.py)", "",
             "Median evaluations to the threshold per schedule (\"–\": the median run never reaches it); the final test "
             "metric's median difference is per seed, > 0 when metalr is better.", "",
             "| task | LR | " + " | ".join(schedules) + " | metalr vs constant, evaluations (sooner/same/later) | "
             "final test, metalr vs constant (better/same/worse, median diff) | worst seed (metalr vs constant) |",
             "|---|---|" + "---|" * (len(schedules) + 3)]
    for row in rows:
        e, t, w = row["evals_vs_constant"], row["test_vs_constant"], row["worst_seed"]
        diff = "–" if t["median_difference"] is None else f"{t['median_difference']:+.3f}"
        worst = "–" if w is None else f"seed {w['seed']}: {w['metalr']:.3f} vs {w['constant']:.3f}"
        lines.append(f"| {row['task']} ({row['metric']}) | x{row['multiplier']:g} | "
                     + " | ".join(row["median_evals"][s] for s in schedules)
                     + f" | {e['sooner']}/{e['same']}/{e['later']} | {t['better']}/{t['same']}/{t['worse']}, {diff} | {worst} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="digits,sentiment,char-lm,regression,vit-digits")
    p.add_argument("--multipliers", default="0.3,3")
    p.add_argument("--seeds", type=int, default=5, help="seeds per task (0..N-1)")
    p.add_argument("--task-seeds", default=None, help="per-task overrides of --seeds (default: char-lm=3 when it runs, "
                   "as in make fresh-check)")
    p.add_argument("--schedules", default="metalr,constant,schedule-free",
                   help="comma-separated; metalr and constant are required")
    p.add_argument("--epochs", type=int, default=None, help="override every task's epoch budget")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/between_bands"))
    a = p.parse_args(argv)
    schedules = [s for s in a.schedules.split(",") if s]
    if not {"metalr", "constant"} <= set(schedules):
        p.error(f"--schedules must include metalr and constant (the comparison), got {a.schedules!r}")
    try:
        default = "char-lm=3" if "char-lm" in a.tasks.split(",") else ""
        task_seeds = parse_task_seeds(default if a.task_seeds is None else a.task_seeds, a.tasks)
        multipliers = [float(m) for m in a.multipliers.split(",") if m]
    except ValueError as exc:
        p.error(str(exc))
    rows = []
    for task_name in a.tasks.split(","):
        task = get_task(task_name)
        seeds = list(range(task_seeds.get(task_name, a.seeds)))
        for multiplier in multipliers:
            out = a.out / f"{task_name}-lr_x{multiplier:g}"
            print(f"== {task_name} at LR x{multiplier:g} ({task.learning_rate * multiplier:g}) -> {out}", flush=True)
            results = compare(task_name, schedules, seeds, out, lr=task.learning_rate * multiplier, epochs=a.epochs,
                              resume=True)
            rows.append(summarize(task_name, multiplier, results, schedules))
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "between_bands.json").write_text(json.dumps(rows, indent=1))
    text = to_markdown(rows, schedules)
    (a.out / "between_bands.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
