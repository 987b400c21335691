"""bench/perf_workload.py's break-even section (issue 8): the EPRE re-provisioning projection,
the EPRE/SDUE overlap model and the speedup bookkeeping. Fast (no tracing, no DiT-XL/2 block)."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from exion import PRESETS
from exion.golden.cycles import epre_cycles, epre_run_cycles, transformer_block

_PATH = Path(__file__).resolve().parents[1] / "bench" / "perf_workload.py"


@pytest.fixture(scope="module")
def bw():
    spec = importlib.util.spec_from_file_location("perf_workload", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# DiT-XL/2 head, the digits DiT, and shapes without convenient multiples.
SHAPES = [(256, 1152, 16), (16, 64, 4), (37, 3 * 16 + 5, 3), (1, 8, 1)]


@pytest.mark.parametrize("T,d,heads", SHAPES)
def test_built_epre_is_rtl_exact(bw, preset, T, d, heads):
    """U = C, one shared selector: the projection is golden.cycles.epre_cycles exactly."""
    dh = max(1, d // heads)
    p = bw.epre_projection(preset, T, d, heads, dh)
    ref = epre_cycles(preset, T, d, heads, dh)
    assert {k: p[k] for k in ref} == ref
    assert p["run"] == epre_run_cycles(preset, T, T, d, dh)
    assert p == bw.epre_projection(preset, T, d, heads, dh, units=preset.cols)


def test_dit_xl2_head_matches_docs(bw):
    cfg = PRESETS["exion16"]
    p = bw.epre_projection(cfg, 256, 1152, 16, 72)
    assert p["run"] == 318_793 and p["select"] == 16 * 132_352
    assert bw.epre_projection(cfg, 256, 1152, 16, 72, units=64)["run"] == 178_969
    assert bw.epre_projection(cfg, 256, 1152, 16, 72, units=256)["run"] == 144_013


@pytest.mark.parametrize("units", [1, 4, 16, 32, 64, 128, 256])
def test_per_unit_selectors_divide_selection(bw, units):
    cfg = PRESETS["exion16"]
    shared = bw.epre_projection(cfg, 256, 1152, 16, 72, units=units)
    per = bw.epre_projection(cfg, 256, 1152, 16, 72, units=units, per_unit_selectors=True)
    assert per["select"] * units == shared["select"]          # U divides T = 256
    assert per["stage1"] == shared["stage1"] and per["stage2"] == shared["stage2"]
    assert shared["total"] - per["total"] == shared["select"] - per["select"]
    # U not dividing N_q: ceil(N_q / U) rows per selector
    p = bw.epre_projection(cfg, 37, 64, 1, 16, units=5, per_unit_selectors=True)
    assert p["select"] == 8 * (2 * 37 + 5)


@pytest.mark.parametrize("sel", [False, True])
def test_projection_monotonic_in_units(bw, preset, sel):
    for T, d, heads in SHAPES:
        dh = max(1, d // heads)
        tot = [bw.epre_projection(preset, T, d, heads, dh, units=u, per_unit_selectors=sel)
               ["total"] for u in range(1, 300, 7)]
        assert all(a >= b for a, b in zip(tot, tot[1:]))
        assert tot[0] > tot[-1] or T == 1


def test_overlap_exposed(bw):
    # no overlap: every run is exposed
    assert bw.epre_exposed(100, [50] * 4, False) == 400
    # EPRE run shorter than the SDUE's head work: only the first run is exposed
    assert bw.epre_exposed(100, [150] * 4, True) == 100
    # no SDUE work to hide behind: all exposed
    assert bw.epre_exposed(100, [0] * 4, True) == 400
    # longer runs: first run + (H-1) (E - S)
    assert bw.epre_exposed(100, [30] * 4, True) == 100 + 3 * 70
    # span = EPRE chain + the last head's SDUE work
    assert bw.overlap_span(100, [30] * 4) == 4 * 100 + 30
    rng = np.random.default_rng(0)
    for _ in range(50):
        e = int(rng.integers(1, 1000))
        s = rng.integers(0, 2000, int(rng.integers(1, 20))).astype(float).tolist()
        x = bw.epre_exposed(e, s, True)
        assert e <= x <= bw.epre_exposed(e, s, False)


def test_break_even_bookkeeping(bw):
    """Rows of the as-built EPRE reproduce transformer_block's EP-mode compute cycles."""
    cfg = PRESETS["exion16"]
    T, d, heads, ffn = 32, 64, 2, 128
    rng = np.random.default_rng(3)
    sm = rng.random((heads, T, T)) < 0.1
    sm[:, np.arange(T), rng.integers(0, T, T)] = True
    dom = rng.random((heads, T)) < 0.2
    sk, sv = ~(sm & ~dom[..., None]).any(axis=1), ~sm.any(axis=1)
    pt = {"k": 0.1, "dominant": 0.2,
          **bw._ep_point(cfg, T, d, heads, ffn, 4, sm, dom, sk, sv)}
    r = transformer_block(cfg, T, d, heads, ffn=ffn, score_mask=sm, skip_q=dom, skip_k=sk,
                          skip_v=sv, merge_ways=4)["modes"]
    assert pt["ep_saving"] == r["Base"]["sdue_cycles"] - r["EP"]["sdue_cycles"] > 0
    assert math.isclose(sum(pt["head_sdue"]), r["EP"]["sdue_cycles"] - sum(
        g["sdue_cycles"] for g in r["EP"]["gemms"] if g["name"] in ("o_proj", "fc1", "fc2")))
    shape = {"T": T, "d": d, "heads": heads}
    rows = bw.break_even(cfg, shape, [pt], pt["base_sdue"], ffnr_saving=0)
    by = {x["variant"]: x for x in rows}
    built = by[f"U={cfg.cols}"]
    assert built["basis"].startswith("RTL-exact")
    assert built["epre_exposed"] == r["EP"]["epre_cycles"]
    assert math.isclose(built["speedup_ep"], r["EP"]["speedup"])
    assert math.isclose(built["speedup_all"], built["speedup_ep"])     # no FFNR saving
    free = by["EPRE free"]
    assert free["pays_off"] and math.isclose(
        free["speedup_ep"], pt["base_sdue"] / (pt["base_sdue"] - pt["ep_saving"]))
    for x in rows:
        assert x["pays_off"] == (x["speedup_ep"] > 1.0)
        assert (x["basis"] == "projection") == (x["per_unit_selectors"] or x["overlap"])
