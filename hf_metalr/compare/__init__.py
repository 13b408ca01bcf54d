"""The comparison harness: runs one task under several schedules and seeds, and measures them."""

from .session import compare

__all__ = ["compare"]
