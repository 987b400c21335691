"""Dataflow model (golden/dataflow.py, golden/block.py, `exion golden block`): hand-computed
cases, row-block == golden.cycles, column-aware byte savings, bound vs bandwidth, CLI errors."""

import json
import math

import numpy as np
import pytest

from exion import PRESETS
from exion.errors import ExionError
from exion.golden import block as bl
from exion.golden import conmerge as cm
from exion.golden import cycles as cy
from exion.golden import dataflow as df

EX16 = PRESETS["exion16"]  # R 16, C 16, L 16, W 12, A 36, m 4, IMEM 1024, WMEM 8192, OMEM 384
TOY = PRESETS["toy"]       # R 8, C 3, L 4, m 2, IMEM 256, WMEM 1024, OMEM 64


def test_col_group_dense_hand_case():
    # A 32 x 256 @ B 256 x 32 on exion16, col-group. K = 256 = 16 words; a WMEM bank side
    # (512 words) would hold 32 columns, OMEM caps n at 384 // 2 // 16 = 12 -> G = 192 >= 32:
    # one group, one K-chunk. 2 row blocks x 1 IMEM split (16 <= 64 words) = 2 steps, each
    # ceil(32 / 16) = 2 passes of max(16, C = 16) = 16 cycles -> 32 cycles.
    # Bytes (1.5 B per 12-bit element): WMEM 32 x 256 x 1.5 = 12288; IMEM per step
    # 16 rows x 256 x 1.5 = 6144 (x 2); write-back per step 16 x 32 x 1.5 = 768 (x 2).
    # At 64 B/cycle the read channel serves A0 [0, 96] (6144 B), then W [96, 288]; step 0
    # may start at 96 but its last pass needs the last weights: it ends at
    # max(96 + 32, 288 + 16) = 304. A1 (released at 0, queued behind W) [288, 384] ->
    # step 1 [384, 416]. Write-back of a tile from the end of its first pass: tile 0
    # [288, 300], no earlier than 304 + 6 -> 310; tile 1 [400, 412] -> 422.
    # cycles = max(416 + sdue_fixed (16 + 3 + 3 + 2 = 24), 422) = 440; compute 64 + 24 = 88.
    g = df.gemm_flow(EX16, 32, 32, 256, dataflow="col-group", bw=64)
    assert cy.sdue_fixed(EX16) == 24
    assert (g.groups, g.group_cols, g.k_chunks, g.passes) == (1, 192, 1, 4)
    assert g.bytes == {"gb_wmem": 12288, "gb_imem": 12288, "gb_omem": 0, "omem_gb": 1536}
    assert g.compute_cycles == 88
    assert g.cycles == 440
    assert g.stall_cycles == 352
    assert g.bound == "memory-bound"          # 24576 B / 64 = 384 > 64 compute cycles
    assert g.useful_macs == 32 * 32 * 256
    assert g.utilization == pytest.approx(32 * 32 * 256 / (4096 * 440))
    # At 1024 B/cycle: A0 [0, 6], W [6, 18] -> step 0 [6, max(38, 18 + 16)] = [6, 38];
    # A1 [18, 24] -> step 1 [38, 70]; cycles = 70 + 24 = 94, stall 6 (the first IMEM
    # fill), compute-bound (24576 B / 1024 = 24 < 64 compute cycles).
    g = df.gemm_flow(EX16, 32, 32, 256, dataflow="col-group", bw=1024)
    assert (g.cycles, g.stall_cycles, g.bound) == (94, 6, "compute-bound")


def test_row_block_hand_bytes():
    # exion16, the same product row-block: 2 row blocks x 2 column tiles = 4 passes; every
    # pass fetches its 16 columns x 256 x 1.5 B = 6144 B of weights, every row block its
    # 16 rows x 256 x 1.5 = 6144 B of inputs: WMEM 4 x 6144, IMEM 2 x 6144.
    g = df.gemm_flow(EX16, 32, 32, 256, dataflow="row-block", bw=64)
    assert g.bytes["gb_wmem"] == 4 * 6144 and g.bytes["gb_imem"] == 2 * 6144
    assert g.charged == ("gb_wmem", "gb_imem")


