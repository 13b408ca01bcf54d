"""GPU smoke check of the three recipes (``make gpu-smoke``): full-size models, synthetic data, bf16.

For each recipe (BERT-base / SST-2, ResNet-50 / CIFAR-10, wav2vec2-base / LibriSpeech) this runs the
recipe's own ``main`` in-process, on synthetic local files in the hub schema and a randomly
initialized full-size model (``--model_type``): short warm-up runs of both schedules (CUDA's and
cuDNN's start-up, and the build of the callback's sketch-read kernel),
then ``--pairs`` interleaved pairs of runs with ``--lr_schedule constant`` (no callback) and
``--lr_schedule metalr``, the order swapped every other pair. Shapes are the real ones: 128-token
sentences, images at 224 x 224 at the model's input (CIFAR's 32 x 32 pixels, resized by the recipe),
16 kHz audio clips of 5-15 s. Training is bounded (``--steps``) with an evaluation every
``--eval_every`` steps, each one a controller decision.

Reported per recipe: the wall-clock ratio per step with the callback over without (the median of
the pairs), and the callback's own work, timed around each of its event handlers: milliseconds per
optimizer step (the median call of each per-step handler, summed), per decision (``on_log``), the
one-off setup and teardown, and its share of the training time. Then the gradient-alignment signal
alone on BERT-base shapes on the GPU (ms per step, against a plain SGD update), and a check that the
same gradients give the same readings on the CPU and on the GPU. Checked: finite losses, the
expected number of decisions in the trace, CPU/GPU agreement. Results go to
``<out>/gpu_smoke.json``. The whole run must finish in ``--budget_s`` (8 minutes).

No network is needed (tokenizer and feature extractor are built locally). Without a CUDA GPU
that supports bf16 it stops at once with exit code 2.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import json
import math
import statistics
import string
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("sst2", "cifar10", "librispeech")


def require_gpu() -> str | None:
    """None when a bf16-capable CUDA GPU is usable, else the reason."""
    import torch

    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}, CUDA build {torch.version.cuda}"
        hint = " (this is a CPU-only torch build: install a CUDA one)" if torch.version.cuda is None else ""
        return f"no CUDA GPU visible ({build}){hint}"
    if not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name(0)} does not support bf16"
    return None


# -- synthetic data in the hub schema ------------------------------------------------------------
def sst2_data(root: Path, n_train: int, n_test: int, rng) -> list[str]:
    from transformers import BertTokenizer

    words = np.array([f"w{i}" for i in range(30522 - 5)])
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words.tolist()])}
    tokenizer = BertTokenizer(vocab=vocab)
    assert len(tokenizer) == 30522, len(tokenizer)
    tokenizer.save_pretrained(root / "tokenizer")

    def write(path, n):
        with open(path, "w") as f:
            for i in range(n):
                sentence = " ".join(rng.choice(words, 126))  # + [CLS] and [SEP] = 128 tokens
                f.write(json.dumps({"sentence": sentence, "label": int(rng.integers(2)), "idx": i}) + "\n")

    write(root / "train.jsonl", n_train)
    write(root / "test.jsonl", n_test)
    return [
        "--model_type", "bert", "--tokenizer_name", str(root / "tokenizer"),
        "--train_file", str(root / "train.jsonl"), "--test_file", str(root / "test.jsonl"),
        "--max_seq_length", "128", "--per_device_train_batch_size", "32", "--validation_split_size", "64",
    ]


def cifar10_data(root: Path, n_train: int, n_test: int, rng) -> list[str]:
    import pandas as pd

    def write(path, n):
        rows = [{"img": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8).tolist(), "label": int(rng.integers(10))} for _ in range(n)]
        pd.DataFrame(rows).to_parquet(path)

    write(root / "train.parquet", n_train)
    write(root / "test.parquet", n_test)
    return [
        "--model_type", "resnet", "--image_size", "224",
        "--train_file", str(root / "train.parquet"), "--test_file", str(root / "test.parquet"),
        "--per_device_train_batch_size", "32", "--validation_split_size", "64",
    ]


def librispeech_data(root: Path, n_train: int, n_test: int, rng) -> list[str]:
    import pandas as pd
    import soundfile as sf

    (root / "audio").mkdir(parents=True, exist_ok=True)
    letters = string.ascii_uppercase + "'"

    def write(path, n, offset):
        rows = []
        for i in range(n):
            seconds = float(rng.uniform(5, 15))
            clip = (0.1 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32)
            name = f"audio/{offset + i}.flac"
            sf.write(root / name, clip, 16_000)
            words = ["".join(rng.choice(list(letters), int(rng.integers(2, 9)))) for _ in range(int(seconds * 2.5))]
            rows.append({"audio": name, "text": " ".join(words), "speaker_id": 0, "id": str(offset + i)})
        pd.DataFrame(rows).to_csv(path, index=False)

    write(root / "train.csv", n_train, 0)
    write(root / "test.csv", n_test, n_train)
    return [
        "--model_type", "wav2vec2", "--train_file", str(root / "train.csv"), "--test_file", str(root / "test.csv"),
        "--per_device_train_batch_size", "8", "--max_duration_in_seconds", "16", "--validation_split_size", "16",
    ]


DATA = {"sst2": sst2_data, "cifar10": cifar10_data, "librispeech": librispeech_data}
SIZES = {"sst2": (512, 64), "cifar10": (512, 64), "librispeech": (80, 8)}


# -- callback timing -------------------------------------------------------------------------------
def _decision_parts():
    """The pieces of a decision timed apart, inside ``on_log``: (label, class, method name)."""
    from hf_metalr.controller.controller import MetaLRController
    from hf_metalr.controller.learner import ActorCriticLearner
    from hf_metalr.integration.check_batches import EvalBatchCapture

    return (
        ("observe", MetaLRController, "observe"),  # the whole decision, the pieces below included
        ("average_forwards", EvalBatchCapture, "replayed_loss"),  # the iterate average's loss on the kept batches
        ("online_update", ActorCriticLearner, "update"),
    )


class CallbackTimer:
    """Wraps every event handler of ``MetaLRCallback`` with a wall-clock timer, and the pieces of a
    decision (:func:`_decision_parts`) with timers of their own that do not add to ``seconds``."""

    def __init__(self):
        from hf_metalr.integration.callback import MetaLRCallback

        self.saved = []
        self.reset()
        for name, method in vars(MetaLRCallback).items():
            if name.startswith("on_") and callable(method):
                self._wrap(MetaLRCallback, name, name, method, handler=True)
        for label, cls, name in _decision_parts():
            self._wrap(cls, name, label, vars(cls)[name], handler=False)
        self.sketch_reads = SketchReadCounter()

    def _wrap(self, cls, name, label, method, *, handler: bool):
        self.saved.append((cls, name, method))

        @functools.wraps(method)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                if handler:
                    self.seconds += elapsed
                    self.durations.setdefault(label, []).append(elapsed)
                    self.calls[label] = self.calls.get(label, 0) + 1
                    self.per_event[label] = self.per_event.get(label, 0.0) + elapsed
                else:
                    self.parts[label] = self.parts.get(label, 0.0) + elapsed

        setattr(cls, name, timed)

    def reset(self):
        self.seconds, self.calls, self.per_event, self.durations, self.parts = 0.0, {}, {}, {}, {}
        if hasattr(self, "sketch_reads"):
            self.sketch_reads.reset()

    @property
    def reads(self) -> dict:
        return self.sketch_reads.reads

    @property
    def refusals(self) -> list:
        return self.sketch_reads.refusals

    def restore(self):
        for cls, name, method in self.saved:
            setattr(cls, name, method)
        self.sketch_reads.restore()


class SketchReadCounter:
    """Counts the alignment's sketch reads (``reads["all"]``) and those that took the one-launch
    kernel (``reads["kernel"]``; the start-up check's own launch is not a read), and keeps why the
    first few were refused it (``PointerGather.refusal``), until
    :meth:`restore`."""

    def __init__(self):
        from hf_metalr.controller.alignment import GradientAlignment
        from hf_metalr.controller.pointer_gather import PointerGather

        read, launch, accepts = GradientAlignment._read, PointerGather.__call__, PointerGather.accepts
        self.saved = [(GradientAlignment, "_read", read), (PointerGather, "__call__", launch),
                      (PointerGather, "accepts", accepts)]
        self.reset()
        counter, launches = self, [0]

        def counted_read(alignment, tensors, buffer):
            before = launches[0]
            try:
                return read(alignment, tensors, buffer)
            finally:
                counter.reads["all"] = counter.reads.get("all", 0) + 1
                counter.reads["kernel"] = counter.reads.get("kernel", 0) + (launches[0] > before)

        def counted_launch(gather, tensors, out):
            launches[0] += 1
            return launch(gather, tensors, out)

        def explained_accepts(gather, tensors):
            tensors = list(tensors)
            ok = accepts(gather, tensors)
            if not ok and len(counter.refusals) < 5:
                counter.refusals.append(gather.refusal(tensors))
            return ok

        GradientAlignment._read, PointerGather.__call__, PointerGather.accepts = counted_read, counted_launch, explained_accepts

    def reset(self):
        self.reads, self.refusals = {}, []

    def restore(self):
        for cls, name, method in self.saved:
            setattr(cls, name, method)


EXTRA: list[str] = []  # more recipe flags (a dry run on the CPU sets --use_cpu)
PER_STEP_EVENTS = ("on_step_begin", "on_pre_optimizer_step", "on_optimizer_step", "on_substep_end", "on_step_end")


def alignment_on_cuda(repeats: int = 50) -> dict:
    """The gradient-alignment signal on the GPU: its cost per optimizer step on BERT-base shapes
    (CUDA-synchronised medians, against a plain in-place SGD update of the same parameters), and
    whether the same gradients and updates give the same readings on the CPU and on the GPU (float32
    parameters), and through the GPU's one-launch read and its index_select read (mixed bfloat16,
    float32 and float16 parameters, the very same readings): :func:`_alignment_readings`."""
    import torch

    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    from overhead import alignment_step_ms

    signal_ms, update_ms, parameters, coordinates = alignment_step_ms(repeats, device="cuda")
    result = {"parameters": parameters, "coordinates": coordinates, "signal_ms_per_step": signal_ms,
              "plain_update_ms": update_ms}
    torch.cuda.empty_cache()

    # float32: the same readings on the CPU and on the GPU. Mixed dtypes: bfloat16 and float16 arithmetic
    # rounds differently on the two (the readings differed by 5e-4 on an H200), so the GPU's one-launch
    # read is compared with the GPU's index_select read instead, which must give the very same readings
    pairs = {"float32": ((torch.float32,) * 3, ("cpu", True), ("cuda", True)),
             "mixed": ((torch.bfloat16, torch.float32, torch.float16), ("cuda", False), ("cuda", True))}
    for label, (dtypes, reference, checked) in pairs.items():
        expected, kernel_used = _alignment_readings(*reference, dtypes)
        readings, kernel = _alignment_readings(*checked, dtypes)
        difference = max(abs(a - b) for a, b in zip(expected, readings))
        result[label] = {"reference": {"device": reference[0], "one_launch_read": kernel_used, "readings": expected},
                         "readings": readings, "one_launch_read": kernel, "max_difference": difference}
        if not all(math.isfinite(v) for v in readings) or difference > (1e-4 if label == "float32" else 0.0):
            raise RuntimeError(f"alignment readings ({label}) differ: {result[label]}")
        if not kernel:
            raise RuntimeError(f"the one-launch sketch read fell back to index_select ({label} parameters)")
    result["readings"] = {"cpu": result["float32"]["reference"]["readings"], "cuda": result["float32"]["readings"]}
    result["max_cpu_cuda_difference"] = result["float32"]["max_difference"]
    return result


def _alignment_readings(device: str, one_launch: bool, dtypes) -> tuple[list[float], bool]:
    """The alignment's readings (ratio, mean, t, drift) over 20 seeded SGD steps of three parameters of
    ``dtypes`` on ``device``, a gradient missing at every fourth step (which the GPU's one-launch read
    must read as zeros), and whether every one of the steps' sketch reads took the one-launch read
    (``one_launch=False``: none does)."""
    import torch

    from hf_metalr.controller.alignment import GradientAlignment

    generator = torch.Generator().manual_seed(1)
    small = [torch.nn.Parameter(torch.randn(shape, generator=generator).to(device, dtype))
             for shape, dtype in zip(((300, 200), (200,), (50, 300)), dtypes)]
    signal = GradientAlignment(small, sketch_size=1024)
    if not one_launch:
        signal._gather = None
    counter = SketchReadCounter()
    try:
        readings = _stepped_readings(signal, small, generator, device)
    finally:
        counter.restore()
    return readings, counter.reads.get("kernel", 0) == counter.reads.get("all", 0) > 0


def _stepped_readings(signal, small, generator, device) -> list[float]:
    """The 20 steps of :func:`_alignment_readings` and the readings they leave."""
    import torch

    for step in range(20):
        for p in small:
            p.grad = (torch.randn(p.shape, generator=generator) + 0.5 * p.detach().float().cpu()).to(device, p.dtype)
        if step % 4 == 3:
            small[0].grad = None  # a parameter without a gradient this step (LayerDrop): read as zeros
        signal.before_step()
        with torch.no_grad():
            for p in small:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-0.05)
        signal.after_step()
    window = signal.take()
    return [window.ratio, window.mean, window.t, signal.drift()]


def run_recipe(name: str, data_args: list[str], out: Path, schedule: str, steps: int, eval_every: int, timer: CallbackTimer,
               tag: str = "") -> dict:
    import torch

    if str(ROOT / "recipes") not in sys.path:
        sys.path.insert(0, str(ROOT / "recipes"))
    module = importlib.import_module(f"run_{name}")
    output_dir = out / f"{name}_{schedule}{tag}"
    argv = [
        *data_args,
        "--output_dir", str(output_dir), "--lr_schedule", schedule, "--bf16", "true",
        "--max_steps", str(steps), "--eval_strategy", "steps", "--eval_steps", str(eval_every),
        "--logging_steps", str(eval_every), "--save_strategy", "no", "--learning_rate", "1e-4",
        "--num_evaluations", str(steps // eval_every), "--max_eval_samples", "64", "--max_test_samples", "64",
        "--per_device_eval_batch_size", "16", "--dataloader_num_workers", "4", "--disable_tqdm", "true",
        "--report_to", "none", *EXTRA,
    ]
    timer.reset()
    metrics = module.main(argv)
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    losses = {k: v for k, v in metrics.items() if k.endswith("loss")}
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        raise RuntimeError(f"{name}/{schedule}: non-finite losses {bad}")
    result = {
        "steps_per_second": metrics["train_steps_per_second"],
        "train_runtime_s": metrics["train_runtime"],
        "losses": losses,
        "callback_s": timer.seconds,
        "callback_calls": dict(timer.calls),
        "callback_s_per_event": dict(timer.per_event),
        "decision_parts_s": dict(timer.parts),
        "sketch_reads": dict(timer.reads),  # "all", and "kernel": those that took the one-launch read
        "sketch_read_refusals": list(timer.refusals),
        # the median call of each per-step handler, summed: free of the one-off work of the first steps
        "callback_ms_per_step_median": 1000 * sum(statistics.median(timer.durations[n]) for n in PER_STEP_EVENTS if n in timer.durations),
    }
    if schedule == "metalr":
        trace = [json.loads(line) for line in (output_dir / "metalr_trace.jsonl").read_text().splitlines() if line.strip()]
        if len(trace) != steps // eval_every:
            raise RuntimeError(f"{name}: expected {steps // eval_every} decisions in the trace, found {len(trace)}")
        result["decisions"] = len(trace)
        result["lrs"] = [entry["lr"] for entry in trace]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/gpu_smoke", help="output folder (data, runs, gpu_smoke.json)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset of: " + ", ".join(RECIPES))
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run")
    parser.add_argument("--eval_every", type=int, default=25, help="steps between evaluations (controller decisions)")
    parser.add_argument("--pairs", type=int, default=2, help="interleaved pairs of runs without and with the callback")
    parser.add_argument("--budget_s", type=float, default=480.0, help="fail when the whole check takes longer")
    args = parser.parse_args(argv)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipes {unknown}; choose from {RECIPES}")

    problem = require_gpu()
    if problem:
        print(f"gpu-smoke: needs a CUDA GPU with bf16, and {problem}. Run it on a GPU machine: make gpu-smoke", file=sys.stderr)
        return 2

    import torch

    start = time.perf_counter()
    out = Path(args.out)
    rng = np.random.default_rng(0)
    timer = CallbackTimer()
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "steps": args.steps, "eval_every": args.eval_every, "recipes": {}}
    try:
        for name in recipes:
            data_dir = out / "data" / name
            data_dir.mkdir(parents=True, exist_ok=True)
            data_args = DATA[name](data_dir, *SIZES[name], rng)
            # short runs first take the one-off start-up out of the timed ones: CUDA's and cuDNN's, and
            # the callback's (the sketch-read kernel's build, once per process)
            for schedule in ("constant", "metalr"):
                run_recipe(name, data_args, out, schedule, args.eval_every, args.eval_every, timer, tag="_warmup")
            pairs = []
            for pair in range(args.pairs):  # interleaved, the order swapped every other pair
                order = ("constant", "metalr") if pair % 2 == 0 else ("metalr", "constant")
                pairs.append({s: run_recipe(name, data_args, out, s, args.steps, args.eval_every, timer, tag=f"_{pair}") for s in order})
            ratios = [p["constant"]["steps_per_second"] / p["metalr"]["steps_per_second"] for p in pairs]
            runs = {"constant": pairs[-1]["constant"], "metalr": pairs[-1]["metalr"], "pairs": pairs}
            with_cb = runs["metalr"]
            events = with_cb["callback_s_per_event"]
            per_step_s = sum(events.get(name, 0.0) for name in PER_STEP_EVENTS)
            runs["overhead"] = {
                # wall per step with the callback over without, the median of the pairs
                "wall_ratio_median": statistics.median(ratios),
                "wall_ratios": ratios,
                "callback_ms_per_step_median": with_cb["callback_ms_per_step_median"],
                # the Trainer's train_steps_per_second: the evaluations' time included
                "step_ms_without_callback": 1000 / pairs[-1]["constant"]["steps_per_second"],
                # on_log carries the decisions (and sees every training log line too)
                "callback_ms_per_decision": 1000 * events.get("on_log", 0.0) / with_cb["decisions"],
                # where a decision's time goes ("observe" holds the other two)
                "decision_parts_ms": {k: 1000 * v / with_cb["decisions"] for k, v in with_cb["decision_parts_s"].items()},
                "callback_ms_per_step": 1000 * per_step_s / args.steps,
                "callback_setup_ms": 1000 * (with_cb["callback_s"] - events.get("on_log", 0.0) - per_step_s),
                "callback_share_of_training": with_cb["callback_s"] / with_cb["train_runtime_s"],
            }
            report["recipes"][name] = runs
    finally:
        timer.restore()
    report["alignment"] = alignment_on_cuda()
    report["total_s"] = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_smoke.json").write_text(json.dumps(report, indent=2))

    print(f"\n{report['device']}, {args.steps} steps, a decision every {args.eval_every}, bf16")
    print(f"{'recipe':<12} {'ms/step, no cb*':>16} {'wall ratio':>11} {'cb ms/step':>11} {'cb ms/decision':>15} {'cb setup ms':>12} {'cb share':>9}")
    for name, runs in report["recipes"].items():
        o = runs["overhead"]
        print(f"{name:<12} {o['step_ms_without_callback']:>16.1f} {o['wall_ratio_median']:>11.3f} {o['callback_ms_per_step_median']:>11.2f} "
              f"{o['callback_ms_per_decision']:>15.1f} {o['callback_setup_ms']:>12.1f} {100 * o['callback_share_of_training']:>8.2f}%")
    for name, runs in report["recipes"].items():
        parts = runs["overhead"]["decision_parts_ms"]
        reads = runs["metalr"].get("sketch_reads", {})
        print(f"{name:<12} per decision: " + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items())
              + f"; sketch reads by the kernel: {reads.get('kernel', 0)} of {reads.get('all', 0)} "
              + "; ".join(runs["metalr"].get("sketch_read_refusals", [])))
    a = report["alignment"]
    print(f"alignment signal on BERT-base shapes ({a['parameters'] / 1e6:.1f}M parameters, {a['coordinates']} coordinates): "
          f"{a['signal_ms_per_step']:.3f} ms/step vs {a['plain_update_ms']:.3f} ms for a plain SGD update; "
          f"CPU and CUDA readings differ by at most {a['max_cpu_cuda_difference']:.2e}; with mixed bf16/fp32/fp16 "
          f"parameters the one-launch and index_select reads give readings {a['mixed']['max_difference']:.1e} apart")
    print("* the Trainer's steps/s inverted: evaluations included")
    print(f"total {report['total_s']:.0f} s -> {out / 'gpu_smoke.json'}")
    if report["total_s"] > args.budget_s:
        print(f"gpu-smoke: took {report['total_s']:.0f} s, over the {args.budget_s:.0f} s budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
