"""An output folder owned by one process: created with a clear message, and locked while in use.

``hf-metalr compare`` and ``hf-metalr meta-train`` rewrite files in their ``--out`` after every run
or iteration; two processes writing one folder would each keep only their own work. The lock is a
``filelock`` on ``<out>/.hf_metalr.lock``, released when the process ends however it ends; the
holder (pid, host, command, start time) is written beside it for the second process's message.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

__all__ = ["LOCK_NAME", "OutputDirError", "locked_output_dir", "prepare_output_dir"]

LOCK_NAME = ".hf_metalr.lock"
_HOLDER_SUFFIX = ".holder"


class OutputDirError(ValueError):
    """An output folder that cannot be used; the message names the folder and the fix."""


def prepare_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create ``path`` (and its parents) and check it is a writable folder; else :class:`OutputDirError`."""
    path = Path(path)
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputDirError(f"{flag} {path}: {blocking} is a file, not a folder; choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"{flag} {path}: cannot create the folder ({exc.strerror or exc}); "
                             f"choose a {flag} folder you can write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputDirError(f"{flag} {path}: the folder is not writable; choose a {flag} folder you can write to")
    return path


@contextlib.contextmanager
def locked_output_dir(path: str | Path, command: str, flag: str = "--out"):
    """``prepare_output_dir(path)``, then hold the folder's lock for the ``with`` block. A second
    process (or a second call) that locks the same folder gets an :class:`OutputDirError` at once,
    naming the folder and the holder."""
    from filelock import FileLock, Timeout

    path = prepare_output_dir(path, flag)
    lock = FileLock(str(path / LOCK_NAME), timeout=0)
    holder_file = path / (LOCK_NAME + _HOLDER_SUFFIX)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = holder_file.read_text().strip() or "another process"
        except OSError:
            holder = "another process"
        raise OutputDirError(
            f"{flag} {path} is in use by {holder}. Two processes writing one folder keep only one's results: wait "
            f"for it to finish, or choose another {flag}."
        ) from None
    except OSError as exc:
        raise OutputDirError(f"{flag} {path}: cannot lock the folder ({exc.strerror or exc}); "
                             f"choose a {flag} folder you can write to") from None
    try:
        holder_file.write_text(f"pid {os.getpid()} on {socket.gethostname()} ({command}, since "
                               f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        yield path
    finally:
        with contextlib.suppress(OSError):
            holder_file.unlink()
        lock.release()
