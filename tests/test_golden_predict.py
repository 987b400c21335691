"""Eager prediction (SPEC 3.4): selection semantics, stage-by-stage composition, the CLI."""

import json
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from exion import PRESETS
from exion.errors import ExionError
from exion.golden.lod import lod_approx
from exion.golden.predict import dominant_rows, eager_predict, keep_count, stage1_shift, \
    topk_select

TOY = PRESETS["toy"]


# -- selection --------------------------------------------------------------------------
def test_topk_ties_at_kth_place_lower_index_wins():
    s = np.array([[5, 3, 5, 3, 1]])
    assert topk_select(s, 2).tolist() == [[True, False, True, False, False]]
    assert topk_select(s, 3).tolist() == [[True, True, True, False, False]]
    assert topk_select(s, 0).tolist() == [[False] * 5]
    assert topk_select(s, 5).tolist() == [[True] * 5]


def test_topk_all_equal_scores_keeps_lowest_indices():
    s = np.full((3, 6), -7)
    want = np.zeros((3, 6), dtype=bool)
    want[:, :4] = True
    np.testing.assert_array_equal(topk_select(s, 4), want)


def ref_topk(row, k_n):
    order = sorted(range(len(row)), key=lambda j: (-int(row[j]), j))[:k_n]
    return [j in order for j in range(len(row))]


@settings(deadline=None, max_examples=60)
@given(hnp.arrays(np.int64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12),
                  elements=st.integers(-4, 4)), st.data())
def test_topk_matches_sorted_reference(scores, data):
    k_n = data.draw(st.integers(0, scores.shape[1]))
    got = topk_select(scores, k_n)
    assert got.tolist() == [ref_topk(r, k_n) for r in scores]


def test_dominant_gap_exactly_at_threshold():
    s = np.array([[10, 4, 0], [10, 5, 0], [3, 9, 9], [1, 1, 1]])
    # gaps: 6, 5, 0, 0
    assert dominant_rows(s, 6).tolist() == [True, False, False, False]
    assert dominant_rows(s, 5).tolist() == [True, True, False, False]
    assert dominant_rows(s, 7).tolist() == [False] * 4
    assert dominant_rows(s, 0).tolist() == [True] * 4      # every gap is >= 0
    assert dominant_rows(s, None).tolist() == [False] * 4  # rule disabled
    assert dominant_rows(np.array([[5], [-3]]), 10**6).tolist() == [True, True]  # one key
    with pytest.raises(ExionError, match="q_th_int must be an integer >= 0"):
        dominant_rows(s, -1)


def test_keep_count():
    assert keep_count(0, 10) == 1          # k = 0 keeps the top-1 (choice)
    assert keep_count(0.1, 10) == 1        # the decimal 0.1, not the float above it
    assert keep_count(0.7, 10) == 7
    assert keep_count(0.05, 256) == 13     # ceil(12.8)
    assert keep_count(1, 7) == 7
    assert keep_count("0.5", 3) == 2
    assert keep_count(Fraction(1, 3), 9) == 3
    for bad in (-0.1, 1.5, "x"):
        with pytest.raises(ExionError, match="k \\(top-k ratio\\)"):
            keep_count(bad, 10)


def test_stage1_shift():
    assert stage1_shift(np.array([5000, -3]), 12) == 2     # 4096 <= 5000 < 8192
    assert stage1_shift(np.array([4095, -4096]), 12) == 1
    assert stage1_shift(np.array([4095, -4097]), 12) == 2
    assert stage1_shift(np.array([2047, -2048]), 12) == 0


# -- eager_predict on a hand-derived case ----------------------------------------------
X = np.array([[7, 0], [3, 5], [-6, 2]])
EYE = np.eye(2, dtype=np.int64)


