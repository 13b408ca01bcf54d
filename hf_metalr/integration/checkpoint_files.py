"""The files ``MetaLRCallback`` writes into a checkpoint folder beside the Trainer's, and how a resume finds them.

The controller's own state rides in ``trainer_state.json`` (the callback is an ``ExportableState``).
Two things do not fit there, and are files of their own, written into ``checkpoint-<step>`` by
the process that saves (``args.should_save``: the main process, or each node's with
``save_on_each_node``):

- ``TRAIN_LOSSES_FILE`` (``metalr_train_losses.json``), with several processes only: the
  rank-averaged training losses since the last decision (the state holds the main process's own),
  ``{"global_step": step, "losses": [...]}``; written at every save, empty too, so a folder never
  holds another run's.
- ``ITERATE_AVERAGE_FILE`` (``metalr_iterate_average.safetensors``), when the checkpoint is saved
  between two evaluations: the iterate average of the interval in progress (as large as the
  trainable weights), with ``steps`` and ``global_step`` in its metadata.
- ``START_WEIGHTS_FILE`` (``metalr_start_weights.safetensors``), when the checkpoint is saved while
  the controller keeps the weights the run started from (until the run has made progress): those
  weights, which a cut on a wrecked run goes back to (as large as the trainable weights), with
  ``global_step`` and the first step's schedule factor in its metadata.

A resume reads the training losses from the resumed checkpoint (the first of
:func:`checkpoint_folders` that holds a ``trainer_state.json``) and the average from the first
that holds one of its step and interval; where it finds none, it warns and goes on without:
the main process's own losses, no iterate-average check at the next evaluation, or a cut on a
wrecked run that cuts the LR without going back to the start weights.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

__all__ = ["ITERATE_AVERAGE_FILE", "START_WEIGHTS_FILE", "TRAIN_LOSSES_FILE", "checkpoint_folders",
           "restore_iterate_average", "restore_start_weights", "shared_train_losses", "write_iterate_average",
           "write_start_weights", "write_train_losses"]

ITERATE_AVERAGE_FILE = "metalr_iterate_average.safetensors"  # in a checkpoint saved between two evaluations
START_WEIGHTS_FILE = "metalr_start_weights.safetensors"  # in a checkpoint saved while the start weights are kept
TRAIN_LOSSES_FILE = "metalr_train_losses.json"  # with several processes: the rank-averaged pending training losses
_RESUME_FRAMES = 16  # how many frames the walk searches, from the caller of checkpoint_folders up, for Trainer.train's


def checkpoint_folder(args, state) -> Path:
    """``<output_dir>/checkpoint-<global_step>``: where the Trainer saves this step's checkpoint."""
    return Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"


def checkpoint_folders(args, state) -> list[Path]:
    """Where the resumed checkpoint's side files may be, in order: the folder
    ``Trainer.train(resume_from_checkpoint=...)`` resumed from (found on the call stack, so call
    this from the callback's event, within ``_RESUME_FRAMES`` of ``train``),
    ``args.resume_from_checkpoint``, ``<output_dir>/checkpoint-<step>``."""
    candidates = [Path(folder) for folder in (_resumed_folder(), getattr(args, "resume_from_checkpoint", None))
                  if isinstance(folder, (str, Path))]
    return candidates + [checkpoint_folder(args, state)]


def _resumed_folder():
    """The checkpoint folder ``Trainer.train`` resumes from: its ``resume_from_checkpoint`` local,
    found on the call stack (transformers passes it to no callback); None when not found."""
    frame = sys._getframe(1)
    for _ in range(_RESUME_FRAMES):
        if frame is None:
            return None
        folder = frame.f_locals.get("resume_from_checkpoint")
        if isinstance(folder, (str, Path)) and frame.f_code.co_name in ("train", "_inner_training_loop"):
            return folder
        frame = frame.f_back
    return None


def write_train_losses(folder: Path, global_step: int, losses: list) -> None:
    """``TRAIN_LOSSES_FILE`` in ``folder``: the rank-averaged pending training losses of ``global_step``."""
    (folder / TRAIN_LOSSES_FILE).write_text(json.dumps({"global_step": global_step, "losses": losses}))


