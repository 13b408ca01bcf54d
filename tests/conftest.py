import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_collection_finish(session):
    """Every test module is imported: in each pytest worker, import what the fork server preloads as well (the
    tests' own runs need it), and freeze the heap, as the server does (``forked_job.PRELOAD`` ends with ``frozen_heap``)."""
    import importlib

    import forked_job

    for name in forked_job.PRELOAD:
        importlib.import_module(name)
