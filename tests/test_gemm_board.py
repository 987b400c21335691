"""The gemm engine as the board build makes it (issue 22): ``configs/toy_ecp5.toml`` (DSP
registers, the i_sw stage, no striped map, one CAU merge lane ``cau_lanes``, the pass queue's
head in fabric registers ``gemm_pq_reg``, a register stage in front of the queue
``gemm_pq_in_reg``, GMEM as ports ``gmem_ports`` with the global-buffer
model outside, ``exion.sim.gemm_gmem``) and the FPGA knobs one at a time on other configs.

Checks: bit-exact with golden and cycle-exact with the engine model on both dataflows
(``golden.cycles.engine_block_release``: every pass reaches the queue a cycle later through
the input stage, a block's last pass the head stage one more; ``engine_cau_release``: a
group's passes count as queued a cycle later; ``gemm_desc_reg``: a col-group pass reaches the
SDUE a cycle after its take; ``gemm_snoop_reg`` and ``gemm_scan_reg``: a group's scan starts
a cycle later, each; ``gemm_take_reg``: every row-block take a cycle later); the head stage
keeps back-to-back takes (``fpga`` with a 4-wide drain: one-word passes of period 1); the
model's extra cycles are needed (a model without any one of them fails the board engine's
cycles)."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from exion import PRESETS
from exion.config import load_config
from exion.golden import cycles as cy
from exion.sim.gemm_rtl import GemmCase, rtl_sparse_gemm

from test_gemm_rtl import (_operands, check, check_engine_model, col_group_cases,
                           row_block_cases)

BOARD = load_config(Path(__file__).resolve().parent.parent / "configs" / "toy_ecp5.toml")


def _board_cases(cfg, seed):
    cases = col_group_cases(cfg, seed)[::2] + row_block_cases(cfg, seed)[0][::2]
    rng = np.random.default_rng(seed)
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    # one pass per row block, back to back (its last pass is its only one), both dataflows
    for flow in ("col-group", "row-block"):
        a, b, prev = _operands(cfg, rng, 4 * R, 2 * L, C)
        cases.append(GemmCase(a, b, np.ones((4 * R, C), bool), prev, dataflow=flow,
                              name=f"one-pass-blocks-{flow}"))
    return cases


@pytest.fixture(scope="module")
def board_runs():
    """The board's cases through its engine once (a ``gmem_ports`` config runs on
    ``exion.sim.gemm_gmem``'s wrapper: ``rtl_sparse_gemm`` picks it)."""
    cases = _board_cases(BOARD, 23)
    outs, runs, _ = rtl_sparse_gemm(BOARD, cases, seed=23, run_name="gemm-board")
    return cases, outs, runs


def test_board_config_fields():
    assert (BOARD.gemm_striped, BOARD.cau_lanes, BOARD.gemm_pq_reg, BOARD.gemm_pq_in_reg,
            BOARD.gemm_desc_reg, BOARD.gemm_snoop_reg, BOARD.gemm_scan_reg,
            BOARD.gemm_take_reg, BOARD.gmem_ports) == (False, 1) + (True,) * 7
    for p in PRESETS.values():
        assert not (p.gemm_pq_reg or p.gemm_pq_in_reg or p.gemm_desc_reg or p.gemm_snoop_reg
                    or p.gemm_scan_reg or p.gemm_take_reg)
        assert p.cau_lanes is None


def test_block_release_by_hand():
    rb = [0, 0, 0, 1, 2, 2]
    assert list(cy.engine_block_release(PRESETS["toy"], rb)) == [1] * 6
    # the head stage: + 1 on each block's last pass (indices 2, 3, 5)
    head_only = PRESETS["toy"].replace(gemm_pq_reg=True)
    assert list(cy.engine_block_release(head_only, rb)) == [1, 1, 2, 2, 1, 2]
    # the input stage: + 1 on every pass; the board has both
    in_only = PRESETS["toy"].replace(gemm_pq_in_reg=True)
    assert list(cy.engine_block_release(in_only, rb)) == [2] * 6
    assert list(cy.engine_block_release(BOARD, rb)) == [2, 2, 3, 3, 2, 3]
    assert list(cy.engine_block_release(BOARD, [])) == []
    assert (cy.engine_cau_release(PRESETS["toy"]), cy.engine_cau_release(BOARD)) == (1, 2)


@pytest.mark.rtl
def test_gemm_rtl_board_engine(board_runs):
    """The board's engine (all its FPGA knobs) bit- and cycle-exact on both dataflows."""
    cases, outs, runs = board_runs
    check(BOARD, cases, outs, runs, 23)
    check_engine_model(BOARD, cases, runs)


