"""K-splits in the gemm engine's host tiling (issue 17): a reduction longer than one run
holds, or shorter pieces chosen so that IMEM holds more row blocks and a WMEM half more
columns, run as several engine runs over the same rows and columns, the later ones adding
into the OMEM the earlier left (``golden.cycles.engine_chunks``, ``GemmCase.k_chunk``).

The RTL is unchanged; what is new is the host's plan and the model of it, so the checks are
the usual ones (bit-exact with golden, cycles / stalls / words equal to the engine model run
by run) on split plans, plus mutants of the plan that must fail."""

import dataclasses
import math

import numpy as np
import pytest

from exion import PRESETS
from exion.errors import ExionError
from exion.golden import cycles as cy
from exion.golden.conmerge import masked_gemm
from exion.sim import gemm_rtl
from exion.sim.gemm_rtl import GemmCase, plan_tiles, rtl_sparse_gemm

from test_gemm_rtl import _operands, check, engine_model

TOY = PRESETS["toy"]
E16 = PRESETS["exion16"]


@pytest.mark.parametrize("K, chunk", [(1, None), (7, None), (200, None), (200, 7),
                                      (256, 64), (256, 1), (61, 4)])
def test_engine_chunks_cover_the_reduction(K, chunk):
    cfg = TOY
    kw = math.ceil(K / cfg.lanes)
    pieces = cy.engine_chunks(cfg, K, chunk)
    cap = 2 * cfg.imem_words if chunk is None else chunk
    assert sum(w for _, w in pieces) == kw
    assert [k0 for k0, _ in pieces] == [sum(w for _, w in pieces[:i])
                                        for i in range(len(pieces))]
    assert len(pieces) == math.ceil(kw / cap)               # the fewest pieces of <= cap
    assert max(w for _, w in pieces) - min(w for _, w in pieces) <= 1   # balanced
    assert all(1 <= w <= cap for _, w in pieces)


def test_engine_chunks_beyond_imem_and_bad_values():
    # exion16 FC2 (K = 4608 = 288 words) no longer refused: 3 splits of 96 words
    assert cy.engine_chunks(E16, 4608) == [(0, 96), (96, 96), (192, 96)]
    plan = cy.engine_plan(E16, 64, 40, 4608, "row-block")
    assert {(t["k0"], t["kwords"]) for t in plan} == {(0, 96), (96, 96), (192, 96)}
    for bad in (0, -1, 2 * TOY.imem_words + 1, 2.5, True):
        with pytest.raises(ExionError, match="k_chunk"):
            cy.engine_chunks(TOY, 64, bad)
    with pytest.raises(ExionError, match="k_chunk"):
        cy.engine_cycles(TOY, np.ones((4, 4), bool), 16, k_chunk="fast")


def ksplit_cases(cfg, seed):
    """Products split into several runs: both dataflows, forced and automatic splits, a
    split of one word (drain-bound passes), accumulate and prev, bandwidth limits, several
    tiles and groups, and FC2's gather (host and hardware) within each split."""
    rng = np.random.default_rng(seed)
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    cases = []
    K = 37 * L + 3                                    # 38 words, the last one partial
    for df in ("col-group", "row-block"):
        for kc, gb, acc in ((5, 2, False), (1, 0, True), ("auto", 3, False)):
            M, N = int(rng.integers(R, 4 * R)), int(rng.integers(C, 12 * C))
            a, b, prev = _operands(cfg, rng, M, K, N)
            mask = rng.random((M, N)) >= rng.choice([0.3, 0.8])
            cases.append(GemmCase(a, b, mask, prev, accumulate=acc, dataflow=df,
                                  gb_bytes=gb, k_chunk=kc, name=f"{df}-k{kc}-gb{gb}"))
    # more columns than OMEM holds and more row blocks than one run takes, col-group groups
    a, b, prev = _operands(cfg, rng, 3 * R + 1, 24 * L, cfg.omem_depth + C + 1)
    mask = rng.random(prev.shape) >= 0.7
    cases.append(GemmCase(a, b, mask, prev, dataflow="col-group", k_chunk=8, name="tiles"))
    # the longest K (k_max) in pieces, every operand at the most negative value
    km = cfg.k_max
    a = np.full((R + 1, km), cfg.wmin)
    b = np.full((km, C + 1), cfg.wmin)
    cases.append(GemmCase(a, b, rng.random((R + 1, C + 1)) >= 0.5, dataflow="col-group",
                          k_chunk=3, name="kmax-extreme"))
    # FC2's delta: a quarter of the hidden units non-zero, gathered within each split
    M, F, N = 2 * R, 40 * L, 2 * C + 1
    a, b, prev = _operands(cfg, rng, M, F, N)
    a = np.where((rng.random(F) < 0.25)[None, :], a, 0)
    mask = rng.random((M, N)) >= 0.3
    for hw in (True, False):
        cases.append(GemmCase(a, b, mask, prev, dataflow="col-group", gb_bytes=3,
                              gather=True, gather_hw=hw, accumulate=True, k_chunk=9,
                              name=f"fc2-{'hw' if hw else 'host'}"))
    return cases


@pytest.mark.rtl
def test_gemm_rtl_k_splits():
    """Split plans run bit-exact with golden and every run's cycles, stall counter and
    words equal the engine model; the split really happens (several runs per tile, the
    later ones keep OMEM and accumulate)."""
    cfg, seed = TOY, 4242
    cases = ksplit_cases(cfg, seed)
    for c in cases:
        tiles = plan_tiles(cfg, c)
        assert any(t.keep_omem for t in tiles) or c.k_chunk == "auto", c.name
        assert all(t.setup["accumulate"] == 1 for t in tiles if t.keep_omem), c.name
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seed, run_name="gemm-ksplit")
    check(cfg, cases, outs, runs, seed)


