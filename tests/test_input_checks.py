"""Bad input is refused before any work, with a message naming it and the fix: metric values, compare
and meta-train arguments, policy files, launcher flags, output folders, results files, frozen groups."""

import json
import math
import pathlib

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_metalr import MetaLRCallback, PolicyLoadError, launch, load_policy, random_policy, save_policy
from hf_metalr.cli import main as hf_metalr_main
from hf_metalr.controller import PolicyConfig
from hf_metalr.compare.cli import main as compare_main
from hf_metalr.meta.cli import main as meta_main
from hf_metalr.meta.train import CHECKPOINT_NAME, MetaTrainConfig, meta_train
from hf_metalr.output_dir import OutputDirError, prepare_output_dir
from hf_metalr.reporting.cli import main as report_main
from test_launch import EXAMPLE_SCRIPT
from tiny_job import accuracy, make_trainer

TINY_META = ["--iterations", "1", "--episodes-per-iteration", "1", "--held-out-per-family", "1", "--eval-every", "1",
             "--backend", "serial", "--workers", "1"]
COMPARE = ["--task", "digits", "--epochs", "1", "--seeds", "1", "--schedules", "constant"]


# -- 5. a metric that is not a number ---------------------------------------------------------------
@pytest.mark.parametrize("bad", ["n/a", None])
def test_a_metric_that_is_not_a_number_is_a_type_error_naming_the_key(tmp_path, bad):
    def metrics(eval_pred):
        return {**accuracy(eval_pred), "score": bad}

    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback(metric="score")], compute_metrics=metrics, max_steps=10)
    with pytest.raises(TypeError, match=rf"the monitored metric 'eval_score' must be a real number .*got {type(bad).__name__}"
                                        r".*Make compute_metrics return a number"):
        trainer.train()
    assert trainer.state.global_step == 5


# -- 11. compare: every argument before the first run ------------------------------------------------
def _without(argv, *flags):
    out = list(argv)
    for flag in flags:
        if flag in out:
            i = out.index(flag)
            del out[i : i + 2]
    return out


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be a whole number >= 1, got 0"),
    (["--epochs", "-1"], "--epochs must be a whole number >= 1, got -1"),
    (["--seeds", ","], "--seeds takes a count (3) or a list (0,1,2), got ','"),
    (["--seeds", "0,1,0"], "--seeds names 0 more than once"),
    (["--seeds", "0,-2"], "--seeds: each seed must be a whole number >= 0, got -2"),
    (["--schedules", "constant,step,constant"], "--schedules names constant more than once"),
    (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--schedules", "constant,metalr", "--metalr-policy", "{tmp}/missing"], "missing.safetensors does not exist"),
    # stored in the config, so checked whichever schedules run now
    (["--schedules", "constant", "--metalr-policy", "{tmp}/missing"], "missing.safetensors does not exist"),
    (["--seeds", "0,4294967296"], "--seeds: each seed must be at most 4294967295 (2**32 - 1"),
])
def test_compare_refuses_bad_arguments_before_the_first_run(tmp_path, flags, message):
    flags = [f.format(tmp=tmp_path) for f in flags]
    argv = _without(COMPARE, *flags[::2]) + flags + ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as info:
        compare_main(argv)
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


