"""The DSC core (hw/dsc.py) under cocotb/Verilator: descriptor programs built by the host
(sim/dsc_program.py) from golden/dsc.py's core GEMMs of real digits-DiT block iterations,
bit-exact, with memory-side stalls, and cycle-exact against golden/dsc_cycles.py outside
the gemm engine's own time (which has no exact model; its estimate is held to 5 %)."""

import numpy as np
import pytest

from exion import PRESETS
from exion.golden import dsc_cycles as dcy
from exion.hw import dsc as hdsc
from exion.sim.dsc_block import block_case, run_block
from exion.sim.dsc_program import (GemmJob, build_program, decode_desc, encode_desc,
                                   jobs_from_record, read_results, stage_durations)
from exion.sim.dsc_rtl import rtl_dsc
from exion.workloads.dit import DiT
from exion.workloads.weights import load_weights

TOY = PRESETS["toy"]
META = {"steps": 6, "samples": 1, "seed": 7,
        "exion": {"ffn_reuse": True, "n": 2, "s": 0.8, "ep": True, "k": 0.5, "quant": True}}


@pytest.fixture(scope="module")
def model():
    return DiT(load_weights()[0])


@pytest.mark.parametrize("name", ["toy", "exion16"])
@pytest.mark.parametrize("bus", [64, 128])
def test_model_constants_agree_with_hw(name, bus):
    cfg = PRESETS[name]
    assert dcy.item_beats(cfg, bus) == hdsc.item_beats(cfg, bus)
    assert dcy.OPS == hdsc.OPS


def test_descriptor_roundtrip():
    d = {"op": 4, "stage": 7, "accumulate": 1, "count": 123, "src": 0x1000, "dst": 0x2000,
         "ubase": 5, "glen": 3, "gstride": 128, "kwords": 16, "ncols": 64, "regions": 4}
    assert decode_desc(encode_desc(d)) == d


def _check_run(cfg, prog, run, jobs):
    outs = read_results(cfg, prog, run["image"])
    for j, o in zip(jobs, outs):
        np.testing.assert_array_equal(o, j.expect, err_msg=j.name)
    assert run["error"] == 0


def _small_jobs(model):
    """A sparse iteration's masked products: scores / P.V of head 0 (EP masks) and the
    ConMerge FC1 on the FFN-Reuse mask."""
    case = block_case(model, META, 1, 1)
    assert not case.dense
    jobs = jobs_from_record(TOY, case.rec)
    pick = [j for j in jobs if j.name in ("scores[0]", "pv[0]", "fc1")]
    assert len(pick) == 3 and not pick[2].mask.all()
    return pick


def _delta_job():
    rng = np.random.default_rng(4)
    a = rng.integers(-4094, 4095, (9, 10))
    b = rng.integers(-2047, 2048, (10, 5))
    base = rng.integers(-10**6, 10**6, (9, 5))
    exp = base + a @ b
    job = jobs_from_record(TOY, {"gemms": [("fc2_delta", a[None], b, None, base[None],
                                            exp[None])]})[0]
    assert len(job.a_parts) == 2     # W+1-bit input -> two accumulating W-bit parts
    assert isinstance(job, GemmJob)
    return job


@pytest.fixture(scope="module")
def runs(model):
    """One simulation: the sparse products without stalls; two of them with 30 % memory
    stalls; the same with a corrupted GMEM descriptor (wrong column stride); an unknown op;
    FFN-Reuse's delta input (two parts)."""
    jobs = _small_jobs(model)
    main = build_program(TOY, jobs)
    good = build_program(TOY, jobs[:2])
    broken = build_program(TOY, jobs[:2])
    g = next(i for i, d in enumerate(broken.descs) if d["op"] == dcy.OPS["GMEM_LOAD"])
    broken.descs[g]["gstride"] //= 2
    broken.image[g * 32:(g + 1) * 32] = np.frombuffer(encode_desc(broken.descs[g]), np.uint8)
    bad_op = build_program(TOY, jobs[:1])
    bad_op.image[0] = 9
    delta = _delta_job()
    dprog = build_program(TOY, [delta])
    progs = [main, good, broken, bad_op, dprog]
    out, _ = rtl_dsc(TOY, progs, stall=[0.0, 0.3, 0.3, 0.0, 0.2])
    return {"jobs": jobs, "progs": progs, "runs": out, "delta": delta}


def test_sparse_products_bit_exact_and_cycles(runs):
    jobs, prog, run = runs["jobs"], runs["progs"][0], runs["runs"][0]
    _check_run(TOY, prog, run, jobs)
    durs = stage_durations(prog.descs, run["stages"], run["cycles"], 64)
    assert sum(durs) == run["cycles"]
    ovh = dcy.overhead(64)
    bodies = [t - ovh for d, t in zip(prog.descs, durs) if d["op"] == dcy.OPS["GEMM"]]
    for d, t in zip(prog.descs, durs):       # every non-GEMM descriptor exactly
        if d["op"] != dcy.OPS["GEMM"]:
            assert t == dcy.descriptor_cycles(TOY, d, 64), d
    assert dcy.program_cycles(TOY, prog.descs, 64, bodies)["total"] == run["cycles"]
    est = dcy.program_cycles(TOY, prog.descs, 64)["total"]
    assert abs(est - run["cycles"]) <= 0.05 * run["cycles"]
    # mutation: a model one cycle off per fetch must not match
    assert dcy.program_cycles(TOY, prog.descs, 32, bodies)["total"] != run["cycles"]


def test_stalls_and_mutations(runs):
    jobs, progs, out = runs["jobs"][:2], runs["progs"], runs["runs"]
    _check_run(TOY, progs[1], out[1], jobs)
    bad = read_results(TOY, progs[2], out[2]["image"])
    assert not all(np.array_equal(o, j.expect) for o, j in zip(bad, jobs))
    assert out[3]["error"] == 1 << 2 and out[3]["passes"] == 0
    _check_run(TOY, progs[4], out[4], [runs["delta"]])


@pytest.mark.long
@pytest.mark.parametrize("name", ["toy", "exion16"])
@pytest.mark.parametrize("it", [0, 1], ids=["dense", "sparse"])
def test_block_iteration_gemms(model, name, it):
    """Every core GEMM of a dense and a sparse block iteration (EP on, FFN-Reuse N = 2,
    s = 0.8) through the RTL: bit-exact, cycles == model with the engine's measured time,
    and within 5 % of the estimate."""
    cfg = PRESETS[name]
    case = block_case(model, META, 1, it)
    assert case.dense == (it == 0)
    r = run_block(cfg, case)
    assert r["pass"], r["mismatch"]
    assert r["model"]["total"] == r["cycles"]
    assert abs(r["estimate"]["total"] - r["cycles"]) <= 0.05 * r["cycles"]
