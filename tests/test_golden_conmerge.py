"""Golden masked GEMM and ConMerge (SPEC 3.1, 3.2): invariants, references, executor, CLI.

References here are written independently from the SPEC's words (plain loops over Python
ints and sets), never from the module under test.
"""

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exion import PRESETS, Config
from exion.errors import ExionError
from exion.golden import conmerge as cm

TOY = PRESETS["toy"]
EX16 = PRESETS["exion16"]
# Awkward: non-power-of-two R, C, L; m = 3.
ODD = Config(name="odd", rows=5, cols=2, lanes=3, merge_ways=3, imem_depth=255,
             wmem_depth=1023, omem_depth=64)
CONFIGS = {"toy": TOY, "exion16": EX16, "odd": ODD}


# ---------------------------------------------------------------------------------------
# independent references
# ---------------------------------------------------------------------------------------
def ref_block_slots(blk, m, window, sort):
    """SPEC 3.2 steps 1-4 for one row block, as a list of slots (lists of columns)."""
    R, N = blk.shape
    cv = {j: {r for r in range(R) if blk[r, j]} for j in range(N)}
    cols = [j for j in range(N) if cv[j]]                      # condense
    if sort == "popcount":                                     # counting sort, stable
        cols = [j for pc in range(R, 0, -1) for j in cols if len(cv[j]) == pc]
    slots = []                                                 # [members, union of cvs]
    for j in cols:
        for s in slots[max(0, len(slots) - window):]:          # most recent W_open slots
            if len(s[0]) < m and not (s[1] & cv[j]):           # first fit, oldest first
                s[0].append(j)
                s[1] |= cv[j]
                break
        else:
            slots.append([[j], set(cv[j])])
    return [s[0] for s in slots]


def ref_passes(cfg, mask, m, window, sort):
    """[(row_block, [slot member lists, C per pass, padded with []])] for the whole mask."""
    out = []
    R, C = cfg.rows, cfg.cols
    for b in range(math.ceil(mask.shape[0] / R)):
        slots = ref_block_slots(mask[b * R:(b + 1) * R], m, window, sort)
        for p in range(0, len(slots), C):
            chunk = slots[p:p + C]
            out.append((b, chunk + [[]] * (C - len(chunk))))
    return out


def plan_passes(plan):
    return [(p.row_block, [[int(j) for j in p.members[c] if j >= 0]
                           for c in range(plan.C)]) for p in plan.passes]


def ref_matmul(a, b):
    M, K = a.shape
    N = b.shape[1]
    return [[sum(int(a[i, k]) * int(b[k, j]) for k in range(K)) for j in range(N)]
            for i in range(M)]


def rand_operands(cfg, rng, M, K, N):
    a = rng.integers(cfg.wmin, cfg.wmax + 1, (M, K))
    b = rng.integers(cfg.wmin, cfg.wmax + 1, (K, N))
    return a, b


# ---------------------------------------------------------------------------------------
# adversarial masks
# ---------------------------------------------------------------------------------------
def adversarial(cfg):
    R, C = cfg.rows, cfg.cols
    M, N = 2 * R + R // 2 + 1, 3 * C + 1       # partial last row block, N % C != 0
    rng = np.random.default_rng(7)
    cases = {
        "all0": np.zeros((M, N), bool),
        "all1": np.ones((M, N), bool),
        "one_bit": np.zeros((M, N), bool),
        "checker": (np.add.outer(np.arange(M), np.arange(N)) % 2).astype(bool),
        "dense_row": np.zeros((M, N), bool),
        "dense_col": np.zeros((M, N), bool),
        "last_block_only": np.zeros((M, N), bool),
        "random50": rng.random((M, N)) < 0.5,
        "random10": rng.random((M, N)) < 0.1,
        "diag": np.eye(M, N, dtype=bool),
    }
    cases["one_bit"][M - 1, N - 1] = True
    cases["dense_row"][R + 1, :] = True
    cases["dense_col"][:, N - 2] = True
    cases["last_block_only"][2 * R:, :] = rng.random((M - 2 * R, N)) < 0.6
    return cases


def with_ways(cfg, m):
    """``cfg``, or a copy built with m weight buses when a run of m ways needs more (the
    golden model measures every m in 1..R on a config that has them)."""
    return cfg if m <= cfg.merge_ways else cfg.replace(merge_ways=m)


