"""Evaluation protocol of the shipped policy on held-out task families (``make meta-eval``).

Held-out families: the embedded Trainer tasks ``digits`` (a ResNet on real scanned digits) and
``sentiment`` (a tiny BERT on compositional sentences). Meta-training never sees either the
architectures (ResNet blocks with BatchNorm, BERT) or the data.

For every task and every initial LR in the misspecification sweep (x0.1, x1, x10 of the task's
good LR), ``hf-metalr compare`` runs all schedules over 5 seeds (``--task-seeds`` gives a task
more; ``make meta-eval`` runs digits, the cheapest and noisiest, with 10): ``metalr`` (shipped policy),
``metalr-random`` (random-init policy), the static ``constant``, ``step``, ``cosine``,
``linear``, the Trainer's own ``plateau`` and ``greedy``, and the LR-free peers ``prodigy``
(Prodigy at lr=1.0, so its runs do not depend on the LR band) and ``schedule-free`` (Schedule-Free
AdamW at the band's LR). Each (task, LR) gets its own
comparison directory with results.json and report.md under ``--out``; finished runs are reused
(``--resume``), so the script can be interrupted and rerun. After a new policy is trained,
``--rerun metalr`` drops the finished ``metalr`` runs first, so only they run again.

Derived here, per task:

- **best static** at an LR: the static schedule (constant/step/cosine/linear) with the fewest
  median evaluations to threshold at that LR (ties: higher median final test metric);
- **best LR-free** at an LR: the better of ``prodigy`` and ``schedule-free``, same key;
- **best peer** at an LR: the same over static + plateau + greedy + the LR-free peers;
- **oracle**: the best static schedule and LR in hindsight over the whole sweep;
- the ratio of metalr's median evaluations-to-threshold to each of them;
- **paired by seed** against the best static (same seed: same initial weights and data order):
  in how many seeds metalr reached the threshold sooner, at the same evaluation, or later (a run
  that never reaches it is later than one that does), and the two-sided sign test's p-value
  (``scipy.stats.binomtest`` on the seeds that differ). With 5 seeds even 5 of 5 gives p = 0.0625,
  so no 5-seed split is significant at 0.05: read the medians with that in mind. The best static
  schedule is picked on the same seeds, which tilts the pairing against metalr;
- the fraction of runs reaching the threshold across the sweep, per schedule;
- **final test metric against constant LR, paired by seed** (the promise "never worse than leaving
  the LR alone"): seeds where metalr ends better / equal / worse, and the median difference;
- **pooled by LR band**: each schedule's median evaluations summed over the tasks (a median that
  never reaches the threshold counts as the task's evaluation budget + 1), with the best LR-free
  peer and the best peer taken per task, and metalr's ratio to them and to the random-init policy.

``--tasks`` also takes a Task of your own, ``path/to/file.py:NAME`` or ``module:NAME`` (as
``hf-metalr compare --task`` does), so the whole protocol runs on it; its folders and rows carry
the task's ``name``.

Writes ``<out>/meta_eval.json`` and ``<out>/meta_eval.md``, and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from hf_metalr.baselines import LR_FREE, SCHEDULES
from hf_metalr.compare import compare
from hf_metalr.reporting import write_report
from hf_metalr.tasks import get_task

STATIC = ("constant", "step", "cosine", "linear")
PEERS = STATIC + ("plateau", "greedy") + LR_FREE
ALL = ("metalr", "metalr-random") + PEERS
assert set(ALL) == set(SCHEDULES), "every schedule of the comparison tool is in the sweep"
MULTIPLIERS = (0.1, 1.0, 10.0)
NOT_REACHED = float("inf")


def _evals(run: dict) -> float:
    return run["threshold"]["evals"] if run["threshold"]["reached"] else NOT_REACHED


def _median_evals(runs: list[dict]) -> float:
    """Median evaluations to threshold, counting a run that never reached it as infinity."""
    values = [_evals(r) for r in runs]
    return statistics.median(values) if values else NOT_REACHED


def _median_test(runs: list[dict], metric: str) -> float:
    values = [r["test"][metric] for r in runs if r["test"].get(metric) is not None]
    return statistics.median(values) if values else float("nan")


def paired_by_seed(metalr: list[dict], other: list[dict]) -> dict:
    """Seeds where metalr reached the threshold sooner / at the same evaluation / later than
    ``other`` (same seeds only), and the two-sided sign test's p-value over the seeds that differ
    (None when none differ)."""
    from scipy.stats import binomtest

    theirs = {r["seed"]: _evals(r) for r in other}
    pairs = [(_evals(r), theirs[r["seed"]]) for r in metalr if r["seed"] in theirs]
    sooner = sum(m < o for m, o in pairs)
    later = sum(m > o for m, o in pairs)
    differing = sooner + later
    p = binomtest(sooner, differing, 0.5).pvalue if differing else None
    return {"sooner": sooner, "same": len(pairs) - differing, "later": later, "sign_test_p": p}


def paired_test_by_seed(metalr: list[dict], other: list[dict], metric: str, greater_is_better: bool) -> dict:
    """Seeds where metalr's final test ``metric`` is better / equal / worse than ``other``'s (same
    seeds only), and the median per-seed difference, signed so that > 0 means metalr is better."""
    sign = 1 if greater_is_better else -1
    theirs = {r["seed"]: r["test"].get(metric) for r in other}
    diffs = [sign * (r["test"][metric] - theirs[r["seed"]]) for r in metalr
             if r["test"].get(metric) is not None and theirs.get(r["seed"]) is not None]
    return {"better": sum(d > 1e-9 for d in diffs), "same": sum(abs(d) <= 1e-9 for d in diffs),
            "worse": sum(d < -1e-9 for d in diffs), "median_difference": statistics.median(diffs) if diffs else None}


def summarize(task_name: str, by_lr: dict[float, dict]) -> dict:
    task = get_task(task_name)
    metric = task.test_metrics[0]
    sign = 1 if task.greater_is_better else -1

    def key(runs):  # lower is better: fewer evals, then a better test metric
        return (_median_evals(runs), -sign * _median_test(runs, metric))

    table, reach = {}, {s: [0, 0] for s in ALL}
    for mult, data in by_lr.items():
        runs = {s: [r for r in data["runs"] if r["schedule"] == s] for s in ALL}
        for s, rs in runs.items():
            reach[s][0] += sum(r["threshold"]["reached"] for r in rs)
            reach[s][1] += len(rs)
        best_static = min(STATIC, key=lambda s: key(runs[s]))
        best_peer = min(PEERS, key=lambda s: key(runs[s]))
        best_lr_free = min(LR_FREE, key=lambda s: key(runs[s]))
        table[mult] = {
            "median_evals": {s: _median_evals(rs) for s, rs in runs.items()},
            "median_test": {s: _median_test(rs, metric) for s, rs in runs.items()},
            "best_static": best_static,
            "best_peer": best_peer,
            "best_lr_free": best_lr_free,
            "metalr_vs_best_static_by_seed": paired_by_seed(runs["metalr"], runs[best_static]),
            "metalr_vs_constant_test_by_seed": paired_test_by_seed(runs["metalr"], runs["constant"], metric,
                                                                   task.greater_is_better),
        }
    oracle_mult, oracle_schedule = min(
        ((m, s) for m in by_lr for s in STATIC), key=lambda ms: key([r for r in by_lr[ms[0]]["runs"] if r["schedule"] == ms[1]])
    )
    oracle_evals = table[oracle_mult]["median_evals"][oracle_schedule]
    for mult, row in table.items():
        ev = row["median_evals"]
        row["metalr_vs_best_static"] = ev["metalr"] / ev[row["best_static"]] if ev[row["best_static"]] < NOT_REACHED else None
        for name in ("best_peer", "best_lr_free"):
            row[f"metalr_vs_{name}"] = ev["metalr"] / ev[row[name]] if ev[row[name]] < NOT_REACHED else None
        row["metalr_vs_oracle"] = ev["metalr"] / oracle_evals if oracle_evals < NOT_REACHED else None
    return {
        "task": task.name,
        "test_metric": metric,
        "threshold": f"eval_{task.metric} {'>=' if task.greater_is_better else '<='} {task.threshold}",
        "good_lr": task.learning_rate,
        "seeds": sorted({r["seed"] for data in by_lr.values() for r in data["runs"] if r["schedule"] == "metalr"}),
        "by_multiplier": {str(m): row for m, row in table.items()},
        "oracle": {"schedule": oracle_schedule, "lr_multiplier": oracle_mult, "median_evals": oracle_evals},
        "reach_rate": {s: (n / total if total else None) for s, (n, total) in reach.items()},
        "reach_counts": {s: [n, total] for s, (n, total) in reach.items()},
        "budget_evals": max(data["config"]["epochs"] * data["config"]["evals_per_epoch"] for data in by_lr.values()),
    }


def pooled_by_band(summaries: list[dict]) -> dict:
    """Per LR band, each schedule's median evaluations to threshold summed over the tasks, a median
    that never reaches it counted as the task's evaluation budget + 1; plus the per-task best of the
    LR-free peers and of every peer, and metalr's ratio to each."""
    bands = {}
    for s in summaries:
        for mult, row in s["by_multiplier"].items():
            def capped(name):
                value = row["median_evals"][name]
                return s["budget_evals"] + 1 if value == NOT_REACHED else value

            band = bands.setdefault(f"x{float(mult):g}", {name: 0.0 for name in ALL + ("best LR-free", "best peer")})
            for name in ALL:
                band[name] += capped(name)
            band["best LR-free"] += min(capped(name) for name in LR_FREE)
            band["best peer"] += min(capped(name) for name in PEERS)
    for band in bands.values():
        band["metalr / best LR-free"] = band["metalr"] / band["best LR-free"]
        band["metalr / best peer"] = band["metalr"] / band["best peer"]
        band["metalr / metalr-random"] = band["metalr"] / band["metalr-random"]
    return bands


