"""The promise under the Trainer's own schedules: linear decay (its default), cosine, or a constant
LR after warmup, each with and without MetaLRCallback.

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
    python benchmarks/default_schedule.py --schedule cosine --out benchmarks/results/cosine_schedule

``--schedule`` is a ``lr_scheduler_type`` of the Trainer: ``linear`` (the default), ``cosine``,
``constant_with_warmup`` and the like; the variants are named ``<schedule>`` and ``<schedule>+metalr``.
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

def variants(schedule: str = "linear") -> tuple[str, str]:
    """The plain schedule's name and the name of the same with ``MetaLRCallback()``."""
    return schedule, f"{schedule}+metalr"


def _key(run: dict) -> tuple:
    return run["task"], run["multiplier"], run["warmup"], run["seed"], run["variant"]


def run_all(tasks, multipliers, warmups, seeds, out: Path, epochs=None, log=print, schedule: str = "linear") -> list[dict]:
    """Every (task, multiplier, warmup, seed, variant) not yet in ``out/runs.jsonl``; returns all runs."""
    plain, with_callback = variants(schedule)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.jsonl"
    done = {_key(r): r for r in map(json.loads, path.read_text().splitlines())} if path.exists() else {}
    for name in tasks:
        task = get_task(name)
        for warmup in warmups:
            for multiplier in multipliers:
                for seed in seeds:
                    for variant in (plain, with_callback):
                        key = (name, multiplier, warmup, seed, variant)
                        if key in done:
                            continue
                        folder = out / "runs" / task.name / f"warmup{warmup:g}-lr_x{multiplier:g}-seed{seed}-{variant}"
                        record = run_one(task, "linear", seed, folder, lr=task.learning_rate * multiplier, epochs=epochs,
                                         extra_callbacks=[MetaLRCallback()] if variant == with_callback else (),
                                         warmup_steps=warmup, lr_scheduler_type=schedule)
                        run = {"task": name, "multiplier": multiplier, "warmup": warmup, "seed": seed, "variant": variant,
                               "status": record["status"], "test": record["test"], "wall_seconds": record["wall_seconds"],
                               "folder": str(folder)}
                        done[key] = run
                        with path.open("a") as f:
                            f.write(json.dumps(run) + "\n")
                        log(f"{name} warmup {warmup:g} x{multiplier:g} seed {seed} {variant}: {record['test']} "
                            f"({record['wall_seconds']:.1f}s)")
    return list(done.values())


def summarize(runs: list[dict], schedule: str = "linear") -> list[dict]:
    """Per (task, warmup, multiplier): each variant's median test metric and the paired per-seed count."""
    plain, with_callback = variants(schedule)
    rows = []
    for cell in sorted({(r["task"], r["warmup"], r["multiplier"]) for r in runs}):
        task = get_task(cell[0])
        metric = task.test_metrics[0]
        sign = 1 if task.greater_is_better else -1
        by = {v: {r["seed"]: r["test"].get(metric) for r in runs if (r["task"], r["warmup"], r["multiplier"]) == cell
                  and r["variant"] == v} for v in (plain, with_callback)}
        seeds = sorted(set(by[plain]) & set(by[with_callback]))
        diffs = [sign * (by[with_callback][s] - by[plain][s]) + 0.0 for s in seeds  # + 0.0: no -0.0 when level
                 if by[with_callback][s] is not None and by[plain][s] is not None]
        medians = {v: statistics.median([x for x in by[v].values() if x is not None]) if any(
            x is not None for x in by[v].values()) else None for v in (plain, with_callback)}
        rows.append({"task": task.name, "warmup": cell[1], "multiplier": cell[2], "metric": metric, "median": medians,
                     "better": sum(d > 1e-9 for d in diffs), "same": sum(abs(d) <= 1e-9 for d in diffs),
                     "worse": sum(d < -1e-9 for d in diffs),
                     "median_difference": statistics.median(diffs) if diffs else None})
    return rows


def to_markdown(rows: list[dict], schedule: str = "linear") -> str:
    plain, with_callback = variants(schedule)
    title = "the Trainer's default linear schedule" if schedule == "linear" else f"the Trainer's {schedule} schedule"
    lines = [f"# MetaLRCallback on {title} (benchmarks/default_schedule.py)", "",
             f"Median final test metric of the plain {schedule} schedule and of the same with MetaLRCallback(); the "
             "paired count is per seed (the callback better/same/worse), the median difference > 0 when the callback "
             "is better.", "",
             f"| task (metric) | warmup | LR | {plain} | {plain} + MetaLRCallback | seeds better/same/worse | median diff |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        m = row["median"]
        show = {v: "–" if m[v] is None else f"{m[v]:.4f}" for v in (plain, with_callback)}
        diff = "–" if row["median_difference"] is None else f"{row['median_difference']:+.4f}"
        lines.append(f"| {row['task']} ({row['metric']}) | {row['warmup']:g} | x{row['multiplier']:g} | {show[plain]} | "
                     f"{show[with_callback]} | {row['better']}/{row['same']}/{row['worse']} | {diff} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="digits,sentiment,regression")
    p.add_argument("--schedule", default="linear",
                   help="the Trainer's lr_scheduler_type: linear (its default), cosine, constant_with_warmup, ...")
    p.add_argument("--multipliers", default="0.1,1,10")
    p.add_argument("--warmups", default="0.06,0", help="warmup as a fraction of the steps (warmup_steps < 1)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="default: each task's")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/default_schedule"))
    a = p.parse_args(argv)
    tasks = [t for t in a.tasks.split(",") if t]
    runs = run_all(tasks, [float(x) for x in a.multipliers.split(",")], [float(x) for x in a.warmups.split(",")],
                   list(range(a.seeds)), a.out, epochs=a.epochs, schedule=a.schedule)
    rows = summarize(runs, a.schedule)
    (a.out / "default_schedule.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = to_markdown(rows, a.schedule)
    (a.out / "default_schedule.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
