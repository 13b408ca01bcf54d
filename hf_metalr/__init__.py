"""hf_metalr: a meta-learned, metric-driven learning-rate controller for the Hugging Face Trainer.

    from hf_metalr import MetaLRCallback
    trainer = Trainer(..., callbacks=[MetaLRCallback()])
"""

from .controller import (
    FEATURE_NAMES,
    Decision,
    MetaLRController,
    PolicyLoadError,
    PolicyNetwork,
    load_policy,
    random_policy,
    save_policy,
)
from .integration import TRACE_NAME, MetaLRCallback, read_trace

__version__ = "0.1.0"

__all__ = [
    "FEATURE_NAMES",
    "Decision",
    "MetaLRCallback",
    "MetaLRController",
    "PolicyLoadError",
    "PolicyNetwork",
    "TRACE_NAME",
    "load_policy",
    "random_policy",
    "read_trace",
    "save_policy",
]
