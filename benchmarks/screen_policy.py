"""Screen a candidate policy on the held-out Trainer tasks, against the committed sweep.

Runs only the ``metalr`` schedule with the candidate policy, for every task and LR multiplier of
the evaluation protocol (``meta_eval.py``), and takes every other schedule's runs, same seeds,
from the committed sweep (``--baseline``, default ``benchmarks/results/meta_eval``). The summary
is ``meta_eval.summarize``'s, so the cells read as in ``meta_eval.md``; a per-seed table puts
the candidate's evaluations to threshold beside the shipped policy's (the sweep's ``metalr``).

    python benchmarks/screen_policy.py runs/meta-v11/policy.safetensors --out runs/screen-v11 --task-seeds digits=10

Writes ``<out>/<task>-lr_x<m>/results.json`` (the candidate's runs) and ``<out>/screen.md``;
finished runs are reused, so it can be interrupted and rerun. Screening candidates on the
evaluation tasks is selection on those tasks: a candidate that passes here still needs its
margin confirmed elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta_eval import MULTIPLIERS, _evals, parse_task_seeds, summarize, to_markdown  # noqa: E402

from hf_metalr.compare import compare  # noqa: E402
from hf_metalr.reporting.report import RESULTS_NAME, load_results  # noqa: E402
from hf_metalr.tasks import get_task  # noqa: E402


def per_seed_lines(task: str, mult: float, candidate: list[dict], shipped: list[dict]) -> str:
    def cell(run):
        return str(run["threshold"]["evals"]) if run["threshold"]["reached"] else "–"

    shipped_by_seed = {r["seed"]: r for r in shipped}
    pairs = [(r, shipped_by_seed.get(r["seed"])) for r in sorted(candidate, key=lambda r: r["seed"])]
    sooner = sum(s is not None and _evals(c) < _evals(s) for c, s in pairs)
    later = sum(s is not None and _evals(c) > _evals(s) for c, s in pairs)
    return (f"| {task} x{mult:g} | " + " ".join(cell(c) for c, _ in pairs) + " | "
            + " ".join(cell(s) if s else "?" for _, s in pairs) + f" | {sooner}/{len(pairs) - sooner - later}/{later} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("policy", type=Path, help="the candidate policy (NAME.safetensors or NAME.json)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--baseline", type=Path, default=Path("benchmarks/results/meta_eval"))
    p.add_argument("--tasks", default="digits,sentiment,spoken-digits")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--task-seeds", default="", help="per-task overrides of --seeds, e.g. digits=10")
    p.add_argument("--multipliers", default=",".join(map(str, MULTIPLIERS)))
    a = p.parse_args(argv)
    from hf_metalr import load_policy

    load_policy(a.policy)  # a bad file fails here, not after the first task
    if not a.baseline.is_dir():
        p.error(f"--baseline: {a.baseline} is not a folder; pass the sweep's (make meta-eval writes benchmarks/results/meta_eval)")
    try:
        task_seeds = parse_task_seeds(a.task_seeds, a.tasks)
    except ValueError as exc:
        p.error(str(exc))
    import torch

    torch.set_num_threads(1)
    cells = [(task_name, float(m)) for task_name in a.tasks.split(",") for m in a.multipliers.split(",")]
    screened = {}
    for task_name, mult in cells:  # the candidate's runs first: the baseline may still be filling in
        seeds = list(range(task_seeds.get(task_name, a.seeds)))
        name = f"{task_name}-lr_x{mult:g}"
        print(f"== {name}", flush=True)
        runs = compare(task_name, ["metalr"], seeds, a.out / name, lr=get_task(task_name).learning_rate * mult,
                       resume=True, metalr_options={"policy": str(a.policy)})["runs"]
        screened[task_name, mult] = [r for r in runs if r["seed"] in seeds]
    summaries, seed_rows = [], []
    for task_name in a.tasks.split(","):
        seeds = list(range(task_seeds.get(task_name, a.seeds)))
        by_lr = {}
        for mult in (m for t, m in cells if t == task_name):
            baseline_path = a.baseline / f"{task_name}-lr_x{mult:g}" / RESULTS_NAME
            if not baseline_path.exists():
                p.error(f"--baseline: {baseline_path} is missing; run make meta-eval first or pass the sweep's folder")
            baseline = load_results(baseline_path)
            committed = [r for r in baseline["runs"] if r["seed"] in seeds]
            missing = sorted(set(seeds) - {r["seed"] for r in committed if r["schedule"] == "constant"})
            if missing:
                p.error(f"--baseline: {baseline_path} has no runs for seeds {missing}; pass fewer --seeds")
            by_lr[mult] = {"config": baseline["config"],  # the budget the summary reads
                           "runs": screened[task_name, mult] + [r for r in committed if r["schedule"] != "metalr"]}
            seed_rows.append(per_seed_lines(task_name, mult, screened[task_name, mult],
                                            [r for r in committed if r["schedule"] == "metalr"]))
        summaries.append(summarize(task_name, by_lr))
    text = to_markdown(summaries).replace("# Held-out evaluation of the shipped metalr policy",
                                          f"# Screen of {a.policy} (metalr column) against {a.baseline}")
    text += ("\n## Per seed: evaluations to threshold, candidate vs shipped policy\n\n"
             "| cell | candidate, seed 0.. | shipped, seed 0.. | candidate sooner/same/later |\n|---|---|---|---|\n"
             + "\n".join(seed_rows) + "\n")
    (a.out / "screen.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
