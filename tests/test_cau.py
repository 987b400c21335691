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
from exion.golden.conmerge import cau
from exion.hw.cau import (CAU, cau_pass_layout, default_max_cols, default_merge_lanes,
                          mask_layout)
from exion.hw.sdue import pass_layout
from exion.sim.cau_rtl import mask_beats, runs_from_passes
from exion.sim.payload import unpack

TOY = PRESETS["toy"]
E16 = PRESETS["exion16"]


def run_amaranth_cau(cfg, cases, *, seed=0, gaps=0.0, backpressure=0.0, **kw):
    """Stream ``cases`` [(mask, sort[, ways])] through ``CAU(cfg, **kw)``; one run per case
    (``ways``: the run-time merge ways of the mask's beats, default ``cfg.merge_ways``)."""
    dut = CAU(cfg, **kw)
    rng = np.random.default_rng(seed)
    layout = dut.out.payload.shape()
    out = []

    async def tb(ctx):
        for mask, sort, *ways in cases:
            beats = mask_beats(cfg, mask, dut.cols_per_cycle, sort == "none",
                               dut.sort == "runtime", *ways)
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
    """Every emitted pass against ``golden.conmerge.cau`` (the CAU's golden function)."""
    for n, ((mask, sort, *ways), run) in enumerate(zip(cases, runs)):
        want = cau(cfg, mask, sort=sort, merge_ways=ways[0] if ways else None)
        msg = f"{label} case {n} ({mask.shape}, sort={sort}, ways={ways})"
        np.testing.assert_array_equal(run.row_block, want.row_block, err_msg=msg)
        np.testing.assert_array_equal(run.members, want.members, err_msg=msg)
        np.testing.assert_array_equal(run.select, want.select, err_msg=msg)
        np.testing.assert_array_equal(run.last, want.last, err_msg=msg)


CFGS = {"toy": TOY, "toy-m1": TOY.replace(merge_ways=1), "toy-m8": TOY.replace(merge_ways=8),
        "C1-m3": TOY.replace(cols=1, merge_ways=3),
        "w5-m3": TOY.replace(merge_window=5, merge_ways=3),
        "R1": TOY.replace(rows=1, cols=2, merge_ways=1)}


def _lane_cases():
    """(config, P, merge lanes): every config with P = 1, 3 (does not divide N), 4, 8, paired
    with 1 lane (P = 1: the original CAU), 2 lanes (P = 3) and the most the config allows,
    min(C, W_open) (P = 4, 8). The other configs' P = 1 and P = 4 run under ``make
    test-long`` (toy keeps every P here; the other configs keep P = 3 and 8)."""
    out = []
    for name, cfg in CFGS.items():
        hi = min(cfg.cols, cfg.w_open)
        for P, ln in ((1, 1), (3, min(2, hi)), (4, hi), (8, hi)):
            long = [pytest.mark.long] if name != "toy" and P in (1, 4) else []
            out.append(pytest.param(cfg, P, ln, id=f"{name}-P{P}-L{ln}", marks=long))
    return out


def _golden_cases(cfg, seed):
    rng = np.random.default_rng(seed)
    M, N = 2 * cfg.rows + 3, 3 * cfg.cols + 2          # partial row block, N % C != 0
    cases = [(m, "popcount") for m in adversarial_masks(cfg, M, N).values()]
    for d in (1.0, 0.5, 0.2, 0.05, 0.01):                # density (sparsity 0 % .. 99 %)
        mask = rng.random((int(rng.integers(1, 3 * cfg.rows)), int(rng.integers(1, 29)))) < d
        cases += [(mask, "popcount"), (mask, "none")]
    return cases


@pytest.mark.parametrize("cfg,P,lanes", _lane_cases())
def test_cau_matches_golden(cfg, P, lanes):
    seed = 100 + 10 * P + lanes
    cases = _golden_cases(cfg, seed)
    runs = run_amaranth_cau(cfg, cases, seed=seed, gaps=0.25, backpressure=0.4,
                            cols_per_cycle=P, max_cols=32, merge_lanes=lanes)
    check_against_golden(cfg, cases, runs, f"seed={seed}")


def _wrong_first_fit(fits):
    """Mutation: the second-oldest window slot is never taken."""
    from amaranth import Cat, Const
    from exion.hw.cau_stages import _lowest
    return _lowest(Cat(fits[0], Const(0, 1), fits[2:]))


