"""make gpu-smoke's driver (benchmarks/gpu_smoke.py) on a machine without a GPU: it stops at once with
exit code 2 and says why, and, with the recipe runs stood in for, it warms up both schedules before
timing, interleaves the pairs with the order swapped, and reports each pair's wall ratio. The recipe
runs themselves need a CUDA GPU (measured on an H200: docs/controller.md, "On a GPU")."""

import json
import math

import pytest
import torch
from benchmark_scripts import load_benchmark


@pytest.fixture
def gpu_smoke():
    return load_benchmark("gpu_smoke")


def test_without_a_gpu_it_stops_at_once_and_says_why(gpu_smoke, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_smoke.main(["--out", str(tmp_path)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "gpu_smoke.json").exists()


def test_warm_ups_then_interleaved_pairs_and_their_ratios(gpu_smoke, tmp_path, monkeypatch):
    runs = []
    speed = {"constant": 10.0, "metalr": 9.0}

    def fake_run(name, data_args, out, schedule, steps, eval_every, timer, tag=""):
        runs.append((schedule, steps, tag))
        result = {"steps_per_second": speed[schedule], "train_runtime_s": steps / speed[schedule], "losses": {},
                  "callback_s": 0.2 if schedule == "metalr" else 0.0, "callback_calls": {"on_log": 4},
                  "callback_s_per_event": {"on_log": 0.08, "on_optimizer_step": 0.1} if schedule == "metalr" else {},
                  "callback_ms_per_step_median": 1.0 if schedule == "metalr" else 0.0,
                  "decision_parts_s": {"observe": 0.06, "average_forwards": 0.04} if schedule == "metalr" else {}}
        if schedule == "metalr":
            result["decisions"] = steps // eval_every
        return result

    monkeypatch.setattr(gpu_smoke, "require_gpu", lambda: None)
    monkeypatch.setattr(gpu_smoke, "run_recipe", fake_run)
    monkeypatch.setattr(gpu_smoke, "DATA", {"sst2": lambda root, n_train, n_test, rng: []})
    monkeypatch.setattr(gpu_smoke, "alignment_on_cuda", lambda: {"parameters": 1e8, "coordinates": 8192,
                                                                 "signal_ms_per_step": 0.3, "plain_update_ms": 0.4,
                                                                 "max_cpu_cuda_difference": 0.0,
                                                                 "mixed": {"max_difference": 0.0}})
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "stand-in")
    assert gpu_smoke.main(["--out", str(tmp_path), "--recipes", "sst2", "--pairs", "3"]) == 0
    assert runs == [("constant", 25, "_warmup"), ("metalr", 25, "_warmup"),
                    ("constant", 100, "_0"), ("metalr", 100, "_0"), ("metalr", 100, "_1"), ("constant", 100, "_1"),
                    ("constant", 100, "_2"), ("metalr", 100, "_2")]
    overhead = json.loads((tmp_path / "gpu_smoke.json").read_text())["recipes"]["sst2"]["overhead"]
    assert overhead["wall_ratios"] == pytest.approx([10 / 9] * 3)
    assert overhead["callback_ms_per_decision"] == pytest.approx(20.0)  # 80 ms of on_log over 4 decisions
    assert overhead["callback_ms_per_step"] == pytest.approx(1.0)  # 0.1 s of per-step handlers over 100 steps
    assert overhead["decision_parts_ms"] == pytest.approx({"observe": 15.0, "average_forwards": 10.0})


def test_the_timer_times_a_decisions_pieces_apart_and_puts_every_method_back(gpu_smoke):
    from hf_metalr.controller.controller import MetaLRController
    from hf_metalr.controller.learner import ActorCriticLearner
    from hf_metalr.integration.callback import MetaLRCallback

    originals = (MetaLRController.observe, ActorCriticLearner.update, MetaLRCallback.on_log)
    timer = gpu_smoke.CallbackTimer()
    try:
        assert MetaLRController.observe is not originals[0] and MetaLRCallback.on_log is not originals[2]
        controller = MetaLRController(initial_lr=1e-3, seed=0)
        for value in (1.0, 0.9, 0.8):
            controller.observe(value)
        assert set(timer.parts) == {"observe", "online_update"}  # nothing replayed: no iterate average here
        assert timer.parts["observe"] >= timer.parts["online_update"] > 0
        assert timer.seconds == 0.0 and timer.calls == {}  # the pieces are not callback handlers
        from hf_metalr.controller.alignment import GradientAlignment

        params = [torch.nn.Parameter(torch.randn(40, 30)), torch.nn.Parameter(torch.randn(30))]
        alignment = GradientAlignment(params, sketch_size=64)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn_like(p)
            alignment.before_step()
            alignment.after_step()
        # 3 steps of a gradient read and a parameter read, and the first step's parameters (the distance
        # estimate reads the first step's gradient too); no one-launch read on the CPU
        assert timer.reads == {"all": 7, "kernel": 0}
    finally:
        timer.restore()
    assert (MetaLRController.observe, ActorCriticLearner.update, MetaLRCallback.on_log) == originals


def test_the_readings_the_gpu_checks_compare_run_on_the_cpu_with_mixed_dtypes(gpu_smoke):
    """``alignment_on_cuda`` compares these readings across devices (float32) and across the two reads
    (mixed dtypes): on the CPU they come from the index_select read, finite, the same when asked
    twice, and the bfloat16/float16 parameters read close to the float32 ones (the same seeded steps,
    rounded)."""
    float32, used = gpu_smoke._alignment_readings("cpu", True, (torch.float32,) * 3)
    mixed, mixed_used = gpu_smoke._alignment_readings("cpu", True, (torch.bfloat16, torch.float32, torch.float16))
    assert used is False and mixed_used is False  # no one-launch read on the CPU
    assert all(math.isfinite(v) for v in float32 + mixed)
    assert gpu_smoke._alignment_readings("cpu", False, (torch.bfloat16, torch.float32, torch.float16))[0] == mixed
    assert mixed != float32  # the narrower dtypes did change the steps
    assert mixed == pytest.approx(float32, rel=0.05, abs=0.02)