def ways_for(cfg):
    return sorted({1, 2, min(4, cfg.rows), cfg.rows})


ADV = [(cn, w, case) for cn, cfg in CONFIGS.items() for w in ways_for(cfg)
       for case in adversarial(cfg)]


@pytest.mark.parametrize("cfg_name,m,case", ADV, ids=[f"{c}-m{w}-{k}" for c, w, k in ADV])
def test_adversarial_invariants_and_reference(cfg_name, m, case):
    cfg = CONFIGS[cfg_name]
    mask = adversarial(cfg)[case]
    cfg = with_ways(cfg, m)
    plan = cm.conmerge(cfg, mask, merge_ways=m)
    cm.check_plan(cfg, mask, plan)
    assert plan_passes(plan) == ref_passes(cfg, mask, m, cfg.w_open, "popcount")
    assert plan.masked == int(mask.sum())


def test_adversarial_counts_by_hand():
    cfg = TOY  # R = 8, C = 3
    cases = adversarial(cfg)
    M, N = cases["all0"].shape  # 21 x 10
    assert (M, N) == (21, 10)
    dense = 3 * 4
    for m in (1, 2, 8):
        assert cm.conmerge(with_ways(cfg, m), cases["all0"], merge_ways=m).n_passes == 0
        assert cm.conmerge(with_ways(cfg, m), cases["all1"], merge_ways=m).n_passes == dense
        assert cm.conmerge(with_ways(cfg, m), cases["one_bit"], merge_ways=m).n_passes == 1
        # one dense row: one row block, 10 columns with the same cv -> no merge possible
        assert cm.conmerge(with_ways(cfg, m), cases["dense_row"], merge_ways=m).n_passes == 4
        # one dense column: one slot in each of the 3 row blocks
        assert cm.conmerge(with_ways(cfg, m), cases["dense_col"], merge_ways=m).n_passes == 3
    # checkerboard: two disjoint cvs per block (odd / even columns), 5 columns each.
    # m = 1: 10 slots -> 4 passes per block.
    # Full blocks (equal popcounts, index order 0, 1, 2, ...): 0+1, 2+3, ..., 8+9 -> 5 slots,
    # 2 passes, for any m >= 2.
    # Last block (rows 16..20): odd columns have popcount 3, even ones 2. Sorted 1 3 5 7 9
    # 0 2 4 6 8. Odd columns open s0..s4; with W_open = C = 3, 0 -> s2, 2 -> s3, 4 -> s4;
    # 6 finds s2..s4 holding an even column -> s5; 8 conflicts with s3, s4, s5 -> s6.
    # 7 slots -> 3 passes (the window keeps 6 and 8 out of s0, s1).
    assert cm.conmerge(with_ways(cfg, 1), cases["checker"], merge_ways=1).n_passes == 12
    assert cm.conmerge(with_ways(cfg, 2), cases["checker"], merge_ways=2).n_passes == 2 + 2 + 3
    assert cm.conmerge(with_ways(cfg, 8), cases["checker"], merge_ways=8).n_passes == 2 + 2 + 3
    # a window as wide as the slot list lets 6 and 8 join s0 and s1: 5 slots, 2 passes
    assert cm.conmerge(with_ways(cfg, 2), cases["checker"], merge_ways=2, window=10).n_passes == 6


@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (16, 16), (33, 50)])
def test_dense_mask_equals_tiling(cfg_name, shape):
    cfg = CONFIGS[cfg_name]
    mask = np.ones(shape, bool)
    expect = math.ceil(shape[0] / cfg.rows) * math.ceil(shape[1] / cfg.cols)
    dp = cm.dense_plan(cfg, *shape)
    assert dp.n_passes == expect == dp.dense_passes
    cm.check_plan(cfg, mask, dp)
    for m in ways_for(cfg):
        cfg = with_ways(cfg, m)
        plan = cm.conmerge(cfg, mask, merge_ways=m)
        assert plan.n_passes == expect
        cm.check_plan(cfg, mask, plan)


