"""FFN-Reuse unit in the Amaranth simulator against golden ``build_mask`` / ``ffn_sparse``.

Small ``t_max`` / ``n_max`` keep the simulation quick; the generated defaults run under
Verilator (``tests/test_ffnr_rtl.py``). The driver streams commands and H beats with seeded
idle gaps and back-pressure and decodes the outputs with the same helpers as the cocotb bench
(``exion.sim.ffnr_rtl``).
"""

from fractions import Fraction

import numpy as np
import pytest
from amaranth import Module, Mux, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from exion import PRESETS
from exion.errors import ExionError
from exion.golden import ffn_reuse as fr
from exion.golden import ffnr_cycles as fc
from exion.hw import ffnr as hw
from exion.hw.cau import mask_layout
from exion.sim.ffnr_rtl import (OP_CLEAR, OP_DELTA, OP_DENSE, OP_HIST, OP_MASK, OP_STORE,
                                OP_THRESH, OP_YLOAD, OP_YSTORE, FfnrCase, FfnrRun, cmd_fields,
                                delta_from_beats, ffnr_program, ffnr_run_from_outputs,
                                h_beats, mask_from_beats, rows_from_beats, tile_of)
from exion.sim.payload import unpack

TOY = PRESETS["toy"]
E16 = PRESETS["exion16"]


async def _command(ctx, dut, rng, cmd, beats, out, gaps, bp, inp=None, packed=False):
    """One command: offer it, then its input beats (on ``inp``, default ``h``); collect
    ``out`` beats until idle. ``packed``: the command and beats are packed integers (the
    bench's steps) and the output beats are returned as raw integers, else unpacked.
    Returns (output beats, cycles from the command's transfer to idle)."""
    i, sent, got, cyc = 0, False, [], 0
    layout = out.payload.shape() if out is not None else None
    inp = dut.h if inp is None else inp

    def put(port, value):
        ctx.set(Value.cast(port.payload) if packed else port.payload, value)

    while True:
        offer_c = not sent and rng.random() >= gaps
        ctx.set(dut.cmd.valid, int(offer_c))
        if offer_c or packed:
            put(dut.cmd, cmd)
        offer_h = sent and i < len(beats) and rng.random() >= gaps
        for port in (dut.h, dut.y):
            ctx.set(port.valid, int(offer_h and port is inp))
        if offer_h:
            put(inp, beats[i])
        rdy = int(rng.random() >= bp)
        for port in (dut.mask, dut.delta, dut.y_out):
            ctx.set(port.ready, rdy if port is out else 0)
        c_rdy, h_rdy = ctx.get(dut.cmd.ready), ctx.get(inp.ready)
        o_val = ctx.get(out.valid) if out is not None else 0
        value = ctx.get(Value.cast(out.payload)) if out is not None else 0
        if sent and i >= len(beats) and not ctx.get(dut.busy):
            return got, cyc
        await ctx.tick()
        if sent:
            cyc += 1
        if offer_c and c_rdy:
            sent, cyc = True, 1
        if offer_h and h_rdy:
            i += 1
        if o_val and rdy:
            got.append(value if packed else unpack(layout, value))


