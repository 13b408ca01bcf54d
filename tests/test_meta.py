"""Meta-training: episodes share the controller's code, PPO runs are seeded, resumable and backend-independent."""

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

import forked_job
from hf_metalr import FEATURE_NAMES, MetaLRController, load_policy
from hf_metalr.controller import early_guard
from hf_metalr.controller.features import DIVERGENCE_REWARD, REWARD_CLIP
from hf_metalr.controller.policy import random_policy
from hf_metalr.meta.cli import build_parser
from hf_metalr.meta.episode import Episode, decision_rewards, mean_log_objective, objective_auc, run_episode
from hf_metalr.controller.serialization import text_to_tensors
from hf_metalr.meta.families import GOOD_BAND, HELD_OUT_FAMILIES, TRAIN_FAMILIES, build_problem, good_lr, sample_problem
from hf_metalr.meta.held_out import TARGET_FRACTION, evals_to_target, held_out_problems, held_out_scores, lr_band
from hf_metalr.meta.ppo import PPOConfig, ppo_update, relative_rewards
from hf_metalr.meta.train import CHECKPOINT_NAME, MetaTrainConfig, meta_train

TINY = dict(iterations=2, episodes_per_iteration=3, eval_every=1, held_out_per_family=1, backend="serial", workers=1)


def quick_spec(family="blobs_mlp", **over):
    spec = sample_problem(np.random.default_rng(3), family)
    spec.update({"epochs": 2, "evals_per_epoch": 3, **over})
    return spec


def test_every_family_builds_and_trains():
    rng = np.random.default_rng(0)
    for family in TRAIN_FAMILIES + HELD_OUT_FAMILIES:
        spec = sample_problem(rng, family)
        assert spec["family"] == family
        problem = build_problem(spec)
        out = problem.model(problem.train[0][:4])
        assert out.shape[0] == 4
    specs = [sample_problem(rng, "blobs_mlp") for _ in range(600)]
    factors = np.array([s["lr"] / good_lr(s["family"], s["optimizer"]) for s in specs])
    assert factors.max() / factors.min() > 1000, "initial LRs must span at least 1000x"
    # a third each: well chosen, too low, too high (like the x1 / x0.1 / x10 evaluation sweep)
    well = np.abs(np.log10(factors)) < GOOD_BAND
    assert 0.27 < well.mean() < 0.4 and 0.27 < (np.log10(factors) <= -GOOD_BAND).mean() < 0.4
    assert {sample_problem(rng, "spirals_mlp")["optimizer"] for _ in range(50)} == {"adam", "adamw", "sgd"}


def test_xor_family_plateaus_at_a_low_lr_and_leaves_the_plateau_at_a_good_one():
    rng = np.random.default_rng(1)
    spec = {**sample_problem(rng, "xor_mlp"), "optimizer": "adam", "width": 64, "depth": 2, "epochs": 6,
            "evals_per_epoch": 2, "batch_size": 32, "init_scale": 0.25}
    assert 0.1 <= sample_problem(rng, "xor_mlp")["init_scale"] <= 0.3
    assert "init_scale" not in sample_problem(rng, "blobs_mlp")  # only xor_mlp problems carry it
    low = run_episode({**spec, "lr": good_lr("xor_mlp", "adam") * 0.1}, None, seed=0).values
    good = run_episode({**spec, "lr": good_lr("xor_mlp", "adam")}, None, seed=0).values
    # at 0.1x the loss sits at ln 2 for the first evaluations: no linear signal, a saddle at the small init
    assert all(abs(v - math.log(2)) < 0.02 for v in low[:3])
    assert min(good) < 0.55 < min(low[:3])