def _fmt(x, digits=2):
    if x is None:
        return "–"
    if x == NOT_REACHED:
        return "not reached"
    return f"{x:.{digits}f}" if isinstance(x, float) and not float(x).is_integer() else f"{x:g}"


def _test_by_seed(paired: dict) -> str:
    diff = paired["median_difference"]
    return f"{paired['better']}/{paired['same']}/{paired['worse']}, {'–' if diff is None else f'{diff:+.3f}'}"


def pooled_markdown(bands: dict) -> list[str]:
    names = list(ALL) + ["best LR-free", "best peer"]
    lines = ["## Pooled over the tasks, by LR band", "",
             "Median evaluations to threshold summed over the tasks (a median that never reaches it counts as "
             "the task's evaluation budget + 1); best LR-free and best peer take the best schedule per task.", "",
             "| band | " + " | ".join(names) + " | metalr / best LR-free | metalr / best peer | metalr / metalr-random |",
             "|---|" + "---|" * (len(names) + 3)]
    for band, row in bands.items():
        lines.append(f"| {band} | " + " | ".join(_fmt(row[n]) for n in names) + " | "
                     + " | ".join(f"{row[k]:.2f}" for k in ("metalr / best LR-free", "metalr / best peer",
                                                             "metalr / metalr-random")) + " |")
    return lines + [""]


