"""``MetaLRCallback``'s options as ``--metalr_*`` flags, for the recipes and the launcher alike.

:class:`MetaLRArguments` is a dataclass for ``transformers.HfArgumentParser``: add it to a
script's parser and build the callback from it::

    parser = HfArgumentParser((MetaLRArguments, TrainingArguments))
    metalr_args, training_args = parser.parse_args_into_dataclasses()
    check_metalr_options(metalr_args, learning_rate=training_args.learning_rate)  # fail before loading data
    trainer = Trainer(..., callbacks=[MetaLRCallback(**metalr_args.callback_kwargs())])
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from ..controller.controller import check_options
from ..controller.direction import LOWER_IS_BETTER_WORDS

__all__ = ["FLAG_PREFIX", "MetaLRArguments", "MetaLROptionError", "check_lr_bounds", "check_metalr_options",
           "tidy_negative_flags"]

FLAG_PREFIX = "--metalr_"


@dataclass
class MetaLRArguments:
    """The ``MetaLRCallback`` options as ``--metalr_<option>`` flags (one field per callback argument)."""

    metalr_metric: str | None = field(
        default=None,
        metadata={"help": "Metric the controller follows (the 'eval_' prefix is optional). Default: metric_for_best_model, else eval_loss."},
    )
    metalr_greater_is_better: bool | None = field(
        default=None,
        metadata={"help": "Whether a larger metric is better. Default: greater_is_better for metric_for_best_model when set, else "
                          "from the name: lower for a name that ends in loss or has one of the words "
                          f"{', '.join(LOWER_IS_BETTER_WORDS)}; greater otherwise."},
    )
    metalr_policy: str | None = field(
        default=None,
        metadata={"help": "'default' for the shipped meta-trained policy, 'random' for a fresh seeded one, or the path of a saved "
                          "policy (metalr_policy.safetensors). Default: 'default'."},
    )
    metalr_seed: int | None = field(
        default=None, metadata={"help": "Seed of the policy init, the action sampling and the gradient sketch. Default: the Trainer's --seed."}
    )
    metalr_min_lr: float | None = field(
        default=None, metadata={"help": "Lowest LR the controller may set. Default: 1e-3 x the initial learning rate."}
    )
    metalr_max_lr: float | None = field(
        default=None, metadata={"help": "Highest LR the controller may set. Default: 100 x the initial learning rate."}
    )
    metalr_learn_online: bool = field(
        default=True, metadata={"help": "Update the policy at every evaluation (one-step actor-critic). --no_metalr_learn_online freezes it."}
    )
    metalr_meta_lr: float = field(default=1e-4, metadata={"help": "Learning rate of the meta-learner (the policy's Adam)."})
    metalr_greedy: bool | None = field(
        default=None,
        metadata={"help": "Take the most likely action instead of sampling one. Default: greedy for a trained policy, sampling for 'random'."},
    )
    metalr_gate: bool = field(
        default=True,
        metadata={"help": "Hold the policy to the gradient-alignment evidence: raise only when the LR is measurably too low, cut only "
                          "on measured overshoot with a worse metric, or on a clear one, which halves the LR even when the "
                          "policy asks to keep it. --no_metalr_gate lets the policy act alone."},
    )
    metalr_average_iterates: bool | None = field(
        default=None,
        metadata={"help": "With the gate: keep the average of the iterates since the last evaluation (one float32 copy of the "
                          "trainable weights) and compare its validation loss with the current one's on up to 4 eval "
                          "batches; an average clearly better means the LR is too high. Default: on up to 500M trainable "
                          "parameters, off above. true / false: on / off whatever the size."},
    )

    def callback_kwargs(self) -> dict:
        """The keyword arguments of ``MetaLRCallback``: each ``metalr_`` field without its prefix.

        Options left at None are left out, so the callback's own defaults apply.
        """
        fields = dataclasses.fields(MetaLRArguments)
        return {f.name[len("metalr_") :]: getattr(self, f.name) for f in fields if getattr(self, f.name) is not None}

    def non_default(self) -> dict:
        """The ``metalr_`` options set away from their defaults, keyed by field name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(MetaLRArguments) if getattr(self, f.name) != f.default}


class MetaLROptionError(ValueError):
    """A meta-LR setting that cannot work; the message names the flag or variable and the fix
    (``hf_metalr.launch.LaunchError`` is this class)."""


def check_metalr_options(options: MetaLRArguments, *, sources: dict[str, str] | None = None, learning_rate: float | None = None):
    """Build one ``MetaLRCallback`` from ``options`` to fail now, not at the first evaluation.

    ``sources`` maps option names to where they came from (a flag or an environment variable),
    for the message. With ``learning_rate``, the LR bounds are checked against it too. Returns
    the callback keyword arguments.
    """
    from ..controller.policy import PolicyLoadError
    from .callback import MetaLRCallback

    kwargs = options.callback_kwargs()
    where = ", ".join(f"{name}={value!r} from {(sources or {}).get(name, 'flag --' + name)}" for name, value in options.non_default().items())
    try:
        MetaLRCallback(**kwargs)
    except (ValueError, TypeError, PolicyLoadError, OSError) as err:
        raise MetaLROptionError(f"bad meta-LR setting: {err}" + (f" (settings: {where})" if where else "")) from None
    if learning_rate is not None:
        check_lr_bounds(kwargs, learning_rate, sources)
    return kwargs


def check_lr_bounds(kwargs: dict, learning_rate: float, sources: dict[str, str] | None = None) -> None:
    """Fail unless ``learning_rate`` lies within the ``min_lr`` / ``max_lr`` of ``kwargs`` (the
    controller's own check), naming the flag or variable each bound came from."""
    if kwargs.get("min_lr") is None and kwargs.get("max_lr") is None:
        return  # the default bounds are relative to the initial LR
    origins = {name: (sources or {}).get("metalr_" + name, FLAG_PREFIX + name) for name in ("min_lr", "max_lr")}
    try:
        check_options(min_lr=kwargs.get("min_lr"), max_lr=kwargs.get("max_lr"), initial_lr=learning_rate, origins=origins)
    except ValueError as err:
        raise MetaLROptionError(f"bad meta-LR setting: {err}") from None


def tidy_negative_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``HfArgumentParser`` gives each bool option that defaults to True a ``--no_<name>`` twin
    that repeats its help and shows the opposite default (``--no_metalr_gate ... (default: False)``).
    Make each twin's help say what it does instead, without a default (the option's own, added
    first, shows and sets it). Other ``store_false`` flags are left alone. Call after
    ``set_defaults``; returns ``parser``."""
    from transformers.hf_argparser import string_to_bool

    positive = {a.dest: a.option_strings[0] for a in parser._actions  # HfArgumentParser's bool options only
                if a.option_strings and getattr(a, "type", None) is string_to_bool}
    for action in parser._actions:
        if isinstance(action, argparse._StoreFalseAction) and action.dest in positive:
            action.help = f"The same as {positive[action.dest]} false."
            action.default = argparse.SUPPRESS  # the option's own action, added first, sets the default
    return parser
