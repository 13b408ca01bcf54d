"""A comparison session: every (schedule, seed) run of one task, saved after each run.

``results.json`` is rewritten atomically after every finished run, so an interrupted compare
(Ctrl-C, a kill) keeps every finished run; ``resume=True`` skips them. A run that diverges is
recorded with ``status: "diverged"`` and the session goes on.

Every argument is checked before the first run (``check_settings``), every setting that changes a
run is stored in the config and must match on resume, and the output folder is locked for the
session, so a second compare into it fails at once instead of overwriting this one's runs.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from .. import __version__
from ..baselines import check_schedule, require_schedule
from ..checks import finite_number, whole_number
from ..output_dir import locked_output_dir
from ..reporting.report import FORMAT, RESULTS_NAME, load_results
from ..tasks import get_task, task_source
from .runner import run_one

__all__ = ["check_settings", "compare", "save_results"]


def _strict(value):
    """``value`` with every NaN or infinite float as None (null), so that results.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def save_results(out_dir: Path, data: dict) -> Path:
    """Write ``data`` to ``out_dir/results.json`` atomically, as strict JSON (a NaN or an infinity,
    a diverged run's, is written as null, which the report reads as missing, as it reads NaN)."""
    path = Path(out_dir) / RESULTS_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_strict(data), indent=1, allow_nan=False))
    os.replace(tmp, path)
    return path


def _fingerprint(policy: str) -> str | None:
    """The sha256 of a policy file's pair, so that a resume can tell a replaced file; None for the
    shipped or a random policy (the version check covers the shipped one)."""
    if policy in ("default", "random"):
        return None
    from ..controller.policy import policy_fingerprint

    return policy_fingerprint(policy)


def _config(task, schedules, seeds, lr, epochs, metalr_options, skipped, task_name: str) -> dict:
    return {
        "task": task.name,
        "task_source": task_source(task_name),
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
        "measures_version": MEASURES_VERSION,
        "metalr_policy": (metalr_options or {}).get("policy", "default"),
        "metalr_policy_sha256": _fingerprint((metalr_options or {}).get("policy", "default")),
        "skipped_schedules": dict(skipped or {}),
        "metalr_learn_online": (metalr_options or {}).get("learn_online", True),
        "metalr_options": {k: v for k, v in sorted((metalr_options or {}).items()) if k not in ("policy", "learn_online")},
    }


_SAME_EXPERIMENT = ("task", "lr", "epochs", "batch_size", "evals_per_epoch", "threshold", "metalr_policy",
                    "metalr_learn_online", "metalr_options", "hf_metalr_version")
# the flag each stored setting comes from, for the resume's refusal (the others come from the task's file)
_SETTING_FLAGS = {"task": "--task", "lr": "--lr", "epochs": "--epochs", "metalr_policy": "--metalr-policy",
                  "metalr_learn_online": "online learning (--metalr-no-learn-online turns it off)",
                  "metalr_options": "the metalr options", "batch_size": "the task's batch_size",
                  "evals_per_epoch": "the task's evals_per_epoch", "hf_metalr_version": "the hf_metalr version",
                  "threshold": "the threshold (one set in results.json to see another cut: restore the task's to resume)"}
MAX_SEED = 2**32 - 1
# 2: the LR stability counts the move from the first step's LR (2026-12-04); a resume recomputes older runs' from their
# stored curves, so that one report judges all its runs alike
MEASURES_VERSION = 2
# results.json written before these were stored
_BEFORE_STORED = {"metalr_learn_online": True, "metalr_options": {}, "hf_metalr_version": __version__}


def check_settings(task_name: str, schedules: list[str], seeds: list[int], *, lr: float | None = None,
                   epochs: int | None = None, metalr_options: dict | None = None) -> None:
    """Fail (``ValueError``) on anything that cannot run or would run twice: an unknown task or
    schedule, no schedule or seed, a repeated one, a seed < 0, an LR that is not a finite number > 0,
    epochs < 1, or metalr options (a policy file, say) that ``MetaLRCallback`` rejects."""
    get_task(task_name)
    for what, items in (("--schedules", list(schedules)), ("--seeds", list(seeds))):
        if not items:
            raise ValueError(f"{what} names none; give at least one")
        repeated = sorted({str(x) for x in items if items.count(x) > 1})
        if repeated:
            raise ValueError(f"{what} names {', '.join(repeated)} more than once; each (schedule, seed) runs once")
    for name in schedules:
        check_schedule(name)
    for seed in seeds:
        whole_number(seed, "--seeds: each seed", at_least=0)
        if seed > MAX_SEED:
            raise ValueError(f"--seeds: each seed must be at most {MAX_SEED} (2**32 - 1, what numpy's and torch's "
                             f"seeding take), got {seed}")
    if lr is not None:
        finite_number(lr, "--lr", above=0)
    if epochs is not None:
        whole_number(epochs, "--epochs", at_least=1)
    if metalr_options or any(name.startswith("metalr") for name in schedules):  # stored in the config even when no
        # metalr schedule runs now (a resume may add one)
        from ..integration.callback import MetaLRCallback
        from ..controller.policy import PolicyLoadError

        try:
            MetaLRCallback(**(metalr_options or {}))
        except PolicyLoadError as exc:
            raise ValueError(f"--metalr-policy does not load: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the metalr settings do not work: {exc}") from None


