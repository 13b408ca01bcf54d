"""What the three recipes share, one implementation of each idea.

- argument dataclasses: :class:`ScheduleArguments` (``--lr_schedule`` + the ``--metalr_*`` block),
  :class:`BaseModelArguments`, :class:`BaseDataArguments`; :func:`build_parser` gives a recipe its
  own defaults (its model, its dataset, its hyperparameters) without repeating any help text;
- :func:`parse_args`: ``HfArgumentParser``; a ``.json`` file as first argument is read as flags,
  and any flags after it override the file;
- data: :func:`load_splits` (hub dataset or local csv/json/parquet in the hub schema, validation
  carved from train when a recipe has none, sample caps), :func:`decode_image`, :func:`load_audio`;
- model: :func:`load_config` (``--model_type`` builds from scratch, ``--config_overrides``) and
  :func:`load_model`;
- the LR schedule: :func:`configure_schedule` and :func:`configure_evaluation` before the Trainer,
  ``attach_schedule`` after it; :func:`train_evaluate_test` for the run and its outputs.

The recipes run as plain scripts (``python recipes/run_sst2.py``), so this module is imported as
``common`` from the script's own directory.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import transformers
from transformers import HfArgumentParser, TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SchedulerType
from transformers.training_args import OptimizerNames

from hf_metalr import TRACE_NAME, read_trace
from hf_metalr.baselines import SCHEDULES, MissingPeerError, require_schedule, schedule_training_overrides
from hf_metalr.launch import LaunchError, MetaLRArguments, check_metalr_options

logger = logging.getLogger("recipes")

METRIC_DRIVEN_SCHEDULER_TYPES = ("reduce_lr_on_plateau", "greedy")
LOCAL_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SAMPLING_RATE = 16_000


# -- arguments ----------------------------------------------------------------------------------
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
    return parser


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
    return parser.parse_args_into_dataclasses(args=argv)


def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    transformers.utils.logging.set_verbosity(level)
    import datasets

    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


# -- LR schedule and evaluation cadence -----------------------------------------------------------------
def _value(x):
    return getattr(x, "value", x)


def configure_schedule(schedule_args: ScheduleArguments, training_args: TrainingArguments) -> dict | None:
    """Make ``training_args`` run ``--lr_schedule``; return the ``MetaLRCallback`` kwargs (None for a baseline).

    - ``metalr`` (and ``metalr-*`` variants): ``--lr_scheduler_type`` (the recipes' default: ``constant``) and ``--warmup_steps``
      are kept: the controller multiplies that schedule. A metric-driven type (plateau, greedy) would
      fight the controller and is refused.
    - a baseline: it sets ``--lr_scheduler_type`` (with a warning if you asked for another); your
      ``--warmup_steps`` (default 0, as in the comparison tool) is kept. ``plateau``/``greedy`` need
      ``--metric_for_best_model`` (every recipe sets one).
    """
    name = schedule_args.lr_schedule
    requested = _value(training_args.lr_scheduler_type)
    if uses_controller(name):
        if requested in METRIC_DRIVEN_SCHEDULER_TYPES:
            raise ValueError(
                f"--lr_schedule {name} cannot run with --lr_scheduler_type {requested}: both set the LR from the "
                "validation metric. Use a time-based --lr_scheduler_type (constant, linear, cosine, ...), or "
                f"--lr_schedule {'plateau' if requested == 'reduce_lr_on_plateau' else 'greedy'} without the controller."
            )
        try:
            return check_metalr_options(schedule_args, learning_rate=training_args.learning_rate)
        except LaunchError as err:
            raise ValueError(str(err)) from None
    try:
        require_schedule(name)
    except MissingPeerError as err:
        raise ValueError(f"--lr_schedule {name}: {err}") from None
    overrides = schedule_training_overrides(name)
    wanted = overrides["lr_scheduler_type"]
    if requested not in (wanted, "constant"):
        logger.warning("--lr_schedule %s sets lr_scheduler_type=%s; your --lr_scheduler_type %s is ignored", name, wanted, requested)
    training_args.lr_scheduler_type = SchedulerType(wanted)
    if "optim" in overrides:
        training_args.optim = OptimizerNames(overrides["optim"])
    if name == "prodigy":
        logger.info("--lr_schedule prodigy runs Prodigy at lr=1.0: --learning_rate %g has no effect", training_args.learning_rate)
    if name in ("plateau", "greedy") and not training_args.metric_for_best_model:
        raise ValueError(f"--lr_schedule {name} steps on the validation metric: set --metric_for_best_model")
    ignored = schedule_args.non_default()
    if ignored:
        logger.warning("--lr_schedule %s: the --metalr_* settings %s are ignored", name, sorted(ignored))
    return None


def uses_controller(lr_schedule: str) -> bool:
    """``metalr`` and its variants (e.g. ``metalr-random``) run ``MetaLRCallback``."""
    return lr_schedule.startswith("metalr")


def optimizer_steps(training_args: TrainingArguments, n_train: int) -> int:
    """The number of optimizer steps the Trainer will take (as it computes them)."""
    if training_args.max_steps and training_args.max_steps > 0:
        return int(training_args.max_steps)
    batches = math.ceil(n_train / (training_args.per_device_train_batch_size * max(1, training_args.world_size)))
    per_epoch = max(1, batches // training_args.gradient_accumulation_steps)
    return max(1, math.ceil(training_args.num_train_epochs * per_epoch))


def configure_evaluation(training_args: TrainingArguments, n_train: int, num_evaluations: int) -> int:
    """Evaluate often enough for ``num_evaluations`` controller decisions; return the expected count.

    ``--eval_strategy no`` (the Trainer's default) becomes ``steps`` every
    ``max(1, total_steps // num_evaluations)`` steps; an explicit strategy is kept (with a warning
    when it gives fewer evaluations).
    """
    if num_evaluations < 1:
        raise ValueError(f"--num_evaluations must be >= 1, got {num_evaluations}")
    total = optimizer_steps(training_args, n_train)
    strategy = _value(training_args.eval_strategy)
    if strategy == "no":
        training_args.eval_strategy = IntervalStrategy.STEPS
        training_args.eval_steps = max(1, total // num_evaluations)
        training_args.do_eval = True
        strategy = "steps"
        logger.info("evaluating every %d of %d optimizer steps", training_args.eval_steps, total)
    if strategy == "steps":
        every = training_args.eval_steps if training_args.eval_steps >= 1 else max(1, int(total * training_args.eval_steps))
        expected = total // int(every)
    else:  # epoch
        expected = int(training_args.num_train_epochs) if training_args.max_steps <= 0 else 0
    if expected < num_evaluations:
        logger.warning(
            "only %d evaluations (controller decisions) in this run, fewer than --num_evaluations %d; "
            "leave --eval_strategy unset or lower --eval_steps", expected, num_evaluations
        )
    return expected


# -- data -----------------------------------------------------------------------------------------
def _local_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in LOCAL_FORMATS:
        raise ValueError(f"{path}: unsupported data file type {suffix!r}; use one of {sorted(LOCAL_FORMATS)}")
    return LOCAL_FORMATS[suffix]


def _resolve_paths(dataset, path_columns, base_dir: Path):
    """Make relative file paths in ``path_columns`` relative to the data file's directory."""
    present = [
        c for c in path_columns
        if c in dataset.column_names and getattr(dataset.features[c], "dtype", None) in ("string", "large_string")
    ]
    if not present:
        return dataset

    def resolve(batch):
        return {c: [p if p is None or Path(p).is_absolute() else str(base_dir / p) for p in batch[c]] for c in present}

    return dataset.map(resolve, batched=True, desc="resolving file paths")


def _undecoded(dataset):
    """Leave audio and image columns as raw bytes/paths; the recipes decode them (soundfile, PIL)."""
    from datasets import Audio, Image

    for name, feature in dataset.features.items():
        if isinstance(feature, Audio):
            dataset = dataset.cast_column(name, Audio(decode=False))
        elif isinstance(feature, Image):
            dataset = dataset.cast_column(name, Image(decode=False))
    return dataset


def _pick(dataset, n: int | None, seed: int):
    if n is None or n >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(n))


def load_splits(data_args: BaseDataArguments, training_args: TrainingArguments, *, columns, path_columns=()):
    """The recipe's ``train`` / ``validation`` / ``test`` splits (``test`` may be absent).

    Local files (``--train_file`` etc.) replace the hub dataset; relative paths in
    ``path_columns`` are taken relative to the data file. Without a validation split, one of
    ``--validation_split_size`` is carved from train (seeded with ``--seed``, so every process gets
    the same split). ``columns`` are checked; a tuple inside ``columns`` means "one of these".
    """
    from datasets import DatasetDict, load_dataset

    splits = {}
    if data_args.train_file:
        for role, path in (("train", data_args.train_file), ("validation", data_args.validation_file), ("test", data_args.test_file)):
            if path:
                ds = load_dataset(_local_format(path), data_files={role: path}, split=role)
                splits[role] = _resolve_paths(ds, path_columns, Path(path).resolve().parent)
    else:
        if data_args.validation_file or data_args.test_file:
            raise ValueError("--validation_file / --test_file need --train_file too (local files replace the hub dataset)")
        if not data_args.dataset_name:
            raise ValueError("give --dataset_name (hub) or --train_file (local)")
        for role, split in (("train", data_args.train_split_name), ("validation", data_args.validation_split_name), ("test", data_args.test_split_name)):
            if split:
                ds = load_dataset(data_args.dataset_name, data_args.dataset_config_name, split=split)
                splits[role] = _undecoded(ds)
    for role, ds in splits.items():
        _check_columns(ds, columns, role)
    if "validation" not in splits:
        size = data_args.validation_split_size
        size = int(size) if size >= 1 else float(size)
        parts = splits["train"].train_test_split(test_size=size, seed=training_args.seed, shuffle=True)
        splits["train"], splits["validation"] = parts["train"], parts["test"]
        logger.info("validation carved from train: %d examples (--validation_split_size %s)", len(splits["validation"]), size)
    splits["train"] = _pick(splits["train"], data_args.max_train_samples, training_args.seed)
    splits["validation"] = _pick(splits["validation"], data_args.max_eval_samples, training_args.seed)
    if "test" in splits:
        splits["test"] = _pick(splits["test"], data_args.max_test_samples, training_args.seed)
    logger.info("splits: %s", {k: len(v) for k, v in splits.items()})
    return DatasetDict(splits)


def _check_columns(dataset, columns, role: str) -> None:
    for column in columns:
        options = column if isinstance(column, tuple) else (column,)
        if not any(c in dataset.column_names for c in options):
            raise ValueError(
                f"the {role} data has no column {' or '.join(map(repr, options))} (columns: {dataset.column_names}); "
                "local files must follow the hub dataset's schema (see the recipe's docstring and --help)"
            )


def _open_source(value):
    """A file path or a file object for a media value: a path string, or a {'bytes', 'path'} dict."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return io.BytesIO(value["bytes"])
        value = value.get("path")
    if not isinstance(value, str) or not value:
        raise ValueError(f"cannot read media from {type(value).__name__} value {str(value)[:80]!r}")
    return value


def decode_image(value) -> np.ndarray:
    """An RGB image as a ``uint8`` array ``H x W x 3`` from a path, bytes dict, PIL image or nested list."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return np.array(value.convert("RGB"))
    if isinstance(value, (list, np.ndarray)):
        array = np.asarray(value, dtype=np.uint8)
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"an image given as a nested list must be [H][W][3] (or [H][W]), got shape {array.shape}")
        return array
    with Image.open(_open_source(value)) as image:
        return np.array(image.convert("RGB"))


