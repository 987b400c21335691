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
                                   gemm_bodies, jobs_from_record, read_results,
                                   stage_durations)
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
    assert dcy.EPRE_INTERLOCKED == hdsc.EPRE_INTERLOCKED
    assert dcy.ENGINE_INTERLOCKED == hdsc.ENGINE_INTERLOCKED
    assert dcy.epre_w_half(cfg) == hdsc.dsc_epre_sizes(cfg).w_half
    assert hdsc.dsc_epre_sizes(cfg).w_depth == 2 * dcy.epre_w_half(cfg)


def test_descriptor_roundtrip():
    d = {"op": 4, "stage": 7, "accumulate": 1, "count": 123, "src": 0x1000, "dst": 0x2000,
         "ubase": 5, "glen": 3, "gstride": 128, "kwords": 16, "ncols": 64, "regions": 4,
         "overlap": 0}
    assert decode_desc(encode_desc(d)) == d
    assert decode_desc(encode_desc({**d, "overlap": 1}))["overlap"] == 1
    om = {**{k: v for k, v in d.items() if k != "overlap"}, "op": 3, "bcast": 1}
    assert decode_desc(encode_desc(om)) == om
    gm = {k: d[k] for k in ("stage", "count", "src", "dst", "ubase", "glen", "gstride")}
    gm = {**gm, "op": 2, "accumulate": 0, "tee": 1, "tee_base": 17}
    assert decode_desc(encode_desc(gm)) == gm


def _check_run(cfg, prog, run, jobs):
    """Every job's output bit-equal to its expectation, no error flag; the outputs."""
    outs = read_results(cfg, prog, run["image"])
    for j, o in zip(jobs, outs):
        np.testing.assert_array_equal(o, j.expect, err_msg=j.name)
    assert run["error"] == 0
    return outs


def _check_cycles(prog, run, bus=64):
    """Every descriptor's RTL cycles equal to the model's, and the program's total
    (:func:`_check_program_cycles`); the per-descriptor durations (for the mutation
    checks)."""
    _check_program_cycles(prog, run, bus)
    return stage_durations(prog.descs, run["stages"], run["cycles"], bus)


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
    import dataclasses
    fc2 = next(j for j in jobs_from_record(TOY, block_case(model, META, 1, 1).rec)
               if j.name == "fc2_delta")
    plain = dataclasses.replace(fc2, gather=False)
    progs = [main, good, broken, bad_op, dprog, build_program(TOY, [fc2]),
             build_program(TOY, [plain])]
    out, _ = rtl_dsc(TOY, progs, stall=[0.0, 0.3, 0.3, 0.0, 0.2, 0.0, 0.0])
    return {"jobs": jobs, "progs": progs, "runs": out, "delta": delta, "fc2": [fc2, plain]}


def test_sparse_products_bit_exact_and_cycles(runs):
    jobs, prog, run = runs["jobs"], runs["progs"][0], runs["runs"][0]
    _check_run(TOY, prog, run, jobs)
    durs = stage_durations(prog.descs, run["stages"], run["cycles"], 64)
    assert sum(durs) == run["cycles"]
    ovh = dcy.overhead(64)
    bodies = [t - ovh for d, t in zip(prog.descs, durs) if d["op"] == dcy.OPS["GEMM"]]
    # the ``engine`` records give the same bodies (no GEMM waits here)
    assert gemm_bodies(prog.descs, durs, run["engine"], 64) == bodies
    for d, t in zip(prog.descs, durs):       # every non-GEMM descriptor exactly
        if d["op"] != dcy.OPS["GEMM"]:
            assert t == dcy.descriptor_cycles(TOY, d, 64), d
    assert dcy.program_cycles(TOY, prog.descs, 64, bodies)["total"] == run["cycles"]
    est = dcy.program_cycles(TOY, prog.descs, 64)["total"]
    assert abs(est - run["cycles"]) <= 0.05 * run["cycles"]
    # mutation: a model one cycle off per fetch must not match
    assert dcy.program_cycles(TOY, prog.descs, 32, bodies)["total"] != run["cycles"]


def test_both_omem_preload_kinds_ran(runs):
    """The bit-exact runs above load OMEM both ways: broadcast items (a row-constant base:
    zeros or a bias) and packed R-result items (the delta job's random base)."""
    loads = [d for p in runs["progs"] for d in p.descs if d["op"] == dcy.OPS["OMEM_LOAD"]]
    assert {int(d.get("bcast", 0)) for d in loads} == {0, 1}
    delta = [d for d in runs["progs"][4].descs if d["op"] == dcy.OPS["OMEM_LOAD"]]
    assert not any(d.get("bcast") for d in delta)


def test_stalls_and_mutations(runs):
    jobs, progs, out = runs["jobs"][:2], runs["progs"], runs["runs"]
    _check_run(TOY, progs[1], out[1], jobs)
    bad = read_results(TOY, progs[2], out[2]["image"])
    assert not all(np.array_equal(o, j.expect) for o, j in zip(bad, jobs))
    assert out[3]["error"] == 1 << 2 and out[3]["passes"] == 0
    _check_run(TOY, progs[4], out[4], [runs["delta"]])


def test_fc2_delta_gathers_w2_rows(runs):
    """A sparse iteration's delta FC2 (the real block's, one W-bit part) loads and reduces
    over only the hidden units some token of the tile needs (W2 rows gathered by the host,
    ``GemmJob.gather``): bit-exact, fewer GMEM words and cycles than the same product
    without the gather (also bit-exact), every descriptor's cycles equal the model."""
    progs, out = runs["progs"][5:], runs["runs"][5:]
    gathered, plain = runs["fc2"]
    assert len(gathered.a_parts) == 1 and (~(gathered.a_parts[0] != 0).any(axis=0)).any()
    words = []
    for prog, run, job in zip(progs, out, (gathered, plain)):
        _check_run(TOY, prog, run, [job])
        _check_program_cycles(prog, run)
        words.append(sum(d["count"] for d in prog.descs if d["op"] == dcy.OPS["GMEM_LOAD"]))
    assert words[0] < words[1]
    assert out[0]["cycles"] < out[1]["cycles"]


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
    durs = _check_cycles(prog, run)
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


# ---- the SOFTMAX and LAYERNORM ops: CFSE row units behind the DMA ----------------------

def _sm_expect(job):
    from exion.golden.cfse import softmax_fx
    from exion.golden.dsc import prob_requant
    return prob_requant(np.where(job.keep, softmax_fx(job.logits), 0), TOY)


def _ln_expect(job):
    from exion.golden.cfse import layernorm_fx
    n = job.x.shape[1]
    return layernorm_fx(job.x, np.full(n, job.gamma, np.int64), np.full(n, job.beta, np.int64),
                        job.eps)


def _row_expect(job):
    from exion.sim.dsc_program import SoftmaxJob
    return _sm_expect(job) if isinstance(job, SoftmaxJob) else _ln_expect(job)


def _row_cases(model):
    """Softmax: directed rows of n = 7 (not a multiple of L = 4): an all-masked row, the
    16-bit extremes, a single kept entry, a kept FX_MIN entry in a row whose maximum is low
    (its probability is not 0: the keep bits, not the value, mask), zeros; a single row of
    one value; seeded random rows with random masks; a real sparse block's softmax (4 heads,
    EP masks). Layer norm: directed rows (constant, extremes, a ramp, n = 5), a single row,
    seeded random rows with gamma / beta not 1 / 0, and the block's LN1 and LN2."""
    from exion.golden.cfse import FX_MAX, FX_MIN
    from exion.sim.dsc_program import (LayerNormJob, SoftmaxJob, layernorm_job_from_record,
                                       softmax_job_from_record)
    rng = np.random.default_rng(12)
    print("row cases: seed 12")
    lo, hi = FX_MIN, FX_MAX
    d_logits = np.array([[0, 1, 2, 3, 4, 5, 6],
                         [hi, lo, hi, lo, 0, -1, 1],
                         [100, 200, -300, 400, 0, 0, 0],
                         [-20000, lo, -20000, -21000, lo, lo, -19000],
                         [0, 0, 0, 0, 0, 0, 0]], np.int64)
    d_keep = np.array([[0, 0, 0, 0, 0, 0, 0],
                       [1, 1, 1, 1, 1, 1, 1],
                       [0, 0, 0, 1, 0, 0, 0],
                       [1, 1, 0, 1, 1, 0, 1],
                       [1, 1, 1, 1, 1, 0, 1]], bool)
    d_logits = np.where(d_keep | (np.arange(5) == 0)[:, None], d_logits, lo)
    r_logits = rng.integers(-12000, 12000, (9, 13))
    r_keep = rng.random((9, 13)) < 0.6
    r_logits = np.where(r_keep, r_logits, lo)
    case = block_case(model, META, 1, 1)
    sm = [SoftmaxJob("sm_directed", d_logits, d_keep),
          SoftmaxJob("sm_single", np.array([[-5]]), np.array([[True]])),
          SoftmaxJob("sm_random", r_logits, r_keep),
          softmax_job_from_record(TOY, case.rec)]
    d_x = np.array([[7, 7, 7, 7, 7], [hi, lo, hi, lo, hi], [-2, -1, 0, 1, 2],
                    [lo, lo, lo, lo, hi]], np.int64)
    ln = [LayerNormJob("ln_directed", d_x),
          LayerNormJob("ln_single", rng.integers(-4000, 4000, (1, 6))),
          LayerNormJob("ln_random", rng.integers(lo, hi + 1, (7, 10)), gamma=-3000, beta=500,
                       eps=3),
          layernorm_job_from_record(TOY, case.rec, "ln1"),
          layernorm_job_from_record(TOY, case.rec, "ln2")]
    for j in sm + ln:
        j.expect = _row_expect(j)
    return sm, ln, case


@pytest.fixture(scope="module")
def row_runs(model):
    """One simulation: every softmax and layer-norm job; the small ones again with 30 %
    memory stalls; a softmax with a corrupted row length (n 8 -> 4: same word count, other
    rows); a layer norm with a corrupted gamma; a softmax with n = 0 (bad_op)."""
    from exion.sim.dsc_program import SoftmaxJob
    sm, ln, case = _row_cases(model)
    jobs = sm + ln
    main = build_program(TOY, jobs)
    small = [j for j in jobs if j.name.endswith(("directed", "random", "single"))]
    stalled = build_program(TOY, small)
    rng = np.random.default_rng(3)
    wide = SoftmaxJob("sm_wide", rng.integers(-9000, 9000, (3, 8)), np.ones((3, 8), bool))
    wide.expect = _sm_expect(wide)
    bad_n = build_program(TOY, [wide])
    bad_n.descs[0]["n"] = 4
    bad_n.image[:32] = np.frombuffer(encode_desc(bad_n.descs[0]), np.uint8)
    bad_g = build_program(TOY, [ln[0]])
    bad_g.descs[0]["gamma"] += 1
    bad_g.image[:32] = np.frombuffer(encode_desc(bad_g.descs[0]), np.uint8)
    zero_n = build_program(TOY, [wide])
    zero_n.descs[0]["n"] = 0
    zero_n.image[:32] = np.frombuffer(encode_desc(zero_n.descs[0]), np.uint8)
    progs = [main, stalled, bad_n, bad_g, zero_n]
    out, _ = rtl_dsc(TOY, progs, stall=[0.0, 0.3, 0.0, 0.0, 0.0], run_name="dsc_rows")
    return {"jobs": jobs, "small": small, "wide": wide, "ln0": ln[0], "case": case,
            "progs": progs, "runs": out}


