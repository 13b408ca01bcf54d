"""``hf-metalr meta-train``: ``HfArgumentParser`` over ``MetaTrainConfig``, one flag per field with its help.

Each flag takes both spellings, ``--episodes-per-iteration`` and ``--episodes_per_iteration``.
"""

from __future__ import annotations

from transformers import HfArgumentParser

from .train import MetaTrainConfig, meta_train

PROG = "hf-metalr meta-train"


def build_parser() -> HfArgumentParser:
    return HfArgumentParser(MetaTrainConfig, prog=PROG, description="Meta-train the LR controller with PPO across many "
                            "cheap training runs; writes a policy usable as MetaLRCallback(policy=...).")


def main(argv: list[str] | None = None) -> int:
    try:
        (config,) = build_parser().parse_args_into_dataclasses(args=argv, look_for_args_file=False)
        path = meta_train(config)
    except (FileExistsError, ValueError, ImportError) as exc:  # MetaTrainConfig's checks name the flag
        raise SystemExit(f"{PROG}: {exc}")
    print(f"policy: {path}")
    print(f"learning curve: {path.parent / 'learning_curve.png'}")
    return 0