def test_dense_plan_vectors():
    cfg = TOY  # 8 x 3
    dp = cm.dense_plan(cfg, 10, 4)
    p = dp.passes
    assert len(p) == 4
    assert p[0].members[:, 0].tolist() == [0, 1, 2]
    assert p[1].members[:, 0].tolist() == [3, -1, -1]
    assert p[2].rows.tolist() == [8, 9, -1, -1, -1, -1, -1, -1]
    assert (p[0].select == 0).all()
    assert p[3].select[:2].tolist() == [[0, -1, -1]] * 2
    assert (p[3].select[2:] == -1).all()


# ---------------------------------------------------------------------------------------
# property-based
# ---------------------------------------------------------------------------------------
@st.composite
def mask_case(draw):
    cfg_name = draw(st.sampled_from(sorted(CONFIGS)))
    cfg = CONFIGS[cfg_name]
    M = draw(st.integers(1, 3 * cfg.rows + 3))
    N = draw(st.integers(1, 4 * cfg.cols + 5))
    density = draw(st.sampled_from([0.02, 0.1, 0.3, 0.6, 0.95]))
    seed = draw(st.integers(0, 2 ** 31))
    m = draw(st.integers(1, cfg.rows))
    window = draw(st.sampled_from([None, 1, 2, 5]))
    sort = draw(st.sampled_from(cm.SORTS))
    mask = np.random.default_rng(seed).random((M, N)) < density
    return cfg, mask, m, window, sort


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(mask_case())
def test_property_invariants_and_reference(case):
    cfg, mask, m, window, sort = case
    cfg = with_ways(cfg, m)
    plan = cm.conmerge(cfg, mask, merge_ways=m, sort=sort, window=window)
    cm.check_plan(cfg, mask, plan)
    w = cfg.w_open if window is None else window
    assert plan_passes(plan) == ref_passes(cfg, mask, m, w, sort)
    assert plan.condense_passes == sum(
        math.ceil(int(mask[b:b + cfg.rows].any(axis=0).sum()) / cfg.cols)
        for b in range(0, mask.shape[0], cfg.rows))
    assert plan.n_passes <= plan.condense_passes <= plan.dense_passes


@settings(max_examples=40, deadline=None, derandomize=True)
@given(mask_case())
def test_property_executor_equals_masked_gemm(case):
    cfg, mask, m, window, sort = case
    rng = np.random.default_rng(mask.size)
    K = 7
    a, b = rand_operands(cfg, rng, mask.shape[0], K, mask.shape[1])
    old = rng.integers(-1000, 1000, mask.shape)
    cfg = with_ways(cfg, m)
    plan = cm.conmerge(cfg, mask, merge_ways=m, sort=sort, window=window)
    ref = np.array(ref_matmul(a, b), dtype=np.int64)
    got = cm.execute_plan(cfg, a, b, plan, out=old)
    want = np.where(mask, ref, old)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(cm.masked_gemm(cfg, a, b, mask, out=old), want)
    acc = cm.execute_plan(cfg, a, b, plan, out=old, accumulate=True)
    np.testing.assert_array_equal(acc, np.where(mask, ref + old, old))


# ---------------------------------------------------------------------------------------
# sort and merge in detail (hand-derived from the SPEC rule)
# ---------------------------------------------------------------------------------------
def test_sort_popcount_desc_ties_by_index():
    cfg = TOY
    blk = np.zeros((8, 6), bool)
    blk[:3, 0] = True      # popcount 3
    blk[:1, 1] = True      # 1
    #        column 2      # 0 -> condensed away
    blk[2:5, 3] = True     # 3
    blk[6:8, 4] = True     # 2
    blk[7, 5] = True       # 1
    assert cm.sort_columns(cfg, blk, "popcount").tolist() == [0, 3, 4, 1, 5]
    assert cm.sort_columns(cfg, blk, "none").tolist() == [0, 1, 3, 4, 5]


def test_conflict_vectors_and_ints():
    cfg = TOY
    blk = np.zeros((3, 2), bool)   # a partial block of 3 rows
    blk[0, 0] = blk[2, 0] = blk[1, 1] = True
    cv = cm.conflict_vectors(cfg, blk)
    assert cv.shape == (2, 8)
    assert cv[0].tolist() == [True, False, True] + [False] * 5
    assert cm.cv_ints(cfg, blk) == [0b101, 0b010]
    big = Config(name="big", rows=70, cols=2, lanes=1, merge_ways=2, imem_depth=8,
                 wmem_depth=8, omem_depth=4, k_max=4)
    blk = np.zeros((70, 1), bool)
    blk[69, 0] = blk[0, 0] = True
    assert cm.cv_ints(big, blk) == [(1 << 69) | 1]


