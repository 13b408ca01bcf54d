"""The Trainer's ``CallbackHandler``, found from inside a callback's event, and the callback moved to its front.

Why the call stack: transformers (checked on 5.24) gives a callback no reference to its Trainer or
its handler. ``CallbackHandler.call_event`` calls every event as ``getattr(callback, event)(args,
state, control, model=..., processing_class=..., optimizer=..., lr_scheduler=...,
train_dataloader=..., eval_dataloader=..., **event_kwargs)``, and ``TrainerState`` keeps the
callbacks' exported states, not the callbacks. So the handler is the ``self`` of ``call_event``:
the frame that called the event, or a few frames further up when a subclass overrides the event
and calls ``super()`` (``HANDLER_FRAMES`` at most).
``test_callback.py::test_the_callback_runs_ahead_of_the_reporting_callbacks`` pins it.
"""

from __future__ import annotations

import sys

from transformers.trainer_callback import CallbackHandler

__all__ = ["calling_handler", "move_to_front"]

HANDLER_FRAMES = 8  # how far up the stack the CallbackHandler may be (subclasses calling super() add frames)


def calling_handler(callback) -> CallbackHandler | None:
    """The ``CallbackHandler`` whose event called the function that calls this one (an event of
    ``callback``, such as ``on_train_begin``), or None when the event was called directly, not by a
    Trainer."""
    frame = sys._getframe(1)  # the event that asks
    for _ in range(HANDLER_FRAMES):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, CallbackHandler) and callback in candidate.callbacks:
            return candidate
        frame = frame.f_back
    return None


def move_to_front(callback, handler: CallbackHandler | None) -> None:
    """Put ``callback`` first in ``handler``'s list.

    The Trainer places the reporting callbacks (TensorBoard, W&B) before the user's
    (``DEFAULT_CALLBACKS + reporting + callbacks``) and calls them in that order on the same
    ``logs`` dict, so keys a callback adds in ``on_log`` would reach the log history but not the
    reporters. A new list is assigned, so the handler's loop in progress is not disturbed. With no
    handler (called outside a Trainer) it changes nothing.
    """
    if handler is not None:
        handler.callbacks = [callback] + [c for c in handler.callbacks if c is not callback]
