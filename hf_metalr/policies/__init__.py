"""Policies shipped in the wheel. ``default`` is the meta-trained one that ``MetaLRCallback()`` uses;
its card (``default.json``) says how it was trained and what it scored on held-out families."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_POLICY", "default_policy_path"]

DEFAULT_POLICY = "default"


def default_policy_path() -> Path:
    return Path(__file__).resolve().parent / "default.safetensors"
