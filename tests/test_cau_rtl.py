"""The CAU's emitted Verilog, Verilated, under cocotb against golden ConMerge (bit-exact).

Builds in the default suite: toy (m = 2), exion16 (m = 4), toy m = 1, exion16 m = 2; more
merge ways and the full-size cycle measurement are ``long``. Each build runs many masks in
one simulator invocation (``rtl_cau``).
"""

import numpy as np
from mask_cases import adversarial_masks
import pytest

from exion import PRESETS
from exion.golden import cycles as cy
from exion.golden.conmerge import conmerge
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
    assert len(runs) == len(cases)
    for case, run in zip(cases, runs):
        plan = conmerge(cfg, case.mask, sort=case.sort)
        msg = f"{cfg.name} m={cfg.merge_ways} case {case.name} seed {seed}"
        np.testing.assert_array_equal(run.row_block, plan.row_block, err_msg=msg)
        np.testing.assert_array_equal(run.members, plan.members, err_msg=msg)
        np.testing.assert_array_equal(run.select, plan.select, err_msg=msg)
        rb = plan.row_block
        last = np.r_[rb[1:] != rb[:-1], True] if rb.size else np.zeros(0, bool)
        np.testing.assert_array_equal(run.last, last, err_msg=msg)


def _run(cfg, seed):
    cases = cases_for(cfg, seed)
    # Back-pressure and input gaps on one half, a free-running stream on the other; the
    # free-running half is also timed against the cycle model.
    half = len(cases) // 2
    runs_bp, _ = rtl_cau(cfg, cases[:half], seed=seed, gaps=0.3, backpressure=0.5,
                         run_name="cau-bp")
    runs_free, _ = rtl_cau(cfg, cases[half:], seed=seed, run_name="cau-free")
    check(cfg, cases, runs_bp + runs_free, seed)
    for case, run in zip(cases[half:], runs_free):
        sch = cy.cau_schedule(cfg, case.mask, sort=case.sort)
        np.testing.assert_array_equal(run.pass_cycles[run.last], sch["done"][sch["done"] >= 0])
        assert run.cycles == sch["total"], case.name


@pytest.mark.parametrize("cfg", [TOY, E16, TOY.replace(merge_ways=1),
                                 E16.replace(merge_ways=2)],
                         ids=["toy", "exion16", "toy-m1", "exion16-m2"])
def test_cau_rtl_matches_golden(cfg):
    _run(cfg, seed=20250 + cfg.merge_ways)


@pytest.mark.long
@pytest.mark.parametrize("cfg", [E16.replace(merge_ways=1), TOY.replace(merge_ways=4),
                                 E16.replace(merge_ways=16)],
                         ids=["exion16-m1", "toy-m4", "exion16-m16"])
def test_cau_rtl_matches_golden_long(cfg):
    _run(cfg, seed=777)


def measure_exion16(sparsities=(0.80, 0.95, 0.97), blocks=16, K=1152, seed=1):
    """CAU vs SDUE cycles per row block on exion16 for (16 * blocks) x 4608 random masks."""
    cfg = E16
    rng = np.random.default_rng(seed)
    masks = [rng.random((cfg.rows * blocks, 4608)) >= s for s in sparsities]
    runs, report = rtl_cau(cfg, [CauCase(m) for m in masks], seed=seed, run_name="measure")
    kw = -(-K // cfg.lanes)
    rows = []
    for s, mask, run in zip(sparsities, masks, runs):
        plan = conmerge(cfg, mask)
        sch = cy.cau_schedule(cfg, mask)
        done = run.pass_cycles[run.last]
        sdue = np.bincount(plan.row_block, minlength=blocks) * max(kw, cfg.cols)
        rows.append({"sparsity": s, "passes": plan.n_passes, "rtl_total": run.cycles,
                     "model_total": sch["total"], "rtl_done": done, "model_done": sch["done"],
                     "interval": sch["interval"], "stage": sch, "sdue": sdue,
                     "stage_cycles": run.stage_cycles})
        # the CAU is checked bit-exactly on these masks too
        np.testing.assert_array_equal(run.members, plan.members)
        np.testing.assert_array_equal(run.select, plan.select)
    return rows, report


def test_cau_rtl_exion16_keeps_up_with_sdue():
    """4 row blocks of 4608 columns at 80/95/97 % sparsity (all 16: the long test)."""
    _check_measure(*measure_exion16(blocks=4))


@pytest.mark.long
def test_cau_rtl_exion16_keeps_up_full():
    _check_measure(*measure_exion16(blocks=16))


def _check_measure(rows, report):
    for r in rows:
        # cycle model within 2 % (it is exact)
        assert abs(r["rtl_total"] - r["model_total"]) <= 0.02 * r["model_total"]
        np.testing.assert_allclose(r["rtl_done"], r["model_done"], rtol=0.02)
        # steady state: each block's CAU interval below the SDUE's time for that block
        assert np.all(r["interval"] < r["sdue"]), (r["sparsity"], r["interval"], r["sdue"])
        # measured: blocks finish no further apart than the SDUE needs per block
        gaps = np.diff(r["rtl_done"])
        assert np.all(gaps <= r["sdue"][1:]), (r["sparsity"], gaps, r["sdue"])


@pytest.mark.parametrize("cfg", [TOY.replace(cols=1, merge_ways=3),
                                 TOY.replace(rows=1, cols=2, merge_ways=1),
                                 E16.replace(merge_ways=16)], ids=["C1", "R1", "exion16-m16"])
def test_cau_lint_awkward_configs(cfg, tmp_path):
    from exion.gen.verilog import generate, lint
    g = generate(cfg, "cau", tmp_path)
    assert lint(g.verilog, "exion_cau") == []
