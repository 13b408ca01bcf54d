"""Embedded benchmark tasks that run offline on a laptop CPU."""

from __future__ import annotations

from .base import Task, TaskData

__all__ = ["TASKS", "Task", "TaskData", "get_task"]


def _digits():
    from .digits import DigitsTask

    return DigitsTask()


def _sentiment():
    from .sentiment import SentimentTask

    return SentimentTask()


def _spoken_digits():
    from .spoken_digits import SpokenDigitsTask

    return SpokenDigitsTask()


def _char_lm():
    from .char_lm import CharLMTask

    return CharLMTask()


def _regression():
    from .regression import RegressionTask

    return RegressionTask()


# name -> factory; factories import lazily so that one task's dependencies don't load the others'
TASKS = {"digits": _digits, "sentiment": _sentiment, "spoken-digits": _spoken_digits, "char-lm": _char_lm, "regression": _regression}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from: {', '.join(TASKS)}")
    return TASKS[name]()
