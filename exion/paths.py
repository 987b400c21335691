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
from pathlib import Path

__all__ = ["build_root", "write_json", "locked"]


def build_root() -> Path:
    """``$EXION_BUILD``, or ``build/`` in the current working directory (absolute)."""
    env = os.environ.get("EXION_BUILD")
    return Path(env).resolve() if env else Path.cwd() / "build"


@contextlib.contextmanager
def locked(path: str | Path):
    """Hold an exclusive file lock on ``path`` (created with its folders) for the block:
    concurrent processes (pytest workers, a CLI beside them) do the block one at a time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON, creating the parent folders; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path