def _no_chain(a, b):
    """Mutation: lane j does not see the cvs the lanes before it placed this cycle."""
    from amaranth import Const
    return Const(0, 1)


def _runtime_ways_cases(cfg, seed):
    """Every mask of :func:`_golden_cases` once per run-time m below ``cfg.merge_ways``."""
    return [(mask, sort, w) for w in range(1, cfg.merge_ways)
            for mask, sort in _golden_cases(cfg, seed)]


@pytest.mark.parametrize("cfg,lanes", [(TOY, 2), (TOY.replace(merge_ways=4), 1),
                                       pytest.param(TOY.replace(merge_ways=4), 3,
                                                    marks=pytest.mark.long)],
                         ids=["toy-m2-L2", "toy-m4-L1", "toy-m4-L3"])
def test_cau_runtime_ways(cfg, lanes):
    """One CAU build, any run-time m in 1..cfg.merge_ways (the mask beats' ``ways``): the
    passes are golden ``cau(..., merge_ways=m)``'s and the cycles the model's."""
    seed = 7 + lanes
    cases = _runtime_ways_cases(cfg, seed)
    runs = run_amaranth_cau(cfg, cases, seed=seed, gaps=0.2, backpressure=0.3,
                            cols_per_cycle=4, max_cols=32, merge_lanes=lanes)
    check_against_golden(cfg, cases, runs, f"seed={seed}")
    free = run_amaranth_cau(cfg, cases, cols_per_cycle=4, max_cols=32, merge_lanes=lanes)
    for (mask, sort, w), run in zip(cases, free):
        sch = cy.cau_schedule(cfg, mask, merge_ways=w, sort=sort, cols_per_cycle=4,
                              merge_lanes=lanes)
        assert run.cycles == sch["total"], (w, sort, mask.shape)


def test_cau_ignoring_runtime_ways_fails(monkeypatch):
    """The run-time m check can fail: a CAU that merges with the built m instead of the
    beats' ``ways`` is caught."""
    import exion.hw.cau_stages as st
    from amaranth import Const
    monkeypatch.setattr(st, "_run_ways", lambda beat: Const(TOY.merge_ways, len(beat.ways)))
    cases = _runtime_ways_cases(TOY, 5)
    runs = run_amaranth_cau(TOY, cases, cols_per_cycle=4, max_cols=32)
    with pytest.raises(AssertionError):
        check_against_golden(TOY, cases, runs)


@pytest.mark.parametrize("mutation,lanes", [("_first_fit", 1), ("_first_fit", 3),
                                            ("_conflict", 2), ("_conflict", 3)])
def test_cau_wrong_merge_fails(monkeypatch, mutation, lanes):
    """The checks can fail: a CAU with a deliberately wrong merge is caught on the same
    cases (the oldest-fit rule broken; the chained fit test of a second lane broken)."""
    import exion.hw.cau_stages as hw_cau
    monkeypatch.setattr(hw_cau, mutation,
                        _wrong_first_fit if mutation == "_first_fit" else _no_chain)
    cases = _golden_cases(TOY, 5)
    runs = run_amaranth_cau(TOY, cases, seed=5, cols_per_cycle=4, max_cols=32,
                            merge_lanes=lanes)
    with pytest.raises(AssertionError):
        check_against_golden(TOY, cases, runs)


@pytest.mark.parametrize("sort", ["popcount", "none"])
def test_cau_fixed_sort_generation(sort):
    """A CAU generated with a fixed strategy ignores the (absent) run-time bit."""
    rng = np.random.default_rng(7)
    cases = [(rng.random((13, 17)) < 0.3, sort)]
    runs = run_amaranth_cau(TOY, cases, sort=sort, max_cols=20, backpressure=0.2, seed=7)
    check_against_golden(TOY, cases, runs)
    assert "sort" not in dict(mask_layout(TOY, 4, runtime_sort=False))
    assert "sort" in dict(mask_layout(TOY, 4, runtime_sort=True))


@pytest.mark.long      # exion16's CAU against golden: tests/test_cau_rtl.py on Verilator
def test_cau_exion16_small():
    rng = np.random.default_rng(16)
    cases = [(rng.random((37, 40)) < d, s) for d in (0.6, 0.1, 0.03)
             for s in ("popcount", "none")]
    cases.append((np.ones((16, 40), bool), "popcount"))
    runs = run_amaranth_cau(E16, cases, seed=16, gaps=0.1, backpressure=0.3, max_cols=40)
    check_against_golden(E16, cases, runs, "seed=16")


