"""The DSC core's Verilog memory model (sim/dsc_harness.py) and the one-simulator session
(sim/dsc_rtl.DscSession) that ``exion generate --rtl`` uses.

The model replaces the bench's per-cycle Python memory; it must be indistinguishable: with no
stalls the same real block-iteration programs through both memories give the same cycles,
stage records, passes and final memory image; with random stalls (other draws on each memory)
both stall and stay bit-exact; and a session running several programs in one simulator gives
each the same result as a fresh simulator."""

from types import SimpleNamespace

import numpy as np
import pytest

from exion import PRESETS
from exion.errors import ExionError
from exion.golden import dsc_cycles as dcy
from exion.sim.dsc_block import block_case
from exion.sim.dsc_harness import WORDS, fits, from_hex, to_hex
from exion.sim.dsc_program import (block_jobs, build_program, gemm_bodies, read_results,
                                   stage_durations)
from exion.sim.dsc_rtl import DscSession, rtl_dsc
from exion.workloads.dit import DiT
from exion.workloads.weights import load_weights

TOY = PRESETS["toy"]
META = {"steps": 4, "samples": 1, "seed": 5,
        "exion": {"ffn_reuse": True, "n": 2, "s": 0.8, "ep": True, "k": 0.5, "quant": True}}


@pytest.mark.parametrize("bus", [32, 64, 256])
def test_hex_roundtrip(bus):
    rng = np.random.default_rng(bus)
    img = rng.integers(0, 256, size=1000 + bus // 8 - 3, dtype=np.uint8)   # not whole words
    text = to_hex(img, bus)
    assert len(text.splitlines()) == -(-img.size // (bus // 8))
    np.testing.assert_array_equal(from_hex(text, img.size, bus), img)
    # word 0 is little-endian: byte 0 is the last two hex digits of line 0
    assert int(text.splitlines()[0], 16) & 0xFF == img[0]


def test_fits_and_refusals():
    assert fits(WORDS * 8, 64) and not fits(WORDS * 8 + 1, 64)
    prog = build_program(TOY, [])
    with pytest.raises(ExionError, match="memory='fast'"):
        rtl_dsc(TOY, [prog], memory="fast")
    big = SimpleNamespace(image=np.zeros(WORDS * 8 + 1, np.uint8), prog_base=0, bus_bits=64)
    with pytest.raises(ExionError, match="Verilog memory model needs"):
        rtl_dsc(TOY, [big], memory="verilog")


@pytest.fixture(scope="module")
def programs():
    """A dense and a sparse iteration of block 1 (every core op, EP included)."""
    model = DiT(load_weights()[0])
    out = []
    for it in (0, 1):
        case = block_case(model, META, 1, it)
        jobs = block_jobs(TOY, case.rec, 0)
        out.append((build_program(TOY, jobs), jobs))
    return out


def _same(a: dict, b: dict, prog, what: str) -> None:
    """Same cycles, passes, error flags, final image and per-descriptor stage times (the raw
    stage records of a run that follows another start with that run's last stage)."""
    for k in ("cycles", "passes", "error"):
        assert a[k] == b[k], f"{what}: {k}"
    np.testing.assert_array_equal(a["image"], b["image"], err_msg=f"{what}: image")
    durs = [stage_durations(prog.descs, r["stages"], r["cycles"], prog.bus_bits) for r in (a, b)]
    assert durs[0] == durs[1], f"{what}: stage times"


def test_verilog_memory_equals_python_memory(programs):
    """Both memories, the same programs: identical runs; outputs bit-exact vs golden and
    cycles == the model per descriptor."""
    progs = [p for p, _ in programs]
    py, _ = rtl_dsc(TOY, progs, memory="python", run_name="dsc_py")
    vl, _ = rtl_dsc(TOY, progs, memory="verilog", run_name="dsc_vl")
    for (prog, jobs), a, b in zip(programs, py, vl):
        assert a["stages"] == b["stages"]          # same position in the run list
        _same(a, b, prog, f"{len(prog.descs)} descriptors")
        for j, o in zip(jobs, read_results(TOY, prog, b["image"])):
            np.testing.assert_array_equal(o, j.expect, err_msg=j.name)
        durs = stage_durations(prog.descs, b["stages"], b["cycles"], prog.bus_bits)
        assert a["engine"] == b["engine"]
        bodies = gemm_bodies(prog.descs, durs, b["engine"], prog.bus_bits)   # the engine's
        model = dcy.program_cycles(TOY, prog.descs, prog.bus_bits, bodies)
        assert model["total"] == b["cycles"]


def test_session_runs_equal_fresh_runs(programs):
    """One simulator for several programs (sparse, dense, sparse again): each run equals
    the same program on a fresh simulator."""
    progs = [p for p, _ in programs]
    fresh, _ = rtl_dsc(TOY, progs, memory="verilog", run_name="dsc_fresh")
    with DscSession(TOY, seed=3) as sess:
        got = [sess.run([progs[1]])[0], sess.run([progs[0]])[0], sess.run([progs[1]])[0]]
    for g, f, i in zip(got, [fresh[1], fresh[0], fresh[1]], (1, 0, 1)):
        _same(g, f, progs[i], "session")


def test_stalls_on_both_memories(programs):
    """Random stalls on the Verilog memory (its own xorshift draws) and on the Python memory:
    each run is bit-exact against golden, error-free, and slower than the same program with
    no stalls (the stalls happen)."""
    prog, jobs = programs[1]
    base, _ = rtl_dsc(TOY, [prog], memory="verilog", run_name="dsc_vl")
    vl, _ = rtl_dsc(TOY, [prog, prog], stall=[0.3, 0.1], memory="verilog", seed=4,
                    run_name="dsc_vl_stall")
    py, _ = rtl_dsc(TOY, [prog], stall=0.3, memory="python", seed=4, run_name="dsc_py_stall")
    for r, what in ((vl[0], "verilog 0.3"), (vl[1], "verilog 0.1"), (py[0], "python 0.3")):
        assert r["error"] == 0 and r["passes"] == base[0]["passes"], what
        assert r["cycles"] > base[0]["cycles"], f"{what}: no stall happened"
        for j, o in zip(jobs, read_results(TOY, prog, r["image"])):
            np.testing.assert_array_equal(o, j.expect, err_msg=f"{what}: {j.name}")
    assert vl[0]["cycles"] > vl[1]["cycles"]       # more stalls, more cycles


def test_oversized_images_split_between_the_two_memories(monkeypatch):
    """``rtl_dsc(memory="auto")`` with images that fit the Verilog memory and images that do
    not: those run on the Python memory, the rest on the Verilog memory, each with its own
    stall value, and the results come back in the programs' order (simulator stubbed)."""
    from exion.sim import dsc_rtl
    calls = []

    def fake_run(build, module, runs, *, params, run_name, **kw):
        calls.append((build, params["harness"], [r["stall"] for r in runs], run_name))
        return [{"prog_base": r["prog_base"], "harness": params["harness"]} for r in runs], \
            {"passed": True, "runs": len(runs), "busy_cycles": 10, "seconds": 1.0}
    monkeypatch.setattr(dsc_rtl, "dsc_build", lambda cfg, verilog_memory, **kw: verilog_memory)
    monkeypatch.setattr(dsc_rtl, "run_bench_pickled", fake_run)
    big = [False, True, False, True, False]
    progs = [SimpleNamespace(image=np.zeros(WORDS * 8 + 1 if b else 64, np.uint8),
                             prog_base=i, bus_bits=64) for i, b in enumerate(big)]
    stalls = [0.0, 0.3, 0.1, 0.2, 0.0]
    runs, rep = rtl_dsc(TOY, progs, stall=stalls, run_name="mix")
    assert [r["prog_base"] for r in runs] == list(range(5))
    assert [r["harness"] for r in runs] == [not b for b in big]
    assert sorted(calls, key=lambda c: c[1]) == [(False, False, [0.3, 0.2], "mix"),
                                                 (True, True, [0.0, 0.1, 0.0], "mix-vmem")]
    assert rep["runs"] == 5 and rep["passed"]
    calls.clear()                  # stalled or not, all fitting: one Verilog simulation
    rtl_dsc(TOY, progs[0:3:2], stall=[0.1, 0.3])
    rtl_dsc(TOY, progs[0:3:2])
    rtl_dsc(TOY, progs[1:4:2], stall=0.2)    # none fits: the Python memory
    assert [c[1] for c in calls] == [True, True, False]
