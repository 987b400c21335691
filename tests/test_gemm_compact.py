"""The host's compaction of a masked product (``GemmCase.compact``,
``golden.cycles.engine_compact``; issue 17, column-aware sparsity): output columns that no row
needs and K rows that no row reads are dropped before tiling, the engine runs the rest, and
the results are scattered back.

Checks: the model by hand (what is kept, the compacted product's cycles are the kept dense
product's, a column-concentrated FFN mask becomes dense and stripes); the toy engine
bit-exact with golden and cycle-exact with the model on FC1-like (output-sparse) and
FC2-like (input-sparse, gathered) column-concentrated products, both dataflows, in fewer
cycles than uncompacted and no more words (the FC2-like one striped); a host that scatters to the wrong columns fails."""

import dataclasses

import numpy as np
import pytest

from exion import PRESETS
from exion.golden import cycles as cy
from exion.sim import gemm_rtl
from exion.sim.gemm_rtl import GemmCase, engine_model, rtl_sparse_gemm

from test_gemm_rtl import _operands, check, check_engine_model

TOY = PRESETS["toy"]


def test_engine_compact_by_hand():
    mask = np.array([[0, 1, 0, 1], [0, 0, 0, 1]], bool)
    cols, krows, mc, im = cy.engine_compact(mask)
    assert list(cols) == [1, 3] and krows is None and im is None
    assert mc.tolist() == [[True, True], [False, True]]
    imask = np.array([[1, 0, 1], [1, 0, 0]], bool)
    cols, krows, mc, im = cy.engine_compact(np.ones((2, 2), bool), imask)
    assert list(krows) == [0, 2] and im.tolist() == [[True, True], [True, False]]
    _, krows, _, im = cy.engine_compact(np.ones((2, 2), bool), imask[:, [0, 1]])
    assert list(krows) == [0] and im is None            # every kept row read by every row
    cols, krows, mc, im = cy.engine_compact(np.zeros((2, 3), bool), np.zeros((2, 5), bool))
    assert list(cols) == [0] and list(krows) == [0] and not mc.any()   # one kept: still runs


def _column_mask(rng, M, N, keep):
    mask = np.zeros((M, N), bool)
    mask[:, rng.choice(N, keep, replace=False)] = True
    return mask


def test_compacted_model_is_the_kept_dense_product():
    """A column-concentrated mask compacts to a dense product of its needed columns: the same
    cycles and words as that product, which the striped map may take; fewer words and cycles
    than the uncompacted run."""
    rng = np.random.default_rng(5)
    R, L = TOY.rows, TOY.lanes
    M, N, K = 4 * R, 40, 32 * L
    mask = _column_mask(rng, M, N, 7)
    kw = dict(dataflow="col-group", k_chunk="auto", striped="auto")
    comp = cy.engine_cycles(TOY, mask, K, compact=True, **kw)
    dense = cy.engine_cycles(TOY, np.ones((M, 7), bool), K, **kw)
    full = cy.engine_cycles(TOY, mask, K, **kw)
    assert comp["compact"] == {"cols": 7, "k": K} and full["compact"] is None
    assert comp["striped"] and not full["striped"]
    assert (comp["cycles"], comp["bytes"]) == (dense["cycles"], dense["bytes"])
    assert comp["cycles"] < full["cycles"]
    # FC2-like: every row reads the same 9 of K rows -> a dense product of K = 9
    imask = _column_mask(rng, M, K, 9)
    c2 = cy.engine_cycles(TOY, np.ones((M, N), bool), K, input_mask=imask, compact=True, **kw)
    d2 = cy.engine_cycles(TOY, np.ones((M, N), bool), 9, **kw)
    assert c2["compact"] == {"cols": N, "k": 9} and c2["striped"]
    assert c2["cycles"] == d2["cycles"]


def _cases(cfg, seed):
    rng = np.random.default_rng(seed)
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    cases = []
    for flow in ("col-group", "row-block"):
        st = "auto" if flow == "col-group" else False
        # FC1-like: output columns needed by every row or none (plus a partly needed one)
        M, K, N = 3 * R + 2, 20 * L + 1, 5 * C + 4
        a, b, prev = _operands(cfg, rng, M, K, N)
        mask = _column_mask(rng, M, N, 2 * C + 1)
        mask[::3, 0] = True
        cases.append(GemmCase(a, b, mask, prev, dataflow=flow, striped=st, k_chunk="auto",
                              accumulate=bool(rng.integers(2)), compact=True,
                              name=f"fc1-like-{flow}"))
        # FC2-like: A zero outside a few K rows (the delta), dense output, gathered
        a, b, prev = _operands(cfg, rng, M, 40 * L, 2 * C + 1)
        a[:, ~_column_mask(rng, 1, 40 * L, 3 * L - 1)[0]] = 0
        cases.append(GemmCase(a, b, np.ones((M, 2 * C + 1), bool), prev, dataflow=flow,
                              striped=st, gather=True, accumulate=True, compact=True,
                              name=f"fc2-like-{flow}"))
    return cases


@pytest.mark.rtl
def test_gemm_rtl_compact():
    cases = _cases(TOY, 31)
    outs, runs, _ = rtl_sparse_gemm(TOY, cases, seed=31, run_name="gemm-compact")
    check(TOY, cases, outs, runs, 31)
    check_engine_model(TOY, cases, runs)
    for c, run in zip(cases, runs):   # fewer cycles, no more weight words than uncompacted
        full = engine_model(TOY, dataclasses.replace(c, compact=False))
        e = engine_model(TOY, c)
        assert sum(run.tile_cycles) == e["cycles"] < full["cycles"], c.name
        assert e["bytes"]["gb_wmem"] <= full["bytes"]["gb_wmem"], c.name
    assert any(engine_model(TOY, c)["striped"] for c in cases)


@pytest.mark.rtl
def test_compact_scatter_to_wrong_columns_fails(monkeypatch):
    """A host that scatters the compacted results one kept column off is caught."""
    real = cy.engine_compact

    def shifted(mask, input_mask=None):
        cols, krows, mc, im = real(mask, input_mask)
        return np.roll(cols, 1), krows, mc, im

    monkeypatch.setattr(gemm_rtl, "engine_compact", shifted)
    cases = [c for c in _cases(TOY, 31) if c.name == "fc1-like-col-group"]
    outs, runs, _ = rtl_sparse_gemm(TOY, cases, seed=31, run_name="gemm-compact")
    with pytest.raises(AssertionError):
        check(TOY, cases, outs, runs, 31, timed=False)