def shared_train_losses(folders: list[Path], global_step: int, fallback: list) -> list:
    """The pending training losses a resume from a checkpoint of several processes goes on from:
    the rank-averaged ones in the resumed checkpoint's ``TRAIN_LOSSES_FILE`` (the first of
    ``folders`` that holds a ``trainer_state.json``), when it is of ``global_step``; else
    ``fallback`` (the checkpoint state's: the main process's own), with a warning."""
    resumed = next((folder for folder in folders if (folder / "trainer_state.json").is_file()), None)
    if resumed is not None:
        try:
            saved = json.loads((resumed / TRAIN_LOSSES_FILE).read_text())
            if saved.get("global_step") == global_step and isinstance(saved.get("losses"), list):
                return [float(v) for v in saved["losses"]]
        except (OSError, ValueError, TypeError, AttributeError):
            pass
    warnings.warn(f"MetaLRCallback: the checkpoint at step {global_step} was saved by several processes, but its "
                  f"{TRAIN_LOSSES_FILE} could not be read; the training losses since the last decision are the main "
                  "process's own, so the next decision's training-loss features may differ slightly from an "
                  "uninterrupted run's", RuntimeWarning, stacklevel=3)
    return fallback


def write_iterate_average(folder: Path, average, global_step: int) -> None:
    """``ITERATE_AVERAGE_FILE`` in ``folder``: ``average`` (an ``IterateAverage``)'s interval in progress."""
    from safetensors.torch import save_file

    saved = average.state_dict()
    save_file({f"average.{i}": t.contiguous() for i, t in enumerate(saved["average"])}, str(folder / ITERATE_AVERAGE_FILE),
              metadata={"steps": str(saved["steps"]), "global_step": str(global_step)})


_UNREADABLE = (OSError, ValueError, KeyError, RuntimeError, TypeError)  # a side file that is not one, or not this model's


def _side_files(candidates: list[Path], name: str, prefix: str, wanted):
    """``(tensors, metadata)`` of each of ``candidates``' file ``name`` whose metadata ``wanted``
    accepts, in order (its tensors ``<prefix>.0``, ``<prefix>.1``, ...); a file that is missing or
    unreadable is passed over."""
    from safetensors import safe_open

    for folder in candidates:
        path = folder / name
        if not path.is_file():
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if not wanted(meta):
                    continue
                tensors = [f.get_tensor(f"{prefix}.{i}") for i in range(len(list(f.keys())))]
        except _UNREADABLE:
            continue
        yield tensors, meta


def restore_iterate_average(average, candidates: list[Path], *, steps: int, global_step: int) -> bool:
    """Load into ``average`` (an ``IterateAverage``; its ``last_loss`` is kept) the interval of
    ``steps`` optimizer steps from the first of ``candidates`` whose ``ITERATE_AVERAGE_FILE`` is of
    that step and interval and fits the model. A file that is missing, unreadable, of another step
    or interval, or of another model is passed over; when none is left, warn and return False."""
    def of_this_interval(meta):
        return (int(meta.get("steps", -1)), int(meta.get("global_step", -1))) == (steps, global_step)

    for tensors, _ in _side_files(candidates, ITERATE_AVERAGE_FILE, "average", of_this_interval):
        try:
            average.load_state_dict({"steps": steps, "average": tensors, "last_loss": average.last_loss})
            return True
        except _UNREADABLE:
            continue
    warnings.warn(
        f"MetaLRCallback: the checkpoint at step {global_step} was saved between two evaluations, but no "
        f"{ITERATE_AVERAGE_FILE} of that step and interval could be read (looked in "
        f"{', '.join(str(c) for c in candidates)}); the iterate-average check skips the next evaluation.",
        RuntimeWarning, stacklevel=3)
    return False


def write_start_weights(folder: Path, start_weights, global_step: int) -> None:
    """``START_WEIGHTS_FILE`` in ``folder``: ``start_weights`` (a ``StartWeights``)'s kept weights."""
    from safetensors.torch import save_file

    saved = start_weights.state_dict()
    save_file({f"weights.{i}": w.contiguous() for i, w in enumerate(saved["weights"])}, str(folder / START_WEIGHTS_FILE),
              metadata={"global_step": str(global_step)})


def restore_start_weights(start_weights, candidates: list[Path], *, global_step: int) -> bool:
    """Load into ``start_weights`` (a ``StartWeights``) the weights of the first of ``candidates``
    whose ``START_WEIGHTS_FILE`` is of ``global_step`` and fits the model; when none is, warn and
    return False (a cut on a wrecked run then cuts without going back to the start)."""
    def of_this_step(meta):
        return int(meta.get("global_step", -1)) == global_step

    for weights, meta in _side_files(candidates, START_WEIGHTS_FILE, "weights", of_this_step):
        try:
            start_weights.load_state_dict({"weights": weights})
            return True
        except _UNREADABLE:
            continue
    warnings.warn(
        f"MetaLRCallback: the checkpoint at step {global_step} was saved while the weights the run started from were "
        f"kept, but no {START_WEIGHTS_FILE} of that step could be read (looked in "
        f"{', '.join(str(c) for c in candidates)}); a cut on a wrecked run will cut the LR without taking the weights "
        "back to their start.",
        RuntimeWarning, stacklevel=3)
    return False
