"""The ``gemm`` top (CAU -> weight fetch -> SDUE) Verilated under cocotb, against golden.

A product runs from (A, B, mask) alone: the host only loads memories and streams the mask;
the engine derives the ConMerge vectors and descriptors. Every output is compared with
``golden.conmerge.masked_gemm`` (independent of any ConMerge plan), every tile's pass count
with ``golden.conmerge.conmerge``, and every tile's busy cycles, stall counter and fetched
words equal ``golden.cycles.engine_cycles`` (both dataflows, every bandwidth).
"""

import dataclasses

import numpy as np
from mask_cases import adversarial_masks
import pytest

from exion import PRESETS
from exion.golden import cycles as cy
from exion.errors import ExionError
from exion.golden.conmerge import conmerge, masked_gemm
from exion.sim.gemm_rtl import (GEMM_COLS_PER_CYCLE, GemmCase, engine_model, model_error,
                                 plan_tiles, rtl_sparse_gemm)

pytestmark = pytest.mark.rtl

TOY = PRESETS["toy"]
E16 = PRESETS["exion16"]
SPARSITIES = (0.0, 0.5, 0.8, 0.95, 0.99)


def _operands(cfg, rng, M, K, N):
    a = rng.integers(cfg.wmin, cfg.wmax + 1, (M, K))
    b = rng.integers(cfg.wmin, cfg.wmax + 1, (K, N))
    prev = rng.integers(-(2 ** 20), 2 ** 20, (M, N))
    return a, b, prev


def cases_for(cfg, seed, extreme_k=True):
    """Directed masks (partial last row block, N % C != 0), random sparsities 0..99 %, the
    extreme operands, minimum and maximal K, several tiles, accumulate, sort = none and a
    single WMEM region (the fetch waits for the SDUE: back-pressure on the CAU)."""
    rng = np.random.default_rng(seed)
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    M, N, K = 2 * R + 3, 3 * C + 2, 3 * L + 1
    cases = []
    for name, mask in adversarial_masks(cfg, M, N).items():
        a, b, prev = _operands(cfg, rng, M, K, N)
        cases.append(GemmCase(a, b, mask, prev, name=name))
    for s in SPARSITIES:
        m_, n_ = int(rng.integers(R, 3 * R + 1)), int(rng.integers(C, 6 * C + 1))
        a, b, prev = _operands(cfg, rng, m_, K, n_)
        mask = rng.random((m_, n_)) >= s
        cases.append(GemmCase(a, b, mask, prev, name=f"random{s:.2f}"))
        cases.append(GemmCase(a, b, mask, prev, accumulate=True, sort="none",
                              name=f"random{s:.2f}-acc-none"))
    # extremes: every operand at the most negative value (largest products), K = 1
    a = np.full((R, 1), cfg.wmin)
    b = np.full((1, C + 1), cfg.wmin)
    cases.append(GemmCase(a, b, np.ones((R, C + 1), bool), name="k1-extreme"))
    if extreme_k:   # the longest K one run holds (IMEM: 2 * imem_words words per row)
        kmax = min(cfg.k_max, 2 * cfg.imem_words * L)
        a = np.full((R + 1, kmax), cfg.wmin)
        b = np.full((kmax, C + 1), cfg.wmin)
        mask = rng.random((R + 1, C + 1)) >= 0.5
        cases.append(GemmCase(a, b, mask, name="kmax-extreme"))
    # several tiles: more columns than OMEM holds, more row blocks than one run takes
    a, b, prev = _operands(cfg, rng, 3 * R + 1, 4 * L, cfg.omem_depth + C + 1)
    mask = rng.random(prev.shape) >= 0.9
    cases.append(GemmCase(a, b, mask, prev, name="tiles"))
    a, b, prev = _operands(cfg, rng, 2 * R, 2 * L, 2 * C + 1)
    mask = rng.random(prev.shape) >= 0.3
    cases.append(GemmCase(a, b, mask, prev, regions=1, name="one-region"))
    return cases


