"""A sketch's coordinates read from many CUDA tensors in one kernel launch, through a table of addresses.

:class:`~hf_metalr.controller.alignment.GradientAlignment` reads its sketch from the parameter
tensors that hold a window (55 of BERT-base's 199) twice per optimizer step, the gradients and the
parameters. With one ``index_select`` per tensor that is about 110 kernel launches, 2.2 ms of host
time a step on an H200's host, twice a fused AdamW step (``benchmarks/gpu_step_cost.py``); the
Trainer waits for every step's loss, so that host time adds to the wall time.

:class:`PointerGather` fixes each coordinate's (tensor slot, offset) on the device once. A read
writes the tensors' addresses into a pinned host buffer, copies them to the device asynchronously
(a ring of buffers, each reused only once the read that last used it has finished) and launches one Triton kernel that
loads every coordinate through its tensor's address: the same float32 values as the
``index_select`` reads, bit for bit, with no host synchronisation; a missing tensor (None: a
parameter that got no gradient this step, as under wav2vec2's LayerDrop) reads as zeros, as there.
It takes contiguous float32, bfloat16 or float16 tensors on its device only (the last two widened
to float32 exactly, as the ``index_select`` read's copy does), each of the dtype it was built for;
:meth:`PointerGather.accepts` says whether a list qualifies, and the caller falls back to
``index_select`` otherwise. :func:`pointer_gather_available` is False without
CUDA or Triton (a CPU machine): the fallback is then the only path.
"""

from __future__ import annotations

import torch

__all__ = ["PointerGather", "pointer_gather_available", "GATHERED_DTYPES"]

_RING = 4  # pinned address buffers taking turns
_BLOCK = 1024
_kernel = None
GATHERED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # the kernel's codes 0, 1, 2 for a tensor's dtype


def pointer_gather_available(device: torch.device) -> bool:
    """Whether :class:`PointerGather` can run on ``device``: a CUDA device and an importable Triton."""
    if device.type != "cuda":
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def _gather_kernel():
    global _kernel
    if _kernel is None:
        import triton
        import triton.language as tl

        @triton.jit
        def gather(table, kinds, slot, offset, out, n, BLOCK: tl.constexpr):
            i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            inside = i < n
            owner = tl.load(slot + i, mask=inside, other=0)
            base = tl.load(table + owner, mask=inside, other=0)
            kind = tl.load(kinds + owner, mask=inside, other=0)
            at = tl.load(offset + i, mask=inside, other=0)
            present = inside & (base != 0)  # address 0: a missing tensor, read as zeros
            single = tl.load(base.to(tl.pointer_type(tl.float32)) + at, mask=present & (kind == 0), other=0.0)
            brain = tl.load(base.to(tl.pointer_type(tl.bfloat16)) + at, mask=present & (kind == 1), other=0.0)
            half = tl.load(base.to(tl.pointer_type(tl.float16)) + at, mask=present & (kind == 2), other=0.0)
            value = tl.where(kind == 0, single, tl.where(kind == 1, brain.to(tl.float32), half.to(tl.float32)))
            tl.store(out + i, value, mask=inside)

        _kernel = gather
    return _kernel


def gather_tables(indices: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(slot, offset)``, int64 on the CPU: for each coordinate, in the order of ``indices``
    (one flat index tensor per owning tensor), which owning tensor it is in and where."""
    slot = torch.cat([torch.full((len(index),), k, dtype=torch.int64) for k, index in enumerate(indices)])
    offset = torch.cat([index.to("cpu", torch.int64) for index in indices])
    return slot, offset


class PointerGather:
    """Reads ``indices[k]`` of the ``k``-th of a list of tensors into one float32 vector, in one launch.
    ``dtypes[k]`` is the ``k``-th tensor's dtype, one of ``GATHERED_DTYPES`` (default: all float32);
    bfloat16 and float16 values are widened to float32 exactly, as ``index_select`` then ``copy_`` do."""

    def __init__(self, indices: list[torch.Tensor], device: torch.device, dtypes: list[torch.dtype] | None = None):
        self.device = torch.device(device)
        self.owners = len(indices)
        self.dtypes = list(dtypes) if dtypes is not None else [torch.float32] * self.owners
        unknown = sorted({str(d) for d in self.dtypes} - {str(d) for d in GATHERED_DTYPES})
        if unknown or len(self.dtypes) != self.owners:
            raise ValueError(f"PointerGather reads {[str(d) for d in GATHERED_DTYPES]}, one dtype per tensor; "
                             f"got {unknown or len(self.dtypes)}")
        kinds = torch.tensor([GATHERED_DTYPES.index(d) for d in self.dtypes], dtype=torch.int32)
        slot, offset = gather_tables(indices)
        self.coordinates = len(slot)
        self._sizes = [int(index.max()) + 1 for index in indices]  # the least numel each owner needs
        self._slot, self._offset, self._kinds = slot.to(self.device), offset.to(self.device), kinds.to(self.device)
        self._host = [torch.empty(self.owners, dtype=torch.int64).pin_memory() for _ in range(_RING)]
        self._host_view = [host.numpy() for host in self._host]  # written in place: no tensor built per read
        self._table = [torch.empty(self.owners, dtype=torch.int64, device=self.device) for _ in range(_RING)]
        self._copied: list[torch.cuda.Event | None] = [None] * _RING
        self._turn = 0

    def accepts(self, tensors) -> bool:
        """Whether every tensor is None (read as zeros) or of its dtype (``dtypes``), contiguous, on this
        gather's device and large enough to hold its coordinates (the kernel does not check bounds;
        ``index_select`` would raise): :meth:`refusal` finds none to refuse."""
        return self.refusal(tensors) is None

    def refusal(self, tensors) -> str | None:
        """The first tensor that :meth:`accepts` refuses and why, in words; None when there is none."""
        for k, (t, dtype, size) in enumerate(zip(tensors, self.dtypes, self._sizes)):
            if t is None:
                continue
            if t.dtype != dtype or t.device != self.device:
                return f"owner {k}: {t.dtype} on {t.device}, {dtype} on {self.device} expected"
            if not t.is_contiguous():
                return f"owner {k}: strides {t.stride()} for shape {tuple(t.shape)}"
            if t.numel() < size:
                return f"owner {k}: {t.numel()} elements, {size} needed"
        return None

    def __call__(self, tensors, out: torch.Tensor) -> torch.Tensor:
        """``out[c] = tensors[slot[c]].flatten()[offset[c]]`` for every coordinate ``c``, 0 where that
        tensor is None (a parameter without a gradient this step: LayerDrop, an unused branch);
        ``tensors`` must pass :meth:`accepts` and stay alive until the kernel has run (stream order
        sees to it)."""
        k = self._turn
        self._turn = (k + 1) % _RING
        if self._copied[k] is not None:
            self._copied[k].synchronize()  # the read that used these buffers _RING reads ago: long finished
        self._host_view[k][:] = [0 if t is None else t.data_ptr() for t in tensors]
        with torch.cuda.device(self.device):  # the tensors' device, whichever is current (one stream, in order)
            table = self._table[k].copy_(self._host[k], non_blocking=True)
            grid = ((self.coordinates + _BLOCK - 1) // _BLOCK,)
            _gather_kernel()[grid](table, self._kinds, self._slot, self._offset, out, self.coordinates, BLOCK=_BLOCK)
            event = self._copied[k] = torch.cuda.Event()
            event.record()  # after the kernel: both buffers of this turn are free once it has passed
        return out
