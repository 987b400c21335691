"""The wide OMEM drain (``omem_drain`` D, issue 17's short-K limit): each OMEM bank is D
sub-banks by address, and a wide run (the gemm engine's striped runs) drains D results per
bank per cycle, so a pass takes ``max(kwords, C / D)`` cycles instead of ``max(kwords, C)``.

Checks: the model's pieces by hand; the engine (``fpga`` preset, C = 4, with D = 2 and 4)
bit-exact with golden and cycle-exact with the engine model on striped runs (wide: short and
long K, partial stripes, bandwidth limits, K-splits, accumulate) and on replicated
col-group and row-block runs (narrow drains into sub-banks, host reads and writes of the
sub-banks); the standalone SDUE on sub-banks; a drain that ignores the sub-bank of its
second head fails."""

import dataclasses

import numpy as np
import pytest

from exion import PRESETS
from exion.config import ConfigError
from exion.golden import cycles as cy
from exion.sim.gemm_rtl import GemmCase, rtl_sparse_gemm

from test_gemm_rtl import _operands, check, check_engine_model, col_group_cases
from test_gemm_striped import striped_cases

FPGA = PRESETS["fpga"]


def _cfg(d):
    return FPGA.replace(name=f"fpga_d{d}", omem_drain=d)


def test_drain_model_by_hand():
    cfg = _cfg(4)                                   # C = 4: a wide pass floor of 1 cycle
    assert cfg.pass_period(1, True) == 1 and cfg.pass_period(1) == 4
    assert cfg.pass_period(6, True) == cfg.pass_period(6) == 6
    assert cfg.sdue_fixed_wide == cfg.sdue_fixed_cycles - 3
    # three passes of 2 words: 2 + 2 + 2 + fixed - 3 (wide) vs 4 + 4 + 4 + fixed
    assert cy.sdue_cycles(cfg, [2, 2, 2], wide=True) == 6 + cfg.sdue_fixed_cycles - 3
    assert cy.sdue_cycles(cfg, [2, 2, 2]) == 12 + cfg.sdue_fixed_cycles
    assert cy.sdue_cycles(_cfg(1), [2, 2, 2], wide=True) == cy.sdue_cycles(FPGA, [2, 2, 2])
    # a dense short-K (2-word) striped product: D = 4 saves C - max(2, C/D) = 2 cycles a
    # pass and C - C/D = 3 in each run's last drain
    mask = np.ones((3 * cfg.rows, 3 * cfg.cols), bool)
    e4 = cy.engine_cycles(cfg, mask, 2 * cfg.lanes, dataflow="col-group", striped=True)
    e1 = cy.engine_cycles(FPGA, mask, 2 * cfg.lanes, dataflow="col-group", striped=True)
    n = sum(t["passes"] for t in e1["tiles"])
    assert e1["compute_cycles"] - e4["compute_cycles"] == 2 * n + 3 * len(e1["tiles"])
    # a replicated run is not wide
    r4 = cy.engine_cycles(cfg, mask, 2 * cfg.lanes, dataflow="col-group")
    r1 = cy.engine_cycles(FPGA, mask, 2 * cfg.lanes, dataflow="col-group")
    assert r4["cycles"] == r1["cycles"]
    for bad in (3, 8, 0, True):
        with pytest.raises(ConfigError, match="omem_drain"):
            FPGA.replace(omem_drain=bad)


def test_short_k_on_the_wide_drain_is_cau_bound():
    """One-word passes on the 4-wide drain take a cycle each, so the CAU (several cycles a
    row block) is the limit the model names; the narrow drain (4 cycles a pass) is
    compute-bound on the same product."""
    mask = np.ones((24 * FPGA.rows, FPGA.cols), bool)      # 24 row blocks of one pass
    wide = cy.engine_cycles(_cfg(4), mask, FPGA.lanes, dataflow="col-group", striped=True)
    narrow = cy.engine_cycles(FPGA, mask, FPGA.lanes, dataflow="col-group", striped=True)
    assert wide["cau_cycles"] == narrow["cau_cycles"] > wide["compute_cycles"]
    assert wide["bound"] == "cau-bound" and narrow["bound"] == "compute-bound"