def test_char_lm_loss_stays_smooth_at_a_too_high_lr_and_ends_worse():
    """The family the loss-texture heuristic gets wrong: at 10x its good LR the validation loss falls
    smoothly (no step up of more than 2%; the largest is CPU-dependent, under 1% on an AMD EPYC,
    1.5% on an Intel Xeon, while at 100x the loss jumps 9%) and levels off above where the good LR
    gets."""
    spec = {**sample_problem(np.random.default_rng(1), "char_lm"), "optimizer": "adam", "epochs": 5}
    good = run_episode({**spec, "lr": good_lr("char_lm", "adam")}, None, seed=0).values
    high = run_episode({**spec, "lr": good_lr("char_lm", "adam") * 10}, None, seed=0).values
    assert max(b / a for a, b in zip(high, high[1:])) < 1.02
    assert high[-1] > good[-1] + 0.15


def test_episode_transitions_come_from_the_controller():
    spec = quick_spec()
    episode = run_episode(spec, random_policy(1), seed=5)
    n = len(episode.actions)
    # the episode watches the gradients, so the policy acts (under the gate) from the first evaluation on:
    # every decision but the last, which nothing rewards, is a transition
    assert episode.first_decision == 0 and episode.lrs[0] == spec["lr"]
    assert n == len(episode.values) - 1 == len(episode.rewards) == len(episode.obs)
    assert all(len(o) == len(FEATURE_NAMES) for o in episode.obs)
    # the reward is the controller's: the clipped log-improvement of the validation loss
    v = episode.values
    for t, r in enumerate(episode.rewards):
        assert r == pytest.approx(max(-REWARD_CLIP, min(REWARD_CLIP, math.log(v[t]) - math.log(v[t + 1]))))
    # same problem, seed and policy -> the same episode
    again = run_episode(spec, random_policy(1), seed=5)
    assert again.values == episode.values and again.actions == episode.actions


def test_an_episode_reads_its_optimizers_kind_as_the_callback_does(monkeypatch):
    """Meta-training's episodes on SGD with momentum run under the heavy-ball rule, on Adam under the distance check."""
    seen = []
    read = MetaLRController.read_optimizer

    def recording(controller, optimizer):
        read(controller, optimizer)
        seen.append((type(optimizer).__name__, controller.heavy_ball, controller.steps_per_coordinate))

    monkeypatch.setattr(MetaLRController, "read_optimizer", recording)
    for optimizer in ("sgd", "adam"):
        run_episode(quick_spec(optimizer=optimizer), random_policy(1), seed=5)
    assert seen == [("SGD", True, False), ("Adam", False, True)]


def test_divergence_is_penalised_and_ends_the_episode(monkeypatch):
    # lr 300: the first two evaluations are finite, so the policy acts once before the divergence. The early-divergence
    # guard would rescue this run before the first evaluation (tests/test_early_guard.py): off, to reach a divergence
    monkeypatch.setattr(early_guard, "MAX_CUTS", 0)
    spec = quick_spec(optimizer="sgd", lr=300.0, epochs=3)
    episode = run_episode(spec, random_policy(0), seed=0)
    assert episode.diverged and len(episode.rewards) >= 1
    assert episode.rewards[-1] == DIVERGENCE_REWARD
    assert not math.isfinite(episode.values[-1])
    assert mean_log_objective([1.0, float("nan"), 0.5]) == pytest.approx((0 + 2 * (0 - DIVERGENCE_REWARD)) / 3)
    with pytest.deprecated_call():  # the old name still works for a release
        assert objective_auc([1.0, float("nan"), 0.5]) == mean_log_objective([1.0, float("nan"), 0.5])


def test_constant_baseline_episode_keeps_the_lr():
    episode = run_episode(quick_spec(), None, seed=0)
    assert episode.actions == [] and episode.lrs == [] and len(episode.values) == 6


def test_baseline_rewards_are_the_controllers_rewards():
    spec = quick_spec()
    policy_run = run_episode(spec, random_policy(2), seed=4)
    assert decision_rewards(policy_run.values)[policy_run.first_decision :] == pytest.approx(policy_run.rewards)
    # a divergence: the penalty, then nothing (the run is over), one reward per decision after the first
    assert decision_rewards([1.0, 0.5, float("nan"), float("nan")]) == pytest.approx([math.log(2), DIVERGENCE_REWARD, 0.0])
    # a constant run of the same problem and seed is the counterfactual: same init and data order
    a, b = run_episode(spec, None, seed=4), run_episode(spec, None, seed=4)
    assert a.values == b.values and a.values[0] == policy_run.values[0]


