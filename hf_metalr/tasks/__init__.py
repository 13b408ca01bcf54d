"""Embedded benchmark tasks that run offline on a laptop CPU."""

from __future__ import annotations

import importlib
from typing import Callable

from .base import Task, TaskData

__all__ = ["TASKS", "Task", "TaskData", "get_task"]


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
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from: {', '.join(TASKS)}")
    return TASKS[name]()