# -- 12. meta-train --------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--eval-every", "0"], "--eval-every must be a whole number >= 1, got 0"),
    (["--ppo-minibatch", "0"], "--ppo-minibatch must be a whole number >= 1, got 0"),
    (["--ppo-minibatch", "-5"], "--ppo-minibatch must be a whole number >= 1, got -5"),
    (["--ppo-epochs", "0"], "--ppo-epochs must be a whole number >= 1, got 0"),
    (["--keep-prior", "nan"], "--keep-prior must be a finite number, got nan"),
    (["--held-out-per-family", "0"], "--held-out-per-family must be a whole number >= 1, got 0"),
    (["--ppo-lr", "inf"], "--ppo-lr must be a finite number >= 0, got inf"),
    (["--seed", "-1"], "--seed must be a whole number >= 0, got -1"),
    (["--seed", "4294967296"], "--seed must be at most 4294967295, got 4294967296"),  # torch's generator seed would overflow later
    (["--keep-prior", "1e39"], "--keep-prior must lie within [-50, 50]"),
    (["--init-policy", "random"], "--init-policy random: a fresh seeded policy is what meta-training starts from"),
])
def test_meta_train_refuses_bad_arguments_at_once(tmp_path, flags, message):
    argv = _without(TINY_META, *flags[::2]) + flags
    with pytest.raises(SystemExit) as info:
        meta_main(["--out", str(tmp_path / "out"), *argv])
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def whole_meta_checkpoint(tmp_path_factory):
    """The text of a real meta-training checkpoint (one iteration of one episode), made once per module."""
    out = tmp_path_factory.mktemp("whole_meta")
    meta_train(MetaTrainConfig(out=str(out), iterations=1, episodes_per_iteration=1, eval_every=1,
                               held_out_per_family=1, backend="serial", workers=1), log=lambda *_: None)
    return (out / CHECKPOINT_NAME).read_text()


@pytest.mark.parametrize("content, message", [
    ('{"format": 2, "config": {"seed": 0}, "iteration": 3, "cur', "is not readable JSON (truncated?)"),
    ('{"format": 2}', "lacks or garbles config, iteration, curve"),
    ('[1, 2]', "has checkpoint format 'list'"),
    # inside a checkpoint of the right shape (a whole one, below, with one thing broken)
    ("iteration=99", "lacks or garbles iteration"),
    ("curve=[]", "lacks or garbles curve"),
    ("best={}", "lacks or garbles best"),
    ("optimizer={}", "lacks or garbles optimizer"),
    ("optimizer.tensors=AAAA", "its PPO optimizer state is damaged"),
])
def test_a_damaged_meta_checkpoint_is_named(tmp_path, whole_meta_checkpoint, content, message):
    if "=" in content and not content.startswith("{"):  # break one field of a real checkpoint
        state = json.loads(whole_meta_checkpoint)
        key, value = content.split("=", 1)
        if "." in key:
            outer, inner = key.split(".")
            state[outer][inner] = value
        else:
            state[key] = json.loads(value)
        content = json.dumps(state)
    (tmp_path / CHECKPOINT_NAME).write_text(content)
    config = MetaTrainConfig(out=str(tmp_path), iterations=1, episodes_per_iteration=1, eval_every=1, held_out_per_family=1,
                             backend="serial", workers=1, resume=True)
    with pytest.raises(ValueError, match=f"{tmp_path / CHECKPOINT_NAME}.*{message.replace('(', '.').replace(')', '.')}"):
        meta_train(config, log=lambda *_: None)


# -- 13. policy files ------------------------------------------------------------------------------
def test_a_dot_in_a_policy_name_is_part_of_the_name(tmp_path):
    from hf_metalr.policies import default_policy_path

    save_policy(load_policy(default_policy_path()), tmp_path / "pol")
    save_policy(random_policy(3), tmp_path / "pol.v2")  # a second policy whose name starts like the first's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pol.json", "pol.safetensors", "pol.v2.json", "pol.v2.safetensors"]
    for given in ("pol.v2", "pol.v2.safetensors", "pol.v2.json"):
        loaded = load_policy(tmp_path / given)
        assert all(torch.equal(v, random_policy(3).state_dict()[k]) for k, v in loaded.state_dict().items()), given
    save_policy(random_policy(4), tmp_path / "run_lr1.5e-3")
    assert (tmp_path / "run_lr1.5e-3.safetensors").is_file() and not (tmp_path / "run_lr1.safetensors").exists()