def run_amaranth_ffnr(cfg, cases, *, seed=0, gaps=0.0, backpressure=0.0, **kw):
    """Every case: DENSE (H), histogram read, MASK, and DELTA when the case has H'."""
    dut = hw.FFNR(cfg, **kw)
    sz = dut.sizes
    rng = np.random.default_rng(seed)
    runs = []

    async def tb(ctx):
        for case in cases:
            T, N = case.h.shape
            code = fr.sparsity_code(case.s)
            cyc = {}
            _, cyc["dense"] = await _command(ctx, dut, rng, cmd_fields(OP_DENSE, T, N, code),
                                             h_beats(cfg, case.h), None, gaps, backpressure)
            assert not ctx.get(dut.error)
            hist = []
            for b in range(sz.bins):
                ctx.set(dut.hist_addr, b)
                hist.append(ctx.get(dut.hist_data))
            res = [ctx.get(s) for s in (dut.theta, dut.theta_bin, dut.ones, dut.total)]
            mb, cyc["mask"] = await _command(ctx, dut, rng, cmd_fields(OP_MASK), [], dut.mask,
                                             gaps, backpressure)
            delta = None
            if case.h_sparse is not None:
                db, cyc["delta"] = await _command(ctx, dut, rng, cmd_fields(OP_DELTA),
                                                  h_beats(cfg, case.h_sparse), dut.delta,
                                                  gaps, backpressure)
                delta = delta_from_beats(cfg, db, T, N)
            y = None
            if case.y_d is not None:
                D = case.y_d.shape[1]
                _, cyc["ystore"] = await _command(ctx, dut, rng, cmd_fields(OP_YSTORE, T, d=D),
                                                  h_beats(cfg, case.y_d), None, gaps,
                                                  backpressure, inp=dut.y)
                assert not ctx.get(dut.error)
                yb, cyc["yload"] = await _command(ctx, dut, rng, cmd_fields(OP_YLOAD), [],
                                                  dut.y_out, gaps, backpressure)
                y = rows_from_beats(cfg, yb, T, D)
            runs.append(FfnrRun(mask_from_beats(cfg, mb, T, N, sz.P), *res,
                                np.asarray(hist, dtype=np.int64), delta, y, cyc, mb))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return runs, dut


def check_runs(cfg, cases, runs, dut=None, timed=False, label=""):
    for case, run in zip(cases, runs):
        msg = f"{label} {cfg.name} case {case.name} shape {case.h.shape} s={case.s}"
        W = cfg.width
        hist = fr.abs_histogram(case.h, W)
        np.testing.assert_array_equal(run.histogram, hist, err_msg=msg)
        mask, theta = fr.build_mask(case.h, case.s, "magnitude", width=W)
        assert run.theta == theta, msg
        np.testing.assert_array_equal(run.mask, mask, err_msg=msg)
        assert run.ones == mask.sum() and run.total == mask.size, msg
        if case.h_sparse is not None:
            # what golden ffn_sparse feeds FC2: H' = where(B, new, H_d), delta = H' - H_d
            h_new = np.where(mask, case.h_sparse, case.h)
            np.testing.assert_array_equal(run.delta, h_new - case.h, err_msg=msg)
        if case.y_d is not None:
            np.testing.assert_array_equal(run.y_replay, case.y_d, err_msg=msg)
        if timed:
            T, N = case.h.shape
            sz = dut.sizes
            assert run.cycles["dense"] == fc.dense_cycles(cfg, T, N, bins=sz.bins), msg
            assert run.cycles["dense"] == dut.dense_cycles(T, N), msg
            assert run.cycles["mask"] == fc.mask_cycles(cfg, T, N, sz.P), msg
            assert run.cycles["mask"] == dut.mask_cycles(T, N), msg
            if case.y_d is not None:
                D = case.y_d.shape[1]
                assert run.cycles["ystore"] == fc.y_store_cycles(cfg, T, D), msg
                assert run.cycles["yload"] == fc.y_load_cycles(cfg, T, D), msg
                assert run.cycles["yload"] == dut.y_cycles(T, D, load=True), msg
            if case.h_sparse is not None:
                assert run.cycles["delta"] == fc.delta_cycles(cfg, T, N), msg
                assert run.cycles["delta"] == dut.delta_cycles(T, N), msg


