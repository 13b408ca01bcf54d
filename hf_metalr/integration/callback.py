"""``MetaLRCallback``: the controller, plugged into the Hugging Face ``Trainer``.

At every evaluation during training the monitored validation metric goes to a
:class:`~hf_metalr.MetaLRController`, and the decided LR is bound into the optimizer and the
user's scheduler (see ``lr_binding``), so it takes effect from the very next optimizer step.

- **Logged:** ``metalr/lr``, ``metalr/scale``, ``metalr/action`` (asked for), ``metalr/applied``
  (taken effect), ``metalr/reward`` and, where the parameters are watched, ``metalr/grad_alignment``,
  ``metalr/grad_alignment_t`` and ``metalr/param_drift`` are added to the evaluation's own log entry, so TensorBoard / W&B (``report_to``) show them beside the
  metric. The callback moves itself ahead of the reporting callbacks for that, at train begin
  (the handler is found on the call stack: transformers passes no reference to it; see ``callback_handler``).
- **Training losses:** a forward hook on the model reads the loss of every training step (see
  ``train_losses``) for the controller's training-loss features; a model whose outputs carry no
  ``loss`` falls back to the logged losses, with a warning.
- **Early-divergence guard:** until the first decision, each step's loss (from the hook, averaged
  across processes) goes to the controller at once, and a blow-up cuts the LR from the next step
  (see ``controller.early_guard``); that is one host read and, with several processes, two small
  all-reduces per step, until the first evaluation only.
- **Gradient alignment:** at every optimizer step (``on_pre_optimizer_step``, after the gradients
  are accumulated, synchronised across ranks and clipped; ``on_optimizer_step``, after the update)
  the controller reads a fixed sketch of the gradient and the parameters (see
  ``controller.alignment``), which tells it which way the LR is wrong and drives its direction
  gate. With sharded parameters (FSDP, DeepSpeed) the signal is switched off, with one warning.
- **Iterate-average check:** the average of the iterates since the last evaluation against the
  current weights, on the validation loss (see ``average_iterates`` and
  ``controller.iterate_average``); logged as ``metalr/iterate_average_gain``. The current weights'
  loss is the one the Trainer's evaluation computed on its first batches, kept by a second forward
  hook (see ``check_batches``); only the average's forward passes are the check's own. A checkpoint saved
  between two evaluations holds that average in its own ``metalr_iterate_average.safetensors``
  (written by the main process; see ``checkpoint_files``), which a resume reads back.
- **Schedule:** when the Trainer's schedule decays the LR by itself (``scheduler_binding.schedule_anneals``:
  ``linear``, ``cosine``, ...), read at train begin and logged, the controller's gate cuts only on
  an overshoot or a run that moved far without progress (losing ground, or stuck above the user's LR),
  not to anneal
  (see ``controller.gate.direction_verdict``).
- **Decisions:** one at every evaluation during training of the monitored metric, except an
  evaluation with no optimizer step since the last decision (``eval_on_start``, also on a resume),
  which has no step to judge: the LR stays, and the early-divergence guard goes on reading the
  first steps. With a dict of eval datasets, each is a log of its own; the monitored one decides, and a step whose datasets all
  lack the monitored key is refused once they have all been evaluated (a warning when that was
  the run's last evaluation).
- **Traced:** one JSON line per decision in ``<output_dir>/metalr_trace.jsonl``, written by the
  world's main process only.
- **Saved:** the whole controller state (policy, meta-optimizer, run history, decision index that
  seeds the RNG) and the training losses seen since the last decision ride in every checkpoint's
  ``trainer_state.json`` as an ``ExportableState`` (written by the main process, so with several
  processes those pending losses are the main process's own; the mean over the processes, which a
  resume must go on from, is then written after it by the main process into the checkpoint's
  ``metalr_train_losses.json``, and read back instead: ``on_save`` averages them with a collective,
  so every process must save together, as the Trainer does),
  and is restored on ``resume_from_checkpoint`` whether or not
  ``restore_callback_states_from_checkpoint`` is set. The scale itself also lives in the
  scheduler's ``base_lrs`` and so in ``scheduler.pt``.
- **Ranks:** every rank computes the same decision from the same gathered metrics and the same
  per-step training losses (averaged across ranks); rank 0's LR scale is broadcast anyway, so all
  ranks apply the identical LR. Should the ranks disagree on starting the run over, every rank goes
  on with rank 0's weights and controller state (a warning); a resumed run keeps the start weights
  only if every rank could read them.
- At the end of training the main process writes the (online-learned) policy to
  ``<output_dir>/metalr_policy.safetensors`` + ``.json``. Each ``train()`` starts from the configured
  policy, so repeated runs (``model_init``, ``hyperparameter_search``) are independent.
- **One controller per Trainer:** a second ``MetaLRCallback`` on the same Trainer, whoever added it,
  is an error at train begin.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.trainer_callback import CallbackHandler, ExportableState

from ..checks import real_number
from ..controller.controller import MetaLRController, check_options, is_early_distance_cut, resolve_policy
from ..controller.early_guard import EARLY_SPIKE
from ..controller.gate import lr_over_distance_in_words
from ..controller.direction import greater_is_better_by_name
from ..controller.policy import PolicyNetwork, save_policy
from .callback_handler import calling_handler, move_to_front
from .check_batches import EvalBatchCapture, first_batches
from .checkpoint_files import (checkpoint_folder, checkpoint_folders, restore_iterate_average, restore_start_weights,
                               shared_train_losses, write_iterate_average, write_start_weights, write_train_losses)
from ..controller.scheduler_binding import reference_lr, schedule_anneals
from ..controller.start_weights import clear_optimizer_state
from ..controller.warmup_replay import REPLAYED
from .lr_binding import apply_scale, check_scheduler_supported, check_training_args, ignored_warmup, unwrap_scheduler
from .trace import TRACE_NAME, TraceWriter
from .train_losses import TrainLossTap, collective_device, world_size
from .watched_parameters import AVERAGE_ITERATES_AUTO_MAX, average_iterates, watchable, watched_parameters

__all__ = ["MetaLRCallback"]

_STARTS_OVER = ("; the weights go back to where the run started, and the optimizer's state is cleared: the run starts "
                "over at the cut LR")

logger = logging.getLogger(__name__)


_START_OVER_WARNINGS = {  # the warning's words for a decision's ``start_over`` (``controller.START_OVER_REASONS``)
    "diverged": "the run is wrecked (the metric is not finite)",
    "long plateau": "the run is on a long plateau (the metric still at its first evaluation's level, the weights no "
                    "longer moving and the LR far past the distance estimate)",
    "wrecked": "the run is wrecked (a cut with the steps too long by both of the distance check's measures and the "
               "metric still at its first evaluation's level)",
}


def _starts_over_words(replays_warmup) -> str:
    """The end of a start-over's warning, with its warmup played again when it replays one."""
    return _STARTS_OVER + (REPLAYED if replays_warmup else "")


