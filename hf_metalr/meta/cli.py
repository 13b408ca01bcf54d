"""``hf-metalr meta-train``: ``HfArgumentParser`` over ``MetaTrainConfig``, one flag per field with its help.

Each flag takes both spellings, ``--episodes-per-iteration`` and ``--episodes_per_iteration``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from transformers import HfArgumentParser

from ..controller.policy import policy_files
from .train import CHECKPOINT_NAME, MetaTrainConfig, meta_train

PROG = "hf-metalr meta-train"


def build_parser() -> HfArgumentParser:
    return HfArgumentParser(MetaTrainConfig, prog=PROG, description="Meta-train the LR controller with PPO across many "
                            "cheap training runs; writes a policy usable as MetaLRCallback(policy=...).")


def main(argv: list[str] | None = None) -> int:
    try:
        (config,) = build_parser().parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except ValueError as exc:  # MetaTrainConfig's checks name the flag
        raise SystemExit(f"{PROG}: {exc}")
    try:
        path = meta_train(config)
    except (FileExistsError, ValueError, ImportError) as exc:
        raise SystemExit(f"{PROG}: {exc}")
    except KeyboardInterrupt:
        checkpoint = Path(config.out) / CHECKPOINT_NAME
        if checkpoint.is_file():
            print(f"\n{PROG}: interrupted: every finished iteration is kept in {checkpoint}; rerun the same command "
                  "with --resume to continue", file=sys.stderr)
        else:
            print(f"\n{PROG}: interrupted before the first iteration was finished: nothing was kept; rerun the same "
                  "command to start again", file=sys.stderr)
        return 130
    card = json.loads(policy_files(path)[1].read_text()).get("card", {})
    print(f"policy: {path} (iteration {card.get('selected_iteration')}, the lowest held-out evals ratio: "
          f"{card.get('held_out_evals_ratio_selected')})")
    print(f"learning curve: {path.parent / 'learning_curve.png'}")
    return 0
