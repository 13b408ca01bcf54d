"""``hf-metalr compare`` end to end on a tiny budget: runs, results.json, report, errors, resume, divergence."""

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import forked_job
from hf_metalr.compare import compare
from hf_metalr.compare.cli import main as compare_main
from hf_metalr.reporting import write_report
from hf_metalr.tasks import TASKS
from hf_metalr.tasks.base import ArrayDataset, Task, TaskData, classification_metrics

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_tiny_compare_end_to_end(tmp_path):
    data = compare("digits", ["constant", "metalr", "step"], [0], tmp_path, epochs=1, log=lambda *_: None)
    runs = {r["schedule"]: r for r in data["runs"]}
    assert set(runs) == {"constant", "metalr", "step"}
    for r in runs.values():
        assert r["status"] == "ok" and len(r["evals"]) == 2 and len(r["lr_curve"]) == 32
        assert 0.1 < r["test"]["accuracy"] <= 1 and 0 < r["test"]["macro_f1"] <= 1
        assert set(r["lr_stability"]) == {"std_dlog_lr", "direction_changes", "lr_min", "lr_max"}
        assert r["best_val_loss"] == min(e["eval_loss"] for e in r["evals"])
    # same init and data order per seed: the first evaluation happens after identical steps at identical LR
    assert runs["constant"]["evals"][0]["eval_loss"] == runs["step"]["evals"][0]["eval_loss"]
    assert runs["step"]["lr_stability"]["lr_min"] == pytest.approx(1e-5)
    assert (tmp_path / "runs" / "metalr-seed0" / "metalr_trace.jsonl").exists()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["task"] == "digits" and len(saved["runs"]) == 3

    report = write_report(tmp_path)
    text = report.read_text()
    for name in ("constant", "metalr", "step"):
        assert f"| {name} |" in text
    for png in ("lr_curve.png", "val_metric.png", "time_to_threshold.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG
    assert (tmp_path / "summary.csv").read_text().count("\n") == 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "mnist", "--out", "x"], "unknown task 'mnist'; choose from: digits"),
        (["--task", "digits", "--schedules", "constant,exp", "--out", "x"], "unknown schedule 'exp'; choose from: metalr, metalr-random, constant, step, cosine, linear, plateau, greedy"),
        (["--task", "digits", "--seeds", "two", "--out", "x"], "--seeds takes a count"),
        (["--task", "digits", "--lr", "-1", "--out", "x"], "--lr must be a finite number > 0, got -1.0"),
    ],
)
def test_bad_input_lists_the_choices(argv, message):
    with pytest.raises(SystemExit) as info:
        compare_main(argv)
    assert message in str(info.value)