@pytest.mark.parametrize("bw", [16, 64, 256])
@pytest.mark.parametrize("case", ["dense", "masked", "input-sparse"])
@pytest.mark.parametrize("cfg", [EX16, TOY], ids=["exion16", "toy"])
def test_row_block_equals_golden_cycles(cfg, case, bw):
    rng = np.random.default_rng(17)
    M, N, K = 40, 50, 2 * cfg.imem_depth + 3 * cfg.lanes   # K-splits and partial blocks
    mask = imask = None
    if case == "masked":
        mask = rng.random((M, N)) < 0.2
    if case == "input-sparse":
        imask = rng.random((M, K)) < 0.05
    plan = cm.dense_plan(cfg, M, N) if mask is None else cm.conmerge(cfg, mask)
    want = cy.gemm_cycles(cfg.replace(gb_bytes_per_cycle=bw), K, plan, mask=mask,
                          input_mask=imask)
    got = df.gemm_flow(cfg, M, N, K, mask=mask, input_mask=imask, dataflow="row-block",
                       bw=bw)
    assert (got.cycles, got.compute_cycles, got.stall_cycles, got.bound, got.passes) == \
        (want.total_cycles, want.sdue_cycles, want.stall, want.bound, want.passes)


def test_block_row_block_equals_transformer_block():
    cfg = EX16
    shp = bl.shape("digits")
    rng = np.random.default_rng(3)
    fm = bl.synth_ffn_mask(rng, shp["T"], shp["ffn"], 0.8, "random")
    ep = bl.synth_ep(rng, shp["heads"], shp["T"], 0.25, q_th=0.5)
    tb = cy.transformer_block(cfg, shp["T"], shp["d"], shp["heads"], ffn=shp["ffn"],
                              ffn_mask=fm, score_mask=ep["score_mask"], skip_q=ep["skip_q"],
                              skip_k=ep["skip_k"], skip_v=ep["skip_v"], memory=True)
    for mode, gold in (("base", "Base"), ("ffnr", "FFNR"), ("ep", "EP"), ("all", "All")):
        r = bl.block_flow(cfg, shp, mode, ffn_mask=fm, ep=ep, dataflow="row-block")
        want = tb["modes"][gold]
        assert r["epre_cycles"] == want["epre_cycles"]
        assert sum(g["cycles"] for g in r["gemms"]) + r["epre_cycles"] == want["total"]
        assert r["compute_cycles"] == want["sdue_cycles"]


def test_column_aware_bytes_hand_case():
    # FC1-like: 32 x 64 @ 64 x 64 with 16 whole columns needed: only those 16 columns of W
    # are fetched (16 x 64 x 1.5 = 1536 B). FC2-like: 32 x 64 (input, 16 needed hidden
    # units) @ 64 x 32: only the 16 needed rows of W2 are fetched, gathered (16 x 32 x 1.5 =
    # 768 B), and each row block streams one gathered L-chunk of 16 -> beats = 1.
    cols = np.arange(0, 64, 4)
    om = np.zeros((32, 64), bool)
    om[:, cols] = True
    g1 = df.gemm_flow(EX16, 32, 64, 64, mask=om, dataflow="col-group", bw=64)
    assert g1.bytes["gb_wmem"] == 16 * 64 * 3 // 2
    assert g1.useful_macs == 32 * 16 * 64
    g2 = df.gemm_flow(EX16, 32, 32, 64, input_mask=om, dataflow="col-group", bw=64)
    assert g2.bytes["gb_wmem"] == 16 * 32 * 3 // 2
    assert g2.k_words == 2 * 2 * 1        # 2 row blocks x 2 passes x 1 beat
    # IMEM: 16 rows x 1 chunk of 16 elements x 1.5 B per row block
    assert g2.bytes["gb_imem"] == 2 * 16 * 16 * 3 // 2


@pytest.mark.parametrize("s", [0.8, 0.95])
def test_column_masks_move_fewer_bytes(s):
    shp = bl.shape("dit-xl2")
    rng = np.random.default_rng(5)
    res = {}
    for kind in ("random", "column"):
        fm = bl.synth_ffn_mask(rng, shp["T"], shp["ffn"], s, kind)
        assert abs((1 - fm.mean()) - s) < 0.01
        f1 = df.gemm_flow(EX16, 256, 4608, 1152, mask=fm, bw=128)
        f2 = df.gemm_flow(EX16, 256, 1152, 4608, input_mask=fm, bw=128,
                          preload_bits=EX16.acc_width, out_bits=EX16.acc_width)
        res[kind] = (f1, f2)
    for i in range(2):
        r, c = res["random"][i], res["column"][i]
        assert c.bytes["gb_wmem"] < r.bytes["gb_wmem"]
        assert c.bytes_total < r.bytes_total
        assert c.cycles < r.cycles
    # column: exactly the needed W1 columns / W2 rows are fetched, once
    need = int(round((1 - s) * 4608))
    assert res["column"][0].bytes["gb_wmem"] == need * 1152 * 3 // 2
    assert res["column"][1].bytes["gb_wmem"] == need * 1152 * 3 // 2