def _audio_source(value):
    if isinstance(value, dict) and value.get("array") is not None:
        return None
    return _open_source(value)


def audio_num_samples(value, sampling_rate: int = SAMPLING_RATE) -> int:
    """Length in samples at ``sampling_rate``, from the file header only."""
    import soundfile as sf

    source = _audio_source(value)
    if source is None:
        return int(round(len(value["array"]) * sampling_rate / value["sampling_rate"]))
    info = sf.info(source)
    return int(round(info.frames * sampling_rate / info.samplerate))


def load_audio(value, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Mono float32 audio at ``sampling_rate``: decoded with soundfile, resampled with ``resample_poly``."""
    import soundfile as sf
    from scipy.signal import resample_poly

    source = _audio_source(value)
    if source is None:
        audio, rate = np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
    else:
        audio, rate = sf.read(source, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
    if rate != sampling_rate:
        g = math.gcd(rate, sampling_rate)
        audio = resample_poly(audio, sampling_rate // g, rate // g).astype(np.float32)
    return audio


# -- model -----------------------------------------------------------------------------------------
def _split_overrides(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_config_overrides(overrides: str | None) -> dict:
    """``key=value,...`` as a dict; values are JSON (numbers, booleans, lists) or plain strings."""
    parsed = {}
    for item in _split_overrides(overrides or ""):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise ValueError(f"--config_overrides: expected key=value, got {item!r}")
        try:
            parsed[key] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key] = {"True": True, "False": False, "None": None}.get(raw.strip(), raw.strip())
    return parsed


def load_config(model_args: BaseModelArguments, **updates):
    """Config of ``--model_type`` (from scratch) or of ``--model_name_or_path``, plus ``updates`` and overrides.

    With ``--model_type`` the overrides go through the config's constructor, so derived settings
    follow (e.g. wav2vec2's number of conv layers from ``conv_dim``); on a pretrained config they
    are set as attributes, as ``PretrainedConfig.update_from_string`` does.
    """
    from transformers import AutoConfig

    overrides = parse_config_overrides(model_args.config_overrides)
    if model_args.model_type:
        config = AutoConfig.for_model(model_args.model_type, **updates)
    else:
        config = AutoConfig.from_pretrained(
            model_args.model_name_or_path, cache_dir=model_args.cache_dir, revision=model_args.model_revision, **updates
        )
    unknown = sorted(k for k in overrides if not hasattr(config, k))
    if unknown:
        raise ValueError(f"--config_overrides: {type(config).__name__} has no attribute(s) {unknown}")
    if model_args.model_type:
        return AutoConfig.for_model(model_args.model_type, **{**updates, **overrides})
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def load_model(auto_class, model_args: BaseModelArguments, config, **from_pretrained_kwargs):
    """Random init from ``config`` with ``--model_type``, else the pretrained weights."""
    if model_args.model_type:
        logger.info("training %s from scratch (random init)", type(config).__name__)
        return auto_class.from_config(config)
    return auto_class.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        cache_dir=model_args.cache_dir,
        revision=model_args.model_revision,
        **from_pretrained_kwargs,
    )


# -- metrics and the run ------------------------------------------------------------------------
def classification_metrics(eval_pred) -> dict:
    """Accuracy and F1 (binary for two classes, macro otherwise), with scikit-learn."""
    from sklearn.metrics import accuracy_score, f1_score

    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    predictions = np.argmax(logits, axis=-1)
    average = "binary" if logits.shape[-1] == 2 else "macro"
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1": float(f1_score(labels, predictions, average=average, zero_division=0)),
    }


def train_evaluate_test(trainer, splits, lr_schedule: str) -> dict:
    """Train, save the model, evaluate on validation and test, write ``all_results.json``.

    Returns the combined metrics. ``all_results.json`` gathers the ``train_``, ``eval_`` and
    ``test_`` metrics, as in transformers' example scripts.
    """
    args = trainer.args
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model()
    metrics = dict(result.metrics, train_samples=len(splits["train"]))
    trace = Path(args.output_dir) / TRACE_NAME
    if uses_controller(lr_schedule) and trainer.is_world_process_zero() and trace.exists():
        metrics["train_metalr_decisions"] = len(read_trace(trace))
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    everything = dict(metrics)

    metrics = trainer.evaluate()
    metrics["eval_samples"] = len(splits["validation"])
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    everything.update(metrics)

    if "test" in splits:
        metrics = trainer.evaluate(splits["test"], metric_key_prefix="test")
        metrics["test_samples"] = len(splits["test"])
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)
        everything.update(metrics)
    else:
        logger.warning("no test split: skipped the test evaluation")
    return everything
