"""The drift at a constant LR, with and without the weights that start at zero (a probe: nothing acts on it).

The controller's ``param_drift`` is the distance the trained weights have moved over their starting
norm (``GradientAlignment.drift``, read on its sketch). Its rules take a drift of 1 or more as "moved
far": with no progress it holds a raise, with no positive distance estimate it cuts. A LoRA's B
matrices start at zero, so its starting norm is its A matrices' alone; a linear model or an
embedding table may start far smaller than its solution. This trains the constant schedule of each
family at 0.1x, 1x and 10x its recorded good LR and prints, at a few steps, the drift over every
trained weight and the drift without the tensors that started at exactly zero (over all
coordinates, not the sketch).

    python benchmarks/drift_of_small_starts.py --tasks lora-gpt2-shift,linear-lstsq,opt-markov
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
import unseen_families  # noqa: E402
from hf_metalr.compare.runner import build_trainer  # noqa: E402


class DriftProbe(TrainerCallback):
    """``readings``: ``(step, drift over every trained weight, drift without the tensors that started at zero)``
    at each of ``steps``."""

    def __init__(self, model, steps):
        self.model, self.steps, self.readings = model, set(steps), []

    def on_train_begin(self, args, state, control, **kwargs):
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.start = [p.detach().clone() for p in self.params]
        self.started_nonzero = [bool(s.any()) for s in self.start]

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            self.readings.append((state.global_step, *drifts(self.params, self.start, self.started_nonzero)))


def drifts(params, start, started_nonzero) -> tuple[float, float]:
    """``|θ - θ_0| / |θ_0|`` over every tensor, and over those with ``started_nonzero`` only."""
    moved = [float((p.detach() - s).pow(2).sum()) for p, s in zip(params, start)]
    norms = [float(s.pow(2).sum()) for s in start]
    kept = [k for k, nonzero in enumerate(started_nonzero) if nonzero]
    return ((sum(moved) / sum(norms)) ** 0.5,
            (sum(moved[k] for k in kept) / sum(norms[k] for k in kept)) ** 0.5)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="lora-gpt2-shift,linear-lstsq,opt-markov")
    p.add_argument("--multipliers", default="0.1,1,10")
    p.add_argument("--steps", default="8,32,320,630", help="the optimizer steps to read the drift at")
    p.add_argument("--epochs", type=int, default=None, help="per run (default: the task's, 10)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    steps = [int(s) for s in a.steps.split(",")]
    print("| family | LR | " + " | ".join(f"step {s}" for s in steps) + " |")
    print("|---|---|" + "---|" * len(steps))
    for name in a.tasks.split(","):
        task = unseen_families.TASKS[name]
        for multiplier in map(float, a.multipliers.split(",")):
            lr = float(f"{task.learning_rate * multiplier:.12g}")
            with tempfile.TemporaryDirectory() as out:
                trainer = build_trainer(task, "constant", 0, Path(out), learning_rate=lr, epochs=a.epochs)
                probe = DriftProbe(trainer.model, steps)
                trainer.add_callback(probe)
                trainer.train()
            cells = {step: f"{full:.2f} ({kept:.2f})" for step, full, kept in probe.readings}
            print(f"| {name} | x{multiplier:g} ({lr:g}) | " + " | ".join(cells.get(s, "–") for s in steps) + " |",
                  flush=True)
    print("\nEach cell: the drift over every trained weight (in brackets: without the tensors that started at zero); "
          "seed 0, the constant LR.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
