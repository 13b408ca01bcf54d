"""Tensors inside JSON: a safetensors blob, base64-encoded. No pickle anywhere."""

from __future__ import annotations

import base64

import torch

__all__ = ["tensors_to_text", "text_to_tensors", "optimizer_state_to_json", "optimizer_state_from_json"]


def tensors_to_text(tensors: dict[str, torch.Tensor]) -> str:
    from safetensors.torch import save

    return base64.b64encode(save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})).decode("ascii")


def text_to_tensors(text: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(base64.b64decode(text.encode("ascii")))


def optimizer_state_to_json(state: dict) -> dict:
    """A torch optimizer ``state_dict`` as JSON: tensors packed, param groups as plain lists."""
    tensors = {}
    for param_id, slots in state["state"].items():
        for name, value in slots.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{param_id}/{name}"] = t
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return {"tensors": tensors_to_text(tensors), "param_groups": groups}


def optimizer_state_from_json(data: dict) -> dict:
    state: dict = {}
    for key, value in text_to_tensors(data["tensors"]).items():
        param_id, name = key.split("/", 1)
        state.setdefault(int(param_id), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in data["param_groups"]]
    return {"state": state, "param_groups": groups}
