"""The recipes' flags: :class:`ScheduleArguments` (``--lr_schedule`` + the ``--metalr_*`` block),
:class:`BaseModelArguments` and :class:`BaseDataArguments`, each extended by a recipe;
:func:`build_parser` gives a recipe its own defaults without repeating any help text, and
:func:`parse_args` reads a ``.json`` file of flags first, with flags after it overriding it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field

import transformers
from transformers import HfArgumentParser, TrainingArguments

from hf_metalr.baselines import SCHEDULES
from hf_metalr.integration import MetaLRArguments
from hf_metalr.integration.arguments import tidy_negative_flags
from hf_metalr.integration.lr_binding import METRIC_DRIVEN_TYPES

logger = logging.getLogger("recipes")


@dataclass
class ScheduleArguments(MetaLRArguments):
    """Which LR schedule drives the run; the ``--metalr_*`` fields apply to ``--lr_schedule metalr``."""

    lr_schedule: str = field(
        default="metalr",
        metadata={
            "help": "LR schedule: 'metalr' (MetaLRCallback decides the LR at every evaluation, scaling "
            "--lr_scheduler_type; 'metalr-random': with a fresh policy) or a baseline of the comparison tool, "
            "which then sets --lr_scheduler_type: constant, step (x0.1 at 50%% and 75%% of the steps), cosine, "
            "linear, plateau, greedy; or an LR-free peer (pip install 'hf_metalr[peers]'): prodigy (Prodigy at "
            "lr=1.0, whatever --learning_rate), schedule-free (--optim schedule_free_adamw at --learning_rate).",
            "choices": list(SCHEDULES),
        },
    )
    num_evaluations: int = field(
        default=10,
        metadata={
            "help": "With --eval_strategy left at 'no', the recipe evaluates every max(1, total_steps // "
            "num_evaluations) optimizer steps, i.e. at least this many controller decisions per run."
        },
    )

    @property
    def uses_controller(self) -> bool:
        """``metalr`` and its variants (e.g. ``metalr-random``) run ``MetaLRCallback``."""
        return self.lr_schedule.startswith("metalr")

    def metric_driven_conflict(self, scheduler_type: str | None) -> str | None:
        """Why the controller cannot run with ``--lr_scheduler_type scheduler_type`` (None when it can):
        a metric-driven type sets the LR from the validation metric too."""
        if not (self.uses_controller and scheduler_type in METRIC_DRIVEN_TYPES):
            return None
        return (f"--lr_schedule {self.lr_schedule} cannot run with --lr_scheduler_type {scheduler_type}: both set the LR "
                "from the validation metric. Use a time-based --lr_scheduler_type (constant, linear, cosine, ...), or "
                f"--lr_schedule {'plateau' if scheduler_type == 'reduce_lr_on_plateau' else 'greedy'} without the "
                "controller.")

    def callback_kwargs(self) -> dict:
        """``MetaLRCallback``'s keyword arguments from the ``--metalr_*`` flags (``metalr-random``: a fresh policy)."""
        kwargs = super().callback_kwargs()
        return {**kwargs, "policy": "random"} if self.lr_schedule == "metalr-random" else kwargs


