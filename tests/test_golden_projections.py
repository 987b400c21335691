"""golden/projections.py, the model behind bench/perf_workload.py's break-even section
(issue 8): the EPRE re-provisioning projection, the EPRE/SDUE overlap model, the synthesized
EP masks of the k / dominant-row sweep and the speedup bookkeeping. Fast (no tracing, no
DiT-XL/2 block)."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from exion import PRESETS
from exion.golden import projections as pj
from exion.golden.cycles import epre_cycles, epre_run_cycles, transformer_block


# DiT-XL/2 head, the digits DiT, and shapes without convenient multiples.
SHAPES = [(256, 1152, 16), (16, 64, 4), (37, 3 * 16 + 5, 3), (1, 8, 1)]


@pytest.mark.parametrize("T,d,heads", SHAPES)
def test_built_epre_is_rtl_exact(preset, T, d, heads):
    """The config's provisioning: the projection is golden.cycles.epre_cycles exactly."""
    dh = max(1, d // heads)
    p = pj.epre_projection(preset, T, d, heads, dh)
    ref = epre_cycles(preset, T, d, heads, dh)
    assert {k: p[k] for k in ref} == ref
    assert p["run"] == epre_run_cycles(preset, T, T, d, dh)


def test_dit_xl2_head_matches_docs():
    """docs/epre.md's DiT-XL/2 head figures: the issue-14 EPRE (16 units x 16 lanes, one
    selector), 32 x 96 with 32 streamed insertion selectors, 32 radix selectors of P = 32
    ports deciding 1 bit a pass (issue 18) and the exion16 default, 4 bits a pass."""
    e16 = PRESETS["exion16"]
    old = e16.replace(epre_units=16, epre_lanes=16, epre_selectors=1,
                      epre_selector_kind="insertion")
    p = pj.epre_projection(old, 256, 1152, 16, 72)
    assert p["run"] == 318_793 and p["select"] == 16 * 132_352
    ins = e16.replace(epre_selector_kind="insertion")
    assert pj.epre_projection(ins, 256, 1152, 16, 72)["run"] == 18_233
    assert epre_run_cycles(ins, 256, 256, 1152, 72) == (
        (8 + 8) * 72 * 12 + 8 + 8 * (256 + 4) + 8 * (256 + 2) + 256 + 1)
    assert (e16.epre_selector_kind, e16.epre_radix_port_count) == ("radix", 32)
    one = e16.replace(epre_radix_bits=1)
    assert pj.epre_projection(one, 256, 1152, 16, 72)["run"] == 19_137
    assert epre_run_cycles(one, 256, 256, 1152, 72) == (
        (8 + 8) * 72 * 12 + 8 + 8 * (256 + 4) + 8 * (36 * (8 + 2) + 8 + 3) + 256 + 1)
    assert e16.epre_radix_bit_count == 4
    assert pj.epre_projection(e16, 256, 1152, 16, 72)["run"] == 16_977
    assert epre_run_cycles(e16, 256, 256, 1152, 72) == (
        (8 + 8) * 72 * 12 + 8 + 8 * (256 + 4) + 8 * (9 * (8 + 2) + 8 + 3) + 256 + 1)


@pytest.mark.parametrize("units", [4, 16, 32, 64, 128, 256])
def test_per_unit_selectors_cut_selection(units):
    cfg = PRESETS["exion16"]
    shared = pj.epre_projection(cfg, 256, 1152, 16, 72, units=units)
    per = pj.epre_projection(cfg, 256, 1152, 16, 72, units=units, per_unit_selectors=True)
    g = math.ceil(256 / units)
    assert shared["select"] == 16 * 256 * (2 * 256 + 5)
    assert per["select"] == 16 * (g * (256 + 2) + 256)        # streamed insertion
    assert per["stage1"] == shared["stage1"] and per["stage2"] == shared["stage2"]
    assert shared["total"] - per["total"] == shared["select"] - per["select"]


@pytest.mark.parametrize("sel", [False, True])
def test_projection_monotonic_in_units(preset, sel):
    for T, d, heads in SHAPES:
        dh = max(1, d // heads)
        tot = [pj.epre_projection(preset, T, d, heads, dh, units=u, per_unit_selectors=sel)
               ["total"] for u in range(1 if sel else 2, 300, 7)]
        assert all(a >= b for a, b in zip(tot, tot[1:]))
        assert tot[0] > tot[-1] or T == 1


def test_epre_schedule():
    """The overlapped schedule: head h's scores wait for EPRE run h after its K/V columns."""
    # EPRE faster than the K/V columns: nothing exposed
    r = pj.epre_schedule(100, [150] * 4, [50] * 4)
    assert r["exposed"] == 0 and r["span"] == r["sdue"] == 800
    # first run longer than the K/V columns, later runs hidden by the heads' rest
    r = pj.epre_schedule(180, [150] * 4, [50] * 4)
    assert r["waits"] == [30, 0, 0, 0]        # t: 150 -> wait 30 -> 230; 380 vs 360 ...
    # EPRE slower than a whole head: the wait grows by (run - head) per head
    r = pj.epre_schedule(300, [150] * 3, [50] * 3)
    assert r["waits"] == [150, 100, 100] and r["span"] == 900 + 50
    with pytest.raises(ValueError, match="one entry per head"):
        pj.epre_schedule(1, [1, 2], [1])
    kv, rest = pj.schedule_from_gemms({"q_proj": 40, "k_proj": 20, "v_proj": 20,
                                       "scores[0]": 3, "pv[0]": 4, "scores[1]": 5}, 2)
    assert kv == [20.0, 20.0] and rest == [27.0, 25.0]


def test_overlap_exposed():
    # no overlap: every run is exposed
    assert pj.epre_exposed(100, [50] * 4, False) == 400
    # EPRE run shorter than the SDUE's head work: only the first run is exposed
    assert pj.epre_exposed(100, [150] * 4, True) == 100
    # no SDUE work to hide behind: all exposed
    assert pj.epre_exposed(100, [0] * 4, True) == 400
    # longer runs: first run + (H-1) (E - S)
    assert pj.epre_exposed(100, [30] * 4, True) == 100 + 3 * 70
    # span = EPRE chain + the last head's SDUE work
    assert pj.overlap_span(100, [30] * 4) == 4 * 100 + 30
    rng = np.random.default_rng(0)
    for _ in range(50):
        e = int(rng.integers(1, 1000))
        s = rng.integers(0, 2000, int(rng.integers(1, 20))).astype(float).tolist()
        x = pj.epre_exposed(e, s, True)
        assert e <= x <= pj.epre_exposed(e, s, False)


def test_break_even_bookkeeping():
    """Rows of the as-built EPRE reproduce transformer_block's EP-mode compute cycles."""
    cfg = PRESETS["exion16"]
    T, d, heads, ffn = 32, 64, 2, 128
    rng = np.random.default_rng(3)
    sm = rng.random((heads, T, T)) < 0.1
    sm[:, np.arange(T), rng.integers(0, T, T)] = True
    dom = rng.random((heads, T)) < 0.2
    sk, sv = ~(sm & ~dom[..., None]).any(axis=1), ~sm.any(axis=1)
    pt = {"k": 0.1, "dominant": 0.2,
          **pj.ep_point(cfg, T, d, heads, ffn, 4, sm, dom, sk, sv)}
    r = transformer_block(cfg, T, d, heads, ffn=ffn, score_mask=sm, skip_q=dom, skip_k=sk,
                          skip_v=sv, merge_ways=4)["modes"]
    assert pt["ep_saving"] == r["Base"]["sdue_cycles"] - r["EP"]["sdue_cycles"] > 0
    assert math.isclose(sum(pt["head_sdue"]), r["EP"]["sdue_cycles"] - sum(
        g["sdue_cycles"] for g in r["EP"]["gemms"] if g["name"] in ("o_proj", "fc1", "fc2")))
    shape = {"T": T, "d": d, "heads": heads}
    rows = pj.break_even(cfg, shape, [pt], pt["base_sdue"], ffnr_saving=0)
    by = {x["variant"]: x for x in rows}
    built = by["config"]
    assert built["basis"].startswith("RTL-exact")
    assert built["epre_exposed"] == r["EP"]["epre_cycles"]
    assert math.isclose(built["speedup_ep"], r["EP"]["speedup"])
    assert math.isclose(built["speedup_all"], built["speedup_ep"])     # no FFNR saving
    free = by["EPRE free"]
    assert free["pays_off"] and math.isclose(
        free["speedup_ep"], pt["base_sdue"] / (pt["base_sdue"] - pt["ep_saving"]))
    for x in rows:
        assert x["pays_off"] == (x["speedup_ep"] > 1.0)
        assert ("model" in x["basis"]) == x["overlap"]


# -- the synthesized masks of the k / dominant-row sweep ----------------------------------
@pytest.mark.parametrize("k,f_dom", [(0.05, 0.0), (0.2, 0.25), (0.5, 0.5), (1.0, 1.0)])
def test_synth_ep_follows_the_predict_rules(k, f_dom):
    """ceil(kT) keys per normal row, top-1 per dominant row, and the skipped K/V rows as
    golden.predict defines them (K: no non-dominant query selects it; V: no query does)."""
    rng = np.random.default_rng(5)
    heads, T = 3, 40
    kf = rng.random(17) + 0.1
    sm, dom, sk, sv = pj.synth_ep(rng, kf, heads, T, k, f_dom)
    assert sm.shape == (heads, T, T) and dom.shape == sk.shape == sv.shape == (heads, T)
    per_row = sm.sum(axis=2)
    assert (per_row[~dom] == math.ceil(k * T)).all()
    assert (per_row[dom] == 1).all()
    np.testing.assert_array_equal(sk, ~(sm & ~dom[..., None]).any(axis=1))
    np.testing.assert_array_equal(sv, ~sm.any(axis=1))
    if f_dom in (0.0, 1.0):
        assert dom.all() == (f_dom == 1.0) and dom.any() == (f_dom == 1.0)


def test_ep_sweep_points_are_seeded_and_cover_the_grid():
    cfg = PRESETS["toy"]
    shape = {"T": 16, "d": 24, "heads": 2, "ffn": 48}
    kf = np.linspace(0.5, 1.5, 9)
    pts = pj.ep_sweep(cfg, shape, kf, 2, ks=(0.1, 0.5), doms=(0.0, 0.5), seed=3)
    assert [(p["k"], p["dominant"]) for p in pts] == [(0.1, 0.0), (0.5, 0.0), (0.1, 0.5),
                                                      (0.5, 0.5)]
    again = pj.ep_sweep(cfg, shape, kf, 2, ks=(0.1, 0.5), doms=(0.0, 0.5), seed=3)
    assert [p["ep_saving"] for p in pts] == [p["ep_saving"] for p in again]
    for p in pts:
        assert p["ep_saving"] == p["base_sdue"] - p["ep_sdue"] >= 0
        assert len(p["head_sdue"]) == shape["heads"] and p["rows"] == 2 * 16
        assert sum(p["saving_by_gemm"].values()) == p["ep_saving"]
    # a sparser top-k saves at least as much (same seed per point, more keys dropped)
    assert pts[0]["ep_saving"] >= pts[1]["ep_saving"]


def test_provisioning_variants_are_labeled():
    cfg = PRESETS["exion16"]
    vs = pj.provisioning_variants(cfg)
    names = [v["name"] for v in vs]
    assert len(names) == len(set(names)) == 4 * len(pj.BE_UNITS) + 3
    exact = [v for v in vs if v["basis"].startswith("RTL-exact")]
    assert [v["name"] for v in exact] == ["config", "config, overlap"]
    assert vs[-1]["name"] == "EPRE free" and vs[-1]["free"]


def test_head_sdue_splits_the_projections_evenly():
    gemms = [{"name": n, "sdue_cycles": c} for n, c in
             [("q_proj", 30), ("k_proj", 30), ("v_proj", 60), ("scores[0]", 5),
              ("scores[1]", 7), ("pv[0]", 1), ("pv[1]", 2), ("o_proj", 99)]]
    assert pj.head_sdue(gemms, 2) == [60 + 5 + 1, 60 + 7 + 2]


def test_bench_uses_the_golden_model():
    """The bench script calls golden.projections; none of the model is defined there."""
    path = Path(__file__).resolve().parents[1] / "bench" / "perf_workload.py"
    tree = ast.parse(path.read_text())
    defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert not defined & set(pj.__all__)
    assert "pj.break_even(" in path.read_text()


# -- the overlapped EPRE in golden.block (issue 18) ----------------------------------------
def test_block_flow_charges_exposed_epre():
    """epre_overlap: the block pays the schedule's exposed cycles plus the EPRE's Wq fetch,
    not every EPRE cycle; the saving is dense minus EP cycles of the attention GEMMs."""
    from exion.golden import block as bl
    cfg = PRESETS["exion16"]
    shp = bl.shape("digits")
    ep = bl.synth_ep(np.random.default_rng(4), shp["heads"], shp["T"], 0.25, q_th=0.5)
    ser = bl.block_flow(cfg, shp, "ep", ep=ep)
    ov = bl.block_flow(cfg, shp, "ep", ep=ep, epre_overlap=True)
    base = bl.block_flow(cfg, shp, "base")
    assert ser["epre_cycles"] == epre_cycles(cfg, shp["T"], shp["d"], shp["heads"],
                                             shp["d_head"])["total"] == ov["epre_busy_cycles"]
    assert ov["epre_cycles"] == ov["epre_exposed_cycles"] + ov["epre_fetch_cycles"]
    assert ov["epre_bytes"] == shp["heads"] * shp["d"] * shp["d_head"] * cfg.width / 8
    assert ov["cycles"] - ov["epre_cycles"] == ser["cycles"] - ser["epre_cycles"]
    att = ("q_proj", "k_proj", "v_proj", "scores", "pv")
    cyc = {m: sum(g["cycles"] for g in r["gemms"] if g["name"].split("[")[0] in att)
           for m, r in (("base", base), ("ep", ov))}
    assert ov["ep_saved_cycles"] == cyc["base"] - cyc["ep"]
    kv, rest = pj.schedule_from_gemms({g["name"]: g["cycles"] for g in ov["gemms"]},
                                      shp["heads"])
    want = pj.epre_schedule(ov["epre_run_cycles"], kv, rest)["exposed"]
    assert ov["epre_exposed_cycles"] == math.ceil(want)


@pytest.mark.long
def test_dit_xl2_mode_ordering_cli(cli_run, tmp_path):
    """Issue 18's check: `exion golden block --shape dit-xl2 --k 0.05 --q-th 0.15`: EP faster
    than Base and All faster than FFNR; ep / all JSON carries the EPRE fields."""
    import json
    cyc = {}
    for mode in ("base", "ep", "ffnr", "all"):
        out = tmp_path / f"{mode}.json"
        code, _, err = cli_run("golden", "block", "--shape", "dit-xl2", "--mode", mode,
                               "--k", "0.05", "--q-th", "0.15", "--json", str(out))
        assert code == 0, err
        r = json.loads(out.read_text())
        cyc[mode] = r["cycles"]
        if mode in ("ep", "all"):
            assert r["epre_exposed_cycles"] <= 0.10 * r["ep_saved_cycles"]
            assert r["ep_saved_cycles"] > 0
    assert cyc["ep"] < cyc["base"] and cyc["all"] < cyc["ffnr"]
