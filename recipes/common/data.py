"""The recipes' data: :func:`load_splits` (a hub dataset, or local csv/json/parquet files in the
hub schema; validation carved from train when there is none; sample caps) and
:func:`decode_image`. Audio is decoded by ``hf_metalr.media.load_audio`` (soundfile, no torchcodec)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from transformers import TrainingArguments

from hf_metalr.media import open_media

from .arguments import BaseDataArguments
from .models import from_the_hub

logger = logging.getLogger("recipes")

LOCAL_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _local_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in LOCAL_FORMATS:
        raise ValueError(f"{path}: unsupported data file type {suffix!r}; use one of {sorted(LOCAL_FORMATS)}")
    return LOCAL_FORMATS[suffix]


def _path_columns(dataset, path_columns) -> list[str]:
    """The columns of ``path_columns`` that ``dataset`` holds as strings (file paths, not bytes)."""
    return [c for c in path_columns
            if c in dataset.column_names and getattr(dataset.features[c], "dtype", None) in ("string", "large_string")]


def _resolve_paths(dataset, path_columns, base_dir: Path):
    """Make relative file paths in ``path_columns`` relative to the data file's directory."""
    present = _path_columns(dataset, path_columns)
    if not present:
        return dataset

    def resolve(batch):
        return {c: [p if p is None or Path(p).is_absolute() else str(base_dir / p) for p in batch[c]] for c in present}

    return dataset.map(resolve, batched=True, desc="resolving file paths")


def _check_files(dataset, path_columns, data_file: str) -> None:
    """Every file that the recipe will read exists: those of the first of ``path_columns`` the split
    holds (the one the recipe reads), when it holds paths, checked on the rows kept after the sample
    caps, before any training rather than at the batch that reads one."""
    held = [c for c in path_columns if c in dataset.column_names]
    if not held or held[0] not in _path_columns(dataset, path_columns):
        return
    missing = [p for p in dataset[held[0]] if p is not None and not Path(p).is_file()]
    if missing:
        raise ValueError(f"{data_file}: {len(missing)} of the files in column {held[0]!r} do not exist, the first "
                         f"{missing[0]} (relative paths are taken from the data file's folder); fix or drop those rows")


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
                if not Path(path).is_file():
                    raise ValueError(f"--{role}_file {path} does not exist; give the path of a local "
                                     f"{'/'.join(sorted(LOCAL_FORMATS))} file in the hub dataset's schema")
                ds = load_dataset(_local_format(path), data_files={role: path}, split=role)
                splits[role] = _resolve_paths(ds, path_columns, Path(path).resolve().parent)
    else:
        if data_args.validation_file or data_args.test_file:
            raise ValueError("--validation_file / --test_file need --train_file too (local files replace the hub dataset)")
        if not data_args.dataset_name:
            raise ValueError("give --dataset_name (hub) or --train_file (local)")
        for role, split in (("train", data_args.train_split_name), ("validation", data_args.validation_split_name), ("test", data_args.test_split_name)):
            if split:
                with from_the_hub("dataset", data_args.dataset_name,
                                  "local files as --train_file (with --validation_file, --test_file)"):
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
    for role, flag in (("train", "--max_train_samples"), ("validation", "--max_eval_samples"), ("test", "--max_test_samples")):
        require_examples(splits.get(role), role, f"the data and {flag}")
    if data_args.train_file:
        files = {"train": data_args.train_file, "validation": data_args.validation_file or data_args.train_file,
                 "test": data_args.test_file}
        for role, ds in splits.items():
            _check_files(ds, path_columns, files[role])
    logger.info("splits: %s", {k: len(v) for k, v in splits.items()})
    return DatasetDict(splits)


def require_examples(dataset, role: str, after: str) -> None:
    """``ValueError`` naming ``after`` (what left the split empty) when ``dataset`` has no row."""
    if dataset is not None and len(dataset) == 0:
        raise ValueError(f"the {role} split has no examples left; check {after}")


def _check_columns(dataset, columns, role: str) -> None:
    for column in columns:
        options = column if isinstance(column, tuple) else (column,)
        if not any(c in dataset.column_names for c in options):
            raise ValueError(
                f"the {role} data has no column {' or '.join(map(repr, options))} (columns: {dataset.column_names}); "
                "local files must follow the hub dataset's schema (see the recipe's docstring and --help)"
            )


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
    with Image.open(open_media(value)) as image:
        return np.array(image.convert("RGB"))