@dataclass
class BaseModelArguments:
    model_name_or_path: str = field(
        default=None, metadata={"help": "Pretrained weights and config: a hub model id or a local directory."}
    )
    model_type: str | None = field(
        default=None,
        metadata={
            "help": "Train from scratch: build the config of this model type (e.g. bert, resnet, wav2vec2) at its "
            "default size, with random weights; --model_name_or_path is then not used for the model."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated config settings applied last, e.g. 'hidden_size=32,num_hidden_layers=2' or "
            "'hidden_sizes=[8,16],depths=[1,1]' (values parsed as JSON, else kept as strings)."
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where to store downloaded models (datasets: HF_DATASETS_CACHE)."})
    model_revision: str = field(default="main", metadata={"help": "Model revision: branch, tag or commit id."})


@dataclass
class BaseDataArguments:
    dataset_name: str = field(default=None, metadata={"help": "Hub dataset, used when no --train_file is given."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of the hub dataset."})
    train_split_name: str = field(default="train", metadata={"help": "Hub split the training set comes from."})
    validation_split_name: str | None = field(
        default=None,
        metadata={"help": "Hub split used as the validation set (controller decisions); none: carved from train."},
    )
    test_split_name: str | None = field(
        default=None, metadata={"help": "Hub split used as the final test set; none: no test evaluation."}
    )
    train_file: str | None = field(
        default=None,
        metadata={"help": "Local training data (csv, json/jsonl or parquet) in the hub dataset's schema; replaces the hub."},
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Local validation data; without it the validation set is carved from the training data."}
    )
    test_file: str | None = field(default=None, metadata={"help": "Local test data; without it there is no test evaluation."})
    validation_split_size: float = field(
        default=0.1,
        metadata={"help": "Size of the validation set carved from train when there is none: a count if >= 1, else a fraction."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep this many training examples (seeded random pick)."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate during training on this many validation examples (seeded random pick)."}
    )
    max_test_samples: int | None = field(default=None, metadata={"help": "Keep this many test examples."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for the dataset preprocessing (map)."})


# Defaults every recipe shares; each recipe adds its model's own on top.
COMMON_DEFAULTS = dict(
    validation_split_name=None,
    lr_scheduler_type="constant",
    metric_for_best_model="accuracy",
    save_strategy="epoch",
    save_total_limit=2,
    logging_steps=50.0,
    # transformers 5.x otherwise multiplies each rank's (already averaged) loss by the number of
    # processes for models whose loss ignores `num_items_in_batch`: eval_loss and the gradients x N
    average_tokens_across_devices=False,
    ddp_find_unused_parameters=False,
)


def build_parser(recipe_doc: str, dataclass_types, **defaults) -> HfArgumentParser:
    """``HfArgumentParser`` over ``dataclass_types``, with ``COMMON_DEFAULTS`` and then the
    recipe's own ``defaults``.

    The defaults are set on the parser (``--help`` shows them), so the parsed objects stay the
    plain dataclasses, e.g. a ``TrainingArguments`` that pickles into ``training_args.bin``.
    """
    parser = HfArgumentParser(dataclass_types, description=recipe_doc.split("\n\n")[0])
    known = {f.name for dtype in dataclass_types for f in dataclasses.fields(dtype)}
    unknown = sorted((set(COMMON_DEFAULTS) | set(defaults)) - known)
    if unknown:
        raise TypeError(f"build_parser: no such flags {unknown}")
    parser.set_defaults(**{**COMMON_DEFAULTS, **defaults})
    parser.epilog = "A .json file as the first argument is read as flags (its keys are flag names); flags after it override it."
    return tidy_negative_flags(parser)


def _json_to_argv(path: str) -> list[str]:
    with open(path) as f:
        settings = json.load(f)
    if not isinstance(settings, dict):
        raise SystemExit(f"{path}: expected a JSON object of flag names to values")
    argv = []
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, bool):
            argv += [f"--{key}", "true" if value else "false"]
        elif isinstance(value, list):
            argv += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def parse_args(parser: HfArgumentParser, argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith(".json"):
        argv = _json_to_argv(argv[0]) + argv[1:]
    _refuse_a_metric_driven_scheduler(parser, argv)
    parsed = parser.parse_args_into_dataclasses(args=argv)
    for arguments in parsed:  # a "~/..." path the shell did not expand (--flag=~/x, a .json preset): the recipe's
        # own model and data paths; TrainingArguments' are the Trainer's to read
        if dataclasses.is_dataclass(arguments) and not isinstance(arguments, TrainingArguments):
            for field_ in dataclasses.fields(arguments):
                value = getattr(arguments, field_.name)
                if isinstance(value, str) and value.startswith("~"):
                    setattr(arguments, field_.name, os.path.expanduser(value))
    return parsed


def _refuse_a_metric_driven_scheduler(parser: HfArgumentParser, argv: list[str]) -> None:
    """The controller with a metric-driven ``--lr_scheduler_type``, refused before the full parse:
    there ``TrainingArguments`` would first ask for an eval strategy, which would not help."""
    scan = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    scan.add_argument("--lr_schedule", "--lr-schedule", default=parser.get_default("lr_schedule"))
    scan.add_argument("--lr_scheduler_type", "--lr-scheduler-type")  # HfArgumentParser takes both spellings
    known, _ = scan.parse_known_args(argv)
    if known.lr_schedule in SCHEDULES:  # another value: the full parse names the choices
        conflict = ScheduleArguments(lr_schedule=known.lr_schedule).metric_driven_conflict(known.lr_scheduler_type)
        if conflict:
            raise ValueError(conflict)


def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    logging.getLogger("hf_metalr").setLevel(level)  # the callback's own lines (the metric and its direction at train start)
    transformers.utils.logging.set_verbosity(level)
    import datasets

    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()
