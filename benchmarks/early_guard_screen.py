"""Does the early-divergence guard fire where it should, and only there?

Two checks, no Trainer task in either:

1. **A fine-tune whose first batch is lucky** (the case a bar set by the first loss gets wrong):
   batch losses of a classifier that is already right on all but a fraction ``p`` of its examples (per-example loss 0.02 when right, 3.0 when wrong; batch 16), ``--sim-runs`` runs
   of 100 steps each, fed to the guard alone. Reports how many runs the guard would cut, and how
   deep, for each ``p``.
2. **Meta-training problems.** Every family (training and held-out), ``--problems`` problems each,
   at 0.1x, 1x, 3x and 10x the family's good LR, run by ``run_episode`` under the shipped policy
   (greedy), once with the guard and once without (``MAX_CUTS`` set to 0), on the same
   problem and seed. Per band: how many runs the guard changed (their LR after the decisions
   or its validation values do), and how many of those ended better or worse (mean log
   validation objective).

Prints both tables; the committed output is ``benchmarks/results/early_guard_screen.txt``.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

import hf_metalr.controller.early_guard as early_guard
from hf_metalr.controller.policy import load_policy
from hf_metalr.meta.episode import run_episode
from hf_metalr.meta.families import HELD_OUT_FAMILIES, TRAIN_FAMILIES, problem_at_lr_factor
from hf_metalr.policies import default_policy_path

BANDS = (0.1, 1.0, 3.0, 10.0)


def episode(spec: dict, policy, seed: int, *, guard: bool):
    cuts = early_guard.MAX_CUTS
    early_guard.MAX_CUTS = cuts if guard else 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return run_episode(spec, policy, seed, greedy=True)
    finally:
        early_guard.MAX_CUTS = cuts


def screen_problems(problems: int, seed: int) -> None:
    policy = load_policy(default_policy_path())
    print(f"\n2. meta-training problems ({problems} per family and band; problem rng seed {seed} + k)")
    print("family                 band   changed  better/worse")
    totals = {band: [0, 0, 0, 0] for band in BANDS}
    for family in list(TRAIN_FAMILIES) + list(HELD_OUT_FAMILIES):
        for band in BANDS:
            changed = better = worse = 0
            for k in range(problems):
                spec = problem_at_lr_factor(seed + k, family, band)
                on, off = episode(spec, policy, k, guard=True), episode(spec, policy, k, guard=False)
                if on.lrs != off.lrs or on.values != off.values:
                    changed += 1
                    better += on.mean_log_objective < off.mean_log_objective
                    worse += on.mean_log_objective > off.mean_log_objective
            total = totals[band]
            total[0] += problems
            total[1] += changed
            total[2] += better
            total[3] += worse
            print(f"{family:22s} x{band:<5g} {changed:3d}/{problems}  {better}/{worse}", flush=True)
    print("pooled:")
    for band, (runs, changed, better, worse) in totals.items():
        print(f"  x{band:<5g} {runs} problems: the guard changed {changed}, better {better}, worse {worse}")


def simulate_lucky_first_batch(runs: int, seed: int) -> None:
    print(f"1. a fine-tune with a lucky first batch ({runs} runs of 100 steps, batch 16, "
          "per-example loss 0.02 right / 3.0 wrong)")
    rng = np.random.default_rng(seed)
    for p in (0.01, 0.03, 0.1, 0.3):
        cut_runs, cuts = 0, []
        for _ in range(runs):
            wrong = rng.binomial(16, p, size=100)
            wrong[0] = 0  # the lucky first batch
            guard = early_guard.EarlyDivergenceGuard()
            n = sum(guard.observe(0.02 + 3.0 * w / 16) for w in wrong)
            cut_runs += n > 0
            cuts.append(n)
        print(f"  p = {p:<5g} runs with a cut: {cut_runs}/{runs}; cuts per run: mean {np.mean(cuts):.2f}, max {max(cuts)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", type=int, default=4, help="problems per family and band")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--sim-runs", type=int, default=1000)
    a = p.parse_args(argv)
    simulate_lucky_first_batch(a.sim_runs, a.seed)
    screen_problems(a.problems, a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
