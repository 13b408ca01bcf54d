"""The early-divergence guard: before the first evaluation, a training loss that blows up says the
LR is far too high, and the LR is cut at once instead of at the first decision.

An LR far too high can wreck a model in its first few steps (dead units, a collapsed output) long
before the first evaluation. :class:`EarlyDivergenceGuard` reads each optimizer step's training
loss, one at a time, and says when to cut. A *record* is a loss more than ``EARLY_SPIKE`` times
every loss before it (or a non-finite one); a divergence sets records step after step (0.83,
18.8, 325 on an MLP regression at 10x its good LR), while batch noise, however heavy-tailed (a
fine-tuned classifier scoring 0.02 on most batches and 0.2 on a batch with one mistake), sets one
and then stays under it. So two consecutive records call for a cut, and so does one record
``EXTREME`` times every loss before it (a jump no batch of the same data makes): ``CUT`` (a
quarter, two of the controller's halvings), again at each further record of the same climb,
``MAX_CUTS`` times at most.

It holds a few numbers; ``to_dict`` is plain JSON (no NaN or infinity), so a run resumed from a
checkpoint continues exactly.
"""

from __future__ import annotations

import math

__all__ = ["CUT", "EARLY_SPIKE", "EXTREME", "MAX_CUTS", "EarlyDivergenceGuard"]

EARLY_SPIKE = 4.0  # a loss this many times every loss before it is a record
EXTREME = 100.0  # a record this many times every loss before it needs no second one
CUT = 0.25  # the LR multiplier at a cut: a climb seen over two steps has already done two steps' damage
MAX_CUTS = 2  # the guard takes the LR down to 1/16 at the most; the decisions at the evaluations do the rest


class EarlyDivergenceGuard:
    """Says, step by step, whether the training loss calls for an immediate cut of the LR."""

    def __init__(self):
        self.steps = 0  # losses observed
        self.highest: float | None = None  # the highest finite loss so far
        self.records = 0  # consecutive records, up to this step
        self.cuts = 0

    def observe(self, loss: float) -> bool:
        """One optimizer step's training loss; True: cut the LR now (by ``CUT``)."""
        self.steps += 1
        finite = math.isfinite(loss)
        record = not finite or (self.highest is not None and loss > EARLY_SPIKE * self.highest)
        extreme = not finite or (self.highest is not None and loss > EXTREME * self.highest)
        if finite:
            self.highest = loss if self.highest is None else max(self.highest, loss)
        self.records = self.records + 1 if record else 0
        if not (self.records >= 2 or extreme) or self.cuts >= MAX_CUTS:
            return False
        self.cuts += 1
        return True

    def start_over(self) -> None:
        """The run went back to its start weights (see ``start_weights``): the losses of the steps
        undone are no reference for the new ones, so the next loss is the first of the record again
        (the steps and the cuts made still count)."""
        self.highest, self.records = None, 0

    def to_dict(self) -> dict:
        return {"steps": self.steps, "highest": self.highest, "records": self.records, "cuts": self.cuts}

    @classmethod
    def from_dict(cls, state: dict | None) -> "EarlyDivergenceGuard":
        """From ``to_dict``; None (a state saved before the guard existed) starts it afresh."""
        guard = cls()
        for name, value in (state or {}).items():
            setattr(guard, name, value)
        return guard