def test_a_pair_beside_a_folder_of_its_name_loads_and_an_old_dotted_name_is_named(tmp_path):
    save_policy(random_policy(5), tmp_path / "runs" / "x")
    (tmp_path / "runs" / "x").mkdir()  # a run's folder beside its policy pair
    assert load_policy(tmp_path / "runs" / "x").config.hidden == random_policy(5).config.hidden
    save_policy(random_policy(6), tmp_path / "run_lr1")  # where an older hf_metalr put "run_lr1.5e-3"'s pair
    with pytest.raises(PolicyLoadError, match=r"run_lr1.safetensors exists: hf_metalr before 2026-12-04 cut a saved "
                                              r"policy's name at its last dot; rename that pair to run_lr1.5e-3.safetensors"):
        load_policy(tmp_path / "run_lr1.5e-3")


def test_a_policy_folder_or_a_newer_policy_format_is_named(tmp_path):
    save_policy(random_policy(0), tmp_path / "policy")
    with pytest.raises(PolicyLoadError, match=rf"policy {tmp_path} is a folder; pass the path of a policy in it: "
                                              rf"{tmp_path / 'policy.safetensors'}"):
        load_policy(tmp_path)
    config = json.loads((tmp_path / "policy.json").read_text())
    (tmp_path / "policy.json").write_text(json.dumps({**config, "format_version": 2, "activation": "gelu"}))
    with pytest.raises(PolicyLoadError, match="has format version 2, but this hf_metalr reads version 1"):
        load_policy(tmp_path / "policy")


def test_meta_training_starts_from_the_shipped_policy_by_name(tmp_path):
    from hf_metalr.meta.train import _initial_policy, _same_policy_path
    from hf_metalr.policies import default_policy_path

    # one policy, however it is named: its name, its path, either file of its pair, relative or not
    assert _same_policy_path("default", str(default_policy_path().with_suffix(".json")))
    assert not _same_policy_path("default", "") and _same_policy_path("", None)

    shipped = load_policy(default_policy_path()).state_dict()
    started = _initial_policy(MetaTrainConfig(out=str(tmp_path), init_policy="default")).state_dict()
    assert all(torch.equal(v, shipped[k]) for k, v in started.items())


def test_compare_resume_refuses_a_replaced_policy_file(tmp_path):
    from hf_metalr.compare import compare

    policy = tmp_path / "mine"
    save_policy(random_policy(0), policy)
    compare("digits", ["constant"], [0], tmp_path / "out", epochs=1, metalr_options={"policy": str(policy)},
            log=lambda *_: None)
    save_policy(random_policy(1), policy)  # another policy under the same name
    with pytest.raises(ValueError, match=r"the policy file .*mine is not the one .*'s metalr runs were made with"):
        compare("digits", ["constant"], [1], tmp_path / "out", epochs=1, resume=True,
                metalr_options={"policy": str(policy)}, log=lambda *_: None)
def _saved_policy(tmp_path):
    save_policy(random_policy(0), tmp_path / "p")
    return tmp_path / "p.safetensors", tmp_path / "p.json"


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_policy_weights_are_refused(tmp_path, bad):
    weights, _ = _saved_policy(tmp_path)
    tensors = load_file(str(weights))
    tensors["actor.0.weight"][0, 0] = bad
    save_file(tensors, str(weights))
    with pytest.raises(PolicyLoadError, match=r"p.safetensors hold NaN or infinite values \(in actor.0.weight\)"):
        MetaLRCallback(policy=str(weights))


@pytest.mark.parametrize("field, value, message", [
    ("hidden", "64", "'hidden' must be a whole number >= 1, got '64'"),
    ("hidden", -1, "'hidden' must be a whole number >= 1, got -1"),
    ("multipliers", [0.0, 0.8, 1.0, 1.25, 2.0], "'multipliers' must be a non-empty list of finite numbers > 0"),
    ("multipliers", [-0.5, 0.8, 1.0, 1.25, 2.0], "'multipliers' must be"),
    ("multipliers", [math.nan, 0.8, 1.0, 1.25, 2.0], "'multipliers' must be"),
    ("multipliers", ["0.5", 0.8, 1.0, 1.25, 2.0], "'multipliers' must be"),
])
def test_bad_policy_config_fields_are_refused(tmp_path, field, value, message):
    weights, config = _saved_policy(tmp_path)
    data = json.loads(config.read_text())
    data[field] = value
    config.write_text(json.dumps(data))
    with pytest.raises(PolicyLoadError, match=f"p.json is not a valid hf_metalr policy config: {message}"):
        MetaLRCallback(policy=str(weights))


