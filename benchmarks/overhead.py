"""Overhead of the controller, measured side by side in one run (``make bench``).

1. Per-decision controller time: median microseconds of ``MetaLRController.observe`` over many
   decisions, with online learning (the default) and without. Target: under 1 ms on CPU.
2. Per-step cost of the gradient-alignment signal (``before_step`` + ``after_step``) on a
   parameter list shaped like BERT-base (110M parameters, 199 tensors), against one plain
   in-place update of the same parameters (``p -= lr * grad``, the cheapest optimizer step there is).
3. Whole-run wall-clock ratio: the same small Trainer job with and without ``MetaLRCallback``
   (constant LR), run in interleaved pairs; the median of the per-pair ratios. Target: at most
   1.02. Two jobs: ``digits`` (a ~1 s run of 8 ms steps, where any fixed cost per step or per
   decision shows) and ``sentiment`` (a tiny BERT, ~3 s). On a shared machine two runs of the
   same job differ by up to 10%, more than the target, so:
4. each with-callback run also times the callback's own work directly: every
   ``MetaLRCallback`` event handler and the training-loss hook, summed.
   ``1 + callback time / (run time - callback time)`` is the whole-run ratio attributed to the callback, free of the run-to-run noise (it leaves out indirect costs such as
   a cache the callback evicts, which only the paired ratio sees).
5. that time split three ways: per optimizer step (the handlers that run at every step and the
   loss hook), per run (train begin and end: building the controller, saving the policy) and per
   decision (the rest: ``on_log`` with the controller's decision), and the ratio the first and the
   last give for a job of 25 ms steps with a decision every 100 steps,
   ``1 + per step / 25 ms + per decision / (100 x 25 ms)`` (the per-run part vanishes in a long run).
6. the share of the iterate-average check (``average_iterates``): each pair also runs the callback
   with it off, and the per-step and per-decision parts of both are printed side by side; and its
   per-step fold on BERT-base shapes against a plain SGD update.
7. the same measures on a job of a more usual shape, ``bert-small``: the sentiment data through a
   BERT of 4 layers, 128 wide (0.83M parameters in 73 tensors; steps of about 95 ms on one CPU
   thread, evaluation included), deciding once per epoch (63 optimizer steps), measured rather
   than extrapolated.
8. how many kept evaluation batches the check's replays read (it settles on 2 of 4, those with the
   largest share of the current loss, when the average's gain there is far below the bar), and, for the worst case, the callback's work
   with every replay reading all 4 (``SETTLED_GAIN`` set to minus infinity), run beside the others.

Nothing here is asserted; it prints the numbers for the README.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def per_decision_us(n: int, learn_online: bool) -> float:
    from hf_metalr import MetaLRController

    ctrl = MetaLRController(1e-3, seed=0, learn_online=learn_online)
    times = []
    for i in range(n):
        value = 2.0 / (1 + 0.05 * i) * (1.02 if i % 7 == 0 else 1.0)
        start = time.perf_counter()
        ctrl.observe(value, progress=i / n, train_loss=value)
        times.append(time.perf_counter() - start)
    return statistics.median(times[10:]) * 1e6


def bert_base_shapes() -> list[tuple[int, ...]]:
    """The parameter shapes of BERT-base (uncased) with its pooler: 109.5M parameters."""
    h, inter = 768, 3072
    shapes = [(30522, h), (512, h), (2, h), (h,), (h,)]
    for _ in range(12):
        shapes += [(h, h), (h,)] * 4 + [(h,), (h,), (inter, h), (inter,), (h, inter), (h,), (h,), (h,)]
    return shapes + [(h, h), (h,)]


def alignment_step_ms(repeats: int, device: str = "cpu") -> tuple[float, float, int, int]:
    """Median ms per step of the alignment signal and of a plain SGD update, on BERT-base shapes on
    ``device`` (on CUDA each timing starts and ends with a device synchronisation)."""
    from hf_metalr.controller.alignment import GradientAlignment

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter((torch.randn(s, generator=generator) * 0.02).to(device)) for s in bert_base_shapes()]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator).to(device)
    alignment = GradientAlignment(params)
    signal, update = [], []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        alignment.before_step()
        alignment.after_step()
        sync()
        signal.append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            torch._foreach_add_(params, [p.grad for p in params], alpha=-1e-9)
        sync()
        update.append(time.perf_counter() - start)
    return (statistics.median(signal[2:]) * 1e3, statistics.median(update[2:]) * 1e3,
            sum(p.numel() for p in params), alignment.coordinates)


def iterate_average_step_ms(repeats: int) -> tuple[float, float]:
    """Median ms per step of the iterate average's fold (``IterateAverage.after_step``) and of a
    plain SGD update, on BERT-base shapes."""
    from hf_metalr.controller.iterate_average import IterateAverage

    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=generator) * 0.02) for s in bert_base_shapes()]
    grads = [torch.randn(p.shape, generator=generator) for p in params]
    average = IterateAverage(params)
    fold, update = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        average.after_step()
        fold.append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-1e-9)
        update.append(time.perf_counter() - start)
    return statistics.median(fold[2:]) * 1e3, statistics.median(update[2:]) * 1e3


PER_STEP_HANDLERS = ("on_pre_optimizer_step", "on_optimizer_step", "on_step_begin", "on_step_end", "on_substep_end",
                     "loss hook")
PER_RUN_HANDLERS = ("on_train_begin", "on_train_end")
REPLAYED = "replayed batches"  # a count in the dict of seconds, left out of every sum of them
REFERENCE_STEP_MS, REFERENCE_STEPS_PER_DECISION = 25.0, 100


def bench_task(task_name: str):
    """An embedded task by name, or ``bert-small``: the sentiment task with a 4-layer, 128-wide BERT."""
    from hf_metalr.tasks import get_task

    if task_name != "bert-small":
        return get_task(task_name)
    from hf_metalr.tasks.sentiment import SentimentTask

    class BertSmallSentiment(SentimentTask):
        name = "bert-small"
        bert_sizes = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512}

    return BertSmallSentiment()


def _verdict(ratio: float) -> str:
    """Met, or over the target: the toy jobs' steps of 8-20 ms are expected over it (README, "Cost")."""
    return "met" if round(ratio, 3) <= 1.02 else "over"  # as printed