def test_merge_columns_hand_case():
    # cvs in walk order; m = 2, window 2.
    cvs = [0b0011, 0b1100, 0b0110, 0b0001, 0b1000, 0b0100]
    slot, k = cm.merge_columns(cvs, 2, 2)
    # 0011 -> s0; 1100 -> s0 (disjoint, 2 members, full); 0110 conflicts? s0 full -> s1;
    # 0001 -> s1 (disjoint from 0110); 1000 -> s0 full, s1 full -> s2;
    # 0100 -> window = {s1, s2}: s1 full, s2 = 1000 disjoint -> s2.
    assert slot.tolist() == [0, 0, 1, 1, 2, 2]
    assert k.tolist() == [0, 1, 0, 1, 0, 1]
    # window 1: only the newest slot is a candidate
    slot, _ = cm.merge_columns([0b01, 0b11, 0b10], 2, 1)
    assert slot.tolist() == [0, 1, 2]     # 10 cannot go back to slot 0 (out of window)
    slot, _ = cm.merge_columns([0b01, 0b11, 0b10], 2, 2)
    assert slot.tolist() == [0, 1, 0]


def test_select_vectors_hand_case():
    cfg = TOY  # R = 8, C = 3
    mask = np.zeros((8, 4), bool)
    mask[0:4, 2] = True   # popcount 4
    mask[4:6, 0] = True   # popcount 2
    mask[6, 3] = True     # popcount 1
    mask[0, 1] = True     # popcount 1, conflicts with column 2 on row 0
    plan = cm.conmerge(cfg, mask, merge_ways=2)
    # sorted: 2, 0, 1, 3. slot0 = [2, 0]; 1 conflicts with slot0 -> slot1 = [1]; 3 -> slot1.
    (p,) = plan.passes
    assert p.members.tolist() == [[2, 0], [1, 3], [-1, -1]]
    assert p.select[:, 0].tolist() == [0, 0, 0, 0, 1, 1, -1, -1]
    assert p.select[:, 1].tolist() == [0, -1, -1, -1, -1, -1, 1, -1]
    assert (p.select[:, 2] == -1).all()
    assert p.targets()[:, 1].tolist() == [1, -1, -1, -1, -1, -1, 3, -1]


# ---------------------------------------------------------------------------------------
# check_plan must catch broken plans
# ---------------------------------------------------------------------------------------
def _broken(plan, **arrays):
    return dataclasses.replace(plan, **{k: np.array(v) for k, v in arrays.items()})


def test_check_plan_catches_errors():
    cfg = TOY
    rng = np.random.default_rng(3)
    mask = rng.random((16, 9)) < 0.3
    mask[:, 8] = False
    plan = cm.conmerge(cfg, mask, merge_ways=2)
    cm.check_plan(cfg, mask, plan)
    sel = plan.select.copy()
    p, r, c = np.argwhere(sel >= 0)[0]
    sel[p, r, c] = -1                                  # drop one output
    with pytest.raises(AssertionError, match="select"):
        cm.check_plan(cfg, mask, _broken(plan, select=sel))
    mem = plan.members.copy()
    mem[0, 0, 0] = -1                                  # unpacked / missing member
    with pytest.raises(AssertionError):
        cm.check_plan(cfg, mask, _broken(plan, members=mem))
    other = mask.copy()
    other[3, 8] = True                                 # column 8 is in no slot
    with pytest.raises(AssertionError, match="never computed"):
        cm.check_plan(cfg, other, plan)                # a masked output nobody computes
    dp = cm.dense_plan(cfg, *mask.shape)
    with pytest.raises(AssertionError):
        cm.check_plan(cfg, mask, dp)                   # computes unmasked outputs
    # two columns that conflict forced into one slot
    m2 = np.zeros((8, 2), bool)
    m2[0, :] = True
    pl = cm.conmerge(cfg, m2, merge_ways=2)
    assert pl.n_passes == 1
    bad_mem = np.array([[[0, 1], [-1, -1], [-1, -1]]], dtype=np.int32)
    bad_sel = pl.select.copy()
    with pytest.raises(AssertionError, match="conflict"):
        cm.check_plan(cfg, m2, _broken(pl, members=bad_mem, select=bad_sel))
    # the same output computed twice, by two passes
    m1 = np.zeros((8, 1), bool)
    m1[0, 0] = True
    pl = cm.conmerge(cfg, m1, merge_ways=1)
    two = dataclasses.replace(pl, row_block=np.r_[pl.row_block, pl.row_block],
                              rows=np.r_[pl.rows, pl.rows],
                              members=np.r_[pl.members, pl.members],
                              select=np.r_[pl.select, pl.select])
    with pytest.raises(AssertionError, match="more than once"):
        cm.check_plan(cfg, m1, two)


