"""System model (golden/system.py, golden/workloads_sys.py, `exion evaluate`): hand-computed
pieces, the 1-core figures against the per-core model, roofline monotonicity under other
core counts and bandwidths, TOML validation, the CLI's JSON keys. Fast."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from exion import PRESETS
from exion.errors import ExionError
from exion.gen import cli
from exion.golden import block as bl
from exion.golden import dsc_cycles as dcy
from exion.golden import system as sy
from exion.golden import workloads_sys as ws

CFG = PRESETS["exion16"]
SMALL = ws.Block("small", T=64, d=128, heads=4, ffn=512)


def _tiny_model(**kw):
    base = dict(name="tiny", task="t", blocks=(SMALL,), iterations=6, s=0.9, n_reuse=2,
                ep_sparsity=0.5, q_th=None, k=0.5)
    base.update(kw)
    return ws.Model(**base)


# ---- pieces, by hand ----------------------------------------------------------------------
def test_block_dense_macs_by_hand():
    # T=2, d=4, 1 head, F=8: Q,K,V,O 4*T*d*d = 128; scores + P.V 2*T*T*d = 32;
    # FC1 + FC2 2*T*F*d = 128 -> 288 MACs; weights 4*d*d + 2*d*F = 64 + 64 = 128
    b = ws.Block("x", T=2, d=4, heads=1, ffn=8)
    assert b.dense_macs == 288
    assert b.weight_params == 128
    # cross-attention over Tc=3 tokens of width dc=5 adds: Q,O 2*T*d*d = 64, scores + P.V
    # 2*T*Tc*d = 48, K,V of the context 2*Tc*dc*d = 120 MACs; weights 2*d*d + 2*dc*d = 72
    bx = ws.Block("x", T=2, d=4, heads=1, ffn=8, context=(3, 5))
    assert bx.dense_macs == 288 + 64 + 48 + 120
    assert bx.weight_params == 128 + 72


def test_dit_xl2_macs_match_the_paper():
    # DiT paper (Peebles & Xie 2023, Table 4): DiT-XL/2 = 118.6 Gflops per forward pass at
    # 256x256, counted as fvcore does (one multiply-add = one flop), i.e. 118.6 G MACs;
    # our blocks + outside layers within 5 %.
    m = ws.MODELS["dit-xl2"]
    assert abs(m.step_macs / 118.6e9 - 1) < 0.05
    # DiT-XL/2 has 675 M parameters; ours (blocks, adaLN, embed, final) within 5 %
    assert abs(m.params / 675e6 - 1) < 0.05


def test_sd_unet_size_matches_the_paper():
    # Stable Diffusion v1 UNet: 860 M parameters (Rombach et al. 2022, model card); our
    # reconstruction (transformers + ResBlocks + convs) within 5 %; 16 transformer blocks
    m = ws.MODELS["sd"]
    assert abs(m.params / 860e6 - 1) < 0.05
    assert sum(b.count for b in m.blocks) == 16
    assert [b.T for b in m.blocks] == [4096, 1024, 256, 64]


#: Weights and dense MACs of one network evaluation counted from each model's released code
#: (its config and module constructors; commits and per-layer tables in docs/evaluate.md,
#: section 4), independently of golden/workloads_sys.py
RELEASED = {"mld": (8_060_928, 23.30e6), "mdm": (17_832_960, 3.6766e9),
            "edge": (49_273_856, 5.2387e9), "make-an-audio": (160_053_760, 46.67e9),
            "sd": (859_077_120, 401.63e9), "videocrafter2": (1_412_300_000, 6260.8e9)}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_workload_sizes_match_the_released_code(name):
    # within 2 %: the UNets' up-level ResBlock inputs are approximated (2c), MLD's skip
    # projections and MDM's first-layer condition token are counted as plain layers
    params, macs = RELEASED[name]
    m = ws.MODELS[name]
    assert abs(m.params / params - 1) < 0.02
    assert abs(m.step_macs / macs - 1) < 0.02


def test_step_conditioning_and_condition_encoder_by_hand():
    # SD v1: the time embedding 320 -> 1280 -> 1280 and each ResBlock's 1280 -> C (2 down
    # and 3 up per level, 2 in the middle), one token a step; shared by a guided step's
    # evaluations (its input is the timestep only)
    sd = ws.MODELS["sd"]
    res = 5 * (320 + 640 + 1280 + 1280) + 2 * 1280
    assert res == 20_160
    assert sd.cond_params == sd.cond_macs == 320 * 1280 + 1280 * 1280 + 1280 * res
    assert (sd.cond_outputs, sd.cond_shared, sd.enc_macs) == (res, True, 0)
    # Make-an-Audio: two levels (320, 640), the middle at 640
    maa = ws.MODELS["make-an-audio"]
    assert maa.cond_outputs == 5 * (320 + 640) + 2 * 640
    assert [b.T for b in maa.blocks] == [780, 195, 195]
    # EDGE: the music encoder (the 4800 -> 512 projection of 150 frames, two encoder layers
    # of d 512 / FF 1024 over 150 tokens, the pooled 2 x 512 x 512) once
    edge = ws.MODELS["edge"]
    layer = 150 * (4 * 512 * 512 + 2 * 512 * 1024) + 2 * 150 * 150 * 512
    assert edge.enc_macs == 150 * 4800 * 512 + 2 * layer + 2 * 512 * 512
    assert not edge.cond_shared
    # guided: the blocks and outside layers twice, the conditioning once when shared, the
    # encoder once
    for m in (sd, edge):
        g = ws.guided(m)
        c = 1 if m.cond_shared else 2
        assert g.step_macs == 2 * (m.block_macs + m.other_macs) + c * m.cond_macs + m.enc_macs
        assert g.enc_params == m.enc_params


def test_condition_encoder_runs_once_by_hand():
    # the tiny model with a condition encoder of 2e8 MACs on 1e6 weights: batched, one
    # pass of it (with no step conditioning: the once pass is the encoder alone); per step,
    # an outside layer of S = 6 times those MACs. 1 core x 4096 MACs at 800 MHz
    one = replace(sy.SYSTEMS["exion4"], dscs=1)
    enc = _tiny_model(enc_macs=2 * 10 ** 8, enc_params=10 ** 6)
    plain = _tiny_model()
    b, p = sy.evaluate_model(one, enc, "Base"), sy.evaluate_model(one, plain, "Base")
    once = b["outside_blocks"]["step_conditioning"]["once"]
    assert once["encoder_macs"] == 2 * 10 ** 8
    assert once["onchip_s"] == pytest.approx(2e8 / 4096 / 800e6)
    assert b["macs"] == p["macs"] + 2 * 10 ** 8
    assert b["latency_s"] == pytest.approx(p["latency_s"] + once["latency_s"])
    assert b["outside_blocks"]["step_conditioning"]["condition_encoder"] == \
        {"macs": 2 * 10 ** 8, "weight_params": 10 ** 6}
    per = sy.evaluate_model(replace(one, cond_layers="per-step"), enc, "Base")
    folded = sy.evaluate_model(one, _tiny_model(other_macs=2 * 10 ** 8, other_params=10 ** 6),
                               "Base")
    for key in ("latency_s", "energy_j", "macs"):
        assert per[key] == pytest.approx(folded[key], rel=1e-12), key
    assert per["macs"] == p["macs"] + 6 * 2 * 10 ** 8
    # guided: still once
    g = sy.evaluate_model(one, ws.guided(enc), "Base")
    assert g["outside_blocks"]["step_conditioning"]["once"]["encoder_macs"] == 2 * 10 ** 8
    # the GPU estimate: once, by the roofline of its MACs and weights (RTX: 91.1 TFLOPS)
    gb, gp = (sy.gpu_estimate(enc, "rtx6000ada", c)["latency_s"]
              for c in ("batched", "per-step"))
    g0 = sy.gpu_estimate(plain, "rtx6000ada")["latency_s"]
    e1 = max(2 * 2e8 / 91.1e12, 1e6 * 2 / 960e9)
    assert gb - g0 == pytest.approx(e1, rel=1e-9)
    assert gp - g0 > 5 * e1


def test_sram_energy_sqrt_rule():
    e8 = sy.ENERGY["sram_8kb_byte"]
    assert sy.sram_pj_per_byte(8192) == pytest.approx(e8)
    assert sy.sram_pj_per_byte(4 * 8192) == pytest.approx(2 * e8)     # 32 KB: sqrt(4) = 2
    # Horowitz 45 nm: 8 KB 64-bit read 10 pJ -> 1.25 pJ/B, x 0.25 to 14 nm
    assert e8 == pytest.approx(1.25 * 0.25)
    # INT12 MAC: 0.2 pJ * (12/8)^2 + 0.1 pJ = 0.55 pJ at 45 nm -> 0.1375 pJ
    assert sy.ENERGY["mac_int12"] == pytest.approx(0.1375)


def test_gpu_roofline_by_hand():
    # one block T=4, d=4, 1 head, F=4, INT8 (1 B) on the Orin Nano (40e12 op/s, 68e9 B/s):
    # every GEMM is memory-bound; bytes (M*K + K*N + M*N):
    #   QKV 4x4x12: 16+48+48 = 112; O 4x4x4: 48; scores 4x4x4: 48; P.V: 48; FC1: 48; FC2: 48
    #   -> 352 B -> 352 / 68e9 s per iteration; 3 iterations
    b = ws.Block("x", T=4, d=4, heads=1, ffn=4)
    m = ws.Model("x", "t", (b,), 3, 0.5, 1, 0.5, None, 0.5)
    g = sy.gpu_estimate(m, "orin-nano")
    assert g["latency_s"] == pytest.approx(3 * 352 / 68e9)
    assert g["energy_j"] == pytest.approx(15.0 * g["latency_s"])
    # compute-bound when MACs dominate: T=d=F=4096 FC1 alone: 2*4096^3/40e12 >> bytes/68e9
    assert 2 * 4096 ** 3 / 40e12 > 3 * 4096 ** 2 / 68e9


def test_residency_priorities_by_hand():
    # 1 MiB global memory; activations 0.5 MiB, caches 0.25 MiB fit; weights 1 MiB: 0.25 MiB
    # left -> 75 % of the weights off chip
    s = replace(sy.SYSTEMS["exion4"], gm_mb=1.0)
    mib = 2 ** 20
    fp = {"activations": 0.5 * mib, "ffnr_caches": 0.25 * mib, "weights": 1.0 * mib}
    r = sy._residency(s, fp, ffnr=True)
    assert r == {"activations": 0.0, "ffnr_caches": 0.0, "context_kv": 0.0,
                 "cond_outputs": 0.0, "weights": pytest.approx(0.75), "once_weights": 0.0}
    # without FFN-Reuse the caches take nothing: 0.5 MiB left -> 50 %
    assert sy._residency(s, fp, ffnr=False)["weights"] == pytest.approx(0.5)
    # activations that do not fit spill in proportion (0.25 of 0.5 MiB -> 50 % off chip),
    # and nothing else fits
    s2 = replace(s, gm_mb=0.25)
    assert sy._residency(s2, fp, ffnr=True) == {"activations": pytest.approx(0.5),
                                                 "ffnr_caches": 1.0, "context_kv": 0.0,
                                                 "cond_outputs": 0.0, "weights": 1.0,
                                                 "once_weights": 0.0}
    # the contexts' K / V and the step conditioning's outputs (computed once) come after
    # the caches, before the weights: 0.125
    # MiB of them fit in the 0.25 MiB left, and 0.125 MiB of weights -> 87.5 % off chip;
    # 0.5 MiB of them: half off chip, no weight on chip
    r = sy._residency(s, {**fp, "context_kv": 0.125 * mib}, ffnr=True)
    assert (r["context_kv"], r["weights"]) == (0.0, pytest.approx(0.875))
    r = sy._residency(s, {**fp, "context_kv": 0.5 * mib}, ffnr=True)
    assert (r["context_kv"], r["weights"]) == (pytest.approx(0.5), 1.0)
    r = sy._residency(s, {**fp, "context_kv": 0.125 * mib, "cond_outputs": 0.5 * mib},
                      ffnr=True)
    assert (r["cond_outputs"], r["weights"]) == (pytest.approx(0.75), 1.0)
    # the weights only the once pass reads come last: 0.125 MiB of weights a step reads
    # leave 0.125 MiB for 0.5 MiB of them -> 75 % off chip; with 1 MiB, none on chip
    r = sy._residency(s, {**fp, "weights": 0.125 * mib, "once_weights": 0.5 * mib},
                      ffnr=True)
    assert (r["weights"], r["once_weights"]) == (0.0, pytest.approx(0.75))
    r = sy._residency(s, {**fp, "once_weights": 0.5 * mib}, ffnr=True)
    assert (r["weights"], r["once_weights"]) == (pytest.approx(0.75), 1.0)


def test_once_weights_leave_room_for_the_step():
    # batched, the weights only the once pass reads (step conditioning, condition encoder,
    # the contexts' K / V projections) are a footprint item of their own: the step's
    # weights are the rest. EDGE: 49.3 M weights of which the per-step ones are the blocks
    # without their contexts' K / V and the pose projections
    m = ws.MODELS["edge"]
    cfg = sy.SYSTEMS["exion24"].cfg
    fp = sy._footprints(m, cfg, batched=True)
    blk = m.blocks[0]
    step = blk.count * (blk.weight_params - blk.context_kv["params"]) + m.other_params
    assert fp["weights"] == step * 1.5
    assert fp["once_weights"] == (m.cond_params + m.enc_params
                                  + blk.count * blk.context_kv["params"]) * 1.5
    per = sy._footprints(m, cfg, batched=False)
    assert (per["weights"], per["once_weights"]) == (m.params * 1.5, 0)
    # EDGE's step weights (32 MB) fit the 64 MB of EXION-24 beside the rest, so no step
    # reads a weight off chip; counted with the once-only ones (74 MB) they did not
    r = sy.evaluate_model(sy.SYSTEMS["exion24"], m, "Base")
    assert r["offchip_fraction"]["weights"] == 0.0
    assert r["offchip_fraction"]["once_weights"] > 0.0


def test_iteration_split():
    # S = 6, N = 2: dense at t = 0, 3 -> 2 dense, 4 sparse (SPEC 3.3); Base: all dense
    s = sy.SYSTEMS["exion24"]
    r = sy.evaluate_model(s, _tiny_model(), "FFNR")
    assert r["iterations"] == {"total": 6, "dense": 2, "sparse": 4}
    assert sy.evaluate_model(s, _tiny_model(), "Base")["iterations"]["dense"] == 6


# ---- the 1-core part is the per-core model ------------------------------------------------
@pytest.mark.parametrize("masks", ["random", "column"])
@pytest.mark.parametrize("mode", bl.MODES)
def test_one_core_equals_block_flow(mode, masks):
    shp = SMALL.shape
    fm = bl.ffn_mask_for(shp, masks, 0.9, 3) if mode in ("ffnr", "all") else None
    ep = bl.ep_masks_for(shp, "random", 0.5, None, 3) if mode in ("ep", "all") else None
    ref = bl.block_flow(CFG, shp, mode, ffn_mask=fm, ep=ep, bw=64, epre_overlap=True)
    r = sy.block_gemms(CFG, SMALL, mode, seed=3, bw=64, s=0.9, k=0.5, masks_kind=masks,
                       ep_key_corr=0.0, epre_levers=("stall", "predicted", "row"))
    if mode in ("ep", "all"):      # issue 18: the overlapped EPRE, as golden.block charges it
        assert r["epre_cycles"] == ref["epre_cycles"] < r["epre_busy_cycles"]
    t = sy.core_totals(CFG, r)
    for key in ("cycles", "compute_cycles", "stall_cycles", "useful_macs"):
        assert t[key] == ref[key], key
    assert t["bytes"] == ref["bytes"]
    # and on a 1-core system, the block takes exactly those cycles
    one = replace(sy.SYSTEMS["exion24"], dscs=1, gm_bytes_per_cycle=64)
    assert sy.block_on_system(one, r)["cycles"] == pytest.approx(ref["cycles"])


def test_energy_is_activity_times_table():
    r = sy.evaluate_model(sy.SYSTEMS["exion4"], _tiny_model(), "Base")
    e = r["energy_breakdown_j"]
    assert e["mac"] == pytest.approx(r["macs"] * sy.ENERGY["mac_int12"] * 1e-12)
    assert e["shift_add"] == 0.0                      # no EPRE in Base
    assert e["leakage"] == pytest.approx(r["latency_s"] * sy.SYSTEMS["exion4"].leak_w)
    assert r["energy_j"] == pytest.approx(sum(e.values()))
    # outside layers: 1e9 MACs per iteration at 4 cores x 4096 MACs x 800 MHz -> 6 x
    # 1e9 / 1.31072e13 s of on-chip time over 6 iterations
    o = sy.evaluate_model(sy.SYSTEMS["exion4"], _tiny_model(other_macs=10 ** 9), "Base")
    assert o["outside_blocks"]["onchip_s"] == pytest.approx(6e9 / (4 * 4096 * 800e6))
    assert o["macs"] == r["macs"] + 6 * 10 ** 9
    # EP forced on every block (the per-block choice may turn it off on this small block)
    ep = sy.evaluate_model(sy.SYSTEMS["exion4"], _tiny_model(), "EP", ep_per_block=False)
    assert ep["energy_breakdown_j"]["shift_add"] > 0


# ---- hidden configs move figures the roofline way ------------------------------------------
@pytest.mark.parametrize("name", ["mdm", "edge", "dit-xl2"])
def test_more_cores_not_slower(name):
    m = ws.MODELS[name]
    lat = [sy.evaluate_model(replace(sy.SYSTEMS["exion24"], dscs=n), m, "Base")["latency_s"]
           for n in (1, 2, 3, 6, 16, 24, 48)]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(lat, lat[1:])), lat
    assert lat[-1] < lat[0]


@pytest.mark.parametrize("mode", ["Base", "FFNR"])
def test_more_offchip_bandwidth_not_slower(mode):
    m = ws.MODELS["dit-xl2"]
    lat = [sy.evaluate_model(replace(sy.SYSTEMS["exion4"], offchip_gb_per_s=bw), m,
                             mode)["latency_s"] for bw in (17, 34, 68, 136, 1000, 10000)]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(lat, lat[1:])), lat


def test_memory_bound_speeds_up_with_bandwidth_compute_bound_does_not():
    m = ws.MODELS["dit-xl2"]
    low = replace(sy.SYSTEMS["exion4"], offchip_gb_per_s=17.0)
    r = sy.evaluate_model(low, m, "Base")
    assert r["bound"] == "off-chip"        # 1 GB of INT12 weights per iteration vs 16 MB
    r2 = sy.evaluate_model(replace(low, offchip_gb_per_s=34.0), m, "Base")
    assert r2["latency_s"] == pytest.approx(r["latency_s"] / 2, rel=1e-9)  # all off-chip
    # with huge bandwidth the off-chip roof is gone: latency = on-chip time, not less
    big = sy.evaluate_model(replace(low, offchip_gb_per_s=1e5), m, "Base")
    assert big["bound"] != "off-chip"
    assert big["latency_s"] == pytest.approx(big["onchip_s"])
    huge = sy.evaluate_model(replace(low, offchip_gb_per_s=1e6 / 10), m, "Base")
    assert huge["latency_s"] == pytest.approx(big["latency_s"])


def test_more_global_memory_bandwidth_not_slower():
    m = ws.MODELS["edge"]
    lat = [sy.evaluate_model(replace(sy.SYSTEMS["exion24"], gm_bytes_per_cycle=b), m,
                             "Base")["onchip_s"] for b in (16, 32, 64, 256)]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(lat, lat[1:])), lat


def test_more_global_memory_bandwidth_not_slower_offchip_bound():
    # VideoCrafter2 on EXION-4 is off-chip-bound; at 64 B/cycle its FC2 plans re-read fewer
    # spilled partial sums but more inputs than at 32 (the same bytes in all): latency must
    # not rise (it rose 0.4 % while spill re-reads went uncharged)
    m = ws.MODELS["videocrafter2"]
    lat = [sy.evaluate_model(replace(sy.SYSTEMS["exion4"], gm_bytes_per_cycle=b), m,
                             "Base")["latency_s"] for b in (32, 64, 128)]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(lat, lat[1:])), lat


def test_bigger_global_memory_less_offchip_traffic():
    m = ws.MODELS["dit-xl2"]
    off = [sy.evaluate_model(replace(sy.SYSTEMS["exion4"], gm_mb=g), m, "Base")["offchip_s"]
           for g in (4.0, 64.0, 512.0, 2048.0)]
    assert all(b <= a for a, b in zip(off, off[1:]))
    assert off[-1] == 0.0                  # 1 GB of weights fit in 2 GB


# ---- step conditioning (System.cond_layers) ------------------------------------------------
def _cond_case(**kw):
    """A 1-core system with no global memory (every weight and activation off chip) and the
    tiny model with 3e8 MACs of step conditioning on 3e8 weights, 1e5 outputs a step."""
    one = replace(sy.SYSTEMS["exion4"], dscs=1, gm_mb=0.0, **kw)
    cond = _tiny_model(cond_macs=3 * 10 ** 8, cond_params=3 * 10 ** 8, cond_outputs=10 ** 5)
    return one, cond


def test_step_conditioning_per_step_is_an_outside_layer():
    # per step, the conditioning is priced exactly as layers outside the blocks of its MACs
    # and weights
    one, cond = _cond_case(cond_layers="per-step")
    folded = _tiny_model(other_macs=3 * 10 ** 8, other_params=3 * 10 ** 8)
    for mode in ("Base", "All"):
        a, b = sy.evaluate_model(one, cond, mode), sy.evaluate_model(one, folded, mode)
        for key in ("latency_s", "energy_j", "onchip_s", "offchip_s", "macs"):
            assert a[key] == pytest.approx(b[key], rel=1e-12), (mode, key)
        assert a["outside_blocks"]["step_conditioning"]["once"] is None


def test_step_conditioning_batched_by_hand():
    # batched: one pass of S = 6 steps' conditioning before the first step. By hand, at 1
    # core x 4096 MACs x 800 MHz and 68 GB/s: on chip 6 x 3e8 / 4096 / 8e8 s; off chip
    # 3e8 weights x 1.5 B + 6 x 1e5 outputs x 2 B written; then 2e5 B read every step
    one, cond = _cond_case()
    plain = _tiny_model()
    p = sy.evaluate_model(one, plain, "Base")
    b = sy.evaluate_model(one, cond, "Base")
    once = b["outside_blocks"]["step_conditioning"]["once"]
    assert once["onchip_s"] == pytest.approx(6 * 3e8 / 4096 / 800e6)
    assert once["offchip_bytes"] == pytest.approx(3e8 * 1.5 + 6 * 1e5 * 2)
    assert once["offchip_s"] == pytest.approx((3e8 * 1.5 + 6 * 1e5 * 2) / 68e9)
    assert once["latency_s"] == pytest.approx(max(once["onchip_s"], once["offchip_s"]))
    assert b["macs"] == p["macs"] + 6 * 3 * 10 ** 8
    assert b["onchip_s"] == pytest.approx(p["onchip_s"] + once["onchip_s"])
    assert b["offchip_s"] == pytest.approx(p["offchip_s"] + once["offchip_s"] + 6 * 2e5 / 68e9)
    # the tiny model's steps are on-chip-bound, so the step reads cost no time
    assert p["bound"] != "off-chip"
    assert b["latency_s"] == pytest.approx(p["latency_s"] + once["latency_s"])
    per = sy.evaluate_model(replace(one, cond_layers="per-step"), cond, "Base")
    assert per["macs"] == b["macs"]
    assert b["latency_s"] < per["latency_s"]


def test_dit_conditioning_weights_fetched_once():
    # DiT-XL/2 on EXION-4 without global memory: per step, its 227 M conditioning weights
    # cross the off-chip port every step; batched, once, plus the outputs written once and
    # read every step: the off-chip time differs by exactly that
    s0 = replace(sy.SYSTEMS["exion4"], gm_mb=0.0)
    m = ws.MODELS["dit-xl2"]
    S, P, O = m.iterations, m.cond_params, m.cond_outputs
    assert P == 28 * 1152 * 6 * 1152 + 1152 * 2 * 1152 + 256 * 1152 + 1152 * 1152
    b = sy.evaluate_model(s0, m, "Base")
    per = sy.evaluate_model(replace(s0, cond_layers="per-step"), m, "Base")
    saved = (S - 1) * P * 1.5 - 2 * S * O * 2
    assert per["offchip_s"] - b["offchip_s"] == pytest.approx(saved / 68e9, rel=1e-9)
    # the GPU estimate takes the same schedule: the weights once, per-step reads of outputs
    g_b = sy.gpu_estimate(m, "orin-nano")
    g_p = sy.gpu_estimate(m, "orin-nano", "per-step")
    assert g_b["latency_s"] < g_p["latency_s"]
    # a model without conditioning does not depend on the schedule
    t = _tiny_model()
    assert sy.gpu_estimate(t, "orin-nano")["latency_s"] == \
        sy.gpu_estimate(t, "orin-nano", "per-step")["latency_s"]
    with pytest.raises(ExionError, match="cond_layers = 'x' is invalid"):
        sy.gpu_estimate(m, "orin-nano", "x")


def test_context_kv_computed_once_by_hand():
    # the cross-attention block of test_block_dense_macs_by_hand: its context's K, V are
    # 2 x Tc x dc x d = 120 MACs on 2 x dc x d = 40 weights, 2 x Tc x d = 24 outputs
    bx = ws.Block("x", T=2, d=4, heads=1, ffn=8, context=(3, 5))
    assert sy.context_kv_work(_tiny_model(blocks=(bx,))) == \
        {"macs": 120, "params": 40, "outputs": 24}
    # a context of 16 x 64 on a 64 x 128 block, priced per core without them: exactly the
    # K / V GEMMs' MACs less, and no xk / xv GEMM
    big = ws.Block("xb", T=64, d=128, heads=4, ffn=512, context=(16, 64), count=2)
    full = sy.block_gemms(CFG, big, "base")
    once = sy.block_gemms(CFG, big, "base", context_kv=False)
    names = {x[0].name for x in once["gemms"]}
    assert "xk_proj" not in names and "xv_proj" not in names
    assert sy.core_totals(CFG, full)["useful_macs"] - sy.core_totals(CFG, once)[
        "useful_macs"] == 2 * 16 * 64 * 128
    # on the system: batched runs them once per generation (S = 6), per step six times;
    # the once pass reports them
    m = _tiny_model(blocks=(big,))
    one = replace(sy.SYSTEMS["exion4"], dscs=1)
    b = sy.evaluate_model(one, m, "Base")
    per = sy.evaluate_model(replace(one, cond_layers="per-step"), m, "Base")
    kv = 2 * 2 * 16 * 64 * 128                     # both instances
    assert per["macs"] - b["macs"] == 5 * kv
    assert b["outside_blocks"]["step_conditioning"]["once"]["context_kv_macs"] == kv
    assert b["latency_s"] < per["latency_s"]
    # with no global memory the K / V are written off chip once and read back every step:
    # the once pass moves their weights and outputs (1.5 bytes each)
    b0 = sy.evaluate_model(replace(one, gm_mb=0.0), m, "Base")
    assert b0["offchip_fraction"]["context_kv"] == 1.0
    out = 2 * 16 * 2 * 128                          # K and V of both instances
    assert b0["outside_blocks"]["step_conditioning"]["once"]["offchip_bytes"] == \
        pytest.approx((2 * 2 * 64 * 128 + out) * 1.5)
    assert b0["footprint_bytes"]["context_kv"] == out * 1.5
    # guided: two contexts, so twice the K / V once
    g = sy.evaluate_model(one, ws.guided(m), "Base")
    assert g["outside_blocks"]["step_conditioning"]["once"]["context_kv_macs"] == 2 * kv
    # the GPU estimate: without the per-step K / V, by the roofline of that GEMM
    edge = replace(ws.MODELS["edge"], cond_macs=0, cond_params=0, cond_outputs=0,
                   enc_macs=0, enc_params=0)         # its K / V alone
    gb, gp = (sy.gpu_estimate(edge, "rtx6000ada", c)["latency_s"]
              for c in ("batched", "per-step"))
    G = sy.GPUS["rtx6000ada"]
    kv_t = max(2 * 150 * 1024 * 512 / G["ops_per_s"],
               (150 * 512 + 512 * 1024 + 150 * 1024) * G["bytes_per_el"] / G["bytes_per_s"])
    assert gp - gb == pytest.approx(8 * kv_t * (edge.iterations - 1), rel=1e-9)


def test_cli_per_step_conditioning_from_a_system_file(tmp_path, capsys):
    # a system file chooses the schedule; the run says so and its JSON records it
    f = tmp_path / "ps.toml"
    f.write_text('base = "exion4"\ncond_layers = "per-step"\n')
    out = tmp_path / "ps.json"
    assert cli.main(["evaluate", "--system", str(f), "--model", "edge", "--json",
                     str(out)]) == 0
    assert "cond_layers = per-step" in capsys.readouterr().out
    d = json.loads(out.read_text())
    assert d["system"]["cond_layers"] == "per-step"
    sc = d["models"]["edge"]["modes"]["Base"]["outside_blocks"]["step_conditioning"]
    assert sc["schedule"] == "per-step" and sc["once"] is None
    assert sc["context_kv"]["macs"] == 8 * 150 * 512 * 2 * 512


def test_step_conditioning_schedule_validated(tmp_path):
    with pytest.raises(ExionError, match=r"cond_layers = 'once' is invalid: must be one of "
                                         r"batched, per-step"):
        replace(sy.SYSTEMS["exion4"], cond_layers="once")
    p = tmp_path / "bad.toml"
    p.write_text('base = "exion4"\ncond_layers = 3\n')
    with pytest.raises(ExionError, match="cond_layers = 3 is invalid: must be a string"):
        sy.get_system(str(p))


# ---- system files ----------------------------------------------------------------------------
def test_presets_and_toml(tmp_path):
    assert sy.SYSTEMS["exion24"].dscs == 24 and sy.SYSTEMS["exion24"].gm_mb == 64.0
    assert sy.SYSTEMS["exion4"].dscs == 4 and sy.SYSTEMS["exion4"].gpu == "orin-nano"
    p = tmp_path / "mine.toml"
    p.write_text('base = "exion24"\ndscs = 8\noffchip_gb_per_s = 400\n')
    s = sy.get_system(str(p))
    assert (s.dscs, s.offchip_gb_per_s, s.name, s.gm_mb) == (8, 400.0, "mine", 64.0)


@pytest.mark.parametrize("text,msg", [
    ('base = "exion24"\ndscs = 0\n', "dscs = 0 is invalid: must be in 1..1024"),
    ('base = "exion24"\ncores = 8\n', "unknown field(s) cores"),
    ('dscs = 8\n', "no base; give base = one of the presets (exion4, exion24)"),
    ('base = "exion99"\n', "base = 'exion99' must name a preset"),
    ('base = ["exion24"]\n', "base = ['exion24'] must name a preset"),
    ('base = "exion4"\noffchip_gb_per_s = 0\n', "offchip_gb_per_s = 0.0 is invalid"),
    ('base = "exion4"\ndscs = 2.5\n', "dscs = 2.5 is invalid: must be an integer"),
    ('base = "exion4"\ngpu = "h100"\n', "gpu = 'h100' is invalid"),
    ('base = "exion4"\ndscs = [1]\n', "field dscs must be a single value"),
    ('base = "exion4"\ndscs = \n', "is not valid TOML"),
])
def test_toml_errors(tmp_path, text, msg):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ExionError) as e:
        sy.get_system(str(p))
    assert msg in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_system_and_model():
    with pytest.raises(ExionError, match="not a preset"):
        sy.get_system("exion7")
    with pytest.raises(ExionError, match="is not one of"):
        ws.get_model("gpt")


# ---- CLI ---------------------------------------------------------------------------------------
def test_cli_json_keys(tmp_path, capsys):
    out = tmp_path / "e.json"
    png = tmp_path / "e.png"
    assert cli.main(["evaluate", "--system", "exion4", "--model", "mld", "--json", str(out),
                     "--plot", str(png)]) == 0
    d = json.loads(out.read_text())
    assert d["system"]["dscs"] == 4
    modes = d["models"]["mld"]["modes"]
    assert set(modes) == {"Base", "EP", "FFNR", "All"}
    for r in modes.values():
        for k in ("latency_s", "energy_j", "speedup_vs_gpu", "energy_eff_vs_gpu", "bound",
                  "utilization"):
            assert k in r
        assert r["bound"] in ("compute", "global memory", "off-chip")
        g = d["models"]["mld"]["gpu"]
        assert r["speedup_vs_gpu"] == pytest.approx(g["latency_s"] / r["latency_s"])
        assert math.isfinite(r["energy_eff_vs_gpu"])
    assert png.stat().st_size > 1000
    assert "mld" in capsys.readouterr().out
    # the ordering verdict, per model and counted, agrees with the latencies
    lat = [modes[m]["latency_s"] for m in ("Base", "EP", "FFNR", "All")]
    holds = all(a > b for a, b in zip(lat, lat[1:]))
    assert d["models"]["mld"]["ordering_holds"] is holds
    assert d["ordering_holds_count"] == int(holds)


def test_cli_errors(tmp_path, capsys, monkeypatch):
    assert cli.main(["evaluate", "--model", "gpt", "--json", str(tmp_path / "x.json")]) == 2
    assert "model 'gpt' is not one of" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    assert cli.main(["evaluate", "--system", "nope.toml"]) == 2
    assert "cannot read system file" in capsys.readouterr().err
    # an output that is a folder fails before any work; one that cannot be written, in one
    # line (no traceback)
    assert cli.main(["evaluate", "--model", "mld", "--json", str(tmp_path)]) == 2
    assert "--json" in capsys.readouterr().err
    from exion.gen.cli import evaluate as ev

    def full(path, data):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(ev, "write_json", full)
    assert cli.main(["evaluate", "--model", "mld", "--json", str(tmp_path / "y.json")]) == 2
    err = capsys.readouterr().err        # progress lines ([exion] ...) may come first
    last = err.strip().splitlines()[-1]
    assert last.startswith("exion: error: ") and "y.json': No space left on device" in last
    assert "Traceback" not in err and err.count("exion: error") == 1


def test_ep_masks_scale_with_k():
    # a smaller top-k keeps fewer scores: fewer useful MACs in EP (the masks are live)
    r1 = sy.core_totals(CFG, sy.block_gemms(CFG, SMALL, "ep", k=0.9))
    r2 = sy.core_totals(CFG, sy.block_gemms(CFG, SMALL, "ep", k=0.1))
    assert r2["useful_macs"] < r1["useful_macs"]
    assert np.isfinite(r2["cycles"])


# ---- issue 19: query split of attention heads, column masks, the documented ordering ------
def test_attn_split_candidates_by_hand():
    # MDM on EXION-24: 4 heads, 24 cores, T = 197 -> 13 row blocks; rounds per head
    # ceil(4g/24)/g = 1/g up to g = 6, then g = 7: 2/7 > 1/6 (no gain) ... g = 12: 2/12
    assert sy.attn_split_candidates(24, 4, 197, 16) == [1, 2, 3, 4, 5, 6]
    assert sy.attn_split_for(24, 4, 197, 16) == 6
    # DiT-XL/2: 16 heads on 24 cores: g = 2 -> ceil(32/24)/2 = 1 (no gain), g = 3 -> 2/3
    # (gain), g = 6, 9, 12, 15 -> 2/3 (not lower), g = 16 -> 11/16 (higher)
    assert sy.attn_split_candidates(24, 16, 256, 16) == [1, 3]
    # as many units as cores, or one row block of queries: no split
    assert sy.attn_split_candidates(24, 48, 256, 16) == [1]
    assert sy.attn_split_candidates(24, 4, 2, 16) == [1]


def test_attn_split_prices_query_chunks():
    # T = 64 split in g = 4: every scores[h] / pv[h] GEMM is 16 query rows and stands for
    # the 4 chunks of head h (4 heads -> 16 units); softmax elements are unchanged in total
    # (16 chunks x 16 x 64)
    r = sy.block_gemms(CFG, SMALL, "base", attn_split=4)
    heads = [(x, n) for x, n, kind in r["gemms"] if kind == "head"]
    assert len(heads) == 8 and all(x.M == 16 and n == 4 for x, n in heads)
    assert sum(n for x, n in heads if x.name.startswith("scores")) == 16
    assert r["attn_units"] == 16 and r["attn_split"] == 4
    assert r["cfse"]["softmax_elements"] == 4 * 64 * 64
    one = sy.block_gemms(CFG, SMALL, "base")
    assert one["cfse"]["softmax_elements"] == 4 * 64 * 64
    # on 16 cores, the split block's attention takes one chunk's cycles instead of a head's
    sys16 = replace(sy.SYSTEMS["exion24"], dscs=16)
    assert sy.block_on_system(sys16, r)["cycles"] < sy.block_on_system(sys16, one)["cycles"]
    with pytest.raises(ExionError, match="attn_split"):
        sy.block_gemms(CFG, SMALL, "base", attn_split=0)


def test_best_block_never_worse_than_no_split():
    # the schedule picks the cheapest g of the candidates, g = 1 among them; a broken
    # chooser (always the largest g) loses in EP on a head-few block (EPRE repeats stage 1)
    s24 = sy.SYSTEMS["exion24"]
    for mode in bl.MODES:
        kw = dict(seed=0, bw=64, s=0.9, k=0.5, masks_kind="column")
        best = sy.best_block(s24, SMALL, mode, **kw)[1]["cycles"]
        none = sy.best_block(s24, SMALL, mode, split_heads=False, **kw)[1]["cycles"]
        assert best <= none
        for g in sy.attn_split_candidates(24, 4, 64, CFG.rows):
            r = sy.block_gemms_cached(CFG, SMALL, mode, attn_split=g, **kw)
            assert best <= sy.block_on_system(s24, r)["cycles"] + 1e-9
    base = sy.evaluate_model(s24, _tiny_model(), "Base")
    flat = sy.evaluate_model(s24, _tiny_model(), "Base", split_heads=False)
    assert base["latency_s"] < flat["latency_s"]


def test_column_masks_are_the_default_and_beat_random():
    # FFN-Reuse with whole hidden units (issue 20's column rule) skips W1 columns and W2 rows;
    # element-random masks at the same s do not (docs/evaluate.md, table 6.0)
    m = _tiny_model(s=0.95)
    s4 = sy.SYSTEMS["exion4"]
    col = sy.evaluate_model(s4, m, "FFNR")
    assert col == sy.evaluate_model(s4, m, "FFNR", masks_kind="column")
    rnd = sy.evaluate_model(s4, m, "FFNR", masks_kind="random")
    assert col["latency_s"] < rnd["latency_s"]
    assert col["latency_s"] < sy.evaluate_model(s4, m, "Base")["latency_s"]


def _doc_ordering() -> dict:
    """{(system, model): 'yes'|'no'} from docs/evaluate.md's ordering tables."""
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "evaluate.md").read_text()
    out, sysname = {}, None
    for line in text.splitlines():
        if line.startswith("EXION-4 (`--system exion4`)"):
            sysname = "exion4"
        elif line.startswith("EXION-24 (`--system exion24`)"):
            sysname = "exion24"
        elif sysname and line.startswith("| ") and not line.startswith(("| model", "|---")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[(sysname, cells[0])] = cells[-1].split()[0]
        elif sysname and line.startswith(("#", "(ordering holds")):
            sysname = None
    return out


def ordering_holds(sysname: str, model: str) -> bool:
    """Base < EP < FFNR < All in speed (strictly decreasing latency) in the model."""
    lat = [sy.evaluate_model(sy.SYSTEMS[sysname], ws.MODELS[model], m)["latency_s"]
           for m in ("Base", "EP", "FFNR", "All")]
    return all(a > b for a, b in zip(lat, lat[1:]))


@pytest.mark.parametrize("sysname", ["exion4", "exion24"])
@pytest.mark.parametrize("model", ["mld", "mdm", "edge"])
def test_documented_ordering_matches_the_model(sysname, model):
    # cheap models only (about 1 s each); the heavy ones: test_documented_ordering_heavy
    doc = _doc_ordering()
    assert doc[(sysname, model)] == ("yes" if ordering_holds(sysname, model) else "no")


@pytest.mark.long
@pytest.mark.parametrize("sysname", ["exion4", "exion24"])
@pytest.mark.parametrize("model", ["make-an-audio", "sd", "dit-xl2", "videocrafter2"])
def test_documented_ordering_heavy(sysname, model):
    doc = _doc_ordering()
    assert doc[(sysname, model)] == ("yes" if ordering_holds(sysname, model) else "no")


def test_ep_per_block_falls_back_only_when_faster():
    # on a block where the EPRE costs more than EP saves, the schedule runs it without EP
    # (mode recorded per block); forcing EP must then be slower, never faster
    s4 = sy.SYSTEMS["exion4"]
    m = _tiny_model()
    auto = sy.evaluate_model(s4, m, "EP")
    forced = sy.evaluate_model(s4, m, "EP", ep_per_block=False)
    base = sy.evaluate_model(s4, m, "Base")
    assert auto["latency_s"] <= min(forced["latency_s"], base["latency_s"]) + 1e-15
    modes = {b["mode"] for b in auto["blocks"]}
    assert modes <= {"ep", "base"}
    if modes == {"base"}:
        assert auto["latency_s"] == pytest.approx(base["latency_s"])
        assert forced["latency_s"] > base["latency_s"]


def test_time_by_part_sums_to_onchip():
    r = sy.evaluate_model(sy.SYSTEMS["exion24"], _tiny_model(other_macs=10 ** 8), "All",
                          ep_per_block=False)
    p = r["time_by_part_s"]
    assert sum(p.values()) == pytest.approx(r["onchip_s"])
    assert p["epre"] > 0 and p["outside"] > 0 and p["attention"] > 0
    assert set(p) <= {"qkv", "attention", "o_proj", "cross", "fc1", "fc2", "cfse", "epre",
                      "outside"}


def test_doc_ordering_tables_complete():
    # the parser must see all 14 model x system rows (a silently empty parse would let the
    # documented-ordering tests pass vacuously: they would fail on KeyError instead)
    doc = _doc_ordering()
    assert set(doc) == {(s, m) for s in ("exion4", "exion24") for m in ws.MODELS}
    assert set(doc.values()) <= {"yes", "no"}
    assert doc[("exion4", "mld")] == "yes" and doc[("exion24", "sd")] == "yes"


def test_ordering_check_can_fail(monkeypatch):
    # mutation: a model in which EP is no faster than Base must read as "no" (strict order)
    real = sy.evaluate_model

    def ep_as_base(sysm, model, mode, **kw):
        return real(sysm, model, {"EP": "Base", "All": "FFNR"}.get(mode, mode), **kw)
    assert ordering_holds("exion4", "mld")
    monkeypatch.setattr(sy, "evaluate_model", ep_as_base)
    assert not ordering_holds("exion4", "mld")


# ---- classifier-free guidance (exion evaluate --guidance) ---------------------------------
def test_guided_doubles_work_not_weights():
    # every block runs twice its sequences, each cross-attention twice its contexts, the
    # layers outside the blocks twice their MACs, the step conditioning twice unless the
    # evaluations share it, the condition encoder once; the weights are the same
    for m in ws.MODELS.values():
        g = ws.guided(m)
        c = 1 if m.cond_shared else 2
        assert g.step_macs == 2 * (m.block_macs + m.other_macs) + c * m.cond_macs \
            + m.enc_macs, m.name
        assert g.cond_outputs == c * m.cond_outputs, m.name
        assert g.params == m.params, m.name
        assert [b.batch for b in g.blocks] == [2 * b.batch for b in m.blocks]
    # by hand: the cross-attention block of test_block_dense_macs_by_hand, guided: two
    # sequences (2 x (288 + 64 + 48)) and two contexts' K, V (2 x 120)
    bx = ws.Block("x", T=2, d=4, heads=1, ffn=8, context=(3, 5))
    gx = ws.guided(_tiny_model(blocks=(bx,))).blocks[0]
    assert gx.dense_macs == 2 * (288 + 64 + 48) + 2 * 120
    assert gx.weight_params == bx.weight_params
    with pytest.raises(ExionError, match="guidance evals = 0 is invalid"):
        ws.guided(ws.MODELS["mld"], 0)


def test_guided_system_fetches_weights_once_per_step():
    # a weight-streaming model (DiT-XL/2 on EXION-4, off-chip-bound without guidance): the
    # guided step does twice the MACs but moves the same weights, so its off-chip time
    # grows by less than 2x (only activations double) and latency by less than 2x
    s4 = sy.SYSTEMS["exion4"]
    m = ws.MODELS["dit-xl2"]
    one = sy.evaluate_model(s4, m, "Base")
    two = sy.evaluate_model(s4, ws.guided(m), "Base")
    assert two["macs"] == 2 * one["macs"]
    assert two["footprint_bytes"]["weights"] == one["footprint_bytes"]["weights"]
    assert one["offchip_s"] < two["offchip_s"] < 1.5 * one["offchip_s"]
    assert one["latency_s"] < two["latency_s"] < 2 * one["latency_s"]
    # the cross-attention context K / V projections run once per context
    sd = ws.MODELS["sd"].blocks[0]
    g1 = sy.block_gemms(CFG, sd, "base")
    g2 = sy.block_gemms(CFG, ws.guided(ws.MODELS["sd"]).blocks[0], "base")
    mk = [x for x in g1["gemms"] if x[0].name == "xk_proj"][0][0]
    mk2 = [x for x in g2["gemms"] if x[0].name == "xk_proj"][0][0]
    assert mk2.M == 2 * mk.M


def test_cli_guidance_flag(tmp_path, capsys):
    out = tmp_path / "g.json"
    assert cli.main(["evaluate", "--system", "exion4", "--model", "mld", "--guidance",
                     "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["guidance"] is True and d["models"]["mld"]["network_evals_per_step"] == 2
    assert "classifier-free guidance" in capsys.readouterr().out
    mld = ws.MODELS["mld"]
    plain = sy.evaluate_model(sy.SYSTEMS["exion4"], mld, "Base")
    # twice the work but the shared step conditioning (S steps) and the encoder (once)
    assert mld.cond_shared
    assert d["models"]["mld"]["modes"]["Base"]["macs"] == \
        2 * plain["macs"] - mld.iterations * mld.cond_macs - mld.enc_macs


@pytest.mark.parametrize("dscs,rounds", [(1, 4), (2, 2), (3, 2), (4, 1), (8, 1)])
def test_attention_heads_spread_over_cores(dscs, rounds):
    # SMALL has 4 heads (T = 64 <= HEAD_SAMPLE_T: its head GEMMs are listed per head). The 4
    # (sequence, head) units over N cores take ceil(4 / N) rounds of one head's scores +
    # P.V, whatever the listing (before the fix: one round per listed head, 4 on any N)
    r = sy.block_gemms(CFG, SMALL, "base", attn_split=1)
    assert r["attn_units"] == 4
    one_head = sum(x.cycles for x, n, kind in r["gemms"]
                   if kind == "head" and x.name.endswith("[0]"))
    assert one_head > 0
    o = sy.block_on_system(replace(sy.SYSTEMS["exion4"], dscs=dscs), r)
    assert o["parts"]["attention"] == pytest.approx(rounds * one_head)


def test_evaluate_tables_script(tmp_path, capsys):
    # bench/evaluate_tables.py prints docs/evaluate.md's tables from exion evaluate's JSON
    import importlib.util
    from pathlib import Path
    assert cli.main(["evaluate", "--system", "exion4", "--model", "mld", "--json",
                     str(tmp_path / "exion4.json")]) == 0
    spec = importlib.util.spec_from_file_location(
        "evaluate_tables", Path(__file__).resolve().parents[1] / "bench" / "evaluate_tables.py")
    et = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(et)
    capsys.readouterr()
    assert et.main(["--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    verdict = "yes" if ordering_holds("exion4", "mld") else "no"
    assert "| mld | " in out and "(ordering holds for" in out
    assert et.main(["--dir", str(tmp_path), "--only", "ordering"]) == 0
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| mld |")][0]
    assert row.split("|")[-2].strip().startswith(verdict)
    assert et.main(["--dir", str(tmp_path / "none")]) == 2


def test_system_core_from_a_config_file(tmp_path):
    # core = a config TOML: the per-core model takes it. EP on EDGE / EXION-24 pays with the
    # preset's EPRE (4 threshold bits a radix pass) and with 4x its units, and never with
    # the 1-bit radix selectors of the design before (docs/evaluate.md)
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    f = tmp_path / "big_epre.toml"
    f.write_text(f'base = "exion24"\ncore = "{repo / "configs" / "exion16_epre128.toml"}"\n')
    s = sy.get_system(str(f))
    assert s.cfg.epre_units == 128 and s.cfg.name == "exion16_epre128"
    assert s.to_dict()["core"].endswith("exion16_epre128.toml")
    m = ws.MODELS["edge"]
    ep, base = (sy.evaluate_model(s, m, x)["latency_s"] for x in ("EP", "Base"))
    assert ep < base
    s24 = sy.SYSTEMS["exion24"]
    assert sy.evaluate_model(s24, m, "EP")["latency_s"] < \
        sy.evaluate_model(s24, m, "Base")["latency_s"]
    (tmp_path / "one_bit.toml").write_text('base = "exion16"\nname = "one_bit"\n'
                                           'epre_radix_bits = 1\n')
    g1 = tmp_path / "one_bit_system.toml"
    g1.write_text('base = "exion24"\ncore = "one_bit.toml"\n')
    s1 = sy.get_system(str(g1))
    assert s1.cfg.epre_radix_bit_count == 1
    assert sy.evaluate_model(s1, m, "EP")["latency_s"] == \
        pytest.approx(sy.evaluate_model(s1, m, "Base")["latency_s"])
    # a core file beside the system file, named relatively
    (tmp_path / "core.toml").write_text('base = "exion16"\nname = "c"\nepre_units = 64\n'
                                        'epre_selectors = 64\n')
    g = tmp_path / "s.toml"
    g.write_text('base = "exion4"\ncore = "core.toml"\n')
    assert sy.get_system(str(g)).cfg.epre_units == 64


@pytest.mark.parametrize("core,msg", [
    ("nope.toml", "core = 'nope.toml': cannot read config file"),
    ("exion32", "core = 'exion32' is invalid: must be a config preset"),
    ("bad.toml", "bad.toml': config 'bad': epre_selectors = 32 is invalid"),
])
def test_system_core_errors(tmp_path, monkeypatch, core, msg):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text('base = "exion16"\nepre_units = 64\n')
    f = tmp_path / "s.toml"
    f.write_text(f'base = "exion24"\ncore = "{core}"\n')
    with pytest.raises(ExionError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        sy.get_system(str(f))


# ---- issue 19: OMEM loads are preloads (caches) or spilled partial sums (activations) -----
def test_preload_bytes_split_spill_from_preload():
    from exion.golden.dataflow import gemm_flow
    A = CFG.acc_width
    M, N, K = 64, 256, 4096          # K = 4096 needs several WMEM K-chunks on exion16
    outs = M * N * A // 8
    f = gemm_flow(CFG, M, N, K, preload_bits=A)
    assert f.k_chunks > 1
    assert f.preload_bytes == outs
    assert f.bytes["gb_omem"] - f.preload_bytes == (f.k_chunks - 1) * outs
    f0 = gemm_flow(CFG, M, N, K)     # nothing preloaded: every OMEM load re-reads a spill
    assert f0.preload_bytes == 0 and f0.bytes["gb_omem"] == (f0.k_chunks - 1) * outs
    r = gemm_flow(CFG, M, N, 256, preload_bits=A, dataflow="row-block")
    assert r.preload_bytes == r.bytes["gb_omem"] == outs


def test_spilled_partial_sums_are_activation_traffic():
    # FC2 with F = 4096 spills partial sums (K-chunks) in Base; the system charges their
    # re-reads as activation bytes (off chip when activations spill) and only preloads as
    # FFN-Reuse cache bytes
    blk = ws.Block("spill", T=64, d=256, heads=4, ffn=4096)
    r = sy.block_gemms(CFG, blk, "base", bw=64)
    fc2 = [(x, n) for x, n, _ in r["gemms"] if x.name == "fc2"][0]
    assert fc2[0].k_chunks > 1 and fc2[0].preload_bytes == 0
    o = sy.block_on_system(sy.SYSTEMS["exion4"], r)
    act = 0
    for x, n, _ in r["gemms"]:
        own = x.bytes["gb_imem"] + x.bytes["omem_gb"] + x.bytes["gb_omem"] - x.preload_bytes
        act += n * (own if x.name.split("[")[0] in sy.WEIGHT_GEMMS
                    else own + x.bytes["gb_wmem"])
    assert o["act_bytes"] == act
    assert o["cache_bytes"] == 0


# ---- EPRE levers (what-ifs of the system model; docs/evaluate.md "EPRE levers") -----------
@pytest.mark.parametrize("n_q,n_k,d,dh", [(197, 197, 512, 128), (64, 256, 1152, 72),
                                          (2, 2, 256, 64), (4096, 4096, 320, 40)])
def test_built_levers_are_the_rtl_run(n_q, n_k, d, dh):
    from exion.golden.cycles import epre_run_cycles
    assert sy.BUILT_LEVERS == ("shared", "per-block", "row")
    assert sy.PER_BLOCK_KEYS == ("predicted", "store-queue", "store-queue-q")
    assert sum(sy.epre_phases(CFG, n_q, n_k, d, dh)) == epre_run_cycles(CFG, n_q, n_k, d, dh)
    for keys in ("store-tee", "store-queue", "store-queue-q"):
        assert sum(sy.epre_phases(CFG, n_q, n_k, d, dh, ("shared", keys, "row"))) == \
            epre_run_cycles(CFG, n_q, n_k, d, dh, k_given=True)
    assert sy.SYSTEMS["exion4"].epre_levers == sy.SYSTEMS["exion24"].epre_levers \
        == sy.BUILT_LEVERS


def test_epre_phases_levers_by_hand():
    # exion16: U = 32 units of Le = 96 lanes. 100 queries, 100 keys, d = 256, d_head = 32:
    # Gq = Gk = 4 row groups; stage 1's key side = Gk * d_head * ceil(256 / 96) = 4*32*3
    # and its drain (PIPE = 4);
    # stage 2 by rows = Gq * (100 keys * 1 + PIPE 4) = 416, packed 3 keys a cycle
    # (floor(96 / 32)) = 4 * (34 + 4) = 152
    assert (CFG.epre_unit_count, CFG.epre_lane_count) == (32, 96)
    b0, a0 = sy.epre_phases(CFG, 100, 100, 256, 32)
    b1, a1 = sy.epre_phases(CFG, 100, 100, 256, 32, ("stall", "sdue", "row"))
    b2, a2 = sy.epre_phases(CFG, 100, 100, 256, 32, ("stall", "predicted", "packed"))
    assert (b0 - b1, a1) == (384 + 4, a0)
    from exion.golden.cycles import epre_run_cycles       # the EPRE's k_given run
    assert b1 + a1 == epre_run_cycles(CFG, 100, 100, 256, 32, k_given=True)
    assert (b2, a0 - a2) == (b0, 416 - 152)
    # d_head > Le / 2: one key per unit and cycle either way
    assert sy.epre_phases(CFG, 100, 100, 256, 64, ("stall", "predicted", "packed")) \
        == sy.epre_phases(CFG, 100, 100, 256, 64)


@pytest.mark.parametrize("before,after,exposed", [(10, 5, 0), (50, 30, 90), (0, 45, 40)])
def test_epre_schedule_k_by_hand(before, after, exposed):
    # SDUE: K/V_0 (20), K/V_1 (20), rest_0 (30), rest_1 (30); run h's stage 2 waits for K_h.
    # (50, 30): e_0 = max(50, 20) + 30 = 80, the SDUE (at 40) waits 40, rest_0 ends at 110;
    #           e_1 = max(80 + 50, 40) + 30 = 160, waits 50: 90
    # (0, 45):  e_0 = max(0, 20) + 45 = 65, waits 25, rest_0 ends at 95;
    #           e_1 = max(65, 40) + 45 = 110, waits 15: 40
    r = sy.epre_schedule_k(before, after, [20, 20], [30, 30])
    assert r["exposed"] == exposed
    assert r["span"] == 100 + exposed
    with pytest.raises(ValueError):
        sy.epre_schedule_k(1, 1, [1], [1, 2])


def _ep_block(levers, bw=None, blk=SMALL):
    kw = {} if bw is None else {"bw": bw}
    return sy.block_gemms(CFG, blk, "ep", k=0.05, q_th=0.15, epre_levers=levers, **kw)


@pytest.mark.parametrize("run,exposed", [(10, 0), (50, 30), (100, 130)])
def test_epre_schedule_db_by_hand(run, exposed):
    # the DSC's double-buffered order: K/V_0 (20), [store_0, EPRE_1 starts], rest_0 (30),
    # K/V_1 (20), store_1, rest_1 (30).
    # run 50:  run 0 ends at 50, the SDUE (at 20) waits 30; run 1 50..100, the SDUE reaches
    #          store_1 at 50 + 30 + 20 = 100: no wait -> 30
    # run 100: waits 80; run 1 100..200, store_1 at 150 waits 50 -> 130
    r = sy.epre_schedule_db(run, [20, 20], [30, 30])
    assert r["exposed"] == exposed and r["span"] == 100 + exposed
    with pytest.raises(ValueError):
        sy.epre_schedule_db(1, [1], [1, 2])


def test_epre_exposed_on_cores_by_hand():
    # 2 sequences x 2 heads (U = 4 units), a run of 120 + 80 cycles; K / V projection 400
    # cycles on one core (8 column tiles), Q 80, scores + P.V 10 a head; shared weights
    s = {"before": 120, "after": 80, "levers": ("shared", "predicted", "row"), "heads": 2,
         "units": 4, "kv": [(400, 8)], "q": [(80, 8)], "head": [10, 10], "fetch": 0,
         "kload": 0, "kload_packed": 0}
    # 1 core: two sequences of 2 runs, K/V 100 and rest 20 + 10 a run: wait 100 (run 0 ends
    # at 200), then run 1 from 200 to 400, the SDUE at 330: wait 70 -> 2 x 170
    assert sy.epre_exposed_on(s, 1) == 340
    # 4 cores: one run each beside K/V 400 / 4 = 100: wait 100; 8 cores: K/V 50, wait 150
    assert sy.epre_exposed_on(s, 4) == 100
    assert sy.epre_exposed_on(s, 8) == 150
    # issue 18's Wq fetch (stall) is charged by each core for its heads: 1 of 2 at 4 cores
    st = {**s, "levers": ("stall", "predicted", "row"), "fetch": 64}
    assert sy.epre_exposed_on(st, 4) - sy.epre_exposed_on({**st, "fetch": 0}, 4) == 32


def test_more_global_memory_bandwidth_with_ep_not_slower():
    # found by bench/perf_system.py --roofline: with the exposed EPRE priced from one core's
    # projections, MLD / EXION-24 in All hid its runs at 64 B/cycle and not at 128, and
    # was 1.2 % slower there; per core (epre_exposed_on) it is not
    m = ws.MODELS["mld"]
    lat = [sy.evaluate_model(replace(sy.SYSTEMS["exion24"], gm_bytes_per_cycle=b), m,
                             "All")["latency_s"] for b in (32, 64, 128, 256)]
    assert all(a >= b for a, b in zip(lat, lat[1:])), lat


@pytest.mark.long      # the whole SD model twice (about 90 s); the sweep tests above stay
def test_more_cores_not_slower_off_chip_bound_with_ep():
    # found by bench/perf_system.py --roofline: SD on EXION-4's system at 8 -> 16 DSCs in All
    # (off-chip-bound) was 0.1 % slower: at 16 cores a query split cut a block's on-chip
    # cycles for more off-chip bytes, which the iteration, bound by the sum of the blocks'
    # off-chip traffic, paid; the off-chip-first policy of the static schedule keeps it
    m = ws.MODELS["sd"]
    lat = [sy.evaluate_model(replace(sy.SYSTEMS["exion4"], dscs=n), m, "All")["latency_s"]
           for n in (8, 16)]
    assert lat[1] <= lat[0], lat


def test_epre_fetch_levers():
    # the EPRE's Wq: H * d * d_head W-bit words over a 64 B/cycle port
    fetch = math.ceil(SMALL.heads * SMALL.d * SMALL.d_head * 12 / 8 / 64)
    stall = _ep_block(("stall", "predicted", "row"))
    shared = _ep_block(("shared", "predicted", "row"))
    idle = _ep_block(("port-idle", "predicted", "row"))
    # shared (the built design): no fetch of its own, the double-buffered order; stall and
    # port-idle: issue 18's order, plus the fetch or its part the idle port cycles leave
    assert shared["epre_cycles"] < stall["epre_cycles"]
    slack = sum(n * max(0.0, x.cycles - sum(x.bytes.values()) / 64)
                for x, n, _ in stall["gemms"])
    assert stall["epre_cycles"] - idle["epre_cycles"] == \
        fetch - math.ceil(max(0.0, fetch - slack))
    assert idle["epre_cycles"] <= stall["epre_cycles"]
    # a port of 1 B/cycle: the GEMMs are memory-bound, idle port cycles hide (almost) none of
    # the fetch
    f1 = fetch * 64
    s1, i1 = (_ep_block((f, "predicted", "row"), bw=1) for f in ("stall", "port-idle"))
    assert s1["epre_cycles"] - i1["epre_cycles"] <= 0.01 * f1


def test_sdue_port_keys_charge_the_k_load():
    # exact keys through the port, every K_h row per head (T = 256, d_head 64, 64 B/cycle):
    # as EPRE_KLOAD kpack's key rows (the built gather, ``packed``): 64 * 12 / 512 -> 2 beats
    # a key, more than its one Kh word (each key written as soon as it is in), key i taken
    # at 3 + 2 i, the last at 513, its one write: 513 + 1 + 1 = 515, and the descriptor's
    # fetch (4) -> 519 cycles a head; as EPRE words (``port``): T rows x ceil(64 / 96) words x 96
    # 16-bit containers, 256 * 192 / 64 = 768 cycles a head
    blk = ws.Block("b", T=256, d=256, heads=4, ffn=512)
    free = _ep_block(("shared", "sdue", "row"), blk=blk)
    port = _ep_block(("shared", "sdue-port", "row"), blk=blk)
    assert port["epre_cycles"] - free["epre_cycles"] == 4 * 519
    assert (port["epre_sched"][0]["kload"], port["epre_sched"][0]["kload_packed"]) == (768, 519)
    assert port["shift_adds"] == free["shift_adds"]


def test_epre_gather_by_hand():
    """``epre_gather`` (SYSTEM_LEVERS): the other query chunks' K_h rows over the port as
    EPRE_KLOAD ``kpack``'s key rows (``packed``, the built default), as EPRE words
    (``port``) or not over a port at all (``multicast``); only the gather changes, and
    ``packed`` is the DSC's exact cycle model of that descriptor at the port's width."""
    # a head of T = 197 keys, d_head 128 on Le = 96 lanes (two Kh words a key), split over
    # g = 6 cores, 64 B/cycle: port 197 * 2 * 96 * 2 / 64 * 5 / 6 -> 985 cycles; packed:
        # the 197 - 33 = 164 other keys, 128 * 12 / 512 = 3 beats a key, more than its 2 Kh
    # writes, so every key is written as soon as it is in: key i taken at 4 + 3 i, the
    # last at 493, its 2 writes: 493 + 1 + 2 = 496, and the descriptor's fetch (3 + 1)
    # -> 500
    blk = ws.Block("b", T=197, d=512, heads=4, ffn=1024)
    g = sy.block_gemms(CFG, blk, "ep", k=0.05, attn_split=6,
                       epre_levers=("shared", "store-queue", "row"))
    s = g["epre_sched"][0]
    assert (s["kload"], s["kload_packed"]) == (985, 500)
    d = {"op": dcy.OPS["EPRE_KLOAD"], "count": 164, "glen": 128, "kpack": 1, "h_words": 2}
    assert dcy.descriptor_cycles(CFG, d, 512) == 500
    # one run a core (24 units on 24 cores): the gather is charged once, after the waits
    packed = sy.epre_exposed_on(s, 24)
    assert sy.epre_exposed_on(s, 24, "port") - packed == 985 - 500
    assert packed - sy.epre_exposed_on(s, 24, "multicast") == 500
    # every row through the port: packed rows, and no multicast of the core's own rows
    sp = {**s, "levers": ("shared", "sdue-port", "row"), "kload": 1182, "kload_packed": 591}
    assert sy.epre_exposed_on(sp, 24, "multicast") == sy.epre_exposed_on(sp, 24, "packed")
    with pytest.raises(ExionError, match="epre_gather = 'bus' must be one of packed"):
        sy.epre_exposed_on(s, 24, "bus")
    # a system file sets it; the system refuses other values in one line
    assert sy.SYSTEMS["exion24"].epre_gather == "packed"
    assert replace(sy.SYSTEMS["exion24"], epre_gather="multicast").epre_gather == "multicast"
    with pytest.raises(ExionError, match="epre_gather = 'bus' is invalid: must be one of "
                                         "packed, port, multicast"):
        replace(sy.SYSTEMS["exion24"], epre_gather="bus")


def test_epre_gather_on_the_system():
    """MDM on EXION-24 (heads split over 6 cores): EP's EPRE time falls from port to packed
    to multicast, and nothing else moves; Base does not depend on the gather."""
    base = sy.SYSTEMS["exion24"]
    m = ws.MODELS["mdm"]
    ep = {gt: sy.evaluate_model(replace(base, epre_gather=gt), m, "EP", ep_per_block=False)
          for gt in ("port", "packed", "multicast")}
    e = [ep[gt]["time_by_part_s"]["epre"] for gt in ("port", "packed", "multicast")]
    assert e[0] > e[1] > e[2]
    for gt in ("packed", "multicast"):
        assert ep[gt]["macs"] == ep["port"]["macs"]
        assert ep[gt]["time_by_part_s"]["attention"] == ep["port"]["time_by_part_s"]["attention"]
    b = [sy.evaluate_model(replace(base, epre_gather=gt), m, "Base")["latency_s"]
         for gt in ("port", "multicast")]
    assert b[0] == b[1]


@pytest.mark.parametrize("before,after,exposed", [(50, 30, 120), (5, 5, 0)])
def test_epre_schedule_q_by_hand(before, after, exposed):
    # the DSC's queued order: K/V_0 (20), [K/V_(h+1) (20), wait run h, rest_h (30), hand
    # over run h + 2]; run h starts when run h - 1 ends (or at its hand-over), stage 2 once
    # K/V_h is done. (50, 30): e_0 = max(0 + 50, 20) + 30 = 80, the SDUE (at 40) waits 40,
    # rest_0 ends at 110 (run 2 handed over); e_1 = max(80 + 50, 40) + 30 = 160, the SDUE
    # (K/V_2 ends at 130) waits 30, rest_1 ends at 190; run 2 starts at max(160, 110):
    # e_2 = max(210, 130) + 30 = 240, waits 50 -> 120. (5, 5): every run ends before it is
    # waited for (e_0 = 25, e_1 = 45, e_2 = max(max(45, 70) + 5, 90) + 5 = 95 < 120).
    r = sy.epre_schedule_q(before, after, [20, 20, 20], [30, 30, 30])
    assert r["exposed"] == exposed and r["span"] == 150 + exposed
    assert r["waits"] == ([40, 30, 50] if exposed else [0, 0, 0])
    with pytest.raises(ValueError):
        sy.epre_schedule_q(1, 1, [1], [1, 2])
    if exposed:     # store-queue-q: 10 cycles of dense Q beside each run, before the wait
        r = sy.epre_schedule_q(before, after, [20, 20, 20], [30, 30, 30], [10, 10, 10])
        assert r["waits"] == [30, 20, 40] and r["span"] == 180 + 90 == r["sdue"] + 90


def test_epre_schedule_sub_by_hand():
    # one head, K/V 20, 10 cycles of dense Q beside, three sub-runs (before, after, rest):
    # run 0 starts at 0, its keys are in at 20: ends max(5, 20) + 10 = 30; the SDUE reaches
    # it at 30 (no wait), rest 30..70, run 2 handed over at 70. Run 1 (handed over at 0)
    # starts at 30: max(35, 20) + 20 = 55 < 70, no wait, rest 70..110. Run 2 starts at
    # max(55, 70): 75 + 60 = 135, the SDUE waits 25, rest 135..175.
    r = sy.epre_schedule_sub([[(5, 10, 40), (5, 20, 40), (5, 60, 40)]], [20], [10])
    assert r["waits"] == [0, 0, 25] and r["span"] == 175 and r["sdue"] == 150
    with pytest.raises(ValueError):
        sy.epre_schedule_sub([[(1, 1, 1)]], [1, 2])


def test_sub_run_bounds_hide_each_run_behind_the_last():
    # sub_run_bounds' rule on a seeded mask: starts on the EPRE's unit grid, the first of
    # m x U rows, each next sub-run the longest whose run fits in the previous sub-run's
    # scores GEMM (or all that is left), no tail shorter than U
    rng = np.random.default_rng(74)
    print("sub-run bounds: seed 74")
    T, d, dh, tq = 512, 256, 64, 480
    sm = rng.random((T, T)) < 0.8
    lev = ("shared", "store-queue-q", "row")
    kw = {"dataflow": "col-group", "bw": 64}
    U = CFG.epre_unit_count
    for first in (1, 2):
        b, priced = sy.sub_run_bounds(CFG, sm, tq, first, (T, d, dh), lev, kw)
        assert b[0] == 0 and b[1] == first * U and b[-1] == tq and len(b) >= 4
        assert all(x % U == 0 for x in b[:-1]) and all(hi - lo >= U for lo, hi in
                                                      zip(b, b[1:]))
        for j in range(1, len(b) - 2):
            budget = priced[b[j - 1], b[j]].cycles
            n = b[j + 1] - b[j]
            assert sum(sy.epre_phases(CFG, n, T, d, dh, lev)) <= budget
            assert sum(sy.epre_phases(CFG, n + U, T, d, dh, lev)) > budget


def test_block_sub_runs_keep_the_rows_and_the_work():
    # sub-runs split a unit's scores by query rows: the same kept rows and softmax
    # elements as one run, each sub-run's scores GEMM on its own rows, one P.V for them all
    # (the same as one run's), the schedule's sub list summing to the head's cycles (the
    # P.V on the last); only store-queue-q keys take them
    blk = ws.Block("b", T=512, d=256, heads=4, ffn=512)
    lev = ("shared", "store-queue-q", "row")
    one = sy.block_gemms(CFG, blk, "ep", k=0.8, q_th=0.5, epre_levers=lev)
    sub = sy.block_gemms(CFG, blk, "ep", k=0.8, q_th=0.5, epre_levers=lev, sub_first=1)
    rows = sub["sub_rows"][0]
    assert one["sub_rows"] == [[512]] and len(rows) > 2 and sum(rows) == 512

    def scores(r):
        return [x for x, _, _ in r["gemms"] if x.name.startswith("scores[0")]
    assert len(scores(sub)) == len(rows)
    assert sum(x.M for x in scores(sub)) == sum(x.M for x in scores(one))
    pv = {k: [x for x, _, _ in r["gemms"] if x.name.startswith("pv[0")]
          for k, r in (("one", one), ("sub", sub))}
    assert len(pv["sub"]) == 1 and pv["sub"][0].cycles == pv["one"][0].cycles
    assert sub["cfse"]["softmax_elements"] == one["cfse"]["softmax_elements"]
    sch = sub["epre_sched"][0]
    assert [len(h) for h in sch["sub"]] == [len(rows)] * 4
    assert sch["head"][0] == sum(x[2] for x in sch["sub"][0])
    assert one["epre_sched"][0]["sub"] is None
    with pytest.raises(ExionError, match="sub-runs"):
        sy.block_gemms(CFG, blk, "ep", k=0.8, epre_levers=("shared", "store-queue", "row"),
                       sub_first=1)


def test_sub_runs_make_ep_pay_on_sd_64x64_exion24():
    # SD's 64 x 64 level on EXION-24 (8 heads in 3 chunks: one unit a core, k = 0.8): one
    # EPRE run a unit exposes most of its 4,096-key stage 2 and EP is slower than Base;
    # sub-runs hide all but the first behind the scores of the row blocks the previous one
    # completed, and EP pays (a schedule that ignored the sub-runs, or row blocks that
    # did not span sub-runs, the kept rows compacted within each, fails it: shown once by
    # hand)
    m = ws.MODELS["sd"]
    blk = m.blocks[0]
    assert blk.T == 4096
    kw = dict(bw=64, dataflow="col-group", s=m.s, k=m.k, q_th=m.q_th, context_kv=False)
    e24 = sy.SYSTEMS["exion24"]
    lev = ("shared", "store-queue-q", "row")

    def on(mode, **k):
        r = sy.block_gemms_cached(CFG, blk, mode, attn_split=3, **kw, **k)
        return r, sy.block_on_system(e24, r)
    base = on("base")[1]["cycles"]
    sub_r, sub = on("ep", epre_levers=lev, sub_first=2)
    one_r, one = on("ep", epre_levers=lev)
    assert sub["cycles"] < base < one["cycles"]
    rows = sub_r["sub_rows"][0]
    assert len(rows) > 2 and one_r["sub_rows"][0] == [sum(rows)]
    assert sub["epre_cycles"] < 0.1 * one["epre_cycles"]
    assert sub["parts"]["attention"] <= one["parts"]["attention"] * 1.001


def test_store_queue_q_computes_q_dense():
    # the DSC's q_early (built): Q projected densely beside the run (no dominant row
    # skipped), the keys' path and the scores as store-queue's
    blk = ws.Block("b", T=256, d=256, heads=4, ffn=512)
    q = {k: {x.name: x for x, _, _ in _ep_block(("shared", k, "row"), blk=blk)["gemms"]}
         for k in ("store-queue", "store-queue-q")}
    base = {x.name: x for x, _, _ in sy.block_gemms(CFG, blk, "base")["gemms"]}
    assert q["store-queue-q"]["q_proj"].cycles == base["q_proj"].cycles
    assert q["store-queue"]["q_proj"].cycles < base["q_proj"].cycles
    assert q["store-queue-q"]["scores[0]"].cycles == q["store-queue"]["scores[0]"].cycles


def test_queued_order_never_slower_than_in_order():
    # the property PER_BLOCK_KEYS relies on: on seeded random heads the queued order's
    # span is never longer than the in-order tee's (epre_schedule_komem without KOMEM)
    rng = np.random.default_rng(71)
    print("queued vs in-order: seed 71")
    for _ in range(3000):
        H = int(rng.integers(1, 9))
        b, a = rng.uniform(0, 100, 2)
        kv, rest = rng.uniform(0, 100, H), rng.uniform(0, 100, H)
        q = sy.epre_schedule_q(b, a, kv, rest)["span"]
        assert q <= sy.epre_schedule_komem(b + a, 0, kv, rest)["span"] + 1e-9


@pytest.mark.parametrize("run,exposed", [(10, 10), (50, 60)])
def test_epre_schedule_komem_by_hand(run, exposed):
    # the DSC in order with EPRE_KOMEM (5 cycles): K/V_0 (20), KOMEM_0, EPRE_0, K/V_1 (20),
    # store_0, KOMEM_1, EPRE_1, rest_0 (30), store_1, rest_1 (30).
    # run 50: run 0 25..75, the SDUE at 45 waits 30; KOMEM_1 75..80, run 1 80..130, rest_0
    #         ends at 110: waits 20 -> 30 + 20 + 2 x 5 = 60
    # run 10: run 0 ends at 35, run 1 at 60, no wait: the two KOMEMs -> 10
    r = sy.epre_schedule_komem(run, 5, [20, 20], [30, 30])
    assert r["exposed"] == exposed and r["span"] == 100 + exposed
    with pytest.raises(ValueError):
        sy.epre_schedule_komem(1, 1, [1], [1, 2])


def test_komem_keys_charge_the_dsc_and_the_gather():
    from exion.golden.dsc_cycles import komem_body, overhead
    blk = ws.Block("b", T=256, d=256, heads=4, ffn=512)
    tee = _ep_block(("shared", "store-tee", "row"), blk=blk)["epre_sched"][0]
    kom = _ep_block(("shared", "komem", "row"), blk=blk)["epre_sched"][0]
    # EPRE_KOMEM of a head's 256 keys of d_head 64 on exion16 (R = 16, Le = 96): 16 row
    # blocks of 64 reads, 1 capture and 16 writes; the tee's keys cost the DSC nothing
    assert kom["komem"] == overhead(64) + 16 * (64 + 1 + 16) == overhead(64) + komem_body(
        CFG, 256, 64) and tee["komem"] == 0
    assert sy.epre_exposed_on(kom, 1) > sy.epre_exposed_on(tee, 1)
    # one query chunk of 4 gathers the other 3 chunks' K_h rows: 3/4 of 256 x 96 16-bit
    # containers at 64 B/cycle = 576 cycles; unsplit, none
    for keys in ("sdue", "komem", "store-tee"):
        split = sy.block_gemms(CFG, blk, "ep", k=0.05, q_th=0.15, attn_split=4,
                               epre_levers=("shared", keys, "row"))["epre_sched"][0]
        assert split["kload"] == 576
        assert _ep_block(("shared", keys, "row"), blk=blk)["epre_sched"][0]["kload"] == 0


@pytest.mark.parametrize("sname,mname,want", [("exion4", "mld", "predicted"),
                                               ("exion24", "dit-xl2", "store-queue")])
def test_per_block_keys_take_the_faster_path(sname, mname, want):
    # the built default chooses per block between the DSC's two key paths: never slower in
    # EP than either everywhere; MLD on EXION-4 keeps predicted keys (1.162x against 1.016x
    # with exact keys), DiT-XL/2 on EXION-24 takes the teed exact keys (EP pays only so)
    m = ws.MODELS[mname]
    lat, keys = {}, set()
    for k in ("per-block", "predicted", "store-queue"):
        r = sy.evaluate_model(replace(sy.SYSTEMS[sname], epre_keys=k), m, "EP")
        lat[k] = r["latency_s"]
        if k == "per-block":
            keys = {b["epre_keys"] for b in r["blocks"] if b["mode"] == "ep"}
    assert lat["per-block"] <= min(lat["predicted"], lat["store-queue"]) * (1 + 1e-12)
    assert lat["predicted"] != lat["store-queue"] and keys == {want}
    with pytest.raises(ExionError, match="per-block"):
        sy.block_gemms(CFG, SMALL, "ep", k=0.05, epre_levers=("shared", "per-block", "row"))


def test_sdue_keys_compute_k_dense_and_fewer_shift_adds():
    blk = ws.Block("b", T=256, d=256, heads=4, ffn=512)
    pred = _ep_block(("stall", "predicted", "row"), blk=blk)
    exact = _ep_block(("stall", "sdue", "row"), blk=blk)
    k_rows = {nm: sum(x.M * n for x, n, _ in r["gemms"] if x.name == "k_proj")
              for nm, r in (("pred", pred), ("exact", exact))}
    assert k_rows["exact"] == 256                    # every key's K row, for the EPRE
    # stage 1 of the query side only: T d (H dh) + H T T dh products of lod_terms^2 terms
    T, d, H, dh = 256, 256, 4, 64
    assert exact["shift_adds"] == CFG.lod_terms ** 2 * (T * d * H * dh + H * T * T * dh)
    assert pred["shift_adds"] == CFG.lod_terms ** 2 * (T * d * 2 * H * dh + H * T * T * dh)


def test_levers_from_a_system_file(tmp_path, capsys):
    p = tmp_path / "lev.toml"
    p.write_text('base = "exion24"\nepre_fetch = "stall"\nepre_keys = "sdue"\n')
    s = sy.get_system(str(p))
    assert s.epre_levers == ("stall", "sdue", "row")
    out = tmp_path / "o.json"
    assert cli.main(["evaluate", "--system", str(p), "--model", "mld", "--json",
                     str(out)]) == 0
    sysd = json.loads(out.read_text())["system"]
    assert (sysd["epre_fetch"], sysd["epre_keys"], sysd["epre_stage2"]) \
        == ("stall", "sdue", "row")
    # EP's EPRE charge under the levers differs from the built design's on the same model
    built = sy.evaluate_model(sy.SYSTEMS["exion24"], ws.MODELS["mld"], "EP",
                              ep_per_block=False)
    lev = sy.evaluate_model(s, ws.MODELS["mld"], "EP", ep_per_block=False)
    # (MLD's 2-token blocks: its own Wq fetch costs more than exact keys save)
    assert lev["time_by_part_s"]["epre"] > built["time_by_part_s"]["epre"]


@pytest.mark.parametrize("text,msg", [
    ('epre_fetch = "prefetch"\n', "epre_fetch = 'prefetch' is invalid: must be one of "
                                  "shared, stall, port-idle"),
    ('epre_keys = 1\n', "epre_keys = 1 is invalid: must be a string"),
    ('epre_stage2 = "rows"\n', "epre_stage2 = 'rows' is invalid: must be one of row, packed"),
])
def test_lever_errors(tmp_path, text, msg):
    p = tmp_path / "bad.toml"
    p.write_text('base = "exion4"\n' + text)
    with pytest.raises(ExionError) as e:
        sy.get_system(str(p))
    assert msg in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ExionError, match="epre_levers"):
        sy.block_gemms(CFG, SMALL, "ep", k=0.05, epre_levers=("stall", "sdue"))


def test_evaluate_disk_cache(tmp_path, monkeypatch, capsys):
    """``exion evaluate`` keeps the per-core figures on disk: a second run (another core
    count) computes no block and writes the figures a fresh run writes; a damaged cache is
    a miss the run replaces; ``--no-cache`` and another model hash compute afresh."""
    from exion.gen.cli import evaluate as ev
    monkeypatch.setenv("EXION_BUILD", str(tmp_path / "build"))
    saved = {k: dict(t) for k, t in sy.per_core_caches().items()}

    def clear():
        for t in sy.per_core_caches().values():
            t.clear()

    def run(name, *extra):
        out = tmp_path / f"{name}.json"
        assert cli.main(["evaluate", "--model", "mld", "--json", str(out), *extra]) == 0
        return json.loads(out.read_text())

    toml = tmp_path / "six.toml"
    toml.write_text('base = "exion4"\ndscs = 6\n')
    try:
        clear()
        fresh = run("fresh", "--system", str(toml))
        assert ev.cache_path().is_file()
        clear()
        first = run("four", "--system", "exion4")
        real = sy.block_gemms

        def computed(*a, **k):
            raise AssertionError("a block was computed")
        monkeypatch.setattr(sy, "block_gemms", computed)
        clear()
        assert run("cached", "--system", str(toml)) == fresh
        assert run("cached4", "--system", "exion4") == first
        clear()
        with pytest.raises(AssertionError, match="computed"):
            run("nocache", "--system", "exion4", "--no-cache")
        clear()
        monkeypatch.setattr(ev, "model_hash", lambda: "0" * 16)
        with pytest.raises(AssertionError, match="computed"):
            run("other", "--system", "exion4")
        monkeypatch.undo()
        monkeypatch.setenv("EXION_BUILD", str(tmp_path / "build"))
        monkeypatch.setattr(sy, "block_gemms", real)
        ev.cache_path().write_bytes(b"not a pickle")
        clear()
        assert run("damaged", "--system", "exion4") == first
        assert "ignoring the unreadable cache" in capsys.readouterr().err
        clear()
        monkeypatch.setattr(sy, "block_gemms", computed)
        assert run("rewritten", "--system", "exion4") == first
    finally:
        clear()
        for k, t in sy.per_core_caches().items():
            t.update(saved[k])


def test_evaluate_in_processes_gives_the_same_figures():
    """``exion evaluate --jobs 2``: the models in two forked processes give the figures one
    process gives, in the order asked, and their per-core figures reach this process."""
    from exion.gen.cli import evaluate as ev
    saved = {k: dict(t) for k, t in sy.per_core_caches().items()}
    models = [ws.get_model("edge"), ws.get_model("mld")]
    try:
        for t in sy.per_core_caches().values():
            t.clear()
        two = ev.evaluate("exion4", models, jobs=2)
        assert list(two["models"]) == ["edge", "mld"]
        assert len(sy.per_core_caches()["block"]) > 0
        for t in sy.per_core_caches().values():
            t.clear()
        one = ev.evaluate("exion4", models, jobs=1)
        assert json.dumps(two, sort_keys=True) == json.dumps(one, sort_keys=True)
    finally:
        for k, t in sy.per_core_caches().items():
            t.clear()
            t.update(saved[k])
