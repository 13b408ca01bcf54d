"""The framework-agnostic controller: observation, reward, actions, learner, policy files, state."""

import json
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_metalr import MetaLRCallback, MetaLRController, PolicyLoadError, load_policy, random_policy, save_policy
from hf_metalr.controller.features import FEATURE_NAMES, RunTracker


def run(ctrl, values, start=0, total=None):
    total = total or len(values)
    return [
        ctrl.observe(v, progress=(start + i) / total, train_loss=1.0 + 0.1 * (start + i)) for i, v in enumerate(values)
    ]


def test_reward_is_log_improvement_for_loss_and_accuracy():
    loss = RunTracker(greater_is_better=False)
    loss.observe(2.0)
    loss.commit()
    _, reward = loss.observe(1.0)
    assert reward == pytest.approx(math.log(2.0))

    acc = RunTracker(greater_is_better=True)
    acc.observe(0.8)  # error 0.2
    acc.commit()
    _, reward = acc.observe(0.9)  # error 0.1
    assert reward == pytest.approx(math.log(2.0))


def test_objective_mode_boundary_and_the_warning_when_a_score_read_as_bounded_passes_one():
    from hf_metalr.controller.features import objective_mode

    assert objective_mode(1.0, True) == "error" and objective_mode(1.0001, True) == "inverse"
    assert objective_mode(0.3, False) == "loss"
    bleu = RunTracker(greater_is_better=True)  # BLEU on 0-100 that starts below 1 at initialisation
    bleu.observe(0.4)
    bleu.commit()
    with pytest.warns(RuntimeWarning, match="above 1, where that mapping saturates"):
        bleu.observe(5.0)
    bleu.commit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per run
        bleu.observe(20.0)
    assert RunTracker.from_dict(bleu.to_dict()).warned_unbounded


@pytest.mark.parametrize("first", [-0.3, -1.5])
def test_a_score_bounded_by_one_that_starts_negative_is_one_minus_the_score(first):
    # a correlation, Matthews' coefficient or R^2 at initialisation: 1 - value stays a positive objective
    score = RunTracker(greater_is_better=True)
    score.observe(first)
    score.commit()
    _, reward = score.observe(0.5)
    assert reward == pytest.approx(math.log((1 - first) / 0.5))
    score.commit()
    _, reward = score.observe(0.75)
    assert reward == pytest.approx(math.log(2.0))


def test_features_are_scale_free():
    def features(values):
        t = RunTracker()
        out = None
        for v in values:
            t.observe(v)
            out = t.features(0.5, 1.0, 1.0)
            t.commit()
        return out

    assert features([2.0, 1.5, 1.6]) == pytest.approx(features([2000.0, 1500.0, 1600.0]))
    assert list(features([2.0])) == list(FEATURE_NAMES)
    f = features([2.0, 1.5, 1.6])
    assert f["objective_vs_best"] == pytest.approx(math.log(1.6 / 1.5))
    assert f["objective_trend"] == pytest.approx(math.log(1.6 / 1.5))
    assert f["previous_objective_trend"] == pytest.approx(math.log(1.5 / 2.0))
    assert f["improving_streak"] == 0.0  # 1.6 did not improve on 1.5
    f = features([3.0, 2.0, 1.9, 1.8, 1.85, 1.7, 1.6, 1.5])
    assert f["improving_streak"] == pytest.approx(0.3) and f["evals_since_best"] == 0.0
    first = features([3.0])
    assert first["objective_trend"] == first["previous_objective_trend"] == first["improving_streak"] == 0.0


def test_train_loss_features_trend_and_step_to_step_noise():
    t = RunTracker()
    t.observe(2.0)
    for loss in [1.0, 2.0, 1.0, 2.0]:
        t.observe_train_loss(loss)
    f = t.features(0.1, 1.0, 1.0)
    assert f["train_loss_noise"] == pytest.approx(math.log(2.0))  # every step moved the log loss by log 2
    assert f["train_loss_trend"] == 0.0  # nothing to compare with before the second decision
    t.commit()
    # the next interval: a smooth, falling loss, scale-free, and two processes' stretches that add up
    t.observe(1.5)
    t.observe_train_losses([0.9, 0.81])
    t.observe_train_losses([1.08, 0.972])  # a stretch of its own: no step from 0.81 to 1.08
    f = t.features(0.2, 1.0, 1.0)
    assert f["train_loss_noise"] == pytest.approx(-math.log(0.9))
    assert f["train_loss_trend"] == pytest.approx(math.log((0.9 + 0.81 + 1.08 + 0.972) / 4 / 1.5))
    t.commit()
    # a single value (a logged mean) gives the trend but no noise; a non-finite loss is skipped
    t.observe(1.4)
    t.observe_train_losses([0.7])
    t.observe_train_loss(float("nan"))
    f = t.features(0.3, 1.0, 1.0)
    assert f["train_loss_noise"] == 0.0
    assert f["train_loss_trend"] == pytest.approx(math.log(0.7 / ((0.9 + 0.81 + 1.08 + 0.972) / 4)))
    t.commit()
    t.observe(1.3)  # no training loss at all since the last decision: no trend, no noise
    f = t.features(0.4, 1.0, 1.0)
    assert f["train_loss_trend"] == 0.0 and f["train_loss_noise"] == 0.0
    assert RunTracker.from_dict(json.loads(json.dumps(t.to_dict()))) == t