# ---------------------------------------------------------------------------------------
# masked GEMM and executor
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg_name", list(CONFIGS))
def test_masked_gemm_against_python_ints(cfg_name):
    cfg = CONFIGS[cfg_name]
    rng = np.random.default_rng(11)
    a, b = rand_operands(cfg, rng, 9, 13, 6)
    a[0, :] = cfg.wmin                                   # extreme operands
    b[:, 0] = cfg.wmin
    mask = rng.random((9, 6)) < 0.5
    mask[0, 0] = True
    ref = np.array(ref_matmul(a, b), dtype=np.int64)
    got = cm.masked_gemm(cfg, a, b, mask)
    np.testing.assert_array_equal(got, np.where(mask, ref, 0))
    old = np.full((9, 6), 77, dtype=np.int64)
    keep = old.copy()
    got = cm.masked_gemm(cfg, a, b, mask, out=old)
    np.testing.assert_array_equal(got, np.where(mask, ref, 77))
    np.testing.assert_array_equal(old, keep)             # out is not modified


def test_masked_gemm_k_max_exact():
    cfg = TOY  # k_max 256, W 12, A 32: worst case sum = 256 * 2**22 = 2**30 < 2**31
    K = cfg.k_max
    a = np.full((2, K), cfg.wmin)
    b = np.full((K, 3), cfg.wmin)
    got = cm.masked_gemm(cfg, a, b, np.ones((2, 3), bool))
    assert (got == K * cfg.wmin * cfg.wmin).all()
    with pytest.raises(ExionError, match=r"K = 257 exceeds config 'toy' k_max = 256"):
        cm.masked_gemm(cfg, np.zeros((2, K + 1), int), np.zeros((K + 1, 3), int),
                       np.ones((2, 3), bool))


def test_masked_gemm_errors_name_array_and_shape():
    cfg = TOY
    a, b = np.zeros((4, 5), int), np.zeros((5, 3), int)
    with pytest.raises(ExionError, match=r"mask: shape \(4, 4\) does not match .* \(4, 3\)"):
        cm.masked_gemm(cfg, a, b, np.ones((4, 4), bool))
    with pytest.raises(ExionError, match=r"mask: expected a 2-D boolean array, got shape"):
        cm.masked_gemm(cfg, a, b, np.ones((4, 3, 1), bool))
    with pytest.raises(ExionError, match=r"mask: expected boolean \(0/1\) values"):
        cm.masked_gemm(cfg, a, b, np.full((4, 3), 2))
    with pytest.raises(ExionError, match=r"shapes do not chain: A is \(4, 5\), B is \(4, 3\)"):
        cm.masked_gemm(cfg, a, np.zeros((4, 3), int), np.ones((4, 3), bool))
    with pytest.raises(ExionError, match=r"B: values must be in \[-2048, 2047\]"):
        cm.masked_gemm(cfg, a, np.full((5, 3), 2048), np.ones((4, 3), bool))
    with pytest.raises(ExionError, match=r"out: shape \(3, 3\)"):
        cm.masked_gemm(cfg, a, b, np.ones((4, 3), bool), out=np.zeros((3, 3), int))
    with pytest.raises(ExionError, match="merge_ways = 9 is invalid"):
        cm.conmerge(cfg, np.ones((4, 3), bool), merge_ways=9)
    with pytest.raises(ExionError, match="sort = 'random' is not a sorting strategy"):
        cm.conmerge(cfg, np.ones((4, 3), bool), sort="random")
    with pytest.raises(ExionError, match="window = 0 is invalid"):
        cm.conmerge(cfg, np.ones((4, 3), bool), window=0)