def test_row_ops_bit_exact_and_cycles(row_runs):
    jobs, prog, run = row_runs["jobs"], row_runs["progs"][0], row_runs["runs"][0]
    outs = _check_run(TOY, prog, run, jobs)
    # the real block: the core's probabilities and LN outputs are the recorded ones
    rec = row_runs["case"].rec
    byname = {j.name: o for j, o in zip(jobs, outs)}
    np.testing.assert_array_equal(byname["softmax"], rec["attn"]["p"][0].reshape(-1, 16))
    np.testing.assert_array_equal(byname["ln1"], rec["ln1"]["out"][0])
    np.testing.assert_array_equal(byname["ln2"], rec["ln2"]["out"][0])
    # the kept FX_MIN entry of the directed softmax has a non-zero probability
    assert byname["sm_directed"][3, 1] > 0 and byname["sm_directed"][0].sum() == 0
    durs = _check_cycles(prog, run)
    # mutation: a model that lets the output buffer take a word every cycle regardless of
    # its beats, or forgets the unit's third pass, must not match
    ovh = dcy.overhead(64)
    for d, t in zip(prog.descs, durs):
        if d["op"] in (dcy.OPS["SOFTMAX"], dcy.OPS["LAYERNORM"]):
            w = -(-d["n"] // TOY.lanes)
            assert ovh + dcy.row_body(TOY, "SOFTMAX" if d["op"] == 7 else "LAYERNORM",
                                      d["count"], d["n"], 64) - w != t


def test_row_ops_stalls_and_mutations(row_runs):
    progs, out = row_runs["progs"], row_runs["runs"]
    _check_run(TOY, progs[1], out[1], row_runs["small"])
    assert not np.array_equal(read_results(TOY, progs[2], out[2]["image"])[0],
                              row_runs["wide"].expect)
    assert not np.array_equal(read_results(TOY, progs[3], out[3]["image"])[0],
                              row_runs["ln0"].expect)
    assert out[4]["error"] == 1 << 2


def test_row_descriptor_roundtrip_and_records(model):
    """Field round trip; the builder refuses rows longer than the CFSE buffer and records
    whose probabilities / LN outputs its golden functions do not reproduce."""
    import copy

    from exion.errors import ExionError
    from exion.sim.dsc_program import (SoftmaxJob, layernorm_job_from_record,
                                       softmax_job_from_record)
    for op in (7, 8):
        d = {"op": op, "stage": 2, "accumulate": 0, "count": 12, "src": 0x1000, "dst": 0x2000,
             "ubase": 0, "glen": 0, "gstride": 0, "n": 300, "gamma": 0xF000, "beta": 5,
             "eps": 1}
        assert decode_desc(encode_desc(d)) == d
    rec = block_case(model, META, 1, 0).rec
    bad = copy.deepcopy(rec)
    bad["attn"]["p"][0, 0, 0, 0] += 1
    with pytest.raises(ExionError, match="recorded probabilities"):
        softmax_job_from_record(TOY, bad)
    bad["ln2"]["out"][0, 0, 0] += 1
    with pytest.raises(ExionError, match="recorded output"):
        layernorm_job_from_record(TOY, bad, "ln2")
    n = TOY.dsc_row_max + 1
    with pytest.raises(ExionError, match="dsc_row_max"):
        build_program(TOY, [SoftmaxJob("long", np.zeros((1, n), np.int64),
                                       np.ones((1, n), bool))])


# ---- the FFNR op: the FFN-Reuse unit behind the DMA ------------------------------------

def _ffnr_cases(model):
    """Dense (mask) and sparse (delta) jobs: all-zero H, the W-bit extremes, a single row,
    N not a multiple of L or P, s = 0; seeded random ones; a real block's dense iteration
    (the mask the block keeps) and sparse iteration (its FC2 delta input)."""
    from exion.golden.ffn_reuse import ffnr
    from exion.sim.dsc_program import FfnrJob, ffnr_job_from_record
    rng = np.random.default_rng(13)
    print("ffnr cases: seed 13")
    w = TOY.wmax
    ext = np.array([[w, -w, 0, 1, -1, w - 1, -w + 1, 2, 0]] * 3)
    specs = [("ff_zero", np.zeros((4, 6), np.int64), 0.5, None),
             ("ff_ext", ext, 0.4, None),
             ("ff_row", rng.integers(-w, w + 1, (1, 13)), 0.0, None),
             ("ff_rand", rng.integers(-w, w + 1, (11, 37)), 0.75, None),
             ("ff_ext_sparse", ext, 0.6, ext[::-1] // 2),
             ("ff_rand_sparse", rng.integers(-w, w + 1, (9, 21)), 0.3,
              rng.integers(-w, w + 1, (9, 21)))]
    jobs = []
    for name, h, s, hn in specs:
        r = ffnr(TOY, h, s, hn)
        jobs.append(FfnrJob(name, h, s, hn, r.mask if hn is None else r.delta))
    for it in (0, 1):
        j = ffnr_job_from_record(TOY, block_case(model, META, 1, it).rec)
        j.name = f"ff_block_{'dense' if it == 0 else 'sparse'}"
        jobs.append(j)
    return jobs


@pytest.fixture(scope="module")
def ffnr_runs(model):
    """One simulation: every FFNR job; the small ones with 30 % memory stalls; a dense job
    with a corrupted s_code; a job with t = 0 (bad_op)."""
    jobs = _ffnr_cases(model)
    main = build_program(TOY, jobs)
    small = [j for j in jobs if not j.name.startswith("ff_block")]
    stalled = build_program(TOY, small)
    bad_s = build_program(TOY, [jobs[3]])
    bad_s.descs[0]["s_code"] += 100000
    bad_s.image[:32] = np.frombuffer(encode_desc(bad_s.descs[0]), np.uint8)
    bad_t = build_program(TOY, [jobs[3]])
    bad_t.descs[0]["t"] = 0
    bad_t.image[:32] = np.frombuffer(encode_desc(bad_t.descs[0]), np.uint8)
    progs = [main, stalled, bad_s, bad_t]
    out, _ = rtl_dsc(TOY, progs, stall=[0.0, 0.3, 0.0, 0.0], run_name="dsc_ffnr")
    return {"jobs": jobs, "small": small, "progs": progs, "runs": out}


def test_ffnr_op_bit_exact_and_cycles(ffnr_runs):
    jobs, prog, run = ffnr_runs["jobs"], ffnr_runs["progs"][0], ffnr_runs["runs"][0]
    _check_run(TOY, prog, run, jobs)
    durs = _check_cycles(prog, run)
    # mutation: a model that forgets the threshold search's pass over the bins
    from exion.golden.ffn_reuse import num_bins
    nb = num_bins(1 << (TOY.width - 1))
    for d, t in zip(prog.descs, durs):
        if d["op"] == dcy.OPS["FFNR"]:
            assert dcy.descriptor_cycles(TOY, d, 64) - nb != t


def test_ffnr_op_stalls_and_mutations(ffnr_runs):
    progs, out = ffnr_runs["progs"], ffnr_runs["runs"]
    _check_run(TOY, progs[1], out[1], ffnr_runs["small"])
    assert not np.array_equal(read_results(TOY, progs[2], out[2]["image"])[0],
                              ffnr_runs["jobs"][3].expect)
    assert out[3]["error"] == 1 << 2


def test_ffnr_jobs_in_block(model):
    """block_jobs puts the FFN-Reuse segment after the GELU on dense and sparse iterations
    (not with a host-only control); records the unit does not reproduce are refused; the
    builder refuses H larger than the unit's cache."""
    import copy

    from exion.errors import ExionError
    from exion.sim.dsc_program import FfnrJob, block_jobs, ffnr_job_from_record
    for it in (0, 1):
        rec = block_case(model, META, 1, it).rec
        names = [j.name for j in block_jobs(TOY, rec, cfse_overlap=False, fuse_gelu=False)]
        assert names[names.index("gelu") + 1] == "ffnr"
        fused = [j.name for j in block_jobs(TOY, rec, cfse_overlap=False)]
        assert "gelu" not in fused and fused[fused.index("fc1_gelu") + 1] == "ffnr"
        assert names[0] == "ln1" and names[names.index("fc1") - 1] == "ln2"
        assert names[names.index("softmax") + 1].startswith("pv")
        bad = copy.deepcopy(rec)
        key = "new_mask" if it == 0 else "mask"
        bad["ffn"][key][0, 0, 0] = not bad["ffn"][key][0, 0, 0]
        with pytest.raises(ExionError, match="rec\\['ffn'\\]"):
            ffnr_job_from_record(TOY, bad)
        bad = copy.deepcopy(rec)
        bad["ffn"]["reuse"]["control"] = "random"
        assert ffnr_job_from_record(TOY, bad) is None
    with pytest.raises(ExionError, match="cache"):
        build_program(TOY, [FfnrJob("big", np.zeros((TOY.dsc_ffnr_dims[0] + 1, 4), np.int64),
                                    0.5)])
    # rows longer than the CFSE buffer / H larger than the unit's cache stay on the host
    small = TOY.replace(name="toy_k8", k_max=8)
    names = [j.name for j in block_jobs(small, rec, cfse_overlap=False, fuse_gelu=False)]
    assert "gelu" in names and not {"ln1", "ln2", "softmax", "ffnr"} & set(names)
    d = {"op": 9, "stage": 1, "accumulate": 0, "count": 7, "src": 64, "dst": 128,
         "aux": 0x3000, "t": 5, "n": 9, "s_code": 999999, "sparse": 1}
    assert decode_desc(encode_desc(d)) == d


@pytest.mark.long
@pytest.mark.parametrize("bus", [32, 128])
def test_unit_ops_other_buses_pysim(bus):
    """GELU, SOFTMAX, LAYERNORM, FFNR (dense and sparse), EPRE (also overlapped with a small
    GEMM), a GEMM with a broadcast OMEM preload, a softmax beside an overlapped GEMM and a
    GELU_OMEM on a 32- and a 128-bit bus, in
    Amaranth's simulator (no Verilator build of those widths): bit-exact, and every
    descriptor's cycles equal the model -- its ``per_word > 1``, ``per_in > per_word`` and
    ``per_mask != P / Q`` branches, which the 64-bit toy build does not reach."""
    from exion.golden.cfse import gelu_params, gelu_requant, layernorm_fx, softmax_fx
    from exion.golden.dsc import prob_requant
    from exion.golden.ffn_reuse import ffnr
    from exion.sim.dsc_program import FfnrJob, GeluJob, LayerNormJob, SoftmaxJob
    from exion.sim.dsc_pysim import pysim_dsc
    rng = np.random.default_rng(21)
    print("pysim cases: seed 21")
    lg = rng.integers(-9000, 9000, (3, 7))
    kp = rng.random((3, 7)) < 0.7
    lg = np.where(kp, lg, -32768)
    x = rng.integers(-5000, 5000, (3, 6))
    h, hn = rng.integers(-2047, 2048, (2, 9, 20))
    gp = gelu_params(1e-4, 2e-3)
    acc = rng.integers(-(1 << 20), 1 << 20, (2, 5))
    jobs = [SoftmaxJob("sm", lg, kp, prob_requant(np.where(kp, softmax_fx(lg), 0), TOY)),
            LayerNormJob("ln", x, 2048, 0, 1, layernorm_fx(x, np.full(6, 2048),
                                                           np.zeros(6, np.int64))),
            FfnrJob("ffd", h, 0.6, None, ffnr(TOY, h, 0.6).mask),
            FfnrJob("ffs", h, 0.6, hn, ffnr(TOY, h, 0.6, hn).delta),
            GeluJob("gelu", acc, gp.to_dict()),
            _pj("epre", rng.integers(-2047, 2048, (7, 9)), rng.integers(-2047, 2048, (9, 3)),
                rng.integers(-2047, 2048, (9, 3)), 0.4, q_th=50),
            _pj("epre_ov", rng.integers(-2047, 2048, (5, 6)), rng.integers(-2047, 2048, (6, 2)),
                rng.integers(-2047, 2048, (6, 2)), 0.5),
            _small_gemm(rng, overlap=True), _small_gemm(rng, row_constant=True),
            SoftmaxJob("sm_beside", lg[::-1], kp[::-1],
                       prob_requant(np.where(kp[::-1], softmax_fx(lg[::-1]), 0), TOY),
                       beside=True)]
    fa, fb = rng.integers(-2047, 2048, (10, 8)), rng.integers(-2047, 2048, (8, 7))
    fbase = rng.integers(-10**5, 10**5, (10, 7))
    jobs.append(GemmJob("gelu_omem", [fa], fb, np.ones((10, 7), bool), fbase,
                        gelu_requant(fbase + fa @ fb, gp, TOY), gelu=gp.to_dict()))
    jobs[4].expect = _gelu_expect(jobs[4])
    prog = build_program(TOY, jobs, bus_bits=bus)
    assert any(d.get("overlap") for d in prog.descs)
    assert any(d.get("overlap") for d in prog.descs if d["op"] == dcy.OPS["GEMM"])
    assert {d.get("bcast", 0) for d in prog.descs if d["op"] == dcy.OPS["OMEM_LOAD"]} == {0, 1}
    run = pysim_dsc(TOY, prog)
    assert run["error"] == 0
    for j, o in zip(jobs, read_results(TOY, prog, run["image"])):
        np.testing.assert_array_equal(o, j.expect, err_msg=j.name)
    _check_program_cycles(prog, run, bus)


def _small_gemm(rng, overlap=False, row_constant=False):
    """A small dense product (W-bit operands, an accumulator-scale base: random, or the same
    in every row -- a bias, preloaded by broadcast)."""
    a = rng.integers(-2047, 2048, (5, 8))
    b = rng.integers(-2047, 2048, (8, 6))
    base = rng.integers(-10**5, 10**5, (1 if row_constant else 5, 6)).repeat(
        5 if row_constant else 1, axis=0)
    return GemmJob("small", [a], b, np.ones((5, 6), bool), base, base + a @ b, overlap=overlap)


def _check_program_cycles(prog, run, bus=64, cfg=TOY):
    """Every descriptor's RTL cycles equal to :func:`program_cycles`' (the engine's measured
    GEMM bodies substituted), and the total; returns the model's result."""
    durs = stage_durations(prog.descs, run["stages"], run["cycles"], bus)
    bodies = gemm_bodies(prog.descs, durs, run["engine"], bus)
    mdl = dcy.program_cycles(cfg, prog.descs, bus, bodies)
    for i, (d, t, c) in enumerate(zip(prog.descs, durs, mdl["per_desc"])):
        assert t == c, (i, d, t, c)
    assert mdl["total"] == run["cycles"]
    return mdl


# ---- the EPRE ops: eager prediction behind the DMA -------------------------------------

def _pj(name, x, wq, wk, k, q_th=None, polarity="top1", lod=2, shifts=None, cfg=TOY):
    """A one-head PredictJob; the host's shifts (calibrated on ``x`` unless given) and the
    expected mask / dominant flags from golden.predict.epre."""
    from exion.golden.predict import epre
    from exion.sim.dsc_program import PredictJob
    sq, sk = (None, None) if shifts is None else shifts
    r = epre(cfg, x, wq, wk, k, sq, sk, q_th, polarity, lod)
    exp = np.concatenate([r.score_mask, r.dominant[:, None]], axis=1)[None]
    return PredictJob(name, np.asarray(x, np.int64), [np.asarray(wq, np.int64)],
                      [np.asarray(wk, np.int64)], k, np.array([[r.shift_q, r.shift_k]]),
                      None if q_th is None else np.array([q_th]), polarity, lod, exp)


def _epre_cases(model):
    """Directed: k giving 1 key (k = 0) and every key (k = 1), q_th on (every row dominant,
    q_th_int = 0; a middle threshold) and off, keep_all polarity, ties (all-zero X: every
    score equal, the lowest index wins; repeated rows), LOD (1 term), stage-1 saturation
    (shift 0), shapes not a multiple of U or Le; seeded random ones; the real block's EP
    (4 heads, its recorded masks) and the same X with a q_th at its median gap."""
    from exion.golden.predict import epre
    from exion.sim.dsc_program import epre_job_from_record
    rng = np.random.default_rng(14)
    print("epre cases: seed 14")
    w = TOY.wmax

    def rnd(*shape, lim=w):
        return rng.integers(-lim, lim + 1, shape)
    x, wq, wk = rnd(16, 64), rnd(64, 16), rnd(64, 16)
    xr = np.repeat(rnd(4, 20), 3, axis=0)[:11]          # ties: repeated token rows
    jobs = [_pj("k0_one_key", x, wq, wk, 0.0),
            _pj("k1_all_keys", x, wq, wk, 1.0),
            _pj("qth0_all_dominant", x, wq, wk, 0.5, q_th=0),
            _pj("ties_zero_x", np.zeros((7, 9), np.int64), rnd(9, 5), rnd(9, 5), 0.3, q_th=3),
            _pj("ties_rows", xr, rnd(20, 6), rnd(20, 6), 0.4),
            _pj("keep_all_lod", rnd(10, 13), rnd(13, 7), rnd(13, 7), 0.2, q_th=0,
                polarity="keep_all", lod=1),
            _pj("saturate", rnd(5, 30), rnd(30, 4), rnd(30, 4), 0.6, shifts=(0, 0))]
    gaps = np.diff(np.sort(epre(TOY, x, wq, wk, 0.5).sh, axis=1)[:, -2:], axis=1)
    jobs.append(_pj("qth_median", x, wq, wk, 0.5, q_th=int(np.median(gaps))))
    for i in range(3):
        n, d, dh = int(rng.integers(2, 17)), int(rng.integers(1, 65)), int(rng.integers(1, 17))
        jobs.append(_pj(f"random{i}", rnd(n, d), rnd(d, dh), rnd(d, dh),
                        float(rng.integers(0, 11)) / 10,
                        q_th=None if i == 0 else int(rng.integers(0, 5000))))
    case = block_case(model, META, 1, 1)
    real = epre_job_from_record(TOY, case.rec)
    x0, ep = real.x, case.rec["epre"]
    hq = epre(TOY, x0, ep["wq"][0], ep["wk"][0], ep["k"])
    g = np.diff(np.sort(hq.sh, axis=1)[:, -2:], axis=1)
    real_qth = _pj("real_qth", x0, ep["wq"][0], ep["wk"][0], ep["k"], q_th=int(np.median(g)))
    assert jobs[2].expect[..., -1].all() and not jobs[0].expect[..., -1].any()
    assert real_qth.expect[..., -1].any() and not real_qth.expect[..., -1].all()
    return jobs + [real, real_qth], case


@pytest.fixture(scope="module")
def epre_runs(model):
    """One simulation: every EPRE job; the directed / random ones with 30 % memory stalls;
    the first job with a corrupted run (k_n + 1 in the run fields)."""
    from exion.hw.dsc import dsc_epre_sizes
    from exion.hw.epre import run_layout
    from exion.sim.payload import pack
    jobs, case = _epre_cases(model)
    main = build_program(TOY, jobs)
    small = jobs[:-2]
    stalled = build_program(TOY, small)
    broken = build_program(TOY, jobs[:1])
    i = next(i for i, d in enumerate(broken.descs) if d["op"] == dcy.OPS["EPRE"])
    broken.descs[i]["ep"]["k_n"] += 1
    broken.descs[i]["run"] = pack(run_layout(TOY, dsc_epre_sizes(TOY)), broken.descs[i]["ep"])
    broken.image[i * 32:(i + 1) * 32] = np.frombuffer(encode_desc(broken.descs[i]), np.uint8)
    progs = [main, stalled, broken]
    out, _ = rtl_dsc(TOY, progs, stall=[0.0, 0.3, 0.0], run_name="dsc_epre")
    return {"jobs": jobs, "small": small, "case": case, "progs": progs, "runs": out}


def test_epre_op_bit_exact_and_cycles(epre_runs):
    jobs, prog, run = epre_runs["jobs"], epre_runs["progs"][0], epre_runs["runs"][0]
    outs = _check_run(TOY, prog, run, jobs)
    # the real block: the core's masks are the recorded EP masks; the needed rows follow
    ep = epre_runs["case"].rec["epre"]
    real = outs[-2]
    np.testing.assert_array_equal(real[..., :-1], ep["keep"][0])
    np.testing.assert_array_equal(real[..., -1], ep["dominant"][0])
    np.testing.assert_array_equal(real[..., :-1].any(axis=1), ep["v_need"][0])
    durs = _check_cycles(prog, run)
    # mutation: a model that forgets the selector's per-row cost must not match
    for d, t in zip(prog.descs, durs):
        if d["op"] == dcy.OPS["EPRE"]:
            assert dcy.descriptor_cycles(TOY, d, 64) - d["count"] != t


def test_epre_op_stalls_and_mutation(epre_runs):
    progs, out = epre_runs["progs"], epre_runs["runs"]
    _check_run(TOY, progs[1], out[1], epre_runs["small"])
    assert not np.array_equal(read_results(TOY, progs[2], out[2]["image"])[0],
                              epre_runs["jobs"][0].expect)


def _pj_exact(name, x, wq, kx, k, q_th=None, lod=2, cfg=TOY):
    """A PredictJob with exact keys per head (``kx``: list of (N_k, d_head)); expectations
    from golden.predict.epre(k_exact=...)."""
    from exion.golden.predict import epre
    from exion.sim.dsc_program import PredictJob
    exp, sh = [], []
    for w, kk in zip(wq, kx):
        r = epre(cfg, x, w, None, k, None, None, q_th, "top1", lod, k_exact=kk)
        exp.append(np.concatenate([r.score_mask, r.dominant[:, None]], axis=1))
        sh.append([r.shift_q, 0])
    return PredictJob(name, np.asarray(x, np.int64), [np.asarray(w, np.int64) for w in wq],
                      [None] * len(wq), k, np.array(sh),
                      None if q_th is None else np.array([q_th] * len(wq)), "top1", lod,
                      np.stack(exp), k_exact=[np.asarray(kk, np.int64) for kk in kx])


def test_epre_exact_keys_in_the_dsc():
    """EPRE_KLOAD writes exact keys into the DSC's EPRE (run flag ``k_given``, Wq^T only in
    EPRE_WLOAD): masks bit-exact against golden and every descriptor's cycles equal to the
    model, with 30 % memory stalls too; an ordinary job after them (Kh from stage 1 again).
    Mutation: the model without ``k_given`` (the key groups charged) must not match."""
    from exion.sim.dsc_program import build_program
    rng = np.random.default_rng(31)
    print("exact-key cases: seed 31")
    w = TOY.wmax

    def rnd(*shape):
        return rng.integers(-w, w + 1, shape)
    x = rnd(16, 64)
    jobs = [_pj_exact("exact_two_heads", x, [rnd(64, 16), rnd(64, 16)],
                      [rnd(16, 16), rnd(16, 16)], 0.3, q_th=2000),
            _pj_exact("exact_lod", rnd(12, 13), [rnd(13, 7)], [rnd(12, 7)], 0.5,
                      lod=1),
            _pj("after_exact", x, rnd(64, 16), rnd(64, 16), 0.2)]
    progs = [build_program(TOY, jobs), build_program(TOY, jobs)]
    ops = [d["op"] for d in progs[0].descs]
    assert ops.count(dcy.OPS["EPRE_KLOAD"]) == 3 and ops.count(dcy.OPS["EPRE_XLOAD"]) == 3
    wl = [d for d in progs[0].descs if d["op"] == dcy.OPS["EPRE_WLOAD"]]
    assert wl[0]["count"] * 2 == wl[-1]["count"]          # Wq^T only, then Wq^T and Wk^T
    out, _ = rtl_dsc(TOY, progs, stall=[0.0, 0.3], run_name="dsc_exact_keys")
    for prog, run in zip(progs, out):
        _check_run(TOY, prog, run, jobs)
    durs = _check_cycles(progs[0], out[0])
    for d, t in zip(progs[0].descs, durs):
        if d["op"] == dcy.OPS["EPRE"] and d["ep"]["k_given"]:
            plain = dict(d, ep=dict(d["ep"], k_given=0))
            assert dcy.descriptor_cycles(TOY, plain, 64) != t


def _packed_key_jobs(cfg, rng):
    """Directed exact-key jobs for EPRE_KLOAD ``kpack`` on ``cfg``: a full dh_max head in a
    partial row block (13 keys), two heads of d_head 7 (two full row blocks on toy, a
    partial last Kh word), one with every key element at a W-bit extreme, a small head (5
    keys, d_head 4)."""
    w, dhm = cfg.wmax, cfg.dsc_epre_dims[2]

    def rnd(*shape):
        return rng.integers(-w, w + 1, shape)
    n = min(2 * cfg.rows, cfg.dsc_epre_dims[0])
    ext = rng.choice([-w - 1, w], (n, 7))
    jobs = [_pj_exact("kp_full", rnd(13, 20), [rnd(20, dhm)], [rnd(13, dhm)], 0.4, cfg=cfg),
            _pj_exact("kp_two", rnd(n, 9), [rnd(9, 7), rnd(9, 7)], [ext, rnd(n, 7)], 0.3,
                      q_th=2000, cfg=cfg),
            _pj_exact("kp_small", rnd(5, 8), [rnd(8, 4)], [rnd(5, 4)], 0.5, lod=1, cfg=cfg)]
    for j in jobs:
        j.k_pack = True
    return jobs


def _check_packed_keys(cfg, prog, run, bus):
    """Every kpack EPRE_KLOAD's cycles against the model's and against a model that
    charges it as a plain load of its beats (``count * per + 2``: no Kh-write wait); the
    number of descriptors whose time the plain charge misses."""
    durs = stage_durations(prog.descs, run["stages"], run["cycles"], bus)
    kl = [(d, t) for d, t in zip(prog.descs, durs)
          if d["op"] == dcy.OPS["EPRE_KLOAD"] and d.get("kpack")]
    assert kl
    misses = 0
    for d, t in kl:
        per = dcy.krow_beats(cfg, d["glen"], bus)
        assert t == dcy.descriptor_cycles(cfg, d, bus)
        misses += t != dcy.overhead(bus) + d["count"] * per + 2
    return misses


@pytest.mark.parametrize("name", ["toy", pytest.param("exion16", marks=pytest.mark.long)])
def test_epre_packed_key_rows(name):
    """EPRE_KLOAD with ``kpack`` (issue 19: a split head's other keys over the port at W
    bits, ``ceil(d_head W / D)`` beats a key): masks bit-exact against golden with the
    keys in the Kh banks, every descriptor's cycles equal to the model, also under 30 %
    memory stalls; the packed load moves fewer beats than the EPRE-word one; a key row
    longer than the EPRE's dh_max stops the run with ``bad_op``. Mutation: a
    model without the Kh-write wait misses the toy loads whose keys take fewer beats than
    Kh words (a design that takes rows without that wait gives other masks, shown once)."""
    from exion.sim.dsc_program import program_beats
    cfg = PRESETS[name]
    rng = np.random.default_rng(61)
    print("packed key cases: seed 61")
    jobs = _packed_key_jobs(cfg, rng)
    progs = [build_program(cfg, jobs) for _ in range(3)]
    kp = [d for d in progs[0].descs if d["op"] == dcy.OPS["EPRE_KLOAD"]]
    assert len(kp) == 4 and all(d["kpack"] for d in kp)
    i = progs[2].descs.index(kp[0])         # a key row longer than dh_max: bad_op
    step = max(32, progs[2].bus_bits // 8)
    progs[2].image[i * step:i * step + 32] = np.frombuffer(
        encode_desc({**kp[0], "glen": cfg.dsc_epre_dims[2] + 1}), np.uint8)
    out, _ = rtl_dsc(cfg, progs, stall=[0.0, 0.3, 0.0], run_name="dsc_kpack")
    assert out[2]["error"] == 4
    for prog, run in zip(progs[:2], out):
        _check_run(cfg, prog, run, jobs)
    _check_program_cycles(progs[0], out[0], 64, cfg)
    misses = _check_packed_keys(cfg, progs[0], out[0], 64)
    assert misses >= (3 if name == "toy" else 0)
    for j in jobs:
        j.k_pack = False
    assert program_beats(cfg, progs[0]) < program_beats(cfg, build_program(cfg, jobs))


@pytest.mark.long
@pytest.mark.parametrize("bus", [32, 128])
def test_epre_packed_key_rows_other_buses_pysim(bus):
    """EPRE_KLOAD ``kpack`` on toy at 32 bits (6 beats a d_head-16 key, more than its 4 Kh
    words: the loads beat-bound) and 128 bits (2 beats: bound by the Kh writes), in
    Amaranth's simulator: bit-exact, every descriptor's cycles equal to the model."""
    from exion.sim.dsc_pysim import pysim_dsc
    rng = np.random.default_rng(67)
    print("packed key cases, other buses: seed 67")
    jobs = _packed_key_jobs(TOY, rng)
    prog = build_program(TOY, jobs, bus_bits=bus)
    run = pysim_dsc(TOY, prog)
    _check_run(TOY, prog, run, jobs)
    _check_program_cycles(prog, run, bus, TOY)
    _check_packed_keys(TOY, prog, run, bus)


def _pj_komem(cfg, name, x, wq, kacc, k, q_th=None, lod=2, shift=None, path="komem"):
    """A PredictJob whose exact keys come from OMEM (``k_acc``: per head (N_k, d_head)
    accumulators; ``shift`` per head or None): expectations from golden.predict.epre on
    golden.predict.omem_keys' keys, computed here from the accumulators."""
    from exion.golden.predict import epre, omem_keys
    from exion.sim.dsc_program import PredictJob
    shift = shift or [None] * len(wq)
    exp, sh = [], []
    for w, acc, s in zip(wq, kacc, shift):
        r = epre(cfg, x, w, None, k, None, None, q_th, "top1", lod,
                 k_exact=omem_keys(cfg, acc, s))
        exp.append(np.concatenate([r.score_mask, r.dominant[:, None]], axis=1))
        sh.append([r.shift_q, 0])
    return PredictJob(name, np.asarray(x, np.int64), [np.asarray(w, np.int64) for w in wq],
                      [None] * len(wq), k, np.array(sh),
                      None if q_th is None else np.array([q_th] * len(wq)), "top1", lod,
                      np.stack(exp), k_acc=[np.asarray(a, np.int64) for a in kacc],
                      k_shift=list(shift), k_path=path)


def _komem_jobs(cfg, rng, path="komem"):
    """Directed EPRE_KOMEM cases on ``cfg`` (toy-sized EPRE): two heads of 16 keys (two
    row blocks on toy, more than one Kh word a key, U not dividing the keys); a partial row
    block and a partial Kh word (11 keys, d_head 7, LOD); saturation both ways (a shift
    below the ideal host's, the accumulator's extremes at shift 0); the largest shift (every
    key 0 or -1); then exact keys through the port and an ordinary job (Kh from stage 1)."""
    w, A = cfg.wmax, cfg.acc_width
    top = (1 << (A - 1)) - 1

    def rnd(*shape, lim=w):
        return rng.integers(-lim, lim + 1, shape)
    x = rnd(16, 64)
    ext = rnd(16, 16, lim=1 << 20)
    ext[0, :4] = [top, -top - 1, top, -top - 1]
    jobs = [_pj_komem(cfg, "komem_two_heads", x, [rnd(64, 16), rnd(64, 16)],
                      [rnd(16, 16, lim=1 << 22), rnd(16, 16, lim=1 << 12)], 0.3, q_th=2000,
                      path=path),
            _pj_komem(cfg, "komem_partial", rnd(11, 13), [rnd(13, 7)],
                      [rnd(11, 7, lim=1 << 18)], 0.5, lod=1, path=path),
            _pj_komem(cfg, "komem_saturate", x, [rnd(64, 16), rnd(64, 16)],
                      [rnd(16, 16, lim=1 << 20), ext], 0.2, shift=[3, 0], path=path),
            _pj_komem(cfg, "komem_top_shift", rnd(5, 9), [rnd(9, 4)],
                      [rnd(5, 4, lim=top)], 1.0, shift=[A - 1], path=path),
            _pj_exact("exact_after", x, [rnd(64, 16)], [rnd(16, 16)], 0.4, cfg=cfg),
            _pj("plain_after", x, rnd(64, 16), rnd(64, 16), 0.2, cfg=cfg)]
    sat = [np.abs(j.exact_keys(cfg)[h]).max() for j in jobs[2:3] for h in range(2)]
    assert min(sat) >= w      # both saturation heads reach the W-bit limits
    return jobs


@pytest.mark.parametrize("path", ["komem", "store"])
@pytest.mark.parametrize("name", ["toy", pytest.param("exion16", marks=pytest.mark.long)])
def test_epre_keys_from_omem(name, path):
    """Exact keys over the on-core path (issue 19): the K_h accumulators in OMEM requantised
    into the Kh banks by EPRE_KOMEM, or teed by an OMEM_STORE of a tile holding them among
    filler columns (``ktee``), then the run with ``k_given``: masks bit-exact against
    golden, every descriptor's cycles equal to the model, also under 30 % memory stalls; no
    key crosses the port (no EPRE_KLOAD for those jobs). Mutations: a model without the
    capture cycle must not match; keys shifted logically, not arithmetically, give other
    masks."""
    from exion.golden.predict import epre, omem_keys
    from exion.golden.quant import saturate
    cfg = PRESETS[name]
    rng = np.random.default_rng(47)
    print("komem cases: seed 47")
    jobs = _komem_jobs(cfg, rng, path)
    progs = [build_program(cfg, jobs), build_program(cfg, jobs)]
    ops = _ops(progs[0])
    tees = [d for d in progs[0].descs if d.get("ktee")]
    assert ops.count(dcy.OPS["EPRE_KLOAD"]) == 1
    assert (ops.count(dcy.OPS["EPRE_KOMEM"]), len(tees)) == ((6, 0) if path == "komem"
                                                             else (0, 6))
    out, _ = rtl_dsc(cfg, progs, stall=[0.0, 0.3], run_name=f"dsc_{path}")
    for prog, run in zip(progs, out):
        _check_run(cfg, prog, run, jobs)
    _check_program_cycles(progs[0], out[0], 64, cfg)
    durs = stage_durations(progs[0].descs, out[0]["stages"], out[0]["cycles"], 64)
    ko = [(d, t) for d, t in zip(progs[0].descs, durs)
          if d["op"] == dcy.OPS["EPRE_KOMEM"] or d.get("ktee")]
    differ = []
    for d, t in ko:
        if path == "komem":
            n, dh = d["count"], d["glen"]
            lacking = dcy.overhead(64) + dcy.komem_body(cfg, n, dh) - -(-n // cfg.rows)
        else:       # the store alone, without the last block's Kh writes
            lacking = dcy.overhead(64) + dcy.omem_store_body(d["count"], 4)
        differ.append(t != lacking)
    assert all(differ) if path == "komem" else sum(differ) >= 4
    j, A = jobs[0], cfg.acc_width          # a logical shift in place of the arithmetic one
    other = [epre(cfg, j.x, j.wq[h], None, j.k, None, None, 2000, "top1", 2,
                  k_exact=saturate((j.k_acc[h] % (1 << A)) >> int(ko[h][0]["shift"]),
                                   cfg.width))
             for h in range(2)]
    assert np.array_equal(j.exact_keys(cfg)[0], omem_keys(cfg, j.k_acc[0]))
    assert any(not np.array_equal(o.score_mask, j.expect[h, :, :-1])
               for h, o in enumerate(other))


@pytest.mark.long
@pytest.mark.parametrize("lanes,bus", [(8, 64), (32, 256)])
def test_keys_from_omem_other_widths_pysim(lanes, bus):
    """Both on-core key paths with other EPRE word widths and buses (toy with ``epre_lanes``
    8 at 64 bits: 8-column Kh words, d_head 12 in a full and a partial word; 32 lanes at 256
    bits: the Kh word wider than ``dh_max``, its lanes past d_head zero, and an OMEM address
    one beat, each passing ST_LATCH): EPRE_KOMEM and the OMEM_STORE key tee, each with
    d_head 12 and 16, in Amaranth's simulator, bit-exact, every descriptor's cycles equal to
    the model."""
    import dataclasses

    from exion.sim.dsc_pysim import pysim_dsc
    cfg = dataclasses.replace(TOY, epre_lanes=lanes)
    assert cfg.epre_lane_count == lanes
    rng = np.random.default_rng(59 + lanes)
    print(f"wide key-path cases: seed {59 + lanes}")
    x = rng.integers(-cfg.wmax, cfg.wmax + 1, (13, 24))
    jobs = [_pj_komem(cfg, f"{path}{dh}", x, [rng.integers(-999, 999, (24, dh))],
                      [rng.integers(-(1 << 21), 1 << 21, (13, dh))], 0.4, path=path)
            for path in ("komem", "store") for dh in (12, 16)]
    prog = build_program(cfg, jobs, bus_bits=bus)
    assert sum(1 for d in prog.descs if d.get("ktee")) == 2
    assert _ops(prog).count(dcy.OPS["EPRE_KOMEM"]) == 2
    run = pysim_dsc(cfg, prog)
    assert run["error"] == 0
    for j, o in zip(jobs, read_results(cfg, prog, run["image"])):
        np.testing.assert_array_equal(o, j.expect, err_msg=j.name)
    _check_program_cycles(prog, run, bus, cfg)


def test_ktee_store_holds_close_windows():
    """Row blocks whose K_h windows come faster than the Kh writes (a tile of K_h only, 32
    writes a block at 4 cycles an address): the model refuses such a store, the RTL holds
    the window's latch until the previous block's keys are written -- masks bit-exact (the
    program is the EPRE_KOMEM one with that descriptor replaced by the store). A core that
    does not hold fails it (checked once by hand). On Verilator (the suite's toy build)."""
    from exion.errors import ExionError
    rng = np.random.default_rng(61)
    print("ktee hold case: seed 61")
    job = _pj_komem(TOY, "ktee_close", rng.integers(-999, 999, (16, 64)),
                    [rng.integers(-999, 999, (64, 16))],
                    [rng.integers(-(1 << 21), 1 << 21, (16, 16))], 0.3)
    prog = build_program(TOY, [job])
    i = next(k for k, d in enumerate(prog.descs) if d["op"] == dcy.OPS["EPRE_KOMEM"])
    src = next(d["src"] for d in prog.descs if d["op"] == dcy.OPS["OMEM_LOAD"])
    ko = prog.descs[i]
    st = {"op": dcy.OPS["OMEM_STORE"], "stage": ko["stage"], "count": 2 * 16, "ktee": 1,
          "dst": src, "kt_ncols": 16, "kt_c0": 0, "n_k": 16, "glen": 16,
          "shift": ko["shift"], "h_words": ko["h_words"]}
    with pytest.raises(ExionError, match="K_h window comes"):
        dcy.store_ktee_body(TOY, st, 4)
    prog.descs[i] = st
    prog.image[i * 32:(i + 1) * 32] = np.frombuffer(encode_desc(st), np.uint8)
    run = rtl_dsc(TOY, [prog], run_name="dsc_ktee_hold")[0][0]
    assert run["error"] == 0
    np.testing.assert_array_equal(read_results(TOY, prog, run["image"])[0], job.expect)


def _exact_block(model, it, **kw):
    """Toy block 1, iteration ``it``, with exact keys, on Verilator: bit-exact against
    golden.dsc, cycles equal to the model, four key tees, no key over the port; the run.
    ``q_th`` 0.5: dominant query rows in both iterations (none at the default)."""
    meta = {**META, "exion": {**META["exion"], "ep_keys": "exact", "q_th": 0.5}}
    case = block_case(model, meta, 1, it)
    assert case.rec["epre"]["k_acc"] is not None
    r = run_block(TOY, case, **kw)
    assert r["pass"], r["mismatch"]
    assert r["model"]["total"] == r["cycles"] and r["ep_schedule"] == "overlap"
    ops = [d["op"] for d in r["descs"]]
    assert len([d for d in r["descs"] if d.get("ktee")]) == 4
    assert dcy.OPS["EPRE_KLOAD"] not in ops and dcy.OPS["EPRE_KOMEM"] not in ops
    return case, r


def _order_of(descs):
    """The indices of the EPRE runs, the key tees, the EPRE_STOREs and the Q tiles'
    descriptors of a block program."""
    runs = [i for i, d in enumerate(descs) if d["op"] == dcy.OPS["EPRE"]]
    tees = [i for i, d in enumerate(descs) if d.get("ktee")]
    stores = [i for i, d in enumerate(descs) if d["op"] == dcy.OPS["EPRE_STORE"]]
    qs = [i for i, d in enumerate(descs) if d.get("job") == "q"]
    return runs, tees, stores, qs


@pytest.mark.parametrize("it", [0, 1])
def test_block_exact_keys_store_tee(model, it):
    """A block iteration with exact keys (``ep_keys = "exact"``, issue 19) on the toy DSC,
    dense and sparse: each head's K_h | V_h tile tees its keys into the Kh banks as it is
    stored (OMEM_STORE ``ktee``); every segment bit-exact against golden.dsc (whose EP
    predicts from the Q|K|V product's K_h, ``golden.predict.omem_keys``), cycles equal to
    the model, no key over the port and no EPRE_KOMEM. The default program queues every
    run (``k_wait`` in Kh buffer ``h mod 2``, handed over before its tile, EPRE_STORE
    ``kq``) and, on toy, projects each head's Q on every row before its EPRE_STORE
    (``q_early``, chosen by the cycle model: faster than the Q after the masks); the host
    discards the dominant rows' Q, which gives golden's (the comparison covers it: a dense
    Q compared with golden's skipped rows fails it, checked once by hand). A queued
    schedule whose runs do not wait for their keys (``k_wait`` cleared) fails it (checked
    once by hand: wrong masks)."""
    from exion.golden.dsc_cycles import program_cycles
    from exion.sim.dsc_program import block_jobs, block_program
    case, r = _exact_block(model, it)
    assert r["q_early"]
    runs, tees, stores, qs = _order_of(r["descs"])
    assert len(runs) == len(stores) == 4 and runs[0] < tees[0] and runs[1] < tees[0]
    for h, (i, j) in enumerate(zip(runs, tees)):
        assert r["descs"][i]["ep"]["k_wait"] == 1
        assert r["descs"][i]["ep"]["k_buf"] == r["descs"][j]["k_buf"] == h % 2
        assert r["descs"][j]["kq"] == 1
    def q_mask(q_dense):
        return next(j for j in block_jobs(TOY, case.rec, case.rec_sample, q_dense=q_dense)
                    if getattr(j, "name", "") == "q").mask
    assert q_mask(True).all() and not q_mask(False).all()   # dominant rows' Q: discarded
    for h in range(4):             # head h's Q tiles between the previous store and its own
        assert any((stores[h - 1] if h else tees[0]) < q < stores[h] for q in qs), h
    # the Q after the masks (dominant rows skipped): the cycle model says slower
    late = block_program(TOY, case.rec, case.rec_sample, q_early=False)[1]
    assert not late.q_early
    assert program_cycles(TOY, late.descs, late.bus_bits)["total"] > r["estimate"]["total"]


@pytest.mark.parametrize("split", [(6, 12), (3,)])
def test_block_exact_keys_sub_runs(model, split):
    """EPRE sub-runs (issue 19): each head's queued run split at the query rows ``split``
    (run field ``q_base``; every sub-run but a head's last with ``k_hold``, so its keys stay
    in the head's Kh buffer), each with its EPRE_STORE into the head's mask rows, on the toy
    DSC (3 EPRE units: sub-runs of 3 .. 10 rows): bit-exact against golden.dsc, cycles
    equal to the model. A sub-run that does not hold its keys (``k_hold`` cleared) leaves
    the next one waiting for keys no store tees: the cycle model refuses the program
    (``test_sub_runs_need_their_held_keys``) and the DSC would never end."""
    case, r = _exact_block(model, 0, q_split=split)
    runs, tees, stores, _ = _order_of(r["descs"])
    per = len(split) + 1
    assert len(runs) == len(stores) == 4 * per and len(tees) == 4
    holds = [r["descs"][i]["ep"]["k_hold"] for i in runs]
    assert holds == ([1] * (per - 1) + [0]) * 4
    firsts = [r["descs"][i]["ep"]["q_base"] for i in runs[:per]]
    assert firsts[0] == 0 and all(b > a for a, b in zip(firsts, firsts[1:]))
    assert [r["descs"][i]["count"] for i in runs[:per]] == [
        b - a for a, b in zip((0,) + split, split + (16,))]


def test_sub_runs_need_their_held_keys(model):
    """The cycle model of sub-runs (no RTL): a sub-run that frees its head's Kh buffer
    (``k_hold`` cleared) leaves the next sub-run waiting for keys no store tees, and a
    head's last sub-run that keeps it (``k_hold`` set) blocks the next tee into it: both
    programs are refused (the DSC would never end); q_split off the EPRE's unit grid or
    without exact queued keys is refused with one line."""
    from exion.errors import ExionError
    from exion.golden.dsc_cycles import program_cycles
    from exion.sim.dsc_program import block_program
    meta = {**META, "exion": {**META["exion"], "ep_keys": "exact", "q_th": 0.5}}
    case = block_case(model, meta, 1, 0)
    _, prog, _ = block_program(TOY, case.rec, case.rec_sample, q_split=(6, 12))
    assert program_cycles(TOY, prog.descs, prog.bus_bits)["total"] > 0
    runs = [d for d in prog.descs if d["op"] == dcy.OPS["EPRE"]]
    for i, msg in ((0, "no earlier OMEM_STORE"), (2, "holds it")):
        descs = [dict(d) for d in prog.descs]
        j = prog.descs.index(runs[i])
        descs[j]["ep"] = {**descs[j]["ep"], "k_hold": 1 - descs[j]["ep"]["k_hold"]}
        with pytest.raises(ExionError, match=msg):
            program_cycles(TOY, descs, prog.bus_bits)
    for bad in ((5,), (6, 6), (18,)):
        with pytest.raises(ExionError, match="q_split"):
            block_program(TOY, case.rec, case.rec_sample, q_split=bad)
    with pytest.raises(ExionError, match="sub-runs"):
        block_program(TOY, block_case(model, META, 1, 0).rec, 0, q_split=(6,))


@pytest.mark.long
def test_block_exact_keys_orders(model):
    """The three built orders of exact keys on Verilator, both iterations: in order
    (``key_queue=False``), queued with Q after the masks, queued with Q early; each
    bit-exact with cycles equal to the model, and each faster than the one before."""
    for it in (0, 1):
        cyc = [_exact_block(model, it, **kw)[1]["cycles"]
               for kw in ({"key_queue": False}, {"q_early": False}, {"q_early": True})]
        assert cyc[0] > cyc[1] > cyc[2], cyc


def test_block_exact_keys_need_the_shared_overlap(model):
    """Exact keys in a block need the overlapped schedule with the EPRE's weights shared:
    asking for the sequential one, or no sharing, is refused with one line."""
    from exion.errors import ExionError
    from exion.sim.dsc_program import block_program
    meta = {**META, "exion": {**META["exion"], "ep_keys": "exact"}}
    rec = block_case(model, meta, 1, 1).rec
    for kw in ({"schedule": "sequential"}, {"share_w": False}):
        with pytest.raises(ExionError, match="exact keys"):
            block_program(TOY, rec, **kw)


def test_epre_keys_from_omem_checks():
    """Bad EPRE_KOMEM jobs are refused with a one-line error naming the field: both
    ``k_exact`` and ``k_acc``; accumulators past acc_width; more OMEM addresses than the
    engine has; a bad shift."""
    from exion.errors import ExionError
    from exion.golden.predict import omem_keys
    from exion.sim.dsc_program import PredictJob
    rng = np.random.default_rng(3)
    x, wq = rng.integers(-9, 9, (16, 64)), rng.integers(-9, 9, (64, 16))
    acc = rng.integers(-99, 99, (16, 16))
    both = PredictJob("both", x, [wq], [None], 0.5, np.array([[0, 0]]), k_exact=[acc],
                      k_acc=[acc])
    with pytest.raises(ExionError, match="k_exact or k_acc"):
        build_program(TOY, [both])
    with pytest.raises(ExionError, match="k_acc.*acc_width"):
        omem_keys(TOY, np.full((2, 2), 1 << 40))
    with pytest.raises(ExionError, match="shift"):
        omem_keys(TOY, acc, TOY.acc_width)
    small = TOY.replace(name="toy_omem16", omem_depth=16)
    big = PredictJob("big", x, [wq], [None], 0.5, np.array([[0, 0]]), k_acc=[acc])
    with pytest.raises(ExionError, match="omem_depth"):
        build_program(small, [big])


def test_epre_jobs_in_block(model):
    """block_jobs puts EP after LN1 and before the Q/K/V projection; a record the EPRE's
    golden does not reproduce is refused; EP larger than the DSC's EPRE stays on the host;
    the EPRE descriptor round-trips."""
    import copy

    from exion.errors import ExionError
    from exion.sim.dsc_program import block_jobs, epre_job_from_record
    rec = block_case(model, META, 1, 0).rec
    names = [j.name for j in block_jobs(TOY, rec)]
    assert names[:4] == ["ln1", "epre", "kv", "q"]
    assert [j.name for j in block_jobs(TOY, rec, overlap=False)][:3] == ["ln1", "epre", "qkv"]
    bad = copy.deepcopy(rec)
    bad["epre"]["keep"][0, 0, 0] = ~bad["epre"]["keep"][0, 0, 0]
    with pytest.raises(ExionError, match="rec\\['epre'\\]"):
        epre_job_from_record(TOY, bad)
    small = TOY.replace(name="toy_k8", k_max=8)
    assert "epre" not in [j.name for j in block_jobs(small, rec)]
    for ov in (0, 1):
        d = {"op": 12, "stage": 1, "accumulate": 0, "count": 16, "src": 0, "dst": 0x2000,
             "overlap": ov, "run": (1 << 100) + 12345}
        assert decode_desc(encode_desc(d)) == d


@pytest.mark.long
@pytest.mark.parametrize("ex", [
    {"k": 0.3, "q_th": 1.0, "lod_terms": 1},
    {"k": 0.7, "q_th": 0.5, "polarity": "keep_all", "n": 3, "s": 0.5}],
    ids=["qth_lod", "qth_keep_all"])
def test_block_iteration_epre_settings(model, ex):
    """A block iteration with q_th on (top1 with LOD; keep_all with dominant rows), another
    block, iteration and sample: every segment, EP included, bit-exact and cycles == model."""
    e = {"ffn_reuse": True, "n": 2, "s": 0.8, "ep": True, "quant": True, **ex}
    case = block_case(model, {"steps": 4, "samples": 2, "seed": 3, "exion": e}, 2, 1, sample=1)
    if ex.get("polarity") == "keep_all":
        assert case.rec["epre"]["dominant"].any()
    r = run_block(TOY, case)
    assert r["pass"], r["mismatch"]
    assert "epre" in r["gemm_cycles"] and r["model"]["total"] == r["cycles"]


# ---- overlapped EP: the EPRE beside the K / V projection (issue 16 item 2, 18 item 3) ----

def _overlap_jobs(model):
    """A dense block iteration's EP (4 heads), its K / V and Q jobs split for the overlap,
    the unsplit QKV job, and a one-head EP (the K / V tiles then outlast its run)."""
    import dataclasses

    from exion.sim.dsc_program import block_jobs
    meta = {**META, "exion": {**META["exion"], "k": 0.1}}   # k = 0.1: some K / V rows unneeded
    rec = block_case(model, meta, 1, 0).rec
    by = {j.name: j for j in block_jobs(TOY, rec)}
    seq = {j.name: j for j in block_jobs(TOY, rec, overlap=False)}
    ep = by["epre"]
    one = dataclasses.replace(ep, wq=ep.wq[:1], wk=ep.wk[:1], shifts=ep.shifts[:1],
                              expect=ep.expect[:1],
                              q_th_int=None if ep.q_th_int is None else ep.q_th_int[:1])
    return by["epre"], by["kv"], by["q"], seq["qkv"], one, rec


@pytest.fixture(scope="module")
def overlap_runs(model):
    """One simulation: EP + K/V + Q overlapped; a one-head EP beside all K/V tiles; the
    same block sequential (EP, then the unsplit QKV); EP + K/V with 30 % memory stalls; an
    EPRE_STORE with nothing in the mask FIFO; an unknown op right after an overlapped EPRE
    (the run stops with the EPRE still busy), then a good run."""
    ep, kv, q, qkv, one, rec = _overlap_jobs(model)
    progs = [build_program(TOY, [ep, kv, q], share_w=False), build_program(TOY, [one, kv]),
             build_program(TOY, [ep, qkv]), build_program(TOY, [ep, kv]),
             build_program(TOY, [one, kv]), build_program(TOY, [ep, kv]),
             build_program(TOY, [one, kv])]
    lone = progs[4]
    lone.image[:32] = np.frombuffer(encode_desc({"op": dcy.OPS["EPRE_STORE"], "count": 3,
                                                 "dst": 0x1000}), np.uint8)
    i = next(i for i, d in enumerate(progs[5].descs) if d.get("overlap")) + 1
    progs[5].image[i * 32] = 99
    out, _ = rtl_dsc(TOY, progs, stall=[0.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0],
                     run_name="dsc_overlap")
    return {"jobs": [[ep, kv, q], [one, kv], [ep, qkv], [ep, kv]], "progs": progs,
            "runs": out, "rec": rec}


def test_overlap_bit_exact_and_cycles(overlap_runs):
    """Overlapped EP is bit-exact (masks, K / V, Q), every descriptor's cycles equal the
    model, both interlock regimes occur (the 4-head program's stores wait for their runs,
    the one-head program's does not), and the overlap pays: fewer cycles than the same
    work in sequence, by at least half the hidden EPRE time (the split into K / V and Q
    costs one more tile)."""
    progs, runs, jobs = overlap_runs["progs"], overlap_runs["runs"], overlap_runs["jobs"]
    mdl = []
    for prog, run, js in zip(progs[:3], runs[:3], jobs[:3]):
        _check_run(TOY, prog, run, js)
        mdl.append(_check_program_cycles(prog, run))
    assert mdl[0]["epre_wait"] > 0 and mdl[1]["epre_wait"] == 0
    assert mdl[0]["epre_hidden"] > 0 and mdl[2]["epre_wait"] == 0
    assert runs[2]["cycles"] - runs[0]["cycles"] >= mdl[0]["epre_hidden"] // 2
    # the host's discard of the K / V rows EP found unneeded gives golden's projection
    kv, qkv = jobs[0][1], jobs[2][1]
    d = kv.b.shape[1] // 2
    assert not qkv.mask[:, d:].all()            # EP skips some K / V rows here
    np.testing.assert_array_equal(np.where(qkv.mask[:, d:], kv.expect, kv.base),
                                  qkv.expect[:, d:])


def test_overlap_model_mutations_fail(overlap_runs, monkeypatch):
    """A model that runs the EPRE in sequence, and one whose interlock does not wait, both
    miss the RTL's cycles."""
    prog, run = overlap_runs["progs"][0], overlap_runs["runs"][0]
    durs = stage_durations(prog.descs, run["stages"], run["cycles"], 64)
    bodies = [t - dcy.overhead(64) for d, t in zip(prog.descs, durs)
              if d["op"] == dcy.OPS["GEMM"]]
    seq = [{**d, "overlap": 0} for d in prog.descs]
    assert dcy.program_cycles(TOY, seq, 64, bodies)["total"] != run["cycles"]
    monkeypatch.setattr(dcy, "EPRE_INTERLOCKED", ("END",))
    assert dcy.program_cycles(TOY, prog.descs, 64, bodies)["total"] != run["cycles"]


def test_overlap_stalls_and_bad_store(overlap_runs):
    """Under 30 % memory stalls the overlapped program is still bit-exact; an EPRE_STORE of
    more rows than the mask FIFO holds stops the run with ``bad_op``; so does an unknown op
    while the EPRE runs, and the next run still works."""
    progs, runs = overlap_runs["progs"], overlap_runs["runs"]
    _check_run(TOY, progs[3], runs[3], overlap_runs["jobs"][3])
    assert runs[4]["error"] == 1 << 2
    # a bad op with the EPRE busy in the background: the run stops; the next run waits for
    # the EPRE at its first EPRE op and is bit-exact
    assert runs[5]["error"] == 1 << 2
    _check_run(TOY, progs[6], runs[6], overlap_runs["jobs"][1])
    assert runs[6]["cycles"] > runs[1]["cycles"]


def test_split_qkv_refuses_a_wrong_record(model):
    """The K / V discard is checked against golden's record: an altered QKV output is
    refused with a one-line error."""
    from exion.errors import ExionError
    from exion.sim.dsc_program import split_qkv
    _, _, _, qkv, _, _ = _overlap_jobs(model)
    bad = GemmJob(qkv.name, qkv.a_parts, qkv.b, qkv.mask, qkv.base, qkv.expect.copy())
    bad.expect[0, -1] += 1
    with pytest.raises(ExionError, match="K / V"):
        split_qkv(TOY, bad)


@pytest.mark.parametrize("name", ["toy", "exion16"])
def test_auto_ep_schedule_takes_the_faster_estimate(model, name):
    """``auto`` builds both EP schedules and keeps the one the cycle model estimates faster
    (no RTL: the choice is the host's); an unknown schedule is a one-line error."""
    from exion.errors import ExionError
    from exion.sim.dsc_program import block_program
    cfg = PRESETS[name]
    rec = block_case(model, META, 1, 0).rec
    est = {}
    for sched in ("overlap", "sequential"):
        jobs, prog, used = block_program(cfg, rec, 0, sched)
        assert used == sched
        est[sched] = dcy.program_cycles(cfg, prog.descs, 64)["total"]
    _, prog, used = block_program(cfg, rec, 0, "auto")
    assert dcy.program_cycles(cfg, prog.descs, 64)["total"] == min(est.values())
    assert est[used] == min(est.values())
    with pytest.raises(ExionError, match="EP schedule"):
        block_program(cfg, rec, 0, "sometimes")
    # without EP in the core every schedule is the one sequential program
    no_ep = {k: v for k, v in rec.items() if k != "epre"}
    descs = {s: block_program(cfg, no_ep, 0, s)[1:] for s in ("auto", "overlap", "sequential")}
    assert {used for _, used in descs.values()} == {"sequential"}
    assert len({tuple(d["op"] for d in p.descs) for p, _ in descs.values()}) == 1


# ---- CFSE beside the gemm engine: overlapped GEMMs (issue 16 item 2) --------------------

def _rewrite(prog, descs):
    """``prog`` with its descriptor list replaced (renumbered, re-encoded in place)."""
    for i, d in enumerate(descs):
        d["stage"] = i & 0xFF
    prog.descs[:] = descs
    raw = b"".join(encode_desc(d) for d in descs)
    prog.image[:len(raw)] = np.frombuffer(raw, np.uint8)
    return prog


def _engine_programs(model):
    """Real block jobs with their CFSE work beside the GEMMs (softmax of head 0 beside
    Q.K^T of head 1; the GELU of FC1's first column group beside the second; the dense
    FFN-Reuse mask beside FC2), and directed ones: an overlapped GEMM right before END (END
    waits), and a GEMM that waits for the previous overlapped GEMM (two products on the
    same IMEM, a softmax between them)."""
    from exion.golden.cfse import softmax_fx
    from exion.golden.dsc import prob_requant
    from exion.sim.dsc_program import SoftmaxJob, block_jobs
    dense = {j.name: j for j in block_jobs(TOY, block_case(model, META, 1, 0).rec,
                                           fuse_gelu=False)}
    assert dense["softmax[0]"].beside and dense["gelu[0]"].beside and dense["ffnr"].beside
    assert not dense["gelu[3]"].beside          # FC2 and the FFN-Reuse unit need all of H
    sets = [[dense[n] for n in ("scores[0]", "scores[1]", "softmax[0]")],
            [dense[n] for n in ("fc1[0]", "fc1[1]", "gelu[0]")],
            [dense[n] for n in ("fc2", "ffnr")]]
    progs = [build_program(TOY, js) for js in sets]
    rng = np.random.default_rng(31)
    print("engine overlap cases: seed 31")
    small = _small_gemm(rng)
    last = build_program(TOY, [small])
    ds = [dict(d) for d in last.descs if d["op"] != dcy.OPS["OMEM_STORE"]]
    next(d for d in ds if d["op"] == dcy.OPS["GEMM"])["overlap"] = 1
    progs.append(_rewrite(last, ds))
    a = rng.integers(-2047, 2048, (8, 128))
    b = rng.integers(-2047, 2048, (128, 12))
    base = rng.integers(-10**5, 10**5, (8, 12))
    twice = GemmJob("twice", [a, a], b, np.ones((8, 12), bool), base, base + 2 * (a @ b))
    lg = rng.integers(-9000, 9000, (1, 3))
    kp = np.array([[True, False, True]])
    lg = np.where(kp, lg, -32768)
    sm = SoftmaxJob("between", lg, kp, prob_requant(np.where(kp, softmax_fx(lg), 0), TOY))
    gg = build_program(TOY, [twice, sm])
    gemms = [i for i, d in enumerate(gg.descs) if d["op"] == dcy.OPS["GEMM"]]
    smx = next(d for d in gg.descs if d["op"] == dcy.OPS["SOFTMAX"])
    ds = [dict(d) for d in gg.descs]
    ds[gemms[0]]["overlap"] = 1
    ds = ds[:gemms[0] + 1] + [dict(smx)] + ds[gemms[1]:]     # no second IMEM_LOAD
    ds = [d for k, d in enumerate(ds) if not (d["op"] == dcy.OPS["SOFTMAX"] and k > gemms[0] + 1)]
    progs.append(_rewrite(gg, ds))
    jobs = sets + [[], [twice, sm]]
    stalled = [build_program(TOY, js) for js in sets]
    return progs + stalled, jobs + sets


@pytest.fixture(scope="module")
def engine_runs(model):
    """One simulation: the programs of :func:`_engine_programs`, then the three real ones
    again with 30 % memory stalls."""
    progs, jobs = _engine_programs(model)
    out, _ = rtl_dsc(TOY, progs, stall=[0.0] * 5 + [0.3] * 3, run_name="dsc_engine")
    return {"progs": progs, "jobs": jobs, "runs": out}


def test_engine_overlap_bit_exact_and_cycles(engine_runs):
    """CFSE work beside an overlapped GEMM is bit-exact, every descriptor's cycles equal
    the model's (the engine's background time measured), both regimes occur (the store
    waits for the engine; the CFSE op outlasts it), END and a GEMM wait for the engine."""
    progs, runs, jobs = engine_runs["progs"], engine_runs["runs"], engine_runs["jobs"]
    mdl = []
    for prog, run, js in zip(progs[:5], runs[:5], jobs[:5]):
        _check_run(TOY, prog, run, js)
        mdl.append(_check_program_cycles(prog, run))
        assert len(run["engine"]) == 2 * sum(1 for d in prog.descs if d["op"] == 4)
    assert all(m["engine_hidden"] > 0 for m in mdl)
    assert any(m["engine_wait"] > 0 for m in mdl[:3])
    assert any(m["engine_wait"] == 0 for m in mdl[:3])
    # END waits (the overlapped GEMM is the last op): its cycles include the engine's
    assert mdl[3]["per_desc"][-1] > dcy.overhead(64)
    # the second GEMM waits in DECODE for the first (only a softmax between them)
    g2 = [i for i, d in enumerate(progs[4].descs) if d["op"] == 4][1]
    assert mdl[4]["per_desc"][g2] > dcy.descriptor_cycles(
        TOY, progs[4].descs[g2], 64, gemm_bodies(
            progs[4].descs, stage_durations(progs[4].descs, runs[4]["stages"],
                                            runs[4]["cycles"], 64),
            runs[4]["engine"], 64)[1])


def test_engine_overlap_pays_and_mutations_fail(engine_runs, monkeypatch):
    """The overlapped programs take fewer cycles than the model gives the same work in
    sequence; a model without the engine interlock, and one that runs the GEMMs in
    sequence, both miss the RTL's cycles."""
    progs, runs = engine_runs["progs"], engine_runs["runs"]
    for prog, run in zip(progs[:3], runs[:3]):
        durs = stage_durations(prog.descs, run["stages"], run["cycles"], 64)
        bodies = gemm_bodies(prog.descs, durs, run["engine"], 64)
        seq_bodies = [b[1] if isinstance(b, tuple) else b for b in bodies]
        seq = [{**d, "overlap": 0} if d["op"] == 4 else d for d in prog.descs]
        assert dcy.program_cycles(TOY, seq, 64, seq_bodies)["total"] > run["cycles"]
    for prog, run in zip(progs[:5], runs[:5]):
        durs = stage_durations(prog.descs, run["stages"], run["cycles"], 64)
        bodies = gemm_bodies(prog.descs, durs, run["engine"], 64)
        if dcy.program_cycles(TOY, prog.descs, 64, bodies)["engine_wait"]:
            with monkeypatch.context() as mp:
                mp.setattr(dcy, "ENGINE_INTERLOCKED", ())
                assert dcy.program_cycles(TOY, prog.descs, 64, bodies)["total"] != \
                    run["cycles"]


def test_engine_overlap_under_stalls(engine_runs):
    """With 30 % memory stalls the overlapped programs stay bit-exact."""
    progs, runs, jobs = engine_runs["progs"], engine_runs["runs"], engine_runs["jobs"]
    for prog, run, js in zip(progs[5:], runs[5:], jobs[5:]):
        _check_run(TOY, prog, run, js)


def test_overlap_cfse_keeps_the_block_data_order(model):
    """The host's schedule (no RTL): each CFSE job with ``beside`` follows a GEMM job that
    does not need it, after every job it needs; the split jobs cover the unsplit ones'
    outputs; a sparse iteration's FFN-Reuse delta stays before FC2; without
    ``cfse_overlap`` nothing moves."""
    from exion.sim.dsc_program import block_jobs
    for it in (0, 1):
        rec = block_case(model, META, 1, it).rec
        base = block_jobs(TOY, rec, cfse_overlap=False, fuse_gelu=False)
        jobs = block_jobs(TOY, rec, fuse_gelu=False)
        names = [j.name for j in jobs]
        assert all(not getattr(j, "beside", False) for j in base)
        pos = {n: i for i, n in enumerate(names)}
        heads = sum(1 for n in names if n.startswith("scores["))
        for h in range(heads):
            assert pos[f"scores[{h}]"] < pos[f"softmax[{h}]"] < pos[f"pv[{h}]"]
        assert max(pos[n] for n in names if n.startswith("gelu[")) < pos["ffnr"]
        assert all(pos[f"fc1[{c}]"] < pos[f"gelu[{c}]"] for c in range(4))
        fc2 = "fc2" if it == 0 else "fc2_delta"
        assert (pos["ffnr"] > pos[fc2]) == (it == 0)
        for i, j in enumerate(jobs):
            if getattr(j, "beside", False):
                assert isinstance(jobs[i - 1], GemmJob)
        bs = {j.name: j for j in base}
        np.testing.assert_array_equal(np.concatenate([j.expect for j in jobs
                                                      if j.name.startswith("gelu[")], axis=1),
                                      bs["gelu"].expect)
        np.testing.assert_array_equal(np.concatenate([j.expect for j in jobs
                                                      if j.name.startswith("softmax[")]),
                                      bs["softmax"].expect)


@pytest.mark.parametrize("name,bus", [("toy", 64), ("exion16", 32), ("exion16", 64)])
def test_auto_cfse_overlap_takes_the_faster_estimate(model, name, bus):
    """``cfse_overlap="auto"`` keeps whichever of the chosen EP schedule's programs, with or
    without the CFSE work beside the GEMMs, the cycle model estimates faster (exion16 at 32
    bits: the sparse iteration's per-head softmax costs more than it hides); a bad value is
    a one-line error."""
    from exion.errors import ExionError
    from exion.sim.dsc_program import block_program
    cfg = PRESETS[name]
    for it in (0, 1):
        rec = block_case(model, META, 1, it).rec
        est = {}
        for co in (True, False):
            _, prog, _ = block_program(cfg, rec, 0, "auto", bus, cfse_overlap=co)
            est[co] = dcy.program_cycles(cfg, prog.descs, bus)["total"]
            assert prog.cfse_overlap == co
        _, prog, _ = block_program(cfg, rec, 0, "auto", bus)
        assert dcy.program_cycles(cfg, prog.descs, bus)["total"] == min(est.values())
        assert prog.cfse_overlap == (est[True] <= est[False])
    with pytest.raises(ExionError, match="cfse_overlap"):
        block_program(cfg, rec, 0, "auto", bus, cfse_overlap="sometimes")


# ---- GELU_OMEM: FC1's GELU straight from OMEM (the CFSE fed by the SDUE) ----------------

def _gelu_omem_jobs(model, rng):
    """Directed fused jobs: rows not a multiple of R and columns not a multiple of L (the
    last group reads past the tile, groups straddle row blocks), a zero input whose
    preload spans the accumulator's extremes (GELU of the saturating ends), one token;
    seeded random shapes; the real block's FC1 + GELU, dense and sparse (ConMerge tiles)."""
    from exion.golden.cfse import GeluParams, gelu_params, gelu_requant
    from exion.sim.dsc_program import block_jobs
    par = gelu_params(1e-4, 2e-3).to_dict()
    A = TOY.acc_width
    lo, hi = -(1 << (A - 1)), (1 << (A - 1)) - 1

    def job(name, a, b, base, mask=None):
        mask = np.ones(base.shape, bool) if mask is None else mask
        acc = np.where(mask, base + a @ b, base)
        return GemmJob(name, [a], b, mask, base, gelu_requant(acc, GeluParams(**par), TOY),
                       gelu=par)
    out = [job("ragged", rng.integers(-2047, 2048, (11, 24)), rng.integers(-2047, 2048, (24, 7)),
               rng.integers(-10**6, 10**6, (11, 7))),
           job("extremes", np.zeros((9, 8), np.int64), np.ones((8, 6), np.int64),
               np.tile(np.array([lo, hi, lo + 1, hi - 1, -1, 0]), (9, 1))),
           job("one_token", rng.integers(-2047, 2048, (1, 16)), rng.integers(-2047, 2048, (16, 5)),
               rng.integers(-10**5, 10**5, (1, 5)))]
    for n in range(2):
        m, k, c = (int(v) for v in rng.integers(1, 20, 3))
        out.append(job(f"random{n}", rng.integers(-2047, 2048, (m, 4 * k)),
                       rng.integers(-2047, 2048, (4 * k, c)), rng.integers(-10**6, 10**6, (m, c)),
                       rng.random((m, c)) < 0.7))
    for it in (0, 1):
        js = {j.name: j for j in block_jobs(TOY, block_case(model, META, 1, it).rec,
                                            cfse_overlap=False)}
        out.append(js["fc1_gelu"])
    return out


@pytest.fixture(scope="module")
def gelu_omem_runs(model):
    """One simulation: every fused job in one program; the same with 30 % memory stalls."""
    rng = np.random.default_rng(41)
    print("GELU_OMEM cases: seed 41")
    jobs = _gelu_omem_jobs(model, rng)
    progs = [build_program(TOY, jobs), build_program(TOY, jobs)]
    out, _ = rtl_dsc(TOY, progs, stall=[0.0, 0.3], run_name="dsc_gelu_omem")
    return {"jobs": jobs, "progs": progs, "runs": out}


def test_gelu_omem_bit_exact_and_cycles(gelu_omem_runs):
    """Every fused job's H bit-exact against golden's gelu_requant of its product, every
    descriptor's cycles equal to the model (GELU_OMEM simulated per cycle), also under
    30 % memory stalls (values only); the sparse block's FC1 ran ConMerge tiles."""
    jobs, progs, runs = gelu_omem_runs["jobs"], gelu_omem_runs["progs"], gelu_omem_runs["runs"]
    assert sum(d["op"] == dcy.OPS["GELU_OMEM"] for d in progs[0].descs) >= len(jobs)
    assert not jobs[-1].mask.all()
    _check_run(TOY, progs[0], runs[0], jobs)
    _check_program_cycles(progs[0], runs[0])
    _check_run(TOY, progs[1], runs[1], jobs)


def test_gelu_omem_model_mutations_fail(gelu_omem_runs, monkeypatch):
    """A GELU_OMEM model one cycle off at the end, or one whose output buffer takes a word
    every ``per_word + 1`` cycles (the GELU op's single buffer), misses the RTL."""
    prog, run = gelu_omem_runs["progs"][0], gelu_omem_runs["runs"][0]
    durs = stage_durations(prog.descs, run["stages"], run["cycles"], 64)
    bodies = gemm_bodies(prog.descs, durs, run["engine"], 64)
    monkeypatch.setattr(dcy, "GELU_OMEM_FIXED", dcy.GELU_OMEM_FIXED + 1)
    assert dcy.program_cycles(TOY, prog.descs, 64, bodies)["total"] != run["cycles"]
    monkeypatch.undo()
    slow = {**dcy.item_beats(TOY, 64)}
    slow["word"] += 1
    monkeypatch.setattr(dcy, "item_beats", lambda cfg, bus: slow)
    assert dcy.program_cycles(TOY, prog.descs, 64, bodies)["total"] != run["cycles"]


def test_gelu_omem_saves_port_cycles(model):
    """Fusing FC1's GELU (no accumulator over the port) shortens the block's program on
    both configs, in the cycle model (the RTL figures are in docs/dsc.md section 4)."""
    from exion.sim.dsc_program import block_program
    for name in ("toy", "exion16"):
        for it in (0, 1):
            rec = block_case(model, META, 1, it).rec
            t = {f: dcy.program_cycles(PRESETS[name], block_program(
                PRESETS[name], rec, 0, fuse_gelu=f)[1].descs, 64)["total"] for f in (True, False)}
            assert t[True] < t[False], (name, it, t)


# ---- one weight stream for the SDUE and the EPRE: the GMEM_LOAD tee (issue 18) ----------

def _tee_jobs(rng, n=8, d=16, heads=2, dh=8, q_th=None, cfg=TOY):
    """Eager prediction of ``heads`` heads, then its Q|K|V product (one toy tile: K = d,
    3 d columns), the EPRE's Wq / Wk being B's head slices, as ``workloads.dit`` quantises
    them; the product's mask skips some rows (as EP's row skipping does)."""
    from exion.golden.conmerge import masked_gemm
    from exion.golden.predict import epre
    from exion.sim.dsc_program import PredictJob
    w = cfg.wmax
    x = rng.integers(-w, w + 1, (n, d))
    b = rng.integers(-w, w + 1, (d, 3 * d))
    wq = [b[:, h * dh:(h + 1) * dh] for h in range(heads)]
    wk = [b[:, d + h * dh:d + (h + 1) * dh] for h in range(heads)]
    exp, sh = [], []
    for h in range(heads):
        r = epre(cfg, x, wq[h], wk[h], 0.5, None, None,
                 None if q_th is None else int(q_th[h]), "top1", 2)
        exp.append(np.concatenate([r.score_mask, r.dominant[:, None]], axis=1))
        sh.append([r.shift_q, r.shift_k])
    pj = PredictJob("epre", x, wq, wk, 0.5, np.array(sh), q_th, "top1", 2, np.stack(exp))
    mask = rng.random((n, 3 * d)) < 0.8
    base = np.broadcast_to(rng.integers(-10**5, 10**5, (1, 3 * d)), (n, 3 * d))
    qkv = GemmJob("qkv", [x], b, mask, base, masked_gemm(cfg, x, b, mask, base,
                                                         accumulate=True))
    return pj, qkv


def _tee_interlocked(prog):
    """``prog`` (a teed program of 2 heads) with head 0's EPRE overlapped and its masks
    stored by an EPRE_STORE after head 1's teed GMEM_LOADs, which so wait for the run."""
    ds = [dict(d) for d in prog.descs]
    ep = [i for i, d in enumerate(ds) if d["op"] == dcy.OPS["EPRE"]]
    st = {"op": dcy.OPS["EPRE_STORE"], "count": ds[ep[0]]["count"], "dst": ds[ep[0]]["dst"],
          "job": "epre"}
    ds[ep[0]] = {**ds[ep[0]], "overlap": 1}
    return _rewrite(prog, ds[:ep[1]] + [st] + ds[ep[1]:])


@pytest.fixture(scope="module")
def tee_runs():
    """One simulation: EP + its Q|K|V product with the tee (2 and 3 heads, one with the
    dominant rule), the same without (EPRE_WLOAD), the teed one under 30 % memory stalls,
    one whose teed GMEM_LOADs wait for an overlapped EPRE run, and one with the tee bit
    cleared in head 0's Wk load (a mutant: the EPRE predicts from the Wk of nothing)."""
    rng = np.random.default_rng(18)
    print("tee cases: seed 18")
    sets = [_tee_jobs(rng), _tee_jobs(rng, n=11, d=20, heads=3, dh=5,
                                      q_th=np.array([0, 400, 10**6]))]
    progs = [build_program(TOY, list(js)) for js in sets]
    progs.append(build_program(TOY, list(sets[0]), share_w=False))
    progs.append(build_program(TOY, list(sets[0])))
    progs.append(_tee_interlocked(build_program(TOY, list(sets[0]))))
    mut = build_program(TOY, list(sets[0]))
    ds = [dict(d) for d in mut.descs]
    next(d for d in ds if d.get("tee") and d["tee_base"])["tee"] = 0
    progs.append(_rewrite(mut, ds))
    jobs = [list(sets[0]), list(sets[1]), list(sets[0]), list(sets[0]), list(sets[0]),
            list(sets[0])]
    out, _ = rtl_dsc(TOY, progs, stall=[0.0, 0.0, 0.0, 0.3, 0.0, 0.0], run_name="dsc_tee")
    return {"progs": progs, "jobs": jobs, "runs": out}


def test_tee_bit_exact_and_cycles(tee_runs):
    """The EPRE fed by the product's own GMEM_LOADs predicts bit-exactly (no EPRE_WLOAD in
    the program), the product is bit-exact, every descriptor's cycles equal the model's,
    and the tee moves fewer beats and cycles than EPRE_WLOAD's separate copy."""
    from exion.sim.dsc_program import program_beats
    progs, runs, jobs = tee_runs["progs"], tee_runs["runs"], tee_runs["jobs"]
    for prog, run, js in zip(progs[:3], runs[:3], jobs[:3]):
        _check_run(TOY, prog, run, js)
        _check_program_cycles(prog, run)
    for prog in progs[:2]:
        ops = [d["op"] for d in prog.descs]
        assert dcy.OPS["EPRE_WLOAD"] not in ops
        assert sum(1 for d in prog.descs if d.get("tee")) == 2 * len(prog.jobs[0].wq)
    assert dcy.OPS["EPRE_WLOAD"] in [d["op"] for d in progs[2].descs]
    assert program_beats(TOY, progs[0]) < program_beats(TOY, progs[2])
    assert runs[0]["cycles"] < runs[2]["cycles"]


def test_tee_stalls_interlock_and_mutants(tee_runs, monkeypatch):
    """Under memory stalls the teed program is bit-exact; a teed GMEM_LOAD after an
    overlapped EPRE waits for the run (masks exact: it did not overwrite the W memory the
    run reads; cycles exact, with a wait); a model without that wait misses the cycles; a
    program whose Wk load is not teed predicts wrong masks."""
    progs, runs, jobs = tee_runs["progs"], tee_runs["runs"], tee_runs["jobs"]
    _check_run(TOY, progs[3], runs[3], jobs[3])
    _check_run(TOY, progs[4], runs[4], jobs[4])
    mdl = _check_program_cycles(progs[4], runs[4])
    assert mdl["epre_wait"] > 0
    durs = stage_durations(progs[4].descs, runs[4]["stages"], runs[4]["cycles"], 64)
    bodies = gemm_bodies(progs[4].descs, durs, runs[4]["engine"], 64)
    plain = [{k: v for k, v in d.items() if k != "tee"} for d in progs[4].descs]
    assert dcy.program_cycles(TOY, plain, 64, bodies)["total"] != runs[4]["cycles"]
    out = read_results(TOY, progs[5], runs[5]["image"])
    assert not np.array_equal(out[0], jobs[5][0].expect)
    np.testing.assert_array_equal(out[1], jobs[5][1].expect)


def test_tee_applies_only_where_the_weights_are_shared(model):
    """The host tees only a product whose Q / K head slices are the EPRE's weights and that
    is one tile: other weights (or toy's real block, whose Q|K|V spans several tiles) keep
    EPRE_WLOAD; the digits DiT quantises Q|K|V per head slice, so its EP weights are
    those slices."""
    from dataclasses import replace

    from exion.sim.dsc_program import block_jobs
    rng = np.random.default_rng(5)
    pj, qkv = _tee_jobs(rng)
    other = replace(pj, wk=[w + 1 for w in pj.wk])
    ops = [d["op"] for d in build_program(TOY, [other, qkv]).descs]
    assert dcy.OPS["EPRE_WLOAD"] in ops
    rec = block_case(model, META, 1, 0).rec
    by = {j.name: j for j in block_jobs(TOY, rec, overlap=False)}
    ep, q = by["epre"], by["qkv"]
    d, dh = q.b.shape[1] // 3, ep.wq[0].shape[1]
    for h in range(len(ep.wq)):
        np.testing.assert_array_equal(ep.wq[h], q.b[:, h * dh:(h + 1) * dh])
        np.testing.assert_array_equal(ep.wk[h], q.b[:, d + h * dh:d + (h + 1) * dh])
    ops = [d["op"] for d in build_program(TOY, [ep, q]).descs]
    assert dcy.OPS["EPRE_WLOAD"] in ops     # toy: Q|K|V in 6 tiles
    e16 = PRESETS["exion16"]
    by = {j.name: j for j in block_jobs(e16, rec, overlap=False)}
    prog = build_program(e16, [by["epre"], by["qkv"]])
    assert dcy.OPS["EPRE_WLOAD"] not in [d["op"] for d in prog.descs]
    assert sum(1 for d in prog.descs if d.get("tee")) == 2 * len(ep.wq)


# ---- the EPRE's weights into GMEM: GMEM_EFILL and the double-buffered W memory (issue 19) -

def _efill_jobs(rng, n, d, heads, dh, exact=False, cfg=TOY):
    """EP + its Q|K|V product (:func:`_tee_jobs`), and the same product split for the
    overlap (K|V, Q: ``split_qkv``); with ``exact`` the EP job takes exact keys instead
    (random K rows: the EPRE's weights are then Wq^T only)."""
    from exion.sim.dsc_program import split_qkv
    pj, qkv = _tee_jobs(rng, n=n, d=d, heads=heads, dh=dh, cfg=cfg)
    if exact:
        w = TOY.wmax
        pj = _pj_exact("epre", pj.x, pj.wq, [rng.integers(-w, w + 1, (n, dh))
                                             for _ in range(heads)], 0.5)
    return pj, qkv, split_qkv(cfg, qkv)


def _ops(prog):
    return [d["op"] for d in prog.descs]


@pytest.fixture(scope="module")
def efill_runs():
    """One simulation: EP then its Q|K|V product head by head with the Q_h / K_h columns
    filled from the EPRE's W memory (d = 32: the product is two toy tiles, so no tee); the
    overlapped schedule with the W memory double-buffered (3 heads of 5, 2 of 8, exact keys
    with 2 of 8, and the 3-head one under 30 % memory stalls); EP of 2 heads with K / V
    beside it (no fill) whose head-1 EPRE_WLOAD is moved right after the overlapped run 0,
    into the buffer run 0 reads (the interlock must hold it); and a mutant whose head-1 K
    fill reads the other buffer."""
    rng = np.random.default_rng(41)
    print("efill cases: seed 41")
    seq = _efill_jobs(rng, 8, 32, 2, 16)
    sets = [_efill_jobs(rng, 8, 15, 3, 5), _efill_jobs(rng, 11, 16, 2, 8),
            _efill_jobs(rng, 9, 16, 2, 8, exact=True)]
    jobs = ([list(seq[:2])] + [[s[0], *s[2]] for s in sets] + [[sets[0][0], *sets[0][2]]]
            + [[sets[1][0], sets[1][2][0]], [sets[1][0], *sets[1][2]]])
    progs = [build_program(TOY, js, share_w=k != 5) for k, js in enumerate(jobs)]
    ds = [dict(d) for d in progs[5].descs]
    wl = [i for i, d in enumerate(ds) if d["op"] == dcy.OPS["EPRE_WLOAD"]]
    ep = next(i for i, d in enumerate(ds) if d["op"] == dcy.OPS["EPRE"])
    moved = ds.pop(wl[1])
    assert moved["ubase"] == 0 and ds[ep].get("overlap")
    _rewrite(progs[5], ds[:ep + 1] + [moved] + ds[ep + 1:])
    mut = [dict(d) for d in progs[6].descs]
    k1 = next(d for d in mut if d["op"] == dcy.OPS["GMEM_EFILL"]
              and d["tee_base"] > dcy.epre_w_half(TOY))
    k1["tee_base"] -= dcy.epre_w_half(TOY)
    _rewrite(progs[6], mut)
    out, _ = rtl_dsc(TOY, progs, stall=[0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0],
                     run_name="dsc_efill")
    return {"progs": progs, "jobs": jobs, "runs": out}


def test_efill_bit_exact_and_cycles(efill_runs):
    """The SDUE's Q_h / K_h columns filled from the EPRE's W memory: masks, products
    bit-exact, every descriptor's cycles equal to the model; no GMEM_LOAD brings the
    EPRE's weights in again (V only, and K with exact keys); the double-buffered overlapped
    schedule hides the runs (head h + 1's WLOAD goes beside run h) and beats the unshared
    overlapped program in cycles (in beats only on a block whose head tiles are not this
    small: ``test_efill_where_it_applies``)."""
    progs, runs, jobs = efill_runs["progs"], efill_runs["runs"], efill_runs["jobs"]
    for k, (prog, run, js) in enumerate(zip(progs[:5], runs[:5], jobs[:5])):
        _check_run(TOY, prog, run, js)
        if k != 4:                               # 4: under memory stalls
            _check_program_cycles(prog, run)
        assert prog.shared_w and dcy.OPS["GMEM_EFILL"] in _ops(prog)
        loaded = sum(d["count"] for d in prog.descs if d["op"] == dcy.OPS["GMEM_LOAD"])
        filled = sum(d["count"] for d in prog.descs if d["op"] == dcy.OPS["GMEM_EFILL"])
        if js[0].k_exact is None:
            assert 2 * loaded == filled          # Q, K filled; V loaded
        else:
            assert loaded == 2 * filled          # Q filled; K, V loaded
    ds = progs[1].descs
    wl = [i for i, d in enumerate(ds) if d["op"] == dcy.OPS["EPRE_WLOAD"]]
    ep = [i for i, d in enumerate(ds) if d["op"] == dcy.OPS["EPRE"]]
    assert all(ds[i].get("overlap") for i in ep) and wl[1] == ep[0] + 1
    assert [ds[i]["ubase"] for i in wl] == [0, dcy.epre_w_half(TOY), 0]
    ov = dcy.program_cycles(TOY, ds, 64)
    assert ov["epre_hidden"] > ov["epre_wait"]
    plain = build_program(TOY, jobs[1], share_w=False)
    assert runs[1]["cycles"] < dcy.program_cycles(TOY, plain.descs, 64)["total"]


def test_efill_interlock_and_mutants(efill_runs):
    """An EPRE_WLOAD into the buffer the running run reads waits for it (masks bit-exact,
    cycles equal to the model, which waits); one into the other buffer goes beside (the
    double-buffered schedule): a model that swaps the two misses the RTL's cycles in both
    programs; a K fill from the wrong buffer gives a wrong K|V product."""
    progs, runs, jobs = efill_runs["progs"], efill_runs["runs"], efill_runs["jobs"]
    _check_run(TOY, progs[5], runs[5], jobs[5])
    assert _check_program_cycles(progs[5], runs[5])["epre_wait"] > 0
    for prog, run in ((progs[5], runs[5]), (progs[1], runs[1])):
        durs = stage_durations(prog.descs, run["stages"], run["cycles"], 64)
        bodies = gemm_bodies(prog.descs, durs, run["engine"], 64)
        flip = [{**d, "ubase": dcy.epre_w_half(TOY) - d["ubase"]}
                if d["op"] == dcy.OPS["EPRE_WLOAD"] else d for d in prog.descs]
        assert dcy.program_cycles(TOY, flip, 64, bodies)["total"] != run["cycles"]
    out = read_results(TOY, progs[6], runs[6]["image"])
    np.testing.assert_array_equal(out[0], jobs[6][0].expect)
    assert not np.array_equal(out[1], jobs[6][1].expect)


def test_efill_where_it_applies(model):
    """The host fills only where the heads cover the product's columns and the EPRE's
    weights are its head slices; the digits block's overlapped program on toy uses the
    double-buffered schedule (``block_program`` keeps it: the cycle model estimates it
    faster than loading the weights twice), and ``share_w=False`` restores EPRE_WLOAD +
    GMEM_LOAD of every column."""
    from dataclasses import replace

    from exion.sim.dsc_program import block_program, program_beats
    rng = np.random.default_rng(6)
    pj, qkv, split = _efill_jobs(rng, 8, 16, 3, 5)        # 3 x 5 < 16 columns
    assert dcy.OPS["GMEM_EFILL"] not in _ops(build_program(TOY, [pj, *split]))
    pj, qkv, split = _efill_jobs(rng, 8, 16, 2, 8)
    other = replace(pj, wq=[-w for w in pj.wq])
    assert dcy.OPS["GMEM_EFILL"] not in _ops(build_program(TOY, [other, *split]))
    rec = block_case(model, META, 1, 0).rec
    _, prog, used = block_program(TOY, rec, 0, "overlap")
    assert dcy.OPS["GMEM_EFILL"] in _ops(prog) and prog.shared_w
    _, plain, _ = block_program(TOY, rec, 0, "overlap", share_w=False)
    assert dcy.OPS["GMEM_EFILL"] not in _ops(plain) and not plain.shared_w
    assert (dcy.program_cycles(TOY, prog.descs, 64)["total"]
            < dcy.program_cycles(TOY, plain.descs, 64)["total"])
    assert program_beats(TOY, prog) < program_beats(TOY, plain)


@pytest.mark.long
def test_efill_exion16():
    """exion16's DSC (Le = 96 = 6 L lanes) on Verilator: the overlapped fill with the two W
    buffers on weight columns of 3 and 4 GMEM words (d = 48, 64: three and four lane slots
    of one EPRE word) and of 3 words whose last is partial (d = 40), bit-exact, every
    descriptor's cycles equal to the model."""
    e16 = PRESETS["exion16"]
    rng = np.random.default_rng(47)
    print("exion16 efill cases: seed 47")
    sets = [_efill_jobs(rng, 16, 48, 3, 16, cfg=e16), _efill_jobs(rng, 12, 64, 4, 16, cfg=e16),
            _efill_jobs(rng, 10, 40, 5, 8, cfg=e16)]
    jobs = [[s[0], *s[2]] for s in sets]
    progs = [build_program(e16, js) for js in jobs]
    for prog in progs:
        assert dcy.OPS["GMEM_EFILL"] in _ops(prog)
    out, _ = rtl_dsc(e16, progs, run_name="dsc_efill_e16")
    for prog, run, js in zip(progs, out, jobs):
        _check_run(e16, prog, run, js)
        _check_program_cycles(prog, run, 64, e16)


@pytest.mark.long
def test_efill_wide_epre_words_pysim():
    """GMEM_EFILL with EPRE words of Le = 2 L lanes (toy with ``epre_lanes = 8``; exion16
    has 6 slots): two GMEM words per EPRE word, a half-filled last word per column (d = 20:
    5 GMEM words, 3 EPRE words a W^T row), sequential (d = 20 in 2 tiles: no tee) and
    overlapped double-buffered; in Amaranth's simulator, bit-exact, every descriptor's
    cycles equal to the model."""
    import dataclasses

    from exion.sim.dsc_pysim import pysim_dsc
    cfg = dataclasses.replace(TOY, epre_lanes=8)
    assert cfg.epre_lane_count == 2 * cfg.lanes
    rng = np.random.default_rng(43)
    print("wide efill cases: seed 43")
    for jobs in ([*_efill_jobs(rng, 6, 24, 2, 12)[:2]],
                 [(e := _efill_jobs(rng, 5, 20, 2, 10))[0], *e[2]]):
        prog = build_program(cfg, jobs)
        assert dcy.OPS["GMEM_EFILL"] in _ops(prog) and not any(d.get("tee") for d in prog.descs)
        run = pysim_dsc(cfg, prog)
        assert run["error"] == 0
        for j, o in zip(jobs, read_results(cfg, prog, run["image"])):
            np.testing.assert_array_equal(o, j.expect, err_msg=j.name)
        _check_program_cycles(prog, run, 64, cfg)


@pytest.mark.long
def test_tee_wide_epre_words_pysim():
    """An EPRE word of Le = 2 L lanes (toy with ``epre_lanes = 8``; exion16 has 6 slots):
    the tee gathers two GMEM words per EPRE word, and writes a half-filled one where a
    column ends (d = 12: 3 GMEM words, 2 EPRE words a W^T row); in Amaranth's simulator
    (no Verilator build of this variant), bit-exact, every descriptor's cycles equal the
    model."""
    import dataclasses

    from exion.hw.dsc import tee_supported
    from exion.sim.dsc_pysim import pysim_dsc
    cfg = dataclasses.replace(TOY, epre_lanes=8)
    assert tee_supported(cfg) and cfg.epre_lane_count == 2 * cfg.lanes
    rng = np.random.default_rng(19)
    print("wide tee cases: seed 19")
    jobs = [*_tee_jobs(rng, n=5, d=12, heads=2, dh=3), *_tee_jobs(rng, n=6, d=16, heads=1,
                                                                  dh=7)]
    jobs[2] = dataclasses.replace(jobs[2], name="epre2")
    jobs[3] = dataclasses.replace(jobs[3], name="qkv2")
    prog = build_program(cfg, jobs)
    assert sum(1 for d in prog.descs if d.get("tee")) == 6
    assert dcy.OPS["EPRE_WLOAD"] not in [d["op"] for d in prog.descs]
    run = pysim_dsc(cfg, prog)
    assert run["error"] == 0
    for j, o in zip(jobs, read_results(cfg, prog, run["image"])):
        np.testing.assert_array_equal(o, j.expect, err_msg=j.name)
    _check_program_cycles(prog, run, 64, cfg)


@pytest.mark.parametrize("bus", [pytest.param(256, marks=pytest.mark.long), 32])
def test_omem_store_back_to_back_pysim(bus):
    """OMEM_STORE reads the next address while it sends the current one: on a 256-bit bus
    a toy OMEM address is one beat (each later address passes ST_LATCH again), on a 32-bit
    bus eight (back to back); in Amaranth's simulator, bit-exact, every descriptor's cycles
    equal to the model, and a model that charges the old two cycles per address misses."""
    from exion.sim.dsc_pysim import pysim_dsc
    rng = np.random.default_rng(23)
    print("omem store cases: seed 23")
    jobs = [_small_gemm(rng), _small_gemm(rng, row_constant=True)]
    prog = build_program(TOY, jobs, bus_bits=bus)
    ib = dcy.item_beats(TOY, bus)
    assert ib["omem"] == (1 if bus == 256 else 8)
    run = pysim_dsc(TOY, prog)
    assert run["error"] == 0
    for j, o in zip(jobs, read_results(TOY, prog, run["image"])):
        np.testing.assert_array_equal(o, j.expect, err_msg=j.name)
    _check_program_cycles(prog, run, bus)
    durs = stage_durations(prog.descs, run["stages"], run["cycles"], bus)
    for d, t in zip(prog.descs, durs):
        if d["op"] == dcy.OPS["OMEM_STORE"] and d["count"] > 1:
            assert t - dcy.overhead(bus) != d["count"] * (2 + ib["omem"]) + 2


def _queued(cfg, d, kb, wb=0, wait=1):
    """An EPRE descriptor made a queued run (``k_wait``, Kh buffer ``kb``, W buffer ``wb``;
    issue 19): overlapped, its rows to the mask FIFO; returns it and its EPRE_STORE (``kq``)."""
    from exion.hw.epre import run_layout
    from exion.sim.payload import pack
    ep = {**d["ep"], "k_wait": wait, "k_buf": kb, "w_buf": wb}
    run = {k: v for k, v in d.items() if k != "dst"} | {
        "overlap": 1, "ep": ep, "run": pack(run_layout(cfg, hdsc.dsc_epre_sizes(cfg)), ep)}
    return run, {"op": dcy.OPS["EPRE_STORE"], "count": d["count"], "kq": 1, "dst": d["dst"]}


def _reorder(prog, descs):
    """``prog`` with its descriptors replaced by ``descs``, written after its data (the
    data stay put; ``prog_base`` moves there; stage labels renumbered, as the builder's)."""
    descs = [{**d, "stage": i & 0xFF} for i, d in enumerate(descs)]
    raw = b"".join(encode_desc(d).ljust(32, b"\0") for d in descs)
    base = -(-len(prog.image) // 64) * 64
    image = np.zeros(base + len(raw), np.uint8)
    image[:len(prog.image)] = prog.image
    image[base:] = np.frombuffer(raw, np.uint8)
    prog.image, prog.prog_base, prog.descs = image, base, descs
    return prog


@pytest.mark.parametrize("name", ["toy", pytest.param("exion16", marks=pytest.mark.long)])
def test_queued_runs(name):
    """Queued EPRE runs (issue 19, hw/dsc.py "Queue") on Verilator, keys
    teed by OMEM_STOREs with ``ktee`` and ``kq``: (a) the keys after the run's hand-over (the
    run waits between its stages), (b) before it (its Kh buffer already full), (c) two heads
    queued back to back (Kh buffers 0 and 1, W buffers 0 and 1: the second run in the slot
    while the first waits for its keys; both keys' stores, then a delay, before both
    EPRE_STOREs, so that on exion16 run 1's rows reach the mask FIFO while the first
    EPRE_STORE drains it: that store must take exactly its rows -- an EP_STORE that took
    the next rows too never ended, found on exion16's digits block and shown once on toy
    with 16 units in Amaranth's simulator); masks bit-exact against golden, every
    descriptor's cycles equal to the model, also under 30 % memory stalls (toy). Mutation: (a)
    alone with the run not waiting (``k_wait`` cleared: an ordinary overlapped run, which
    the tee waits for) gives other masks (stage 2 reads keys not yet written)."""
    cfg = PRESETS[name]
    rng = np.random.default_rng(67)
    print("queued-run cases: seed 67")

    def rnd(*shape, lim=cfg.wmax):
        return rng.integers(-lim, lim + 1, shape)
    x = rnd(16, 64)
    jobs = [_pj_komem(cfg, "q_after", x, [rnd(64, 16)], [rnd(16, 16, lim=1 << 20)], 0.3,
                      q_th=2000, path="store"),
            _pj_komem(cfg, "q_before", rnd(11, 13), [rnd(13, 7)], [rnd(11, 7, lim=1 << 18)],
                      0.5, path="store"),
            _pj_komem(cfg, "q_two", x, [rnd(64, 16), rnd(64, 16)],
                      [rnd(16, 16, lim=1 << 21), rnd(16, 16, lim=1 << 12)], 0.2, path="store")]

    def program(jobs, wait=1):
        prog = build_program(cfg, jobs)
        out, heads, OPS = [], [], dcy.OPS
        for d in prog.descs:         # per head: [WLOAD, OMEM_LOAD, OMEM_STORE ktee, EPRE]
            if d["op"] in (OPS["EPRE_WLOAD"], OPS["OMEM_LOAD"], OPS["OMEM_STORE"]):
                heads.append(d)
            elif d["op"] == OPS["EPRE"]:
                out.append(heads + [d])
                heads = []
            elif d["op"] != OPS["END"]:
                out.append([d])
        descs, pending = [], []
        for grp in out:
            if grp[-1]["op"] != OPS["EPRE"]:
                descs += grp
                continue
            wl, ld, st, ep = grp
            h = len(pending)
            two = ep["job"] == "q_two"
            run, store = _queued(cfg, ep, h if two else 0, h if two else 0, wait)
            st = {**st, "kq": 1, "k_buf": run["ep"]["k_buf"]}
            wl = {**wl, "ubase": h * hdsc.dsc_epre_sizes(cfg).w_half} if two else wl
            if ep["job"] == "q_after":
                descs += [wl, run, ld, st, store]
            elif ep["job"] == "q_before":
                descs += [wl, ld, st, run, store]
            else:
                pending.append((wl, run, ld, st, store))
                if len(pending) == 2:
                    (w0, r0, l0, s0, e0), (w1, r1, l1, s1, e1) = pending
                    # l1 again before e0: run 1's rows reach the FIFO while e0 drains it
                    descs += [w0, r0, w1, r1, l0, s0, l1, s1, l1, e0, e1]
        return _reorder(prog, descs + [{"op": OPS["END"]}])
    # memory stalls on toy only: exion16's stalled bench is a build of its own (minutes)
    progs = [program(jobs)] + ([program(jobs)] if name == "toy" else [])
    out, _ = rtl_dsc(cfg, progs, stall=[0.0, 0.3][:len(progs)], run_name="dsc_queued")
    for prog, run in zip(progs, out):
        assert run["error"] == 0
        for j, o in zip(jobs, read_results(cfg, prog, run["image"])):
            np.testing.assert_array_equal(o, j.expect, err_msg=j.name)
    mdl = _check_program_cycles(progs[0], out[0], 64, cfg)
    assert mdl["epre_wait"] > 0
    bad = program(jobs[:1], wait=0)
    out, _ = rtl_dsc(cfg, [bad], run_name="dsc_queued_bad")
    assert not np.array_equal(read_results(cfg, bad, out[0]["image"])[0], jobs[0].expect)