def test_format_2_controller_state_loads():
    ctrl = MetaLRController(1e-3, seed=0)
    run(ctrl, [2.0, 1.8, 1.7])
    state = json.loads(json.dumps(ctrl.state_dict()))
    state["format"] = 2  # what hf_metalr wrote before the per-step training losses
    tracker = state["tracker"]
    for key in ("window_count", "window_sum", "window_abs_log_steps", "window_steps", "last_log_train_loss"):
        tracker.pop(key)
    tracker["train_loss"] = tracker["train_loss_at_decision"]
    restored = MetaLRController(1e-3, seed=0)
    restored.load_state_dict(state)
    # the whole state comes back: what format 2 saved as it was, the loss window it lacks empty
    back, saved = json.loads(json.dumps(restored.state_dict())), json.loads(json.dumps(ctrl.state_dict()))
    assert back["format"] == saved["format"]
    assert {k: v for k, v in back.items() if k != "tracker"} == {k: v for k, v in saved.items() if k != "tracker"}
    empty = RunTracker(greater_is_better=tracker["greater_is_better"]).to_dict()
    assert back["tracker"] == {**empty, **{k: v for k, v in tracker.items() if k != "train_loss"}}
    assert back["history"] and back["decision_index"] == 3 and back["meta_optimizer"]
    assert [d.lr for d in run(restored, [1.6, 1.5], start=3, total=3)] == [d.lr for d in run(ctrl, [1.6, 1.5], start=3, total=3)]


def test_a_state_saved_for_another_initial_lr_is_refused_naming_both():
    ctrl = MetaLRController(1e-3, policy="random", seed=0)
    run(ctrl, [2.0, 1.8])
    with pytest.raises(ValueError, match=r"the checkpoint was saved with initial_lr=0.001, and this controller's "
                                         r"initial_lr is 0.002"):
        MetaLRController(2e-3, policy="random", seed=0).load_state_dict(ctrl.state_dict(), source="the checkpoint")


def test_policy_reads_its_own_features_by_name(tmp_path):
    """A policy trained on a subset of the features (as before train_loss_noise existed) loads and
    sees exactly those features, in its order; one naming a feature this version lacks is refused."""
    from hf_metalr.controller.policy import PolicyConfig

    names = [n for n in FEATURE_NAMES if n != "train_loss_noise"][::-1]
    policy = random_policy(1, PolicyConfig(features=names))
    save_policy(policy, tmp_path / "old")
    ctrl = MetaLRController(1e-3, policy=str(tmp_path / "old.safetensors"), seed=0)
    decisions = run(ctrl, [2.0, 1.8])
    assert ctrl.observation(decisions[-1].features) == [decisions[-1].features[n] for n in names]
    assert set(decisions[-1].features) == set(FEATURE_NAMES)  # the trace shows every feature
    save_policy(random_policy(1, PolicyConfig(features=names + ["gradient_noise_scale"])), tmp_path / "future")
    with pytest.raises(PolicyLoadError, match="does not compute \\['gradient_noise_scale'\\]"):
        load_policy(tmp_path / "future.json")


def test_same_seed_same_decisions_other_seed_differs():
    values = [2.0 / (1 + 0.1 * i) for i in range(30)]
    a = [d.lr for d in run(MetaLRController(1e-3, policy="random", seed=3), values)]
    b = [d.lr for d in run(MetaLRController(1e-3, policy="random", seed=3), values)]
    c = [d.lr for d in run(MetaLRController(1e-3, policy="random", seed=4), values)]
    assert a == b
    assert a != c


