"""The Hugging Face Trainer integration: the callback, its ``--metalr_*`` options, LR binding and the decision trace."""

from .arguments import MetaLRArguments, check_metalr_options
from .callback import MetaLRCallback
from .trace import TRACE_NAME, read_trace

__all__ = ["MetaLRArguments", "MetaLRCallback", "TRACE_NAME", "check_metalr_options", "read_trace"]
