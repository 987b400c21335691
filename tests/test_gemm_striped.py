"""The striped WMEM map of the col-group dataflow (issue 17, ``hw.gemm`` ``flow.striped``):
column j of a group lives only in bank ``j % C`` at stripe ``j // C``, so a group is C times
wider and the scan moves a stripe of C columns (one word per bank) per cycle instead of one
word copied into every sub-bank. It serves only runs whose passes put column j in slot
``j % C`` alone (``golden.cycles.stripe_ok``: a dense mask), which the host checks.

Checks: toy RTL bit-exact with golden and every run's cycles, stall counter and words equal
to the engine model (single group, several double-buffered groups, single-buffered, partial
stripes, bandwidth limits, K-splits, ``auto``); a run forced striped on a mask that breaks the
stripe gives a wrong product (so the host's check matters); the model's pieces on hand
cases; the host refuses what cannot run."""

import dataclasses

import numpy as np
import pytest

from exion import PRESETS
from exion.errors import ExionError
from exion.golden import cycles as cy
from exion.golden.conmerge import masked_gemm
from exion.hw.gemm import check_setup
from exion.sim import gemm_rtl
from exion.sim.gemm_rtl import GemmCase, plan_tiles, rtl_sparse_gemm

from test_gemm_rtl import _operands, check, engine_model

TOY = PRESETS["toy"]
E16 = PRESETS["exion16"]


def striped_cases(cfg, seed):
    """Dense products under the striped map: one group per run and partial stripes (N % C
    != 0), several double-buffered groups per run (K = 64 words: 4 stripes a bank half),
    single-buffered, credit-limited bandwidths (a stripe's bits > gb_bytes * 8), K-splits
    forced and automatic, the smallest product, and ``auto`` choosing it."""
    rng = np.random.default_rng(seed)
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    shapes = [(2 * R + 3, 16 * L, 2 * cfg.omem_depth + 5, 0, None, True, True),
              (2 * R + 1, 10 * L, 3 * C + 2, 2, None, True, True),
              (2 * R + 4, 64 * L, 40, 0, None, True, True),
              (2 * R + 4, 64 * L, 40, 7, None, True, True),
              (4 * R + 1, 50 * L, 31, 13, None, True, True),
              (2 * R, 64 * L, 29, 7, None, False, True),
              (3 * R, 16 * L, 70, 5, 4, True, True),
              (R + 1, 32 * L, 64, 0, 16, True, True),
              (R, 3 * L, C, 0, None, True, True),
              (4 * R - 2, 33, 64, 40, "auto", True, "auto"),
              (4 * R + 5, 50 * L, 29, 8, "auto", True, "auto")]
    cases = []
    for M, K, N, gb, kc, db, st in shapes:
        a, b, prev = _operands(cfg, rng, M, K, N)
        cases.append(GemmCase(a, b, np.ones((M, N), bool), prev, dataflow="col-group",
                              gb_bytes=gb, k_chunk=kc, double_buffer=db, striped=st,
                              accumulate=bool(rng.integers(2)),
                              name=f"striped-{M}x{K}x{N}-gb{gb}-k{kc}-{'db' if db else 'sb'}"))
    # groups of several stripes (a bank half full: 4 stripes at 64 words), a partial one
    for gb in (0, 7):
        a, b, prev = _operands(cfg, rng, 2 * R + 4, 64 * L, 40)
        cases.append(GemmCase(a, b, np.ones(prev.shape, bool), prev, dataflow="col-group",
                              gb_bytes=gb, striped=True, group_cols=10 ** 6,
                              name=f"striped-wide-gb{gb}"))
    # an empty mask forced striped: no pass, every column still scanned (the regression's
    # "auto" crashed on it once; auto now keeps the replicated map there)
    a, b, prev = _operands(cfg, rng, R + 2, 8 * L, 2 * C + 1)
    cases.append(GemmCase(a, b, np.zeros(prev.shape, bool), prev, dataflow="col-group",
                          gb_bytes=5, striped=True, name="striped-empty"))
    return cases


