"""``hf-metalr meta-train``: flags generated from ``MetaTrainConfig``, one per field, with its help."""

from __future__ import annotations

import argparse
import dataclasses

from .train import MetaTrainConfig, meta_train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hf-metalr meta-train", description="Meta-train the LR controller with PPO "
                                "across many cheap training runs; writes a policy usable as MetaLRCallback(policy=...).")
    for f in dataclasses.fields(MetaTrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action="store_true", help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            required = f.default is dataclasses.MISSING
            p.add_argument(flag, type=kind, required=required, default=None if required else f.default,
                           help=f.metadata["help"] + ("" if required else f" (default: {f.default})"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    try:
        path = meta_train(MetaTrainConfig(**args))
    except (FileExistsError, ValueError, ImportError) as exc:
        raise SystemExit(f"hf-metalr meta-train: {exc}")
    print(f"policy: {path}")
    print(f"learning curve: {path.parent / 'learning_curve.png'}")
    return 0
