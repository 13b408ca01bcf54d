"""Plain optimizer steps whose gradient is a sign on every coordinate, for the alignment and gate tests."""

import torch

from hf_metalr.controller.alignment import GradientAlignment


def signed_steps(reader, theta, signs):
    """The gradient ``sign`` on every coordinate of ``theta``, then a step of -0.1 x the gradient, each read
    by ``reader`` (a ``GradientAlignment``, or a ``MetaLRController`` that watches ``theta``); a sign of None
    is a skipped step (a NaN gradient, the parameters left as they are)."""
    before, after = ((reader.before_step, reader.after_step) if isinstance(reader, GradientAlignment)
                     else (reader.before_optimizer_step, reader.after_optimizer_step))
    for sign in signs:
        theta.grad = torch.full_like(theta, float("nan") if sign is None else float(sign))
        before()
        if sign is not None:
            with torch.no_grad():
                theta.sub_(0.1 * theta.grad)
        after()
