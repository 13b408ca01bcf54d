"""``hf-metalr compare``: one task, several LR schedules and seeds, one report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..baselines import SCHEDULES, MissingPeerError, available_schedules, require_schedule
from ..tasks import TASK_SPEC_HELP, TASKS, get_task


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hf-metalr compare",
        description="Train one task, embedded or your own, under several LR schedules and seeds through the standard Trainer, "
        "then write results.json, summary.csv, report.md and plots into --out.",
    )
    p.add_argument("--task", required=True, help=f"embedded task ({', '.join(TASKS)}), or {TASK_SPEC_HELP}")
    p.add_argument("--schedules", default="all",
                   help=f"comma-separated schedules, or 'all' ({','.join(SCHEDULES)}; 'all' skips an LR-free peer "
                        "whose package is missing, and the report says so)")
    p.add_argument("--seeds", default="3", help="number of seeds (3 -> 0,1,2) or a comma-separated list (0,5,9; one seed alone: 7,)")
    p.add_argument("--lr", type=float, default=None, help="one initial LR for every schedule (default: the task's)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the task's)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue a comparison in --out, skipping finished runs")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads per run (default 1: the embedded models are tiny, and more threads "
                        "than free cores slow a run down several times)")
    p.add_argument("--metalr-policy", default=None, help="policy for the metalr schedule: 'default' (the shipped one, the default), 'random' or a file path")
    p.add_argument("--metalr-no-learn-online", action="store_true", help="freeze the metalr policy during runs")
    return p


def parse_list(value: str, choices, what: str) -> list[str]:
    items = list(choices) if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in choices]
    if unknown or not items:
        raise SystemExit(f"hf-metalr compare: unknown {what} {', '.join(unknown) or value!r}; choose from: {', '.join(choices)}")
    return items


def parse_seeds(value: str) -> list[int]:
    try:
        if "," in value:
            seeds = [int(v) for v in value.split(",") if v.strip()]
            if not seeds:
                raise ValueError
            return seeds
        n = int(value)
    except ValueError:
        raise SystemExit(f"hf-metalr compare: --seeds takes a count (3) or a list (0,1,2), got {value!r}")
    if n < 1:
        raise SystemExit(f"hf-metalr compare: --seeds must be at least 1, got {n}")
    return list(range(n))


def _partial_report(out: Path) -> str:
    """Rebuild the report of the runs finished so far; the sentence that says where it is, or nothing."""
    from ..reporting import ResultsError, write_report

    if not (out / "results.json").is_file():
        return ""
    try:
        return f"; the report of the finished runs: {write_report(out)}"
    except (ResultsError, OSError, ValueError):
        return ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        get_task(args.task)
    except ValueError as exc:
        raise SystemExit(f"hf-metalr compare: {exc}")
    schedules = parse_list(args.schedules, SCHEDULES, "schedule")
    skipped = {}
    if args.schedules == "all":
        schedules, skipped = available_schedules(schedules)
        for name, package in skipped.items():
            print(f"hf-metalr compare: skipping {name}: {package} is not installed (pip install 'hf_metalr[peers]')")
    try:
        for name in schedules:
            require_schedule(name)
    except MissingPeerError as exc:
        raise SystemExit(f"hf-metalr compare: {exc}")
    seeds = parse_seeds(args.seeds)
    if args.threads < 1:
        raise SystemExit(f"hf-metalr compare: --threads must be >= 1, got {args.threads}")
    metalr_options = {}
    if args.metalr_policy:
        metalr_options["policy"] = args.metalr_policy
    if args.metalr_no_learn_online:
        metalr_options["learn_online"] = False

    import torch

    from ..reporting import write_report
    from .session import check_settings, compare

    try:
        check_settings(args.task, schedules, seeds, lr=args.lr, epochs=args.epochs, metalr_options=metalr_options)
    except ValueError as exc:
        raise SystemExit(f"hf-metalr compare: {exc}")

    torch.set_num_threads(args.threads)
    print(f"hf-metalr compare: task {args.task}, schedules {','.join(schedules)}, seeds {seeds} -> {args.out}")
    try:
        compare(args.task, schedules, seeds, args.out, lr=args.lr, epochs=args.epochs, resume=args.resume,
                metalr_options=metalr_options or None, skipped=skipped)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished runs are kept in {args.out / 'results.json'}; rerun with --resume to continue"
              f"{_partial_report(args.out)}", file=sys.stderr)
        return 130
    except (FileExistsError, ValueError) as exc:
        raise SystemExit(f"hf-metalr compare: {exc}")
    report = write_report(args.out)
    print(f"report: {report}")
    return 0
