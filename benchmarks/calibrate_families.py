"""Find each meta-training family's good constant LR per optimizer (the centre of the LR sweep).

For every training family and optimizer kind (Adam/AdamW share one entry), a grid of constant
LRs is run on ``--problems`` sampled problems (frozen architecture/data/budget draws, the LR
replaced). The good LR is the grid point with the lowest mean ``mean_log_objective`` (mean log
validation loss over the run, a divergence penalised). The table it prints is what
``hf_metalr.meta.families.GOOD_LR`` holds.

    python benchmarks/calibrate_families.py --problems 4 --workers 2
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from hf_metalr.meta.episode import run_episode
from hf_metalr.meta.families import GOOD_LR, TRAIN_FAMILIES, HELD_OUT_FAMILIES, sample_problem

GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def _mean_log_objective(job):
    import torch

    torch.set_num_threads(1)
    spec, seed = job
    return run_episode(spec, None, seed).mean_log_objective


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--held-out", action="store_true", help="calibrate the held-out families instead")
    parser.add_argument("--families", default="", help="comma-separated subset of the families to calibrate")
    args = parser.parse_args(argv)

    families = HELD_OUT_FAMILIES if args.held_out else TRAIN_FAMILIES
    if args.families:
        chosen = args.families.split(",")
        unknown = sorted(set(chosen) - set(families))
        if unknown:
            parser.error(f"--families: unknown {', '.join(unknown)}; choose from {', '.join(families)}")
        families = tuple(f for f in families if f in chosen)
    table = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for family in families:
            for kind in ("adam", "sgd"):
                rng = np.random.default_rng([args.seed, len(family), ord(kind[0])])
                bases = []
                for _ in range(args.problems):
                    spec = sample_problem(rng, family)
                    spec["optimizer"] = kind
                    bases.append(spec)
                centre = GOOD_LR[(family, kind)]
                jobs = [({**s, "lr": centre * g}, i) for g in GRID for i, s in enumerate(bases)]
                scores = np.array(list(pool.map(_mean_log_objective, jobs))).reshape(len(GRID), len(bases))
                means = scores.mean(1)
                best = GRID[int(np.argmin(means))]
                table[f"{family}/{kind}"] = {"current": centre, "best_factor": best, "best_lr": centre * best,
                                             "mean_log_objective_by_factor": dict(zip(map(str, GRID), np.round(means, 3).tolist()))}
                print(f"{family:22s} {kind:5s} current {centre:.2g}  best x{best:g} -> {centre * best:.2g}  "
                      + "  ".join(f"x{g:g}:{m:+.2f}" for g, m in zip(GRID, means)), flush=True)
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
