import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_collection_finish(session):
    """Every test module is imported: freeze the heap their imports made (``frozen_heap``), in each pytest worker."""
    import frozen_heap  # noqa: F401  (it freezes on import)