def to_markdown(summaries: list[dict]) -> str:
    lines = ["# Held-out evaluation of the shipped metalr policy", ""]
    for s in summaries:
        lines += [f"## {s['task']} (threshold {s['threshold']}, good LR {s['good_lr']:g})", ""]
        lines += ["| LR | " + " | ".join(ALL) + " | best static | metalr / best static | by seed vs best static "
                  "(sooner/same/later, sign-test p) | best LR-free | metalr / best LR-free | metalr / best peer | "
                  f"metalr / oracle | test {s['test_metric']} vs constant by seed (better/same/worse, median diff) |",
                  "|---|" + "---|" * (len(ALL) + 8)]
        for mult, row in s["by_multiplier"].items():
            cells = [f"{_fmt(row['median_evals'][x])} ({_fmt(row['median_test'][x], 3)})" for x in ALL]
            paired = row["metalr_vs_best_static_by_seed"]
            p_value = "–" if paired["sign_test_p"] is None else f"{paired['sign_test_p']:.2g}"
            by_seed = f"{paired['sooner']}/{paired['same']}/{paired['later']}, p={p_value}"
            lines.append(f"| x{mult} | " + " | ".join(cells) + f" | {row['best_static']} | "
                         f"{_fmt(row['metalr_vs_best_static'])} | {by_seed} | {row['best_lr_free']} | "
                         f"{_fmt(row['metalr_vs_best_lr_free'])} | {_fmt(row['metalr_vs_best_peer'])} | "
                         f"{_fmt(row['metalr_vs_oracle'])} | {_test_by_seed(row['metalr_vs_constant_test_by_seed'])} |")
        o = s["oracle"]
        lines += ["", f"Cells: median evaluations to threshold over seeds (median final test {s['test_metric']}). "
                  f"Oracle (best static schedule and LR in hindsight): {o['schedule']} at x{o['lr_multiplier']:g}, "
                  f"{_fmt(o['median_evals'])} evaluations.", "",
                  "Runs reaching the threshold across the sweep: "
                  + ", ".join(f"{k} {_fmt(100 * v, 0)}%" for k, v in s["reach_rate"].items() if v is not None), ""]
    if summaries:
        lines += pooled_markdown(pooled_by_band(summaries))
    return "\n".join(lines) + "\n"