def _remeasured(run: dict) -> dict:
    """``run`` with the per-run measures recomputed from its stored curves (as stored when they are
    malformed: the report reads those as missing)."""
    from .measures import lr_stability

    try:
        curve = [[p[0], p[1], p[2] if p[2] is not None else math.nan] for p in run["lr_curve"]]
        return {**run, "lr_stability": lr_stability(curve, run["evals"])}
    except (TypeError, KeyError, IndexError):
        return run


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

    Checks every argument first (``check_settings``), and holds ``out_dir``'s lock throughout
    (``OutputDirError``, a ``ValueError``, when another process holds it or the folder is unusable).
    ``skipped`` ({schedule: missing package}) is recorded in the config, for the report to say
    which asked-for schedules this environment could not run. A schedule whose package is missing
    raises :class:`~hf_metalr.baselines.MissingPeerError` before any run."""
    check_settings(task_name, schedules, seeds, lr=lr, epochs=epochs, metalr_options=metalr_options)
    for name in schedules:
        require_schedule(name)
    with locked_output_dir(out_dir, "hf-metalr compare"):
        return _compare(task_name, schedules, seeds, out_dir, lr=lr, epochs=epochs, resume=resume,
                        metalr_options=metalr_options, skipped=skipped, log=log)


def _compare(task_name: str, schedules: list[str], seeds: list[int], out_dir: Path, *, lr: float | None = None,
             epochs: int | None = None, resume: bool = False, metalr_options: dict | None = None,
             skipped: dict[str, str] | None = None, log=print) -> dict:
    task = get_task(task_name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = _config(task, schedules, seeds, lr, epochs, metalr_options, skipped, task_name)
    if (out_dir / RESULTS_NAME).exists():
        if not resume:
            raise FileExistsError(
                f"{out_dir / RESULTS_NAME} exists; pass --resume to continue that comparison, or choose another --out"
            )
        data = load_results(out_dir / RESULTS_NAME)
        stored = {**_BEFORE_STORED, "task_source": {"spec": data["config"].get("task"), "sha256": None}, **data["config"]}
        if stored["task_source"] != config["task_source"]:
            was, now = stored["task_source"], config["task_source"]
            why = ("its source changed since" if was["spec"] == now["spec"] else
                   f"that comparison's task {stored['task']!r} came from {was['spec']}")
            raise ValueError(f"--resume: the task {task_name} is not the one {out_dir}'s runs were made with ({why}); "
                             "resume with that task, or use another --out")
        differing = [k for k in _SAME_EXPERIMENT if stored.get(k) != config[k]]
        if "metalr_policy" not in differing and stored.get("metalr_policy_sha256", config["metalr_policy_sha256"]) != \
                config["metalr_policy_sha256"]:  # (a results.json from before the fingerprint was stored has none)
            raise ValueError(
                f"--resume: the policy file {config['metalr_policy']} is not the one {out_dir}'s metalr runs were made "
                "with (its files changed since): restore that policy, or use another --out"
            )
        if differing == ["hf_metalr_version"]:
            raise ValueError(
                f"--resume: {out_dir} holds a comparison made with hf_metalr {stored.get('hf_metalr_version')}, and "
                f"this is {__version__}: another version may run metalr differently, so the new runs would not be "
                f"comparable with the stored ones. Use another --out, or install hf_metalr "
                f"{stored.get('hf_metalr_version')} to continue this one"
            )
        if differing:
            named = "; ".join(f"{_SETTING_FLAGS.get(k, k)}: {stored.get(k)!r} stored, {config[k]!r} given" for k in differing)
            raise ValueError(f"--resume: {out_dir} holds a comparison with other settings ({named}); rerun with the "
                             "stored settings, or use another --out")
        if stored.get("measures_version", 1) != MEASURES_VERSION:
            data["runs"] = [_remeasured(run) for run in data["runs"]]
        config["schedules"] = list(dict.fromkeys(list(stored.get("schedules") or []) + list(schedules)))
        config["seeds"] = sorted(set(stored.get("seeds") or []) | set(seeds))
        # what an earlier call could not run stays noted, unless this call runs that schedule
        earlier = {k: v for k, v in (stored.get("skipped_schedules") or {}).items() if k not in schedules}
        config["skipped_schedules"] = {**earlier, **config["skipped_schedules"]}
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
