"""Meta-LR for unmodified scripts: every ``Trainer`` the script builds gets a ``MetaLRCallback``.

    python -m hf_metalr.launch your_script.py --its --own --args --metalr_seed 1
    accelerate launch --multi_gpu --num_processes 4 -m hf_metalr.launch your_script.py ...
    torchrun --nproc_per_node 4 -m hf_metalr.launch your_script.py ...
    hf-metalr run your_script.py ...
    python -m hf_metalr.launch -m some.module ...          # a module instead of a file

How it works: ``transformers.Trainer.__init__`` is wrapped so that, once a Trainer (or any
subclass) is built, a fresh ``MetaLRCallback`` is added to it, unless the script already added
one itself. Then the script runs as ``__main__`` (``runpy``), with the ``--metalr_*`` flags taken
out of ``sys.argv``, so its own argument parser never sees them.

Settings (all optional), from lowest to highest priority:

- the ``MetaLRCallback`` defaults;
- environment variables ``HF_METALR_<NAME>``, e.g. ``HF_METALR_SEED=1``, ``HF_METALR_MAX_LR=1e-2``;
- flags ``--metalr_<name> VALUE`` (or ``--metalr_<name>=VALUE``), before or after the script path.
  Every ``--metalr_*`` token is taken by the launcher, wherever it stands.

Bad settings (unknown names, unparsable values, bounds the callback rejects, a policy file that
does not load) stop the launch with exit code 2 and a message naming the flag or the variable,
before the script starts. Bounds that exclude the script's initial learning rate stop it the same
way when the script builds its Trainer, before training. The script's own requirements still
apply: it must evaluate during training (``eval_strategy`` other than ``"no"``), must not use a
metric-driven LR scheduler, and must not add a ``MetaLRCallback`` of its own after building the
Trainer (two controllers on one optimizer are refused at train begin; run such a script directly).

:class:`MetaLRArguments` (the ``--metalr_*`` options) and :func:`check_metalr_options` live in
``hf_metalr.integration.arguments``, shared with the recipes; they are re-exported here.

A script that returns normally and leaves a ``torch.distributed`` process group up (the Trainer
under ``accelerate launch`` or ``torchrun`` does) has it ended after it, as the recipes end theirs
(``end_distributed``: with gloo after a barrier). Left to the interpreter's exit, gloo's threads
sometimes abort a rank that has written everything, and the run reads as failed. A group that was
up before the script, or the group of a script that failed, is left alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import os
import runpy
import sys
from argparse import ArgumentTypeError
from pathlib import Path

from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from .integration.arguments import (FLAG_PREFIX, MetaLRArguments, MetaLROptionError, check_lr_bounds, check_metalr_options,
                                   tidy_negative_flags)
from .integration.process_group import end_distributed, process_group_up

__all__ = ["ENV_PREFIX", "FLAG_PREFIX", "LaunchError", "MetaLRArguments", "check_lr_bounds", "check_metalr_options", "install", "main",
           "patched", "run_command"]

LaunchError = MetaLROptionError  # one error class for a bad launch and a bad meta-LR setting
ENV_PREFIX = "HF_METALR_"
PROG = "python -m hf_metalr.launch"


# -- settings from flags and environment ----------------------------------------------------------
# The --metalr_* flags are HfArgumentParser's over MetaLRArguments: its option names (with dashes or
# underscores, and --no_X for a boolean that defaults to True), types and help. The launcher only
# splits them out of the script's argv (they may stand anywhere) and reads HF_METALR_* variables.
_FIELDS = {f.name: f for f in dataclasses.fields(MetaLRArguments)}
_KIND = {int: "an integer", float: "a number", string_to_bool: "true or false"}


def metalr_parser(prog: str = PROG) -> HfArgumentParser:
    """The launcher's ``HfArgumentParser``: the ``--metalr_*`` flags of :class:`MetaLRArguments`."""
    return tidy_negative_flags(HfArgumentParser(
        MetaLRArguments,
        prog=prog,
        usage=f"{prog} [--metalr_OPTION VALUE ...] (SCRIPT.py | -m MODULE) [SCRIPT ARGS ...]",
        description="Run an unmodified Trainer script; every transformers.Trainer it builds gets MetaLRCallback. The "
                    "--metalr_* flags may stand before or after the script and are removed from its argv.",
        epilog=f"Each option can also come from the environment variable {ENV_PREFIX}<OPTION>, e.g. {ENV_PREFIX}SEED=1 or "
               f"{ENV_PREFIX}MAX_LR=1e-2 (flags win). Also: hf-metalr run ..., accelerate launch [--multi_gpu "
               "--num_processes N] -m hf_metalr.launch ...",
    ))


