"""The CAU's emitted Verilog, Verilated, under cocotb against golden ConMerge (bit-exact).

Builds in the default suite: the generated defaults (P = 8, default merge lanes) for toy
(m = 2, 2 lanes), exion16 (m = 4, 3 lanes), toy m = 1 (1 lane), and variants toy with 1 lane
and P = 3, toy with 3 lanes and P = 5 (P not dividing N). ``long``: exion16 m = 2 (2 lanes),
exion16 with 2 lanes and P = 7, the old single-lane exion16 CAU, more merge ways, the
exion16 m = 16 lint and the full-size cycle measurement. Each build runs many masks in one simulator invocation
(``rtl_cau``).
"""

import dataclasses

import numpy as np
from mask_cases import adversarial_masks
import pytest

from exion import PRESETS
from exion.golden import cycles as cy
from exion.golden.conmerge import cau, conmerge
from exion.sim.cau_rtl import CauCase, rtl_cau

pytestmark = pytest.mark.rtl

TOY = PRESETS["toy"]
E16 = PRESETS["exion16"]
SPARSITIES = (0.0, 0.5, 0.8, 0.9, 0.95, 0.97, 0.99)


def cases_for(cfg, seed):
    """Directed masks (partial last row block, N % C != 0), then seeded random sparsities,
    each random mask also with sort = none."""
    rng = np.random.default_rng(seed)
    M, N = 2 * cfg.rows + 3, 3 * cfg.cols + 2
    cases = [CauCase(m, "popcount", name) for name, m in adversarial_masks(cfg, M, N).items()]
    for s in SPARSITIES:
        mask = rng.random((int(rng.integers(cfg.rows, 3 * cfg.rows + 1)),
                           int(rng.integers(cfg.cols, 6 * cfg.cols + 1)))) >= s
        cases += [CauCase(mask, "popcount", f"random{s:.2f}"),
                  CauCase(mask, "none", f"random{s:.2f}-none")]
    return cases


def check(cfg, cases, runs, seed):
    """Every emitted pass against ``golden.conmerge.cau`` (the CAU's golden function)."""
    assert len(runs) == len(cases)
    for case, run in zip(cases, runs):
        want = cau(cfg, case.mask, sort=case.sort, merge_ways=case.ways)
        msg = f"{cfg.name} m={case.ways or cfg.merge_ways} case {case.name} seed {seed}"
        np.testing.assert_array_equal(run.row_block, want.row_block, err_msg=msg)
        np.testing.assert_array_equal(run.members, want.members, err_msg=msg)
        np.testing.assert_array_equal(run.select, want.select, err_msg=msg)
        np.testing.assert_array_equal(run.last, want.last, err_msg=msg)


def _run(cfg, seed, cau_kw=None, ways=None):
    cases = cases_for(cfg, seed)
    if ways is not None:     # the run-time merge ways of every case (the same build)
        cases = [dataclasses.replace(c, ways=ways) for c in cases]
    kw = cau_kw or {}
    P = kw.get("cols_per_cycle", cy.CAU_COLS_PER_CYCLE)
    lanes = kw.get("merge_lanes")
    # Back-pressure and input gaps on one half, a free-running stream on the other; the
    # free-running half is also timed against the cycle model.
    half = len(cases) // 2
    runs_bp, _ = rtl_cau(cfg, cases[:half], seed=seed, gaps=0.3, backpressure=0.5,
                         run_name="cau-bp", cau_kw=cau_kw)
    runs_free, _ = rtl_cau(cfg, cases[half:], seed=seed, run_name="cau-free", cau_kw=cau_kw)
    check(cfg, cases, runs_bp + runs_free, seed)
    for case, run in zip(cases[half:], runs_free):
        sch = cy.cau_schedule(cfg, case.mask, merge_ways=case.ways, sort=case.sort,
                              cols_per_cycle=P, merge_lanes=lanes)
        np.testing.assert_array_equal(run.pass_cycles[run.last], sch["done"][sch["done"] >= 0])
        assert run.cycles == sch["total"], case.name
    # the comparison can fail: a wrong golden (merge window 1) differs on some case
    differs = 0
    for case, run in zip(cases, runs_bp + runs_free):
        wrong = conmerge(cfg, case.mask, sort=case.sort, window=1, merge_ways=case.ways)
        differs += (run.members.shape != wrong.members.shape
                    or not np.array_equal(run.members, wrong.members))
    assert (ways or cfg.merge_ways) == 1 or differs > 0


