"""The LR-free peers ``prodigy`` and ``schedule-free`` in ``hf-metalr compare`` and the recipes:
end to end on a tiny budget, ``--lr`` having no effect on Prodigy, and the missing-package path."""

import importlib.util
import json

import pytest

from hf_metalr.baselines import LR_FREE, MissingPeerError, available_schedules, require_schedule
from hf_metalr.baselines import schedules as schedules_module
from hf_metalr.compare import compare
from hf_metalr.compare.cli import main as compare_main
from hf_metalr.reporting import write_report


class _OptimizerSpy:
    """A Trainer callback that keeps the optimizer's class name and its mode switches."""

    def __init__(self):
        from transformers import TrainerCallback

        spy = self

        class Spy(TrainerCallback):
            def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
                spy.optimizer = type(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer).__name__

        self.callback = Spy()
        self.optimizer = None


@pytest.mark.slow
def test_each_peer_end_to_end(tmp_path):
    data = compare("digits", ["constant", "prodigy", "schedule-free"], [0], tmp_path, epochs=1, log=lambda *_: None)
    runs = {r["schedule"]: r for r in data["runs"]}
    for name in LR_FREE:
        run = runs[name]
        assert run["status"] == "ok" and len(run["evals"]) == 2 and len(run["lr_curve"]) == 32
        assert 0.1 < run["test"]["accuracy"] <= 1
    prodigy_lrs = [lr for _, _, lr in runs["prodigy"]["lr_curve"]]
    assert prodigy_lrs[0] == pytest.approx(1e-6), "Prodigy's step size starts at its d0 (lr=1.0 x d0)"
    assert prodigy_lrs[-1] > 10 * prodigy_lrs[0], "and grows as it estimates the distance to the solution"
    assert {lr for _, _, lr in runs["schedule-free"]["lr_curve"]} == {1e-3}, "schedule-free runs at the given LR"
    # schedule-free evaluates with its averaged weights: not the same as constant AdamW's after the same steps
    assert runs["schedule-free"]["evals"][0]["eval_loss"] != runs["constant"]["evals"][0]["eval_loss"]

    text = write_report(tmp_path).read_text()
    assert "| prodigy |" in text and "| schedule-free |" in text
    assert "do not depend on the configured LR (0.001)" in text


def test_peers_use_the_published_optimizers(tmp_path):
    from hf_metalr.compare.runner import build_trainer
    from hf_metalr.tasks import get_task

    task = get_task("digits")
    for name, expected in (("prodigy", "Prodigy"), ("schedule-free", "AdamWScheduleFree")):
        spy = _OptimizerSpy()
        trainer = build_trainer(task, name, 0, tmp_path / name, callbacks=[spy.callback], max_steps=1, eval_steps=1)
        trainer.train()
        assert spy.optimizer == expected
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-3


@pytest.mark.slow
def test_lr_has_no_effect_on_prodigy(tmp_path):
    low = compare("digits", ["prodigy"], [0], tmp_path / "low", lr=1e-4, epochs=1, log=lambda *_: None)["runs"][0]
    high = compare("digits", ["prodigy"], [0], tmp_path / "high", lr=1e-1, epochs=1, log=lambda *_: None)["runs"][0]
    assert [e["eval_loss"] for e in low["evals"]] == [e["eval_loss"] for e in high["evals"]]
    assert low["lr_curve"] == high["lr_curve"] and low["test"] == high["test"]


@pytest.fixture
def peers_missing(monkeypatch):
    """Simulate an environment without prodigyopt and schedulefree."""
    real = importlib.util.find_spec
    monkeypatch.setattr(schedules_module.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("prodigyopt", "schedulefree") else real(name, *a))


def test_missing_package_names_the_extra(peers_missing, tmp_path):
    for name in LR_FREE:
        with pytest.raises(MissingPeerError, match=r"pip install 'hf_metalr\[peers\]'"):
            require_schedule(name)
        with pytest.raises(SystemExit) as info:
            compare_main(["--task", "digits", "--schedules", f"constant,{name}", "--out", str(tmp_path / name)])
        assert "pip install 'hf_metalr[peers]'" in str(info.value.code)
        assert not (tmp_path / name).exists(), "refused before any run"
    assert available_schedules(("constant", "prodigy", "schedule-free")) == (
        ["constant"], {"prodigy": "prodigyopt", "schedule-free": "schedulefree"})


def test_all_skips_missing_peers_and_the_report_says_so(peers_missing, tmp_path, monkeypatch):
    import hf_metalr.compare.session as session

    asked = {}
    real_compare = session.compare

    def only_constant(task, schedules, seeds, out, **kwargs):  # run one cheap schedule, keep what 'all' asked for
        asked["schedules"], asked["skipped"] = schedules, kwargs["skipped"]
        return real_compare(task, ["constant"], seeds, out, **kwargs)

    monkeypatch.setattr(session, "compare", only_constant)
    assert compare_main(["--task", "digits", "--schedules", "all", "--seeds", "1", "--epochs", "1",
                         "--out", str(tmp_path)]) == 0
    assert "prodigy" not in asked["schedules"] and "schedule-free" not in asked["schedules"]
    assert "metalr" in asked["schedules"]
    assert asked["skipped"] == {"prodigy": "prodigyopt", "schedule-free": "schedulefree"}
    config = json.loads((tmp_path / "results.json").read_text())["config"]
    assert config["skipped_schedules"] == asked["skipped"]
    assert "prodigy (prodigyopt), schedule-free (schedulefree)" in (tmp_path / "report.md").read_text()


def test_recipes_select_the_peers(tmp_path):
    from transformers import TrainingArguments

    from tests.test_recipes import common_module

    common = common_module()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", lr_scheduler_type="linear")
    assert common.configure_schedule(common.ScheduleArguments(lr_schedule="schedule-free"), args) is None
    assert args.optim == "schedule_free_adamw" and args.lr_scheduler_type == "constant"
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert common.configure_schedule(common.ScheduleArguments(lr_schedule="prodigy"), args) is None
    assert args.lr_scheduler_type == "constant"


def test_recipes_refuse_a_missing_peer(peers_missing, tmp_path):
    from transformers import TrainingArguments

    from tests.test_recipes import common_module

    common = common_module()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match=r"--lr_schedule prodigy: .*pip install 'hf_metalr\[peers\]'"):
        common.configure_schedule(common.ScheduleArguments(lr_schedule="prodigy"), args)


def test_a_resume_keeps_the_note_of_a_schedule_an_earlier_call_could_not_run(tmp_path):
    compare("digits", ["constant"], [0], tmp_path, epochs=1, skipped={"prodigy": "prodigyopt"}, log=lambda *a: None)
    compare("digits", ["constant"], [1], tmp_path, epochs=1, resume=True, skipped={}, log=lambda *a: None)
    assert json.loads((tmp_path / "results.json").read_text())["config"]["skipped_schedules"] == {"prodigy": "prodigyopt"}
    compare("digits", ["constant", "prodigy"], [0], tmp_path, epochs=1, resume=True, skipped={}, log=lambda *a: None)
    assert json.loads((tmp_path / "results.json").read_text())["config"]["skipped_schedules"] == {}, "run now"