@pytest.mark.rtl
def test_gemm_rtl_striped():
    cfg, seed = TOY, 31
    C = cfg.cols
    cases = striped_cases(cfg, seed)
    for c in cases:                      # the runs really are striped, some with groups
        assert all(t.flow["striped"] == 1 for t in plan_tiles(cfg, c)), c.name
    assert any(t.flow["ngroups"] > 1 for c in cases for t in plan_tiles(cfg, c))
    assert any(t.flow["gcols"] > C for c in cases for t in plan_tiles(cfg, c)
               if t.flow["ngroups"] > 1)
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed, run_name="gemm-striped")
    check(cfg, cases, outs, runs, seed)
    # the striped scan is C times wider: fewer cycles than the replicated map, same words
    rep = engine_model(cfg, dataclasses.replace(cases[2], striped=False))
    assert sum(runs[2].tile_cycles) < rep["cycles"]


@pytest.mark.rtl
def test_gemm_rtl_striped_needs_the_stripe(monkeypatch):
    """A sparse mask whose passes merge and condense columns, forced through the striped
    map (the host's check bypassed), gives a wrong product; with ``auto`` the host keeps the
    replicated map and the product is exact."""
    cfg, seed = TOY, 5
    rng = np.random.default_rng(seed)
    a, b, prev = _operands(cfg, rng, 2 * cfg.rows, 8 * cfg.lanes, 4 * cfg.cols)
    mask = rng.random(prev.shape) >= 0.6
    case = GemmCase(a, b, mask, prev, dataflow="col-group", striped="auto", name="sparse")
    assert not any(t.flow["striped"] for t in plan_tiles(cfg, case))
    want = masked_gemm(cfg, a, b, mask, out=prev)
    outs, runs, _ = rtl_sparse_gemm(cfg, [case], seed=seed, run_name="gemm-st-auto")
    np.testing.assert_array_equal(outs[0], want)
    monkeypatch.setattr(gemm_rtl, "engine_striped", lambda *a, **k: True)
    forced = dataclasses.replace(case, striped=True)
    assert all(t.flow["striped"] for t in gemm_rtl.plan_tiles(cfg, forced))
    outs, _, _ = rtl_sparse_gemm(cfg, [forced], seed=seed, run_name="gemm-st-forced")
    assert not np.array_equal(outs[0], want)