# exion16 with m = 2, the exion16 lane variant and the exion16 m = 16 lint are further
# exion16 builds (half a minute each): `long`, to keep the default suite in its budget.
@pytest.mark.parametrize("cfg", [TOY, E16,
                                 pytest.param(TOY.replace(merge_ways=1), marks=pytest.mark.long),
                                 pytest.param(E16.replace(merge_ways=2),
                                              marks=pytest.mark.long)],
                         ids=["toy", "exion16", "toy-m1", "exion16-m2"])
def test_cau_rtl_matches_golden(cfg):
    _run(cfg, seed=20250 + cfg.merge_ways)


@pytest.mark.parametrize("cfg,ways", [(TOY, 1), (E16, 2), (E16, 3)],
                         ids=["toy-m1of2", "exion16-m2of4", "exion16-m3of4"])
def test_cau_rtl_runtime_ways(cfg, ways):
    """The default build of the config (``cfg.merge_ways`` member lanes) running masks whose
    beats carry a smaller run-time m: bit-exact with golden ``cau(..., merge_ways=m)``,
    cycle-exact with ``cau_schedule(..., merge_ways=m)``; no other hardware is built."""
    _run(cfg, seed=40000 + ways, ways=ways)


@pytest.mark.parametrize("cfg,kw", [(TOY, {"merge_lanes": 1, "cols_per_cycle": 3}),
                                    pytest.param(TOY, {"merge_lanes": 3, "cols_per_cycle": 5},
                                                 marks=pytest.mark.long),
                                    pytest.param(E16, {"merge_lanes": 2, "cols_per_cycle": 7},
                                                 marks=pytest.mark.long)],
                         ids=["toy-L1-P3", "toy-L3-P5", "exion16-L2-P7"])
def test_cau_rtl_variants(cfg, kw):
    """CAUs generated with other merge lanes / beat widths than the defaults."""
    _run(cfg, seed=31000 + kw["merge_lanes"], cau_kw=kw)


@pytest.mark.long
@pytest.mark.parametrize("cfg", [E16.replace(merge_ways=1), TOY.replace(merge_ways=4),
                                 E16.replace(merge_ways=16)],
                         ids=["exion16-m1", "toy-m4", "exion16-m16"])
def test_cau_rtl_matches_golden_long(cfg):
    _run(cfg, seed=777)


@pytest.mark.long
def test_cau_rtl_single_lane_exion16():
    """The original CAU (one column per cycle in B and C, P = 4) is still generated right."""
    _run(E16, seed=778, cau_kw={"merge_lanes": 1, "cols_per_cycle": 4})