def test_wrap_in_accumulate():
    cfg = TOY  # A = 32
    a = np.array([[1]])
    b = np.array([[1]])
    got = cm.masked_gemm(cfg, a, b, np.ones((1, 1), bool), out=np.array([[2 ** 31 - 1]]),
                         accumulate=True)
    assert got[0, 0] == -2 ** 31


# ---------------------------------------------------------------------------------------
# input (reduction) condensing
# ---------------------------------------------------------------------------------------
def test_reduction_chunks_hand_case():
    cfg = TOY  # L = 4
    a = np.zeros((3, 10), int)        # chunks [0..3], [4..7], [8..9 + pad]
    assert cm.reduction_chunks(cfg, a).tolist() == []
    a[2, 9] = 5
    assert cm.reduction_chunks(cfg, a).tolist() == [2]
    a[0, 0] = -1
    assert cm.reduction_chunks(cfg, a).tolist() == [0, 2]
    assert cm.reduction_chunks(cfg, a != 0).tolist() == [0, 2]


@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("m", [1, 2])
def test_input_sparse_executor(cfg_name, m):
    cfg = CONFIGS[cfg_name]
    rng = np.random.default_rng(5)
    M, K, N = 2 * cfg.rows + 1, 6 * cfg.lanes + 1, 2 * cfg.cols + 1
    a, b = rand_operands(cfg, rng, M, K, N)
    a[rng.random((M, K)) < 0.85] = 0
    a[: cfg.rows] = 0                                  # a whole row block of zero input
    mask = rng.random((M, N)) < 0.4
    cfg = with_ways(cfg, m)
    plan = cm.conmerge(cfg, mask, merge_ways=m)
    old = rng.integers(-50, 50, (M, N))
    ref = np.array(ref_matmul(a, b), dtype=np.int64)
    for acc in (False, True):
        got = cm.execute_plan(cfg, a, b, plan, out=old, accumulate=acc, input_sparse=True)
        want = np.where(mask, ref + (old if acc else 0), old)
        np.testing.assert_array_equal(got, want)
    kw = cm.pass_k_words(cfg, plan, K, a != 0)
    for p, w in zip(plan.passes, kw):
        rows = p.rows[p.rows >= 0]
        nz = {k // cfg.lanes for k in range(K) if (a[rows, k] != 0).any()}
        assert w == len(nz)


# ---------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------
def test_figures_hand_case():
    cfg = TOY
    mask = np.zeros((8, 6), bool)
    mask[0:4, 0] = mask[4:8, 1] = mask[0, 2] = True      # 9 masked outputs
    plan = cm.conmerge(cfg, mask, merge_ways=2)
    f = plan.figures()
    assert f["dense_passes"] == 2
    assert f["condense_passes"] == 1
    assert f["conmerge_passes"] == 1
    assert f["masked"] == 9
    assert f["utilization"] == pytest.approx(9 / 24)
    assert f["dense_utilization"] == pytest.approx(9 / 48)
    assert cm.conmerge(cfg, np.zeros((3, 3), bool)).figures()["utilization"] == 0.0


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
@pytest.fixture
def cli_main(monkeypatch, tmp_path):
    """``exion.gen.cli.main``, running in a temporary directory."""
    from exion.gen import cli
    monkeypatch.chdir(tmp_path)
    return cli.main


def test_cli_conmerge_writes_json(cli_main, tmp_path, capsys):
    mask = np.zeros((16, 6), bool)
    mask[0:4, 0] = mask[4:8, 1] = mask[0, 2] = True
    np.save(tmp_path / "m.npy", mask)
    assert cli_main(["golden", "conmerge", "--config", "toy", "--mask", "m.npy"]) == 0
    out = capsys.readouterr().out
    assert "condense-only" in out and "ConMerge" in out
    data = json.loads((tmp_path / "build/golden/conmerge.json").read_text())
    f = data["figures"]
    assert (f["dense_passes"], f["condense_passes"], f["conmerge_passes"]) == (4, 1, 1)
    assert f["masked"] == 9
    assert cli_main(["golden", "conmerge", "--config", "toy", "--mask", "m.npy",
                     "--merge-ways", "1", "--sort", "none", "--window", "1",
                     "--json", "x/o.json"]) == 0
    f = json.loads((tmp_path / "x/o.json").read_text())["figures"]
    assert (f["merge_ways"], f["sort"], f["window"], f["conmerge_passes"]) == (1, "none", 1, 1)


def test_cli_cycles(cli_main, tmp_path, capsys):
    np.save(tmp_path / "m.npy", np.ones((8, 3), bool))
    assert cli_main(["golden", "cycles", "--config", "toy", "--mask", "m.npy", "--k", "8",
                     "--json", "c.json"]) == 0
    d = json.loads((tmp_path / "c.json").read_text())
    # one pass of 2 beats: max(2, C=3) + C (3) + dpu_latency (3) + in (3) + drain (2) = 14
    assert d["dense"]["sdue_cycles"] == d["conmerge"]["sdue_cycles"] == 14
    assert set(d["engine"]) == {"row-block", "col-group", "col-group-single",
                                "col-group-auto-k", "col-group-striped", "row-block-compact",
                                "col-group-compact", "col-group-loader"}
    assert d["engine"]["col-group-loader"]["exact"] is False
    assert "bound" in capsys.readouterr().out
    # a column-concentrated mask: the compacted rows keep its needed columns only, and
    # report the bytes and cycles of that smaller product (fewer than uncompacted)
    m = np.zeros((16, 12), bool)
    m[:, [1, 5, 6]] = True
    np.save(tmp_path / "c.npy", m)
    assert cli_main(["golden", "cycles", "--config", "toy", "--mask", "c.npy", "--k", "40",
                     "--json", "c2.json"]) == 0
    e = json.loads((tmp_path / "c2.json").read_text())["engine"]
    assert e["col-group-compact"]["compact"] == {"cols": 3, "k": 40}
    assert e["col-group-compact"]["striped"] and e["col-group-compact"]["exact"]
    assert e["col-group-compact"]["cycles"] < e["col-group-auto-k"]["cycles"]
    assert e["row-block-compact"]["cycles"] <= e["row-block"]["cycles"]
    assert "3 of 12 columns kept" in capsys.readouterr().out


@pytest.mark.parametrize("kind,args,msg", [
    ("missing", ["--mask", "nope.npy"], "--mask: file 'nope.npy' does not exist"),
    ("3d", ["--mask", "m3.npy"], "--mask: 'm3.npy' has shape (2, 2, 2), expected a 2-D array"),
    ("values", ["--mask", "m2.npy"], "--mask: 'm2.npy' must hold boolean (0/1) values"),
    ("float", ["--mask", "mf.npy"], "--mask: 'mf.npy' must hold boolean (0/1) values"),
    ("ways", ["--mask", "ok.npy", "--merge-ways", "9"],
     "--merge-ways: merge_ways = 9 is invalid for config 'toy': must be an integer in 1..2"),
    ("window", ["--mask", "ok.npy", "--window", "0"], "--window: 0 is invalid"),
])
@pytest.mark.parametrize("cmd", ["conmerge", "cycles"])
def test_cli_errors(cli_main, tmp_path, capsys, kind, args, msg, cmd):
    np.save(tmp_path / "m3.npy", np.zeros((2, 2, 2), bool))
    np.save(tmp_path / "m2.npy", np.full((2, 2), 2))
    np.save(tmp_path / "mf.npy", np.full((2, 2), 0.5))
    np.save(tmp_path / "ok.npy", np.ones((2, 2), bool))
    rc = cli_main(["golden", cmd, "--config", "toy", *args, "--json", "out.json"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("exion: error: ") and msg in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out.json").exists()
    assert not (tmp_path / "build").exists()


def test_cli_help_explains_options(cli_main, capsys):
    for cmd in ("conmerge", "cycles"):
        with pytest.raises(SystemExit) as e:
            cli_main(["golden", cmd, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        for opt in ("--config", "--mask", "--merge-ways", "--sort", "--window", "--json"):
            assert opt in out
    assert "reduction length" in out
