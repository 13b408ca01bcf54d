"""Which way the LR is wrong: the cosine between the current gradient and the previous update.

The hypergradient of the loss with respect to the LR (Baydin et al. 2018, "Online Learning Rate
Adaptation with Hypergradient Descent") is the dot product of the current gradient with the
previous update. Normalised, it is the cosine between the gradient ``g_t`` and the previous
descent step ``-u_{t-1}`` (``u = θ_after - θ_before``, whatever the optimizer did):

- persistently positive: the steps keep pointing the same way, they are too short (LR too low);
- negative: the last step went past the valley floor, the steps overshoot (LR too high);
- near zero: no evidence either way (a noisy plateau, or an LR about right).

:class:`GradientAlignment` measures it on a fixed random *sketch* of at most ``sketch_size``
parameter coordinates: ``sketch_size / WINDOW`` windows of ``WINDOW`` consecutive coordinates,
each in a parameter tensor picked with probability proportional to its size (so the weight
matrices that hold most of a model weigh as they do in the full cosine) at a random offset,
drawn once from ``seed`` and the parameters' shapes. Its memory is bounded whatever the model
size (six preallocated float32 vectors of that length, for the gradient, the last and the
current parameters, the last descent step, the parameters at the start and the distance
estimate's gradient sum (:mod:`.distance`), and their int64 coordinate indices: 32 bytes a
coordinate, 256 KiB at the default 8,192; until the first ``take``,
also each step's three numbers, 12 bytes a step, for the later half of the first window, at most
``FIRST_WINDOW_ROWS`` steps: 768 KiB); a step reads the sketch
of the gradients and of the parameters with one ``index_select`` per parameter that holds a window
(at most 256), written in place into those vectors; on a CUDA device with Triton, one kernel launch
reads them all through a table of the tensors' addresses (:mod:`.pointer_gather`, the same values;
float32, bfloat16 and float16 parameters, mixed too).
Every rank draws the same sketch.

Call :meth:`GradientAlignment.before_step` once per optimizer step, after the gradients are final
(accumulated, synchronised across ranks, clipped), and :meth:`GradientAlignment.after_step` right
after ``optimizer.step()``. Each step's three numbers (the dot product and the two norms) stay on
the parameters' device until :meth:`GradientAlignment.take`, once per decision (or every 256
steps), so there is no host sync per step. A step whose gradient or update is not finite, or is
zero (an fp16 step skipped on overflow), adds nothing. The cosine is scale-free, so a loss scale (fp16) or a clipped gradient does not change it.
"""

from __future__ import annotations

import math
import warnings

import torch

from .distance import DistanceEstimate
from .pointer_gather import GATHERED_DTYPES, PointerGather, pointer_gather_available
from .serialization import tensors_to_text, text_to_tensors

__all__ = ["DEFAULT_SKETCH_SIZE", "WINDOW", "AlignmentWindow", "GradientAlignment", "draw_sketch", "sketch_coordinates"]

DEFAULT_SKETCH_SIZE = 8192
WINDOW = 32  # 256 windows at the default size: short windows land in more of a model's tensors, whose
# alignments differ, so the sketch's reading spreads less around the all-coordinate value (benchmarks/sketch_error.py)
_SUMS = ("dot", "norms", "cos", "cos_sq", "steps")  # the accumulator's slots
_FOLD_EVERY = 256  # steps kept on the device before they are added to the sums
FIRST_WINDOW_ROWS = 1 << 16  # steps of the first interval kept for its later half (768 KiB); a longer first
# interval gets no later half
_GRAD, _PARAMS_A, _PARAMS_B, _DESCENT, _INITIAL = range(5)  # the sketch buffers, by role


