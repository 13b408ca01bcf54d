"""The ``hf-metalr`` command line. Each subcommand lives in its own module and parses its own flags."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function taking argv and returning an exit code, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "compare": ("hf_metalr.compare.cli", "main", "run one task under several LR schedules and seeds, and report"),
    "report": ("hf_metalr.reporting.cli", "main", "rebuild report.md and the plots from a results.json"),
    "trace": ("hf_metalr.reporting.trace_view", "main", "print a run's decision trace as a table, with why the LR moved"),
    "run": ("hf_metalr.launch", "run_command", "run an unmodified Trainer script with MetaLRCallback added"),
    "meta-train": ("hf_metalr.meta.cli", "main", "meta-train the controller across many training runs"),
}


def _usage() -> str:
    lines = ["usage: hf-metalr COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run 'hf-metalr COMMAND --help' for a command's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from . import __version__

        print(f"hf_metalr {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"hf-metalr: unknown command {command!r}; choose from: {', '.join(COMMANDS)}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[command]
    return int(getattr(importlib.import_module(module), function)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
