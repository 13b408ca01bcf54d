"""The end of a run that started a ``torch.distributed`` process group (``accelerate launch``, ``torchrun``)."""

from __future__ import annotations

import torch


def end_distributed() -> None:
    """When a process group is up, wait for every rank at a barrier and destroy the group.

    For the end of a script that returned normally on every rank (the recipes, the launcher after
    the user's script). Left to the interpreter's exit, gloo's threads sometimes abort a rank that
    has already written everything (SIGABRT, "terminate called without an active exception"), and
    the launcher then reports the run as failed. Without a process group it does nothing.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