def test_resuming_with_a_policy_of_another_shape_names_the_policy(tmp_path):
    saving = dict(save_strategy="steps", save_steps=10, max_steps=10)
    make_trainer(tmp_path, callbacks=[MetaLRCallback(policy="random")], **saving).train()
    small = save_policy(random_policy(0, PolicyConfig(hidden=16)), tmp_path / "small")
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback(policy=str(small))], **saving)
    with pytest.raises(PolicyLoadError, match=r"the policy in the checkpoint's MetaLRCallback state \(resumed with "
                                              rf"policy='{small}'\) do not match"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-10"))


# -- 15. launcher ------------------------------------------------------------------------------------
def test_a_boolean_flag_with_a_word_that_is_not_a_boolean_is_refused(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("")
    with pytest.raises(launch.LaunchError, match="--metalr_learn_online: expected true or false, got 'maybe'"):
        launch.parse_launch_argv([str(script), "--metalr_learn_online", "maybe"], environ={})
    config = tmp_path / "args.json"
    config.write_text("{}")
    options, _, _, _, script_args = launch.parse_launch_argv([str(script), "--metalr_greedy", str(config)], environ={})
    assert options.metalr_greedy is True and script_args == [str(config)], "an existing file is the script's argument"
    # an optional boolean takes "none" (back to its default) with a space as with "=", as its variable does
    for argv in (["--metalr_greater_is_better", "none"], ["--metalr_greater_is_better=none"]):
        options, _, _, _, script_args = launch.parse_launch_argv([str(script), *argv], environ={})
        assert options.metalr_greater_is_better is None and script_args == []
    with pytest.raises(launch.LaunchError, match="expected true or false, got 'none'"):
        launch.parse_launch_argv([str(script), "--metalr_learn_online", "none"], environ={})  # not optional


def test_bounds_that_exclude_the_scripts_lr_stop_the_launch_naming_the_flag(tmp_path, capsys):
    script = tmp_path / "train_digits.py"
    script.write_text(EXAMPLE_SCRIPT)  # learning_rate=1e-2
    code = launch.main(["--metalr_min_lr", "0.05", str(script), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert ("error: bad meta-LR setting: the initial learning rate 0.01 must lie within [min_lr, max_lr] = [0.05, 1 (default)] "
            "(0.05 from flag --metalr_min_lr)") in err
    assert not (tmp_path / "out" / "metalr_trace.jsonl").exists(), "stopped before training"


def test_a_bound_past_the_other_default_bound_says_so():
    from hf_metalr.controller.controller import check_options

    with pytest.raises(ValueError, match=r"\[min_lr, max_lr\] = \[1.0, 0.2 \(default\)\] \(1.0 from min_lr\); min_lr is "
                                         r"above even the default max_lr, 100x the initial learning rate"):
        check_options(min_lr=1.0, initial_lr=2e-3)
    with pytest.raises(ValueError, match=r"max_lr is below even the default min_lr, 0.001x the initial"):
        check_options(max_lr=1e-7, initial_lr=2e-3)
    with pytest.raises(ValueError) as within_defaults:
        check_options(min_lr=0.1, initial_lr=2e-3)  # above the initial LR, below the default max_lr: no such note
    assert "even the default" not in str(within_defaults.value)


def test_hf_metalr_run_speaks_under_its_own_name(tmp_path, capsys):
    assert hf_metalr_main(["run", "--metalr_bogus", "1", str(tmp_path / "x.py")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-metalr run: error: unknown meta-LR option") and "hf_metalr.launch" not in err
    assert "The launcher takes every --metalr_* flag, wherever it stands: a flag of the script's own with that " \
           "prefix needs another name" in err


# -- 16. messages instead of tracebacks -----------------------------------------------------------------
def test_out_under_a_file_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "out"
    with pytest.raises(SystemExit, match=f"--out {out}: {tmp_path / 'file'} is a file, not a folder; choose another --out"):
        compare_main(COMPARE + ["--out", str(out)])
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        meta_main(["--out", str(out), *TINY_META])


def test_out_in_an_unwritable_folder_is_named(tmp_path, monkeypatch):
    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", denied)
    with pytest.raises(SystemExit, match=r"--out .*/out: cannot create the folder \(Permission denied\); choose a --out folder"):
        compare_main(COMPARE + ["--out", str(tmp_path / "out")])
    with pytest.raises(OutputDirError, match="Permission denied"):
        prepare_output_dir(tmp_path / "out")


@pytest.mark.parametrize("change", [
    lambda r: r.update(runs=[1, 2]),
    lambda r: r["config"].update(seeds=5),
    lambda r: r["runs"][0].update(evals={"step": 5}),
    lambda r: r["runs"][0].update(seed=[0]),
    lambda r: r["runs"][0].update(lr_curve=[1, 2]),
])
def test_results_of_the_wrong_shape_are_named_by_report_and_resume(tmp_path, capsys, change):
    from test_reporting import FIXTURE

    results = json.loads(FIXTURE.read_text())
    results["config"]["task"], results["config"]["metalr_policy"] = "digits", "default"
    change(results)
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert report_main([str(tmp_path)]) == 2
    assert "is not shaped like a results.json written by hf-metalr compare" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="is not shaped like a results.json"):
        compare_main(["--task", "digits", "--schedules", "constant", "--seeds", "1", "--out", str(tmp_path), "--resume"])


def test_param_group_0_at_lr_0_is_named(tmp_path):
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback()], two_groups=True, max_steps=5)
    trainer.optimizer.param_groups[0]["lr"] = 0.0
    with pytest.raises(ValueError, match=r"relative to param group 0, whose LR is 0.0. Give the Trainer a learning_rate > 0 \(--learning_rate\), and with an optimizer of your own put a group with a finite LR > 0 first"):
        trainer.train()


def test_an_optimizer_that_ignores_or_tensors_its_lr_is_named(tmp_path):
    """Adafactor in relative-step mode computes its own step size; a tensor LR is not a float the callback can
    scale: each is refused with its own reason and fix, not as "LR 0"."""
    from transformers.optimization import Adafactor, AdafactorSchedule

    trainer = make_trainer(tmp_path / "a", callbacks=[MetaLRCallback()], max_steps=5)
    optimizer = Adafactor(trainer.model.parameters(), lr=None, relative_step=True, warmup_init=True,
                          scale_parameter=True)
    trainer.optimizer, trainer.lr_scheduler = optimizer, AdafactorSchedule(optimizer)
    with pytest.raises(ValueError, match=r"Adafactor with relative_step=True: it computes its own step size.*"
                                         r"relative_step=False"):
        trainer.train()

    trainer = make_trainer(tmp_path / "t", callbacks=[MetaLRCallback()], max_steps=5)
    trainer.optimizer = torch.optim.Adam(trainer.model.parameters(), lr=torch.tensor(3e-4))
    with pytest.raises(ValueError, match=r"param group 0's LR is a tensor .*Pass the optimizer a float lr \(lr=0.0003\)"):
        trainer.train()


def test_bounds_that_exclude_param_group_0s_lr_say_it_is_group_0s(tmp_path):
    trainer = make_trainer(tmp_path, callbacks=[MetaLRCallback(max_lr=1e-3)], two_groups=True, learning_rate=3e-3,
                           max_steps=5)
    with pytest.raises(ValueError, match=r"the initial learning rate 0.003 \(param group 0's, of 2 groups; the bounds "
                                         r"apply to it.*must lie within \[min_lr, max_lr\]"):
        trainer.train()
