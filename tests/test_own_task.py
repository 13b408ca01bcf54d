"""``hf-metalr compare --task path/to/file.py:NAME``: the comparison on a Task of the user's own."""

import json
import textwrap

import numpy as np
import pytest

from hf_metalr.compare.cli import main as compare_main
from hf_metalr.tasks import get_task
from hf_metalr.tasks.regression import RegressionTask

OWN_TASK = textwrap.dedent('''
    import numpy as np
    import torch
    from torch import nn

    from hf_metalr.tasks import R2Task, Task, TaskData
    from hf_metalr.tasks.base import ArrayDataset, seeded
    from helper_rows import rows  # a neighbour of this file: its folder is importable while it loads


    class LineFit(Task):
        name = "line-fit"
        description = "y = 3x - 1 plus noise, one linear layer"
        metric = "mse"
        greater_is_better = False
        threshold = 0.05
        test_metrics = ("mse",)
        learning_rate = 0.05
        epochs = 2
        batch_size = 16
        evals_per_epoch = 2

        def load(self):
            return TaskData(*(rows(n, seed) for n, seed in ((96, 0), (32, 1), (32, 2))))

        def model(self, seed):
            class Line(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.linear = nn.Linear(1, 1)

                def forward(self, x, labels=None):
                    y = self.linear(x).squeeze(-1)
                    return {"logits": y, **({"loss": nn.functional.mse_loss(y, labels)} if labels is not None else {})}

            return seeded(seed, Line)

        def compute_metrics(self, eval_pred):
            return {"mse": float(np.mean((eval_pred.predictions - eval_pred.label_ids) ** 2))}


    class LineFitR2(R2Task):
        name, description, threshold = "line-fit-r2", "the same line, scored by R^2", 0.9
        load, model = LineFit.load, LineFit.model


    not_a_task = 3


    class Unfinished(Task):
        name = "unfinished"


    class NoMetric(Task):
        name = "no-metric"
        description = "every method, but no metric set"
        greater_is_better = False
        threshold = 0.05
        test_metrics = ("mse",)
        load, model, compute_metrics = LineFit.load, LineFit.model, LineFit.compute_metrics
''')

HELPER = textwrap.dedent('''
    import torch
    from hf_metalr.tasks.base import ArrayDataset


    def rows(n, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(n, 1, generator=g)
        return ArrayDataset(x=x, labels=3 * x[:, 0] - 1 + 0.05 * torch.randn(n, generator=g))
''')


def write_task_folder(folder, task_text=OWN_TASK):
    """``folder``/line_task.py (``task_text``) beside the helper_rows.py it imports; returns the task file."""
    folder.mkdir()
    (folder / "helper_rows.py").write_text(HELPER)
    path = folder / "line_task.py"
    path.write_text(task_text)
    return path


@pytest.fixture()
def own_task_file(tmp_path):
    return write_task_folder(tmp_path / "mine")