@pytest.mark.rtl
def test_board_engine_needs_the_release_cycle(board_runs, monkeypatch):
    """The head stage's extra cycle is measured: the model without it (every pass at
    ``ENGINE_BLOCK_RELEASE``) disagrees with the board engine's cycles on the one-pass
    blocks."""
    picked = [(c, o, r) for c, o, r in zip(*board_runs) if c.name.startswith("one-pass")]
    cases, outs, runs = (list(x) for x in zip(*picked))
    check(BOARD, cases, outs, runs, 23, timed=False)
    monkeypatch.setattr(cy, "engine_block_release",
                        lambda cfg, rb: np.full(len(rb), cy.ENGINE_BLOCK_RELEASE, np.int64))
    with pytest.raises(AssertionError):
        check_engine_model(BOARD, cases, runs)


@pytest.mark.rtl
def test_board_engine_needs_the_descriptor_register_cycle(board_runs):
    """The descriptor register's cycle is measured: the col-group model without it (a pass
    the SDUE waits for issues at its take) disagrees with the board engine's cycles."""
    cases, outs, runs = board_runs
    with pytest.raises(AssertionError):
        check_engine_model(BOARD.replace(gemm_desc_reg=False), cases, runs)


@pytest.mark.rtl
def test_board_engine_needs_the_snoop_register_cycle(board_runs):
    """The snoop register's cycle is measured: the col-group model whose scans start as
    without it disagrees with the board engine's cycles."""
    cases, outs, runs = board_runs
    with pytest.raises(AssertionError):
        check_engine_model(BOARD.replace(gemm_snoop_reg=False), cases, runs)


@pytest.mark.rtl
def test_board_engine_needs_the_scan_start_register_cycle(board_runs):
    """The scan-start register's cycle is measured: the col-group model whose scans start
    as without it (one cycle earlier) disagrees with the board engine's cycles."""
    cases, outs, runs = board_runs
    with pytest.raises(AssertionError):
        check_engine_model(BOARD.replace(gemm_scan_reg=False), cases, runs)


@pytest.mark.rtl
def test_board_engine_needs_the_take_register_cycle(board_runs):
    """The take register's cycle is measured: the row-block model whose takes happen as
    without it (one cycle earlier) disagrees with the board engine's cycles."""
    cases, outs, runs = board_runs
    with pytest.raises(AssertionError):
        check_engine_model(BOARD.replace(gemm_take_reg=False), cases, runs)


@pytest.mark.rtl
@pytest.mark.long       # a second board-engine build; the board engine runs in the default suite
def test_gemm_rtl_take_register_alone():
    """``gemm_take_reg`` alone on ``toy`` (no head stage, no input stage): the row-block
    cases at unlimited, 3 and 7 B/cycle, one WMEM region and one-word passes (the fetch
    waits on the credit, the regions, the descriptor FIFO): bit-exact and cycle-exact."""
    cfg = PRESETS["toy"].replace(name="toy_takereg", gemm_take_reg=True)
    cases, _ = row_block_cases(cfg, 41)
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=41, run_name="gemm-takereg")
    check(cfg, cases, outs, runs, 41)
    check_engine_model(cfg, cases, runs)


@pytest.mark.rtl
def test_board_engine_needs_the_input_stage_cycle(board_runs, monkeypatch):
    """The input stage's cycle is measured: the model with the head stage's cycle only (as
    before the stage) disagrees with the board engine's cycles."""
    cases, outs, runs = board_runs
    head_only = BOARD.replace(gemm_pq_in_reg=False)
    real = cy.engine_block_release
    monkeypatch.setattr(cy, "engine_block_release", lambda cfg, rb: real(head_only, rb))
    with pytest.raises(AssertionError):
        check_engine_model(BOARD, cases, runs)


@pytest.mark.long
@pytest.mark.rtl
def test_gemm_rtl_head_stage_back_to_back():
    """``gemm_pq_reg`` on ``fpga`` (C = 4) with a 4-wide drain: striped one-word passes take
    the SDUE every cycle; with the stage they still do (cycle-exact), and the stage with
    the scan-start register (a striped scan's start, which waits for the run's first beat),
    without the other board knobs, on the striped cases."""
    from test_gemm_striped import striped_cases
    cfg = PRESETS["fpga"].replace(name="fpga_pqreg_d4", gemm_pq_reg=True, omem_drain=4,
                                  gemm_scan_reg=True)
    rng = np.random.default_rng(24)
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    cases = striped_cases(cfg, 24)[::2]
    for K in (1, L, 2 * L):
        a, b, prev = _operands(cfg, rng, 3 * R + 1, K, 4 * C + 1)
        cases.append(GemmCase(a, b, np.ones((3 * R + 1, 4 * C + 1), bool), prev,
                              dataflow="col-group", striped=True, name=f"wide-K{K}"))
    cases += [dataclasses.replace(c, name=c.name + "-cg") for c in col_group_cases(cfg, 24)[::4]]
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=24, run_name="gemm-pqreg")
    check(cfg, cases, outs, runs, 24)
    check_engine_model(cfg, cases, runs)
