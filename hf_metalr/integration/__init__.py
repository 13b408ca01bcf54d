"""The Hugging Face Trainer integration: the callback, LR binding and the decision trace."""

from .callback import MetaLRCallback
from .trace import TRACE_NAME, read_trace

__all__ = ["MetaLRCallback", "TRACE_NAME", "read_trace"]
