"""The DSC's CFSE row units and FFN-Reuse unit sized for the digits DiTs (issue 16, item 5):
``cfg.dsc_row_max`` / ``cfg.dsc_ffnr_dims``. digits64 (64 tokens, rows of 64, H 64 x 256, the
sizes' exact bounds) runs its LN / softmax / GELU / FFN-Reuse segments in the toy core,
bit-exact and cycle-exact; one past either bound stops the core with ``bad_op`` and the
host keeps such a segment."""

import numpy as np
import pytest

from exion import PRESETS
from exion.errors import ExionError
from exion.golden import dsc_cycles as dcy
from exion.hw import dsc as hdsc
from exion.sim.dsc_block import block_case
from exion.sim.dsc_program import (FfnrJob, LayerNormJob, block_jobs, build_program,
                                   encode_desc, read_results, stage_durations)
from exion.sim.dsc_rtl import rtl_dsc
from exion.workloads.dit import DiT
from exion.workloads.weights import load_weights

TOY = PRESETS["toy"]
META = {"steps": 3, "samples": 1, "seed": 5,
        "exion": {"ffn_reuse": True, "n": 2, "s": 0.8, "ep": True, "k": 0.5, "quant": True}}
UNITS = {"ln1", "softmax", "ln2", "gelu", "ffnr"}


def test_dsc_sizes_derived():
    """The digits DiTs' sizes, capped by the config; listed in derived(); the FFN-Reuse
    unit's keyword sizes follow them."""
    for name in ("toy", "exion16"):
        cfg = PRESETS[name]
        assert cfg.dsc_row_max == 64 and cfg.dsc_ffnr_dims == (64, 256)
        d = cfg.derived()
        assert d["dsc_row_max"] == 64 and d["dsc_ffnr_dims"] == (64, 256)
        assert hdsc.dsc_ffnr_sizes(cfg) == {"t_max": 64, "n_max": 256, "d_max": 1,
                                            "hist_max": 64 * 256}
    small = TOY.replace(name="toy_k8", k_max=8)
    assert small.dsc_row_max == 8 and small.dsc_ffnr_dims == (64, 8)


@pytest.fixture(scope="module")
def d64():
    """digits64's block 1, dense (iteration 0) and sparse (iteration 1): the unit segments
    block_jobs puts in the core on toy."""
    model = DiT(load_weights(model="digits64")[0])
    out = []
    for it in (0, 1):
        rec = block_case(model, META, 1, it).rec
        jobs = block_jobs(TOY, rec, cfse_overlap=False, fuse_gelu=False)   # units alone
        names = {j.name for j in jobs}
        assert UNITS <= names and "epre" not in names   # EP: 64 tokens > dsc_epre_dims
        out.append([j for j in jobs if j.name in UNITS])
    return out


@pytest.fixture(scope="module")
def d64_runs(d64):
    """One simulation: the dense and the sparse iteration's unit segments; an LN row one
    longer than dsc_row_max and an H one token taller than the cache (bad_op each)."""
    progs = [build_program(TOY, jobs) for jobs in d64]
    ln = next(j for j in d64[0] if isinstance(j, LayerNormJob))
    ff = next(j for j in d64[0] if isinstance(j, FfnrJob))
    assert ln.x.shape[1] == TOY.dsc_row_max and ff.h.shape == TOY.dsc_ffnr_dims
    bad_n = build_program(TOY, [ln])
    bad_n.descs[0]["n"] = TOY.dsc_row_max + 1
    bad_n.image[:32] = np.frombuffer(encode_desc(bad_n.descs[0]), np.uint8)
    bad_t = build_program(TOY, [ff])
    bad_t.descs[0]["t"] = TOY.dsc_ffnr_dims[0] + 1
    bad_t.image[:32] = np.frombuffer(encode_desc(bad_t.descs[0]), np.uint8)
    progs += [bad_n, bad_t]
    out, _ = rtl_dsc(TOY, progs, run_name="dsc_sizes")
    return {"jobs": d64, "progs": progs, "runs": out}


def test_digits64_units_bit_exact_and_cycles(d64_runs):
    """digits64's LN1, softmax (4 heads of 64 keys), LN2, GELU and FFN-Reuse (dense mask,
    sparse delta) in the toy core: bit-exact, every descriptor's cycles == model."""
    for jobs, prog, run in zip(d64_runs["jobs"], d64_runs["progs"], d64_runs["runs"]):
        assert run["error"] == 0
        for j, o in zip(jobs, read_results(TOY, prog, run["image"])):
            np.testing.assert_array_equal(o, j.expect, err_msg=j.name)
        st = run["stages"]          # a later program starts with the last one's END stage
        st = st if st[0][0] == 0 else st[1:]
        durs = stage_durations(prog.descs, st, run["cycles"], 64)
        for d, t in zip(prog.descs, durs):
            assert t == dcy.descriptor_cycles(TOY, d, 64), d
        assert dcy.program_cycles(TOY, prog.descs, 64)["total"] == run["cycles"]


def test_past_the_sizes_bad_op_and_host(d64_runs, d64):
    """One past dsc_row_max / the cache's tokens: the core stops with bad_op and writes
    nothing; the builder refuses such jobs and block_jobs leaves them to the host."""
    for run in d64_runs["runs"][2:]:
        assert run["error"] == 1 << 2
    ln = next(j for j in d64[0] if isinstance(j, LayerNormJob))
    x = np.zeros((1, TOY.dsc_row_max + 1), np.int64)
    with pytest.raises(ExionError, match="dsc_row_max"):
        build_program(TOY, [LayerNormJob("long", x, ln.gamma, ln.beta, ln.eps, x)])
    t = TOY.dsc_ffnr_dims[0] + 1
    with pytest.raises(ExionError, match="cache"):
        build_program(TOY, [FfnrJob("tall", np.zeros((t, 4), np.int64), 0.5)])


