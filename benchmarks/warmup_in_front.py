"""A warmup in front of the callback, on the unseen families: is it worth making the controller's own?

Joins the runs of ``benchmarks/default_schedule.py --schedule constant_with_warmup --warmups 0.06`` on
the unseen families (``constant_with_warmup`` and ``constant_with_warmup+metalr``) with those of
``benchmarks/unseen_families.py`` (``constant``, ``metalr`` and the LR-free peers, no warmup) by
family, LR band and seed, and prints a markdown table: medians of the final test metric, and the
paired per-seed counts (better/same/worse, median difference; > 0 when the first is better) of
warmup+metalr against metalr and against the constant LR, with metalr's against the constant LR
beside them. Reads files only; trains nothing.

    python benchmarks/warmup_in_front.py benchmarks/results/warmup_in_front/runs.jsonl \\
        benchmarks/results/unseen_families/runs.jsonl benchmarks/results/unseen_families_third/runs.jsonl
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

WARMUP, WARMUP_METALR = "constant_with_warmup", "constant_with_warmup+metalr"
BANDS = (0.1, 1.0, 10.0)


def read_runs(path: Path) -> list[dict]:
    return [r for r in (json.loads(line) for line in Path(path).read_text().splitlines() if line.strip())
            if r.get("status") == "ok"]


@functools.lru_cache(maxsize=1)
def _families():
    """``benchmarks/unseen_families.py``, imported once."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import unseen_families

    return unseen_families


def family_of(task: str) -> str:
    """``benchmarks/unseen_families.py:MaskedLMTask`` -> ``mlm`` (the family's ``name``)."""
    return getattr(_families(), task.split(":", 1)[1]).name if ":" in task else task


def lower_is_better(family: str) -> bool:
    """The family's metric direction, as its ``Task`` declares it."""
    return not _families().TASKS[family].greater_is_better


def paired(first: dict, second: dict, lower_is_better: bool) -> tuple[int, int, int, float] | None:
    """Per seed in both: (first better, same, worse, median difference, > 0 when first is better)."""
    sign = -1 if lower_is_better else 1
    diffs = [sign * (first[s] - second[s]) + 0.0 for s in sorted(set(first) & set(second))]
    if not diffs:
        return None
    return (sum(d > 1e-9 for d in diffs), sum(abs(d) <= 1e-9 for d in diffs), sum(d < -1e-9 for d in diffs),
            statistics.median(diffs))


def cells(warmup_runs: list[dict], plain_runs: list[dict]) -> list[dict]:
    """One row per (family, band) that has warmup+metalr runs: each schedule's values by seed."""
    warmups = sorted({r["warmup"] for r in warmup_runs})
    if len(warmups) != 1:
        raise ValueError(f"the warmup runs hold {len(warmups)} warmup lengths ({warmups}): give one file per length")
    rows = []
    for family in sorted({family_of(r["task"]) for r in warmup_runs}):
        mine = [r for r in warmup_runs if family_of(r["task"]) == family]
        theirs = [r for r in plain_runs if r["task"] == family]
        metric = next(iter(mine[0]["test"]))
        good = sorted({r["lr"] for r in theirs if r["schedule"] == "metalr"})
        if len(good) != len(BANDS):
            raise ValueError(f"{family}: expected metalr at {len(BANDS)} LRs in the unseen families' runs, found {good}")
        good_lr = good[1]
        for band in BANDS:
            values = {v: {r["seed"]: r["test"][metric] for r in mine if abs(r["multiplier"] - band) < 1e-9
                          and r["variant"] == v} for v in (WARMUP, WARMUP_METALR)}
            if not values[WARMUP_METALR]:
                continue
            for schedule in ("constant", "metalr", "schedule-free"):
                values[schedule] = {r["seed"]: r["test"][metric] for r in theirs if r["schedule"] == schedule
                                    and abs(r["lr"] - band * good_lr) <= 1e-6 * band * good_lr}
            values["prodigy"] = {r["seed"]: r["test"][metric] for r in theirs if r["schedule"] == "prodigy"}
            rows.append({"family": family, "metric": metric, "band": band, "values": values})
    return rows


def to_markdown(rows: list[dict]) -> tuple[str, dict]:
    order = ("constant", "metalr", WARMUP, WARMUP_METALR, "schedule-free", "prodigy")
    lines = ["| family (test metric) | LR | constant | metalr | warmup | warmup + metalr | warmup + metalr vs metalr "
             "| warmup + metalr vs constant | metalr vs constant | Schedule-Free | Prodigy |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = ("warmup + metalr vs metalr", "warmup + metalr vs constant", "metalr vs constant")
    totals = {(name, band): [0, 0, 0] for name in names for band in (*BANDS, "all")}

    def show_pair(first, second, lower, name, band):
        got = paired(first, second, lower)
        if got is None:
            return "–"
        for key in ((name, band), (name, "all")):
            for i in range(3):
                totals[key][i] += got[i]
        return f"{got[0]}/{got[1]}/{got[2]}, {got[3]:+.4f}"

    for row in rows:
        v, lower = row["values"], lower_is_better(row["family"])
        medians = {k: f"{statistics.median(v[k].values()):.4f}" if v[k] else "–" for k in order}
        lines.append(f"| {row['family']} ({row['metric']}) | x{row['band']:g} | {medians['constant']} | {medians['metalr']} | "
                     f"{medians[WARMUP]} | {medians[WARMUP_METALR]} | "
                     f"{show_pair(v[WARMUP_METALR], v['metalr'], lower, names[0], row['band'])} | "
                     f"{show_pair(v[WARMUP_METALR], v['constant'], lower, names[1], row['band'])} | "
                     f"{show_pair(v['metalr'], v['constant'], lower, names[2], row['band'])} | "
                     f"{medians['schedule-free']} | {medians['prodigy']} |")
    lines += ["", "Seed pairs, better/same/worse, by band:", "", "| pair | x0.1 | x1 | x10 | all |", "|---|---|---|---|---|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join("{}/{}/{}".format(*totals[(name, band)]) for band in (*BANDS, "all")) + " |")
    return "\n".join(lines) + "\n", totals


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("warmup_runs", type=Path, help="runs.jsonl of default_schedule.py --schedule constant_with_warmup")
    parser.add_argument("plain_runs", type=Path, nargs="+", help="runs.jsonl of unseen_families.py")
    a = parser.parse_args(argv)
    plain = [r for path in a.plain_runs for r in read_runs(path)]
    table, _ = to_markdown(cells(read_runs(a.warmup_runs), plain))
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