_NON_METRIC_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


class MetaLRCallback(TrainerCallback, ExportableState):
    """Drive the Trainer's learning rate with a (meta-)learned RL controller.

    Args:
        metric: metric to monitor; defaults to ``args.metric_for_best_model``, else ``eval_loss``.
            The ``eval_`` prefix is added when missing, as the Trainer does.
        greater_is_better: defaults to ``args.greater_is_better`` for ``metric_for_best_model`` when it
            was set explicitly, else inferred from the name (``controller.direction``: lower is better
            for losses, error rates, perplexity, regression errors and bits per character, greater
            otherwise). The direction in use is in every trace line and logged at train begin; on a
            resume the checkpoint's is kept (with a warning if this one's differs).
        policy: ``"default"`` for the shipped meta-trained policy, ``"random"`` for a fresh seeded
            policy (it learns online only), or the path of a saved policy.
        seed: seed of the policy init, the action sampling and the gradient sketch; defaults to ``args.seed``.
        min_lr, max_lr: bounds of the controller's LR; default to 1e-3x and 100x the initial LR.
        learn_online: update the policy at every evaluation (one-step actor-critic).
        meta_lr: learning rate of the meta-learner's Adam.
        greedy: take the most likely action instead of sampling one; defaults to True for a
            trained policy (``"default"`` or a file) and False for ``"random"``, which must explore.
        gate: hold the policy to the gradient-alignment evidence (raise only when the LR is
            measurably too low, cut only on measured overshoot with a worse metric, or on a clear
            one, which halves the LR even when the policy asks to keep it); see
            ``MetaLRController``. Its safeguards come with it: ``False`` also turns off that fixed
            cut, the undo of a punished raise or cut, the first-evaluation bars and the early-divergence
            guard.
        average_iterates: with the gate, keep the average of the iterates since the last evaluation
            (one float32 copy of the trainable weights, on their device) and, at each evaluation,
            compare its validation loss with the current weights' on up to
            ``check_batches.AVERAGE_CHECK_BATCHES`` batches of the evaluation (the current weights'
            losses as the Trainer's evaluation computed them, the average's by one more forward
            pass each, over the ``check_batches.FIRST_CHECK_BATCHES`` that carry the most of the
            current loss and the others only when those come near the bar; summed across
            processes). An
            average clearly better (``iterate_average_gain >= AVERAGE_GAIN``) means the steps bounce
            around a valley floor: a cut goes through, a keep or a raise becomes a halving.
            Off with sharded parameters, like the gradient alignment. None (the default): on up to
            ``AVERAGE_ITERATES_AUTO_MAX`` trainable parameters (a 2 GB copy), off above with one
            warning; True or False: on or off whatever the size.
    """

    def __init__(
        self,
        metric: str | None = None,
        greater_is_better: bool | None = None,
        policy: str = "default",
        seed: int | None = None,
        min_lr: float | None = None,
        max_lr: float | None = None,
        learn_online: bool = True,
        meta_lr: float = 1e-4,
        greedy: bool | None = None,
        gate: bool = True,
        average_iterates: bool | None = None,
    ):
        check_options(min_lr=min_lr, max_lr=max_lr, meta_lr=meta_lr, greedy=greedy, policy=policy, owner="MetaLRCallback",
                      text_policy=True, learn_online=learn_online, gate=gate, seed=seed, greater_is_better=greater_is_better)
        if not (average_iterates is None or isinstance(average_iterates, (bool, np.bool_))):
            raise ValueError(f"MetaLRCallback(average_iterates={average_iterates!r}): must be True, False or None (on up "
                             "to 500M trainable parameters)")
        if average_iterates and not gate:
            warnings.warn("MetaLRCallback(average_iterates=True, gate=False): the iterate-average check works through the "
                          "direction gate, so with the gate off it is off too", UserWarning, stacklevel=2)
        self._init_args = {
            "metric": metric,
            "greater_is_better": greater_is_better,
            "policy": str(policy),
            "seed": None if seed is None else int(seed),  # (a numpy int would not go into trainer_state.json)
            "min_lr": None if min_lr is None else float(min_lr),
            "max_lr": None if max_lr is None else float(max_lr),
            "learn_online": bool(learn_online),
            "meta_lr": float(meta_lr),
            "greedy": None if greedy is None else bool(greedy),
            "gate": bool(gate),
            "average_iterates": None if average_iterates is None else bool(average_iterates),
        }
        # A saved policy is read and checked now, so a bad file fails at construction.
        self._policy: PolicyNetwork | None = None if str(policy) == "random" else resolve_policy(str(policy), 0)
        self.controller: MetaLRController | None = None
        self.metric_key: str | None = None
        self._in_training = False
        self._trace: TraceWriter | None = None
        self._tap = TrainLossTap()
        self._eval_batches = EvalBatchCapture()  # the Trainer's first evaluation batches, for the iterate-average check
        self._logged_losses: list[float] = []  # the fallback when the tap sees no loss
        self._warned_no_step_losses = False
        self._step_losses_everywhere = False  # see _step_losses_on_every_rank
        self._skip_average_check = False  # a resume that could not find the interval's iterate average
        self._forget_evaluations()

    # -- ExportableState -------------------------------------------------------------------------
    def state(self) -> dict:
        controller_state = self.controller.state_dict() if self.controller is not None else None
        return {
            "args": dict(self._init_args),
            "attributes": {
                "controller_state": controller_state,
                "pending_train_losses": self._tap.pending(),
                # with several processes on_save writes their mean beside this state: a resume reads it from there
                "train_losses_file": world_size() > 1,
                "pending_logged_losses": list(self._logged_losses),
                "iterate_average_steps": self._average_steps(),
            },
        }

    # -- events ---------------------------------------------------------------------------------
    def on_init_end(self, args, state, control, lr_scheduler=None, **kwargs):
        self._check_lr_control(args, lr_scheduler)  # a scheduler passed in Trainer(optimizers=...) fails at once

    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        self._check_lr_control(args, None)  # again: a callback added with trainer.add_callback() missed on_init_end
        strategy = getattr(args.eval_strategy, "value", args.eval_strategy)
        if strategy == "no":
            raise ValueError(
                "MetaLRCallback decides the LR at each evaluation, but evaluation is switched off "
                "(eval_strategy='no'). Set eval_strategy='steps' with eval_steps=N, or eval_strategy='epoch' "
                "(--eval_strategy steps --eval_steps N on a script's command line), and pass an eval_dataset."
            )
        if optimizer is None:
            raise ValueError("MetaLRCallback needs the optimizer, which the Trainer passes at train begin")
        self._check_lr_control(None, lr_scheduler)
        handler = calling_handler(self)
        self._refuse_a_second_controller(handler)
        move_to_front(self, handler)  # ahead of the reporters, so that they log what on_log adds

        self.metric_key, greater_is_better = self._resolve_metric(args)
        a = self._init_args
        seed = args.seed if a["seed"] is None else a["seed"]
        initial_lr = reference_lr(optimizer)
        if len(optimizer.param_groups) > 1:  # say which group's LR the bounds were checked against
            check_options(min_lr=a["min_lr"], max_lr=a["max_lr"], initial_lr=initial_lr, owner="MetaLRCallback",
                          origins={"initial_lr": f"param group 0's, of {len(optimizer.param_groups)} groups; the "
                                                 "bounds apply to it, and the other groups keep their ratio to it"})
        self.controller = MetaLRController(
            initial_lr=initial_lr,
            policy=copy.deepcopy(self._policy) if self._policy is not None else "random",
            seed=seed,
            min_lr=a["min_lr"],
            max_lr=a["max_lr"],
            learn_online=a["learn_online"],
            meta_lr=a["meta_lr"],
            greater_is_better=greater_is_better,
            greedy=a["greedy"],  # None: greedy for a trained policy, sampling for "random" (the controller's rule)
            gate=a.get("gate", True),
        )
        self.controller.schedule_anneals = schedule_anneals(lr_scheduler, state.max_steps)
        self.controller.read_optimizer(optimizer)
        saved = self._saved_attributes(state)
        if model is not None and watchable(args):
            average = a.get("gate", True) and average_iterates(a.get("average_iterates"), model)
            saved_sketch = ((saved.get("controller_state") or {}).get("alignment") or {}) if state.global_step else {}
            params = watched_parameters(model, optimizer, saved_sketch)
            keep_start = sum(p.numel() for p in params) <= AVERAGE_ITERATES_AUTO_MAX
            if not keep_start and a.get("gate", True):
                logger.info("MetaLRCallback: more than %d trainable parameters, so the controller keeps no copy of the "
                            "weights the run starts from: a cut on a wrecked run only cuts the LR",
                            AVERAGE_ITERATES_AUTO_MAX)
            self.controller.watch(params, average_iterates=average, keep_start=keep_start)

        resuming = state.global_step > 0 and saved.get("controller_state") is not None
        folders = checkpoint_folders(args, state) if resuming else []
        pending = saved.get("pending_train_losses", [])
        if resuming and saved.get("train_losses_file"):
            pending = shared_train_losses(folders, state.global_step, pending)
        self._tap.restore(pending if resuming else [])
        self._logged_losses = list(saved.get("pending_logged_losses", [])) if resuming else []
        self._skip_average_check = False  # set below when this resume cannot find its interval's average
        if resuming:
            self.controller.load_state_dict(
                saved["controller_state"],
                source=f"the policy in the checkpoint's MetaLRCallback state (resumed with policy={a['policy']!r})",
            )
            kept = self.controller.tracker.greater_is_better
            if kept != greater_is_better:
                warnings.warn(
                    f"MetaLRCallback: the checkpoint's controller reads {self.metric_key!r} as "
                    f"{'greater' if kept else 'lower'} is better, and this run's settings say "
                    f"{'greater' if greater_is_better else 'lower'}: the checkpoint's direction is kept, as its history "
                    "was recorded in it. Resume with the same greater_is_better, or start afresh to change it.",
                    UserWarning, stacklevel=2)
            if self.controller.iterate_average is not None:
                if "iterate_average" not in saved["controller_state"]:  # a checkpoint from before the controller kept it
                    self.controller.iterate_average.last_loss = saved.get("iterate_average_last_loss")
                if saved.get("iterate_average_steps", 0):
                    self._restore_iterate_average(folders, state, int(saved["iterate_average_steps"]))
            if self.controller.start_weights is not None and saved["controller_state"].get("start_weights_kept"):
                restore_start_weights(self.controller.start_weights, folders, global_step=state.global_step)
                self.controller.start_weights_expected = False  # restored, or the restore has warned
                self._keep_the_start_only_where_every_rank_does()  # (a rank that could not read the file)
        elif state.global_step > 0:
            logger.info("MetaLRCallback: the checkpoint at step %d holds no MetaLRCallback state (it was made without "
                        "the callback); the controller starts fresh from this step", state.global_step)
        logger.info("MetaLRCallback: monitoring %s, %s is better", self.metric_key,
                    "greater" if self.controller.tracker.greater_is_better else "lower")
        if state.is_world_process_zero and state.global_step == 0 and (ignored := ignored_warmup(args, lr_scheduler)):
            warnings.warn(ignored, UserWarning, stacklevel=2)
        if state.is_world_process_zero and not _decisions_before_the_end(args, state):
            warnings.warn(
                f"MetaLRCallback: no evaluation comes before the run's last step ({state.max_steps}; "
                f"eval_strategy={strategy!r}" + (f", eval_steps={state.eval_steps}" if strategy == "steps" else "")
                + "), so no decision can change the LR of any step: the run trains at the LR it has. "
                "Evaluate more often (eval_steps below max_steps, or eval_strategy='steps' for a run of one epoch), or "
                "train longer.", UserWarning, stacklevel=2)
        if self.controller.schedule_anneals and self.controller.gate and self.controller.alignment is not None:
            logger.info("MetaLRCallback: the schedule decays the LR by itself, so the controller cuts only on an "
                        "overshoot or a run that moved far without progress (not to anneal: no cut for a bounce "
                        "around a valley floor)")
        if not isinstance((state.stateful_callbacks or {}).get(type(self).__name__), dict):
            state.stateful_callbacks = {**(state.stateful_callbacks or {}), type(self).__name__: self.state()}
        if model is not None:
            self._tap.attach(model)
            if self.controller.iterate_average is not None:
                self._eval_batches.attach(model, counts_across_processes=getattr(args, "average_tokens_across_devices",
                                                                                  True))
                self._eval_batches.arm()  # an evaluation before the first step (eval_on_start)
        self._trace = TraceWriter(Path(args.output_dir) / TRACE_NAME) if state.is_world_process_zero else None
        if self._trace is not None:
            self._trace.start(resume_step=state.global_step if resuming else None)
        self._bind_the_lr(optimizer, lr_scheduler)
        self._forget_evaluations()
        self._in_training = True

    def on_step_begin(self, args, state, control, **kwargs):
        if self._in_training:
            self._refuse_an_unmonitored_evaluation()

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if self._in_training:
            self.controller.before_optimizer_step(schedule_factor=self.controller.schedule_factor(optimizer))

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if self._in_training:  # (a step a GradScaler skipped: the Trainer does not step the schedule either)
            self.controller.after_optimizer_step(step_skipped=bool(getattr(optimizer, "step_was_skipped", False)))
            self._stepped = True

    def on_step_end(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        if not self._in_training:
            return
        self._tap.end_step()
        if optimizer is not None and self.controller.warmup.position is not None:  # (only a replay changes it)
            self._log_the_replayed_lr(optimizer, lr_scheduler)
        if self.controller.iterate_average is not None:
            self._eval_batches.arm()
        if self.controller.guards_early_divergence and self._step_losses_on_every_rank():
            self._feed_the_early_guard(state, optimizer, lr_scheduler)

    def _bind_the_lr(self, optimizer, lr_scheduler) -> list[float]:
        """Write the controller's scale into the optimizer and its scheduler (``apply_scale``); returns
        the LRs the next step takes (``_log_the_replayed_lr``)."""
        apply_scale(optimizer, lr_scheduler, self.controller.scale)
        return self._log_the_replayed_lr(optimizer, lr_scheduler)

    def _log_the_replayed_lr(self, optimizer, lr_scheduler) -> list[float]:
        """The LRs the next step takes. While a start-over plays the warmup again, the optimizer holds
        the schedule's LR between steps and each step takes it times the replay's multiplier: the
        scheduler's last LR, which the Trainer logs as ``learning_rate``, is set to the LRs the next
        step takes."""
        lrs = self.controller.lrs_of_the_next_step(optimizer)
        scheduler = unwrap_scheduler(lr_scheduler)
        if self.controller.warmup.position is not None and hasattr(scheduler, "_last_lr"):
            scheduler._last_lr = list(lrs)
        return lrs

    def on_log(self, args, state, control, logs=None, optimizer=None, lr_scheduler=None, **kwargs):
        if not self._in_training or not logs:
            return
        if "loss" in logs:
            self._logged_losses.append(logs["loss"])
        if not any(k.startswith("eval_") for k in logs):
            return
        if control is not None and control.should_evaluate:  # the first log of the Trainer's own evaluation at this
            # step (the handler clears the flag after each dataset's evaluation): the step whose datasets are checked
            self._scheduled_at = state.global_step
        if self.metric_key not in logs:
            self._check_missing_metric(logs, state.global_step)
            if self.controller.iterate_average is not None:  # another eval dataset's: the check reads the monitored one's
                self._eval_batches.arm()
            return
        self._monitored_at = state.global_step
        try:
            value = real_number(logs[self.metric_key], f"MetaLRCallback: the monitored metric {self.metric_key!r}")
        except TypeError as exc:
            raise TypeError(f"{exc}. Make compute_metrics return a number for this key, or pass "
                            "MetaLRCallback(metric=...) to monitor another one.") from None
        if not self._stepped:  # eval_on_start, also on a resume: no step since the last decision to judge
            self._eval_batches.release()  # armed again at the next step's end
            logger.info("MetaLRCallback: the evaluation at step %d comes with no optimizer step since the last decision "
                        "(eval_on_start, say) and is not a decision; the LR stays as it is", state.global_step)
            return
        self._stepped = False
        progress = state.global_step / state.max_steps if state.max_steps else 0.0
        self._hand_over_train_losses()
        check, current = None, None
        if self.controller.iterate_average is not None:
            self._eval_batches.disarm()
            model = kwargs.get("model")
            ready = not self._skip_average_check and model is not None and self.controller.measures_iterate_average()
            # the check's all-reduces run on every rank or on none
            kept = _on_every_rank(ready and self._eval_batches.captured > 0)  # the Trainer's evaluation gave its losses
            if not kept and _on_every_rank(ready and kwargs.get("eval_dataloader") is not None):
                # none to keep (the labels popped for the loss, DataParallel's replicas): the same first batches, built here
                self._eval_batches.keep(model, first_batches(kwargs["eval_dataloader"]))
                kept = True
            if kept:
                current = self._eval_batches.current_loss(next(model.parameters()).device)
                check = partial(self._eval_batches.replayed_loss, model)
            self._skip_average_check = False
        try:
            decision = self.controller.observe(value, progress=progress, validation_loss=check, current_loss=current,
                                               stepped=True)  # the callback leaves out evaluations without a step
        finally:
            self._eval_batches.release()  # the kept eval batches are not needed past the decision
        self._agree_across_ranks()
        if self.controller.start_weights is not None:  # (the same on every rank: one model)
            self._agree_on_the_start(bool(decision.rewound), optimizer)
        lrs = self._bind_the_lr(optimizer, lr_scheduler)
        if decision.rewound and state.is_world_process_zero:
            # under a replayed warmup the next step takes the warmup's first LR (0 under the Trainer's own): the
            # warning names the controller's LR, which the warmup rises to again (as the early cuts' warnings do)
            cut_lr = self.controller.lr if self.controller.replays_a_warmup else lrs[0]
            logger.warning("MetaLRCallback: at step %d %s: the LR is cut to %.3g (scale %.3g)%s",
                           state.global_step, _START_OVER_WARNINGS[decision.start_over],
                           cut_lr, self.controller.scale, _starts_over_words(self.controller.replays_a_warmup))

        published = {
            "metalr/lr": lrs[0],
            "metalr/scale": self.controller.scale,
            "metalr/action": decision.multiplier,
            "metalr/applied": decision.applied,
        }
        if decision.reward is not None:
            published["metalr/reward"] = decision.reward
        if decision.features is not None and self.controller.alignment is not None:
            published["metalr/grad_alignment"] = decision.features["grad_alignment"]
            published["metalr/grad_alignment_t"] = decision.features["grad_alignment_t"]
            published["metalr/param_drift"] = decision.features["param_drift"]
            if "lr_over_distance" in decision.features:
                published["metalr/lr_over_distance"] = decision.features["lr_over_distance"]
        if decision.features is not None and "iterate_average_gain" in decision.features:
            published["metalr/iterate_average_gain"] = decision.features["iterate_average_gain"]
        logs.update(published)
        if state.log_history:
            state.log_history[-1].update(published)
        if self._trace is not None:
            self._trace.append(
                {
                    "global_step": state.global_step,
                    "epoch": state.epoch,
                    "metric": self.metric_key,
                    "greater_is_better": self.controller.tracker.greater_is_better,
                    "value": value,
                    "action": decision.multiplier,
                    "applied": decision.applied,
                    "gate": decision.gate,
                    "evidence": decision.evidence,
                    "rule": decision.rule,
                    "action_index": decision.action_index,
                    "by_policy": decision.by_policy,
                    "reward": decision.reward,
                    "lr": lrs[0],
                    "lrs": lrs,
                    "initial_lr": self.controller.initial_lr,
                    "scale": self.controller.scale,
                    "lr_scale": self.controller.scale,  # the same as "scale", kept for readers of older traces
                    "learned": decision.learned,
                    "diverged": decision.diverged,
                    "rewound": decision.rewound,
                    "start_over": decision.start_over,
                    "features": decision.features,
                    "early_cuts": self.controller.early_cuts if decision.index == 0 else [],
                }
            )

    def on_save(self, args, state, control, **kwargs):
        if not self._in_training:
            return
        folder = checkpoint_folder(args, state)
        if world_size() > 1:  # every process is here (the Trainer saves on all together): share()'s collective is safe
            losses = self._tap.share()
            if args.should_save and folder.is_dir():  # written at every save, empty too: never another run's left over
                write_train_losses(folder, state.global_step, losses)
        average = self.controller.iterate_average
        if args.should_save and average is not None and average.steps and folder.is_dir():
            write_iterate_average(folder, average, state.global_step)
        start = self.controller.start_weights
        if args.should_save and start is not None and start.kept and folder.is_dir():
            write_start_weights(folder, start, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        was_training, self._in_training = self._in_training, False
        self._tap.detach()
        self._eval_batches.detach()
        if state.is_world_process_zero and self.controller is not None:
            save_policy(self.controller.policy, Path(args.output_dir) / "metalr_policy")
        if was_training:  # the last evaluation step's datasets, when none returned the monitored key
            self._refuse_an_unmonitored_evaluation(at_train_end=True)

    # -- helpers --------------------------------------------------------------------------------
    def _check_lr_control(self, args, lr_scheduler) -> None:
        """Refuse LR control that fights the controller (``lr_binding``); the fix named for a callback
        the launcher added is to run the script without the launcher."""
        try:
            if args is not None:
                check_training_args(args)
            check_scheduler_supported(lr_scheduler)
        except ValueError as err:
            if not getattr(self, "_added_by_launcher", False):
                raise
            raise ValueError(f"{err} Here the launcher (hf-metalr run, hf_metalr.launch) added the callback: to keep "
                             "the script's scheduler, run the script without the launcher.") from None

    def _how_to_choose_the_metric(self) -> str:
        if getattr(self, "_added_by_launcher", False):
            return "Pass --metalr_metric NAME (or HF_METALR_METRIC=NAME) to the launcher, or set the script's metric_for_best_model"
        return ("Pass MetaLRCallback(metric=...) or set metric_for_best_model (in the bundled recipes: --metalr_metric NAME "
                "or --metric_for_best_model NAME)")

    def _resolve_metric(self, args) -> tuple[str, bool]:
        """The monitored key and its direction. ``args.greater_is_better`` counts only when it differs
        from the Trainer's own guess (``not name.endswith('loss')``), which it fills in when unset."""
        metric = self._init_args["metric"] or args.metric_for_best_model or "eval_loss"
        key = metric if metric.startswith("eval_") else f"eval_{metric}"
        greater = self._init_args["greater_is_better"]
        if greater is None:
            greater = greater_is_better_by_name(key)
            best = args.metric_for_best_model
            if best is not None and key in (best, f"eval_{best}") and args.greater_is_better is not None:
                if bool(args.greater_is_better) != (not best.endswith("loss")):
                    greater = bool(args.greater_is_better)
                elif bool(args.greater_is_better) != greater:
                    warnings.warn(
                        f"MetaLRCallback takes {key!r} as {'greater' if greater else 'lower'} is better, by its name, "
                        f"while TrainingArguments(greater_is_better={args.greater_is_better}) says otherwise (the "
                        "Trainer's guess for a name that does not end in 'loss'). Set greater_is_better in "
                        "TrainingArguments so that the best-model tracking agrees, or pass "
                        "MetaLRCallback(greater_is_better=...) to override.",
                        UserWarning,
                        stacklevel=3,
                    )
        return key, greater

    def _forget_evaluations(self) -> None:
        """What the evaluations of the last step said, for each train() afresh."""
        self._scheduled_at: int | None = None  # the step of the Trainer's own last evaluation (not a user's extra one)
        self._monitored_at: int | None = None  # the step of the last evaluation that returned the monitored key
        # (step, keys) of that step's evaluations without it (a dict of eval datasets): see _refuse_an_unmonitored_evaluation
        self._other_evaluations: tuple[int, list[str]] | None = None
        self._stepped = False  # an optimizer step since the last decision (or since train begin)

    def _check_missing_metric(self, logs: dict, step: int) -> None:
        """In the Trainer's own evaluation, refuse a log without the monitored key when it is the one
        eval dataset's; when it is one dataset's of a dict, remember its keys, for
        ``_refuse_an_unmonitored_evaluation`` once every dataset of the step has been evaluated. Another
        evaluation (``trainer.evaluate(metric_key_prefix=...)`` from a callback) is not the controller's."""
        if step != self._scheduled_at:
            return
        runtime_keys = [k for k in logs if k.endswith("_runtime")]
        prefix = runtime_keys[0][: -len("runtime")] if runtime_keys else "eval_"
        available = sorted(k for k in logs if k.startswith("eval_") and not k.endswith(_NON_METRIC_SUFFIXES))
        if prefix == "eval_":  # the one eval dataset's evaluation
            raise ValueError(
                f"MetaLRCallback monitors {self.metric_key!r}, but the evaluation returned no such key. "
                f"Available: {available}. {self._how_to_choose_the_metric()} to one of them."
            )
        earlier = self._other_evaluations[1] if self._other_evaluations and self._other_evaluations[0] == step else []
        self._other_evaluations = (step, sorted(set(earlier) | set(available)))

    def _refuse_an_unmonitored_evaluation(self, *, at_train_end: bool = False) -> None:
        """After an evaluation step (at the next step's begin, or at train end): when its eval datasets
        (a dict of them) were all evaluated and none returned the monitored key, a ValueError that lists
        the keys they did return. Each dataset's evaluation is a log of its own, so only then is the
        key known to be missing. At train end the run is over, and raising would only skip the other
        callbacks' ``on_train_end`` (the reporters' finish) and the script's saving: a warning instead."""
        other, self._other_evaluations = self._other_evaluations, None
        if other is None or other[0] == self._monitored_at:
            return
        how = self._how_to_choose_the_metric()
        problem = (f"MetaLRCallback monitors {self.metric_key!r}, but none of the eval datasets returned it at step "
                   f"{other[0]}. Available: {other[1]}. With a dict of eval datasets the Trainer names each one's "
                   f"metrics eval_<name>_<metric>: {how[0].lower()}{how[1:]} to one of them.")
        if not at_train_end:
            raise ValueError(problem)
        warnings.warn(f"{problem} That evaluation made no decision.", RuntimeWarning, stacklevel=3)

    def _hand_over_train_losses(self) -> None:
        """Give the controller the training losses since the last decision: every step's from the
        tap, or else the logged means (which show the trend but not the step-to-step noise)."""
        steps = self._tap.take()
        if steps:
            self.controller.observe_train_losses(steps)
        elif not self._step_losses_on_every_rank():  # (with step losses, the guard took them all before the first
            # decision)
            for loss in self._logged_losses:
                self.controller.observe_train_losses([loss])
            if not self._warned_no_step_losses:
                self._warned_no_step_losses = True
                warnings.warn(
                    "MetaLRCallback: the model's training outputs carry no 'loss' (a custom compute_loss?), on this "
                    "process or another, so the "
                    "controller sees only the logged training losses: its train_loss_noise feature reads 0, and the "
                    "early-divergence guard, which reads every step's loss before the first evaluation, is off. Return "
                    "the loss from the model's forward (as transformers models do when given labels) to give the "
                    "policy what it was trained with.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        self._logged_losses = []

    def _step_losses_on_every_rank(self) -> bool:
        """Whether the tap has seen a training loss on every process: agreed by one small all-reduce
        per call until it holds (then never again), so every rank joins the tap's collectives, or
        falls back to the logged losses, together; with one process, the tap's own ``seen_any``."""
        if not self._step_losses_everywhere:
            self._step_losses_everywhere = _on_every_rank(self._tap.seen_any)
        return self._step_losses_everywhere

    def _feed_the_early_guard(self, state, optimizer, lr_scheduler) -> None:
        """Before the first decision, hand each step's loss (averaged across processes, so every
        rank cuts alike; rank 0's scale is broadcast after a cut anyway) to the controller's
        early-divergence guard at once, and apply a cut."""
        cut = False
        for loss in self._tap.take():
            cut = self.controller.observe_train_loss(loss) or cut
        if _on_every_rank(not cut):  # no process cut (agreed: the distance check reads each rank's own sketch)
            return
        self._agree_across_ranks()
        self._agree_on_the_start(cut and bool(self.controller.early_cuts[-1].get("rewound")), optimizer)
        self._bind_the_lr(optimizer, lr_scheduler)
        if state.is_world_process_zero and cut:
            last = self.controller.early_cuts[-1]
            ending = _starts_over_words(last.get("replays_warmup")) if last.get("rewound") else ""
            if is_early_distance_cut(last):
                logger.warning("MetaLRCallback: at step %d, before the first evaluation, the parameters have moved by "
                               "%.2f of their starting norm and %s (D-adaptation's, as Prodigy reads it): the steps are "
                               "too long, and the LR is cut to %.3g (scale %.3g)%s", state.global_step, last["param_drift"],
                               lr_over_distance_in_words(last["lr_over_distance"]), last["lr"], last["scale"], ending)
                return
            logger.warning("MetaLRCallback: at step %d, before the first evaluation, the training loss climbed to %s, above "
                           "%g x every loss before it (at most %.4g): the LR is far too high, and is cut to %.3g (scale %.3g)%s",
                           state.global_step, last["loss"], EARLY_SPIKE, last["reference"], last["lr"], last["scale"], ending)

    def _average_steps(self) -> int:
        average = self.controller.iterate_average if self.controller is not None else None
        return average.steps if average is not None else 0

    def _restore_iterate_average(self, candidates: list[Path], state, steps: int) -> None:
        """Load the iterate average of the interval in progress (``steps`` optimizer steps, as the
        checkpoint's state says) from the first of ``candidates`` that holds it (see
        ``checkpoint_files.restore_iterate_average``); when none does, skip the check at the next
        evaluation."""
        if not restore_iterate_average(self.controller.iterate_average, candidates, steps=steps,
                                       global_step=state.global_step):
            self._skip_average_check = True

    def _saved_attributes(self, state) -> dict:
        entry = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(entry, list):
            entry = entry[0] if entry else None
        if not isinstance(entry, dict):
            return {}
        return entry.get("attributes") or {}

    def _agree_across_ranks(self) -> None:
        if world_size() > 1:
            import torch.distributed as dist

            shared = [self.controller.scale]
            dist.broadcast_object_list(shared, src=0)
            self.controller.scale = shared[0]

    def _agree_on_the_start(self, rewound: bool, optimizer) -> None:
        """With several processes, after this rank went back to the start weights (``rewound``) or
        not: every rank reads the same synchronised gradients on the same sketch and the same metric,
        so every rank goes back alike. Should they not have, every rank goes on as rank 0: its
        weights are broadcast, every rank's optimizer state is cleared, the other ranks take over its
        controller state (``MetaLRController.adopt_state``), every rank's iterate average starts its
        interval afresh, and the start weights stay kept only where every rank still keeps them (else
        every rank drops them), so that no rank trains other weights, or decides from another state,
        than the rest. Each time, every rank logs a warning."""
        if world_size() <= 1:
            return
        if _on_every_rank(rewound) or _on_every_rank(not rewound):
            return
        import torch.distributed as dist

        logger.warning("MetaLRCallback: the processes disagreed on going back to the start weights after a cut; "
                       "every rank goes on as rank 0: its weights and its controller state are broadcast, and the "
                       "optimizer's state is cleared")
        with torch.no_grad():
            for p in self.controller.alignment.params:
                dist.broadcast(p.data, src=0)
        clear_optimizer_state(optimizer)
        shared = [self.controller.state_dict() if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(shared, src=0)
        if dist.get_rank() == 0:
            self.controller.forget_interval()
        else:
            self.controller.adopt_state(shared[0], source="rank 0's controller state")
        self._keep_the_start_only_where_every_rank_does()

    def _keep_the_start_only_where_every_rank_does(self) -> None:
        """With several processes: unless every rank holds the start weights, every rank drops them, so
        that the ranks read the same distance bar and start over alike (one all-reduce)."""
        start_weights = self.controller.start_weights
        if world_size() > 1 and start_weights is not None and not _on_every_rank(start_weights.kept):
            start_weights.drop()
            self.controller.start_weights_expected = False
            self.controller.warmup.forget()

    def _refuse_a_second_controller(self, handler: CallbackHandler | None) -> None:
        others = [c for c in (handler.callbacks if handler else []) if isinstance(c, MetaLRCallback) and c is not self]
        if others:
            launcher = any(getattr(c, "_added_by_launcher", False) for c in [self, *others])
            raise ValueError(
                f"this Trainer has {len(others) + 1} MetaLRCallbacks: they would fight over one optimizer's LR. "
                + ("The launcher (hf_metalr.launch, hf-metalr run) added one, and the script adds its own: run the "
                   "script without the launcher, passing the settings to the script itself."
                   if launcher else
                   "Keep one: pass it in Trainer(callbacks=[...]) or add it with trainer.add_callback() once, and "
                   "call trainer.remove_callback(MetaLRCallback) before adding a replacement.")
            )


def _on_every_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on every process (one all-reduce with several, else ``flag``)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1 if flag else 0], device=collective_device(dist))
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def _decisions_before_the_end(args, state) -> bool:
    """Whether an evaluation (a decision) comes after the run's current step and before its last one,
    where the LR it decides still trains steps, by the Trainer's own rule (``DefaultFlowCallback``):
    with ``eval_strategy="steps"``, a multiple of ``eval_steps`` in between, not before ``eval_delay``;
    with ``"epoch"``, an epoch's end in between (epochs of ``max_steps / num_train_epochs`` steps),
    not before epoch ``eval_delay``."""
    strategy = getattr(args.eval_strategy, "value", args.eval_strategy)
    delay = float(getattr(args, "eval_delay", 0) or 0)
    if strategy == "steps":
        every = int(state.eval_steps or 0)
        if every < 1:
            return True  # the Trainer's own check refuses such a cadence
        next_evaluation = max((state.global_step // every + 1) * every, math.ceil(delay / every) * every)
        return next_evaluation < state.max_steps
    if strategy == "epoch":
        epochs = float(state.num_train_epochs or 0)
        if epochs <= 0 or state.max_steps <= 0:
            return True
        per_epoch = state.max_steps / epochs
        next_end = max(math.floor(state.global_step / per_epoch) + 1, math.ceil(delay))
        return next_end * per_epoch < state.max_steps - 0.5
    return True