# ---- the row ops' cycle model: phase C stalls as a whole behind a multi-beat output ----

def _row_jobs(cfg, shapes_ln, shapes_sm, seed):
    """Layer-norm and softmax jobs of the given (rows, n) shapes, random Q.11 data."""
    from exion.golden.cfse import layernorm_fx, softmax_fx
    from exion.golden.dsc import prob_requant
    from exion.sim.dsc_program import SoftmaxJob
    rng = np.random.default_rng(seed)
    print(f"row jobs: seed {seed}")
    jobs = []
    for rows, n in shapes_ln:
        x = rng.integers(-5000, 5000, (rows, n))
        jobs.append(LayerNormJob(f"ln{rows}x{n}", x, 2048, 0, 1,
                                 layernorm_fx(x, np.full(n, 2048), np.zeros(n, np.int64))))
    for rows, n in shapes_sm:
        lg = rng.integers(-9000, 9000, (rows, n))
        kp = rng.random((rows, n)) < 0.8
        lg = np.where(kp, lg, -32768)
        jobs.append(SoftmaxJob(f"sm{rows}x{n}", lg, kp,
                               prob_requant(np.where(kp, softmax_fx(lg), 0), cfg)))
    return jobs


def _closed_form(cfg, d, bus):
    """The row op's closed form before dsc-e16 (no phase-C stall): the mutation."""
    ib = dcy.item_beats(cfg, bus)
    fn = "softmax" if d["op"] == dcy.OPS["SOFTMAX"] else "layernorm"
    per_in = ib["smx"] if fn == "softmax" else ib["word"]
    w = -(-d["n"] // cfg.lanes)
    return (dcy.overhead(bus) + d["count"] * per_in + w * (1 + ib["word"])
            + dcy.fixed_cycles(fn) + 5)


@pytest.mark.long      # a 32-bit bus, as the DSC's other-bus variants (test_dsc_rtl.py)
def test_row_ops_multibeat_cycles_pysim():
    """Rows of 4 and 16 words on a 32-bit toy bus (2 beats per word) in Amaranth's simulator:
    bit-exact, every descriptor's cycles == the model (golden.dsc_cycles.row_body's phase-C
    simulation), and the closed form without the stall is off on some (mutation)."""
    from exion.sim.dsc_pysim import pysim_dsc
    jobs = _row_jobs(TOY, [(2, 16), (16, 64), (3, 6)], [(2, 64), (16, 64)], 5)
    prog = build_program(TOY, jobs, bus_bits=32)
    run = pysim_dsc(TOY, prog)
    assert run["error"] == 0
    for j, o in zip(jobs, read_results(TOY, prog, run["image"])):
        np.testing.assert_array_equal(o, j.expect, err_msg=j.name)
    durs = stage_durations(prog.descs, run["stages"], run["cycles"], 32)
    for d, t in zip(prog.descs, durs):
        assert t == dcy.descriptor_cycles(TOY, d, 32), d
    assert any(t != _closed_form(TOY, d, 32) for d, t in zip(prog.descs, durs)
               if d["op"] in (dcy.OPS["SOFTMAX"], dcy.OPS["LAYERNORM"]))


@pytest.mark.long
def test_row_ops_exion16_cycles():
    """The exion16 DSC core (4 beats per operand word): layer norm and softmax of 1..64 rows
    of 1..4 words, bit-exact and cycle-exact; the closed form is off on rows of >= 3 words."""
    cfg = PRESETS["exion16"]
    jobs = _row_jobs(cfg, [(1, 64), (2, 64), (4, 64), (16, 64), (16, 48), (16, 32), (40, 16)],
                     [(16, 64), (64, 16)], 3)
    progs = [build_program(cfg, [j]) for j in jobs]
    out, _ = rtl_dsc(cfg, progs, run_name="dsc_rows")
    off = 0
    for j, p, r in zip(jobs, progs, out):
        assert r["error"] == 0
        np.testing.assert_array_equal(read_results(cfg, p, r["image"])[0], j.expect,
                                      err_msg=j.name)
        st = r["stages"] if r["stages"][0][0] == 0 else r["stages"][1:]
        t = stage_durations(p.descs, st, r["cycles"], 64)[0]
        assert t == dcy.descriptor_cycles(cfg, p.descs[0], 64), j.name
        off += t != _closed_form(cfg, p.descs[0], 64)
    assert off >= 3


def test_descriptor_beats_fit_the_beat_counter():
    """A config whose items all fit in fewer beats than a descriptor (configs/tiny.toml: 2
    beats an item, 4 a descriptor at 64 bits) elaborates without a never-true case: the
    counter that assembles a descriptor counted only an item's beats (a 1-bit counter, so
    beats 2 and 3 of every descriptor were dropped)."""
    import warnings
    from pathlib import Path

    from amaranth.hdl import Fragment

    from exion.config import load_config
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "tiny.toml")
    assert max(hdsc.item_beats(cfg, 64).values()) < 256 // 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Fragment.get(hdsc.DscCore(cfg), None)
