"""The forward hooks hf_metalr puts on a model: at most one of each kind on a model at a time.

The callback removes its hooks when training ends (``on_train_end``). A ``train()`` that raises
never gets there, so its hooks stay on the model; a new Trainer with a new callback on the same
model (a notebook, after a crash) would add its own beside them, and the stale ones would go on
keeping the loss of every forward, which nothing reads. :func:`register_forward_hook` removes the
hook of the same kind that is still on the model before it adds the new one.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils.hooks import RemovableHandle

__all__ = ["register_forward_hook"]

_HOOKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {kind: handle}


def register_forward_hook(model: torch.nn.Module, kind: str, hook, **kwargs) -> RemovableHandle:
    """``model.register_forward_hook(hook, **kwargs)``, after removing the hook of this ``kind``
    that an earlier call left on ``model`` (a no-op when it was removed already)."""
    handles = _HOOKS.setdefault(model, {})
    stale = handles.pop(kind, None)
    if stale is not None:
        stale.remove()
    handles[kind] = handle = model.register_forward_hook(hook, **kwargs)
    return handle