def test_stripe_ok_on_hand_masks():
    cfg = TOY                                  # C = 3, m = 2
    R = cfg.rows
    dense = np.ones((2 * R - 3, 7), bool)      # partial last row block, a partial stripe
    assert cy.stripe_ok(cfg, dense, 2, 7)
    assert cy.stripe_ok(cfg, dense, 2, 4)      # two groups of 4: each group from slot 0
    hole = dense.copy()
    hole[:, 1] = False                         # condensed away: columns 2.. shift a slot
    assert not cy.stripe_ok(cfg, hole, 2, 7)
    merge = np.zeros((R, 6), bool)             # disjoint rows: columns 0 and 3 merge
    merge[:R // 2, ::3] = True
    merge[R // 2:, 3] = True
    merge[R // 2:, 0] = False
    merge[:, [1, 2, 4, 5]] = True
    assert not cy.stripe_ok(cfg, merge, 1, 6)


def test_striped_scan_cycles_by_hand():
    cfg = TOY                                  # C = 3, a word 4 x 12 = 48 bits
    # 7 columns = stripes of 3, 3, 1; 2 words each; unlimited: one cycle a step
    assert cy.striped_scan_cycles(cfg, 7, 2, 0) == 6
    # 6 B/cycle = 48 bits: a 3-column step (144 bits) takes 3 cycles, a 1-column step 1
    assert cy.striped_scan_cycles(cfg, 7, 2, 6) == 3 + 3 + 3 + 3 + 1 + 1
    # 8 B/cycle = 64 bits: a 144-bit step after credit 0 takes 3 cycles (48 left), then
    # 2 (48 + 128 - 144 = 32 left), 2 (16 left), 2 (16 left); the 48-bit steps fit a cycle
    assert cy.striped_scan_cycles(cfg, 7, 2, 8) == 3 + 2 + 2 + 2 + 1 + 1


def test_striped_model_and_host_refusals():
    cfg = TOY
    mask = np.ones((20, 40), bool)
    K = 64 * cfg.lanes
    st = cy.engine_cycles(cfg, mask, K, dataflow="col-group", striped=True)
    rep = cy.engine_cycles(cfg, mask, K, dataflow="col-group")
    assert st["striped"] and not rep["striped"]
    assert st["bytes"]["gb_wmem"] == rep["bytes"]["gb_wmem"]       # dense: every column
    assert max(t["gcols"] for t in st["tiles"]) == cfg.cols     # one stripe a group
    wide = cy.engine_plan(cfg, 20, 40, K, "col-group", striped=True, group_cols=10 ** 6)
    assert max(t["gcols"] for t in wide) == cfg.cols * max(t["gcols"] for t in rep["tiles"])
    assert st["cycles"] < rep["cycles"]
    sparse = np.random.default_rng(0).random((20, 40)) >= 0.5
    assert not cy.engine_cycles(cfg, sparse, K, dataflow="col-group", striped="auto")["striped"]
    with pytest.raises(ExionError, match="stripe"):
        cy.engine_cycles(cfg, sparse, K, dataflow="col-group", striped=True)
    with pytest.raises(ExionError, match="col-group map"):
        cy.engine_cycles(cfg, mask, K, dataflow="row-block", striped=True)
    with pytest.raises(ExionError, match="gather"):
        plan_tiles(cfg, GemmCase(np.ones((8, 8), int), np.ones((8, 3), int),
                                 np.ones((8, 3), bool), dataflow="col-group", gather=True,
                                 striped=True))
    with pytest.raises(ExionError, match="striped"):
        cy.engine_cycles(cfg, mask, K, dataflow="col-group", striped="yes")
    # capacity: a bank half holds wmem_words // kwords stripes of C columns
    kw = 64
    check_setup(cfg, kwords=kw, ncols=36, blocks=1, regions=1, col_group=True,
                gcols=cfg.cols * (cfg.wmem_words // kw), striped=True)
    with pytest.raises(ExionError, match="striped over the banks"):
        check_setup(cfg, kwords=kw, ncols=36, blocks=1, regions=1, col_group=True,
                    gcols=cfg.cols * (cfg.wmem_words // kw) + 1, striped=True)


NOSTRIPE = TOY.replace(name="toy_nostripe", gemm_striped=False)


@pytest.mark.long      # an engine generation without the map (about 20 s)
def test_engine_built_without_the_striped_map(tmp_path):
    """``gemm_striped = false`` (configs/toy_ecp5.toml): no striped logic in the Verilog, the
    model and the host never choose the map (``auto`` -> replicated, a forced one is refused
    naming the field), and every other figure is the toy's."""
    from exion.gen import verilog
    mask = np.ones((20, 40), bool)
    K = 64 * NOSTRIPE.lanes
    auto = cy.engine_cycles(NOSTRIPE, mask, K, dataflow="col-group", striped="auto")
    rep = cy.engine_cycles(TOY, mask, K, dataflow="col-group")
    assert not auto["striped"] and auto["cycles"] == rep["cycles"]
    assert cy.engine_cycles(TOY, mask, K, dataflow="col-group", striped="auto")["striped"]
    with pytest.raises(ExionError, match="gemm_striped = false"):
        cy.engine_cycles(NOSTRIPE, mask, K, dataflow="col-group", striped=True)
    with pytest.raises(ExionError, match="gemm_striped = false"):
        check_setup(NOSTRIPE, kwords=4, ncols=6, blocks=1, regions=1, col_group=True,
                    striped=True)
    with pytest.raises(ExionError, match="gemm_striped = false"):
        plan_tiles(NOSTRIPE, GemmCase(np.ones((8, 8), int), np.ones((8, 3), int),
                                      np.ones((8, 3), bool), dataflow="col-group",
                                      striped=True))
    assert "cg_saddr" in verilog.generate(TOY, "gemm", tmp_path / "t").verilog.read_text()
    v = verilog.generate(NOSTRIPE, "gemm", tmp_path / "n").verilog
    assert "cg_saddr" not in v.read_text()
    assert verilog.lint(v, "exion_gemm") == []


@pytest.mark.rtl
@pytest.mark.long       # a second toy engine build (~30 s); the generation check above stays
def test_gemm_rtl_without_the_striped_map():
    """The engine built without the map runs both dataflows bit- and cycle-exact (the
    col-group cases on the replicated map)."""
    from test_gemm_rtl import check_engine_model, col_group_cases, row_block_cases
    cfg = NOSTRIPE
    cases = col_group_cases(cfg, 17)[::2] + row_block_cases(cfg, 17)[0][::3]
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=17, run_name="gemm-nostripe")
    check(cfg, cases, outs, runs, 17)
    check_engine_model(cfg, cases, runs)


def test_striped_exion16_dense_block_gemm():
    """exion16, a dense 256 x 1152 x 1152 projection at 64 B/cycle: with the striped map and
    K-splits the col-group engine is faster than both the replicated map (scan-bound at one
    24-byte word per cycle) and row-block (weights once per row block and pass)."""
    cfg = E16
    mask = np.ones((256, 1152), bool)
    st = cy.engine_cycles(cfg, mask, 1152, dataflow="col-group", gb_bytes=64,
                          k_chunk="auto", striped="auto")
    rep = cy.engine_cycles(cfg, mask, 1152, dataflow="col-group", gb_bytes=64,
                           k_chunk="auto")
    rb = cy.engine_cycles(cfg, mask, 1152, dataflow="row-block", gb_bytes=64)
    assert st["striped"] and st["cycles"] < rep["cycles"] < rb["cycles"]


@pytest.mark.long
@pytest.mark.rtl
@pytest.mark.parametrize("name", ["fpga", "exion16"])
def test_gemm_rtl_striped_power_of_two_columns(name):
    """C a power of two (fpga: 4, exion16: 16): the stripe index is a shift, not a divider.
    Dense products with several groups and a partial stripe, bit-exact, cycles / stalls /
    words equal the model."""
    cfg, seed = PRESETS[name], 13
    rng = np.random.default_rng(seed)
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    cases = []
    for M, K, N, gb, kc in ((2 * R + 1, 16 * L, 3 * C + 1, 0, None),
                            (2 * R, 48 * L, 5 * C + 3, 2 * C, "auto")):
        a, b, prev = _operands(cfg, rng, M, K, N)
        cases.append(GemmCase(a, b, np.ones((M, N), bool), prev, dataflow="col-group",
                              gb_bytes=gb, k_chunk=kc, striped=True,
                              name=f"{name}-striped-{M}x{K}x{N}"))
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed, run_name=f"gemm-striped-{name}")
    check(cfg, cases, outs, runs, seed)


def test_engine_bound_names_the_scan():
    """One row block against many columns: the replicated scan (one word a cycle) takes C
    times the passes' compute, so the model says scan-bound; striped, the scan moves a
    stripe a cycle and the run is compute-bound; a narrow bandwidth makes it memory-bound."""
    cfg = TOY
    mask = np.ones((cfg.rows, 10 * cfg.cols), bool)
    K = 8 * cfg.lanes
    rep = cy.engine_cycles(cfg, mask, K, dataflow="col-group")
    st = cy.engine_cycles(cfg, mask, K, dataflow="col-group", striped=True)
    assert rep["scan_cycles"] == 10 * cfg.cols * 8 and rep["bound"] == "scan-bound"
    assert st["scan_cycles"] == 10 * 8 and st["bound"] == "compute-bound"
    slow = cy.engine_cycles(cfg, mask, K, dataflow="col-group", striped=True, gb_bytes=1)
    assert slow["bound"] == "memory-bound"
    rb = cy.engine_cycles(cfg, mask, K, dataflow="row-block")
    assert rb["scan_cycles"] == 0


def test_block_model_engine_flows():
    """``gemm_flow`` / ``block_flow`` with the engine's dataflows report the engine model's
    figures: ``engine-best`` is the faster of the two per GEMM, the weight bytes are the
    engine's, the host's A is reported but not charged; a small block on toy runs end to
    end and its cycles are the sum of its GEMMs'."""
    from exion.golden import block as bl
    from exion.golden.dataflow import gemm_flow
    cfg = TOY
    rng = np.random.default_rng(2)
    mask = rng.random((20, 30)) >= 0.5
    K = 40
    for om in (None, mask):
        full = np.ones((20, 30), bool) if om is None else om
        e = {df: cy.engine_cycles(cfg, full, K, dataflow=df, gb_bytes=8, k_chunk="auto",
                                  striped="auto" if df == "col-group" else False)
             for df in ("row-block", "col-group")}
        for df in ("row-block", "col-group"):
            g = gemm_flow(cfg, 20, 30, K, mask=om, dataflow=f"engine-{df}", bw=8)
            assert g.cycles == e[df]["cycles"] and g.bytes["gb_wmem"] == e[df]["bytes"]["gb_wmem"]
            assert g.bytes["gb_imem"] == e[df]["host_a_bytes"] and g.charged == ("gb_wmem",)
        best = gemm_flow(cfg, 20, 30, K, mask=om, dataflow="engine-best", bw=8)
        assert best.cycles == min(x["cycles"] for x in e.values())
    assert gemm_flow(cfg, 8, 9, 16, dataflow="engine-col-group", bw=8).dataflow \
        == "engine-col-group-striped"                       # dense: the striped map
    shp = {"name": "small", "T": 20, "d": 16, "heads": 2, "ffn": 32, "d_head": 8}
    r = bl.block_flow(cfg, shp, "base", dataflow="engine-best", bw=8)
    assert r["cycles"] == sum(g["cycles"] for g in r["gemms"])
    with pytest.raises(ExionError, match="engine-best"):
        gemm_flow(cfg, 8, 8, 8, dataflow="engine-fast")


def test_cli_golden_block_engine_flow(tmp_path):
    import json
    from exion.gen.cli import main
    out = tmp_path / "b.json"
    assert main(["golden", "block", "--config", "toy", "--shape", "digits", "--mode", "ffnr",
                 "--masks", "column", "--dataflow", "engine-best", "--gb-bytes-per-cycle", "8",
                 "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["dataflow"] == "engine-best"
    for k in ("cycles", "compute_cycles", "stall_cycles", "bytes", "bound", "utilization",
              "ffn_cycles"):
        assert k in d
    assert d["cycles"] == d["compute_cycles"] + d["stall_cycles"]


@pytest.mark.parametrize("d", [1, 2, 3, 5, 7, 16, 24])
def test_div_const_exact(d):
    """The stripe index's constant division (``hw.util.div_const``): a shift or a multiply
    and a shift, exact for every value of the width (Amaranth simulator, 9 bits)."""
    from amaranth import Module, Signal
    from amaranth.sim import Simulator
    from exion.hw.util import div_const
    a, q = Signal(9), Signal(9)
    m = Module()
    m.d.comb += q.eq(div_const(a, d))
    got = {}

    async def bench(ctx):
        for v in range(512):
            ctx.set(a, v)
            got[v] = ctx.get(q)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert all(got[v] == v // d for v in range(512))