def test_policy_creation_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    MetaLRController(1e-3, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_meta_learner_is_adam_at_1e4_and_learns_online():
    ctrl = MetaLRController(1e-3, seed=0)
    assert isinstance(ctrl.learner.optimizer, torch.optim.Adam)
    assert ctrl.learner.optimizer.param_groups[0]["lr"] == 1e-4
    before = [p.clone() for p in ctrl.policy.parameters()]
    decisions = run(ctrl, [1.0, 0.9, 0.8, 0.85])
    # the first decision is the fixed keep (nothing to learn from); the policy's decisions are learned from
    assert [d.by_policy for d in decisions] == [False, True, True, True] and decisions[0].action == 1.0
    assert [d.learned for d in decisions] == [False, False, True, True]
    assert any(not torch.equal(b, p) for b, p in zip(before, ctrl.policy.parameters()))

    frozen = MetaLRController(1e-3, seed=0, learn_online=False)
    before = [p.clone() for p in frozen.policy.parameters()]
    run(frozen, [1.0, 0.9, 0.8])
    assert all(torch.equal(b, p) for b, p in zip(before, frozen.policy.parameters()))
    assert MetaLRController(1e-3, meta_lr=3e-3).learner.optimizer.param_groups[0]["lr"] == 3e-3


def test_a_decision_as_a_dict_has_every_field_and_its_own_features():
    from dataclasses import asdict

    decision = run(MetaLRController(1e-3, policy="random", seed=5), [2.0, 1.8])[-1]
    record = decision.as_dict()
    assert record == asdict(decision) and set(record) == {"index", "value", "reward", "multiplier", "applied",
                                                          "action_index", "by_policy", "lr", "scale", "learned",
                                                          "diverged", "features", "gate", "evidence", "rule", "rewound",
                                                          "start_over"}
    decision.features["objective_trend"] = 99.0  # the history keeps what was seen, not a later change
    assert record["features"]["objective_trend"] != 99.0


def test_state_dict_through_json_continues_identically():
    values = [2.0, 1.8, 1.7, 1.75, 1.5, 1.45, 1.46, 1.3, 1.31, 1.2, 1.1, 1.12]
    full = MetaLRController(1e-3, policy="random", seed=5)
    full_decisions = run(full, values)

    first = MetaLRController(1e-3, policy="random", seed=5)
    run(first, values[:6], total=len(values))
    saved = json.loads(json.dumps(first.state_dict()))
    resumed = MetaLRController(1e-3, policy="random", seed=5)
    resumed.load_state_dict(saved)
    rest = run(resumed, values[6:], start=6, total=len(values))
    assert [d.as_dict() for d in rest] == [d.as_dict() for d in full_decisions[6:]]
    for a, b in zip(full.policy.parameters(), resumed.policy.parameters()):
        assert torch.equal(a, b)
    assert resumed.history == full.history


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_metric_lowers_lr_and_is_not_learned(bad):
    ctrl = MetaLRController(1e-3, policy="random", seed=0)
    run(ctrl, [1.0, 0.9])
    lr_before = ctrl.lr
    weights = [p.clone() for p in ctrl.policy.parameters()]
    with pytest.warns(RuntimeWarning, match="divergence"):
        d = ctrl.observe(bad, progress=0.5)
    assert d.diverged and not d.learned and d.lr < lr_before
    assert all(torch.equal(w, p) for w, p in zip(weights, ctrl.policy.parameters()))
    after = ctrl.observe(0.95, progress=0.6)
    assert not after.learned  # the transition into the divergence is dropped


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-300, 1e300, -1e300, 2.0, 0.5]),
)


@settings(max_examples=60, deadline=None)
@given(stream=st.lists(values, min_size=1, max_size=40), seed=st.integers(0, 2**16), greater=st.booleans())
def test_lr_stays_finite_positive_and_within_bounds(stream, seed, greater):
    ctrl = MetaLRController(1e-3, policy="random", seed=seed, min_lr=1e-5, max_lr=1e-2, greater_is_better=greater)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i, v in enumerate(stream):
            d = ctrl.observe(v, progress=i / len(stream), train_loss=abs(v) if math.isfinite(v) else None)
            assert math.isfinite(d.lr) and d.lr > 0
            assert 1e-5 * (1 - 1e-12) <= d.lr <= 1e-2 * (1 + 1e-12)
            assert all(math.isfinite(x) for x in (d.features or {}).values())
            cut_short = d.multiplier != 1 and not math.isclose(d.applied, d.multiplier, rel_tol=1e-9)
            assert ("capped by" in (d.evidence or "")) == cut_short  # no gate here: what is asked is what is moved


def test_a_move_that_a_bound_cuts_short_says_so_in_its_evidence():
    from test_alignment import always

    ctrl = MetaLRController(1e-3, policy=always(4), max_lr=1.5e-3, gate=False)
    assert ctrl.multipliers[4] == 2.0
    first, second, third = (ctrl.observe(v, progress=0.1 * i) for i, v in enumerate([1.0, 0.9, 0.8]))
    assert first.applied == 1.0 and first.evidence is None  # the first evaluation keeps the LR without a gate
    assert second.applied == pytest.approx(1.5) and second.evidence == "capped by max_lr=0.0015: x1.5 applied instead of x2"
    assert third.applied == 1.0 and third.evidence == "capped by max_lr=0.0015: x1 applied instead of x2"


def test_default_bounds_are_relative_to_initial_lr():
    ctrl = MetaLRController(2e-4)
    assert ctrl.min_lr == pytest.approx(2e-7) and ctrl.max_lr == pytest.approx(2e-2)
    with pytest.raises(ValueError, match="min_lr"):
        MetaLRController(1e-3, min_lr=1e-2)
    with pytest.raises(ValueError, match="initial_lr"):
        MetaLRController(float("nan"))


def test_plain_loop_usage_scales_every_param_group():
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD([{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.01}])
    ctrl = MetaLRController(initial_lr=0.1, policy="random", seed=1)
    for i, v in enumerate([1.0, 0.8, 0.9, 0.7]):
        d = ctrl.observe(v, progress=i / 4)
        ctrl.scale_param_groups(opt)
        assert opt.param_groups[0]["lr"] == pytest.approx(d.lr)
        assert opt.param_groups[1]["lr"] / opt.param_groups[0]["lr"] == pytest.approx(0.1)


# -- policy files ---------------------------------------------------------------------------------


def test_policy_roundtrip(tmp_path):
    net = random_policy(11)
    path = save_policy(net, tmp_path / "p", card={"episodes": 3})
    assert path.suffix == ".safetensors" and (tmp_path / "p.json").exists()
    loaded = load_policy(tmp_path / "p.safetensors")
    for a, b in zip(net.parameters(), loaded.parameters()):
        assert torch.equal(a, b)
    assert loaded.config.card == {"episodes": 3}
    obs = torch.randn(5, len(net.config.features))
    assert torch.equal(net.actor(obs), loaded.actor(obs))


