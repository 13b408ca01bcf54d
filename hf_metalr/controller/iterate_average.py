"""Whether the LR is too high, read off the iterates: their average against where the run is.

At an LR too high for where a run is, its steps bounce around the valley floor instead of going
down into it: the average of the iterates of the last interval sits nearer the floor than any one
of them, and its validation loss is clearly lower than the current iterate's. At an LR that is
too low, or right while the run still descends, the average lags behind the current iterate, and
its loss is the same or higher. This is the averaged iterate of Polyak-Ruppert, of SWA and of
Schedule-Free, used as a measurement: ``gain = log(loss at the current iterate / loss at the
average)``, positive when the average is better.

:class:`IterateAverage` keeps the uniform running average of the parameters after each optimizer
step since the last decision: one float32 copy of the trainable parameters, on their device (the
memory of one more copy of the model's trainable weights). :meth:`IterateAverage.gain` evaluates a
loss twice, at the current parameters and with the average swapped in, puts the parameters back
exactly, and starts the next interval.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable

import torch

__all__ = ["IterateAverage"]


class IterateAverage:
    """The uniform average of ``params`` over the optimizer steps since the last :meth:`gain`."""

    def __init__(self, params):
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("IterateAverage needs at least one parameter that requires grad")
        self._average: list[torch.Tensor] | None = None
        self.steps = 0

    def after_step(self) -> None:
        """Fold in the parameters after ``optimizer.step()``."""
        with torch.no_grad():
            if self._average is None:
                self._average = [p.detach().to(torch.float32, copy=True) for p in self.params]
                self.steps = 1
                return
            self.steps += 1
            for average, p in zip(self._average, self.params):
                average.add_(p.detach().to(torch.float32) - average, alpha=1.0 / self.steps)

    @contextmanager
    def swapped_in(self):
        """The average in the parameters for the duration; the exact parameters back after."""
        saved = [p.detach().clone() for p in self.params]
        try:
            with torch.no_grad():
                for p, average in zip(self.params, self._average):
                    p.copy_(average)
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)

    def gain(self, loss: Callable[[], float]) -> float | None:
        """``log(loss() at the current parameters / loss() with the average swapped in)``, then a new
        interval starts. None (and no call to ``loss``) with fewer than two steps since the last one,
        or when either loss is not finite and positive."""
        try:
            if self._average is None or self.steps < 2:
                return None
            current = float(loss())
            with self.swapped_in():
                averaged = float(loss())
        finally:
            self._average, self.steps = None, 0
        if not (math.isfinite(current) and math.isfinite(averaged) and current > 0 and averaged > 0):
            return None
        return math.log(current / averaged)