@pytest.mark.parametrize("cfg,P,lanes", [
    (TOY, 4, 1), (TOY, 5, 2), (TOY, 8, 3), (TOY.replace(cols=1), 1, 1),
    (TOY.replace(merge_ways=1), 3, 3), (TOY.replace(merge_window=5, merge_ways=3), 3, 2),
    (E16, 4, 1),
    # exion16 at its default P and lanes runs on Verilator in the default suite
    # (tests/test_cau_rtl.py); its other pysim cases are long
    pytest.param(E16, 8, None, marks=pytest.mark.long),
    pytest.param(E16, 7, 2, marks=pytest.mark.long),
    pytest.param(E16.replace(merge_ways=2), 8, None, marks=pytest.mark.long)],
    ids=["toy-P4-L1", "toy-P5-L2", "toy-P8-L3", "C1-P1-L1", "toy-m1-P3-L3", "w5-m3-P3-L2",
         "exion16-P4-L1", "exion16-P8-default", "exion16-P7-L2", "exion16-m2-P8-default"])
def test_cau_cycles_match_model_exactly(cfg, P, lanes):
    """No gaps, output always ready: every block's last pass at the modelled cycle."""
    rng = np.random.default_rng(5)
    cases = [(rng.random((4 * cfg.rows + 3, 29)) < d, s)
             for d in (0.0, 0.05, 0.3, 0.9) for s in ("popcount", "none")]
    z = np.zeros((3 * cfg.rows, 20), bool)
    z[cfg.rows + 2, 5] = True                            # empty blocks around a one-bit block
    cases.append((z, "popcount"))
    cases.append((rng.random((2 * cfg.rows, 32)) < 0.15, "popcount"))   # N = max_cols
    kw = {} if lanes is None else {"merge_lanes": lanes}
    runs = run_amaranth_cau(cfg, cases, cols_per_cycle=P, max_cols=32, **kw)
    for (mask, sort), run in zip(cases, runs):
        sch = cy.cau_schedule(cfg, mask, sort=sort, cols_per_cycle=P, merge_lanes=lanes)
        np.testing.assert_array_equal(run.pass_cycles[run.last], sch["done"][sch["done"] >= 0])
        assert run.cycles == sch["total"]
    check_against_golden(cfg, cases, runs)


def test_cau_defaults():
    """Generated defaults: P = 8, LN from golden.cycles.cau_default_lanes (one source)."""
    for cfg, lanes in ((E16, 3), (TOY, 2), (TOY.replace(merge_ways=1), 1),
                       (TOY.replace(cols=1, merge_ways=3), 1), (E16.replace(merge_ways=16), 4),
                       (E16.replace(merge_window=2), 2)):
        dut = CAU(cfg)
        dut._MustUse__silence = True          # built for its parameters only
        assert (dut.cols_per_cycle, dut.merge_lanes) == (cy.CAU_COLS_PER_CYCLE, lanes)
        assert default_merge_lanes(cfg) == cy.cau_default_lanes(cfg) == lanes
        assert dut.constants()["merge_lanes"] == lanes
    assert cy.CAU_COLS_PER_CYCLE == 8