def check(cfg, cases, outs, runs, seed, timed=True):
    """Bit-exact with golden, pass counts of golden ConMerge and (``timed``) cycles, stalls
    and words equal to the engine model, tile by tile."""
    for case, out, run in zip(cases, outs, runs):
        msg = f"{cfg.name} case {case.name} seed {seed}"
        want = masked_gemm(cfg, case.a, case.b, case.mask, out=case.prev,
                           accumulate=case.accumulate)
        np.testing.assert_array_equal(out, want, err_msg=msg)
        tiles = plan_tiles(cfg, case)
        assert len(run.tile_cycles) == len(tiles), msg
        for t, npass in zip(tiles, run.tile_passes):
            sub = case.mask[t.rows[t.rows >= 0][:, None], t.cols[None, :]]
            if t.flow.get("gcols"):   # col-group, several groups: ConMerge per group
                sub = cy.group_mask(cfg, sub, t.flow["nblocks"], t.flow["gcols"])
            plan = conmerge(cfg, sub, sort=case.sort, merge_ways=case.ways)
            assert npass == plan.n_passes, msg
    if timed:
        check_engine_model(cfg, cases, runs)


# exion16: Amaranth generation (~100 s) and a Verilator build (~170 s) of its own on 2 cores,
# so it runs under `make test-long` (and `make demo` checks an exion16 product through the
# engine); its blocks (SDUE, CAU) are tested on exion16 in the default suite.
@pytest.mark.parametrize("cfg", [TOY, pytest.param(E16, marks=pytest.mark.long),
                                 pytest.param(TOY.replace(name="toy_m1", merge_ways=1),
                                              marks=pytest.mark.long)],
                         ids=["toy", "exion16", "toy-m1"])
def test_gemm_rtl_matches_golden(cfg):
    seed = 4242
    cases = cases_for(cfg, seed)
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed)
    check(cfg, cases, outs, runs, seed)


def test_gemm_rtl_runtime_ways():
    """One engine build (toy, 2 weight buses per column) runs products with m = 1 and 2:
    the run-time m travels in the mask beats; no new hardware. Outputs bit-exact, pass
    counts those of golden ConMerge with that m, cycles within the SDUE / serial bounds."""
    seed = 77
    cfg = TOY
    base = cases_for(cfg, seed, extreme_k=False)
    cases = [dataclasses.replace(c, ways=w, name=f"{c.name}-m{w}") for w in (1, 2)
             for c in base]
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed, run_name="gemm-ways")
    check(cfg, cases, outs, runs, seed)
    # m matters on these cases: the pass counts with m = 1 and m = 2 differ somewhere
    n = len(cases) // 2
    assert [r.tile_passes for r in runs[:n]] != [r.tile_passes for r in runs[n:]]


def test_gemm_rtl_mask_gaps():
    """Idle cycles on the mask stream change the timing, never the result."""
    seed = 99
    cases = cases_for(TOY, seed, extreme_k=False)
    outs, runs, _ = rtl_sparse_gemm(TOY, cases, seed=seed, gaps=0.4, run_name="gemm-gaps")
    check(TOY, cases, outs, runs, seed, timed=False)


def test_gemm_cau_runs_ahead():
    """With K/L >= C the SDUE, not the CAU, sets the pace: after the first row block's
    passes the engine adds little to the SDUE's own cycles for the same passes."""
    cfg = TOY
    rng = np.random.default_rng(3)
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    M, N, K = 4 * R, cfg.omem_depth // 4, 8 * C * L
    a, b, prev = _operands(cfg, rng, M, K, N)
    mask = rng.random((M, N)) >= 0.8
    case = GemmCase(a, b, mask, prev, name="ahead")
    outs, runs, _ = rtl_sparse_gemm(cfg, [case], seed=1, run_name="gemm-ahead")
    np.testing.assert_array_equal(outs[0], masked_gemm(cfg, a, b, mask, out=prev))
    (t,) = plan_tiles(cfg, case)
    kw = t.setup["kwords"]
    npass = runs[0].tile_passes[0]
    sdue = cy.sdue_cycles(cfg, [kw] * npass)
    first = conmerge(cfg, mask[:R], sort="popcount").n_passes
    lead = cy.cau_schedule(cfg, mask[:R], cols_per_cycle=GEMM_COLS_PER_CYCLE)["total"] + kw + 3
    assert npass > 2 * first   # most of the work comes after the first block
    print("engine", runs[0].tile_cycles[0], "sdue", sdue, "lead", lead)
    assert runs[0].tile_cycles[0] <= sdue + lead, (runs[0].tile_cycles, sdue, lead)


