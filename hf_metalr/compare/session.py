"""A comparison session: every (schedule, seed) run of one task, saved after each run.

``results.json`` is rewritten atomically after every finished run, so an interrupted compare
(Ctrl-C, a kill) keeps every finished run; ``resume=True`` skips them. A run that diverges is
recorded with ``status: "diverged"`` and the session goes on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .. import __version__
from ..baselines import require_schedule
from ..reporting.report import FORMAT, RESULTS_NAME, load_results
from ..tasks import get_task
from .runner import run_one

__all__ = ["compare", "save_results"]


def save_results(out_dir: Path, data: dict) -> Path:
    path = Path(out_dir) / RESULTS_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return path


def _config(task, schedules, seeds, lr, epochs, metalr_options, skipped) -> dict:
    return {
        "task": task.name,
        "task_description": task.description,
        "metric": task.metric,
        "greater_is_better": task.greater_is_better,
        "threshold": task.threshold,
        "test_metrics": list(task.test_metrics),
        "schedules": list(schedules),
        "seeds": list(seeds),
        "lr": lr if lr is not None else task.learning_rate,
        "epochs": epochs if epochs is not None else task.epochs,
        "batch_size": task.batch_size,
        "evals_per_epoch": task.evals_per_epoch,
        "hf_metalr_version": __version__,
        "metalr_policy": (metalr_options or {}).get("policy", "default"),
        "skipped_schedules": dict(skipped or {}),
    }


_SAME_EXPERIMENT = ("task", "lr", "epochs", "batch_size", "evals_per_epoch", "threshold", "metalr_policy")


def _describe(run: dict, task) -> str:
    t = run["threshold"]
    reached = f"reached {task.threshold:g} at eval {t['evals']} (epoch {t['epoch']:.2f}, {t['seconds']:.1f}s)" if t["reached"] else "threshold not reached"
    test = ", ".join(f"test {k} {v:.4f}" for k, v in run["test"].items() if v is not None)
    status = " DIVERGED;" if run["status"] == "diverged" else ""
    return f"{status} {reached}; {test}; {run['wall_seconds']:.1f}s"


def compare(task_name: str, schedules: list[str], seeds: list[int], out_dir: Path, *, lr: float | None = None,
            epochs: int | None = None, resume: bool = False, metalr_options: dict | None = None,
            skipped: dict[str, str] | None = None, log=print) -> dict:
    """Run every missing (schedule, seed) and return the results dict (also in ``out_dir/results.json``).

    ``skipped`` ({schedule: missing package}) is recorded in the config, for the report to say
    which asked-for schedules this environment could not run. A schedule whose package is missing
    raises :class:`~hf_metalr.baselines.MissingPeerError` before any run."""
    task = get_task(task_name)
    for name in schedules:
        require_schedule(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = _config(task, schedules, seeds, lr, epochs, metalr_options, skipped)
    if (out_dir / RESULTS_NAME).exists():
        if not resume:
            raise FileExistsError(
                f"{out_dir / RESULTS_NAME} exists; pass --resume to continue that comparison, or choose another --out"
            )
        data = load_results(out_dir / RESULTS_NAME)
        differing = [k for k in _SAME_EXPERIMENT if data["config"].get(k) != config[k]]
        if differing:
            raise ValueError(
                f"--resume: {out_dir} holds a comparison with other settings ({', '.join(differing)}: "
                f"{[data['config'].get(k) for k in differing]} vs {[config[k] for k in differing]}); use another --out"
            )
        config["schedules"] = list(dict.fromkeys(data["config"]["schedules"] + list(schedules)))
        config["seeds"] = sorted(set(data["config"]["seeds"]) | set(seeds))
        config["skipped_schedules"] = {k: v for k, v in config["skipped_schedules"].items() if k not in config["schedules"]}
        data["config"] = config
    else:
        data = {"format": FORMAT, "config": config, "runs": []}
    save_results(out_dir, data)

    done = {(r["schedule"], r["seed"]) for r in data["runs"]}
    todo = [(s, seed) for seed in seeds for s in schedules if (s, seed) not in done]
    if done and todo:
        log(f"resuming: {len(done)} runs already in {out_dir / RESULTS_NAME}, {len(todo)} to go")
    durations = []
    for i, (schedule, seed) in enumerate(todo, start=1):
        start = time.perf_counter()
        run = run_one(task, schedule, seed, out_dir / "runs" / f"{schedule}-seed{seed}", lr=lr, epochs=epochs,
                      metalr_options=metalr_options)
        data["runs"].append(run)
        save_results(out_dir, data)
        durations.append(time.perf_counter() - start)
        eta = sum(durations) / len(durations) * (len(todo) - i)
        log(f"[{i}/{len(todo)}] {task.name} {schedule} seed={seed}:{_describe(run, task)} | ETA {eta / 60:.1f} min")
        sys.stdout.flush()
    return data
