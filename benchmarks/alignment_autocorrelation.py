"""Is ``grad_alignment_t`` overconfident because per-step cosines are autocorrelated?

``AlignmentWindow.t`` treats the per-step cosines between two decisions as independent. AdamW's
momentum could correlate them, which would make the t-statistic claim more evidence than there
is. This script measures it: it runs meta-training problems (all nine families, three problems
each, at x0.1, x1 and x10 of the family's good LR, under the shipped policy and gate, as
meta-training runs them), records every optimizer step's cosine, and per decision window reports

- the lag-1 autocorrelation of the cosines within the window;
- the t-statistic as the controller computes it, and with a Newey-West (Bartlett, lag 2) standard
  error that allows for autocorrelation, both on the same (n - 1) scale;
- how often each says ``|t| >= 2`` (the gate's evidence bar).

Short windows bias both the sample autocorrelation (towards about -1/n) and the Newey-West t, so
every statistic is also computed on the same window's cosines in a shuffled order (serial
dependence removed, values kept): the difference between the two is the autocorrelation.

The per-step cosines are read by wrapping ``GradientAlignment._fold`` (the code that adds the
pending steps to the sums), so the run itself is the one the controller sees. No Trainer task
enters. Prints a table per family and band, then the pooled numbers.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

import numpy as np
import torch

from hf_metalr.controller import alignment as alignment_module
from hf_metalr.controller.policy import load_policy
from hf_metalr.meta.episode import run_episode
from hf_metalr.meta.families import HELD_OUT_FAMILIES, TRAIN_FAMILIES, problem_at_lr_factor
from hf_metalr.policies import default_policy_path

MIN_STEPS = 6  # windows with fewer steps give no usable autocorrelation


def record_cosines(sink: list) -> None:
    """Append every step's cosine to ``sink`` as the alignment folds it, and None at each decision."""
    cls = alignment_module.GradientAlignment
    fold, take = cls._fold, cls.take

    def recording_fold(self):
        if self._pending:
            dot, g_norm, descent_norm = torch.stack(self._pending).unbind(1)
            sink.extend((dot / (g_norm * descent_norm)).tolist())
        return fold(self)

    def recording_take(self):
        window = take(self)
        sink.append(None)
        return window

    cls._fold, cls.take = recording_fold, recording_take


def windows(sink: list) -> list[np.ndarray]:
    out, current = [], []
    for x in sink:
        if x is None:
            out.append(np.array([v for v in current if math.isfinite(v)]))
            current = []
        else:
            current.append(x)
    return [w for w in out if len(w) >= MIN_STEPS and w.std() > 0]


def window_stats(w: np.ndarray) -> tuple[float, float, float]:
    """(lag-1 autocorrelation, the controller's t, Newey-West t) of one window's cosines; both
    t-statistics use the (n - 1) variance scale, so they agree when the cosines are independent."""
    n, m = len(w), w.mean()
    centred = w - m
    g0 = float(np.mean(centred**2))
    g1 = float(np.sum(centred[:-1] * centred[1:]) / n)
    g2 = float(np.sum(centred[:-2] * centred[2:]) / n)
    scale = n / (n - 1)
    naive_t = m / math.sqrt(g0 * scale / n)
    hac = max((g0 + 2 * (2 / 3 * g1 + 1 / 3 * g2)) * scale, 1e-12)
    return g1 / g0, naive_t, m / math.sqrt(hac / n)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", type=int, default=3, help="problems per family")
    p.add_argument("--seed", type=int, default=100, help="first problem seed")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    sink: list = []
    record_cosines(sink)
    policy = load_policy(default_policy_path())
    shuffle = np.random.default_rng(0)
    pooled = {key: [] for key in ("rho", "naive", "hac", "rho_shuffled", "hac_shuffled")}
    print("family                 band   windows  lag-1 rho: measured / shuffled (median)  |t|>=2: controller / "
          "Newey-West / Newey-West shuffled")
    for family in TRAIN_FAMILIES + HELD_OUT_FAMILIES:
        for band in (0.1, 1.0, 10.0):
            cell = {key: [] for key in pooled}
            for k in range(a.problems):
                spec = problem_at_lr_factor(a.seed + k, family, band)
                sink.clear()
                run_episode(spec, policy, k, greedy=True)
                for w in windows(sink):
                    rho, t_naive, t_hac = window_stats(w)
                    rho_shuffled, _, t_hac_shuffled = window_stats(shuffle.permutation(w))
                    for key, value in (("rho", rho), ("naive", abs(t_naive) >= 2), ("hac", abs(t_hac) >= 2),
                                       ("rho_shuffled", rho_shuffled), ("hac_shuffled", abs(t_hac_shuffled) >= 2)):
                        cell[key].append(value)
            if not cell["rho"]:
                continue
            for key in pooled:
                pooled[key] += cell[key]
            print(f"{family:22s} x{band:<5g} {len(cell['rho']):7d}  {statistics.median(cell['rho']):+17.2f} / "
                  f"{statistics.median(cell['rho_shuffled']):+.2f}  {np.mean(cell['naive']):27.2f} / "
                  f"{np.mean(cell['hac']):.2f} / {np.mean(cell['hac_shuffled']):.2f}", flush=True)
    print(f"pooled over {len(pooled['rho'])} windows: lag-1 autocorrelation median {statistics.median(pooled['rho']):+.3f} "
          f"(shuffled: {statistics.median(pooled['rho_shuffled']):+.3f}); |t| >= 2 in {np.mean(pooled['naive']):.3f} of "
          f"windows with the controller's t, {np.mean(pooled['hac']):.3f} with the Newey-West t "
          f"({np.mean(pooled['hac_shuffled']):.3f} on the shuffled windows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
