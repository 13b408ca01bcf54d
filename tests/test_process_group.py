"""``end_distributed``: how a run that started a process group ends it (the recipes, the launcher)."""

import warnings

import pytest
import torch.distributed as dist

from hf_metalr.integration import process_group
from hf_metalr.integration.process_group import GLOO_WORKERS_GRACE_S, end_distributed


@pytest.fixture()
def group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_without_a_group_it_does_nothing():
    assert not dist.is_initialized()
    end_distributed()
    assert not dist.is_initialized()


def test_a_gloo_group_is_ended_after_a_barrier_then_its_workers_get_a_grace(group, monkeypatch):
    """The grace comes after the group is destroyed, with the GIL released (a sleep): gloo's worker threads
    let go of the last collectives' tensors then, and at the interpreter's exit that aborted a rank."""
    calls = []
    barrier = dist.barrier
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier") or barrier(*a, **k))
    monkeypatch.setattr(process_group.time, "sleep",
                        lambda seconds: calls.append(("sleep", seconds, dist.is_initialized())))
    end_distributed()
    assert calls == ["barrier", ("sleep", GLOO_WORKERS_GRACE_S, False)] and not dist.is_initialized()
    assert GLOO_WORKERS_GRACE_S > 0


def test_a_failed_barrier_is_a_warning_and_the_group_is_left_to_the_exit(group, monkeypatch):
    def closed(*args, **kwargs):
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(dist, "barrier", closed)
    with pytest.warns(RuntimeWarning, match="closing barrier failed.*Connection closed by peer"):
        end_distributed()
    assert dist.is_initialized()


def test_another_backend_is_ended_at_once_without_a_barrier(group, monkeypatch):
    def no_barrier(*args, **kwargs):
        raise AssertionError("no barrier for NCCL: a rank-0-only tail would time it out")

    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: "nccl")
    monkeypatch.setattr(dist, "barrier", no_barrier)
    monkeypatch.setattr(process_group.time, "sleep", lambda seconds: pytest.fail("no grace outside gloo"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        end_distributed()
    assert not dist.is_initialized()