def test_bound_switches_with_bandwidth():
    bounds = [df.gemm_flow(EX16, 256, 1152, 1152, bw=bw).bound for bw in (8, 32, 128, 512)]
    assert bounds[0] == "memory-bound" and bounds[-1] == "compute-bound"
    i = bounds.index("compute-bound")
    assert all(b == "compute-bound" for b in bounds[i:])
    cyc = [df.gemm_flow(EX16, 256, 1152, 1152, bw=bw).cycles for bw in (8, 32, 128, 512)]
    assert cyc == sorted(cyc, reverse=True)
    comp = df.gemm_flow(EX16, 256, 1152, 1152, bw=512).compute_cycles
    assert cyc[-1] >= comp


def test_col_group_beats_row_block_on_weight_traffic():
    # Weight-stationary: every weight fetched once; row-block: once per row block (16 here).
    rb = df.gemm_flow(EX16, 256, 1152, 1152, dataflow="row-block", bw=64)
    cg = df.gemm_flow(EX16, 256, 1152, 1152, dataflow="col-group", bw=64)
    assert cg.bytes["gb_wmem"] == 1152 * 1152 * 3 // 2
    assert rb.bytes["gb_wmem"] == 16 * 1152 * 1152 * 3 // 2
    assert cg.cycles < rb.cycles


def test_bank_slots_and_crossbar_hand_cases():
    # two disjoint cvs merge into one slot only if they sit in different sub-banks
    assert df.bank_slots([0b01, 0b10], [0, 1], 2, 16) == 1
    assert df.bank_slots([0b01, 0b10], [0, 0], 2, 16) == 2
    assert df.bank_slots([0b01, 0b10], [0, 1], 1, 16) == 2      # m = 1: condense only
    # port-limited crossbar, m = 1, C = 2: slots on sub-banks 0, 0, 1, 1 -> pass 0 takes
    # slots 0 and 2, pass 1 slots 1 and 3; all on sub-bank 0 -> one slot per pass
    assert df.crossbar_passes([1, 2, 4, 8], [0, 0, 1, 1], 1, 16, 2) == 2
    assert df.crossbar_passes([1, 2, 4, 8], [0, 0, 0, 0], 1, 16, 2) == 4


@pytest.mark.parametrize("bank_map", df.BANK_MAPS)
def test_bank_maps_dense_and_column_masks_equal(bank_map):
    # a dense (all-ones) mask and a column mask leave nothing to merge: every mapping needs
    # the same passes, ceil(columns / C) per row block and group
    m = np.ones((32, 96), bool)
    g = df.gemm_flow(EX16, 32, 96, 64, mask=m, bank_map=bank_map)
    assert g.passes == 2 * math.ceil(96 / 16)
    assert g.conmerge_utilization == pytest.approx(1.0)


def test_bank_maps_order_on_random_masks():
    rng = np.random.default_rng(11)
    m = rng.random((64, 768)) < 0.1
    u = {b: df.gemm_flow(EX16, 64, 768, 256, mask=m, bank_map=b).conmerge_utilization
         for b in df.BANK_MAPS}
    assert u["ideal"] >= max(u["bank"], u["placed"], u["crossbar"])
    assert 0 < min(u.values())


def test_long_k_spills_partial_sums():
    # K = 3 x WMEM bank side: no column fits whole, so the reduction is cut into K-chunks
    # and the partial sums go out (A bits) and come back
    K = 3 * TOY.wmem_depth
    g = df.gemm_flow(TOY.replace(k_max=K, acc_width=40), 16, 6, K, bw=64)
    assert g.k_chunks >= 3
    outs = 16 * 6
    assert g.bytes["gb_omem"] == (g.k_chunks - 1) * outs * 40 // 8
    assert g.bytes["omem_gb"] == (g.k_chunks - 1) * outs * 40 // 8 + outs * 12 * 3 // 24


