"""A schedule's warmup, recorded from the run's first step and played again after a start-over.

A start-over (the controller's ``_start_over``) puts the run's first weights back. Under a warmup
the schedule has gone on rising meanwhile, so the start weights would meet longer steps than the
warmup first gave them: a start-over that skipped the warmup cost the factorization and a
Segformer of the unseen families at 10x under cosine with a 6% warmup (docs/controller.md). The
user's schedule cannot be rewound (the Trainer steps it), so :class:`WarmupReplay` plays the
warmup again on top of it.

It records the schedule's own factor of each optimizer step (the step's LR over the
controller's), from the run's first step while the factor rises: the warmup, a list as long as it
(one float a step), whose recording ends at the first step whose factor is not above the one
before it (at once without a warmup). After a start-over (:meth:`start_over`), the ``k``-th step's
LR is multiplied by ``min(1, recorded[k] / factor)``, ``factor`` the schedule's factor of that step,
until ``k`` passes the recording: each step after the start-over is as long as the same step of
the first warmup was, at the LR just cut, and never longer than the schedule's. A start-over
while the warmup still rises replays what was recorded, and the recording goes on meanwhile, so the
replay runs the whole warmup. The controller applies the multiplier to the optimizer's groups for
that one step only (``MetaLRController._before_step``, put back after the step), so a scheduler of
any kind keeps its own state. :meth:`state_dict` holds the recording and the replay's position; the
controller drops the recording (:meth:`forget`) when it drops its start weights.
"""

from __future__ import annotations

__all__ = ["REPLAYED", "WarmupReplay"]

REPLAYED = ", its warmup played again"  # the words that end a start-over's, where it replays a warmup (evidence, logs)

_RISE = 1 + 1e-9  # a factor above the one before by more than rounding: the warmup still rises


class WarmupReplay:
    """The warmup's factors (``factors``), whether it still rises (``rising``), and the replay's
    position (``position``: the steps since the last start-over; None when no replay is under way)."""

    def __init__(self):
        self.factors: list[float] = []
        self.rising = True
        self.position: int | None = None
        self.known = True  # False: loaded from a state saved before the replay existed (its warmup unrecorded)
        self._before_last_step: tuple | None = None  # (len(factors), rising, position) before the last step: undo_step

    @property
    def under_way(self) -> bool:
        """Whether the LR of the steps may still rise by the warmup: the first one, or a replay."""
        return self.rising or self.position is not None

    @property
    def steps(self) -> int:
        """The warmup's length in optimizer steps, as recorded so far (1 without a warmup)."""
        return len(self.factors)

    def multiplier(self, factor: float | None) -> float:
        """At each optimizer step, with the schedule's own ``factor`` of it (None: the loop gives
        none, and nothing is recorded or replayed): record it while the warmup rises, and return the
        replay's multiplier of this step's LR (1.0 when no replay is under way, and once it ends)."""
        self._before_last_step = (len(self.factors), self.rising, self.position)
        if factor is None:
            self.rising = False
            self.position = None
            return 1.0
        if self.rising:
            if self.factors and factor <= self.factors[-1] * _RISE:
                self.rising = False
            else:
                self.factors.append(float(factor))
        if self.position is None:
            return 1.0
        k = self.position
        if k >= len(self.factors):
            self.position = None
            return 1.0
        self.position += 1
        return min(1.0, self.factors[k] / factor) if factor > 0 else 1.0

    def undo_step(self) -> None:
        """Take the last step back: the optimizer skipped it (a ``GradScaler``'s overflow, which the
        Trainer's step events still report), so the schedule gives its factor again at the next step,
        which is not the warmup's end, and the replay's position is not used up."""
        if self._before_last_step is not None:
            length, self.rising, self.position = self._before_last_step
            del self.factors[length:]
            self._before_last_step = None

    def next_multiplier(self, factor: float | None) -> float:
        """The multiplier the next step will take at the schedule's ``factor``, read without moving on
        (for the LR a log shows); 1.0 when no replay is under way or it is about to end."""
        if self.position is None or factor is None or not factor > 0 or self.position >= len(self.factors):
            return 1.0  # (past the recording while it still rises, the step records its own factor: 1.0 too)
        return min(1.0, self.factors[self.position] / factor)

    def forget(self) -> None:
        """Drop the recording and stop recording, as no start-over can come any more (the controller's
        start weights are dropped), so the state stays small past the warmup; a replay under way
        plays on to its end with what it needs."""
        if self.position is None:
            self.factors, self.rising = [], False
            self._before_last_step = None

    def start_over(self) -> None:
        """Play the warmup again from its first step, from the next optimizer step on."""
        self.position = 0

    def state_dict(self) -> dict:
        return {"factors": list(self.factors), "rising": self.rising, "position": self.position, "known": self.known}

    @classmethod
    def from_dict(cls, state: dict | None) -> WarmupReplay:
        """The replay a state saved; a state from before the replay existed (None) records nothing and
        is not ``known``: its run's first steps are gone, and whether they were a warmup with them, so
        the controller does not start that run over."""
        replay = cls()
        if state is None:
            replay.rising, replay.known = False, False
            return replay
        replay.factors = [float(f) for f in state["factors"]]
        replay.rising = bool(state["rising"])
        replay.position = None if state["position"] is None else int(state["position"])
        replay.known = bool(state.get("known", True))
        return replay