@pytest.mark.rtl
def test_gemm_rtl_k_split_mutants_fail(monkeypatch):
    """Two broken host plans give wrong products (the RTL run is the judge): later splits
    that rewrite OMEM with the previous output, and later splits that overwrite instead of
    accumulating. And the model of the unsplit plan does not match a split run."""
    cfg, seed = TOY, 77
    rng = np.random.default_rng(seed)
    a, b, prev = _operands(cfg, rng, 2 * cfg.rows + 1, 20 * cfg.lanes, 2 * cfg.cols + 2)
    mask = rng.random(prev.shape) >= 0.4
    case = GemmCase(a, b, mask, prev, dataflow="col-group", k_chunk=6, name="mutant")
    want = masked_gemm(cfg, a, b, mask, out=prev)
    orig = gemm_rtl.plan_tiles

    def rewrite_omem(cfg_, case_, *args, **kw):
        return [dataclasses.replace(t, keep_omem=False) for t in orig(cfg_, case_, *args, **kw)]

    def overwrite(cfg_, case_, *args, **kw):
        return [dataclasses.replace(t, setup={**t.setup, "accumulate": 0})
                for t in orig(cfg_, case_, *args, **kw)]

    for name, mutant in (("rewrite-omem", rewrite_omem), ("overwrite", overwrite)):
        monkeypatch.setattr(gemm_rtl, "plan_tiles", mutant)
        outs, _, _ = rtl_sparse_gemm(cfg, [case], seed=seed, run_name=f"gemm-ks-{name}")
        assert not np.array_equal(outs[0], want), name
    monkeypatch.setattr(gemm_rtl, "plan_tiles", orig)
    outs, runs, _ = rtl_sparse_gemm(cfg, [case], seed=seed, run_name="gemm-ks-good")
    np.testing.assert_array_equal(outs[0], want)
    unsplit = engine_model(cfg, dataclasses.replace(case, k_chunk=None))
    assert len(unsplit["tiles"]) != len(runs[0].tile_cycles)


def test_auto_k_chunk_is_the_fastest_candidate():
    """``k_chunk="auto"`` picks the fewest-cycle split among the balanced candidates (ties to
    the longer piece), for both dataflows and a limited bandwidth."""
    cfg = TOY
    rng = np.random.default_rng(3)
    for df, gb in (("col-group", 2), ("row-block", 3), ("col-group", 0)):
        mask = rng.random((3 * cfg.rows + 2, 40)) >= 0.6
        K = 45 * cfg.lanes
        kw = 45
        cands = sorted({-(-kw // s) for s in range(1, -(-kw // max(1, cfg.cols // 2)) + 1)},
                       reverse=True)
        cyc = {c: cy.engine_cycles(cfg, mask, K, dataflow=df, gb_bytes=gb, k_chunk=c)["cycles"]
               for c in cands}
        best = min(cyc.values())
        pick = cy.engine_k_chunk(cfg, mask, K, dataflow=df, gb_bytes=gb)
        assert cyc[pick] == best and pick == max(c for c in cands if cyc[c] == best)
        auto = cy.engine_cycles(cfg, mask, K, dataflow=df, gb_bytes=gb, k_chunk="auto")
        assert auto["cycles"] == best and auto["k_chunk"] == pick


def test_k_split_col_group_fetches_weights_once_per_row_range():
    """exion16, K = 1152 (72 words: IMEM holds one row block whole): split into pieces of
    c words, a col-group run holds min(16, 128 // c) row blocks, so every needed weight
    crosses the global buffer ceil(16 / that) times instead of 16 (row-block: once per
    row block and pass member)."""
    cfg = E16
    R = cfg.rows
    mask = np.random.default_rng(0).random((256, 384)) >= 0.8
    K, nblk = 1152, 16
    rb = cy.engine_cycles(cfg, mask, K, dataflow="row-block", gb_bytes=64)
    col_bytes = K * cfg.width // 8                    # one column's weights, all splits
    for c in (16, 24, 36):
        e = cy.engine_cycles(cfg, mask, K, dataflow="col-group", gb_bytes=64, k_chunk=c)
        piece = max(w for _, w in cy.engine_chunks(cfg, K, c))
        tb = min(nblk, 2 * cfg.imem_words // piece)
        # per row range of tb blocks: the columns some row of it needs, once (all splits)
        want = sum(int(mask[b * R:(b + tb) * R].any(axis=0).sum())
                   for b in range(0, nblk, tb)) * col_bytes
        assert e["bytes"]["gb_wmem"] == want, c
        assert 2 * e["bytes"]["gb_wmem"] < rb["bytes"]["gb_wmem"]


def test_cli_k_chunk_errors(tmp_path, capsys):
    from exion.gen.cli import main
    rng = np.random.default_rng(1)
    np.save(tmp_path / "a.npy", rng.integers(-8, 8, (8, 12)))
    np.save(tmp_path / "b.npy", rng.integers(-8, 8, (12, 5)))
    np.save(tmp_path / "m.npy", rng.random((8, 5)) > 0.5)
    base = ["sim", "gemm", "--config", "toy", "--a", str(tmp_path / "a.npy"), "--b",
            str(tmp_path / "b.npy"), "--out", str(tmp_path / "c.npy")]
    for extra, msg in ((["--mask", str(tmp_path / "m.npy"), "--k-chunk", "fast"], "k-chunk"),
                       (["--mask", str(tmp_path / "m.npy"), "--k-chunk", "999"], "k_chunk"),
                       (["--k-chunk", "2"], "--k-chunk")):
        try:
            code = main(base + extra)      # a bad value found by the command: status 2
        except SystemExit as e:            # ... or by the parser: exit status 2
            code = e.code
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert msg in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "c.npy").exists()
