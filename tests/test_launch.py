"""``hf_metalr.launch``: meta-LR for an unmodified Trainer script.

The script below is written the way users write them: its own strict argparse, its own Trainer,
no ``hf_metalr`` import. It is launched through ``python -m hf_metalr.launch`` and through
``hf-metalr run``; the trace must show the controller's decisions, and the script must never see
the ``--metalr_*`` flags.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from free_port import free_port

from hf_metalr import launch

ROOT = Path(__file__).resolve().parents[1]

EXAMPLE_SCRIPT = '''
"""An example-style training script: digits, a small MLP, the standard Trainer."""
import argparse, json, sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from transformers import Trainer, TrainingArguments


class Digits(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def accuracy(pred):
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


parser = argparse.ArgumentParser()
parser.add_argument("--output_dir", required=True)
parser.add_argument("--max_steps", type=int, default=30)
args = parser.parse_args()  # strict: an unknown flag stops the script
Path(args.output_dir).mkdir(parents=True, exist_ok=True)
Path(args.output_dir, "argv.json").write_text(json.dumps(sys.argv[1:]))

data = load_digits()
x, y = (data.data / 16.0).astype(np.float32), data.target
torch.manual_seed(0)
training_args = TrainingArguments(
    output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=32, learning_rate=1e-2,
    eval_strategy="steps", eval_steps=5, logging_steps=5, save_strategy="no", metric_for_best_model="accuracy",
    lr_scheduler_type="constant", use_cpu=True, report_to="none", disable_tqdm=True, seed=0,
)
trainer = Trainer(model=MLP(), args=training_args, train_dataset=Digits(x[:600], y[:600]),
                  eval_dataset=Digits(x[600:800], y[600:800]), compute_metrics=accuracy)
trainer.train()
'''


@pytest.fixture()
def script(tmp_path) -> Path:
    path = tmp_path / "train_digits.py"
    path.write_text(EXAMPLE_SCRIPT)
    assert "hf_metalr" not in EXAMPLE_SCRIPT and "MetaLR" not in EXAMPLE_SCRIPT
    return path


def run(cmd, tmp_path, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(launch.ENV_PREFIX)}
    environ.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", **env)
    proc = subprocess.run(cmd, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{cmd}\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-5000:]}"
    return proc


def trace_of(output_dir: Path) -> list[dict]:
    path = output_dir / "metalr_trace.jsonl"
    assert path.exists(), sorted(p.name for p in output_dir.iterdir())
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_python_m_launch_adds_the_controller(script, tmp_path):
    out = tmp_path / "out"
    proc = run(
        [sys.executable, "-m", "hf_metalr.launch", "--metalr_seed", "3", str(script), "--output_dir", str(out),
         "--metalr_max_lr=0.03", "--max_steps", "30", "--metalr_policy", "random"],
        tmp_path,
    )
    assert json.loads((out / "argv.json").read_text()) == ["--output_dir", str(out), "--max_steps", "30"]
    trace = trace_of(out)
    assert [entry["global_step"] for entry in trace] == [5, 10, 15, 20, 25, 30]
    assert all(entry["metric"] == "eval_accuracy" for entry in trace)
    assert all(0 < entry["lr"] <= 0.03 * (1 + 1e-9) for entry in trace)
    assert (out / "metalr_policy.safetensors").exists()
    assert "MetaLRCallback was added to 1 Trainer" in proc.stderr
    assert "MetaLRCallback: monitoring eval_accuracy, greater is better" in proc.stderr, "the direction, at train start"


@pytest.mark.slow
def test_hf_metalr_run_with_environment_settings(script, tmp_path):
    out = tmp_path / "out"
    cli = Path(sys.executable).with_name("hf-metalr")
    assert cli.exists(), "the package's console script"
    proc = run(
        [str(cli), "run", "--metalr_greedy", str(script), "--output_dir", str(out), "--max_steps", "20"],
        tmp_path,
        HF_METALR_MIN_LR="5e-3",
        HF_METALR_MAX_LR="2e-2",
        HF_METALR_LEARN_ONLINE="false",
        HF_METALR_POLICY="random",
    )
    assert "min_lr=0.005" in proc.stderr and "learn_online=False" in proc.stderr and "greedy=True" in proc.stderr
    trace = trace_of(out)
    assert len(trace) == 4
    assert all(5e-3 * (1 - 1e-9) <= entry["lr"] <= 2e-2 * (1 + 1e-9) for entry in trace), [e["lr"] for e in trace]
    assert not any(entry["learned"] for entry in trace), "HF_METALR_LEARN_ONLINE=false froze the policy"
    assert json.loads((out / "argv.json").read_text()) == ["--output_dir", str(out), "--max_steps", "20"]


@pytest.mark.parametrize(
    "argv, environ, message",
    [
        (["--metalr_min_lr", "-1", "{script}"], {}, "min_lr=-1.0): must be a finite number > 0"),
        (["--metalr_min_lr", "0.1", "--metalr_max_lr", "0.01", "{script}"], {}, "swap them"),
        (["--metalr_polcy", "x.safetensors", "{script}"], {}, "did you mean --metalr_policy"),
        (["{script}", "--metalr_meta_lr", "fast"], {}, "flag --metalr_meta_lr: expected a number, got 'fast'"),
        (["{script}", "--metalr_seed"], {}, "flag --metalr_seed needs a value"),
        (["--metalr_policy", "{tmp}/missing_policy", "{script}"], {}, "missing_policy"),
        (["--bogus", "{script}"], {}, "unknown launcher option '--bogus'"),
        (["{tmp}/no_such_script.py"], {}, "script not found"),
        (["--metalr_seed", "1"], {}, "no script given"),
        (["{script}"], {"HF_METALR_SEED": "abc"}, "environment variable HF_METALR_SEED: expected an integer"),
        (["{script}"], {"HF_METALR_LEARN_ONLINE": "maybe"}, "HF_METALR_LEARN_ONLINE: expected true or false"),
    ],
)
def test_bad_settings_fail_clearly_before_the_script_runs(argv, environ, message, script, tmp_path, capsys, monkeypatch):
    for key in [k for k in os.environ if k.startswith(launch.ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    script_args = ["--output_dir", str(tmp_path / "out")] if "{script}" in argv else []
    argv = [a.format(script=script, tmp=tmp_path) for a in argv]
    assert launch.main(argv + script_args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err, err
    assert not (tmp_path / "out").exists(), "the script must not have started"


def test_unknown_environment_variable_is_a_warning(monkeypatch):
    monkeypatch.setenv("HF_METALR_MAXLR", "1")
    values, sources, warnings = launch._from_environ(os.environ)
    assert "metalr_max_lr" not in values
    assert any("HF_METALR_MAXLR" in w and "HF_METALR_MAX_LR" in w for w in warnings)


def test_help(capsys):
    from hf_metalr.cli import main as cli_main

    assert cli_main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--metalr_policy", "--metalr_seed", "--metalr_min_lr", "--metalr_max_lr", "--metalr_learn_online", "--metalr_meta_lr", "HF_METALR_SEED"):
        assert flag in text


def test_every_trainer_gets_exactly_one_callback(tmp_path):
    from tiny_job import make_trainer
    from transformers import Trainer

    from hf_metalr import MetaLRCallback

    def count(trainer):
        return sum(isinstance(cb, MetaLRCallback) for cb in trainer.callback_handler.callbacks)

    class MyTrainer(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

    with launch.patched({"seed": 5, "max_lr": 1.0, "policy": "random"}) as built:
        plain = make_trainer(tmp_path / "a")
        own = make_trainer(tmp_path / "b", callbacks=[MetaLRCallback(seed=1, policy="random")])
        sub = MyTrainer(model=plain.model, args=plain.args, train_dataset=plain.train_dataset, eval_dataset=plain.eval_dataset)
        assert [count(t) for t in (plain, own, sub)] == [1, 1, 1]
        added = next(cb for cb in plain.callback_handler.callbacks if isinstance(cb, MetaLRCallback))
        assert added.state()["args"]["seed"] == 5
        own_cb = next(cb for cb in own.callback_handler.callbacks if isinstance(cb, MetaLRCallback))
        assert own_cb.state()["args"]["seed"] == 1, "the script's own callback is kept, not replaced"
        assert len(built) == 2
    assert count(make_trainer(tmp_path / "c")) == 0, "uninstalled after the block"


def test_conflicting_schedule_fails_when_the_trainer_is_built(tmp_path):
    from tiny_job import make_trainer

    with launch.patched({"policy": "random"}), pytest.raises(ValueError, match="reduce_lr_on_plateau"):
        make_trainer(tmp_path, lr_scheduler_type="reduce_lr_on_plateau", metric_for_best_model="accuracy")


def test_a_trainer_that_does_not_evaluate_is_warned_about_when_built_and_refused_at_train(tmp_path, capsys):
    from tiny_job import make_trainer

    with launch.patched({"policy": "random"}, prog="hf-metalr run"):
        predict_only = make_trainer(tmp_path / "p", eval_strategy="no")  # built: a Trainer may only predict
        err = capsys.readouterr().err
        assert f"hf-metalr run: warning: the Trainer of output_dir {tmp_path / 'p'} does not evaluate during training " \
               "(eval_strategy='no')" in err and "Pass --eval_strategy steps --eval_steps N" in err
        make_trainer(tmp_path / "e")
        assert "warning" not in capsys.readouterr().err, "a Trainer that evaluates gets no warning"
        with pytest.raises(ValueError, match=r"evaluation is switched off \(eval_strategy='no'\).*--eval_strategy "
                                             r"steps --eval_steps N"):
            predict_only.train()


SCRIPT_OF_MODES = '''
import sys
from tiny_job import make_trainer
mode, out = sys.argv[1], sys.argv[2]
if mode == "own":
    from hf_metalr import MetaLRCallback
    make_trainer(out, callbacks=[MetaLRCallback(policy="random", max_lr=5e-3)])
elif mode == "two":
    make_trainer(out)
    make_trainer(out)
elif mode == "plateau":
    make_trainer(out, lr_scheduler_type="reduce_lr_on_plateau", metric_for_best_model="accuracy")
elif mode == "train":
    make_trainer(out, max_steps=5).train()
elif mode == "nothing":
    pass
elif mode in ("group", "group_then_fail"):  # a process group left up, as a Trainer under torchrun leaves one
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{out}", rank=0, world_size=1)
    if mode == "group_then_fail":
        sys.exit(3)
'''


@pytest.fixture()
def modes(tmp_path, monkeypatch) -> Path:
    for name in [k for k in os.environ if k.startswith(launch.ENV_PREFIX)]:
        monkeypatch.delenv(name)
    path = tmp_path / "modes.py"
    path.write_text(SCRIPT_OF_MODES)
    return path


def test_launcher_settings_for_a_trainer_with_the_scripts_own_callback_are_refused(modes, tmp_path, capsys):
    # the script's MetaLRCallback(max_lr=5e-3) is the one that runs: the launcher's max_lr would be silently ignored
    assert launch.main(["--metalr_max_lr", "2e-2", str(modes), "own", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "the script passes its own MetaLRCallback" in err and "flag --metalr_max_lr would not apply" in err
    # without launcher settings the script's callback runs, and the summary says so instead of "no Trainer"
    assert launch.main([str(modes), "own", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "1 Trainer(s) had the script's own MetaLRCallback" in err and "built no transformers.Trainer" not in err


def test_a_conflicting_schedule_under_the_launcher_names_the_launcher(modes, tmp_path, capsys):
    assert launch.main([str(modes), "plateau", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "reduce_lr_on_plateau" in err and "run the script without the launcher" in err


def test_two_trainers_in_one_output_dir_share_one_trace_and_are_told_so(modes, tmp_path, capsys):
    assert launch.main([str(modes), "two", str(tmp_path / "t")]) == 0
    err = capsys.readouterr().err
    assert err.count(str(tmp_path / "t" / "metalr_trace.jsonl")) == 1 and "shared by 2 Trainers" in err
    assert f"read one with: hf-metalr trace {tmp_path / 't'}" in err


def test_a_missing_metric_under_the_launcher_names_its_flag(modes, tmp_path):
    with pytest.raises(ValueError, match=r"Pass --metalr_metric NAME \(or HF_METALR_METRIC=NAME\) to the launcher"):
        launch.main(["--metalr_metric", "nonexistent", str(modes), "train", str(tmp_path / "m")])


def test_the_launcher_ends_the_process_group_a_script_leaves_but_not_after_a_failure_or_a_callers_own(modes, tmp_path):
    import torch.distributed as dist

    try:
        assert launch.main([str(modes), "group", str(tmp_path / "rendezvous-a")]) == 0
        assert not dist.is_initialized(), "ended after the script returned"
        assert launch.main([str(modes), "group_then_fail", str(tmp_path / "rendezvous-b")]) == 3
        assert dist.is_initialized(), "a failed script's group is left alone: the other ranks may never reach a barrier"
        assert launch.main([str(modes), "nothing", str(tmp_path / "unused")]) == 0
        assert dist.is_initialized(), "a group that was up before the script (the caller's) is not the launcher's to end"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


RANKS_SCRIPT = EXAMPLE_SCRIPT.replace(
    "compute_metrics=accuracy)",
    "compute_metrics=accuracy, callbacks=[RecordLR()])",
).replace(
    "parser = argparse.ArgumentParser()",
    """from transformers import TrainerCallback