# ---- issue 17: col-group dataflow, global-buffer bandwidth, stall counter ------------------

def col_group_cases(cfg, seed):
    """cases_for's products under col-group, plus col-group-specific ones: several groups
    (more columns than WMEM holds resident), sparse masks, column-concentrated masks (whole
    columns unneeded: never fetched) and a partial last row block."""
    rng = np.random.default_rng(seed)
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    cases = [dataclasses.replace(c, dataflow="col-group") for c in cases_for(cfg, seed)]
    K = 16 * L                                   # 16 words: 32 columns resident (toy)
    N = 2 * cfg.wmem_words // 16 + C + 2         # more than one group
    for s in (0.5, 0.9):
        a, b, prev = _operands(cfg, rng, 2 * R + 1, K, N)
        cases.append(GemmCase(a, b, rng.random((2 * R + 1, N)) >= s, prev,
                              dataflow="col-group", name=f"groups{s}"))
    a, b, prev = _operands(cfg, rng, 3 * R, 4 * L, 4 * C + 1)
    colmask = np.zeros((3 * R, 4 * C + 1), bool)
    colmask[:, rng.choice(4 * C + 1, C, replace=False)] = True     # C needed columns
    cases.append(GemmCase(a, b, colmask, prev, dataflow="col-group", name="column"))
    cases.append(GemmCase(a, b, colmask & (rng.random(colmask.shape) >= 0.5), prev,
                          dataflow="col-group", accumulate=True, name="column-sparse"))
    return cases


def check_engine_model(cfg, cases, runs):
    """Per tile: the RTL's cycles, stall counter and fetched words equal
    ``golden.cycles.engine_cycles`` (both dataflows), and cycles = compute + stalls."""
    for case, run in zip(cases, runs):
        msg = f"{cfg.name} case {case.name} {case.dataflow} gb {case.gb_bytes}"
        e = engine_model(cfg, case)
        # tiles, words, cycles and (with passes) stalls equal the model's
        assert model_error(cfg, case, run, model=e) is None, (msg, model_error(cfg, case, run,
                                                                               model=e))
        for t, cyc, st in zip(e["tiles"], run.tile_cycles, run.tile_stalls):
            assert t["exact"], msg
            if t["passes"]:          # the stall counter: cycles = compute + stalls (less
                # the final drain's cycles in which a trailing empty group was still scanned)
                assert cyc - st + t["tail"] == t["compute"], (msg, cyc, st, t)


@pytest.mark.parametrize("gb", [0, 2, 5])
def test_gemm_rtl_col_group(gb):
    """col-group runs bit-exact with golden at unlimited, 2 and 5 bytes per cycle (a toy
    L-word is 6 bytes), and its cycles, stall counter and fetched words equal the model."""
    cfg, seed = TOY, 1717
    cases = [dataclasses.replace(c, gb_bytes=gb) for c in col_group_cases(cfg, seed)]
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed, run_name=f"gemm-cg{gb}")
    check(cfg, cases, outs, runs, seed)
    # the bandwidth is visible: fewer bytes per cycle, more stall cycles
    if gb == 2:
        ref = cy.engine_cycles(cfg, cases[-3].mask, cases[-3].a.shape[1],
                               dataflow="col-group", gb_bytes=0)
        assert sum(runs[-3].tile_stalls) > ref["stall_cycles"]


