"""How long a step may be: the distance estimate of D-adaptation, as Prodigy reads it.

D-adaptation (Defazio & Mishchenko 2023) and Prodigy (Mishchenko & Defazio 2023) bound the
distance from the starting point ``x_0`` to a solution from below, with the gradients seen along
the way: for weights ``λ_i >= 0`` and a star-convex loss, ``Σ λ_i <g_i, x_i - x*> >= 0``, so

    D_inf >= Σ λ_i <g_i, x_0 - x_i> / |Σ λ_i g_i|_1 = d_hat

whatever the trajectory ``x_i`` was. Prodigy sets Adam's step size (its LR) to the running maximum
of ``d_hat``, with exponentially decaying weights (``BETA3``, its default); here it is read along
the user's own trajectory instead, to say whether the LR is far above what that estimate allows.

:class:`DistanceEstimate` keeps it on the gradient alignment's coordinate sketch (Prodigy's own
``slice_p`` reads a subset of coordinates the same way): one float32 vector of the sketch's length
(the decayed sum of gradients) and two numbers, on the parameters' device, with no host sync per
step. ``GradientAlignment`` feeds it at every step that has a finite gradient.
"""

from __future__ import annotations

import math

import torch

from .serialization import tensors_to_text, text_to_tensors

__all__ = ["BETA3", "DistanceEstimate"]

BETA3 = math.sqrt(0.999)  # Prodigy's default decay of its sums: sqrt(beta2) with Adam's beta2 = 0.999


class DistanceEstimate:
    """The running maximum of ``d_hat`` over the steps so far (see the module).

    ``state_dict()`` holds the decayed gradient sum and the two numbers, so a resumed run continues
    exactly. On a CPU the two numbers are Python floats (a read costs nothing there); on another
    device they stay on it, so a step needs no host sync."""

    def __init__(self, coordinates: int, device):
        self._on_cpu = torch.device(device).type == "cpu"
        self._gradient_sum = torch.zeros(coordinates, dtype=torch.float32, device=device)
        self._numerator = 0.0 if self._on_cpu else torch.zeros((), dtype=torch.float32, device=device)
        self._largest = 0.0 if self._on_cpu else torch.zeros((), dtype=torch.float32, device=device)

    def observe(self, gradient: torch.Tensor, params: torch.Tensor, initial: torch.Tensor | None) -> None:
        """One step: its gradient and the parameters it was taken at, on the sketch, and the sketch
        of the starting parameters (None before the first step: the same as ``params``). A step
        whose gradient is not finite adds nothing (its product with the distance moved is not
        finite then: an infinite entry times a zero one is NaN too)."""
        with torch.no_grad():
            product = (gradient @ initial - gradient @ params) if initial is not None else gradient @ (params * 0)
            if self._on_cpu:
                self._observe_on_cpu(gradient, float(product))
                return
            finite = torch.isfinite(product)
            self._gradient_sum.mul_(torch.where(finite, BETA3, 1.0)).add_(torch.where(finite, gradient, 0.0))
            self._numerator = torch.where(finite, BETA3 * self._numerator + product, self._numerator)
            norm = torch.linalg.vector_norm(self._gradient_sum, 1)
            estimate = torch.where(norm > 0, self._numerator / norm.clamp_min(torch.finfo(norm.dtype).tiny), 0.0)
            torch.maximum(self._largest, estimate, out=self._largest)

    def _observe_on_cpu(self, gradient: torch.Tensor, product: float) -> None:
        if not math.isfinite(product):
            return
        self._gradient_sum.mul_(BETA3).add_(gradient)
        self._numerator = BETA3 * self._numerator + product
        norm = float(torch.linalg.vector_norm(self._gradient_sum, 1))
        if norm > 0:
            self._largest = max(self._largest, self._numerator / norm)

    def value(self) -> float:
        """The estimate: the largest ``d_hat`` so far, in the parameters' units per coordinate; 0 while
        no step has read a positive one (one host sync off the CPU)."""
        return float(self._largest)

    def state_dict(self) -> dict:
        return {"numerator": float(self._numerator), "largest": float(self._largest),
                "tensors": tensors_to_text({"gradient_sum": self._gradient_sum})}

    def load_state_dict(self, state: dict) -> None:
        if self._on_cpu:
            self._numerator, self._largest = float(state["numerator"]), float(state["largest"])
        else:
            self._numerator.fill_(state["numerator"])
            self._largest.fill_(state["largest"])
        self._gradient_sum.copy_(text_to_tensors(state["tensors"])["gradient_sum"])
