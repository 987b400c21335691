"""CAU in the Amaranth simulator against golden ConMerge and the cycle model (fast; no Verilator).

The driver streams masks with seeded idle gaps and back-pressure and decodes every emitted pass
with the same helpers as the cocotb bench (``exion.sim.cau_rtl``); a pass list is compared with
``golden.conmerge`` array by array, and the cycle counts with ``golden.cycles.cau_schedule``.
Small ``max_cols`` keeps the simulation quick; the generated default is covered by the
Verilator tests.
"""

import numpy as np
from mask_cases import adversarial_masks
import pytest
from amaranth import Value
from amaranth.sim import Simulator

from exion import PRESETS
from exion.errors import ExionError
from exion.golden import cycles as cy
from exion.golden.conmerge import conmerge
from exion.hw.cau import CAU, cau_pass_layout, default_max_cols, mask_layout
from exion.hw.sdue import pass_layout
from exion.sim.cau_rtl import mask_beats, runs_from_passes
from exion.sim.payload import unpack

TOY = PRESETS["toy"]
E16 = PRESETS["exion16"]


def run_amaranth_cau(cfg, cases, *, seed=0, gaps=0.0, backpressure=0.0, **kw):
    """Stream ``cases`` [(mask, sort)] through ``CAU(cfg, **kw)``; one run per case."""
    dut = CAU(cfg, **kw)
    rng = np.random.default_rng(seed)
    layout = dut.out.payload.shape()
    out = []

    async def tb(ctx):
        for mask, sort in cases:
            beats = mask_beats(cfg, mask, dut.cols_per_cycle, sort == "none",
                               dut.sort == "runtime")
            i, cyc, passes, pcyc = 0, 0, [], []
            while True:
                offer = i < len(beats) and rng.random() >= gaps
                ctx.set(dut.mask.valid, int(offer))
                if offer:
                    ctx.set(dut.mask.payload, beats[i])
                rdy = int(rng.random() >= backpressure)
                ctx.set(dut.out.ready, rdy)
                in_rdy, out_valid = ctx.get(dut.mask.ready), ctx.get(dut.out.valid)
                raw = ctx.get(Value.cast(dut.out.payload))
                if i >= len(beats) and not ctx.get(dut.busy):
                    break
                await ctx.tick()
                cyc += 1
                i += int(offer and in_rdy)
                if out_valid and rdy:
                    passes.append(unpack(layout, raw))
                    pcyc.append(cyc)
            out.append(runs_from_passes(cfg, passes, pcyc, cyc))
        assert not ctx.get(dut.overflow)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return out


def check_against_golden(cfg, cases, runs, label=""):
    for n, ((mask, sort), run) in enumerate(zip(cases, runs)):
        plan = conmerge(cfg, mask, sort=sort)
        msg = f"{label} case {n} ({mask.shape}, sort={sort})"
        np.testing.assert_array_equal(run.row_block, plan.row_block, err_msg=msg)
        np.testing.assert_array_equal(run.members, plan.members, err_msg=msg)
        np.testing.assert_array_equal(run.select, plan.select, err_msg=msg)
        rb = plan.row_block
        last = np.r_[rb[1:] != rb[:-1], True] if rb.size else np.zeros(0, bool)
        np.testing.assert_array_equal(run.last, last, err_msg=msg)


@pytest.mark.parametrize("cfg", [TOY, TOY.replace(merge_ways=1), TOY.replace(merge_ways=8),
                                 TOY.replace(cols=1, merge_ways=3),
                                 TOY.replace(merge_window=5, merge_ways=3),
                                 TOY.replace(rows=1, cols=2, merge_ways=1)],
                         ids=["toy", "toy-m1", "toy-m8", "C1-m3", "w5-m3", "R1"])
@pytest.mark.parametrize("P", [1, 3, 4], ids=lambda p: f"P{p}")
def test_cau_matches_golden(cfg, P):
    seed = 100 + P
    rng = np.random.default_rng(seed)
    M, N = 2 * cfg.rows + 3, 3 * cfg.cols + 2          # partial row block, N % C != 0
    cases = [(m, "popcount") for m in adversarial_masks(cfg, M, N).values()]
    for d in (1.0, 0.5, 0.2, 0.05, 0.01):                # density (sparsity 0 % .. 99 %)
        mask = rng.random((int(rng.integers(1, 3 * cfg.rows)), int(rng.integers(1, 29)))) < d
        cases += [(mask, "popcount"), (mask, "none")]
    runs = run_amaranth_cau(cfg, cases, seed=seed, gaps=0.25, backpressure=0.4,
                            cols_per_cycle=P, max_cols=32)
    check_against_golden(cfg, cases, runs, f"seed={seed}")