def test_hand_case_ts_lod():
    r = eager_predict(TOY, X, EYE, EYE, k=0.5, shift_q=0, shift_k=0, q_th_int=18,
                      lod_terms=2)
    # TS-LOD: 7 -> 6, others exact; Sh = Qh Kh^T of [[6,0],[3,5],[-6,2]].
    np.testing.assert_array_equal(r.qh, [[6, 0], [3, 5], [-6, 2]])
    np.testing.assert_array_equal(r.sh, [[36, 18, -36], [18, 34, -8], [-36, -8, 40]])
    assert r.k_n == 2
    np.testing.assert_array_equal(r.topk_mask, [[1, 1, 0], [1, 1, 0], [0, 1, 1]])
    assert r.dominant.tolist() == [True, False, True]        # gaps 18, 16, 48
    np.testing.assert_array_equal(r.score_mask, [[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    assert r.q_needed.tolist() == [False, True, False]
    assert r.key_needed.tolist() == [True, True, True]
    assert r.k_needed.tolist() == [True, True, False]
    assert (r.skipped_q, r.skipped_k, r.skipped_v) == (2, 1, 0)
    assert r.sparsity == pytest.approx(5 / 9)


def test_hand_case_keep_all_and_disabled():
    r = eager_predict(TOY, X, EYE, EYE, k=0.5, shift_q=0, shift_k=0, q_th_int=18,
                      polarity="keep_all", lod_terms=2)
    np.testing.assert_array_equal(r.score_mask, [[1, 1, 1], [1, 1, 0], [1, 1, 1]])
    assert r.skipped_q == 0 and r.kept == 8
    r = eager_predict(TOY, X, EYE, EYE, k=0.5, shift_q=0, shift_k=0, q_th_int=None)
    np.testing.assert_array_equal(r.score_mask, r.topk_mask)
    assert r.kept == 6 and not r.dominant.any()


def test_hand_case_plain_lod_and_k0():
    r = eager_predict(TOY, X, EYE, EYE, k=0, shift_q=0, shift_k=0, lod_terms=1)
    np.testing.assert_array_equal(r.qh, [[4, 0], [2, 4], [-4, 2]])
    np.testing.assert_array_equal(r.sh, [[16, 8, -16], [8, 20, 0], [-16, 0, 20]])
    assert r.k_n == 1
    np.testing.assert_array_equal(r.score_mask, np.eye(3, dtype=bool))


def test_shift_is_floor_and_saturates():
    # Qh_acc = approx(x) with wq = I; shift 1: floor(-5/2) = -3; 2047 >> 0 saturates? no.
    x = np.array([[-5, 1], [2047, -2048]])
    r = eager_predict(TOY, x, EYE, EYE, k=1, shift_q=1, shift_k=0, lod_terms=2)
    np.testing.assert_array_equal(r.qh_acc, [[-5, 1], [1536, -2048]])
    np.testing.assert_array_equal(r.qh, [[-3, 0], [768, -1024]])
    # Two rows summed into one projection column overflow W bits and saturate.
    w = np.array([[1, 0], [-1, 0]])
    r = eager_predict(TOY, np.array([[2047, -2047]]), w, w, k=1, shift_q=0, shift_k=1)
    assert r.qh_acc.tolist() == [[3072, 0]] and r.qh.tolist() == [[2047, 0]]
    assert r.kh.tolist() == [[1536, 0]]


@pytest.mark.parametrize("terms", [1, 2])
@pytest.mark.parametrize("cfg", [PRESETS["toy"], PRESETS["exion16"]], ids=["toy", "exion16"])
def test_stages_compose_on_random_data(cfg, terms):
    """Each stage equals an independent formulation from the previous stage's output."""
    rng = np.random.default_rng(7)
    n, d, dh = 9, 24, 5
    x = rng.integers(cfg.wmin, cfg.wmax + 1, (n, d))
    wq = rng.integers(cfg.wmin, cfg.wmax + 1, (d, dh))
    wk = rng.integers(cfg.wmin, cfg.wmax + 1, (d, dh))
    r = eager_predict(cfg, x, wq, wk, k=0.3, q_th_int=2**20, lod_terms=terms)
    ax = lod_approx(x, terms).astype(object)
    np.testing.assert_array_equal(r.qh_acc, (ax @ lod_approx(wq, terms).astype(object))
                                  .astype(np.int64))
    lo, hi = cfg.wmin, cfg.wmax
    np.testing.assert_array_equal(r.qh, np.clip(np.floor_divide(r.qh_acc, 2**r.shift_q),
                                                lo, hi))
    assert np.abs(r.qh).max() > hi // 2           # the calibrated shift uses the range
    sh = lod_approx(r.qh, terms).astype(object) @ lod_approx(r.kh, terms).astype(object).T
    np.testing.assert_array_equal(r.sh, sh.astype(np.int64))
    assert r.k_n == 3
    for i in range(n):
        if r.dominant[i]:
            assert r.score_mask[i].sum() == 1 and r.score_mask[i, np.argmax(r.sh[i])]
        else:
            assert r.score_mask[i].tolist() == ref_topk(r.sh[i], 3)
    assert r.key_needed.tolist() == r.score_mask.any(axis=0).tolist()


def test_cross_attention_x_kv():
    xkv = np.array([[1, 1], [4, -4], [0, 3], [2, 2]])
    r = eager_predict(TOY, X, EYE, EYE, k=0.5, shift_q=0, shift_k=0, x_kv=xkv)
    assert r.score_mask.shape == (3, 4) and r.k_n == 2


def test_exact_keys_by_hand():
    # Kh is the given K (no shift, no approximation until stage 2); Qh as always. X = rows
    # [[7, 0], [3, 5], [-6, 2]], Wq = I, TS-LOD: Qh = [[6, 0], [3, 5], [-6, 2]];
    # K = [[7, 1], [0, -3]]: TS-LOD in stage 2 -> [[6, 1], [0, -3]]
    r = eager_predict(TOY, X, EYE, None, k=0.5, shift_q=0, lod_terms=2,
                      k_exact=np.array([[7, 1], [0, -3]]))
    np.testing.assert_array_equal(r.kh, [[7, 1], [0, -3]])
    assert r.shift_k == 0 and r.k_n == 1
    np.testing.assert_array_equal(r.sh, [[36, 0], [18 + 5, -15], [-36 + 2, -6]])
    np.testing.assert_array_equal(r.score_mask, [[1, 0], [1, 0], [0, 1]])
    assert r.key_needed.tolist() == [True, True]


def test_exact_keys_errors():
    kx = np.zeros((3, 2), int)
    with pytest.raises(ExionError, match="wk must be None with k_exact"):
        eager_predict(TOY, X, EYE, EYE, k=0.5, k_exact=kx)
    with pytest.raises(ExionError, match="shift_k must be None with k_exact"):
        eager_predict(TOY, X, EYE, None, k=0.5, shift_k=1, k_exact=kx)
    with pytest.raises(ExionError, match="k_exact: shape \\(3, 3\\) does not fit wq"):
        eager_predict(TOY, X, EYE, None, k=0.5, k_exact=np.zeros((3, 3), int))
    with pytest.raises(ExionError, match="k_exact: values must be in \\[-2048, 2047\\]"):
        eager_predict(TOY, X, EYE, None, k=0.5, k_exact=kx + 5000)
    with pytest.raises(ExionError, match="wq: shape \\(3, 2\\) does not fit x"):
        eager_predict(TOY, X, np.ones((3, 2), int), None, k=0.5, k_exact=kx)


def test_errors():
    with pytest.raises(ExionError, match="wq: shape \\(3, 2\\)"):
        eager_predict(TOY, X, np.ones((3, 2), int), EYE, k=0.5)
    with pytest.raises(ExionError, match="polarity"):
        eager_predict(TOY, X, EYE, EYE, k=0.5, polarity="bottom")
    with pytest.raises(ExionError, match="k \\(top-k ratio\\) must be in \\[0, 1\\]"):
        eager_predict(TOY, X, EYE, EYE, k=1.2)
    with pytest.raises(ExionError, match="x: values must be in \\[-2048, 2047\\]"):
        eager_predict(TOY, X * 1000, EYE, EYE, k=0.5)
    with pytest.raises(ExionError, match="k_max"):
        eager_predict(TOY, np.zeros((2, 257), int), np.zeros((257, 2), int),
                      np.zeros((257, 2), int), k=0.5)
    with pytest.raises(ExionError, match="shift_q must be an integer in \\[0, 31\\]"):
        eager_predict(TOY, X, EYE, EYE, k=0.5, shift_q=32)


# -- CLI ----------------------------------------------------------------------------------


def test_cli_predict(cli_run, tmp_path):
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "w.npy", EYE)
    js, mk = tmp_path / "o" / "p.json", tmp_path / "m.npy"
    code, out, err = cli_run("golden", "predict", "--config", "toy", "--x", str(tmp_path / "x.npy"),
                         "--wq", str(tmp_path / "w.npy"), "--wk", str(tmp_path / "w.npy"),
                         "--k", "0.5", "--qth", "18", "--shift-q", "0", "--shift-k", "0",
                         "--json", str(js), "--out", str(mk))
    assert code == 0, err
    assert "dominant rows       2 of 3" in out and "Q 2, K 1, V 0" in out
    data = json.loads(js.read_text())
    assert data["kept"] == 4 and data["k_n"] == 2 and data["dominant_rows"] == 2
    np.testing.assert_array_equal(np.load(mk), [[1, 0, 0], [1, 1, 0], [0, 0, 1]])


def test_cli_predict_errors(cli_run, tmp_path):
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "w3.npy", np.ones((3, 2), int))
    np.save(tmp_path / "w.npy", EYE)
    np.save(tmp_path / "f.npy", EYE + 0.5)
    js = tmp_path / "p.json"
    base = ["golden", "predict", "--x", str(tmp_path / "x.npy"), "--json", str(js)]
    code, _, err = cli_run(*base, "--wq", str(tmp_path / "w3.npy"), "--wk",
                       str(tmp_path / "w.npy"), "--k", "0.5")
    assert code == 2
    assert "--wq" in err and "w3.npy" in err and "(3, 2)" in err and "(3, 2)" in err
    code, _, err = cli_run(*base, "--wq", str(tmp_path / "w.npy"), "--wk",
                       str(tmp_path / "w.npy"), "--k", "1.5")
    assert code == 2 and "--k must be in [0, 1], got 1.5" in err
    code, _, err = cli_run(*base, "--wq", str(tmp_path / "nope.npy"), "--wk",
                       str(tmp_path / "w.npy"), "--k", "0.5")
    assert code == 2 and "--wq: file" in err and "does not exist" in err
    code, _, err = cli_run(*base, "--wq", str(tmp_path / "f.npy"), "--wk",
                       str(tmp_path / "w.npy"), "--k", "0.5")
    assert code == 2 and "non-integer" in err and "f.npy" in err
    assert not js.exists()


def test_cli_predict_exact_keys(cli_run, tmp_path):
    # the hand case of test_exact_keys_by_hand through the CLI
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "w.npy", EYE)
    np.save(tmp_path / "k.npy", np.array([[7, 1], [0, -3]]))
    np.save(tmp_path / "k3.npy", np.zeros((2, 3), int))
    js, mk = tmp_path / "p.json", tmp_path / "m.npy"
    base = ["golden", "predict", "--config", "toy", "--x", str(tmp_path / "x.npy"),
            "--wq", str(tmp_path / "w.npy"), "--k", "0.5", "--shift-q", "0", "--lod-terms", "2"]
    code, out, err = cli_run(*base, "--k-exact", str(tmp_path / "k.npy"), "--json", str(js),
                             "--out", str(mk))
    assert code == 0, err
    assert "N_q = 3, N_k = 2" in out and "exact keys" in out and "K given" in out
    np.testing.assert_array_equal(np.load(mk), [[1, 0], [1, 0], [0, 1]])
    assert json.loads(js.read_text())["inputs"]["k_exact"] == str(tmp_path / "k.npy")
    js.unlink()
    for extra, msg in (([], "give one of --wk"),
                       (["--wk", str(tmp_path / "w.npy"), "--k-exact", str(tmp_path / "k.npy")],
                        "give one of --wk"),
                       (["--k-exact", str(tmp_path / "k3.npy")], "--k-exact: "),
                       (["--k-exact", str(tmp_path / "k.npy"), "--shift-k", "1"],
                        "--shift-k does not apply")):
        code, _, err = cli_run(*base, *extra, "--json", str(js))
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
        assert not js.exists()


def test_cli_help_lists_options(cli_run, capsys):
    with pytest.raises(SystemExit) as e:
        cli_run("golden", "predict", "--help")
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--x", "--wq", "--wk", "--k-exact", "--k", "--qth", "--polarity",
                "--lod-terms", "--shift-q", "--json", "--out", "--config"):
        assert opt in out


def test_threshold_select_equals_topk_select_on_ties():
    """The EPRE's selection (kN-th element, then a threshold pass; rows independent, so S
    selectors take S rows at once) equals the stable-sort rule, ties included."""
    from exion.golden.predict import threshold_select, topk_select
    rng = np.random.default_rng(18)
    for _ in range(40):
        n_q, n_k = int(rng.integers(1, 9)), int(rng.integers(1, 40))
        s = rng.integers(-3, 4, size=(n_q, n_k)) * int(rng.choice([1, 1 << 30]))  # many ties
        for k_n in {0, 1, n_k // 2, n_k - 1 if n_k > 1 else 1, n_k}:
            mask, T, t = threshold_select(s, k_n)
            np.testing.assert_array_equal(mask, topk_select(s, k_n))
            assert (mask.sum(axis=1) == k_n).all()
            if k_n:
                assert (s[np.arange(n_q), t] == T).all()