def row_block_cases(cfg, seed):
    """cases_for's products under row-block at unlimited, 3 and 7 B/cycle (a toy L-word is
    6 bytes: 3 B/cycle is slower than one word per cycle, 7 B/cycle faster than one word
    and slower than a beat of several members; cases_for's one-region case: the fetch waits
    for the SDUE to free it), and K = L (one word per pass: the fetch runs
    ahead of the SDUE until the descriptor FIFO or the WMEM regions stop it)."""
    rng = np.random.default_rng(seed + 1)
    base = cases_for(cfg, seed, extreme_k=False)
    a, b, prev = _operands(cfg, rng, 3 * cfg.rows, cfg.lanes, 4 * cfg.cols)
    mask = rng.random(prev.shape) >= 0.2
    base += [GemmCase(a, b, mask, prev, name="kshort"),
             GemmCase(a, b, mask, prev, regions=2, name="kshort-r2")]
    cases = [dataclasses.replace(c, gb_bytes=g, name=f"{c.name}-{g}B")
             for g in (0, 3, 7) for c in base]
    return cases, len(base)


def test_gemm_rtl_row_block_bandwidth():
    """row-block at unlimited, 3 and 7 B/cycle: bit-exact, cycles, stall counter and words
    equal the model on every tile, and a slower fetch is never faster."""
    cfg, seed = TOY, 31
    cases, n = row_block_cases(cfg, seed)
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed, run_name="gemm-rb-bw")
    check(cfg, cases, outs, runs, seed)
    for fast, mid, slow in zip(runs[:n], runs[2 * n:3 * n], runs[n:2 * n]):
        assert sum(slow.tile_cycles) >= sum(mid.tile_cycles) >= sum(fast.tile_cycles)
    assert sum(sum(r.tile_stalls) for r in runs[n:2 * n]) > \
        sum(sum(r.tile_stalls) for r in runs[:n])


def test_gemm_rtl_column_aware_saves():
    """Column-concentrated mask (1 column in 8 needed): col-group fetches only the needed
    columns' weights, once per group: bytes and cycles against the dense mask and against
    row-block, in the RTL and the model alike."""
    cfg, seed = TOY, 5
    rng = np.random.default_rng(seed)
    R, L = cfg.rows, cfg.lanes
    M, K, N = 4 * R, 8 * L, 16
    a, b, prev = _operands(cfg, rng, M, K, N)
    colmask = np.zeros((M, N), bool)
    colmask[:, ::8] = True
    dense = np.ones((M, N), bool)
    cases = [GemmCase(a, b, mk, prev, dataflow=df, gb_bytes=2, name=f"{nm}-{df}")
             for df in ("col-group", "row-block") for nm, mk in (("col", colmask),
                                                                 ("dense", dense))]
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed, run_name="gemm-colaware")
    check(cfg, cases, outs, runs, seed)
    cg_col, cg_dense, rb_col, rb_dense = (sum(r.tile_words) for r in runs)
    assert cg_col * 8 == cg_dense                  # 2 of 16 columns fetched
    assert rb_dense == 4 * cg_dense                # row-block: once per row block
    assert sum(runs[0].tile_cycles) * 3 < sum(runs[1].tile_cycles)


def test_engine_model_mutations_fail():
    """The engine model's exactness can fail: measured col-group runs against models with
    one rule broken (bandwidth ignored, unneeded columns fetched, a release cycle off)."""
    cfg, seed = TOY, 1717
    cases = [dataclasses.replace(c, gb_bytes=2) for c in col_group_cases(cfg, seed)][-6:]
    _, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed, run_name="gemm-cg-mut")
    check_engine_model(cfg, cases, runs)
    orig = cy.scan_cycles
    mutants = {
        "no-bandwidth": lambda need, kw, gb, wb: orig(need, kw, 0, wb),
        "fetch-all": lambda need, kw, gb, wb: orig(np.ones_like(need), kw, gb, wb),
    }
    for name, fn in mutants.items():
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cy, "scan_cycles", fn)
            with pytest.raises(AssertionError):
                check_engine_model(cfg, cases, runs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cy, "ENGINE_SCAN_RELEASE", cy.ENGINE_SCAN_RELEASE + 1)
        with pytest.raises(AssertionError):
            check_engine_model(cfg, cases, runs)


def _each_mutant_fails(mutants: dict, check) -> None:
    """Every ``name: (attr of golden.cycles, value)`` mutant makes ``check()`` fail."""
    for name, (attr, value) in mutants.items():
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cy, attr, value)
            with pytest.raises(AssertionError):
                check()
            print(f"mutant {name}: caught")