def test_cau_lanes_config_field():
    """``cau_lanes`` overrides the derived lanes of every CAU the config builds (the RTL's
    default and the model's, one source), costs CAU cycles the model counts, leaves the
    preset hashes alone while omitted, and is refused outside 1..min(C, window) naming the
    field."""
    from exion.config import ConfigError
    one = TOY.replace(name="toy_l1", cau_lanes=1)
    dut = CAU(one)
    dut._MustUse__silence = True
    assert (dut.merge_lanes, one.cau_sort_banks) == (1, 1)
    assert default_merge_lanes(one) == cy.cau_default_lanes(one) == 1
    assert TOY.replace(cau_lanes=2).hash != TOY.hash == TOY.replace(cau_lanes=None).hash
    mask = np.ones((4 * TOY.rows, 24), bool)            # dense: 8 full passes a block
    assert (cy.cau_schedule(one, mask)["total"] > cy.cau_schedule(TOY, mask)["total"]
            == cy.cau_schedule(TOY, mask, merge_lanes=2)["total"])
    assert cy.cau_schedule(one, mask)["total"] == cy.cau_schedule(TOY, mask,
                                                                   merge_lanes=1)["total"]
    for bad in (0, 4, True, "2"):
        with pytest.raises(ConfigError, match="cau_lanes"):
            TOY.replace(cau_lanes=bad)
    with pytest.raises(ConfigError, match="cau_lanes"):
        TOY.replace(cau_lanes=3, merge_window=2)


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
    ({"merge_lanes": 0}, "merge_lanes = 0 is invalid: must be an integer in 1..3 (at most "
                         "C = 3, W_open = 3 and 8)"),
    ({"merge_lanes": 4}, "merge_lanes = 4 is invalid: must be an integer in 1..3"),
    ({"merge_lanes": True}, "merge_lanes = True is invalid"),
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
    # one lane: the original 1 + n / 1 + n + f
    assert cy.cau_stage_cycles(4608, 1779, 16, 4) == {
        "read": 1152, "sort": cy.CAU_SORT_START + cy.CAU_SORT_LOAD + 1779,
        "merge": cy.CAU_MERGE_START + cy.CAU_MERGE_LOAD + 1795}
    assert cy.cau_stage_cycles(10, 0, 0, 4) == {"read": 3, "sort": 1, "merge": 1}
    # three lanes: beats of 8 with 8, 3, 1, 0 non-zero columns sort in 3 + 1 + 1 cycles;
    # 12 columns merge in 4 cycles; 5 slots, 4 in the window: the pass being assembled
    # (C = 3) holds 1 slot, so the flush retires 2 (pass full), then 2: 2 cycles
    st = cy.cau_stage_cycles(32, 12, 4, 8, merge_lanes=3, beat_nz=[8, 3, 1, 0], slots=5,
                             cols=3)
    assert st == {"read": 4, "sort": 2 + 5, "merge": 2 + 4 + 2}
    assert cy.cau_flush_cycles(5, 4, 3, 3) == 2
    assert cy.cau_flush_cycles(16, 16, 16, 3) == 6           # 3+3+3+3+3+1
    assert cy.cau_flush_cycles(20, 16, 16, 3) == 6           # 4 in the pass: 3+3+3+3, 3+1
    assert cy.cau_flush_cycles(7, 3, 3, 2) == 2              # 1 in the pass: 2 | 1
    assert cy.cau_flush_cycles(3, 3, 3, 1) == 3
    with pytest.raises(ExionError, match="merge_lanes = 3 needs beat_nz, slots and cols"):
        cy.cau_stage_cycles(32, 12, 4, 8, merge_lanes=3)
    mask = np.zeros((9, 10), bool)                         # two row blocks: 4 and 0 cvs
    mask[0, :4] = True
    f = min(4, TOY.w_open)          # all four cvs are row 0 only: 4 slots, window of 3 left
    for lanes in (1, 2, 3):
        got = cy.cau_cycles(TOY, mask, cols_per_cycle=4, merge_lanes=lanes).tolist()
        assert got == [cy.cau_block_cycles(TOY, 10, 4, f, 4, merge_lanes=lanes,
                                           beat_nz=[4, 0, 0], slots=4),
                       cy.cau_block_cycles(TOY, 10, 0, 0, 4, merge_lanes=lanes)]
    # merge with 2 lanes: fetch, load, 2 cycles of 2 columns, flush 2 (pass holds 1: 2 | 1)
    assert cy.cau_cycles(TOY, mask, cols_per_cycle=4, merge_lanes=2).tolist() == [6, 3]
    # gemm_cycles charges the default CAU (P = 8, default lanes)
    from exion.golden.conmerge import conmerge as cm
    rng = np.random.default_rng(3)
    big = rng.random((32, 200)) < 0.1
    g = cy.gemm_cycles(E16, 64, cm(E16, big), mask=big)
    assert g.cau_cycles == int(cy.cau_cycles(E16, big, cols_per_cycle=8,
                                             merge_lanes=3).sum())


