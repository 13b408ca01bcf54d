"""The promise under the Trainer's default schedule: linear decay, with and without MetaLRCallback.

The sweeps compare ``metalr`` (the controller on a constant schedule) with the constant LR. Most
scripts keep the Trainer's default ``lr_scheduler_type="linear"``, often with warmup, and the one
line a user adds, ``callbacks=[MetaLRCallback()]``, then multiplies that schedule. This runs, per
task, LR multiplier of the task's good LR, warmup fraction and seed, the plain ``linear`` schedule
and the same with ``MetaLRCallback()`` (the shipped policy, acting on ``eval_loss``), through the
``compare`` harness's Trainer (same weights, data order and evaluation cadence per seed), and
prints per cell the median final test metric of each and the paired per-seed count (the callback
better / same / worse, and the median difference, > 0 when it is better). Finished runs are
reused from ``--out``/runs.jsonl, so it can be stopped and rerun.

    python benchmarks/default_schedule.py --tasks digits,sentiment,regression --seeds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from hf_metalr import MetaLRCallback
from hf_metalr.compare.runner import run_one
from hf_metalr.tasks import get_task

VARIANTS = ("linear", "linear+metalr")


def _key(run: dict) -> tuple:
    return run["task"], run["multiplier"], run["warmup"], run["seed"], run["variant"]


def run_all(tasks, multipliers, warmups, seeds, out: Path, epochs=None, log=print) -> list[dict]:
    """Every (task, multiplier, warmup, seed, variant) not yet in ``out/runs.jsonl``; returns all runs."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.jsonl"
    done = {_key(r): r for r in map(json.loads, path.read_text().splitlines())} if path.exists() else {}
    for name in tasks:
        task = get_task(name)
        for warmup in warmups:
            for multiplier in multipliers:
                for seed in seeds:
                    for variant in VARIANTS:
                        key = (name, multiplier, warmup, seed, variant)
                        if key in done:
                            continue
                        folder = out / "runs" / name / f"warmup{warmup:g}-lr_x{multiplier:g}-seed{seed}-{variant}"
                        record = run_one(task, "linear", seed, folder, lr=task.learning_rate * multiplier, epochs=epochs,
                                         extra_callbacks=[MetaLRCallback()] if variant == "linear+metalr" else (),
                                         warmup_steps=warmup)
                        run = {"task": name, "multiplier": multiplier, "warmup": warmup, "seed": seed, "variant": variant,
                               "status": record["status"], "test": record["test"], "wall_seconds": record["wall_seconds"],
                               "folder": str(folder)}
                        done[key] = run
                        with path.open("a") as f:
                            f.write(json.dumps(run) + "\n")
                        log(f"{name} warmup {warmup:g} x{multiplier:g} seed {seed} {variant}: {record['test']} "
                            f"({record['wall_seconds']:.1f}s)")
    return list(done.values())


def summarize(runs: list[dict]) -> list[dict]:
    """Per (task, warmup, multiplier): each variant's median test metric and the paired per-seed count."""
    rows = []
    for cell in sorted({(r["task"], r["warmup"], r["multiplier"]) for r in runs}):
        task = get_task(cell[0])
        metric = task.test_metrics[0]
        sign = 1 if task.greater_is_better else -1
        by = {v: {r["seed"]: r["test"].get(metric) for r in runs if (r["task"], r["warmup"], r["multiplier"]) == cell
                  and r["variant"] == v} for v in VARIANTS}
        seeds = sorted(set(by["linear"]) & set(by["linear+metalr"]))
        diffs = [sign * (by["linear+metalr"][s] - by["linear"][s]) for s in seeds
                 if by["linear+metalr"][s] is not None and by["linear"][s] is not None]
        medians = {v: statistics.median([x for x in by[v].values() if x is not None]) if any(
            x is not None for x in by[v].values()) else None for v in VARIANTS}
        rows.append({"task": cell[0], "warmup": cell[1], "multiplier": cell[2], "metric": metric, "median": medians,
                     "better": sum(d > 1e-9 for d in diffs), "same": sum(abs(d) <= 1e-9 for d in diffs),
                     "worse": sum(d < -1e-9 for d in diffs),
                     "median_difference": statistics.median(diffs) if diffs else None})
    return rows


def to_markdown(rows: list[dict]) -> str:
    lines = ["# MetaLRCallback on the Trainer's default linear schedule (benchmarks/default_schedule.py)", "",
             "Median final test metric of the plain linear schedule and of the same with MetaLRCallback(); the paired "
             "count is per seed (the callback better/same/worse), the median difference > 0 when the callback is "
             "better.", "",
             "| task (metric) | warmup | LR | linear | linear + MetaLRCallback | seeds better/same/worse | median diff |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        m = row["median"]
        show = {v: "–" if m[v] is None else f"{m[v]:.4f}" for v in VARIANTS}
        diff = "–" if row["median_difference"] is None else f"{row['median_difference']:+.4f}"
        lines.append(f"| {row['task']} ({row['metric']}) | {row['warmup']:g} | x{row['multiplier']:g} | {show['linear']} | "
                     f"{show['linear+metalr']} | {row['better']}/{row['same']}/{row['worse']} | {diff} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="digits,sentiment,regression")
    p.add_argument("--multipliers", default="0.1,1,10")
    p.add_argument("--warmups", default="0.06,0", help="warmup as a fraction of the steps (warmup_steps < 1)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="default: each task's")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/default_schedule"))
    a = p.parse_args(argv)
    tasks = [t for t in a.tasks.split(",") if t]
    runs = run_all(tasks, [float(x) for x in a.multipliers.split(",")], [float(x) for x in a.warmups.split(",")],
                   list(range(a.seeds)), a.out, epochs=a.epochs)
    rows = summarize(runs)
    (a.out / "default_schedule.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = to_markdown(rows)
    (a.out / "default_schedule.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