def card_section(summaries: list[dict], source: str) -> dict:
    """The policy card's ``held_out_trainer_eval``: per task and LR, metalr's median evaluations
    against the best static schedule's (None: not reached), and the reach rates."""

    def finite(x):
        return None if x == NOT_REACHED else (int(x) if float(x).is_integer() else x)

    seeds = ", ".join(f"{s['task']} {len(s['seeds'])}" for s in summaries)
    section = {"source": f"{source} (seeds: {seeds}; median evaluations to threshold; null = not reached)"}
    for s in summaries:
        for mult, row in s["by_multiplier"].items():
            section[f"{s['task']} x{float(mult):g}"] = {
                "metalr_median_evals": finite(row["median_evals"]["metalr"]),
                "best_static": row["best_static"],
                "best_static_median_evals": finite(row["median_evals"][row["best_static"]]),
                "best_lr_free": row["best_lr_free"],
                "best_lr_free_median_evals": finite(row["median_evals"][row["best_lr_free"]]),
            }
        section[f"{s['task']} reach_rate"] = {k: round(s["reach_rate"][k], 3) for k in ("metalr", "metalr-random", "constant")}
    return section


def write_card_section(policy_json: Path, section: dict) -> None:
    config = json.loads(policy_json.read_text())
    config.setdefault("card", {})["held_out_trainer_eval"] = section
    policy_json.write_text(json.dumps(config, indent=2) + "\n")


def drop_runs(out: Path, schedules: list[str]) -> int:
    """Forget the finished runs of ``schedules`` in the comparison at ``out``; returns how many."""
    import shutil

    from hf_metalr.compare.session import save_results
    from hf_metalr.reporting.report import RESULTS_NAME, load_results

    if not (out / RESULTS_NAME).exists():
        return 0
    data = load_results(out / RESULTS_NAME)
    dropped = [r for r in data["runs"] if r["schedule"] in schedules]
    data["runs"] = [r for r in data["runs"] if r["schedule"] not in schedules]
    for r in dropped:
        shutil.rmtree(out / "runs" / f"{r['schedule']}-seed{r['seed']}", ignore_errors=True)
    save_results(out, data)
    return len(dropped)


