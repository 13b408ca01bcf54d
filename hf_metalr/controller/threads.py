"""Tiny tensor work on one thread."""

from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["single_threaded"]


@contextmanager
def single_threaded():
    """Run the policy's tiny tensor ops on one thread.

    With torch's default intra-op pool, an op on a 64x64 tensor is split across threads; on a
    machine whose cores are busy training, that costs milliseconds per op instead of microseconds.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
