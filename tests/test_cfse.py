"""CFSE stages and units in the Amaranth simulator: dividers and square root against Python
integers, the whole block on a small toy instance against golden, constructor checks, and the
cycle model's constants against the hardware's."""

import math

import numpy as np
import pytest
from amaranth.sim import Simulator

from exion import PRESETS
from exion.cfse_tables import exp2_table, gelu_table
from exion.golden import cfse as golden
from exion.golden import cfse_cycles as model
from exion.hw import cfse as hw
from exion.hw.cfse_stages import PipeDiv, PipeSqrt
from exion.sim.runner import new_seed

TOY = PRESETS["toy"]


def run_pipe(dut, feed, inputs, out, n):
    """Present ``n`` input tuples one per cycle (``en`` high), collect ``out`` after the
    stage's latency; also checks that ``en`` low holds the pipeline."""
    got = []

    async def tb(ctx):
        ctx.set(dut.en, 1)
        for i in range(n + dut.latency):
            if i < n:
                feed(ctx, i)
            if i == n // 2:                     # a stall: nothing may move
                ctx.set(dut.en, 0)
                before = ctx.get(out)
                await ctx.tick()
                await ctx.tick()
                assert ctx.get(out) == before
                ctx.set(dut.en, 1)
            if i >= dut.latency:
                got.append(ctx.get(out))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return got


