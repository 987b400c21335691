"""Where build artifacts go, and writing them: paths come from the user, not from ``__file__``.

Every generated file (Verilog, Verilated models, FPGA builds, reports) goes under
:func:`build_root`: ``$EXION_BUILD`` if set, else ``build/`` in the working directory, so a
wheel install behaves like a clone (nothing is written next to the installed sources).
This module imports nothing else of the project; every layer may use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

__all__ = ["build_root", "write_json", "locked", "try_locked"]


def build_root() -> Path:
    """``$EXION_BUILD``, or ``build/`` in the current working directory (absolute)."""
    env = os.environ.get("EXION_BUILD")
    return Path(env).resolve() if env else Path.cwd() / "build"


@contextlib.contextmanager
def _flock(path: str | Path, wait: bool):
    """An exclusive lock on ``path`` (created with its folders) for the block; yields whether
    it is held (always, with ``wait``: a wait for another process is logged)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:            # another process holds it
            if not wait:
                yield False
                return
            t0 = time.monotonic()
            fcntl.flock(fh, fcntl.LOCK_EX)
            _log_wait(path, time.monotonic() - t0)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked(path: str | Path):
    """Hold an exclusive file lock on ``path`` (created with its folders) for the block:
    concurrent processes (pytest workers, a CLI beside them) do the block one at a time."""
    with _flock(path, wait=True):
        yield


def try_locked(path: str | Path):
    """As :func:`locked` without waiting: the block gets ``True`` if it holds the lock,
    ``False`` if another process does (it then runs unlocked)."""
    return _flock(path, wait=False)


def _log_wait(path: Path, seconds: float) -> None:
    """Append ``<lock name> <seconds waited> <pid>`` to ``$EXION_LOCK_LOG`` if set (where a
    parallel run's workers waited for each other's builds)."""
    log = os.environ.get("EXION_LOCK_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{path.name} {seconds:.2f} {os.getpid()}\n")


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON, creating the parent folders; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path
