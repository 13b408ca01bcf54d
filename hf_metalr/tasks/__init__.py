"""Embedded benchmark tasks that run offline on a laptop CPU, and a user's own, named by where it is.

``get_task`` takes an embedded task's name, or ``MODULE:NAME`` / ``path/to/file.py:NAME`` for a
:class:`~hf_metalr.tasks.base.Task` of your own (a subclass, or an instance), so that
``hf-metalr compare`` runs the same comparison on it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

from .base import R2Task, Task, TaskData

__all__ = ["TASKS", "R2Task", "Task", "TaskData", "get_task", "task_source", "TASK_SPEC_HELP"]

TASK_SPEC_HELP = ("MODULE:NAME or path/to/file.py:NAME, a hf_metalr.tasks.Task subclass (or instance) of your own "
                  "(README, \"Compare schedules on your own task\")")
_REQUIRED = ("name", "description", "metric", "greater_is_better", "threshold", "test_metrics")


def _lazy(module: str, cls: str) -> Callable[[], Task]:
    """A factory that imports ``module`` (within this package) only when the task is built, so one
    task's dependencies don't load the others'."""
    def build() -> Task:
        return getattr(importlib.import_module(f".{module}", __name__), cls)()

    return build


# name -> factory
TASKS = {
    "digits": _lazy("digits", "DigitsTask"),
    "sentiment": _lazy("sentiment", "SentimentTask"),
    "spoken-digits": _lazy("spoken_digits", "SpokenDigitsTask"),
    "char-lm": _lazy("char_lm", "CharLMTask"),
    "regression": _lazy("regression", "RegressionTask"),
    "vit-digits": _lazy("vit_digits", "ViTDigitsTask"),
}


def get_task(name: str) -> Task:
    """An embedded task by name, or a user's own by ``MODULE:NAME`` / ``path/to/file.py:NAME``.
    ``ValueError`` naming the problem and the fix when it cannot be found or is not a complete Task."""
    if name in TASKS:
        return TASKS[name]()
    if ":" not in name:
        raise ValueError(f"unknown task {name!r}; choose from: {', '.join(TASKS)}, or give {TASK_SPEC_HELP}")
    where, _, attribute = name.rpartition(":")
    if not where or not attribute.isidentifier():
        raise ValueError(f"task {name!r}: expected {TASK_SPEC_HELP}")
    found = getattr(_task_module(where), attribute, None)
    if found is None:
        raise ValueError(f"task {name!r}: {where} defines no {attribute!r}; name a Task subclass it defines")
    if isinstance(found, type) and issubclass(found, Task):
        try:
            task = found()
        except TypeError as exc:  # an abstract method left out, or an __init__ that needs arguments
            raise ValueError(f"task {name!r}: {attribute} cannot be built with no arguments ({exc}); implement "
                             "load, model and compute_metrics, and give __init__ defaults") from None
    elif isinstance(found, Task):
        task = found
    else:
        raise ValueError(f"task {name!r}: {attribute} is of type {type(found).__name__}, not a hf_metalr.tasks.Task "
                         "subclass; subclass hf_metalr.tasks.Task (benchmarks/unseen_families.py defines three outside the package)")
    missing = [a for a in _REQUIRED if not hasattr(task, a)]
    if missing:
        raise ValueError(f"task {name!r}: {attribute} does not set {', '.join(missing)}; set them as class attributes "
                         "(the Task docstring says what each means)")
    return task


def task_source(name: str) -> dict:
    """What a comparison records of where its task came from, to refuse a resume with another one of
    the same ``name``: ``{"spec": the name, "sha256": None}`` for an embedded task (the package's
    version covers it); for one of your own, the spec with its file's absolute path (or the
    module's name) and the sha256 of that file's source."""
    if name in TASKS or ":" not in name:
        return {"spec": name, "sha256": None}
    where, _, attribute = name.rpartition(":")
    module = _task_module(where)
    file = getattr(module, "__file__", None)
    return {"spec": f"{file if where.endswith('.py') else where}:{attribute}",
            "sha256": hashlib.sha256(Path(file).read_bytes()).hexdigest() if file else None}


def _task_module(where: str):
    """The module at ``where``: a ``.py`` file's path, or an importable module name."""
    if where.endswith(".py"):
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"task file {where} does not exist; give the path of the .py file that defines the task")
        return _module_from_file(path)
    if any(c in where for c in "/\\") or where.startswith(".") or not all(p.isidentifier() for p in where.split(".")):
        raise ValueError(f"task module {where!r} is not a module name; give the .py file's path (path/to/file.py:NAME) "
                         "or a dotted module name (package.module:NAME)")
    return _module_by_name(where)


@functools.lru_cache(maxsize=None)
def _module_from_file(path: Path):
    """``path`` imported once (the cache is keyed on the resolved path) under a name of its own. Its
    folder is on ``sys.path`` while it runs, so it can import its neighbours; the single-file
    neighbours it imported are then dropped from ``sys.modules``, so that another task file's
    neighbour of the same name is its own (a package beside it stays imported)."""
    module_name = f"hf_metalr_user_task_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    finally:
        sys.path.remove(str(path.parent))
        for name in set(sys.modules) - before - {module_name}:  # the single-file neighbours only: a package beside
            # it (the project's own) stays, so that it is not imported twice, with two copies of its classes
            file = getattr(sys.modules[name], "__file__", None)
            if "." not in name and file and Path(file).resolve().parent == path.parent and Path(file).name != "__init__.py":
                del sys.modules[name]
    return module


@functools.lru_cache(maxsize=None)
def _module_by_name(where: str):
    """The module ``where``, imported with the working folder on ``sys.path`` (as ``python -m`` has it)."""
    cwd = str(Path.cwd())
    sys.path.insert(0, cwd)
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (where == exc.name or where.startswith(exc.name + ".")):
            raise  # a module that the task's module imports is missing: its own error says which
        raise ValueError(f"task module {where!r} cannot be imported ({exc}); install it, run from the folder that "
                         "holds it (or put that folder on PYTHONPATH), or give the .py file's path instead") from None
    finally:
        sys.path.remove(cwd)
