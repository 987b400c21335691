"""The col-group engine with an IMEM loader (issue 17, dbuf2): a planned design's estimate,
``golden.cycles.loader_plan`` / ``imem_loader_estimate`` (not built, not exact)."""

import numpy as np
import pytest

from exion import PRESETS
from exion.errors import ExionError
from exion.golden import cycles as cy

TOY = PRESETS["toy"]      # R 8, C 3, L 4, W 12: a word is 6 bytes; SDUE fixed 11 cycles


def test_loader_plan_limits():
    """A run holds as many row blocks as OMEM holds results for, in whole groups of
    ``wmem_words // kwords`` columns (one WMEM half); the runs cover the product once."""
    for M, N, K, gc in ((19, 11, 13, None), (100, 300, 64, None), (8, 1, 1, None),
                        (64, 70, 256, None), (32, 16, 32, 4), (256, 40, 128, 3)):
        kw = -(-K // TOY.lanes)
        cover = np.zeros((-(-M // TOY.rows), N), int)
        for t in cy.loader_plan(TOY, M, N, K, group_cols=gc):
            assert t["blocks"] * t["ncols"] <= TOY.omem_depth
            assert t["gcols"] * kw <= TOY.wmem_words
            assert gc is None or t["gcols"] <= gc
            cover[t["b0"]:t["b0"] + t["blocks"], t["c0"]:t["c0"] + t["ncols"]] += 1
        assert (cover == 1).all(), (M, N, K)
    # every row block in one run when OMEM allows: 4 blocks x 16 columns = 64 results
    assert [t["blocks"] for t in cy.loader_plan(TOY, 32, 16, 32)] == [4]
    with pytest.raises(ExionError, match="K = 513"):
        cy.loader_plan(TOY, 8, 8, 513)
    with pytest.raises(ExionError, match="scan_words = 0"):
        cy.imem_loader_estimate(TOY, np.ones((8, 8), bool), 8, scan_words=0)


def test_loader_estimate_hand():
    """toy, 32 x 16 dense mask, K = 32 (8 words): one run, one group of 16 columns, 4 row
    blocks of 6 passes (ceil(16 / 3)), each pass max(8, 3) = 8 cycles; 16 IMEM slots.
    Unlimited: scan 16 x 8 = 128 cycles, each A load 8 (one beat per cycle), so the SDUE
    starts at 136 and never waits again (a load, 8, is shorter than a block, 48): 136 + 4 x
    48 + 11. 2 B/cycle: scan 768 B / 2 = 384, each load 8 x 8 rows x 6 B / 2 = 192 cycles
    (longer than a block's 48: memory-bound), block b computes after load b: 384 + 4 x 192
    + 48 + 11. Bytes: weights 16 x 8 x 6 once, A 4 x 8 x 8 x 6 once (one group)."""
    mask = np.ones((32, 16), bool)
    e = cy.imem_loader_estimate(TOY, mask, 32, gb_bytes=0)
    assert e["cycles"] == 136 + 4 * 48 + 11 and e["compute_cycles"] == 24 * 8 + 11
    assert e["bytes"] == {"gb_wmem": 768, "gb_imem": 1536}
    s = cy.imem_loader_estimate(TOY, mask, 32, gb_bytes=2)
    assert s["cycles"] == 384 + 4 * 192 + 48 + 11 and s["bound"] == "memory-bound"
    assert not any(t["exact"] for t in s["tiles"])


def test_loader_bytes_per_group():
    """A is fetched once per column group, the weights once per run; a row block without a
    pass in a group is not loaded for it; a partial last block loads its rows only."""
    mask = np.ones((32, 16), bool)
    e = cy.imem_loader_estimate(TOY, mask, 32, group_cols=4)
    assert e["tiles"][0]["groups"] == 4
    assert e["bytes"] == {"gb_wmem": 768, "gb_imem": 4 * 1536}
    mask[16:24, 4:] = False                  # block 2: passes in group 0 only
    e = cy.imem_loader_estimate(TOY, mask, 32, group_cols=4)
    assert e["bytes"]["gb_imem"] == 4 * 1536 - 3 * 384
    e = cy.imem_loader_estimate(TOY, np.ones((28, 16), bool), 32, group_cols=4)
    assert e["bytes"]["gb_imem"] == 4 * (3 * 384 + 8 * 4 * 6)
    # the same product through today's engine (host-written IMEM): A not charged
    assert "gb_imem" not in cy.engine_cycles(TOY, np.ones((32, 16), bool), 32,
                                             dataflow="col-group")["bytes"]


def test_loader_weights_match_engine():
    """Where today's col-group run already holds every row block (IMEM holds them), the
    loader's runs and weight bytes are the exact engine model's, on random masks."""
    rng = np.random.default_rng(3)
    for M, N, K, s in ((32, 16, 32, 0.5), (30, 40, 64, 0.9), (16, 64, 128, 0.7)):
        mask = rng.random((M, N)) >= s
        e = cy.engine_cycles(TOY, mask, K, dataflow="col-group", gb_bytes=2)
        ld = cy.imem_loader_estimate(TOY, mask, K, gb_bytes=2)
        assert [(t["b0"], t["blocks"], t["c0"], t["ncols"], t["gcols"]) for t in e["tiles"]] \
            == [(t["b0"], t["blocks"], t["c0"], t["ncols"], t["gcols"]) for t in ld["tiles"]]
        assert ld["bytes"]["gb_wmem"] == e["bytes"]["gb_wmem"], (M, N, K)
        assert ld["compute_cycles"] == e["compute_cycles"]


def test_loader_estimate_mutations_fail(monkeypatch):
    """A model whose ConMerge ignores the mask (every block loaded for every group) and one
    without the SDUE's fixed drain both fail the tests above."""
    real = cy.conmerge
    monkeypatch.setattr(cy, "conmerge", lambda cfg, m, **kw: real(cfg, np.ones_like(m), **kw))
    with pytest.raises(AssertionError):
        test_loader_bytes_per_group()
    monkeypatch.setattr(cy, "conmerge", real)
    monkeypatch.setattr(cy, "sdue_fixed", lambda cfg, wide=False: 0)
    with pytest.raises(AssertionError):
        test_loader_estimate_hand()
