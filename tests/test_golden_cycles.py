"""Cycle model (SPEC 3.5): SDUE contract on hand-derived cases, memory traffic, modes."""

import math

import numpy as np
import pytest

from exion import PRESETS
from exion.errors import ExionError
from exion.golden import conmerge as cm
from exion.golden import cycles as cy

TOY = PRESETS["toy"]      # R 8, C 3, L 4, W 12, dpu_latency 3, 64 B/cycle
EX16 = PRESETS["exion16"]  # R 16, C 16, L 16, dpu_latency 3


def fixed(cfg):
    # SDUE_FIXED = C + dpu_latency + in_latency + drain_latency (docs/sdue.md)
    return cfg.cols + cfg.dpu_latency + cfg.sdue_in_latency + cfg.sdue_drain_latency


def test_presets_latency_assumed_here():
    assert TOY.dpu_latency == 3 and EX16.dpu_latency == 3
    # sdue_pipe on: address -> memory -> register -> switched operands register -> DPU
    assert (TOY.sdue_in_latency, TOY.sdue_drain_latency) == (3, 2)
    assert cy.sdue_fixed(TOY) == 3 + 3 + 3 + 2
    off = TOY.replace(sdue_pipe=False)
    assert cy.sdue_fixed(off) == 3 + 3 + 1 + 1


def test_sdue_cycles_hand_cases():
    assert cy.sdue_cycles(TOY, []) == 0
    assert cy.sdue_cycles(TOY, [1]) == 3 + fixed(TOY)               # short pass waits
    assert cy.sdue_cycles(TOY, [5, 1, 3]) == 5 + 3 + 3 + fixed(TOY)
    assert cy.sdue_cycles(EX16, [72, 72]) == 144 + fixed(EX16)
    assert cy.sdue_cycles(EX16, [4, 100]) == 16 + 100 + fixed(EX16)
    with pytest.raises(ExionError, match="every pass streams >= 1 beat"):
        cy.sdue_cycles(TOY, [0])


def test_dense_gemm_hand_case():
    # 16 x 8 @ 8 x 6 on toy: 2 row blocks x 2 column tiles = 4 passes of ceil(8/4) = 2 beats.
    plan = cm.dense_plan(TOY, 16, 6)
    g = cy.gemm_cycles(TOY, 8, plan)
    assert (g.plan_passes, g.passes, g.k_words) == (4, 4, 8)
    assert g.compute == 4 * 3
    assert g.sdue_cycles == 12 + fixed(TOY)
    assert g.useful_macs == 16 * 6 * 8
    assert g.utilization == pytest.approx(768 / (96 * g.sdue_cycles))
    assert g.speedup == 1.0
    # Fill (12-bit elements, 64 B/cycle), order block 0 tiles 0, 1, block 1 tiles 0, 1:
    # new row block: IMEM 8 x 8 x 1.5 B = 96 B, + weights 3 x 8 x 1.5 B = 36 B -> 3 cycles;
    # same block, new tile: 36 B -> 1 cycle.
    assert g.fill == 3 + 1 + 3 + 1
    # stall: first fill exposed (3), then max(0, fill - previous compute 3) = 0
    assert g.stall == 3
    assert g.total_cycles == g.sdue_cycles + 3
    assert g.bound == "compute-bound"


def test_memory_bound_hand_case():
    cfg = TOY.replace(gb_bytes_per_cycle=1)
    g = cy.gemm_cycles(cfg, 8, cm.dense_plan(cfg, 16, 6))
    assert g.fill == 132 + 36 + 132 + 36
    assert g.stall == 132 + (36 - 3) + (132 - 3) + (36 - 3)
    assert g.bound == "memory-bound"


def test_weight_reuse_between_passes():
    # N = C: both row blocks use the same 3 columns, so pass 2 loads only its IMEM block.
    g = cy.gemm_cycles(TOY, 8, cm.dense_plan(TOY, 16, 3))
    assert g.fill == 3 + math.ceil(96 / 64)