class RecordLR(TrainerCallback):
    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        with Path(args.output_dir, f"lrs.rank{args.process_index}.jsonl").open("a") as f:
            f.write(json.dumps([state.global_step + 1, optimizer.param_groups[0]["lr"]]) + "\\n")


parser = argparse.ArgumentParser()""",
)


@pytest.mark.slow
def test_accelerate_launch_on_two_processes(tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2 -m hf_metalr.launch script.py``, on CPU (gloo): both
    ranks apply the controller's LR at every step, one trace is written, and the run exits 0."""
    assert "RecordLR()" in RANKS_SCRIPT and "hf_metalr" not in RANKS_SCRIPT
    script, out = tmp_path / "train_digits.py", tmp_path / "out"
    script.write_text(RANKS_SCRIPT)
    proc = run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
                "-m", "hf_metalr.launch", "--metalr_seed", "3", str(script), "--output_dir", str(out)], tmp_path)
    trace = trace_of(out)
    assert [entry["global_step"] for entry in trace] == [5, 10, 15, 20, 25, 30]
    assert proc.stderr.count("MetaLRCallback was added to 1 Trainer") == 1, "the summary, from the main process only"
    ranks = [[json.loads(line) for line in (out / f"lrs.rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert ranks[0] == ranks[1] and [step for step, _ in ranks[0]] == list(range(1, 31))
    applied = dict(ranks[0])
    for entry in trace[:-1]:  # each decision's LR holds from the next step on, on both ranks
        assert applied[entry["global_step"] + 1] == pytest.approx(entry["lr"])
    assert len({lr for _, lr in ranks[0]}) > 1, "the controller moved the LR (else the check above proves little)"


def test_only_hfargumentparser_bool_twins_get_the_short_help():
    import argparse

    from hf_metalr.integration.arguments import tidy_negative_flags

    plain = argparse.ArgumentParser()
    plain.add_argument("--verbose", action="store_true")
    plain.add_argument("--quiet", action="store_false", dest="verbose", help="be quiet")
    tidy_negative_flags(plain)
    assert plain._actions[-1].help == "be quiet" and plain.parse_args([]).verbose is False
    hf = tidy_negative_flags(launch.metalr_parser())
    twin = next(a for a in hf._actions if "--no_metalr_gate" in a.option_strings)
    assert twin.help == "The same as --metalr_gate false."
    assert hf.parse_args([]).metalr_gate is True and hf.parse_args(["--no_metalr_gate"]).metalr_gate is False
