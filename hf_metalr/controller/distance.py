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
    exactly."""

    def __init__(self, coordinates: int, device):
        self._gradient_sum = torch.zeros(coordinates, dtype=torch.float32, device=device)
        self._numerator = torch.zeros((), dtype=torch.float32, device=device)
        self._largest = torch.zeros((), dtype=torch.float32, device=device)

    def observe(self, gradient: torch.Tensor, params: torch.Tensor, initial: torch.Tensor | None) -> None:
        """One step: its gradient and the parameters it was taken at, on the sketch, and the sketch
        of the starting parameters (None before the first step: the same as ``params``). A step
        whose gradient or product is not finite adds nothing."""
        with torch.no_grad():
            moved = (initial - params) if initial is not None else torch.zeros_like(params)
            product = gradient @ moved
            finite = torch.isfinite(product) & torch.isfinite(gradient).all()
            numerator = torch.where(finite, BETA3 * self._numerator + product, self._numerator)
            gradient_sum = torch.where(finite, BETA3 * self._gradient_sum + gradient, self._gradient_sum)
            norm = gradient_sum.abs().sum()
            estimate = torch.where(norm > 0, numerator / torch.where(norm > 0, norm, torch.ones_like(norm)),
                                   torch.zeros_like(norm))
            self._numerator.copy_(numerator)
            self._gradient_sum.copy_(gradient_sum)
            torch.maximum(self._largest, estimate, out=self._largest)

    def value(self) -> float:
        """The estimate: the largest ``d_hat`` so far, in the parameters' units per coordinate; 0 while
        no step has read a positive one (one host sync)."""
        return float(self._largest)

    def state_dict(self) -> dict:
        return {"numerator": float(self._numerator), "largest": float(self._largest),
                "tensors": tensors_to_text({"gradient_sum": self._gradient_sum})}

    def load_state_dict(self, state: dict) -> None:
        self._numerator.fill_(state["numerator"])
        self._largest.fill_(state["largest"])
        self._gradient_sum.copy_(text_to_tensors(state["tensors"])["gradient_sum"])