_PARSER = metalr_parser()


def _action(option: str):
    """The parser's action for ``--option`` (either spelling), or None."""
    return _PARSER._option_string_actions.get(option.replace("-", "_").replace("__", "--", 1))


def _convert(action, raw: str, source: str):
    """``raw`` through the parser's type for ``action``; ``none`` clears an optional setting."""
    text = raw.strip()
    if _FIELDS[action.dest].default is None and text.lower() in ("none", "null", ""):
        return None
    try:
        return action.type(text)
    except (ValueError, ArgumentTypeError):
        raise LaunchError(f"{source}: expected {_KIND.get(action.type, action.type.__name__)}, got {raw!r}") from None


def _unknown(option: str) -> LaunchError:
    flags = [FLAG_PREFIX + name[len("metalr_") :] for name in _FIELDS]
    close = difflib.get_close_matches(option.replace("-", "_").replace("__", "--", 1), flags, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return LaunchError(f"unknown meta-LR option {option}{hint} (known: {', '.join(flags)}). The launcher takes every "
                       f"{FLAG_PREFIX}* flag, wherever it stands: a flag of the script's own with that prefix needs "
                       "another name")


def _from_environ(environ) -> tuple[dict, dict, list[str]]:
    values, sources, warnings = {}, {}, []
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX):
            continue
        action = _action(FLAG_PREFIX + key[len(ENV_PREFIX) :].lower())
        if action is None or action.dest not in _FIELDS or action.nargs == 0:
            name = "metalr_" + key[len(ENV_PREFIX) :].lower()
            close = difflib.get_close_matches(name, list(_FIELDS), n=1)
            hint = f" (did you mean {ENV_PREFIX}{close[0][len('metalr_'):].upper()}?)" if close else ""
            warnings.append(f"ignoring environment variable {key}: not a meta-LR option{hint}")
            continue
        source = f"environment variable {key}"
        values[action.dest] = _convert(action, environ[key], source)
        sources[action.dest] = source
    return values, sources, warnings


def _take_flag(tokens: list[str], i: int) -> tuple[str, object, str, int]:
    """Parse the ``--metalr_*`` flag at ``tokens[i]``; return (name, value, source, next index)."""
    option, has_value, raw = tokens[i].partition("=")
    action = _action(option)
    if action is None or action.dest not in _FIELDS:
        raise _unknown(option)
    source = f"flag {option}"
    if action.nargs == 0:  # --no_metalr_X
        if has_value:
            raise LaunchError(f"{source} takes no value")
        return action.dest, False, source, i + 1
    if has_value:
        return action.dest, _convert(action, raw, source), source, i + 1
    nxt = tokens[i + 1] if i + 1 < len(tokens) else None
    if action.type is string_to_bool:  # a bare boolean flag means true; a true/false word after it is its value
        clears = _FIELDS[action.dest].default is None and nxt is not None and nxt.strip().lower() in ("none", "null")
        if nxt is not None and (_is_bool_word(nxt) or clears):
            return action.dest, _convert(action, nxt, source), source, i + 2
        if nxt is not None and not nxt.startswith("-") and not Path(nxt).exists():
            raise LaunchError(f"{source}: expected true or false, got {nxt!r}; if {nxt!r} is the script's own argument, "
                              f"write {option}=true before it")
        return action.dest, True, source, i + 1
    if nxt is None or nxt.startswith("--"):
        raise LaunchError(f"{source} needs a value")
    return action.dest, _convert(action, nxt, source), source, i + 2


def _is_bool_word(token: str) -> bool:
    try:
        string_to_bool(token)
        return True
    except ArgumentTypeError:
        return False


def _is_metalr_flag(token: str) -> bool:
    return token.startswith((FLAG_PREFIX, "--metalr-", "--no_metalr_", "--no-metalr-"))


