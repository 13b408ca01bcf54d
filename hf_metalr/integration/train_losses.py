"""Per-step training losses for the controller, read from the model's own forward outputs.

The Trainer hands callbacks a training loss only when it logs, as a mean over ``logging_steps``.
The controller's ``train_loss_noise`` feature needs the loss of every optimizer step, so
:class:`TrainLossTap` puts a forward hook on the model and keeps the ``loss`` of each training
forward (the model is in eval mode during evaluation, and those are skipped).

- A step's loss is the mean of its micro-batches' (gradient accumulation), as the Trainer logs it.
- Losses stay on the device until :meth:`TrainLossTap.take`, once per decision: no host sync per
  step (before the first decision the callback takes them at every step, for the early-divergence
  guard).
- With several processes, ``take`` averages the processes' losses step by step (every process
  runs the same steps), so every rank sees the loss of the global batch, as with one process.
  :meth:`TrainLossTap.share` does it ahead of time, at a checkpoint, so that what the checkpoint
  keeps is that mean, not the main process's own losses.
- A model whose outputs carry no ``loss`` (a custom ``compute_loss``) gives nothing; the callback
  then falls back to the logged losses.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .model_hooks import register_forward_hook

__all__ = ["TrainLossTap", "output_loss", "collective_device", "world_size"]


def output_loss(output) -> torch.Tensor | None:
    """The one-element ``loss`` of a model's output (a mapping or a ``ModelOutput``), else None."""
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    return loss if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None


class TrainLossTap:
    """Collects per-optimizer-step training losses from a forward hook on the model."""

    def __init__(self):
        self._micro: list[torch.Tensor] = []  # the micro-batches of the step in progress
        self._steps: list[torch.Tensor] = []  # one loss per finished step, on the device
        self._restored: list[float] = []  # steps already the same on every process (a checkpoint's, or averaged by
        # share), not yet taken
        self._handle = None
        self.seen_any = False  # whether any training forward returned a loss

    def attach(self, model: torch.nn.Module) -> None:
        self.detach()
        self._handle = register_forward_hook(model, "train_losses", self._hook)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, module, inputs, output) -> None:
        if not module.training:
            return
        loss = output_loss(output)
        if loss is not None:
            self._micro.append(loss.detach())
            self.seen_any = True

    def end_step(self) -> None:
        """Close one optimizer step (call from ``on_step_end``)."""
        if len(self._micro) == 1:  # no gradient accumulation: a 0-d copy of the loss (one kernel, not a stack and a
            # mean; a copy, as a model may reuse its loss tensor in place at the next step)
            self._steps.append(self._micro[0].float().reshape(()).clone())
        elif self._micro:
            self._steps.append(torch.stack([m.float() for m in self._micro]).mean())
        self._micro = []

    def pending(self) -> list[float]:
        """The finished steps not taken yet (what a checkpoint keeps): with several processes, this
        process's own losses for the steps since the last :meth:`share`."""
        return self._restored + (torch.stack(self._steps).tolist() if self._steps else [])

    def restore(self, losses: list[float]) -> None:
        """Take over the pending steps saved in a checkpoint (the same on every process); they come
        first at the next ``take``."""
        self._restored = [float(v) for v in losses]
        self._steps, self._micro = [], []

    def take(self) -> list[float]:
        """The steps' losses since the last call, averaged across processes, and empty the tap (a
        collective with several processes: every process calls it)."""
        local = torch.stack(self._steps).tolist() if self._steps else []
        restored, self._steps, self._restored = self._restored, [], []
        if world_size() > 1:
            import torch.distributed as dist

            local = _mean_across_processes(local, dist)
        return restored + local

    def share(self) -> list[float]:
        """Average the pending steps across processes now, keep them pending, and return them: the
        losses a checkpoint must hold so that a resume on any rank goes on as the uninterrupted run
        (a collective with several processes: every process calls it)."""
        self._restored = self.take()
        return list(self._restored)


def world_size() -> int:
    """The number of processes of the initialised process group; 1 without one."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def collective_device(dist) -> torch.device:
    """Where a tensor for one of ``dist``'s collectives must live: this process's GPU under NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _mean_across_processes(losses: list[float], dist) -> list[float]:
    """Step-by-step mean over the processes (two small all-reduces; NCCL needs CUDA tensors)."""
    device = collective_device(dist)
    lengths = torch.tensor([len(losses), -len(losses)], dtype=torch.float64, device=device)
    dist.all_reduce(lengths, op=dist.ReduceOp.MAX)
    n = int(-lengths[1].item())  # every process runs the same steps; the shortest list wins if not
    values = torch.tensor(losses[:n], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return (values / dist.get_world_size()).tolist()
