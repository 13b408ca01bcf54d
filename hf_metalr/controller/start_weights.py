"""The weights a run started from, to go back to when its first steps wrecked them.

At an LR far too high, a model is wrecked in its first few steps, before the first evaluation
(the Segformer of the unseen families at 10x had moved by 1.8 times its starting norm after 2
steps): the early checks see it and cut the LR, but the cut LR then trains the wrecked weights, and
Adam's second moment still holds the first steps' huge gradients. A user who saw it would restart
from the same weights at a lower LR. :class:`StartWeights` makes that possible: it keeps a copy of
the trainable parameters as they were before the first optimizer step, in host memory (as large as
the trainable weights, in their dtype). The controller puts them back (:meth:`StartWeights.restore`)
at each early cut, and at a later decision on a run still wrecked (a divergence, or a cut while
the steps are too long by both of the distance check's measures and the metric stays at its first
evaluation's level), and clears the optimizer's
state, so the run starts over at the cut LR; under a warmup the controller plays the warmup again
(``warmup_replay``). The copy is dropped at a decision once the run has made progress or its LR is
within the distance estimate (not while a warmup still rises), or when nothing can start it over
any more (no distance check). :meth:`state_dict` holds the copy for a checkpoint saved while it is
kept (the callback writes it to a file of its own).
"""

from __future__ import annotations

import torch

__all__ = ["StartWeights", "clear_optimizer_state"]


class StartWeights:
    """The parameters ``params`` (those that require grad) as :meth:`keep` found them."""

    def __init__(self, params):
        self.params = [p for p in params if p.requires_grad]
        self._saved: list[torch.Tensor] | None = None

    @property
    def kept(self) -> bool:
        return self._saved is not None

    def keep(self) -> None:
        """Copy the parameters to host memory (call before the first optimizer step)."""
        with torch.no_grad():
            self._saved = [p.detach().to("cpu", copy=True) for p in self.params]

    def restore(self) -> None:
        """Put the kept values back into the parameters, in place."""
        if self._saved is None:
            raise RuntimeError("StartWeights.restore(): nothing was kept")
        with torch.no_grad():
            for p, saved in zip(self.params, self._saved):
                p.copy_(saved)

    def drop(self) -> None:
        self._saved = None

    def state_dict(self) -> dict:
        """``{"weights": [tensors on the CPU]}``, an empty list when nothing is kept."""
        return {"weights": list(self._saved) if self._saved is not None else []}

    def load_state_dict(self, state: dict) -> None:
        weights = list(state["weights"])
        if not weights:
            self._saved = None
            return
        shapes = [tuple(p.shape) for p in self.params]
        if [tuple(w.shape) for w in weights] != shapes:
            raise ValueError("the saved start weights do not fit this model's trainable parameters "
                             f"({len(weights)} tensors against {len(shapes)}): resume with the same model")
        self._saved = [w.to(dtype=p.dtype, device="cpu").clone() for w, p in zip(weights, self.params)]


def clear_optimizer_state(optimizer) -> bool:
    """Empty ``optimizer.state`` (Adam's moments and step count, a momentum buffer), which torch's
    optimizers rebuild at the next step as at the first; False when the optimizer has no such
    mapping."""
    state = getattr(optimizer, "state", None)
    if not hasattr(state, "clear"):
        return False
    state.clear()
    return True
