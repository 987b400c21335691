"""Issue 18 (area): ``hw.epre_radix.EpreRadixSelector`` in the Amaranth simulator against
``golden.predict.threshold_select`` / ``topk_select`` / ``dominant_rows`` (mask bit-exact,
dominant flag) and ``golden.cycles.epre_radix_select_cycles`` (exact), on random rows, ties
at the kN-th place, all-equal rows, extreme values (-2^(A-1), 2^(A-1) - 1), kN = 0 and
kN = N_k, N_k not a multiple of P, both dominant polarities, with 1 - 4 bits decided per
pass (``epre_radix_bits``; 3 does not divide A = 32: a zero-padded top digit). Plus a
mutation: a selector whose pass ignores the prefix found so far must fail the same check
(and, run once by hand, one whose counters count each digit value alone instead of every
larger one fails the b >= 2 cases, which b = 1 cannot tell apart)."""

import numpy as np
import pytest
from amaranth import Const
from amaranth.sim import Simulator

from exion import PRESETS
from exion.golden.cycles import epre_radix_select_cycles
from exion.golden.predict import dominant_rows, threshold_select, topk_select
from exion.hw.epre_radix import EpreRadixSelector

CFG = PRESETS["toy"]


def run_rows(dut, rows, k_n, q_th=None, keep_all=False):
    """Select each row of ``rows`` (N_q x N_k ints) with ``dut``: returns (mask, dominant,
    cycles per row)."""
    n_q, n_k = rows.shape
    P = dut.ports
    masks, doms, cycles = [], [], []

    async def tb(ctx):
        ctx.set(dut.start, 1)
        ctx.set(dut.k_n, k_n)
        ctx.set(dut.n_k, n_k)
        ctx.set(dut.keep_all, int(keep_all))
        ctx.set(dut.q_th_en, int(q_th is not None))
        ctx.set(dut.q_th, 0 if q_th is None else q_th)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for row in rows:
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for j, s in enumerate(row):              # stage-2 stream (tracker)
                ctx.set(dut.s_v, 1)
                ctx.set(dut.s_score, int(s))
                ctx.set(dut.s_key, j)
                await ctx.tick()
            ctx.set(dut.s_v, 0)
            ctx.set(dut.go, 1)
            n, pend = 0, None
            while True:
                n += 1
                if pend is not None:                 # buffer read: one cycle latency
                    w = pend
                    ctx.set(dut.rdata, [int(row[w * P + p]) if w * P + p < n_k else -1
                                        for p in range(P)])
                rd, addr, done = ctx.get(dut.rd), ctx.get(dut.addr), ctx.get(dut.done)
                if done:
                    masks.append([(ctx.get(dut.mask_row) >> j) & 1 for j in range(n_k)])
                    doms.append(ctx.get(dut.dominant))
                    cycles.append(n)
                    await ctx.tick()
                    break
                pend = addr if rd else None
                await ctx.tick()
                ctx.set(dut.go, 0)
                assert n < 100_000

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return np.array(masks, bool).reshape(n_q, n_k), np.array(doms, bool), cycles


def golden(rows, k_n, q_th, keep_all):
    mask, _, _ = threshold_select(rows, k_n)
    assert (mask == topk_select(rows, k_n)).all()
    dom = dominant_rows(rows, q_th)
    if dom.any():
        mask[dom] = True if keep_all else topk_select(rows[dom], 1)
    return mask, dom


def cases(rng, A):
    lo, hi = -(1 << (A - 1)), (1 << (A - 1)) - 1
    r = rng.integers(-1000, 1000, size=(3, 13))
    yield "random", r, 4, None, False
    t = rng.integers(-3, 3, size=(4, 11))           # many ties at the kN-th place
    yield "ties", t, 5, None, False
    yield "all_equal", np.full((2, 9), 7), 3, None, False
    ext = rng.choice([lo, hi, 0, -1, lo + 1, hi - 1], size=(3, 10))
    yield "extremes", ext, 6, None, False
    yield "kn0", r[:2], 0, None, False
    yield "kn_all", r[:2], 13, None, False
    dom = rng.integers(-50, 50, size=(4, 7))
    dom[0, 3] = 400
    dom[2, 5] = 400
    yield "dominant_top1", dom, 2, 100, False
    yield "dominant_keep_all", dom, 2, 100, True
    big = rng.integers(lo, hi, size=(2, 37), endpoint=True)
    yield "wide_n37", big, 9, None, False


@pytest.mark.parametrize("ports,bits", [(1, 1), (4, 1), (5, 1), (4, 2), (5, 3), (1, 4)])
def test_radix_selector_matches_golden(ports, bits):
    rng = np.random.default_rng(18 + ports + 10 * bits)
    dut = EpreRadixSelector(CFG, 40, ports, bits)
    assert dut.digits == -(-CFG.acc_width // bits)
    for name, rows, k_n, q_th, keep_all in cases(rng, CFG.acc_width):
        mask, dom, cyc = run_rows(dut, np.asarray(rows, np.int64), k_n, q_th, keep_all)
        gm, gd = golden(np.asarray(rows, np.int64), k_n, q_th, keep_all)
        assert (dom == gd).all(), name
        assert (mask == gm).all(), name
        want = epre_radix_select_cycles(CFG, rows.shape[1], ports, bits)
        assert cyc == [want] * rows.shape[0], name
    # the config's field is the default
    cfg = CFG.replace(epre_radix_bits=bits)
    rows = rng.integers(-1000, 1000, size=(2, 11))
    mask, _, cyc = run_rows(EpreRadixSelector(cfg, 40, ports), rows, 3)
    assert (mask == golden(rows, 3, None, False)[0]).all()
    assert cyc == [epre_radix_select_cycles(cfg, 11, ports)] * 2
    assert epre_radix_select_cycles(cfg, 11, ports) == epre_radix_select_cycles(CFG, 11, ports,
                                                                               bits)


def test_radix_cycles_by_hand():
    # A = 32, N_k = 40, P = 4: 10 words a pass; b = 1: 32 passes of 12 cycles + 13;
    # b = 2: 16 passes; b = 3: 11 (a padded top digit); b = 4: 8
    for bits, passes in ((1, 32), (2, 16), (3, 11), (4, 8)):
        assert epre_radix_select_cycles(CFG, 40, 4, bits) == passes * 12 + 13


class _NoPrefix(EpreRadixSelector):
    """Mutant: a pass counts keys by their digit alone (the prefix is ignored)."""

    @staticmethod
    def _match(u, pfx, hmask):
        return Const(1)


@pytest.mark.parametrize("bits", [1, 2])
def test_radix_selector_mutation_fails(bits):
    rng = np.random.default_rng(5)
    rows = rng.integers(-1000, 1000, size=(3, 13))
    mask, _, _ = run_rows(_NoPrefix(CFG, 16, 4, bits), rows, 4)
    gm, _ = golden(rows, 4, None, False)
    assert not (mask == gm).all()
