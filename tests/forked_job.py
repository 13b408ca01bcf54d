"""Runs a job's ``main`` (``tiny_job.py``, the package CLI) in a new process forked from a server that has
imported torch, transformers and the package once, instead of a fresh interpreter per run: the imports
alone take 3-12 s a process on 2 CPU cores, more than most of the tests' runs.

The child is a fresh process in all that a run can see: the server never runs a job, and each child
gets its own environment, ``sys.argv``, working directory and output files (what a module reads from
the environment at import time, it read in the server, which started with the environment of the
pytest process that first used it). Its exit status is the
run's (an uncaught exception 1, ``sys.exit(n)`` n, a SIGKILL -9), as a subprocess's return code.
``run_ranks`` starts one such child per rank with the environment ``torch.distributed.run`` gives its
workers (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``, ``TORCHELASTIC_RUN_ID``
...), and like it stops the other ranks once one fails. The launchers themselves are run by the tests
that launch as a user does (test_launch.py, test_recipes.py, and one test of test_resume_and_ranks.py).
"""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from free_port import free_port

# sklearn.datasets: the digits the tiny jobs and the meta-training families load (2 s of imports a child otherwise);
# frozen_heap last, so that the children's garbage collections skip what the server imported
PRELOAD = ["torch", "transformers", "hf_metalr", "hf_metalr.cli", "hf_metalr.compare.cli", "hf_metalr.meta.cli", "tiny_job",
           "sklearn.datasets", "frozen_heap"]
_context = None


def _fork_context():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
        # the server is started with `python -c` and imports PRELOAD on its own path, skipping without a word a
        # module it cannot import: tests/ goes on the PYTHONPATH it starts with (for tiny_job and frozen_heap) only
        before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent), before]))
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            if before is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = before
    return _context


def _child(module: str, argv: list[str], env: dict[str, str], cwd: str | None, stdout: str, stderr: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    for fd, path in ((1, stdout), (2, stderr)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    # as in a subprocess writing to a pipe: stderr line by line, so that what a killed run said is kept
    sys.stderr.reconfigure(line_buffering=True)
    sys.argv = [module, *argv]
    sys.exit(importlib.import_module(module).main(argv))


class ForkedJob:
    """A job started by ``start``: ``wait`` gives its return code, ``kill`` SIGKILLs it, ``result`` its output."""

    def __init__(self, module: str, argv: list[str], env: dict[str, str] | None, cwd: str | Path | None):
        self.args = [module, *argv]
        self._files = tempfile.TemporaryDirectory(prefix="forked_job_")
        self._out, self._err = (os.path.join(self._files.name, name) for name in ("stdout", "stderr"))
        self._process = _fork_context().Process(
            target=_child, args=(module, argv, dict(os.environ if env is None else env),
                                 None if cwd is None else str(cwd), self._out, self._err))
        self._process.start()

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            self.kill()
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self._process.exitcode

    def kill(self) -> None:
        self._process.kill()
        self._process.join()

    def send_signal(self, signal_number: int) -> None:
        os.kill(self._process.pid, signal_number)

    @property
    def sentinel(self) -> int:
        return self._process.sentinel

    def result(self) -> subprocess.CompletedProcess:
        # a child that failed before it opened them (its server could not start it) leaves none
        out, err = (Path(path).read_text(errors="replace") if os.path.exists(path) else "" for path in (self._out, self._err))
        self._files.cleanup()
        return subprocess.CompletedProcess(self.args, self._process.exitcode, out, err)


def start(module: str, *argv, env: dict[str, str] | None = None, cwd: str | Path | None = None) -> ForkedJob:
    """Starts ``module.main(argv)`` in a forked child; ``env`` replaces its environment (default: ours)."""
    return ForkedJob(module, [str(a) for a in argv], env, cwd)


def run(module: str, *argv, env: dict[str, str] | None = None, cwd: str | Path | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """``module.main(argv)`` to its end in a forked child, as ``subprocess.run(..., capture_output=True, text=True)``."""
    job = start(module, *argv, env=env, cwd=cwd)
    job.wait(timeout)
    return job.result()


def rank_environment(rank: int, nproc: int, port: int) -> dict[str, str]:
    """What ``torch.distributed.run --standalone --nproc_per_node nproc`` sets for worker ``rank`` (one node)."""
    sizes = {name: str(nproc) for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "ROLE_WORLD_SIZE")}
    ranks = {name: str(rank) for name in ("RANK", "LOCAL_RANK", "ROLE_RANK")}
    return {**sizes, **ranks, "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "1", "ROLE_NAME": "default",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "TORCHELASTIC_RUN_ID": "forked_job",
            "TORCHELASTIC_RESTART_COUNT": "0", "TORCHELASTIC_MAX_RESTARTS": "0",
            "TORCHELASTIC_USE_AGENT_STORE": "False"}


def run_ranks(module: str, *argv, nproc: int = 2, env: dict[str, str] | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """``module.main(argv)`` on ``nproc`` ranks of one process group, each in a forked child. The return code
    is torchrun's: 0 when every rank ended with 0, else 1, after the ranks still running were killed
    (``rank_returncodes``: each rank's). stdout and stderr are the ranks', rank 0's first."""
    base, port = dict(os.environ if env is None else env), free_port()
    jobs = [start(module, *argv, env={**base, **rank_environment(rank, nproc, port)}) for rank in range(nproc)]
    running, failed = list(jobs), False
    deadline = None if timeout is None else time.monotonic() + timeout
    while running and not failed:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = multiprocessing.connection.wait([job.sentinel for job in running], left)
        if not ready:
            for job in running:
                job.kill()
            raise subprocess.TimeoutExpired([module, *map(str, argv)], timeout)
        for job in [job for job in running if job.sentinel in ready]:
            running.remove(job)
            failed = failed or job.wait() != 0
    for job in running:
        job.kill()
    results = [job.result() for job in jobs]
    combined = subprocess.CompletedProcess([module, *map(str, argv)], 1 if failed else 0,
                                           "".join(r.stdout for r in results), "".join(r.stderr for r in results))
    combined.rank_returncodes = [r.returncode for r in results]  # a rank killed after another failed: -9
    return combined


def spawn(function, args: tuple, nprocs: int) -> None:
    """``torch.multiprocessing.start_processes`` (``mp.spawn``) with the children forked from the server."""
    import torch.multiprocessing

    _fork_context()
    torch.multiprocessing.start_processes(function, args=args, nprocs=nprocs, join=True, start_method="forkserver")
