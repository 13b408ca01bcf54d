"""The validation batches the iterate-average check reads, and their losses.

The check compares the loss at the current weights with the loss at the interval's average, on
the same first ``AVERAGE_CHECK_BATCHES`` batches of the evaluation at every decision. The current
weights' loss on those batches is what the Trainer's own evaluation has just computed, so
:class:`EvalBatchCapture` keeps it instead of computing it again: a forward hook on the model
keeps, from each training step's end until the decision, the first forwards in eval mode and
without grad that return a ``loss`` (the Trainer's ``prediction_step``), with the keyword
arguments the model was called with. The average's loss then replays exactly those calls
(:meth:`EvalBatchCapture.replayed_loss`), so the two losses are paired batch by batch, and the
check's own forward passes are the average's alone (half of what it took when it computed both).
The replay reads ``FIRST_CHECK_BATCHES`` (2) of them first, those that carry the most of the current
weights' loss, and the others only when the gain on those comes near the rule's bar
(``SETTLED_GAIN``, half of ``AVERAGE_GAIN``): at most evaluations the average is nowhere near
clearly better, and the check's cost halves there.

Where nothing was captured (the Trainer popped the labels for label smoothing or a
``compute_loss_func``, so the model returned no loss; ``nn.DataParallel``'s replicas ran the
forwards; a custom evaluation loop), the callback builds the same first batches from the eval
dataloader's dataset and ``collate_fn`` (:func:`first_batches`) and has the capture keep them with
the current weights' losses, computed there (:meth:`EvalBatchCapture.keep`); the average's replay
is then the same. :func:`validation_loss` is that loss at the current weights, alone.

Both weigh each batch by its size (but see :class:`EvalBatchCapture` for token counts under
several processes) and sum across processes, so every rank reads the same losses.
With several processes each one holds its share of the first batches: the Trainer's sharded
loader deals batches to the processes in turn, :func:`first_batches` deals examples, and the first
``AVERAGE_CHECK_BATCHES`` batches of every process together hold the same examples either way.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from contextlib import contextmanager

import torch

from ..controller.gate import AVERAGE_GAIN
from .model_hooks import register_forward_hook
from .train_losses import collective_device, output_loss

__all__ = ["AVERAGE_CHECK_BATCHES", "FIRST_CHECK_BATCHES", "SETTLED_GAIN", "EvalBatchCapture", "validation_loss",
           "first_batches"]

AVERAGE_CHECK_BATCHES = 4  # validation batches the iterate-average check reads, at most, per evaluation; the two losses
# are paired on the same batches, so few are enough
FIRST_CHECK_BATCHES = AVERAGE_CHECK_BATCHES // 2  # the kept batches the average's replay reads first (those with
# the largest share of the current weights' loss)
SETTLED_GAIN = AVERAGE_GAIN / 2  # a gain on the first batches below this settles the check there: for the gain on all
# of them to reach the bar, the others, which carry at most half of the current loss, would have to read at least
# about 0.48 (1.6x the bar)


def _batch_size(values) -> int:
    """The leading dimension of the first tensor that has one, else the length of the first list
    (1 when there is neither)."""
    for v in values:
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return len(v)
    return next((len(v) for v in values if isinstance(v, (list, tuple))), 1)


def _weighted_mean(totals: list[tuple[float, float]], device) -> float:
    """``sum(value) / sum(weight)`` over this process's ``(value, weight)`` batches (a value is a
    batch's loss times its size, say) and, with several processes, over all of them (an all-reduce
    every process joins); NaN with no batch anywhere."""
    value, weight = _summed_across_processes([sum(v for v, _ in totals), sum(w for _, w in totals)], device)
    return _ratio(value, weight)


def _summed_across_processes(values: list[float], device) -> list[float]:
    """``values`` summed element by element over the processes, in float64 (one all-reduce every
    process joins; with one process, ``values``)."""
    total = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        total = total.to(collective_device(torch.distributed))
        torch.distributed.all_reduce(total)
    return total.tolist()


def _ratio(value: float, weight: float) -> float:
    return value / weight if weight > 0 else float("nan")


class EvalBatchCapture:
    """Keeps the first ``AVERAGE_CHECK_BATCHES`` evaluation forwards after each training step.

    ``arm()`` (at each step's end, and after the evaluation of another eval dataset than the
    monitored one) empties it and starts listening; ``disarm()`` (when the decision starts) stops
    it, so neither the check's own forwards nor a later evaluation's are kept. The kept calls hold
    references to the batches the Trainer built (on the model's device) until ``release()`` (after
    the decision) or the next ``arm()``. Only calls of the attached module itself are kept: the
    replicas ``nn.DataParallel`` makes share its hooks, and their chunks live on other devices (the
    check then falls back to :meth:`keep`, with batches it builds itself).

    Each batch weighs as many examples as it holds. Under several processes, a model called with
    ``num_items_in_batch`` (the Trainer passes it to models that take loss kwargs, a causal LM's
    token count) returns its loss summed over its own tokens and divided by that count, which the
    Trainer gathers across processes (``average_tokens_across_devices``, the default); the batch
    then weighs its count over the number of processes, so the mean is the loss per token over
    every process, whatever their number (with one process nothing changes)."""

    def __init__(self):
        self._handle = None
        self._module = None
        self._armed = False
        self._counts_across_processes = True
        self._calls: list[tuple[tuple, dict, float, float, float]] = []  # (args, kwargs, loss, multiplier, weight)

    def attach(self, model: torch.nn.Module, *, counts_across_processes: bool = True) -> None:
        """Listen to ``model``'s forwards. ``counts_across_processes``: the Trainer's
        ``average_tokens_across_devices``, whether a ``num_items_in_batch`` counts every process's items."""
        self.detach()
        self._module = model
        self._counts_across_processes = bool(counts_across_processes)
        self._handle = register_forward_hook(model, "eval_batches", self._hook, with_kwargs=True)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._module = None
        self._calls, self._armed = [], False

    def arm(self) -> None:
        self._calls, self._armed = [], True

    def disarm(self) -> None:
        self._armed = False

    def release(self) -> None:
        """Drop the kept batches (and stop listening until the next ``arm()``)."""
        self._calls, self._armed = [], False

    @property
    def captured(self) -> int:
        """How many evaluation batches, with their losses, are kept."""
        return len(self._calls)

    def _hook(self, module, args, kwargs, output) -> None:
        if (not self._armed or module is not self._module or module.training or torch.is_grad_enabled()
                or len(self._calls) >= AVERAGE_CHECK_BATCHES):
            return
        loss = output_loss(output)
        if loss is None or not isinstance(args, tuple):
            return
        multiplier, weight = self._weighting(list(args) + list(kwargs.values()), kwargs.get("num_items_in_batch"))
        self._calls.append((args, dict(kwargs), float(loss), multiplier, weight))

    def _weighting(self, values, items) -> tuple[float, float]:
        """(what the batch's loss is multiplied by, what the batch weighs) in the mean over batches."""
        world = torch.distributed.get_world_size() if (
            torch.distributed.is_available() and torch.distributed.is_initialized()) else 1
        if items is None or world == 1:
            size = float(_batch_size(values))
            return size, size
        items = float(items)
        return items, (items / world if self._counts_across_processes else items)

    def keep(self, model: torch.nn.Module, batches) -> None:
        """Keep ``batches`` (mappings of keyword arguments, as a dataloader yields them, moved to the
        model's device) with the losses of ``model`` on them, computed here in eval mode and without
        grad (the mode restored after), in place of what was kept: for when the Trainer's evaluation
        gave none to keep. A batch that is not a mapping, or on which the model returns no loss, is
        left out. Each batch weighs its size."""
        device = next(model.parameters()).device
        self._calls = []
        with self._own_forwards(model):
            for batch in batches:
                if not isinstance(batch, Mapping):
                    continue
                batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
                loss = output_loss(model(**batch))
                if loss is not None:
                    self._calls.append(((), batch, float(loss), *self._weighting(list(batch.values()), None)))

    def current_loss(self, device) -> float:
        """The kept batches' mean loss, as the Trainer's evaluation computed it (or :meth:`keep`),
        across processes."""
        return _weighted_mean([(loss * multiplier, weight) for _, _, loss, multiplier, weight in self._calls], device)

    def replayed_loss(self, model: torch.nn.Module, *, settle: bool = True) -> float:
        """The mean loss of ``model`` as it is now (the average swapped in, say) on the kept batches,
        called exactly as the Trainer's evaluation called it (or :meth:`keep`), in eval mode and
        without grad (the mode restored after); across processes, like ``current_loss``.

        ``settle``: on each process the ``FIRST_CHECK_BATCHES`` kept batches that carry the most of
        the current weights' loss (their loss times its multiplier in the mean) are replayed first,
        and when the gain on them, ``log(current / replayed)``, is below ``SETTLED_GAIN``, the rest
        are not: the loss returned is then the current weights' loss on all the kept batches over
        ``exp(that gain)``, so the caller's gain on the whole reads those batches' gain. (The gain
        on all of them weighs each batch's ratio of the two losses by that share of the current
        loss, which bounds it only with losses > 0: a kept loss that is not finite and positive, on
        any process, means all are replayed.) False: replay them all. Every process takes the same
        branch (the losses it reads are reduced across processes, in one all-reduce)."""
        device = next(model.parameters()).device
        if not settle:
            return _weighted_mean(self._replay(model, self._calls), device)
        by_share = sorted(self._calls, key=lambda call: -call[2] * call[3])  # stable: ties keep the Trainer's order
        first, rest = by_share[:FIRST_CHECK_BATCHES], by_share[FIRST_CHECK_BATCHES:]
        replayed = self._replay(model, first)
        shares = [(loss * multiplier, weight) for _, _, loss, multiplier, weight in self._calls]
        # the first batches' gain bounds the whole's only when every batch's loss is positive (on every process)
        not_positive = sum(not (math.isfinite(value) and value > 0) for value, _ in shares)
        sums = _summed_across_processes([
            sum(loss * multiplier for _, _, loss, multiplier, _ in first), sum(weight for *_, weight in first),
            sum(v for v, _ in replayed), sum(w for _, w in replayed),
            sum(v for v, _ in shares), sum(w for _, w in shares), not_positive], device)
        current_first, replayed_first, current = _ratio(*sums[0:2]), _ratio(*sums[2:4]), _ratio(*sums[4:6])
        if (sums[6] == 0 and current_first > 0 and replayed_first > 0 and math.isfinite(current_first)
                and math.isfinite(replayed_first) and math.log(current_first / replayed_first) < SETTLED_GAIN):
            return current * replayed_first / current_first
        return _weighted_mean(replayed + self._replay(model, rest), device)

    def _replay(self, model: torch.nn.Module, calls) -> list[tuple[float, float]]:
        """``(loss times multiplier, weight)`` of ``model`` on ``calls``, in eval mode and without grad."""
        totals = []
        with self._own_forwards(model):
            for args, kwargs, _, multiplier, weight in calls:
                loss = output_loss(model(*args, **kwargs))
                if loss is not None:
                    totals.append((float(loss) * multiplier, weight))
        return totals

    @contextmanager
    def _own_forwards(self, model: torch.nn.Module):
        """``model`` in eval mode and without grad for the check's own forwards, which are not kept;
        its mode and the capture's listening restored after."""
        was_armed, self._armed = self._armed, False
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            model.train(was_training)
            self._armed = was_armed


