"""Whether the LR is too high, read off the iterates: their average against where the run is.

At an LR too high for where a run is, its steps bounce around the valley floor instead of going
down into it: the average of the iterates of the last interval sits nearer the floor than any one
of them, and its validation loss is clearly lower than the current iterate's. At an LR that is
too low, or right while the run still descends, the average lags behind the current iterate, and
its loss is the same or higher. This is the averaged iterate of Polyak-Ruppert, of SWA and of
Schedule-Free, used as a measurement: ``gain = log(loss at the current iterate / loss at the
average)``, positive when the average is better. Beside it, ``progress = log(loss at the last
check / loss now)`` on the same batches: how much the interval gained. A run whose average beats
its current iterate by more than the interval gained loses more to its steps' bounce than it makes
by them, and a smaller LR pays at once; while a run still gains more than that, a cut would slow it
(the short-horizon bias that also reads in the gradient alignment).

:class:`IterateAverage` keeps the uniform running average of the parameters after each optimizer
step since the last decision: one float32 copy of the trainable parameters, on their device (the
memory of one more copy of the model's trainable weights), and, for bfloat16 or float16 ones, a
float32 scratch buffer of at most ``WIDENING_SCRATCH`` elements (128 MiB) per device to widen them
in. :meth:`IterateAverage.gain` evaluates a loss twice, at the current parameters and with the
average swapped in, puts the parameters back
exactly, and starts the next interval (:meth:`IterateAverage.restart` starts it without reading
the average, at the first evaluation). :meth:`IterateAverage.state_dict` holds the average of the
interval in progress (tensors, for a checkpoint's own file: it is as large as the trainable
weights), so a resumed run measures the same gain as the uninterrupted one.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable

import torch

__all__ = ["IterateAverage"]

WIDENING_SCRATCH = 1 << 25  # float32 elements (128 MiB) of the buffer that bfloat16/float16 parameters are widened
# into, a chunk of them at a time, for one _foreach_lerp_ per chunk; a larger tensor is widened on its own


class IterateAverage:
    """The uniform average of ``params`` over the optimizer steps since the last :meth:`gain`."""

    def __init__(self, params):
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("IterateAverage needs at least one parameter that requires grad")
        self._drop_average()
        self.last_loss: float | None = None  # the current iterate's loss at the last check
        self.progress: float | None = None  # log(last_loss / loss now) of the last check; None at the first

    def after_step(self) -> None:
        """Fold in the parameters after ``optimizer.step()``."""
        with torch.no_grad():
            if self._average is None:
                self._average = [p.detach().to(torch.float32, copy=True) for p in self.params]
                self.steps = 1
                self._split()
                return
            self.steps += 1
            weight = 1.0 / self.steps
            if self._full[0]:  # in place, no temporary of the weights' size
                torch._foreach_lerp_(*self._full, weight)
            for averages, params, widened in self._chunks:  # other dtypes (bf16, fp16): a chunk at a time
                torch._foreach_copy_(widened, params)
                torch._foreach_lerp_(averages, widened, weight)
            for average, p in self._other:  # larger than the scratch: its own float32 copy
                average.lerp_(p.detach().float(), weight)

    def _drop_average(self) -> None:
        """No average and no step in it; the fold's lists let go of the average's tensors too, so that
        the next interval's copy is not allocated while the last one's is still held."""
        self._average, self.steps = None, 0
        self._full, self._chunks, self._other, self._swap_groups = ([], []), [], [], []

    def _split(self) -> None:
        """The fold's lists and the swap's groups, made once per interval, not at every step or decision
        (the host time of a list over every parameter shows on a GPU): the float32 parameters and their averages for one
        ``_foreach_lerp_``; the others (bf16, fp16: widened exactly) in chunks of one dtype that fit
        a float32 scratch buffer of at most ``WIDENING_SCRATCH`` elements per device, each widened
        into it with one ``_foreach_copy_`` and folded with one ``_foreach_lerp_`` (the same values
        as a ``float()`` copy each); a tensor larger than that buffer, one at a time."""
        pairs = list(zip(self._average, self.params))
        swap_groups: dict[tuple, tuple[list, list]] = {}  # for swapped_in: the parameters by dtype and device
        for a, p in pairs:
            group = swap_groups.setdefault((p.dtype, p.device), ([], []))
            group[0].append(p)
            group[1].append(a)
        self._swap_groups = list(swap_groups.values())
        self._full = ([a for a, p in pairs if p.dtype == torch.float32], [p for a, p in pairs if p.dtype == torch.float32])
        narrow = [(a, p) for a, p in pairs if p.dtype != torch.float32]
        self._other = [(a, p) for a, p in narrow if p.numel() > WIDENING_SCRATCH]
        by_device: dict[torch.device, list] = {}
        for a, p in narrow:
            if p.numel() <= WIDENING_SCRATCH:
                by_device.setdefault(p.device, []).append((a, p))
        self._chunks = []
        for device, group in by_device.items():
            size = min(WIDENING_SCRATCH, sum(p.numel() for _, p in group))
            scratch = torch.empty(size, dtype=torch.float32, device=device)
            group.sort(key=lambda pair: str(pair[1].dtype))  # one source dtype per chunk (stable: in order within it)
            chunk, used = [], 0
            for a, p in group + [(None, None)]:  # the sentinel closes the last chunk
                if p is None or used + p.numel() > scratch.numel() or (chunk and p.dtype != chunk[0][1].dtype):
                    if chunk:
                        self._chunks.append(([a for a, _, _ in chunk], [p for _, p, _ in chunk], [w for *_, w in chunk]))
                    chunk, used = [], 0
                    if p is None:
                        break
                chunk.append((a, p, scratch[used:used + p.numel()].view(p.shape)))
                used += p.numel()

    @contextmanager
    def swapped_in(self):
        """The average in the parameters for the duration; the exact parameters back after (each copy
        one ``_foreach_copy_`` per dtype and device of the parameters: some torch releases' CUDA fast
        path took every destination for the first one's dtype; the groups are made by ``_split``)."""
        groups = self._swap_groups
        with torch.no_grad():
            saved = [[torch.empty_like(p) for p in params] for params, _ in groups]
            for copies, (params, _) in zip(saved, groups):
                torch._foreach_copy_(copies, params)
        try:
            with torch.no_grad():
                for params, averages in groups:
                    torch._foreach_copy_(params, averages)
            yield
        finally:
            with torch.no_grad():
                for copies, (params, _) in zip(saved, groups):
                    torch._foreach_copy_(params, copies)

    def gain(self, loss: Callable[[], float], *, current: float | None = None) -> float | None:
        """``log(loss() at the current parameters / loss() with the average swapped in)``, then a new
        interval starts; ``progress`` is set as well (None when there was no earlier check to compare
        with). ``current``: the loss at the current parameters, when the caller has just computed it
        with the same ``loss`` (then ``loss`` runs once). None (and no call to ``loss``) with fewer
        than two steps since the last one, or when either loss is not finite and positive (then the
        next check has no progress to read)."""
        self.progress = None
        try:
            if self._average is None or self.steps < 2:
                self.last_loss = None
                return None
            current = float(loss()) if current is None else float(current)
            with self.swapped_in():
                averaged = float(loss())
        finally:
            self._drop_average()
        if not (math.isfinite(current) and math.isfinite(averaged) and current > 0 and averaged > 0):
            self.last_loss = None
            return None
        if self.last_loss is not None:
            self.progress = math.log(self.last_loss / current)
        self.last_loss = current
        return math.log(current / averaged)

    def restart(self, loss: Callable[[], float], *, current: float | None = None) -> None:
        """Start a new interval without reading the average: keep the loss at the current parameters
        (``current``, or ``loss()``) for the next check's ``progress``, and drop any average. For the
        run's first evaluation, whose average would still hold the run's start and which the rule
        does not read (the controller does not even fold the steps before it). A loss that is not
        finite and positive is not kept."""
        self.progress, self.last_loss = None, None
        try:
            current = float(loss()) if current is None else float(current)
        finally:
            self._drop_average()
        self.last_loss = current if math.isfinite(current) and current > 0 else None

    def state_dict(self) -> dict:
        """``{"steps": n, "average": [tensors], "last_loss": the last check's loss}`` (the average on
        the CPU; an empty list when no step was folded in since the last gain)."""
        average = [] if self._average is None else [a.detach().cpu().clone() for a in self._average]
        return {"steps": self.steps, "average": average, "last_loss": self.last_loss}

    def load_state_dict(self, state: dict) -> None:
        self.last_loss = state.get("last_loss")
        average = list(state["average"])
        if not average:
            self._drop_average()
            return
        shapes = [tuple(p.shape) for p in self.params]
        if [tuple(a.shape) for a in average] != shapes:
            raise ValueError("the saved iterate average does not fit this model's trainable parameters "
                             f"({len(average)} tensors against {len(shapes)}): resume with the same model")
        self._drop_average()
        self._average = [a.to(device=p.device, dtype=torch.float32).clone() for a, p in zip(average, self.params)]
        self.steps = int(state["steps"])
        self._split()

    def forget(self) -> None:
        """Drop the interval in progress and the last check's loss: the next :meth:`gain` has no
        progress to read."""
        self._drop_average()
        self.last_loss, self.progress = None, None