def test_k_split_balanced():
    # toy, m = 1: k_cap = min(imem_depth 256, wmem_depth 1024) = 256 elements = 64 beats.
    assert cy.k_cap(TOY, 1) == 256
    g = cy.gemm_cycles(TOY, 300, cm.dense_plan(TOY, 8, 3))   # 75 beats -> 38 + 37
    assert (g.plan_passes, g.passes, g.k_words) == (1, 2, 75)
    assert g.sdue_cycles == 38 + 37 + fixed(TOY)
    # exion16: IMEM 1024 -> 64 beats; K = 1152 = 72 beats -> 36 + 36
    pl = cy.sdue_pass_list(EX16, cm.dense_plan(EX16, 16, 16), 1152)
    assert pl["k_words"].tolist() == [36, 36]
    # m = 16 (a config built with 16 weight buses): WMEM 8192 / 16 = 512 elements = 32
    # beats -> 72 = 24 + 24 + 24
    e16m16 = EX16.replace(merge_ways=16)
    plan = cm.conmerge(e16m16, np.ones((16, 16), bool), merge_ways=16)
    assert cy.sdue_pass_list(e16m16, plan, 1152)["k_words"].tolist() == [24, 24, 24]
    # the cap is the run's m: the same config running 2 ways holds 1024 (IMEM) again
    plan2 = cm.conmerge(e16m16, np.ones((16, 16), bool), merge_ways=2)
    assert cy.sdue_pass_list(e16m16, plan2, 1152)["k_words"].tolist() == [36, 36]


def test_input_sparse_k_words():
    # one row block, K = 16 = 4 chunks of L = 4; only chunk 2 has a non-zero input
    im = np.zeros((8, 16), bool)
    im[3, 9] = True
    g = cy.gemm_cycles(TOY, 16, cm.dense_plan(TOY, 8, 3), input_mask=im)
    assert g.k_words == 1
    assert g.sdue_cycles == 3 + fixed(TOY)
    assert g.useful_macs == 3 * 1            # row 3 has one non-zero input, 3 outputs
    assert g.dense_cycles == 4 + fixed(TOY)


@pytest.mark.parametrize("cfg", [TOY, EX16], ids=["toy", "exion16"])
@pytest.mark.parametrize("m", [1, 2, 4])
@pytest.mark.parametrize("density", [0.03, 0.2, 0.7])
def test_cycle_passes_equal_conmerge_passes(cfg, m, density):
    cfg = cfg if m <= cfg.merge_ways else cfg.replace(merge_ways=m)   # a design with m buses
    rng = np.random.default_rng(int(density * 100) + m)
    mask = rng.random((3 * cfg.rows + 1, 5 * cfg.cols + 2)) < density
    plan = cm.conmerge(cfg, mask, merge_ways=m)
    K = 5 * cfg.lanes + 1                      # well below k_cap: no split
    g = cy.gemm_cycles(cfg, K, plan, mask=mask)
    assert g.plan_passes == g.passes == plan.n_passes
    assert g.sdue_cycles == (plan.n_passes * max(6, cfg.cols) + fixed(cfg)
                             if plan.n_passes else 0)
    assert g.useful_macs == int(mask.sum()) * K
    dense = math.ceil(mask.shape[0] / cfg.rows) * math.ceil(mask.shape[1] / cfg.cols)
    assert g.dense_cycles == dense * max(6, cfg.cols) + fixed(cfg)


def test_all_zero_mask_costs_nothing():
    mask = np.zeros((8, 6), bool)
    g = cy.gemm_cycles(TOY, 8, cm.conmerge(TOY, mask), mask=mask)
    assert (g.passes, g.sdue_cycles, g.fill, g.stall) == (0, 0, 0, 0)


def test_cau_formula():
    """The CAU model (calibrated to hw/cau.py; exactness against RTL: tests/test_cau*.py)."""
    st = cy.cau_stage_cycles(10, 4, 3, cols_per_cycle=4)
    assert st == {"read": 3, "sort": cy.CAU_SORT_START + cy.CAU_SORT_LOAD + 4,
                  "merge": cy.CAU_MERGE_START + cy.CAU_MERGE_LOAD + 7}
    assert cy.cau_block_cycles(TOY, 10, 4, 3, cols_per_cycle=4,
                                merge_lanes=1) == max(st.values())
    assert cy.cau_stage_cycles(10, 0, 0, 4) == {"read": 3, "sort": cy.CAU_SORT_START,
                                                 "merge": cy.CAU_MERGE_START}
    mask = np.zeros((9, 10), bool)             # two row blocks: 4 and 0 non-zero cvs
    mask[0, :4] = True                         # all in row 0: 4 slots, 3 left in the window
    assert cy.cau_cycles(TOY, mask, cols_per_cycle=4, merge_lanes=1).tolist() == [
        cy.cau_block_cycles(TOY, 10, 4, 3, 4, merge_lanes=1),
        cy.cau_block_cycles(TOY, 10, 0, 0, 4, merge_lanes=1)]
    sch = cy.cau_schedule(TOY, mask, cols_per_cycle=4, merge_lanes=1)
    assert sch["done"][1] == -1 and sch["done"][0] == sch["merge_end"][0] + \
        cy.CAU_OUT_LATENCY + 1
    assert sch["total"] == max(sch["done"][0], sch["merge_end"][1] + 1)