def test_pipe_div_exhaustive_small():
    dut = PipeDiv(7, 3, 4)
    pairs = [(a, b) for a in range(128) for b in range(1, 8)]

    def feed(ctx, i):
        ctx.set(dut.num, pairs[i][0])
        ctx.set(dut.den, pairs[i][1])

    got = run_pipe(dut, feed, pairs, dut.q, len(pairs))
    want = [min(a // b, 15) for a, b in pairs]
    assert got[:len(pairs) - dut.latency] == want[:len(pairs) - dut.latency]
    assert dut.latency == 5


def test_pipe_sqrt_exhaustive_small():
    dut = PipeSqrt(5)
    vals = list(range(1 << 10))

    def feed(ctx, i):
        ctx.set(dut.v, vals[i])

    got = run_pipe(dut, feed, vals, dut.root, len(vals))
    want = [math.isqrt(v) for v in vals]
    assert got[:len(vals) - dut.latency] == want[:len(vals) - dut.latency]


def test_stage_parameters_are_checked():
    with pytest.raises(ValueError, match="PipeDiv q_bits must be an integer >= 1, got 0"):
        PipeDiv(8, 4, 0)
    with pytest.raises(ValueError, match="PipeSqrt root_bits must be an integer >= 1"):
        PipeSqrt(-1)


def test_cfse_parameters_are_checked():
    with pytest.raises(ValueError, match="n_max must be an integer in 1..16384, got 0"):
        hw.CFSE(TOY, n_max=0)
    with pytest.raises(ValueError, match="n_max must be an integer in 1..16384, got 20000"):
        hw.SoftmaxUnit(TOY, n_max=20000)
    wide = TOY.replace(name="wide", acc_width=52)
    with pytest.raises(ValueError, match="acc_width <= 48 .* got 52"):
        hw.CFSE(wide)
    assert hw.default_n_max(TOY) == 256 and hw.default_n_max(PRESETS["exion16"]) == 4608


def test_tables_shared_with_golden():
    np.testing.assert_array_equal(golden.GELU_TABLE, gelu_table())
    np.testing.assert_array_equal(golden.EXP2_TABLE, exp2_table())
    assert golden.GELU_TABLE[32] == -5199 and golden.EXP2_TABLE[0] == 1 << 15


@pytest.mark.parametrize("name", ["toy", "exion16"])
def test_cycle_model_constants_match_hardware(name):
    cfg = PRESETS[name]
    assert model.FIFO_LATENCY == hw.FIFO_LATENCY and model.GELU_LATENCY == hw.GELU_LATENCY
    for fn, unit in (("softmax", hw.SoftmaxUnit), ("layernorm", hw.LayerNormUnit)):
        assert model.phase_latencies(fn) == unit.phase_latencies(cfg)
        assert model.fixed_cycles(fn) == unit.fixed_cycles_for(cfg)
    w = hw.LayerNormUnit.widths(1)
    assert (w["mu_q"], w["var_q"], w["root"], w["n_q"]) == (
        model.LN_MU_Q_BITS, model.LN_VAR_Q_BITS, model.LN_ROOT_BITS, model.LN_N_Q_BITS)


def _beats(rows, L):
    r, n = rows.shape
    nw = -(-n // L)
    p = np.zeros((r, nw * L), dtype=np.int64)
    p[:, :n] = rows
    return p.reshape(-1, L)


def test_cfse_block_small_toy_amaranth_sim():
    """The whole block (n_max = 16) in the Amaranth simulator: all three units at once,
    bit-exact, cycles equal to the model; the output of each unit is stalled now and then."""
    seed = new_seed()
    print(f"seed {seed} (EXION_SEED={seed} re-runs)")
    rng = np.random.default_rng(seed)
    cfg, L = TOY, TOY.lanes
    dut = hw.CFSE(cfg, n_max=16)
    n, rows = 7, 3
    xs = rng.integers(-6000, 6000, size=(rows, n))
    xs[1] = 1234                                     # constant row: variance 0
    gam = rng.integers(-4000, 4000, size=n)
    bet = rng.integers(-4000, 4000, size=n)
    gx = rng.integers(-32768, 32768, size=5 * L)
    ins = {"gelu": list(_beats(gx[None], L)), "softmax": list(_beats(xs, L)),
           "layernorm": list(_beats(xs, L))}
    ports = {"gelu": (dut.gelu.inp, dut.gelu.out), "softmax": (dut.softmax.x, dut.softmax.y),
             "layernorm": (dut.layernorm.x, dut.layernorm.y)}
    outs = {k: [] for k in ins}
    span = {k: [None, None] for k in ins}
    stalls = {k: set() for k in ins}
    stalls["softmax"] = {30, 31, 35}             # while its outputs stream

    async def tb(ctx):
        ctx.set(dut.softmax.n, n)
        ctx.set(dut.layernorm.n, n)
        ctx.set(dut.layernorm.eps, 1)
        for w, (g, b) in enumerate(zip(_beats(gam[None], L), _beats(bet[None], L))):
            ctx.set(dut.layernorm.gb.payload, {"addr": w, "gamma": g.tolist(),
                                               "beta": b.tolist()})
            ctx.set(dut.layernorm.gb.valid, 1)
            await ctx.tick()
        ctx.set(dut.layernorm.gb.valid, 0)
        for cyc in range(400):
            seen = {}
            for k, (i, o) in ports.items():
                ctx.set(i.valid, bool(ins[k]))
                if ins[k]:
                    ctx.set(i.payload, ins[k][0].tolist())
                ctx.set(o.ready, cyc not in stalls[k])
            for k, (i, o) in ports.items():
                seen[k] = (ctx.get(i.valid) and ctx.get(i.ready),
                           ctx.get(o.valid) and ctx.get(o.ready), ctx.get(o.payload))
            await ctx.tick()
            for k, (ix, ox, pay) in seen.items():
                if ix:
                    span[k][0] = cyc if span[k][0] is None else span[k][0]
                    ins[k].pop(0)
                if ox:
                    outs[k].append([int(v) for v in pay])
                    span[k][1] = cyc

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    got = {k: np.array(v, dtype=np.int64) for k, v in outs.items()}
    np.testing.assert_array_equal(got["gelu"].reshape(-1), golden.gelu_fx(gx))
    np.testing.assert_array_equal(got["softmax"].reshape(rows, -1)[:, :n], golden.softmax_fx(xs))
    np.testing.assert_array_equal(got["layernorm"].reshape(rows, -1)[:, :n],
                                  golden.layernorm_fx(xs, gam, bet))
    cyc = {k: v[1] - v[0] + 1 for k, v in span.items()}
    assert cyc["gelu"] == model.gelu_cycles(cfg, gx.size)
    assert cyc["layernorm"] == model.row_cycles(cfg, "layernorm", rows, n)
    assert cyc["softmax"] > model.row_cycles(cfg, "softmax", rows, n)   # it was stalled


def _run_row_unit(fn, xs, n_max, gam=None, bet=None, stall=(), gaps=()):
    """One softmax / layer-norm unit of toy with a small ``n_max`` in the Amaranth simulator,
    rows of ``xs`` sent three times when longer than ``n_max`` (restream). Returns (y, cycles
    from the first input beat to the last output beat)."""
    cfg, L = TOY, TOY.lanes
    dut = (hw.SoftmaxUnit if fn == "softmax" else hw.LayerNormUnit)(cfg, n_max)
    rows, n = xs.shape
    w = math.ceil(n / L)
    ins = list(_beats(np.repeat(xs, 3 if n > n_max else 1, axis=0), L))
    outs, span = [], [None, None]

    async def tb(ctx):
        ctx.set(dut.n, n)
        if fn == "layernorm":
            ctx.set(dut.eps, 1)
            for a, (g, b) in enumerate(zip(_beats(gam[None], L), _beats(bet[None], L))):
                ctx.set(dut.gb.payload, {"addr": a, "gamma": g.tolist(), "beta": b.tolist()})
                ctx.set(dut.gb.valid, 1)
                await ctx.tick()
            ctx.set(dut.gb.valid, 0)
        cyc = 0
        while len(outs) < rows * w:
            ctx.set(dut.x.valid, bool(ins) and cyc not in gaps)
            if ins:
                ctx.set(dut.x.payload, ins[0].tolist())
            ctx.set(dut.y.ready, cyc not in stall)
            xi = ctx.get(dut.x.valid) and ctx.get(dut.x.ready)
            yo = ctx.get(dut.y.valid) and ctx.get(dut.y.ready)
            pay = ctx.get(dut.y.payload)
            await ctx.tick()
            if xi:
                span[0] = cyc if span[0] is None else span[0]
                ins.pop(0)
            if yo:
                outs.append([int(v) for v in pay])
                span[1] = cyc
            cyc += 1
            assert cyc < 5000, "no progress"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return np.array(outs, dtype=np.int64).reshape(rows, -1)[:, :n], span[1] - span[0] + 1


@pytest.mark.parametrize("fn", ["softmax", "layernorm"])
@pytest.mark.parametrize("n,rows", [(9, 1), (13, 3), (8, 2), (17, 2)])
def test_long_rows_amaranth_sim(fn, n, rows):
    """n_max = 8: rows of 9..17 are restreamed (8 stays buffered); bit-exact and cycles equal
    the model, ``rows * (3w + fixed - pc) + pc`` for long rows; with stalls and idle input
    cycles still bit-exact."""
    rng = np.random.default_rng(n * 10 + rows)
    xs = rng.integers(-6000, 6000, size=(rows, n))
    if rows > 1:
        xs[1] = golden.FX_MAX                          # constant row: variance 0
    g, b = rng.integers(-4000, 4000, size=n), rng.integers(-4000, 4000, size=n)
    want = golden.softmax_fx(xs) if fn == "softmax" else golden.layernorm_fx(xs, g, b)
    y, cyc = _run_row_unit(fn, xs, 8, g, b)
    np.testing.assert_array_equal(y, want)
    assert cyc == model.row_cycles(TOY, fn, rows, n, n_max=8)
    if n > 8:
        w, lat = math.ceil(n / TOY.lanes), model.phase_latencies(fn)
        assert cyc == rows * (3 * w + model.fixed_cycles(fn) - lat["pc"]) + lat["pc"]
    y, cyc = _run_row_unit(fn, xs, 8, g, b, stall=set(range(40, 200, 3)),
                           gaps=set(range(5, 120, 4)))
    np.testing.assert_array_equal(y, want)


@pytest.fixture
def cfse_files(tmp_path):
    rng = np.random.default_rng(0)
    files = {"x": rng.integers(-8000, 8000, size=(3, 10)).astype(np.int16),
             "g": np.full(10, 2048, np.int16), "b": np.zeros(10, np.int16),
             "g9": np.zeros(9, np.int16), "float": np.array([[1.5]]),
             "big": np.array([[40000]]), "scalar": np.array(3),
             "long": np.zeros((1, 65536), np.int16), "ln_long": np.zeros((1, 16385), np.int16)}
    paths = {}
    for k, v in files.items():
        paths[k] = str(tmp_path / f"{k}.npy")
        np.save(paths[k], v)
    return paths


@pytest.mark.parametrize("fn,opts,message", [
    ("softmax", {"x": "float"}, r"--x: '.*float.npy' \(shape \(1, 1\)\) has dtype float64, "
                               r"expected integers"),
    ("gelu", {"x": "big"}, r"--x: '.*big.npy' \(shape \(1, 1\)\) has values in \[40000, "
                           r"40000\], expected 16-bit Q.11"),
    ("softmax", {"x": "scalar"}, r"--x: '.*scalar.npy' has shape \(\): softmax needs rows"),
    ("softmax", {"x": "long"}, r"has shape \(1, 65536\): rows of 65536 elements exceed "
                               r"softmax_fx's limit of 65535"),
    ("layernorm", {"x": "ln_long"}, r"has shape \(1, 16385\): rows of 16385 elements exceed "
                                    r"layernorm_fx's limit of 16384"),
    ("layernorm", {"x": "x", "gamma": "g"}, r"--fn layernorm needs --gamma G.npy and --beta"),
    ("layernorm", {"x": "x", "gamma": "g9", "beta": "b"},
     r"--gamma: '.*g9.npy' has shape \(9,\), expected \(10,\) \(the row length of --x"),
    ("softmax", {"x": "x", "gamma": "g"}, "--gamma is only for --fn layernorm"),
])
def test_cli_sim_cfse_bad_input(cli_run, cfse_files, tmp_path, fn, opts, message):
    import re
    out = tmp_path / "y.npy"
    argv = ["sim", "cfse", "--config", "toy", "--fn", fn, "--out", str(out)]
    for k, v in opts.items():
        argv += [f"--{k}", cfse_files[v]]
    code, _, err = cli_run(*argv)
    assert code == 2 and re.search(message, err), err
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("name", ["toy", "exion16"])
def test_throughput_goal(name):
    """Streamed R x N tiles (N >= 64): the CFSE needs no more cycles per tile than the SDUE
    needs to produce the tile (softmax after Q.K^T, head dim 72; layer norm after the output
    projection, K = N), by the cycle model that the RTL tests hold exact."""
    cfg = PRESETS[name]
    table = model.throughput_table(cfg)
    assert len(table) >= 4 and all(f["keeps_up"] for f in table), table
    f = model.tile_figures(cfg, "softmax", 256, 72)
    assert f["cfse_stream"] == cfg.rows * math.ceil(256 / cfg.lanes)
    assert f["sdue_stream"] == math.ceil(256 / cfg.cols) * max(math.ceil(72 / cfg.lanes),
                                                               cfg.cols)
