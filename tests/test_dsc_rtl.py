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


# ---- the GELU op: CFSE GELU + requantisation behind the DMA ----------------------------

def _gelu_cases(model):
    """Directed accumulators (zeros, the accumulator's extremes, around zero, a row that is
    not a multiple of L), seeded random ones, and the FC1 accumulators of a real sparse
    block iteration with its recorded GELU parameters."""
    from exion.golden.cfse import gelu_params
    A = TOY.acc_width
    lo, hi = -(1 << (A - 1)), (1 << (A - 1)) - 1
    par = gelu_params(1e-4, 2e-3).to_dict()
    rng = np.random.default_rng(11)
    print("gelu cases: seed 11")
    directed = np.array([[0, 0, 0, 0, 0, 0, 0, 0],
                         [lo, hi, lo + 1, hi - 1, -1, 1, -2, 2],
                         list(range(-4, 4)),
                         [-30000, -20000, -10000, -100, 100, 10000, 20000, 30000]], np.int64)
    rand = rng.integers(-(1 << 20), 1 << 20, (5, 7))   # N = 7: a padded last word
    case = block_case(model, META, 1, 1)
    from exion.sim.dsc_program import GeluJob, gelu_job_from_record
    real = gelu_job_from_record(TOY, case.rec)
    return [GeluJob("directed", directed, par), GeluJob("random", rand, par), real], \
        case.rec["ffn"]


@pytest.fixture(scope="module")
def gelu_runs(model):
    """One simulation: the GELU jobs; the same with 30 % memory stalls; a corrupted
    descriptor (out_shift + 1)."""
    jobs, ffn = _gelu_cases(model)
    main = build_program(TOY, jobs)
    stalled = build_program(TOY, jobs[:2])
    broken = build_program(TOY, jobs[:1])
    broken.descs[0]["out_shift"] += 1
    broken.image[:32] = np.frombuffer(encode_desc(broken.descs[0]), np.uint8)
    out, _ = rtl_dsc(TOY, [main, stalled, broken], stall=[0.0, 0.3, 0.0],
                     run_name="dsc_gelu")
    return {"jobs": jobs, "ffn": ffn, "progs": [main, stalled, broken], "runs": out}


def _gelu_expect(job):
    from exion.golden.cfse import GeluParams, gelu_requant
    p = job.params if isinstance(job.params, GeluParams) else GeluParams(**job.params)
    return gelu_requant(job.acc, p, TOY)


def test_gelu_op_bit_exact_and_cycles(gelu_runs):
    jobs, prog, run = gelu_runs["jobs"], gelu_runs["progs"][0], gelu_runs["runs"][0]
    assert run["error"] == 0
    outs = read_results(TOY, prog, run["image"])
    for j, o in zip(jobs, outs):
        np.testing.assert_array_equal(o, _gelu_expect(j), err_msg=j.name)
    # the real block: reused entries come from H_d, the rest is the core's GELU output
    ffn = gelu_runs["ffn"]
    h = np.where(ffn["mask"][0], outs[2], ffn["h_d"][0])
    np.testing.assert_array_equal(h, ffn["h"][0])
    durs = stage_durations(prog.descs, run["stages"], run["cycles"], 64)
    for d, t in zip(prog.descs, durs):
        assert t == dcy.descriptor_cycles(TOY, d, 64), d
    assert dcy.program_cycles(TOY, prog.descs, 64)["total"] == run["cycles"]
    # mutation: a model that forgets the output buffer's cycle must not match
    g = [(d, t) for d, t in zip(prog.descs, durs) if d["op"] == dcy.OPS["GELU"]]
    assert all(dcy.overhead(64) + dcy.gelu_body(TOY, d["count"], 64) - 1 != t for d, t in g)
    from exion.hw.cfse import GELU_LATENCY
    assert dcy.GELU_LATENCY == GELU_LATENCY


def test_gelu_op_stalls_and_mutation(gelu_runs):
    jobs, progs, out = gelu_runs["jobs"], gelu_runs["progs"], gelu_runs["runs"]
    for j, o in zip(jobs[:2], read_results(TOY, progs[1], out[1]["image"])):
        np.testing.assert_array_equal(o, _gelu_expect(j), err_msg=j.name)
    bad = read_results(TOY, progs[2], out[2]["image"])[0]
    assert not np.array_equal(bad, _gelu_expect(jobs[0]))


def test_gelu_descriptor_roundtrip():
    d = {"op": 6, "stage": 3, "accumulate": 0, "count": 9, "src": 0x1000, "dst": 0x2000,
         "ubase": 0, "glen": 0, "gstride": 0, "in_mult": 0x7FFF, "in_shift": 63,
         "out_mult": 12345, "out_shift": 40}
    assert decode_desc(encode_desc(d)) == d


def test_gelu_job_from_record(model):
    """The builder's GELU segment reproduces the block's H (dense: everywhere; sparse:
    where the FFN-Reuse mask is set); corrupted parameters are refused."""
    import copy
    import dataclasses

    from exion.errors import ExionError
    from exion.sim.dsc_program import gelu_job_from_record
    for it in (0, 1):
        rec = block_case(model, META, 1, it).rec
        job = gelu_job_from_record(TOY, rec)
        assert job.acc.shape == job.expect.shape == rec["ffn"]["h"][0].shape
        if it == 0:
            np.testing.assert_array_equal(job.expect, rec["ffn"]["h"][0])
        bad = copy.deepcopy(rec)
        bad["ffn"]["gelu"][0]["out_shift"] += 1
        with pytest.raises(ExionError, match="recorded H"):
            gelu_job_from_record(TOY, bad)
    with pytest.raises(Exception, match="per_acc"):
        dcy.gelu_body(dataclasses.replace(TOY, lanes=1), 3, 64)
