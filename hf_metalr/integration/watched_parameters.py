"""Which parameters ``MetaLRCallback`` watches, and whether it can watch them at all.

- :func:`trained_parameters`: the model's parameters that the optimizer updates, which the gradient
  alignment, the drift and the distance estimate read.
- :func:`watched_parameters`: those, with a warning naming the trainable ones left out of the
  optimizer (or, on a resume from a checkpoint of an earlier hf_metalr that watched every trainable
  parameter, all of them, so that the run goes on from its checkpoint).
- :func:`watchable`: False, with one warning, when the parameters are sharded (FSDP, DeepSpeed):
  the gradient-alignment signal is then off.
- :func:`average_iterates`: whether the iterate-average check keeps its float32 copy of the
  trainable weights (on by default up to ``AVERAGE_ITERATES_AUTO_MAX`` trainable parameters).
"""

from __future__ import annotations

import warnings

from ..controller.alignment import draw_sketch, sketch_coordinates

__all__ = ["AVERAGE_ITERATES_AUTO_MAX", "average_iterates", "trained_parameters", "watchable", "watched_parameters"]

AVERAGE_ITERATES_AUTO_MAX = 500_000_000  # trainable parameters up to which the check is on by default (2 GB in float32)


def average_iterates(wanted: bool | None, model) -> bool:
    """Whether to keep the iterate average: ``wanted`` if given, else on up to
    ``AVERAGE_ITERATES_AUTO_MAX`` trainable parameters, off above with one warning."""
    if wanted is not None:
        return bool(wanted)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable <= AVERAGE_ITERATES_AUTO_MAX:
        return True
    warnings.warn(
        f"MetaLRCallback: {trainable / 1e9:.2f}B trainable parameters; the iterate-average check would keep a float32 "
        f"copy of them ({4 * trainable / 2**30:.1f} GiB), so it is off (the gate reads the gradient alignment alone). "
        "Pass MetaLRCallback(average_iterates=True) or --metalr_average_iterates to turn it on.",
        RuntimeWarning, stacklevel=3)
    return False


def trained_parameters(model, optimizer) -> list:
    """The model's parameters that the optimizer updates, in the model's order: a parameter left
    trainable (``requires_grad``) but outside the optimizer never moves, and would dilute the
    alignment and the drift. When none of the model's parameters is in the optimizer's groups (a
    wrapper that holds copies of them), all the trainable ones."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return [p for p in trainable if id(p) in in_optimizer] or trainable


def watched_parameters(model, optimizer, saved_sketch: dict) -> list:
    """The parameters the controller watches: ``trained_parameters``, with a warning naming the
    trainable ones it leaves out; or, on a resume from a checkpoint whose gradient sketch was drawn
    over every trainable parameter (hf_metalr before it left those out), all of them, with a
    warning, so that the run goes on from its checkpoint instead of failing on the sketch."""
    trained = trained_parameters(model, optimizer)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if len(trained) == len(trainable):
        return trained

    def coordinates(params):
        return sketch_coordinates(draw_sketch([p.numel() for p in params], saved_sketch["sketch_size"], saved_sketch["seed"]))

    if saved_sketch.get("coordinates") and coordinates(trained) != saved_sketch["coordinates"] and (
            coordinates(trainable) == saved_sketch["coordinates"]):
        warnings.warn("MetaLRCallback: the checkpoint's gradient sketch was drawn over every trainable parameter, "
                      "those outside the optimizer included (an earlier hf_metalr); the resumed run keeps watching "
                      "them all, to go on from its checkpoint.", UserWarning, stacklevel=3)
        return trainable
    kept = {id(p) for p in trained}
    left_out = [p for p in trainable if id(p) not in kept]
    warnings.warn(
        f"MetaLRCallback: {len(left_out)} parameter tensors of the model ({sum(p.numel() for p in left_out):,} "
        "values) require grad but are not in the optimizer, so they never move; the controller watches only "
        "the optimizer's. Set requires_grad=False on them to freeze them (their gradients are then not "
        "computed either), or add them to the optimizer.", UserWarning, stacklevel=3)
    return trained


def watchable(args) -> bool:
    """Whether every process holds whole parameters and gradients; with FSDP or DeepSpeed they are
    sharded, and the gradient-alignment signal is switched off with a warning."""
    sharded = [name for name in ("fsdp", "deepspeed") if getattr(args, name, None)]
    if sharded:
        warnings.warn(
            f"MetaLRCallback: parameters are sharded ({sharded[0]}), so the gradient-alignment signal is off: the "
            "policy acts on the metric and the training loss alone, and its direction gate is off.",
            RuntimeWarning,
            stacklevel=3,
        )
    return not sharded