def directed_cases(cfg, rng):
    W = cfg.width
    lo, hi = -(1 << (W - 1)), (1 << (W - 1)) - 1
    T, N = cfg.rows + 3, 2 * cfg.lanes + 1
    one = np.zeros((T, N), np.int64)
    one[T // 2, N // 3] = lo
    ext = rng.choice([lo, hi, -hi, 0, 1, -1], size=(T, N))
    return [
        FfnrCase(np.zeros((T, N), np.int64), 0.8, None, "zeros"),
        FfnrCase(np.full((T, N), 37), 0.5, None, "equal"),
        FfnrCase(np.full((T, N), lo), 0.99, None, "all-min"),
        FfnrCase(ext, 0.0, None, "extremes-s0"),
        FfnrCase(ext, 0.99, None, "extremes-s99"),
        FfnrCase(one, 0.8, None, "single"),
        FfnrCase(one, 0.0, None, "single-s0"),
    ]


def random_cases(cfg, rng, n, sparse=True, t_max=None, n_max=None, d_max=None):
    W = cfg.width
    t_max = t_max or 2 * cfg.rows + 3
    n_max = n_max or 3 * cfg.lanes + 3
    d_max = d_max or max(1, n_max // 4)
    out = []
    for k in range(n):
        T, N = int(rng.integers(1, t_max + 1)), int(rng.integers(1, n_max + 1))
        scale = 2.0 ** rng.integers(2, W + 1)
        h = np.clip(np.rint(rng.laplace(0, scale / 6, (T, N))), -(1 << (W - 1)),
                    (1 << (W - 1)) - 1).astype(np.int64)
        s = [0, 0.5, 0.8, 0.9, 0.95, 0.99, 0.123456][k % 7]
        hp = yd = None
        if sparse:
            hp = np.clip(h + rng.integers(-40, 41, h.shape), -(1 << (W - 1)),
                         (1 << (W - 1)) - 1)
            lim = 1 << (cfg.acc_width - 1)
            yd = rng.integers(-lim, lim, (T, int(rng.integers(1, d_max + 1))), dtype=np.int64)
            yd[0, 0] = -lim
        out.append(FfnrCase(h, s, hp, f"random{k}", yd))
    return out


SMALL = {"t_max": None, "n_max": 64}


# exion16: on Verilator in the default suite (tests/test_ffnr_rtl.py); pysim is long
@pytest.mark.parametrize("cfg", [TOY, pytest.param(E16, marks=pytest.mark.long)], ids=["toy", "exion16"])
def test_ffnr_amaranth_matches_golden(cfg):
    rng = np.random.default_rng(1500 + cfg.rows)
    cases = directed_cases(cfg, rng) + random_cases(cfg, rng, 5, n_max=40)
    runs, dut = run_amaranth_ffnr(cfg, cases, n_max=64, seed=3)
    check_runs(cfg, cases, runs, dut, timed=True)


# exion16: on Verilator in the default suite (tests/test_ffnr_rtl.py); pysim is long
@pytest.mark.parametrize("cfg", [TOY, pytest.param(E16, marks=pytest.mark.long)], ids=["toy", "exion16"])
def test_ffnr_amaranth_backpressure(cfg):
    rng = np.random.default_rng(1600 + cfg.rows)
    cases = random_cases(cfg, rng, 4, n_max=40)
    runs, _ = run_amaranth_ffnr(cfg, cases, n_max=64, seed=4, gaps=0.3, backpressure=0.5)
    check_runs(cfg, cases, runs)


def test_ffnr_other_beat_widths():
    """P = 4 < L (exion16: a word feeds four beats) and P = 16 = 4 L (toy: four words a beat)."""
    rng = np.random.default_rng(7)
    for cfg, p in ((E16, 4), (TOY, 16)):
        cases = random_cases(cfg, rng, 3, n_max=40)
        runs, dut = run_amaranth_ffnr(cfg, cases, n_max=48, cols_per_cycle=p, seed=5)
        assert dut.mask.payload.shape() == mask_layout(cfg, p, True)
        check_runs(cfg, cases, runs, dut, timed=True, label=f"P={p}")


def test_ffnr_sizes_and_errors():
    sz = hw.FfnrSizes(E16)
    assert sz.bins == fr.num_bins(1 << (E16.width - 1)) == 129
    assert (sz.t_max, sz.n_max, sz.words, sz.hd_depth) == (64, 4608, 288, 4 * 288)
    assert [hw.bin_edge(b, 4) for b in range(sz.bins + 1)] == \
        list(fr.hist_bin_edges(sz.bins + 1))
    assert hw.S_DIGITS == fr.S_DIGITS
    with pytest.raises(ExionError, match=r"cols_per_cycle = 3 is invalid: .* lanes = 16"):
        hw.FFNR(E16, cols_per_cycle=3)
    with pytest.raises(ExionError, match=r"t_max = 0 is invalid"):
        hw.FFNR(TOY, t_max=0)


def test_sparsity_code_is_the_golden_s():
    assert fr.sparsity_code(0.8) == 800000 and fr.sparsity_code("0.123456") == 123456
    with pytest.raises(ExionError, match="more than 6 decimals"):
        fr.sparsity_code(Fraction(1, 3))
    with pytest.raises(ExionError, match=r"in \[0, 1\)"):
        fr.sparsity_code(1.0)
    # the hardware's integer distance picks the golden's bin for every representable s
    rng = np.random.default_rng(11)
    for _ in range(200):
        hist = rng.integers(0, 5, 20) * (rng.random(20) < 0.6)
        code = int(rng.integers(0, 10**6)) if rng.random() < 0.7 else int(rng.integers(0, 100)) * 10**4
        total = int(hist.sum())
        suffix = np.r_[np.cumsum(hist[::-1])[::-1], 0]
        dist = np.abs(suffix * 10**6 - (10**6 - code) * total)
        best = np.flatnonzero(dist == dist.min())[-1]
        assert fr.threshold_from_histogram(hist, Fraction(code, 10**6)) == \
            fr.hist_bin_edges(21)[best]


@pytest.mark.parametrize("make,opts,expect", [
    (lambda: np.zeros((3, 4)), ["--s", "0.8"], r"--h '.*h.npy' has dtype float64 \(shape \(3, 4\)\)"),
    (lambda: np.zeros((3, 4, 2), int), ["--s", "0.8"], r"--h: '.*h.npy' has shape \(3, 4, 2\)"),
    (lambda: np.full((3, 4), 5000), ["--s", "0.8"], r"--h '.*h.npy' \(shape \(3, 4\)\): values"),
    (lambda: np.zeros((0, 4), int), ["--s", "0.8"], r"shape \(0, 4\)"),
    (lambda: np.zeros((3, 4), int), ["--s", "1"], r"--s 1: .* in \[0, 1\)"),
    (lambda: np.zeros((3, 4), int), ["--s", "-0.5"], r"--s -0.5: .* in \[0, 1\)"),
    (lambda: np.zeros((3, 4), int), ["--s", "0.1234567"], r"--s 0.1234567: .* more than 6"),
], ids=["float", "3d", "range", "empty", "s1", "s-neg", "s-digits"])
def test_cli_sim_ffnr_refuses_bad_input(tmp_path, cli_run, make, opts, expect):
    import re
    np.save(tmp_path / "h.npy", make())
    out = tmp_path / "m.npy"
    code, _, err = cli_run("sim", "ffnr", "--config", "toy", "--h", str(tmp_path / "h.npy"),
                           *opts, "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and re.search(expect, err), err
    assert not out.exists()


def test_a_broken_histogram_is_caught(monkeypatch):
    """Mutation: a bin rule that drops the lowest mantissa bit (a bin off by one mantissa bit
    for odd mantissas) must fail the histogram comparison -- the checks can fail."""
    good = hw.hw_bin

    def broken(mag, width, mant_bits):
        b = good(mag, width, mant_bits)
        return Mux(mag >= (1 << (mant_bits + 1)), b & ~1, b)[:len(b)]

    monkeypatch.setattr(hw, "hw_bin", broken)
    rng = np.random.default_rng(21)
    cases = random_cases(TOY, rng, 2, sparse=False)
    runs, _ = run_amaranth_ffnr(TOY, cases, n_max=64)
    with pytest.raises(AssertionError, match="Arrays are not equal"):
        check_runs(TOY, cases, runs)


class _FfnrToCau(wiring.Component):
    """The FFN-Reuse unit's mask stream joined to a CAU with ``wiring.connect``."""

    def __init__(self, cfg, n_max):
        from exion.hw.cau import CAU, cau_pass_layout
        self.ffnr = hw.FFNR(cfg, n_max=n_max)
        self.cau = CAU(cfg, max_cols=n_max)
        sz = self.ffnr.sizes
        super().__init__({
            "cmd": In(stream.Signature(hw.cmd_layout(sz))),
            "h": In(stream.Signature(hw.beat_layout(cfg))),
            "out": Out(stream.Signature(cau_pass_layout(cfg, n_max))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.ffnr, m.submodules.cau = self.ffnr, self.cau
        wiring.connect(m, self.ffnr.mask, self.cau.mask)
        wiring.connect(m, wiring.flipped(self.cmd), self.ffnr.cmd)
        wiring.connect(m, wiring.flipped(self.h), self.ffnr.h)
        wiring.connect(m, self.cau.out, wiring.flipped(self.out))
        m.d.comb += self.busy.eq(self.ffnr.busy | self.cau.busy)
        return m


def test_ffnr_mask_drives_the_cau():
    """FFNR.mask -> CAU.mask (wiring.connect): the CAU's passes are golden ConMerge of the
    golden FFN-Reuse mask (toy, two row blocks plus a partial one, N not a multiple of P)."""
    from exion.golden.conmerge import conmerge
    from exion.sim.cau_rtl import runs_from_passes
    cfg = TOY
    rng = np.random.default_rng(31)
    h = np.clip(np.rint(rng.laplace(0, 300, (2 * cfg.rows + 3, 29))), cfg.wmin, cfg.wmax)
    h = h.astype(np.int64)
    dut = _FfnrToCau(cfg, 32)
    T, N = h.shape
    passes = []

    async def tb(ctx):
        for cmd, beats in ((cmd_fields(OP_DENSE, T, N, fr.sparsity_code(0.9)),
                            h_beats(cfg, h)), (cmd_fields(OP_MASK), [])):
            i, sent = 0, False
            ctx.set(dut.out.ready, 1)
            while True:
                ctx.set(dut.cmd.valid, int(not sent))
                ctx.set(dut.cmd.payload, cmd)
                offer = sent and i < len(beats)
                ctx.set(dut.h.valid, int(offer))
                if offer:
                    ctx.set(dut.h.payload, beats[i])
                c_rdy, h_rdy = ctx.get(dut.cmd.ready), ctx.get(dut.h.ready)
                o_val, raw = ctx.get(dut.out.valid), ctx.get(Value.cast(dut.out.payload))
                if sent and i >= len(beats) and not ctx.get(dut.busy):
                    break
                await ctx.tick()
                sent = sent or bool(c_rdy)
                i += int(offer and h_rdy)
                if o_val:
                    passes.append(unpack(dut.out.payload.shape(), raw))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    mask, _ = fr.build_mask(h, 0.9, "magnitude", width=cfg.width)
    plan = conmerge(cfg, mask)
    run = runs_from_passes(cfg, passes, [0] * len(passes), 0)
    assert plan.n_passes > 2
    np.testing.assert_array_equal(run.members, plan.members)
    np.testing.assert_array_equal(run.select, plan.select)
    np.testing.assert_array_equal(run.row_block, plan.row_block)


def test_ffnr_refuses_bad_commands():
    """MASK / DELTA before a DENSE, YLOAD before a YSTORE, T or N = 0, s_code >= 10**6, STORE
    before any threshold and an unknown op set ``error`` and leave the unit idle; a good DENSE
    clears it."""
    dut = hw.FFNR(TOY, n_max=16)
    seen = []

    async def tb(ctx):
        bad = [cmd_fields(OP_MASK), cmd_fields(OP_DELTA), cmd_fields(OP_YLOAD),
               cmd_fields(OP_DENSE, 0, 4, 0), cmd_fields(OP_DENSE, 3, 0, 0),
               cmd_fields(OP_DENSE, 3, 4, 10**6), cmd_fields(OP_YSTORE, 3, d=0),
               cmd_fields(15, 3, 4, 0), cmd_fields(OP_STORE, 1, 4),      # STORE: no theta
               cmd_fields(OP_THRESH, s_code=10**6), cmd_fields(OP_HIST, 0, 4),
               cmd_fields(OP_HIST, 3, 0)]
        for cmd in bad + [cmd_fields(OP_DENSE, 1, 4, 0)]:
            ctx.set(dut.cmd.valid, 1)
            ctx.set(dut.cmd.payload, cmd)
            await ctx.tick()
            ctx.set(dut.cmd.valid, 0)
            seen.append((ctx.get(dut.error), ctx.get(dut.busy)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen[:-1] == [(1, 0)] * 12 and seen[-1] == (0, 1)


@pytest.mark.parametrize("cfg", [TOY, E16], ids=["toy", "exion16"])
def test_ffnr_sparse_iteration_reproduces_golden_ffn_sparse(cfg):
    """A real FFN through one dense and one sparse iteration: the unit's mask (DENSE, MASK),
    its Y_d replay (YSTORE, YLOAD) and its delta (DELTA, fed the full FC1/GELU output of the
    new X) give exactly golden ``ffn_sparse``: ``H' = H_d + delta``, ``Y' = Y_d + delta W2``."""
    import math
    from exion.golden.cfse import gelu_params
    from exion.golden.quant import wrap
    rng = np.random.default_rng(40 + cfg.rows)
    T, d, F, D = cfg.rows + 2, 12, 2 * cfg.lanes + 5, 9
    w1 = rng.integers(cfg.wmin, cfg.wmax + 1, (d, F))
    w2 = rng.integers(cfg.wmin, cfg.wmax + 1, (F, D))
    b1, b2 = rng.integers(-(2**20), 2**20, F), rng.integers(-(2**20), 2**20, D)
    gp = gelu_params(2.0 / (math.sqrt(d) * (2**(cfg.width - 1))**2 / 3), 4.0 / cfg.wmax)
    x = rng.integers(cfg.wmin, cfg.wmax + 1, (T, d))
    x2 = np.clip(x + rng.integers(-60, 61, (T, d)), cfg.wmin, cfg.wmax)
    h_d, y_d = fr.ffn_dense(cfg, x, w1, b1, w2, b2, gp)
    h_full, _ = fr.ffn_dense(cfg, x2, w1, b1, w2, b2, gp)      # FC1/GELU of X' everywhere
    case = FfnrCase(h_d, 0.7, h_full, "ffn", y_d)
    (run,), _ = run_amaranth_ffnr(cfg, [case], n_max=F, d_max=D, seed=9)
    np.testing.assert_array_equal(run.mask, fr.build_mask(h_d, 0.7, width=cfg.width)[0])
    h2, y2 = fr.ffn_sparse(cfg, x2, w1, b1, w2, b2, gp, h_d, y_d, run.mask)
    assert 0 < run.mask.sum() < run.mask.size
    np.testing.assert_array_equal(h_d + run.delta, h2)
    np.testing.assert_array_equal(wrap(run.y_replay + run.delta @ w2, cfg.acc_width), y2)


# -- a layer larger than the cache, streamed in tiles (CLEAR, HIST, THRESH, STORE) --

async def _raw_command(ctx, dut, rng, cmd, beats, inp, out, gaps, bp):
    """``_command`` on packed payloads (the bench's steps): raw output ints, cycles."""
    return await _command(ctx, dut, rng, cmd, beats, getattr(dut, out) if out else None, gaps,
                          bp, inp=getattr(dut, inp), packed=True)


def run_amaranth_program(cfg, cases, *, seed=0, gaps=0.0, backpressure=0.0, **kw):
    """The cocotb bench's programs (``ffnr_program``: tiled when H exceeds the cache or the
    case forces a tile) in the Amaranth simulator; runs assembled like ``rtl_ffnr_batch``."""
    dut = hw.FFNR(cfg, **kw)
    sz = dut.sizes
    rng = np.random.default_rng(seed)
    tiles = [tile_of(c, sz.t_max, sz.n_max) for c in cases]
    progs = [ffnr_program(cfg, c, sz, tl) for c, tl in zip(cases, tiles)]
    outs = []

    async def tb(ctx):
        for prog in progs:
            steps = []
            for _, cmd, beats, inp, out, read in prog:
                got, cyc = await _raw_command(ctx, dut, rng, cmd, beats, inp, out, gaps,
                                              backpressure)
                st = {"out": got, "cycles": cyc, "error": ctx.get(dut.error)}
                if read:
                    hist = []
                    for b in range(sz.bins):
                        ctx.set(dut.hist_addr, b)
                        hist.append(ctx.get(dut.hist_data))
                    st["results"] = {"hist": hist, **{k: ctx.get(getattr(dut, k)) for k in
                                                      ("theta", "theta_bin", "ones", "total")}}
                steps.append(st)
            outs.append(steps)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    runs = [ffnr_run_from_outputs(cfg, c, p, o, sz, tl)
            for c, p, o, tl in zip(cases, progs, outs, tiles)]
    return runs, dut


def check_tiled(cfg, cases, runs, sizes, timed=True, label=""):
    """check_runs (histogram over the whole H, theta, mask, delta) and, free-running, the
    cycles of every command kind == ``ffnr_cycles.tiled_cycles``."""
    check_runs(cfg, cases, runs, label=label)
    for case, run in zip(cases, runs):
        assert run.tiling is not None, case.name
        T, N = case.h.shape
        if timed:
            model = fc.tiled_cycles(cfg, T, N, run.tiling["t_tile"], run.tiling["n_tile"],
                                    delta=case.h_sparse is not None, p=sizes.P,
                                    bins=sizes.bins)
            assert run.cycles == model, f"{label} {case.name}: {run.cycles} != {model}"


def tiled_cases(cfg, rng, t_max, n_max):
    """H larger than a t_max x n_max cache in both dimensions (and in one), equal magnitudes
    across tiles, s = 0 and 0.99, with and without H'."""
    W = cfg.width
    lo, hi = -(1 << (W - 1)), (1 << (W - 1)) - 1
    T, N = 2 * t_max + 3, 2 * n_max + 5
    big = rng.integers(lo, hi + 1, (T, N))
    lap = np.clip(np.rint(rng.laplace(0, 60, (T + 1, n_max + 1))), lo, hi).astype(np.int64)
    eq = np.where(rng.random((T, N)) < 0.5, -77, 77)
    return [
        FfnrCase(big, 0.8, np.clip(big[::-1] + 3, lo, hi), "both-dims"),
        FfnrCase(lap, 0.9, None, "one-over-each"),
        FfnrCase(eq, 0.5, None, "equal-magnitudes"),
        FfnrCase(big, 0.0, None, "s0"),
        FfnrCase(big, 0.99, None, "s99"),
        FfnrCase(np.zeros((t_max + 1, 3), np.int64), 0.8, None, "zeros-over-rows"),
        FfnrCase(big[:5, :7], 0.123456, big[:5, :7] * 0 + 1, "forced-tile", tile=(2, 3)),
    ]


# exion16: on Verilator in the default suite (tests/test_ffnr_rtl.py); pysim is long
@pytest.mark.parametrize("cfg", [TOY, pytest.param(E16, marks=pytest.mark.long)], ids=["toy", "exion16"])
def test_ffnr_tiled_layer_matches_golden(cfg):
    """A layer larger than the unit's cache: histogram over the whole H, one threshold, mask
    (and delta) per (row tile, column tile) == golden build_mask; cycles == model."""
    t_max, n_max = cfg.rows, cfg.lanes + 3
    rng = np.random.default_rng(2500 + cfg.rows)
    cases = tiled_cases(cfg, rng, t_max, n_max)
    runs, dut = run_amaranth_program(cfg, cases, t_max=t_max, n_max=n_max, seed=4)
    check_tiled(cfg, cases, runs, dut.sizes)


def test_ffnr_tiled_backpressure():
    rng = np.random.default_rng(26)
    cases = tiled_cases(TOY, rng, 4, 6)[:3]
    runs, dut = run_amaranth_program(TOY, cases, t_max=4, n_max=6, seed=5, gaps=0.3,
                                     backpressure=0.5)
    check_tiled(TOY, cases, runs, dut.sizes, timed=False)


def test_ffnr_tiled_commands_and_limits():
    """THRESH after a DENSE re-searches its histogram; a HIST past hist_max is refused; CLEAR
    drops the threshold (STORE refused until THRESH); HIST adds onto a DENSE's histogram."""
    dut = hw.FFNR(TOY, t_max=4, n_max=4, hist_max=20)
    sz = dut.sizes
    assert sz.cnt_bits == 5
    seen = []
    h = [[1, 2, 3, 4]] * 4

    async def tb(ctx):
        rng = np.random.default_rng(0)
        for cmd, beats in [(cmd_fields(OP_DENSE, 4, 4, 0), h),      # 16 values
                           (cmd_fields(OP_HIST, 1, 4), h[:1]),        # 20: fits
                           (cmd_fields(OP_HIST, 1, 1), []),           # 21: refused
                           (cmd_fields(OP_THRESH, s_code=500000), []),
                           (cmd_fields(OP_CLEAR), []),
                           (cmd_fields(OP_STORE, 1, 4), []),          # refused: no theta
                           (cmd_fields(OP_HIST, 2, 4), h[:2]),
                           (cmd_fields(OP_THRESH, s_code=0), []),
                           (cmd_fields(OP_STORE, 1, 4), h[:1])]:
            _, cyc = await _command(ctx, dut, rng, cmd, [hw.beat_layout(TOY).const(b)
                                                         for b in beats], None, 0, 0)
            seen.append((ctx.get(dut.error), ctx.get(dut.total), ctx.get(dut.theta), cyc))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert [e for e, *_ in seen] == [0, 0, 1, 0, 0, 1, 0, 0, 0]
    assert [t for _, t, *_ in seen] == [16, 20, 20, 20, 0, 0, 8, 8, 8]
    # s = 0.5 over 20 values (5 x each of 1, 2, 3, 4): theta 3 keeps 10
    assert seen[3][2] == 3 and seen[7][2] == 1
    assert seen[4][3] == fc.clear_cycles(TOY) and seen[3][3] == fc.thresh_cycles(TOY)
    assert seen[6][3] == fc.hist_cycles(TOY, 2, 4) and seen[8][3] == fc.store_cycles(TOY, 1, 4)
    assert (seen[6][3], seen[8][3], seen[3][3]) == (dut.hist_cycles(2, 4), dut.store_cycles(1, 4),
                                                     dut.thresh_cycles())


def test_a_histogram_cleared_between_tiles_is_caught(monkeypatch):
    """Mutation: HIST clearing the histogram (only the last tile counted) must fail the
    whole-layer histogram comparison."""
    orig = hw.FFNR._command

    def broken(self, m, cmd, r, walk, hist, *rest):
        with m.If(cmd.op == hw.FfnrOp.HIST):
            m.d.comb += hist.clear.eq(1)
        orig(self, m, cmd, r, walk, hist, *rest)

    monkeypatch.setattr(hw.FFNR, "_command", broken)
    rng = np.random.default_rng(27)
    cases = tiled_cases(TOY, rng, 4, 6)[:1]
    runs, dut = run_amaranth_program(TOY, cases, t_max=4, n_max=6)
    with pytest.raises(AssertionError, match="Arrays are not equal"):
        check_tiled(TOY, cases, runs, dut.sizes)


def test_tiled_limits_are_refused_with_the_limit():
    """hist_max: the host refuses a layer past it, the constructor one below t_max * n_max."""
    from exion.sim.ffnr_rtl import check_case
    with pytest.raises(ExionError, match=r"T x N <= 10 values per layer \(hist_max\)"):
        check_case(TOY, FfnrCase(np.zeros((3, 4), np.int64)), hist_max=10)
    with pytest.raises(ExionError, match=r"hist_max = 5 is invalid: must be an integer in 8\.\."):
        hw.FfnrSizes(TOY, t_max=2, n_max=4, hist_max=5)
    assert hw.FfnrSizes(TOY).cnt_bits == 32 and hw.FfnrSizes(E16).hist_max == 2**32 - 1
    with pytest.raises(ExionError, match=r"tile \(40, 3\): tiles are 1\.\.32 x 1\.\.256"):
        tile_of(FfnrCase(np.zeros((3, 4), np.int64), tile=(40, 3)), 32, 256)