def test_goals_dit_xl2_block():
    # issue 17's goals, asserted on the model (docs/dataflow.md has the figures)
    shp = bl.shape("dit-xl2")
    hi = bl.block_flow(EX16, shp, "base", dataflow="col-group", bw=256)
    assert hi["utilization"] >= 0.90
    lo_new = bl.block_flow(EX16, shp, "base", dataflow="col-group", bw=64)
    lo_old = bl.block_flow(EX16, shp, "base", dataflow="row-block", bw=64)
    assert lo_old["cycles"] >= 4 * lo_new["cycles"]
    fm = bl.synth_ffn_mask(np.random.default_rng(0), 256, 4608, 0.95, "column")
    for bw in (64, 256):
        d = bl.block_flow(EX16, shp, "base", dataflow="col-group", bw=bw)
        s = bl.block_flow(EX16, shp, "ffnr", ffn_mask=fm, dataflow="col-group", bw=bw)
        assert d["ffn_cycles"] >= 5 * s["ffn_cycles"]
        assert d["cycles"] / s["cycles"] < 2.7     # attention stays dense


def test_synth_masks():
    rng = np.random.default_rng(1)
    c = bl.synth_ffn_mask(rng, 8, 100, 0.9, "column")
    assert c.sum() == 8 * 10 and np.all(c.all(axis=0) | ~c.any(axis=0))
    ep = bl.synth_ep(rng, 2, 32, 0.25)
    assert np.all(ep["score_mask"].sum(axis=2) == 8) and not ep["skip_q"].any()
    ep = bl.synth_ep(rng, 2, 32, 0.25, q_th=0.0)   # every gap >= 0: all rows dominant
    assert ep["skip_q"].all() and np.all(ep["score_mask"].sum(axis=2) == 1)
    with pytest.raises(ExionError, match="must be a number in"):
        bl.synth_ffn_mask(rng, 8, 8, 1.0, "random")
    with pytest.raises(ExionError, match="is not one of"):
        bl.synth_ffn_mask(rng, 8, 8, 0.5, "rows")


def test_gemm_flow_errors():
    with pytest.raises(ExionError, match="dataflow = 'diag' is not one of"):
        df.gemm_flow(EX16, 4, 4, 4, dataflow="diag")
    with pytest.raises(ExionError, match="bandwidth = 0 bytes per cycle"):
        df.gemm_flow(EX16, 4, 4, 4, bw=0)
    with pytest.raises(ExionError, match="M = 0 must be"):
        df.gemm_flow(EX16, 0, 4, 4)
    with pytest.raises(ExionError, match="does not match"):
        df.gemm_flow(EX16, 4, 4, 4, mask=np.ones((4, 5), bool))


# ---- CLI ----------------------------------------------------------------------------------
def test_cli_block_json(cli_run, tmp_path):
    out = tmp_path / "b.json"
    code, o, e = cli_run("golden", "block", "--shape", "digits", "--mode", "all",
                         "--masks", "column", "--s", "0.75", "--gb-bytes-per-cycle", "32",
                         "--json", str(out))
    assert code == 0, e
    r = json.loads(out.read_text())
    for k in ("cycles", "compute_cycles", "stall_cycles", "bytes", "bound", "utilization",
              "ffn_cycles", "gemms"):
        assert k in r
    assert r["cycles"] == sum(g["cycles"] for g in r["gemms"]) + r["epre_cycles"] + \
        r["cfse"]["softmax_exposed"] + r["cfse"]["gelu_exposed"]
    assert r["bw"] == 32 and r["masks"]["ffn_sparsity"] == pytest.approx(0.75)
    assert "fc1" in o and "block:" in o


def test_cli_block_npz_masks(cli_run, tmp_path):
    shp = bl.shape("digits")
    f = tmp_path / "m.npz"
    fm = np.zeros((shp["T"], shp["ffn"]), bool)
    fm[:, :32] = True
    np.savez(f, ffn_mask=fm)
    out = tmp_path / "b.json"
    code, _, e = cli_run("golden", "block", "--shape", "digits", "--mode", "ffnr",
                         "--masks", str(f), "--json", str(out))
    assert code == 0, e
    r = json.loads(out.read_text())
    assert r["masks"]["ffn_sparsity"] == pytest.approx(1 - 32 / shp["ffn"])


def test_cli_block_help_lists_json_fields(cli_run, capsys):
    with pytest.raises(SystemExit):
        cli_run("golden", "block", "--help")
    text = capsys.readouterr().out
    for k in ("cycles", "compute_cycles", "stall_cycles", "bytes", "bound", "utilization",
              "ffn_cycles", "gemms", "amortized_cycles"):
        assert f"  {k}" in text


