"""The recipes' models: :func:`load_config` (``--model_type`` builds a config from scratch,
``--config_overrides`` applies last) and :func:`load_model` (random init or pretrained weights);
:func:`from_the_hub`, which names what a failed hub load was for and the flags that take local files."""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from pathlib import Path

from .arguments import BaseModelArguments

logger = logging.getLogger("recipes")

LOCAL_MODEL = "a local folder as --model_name_or_path, or --model_type to train from scratch"


@contextmanager
def from_the_hub(what: str, name: str, instead: str):
    """Loads of ``what`` (a model, a tokenizer, a dataset) named ``name``: an ``OSError`` raised in
    them (offline, no network, no such repository) comes out naming both and ``instead``, the
    flags that take local files."""
    local = name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()  # no hub id starts so
    if local and not Path(name).expanduser().exists():
        raise OSError(f"could not load the {what} {name!r}: there is no such file or folder. Give the path of an "
                      f"existing one, or pass {instead}.")
    try:
        yield
    except OSError as exc:
        raise OSError(f"could not load the {what} {name!r}: {exc}\nWithout the Hugging Face Hub (HF_HUB_OFFLINE=1, no "
                      f"network), pass {instead}.") from exc


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
        with from_the_hub("model config", model_args.model_name_or_path, LOCAL_MODEL):
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
    with from_the_hub("model", model_args.model_name_or_path, LOCAL_MODEL):
        return auto_class.from_pretrained(
            model_args.model_name_or_path,
            config=config,
            cache_dir=model_args.cache_dir,
            revision=model_args.model_revision,
            **from_pretrained_kwargs,
        )