def test_engine_model_row_block_mutations_fail():
    """The row-block model's exactness can fail: measured row-block runs (unlimited, 3 and
    7 B/cycle, one or two WMEM regions) against models with one rule broken (the WMEM
    ring ignored, the bit credit not carried between beats and passes, the bandwidth
    ignored, the release a cycle late). The descriptor FIFO's rule is not among them: with
    4 regions and 2 descriptors the ring binds first, so ignoring it changes no case."""
    cfg, seed = TOY, 31
    cases, n = row_block_cases(cfg, seed)
    pick = [c for c in cases if c.name.split("-")[0] in ("all1", "checkerboard", "random0.50",
                                                         "one", "tiles", "kshort")]
    _, runs, _ = rtl_sparse_gemm(cfg, pick, seed=seed, run_name="gemm-rb-mut")
    check_engine_model(cfg, pick, runs)
    rbf, beat = cy.row_block_fetch, cy._beat

    def regions_ignored(*a, **k):
        return rbf(*a, **{**k, "regions": 99})

    def no_carry(t0, credit, bits, gbits):
        return beat(t0, 0, bits, gbits)

    def no_bandwidth(t0, credit, bits, gbits):
        return beat(t0, credit, bits, 0)

    mutants = {"regions-ignored": ("row_block_fetch", regions_ignored),
               "credit-not-carried": ("_beat", no_carry),
               "no-bandwidth": ("_beat", no_bandwidth),
               "release-late": ("ENGINE_BLOCK_RELEASE", cy.ENGINE_BLOCK_RELEASE + 1)}
    _each_mutant_fails(mutants, lambda: check_engine_model(cfg, pick, runs))


def test_gemm_rtl_fc2_gather():
    """FC2 of an FFN-Reuse sparse iteration: the delta input is zero on every hidden unit no
    token needs (whole columns of A, 1 in 4 kept, plus a block-local one). With ``gather``
    each tile reduces only over its needed W2 rows: bit-exact, cycles and words equal the
    model under both dataflows, 4x fewer words and fewer cycles than the dense reduction;
    a model that ignores the gather fails."""
    cfg, seed = TOY, 23
    rng = np.random.default_rng(seed)
    R, L = cfg.rows, cfg.lanes
    M, F, N = 3 * R, 16 * L, 2 * cfg.cols + 1
    a, b, prev = _operands(cfg, rng, M, F, N)
    units = np.zeros(F, bool)
    units[::4] = True
    a = np.where(units[None, :], a, 0)
    a[:R, 1] = cfg.wmax                      # one unit only the first row block needs
    mask = rng.random((M, N)) >= 0.3
    cases = [GemmCase(a, b, mask, prev, dataflow=df, gb_bytes=3, gather=g, accumulate=True,
                      name=f"fc2-{df}-{'gather' if g else 'dense'}")
             for df in ("row-block", "col-group") for g in (True, False)]
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed, run_name="gemm-fc2")
    check(cfg, cases, outs, runs, seed)
    for g, d in ((runs[0], runs[1]), (runs[2], runs[3])):
        assert 3 * sum(g.tile_words) < sum(d.tile_words)
        assert sum(g.tile_cycles) < sum(d.tile_cycles)
    with pytest.raises(AssertionError):      # the model without the gather
        check_engine_model(cfg, [dataclasses.replace(c, gather=False) for c in cases[::2]],
                           runs[::2])


# ---- issue 17: col-group double-buffered across column groups ------------------------------

