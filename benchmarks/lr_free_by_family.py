"""metalr against the LR-free optimizers on the unseen families, read off the committed sweeps.

No run is trained: for each AdamW sweep under ``benchmarks/results/unseen_families*/`` (those that
hold Prodigy's runs), each family and band (0.1x, 1x, 10x the LR Prodigy's row was recorded at),
the median final test metric over seeds 0-2 of ``metalr`` (the callback on the constant schedule),
of Schedule-Free AdamW at the same LR and of Prodigy (which ignores the LR), and whether metalr is
ahead of, level with or behind the better of the two. Prints a markdown table and the counts.

    python benchmarks/lr_free_by_family.py
"""

from __future__ import annotations

import collections
import importlib.util
import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SWEEPS = ("unseen_families", "unseen_families_third", "unseen_families_fourth", "unseen_families_fifth",
          "unseen_families_sixth", "unseen_families_seventh", "unseen_families_lora", "unseen_families_finetune",
          "unseen_families_eighth", "unseen_families_ninth", "unseen_families_tenth")
BANDS = (("0.1x", 0.1), ("1x", 1.0), ("10x", 10.0))
SEEDS = (0, 1, 2)


def _families():
    spec = importlib.util.spec_from_file_location("unseen_families", Path(__file__).parent / "unseen_families.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TASKS


def verdict(metalr: float, peer: float, sign: int) -> str:
    difference = sign * (metalr - peer)
    return "level" if abs(difference) <= 1e-9 else ("ahead" if difference > 0 else "behind")


def main() -> int:
    tasks = _families()
    counts = collections.Counter()
    lines = ["| family (test metric) | 0.1x: metalr / schedule-free / prodigy | 1x | 10x |", "|---|---|---|---|"]
    for sweep in SWEEPS:
        rows = [json.loads(line) for line in (RESULTS / sweep / "runs.jsonl").read_text().splitlines()]
        rows = [r for r in rows if r.get("optimizer", "adamw") == "adamw" and r["status"] == "ok" and r["seed"] in SEEDS]
        for name in sorted({r["task"] for r in rows}):
            task = tasks[name]
            metric, sign = task.test_metrics[0], (1 if task.greater_is_better else -1)
            runs = [r for r in rows if r["task"] == name]
            prodigy_runs = [r for r in runs if r["schedule"] == "prodigy"]
            base = prodigy_runs[0]["lr"]
            prodigy = statistics.median(r["test"][metric] for r in prodigy_runs)
            cells = []
            for band, multiplier in BANDS:
                lr = float(f"{base * multiplier:.12g}")

                def median(schedule):
                    return statistics.median(r["test"][metric] for r in runs if r["schedule"] == schedule and r["lr"] == lr)

                metalr, free = median("metalr"), median("schedule-free")
                better = max(free, prodigy, key=lambda v: sign * v)
                counts[band, "the better peer", verdict(metalr, better, sign)] += 1
                counts[band, "schedule-free", verdict(metalr, free, sign)] += 1
                counts[band, "prodigy", verdict(metalr, prodigy, sign)] += 1
                cells.append(f"{metalr:.4g} / {free:.4g} / {prodigy:.4g} {verdict(metalr, better, sign)}")
            lines.append(f"| {name} ({metric}) | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    print()
    print("| band, against | ahead | level | behind |\n|---|---|---|---|")
    for band, _ in BANDS:
        for peer in ("the better peer", "schedule-free", "prodigy"):
            print(f"| {band}, {peer} | " + " | ".join(str(counts[band, peer, v]) for v in ("ahead", "level", "behind")) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