def _synthetic_episodes(n, good_action, rng):
    """Episodes where ``good_action`` beats the constant baseline by 0.5 per decision, others lose 0.1."""
    episodes = []
    for _ in range(n):
        actions = rng.integers(0, 5, 6).tolist()
        obs = rng.normal(0, 1, (6, len(FEATURE_NAMES))).tolist()
        baseline = rng.normal(0, 1, 6).tolist()  # the problem's own difficulty: large, action-independent
        rewards = [b + (0.5 if a == good_action else -0.1) for a, b in zip(actions, baseline)]
        episodes.append(Episode(obs=obs, actions=actions, rewards=rewards, baseline_rewards=baseline))
    return episodes


def test_ppo_learns_from_the_advantage_over_the_constant_baseline():
    rng = np.random.default_rng(0)
    policy = random_policy(0)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    episodes = _synthetic_episodes(64, good_action=4, rng=rng)
    assert relative_rewards(episodes[0]) == pytest.approx([0.5 if a == 4 else -0.1 for a in episodes[0].actions])
    probe = torch.tensor(rng.normal(0, 1, (200, len(FEATURE_NAMES))), dtype=torch.float32)
    before = torch.softmax(policy(probe)[0], -1)[:, 4].mean().item()
    for i in range(5):
        stats = ppo_update(policy, optimizer, episodes, PPOConfig(epochs=4, minibatch_size=64), torch.Generator().manual_seed(i))
        # the diagnostics of a healthy update: a small KL, some clipped ratios at most, a critic that explains something
        assert 0 <= stats["approx_kl"] < 0.5 and 0 <= stats["clipfrac"] <= 1 and stats["explained_variance"] <= 1
        assert stats["transitions"] == 64 * 6
    after = torch.softmax(policy(probe)[0], -1)[:, 4].mean().item()
    assert after > before + 0.2, (before, after)


def test_meta_training_takes_the_ppo_defaults():
    """One set of PPO defaults: hf-metalr meta-train's are PPOConfig's."""
    config, ppo = MetaTrainConfig(out="x"), PPOConfig()
    assert (config.ppo_lr, config.ppo_epochs, config.ppo_minibatch) == (ppo.lr, ppo.epochs, ppo.minibatch_size)


def _weights(path):
    return {k: v for k, v in load_policy(path).state_dict().items()}