def test_epre_formula():
    # toy: units = C = 3, L = 4; one head of T = 16, d = 8, d_head = 4
    r = cy.epre_run_cycles(TOY, 16, 16, 8, 4)
    gq = math.ceil(16 / 3)
    s1 = 2 * gq * 4 * 2 + 2 * cy.EPRE_PIPE
    s2 = gq * (16 * 1 + cy.EPRE_PIPE)
    sel = 16 * (2 * 16 + cy.EPRE_SEL_FIXED)
    assert r == s1 + s2 + sel + cy.EPRE_RUN_FIXED
    e = cy.epre_cycles(TOY, T=16, d=8, heads=2, d_head=4)
    assert e == {"stage1": 2 * s1, "stage2": 2 * s2, "select": 2 * sel, "total": 2 * r}
    assert cy.epre_run_cycles(TOY, 16, 16, 8, 4, units=6) < r
    with pytest.raises(ExionError, match=r"epre_run_cycles: n_k = 0 must be an integer >= 1"):
        cy.epre_run_cycles(TOY, 4, 0, 8, 4)


def test_transformer_block_modes():
    T, d, H = 24, 12, 2                        # d_head 6, ffn 48
    rng = np.random.default_rng(4)
    ffn_mask = rng.random((T, 4 * d)) < 0.1
    score = rng.random((H, T, T)) < 0.2
    r = cy.transformer_block(TOY, T, d, H, ffn_mask=ffn_mask, score_mask=score)
    modes = r["modes"]
    names = [g["name"] for g in modes["Base"]["gemms"]]
    assert names == ["q_proj", "k_proj", "v_proj", "scores[0]", "pv[0]", "scores[1]",
                     "pv[1]", "o_proj", "fc1", "fc2"]
    base = {g["name"]: g for g in modes["Base"]["gemms"]}
    # Base: plain tiling everywhere
    assert base["fc1"]["passes"] == math.ceil(T / 8) * math.ceil(48 / 3)
    assert base["scores[0]"]["sdue_cycles"] == base["scores[0]"]["dense_cycles"]
    ffnr = {g["name"]: g for g in modes["FFNR"]["gemms"]}
    assert ffnr["fc1"]["plan_passes"] == cm.conmerge(TOY, ffn_mask).n_passes
    kw = cm.pass_k_words(TOY, cm.dense_plan(TOY, T, d), 4 * d, ffn_mask)
    assert ffnr["fc2"]["k_words"] == int(kw.sum())
    assert ffnr["q_proj"] == base["q_proj"]
    ep = {g["name"]: g for g in modes["EP"]["gemms"]}
    assert ep["scores[1]"]["plan_passes"] == cm.conmerge(
        TOY, score[1][score[1].any(axis=1)]).n_passes
    assert ep["fc1"] == base["fc1"]
    epre = cy.epre_cycles(TOY, T, d, H, d // H)["total"]
    assert modes["EP"]["epre_cycles"] == modes["All"]["epre_cycles"] == epre
    for m in modes.values():
        assert m["total"] == m["sdue_cycles"] + m["epre_cycles"]
        assert m["speedup"] == pytest.approx(modes["Base"]["total"] / m["total"])
    assert modes["FFNR"]["total"] < modes["Base"]["total"]
    assert modes["All"]["sdue_cycles"] < modes["FFNR"]["sdue_cycles"]


def test_transformer_block_no_masks_and_skips():
    T, d, H = 16, 8, 2
    r = cy.transformer_block(TOY, T, d, H)
    m = r["modes"]
    assert m["FFNR"]["total"] == m["Base"]["total"]
    assert m["EP"]["sdue_cycles"] == m["Base"]["sdue_cycles"]
    skip = np.zeros(T, bool)
    skip[8:] = True                           # the second row block of queries is skipped
    r = cy.transformer_block(TOY, T, d, H, skip_q=skip)
    q = r["modes"]["EP"]["gemms"][0]
    assert q["name"] == "q_proj" and q["M"] == 8
    with pytest.raises(ExionError, match=r"skip_q: shape \(3,\)"):
        cy.transformer_block(TOY, T, d, H, skip_q=np.zeros(3, bool))
    with pytest.raises(ExionError, match=r"ffn_mask: shape \(16, 8\) does not match"):
        cy.transformer_block(TOY, T, d, H, ffn_mask=np.zeros((16, 8), bool))


# ---- issue 17: the gemm engine model (golden.cycles.engine_cycles) -------------------------

def test_scan_cycles_hand():
    """toy: a word is 4 x 12 = 48 bits. Unlimited or >= 6 B/cycle: one word per cycle;
    2 B/cycle (16 bits): 3 cycles a word; 5 B/cycle (40 bits): credit 40, 80 -> word (32),
    72 -> word (24), 64 -> word (16), 56 -> word (8), 48 -> word (0), 40, 80 -> word:
    6 words in 8 cycles (36 B: never more than 5 B per cycle).
    Unneeded columns cost one cycle each."""
    need = np.array([True, False, True])
    assert cy.scan_cycles(need, 3, 0, 48) == 1 + 6
    assert cy.scan_cycles(need, 3, 6, 48) == 1 + 6
    assert cy.scan_cycles(need, 3, 2, 48) == 1 + 18
    assert cy.scan_cycles(need, 3, 5, 48) == 1 + 8
    assert cy.scan_cycles(np.zeros(4, bool), 3, 2, 48) == 4


def test_engine_tiles_limits():
    """col-group tiles keep their columns resident (single-buffered: ncols * kwords <= 2 *
    wmem_words; double-buffered: a group in a WMEM half, gcols * kwords <= wmem_words, at
    most gemm_max_groups groups) and results in OMEM; they cover the product exactly once,
    every (row block, column, K word) in one run; K beyond IMEM is split (issue 17), each
    piece within IMEM."""
    cfg = PRESETS["toy"]
    for M, N, K in ((19, 11, 13), (100, 300, 64), (8, 1, 1), (64, 70, 256), (16, 64, 512),
                    (16, 20, 513), (20, 9, 1000)):
        kwt = -(-K // cfg.lanes)
        for df, db in (("row-block", True), ("col-group", True), ("col-group", False)):
            cover = np.zeros((-(-M // cfg.rows), N, kwt), int)
            for t in cy.engine_plan(cfg, M, N, K, df, double_buffer=db):
                b0, blocks, c0, ncols, gcols, k0, kw = (
                    t[k] for k in ("b0", "blocks", "c0", "ncols", "gcols", "k0", "kwords"))
                assert blocks * ncols <= cfg.omem_depth and blocks * kw <= 2 * cfg.imem_words
                if df == "col-group" and gcols < ncols:
                    assert db and gcols * kw <= cfg.wmem_words
                    assert -(-ncols // gcols) <= cfg.gemm_max_groups
                elif df == "col-group":
                    assert ncols * kw <= 2 * cfg.wmem_words and gcols == ncols
                cover[b0:b0 + blocks, c0:c0 + ncols, k0:k0 + kw] += 1
            assert (cover == 1).all(), (M, N, K, df)
    assert len({(t["k0"], t["kwords"]) for t in cy.engine_plan(cfg, 8, 8, 513)}) == 2


def test_engine_cycles_col_group_saves_bytes():
    """Column-concentrated mask: col-group moves only needed columns' words, once per tile;
    row-block once per pass. Bound and stall follow the bandwidth."""
    cfg = PRESETS["toy"]
    M, N, K = 32, 16, 32
    mask = np.zeros((M, N), bool)
    mask[:, ::8] = True
    cg = cy.engine_cycles(cfg, mask, K, dataflow="col-group", gb_bytes=2)
    dn = cy.engine_cycles(cfg, np.ones((M, N), bool), K, dataflow="col-group", gb_bytes=2)
    rb = cy.engine_cycles(cfg, np.ones((M, N), bool), K, dataflow="row-block", gb_bytes=2)
    kw = K // cfg.lanes
    assert cg["bytes"]["gb_wmem"] == 2 * kw * 6 and dn["bytes"]["gb_wmem"] == N * kw * 6
    assert rb["bytes"]["gb_wmem"] == 4 * dn["bytes"]["gb_wmem"]     # 4 row blocks
    assert dn["bound"] == "memory-bound" and dn["stall_cycles"] > 0
    assert cg["cycles"] < dn["cycles"] / 3
    fast = cy.engine_cycles(cfg, np.ones((M, N), bool), K, dataflow="col-group", gb_bytes=0)
    assert fast["bound"] == "compute-bound" and fast["cycles"] < dn["cycles"]
    assert all(t["exact"] for t in cg["tiles"] + rb["tiles"])