def test_cau_sort_steps_model():
    """The banked sorted buffer's sort cycles (``cau_sort_steps``), by hand: LN = 3, 8 banks."""
    from exion.config import cau_sort_banks
    assert [cau_sort_banks(ln) for ln in (1, 2, 3, 4, 5)] == [1, 4, 8, 8, 16]
    # one beat, positions 0, 8, 1, 2, 16: 0 | 8 (bank 0 again: stop) | 8, 1, 2 | 16 -> 3
    assert cy.cau_sort_steps([0, 8, 1, 2, 16], [0] * 5, 3) == {0: 3}
    assert cy.cau_sort_steps([0, 8, 1, 2, 16], [0] * 5, 3, banks=32) == {0: 2}
    assert cy.cau_sort_steps([0, 8], [0, 1], 3) == {0: 1, 1: 1}
    assert cy.cau_sort_steps([3, 7, 11], [2, 2, 2], 1) == {2: 3}
    # stage cycles take the steps when given
    st = cy.cau_stage_cycles(32, 5, 2, 8, merge_lanes=3, beat_nz=[5, 0, 0, 0], slots=2,
                             cols=3, sort_steps=[3, 0, 0, 0])
    assert st["sort"] == cy.CAU_SORT_START + cy.CAU_SORT_LOAD + 3


def _collision_cases(cfg, seed):
    rng = np.random.default_rng(seed)
    return [(rng.random((2 * cfg.rows, 32)) < d, "popcount") for d in (0.3, 0.6)]


def test_cau_bank_collisions_timed_exactly():
    """Dense toy masks collide in the sorted buffer's banks: the RTL's cycles are the
    model's, and a model that ignores the collisions (``ceil(nz / LN)`` per beat) is not."""
    cases = _collision_cases(TOY, 11)
    runs = run_amaranth_cau(TOY, cases, cols_per_cycle=8, max_cols=32)
    check_against_golden(TOY, cases, runs)
    differs = False
    for (mask, sort), run in zip(cases, runs):
        sch = cy.cau_schedule(TOY, mask, sort=sort, cols_per_cycle=8)
        assert run.cycles == sch["total"]
        blocks = cy._cau_blocks(TOY, mask, None, sort, None, 8, TOY.cau_merge_lanes)
        for bl in blocks:
            bl.pop("sort_steps")                  # the broken model: no collisions
        st = cy._cau_stages(TOY, mask.shape[1], blocks, 8, TOY.cau_merge_lanes)
        differs |= [s["sort"] for s in st] != sch["sort"].tolist()
    assert differs


def test_cau_bank_collision_ignored_fails(monkeypatch):
    """A stage B that writes colliding lanes in the same cycle (two writes on one bank)
    loses columns: the golden comparison catches it."""
    import exion.hw.cau_stages as st
    from amaranth import Const
    monkeypatch.setattr(st, "_bank_free", lambda earlier, bank: Const(1, 1))
    cases = _collision_cases(TOY, 11)
    runs = run_amaranth_cau(TOY, cases, cols_per_cycle=8, max_cols=32)
    with pytest.raises(AssertionError):
        check_against_golden(TOY, cases, runs)


def test_cau_stage_c_registers_timed_and_needed(monkeypatch):
    """Stage C's read and retire registers (issue 22): the model without their cycles
    (``CAU_MERGE_LOAD`` = 0, ``CAU_OUT_LATENCY`` one less) misses the RTL's cycles, and a
    merge that reads the sorted buffer only one group ahead (as before the read register)
    merges the wrong columns."""
    rng = np.random.default_rng(7)
    cases = [(rng.random((4 * TOY.rows, 24)) < d, "popcount") for d in (0.1, 0.2, 0.4, 0.6)]
    runs = run_amaranth_cau(TOY, cases, cols_per_cycle=8, max_cols=32)
    check_against_golden(TOY, cases, runs)
    for (mask, sort), run in zip(cases, runs):
        assert run.cycles == cy.cau_schedule(TOY, mask, sort=sort, cols_per_cycle=8)["total"]
    for name, value in (("CAU_MERGE_LOAD", 0), ("CAU_OUT_LATENCY", cy.CAU_OUT_LATENCY - 1)):
        with monkeypatch.context() as mp:
            mp.setattr(cy, name, value)
            assert any(run.cycles != cy.cau_schedule(TOY, mask, sort=sort,
                                                     cols_per_cycle=8)["total"]
                       for (mask, sort), run in zip(cases, runs)), name
    import exion.hw.cau_stages as st
    monkeypatch.setattr(st, "_read_ahead", lambda lanes: lanes)
    bad = run_amaranth_cau(TOY, cases, cols_per_cycle=8, max_cols=32)
    with pytest.raises(AssertionError):
        check_against_golden(TOY, cases, bad)
