"""Pick among meta-trained policies (restarts of one recipe with other seeds) by validation alone.

PPO restarts differ a lot: with today's recipe, seed 2 kept a policy scoring 0.96 where seeds 0
and 1 scored 0.81. Each ``meta-train`` run scores itself on the held-out families' problems of
its own seed, so their ratios are not comparable. This script scores every candidate on one
pooled set, the held-out problems of several seeds (``--problem-seeds``, 20 per family each, the
same problems ``meta-train --seed S`` scores), against the same constant-LR runs, with
``meta.train``'s own scoring. The pick is the lowest held-out evals ratio among the candidates no
slower than the constant LR in any LR band (every band's ratio <= ``--max-band-ratio``, 1.0: a
policy that helps on average but hurts one band breaks the promise "never worse than leaving the
LR alone"); when none qualifies, the lowest ratio, with a warning. No Trainer task is involved,
so the pick is not made on the evaluation tasks.

    python benchmarks/select_policy.py runs/meta-v11/policy.safetensors runs/meta-v11s1/policy.safetensors ...

Prints one line per candidate (ratio, by LR band, loss score) and the pick.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from hf_metalr import load_policy
from hf_metalr.controller.serialization import tensors_to_text
from hf_metalr.meta.held_out import held_out_problems
from hf_metalr.meta.train import EpisodeRunner, score_held_out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("policies", nargs="+", type=Path)
    p.add_argument("--problem-seeds", default="0,1,2", help="held-out problem sets to pool (meta-train seeds)")
    p.add_argument("--per-family", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--backend", default="process", help="where the episodes run: process or serial")
    p.add_argument("--max-band-ratio", type=float, default=1.0,
                   help="a candidate qualifies only if its ratio in every LR band is at most this")
    a = p.parse_args(argv)
    candidates = [(path, load_policy(path)) for path in a.policies]  # a bad file fails before any run
    problems = [pr for s in a.problem_seeds.split(",") for pr in held_out_problems(int(s), a.per_family)]
    runner = EpisodeRunner(a.backend, a.workers)
    try:
        constant = runner.map([(None, None, spec, seed, True) for spec, seed in problems])
        baseline = [episode.held_out_summary() for episode in constant]
        scores = []
        for path, policy in candidates:
            s = score_held_out(runner, tensors_to_text(policy.state_dict()), asdict(policy.config), problems, baseline)
            qualifies = max(s["held_out_evals_ratio_by_band"].values()) <= a.max_band_ratio
            scores.append((not qualifies, s["held_out_evals_ratio"], path))
            bands = ", ".join(f"{b} {v:.3f}" for b, v in s["held_out_evals_ratio_by_band"].items())
            print(f"{path}: held-out evals ratio {s['held_out_evals_ratio']:.4f} ({bands}), "
                  f"loss score {s['held_out_score']:+.3f}", flush=True)
    finally:
        runner.close()
    failed, ratio, best = min(scores)
    if failed:
        print(f"warning: no candidate has every LR band's ratio <= {a.max_band_ratio}; picking the lowest overall ratio")
    print(f"pick: {best} ({ratio:.4f} on {len(problems)} problems from problem seeds {a.problem_seeds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
