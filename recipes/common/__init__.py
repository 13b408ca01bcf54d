"""What the three recipes share, one concern per module:

- ``arguments``: the flags (``ScheduleArguments`` with the ``--metalr_*`` block, model and data
  arguments), ``build_parser`` and ``parse_args`` (a ``.json`` of flags, then overrides);
- ``schedule``: ``configure_schedule`` (``--lr_schedule``) and ``configure_evaluation`` (how often
  the controller decides);
- ``data``: ``load_splits`` (hub or local files), ``require_examples`` and ``decode_image``;
- ``models``: ``load_config``, ``load_model`` and ``from_the_hub`` (a failed hub load, named, with its local flags);
- ``run``: ``train_evaluate_test``.

Metrics, audio decoding and ``end_distributed`` come from the package (``hf_metalr.metrics``,
``hf_metalr.media``, ``hf_metalr.integration.process_group``; the launcher ends its runs the same way).
The recipes run as plain scripts (``python recipes/run_sst2.py``), so this package is imported as
``common`` from the script's own directory.
"""

from hf_metalr.integration.process_group import end_distributed

from .arguments import BaseDataArguments, BaseModelArguments, ScheduleArguments, build_parser, parse_args, setup_logging
from .data import decode_image, load_splits, require_examples
from .models import from_the_hub, load_config, load_model, parse_config_overrides
from .run import train_evaluate_test
from .schedule import EvaluationCadence, configure_evaluation, configure_schedule

__all__ = ["BaseDataArguments", "BaseModelArguments", "EvaluationCadence", "ScheduleArguments", "build_parser",
           "configure_evaluation", "configure_schedule", "decode_image", "end_distributed", "from_the_hub", "load_config", "load_model", "load_splits",
           "parse_args", "parse_config_overrides", "require_examples", "setup_logging", "train_evaluate_test"]
