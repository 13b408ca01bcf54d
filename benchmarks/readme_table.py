"""Print the README's results table from ``make meta-eval``'s ``meta_eval.json``, so the front
page is copied from the measurement, not retyped.

    python benchmarks/readme_table.py [benchmarks/results/meta_eval/meta_eval.json]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

DEFAULT = Path(__file__).parent / "results" / "meta_eval" / "meta_eval.json"


def evals(value) -> str:
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return "–"
    return f"{value:g}"


def table(tasks: list[dict]) -> str:
    lines = [
        "| task (threshold) | LR | metalr | constant | best static | best LR-free | metalr-random | "
        "final test, metalr vs constant (median; seeds better/same/worse) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        threshold = task["threshold"].split(" ", 1)[1]
        for i, (multiplier, cell) in enumerate(task["by_multiplier"].items()):
            median, test = cell["median_evals"], cell["median_test"]
            static, lr_free = cell["best_static"], cell["best_lr_free"]
            paired = cell["metalr_vs_constant_test_by_seed"]
            name = f"{task['task']} ({threshold})" if i == 0 else ""
            lines.append(
                f"| {name} | x{float(multiplier):g} | **{evals(median['metalr'])}** | {evals(median['constant'])} | "
                f"{evals(median[static])} ({static}) | {evals(median[lr_free])} ({lr_free}) | "
                f"{evals(median['metalr-random'])} | {test['metalr']:.3f} vs {test['constant']:.3f} "
                f"({paired['better']}/{paired['same']}/{paired['worse']}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DEFAULT
    print(table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
