"""A tiny, real Trainer job for the tests: an MLP on scikit-learn's bundled digits (offline).

Importable (``make_trainer``) and runnable as a script, for the kill/resume and multi-process
tests. As a script it records the LR of every param group right before every optimizer step to
``<output_dir>/applied_lrs.rank<R>.jsonl``, and at the end the features the controller saw at each
decision to ``<output_dir>/features.rank<R>.json``, the early-divergence guard's state to
``early_guard.rank<R>.json``, and the controller's whole state with each parameter's sum and the
process group's size (1 without one) to ``state.rank<R>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_metalr import MetaLRCallback  # noqa: E402
from hf_metalr.integration.process_group import end_distributed  # noqa: E402


class DigitsDataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class TinyClassifier(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 10)

    def forward(self, x, labels=None):
        logits = self.head(self.body(x))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def digits_datasets(n_train: int = 600, n_eval: int = 200):
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    tr, ev = order[:n_train], order[n_train : n_train + n_eval]
    return DigitsDataset(x[tr], data.target[tr]), DigitsDataset(x[ev], data.target[ev])


def accuracy(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, -1) == labels).mean())}


class AppliedLRRecorder(TrainerCallback):
    """Appends the LR each param group holds right before each optimizer step."""

    def __init__(self, path):
        self.path = Path(path)

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        with self.path.open("a") as f:
            f.write(json.dumps({"step": state.global_step + 1, "lrs": [g["lr"] for g in optimizer.param_groups]}) + "\n")


class KillAfterSave(TrainerCallback):
    """SIGKILLs the process right after the checkpoint at ``step`` is complete."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class LossOutsideTheModel(Trainer):
    """A custom ``compute_loss``: the model is called without labels and the loss is computed
    here, so the model's outputs carry no ``loss`` for the callback's tap to read."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = nn.functional.cross_entropy(outputs["logits"], labels)
        return (loss, outputs) if return_outputs else loss


def make_trainer(output_dir, *, callbacks=(), two_groups=False, compute_metrics=accuracy, seed=0, trainer_class=Trainer,
                 **overrides):
    torch.manual_seed(seed)
    model = TinyClassifier()
    train, evals = digits_datasets()
    kwargs = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=32,
        per_device_eval_batch_size=100,
        learning_rate=3e-3,
        max_steps=40,
        eval_strategy="steps",
        eval_steps=5,
        logging_steps=5,
        save_strategy="no",
        lr_scheduler_type="constant",
        report_to="none",
        use_cpu=True,
        seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )
    kwargs.update(overrides)
    args = TrainingArguments(**kwargs)
    optimizers = (None, None)
    if two_groups:
        opt = torch.optim.AdamW(
            [{"params": model.body.parameters(), "lr": args.learning_rate},
             {"params": model.head.parameters(), "lr": args.learning_rate * 0.1}],
            lr=args.learning_rate,
        )
        optimizers = (opt, None)
    return trainer_class(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evals,
        compute_metrics=compute_metrics,
        callbacks=list(callbacks),
        optimizers=optimizers,
    )


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--output_dir", required=True)
    p.add_argument("--max_steps", type=int, default=40)
    p.add_argument("--save_steps", type=int, default=10)
    p.add_argument("--lr_scheduler_type", default="constant")
    p.add_argument("--warmup_steps", type=int, default=0)
    p.add_argument("--learning_rate", type=float, default=3e-3)
    p.add_argument("--metric", default=None)
    p.add_argument("--policy", default="random", help="random: the LR moves, which the tests need to see")
    p.add_argument("--kill_after_step", type=int, default=None)
    p.add_argument("--resume", default=None)
    p.add_argument("--restore_callback_states", action="store_true")
    p.add_argument("--no_gate", action="store_true", help="let the policy move the LR without direction evidence")
    p.add_argument("--loss_outside_the_model_on_rank", type=int, default=None,
                   help="on this rank compute the loss in the Trainer (LossOutsideTheModel), not in the model")
    p.add_argument("--never_start_over_on_rank", type=int, default=None,
                   help="on this rank the controller never goes back to its start weights (the ranks then disagree)")
    p.add_argument("--start_weights_unread_on_rank", type=int, default=None,
                   help="on this rank a resume does not read the checkpoint's start weights (as if the file were missing)")
    a = p.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if a.never_start_over_on_rank == rank:
        from hf_metalr import MetaLRController

        MetaLRController._start_over = lambda self, *, stacklevel: "no copy"
    if a.start_weights_unread_on_rank == rank:
        import hf_metalr.integration.callback as callback_module

        callback_module.restore_start_weights = lambda *args, **kwargs: False
    callbacks = [MetaLRCallback(metric=a.metric, policy=a.policy, gate=not a.no_gate), AppliedLRRecorder(out / f"applied_lrs.rank{rank}.jsonl")]
    if a.kill_after_step:
        callbacks.append(KillAfterSave(a.kill_after_step))
    trainer = make_trainer(
        out,
        callbacks=callbacks,
        max_steps=a.max_steps,
        save_strategy="steps",
        save_steps=a.save_steps,
        lr_scheduler_type=a.lr_scheduler_type,
        warmup_steps=a.warmup_steps,
        learning_rate=a.learning_rate,
        restore_callback_states_from_checkpoint=a.restore_callback_states,
        trainer_class=LossOutsideTheModel if a.loss_outside_the_model_on_rank == rank else Trainer,
    )
    trainer.train(resume_from_checkpoint=a.resume)
    # looked up after training: with restore_callback_states_from_checkpoint the Trainer swaps in a new instance
    metalr = next(c for c in trainer.callback_handler.callbacks if isinstance(c, MetaLRCallback))
    (out / f"features.rank{rank}.json").write_text(json.dumps([d["features"] for d in metalr.controller.history]))
    guard = {"early_guard": metalr.controller.early_guard.to_dict(), "early_cuts": metalr.controller.early_cuts}
    (out / f"early_guard.rank{rank}.json").write_text(json.dumps(guard))
    start_weights = metalr.controller.start_weights
    state = {"controller": metalr.controller.state_dict(), "start_weights_kept": bool(start_weights and start_weights.kept),
             "weights": [p.detach().double().sum().item() for p in trainer.model.parameters()],
             "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1}
    (out / f"state.rank{rank}.json").write_text(json.dumps(state))
    if torch.distributed.is_initialized():  # without this, gloo's threads sometimes abort the exit (SIGABRT)
        end_distributed()
        # and the interpreter's teardown, after it, once hung for good in rank 0 (gloo's threads; the other rank
        # had exited): everything is written, so leave without it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
