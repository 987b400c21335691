"""The Verilator build's C++ optimisation level (``EXION_CXX_OPT``, issue 21 item 4)."""

from pathlib import Path

import pytest

from exion.config import PRESETS
from exion.errors import ExionError
from exion.sim.runner import CXX_OPTS, cxx_opt, rtl_build, run_bench


def test_cxx_opt_default_env_and_bad_value(monkeypatch):
    monkeypatch.delenv("EXION_CXX_OPT", raising=False)
    assert cxx_opt() == "-Os" == CXX_OPTS[0]
    monkeypatch.setenv("EXION_CXX_OPT", "-O0")
    assert cxx_opt() == "-O0"
    assert cxx_opt("-O2") == "-O2"
    with pytest.raises(ExionError, match="EXION_CXX_OPT.*'-Ofast'"):
        cxx_opt("-Ofast")


def _compile_lines(build) -> list[str]:
    log = (build.sim_dir / "build.log").read_text()
    lines = [ln.split(" -m exion.sim.objcache ", 1)[-1] for ln in log.splitlines()]
    return [ln for ln in lines if ln.startswith(("c++", "g++")) and " -c " in ln]


@pytest.mark.rtl
def test_o0_build_is_separate_compiled_at_o0_and_bit_exact(monkeypatch, tmp_path):
    monkeypatch.delenv("EXION_CXX_OPT", raising=False)
    cfg = PRESETS["toy"]
    fast = rtl_build(cfg, "dpu", opt="-O0")         # the default suite's own level
    lines = _compile_lines(fast)
    assert lines and all(" -O0 " in ln and " -Os " not in ln for ln in lines)
    r = run_bench(fast, "exion.sim.tb_dpu", seed=3,
                  params={"cases": ["extremes", "random"], "n_random": 20})
    assert r["passed"]
    # the level is part of the cache key (keys only: no second build)
    from exion.sim import runner
    monkeypatch.setenv("EXION_BUILD", str(tmp_path))
    monkeypatch.setattr(runner, "_build",
                        lambda sim, man, mod, srcs, sim_dir, *a: sim_dir.mkdir(parents=True))
    dirs = {o: runner.rtl_build(cfg, "dpu", opt=o).sim_dir for o in ("-O0", "-Os", None)}
    assert dirs["-O0"] != dirs["-Os"] == dirs[None]


def test_cache_key_names_the_cocotb_install(monkeypatch, tmp_path):
    """A simulator links the cocotb of the environment that built it: builds from two
    environments (a shared $EXION_BUILD) must not share a cache entry."""
    import cocotb

    from exion.sim import runner
    assert str(Path(cocotb.__file__).resolve().parent) in runner._cocotb_key()
    monkeypatch.setenv("EXION_BUILD", str(tmp_path))
    monkeypatch.setattr(runner, "_build",                            # key only, no build
                        lambda sim, man, mod, srcs, sim_dir, *a: sim_dir.mkdir(parents=True))
    here = runner.rtl_build(PRESETS["toy"], "dpu").sim_dir
    monkeypatch.setattr(runner, "_cocotb_key", lambda: " cocotb2.0@/elsewhere/.venv")
    assert runner.rtl_build(PRESETS["toy"], "dpu").sim_dir != here


def test_run_slot_keeps_concurrent_runs_apart(tmp_path):
    """Two runs of the same name and seed on one build at once (two pytest workers, a CLI
    beside them) get two run folders; a finished run's name is free again. Without the slot
    both wrote the Verilog memory's image and dump files in one folder."""
    from types import SimpleNamespace

    from exion.sim.runner import run_slot
    build = SimpleNamespace(sim_dir=tmp_path)
    with run_slot(build, "dsc-1") as first, run_slot(build, "dsc-1") as second:
        assert first == "dsc-1" and second != first and second.startswith("dsc-1-p")
    with run_slot(build, "dsc-1") as again:
        assert again == "dsc-1"