def test_saved_policy_is_as_readable_as_any_new_file(tmp_path):
    """The weights get the mode the umask gives a new file, as the card does (safetensors 0.8 alone
    leaves 0600: a policy another user of a shared machine could not load)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        weights = save_policy(random_policy(0), tmp_path / "shared")
    finally:
        os.umask(old)
    assert stat.S_IMODE(weights.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == 0o644


def _saved(tmp_path):
    save_policy(random_policy(0), tmp_path / "p")
    return tmp_path / "p.safetensors", tmp_path / "p.json"


def test_corrupt_weights_named_in_error(tmp_path):
    weights, _ = _saved(tmp_path)
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(PolicyLoadError, match="p.safetensors.*corrupt"):
        MetaLRCallback(policy=str(weights))


def test_corrupt_config_named_in_error(tmp_path):
    weights, config = _saved(tmp_path)
    config.write_text("{ not json")
    with pytest.raises(PolicyLoadError, match="p.json"):
        MetaLRCallback(policy=str(weights))


def test_wrong_version_named_in_error(tmp_path):
    weights, config = _saved(tmp_path)
    data = json.loads(config.read_text())
    data["format_version"] = 99
    config.write_text(json.dumps(data))
    with pytest.raises(PolicyLoadError, match="p.json.*version 99"):
        MetaLRCallback(policy=str(weights))


def test_wrong_features_named_in_error(tmp_path):
    weights, config = _saved(tmp_path)
    data = json.loads(config.read_text())
    data["features"] = data["features"][:-1] + ["loss_curvature"]
    config.write_text(json.dumps(data))
    with pytest.raises(PolicyLoadError, match="p.json.*features.*does not compute \\['loss_curvature'\\]"):
        MetaLRCallback(policy=str(weights))
    data["features"] = data["features"][:-2] + [data["features"][0]]
    config.write_text(json.dumps(data))
    with pytest.raises(PolicyLoadError, match="p.json.*names a feature twice"):
        MetaLRCallback(policy=str(weights))
    data["features"] = data["features"][:-1]  # a valid subset, but not the one the weights were trained on
    config.write_text(json.dumps(data))
    with pytest.raises(PolicyLoadError, match="p.safetensors do not match the shapes of its config .*p.json"):
        MetaLRCallback(policy=str(weights))


def test_wrong_shape_named_in_error(tmp_path):
    weights, config = _saved(tmp_path)
    data = json.loads(config.read_text())
    data["hidden"] = 32
    config.write_text(json.dumps(data))
    with pytest.raises(PolicyLoadError, match="p.safetensors.*shapes"):
        MetaLRCallback(policy=str(weights))


def test_missing_policy_file(tmp_path):
    with pytest.raises(PolicyLoadError, match="nope.safetensors does not exist"):
        MetaLRCallback(policy=str(tmp_path / "nope.safetensors"))
    with pytest.raises(PolicyLoadError, match="defualt.safetensors does not exist.*policy='default' for the shipped one"):
        MetaLRCallback(policy="defualt")  # a typo of the shipped policy's name reads as a path


def test_bad_callback_arguments_fail_fast():
    with pytest.raises(ValueError, match="min_lr"):
        MetaLRCallback(min_lr=-1)
    with pytest.raises(ValueError, match="swap"):
        MetaLRCallback(min_lr=1e-2, max_lr=1e-3)
    with pytest.raises(ValueError, match="meta_lr"):
        MetaLRCallback(meta_lr=0)
    for not_a_bool in (0, 1, "yes"):  # 0 == False in Python, but a 0 is a typo, not a choice
        with pytest.raises(ValueError, match="greedy"):
            MetaLRCallback(greedy=not_a_bool)
    # "False" and "no" would read as true: every switch takes a bool, and the seed a whole number
    for option, bad in (("gate", "False"), ("learn_online", "no"), ("average_iterates", "off"), ("seed", "a"),
                        ("seed", 1.5), ("seed", -1), ("seed", True)):
        with pytest.raises(ValueError, match=rf"MetaLRCallback\({option}="):
            MetaLRCallback(**{option: bad})
    with pytest.raises(ValueError, match=r"MetaLRController\(seed=None\): must be a whole number >= 0"):
        MetaLRController(1e-3, seed=None)
    with pytest.warns(UserWarning, match="with the gate off it is off too"):
        MetaLRCallback(average_iterates=True, gate=False)
    # numpy's bools and ints are fine, and stored as Python's (the checkpoint's state is JSON)
    import numpy as np

    numpy_args = MetaLRCallback(gate=np.True_, learn_online=np.False_, greedy=np.True_, seed=np.int64(3),
                                max_lr=np.float64(1.0)).state()["args"]
    assert json.loads(json.dumps(numpy_args))["seed"] == 3 and numpy_args["learn_online"] is False


def test_shipped_default_policy_is_small_carded_and_the_default():
    from hf_metalr.policies import default_policy_path

    path = default_policy_path()
    assert path.stat().st_size < 300_000
    card = json.loads(path.with_suffix(".json").read_text())["card"]
    for key in ("training_families", "held_out_families", "episodes", "seed", "hf_metalr_version", "held_out_score_final",
                "held_out_scores", "held_out_trainer_eval", "selected_iteration", "held_out_evals_ratios"):
        assert card[key] not in (None, [], "")
    shipped = load_policy(path)
    for a, b in zip(shipped.parameters(), MetaLRController(1e-3).policy.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(shipped.parameters(), MetaLRCallback()._policy.parameters()):
        assert torch.equal(a, b)
    assert MetaLRCallback(policy="random")._policy is None


def test_old_controller_state_and_keepless_policy_are_refused_clearly():
    ctrl = MetaLRController(1e-3, policy="random", seed=0)
    ctrl.observe(1.0, progress=0.1)
    old = {**ctrl.state_dict(), "format": 1}
    with pytest.raises(ValueError, match="format 1; this hf_metalr reads formats 2, 3"):
        MetaLRController(1e-3, policy="random", seed=0).load_state_dict(old)
    from hf_metalr.controller.policy import PolicyConfig, PolicyNetwork

    keepless = PolicyNetwork(PolicyConfig(multipliers=(0.5, 2.0)))
    with pytest.raises(ValueError, match="lack 1.0"):
        MetaLRController(1e-3, policy=keepless)


def _plain_loop(controller, *, calls=("before", "after"), before_backward=False, steps=4, decisions=2):
    """A tiny regression trained in a plain loop that makes some of the controller's calls."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=controller.initial_lr)
    controller.watch(model.parameters())
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    for decision in range(decisions):
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            if before_backward and "before" in calls:
                controller.before_optimizer_step()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            if not before_backward and "before" in calls:
                controller.before_optimizer_step()
            optimizer.step()
            if "after" in calls:
                controller.after_optimizer_step()
        controller.observe(loss.item(), progress=(decision + 1) / decisions)
        controller.scale_param_groups(optimizer)