def double_buffer_cases(cfg, seed):
    """col-group runs of several column groups (WMEM ping-pong): 1 group, 2 groups, odd
    group counts (3, 5, 11), empty groups (whole groups without a set bit, an all-zero
    mask), an empty last row block of a group, a dense mask at one column per group (the
    half-free rule binds: group g + 2's scan waits for group g's last pass), random masks
    at 0-95 % sparsity, sort = none with accumulate, m = 1, and the single-buffered
    (one group per run) engine on the same products for comparison."""
    rng = np.random.default_rng(seed)
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    cases = []

    def add(name, M, K, N, mask=None, s=0.5, **kw):
        a, b, prev = _operands(cfg, rng, M, K, N)
        mk = rng.random((M, N)) >= s if mask is None else mask
        cases.append(GemmCase(a, b, mk, prev, dataflow="col-group", name=name, **kw))
        return mk

    add("one-group", 2 * R, 8 * L, C + 2, group_cols=8)
    add("two-groups", 2 * R + 1, 32 * L, 3 * C + 4)            # kwords 32: 8 columns a half
    add("three-groups", R, 8 * L, 16, s=0.7, group_cols=6)
    add("five-groups", 3 * R, 16 * L, 13, s=0.3, group_cols=3)
    add("eleven-groups-dense", 2 * R, 8 * L, 11, s=0.0, group_cols=1)
    empty = np.zeros((2 * R, 12), bool)
    empty[:, [0, 1, 7]] = True                                  # groups 1, 2, 4, 5 empty
    add("empty-groups", 2 * R, 8 * L, 12, mask=empty, group_cols=2)
    tail = rng.random((2 * R, 9)) >= 0.4
    tail[R:] = False                                            # every group's last block
    add("empty-last-blocks", 2 * R, 8 * L, 9, mask=tail, group_cols=3)
    add("all-zero", 2 * R, 8 * L, 9, mask=np.zeros((2 * R, 9), bool), group_cols=2)
    add("kmax-groups", R + 3, 64 * L, 9, s=0.2)                   # kwords 64: 4 a half
    for s in (0.0, 0.5, 0.8, 0.95):
        n = int(rng.integers(2 * C, 8 * C + 1))
        add(f"random{s}", int(rng.integers(R, 3 * R + 1)), 16 * L, n, s=s,
            group_cols=int(rng.integers(1, 6)))
    cases.append(dataclasses.replace(cases[-2], accumulate=True, sort="none",
                                     name="random0.8-acc-none"))
    cases.append(dataclasses.replace(cases[3], ways=1, name="five-groups-m1"))
    cases += [dataclasses.replace(c, double_buffer=False, name=f"{c.name}-single",
                                  group_cols=c.group_cols or max(1, cfg.wmem_words //
                                                                 -(-c.a.shape[1] // L)))
              for c in cases[:5]]
    return cases


@pytest.mark.parametrize("gb", [0, 2])
def test_gemm_rtl_double_buffer(gb):
    """Several column groups per col-group run, the scan of group g + 1 overlapping group
    g's passes: bit-exact with golden, the cycles, stall counter and words of every tile
    equal the model, at unlimited and 2 B/cycle (a toy L-word is 6 bytes); with more than
    one group the double-buffered engine is faster than the single-buffered one (one run
    per group of the same width: the same passes) on the same product."""
    cfg, seed = TOY, 2017
    cases = [dataclasses.replace(c, gb_bytes=gb) for c in double_buffer_cases(cfg, seed)]
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed, run_name=f"gemm-db{gb}")
    check(cfg, cases, outs, runs, seed)
    groups = [max(t["groups"] for t in engine_model(cfg, c)["tiles"]) for c in cases]
    assert max(groups) >= 11 and 1 in groups and 3 in groups and 5 in groups
    byname = {c.name: r for c, r in zip(cases, runs)}
    for name in ("two-groups", "three-groups", "five-groups", "eleven-groups-dense"):
        one, two = byname[f"{name}-single"], byname[name]
        assert sum(one.tile_passes) == sum(two.tile_passes), name
        assert sum(two.tile_cycles) < sum(one.tile_cycles), name


def test_gemm_rtl_double_buffer_backpressure():
    """30 % idle cycles on the mask stream (the engine's only input stream) under
    double-buffered col-group: the timing changes, never the result."""
    cfg, seed = TOY, 2018
    cases = [dataclasses.replace(c, gb_bytes=3) for c in double_buffer_cases(cfg, seed)[:12]]
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed, gaps=0.3, run_name="gemm-db-gaps")
    check(cfg, cases, outs, runs, seed, timed=False)


def _serial_run(orig):
    """A mutant of ``golden.cycles.col_group_run`` without overlap: each group's scan
    waits for the previous group's last pass to finish (fetch + compute per group)."""
    def run(cfg, sub, kw, gcols, blocks, **kw2):
        r = orig(cfg, sub, kw, gcols, blocks, **kw2)
        per = max(kw, cfg.cols)
        t = r["scan_start"][0]
        for g, sc in enumerate(r["scan"]):
            npg = int(np.sum(np.asarray(r["pass_group"]) == g))
            t += sc + 1 + npg * per
        return {**r, "cycles": max(r["cycles"], t + cy.sdue_fixed(cfg))}
    return run


def test_engine_model_double_buffer_mutations_fail():
    """The double-buffered model's exactness can fail: against the same RTL runs, a model
    that charges fetch + compute per group (no overlap), one that ignores the WMEM half
    rule (group g + 2's scan waiting for group g's passes) and one with the scan's release
    a cycle late all fail."""
    cfg, seed = TOY, 2017
    cases = [dataclasses.replace(c, gb_bytes=gb) for c in double_buffer_cases(cfg, seed)
             for gb in (0, 2)
             if c.name in ("two-groups", "five-groups", "eleven-groups-dense", "random0.5")]
    _, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed, run_name="gemm-db-mut")
    check_engine_model(cfg, cases, runs)
    orig = cy.col_group_run
    mutants = {"no-overlap": ("col_group_run", _serial_run(orig)),
               "half-ignored": ("ENGINE_HALF_RULE", False),
               "release-late": ("ENGINE_SCAN_RELEASE", cy.ENGINE_SCAN_RELEASE + 1)}
    _each_mutant_fails(mutants, lambda: check_engine_model(cfg, cases, runs))