def parse_launch_argv(argv: list[str], environ=None) -> tuple[MetaLRArguments, dict, list[str], tuple[str, str], list[str]]:
    """Split the launcher's argv.

    Returns (options, sources, warnings, (kind, target), script_args), kind being ``"path"`` or
    ``"module"``. Raises :class:`LaunchError` on anything it cannot use.
    """
    values, sources, warnings = _from_environ(os.environ if environ is None else environ)
    target: tuple[str, str] | None = None
    script_args: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if _is_metalr_flag(token):
            name, value, source, i = _take_flag(argv, i)
            values[name], sources[name] = value, source
        elif target is not None:
            script_args.append(token)
            i += 1
        elif token == "-m":
            if i + 1 >= len(argv):
                raise LaunchError("-m needs a module name")
            target, i = ("module", argv[i + 1]), i + 2
        elif token in ("-h", "--help"):
            raise LaunchError("--help goes first: python -m hf_metalr.launch --help")
        elif token.startswith("-"):
            raise LaunchError(f"unknown launcher option {token!r} before the script; the launcher takes only --metalr_* flags, then the script and its arguments")
        else:
            target, i = ("path", token), i + 1
    if target is None:
        raise LaunchError("no script given: pass the path of a Python script (or -m module) to run")
    if target[0] == "path" and not Path(target[1]).is_file():
        raise LaunchError(f"script not found: {target[1]!r}")
    return MetaLRArguments(**values), sources, warnings, target, script_args


# -- the Trainer patch ------------------------------------------------------------------------
_state = {"original_init": None, "kwargs": None, "sources": None, "trainers": [], "own": [], "prog": None}


def _has_metalr(trainer) -> bool:
    from .integration.callback import MetaLRCallback

    return any(isinstance(cb, MetaLRCallback) for cb in trainer.callback_handler.callbacks)


def install(callback_kwargs: dict, sources: dict[str, str] | None = None, prog: str | None = None) -> None:
    """Wrap ``transformers.Trainer.__init__`` so each new Trainer gets ``MetaLRCallback(**callback_kwargs)``.

    The LR bounds are checked against the Trainer's initial LR as it is built (``LaunchError``,
    naming the flag or variable from ``sources``). A Trainer that does not evaluate gets a warning
    on stderr (the main process's, under ``prog``'s name), as its ``train()`` will be refused.
    """
    from transformers import trainer as trainer_module

    from .integration.callback import MetaLRCallback

    _state["kwargs"], _state["sources"], _state["prog"] = dict(callback_kwargs), dict(sources or {}), prog or PROG
    if _state["original_init"] is not None:
        return
    original = trainer_module.Trainer.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if _has_metalr(self):  # a script that passes its own MetaLRCallback keeps just that one, with its settings
            if _state["sources"]:
                raise LaunchError(
                    f"the script passes its own MetaLRCallback to the Trainer of output_dir {self.args.output_dir}, so "
                    f"the launcher's {', '.join(sorted(set(_state['sources'].values())))} would not apply to it: give "
                    "those settings to the script's callback and run the script without the launcher, or drop the "
                    "script's callback")
            _state["own"].append(str(self.args.output_dir))
            return
        groups = self.optimizer.param_groups if self.optimizer is not None else [{"lr": self.args.learning_rate}]
        check_lr_bounds(_state["kwargs"], groups[0].get("initial_lr", groups[0]["lr"]), _state["sources"])
        callback = MetaLRCallback(**_state["kwargs"])
        callback._added_by_launcher = True
        self.add_callback(callback)
        try:  # fail fast on a conflicting schedule
            callback.on_init_end(self.args, self.state, self.control, lr_scheduler=self.lr_scheduler)
        except ValueError as err:
            raise LaunchError(str(err)) from None
        _state["trainers"].append(str(self.args.output_dir))
        if getattr(self.args.eval_strategy, "value", self.args.eval_strategy) == "no" and _is_main_process():
            # not refused here: a Trainer built only to predict never trains; its train() is refused
            print(f"{_state['prog']}: warning: the Trainer of output_dir {self.args.output_dir} does not evaluate "
                  "during training (eval_strategy='no'), and MetaLRCallback decides at evaluations: its train() will "
                  "be refused. Pass --eval_strategy steps --eval_steps N (or epoch) to the script", file=sys.stderr)

    trainer_module.Trainer.__init__ = __init__
    _state["original_init"] = original


def uninstall() -> None:
    from transformers import trainer as trainer_module

    if _state["original_init"] is not None:
        trainer_module.Trainer.__init__ = _state["original_init"]
    _state.update(original_init=None, kwargs=None, sources=None, trainers=[], own=[], prog=None)