def one_run(with_callback: bool, epochs: int, evals_per_epoch: int,
            task_name: str = "digits", *, full_replay: bool = False,
            **callback_kwargs) -> tuple[float, int, int, dict[str, float]]:
    """One run: its wall seconds, the decisions made, the optimizer steps run, and the seconds spent
    in the callback's own work by handler (``"loss hook"``: the training-loss hook; also, not
    seconds, ``"replayed batches"``: the kept evaluation batches the check's replays read).
    ``full_replay``: every replay reads all the kept batches. ``callback_kwargs`` go to ``MetaLRCallback``."""
    from hf_metalr import MetaLRCallback
    from hf_metalr.compare.runner import build_trainer
    from hf_metalr.integration import check_batches

    task = bench_task(task_name)
    steps_per_epoch = -(-len(task.load().train) // task.batch_size)
    every = max(1, steps_per_epoch // evals_per_epoch)
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(task, "constant", 0, Path(out), epochs=epochs, eval_steps=every, logging_steps=every)
        callback = MetaLRCallback(**callback_kwargs) if with_callback else None
        spent: dict[str, float] = {}
        if callback:
            _time_callback(callback, spent)
            trainer.add_callback(callback)
        settled_gain = check_batches.SETTLED_GAIN
        if full_replay:
            check_batches.SETTLED_GAIN = float("-inf")
        start = time.perf_counter()
        try:
            trainer.train()
        finally:
            check_batches.SETTLED_GAIN = settled_gain
        elapsed = time.perf_counter() - start
        steps = trainer.state.global_step
    decisions = len(callback.controller.history) if callback else 0
    return elapsed, decisions, steps, spent


def _timed(function, spent: dict[str, float], name: str):
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
    return timed


def _time_callback(callback, spent: dict[str, float]) -> None:
    """Add the time of every event handler of ``callback`` and of its two forward hooks to ``spent``, by name."""
    from transformers import TrainerCallback

    for name in dir(TrainerCallback):
        if name.startswith("on_") and getattr(type(callback), name) is not getattr(TrainerCallback, name):
            setattr(callback, name, _timed(getattr(callback, name), spent, name))
    callback._tap._hook = _timed(callback._tap._hook, spent, "loss hook")  # registered on the model at train begin
    # the iterate-average check's hook, which keeps the Trainer's first evaluation batches (per decision)
    callback._eval_batches._hook = _timed(callback._eval_batches._hook, spent, "evaluation batches hook")
    replay = callback._eval_batches._replay

    def counted_replay(model, calls):
        spent[REPLAYED] = spent.get(REPLAYED, 0) + len(calls)
        return replay(model, calls)

    callback._eval_batches._replay = counted_replay


def split_cost(spent: dict[str, float], steps: int, decisions: int) -> tuple[float, float, float]:
    """The callback's work in one run as (ms per optimizer step, ms per run, ms per decision)."""
    spent = {name: value for name, value in spent.items() if name != REPLAYED}
    per_step = sum(seconds for name, seconds in spent.items() if name in PER_STEP_HANDLERS)
    per_run = sum(seconds for name, seconds in spent.items() if name in PER_RUN_HANDLERS)
    per_decision = sum(spent.values()) - per_step - per_run
    return per_step * 1e3 / max(steps, 1), per_run * 1e3, per_decision * 1e3 / max(decisions, 1)


def whole_run_ratio(task_name: str, epochs: int, evals_per_epoch: int, pairs: int) -> float:
    one_run(False, 1, evals_per_epoch, task_name)  # warm-up: imports, first allocations
    ratios, base_times, cb_times, attributed, per_step, per_run, per_decision = [], [], [], [], [], [], []
    without_check, replayed, replayed_full, attributed_full = [], [], [], []
    for pair in range(pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)
        times = {}
        for with_cb in order:
            times[with_cb], decisions, steps, spent = one_run(with_cb, epochs, evals_per_epoch, task_name)
            if with_cb:
                n_decisions = decisions
                replayed.append(spent.pop(REPLAYED, 0))
                work = sum(spent.values())
                attributed.append(1 + work / (times[True] - work))
                step_ms, run_ms, decision_ms = split_cost(spent, steps, decisions)
                per_step.append(step_ms)
                per_run.append(run_ms)
                per_decision.append(decision_ms)
        # the same callback without the iterate-average check, for its share of the work
        _, check_off_decisions, steps, spent = one_run(True, epochs, evals_per_epoch, task_name, average_iterates=False)
        step_ms, _, decision_ms = split_cost(spent, steps, check_off_decisions)
        without_check.append((step_ms, decision_ms))
        # and with every replay reading all its kept batches: the check's worst case
        elapsed, _, steps, spent = one_run(True, epochs, evals_per_epoch, task_name, full_replay=True)
        replayed_full.append(spent.pop(REPLAYED, 0))
        work = sum(spent.values())
        attributed_full.append(1 + work / (elapsed - work))
        ratios.append(times[True] / times[False])
        base_times.append(times[False])
        cb_times.append(times[True])
        print(f"  {task_name} pair {pair + 1}: without {times[False]:.2f}s, with {times[True]:.2f}s, ratio {ratios[-1]:.3f}")
    ratio = statistics.median(ratios)
    print(f"whole-run wall-clock ratio with/without MetaLRCallback ({task_name}, {epochs} epochs, {n_decisions} decisions, "
          f"median of {pairs} interleaved pairs): {ratio:.3f}  (target <= 1.02: {_verdict(ratio)}; without "
          f"{statistics.median(base_times):.2f}s, with {statistics.median(cb_times):.2f}s)", flush=True)
    print(f"whole-run ratio attributed to the callback's own work ({task_name}, median of {pairs} runs): "
          f"{statistics.median(attributed):.4f}  (target <= 1.02: {_verdict(statistics.median(attributed))}; runs "
          f"{min(attributed):.4f}-{max(attributed):.4f})",
          flush=True)
    step_ms, decision_ms = statistics.median(per_step), statistics.median(per_decision)
    reference = 1 + step_ms / REFERENCE_STEP_MS + decision_ms / (REFERENCE_STEPS_PER_DECISION * REFERENCE_STEP_MS)
    print(f"callback's work inside the {task_name} runs (median of {pairs}): {step_ms:.3f} ms per optimizer step, "
          f"{decision_ms:.2f} ms per decision, {statistics.median(per_run):.1f} ms per run (train begin and end); "
          f"for steps of {REFERENCE_STEP_MS:g} ms and a decision every "
          f"{REFERENCE_STEPS_PER_DECISION} steps that is a ratio of {reference:.4f}", flush=True)
    step_off = statistics.median(s for s, _ in without_check)
    decision_off = statistics.median(d for _, d in without_check)
    print(f"  of which the iterate-average check ({task_name}, the same runs with average_iterates=False: "
          f"{step_off:.3f} ms per optimizer step, {decision_off:.2f} ms per decision): "
          f"{step_ms - step_off:+.3f} ms per optimizer step, {decision_ms - decision_off:+.2f} ms per decision", flush=True)
    print(f"  the check's replays read {statistics.median(replayed):g} kept evaluation batches per run (median of "
          f"{pairs}; {statistics.median(replayed_full):g} when every replay reads all of them). Attributed ratio with "
          f"every replay reading all: {statistics.median(attributed_full):.4f} (runs {min(attributed_full):.4f}-"
          f"{max(attributed_full):.4f})", flush=True)
    return ratio


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decisions", type=int, default=500)
    p.add_argument("--pairs", type=int, default=6, help="interleaved pairs of digits runs")
    p.add_argument("--sentiment-pairs", type=int, default=5, help="interleaved pairs of sentiment runs (0: skip)")
    p.add_argument("--bert-small-pairs", type=int, default=3,
                   help="interleaved pairs of bert-small runs (2 epochs, a decision per epoch; 0: skip)")
    p.add_argument("--steps", type=int, default=50, help="optimizer steps timed for the alignment signal")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--evals-per-epoch", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: robust on a shared machine)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    learn = per_decision_us(a.decisions, True)
    frozen = per_decision_us(a.decisions, False)
    print(f"per-decision controller time (median of {a.decisions}): {learn:.0f} us with online learning, "
          f"{frozen:.0f} us frozen  (target < 1000 us)")

    signal_ms, update_ms, n_params, coordinates = alignment_step_ms(a.steps)
    print(f"gradient-alignment signal per optimizer step on BERT-base shapes ({n_params / 1e6:.1f}M parameters, "
          f"{coordinates} sketched coordinates, median of {a.steps}): {signal_ms:.3f} ms; one plain SGD update of the "
          f"same parameters: {update_ms:.1f} ms (ratio {signal_ms / update_ms:.3f})")

    fold_ms, update_ms = iterate_average_step_ms(min(a.steps, 20))
    print(f"iterate-average fold per optimizer step on BERT-base shapes (an in-place lerp of a float32 copy, "
          f"median of {min(a.steps, 20)}): {fold_ms:.1f} ms; one plain SGD update: {update_ms:.1f} ms "
          f"(ratio {fold_ms / update_ms:.2f})")

    for task_name, epochs, evals_per_epoch, pairs in (("digits", a.epochs, a.evals_per_epoch, a.pairs),
                                                      ("sentiment", 2, a.evals_per_epoch, a.sentiment_pairs),
                                                      ("bert-small", 2, 1, a.bert_small_pairs)):
        if pairs:
            whole_run_ratio(task_name, epochs, evals_per_epoch, pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
