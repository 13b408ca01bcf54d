"""The raise ceiling at another fraction of the distance estimate, side by side (a probe: the shipped one is 1).

``hf_metalr.controller.gate.RAISE_CEILING`` bounds a raise: it takes the LR of the steps as far as that
many times the distance estimate. On a pretrained GPT-2 fine-tuned at its good LR the callback's raises on
the fine-tune's aligned first steps took the LR to 0.49-0.86 times the estimate and cost every seed
(docs/evaluation.md, the full fine-tune). This trains, per family and LR multiple, the constant LR and
``metalr`` (the callback on the constant schedule) under each ceiling on the same seeds, and prints the
final test metric of each run.

    python benchmarks/raise_ceiling_probe.py --cells gpt2-shift-finetune:1,gpt2-shift-finetune:0.1,opt-markov:0.1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import unseen_families  # noqa: E402
from hf_metalr.controller import gate  # noqa: E402


def final_metrics(task, lr: float, schedule: str, seeds, epochs: int | None, ceiling: float) -> list[float]:
    """The first test metric of ``schedule``'s run on each seed, under ``RAISE_CEILING = ceiling`` (restored after)."""
    shipped, gate.RAISE_CEILING = gate.RAISE_CEILING, ceiling
    try:
        with tempfile.TemporaryDirectory() as out:
            return [unseen_families.run(task, lr, seed, schedule, Path(out), {}, epochs, log=lambda *a: None)["test"]
                    [task.test_metrics[0]] for seed in seeds]
    finally:
        gate.RAISE_CEILING = shipped


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", default="gpt2-shift-finetune:1,gpt2-shift-finetune:0.1,opt-markov:0.1,"
                                      "lora-gpt2-shift:0.1,lora-gpt2-shift:1",
                   help="family:multiple of its recorded good LR, comma-separated")
    p.add_argument("--ceilings", default="1,0.5")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="per run (default: the task's, 10)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    ceilings = [float(c) for c in a.ceilings.split(",")]
    seeds = range(a.seeds)
    print("| family (metric) | LR | constant | " + " | ".join(f"metalr, ceiling {c:g}" for c in ceilings) + " |")
    print("|---|---|---|" + "---|" * len(ceilings))
    for cell in a.cells.split(","):
        name, multiple = cell.split(":")
        task = unseen_families.TASKS[name]
        lr = float(f"{task.learning_rate * float(multiple):.12g}")
        columns = [final_metrics(task, lr, "constant", seeds, a.epochs, gate.RAISE_CEILING)]
        columns += [final_metrics(task, lr, "metalr", seeds, a.epochs, c) for c in ceilings]
        print(f"| {name} ({task.test_metrics[0]}) | x{float(multiple):g} ({lr:g}) | "
              + " | ".join(" / ".join(f"{v:.4f}" for v in column) for column in columns) + " |", flush=True)
    print("\nEach cell: the final test metric of seeds " + ", ".join(map(str, seeds)) + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