class NaNAfterSteps(torch.nn.Module):
    """A classifier whose loss turns NaN after a few training steps."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x, labels=None):
        logits = self.linear(x)
        if self.training:
            self.calls += 1
            if self.calls > 6:
                logits = logits * float("nan")
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
        return out


class DivergingTask(Task):
    name = "diverging"
    description = "a toy task whose model diverges"
    metric = "accuracy"
    greater_is_better = True
    threshold = 0.99
    test_metrics = ("accuracy",)
    epochs = 4
    evals_per_epoch = 2

    def load(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 4, generator=g)
        y = (x[:, 0] > 0).long()
        return TaskData(*(ArrayDataset(x=x[s], labels=y[s]) for s in (slice(0, 128), slice(128, 192), slice(192, 256))))

    def model(self, seed):
        torch.manual_seed(seed)
        return NaNAfterSteps()

    def compute_metrics(self, eval_pred):
        logits, labels = eval_pred
        return classification_metrics((np.nan_to_num(np.asarray(logits)), np.asarray(labels)))


def test_diverged_run_is_recorded_and_the_compare_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(TASKS, "diverging", DivergingTask)
    data = compare("diverging", ["constant", "metalr"], [0], tmp_path, log=lambda *_: None)
    assert [r["status"] for r in data["runs"]] == ["diverged", "diverged"]
    assert all(len(r["lr_curve"]) < 32 for r in data["runs"]), "training stops at the divergence"
    # the training loss turns NaN at step 7: the log at step 8 records it as it is (transformers' default would log
    # the running average instead), and the run stops there
    for run in data["runs"]:
        assert run["train_loss"][-1][0] == 8 and np.isnan(run["train_loss"][-1][2])
    # results.json is strict JSON: the NaNs are nulls
    text = (tmp_path / "results.json").read_text()
    assert "NaN" not in text and json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in results.json"))
    assert json.loads(text)["runs"][0]["train_loss"][-1][2] is None
    assert write_report(tmp_path).exists()


def test_lr_stability_counts_the_move_from_the_first_steps_lr():
    from hf_metalr.compare.measures import lr_stability

    evals = [{"step": 4}, {"step": 8}]
    doubled_at_the_first_evaluation = [[s, s / 8, 1e-3 if s <= 4 else 2e-3] for s in range(1, 9)]
    cosine = [[s, s / 8, 1e-3 * (1 + np.cos(np.pi * (s - 1) / 8)) / 2] for s in range(1, 9)]
    constant = [[s, s / 8, 1e-3] for s in range(1, 9)]
    # x2 then x1: Δlog LR (log 2, 0), std log(2) / 2; before, with two evaluations, there was no move to count
    assert lr_stability(doubled_at_the_first_evaluation, evals)["std_dlog_lr"] == pytest.approx(np.log(2) / 2)
    assert lr_stability(cosine, evals)["std_dlog_lr"] > 0.1 and lr_stability(constant, evals)["std_dlog_lr"] == 0


@pytest.mark.slow
def test_interrupted_compare_keeps_finished_runs_and_resumes(tmp_path):
    out = tmp_path / "cmp"
    # each call of the CLI in a process of its own (forked_job: without a fresh interpreter's imports)
    cmd = ["compare", "--task", "digits", "--schedules", "constant", "--seeds", "2", "--epochs", "1", "--out", str(out)]
    proc = forked_job.start("hf_metalr.cli", *cmd)
    deadline = time.time() + 240
    while time.time() < deadline:
        path = out / "results.json"
        if path.exists() and json.loads(path.read_text())["runs"]:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    proc.wait(timeout=120)
    interrupted = proc.result()
    output = interrupted.stdout + interrupted.stderr
    first = json.loads((out / "results.json").read_text())["runs"]
    assert len(first) >= 1
    if interrupted.returncode != 0:  # interrupted before the second run finished: the finished run's report is rebuilt
        assert interrupted.returncode == 130 and "--resume" in output and "the report of the finished runs" in output
        assert "| constant |" in (out / "report.md").read_text() and "constant seed 1" in (out / "report.md").read_text()

    again = forked_job.run("hf_metalr.cli", *cmd)
    assert again.returncode != 0 and "pass --resume" in again.stderr

    resumed = forked_job.run("hf_metalr.cli", *cmd, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["schedule"], r["seed"]) for r in runs] == [("constant", 0), ("constant", 1)]
    assert runs[0] == first[0], "the finished run was kept, not redone"
    assert resumed.stdout.strip().endswith("report.md")


def test_a_resume_remeasures_runs_stored_by_an_older_measure(tmp_path):
    compare("digits", ["cosine"], [0], tmp_path, epochs=1, log=lambda *_: None)
    data = json.loads((tmp_path / "results.json").read_text())
    right = dict(data["runs"][0]["lr_stability"])
    assert right["std_dlog_lr"] > 0.1  # the cosine's decay, faster in the second half
    del data["config"]["measures_version"]  # a results.json from before the measure counted the first step's LR
    data["runs"][0]["lr_stability"]["std_dlog_lr"] = 9.0
    (tmp_path / "results.json").write_text(json.dumps(data))
    compare("digits", ["cosine"], [0], tmp_path, epochs=1, resume=True, log=lambda *_: None)  # nothing left to run
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["runs"][0]["lr_stability"] == right and again["config"]["measures_version"] == 2


def test_a_threshold_set_in_results_json_is_read_by_the_report_and_named_by_a_refused_resume(tmp_path):
    compare("digits", ["constant"], [0], tmp_path, epochs=1, log=lambda *_: None)
    data = json.loads((tmp_path / "results.json").read_text())
    data["config"]["threshold"] = 0.999  # another cut of the same runs, set by hand
    (tmp_path / "results.json").write_text(json.dumps(data))
    report = write_report(tmp_path).read_text()
    assert "≥ 0.999" in report and "| constant | 0/1 |" in report
    with pytest.raises(ValueError, match=r"the threshold \(one set in results.json to see another cut: restore the "
                                         r"task's to resume\): 0.999 stored, 0.95 given"):
        compare("digits", ["constant"], [1], tmp_path, epochs=1, resume=True, log=lambda *_: None)