def parse_task_seeds(text: str, tasks: str) -> dict[str, int]:
    """``--task-seeds`` (``digits=10,sentiment=3``) as {task: seeds}; ValueError names a bad item."""
    task_seeds = {}
    for item in filter(None, text.split(",")):
        name, _, n = item.partition("=")
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"--task-seeds: {item!r} is not TASK=N with N >= 1 (e.g. digits=10)")
        if name not in tasks.split(","):
            raise ValueError(f"--task-seeds: {name!r} is not one of --tasks ({tasks})")
        if name in task_seeds:
            raise ValueError(f"--task-seeds: {name!r} is given twice")
        task_seeds[name] = int(n)
    return task_seeds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="digits,sentiment,spoken-digits",
                   help="comma-separated embedded tasks, or Tasks of your own as path/to/file.py:NAME or module:NAME")
    p.add_argument("--seeds", type=int, default=5, help="seeds per task (0..N-1)")
    p.add_argument("--task-seeds", default="", help="per-task overrides of --seeds, e.g. digits=10")
    p.add_argument("--multipliers", default=",".join(map(str, MULTIPLIERS)))
    p.add_argument("--epochs", type=int, default=None, help="override every task's epoch budget")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/meta_eval"))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run")
    p.add_argument("--rerun", default="", help="comma-separated schedules whose finished runs are dropped and run "
                   "again (after training a new policy: --rerun metalr)")
    p.add_argument("--card", type=Path, default=None, help="policy JSON whose card gets the results as "
                   "held_out_trainer_eval (the shipped one: hf_metalr/policies/default.json)")
    a = p.parse_args(argv)
    if a.card is not None and not a.card.is_file():
        p.error(f"--card: {a.card} is not a file; pass a policy's JSON (hf_metalr/policies/default.json)")
    try:
        task_seeds = parse_task_seeds(a.task_seeds, a.tasks)
    except ValueError as exc:
        p.error(str(exc))
    try:
        names = [get_task(t).name for t in a.tasks.split(",")]
    except ValueError as exc:
        p.error(f"--tasks: {exc}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        p.error(f"--tasks: more than one task is named {', '.join(repeated)}, and each task's runs are kept in a folder "
                "named after it: give each task its own name")
    rerun = [s for s in a.rerun.split(",") if s]
    for name in rerun:
        if name not in ALL:
            p.error(f"--rerun: unknown schedule {name!r}; choose from {', '.join(ALL)}")
    import torch

    torch.set_num_threads(a.threads)
    summaries = []
    for task_name in a.tasks.split(","):
        task = get_task(task_name)
        by_lr = {}
        for mult in (float(m) for m in a.multipliers.split(",")):
            out = a.out / f"{task.name}-lr_x{mult:g}"  # the task's name: a spec of one's own (file.py:NAME) is a path
            print(f"== {task_name} at LR x{mult:g} ({task.learning_rate * mult:g}) -> {out}", flush=True)
            if rerun:
                print(f"   dropped {drop_runs(out, rerun)} finished runs of {', '.join(rerun)}", flush=True)
            seeds = list(range(task_seeds.get(task_name, a.seeds)))
            by_lr[mult] = compare(task_name, list(ALL), seeds, out, lr=task.learning_rate * mult,
                                  epochs=a.epochs, resume=True)
            write_report(out)
        summaries.append(summarize(task_name, by_lr))
    (a.out / "meta_eval.json").write_text(json.dumps(summaries, indent=1))
    text = to_markdown(summaries)
    (a.out / "meta_eval.md").write_text(text)
    if a.card is not None:
        write_card_section(a.card, card_section(summaries, str(a.out / "meta_eval.md")))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
