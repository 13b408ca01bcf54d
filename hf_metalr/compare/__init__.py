"""The comparison harness: runs one task under several schedules and seeds, and measures them."""

from .session import compare, load_results

__all__ = ["compare", "load_results"]