@pytest.mark.parametrize("calls, before_backward, message", [
    (("after",), False, "before_optimizer_step() was never called since watch()"),
    (("before",), False, "after_optimizer_step() was never called since watch()"),
    ((), False, "before_optimizer_step() and after_optimizer_step() were never called"),
    (("before", "after"), True, "found no gradient at any step: it was called before loss.backward()"),
])
def test_a_plain_loop_that_misses_a_call_is_told_which(calls, before_backward, message):
    with pytest.warns(RuntimeWarning, match=message.replace("(", r"\(").replace(")", r"\)")):
        _plain_loop(MetaLRController(1e-2, policy="random", seed=0), calls=calls, before_backward=before_backward)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loop the docs show: no warning
        _plain_loop(MetaLRController(1e-2, policy="random", seed=0))


def test_plain_loop_arguments_that_would_mislead_are_refused():
    with pytest.raises(ValueError, match=r"greater_is_better='False'\): must be True \(a score\) or False"):
        MetaLRController(1e-3, greater_is_better="False")
    with pytest.raises(ValueError, match=r"MetaLRCallback\(greater_is_better='yes'\)"):
        MetaLRCallback(greater_is_better="yes")
    controller = MetaLRController(1e-3, policy="random")
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with pytest.raises(ValueError, match=r"initial_lr=0.001\) drives an optimizer whose param group 0 starts at lr=0.01"):
        controller.scale_param_groups(optimizer)
    mine = torch.optim.AdamW(model.parameters(), lr=1e-3)
    other = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="the scheduler belongs to another optimizer"):
        controller.scale_param_groups(mine, torch.optim.lr_scheduler.StepLR(other, 5))
    assert other.param_groups[0]["lr"] == 1e-3 and mine.param_groups[0]["lr"] == 1e-3  # neither was touched
    with pytest.raises(ValueError, match=r"param group 0's LR is a tensor .*Pass the optimizer a float lr \(lr=0.001\)"):
        controller.scale_param_groups(torch.optim.AdamW(model.parameters(), lr=torch.tensor(1e-3)))
    frozen_first = torch.optim.AdamW([{"params": [model.bias], "lr": 0.0}, {"params": [model.weight]}], lr=1e-3)
    with pytest.raises(ValueError, match=r"relative to param group 0, whose LR is 0.0\. Put a group with a finite LR > 0 "
                                         r"first .*requires_grad=False"):
        controller.scale_param_groups(frozen_first)
    from transformers.optimization import Adafactor

    with pytest.raises(ValueError, match=r"scale_param_groups cannot drive Adafactor with relative_step=True: .*"
                                         r"relative_step=False, scale_parameter=False, warmup_init=False and an lr, or drop "
                                         r"the controller"):
        controller.scale_param_groups(Adafactor(model.parameters(), lr=None, relative_step=True, warmup_init=True))
    with pytest.raises(ValueError, match=r"observe\(progress=nan\): must be the fraction of the run done"):
        controller.observe(1.0, progress=float("nan"))
    with pytest.raises(TypeError, match=r"MetaLRController.observe\(progress\) must be a real number"):
        controller.observe(1.0, progress=None)
    with pytest.warns(UserWarning, match=r"observe\(progress=50.0\): .* pass step / total_steps \(not an epoch number"):
        controller.observe(1.0, progress=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        controller.observe(1.0, progress=70)  # once
        MetaLRController(1e-3, policy="random").observe(1.0, progress=1.0)  # the end of the run: no warning
    state = controller.state_dict()
    with pytest.raises(TypeError, match=r"takes the dict that state_dict\(\) returned, got str \(the JSON text: pass "
                                        r"json.loads\(text\)\)"):
        MetaLRController(1e-3, policy="random").load_state_dict(json.dumps(state))
    with pytest.raises(ValueError, match=r"the controller state lacks initial_lr, tracker: it is not a whole state_dict"):
        MetaLRController(1e-3, policy="random").load_state_dict({k: v for k, v in state.items()
                                                                 if k not in ("initial_lr", "tracker")})


def test_a_loss_below_zero_is_warned_about_once():
    tracker = RunTracker(greater_is_better=False)
    tracker.observe(0.5)
    tracker.observe(0.0)  # a perfect score of 0 (a WER) is not a problem
    with pytest.warns(RuntimeWarning, match=r"lower-is-better metric is -0.5, below 0"):
        tracker.observe(-0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.observe(-1.0)


def _plain_loop_blocks() -> list[str]:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "controller.md").read_text()
    section = text[text.index("## Use it from a plain PyTorch loop"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_plain_loop_section_shows_the_calls_by_hand_and_with_attach():
    blocks = _plain_loop_blocks()
    assert len(blocks) == 2 and "before_optimizer_step" in blocks[0] and "attach(" in blocks[1]


@pytest.mark.parametrize("block", [0, 1], ids=["by hand", "attach"])
def test_the_plain_loop_of_the_docs_runs_as_written(block):
    """docs/controller.md, "Use it from a plain PyTorch loop": each code block, run as written on a
    small regression with a cosine schedule, decides at every epoch and keeps the schedule's shape."""
    code = _plain_loop_blocks()[block]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    epochs, x, y = 4, torch.randn(256, 4), torch.randn(256, 1)
    loader = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))

    def loss_on(model, batches):
        model.eval()
        with torch.no_grad():
            value = float(sum(torch.nn.functional.mse_loss(model(bx), by) for bx, by in batches) / len(batches))
        model.train()
        return value

    namespace = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "epochs": epochs, "loader": loader,
                 "compute_loss": lambda model, batch: torch.nn.functional.mse_loss(model(batch[0]), batch[1]),
                 "evaluate": lambda model: loss_on(model, loader[:2]), "loss_on": loss_on, "fixed_val_batches": loader[:2]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loop as the docs write it draws no warning
        exec(compile(code, "docs/controller.md", "exec"), namespace)
    ctrl = namespace["ctrl"]
    assert len(ctrl.history) == epochs and ctrl.decision_index == epochs
    assert all(d["features"]["alignment_steps"] >= 2 for d in ctrl.history), "every step was measured"
    assert "iterate_average_gain" in ctrl.history[-1]["features"], "the iterate-average check read its batches"
    assert math.isclose(scheduler.base_lrs[0], 1e-3 * ctrl.scale), "the scale rides in the schedule"


def _regression_loop(ctrl, *, attach: bool, steps=48, every=12, lr=1e-3):
    """A small regression with AdamW and a cosine schedule, the controller driven either by attach()
    or by the calls the docs list, made by hand."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if attach:
        assert ctrl.attach(optimizer, scheduler) is ctrl
    else:
        ctrl.watch([p for group in optimizer.param_groups for p in group["params"]])
        ctrl.schedule_anneals = True
        ctrl.steps_per_coordinate = True  # AdamW: what attach reads from the optimizer
    x, y = torch.randn(256, 4), torch.randn(256, 1)
    used = []
    for step in range(1, steps + 1):
        i = (step * 32) % 256
        loss = torch.nn.functional.mse_loss(model(x[i:i + 32]), y[i:i + 32])
        optimizer.zero_grad()
        loss.backward()
        if not attach:
            ctrl.before_optimizer_step(schedule_factor=ctrl.schedule_factor(optimizer))
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if not attach:
            ctrl.after_optimizer_step()
        scheduler.step()
        if ctrl.observe_train_loss(loss.item()) and not attach:
            ctrl.scale_param_groups(optimizer, scheduler)
        if step % every == 0:
            with torch.no_grad():
                ctrl.observe(float(torch.nn.functional.mse_loss(model(x), y)), progress=step / steps)
            if not attach:
                ctrl.scale_param_groups(optimizer, scheduler)
    return optimizer, used


def test_attach_makes_the_step_calls_and_applies_each_decision_as_the_manual_loop_does():
    by_hand = MetaLRController(1e-3, policy="random", seed=3)
    _, used_by_hand = _regression_loop(by_hand, attach=False)
    attached = MetaLRController(1e-3, policy="random", seed=3)
    optimizer, used = _regression_loop(attached, attach=True)
    assert attached.schedule_anneals, "a CosineAnnealingLR decays: read from the scheduler"
    assert [d["features"] for d in attached.history] == [d["features"] for d in by_hand.history]
    assert [d["applied"] for d in attached.history] == [d["applied"] for d in by_hand.history]
    assert any(d["applied"] != 1.0 for d in attached.history), "a move, so that applying it is tested"
    assert used == used_by_hand, "every step ran at the same LR"
    assert all(d["features"]["alignment_steps"] >= 2 for d in attached.history), "the hooks read every step"
    resumed = MetaLRController(1e-3, policy="random", seed=3)
    same_model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    fresh_optimizer = torch.optim.AdamW(same_model.parameters(), lr=1e-3)
    resumed.attach(fresh_optimizer)
    resumed.load_state_dict(json.loads(json.dumps(attached.state_dict())))
    assert fresh_optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * attached.scale), "the loaded scale applied"
    attached.detach()
    before = dict(attached.alignment.calls)
    optimizer.zero_grad()
    optimizer.step()
    assert attached.alignment.calls == before, "detached: the optimizer's steps are no longer read"


def test_attach_applies_the_early_divergence_cut_and_refuses_what_it_cannot_read():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    ctrl = MetaLRController(1e-2, policy="random").attach(optimizer)
    ctrl.observe_train_loss(1.0)
    assert ctrl.observe_train_loss(1e4) and optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * ctrl.scale)
    assert ctrl.scale < 1, "the guard's cut is in the optimizer at once"
    with pytest.raises(ValueError, match=r"already attached to an optimizer; detach\(\) first"):
        ctrl.attach(optimizer)
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters(), lr=1e-2), lambda s: 1.0)
    with pytest.raises(ValueError, match=r"the scheduler is a LambdaLR, .*pass total_steps="):
        MetaLRController(1e-2, policy="random").attach(lambda_lr.optimizer, lambda_lr)
    linear = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters(), lr=1e-2), lambda s: 1 - s / 100)
    assert MetaLRController(1e-2, policy="random").attach(linear.optimizer, linear, total_steps=100).schedule_anneals
    with pytest.raises(ValueError, match=r"drives an optimizer whose param group 0 starts at lr=0.01"):
        MetaLRController(1e-3, policy="random").attach(torch.optim.SGD(model.parameters(), lr=1e-2))


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_observe_inside_an_evaluations_no_grad_still_learns_online(context):
    ctrl = MetaLRController(1e-3, policy="random", seed=0)
    decisions = []
    for value in (1.0, 0.9, 0.85):
        with context():
            decisions.append(ctrl.observe(value, progress=0.5))
    assert [d.learned for d in decisions] == [False, False, True], "the online update ran (it needs autograd)"


def test_attach_keeps_a_watch_of_the_same_parameters_and_refuses_what_would_fight():
    import gc

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctrl = MetaLRController(1e-3, policy="random")
    ctrl.watch(model.parameters(), average_iterates=True)  # the docs' resume order: load_state_dict, watch, then attach
    alignment, average = ctrl.alignment, ctrl.iterate_average
    ctrl.attach(optimizer, average_iterates=True)
    assert ctrl.alignment is alignment and ctrl.iterate_average is average, "the watch (and its loaded state) is kept"
    with pytest.raises(ValueError, match="another MetaLRController is attached to this optimizer"):
        MetaLRController(1e-3, policy="random").attach(optimizer)
    other = MetaLRController(1e-3, policy="random")
    other.watch(torch.nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match=r"already watches others \(watch\(\)\): drop the watch\(\) call"):
        other.attach(torch.optim.AdamW(model.parameters(), lr=1e-3))
    ctrl.detach()
    MetaLRController(1e-3, policy="random").attach(optimizer).detach()  # free again once detached

    loaded = MetaLRController(1e-3, policy="random")
    loaded.scale = 2.0
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters(), lr=1e-3), lambda s: 1.0)
    with pytest.raises(ValueError, match="pass total_steps="):
        loaded.attach(lambda_lr.optimizer, lambda_lr)
    assert lambda_lr.optimizer.param_groups[0]["lr"] == 1e-3 and lambda_lr.base_lrs == [1e-3], "refused before any write"

    dropped = MetaLRController(1e-3, policy="random").attach(torch.optim.SGD(model.parameters(), lr=1e-3))
    hooked = dropped._attached["target"]
    import weakref

    alive = weakref.ref(dropped)
    del dropped
    gc.collect()
    assert alive() is None, "nothing but weak references held the controller"
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    hooked.step()  # the hooks held the controller weakly: it is gone, and the step runs without it


def test_attach_refuses_or_warns_about_the_mistakes_that_would_spoil_it_silently():
    from transformers import get_linear_schedule_with_warmup

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
    x, y = torch.randn(32, 4), torch.randn(32, 1)

    def step(optimizer, scheduler=None):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctrl = MetaLRController(1e-3, policy="random").attach(optimizer)
    with pytest.raises(ValueError, match=r"before_optimizer_step\(\): this controller is attached .*drop the call"):
        ctrl.before_optimizer_step()
    with pytest.raises(ValueError, match=r"after_optimizer_step\(\): this controller is attached"):
        ctrl.after_optimizer_step()
    ctrl.detach()
    ctrl.after_optimizer_step()  # detached: the calls are the loop's again
    ctrl.attach(optimizer, average_iterates=True)  # attach's own watch follows the new setting
    assert ctrl.iterate_average is not None
    ctrl.detach()

    # a scheduler that attach was not given rewrites the LR at its every step: said once
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = get_linear_schedule_with_warmup(optimizer, 2, 20)
    ctrl = MetaLRController(1e-3, policy="random").attach(optimizer)
    with pytest.warns(UserWarning, match=r"attach\(\) was given no scheduler: .*Pass it: attach\(optimizer, scheduler\)"):
        for _ in range(3):
            step(optimizer, schedule)
    ctrl.detach()
    for bad in (0, -5, "100", 100.5, True):
        with pytest.raises(ValueError, match=r"attach\(total_steps=.*\): the run's optimizer steps, a whole number >= 1"):
            MetaLRController(1e-3, policy="random").attach(torch.optim.AdamW(model.parameters(), lr=1e-3),
                                                           total_steps=bad)
    # a scheduler restored from a checkpoint carries the old scale; a fresh controller without its state says so
    def restored():
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
        cosine.base_lrs = [4e-3]
        return optimizer, cosine

    optimizer, cosine = restored()
    fresh = MetaLRController(1e-3, policy="random").attach(optimizer, cosine)  # (held: its hooks hold it weakly)
    with pytest.warns(UserWarning, match=r"the scheduler's base LR was 0.004 \(a scale of 4.*load the controller's state"):
        step(optimizer, cosine)
    fresh.detach()
    saved = MetaLRController(1e-3, policy="random")
    saved.scale = 4.0
    optimizer, cosine = restored()
    resumed = MetaLRController(1e-3, policy="random").attach(optimizer, cosine)
    resumed.load_state_dict(json.loads(json.dumps(saved.state_dict())))  # attach, then load: the scale comes back
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(optimizer, cosine)
    assert cosine.base_lrs[0] == pytest.approx(4e-3)

    # evaluations with no step under attach name the optimizer, not calls the loop must not make
    quiet = MetaLRController(1e-3, policy="random").attach(torch.optim.AdamW(model.parameters(), lr=1e-3))
    quiet.observe(1.0)
    with pytest.warns(RuntimeWarning, match=r"the attached optimizer has made no step since attach\(\)"):
        quiet.observe(1.0)


def test_observe_refuses_a_validation_loss_that_is_no_function_and_warns_without_one():
    ctrl = MetaLRController(1e-3, policy="random")
    model = torch.nn.Linear(2, 1)
    ctrl.watch(model.parameters(), average_iterates=True)
    with pytest.raises(TypeError, match=r"validation_loss=...\) takes a function .* got float"):
        ctrl.observe(1.0, validation_loss=0.5)
    ctrl.observe_train_loss(1.0)
    with pytest.warns(UserWarning, match=r"no validation_loss= was given, so the iterate-average check is off"):
        ctrl.observe(1.0)


def test_a_scheduler_left_out_of_scale_param_groups_is_warned_about_once_when_it_rewrites_the_lr():
    """A plain loop that steps a torch scheduler of its own but calls scale_param_groups(optimizer)
    without it loses every decision at the scheduler's next step(): the second call sees group 0's
    LR rewritten, and says so once."""
    def loop(pass_scheduler: bool):
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        controller = MetaLRController(1e-3, policy="random")
        controller.scale = 2.0  # a raise the policy made
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                controller.scale_param_groups(optimizer, scheduler if pass_scheduler else None)
                optimizer.step()
                scheduler.step()
        return optimizer.param_groups[0]["lr"], [str(w.message) for w in caught if issubclass(w.category, UserWarning)]

    lr, messages = loop(pass_scheduler=False)
    assert lr == pytest.approx(1e-3), "the scheduler's step() put its own LR back"
    assert len(messages) == 1 and "param group 0's LR is 0.001, not the 0.002 the last call wrote" in messages[0]
    assert "scale_param_groups(optimizer, scheduler)" in messages[0]
    lr, messages = loop(pass_scheduler=True)
    assert lr == pytest.approx(2e-3) and messages == []


def test_scale_param_groups_without_a_scheduler_and_nothing_rewriting_the_lr_is_quiet():
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    controller = MetaLRController(1e-3, policy="random")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for scale in (1.0, 2.0, 0.5):
            controller.scale = scale
            assert controller.scale_param_groups(optimizer) == [pytest.approx(1e-3 * scale)]


def test_a_resume_that_restores_the_optimizers_lr_is_not_taken_for_a_scheduler():
    """The plain-loop resume: scale_param_groups at start-up, then the optimizer's and the
    controller's states loaded, then scale_param_groups again. The optimizer's LR came back from the
    checkpoint, which is not a rewrite to warn about; an int LR rewritten by a scheduler still is."""
    model = torch.nn.Linear(2, 1)
    saved_optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    saved = MetaLRController(1e-3, policy="random")
    saved.scale = 2.0
    saved.scale_param_groups(saved_optimizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    controller = MetaLRController(1e-3, policy="random")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        controller.scale_param_groups(optimizer)  # start-up: writes 1e-3
        optimizer.load_state_dict(saved_optimizer.state_dict())  # the LR comes back at 2e-3
        controller.load_state_dict(saved.state_dict())
        assert controller.scale_param_groups(optimizer) == [pytest.approx(2e-3)]
    sgd = torch.optim.SGD(model.parameters(), lr=1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(sgd, lambda step: 1)
    integer = MetaLRController(1, policy="random")
    integer.scale = 0.5
    integer.scale_param_groups(sgd)
    sgd.step()
    scheduler.step()  # back to the int 1
    with pytest.warns(UserWarning, match="param group 0's LR is 1, not the 0.5 the last call wrote"):
        integer.scale_param_groups(sgd)
