"""The Verilator runtime's object cache: ``verilated.mk``'s ``OBJCACHE`` hook for every build.

Every Verilator build compiles the same runtime library (``verilated.cpp``,
``verilated_vpi.cpp``, ``verilated_dpi.cpp``, ``verilated_threads.cpp`` and, with waveforms,
the trace writers) with the same flags: about 15 s of g++ per build, a third of a toy block's
build and, over the test suite's 27 builds, about six minutes of CPU. ccache would share
them, but it is not on the machines we target (no OS packages, no wheel), so
:func:`exion.sim.runner.rtl_build` sets ``OBJCACHE`` to this module for its builds (unless the
user set one, e.g. ``OBJCACHE=ccache``). verilated.mk then runs ``python -m
exion.sim.objcache <compiler command>`` for each object, and this module:

* runs anything that is not a runtime object (the design's own C++, cocotb's main) as is;
* looks a runtime object up by its whole compiler command (compiler, flags, defines, source
  path) plus the compiler's and the source's size and time stamp; on a hit it copies the
  object and its ``.d`` into the build, on a miss it compiles and keeps them (atomically, so
  concurrent builds of the pytest workers share one cache).

The cache lives in ``<build root>/sim/_objcache`` (``$EXION_OBJCACHE_DIR``); ``make clean``
removes it with the rest of ``build/``.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

#: the environment variable naming the cache folder (set by the runner for its builds).
CACHE_ENV = "EXION_OBJCACHE_DIR"


def command() -> str:
    """The ``OBJCACHE`` value: this module run by the current interpreter."""
    return f"{shlex.quote(sys.executable)} -m exion.sim.objcache"   # make's recipes run in sh


def _runtime_object(cmd: list[str]) -> tuple[Path, Path] | None:
    """``(object, source)`` when ``cmd`` compiles a Verilator runtime object: ``-o
    verilated*.o`` from a source in ``$VERILATOR_ROOT/include``; else None."""
    root = os.environ.get("VERILATOR_ROOT")
    if root is None or "-o" not in cmd[:-1] or not cmd[-1].endswith(".cpp"):
        return None
    obj, src = Path(cmd[cmd.index("-o") + 1]), Path(cmd[-1])
    include = (Path(root) / "include").resolve()
    if not obj.name.startswith("verilated") or include not in src.resolve().parents:
        return None
    return obj, src


def _stamp(path: str | Path | None) -> str:
    if path is None:
        return "?"
    st = os.stat(path)
    return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"


def _key(cmd: list[str], src: Path) -> str:
    text = "\0".join([*cmd, _stamp(shutil.which(cmd[0])), _stamp(src)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _keep(entry: Path, files: list[Path]) -> None:
    tmp = entry.with_name(f"{entry.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in files:
        shutil.copyfile(f, tmp / f.name)
    try:
        tmp.rename(entry)
    except OSError:                 # another build kept the same object first
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    cmd = argv[1:]
    if not cmd:
        print("usage: python -m exion.sim.objcache COMPILER ARGS... (verilated.mk's OBJCACHE)",
              file=sys.stderr)
        return 2
    hit = _runtime_object(cmd)
    folder = os.environ.get(CACHE_ENV)
    if hit is None or not folder:
        return subprocess.call(cmd)
    obj, src = hit
    entry = Path(folder) / _key(cmd, src)
    dep = obj.with_suffix(".d")
    if (entry / obj.name).exists():
        shutil.copyfile(entry / obj.name, obj)
        if (entry / dep.name).exists():
            shutil.copyfile(entry / dep.name, dep)
        return 0
    rc = subprocess.call(cmd)
    if rc == 0:
        _keep(entry, [f for f in (obj, dep) if f.exists()])
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