def test_compare_runs_a_task_of_ones_own_from_its_file(own_task_file, tmp_path):
    out = tmp_path / "cmp"
    assert compare_main(["--task", f"{own_task_file}:LineFit", "--schedules", "constant,metalr", "--seeds", "1",
                         "--out", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["task"] == "line-fit" and saved["config"]["threshold"] == 0.05
    assert sorted(r["schedule"] for r in saved["runs"]) == ["constant", "metalr"]
    assert all(len(r["evals"]) == 4 and r["test"]["mse"] is not None for r in saved["runs"])  # 2 epochs x 2 evals
    assert (out / "runs" / "metalr-seed0" / "metalr_trace.jsonl").is_file()
    assert "line-fit" in (out / "report.md").read_text()
    # a resume finds the same task again by the same spec
    assert compare_main(["--task", f"{own_task_file}:LineFit", "--schedules", "constant,metalr,linear", "--seeds", "1",
                         "--out", str(out), "--resume"]) == 0
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 3


def test_an_r2_task_needs_only_its_name_threshold_data_and_model(own_task_file):
    from transformers import EvalPrediction

    task = get_task(f"{own_task_file}:LineFitR2")
    assert (task.metric, task.greater_is_better, task.test_metrics) == ("r2", True, ("r2", "mse"))
    labels = np.array([0.0, 1.0, 2.0, 3.0])
    metrics = task.compute_metrics(EvalPrediction(predictions=labels + 0.5, label_ids=labels))
    assert metrics["mse"] == pytest.approx(0.25) and metrics["r2"] == pytest.approx(1 - 0.25 / labels.var())
    assert task.reached(0.95) and not task.reached(0.85)


def test_a_module_name_works_as_well_as_a_file():
    assert isinstance(get_task("hf_metalr.tasks.regression:RegressionTask"), RegressionTask)
    instance = RegressionTask()
    import hf_metalr.tasks.regression as module

    module.A_READY_TASK = instance
    try:
        assert get_task("hf_metalr.tasks.regression:A_READY_TASK") is instance
    finally:
        del module.A_READY_TASK


@pytest.mark.parametrize("spec, message", [
    ("{file}:Missing", "defines no 'Missing'; name a Task subclass it defines"),
    ("{file}:not_a_task", "not_a_task is of type int, not a hf_metalr.tasks.Task subclass"),
    ("{file}:Unfinished", "Unfinished cannot be built with no arguments"),
    ("{file}:NoMetric", "NoMetric does not set metric; set them as class attributes"),
    ("{folder}/nowhere.py:LineFit", "nowhere.py does not exist; give the path of the .py file"),
    ("no_such_module_here:LineFit", "task module 'no_such_module_here' cannot be imported"),
    ("{file}:", "expected MODULE:NAME or path/to/file.py:NAME"),
    ("mnist", "unknown task 'mnist'; choose from: digits"),
])
def test_a_task_that_cannot_be_found_or_built_is_named_with_the_fix(own_task_file, spec, message):
    spec = spec.format(file=own_task_file, folder=own_task_file.parent)
    with pytest.raises(SystemExit) as info:
        compare_main(["--task", spec, "--out", "unused"])
    assert message in str(info.value)


def test_a_resume_with_another_task_of_the_same_name_or_an_edited_one_is_refused(own_task_file, tmp_path):
    out = tmp_path / "cmp"
    spec = f"{own_task_file}:LineFit"
    assert compare_main(["--task", spec, "--schedules", "constant", "--seeds", "1", "--epochs", "1", "--out", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())["config"]["task_source"]
    assert saved["spec"] == f"{own_task_file.resolve()}:LineFit" and len(saved["sha256"]) == 64
    other = write_task_folder(tmp_path / "other", OWN_TASK.replace("one linear layer", "another model"))  # also line-fit
    with pytest.raises(SystemExit, match=r"is not the one .* were made with \(that comparison's task 'line-fit' came from"):
        compare_main(["--task", f"{other}:LineFit", "--schedules", "constant", "--seeds", "1",
                      "--epochs", "1", "--out", str(out), "--resume"])
    with pytest.raises(SystemExit, match=r"came from .*line_task.py:LineFit"):  # an embedded task of another name too
        compare_main(["--task", "digits", "--schedules", "constant", "--seeds", "1", "--out", str(out), "--resume"])


def test_an_edited_task_file_is_refused_on_resume(tmp_path):
    path = write_task_folder(tmp_path / "edit")
    out = tmp_path / "cmp"
    argv = ["--task", f"{path}:LineFit", "--schedules", "constant", "--seeds", "1", "--epochs", "1", "--out", str(out)]
    assert compare_main(argv) == 0
    path.write_text(OWN_TASK.replace("learning_rate = 0.05", "learning_rate = 0.05  # edited"))
    from hf_metalr.tasks import _module_from_file

    _module_from_file.cache_clear()  # a new process would read the file again
    with pytest.raises(SystemExit, match="its source changed since"):
        compare_main(argv + ["--resume"])


def test_two_task_files_each_get_their_own_neighbour_and_a_module_name_is_found_from_the_working_folder(tmp_path, monkeypatch):
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "shared_helper.py").write_text(f"WHICH = {name!r}\n")
        (folder / "task.py").write_text(OWN_TASK.replace("from helper_rows import rows", "from shared_helper import WHICH\nfrom hf_metalr.tasks.base import ArrayDataset as rows")
                                        .replace('name = "line-fit"', f'name = "line-fit-" + WHICH'))
    assert get_task(f"{tmp_path / 'a' / 'task.py'}:LineFit").name == "line-fit-a"
    assert get_task(f"{tmp_path / 'b' / 'task.py'}:LineFit").name == "line-fit-b"
    # package.module:NAME from the folder one runs in, as python -m finds it
    (tmp_path / "mytasks").mkdir()
    (tmp_path / "mytasks" / "__init__.py").write_text("")
    (tmp_path / "mytasks" / "lines.py").write_text(OWN_TASK.replace("from helper_rows import rows", "rows = None"))
    monkeypatch.chdir(tmp_path)
    assert get_task("mytasks.lines:LineFit").name == "line-fit"
    # a module that the task's module imports is missing: its own error, not "cannot be imported"
    (tmp_path / "mytasks" / "broken.py").write_text("import no_such_dependency_here\n")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_here"):
        get_task("mytasks.broken:LineFit")
    with pytest.raises(ValueError, match="is not a module name; give the .py file's path"):
        get_task("./mytasks/lines:LineFit")


def test_meta_eval_refuses_two_tasks_of_one_name(own_task_file, capsys):
    from benchmark_scripts import load_benchmark

    meta_eval = load_benchmark("meta_eval")
    with pytest.raises(SystemExit):
        meta_eval.main(["--tasks", "regression,hf_metalr.tasks.regression:RegressionTask", "--out", "unused"])
    assert "more than one task is named regression" in capsys.readouterr().err


def test_a_package_beside_the_task_file_is_imported_once(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "projpkg_s18").mkdir()
    (folder / "projpkg_s18" / "__init__.py").write_text("class Marker:\n    pass\n")
    (folder / "task.py").write_text(OWN_TASK.replace("from helper_rows import rows",
                                                     "from projpkg_s18 import Marker\nrows = None"))
    import sys

    try:
        module = sys.modules[type(get_task(f"{folder / 'task.py'}:LineFit")).__module__]
        assert sys.modules["projpkg_s18"].Marker is module.Marker  # one copy of the project's classes
    finally:
        sys.modules.pop("projpkg_s18", None)
