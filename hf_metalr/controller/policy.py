"""The policy network and its file format.

A policy is a small actor-critic MLP: the actor maps an observation (see ``features``) to logits
over the action multipliers (see ``actions``), the critic to a value estimate.

On disk a policy is two files side by side, never a pickle:

- ``NAME.safetensors``: the weights;
- ``NAME.json``: the config (format version, the names of the features it reads, in input order,
  multipliers, hidden size) and an optional free-form ``card`` (how it was trained, held-out scores).

A policy reads the features named in its config, so one trained before a feature was added
still loads and acts as it did.

``load_policy`` checks all of it and raises :class:`PolicyLoadError`, naming the file, for a file
that is missing, corrupt, of another format version, built on features this version does not
compute, with a config field of the wrong type or range (``hidden`` not a whole number >= 1, a
multiplier not a finite number > 0), with weights of the wrong shape, or with NaN or infinite weights.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checks import is_positive_finite
from .actions import DEFAULT_MULTIPLIERS
from .features import FEATURE_NAMES, unknown_features
from .threads import single_threaded

__all__ = ["FORMAT_VERSION", "PolicyConfig", "PolicyLoadError", "PolicyNetwork", "load_policy", "load_policy_weights",
           "policy_files", "policy_fingerprint",
           "save_policy", "random_policy"]

FORMAT_VERSION = 1


class PolicyLoadError(ValueError):
    """A policy file that cannot be used; the message names the file and the fix."""


@dataclass
class PolicyConfig:
    hidden: int = 64
    features: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))
    multipliers: list[float] = field(default_factory=lambda: list(DEFAULT_MULTIPLIERS))
    format_version: int = FORMAT_VERSION
    card: dict = field(default_factory=dict)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class PolicyNetwork(nn.Module):
    """Separate actor and critic MLPs (two hidden tanh layers each).

    Building one never draws from the global RNG (so a user's seeded run is not disturbed);
    the weights come from :func:`random_policy` or :func:`load_policy`.
    """

    def __init__(self, config: PolicyConfig | None = None):
        super().__init__()
        self.config = config or PolicyConfig()
        n_obs, n_act, h = len(self.config.features), len(self.config.multipliers), self.config.hidden
        with torch.random.fork_rng(devices=[]):
            self.actor = _mlp([n_obs, h, h, n_act])
            self.critic = _mlp([n_obs, h, h, 1])

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor(obs), self.critic(obs).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.actor(obs))


def random_policy(seed: int = 0, config: PolicyConfig | None = None) -> PolicyNetwork:
    """A freshly initialized policy, seeded, that does not touch the global RNG.

    Orthogonal init as in cleanrl; the actor's last layer is tiny, so the first actions are close
    to uniform over the multipliers.
    """
    with single_threaded(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = PolicyNetwork(config)
        for module in net.modules():
            if isinstance(module, nn.Linear):
                nn.init.orthogonal_(module.weight, math.sqrt(2))
                nn.init.zeros_(module.bias)
        nn.init.orthogonal_(net.actor[-1].weight, 0.01)
        nn.init.orthogonal_(net.critic[-1].weight, 1.0)
    return net


def policy_files(path: str | Path) -> tuple[Path, Path]:
    """``NAME.safetensors`` and ``NAME.json`` for ``NAME``, ``NAME.safetensors`` or ``NAME.json``; a
    dot inside NAME (``pol.v2``, ``run_lr1.5e-3``) is part of it."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def policy_fingerprint(path: str | Path) -> str:
    """The sha256 of a saved policy's two files (weights, then config), to tell whether a policy
    file was replaced; a missing file is a :class:`PolicyLoadError` (see :func:`load_policy`)."""
    import hashlib

    digest = hashlib.sha256()
    for p in policy_files(path):
        if not p.is_file():
            load_policy(path)  # raises, naming the file and the fix
        digest.update(p.read_bytes())
    return digest.hexdigest()


def save_policy(net: PolicyNetwork, path: str | Path, card: dict | None = None) -> Path:
    """Write ``path.safetensors`` and ``path.json``; returns the weights path. Both get the mode the
    process's umask gives a new file (safetensors 0.8 writes through a temporary file of mode 0600,
    which would leave a policy meant for others readable by its owner only)."""
    from safetensors.torch import save_file

    weights, config_path = policy_files(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    config = asdict(net.config)
    if card is not None:
        config["card"] = card
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(weights))
    try:
        os.chmod(weights, stat.S_IMODE(config_path.stat().st_mode))  # the mode open() gave the card
    except OSError:  # a filesystem without modes: the weights are written all the same
        pass
    return weights


def load_policy(path: str | Path) -> PolicyNetwork:
    """Load a policy saved by :func:`save_policy`; see the module docstring for the checks."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, config_path = policy_files(path)
    missing = [p for p in (weights, config_path) if not p.is_file()]
    if missing and Path(path).is_dir():
        inside = sorted(p.name for p in Path(path).glob("*.safetensors") if p.with_suffix(".json").is_file())
        raise PolicyLoadError(
            f"policy {path} is a folder; pass the path of a policy in it"
            + (f": {', '.join(str(Path(path) / name) for name in inside)}" if inside else
               " (a pair NAME.safetensors + NAME.json; hf-metalr meta-train writes policy.safetensors)"))
    if missing:
        stem = weights.with_name(weights.name[: -len(".safetensors")])
        legacy = stem.with_suffix(".safetensors")  # where hf_metalr before 2026-12-04 wrote a dotted name's pair
        hint = (f" ({legacy} exists: hf_metalr before 2026-12-04 cut a saved policy's name at its last dot; rename "
                f"that pair to {weights.name} + {config_path.name})" if "." in stem.name and legacy.is_file() else "")
        raise PolicyLoadError(
            f"policy file {missing[0]} does not exist{hint}. A policy is a pair NAME.safetensors + NAME.json written by "
            "hf_metalr.save_policy; pass the path of either, policy='default' for the shipped one, or "
            "policy='random' for a fresh one."
        )
    try:
        raw = json.loads(config_path.read_text())
        version = raw.get("format_version") if isinstance(raw, dict) else None
        if version is not None and version != FORMAT_VERSION:  # before its fields: another version may have others
            raise PolicyLoadError(
                f"policy {config_path} has format version {version}, but this hf_metalr reads version "
                f"{FORMAT_VERSION}. Use the hf_metalr version that wrote it, re-export it with the matching version, "
                "or retrain it (hf-metalr meta-train).")
        config = PolicyConfig(**raw)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise PolicyLoadError(f"policy config {config_path} is corrupt or not a hf_metalr policy config: {exc}") from exc
    _check_config(config, config_path)
    if config.format_version != FORMAT_VERSION:
        raise PolicyLoadError(
            f"policy {config_path} has format version {config.format_version}, but this hf_metalr reads version "
            f"{FORMAT_VERSION}. Re-export it with the matching hf_metalr version or retrain it (hf-metalr meta-train)."
        )
    unknown = unknown_features(config.features)
    if unknown or len(set(config.features)) != len(config.features):
        raise PolicyLoadError(
            f"policy {config_path} was trained on features {config.features}, "
            + (f"and this hf_metalr does not compute {unknown}" if unknown else "which names a feature twice")
            + f" (it computes {list(FEATURE_NAMES)}). Use the hf_metalr version it was trained with, or retrain "
            "it with hf-metalr meta-train."
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PolicyLoadError(f"policy weights {weights} are corrupt or not a safetensors file: {exc}") from exc
    net = PolicyNetwork(config)
    load_policy_weights(net, tensors, f"policy weights {weights}", f"the shapes of its config {config_path}")
    return net


def _check_config(config: PolicyConfig, path: Path) -> None:
    problems = []
    if isinstance(config.hidden, bool) or not isinstance(config.hidden, int) or config.hidden < 1:
        problems.append(f"'hidden' must be a whole number >= 1, got {config.hidden!r}")
    if not isinstance(config.features, list) or not all(isinstance(f, str) for f in config.features):
        problems.append(f"'features' must be a list of feature names, got {config.features!r}")
    if not isinstance(config.multipliers, list) or not config.multipliers or not all(
        is_positive_finite(m) for m in config.multipliers
    ):
        problems.append(f"'multipliers' must be a non-empty list of finite numbers > 0, got {config.multipliers!r}")
    if not isinstance(config.card, dict):
        problems.append(f"'card' must be an object, got {type(config.card).__name__}")
    if problems:
        raise PolicyLoadError(f"policy config {path} is not a valid hf_metalr policy config: {'; '.join(problems)}. "
                              "Restore the file written by save_policy, or retrain the policy (hf-metalr meta-train).")


def load_policy_weights(net: PolicyNetwork, tensors: dict, source: str, expected_from: str = "this policy") -> None:
    """Load ``tensors`` into ``net`` after checking that they have its names and shapes and are all
    finite; else :class:`PolicyLoadError` naming ``source``."""
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        raise PolicyLoadError(
            f"{source} do not match {expected_from} (expected shapes {expected}, found {found}). "
            "They belong to different policies: use the policy they were saved with."
        )
    bad = sorted(k for k, v in tensors.items() if not bool(torch.isfinite(v).all()))
    if bad:
        raise PolicyLoadError(f"{source} hold NaN or infinite values (in {', '.join(bad)}); the policy is unusable. "
                              "Restore a good copy, or retrain it (hf-metalr meta-train).")
    net.load_state_dict(tensors)