def draw_sketch(sizes: list[int], sketch_size: int, seed: int) -> list[tuple[int, int, int]]:
    """The sketch of parameters of ``sizes`` as runs of consecutive coordinates ``(parameter
    index, start, stop)``, in parameter order and, within a parameter, in coordinate order
    (overlapping windows merged); the whole of every parameter when they hold ``sketch_size`` or
    fewer. ``GradientAlignment`` draws it from its parameters, its ``sketch_size`` and its ``seed``."""
    if sum(sizes) <= sketch_size:
        return [(i, 0, n) for i, n in enumerate(sizes)]
    generator = torch.Generator().manual_seed(seed * 7919 + 17)
    windows = max(1, sketch_size // WINDOW)
    owners = torch.multinomial(torch.tensor(sizes, dtype=torch.float64), windows, replacement=True, generator=generator)
    starts = torch.rand(windows, generator=generator, dtype=torch.float64)
    chosen: dict[int, list[tuple[int, int]]] = {}
    for owner, start in zip(owners.tolist(), starts.tolist()):
        length = min(WINDOW, sketch_size, sizes[owner])
        offset = int(start * (sizes[owner] - length + 1))
        chosen.setdefault(owner, []).append((offset, offset + length))
    runs = []
    for i in sorted(chosen):
        for begin, stop in sorted(chosen[i]):
            if runs and runs[-1][0] == i and begin <= runs[-1][2]:
                runs[-1] = (i, runs[-1][1], max(stop, runs[-1][2]))
            else:
                runs.append((i, begin, stop))
    return runs


def sketch_coordinates(runs: list[tuple[int, int, int]]) -> int:
    """How many coordinates a sketch's runs (``draw_sketch``) hold."""
    return sum(stop - begin for _, begin, stop in runs)


def _step_sums(rows: torch.Tensor) -> torch.Tensor:
    """Per step (a row of dot product, gradient norm and descent-step norm), its five sums (``_SUMS``:
    dot, norms, cos, cos^2, 1), zeros for a step whose gradient or update is not finite, or zero."""
    dot, g_norm, descent_norm = rows.unbind(1)
    norms = g_norm * descent_norm
    valid = torch.isfinite(dot) & torch.isfinite(norms) & (norms > 0)
    cos = torch.where(valid, dot / torch.where(valid, norms, torch.ones_like(norms)), torch.zeros_like(dot))
    steps = torch.stack([dot, norms, cos, cos * cos, torch.ones_like(dot)], 1)
    return torch.where(valid[:, None], steps, torch.zeros_like(steps))


class AlignmentWindow:
    """The alignment statistics of the steps between two decisions, as plain numbers.

    - ``ratio``: sum of the dot products over the sum of the norm products, in [-1, 1]. Steps
      with a larger gradient weigh more, which damps the noise of near-zero gradients.
    - ``t``: the mean per-step cosine over its standard error, a signed evidence of direction
      that stays near 0 when the cosine drowns in batch noise.
    """

    def __init__(self, dot=0.0, norms=0.0, cos=0.0, cos_sq=0.0, steps=0.0):
        self.dot, self.norms, self.cos, self.cos_sq, self.steps = float(dot), float(norms), float(cos), float(cos_sq), float(steps)
        self.late: AlignmentWindow | None = None  # the later half of the steps, for the run's first window only

    def add(self, other: "AlignmentWindow") -> None:
        for name in _SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def ratio(self) -> float:
        return self.dot / self.norms if self.norms > 0 else 0.0

    @property
    def mean(self) -> float:
        return self.cos / self.steps if self.steps else 0.0

    @property
    def t(self) -> float:
        n = self.steps
        if n < 2:
            return 0.0
        variance = max(self.cos_sq / n - self.mean**2, 0.0) * n / (n - 1)
        return self.mean / math.sqrt(max(variance, 1e-12) / n)

    def to_list(self) -> list[float]:
        return [getattr(self, name) for name in _SUMS]


class GradientAlignment:
    """Per-step cosine of the gradient with the previous descent step, on a coordinate sketch.

    ``state_dict()`` holds the last parameter and update sketches, the starting sketch (for
    ``drift``), the sums pending since the last ``take``, the distance estimate's state and, before
    the first ``take``, each step's numbers so far (for the first window's later half), so a run
    resumed from a checkpoint
    continues exactly. The sketch itself is derived again from ``seed`` and the parameter shapes.
    """

    def __init__(self, params, *, sketch_size: int = DEFAULT_SKETCH_SIZE, seed: int = 0):
        if not (isinstance(sketch_size, int) and sketch_size > 0):
            raise ValueError(f"sketch_size must be a positive int, got {sketch_size!r}")
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("GradientAlignment needs at least one parameter that requires grad")
        self.sketch_size = sketch_size
        self.seed = int(seed)
        self._runs = self._draw_sketch()
        self._device = self.params[0].device
        self._owners = self._index_owners()
        # on a GPU, one launch reads every owner's part (the same values as the index_select reads)
        dtypes = [self.params[i].dtype for i, _ in self._owners]
        self._gather = (PointerGather([index for _, index in self._owners], self._device, dtypes)
                        if pointer_gather_available(self._device) and set(dtypes) <= set(GATHERED_DTYPES) else None)
        # Preallocated float32 sketches, written in place at every step (no allocation, no cat), by index:
        # _GRAD, two parameter sketches taking turns as "the last" and "the current" (_PARAMS_A, _PARAMS_B),
        # _DESCENT, and _INITIAL, the parameters at the first read (for ``drift``).
        self._buffers = [torch.empty(self.coordinates, dtype=torch.float32, device=self._device) for _ in range(5)]
        self._slots = [list(buffer.split([len(index) for _, index in self._owners])) for buffer in self._buffers]
        self._last_params: torch.Tensor | None = None  # the sketch after the last optimizer step
        self._descent: torch.Tensor | None = None  # θ_before - θ_after of the last step, its descent step -u
        self._initial: torch.Tensor | None = None  # the sketch at the first read (the run's start)
        self._sums = torch.zeros(len(_SUMS), dtype=torch.float32, device=self._device)
        self._pending: list[torch.Tensor] = []  # per step since the last fold: dot, |g|, |descent|
        self._first_rows: list[torch.Tensor] | None = []  # every step's row until the first take (then None), for
        # the later half of the first window: 12 bytes a step of the first interval
        self.calls = {"before": 0, "after": 0, "without_gradient": 0}  # since construction, for the controller's
        # warning about a loop that misses a call (not saved: a resumed run counts again)
        self._calls_at_mark = dict(self.calls)
        self._step_factor: float | None = None  # the schedule's factor of the step under way (before_step)
        self.distance = DistanceEstimate(self.coordinates, self._device)  # fed at every step with a gradient
        self._descent_factor: float | None = None  # and of the step that made the last descent
        if self._gather is not None:
            self._gather = self._checked_gather()

    def _checked_gather(self) -> PointerGather | None:
        """The one-launch read if it reads the parameters as the index_select reads do, bit for bit,
        and a missing tensor as zeros (once, at the start: it builds the kernel); None, with a
        warning, if it fails or differs, and None when the parameters would never pass ``accepts``
        (not contiguous, say)."""
        gather, self._gather = self._gather, None
        owned = [self.params[i] for i, _ in self._owners]
        if not gather.accepts(owned):
            return None
        expected = self._read(self.params, _INITIAL).clone()  # free until the first read
        try:
            same = torch.equal(gather(owned, self._buffers[_INITIAL]), expected)
            parts = expected.split([len(index) for _, index in self._owners])
            missing = next((k for k, part in enumerate(parts) if bool(part.any())), None)
            if same and missing is not None:  # and a missing tensor (no gradient this step) reads as zeros, as
                # index_select's read does: one whose sketched values are not all zero, or the test says nothing
                parts[missing].zero_()
                tensors = [None if k == missing else t for k, t in enumerate(owned)]
                same = torch.equal(gather(tensors, self._buffers[_INITIAL]), expected)
            problem = "it read other values than index_select"
        except Exception as exc:  # a Triton that cannot build or launch the kernel
            same, problem = False, f"{type(exc).__name__}: {exc}"
        if not same:
            warnings.warn(f"GradientAlignment: the one-launch sketch read on {self._device} is off ({problem}); "
                          "reading with one index_select per parameter instead (slower on a GPU, same values)",
                          RuntimeWarning, stacklevel=3)
            return None
        return gather

    def _draw_sketch(self) -> list[tuple[int, int, int]]:
        return draw_sketch([p.numel() for p in self.params], self.sketch_size, self.seed)

    def _index_owners(self) -> list[tuple[int, torch.Tensor]]:
        """The sketch as ``(parameter index, flat coordinate indices)`` per parameter that holds
        any of it, in the order of the runs: one ``index_select`` per parameter reads its part."""
        owners: list[tuple[int, list[torch.Tensor]]] = []
        for i, begin, stop in self._runs:
            if not owners or owners[-1][0] != i:
                owners.append((i, []))
            owners[-1][1].append(torch.arange(begin, stop))
        return [(i, torch.cat(pieces).to(self.params[i].device)) for i, pieces in owners]

    def _read(self, tensors, buffer: int) -> torch.Tensor:
        """The sketched coordinates of ``tensors`` (one per parameter), in the order of the runs, written
        into preallocated buffer ``buffer`` (float32, on the first parameter's device) with one
        ``index_select`` per owning parameter; a missing one (a parameter that got no gradient this
        step, which the optimizer leaves unchanged) reads as zeros. Other dtypes and devices are read
        and then copied in (float32 rounds a float64 value once, as a ``.float()`` would)."""
        if self._gather is not None:
            owned = [tensors[i] for i, _ in self._owners]
            if self._gather.accepts(owned):
                return self._gather(owned, self._buffers[buffer])
        with torch.no_grad():
            for (i, index), slot in zip(self._owners, self._slots[buffer]):
                tensor = tensors[i]
                if tensor is None:
                    slot.zero_()
                elif tensor.dtype == torch.float32 and tensor.device == slot.device:
                    torch.index_select(tensor.reshape(-1), 0, index, out=slot)
                else:
                    slot.copy_(tensor.reshape(-1).index_select(0, index))
        return self._buffers[buffer]

    def _current_params(self) -> torch.Tensor:
        """The parameters' sketch, in the parameter buffer that does not hold the last one."""
        return self._read(self.params, _PARAMS_B if self._last_params is self._buffers[_PARAMS_A] else _PARAMS_A)

    @property
    def coordinates(self) -> int:
        return sketch_coordinates(self._runs)

    def before_step(self, schedule_factor: float | None = None) -> None:
        """Read the step's final gradient (call after clipping, before ``optimizer.step()``).

        ``schedule_factor``: the factor the user's schedule gives this step's LR, if known. A step
        whose factor is above the one of the step before (a warmup, the rising half of a cyclic
        schedule) adds nothing: the previous step was shorter than this one by the schedule's doing,
        so its gradient reads "too short" about an LR that is already gone."""
        self.calls["before"] += 1
        grads = [p.grad for p in self.params]
        rising = (schedule_factor is not None and self._descent_factor is not None
                  and schedule_factor > self._descent_factor * (1 + 1e-9))
        self._step_factor = schedule_factor
        if self._last_params is None:
            self._last_params = self._current_params()
        if all(grads[i] is None for i, _ in self._owners):
            self.calls["without_gradient"] += 1
            return
        g = self._read(grads, _GRAD)
        self.distance.observe(g, self._last_params, self._initial)
        if self._descent is None or rising:
            return
        descent = self._descent
        self._pending.append(torch.stack([g @ descent, g.norm(), descent.norm()]))  # folded into the sums later
        if len(self._pending) >= _FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        """Add the pending steps to the sums, one step after the other, on the device (the same float32
        additions, in the same order, as adding each step when it comes)."""
        if not self._pending:
            return
        rows = torch.stack(self._pending)
        self._pending = []
        if self._first_rows is not None:
            self._first_rows.append(rows)
            if sum(len(r) for r in self._first_rows) > FIRST_WINDOW_ROWS:
                self._first_rows = None  # bounded: no later half for so long a first interval
        for step in _step_sums(rows):
            self._sums += step

    def after_step(self) -> None:
        """Read the parameters after ``optimizer.step()``: the step's update is the difference."""
        self.calls["after"] += 1
        current = self._current_params()
        if self._initial is None:  # the run's start: the parameters before the first step read
            self._initial = self._buffers[_INITIAL].copy_(self._last_params if self._last_params is not None else current)
        if self._last_params is not None:
            # a non-finite or zero one is skipped in before_step
            self._descent = torch.sub(self._last_params, current, out=self._buffers[_DESCENT])
            self._descent_factor = self._step_factor
        self._last_params = current

    @property
    def step_factor(self) -> float | None:
        """The schedule's factor of the last step read (``before_step``'s ``schedule_factor``; None:
        not given)."""
        return self._step_factor

    def drift(self) -> float:
        """How far the parameters have moved since the first read, relative to where they started:
        ``|θ - θ_0| / |θ_0|`` on the sketch (0 before two reads, or when the sketch started at zero).
        One host sync; call once per decision."""
        if self._initial is None or self._last_params is None:
            return 0.0
        start = float(self._initial.norm())
        return float((self._last_params - self._initial).norm()) / start if start > 0 else 0.0

    def mark(self) -> None:
        """Note the calls so far: ``stepped_since_mark`` then asks about the ones after (the controller
        marks each decision)."""
        self._calls_at_mark = dict(self.calls)

    @property
    def stepped_since_mark(self) -> bool:
        """Whether ``before_step`` or ``after_step`` was called since the last ``mark`` (or since this
        object was built: at the run's start, or at a resume, whose saved sums hold steps of before)."""
        return any(self.calls[key] > self._calls_at_mark[key] for key in ("before", "after"))

    @property
    def ever_stepped(self) -> bool:
        """Whether ``before_step`` or ``after_step`` was ever called on this object."""
        return self.calls["before"] > 0 or self.calls["after"] > 0

    def take(self) -> AlignmentWindow:
        """The sums since the last call, as plain numbers; the accumulator starts again at zero. The
        run's first window also has ``late``: the same sums over the later half of its counted steps
        (the last ``ceil(n / 2)`` of ``n``), where the descent from the initialization, aligned at any
        LR, has passed."""
        self._fold()
        window = AlignmentWindow(*self._sums.tolist())
        self._sums.zero_()
        if self._first_rows is not None:
            if self._first_rows:
                sums = _step_sums(torch.cat(self._first_rows))
                counted = sums[sums[:, 4] > 0]
                window.late = AlignmentWindow(*counted[len(counted) // 2:].sum(0).tolist())
            self._first_rows = None
        return window

    def state_dict(self) -> dict:
        self._fold()
        update = -self._descent if self._descent is not None else None  # saved as the update, u = θ_after - θ_before
        tensors = {name: t for name, t in (("last_params", self._last_params), ("last_update", update),
                                            ("initial_params", self._initial)) if t is not None}
        if self._first_rows:  # the first interval's steps so far (no key once the first window was taken)
            tensors["first_rows"] = torch.cat(self._first_rows)
        return {"sketch_size": self.sketch_size, "seed": self.seed, "coordinates": self.coordinates,
                "sums": self._sums.tolist(), "tensors": tensors_to_text(tensors) if tensors else None,
                "descent_factor": self._descent_factor, "keeps_first_window": self._first_rows is not None,
                "distance": self.distance.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if (state["coordinates"], state["seed"], state["sketch_size"]) != (self.coordinates, self.seed, self.sketch_size):
            raise ValueError(
                f"the saved gradient-alignment sketch ({state['coordinates']} coordinates, seed {state['seed']}, "
                f"sketch_size {state['sketch_size']}) does not fit this model ({self.coordinates} coordinates, "
                f"seed {self.seed}, sketch_size {self.sketch_size}): resume with the same model and seed"
            )
        self._sums = torch.tensor(state["sums"], dtype=torch.float32, device=self._device)
        self._pending = []
        self._descent_factor = state.get("descent_factor")  # absent from checkpoints before it was kept
        self.distance = DistanceEstimate(self.coordinates, self._device)  # one from before it was kept starts afresh
        if state.get("distance"):
            self.distance.load_state_dict(state["distance"])
        tensors = text_to_tensors(state["tensors"]) if state.get("tensors") else {}
        # a checkpoint from before the first window's later half was kept has no key: no later half for it
        keeps = state.get("keeps_first_window", False)
        self._first_rows = ([tensors["first_rows"].to(self._device)] if "first_rows" in tensors else []) if keeps else None
        self._last_params = self._buffers[_PARAMS_A].copy_(tensors["last_params"]) if "last_params" in tensors else None
        # a checkpoint from before drift was kept has none: the next after_step starts it at the resumed parameters
        self._initial = self._buffers[_INITIAL].copy_(tensors["initial_params"]) if "initial_params" in tensors else None
        self._descent = torch.neg(tensors["last_update"].to(self._device), out=self._buffers[_DESCENT]) if "last_update" in tensors else None
