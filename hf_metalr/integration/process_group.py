"""The end of a run that started a ``torch.distributed`` process group (``accelerate launch``, ``torchrun``)."""

from __future__ import annotations

import warnings

import torch


def process_group_up() -> bool:
    """Whether a ``torch.distributed`` process group is up in this process."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def end_distributed() -> None:
    """When a process group is up, end it: with gloo, after a barrier that waits for every rank;
    with another backend (NCCL), at once, as torch recommends.

    For the end of a script that returned normally (the recipes, the launcher after the user's
    script). Left to the interpreter's exit, gloo's threads sometimes abort a rank that has already
    written everything (SIGABRT, "terminate called without an active exception"), and the launcher
    then reports the run as failed. A gloo barrier that fails (a rank that left without reaching it,
    a rank-0-only tail longer than the group's timeout) is a warning, and the group is left to the
    exit as before. Without a process group it does nothing.
    """
    dist = torch.distributed
    if not process_group_up():
        return
    if dist.get_backend() == "gloo":
        try:
            dist.barrier()
        except RuntimeError as err:
            warnings.warn(f"the process group's closing barrier failed ({err}); the group is left to the process's exit",
                          RuntimeWarning, stacklevel=2)
            return
    dist.destroy_process_group()