@pytest.mark.slow
def test_meta_training_is_seeded_resumable_and_writes_its_outputs(tmp_path):
    # seeded: run c below, one iteration and then one more on resume, ends in exactly a's weights
    a = meta_train(MetaTrainConfig(out=str(tmp_path / "a"), **TINY), log=lambda *_: None)
    assert any(not torch.equal(v, random_policy(0).state_dict()[k]) for k, v in _weights(a).items())

    card = json.loads(a.with_suffix(".json").read_text())["card"]
    assert card["episodes"] == 6 and card["seed"] == 0 and card["training_families"] == list(TRAIN_FAMILIES)
    assert card["held_out_families"] == list(HELD_OUT_FAMILIES) and card["held_out_score_final"] is not None
    assert (tmp_path / "a" / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = json.loads((tmp_path / "a" / CHECKPOINT_NAME).read_text())
    curve = checkpoint["curve"]
    assert [c["iteration"] for c in curve] == [1, 2] and all("held_out_score" in c for c in curve)
    for key in ("approx_kl", "clipfrac", "explained_variance"):  # a stuck or collapsing PPO run shows here
        assert all(key in c and (math.isnan(c[key]) or math.isfinite(c[key])) for c in curve), key
    # the shipped policy is the scored iteration with the lowest held-out evals ratio; the last one is kept beside it
    ratios = {c["iteration"]: c["held_out_evals_ratio"] for c in curve}
    assert card["selected_iteration"] == min(ratios, key=lambda i: (ratios[i], i))
    assert card["held_out_evals_ratios"] == {str(i): round(r, 4) for i, r in ratios.items()}
    for k, v in text_to_tensors(checkpoint["best"]["policy"]).items():
        assert torch.equal(v, _weights(a)[k])
    for k, v in text_to_tensors(checkpoint["policy"]).items():
        assert torch.equal(v, _weights(tmp_path / "a" / "final_policy.safetensors")[k])

    half = dict(TINY)
    meta_train(MetaTrainConfig(out=str(tmp_path / "c"), **{**half, "iterations": 1}), log=lambda *_: None)
    with pytest.raises(ValueError, match=r"other settings \(seed: 0 stored, 1 given\)"):
        meta_train(MetaTrainConfig(out=str(tmp_path / "c"), **{**half, "seed": 1}, resume=True), log=lambda *_: None)
    # a finished run goes on with more --iterations, as the run started with them (every iteration scored here)
    extended = meta_train(MetaTrainConfig(out=str(tmp_path / "c"), **half, resume=True), log=lambda *_: None)
    for k, v in _weights(a).items():
        assert torch.equal(v, _weights(extended)[k])
    assert json.loads(extended.with_suffix(".json").read_text())["card"]["episodes"] == 6
    with pytest.raises(ValueError, match=r"other settings \(iterations: 2 stored, 1 given\)"):  # more only
        meta_train(MetaTrainConfig(out=str(tmp_path / "c"), **{**half, "iterations": 1}, resume=True), log=lambda *_: None)
    said = []
    unchanged = meta_train(MetaTrainConfig(out=str(tmp_path / "c"), **{**half, "iterations": None}, resume=True),
                           log=said.append)  # no --iterations on resume: the stored count, nothing more to run
    assert not any("extending" in line for line in said) and json.loads(unchanged.with_suffix(".json").read_text())[
        "card"]["iterations"] == 2
    assert MetaTrainConfig(out="x").iterations is None and "default 30; with --resume the stored count" in _fresh_default_note()
    old = json.loads((tmp_path / "c" / CHECKPOINT_NAME).read_text())
    (tmp_path / "c" / CHECKPOINT_NAME).write_text(json.dumps({**old, "format": 1}))
    with pytest.raises(ValueError, match="checkpoint format 1"):
        meta_train(MetaTrainConfig(out=str(tmp_path / "c"), **{**half, "iterations": 2}, resume=True), log=lambda *_: None)


@pytest.mark.slow
def test_meta_training_can_start_from_the_shipped_policy(tmp_path):
    from hf_metalr.controller.policy import PolicyLoadError, save_policy
    from hf_metalr.policies import default_policy_path

    start = save_policy(load_policy(default_policy_path()), tmp_path / "start")
    # with a zero PPO step the policy never moves, so what comes out is exactly what it started from
    config = MetaTrainConfig(out=str(tmp_path / "ft"), init_policy=str(start), ppo_lr=0.0, **{**TINY, "iterations": 1})
    out = meta_train(config, log=lambda *_: None)
    for k, v in _weights(default_policy_path()).items():
        assert torch.equal(v, _weights(out)[k])
    card = json.loads(out.with_suffix(".json").read_text())["card"]
    assert card["initialized_from"] == str(start)
    # the start is scored as iteration 0; an unchanged policy scores the same and never displaces it
    assert card["selected_iteration"] == 0
    for key in ("held_out_evals_ratios", "held_out_evals_ratios_by_lr_band", "held_out_scores"):
        assert set(card[key]) == {"0", "1"}, key
    assert len(set(card["held_out_evals_ratios"].values())) == 1

    saved = json.loads((tmp_path / "ft" / CHECKPOINT_NAME).read_text())
    assert round(saved["start"]["held_out_evals_ratio"], 4) == card["held_out_evals_ratios"]["0"]
    # a checkpoint written before init_policy existed lacks the key: it reads as the default, not as other settings
    plain = MetaTrainConfig(out=str(tmp_path / "plain"), **{**TINY, "iterations": 1})
    meta_train(plain, log=lambda *_: None)
    old = json.loads((tmp_path / "plain" / CHECKPOINT_NAME).read_text())
    del old["config"]["init_policy"]
    (tmp_path / "plain" / CHECKPOINT_NAME).write_text(json.dumps(old))
    meta_train(MetaTrainConfig(out=str(tmp_path / "plain"), **{**TINY, "iterations": 1}, resume=True), log=lambda *_: None)

    # resuming after the starting file changed is refused: the run would no longer be what it says
    resumed = meta_train(MetaTrainConfig(**{**asdict(config), "resume": True}), log=lambda *_: None)
    assert json.loads(resumed.with_suffix(".json").read_text())["card"]["selected_iteration"] == 0
    save_policy(random_policy(7), start.with_suffix(""))
    with pytest.raises(ValueError, match="not the policy this run started from"):
        meta_train(MetaTrainConfig(**{**asdict(config), "resume": True}), log=lambda *_: None)
    with pytest.raises(PolicyLoadError, match="does not exist"):
        meta_train(MetaTrainConfig(out=str(tmp_path / "missing"), init_policy=str(tmp_path / "nope.safetensors"), **TINY),
                   log=lambda *_: None)


def test_evals_to_target_counts_a_miss_as_one_past_the_end():
    assert evals_to_target([0.5, 0.8, 0.9, 0.95], 0.9) == 3
    assert evals_to_target([0.5, float("nan"), None, 0.7], 0.9) == 5
    assert evals_to_target([], 0.9) == 1 and evals_to_target([0.1, 0.2], 0.9, miss=11) == 11


def test_held_out_scores_compare_the_policy_with_the_constant_lr():
    problems = held_out_problems(0, 6)
    assert {spec["family"] for spec, _ in problems} == set(HELD_OUT_FAMILIES) and len(problems) == 12
    assert problems == held_out_problems(0, 6) and problems != held_out_problems(1, 6)
    assert {lr_band(spec) for spec, _ in problems} == {"good", "low", "high"}
    slow = [0.2, 0.5, 0.7, 0.8, 0.85, 0.9]
    fast = [0.2, 0.7, 0.9, 0.9, 0.9, 0.9]
    constant = [{"accuracies": slow, "mean_log_objective": 0.0} for _ in problems]
    policy = [{"accuracies": fast if i % 2 else slow, "mean_log_objective": -0.1 if i % 2 else 0.0} for i in range(len(problems))]
    scores = held_out_scores(problems, constant, policy)
    # a checkpoint written before the rename keeps the baseline's mean log-objective under "auc"
    legacy = [{"accuracies": slow, "auc": 0.0} for _ in problems]
    assert held_out_scores(problems, legacy, policy) == scores
    # target 0.97 x 0.9: slow reaches it at evaluation 6, fast at 3; half the problems are twice as fast
    assert TARGET_FRACTION * 0.9 > 0.85
    assert scores["evals_ratio"] == pytest.approx(0.5**0.5)
    assert scores["loss_score"] == pytest.approx(0.05)
    # a policy run that diverged at evaluation 2 stopped there: it is a miss over the whole run, not a fast finish
    diverged = [{"accuracies": [0.2, 0.1], "mean_log_objective": 2.0} for _ in problems]
    assert held_out_scores(problems, constant, diverged)["evals_ratio"] == pytest.approx(7 / 6)
    regression = [{"accuracies": [None] * 6, "mean_log_objective": 0.0} for _ in problems]
    assert math.isnan(held_out_scores(problems, regression, regression)["evals_ratio"])


@pytest.mark.slow
def test_meta_training_resumes_after_a_kill(tmp_path):
    args = ["--iterations", "2", "--episodes-per-iteration", "3", "--eval-every", "1", "--held-out-per-family", "1",
            "--backend", "serial", "--workers", "1"]
    # each run in a process of its own (forked_job: the package's CLI, without a fresh interpreter's imports)
    straight_run = forked_job.run("hf_metalr.cli", "meta-train", "--out", tmp_path / "straight", *args)
    assert straight_run.returncode == 0, straight_run.stderr[-3000:]
    straight = tmp_path / "straight" / "policy.safetensors"

    killed = tmp_path / "killed"
    proc = forked_job.start("hf_metalr.cli", "meta-train", "--out", killed, *args)
    deadline = time.time() + 240
    while time.time() < deadline:
        ckpt = killed / CHECKPOINT_NAME
        if ckpt.exists() and json.loads(ckpt.read_text())["iteration"] >= 1:
            break
        time.sleep(0.2)
    proc.kill()
    iteration_at_kill = json.loads((killed / CHECKPOINT_NAME).read_text())["iteration"]
    assert iteration_at_kill == 1 and not (killed / "policy.safetensors").exists()

    resumed = forked_job.run("hf_metalr.cli", "meta-train", "--out", killed, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for k, v in _weights(straight).items():
        assert torch.equal(v, _weights(killed / "policy.safetensors")[k])


@pytest.mark.slow
def test_ray_backend_matches_the_local_one(tmp_path):
    import ray
    one = {**TINY, "iterations": 1, "episodes_per_iteration": 2}
    serial = meta_train(MetaTrainConfig(out=str(tmp_path / "serial"), **one), log=lambda *_: None)
    try:
        on_ray = meta_train(MetaTrainConfig(out=str(tmp_path / "ray"), **{**one, "backend": "ray", "workers": 2}),
                            log=lambda *_: None)
    finally:
        ray.shutdown()
    assert not ray.is_initialized()
    for k, v in _weights(serial).items():
        assert torch.equal(v, _weights(on_ray)[k])


def test_cli_documents_every_field_and_rejects_bad_input(tmp_path, capsys):
    text = build_parser().format_help()
    for flag in ("--out", "--iterations", "--episodes-per-iteration", "--seed", "--workers", "--backend", "--resume"):
        assert flag in text
    from hf_metalr.meta.cli import main

    with pytest.raises(SystemExit, match="backend"):
        main(["--out", str(tmp_path), "--backend", "slurm", "--iterations", "1"])


def test_a_nan_held_out_ratio_never_displaces_a_real_one():
    from hf_metalr.meta.train import _improves

    nan = float("nan")
    assert _improves(1.2, None) and _improves(0.8, {"evals_ratio": 0.9}) and not _improves(0.9, {"evals_ratio": 0.9})
    assert _improves(1.5, {"evals_ratio": nan}) and not _improves(nan, {"evals_ratio": 0.9})


def test_the_ray_backend_joins_the_cluster_ray_address_names(monkeypatch):
    """With RAY_ADDRESS set, ray.init gets no num_cpus (ray refuses it for a running cluster); without
    it, a local instance of --workers CPUs starts."""
    import ray

    from hf_metalr.meta.train import EpisodeRunner

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray, "remote", lambda **kwargs: (lambda f: f))
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    EpisodeRunner("ray", 3)
    monkeypatch.delenv("RAY_ADDRESS")
    EpisodeRunner("ray", 3)
    assert "num_cpus" not in calls[0] and calls[1]["num_cpus"] == 3


def test_ctrl_c_in_meta_train_says_how_to_continue(tmp_path, monkeypatch, capsys):
    from hf_metalr.meta import cli

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "meta_train", interrupted)
    # before the first iteration is finished there is no checkpoint, and nothing to resume
    assert cli.main(["--out", str(tmp_path / "m"), "--iterations", "1"]) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first iteration was finished: nothing was kept" in err and "--resume" not in err
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "meta_checkpoint.json").write_text("{}")
    assert cli.main(["--out", str(tmp_path / "m"), "--iterations", "1"]) == 130
    err = capsys.readouterr().err
    assert f"every finished iteration is kept in {tmp_path / 'm' / 'meta_checkpoint.json'}" in err and "--resume" in err


def _fresh_default_note() -> str:
    """The meta-train --help text of --iterations."""
    from hf_metalr.meta.cli import build_parser

    return next(a.help for a in build_parser()._actions if "--iterations" in a.option_strings)