def _cases(cfg, seed):
    rng = np.random.default_rng(seed)
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    cases = striped_cases(cfg, seed)
    # short K (kwords < C: the wide floor binds), accumulate, partial stripes
    for K, N, gb in ((L, 2 * C + 1, 0), (2 * L - 1, 3 * C, 5), (3 * L, 4 * C + 3, 0)):
        a, b, prev = _operands(cfg, rng, 2 * R + 3, K, N)
        cases.append(GemmCase(a, b, np.ones((2 * R + 3, N), bool), prev, dataflow="col-group",
                              striped=True, gb_bytes=gb, accumulate=True,
                              name=f"wide-short-K{K}-N{N}-gb{gb}"))
    cases += col_group_cases(cfg, seed)[::3]
    cases += [dataclasses.replace(c, dataflow="row-block", name=c.name + "-rb")
              for c in col_group_cases(cfg, seed)[1::4]]
    return cases


@pytest.mark.rtl
@pytest.mark.parametrize("d", [pytest.param(2, marks=pytest.mark.long),
                               pytest.param(4, marks=pytest.mark.long)])
def test_gemm_rtl_wide_drain(d):
    cfg, seed = _cfg(d), 400 + d
    cases = _cases(cfg, seed)
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed, run_name=f"gemm-drain{d}")
    check(cfg, cases, outs, runs, seed)
    check_engine_model(cfg, cases, runs)
    wide = [c for c in cases if c.name.startswith("wide-short")]
    assert wide and all(cy.engine_cycles(cfg, c.mask, c.a.shape[1], dataflow="col-group",
                                         striped=True, gb_bytes=c.gb_bytes)["compute_cycles"]
                        < cy.engine_cycles(FPGA, c.mask, c.a.shape[1], dataflow="col-group",
                                           striped=True, gb_bytes=c.gb_bytes)["compute_cycles"]
                        for c in wide)


@pytest.mark.long
@pytest.mark.rtl
@pytest.mark.parametrize("name", ["exion16_drain4", "exion16_omem2x"])
def test_gemm_rtl_wide_drain_exion16(name):
    """configs/exion16_drain4.toml and exion16_omem2x.toml (the 4-wide drain, the latter with
    a 2x OMEM): the striped cases, a DiT-XL/2 head's scores (256 x 72 x 256, 5-word passes)
    and a projection slice whose tiles fill the OMEM (M x N results above ``omem_depth`` per
    bank: several runs, K-split chosen by the host at 256 B/cycle), bit- and cycle-exact."""
    from exion.config import load_config
    from pathlib import Path
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / f"{name}.toml")
    rng = np.random.default_rng(16)
    cases = striped_cases(cfg, 16)[:6]
    a, b, prev = _operands(cfg, rng, 256, 72, 256)
    cases.append(GemmCase(a, b, np.ones((256, 256), bool), prev, dataflow="col-group",
                          striped="auto", k_chunk="auto", gb_bytes=256, name="scores"))
    M = 2 * cfg.omem_depth // (8 * cfg.cols) * cfg.rows + 3   # > one tile of 8 stripes
    a, b, prev = _operands(cfg, rng, M, 1152, 8 * cfg.cols)
    cases.append(GemmCase(a, b, np.ones((M, 8 * cfg.cols), bool), prev, dataflow="col-group",
                          striped="auto", k_chunk="auto", gb_bytes=256, accumulate=True,
                          name="projection-tile"))
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=16, run_name=f"gemm-{name}")
    check(cfg, cases, outs, runs, 16)
    check_engine_model(cfg, cases, runs)