@contextlib.contextmanager
def patched(callback_kwargs: dict, sources: dict[str, str] | None = None, prog: str | None = None):
    """``install`` for the duration of a ``with`` block."""
    install(callback_kwargs, sources, prog)
    try:
        yield _state["trainers"]
    finally:
        uninstall()


# -- running the script -----------------------------------------------------------------------
def _run(target: tuple[str, str], script_args: list[str]) -> int:
    kind, name = target
    saved_argv, saved_path = list(sys.argv), list(sys.path)
    try:
        if kind == "path":
            sys.argv = [name, *script_args]
            sys.path.insert(0, str(Path(name).resolve().parent))
            runpy.run_path(name, run_name="__main__")
        else:
            sys.argv = [name, *script_args]
            sys.path.insert(0, os.getcwd())
            runpy.run_module(name, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0


def _is_main_process() -> bool:
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"


def _help(prog: str = PROG) -> str:
    return metalr_parser(prog).format_help()


def _direction(kwargs: dict) -> str:
    """The banner's word on the metric and its direction."""
    from .controller.direction import greater_is_better_by_name

    metric = kwargs.get("metric")
    if metric is None:
        return "metric: each Trainer's metric_for_best_model, else eval_loss (its direction is logged at train start)"
    key = metric if metric.startswith("eval_") else f"eval_{metric}"
    greater = kwargs.get("greater_is_better")
    how = "as set" if greater is not None else "from its name"
    greater = greater_is_better_by_name(key) if greater is None else greater
    return f"metric: {key}, {'greater' if greater else 'lower'} is better ({how})"


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_help(prog))
        return 0 if argv else 2
    try:
        options, sources, warnings, target, script_args = parse_launch_argv(argv)
        kwargs = check_metalr_options(options, sources=sources)
    except LaunchError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    main_process = _is_main_process()
    if main_process:
        for warning in warnings:
            print(f"{prog}: warning: {warning}", file=sys.stderr)
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if v != _FIELDS["metalr_" + k].default) or "its defaults"
        print(f"{prog}: every Trainer gets MetaLRCallback({shown}); {_direction(kwargs)}", file=sys.stderr)
        _show_info_logs()
    group_was_up = process_group_up()  # a caller's own group (main() called in-process) is not the launcher's to end
    try:
        with patched(kwargs, sources, prog) as trainers:
            code = _run(target, script_args)
            built, own = list(trainers), list(_state["own"])  # (own: the Trainers that had the script's callback)
    except LaunchError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    if code == 0 and not group_was_up:  # this rank's script returned: end the group it left (not after a failure: a
        # barrier could wait for ranks the launcher stops)
        end_distributed()
    if main_process:
        _summarize(prog, built, own)
    return code


def _summarize(prog: str, built: list[str], own: list[str]) -> None:
    """Say on stderr which Trainers got the callback and where their traces are, once per file."""
    if built:
        traces = {}
        for output_dir in built:
            path = str(Path(output_dir) / "metalr_trace.jsonl")
            traces[path] = traces.get(path, 0) + 1
        print(f"{prog}: MetaLRCallback was added to {len(built)} Trainer(s); decision trace(s): "
              + ", ".join(path + (f" (shared by {n} Trainers: each train() starts it afresh, so it holds the last "
                                  "one's decisions; give each Trainer its own output_dir to keep them all)"
                                  if n > 1 else "")
                          for path, n in traces.items())
              + f" (read one with: hf-metalr trace {built[0]})", file=sys.stderr)
    if own:
        print(f"{prog}: {len(own)} Trainer(s) had the script's own MetaLRCallback, with the script's settings "
              f"(output_dir {', '.join(own)}); the launcher added none to them", file=sys.stderr)
    if not built and not own:
        print(f"{prog}: warning: the script built no transformers.Trainer; the launcher added nothing", file=sys.stderr)


def _show_info_logs() -> None:
    """Print hf_metalr's info logs (the metric direction at train start, a fresh start on resume) to stderr."""
    import logging

    package_logger = logging.getLogger("hf_metalr")
    if not package_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        package_logger.addHandler(handler)
        package_logger.setLevel(logging.INFO)


def run_command(argv: list[str] | None = None) -> int:
    """``hf-metalr run``: :func:`main`, with its messages under that name."""
    return main(argv, prog="hf-metalr run")


if __name__ == "__main__":
    sys.exit(main())