def validation_loss(model, dataloader) -> float:
    """The mean loss of ``model`` over the first ``AVERAGE_CHECK_BATCHES`` batches of ``dataloader``
    (:func:`first_batches`), weighted by batch size and summed across processes; NaN when no batch
    carries a loss (a model that returns none, or batches that are not mappings of keyword
    arguments): the check then reads nothing."""
    capture = EvalBatchCapture()
    capture.keep(model, first_batches(dataloader))
    return capture.current_loss(next(model.parameters()).device)


def first_batches(dataloader):
    """This process's share of the first ``AVERAGE_CHECK_BATCHES`` batches of ``dataloader``: built
    from its dataset and ``collate_fn`` (the same examples at every check), so the Trainer's own
    (accelerate-wrapped) loader is not iterated and left half-way. A loader without an indexable
    dataset (an ``IterableDataset``) or a batch size is read directly, stopping after the last batch
    needed. Samples are dealt to the processes in turn, as a distributed sampler does."""
    import torch.distributed as dist

    dataset, size, collate = (getattr(dataloader, "dataset", None), getattr(dataloader, "batch_size", None),
                              getattr(dataloader, "collate_fn", None))
    try:
        length = len(dataset)
        dataset[0]
    except Exception:  # noqa: BLE001 - not a map-style dataset: read the loader itself
        yield from itertools.islice(dataloader, AVERAGE_CHECK_BATCHES)
        return
    if not size or collate is None:
        yield from itertools.islice(dataloader, AVERAGE_CHECK_BATCHES)
        return
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    indices = list(range(rank, min(length, AVERAGE_CHECK_BATCHES * size * world), world))
    for start in range(0, len(indices), size):
        yield collate([dataset[i] for i in indices[start:start + size]])