@pytest.mark.parametrize("args,msg", [
    (["--s", "1.5"], "--s 1.5 is invalid"),
    (["--k", "0"], "--k 0.0 is invalid"),
    (["--gb-bytes-per-cycle", "0"], "--gb-bytes-per-cycle 0 is invalid"),
    (["--n-reuse", "-1"], "--n-reuse -1 is invalid"),
    (["--masks", "nope.npz", "--mode", "ffnr"], "does not exist"),
    (["--masks", "whatever"], "expected random, column or a FILE.npz"),
    (["--trace-block", "1"], "only with --masks FILE.npz"),
    (["--merge-ways", "17"], "--merge-ways: merge_ways = 17 is invalid"),
])
def test_cli_block_errors(cli_run, tmp_path, args, msg):
    out = tmp_path / "b.json"
    code, _, e = cli_run("golden", "block", "--shape", "digits", *args, "--json", str(out))
    assert code == 2
    assert msg in e and e.count("\n") == 1
    assert not out.exists()


def test_cli_block_file_with_s_refused(cli_run, tmp_path):
    f = tmp_path / "m.npz"
    np.savez(f, ffn_mask=np.ones((16, 256), bool))
    out = tmp_path / "b.json"
    code, _, e = cli_run("golden", "block", "--shape", "digits", "--masks", str(f),
                         "--s", "0.5", "--json", str(out))
    assert code == 2 and "--s applies to synthetic masks" in e and not out.exists()
    code, _, e = cli_run("golden", "block", "--shape", "dit-xl2", "--mode", "ffnr",
                         "--masks", str(f), "--json", str(out))
    assert code == 2 and "does not match" in e and not out.exists()


def test_cli_block_trace_masks(cli_run, tmp_path):
    from exion.workloads import trace as tr
    from exion.workloads.dit import DiT
    from exion.workloads.weights import load_weights
    arrays, meta = tr.collect(DiT(load_weights(None)[0]), steps=3, samples=2, seed=0,
                              light=True)
    f = tr.save(tmp_path / "t.npz", arrays, meta)
    out = tmp_path / "b.json"
    code, _, e = cli_run("golden", "block", "--shape", "digits", "--mode", "all", "--masks",
                         str(f), "--trace-sample", "1", "--json", str(out))
    assert code == 0, e
    r = json.loads(out.read_text())
    T = bl.shape("digits")["T"]
    fm = arrays[tr.key(0, 1, "fc1_mask")][T:2 * T]          # iteration 1 is the first sparse
    assert "iteration 1 (sparse), sample 1" in r["masks"]["source"]
    assert r["masks"]["ffn_sparsity"] == pytest.approx(1 - fm.mean())
    fc1 = next(g for g in r["gemms"] if g["name"] == "fc1")
    assert fc1["useful_macs"] == int(fm.sum()) * bl.shape("digits")["d"]
    code, _, e = cli_run("golden", "block", "--shape", "digits", "--mode", "ffnr", "--masks",
                         str(f), "--trace-iteration", "0", "--json", str(out))
    assert code == 2 and "holds no FFN-Reuse mask" in e


@pytest.mark.parametrize("bw", [8, 64, 512])
@pytest.mark.parametrize("shape", [(256, 1152, 1152), (40, 50, 600), (256, 1152, 4608),
                                   (256, 4608, 1152)], ids=lambda s: "x".join(map(str, s)))
def test_col_group_cycles_between_bounds(shape, bw):
    # Overlap can only help: cycles >= every lower bound (compute, reads / B, writes / B) and
    # <= the fully serial schedule (every byte moved, then every pass computed).
    M, N, K = shape
    rng = np.random.default_rng(2)
    for mask in (None, rng.random((M, N)) < 0.1):
        g = df.gemm_flow(EX16, M, N, K, mask=mask, bw=bw)
        reads = g.bytes["gb_wmem"] + g.bytes["gb_imem"] + g.bytes["gb_omem"]
        assert g.cycles >= g.compute_cycles
        assert g.cycles >= reads / bw and g.cycles >= g.bytes["omem_gb"] / bw
        assert g.cycles <= g.compute_cycles + (reads + g.bytes["omem_gb"]) / bw + 1
        assert g.stall_cycles == g.cycles - g.compute_cycles