def test_gemm_rtl_fc2_gather_hw():
    """FC2's gathered W2 rows in hardware (col-group, ``gather_hw``): B stays whole in GMEM
    and the scan gathers each WMEM word's L elements from the K rows of an index list (one
    GMEM read port per lane). Bit-exact, cycles, stall counter and words equal the model of
    the gather (``input_mask``), the same as the host's gather, 4x fewer words than the dense
    reduction; also with several double-buffered groups; a model without the gather
    fails."""
    cfg, seed = TOY, 29
    rng = np.random.default_rng(seed)
    R, L = cfg.rows, cfg.lanes
    cases = []
    for M, F, N, gb in ((3 * R, 16 * L, 2 * cfg.cols + 1, 3), (2 * R, 64 * L, 11, 0)):
        a, b, prev = _operands(cfg, rng, M, F, N)
        units = rng.random(F) < 0.25
        a = np.where(units[None, :], a, 0)
        a[:R, 1] = cfg.wmax                     # a unit only the first row block needs
        mask = rng.random((M, N)) >= 0.3
        for hw in (True, False):
            cases.append(GemmCase(a, b, mask, prev, dataflow="col-group", gb_bytes=gb,
                                  gather=True, gather_hw=hw, accumulate=True,
                                  name=f"fc2-{F}-{'hw' if hw else 'host'}"))
        cases.append(GemmCase(a, b, mask, prev, dataflow="col-group", gb_bytes=gb,
                              accumulate=True, name=f"fc2-{F}-dense"))
    for c in cases[::3]:                         # B whole in GMEM: every column's K/L words
        for t in plan_tiles(cfg, c):
            assert len(t.gmem) == len(t.cols) * -(-c.a.shape[1] // L) and t.kidx
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed, run_name="gemm-fc2-hw")
    check(cfg, cases, outs, runs, seed)
    for hw, host, dense in zip(runs[::3], runs[1::3], runs[2::3]):
        assert hw.tile_words == host.tile_words and hw.tile_cycles == host.tile_cycles
        assert 3 * sum(hw.tile_words) < sum(dense.tile_words)
    assert max(t["groups"] for t in engine_model(cfg, cases[3])["tiles"]) > 1
    with pytest.raises(AssertionError):      # the model without the gather
        check_engine_model(cfg, [dataclasses.replace(c, gather=False, gather_hw=False)
                                for c in cases[::3]],
                           runs[::3])
    with pytest.raises(ExionError, match="gather_hw"):
        plan_tiles(cfg, dataclasses.replace(cases[0], dataflow="row-block"))
