"""The Verilator runtime's object cache (exion.sim.objcache), with a stand-in compiler."""

import os
import stat
import sys

import pytest

from exion.sim import objcache

FAKE_CC = """#!{python}
import sys
from pathlib import Path
args = sys.argv[1:]
with open({log!r}, "a") as fh:
    fh.write(" ".join(args) + "\\n")
out = Path(args[args.index("-o") + 1])
out.write_text("object of " + args[-1] + " with " + " ".join(a for a in args if a.startswith("-D")))
out.with_suffix(".d").write_text(str(out) + ": " + args[-1] + "\\n")
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    root = tmp_path / "verilator"
    (root / "include").mkdir(parents=True)
    (root / "include" / "verilated.cpp").write_text("// runtime\n")
    (tmp_path / "design.cpp").write_text("// design\n")
    log = tmp_path / "cc.log"
    cc = tmp_path / "fakecc"
    cc.write_text(FAKE_CC.format(python=sys.executable, log=str(log)))
    cc.chmod(cc.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("VERILATOR_ROOT", str(root))
    monkeypatch.setenv(objcache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path, str(cc), log, str(root / "include" / "verilated.cpp")


def _compile(build, cc, src, out="verilated.o", flags=("-DVM_TRACE=0",)):
    build.mkdir(exist_ok=True)
    cwd = os.getcwd()
    os.chdir(build)
    try:
        return objcache.main(["objcache", cc, "-Os", *flags, "-c", "-o", out, src])
    finally:
        os.chdir(cwd)


def test_runtime_object_compiled_once_and_shared(env):
    tmp, cc, log, src = env
    assert _compile(tmp / "a", cc, src) == 0
    assert _compile(tmp / "b", cc, src) == 0
    assert len(log.read_text().splitlines()) == 1          # the second build was a hit
    for suffix in (".o", ".d"):
        assert (tmp / "b" / f"verilated{suffix}").read_text() == \
            (tmp / "a" / f"verilated{suffix}").read_text()


def test_other_flags_or_changed_source_miss(env):
    tmp, cc, log, src = env
    _compile(tmp / "a", cc, src)
    _compile(tmp / "b", cc, src, flags=("-DVM_TRACE=1",))
    assert "VM_TRACE=1" in (tmp / "b" / "verilated.o").read_text()
    st = os.stat(src)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # a reinstalled runtime
    _compile(tmp / "c", cc, src)
    assert len(log.read_text().splitlines()) == 3


def test_design_objects_always_compile(env):
    tmp, cc, log, _ = env
    design = str(tmp / "design.cpp")
    _compile(tmp / "a", cc, design, out="Vtop__ALL.o")
    _compile(tmp / "b", cc, design, out="Vtop__ALL.o")
    _compile(tmp / "c", cc, design, out="verilated_extra.o")   # not from the runtime folder
    assert len(log.read_text().splitlines()) == 3
    assert not (tmp / "cache").exists()


def test_failed_compile_is_not_kept(env, tmp_path):
    _, _, _, src = env
    failing = tmp_path / "failcc"
    failing.write_text("#!/bin/sh\nexit 3\n")
    failing.chmod(0o755)
    assert _compile(tmp_path / "a", str(failing), src) == 3
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