@pytest.mark.parametrize("sort", ["popcount", "none"])
def test_cau_fixed_sort_generation(sort):
    """A CAU generated with a fixed strategy ignores the (absent) run-time bit."""
    rng = np.random.default_rng(7)
    cases = [(rng.random((13, 17)) < 0.3, sort)]
    runs = run_amaranth_cau(TOY, cases, sort=sort, max_cols=20, backpressure=0.2, seed=7)
    check_against_golden(TOY, cases, runs)
    assert "sort" not in dict(mask_layout(TOY, 4, runtime_sort=False))
    assert "sort" in dict(mask_layout(TOY, 4, runtime_sort=True))


def test_cau_exion16_small():
    rng = np.random.default_rng(16)
    cases = [(rng.random((37, 40)) < d, s) for d in (0.6, 0.1, 0.03)
             for s in ("popcount", "none")]
    cases.append((np.ones((16, 40), bool), "popcount"))
    runs = run_amaranth_cau(E16, cases, seed=16, gaps=0.1, backpressure=0.3, max_cols=40)
    check_against_golden(E16, cases, runs, "seed=16")


@pytest.mark.parametrize("cfg,P", [(TOY, 4), (TOY.replace(cols=1), 1), (E16, 4)],
                         ids=["toy-P4", "C1-P1", "exion16-P4"])
def test_cau_cycles_match_model_exactly(cfg, P):
    """No gaps, output always ready: every block's last pass at the modelled cycle."""
    rng = np.random.default_rng(5)
    cases = [(rng.random((4 * cfg.rows + 3, 29)) < d, s)
             for d in (0.0, 0.05, 0.3, 0.9) for s in ("popcount", "none")]
    z = np.zeros((3 * cfg.rows, 20), bool)
    z[cfg.rows + 2, 5] = True                            # empty blocks around a one-bit block
    cases.append((z, "popcount"))
    runs = run_amaranth_cau(cfg, cases, cols_per_cycle=P, max_cols=32)
    for (mask, sort), run in zip(cases, runs):
        sch = cy.cau_schedule(cfg, mask, sort=sort, cols_per_cycle=P)
        np.testing.assert_array_equal(run.pass_cycles[run.last], sch["done"][sch["done"] >= 0])
        assert run.cycles == sch["total"]


def test_cau_layouts_match_sdue():
    for cfg in (TOY, E16, TOY.replace(merge_ways=1)):
        lay = cau_pass_layout(cfg, default_max_cols(cfg))
        assert lay["sel"].shape == pass_layout(cfg)["sel"].shape
        assert lay["col"].shape.length == cfg.cols
        assert lay["col"].shape.elem_shape.length == cfg.merge_ways
    # a max_cols the SDUE's OMEM offset can hold gives exactly its col layout
    assert cau_pass_layout(TOY, TOY.omem_depth)["col"].shape == pass_layout(TOY)["col"].shape
    assert default_max_cols(E16) == 4608


@pytest.mark.parametrize("kw,msg", [
    ({"cols_per_cycle": 0}, "cols_per_cycle = 0 is invalid: must be an integer in 1..64"),
    ({"max_cols": 0}, "max_cols = 0 is invalid: must be an integer >= 1"),
    ({"sort": "random"}, "sort = 'random' is invalid: choose one of popcount, none, runtime"),
    ({"fifo_depth": 0}, "fifo_depth = 0 is invalid: must be an integer >= 1"),
])
def test_cau_constructor_checks(kw, msg):
    with pytest.raises(ExionError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        CAU(TOY, **kw)


def test_cau_overflow_flag():
    dut = CAU(TOY, max_cols=4, cols_per_cycle=4)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.out.ready, 1)
        for i in range(2):                                 # 8 columns > max_cols = 4
            ctx.set(dut.mask.valid, 1)
            ctx.set(dut.mask.payload, {"cv": [1, 2, 4, 8], "last": int(i == 1), "block": 0,
                                       "sort": 0})
            await ctx.tick()
        ctx.set(dut.mask.valid, 0)
        for _ in range(30):
            await ctx.tick()
        seen["overflow"] = ctx.get(dut.overflow)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen["overflow"] == 1


def test_cau_model_figures():
    """The stage formulas, and the steady interval as ``cau_cycles`` reports it."""
    assert cy.cau_stage_cycles(4608, 1779, 16) == {
        "read": 1152, "sort": cy.CAU_SORT_START + 1779, "merge": cy.CAU_MERGE_START + 1795}
    assert cy.cau_stage_cycles(10, 0, 0, 4) == {"read": 3, "sort": 1, "merge": 1}
    mask = np.zeros((9, 10), bool)                         # two row blocks: 4 and 0 cvs
    mask[0, :4] = True
    f = min(4, TOY.w_open)          # all four cvs are row 0 only: 4 slots, window of 3 left
    assert cy.cau_cycles(TOY, mask).tolist() == [cy.cau_block_cycles(TOY, 10, 4, f),
                                                 cy.cau_block_cycles(TOY, 10, 0, 0)]
