"""benchmarks/select_policy.py (pick among restarts by validation) and screen_policy.py's per-seed table."""

import re
from pathlib import Path

import pytest

from hf_metalr import random_policy, save_policy
from hf_metalr.policies import default_policy_path

from benchmark_scripts import load_benchmark as _load


@pytest.mark.slow
def test_select_policy_scores_every_candidate_on_one_pooled_set_and_picks_the_lowest(tmp_path, capsys):
    select = _load("select_policy")
    random_path = save_policy(random_policy(3), tmp_path / "random")
    assert select.main([str(default_policy_path()), str(random_path), "--problem-seeds", "0,1", "--per-family", "1",
                        "--backend", "serial"]) == 0
    out = capsys.readouterr().out
    lines = re.findall(r"^(\S+): held-out evals ratio ([0-9.]+) \(([^)]*)\)", out, re.M)
    ratios = {Path(name).name: float(ratio) for name, ratio, _ in lines}
    worst_band = {Path(name).name: max(float(v) for v in re.findall(r"[0-9.]+", bands)) for name, _, bands in lines}
    assert set(ratios) == {"default.safetensors", "random.safetensors"}
    assert "on 4 problems from problem seeds 0,1" in out  # 2 seeds x 2 held-out families x 1
    picked = Path(re.search(r"^pick: (\S+)", out, re.M).group(1)).name
    qualifying = [n for n in ratios if worst_band[n] <= 1.0]
    if qualifying:  # the lowest ratio among the candidates no slower than a constant LR in any band
        assert ratios[picked] == min(ratios[n] for n in qualifying) and "warning" not in out
    else:
        assert ratios[picked] == min(ratios.values()) and "warning: no candidate" in out


def test_select_policy_refuses_a_missing_policy_before_any_run(tmp_path):
    from hf_metalr import PolicyLoadError

    with pytest.raises(PolicyLoadError, match="does not exist"):
        _load("select_policy").main([str(tmp_path / "nothing.safetensors")])


def test_screen_per_seed_line_pairs_candidate_and_shipped_by_seed():
    screen = _load("screen_policy")

    def run(seed, evals):
        return {"seed": seed, "threshold": {"reached": evals is not None, "evals": evals}}

    candidate = [run(1, 4), run(0, 3), run(2, None)]
    shipped = [run(0, 5), run(1, 4), run(2, 6)]
    assert screen.per_seed_lines("digits", 10.0, candidate, shipped) == "| digits x10 | 3 4 – | 5 4 6 | 1/1/1 |"


def test_screen_refuses_bad_arguments_before_any_run(tmp_path, capsys):
    screen = _load("screen_policy")
    policy = str(default_policy_path())
    with pytest.raises(SystemExit):
        screen.main([policy, "--out", str(tmp_path), "--baseline", str(tmp_path / "missing")])
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        screen.main([policy, "--out", str(tmp_path), "--baseline", str(tmp_path), "--task-seeds", "digits=ten"])
    assert "'digits=ten' is not TASK=N" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing ran


@pytest.mark.slow
def test_screen_runs_the_candidate_and_summarizes_it_against_the_baseline(tmp_path):
    from hf_metalr.compare import compare
    from hf_metalr.tasks import get_task

    lr = get_task("digits").learning_rate
    compare("digits", ["constant"], [0], tmp_path / "baseline" / "digits-lr_x1", lr=lr)
    screen = _load("screen_policy")
    assert screen.main([str(default_policy_path()), "--out", str(tmp_path / "screen"), "--baseline",
                        str(tmp_path / "baseline"), "--tasks", "digits", "--seeds", "1", "--multipliers", "1"]) == 0
    text = (tmp_path / "screen" / "screen.md").read_text()
    assert text.startswith(f"# Screen of {default_policy_path()} (metalr column)")
    assert "| digits x1 | " in text  # the per-seed line, the candidate's run beside the (absent) shipped one


def test_autocorrelation_window_stats_agree_on_independent_cosines_and_discount_correlated_ones():
    import numpy as np

    stats = _load("alignment_autocorrelation").window_stats
    rng = np.random.default_rng(0)
    independent = [stats(0.05 + rng.normal(size=64)) for _ in range(400)]
    ratios = [abs(hac / naive) for _, naive, hac in independent]
    assert 0.9 < float(np.median(ratios)) < 1.1, "the two t-statistics share one variance scale"
    assert abs(float(np.median([rho for rho, _, _ in independent]))) < 0.05
    correlated = []
    for _ in range(400):
        x = np.zeros(64)
        for i in range(1, 64):
            x[i] = 0.6 * x[i - 1] + rng.normal()
        correlated.append(stats(0.05 + x))
    assert float(np.median([rho for rho, _, _ in correlated])) > 0.4
    assert float(np.median([abs(hac / naive) for _, naive, hac in correlated])) < 0.8, "Newey-West discounts the evidence"


def test_autocorrelation_records_every_step_cosine_between_decisions(monkeypatch):
    import torch

    from hf_metalr.controller.alignment import GradientAlignment

    script = _load("alignment_autocorrelation")
    for name in ("_fold", "take"):  # record_cosines patches the class; monkeypatch puts the originals back
        monkeypatch.setattr(GradientAlignment, name, getattr(GradientAlignment, name))
    sink = []
    script.record_cosines(sink)
    theta = torch.nn.Parameter(torch.randn(30))
    alignment = GradientAlignment([theta])
    for _ in range(2):
        for _ in range(8):
            theta.grad = theta.detach().clone()
            alignment.before_step()
            with torch.no_grad():
                theta -= 0.1 * theta.grad
            alignment.after_step()
        alignment.take()
    windows = script.windows(sink)
    assert [len(w) for w in windows] == [7, 8], "the first step has no previous update"
    assert all(abs(c - 1.0) < 1e-5 for w in windows for c in w), "gradient descent on |theta|^2 keeps its direction"
