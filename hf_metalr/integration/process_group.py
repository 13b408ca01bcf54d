"""The end of a run that started a ``torch.distributed`` process group (``accelerate launch``, ``torchrun``)."""

from __future__ import annotations

import time
import warnings

import torch

GLOO_WORKERS_GRACE_S = 0.5
"""How long the end of a gloo run waits, without the GIL, for gloo's worker threads to let go of
the last collectives' tensors (see ``end_distributed``)."""


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

    The abort's cause, read from a core dump: a gloo worker thread lets go of a finished collective
    (the barrier, and through it the run's last all-gather) a moment after the ranks have moved
    on. Releasing that all-gather's tensors decrefs their Python objects, which needs the GIL; once
    the interpreter is finalizing, a thread that asks for the GIL exits inside a C++ destructor, and
    that is ``std::terminate``. So after the group is destroyed, this waits
    ``GLOO_WORKERS_GRACE_S`` (sleeping, the GIL released) for those threads to finish.
    """
    dist = torch.distributed
    if not process_group_up():
        return
    gloo = dist.get_backend() == "gloo"
    if gloo:
        try:
            dist.barrier()
        except RuntimeError as err:
            warnings.warn(f"the process group's closing barrier failed ({err}); the group is left to the process's exit",
                          RuntimeWarning, stacklevel=2)
            return
    dist.destroy_process_group()
    if gloo:
        time.sleep(GLOO_WORKERS_GRACE_S)