def measure_exion16(sparsities=(0.80, 0.95, 0.97), blocks=16, kls=(72, 32), seed=1,
                    cau_kw=None):
    """CAU vs SDUE cycles per row block on exion16 for (16 * blocks) x 4608 random masks.

    SDUE per block = passes x max(K/L, C) for each K/L in ``kls`` (72: K = 1152; 32 = 2C, the
    SPEC 4.3 bound).
    """
    cfg = E16
    kw = cau_kw or {}
    P = kw.get("cols_per_cycle", cy.CAU_COLS_PER_CYCLE)
    lanes = kw.get("merge_lanes")
    rng = np.random.default_rng(seed)
    masks = [rng.random((cfg.rows * blocks, 4608)) >= s for s in sparsities]
    runs, report = rtl_cau(cfg, [CauCase(m) for m in masks], seed=seed, run_name="measure",
                           cau_kw=cau_kw)
    rows = []
    for s, mask, run in zip(sparsities, masks, runs):
        plan = conmerge(cfg, mask)
        sch = cy.cau_schedule(cfg, mask, cols_per_cycle=P, merge_lanes=lanes)
        done = run.pass_cycles[run.last]
        passes = np.bincount(plan.row_block, minlength=blocks)
        rows.append({"sparsity": s, "passes": plan.n_passes, "rtl_total": run.cycles,
                     "model_total": sch["total"], "rtl_done": done, "model_done": sch["done"],
                     "interval": sch["interval"], "stage": sch,
                     "sdue": {kl: passes * max(kl, cfg.cols) for kl in kls},
                     "stage_cycles": run.stage_cycles})
        # the CAU is checked bit-exactly on these masks too
        np.testing.assert_array_equal(run.members, plan.members)
        np.testing.assert_array_equal(run.select, plan.select)
    return rows, report


def format_measure(rows) -> str:
    """The docs/cau.md table (``pytest -s`` prints it)."""
    out = ["| sparsity | passes | stage A / B / C per block (mean) | CAU interval / block "
           "(mean, max) | RTL block-to-block (mean) | K/L | SDUE / block (mean) | CAU / SDUE "
           "(worst block) | RTL total | model total |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        st, iv = r["stage"], r["interval"]
        gaps = np.diff(r["rtl_done"])
        for kl, sd in r["sdue"].items():
            out.append(
                f"| {r['sparsity']:.0%} | {r['passes']} | {st['read'].mean():.0f} / "
                f"{st['sort'].mean():.0f} / {st['merge'].mean():.0f} | {iv.mean():.0f}, "
                f"{iv.max()} | {gaps.mean():.0f} | {kl} | {sd.mean():.0f} | "
                f"{(iv / sd).max():.2f} | {r['rtl_total']:,} | {r['model_total']:,} |")
    return "\n".join(out)


def test_cau_rtl_exion16_keeps_up_with_sdue():
    """4 row blocks of 4608 columns at 80/95/97 % sparsity (all 16: the long test)."""
    rows, report = measure_exion16(blocks=4)
    print("\n" + format_measure(rows))
    _check_measure(rows)


@pytest.mark.long
def test_cau_rtl_exion16_keeps_up_full():
    rows, report = measure_exion16(blocks=16)
    print("\n" + format_measure(rows) + f"\n(simulation {report.get('seconds', 0):.0f} s)")
    _check_measure(rows)


def _check_measure(rows):
    for r in rows:
        # cycle model within 2 % (it is exact)
        assert r["rtl_total"] == r["model_total"]
        np.testing.assert_array_equal(r["rtl_done"], r["model_done"])
        # SPEC 4.3: each block's CAU interval within the SDUE's time for that block, at
        # K/L = 72 and at K/L = 2C = 32
        for kl, sd in r["sdue"].items():
            assert np.all(r["interval"] <= sd), (r["sparsity"], kl, r["interval"], sd)
            # measured: blocks finish no further apart than the SDUE needs per block
            gaps = np.diff(r["rtl_done"])
            assert np.all(gaps <= sd[1:]), (r["sparsity"], kl, gaps, sd)


@pytest.mark.parametrize("cfg", [TOY.replace(cols=1, merge_ways=3),
                                 TOY.replace(rows=1, cols=2, merge_ways=1),
                                 pytest.param(E16.replace(merge_ways=16),
                                              marks=pytest.mark.long)],
                         ids=["C1", "R1", "exion16-m16"])
def test_cau_lint_awkward_configs(cfg, tmp_path):
    from exion.gen.verilog import generate, lint
    g = generate(cfg, "cau", tmp_path)
    assert lint(g.verilog, "exion_cau") == []
