"""FFN-Reuse (SPEC 3.3): schedule, histogram threshold, mask rules, exact delta FC2, CLI."""

import json
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from exion import PRESETS
from exion.errors import ExionError
from exion.golden import ffn_reuse as fr
from exion.golden.cfse import gelu_params, gelu_requant
from exion.golden.quant import int_matmul

TOY = PRESETS["toy"]


# -- schedule ---------------------------------------------------------------------------
def test_schedule():
    assert fr.schedule(7, 2).tolist() == [1, 0, 0, 1, 0, 0, 1]
    assert fr.schedule(4, 0).tolist() == [1, 1, 1, 1]
    assert fr.schedule(10, 9).tolist() == [1] + [0] * 9
    # dense_tail 0.3 of 10 -> the last 3 are dense.
    assert fr.schedule(10, 4, dense_tail=0.3).tolist() == [1, 0, 0, 0, 0, 1, 0, 1, 1, 1]
    # 0.05 of 50 = 2.5 -> the last 3.
    s = fr.schedule(50, 9, dense_tail=0.05)
    assert s[47:].all() and not s[46] and s[40] and s.sum() == 5 + 3
    assert fr.is_dense(12, 5) and not fr.is_dense(13, 5)
    assert fr.is_dense(9, 4, num_iters=10, dense_tail=0.1)
    with pytest.raises(ExionError, match="N \\(sparse iterations"):
        fr.schedule(5, -1)
    with pytest.raises(ExionError, match="dense_tail must be in \\[0, 1\\]"):
        fr.schedule(5, 1, dense_tail=2)


# -- histogram ----------------------------------------------------------------------------
def ref_bin(v: int, M: int) -> int:
    if v < 2 ** (M + 1):
        return v
    e = v.bit_length() - 1
    return (e - M + 1) * 2**M + ((v >> (e - M)) - 2**M)


@pytest.mark.parametrize("M", [0, 2, 4, 10])
def test_hist_bins(M):
    v = np.arange(0, 4097)
    np.testing.assert_array_equal(fr.hist_bin(v, M), [ref_bin(int(x), M) for x in v])
    nb = fr.num_bins(4096, M)
    edges = fr.hist_bin_edges(nb, M)
    # each edge is the smallest member of its bin
    np.testing.assert_array_equal(fr.hist_bin(edges, M), np.arange(nb))
    np.testing.assert_array_equal(fr.hist_bin(edges[1:] - 1, M), np.arange(nb - 1))


def test_hist_bins_hand():
    # M = 2: 0..7 exact, then width 2 (8..15), width 4 (16..31) ...
    assert fr.hist_bin(np.array([7, 8, 9, 10, 15, 16, 19, 20, 2048]), 2).tolist() == \
        [7, 8, 8, 9, 11, 12, 12, 13, 40]
    assert fr.num_bins(2048, 4) == 129   # W = 12 at M = 4


def ref_threshold(mags, s, M, bits):
    """Brute force over every bin edge (and 'above all'): closest count, ties -> larger; the
    target count in exact arithmetic (float 1 - 0.95 is not 0.05: a float target turned the
    tie of ``[0] * 9 + [1]`` at s = 0.95 into a win for the lower edge)."""
    nb = fr.num_bins(2 ** (bits - 1), M)
    edges = [int(e) for e in fr.hist_bin_edges(nb + 1, M)]
    target = (1 - fr.as_fraction(s, "s")) * len(mags)   # exact, as golden: s as it prints
    best = min(edges, key=lambda th: (abs(sum(m >= th for m in mags) - target), -th))
    return best


@settings(deadline=None, max_examples=40)
@example(vals=[0] * 9 + [1], s=0.95, M=0)      # an exact tie a float target breaks
@given(st.lists(st.integers(-2047, 2047), min_size=1, max_size=80),
       st.sampled_from([0.0, 0.5, 0.8, 0.9, 0.95, 0.97, 1.0]), st.sampled_from([0, 2, 4]))
def test_threshold_matches_brute_force(vals, s, M):
    h = np.array(vals)[None, :]
    theta = fr.threshold_from_histogram(fr.abs_histogram(h, 12, M), s, M)
    mags = [abs(v) for v in vals]
    assert theta == ref_threshold(mags, s, M, 12)
    # Within one histogram bin of the target: half of the straddled bin's count.
    ones = sum(m >= theta for m in mags)
    target = (1 - fr.as_fraction(s, "s")) * len(mags)
    counts = {}
    for m in mags:
        counts[ref_bin(m, M)] = counts.get(ref_bin(m, M), 0) + 1
    suffix = lambda b: sum(c for k, c in counts.items() if k >= b)  # noqa: E731
    straddle = [b for b in range(fr.num_bins(2048, M))
                if suffix(b + 1) <= target <= suffix(b)]
    assert any(abs(ones - target) <= counts.get(b, 0) / 2 + 1e-9 for b in straddle)


def test_threshold_hand_case():
    h = np.arange(100)[None, :]
    mask, theta = fr.build_mask(h, 0.9, width=12, mant_bits=4)
    # edges near 90 (width-4 bins from 64): ones(88) = 12, ones(92) = 8; tie -> 92.
    assert theta == 92 and mask.sum() == 8
    mask, theta = fr.build_mask(h, 0.9, width=12, mant_bits=10)   # one bin per value
    assert theta == 90 and mask.sum() == 10
    assert fr.build_mask(h, 1.0)[0].sum() == 0
    assert fr.build_mask(h, 0.0)[0].all()


def test_one_bin_per_value_is_optimal():
    rng = np.random.default_rng(5)
    h = rng.integers(-2047, 2048, (8, 50))
    for s in (0.5, 0.9, 0.97):
        mask, theta = fr.build_mask(h, s, width=12, mant_bits=10)
        target = (1 - s) * h.size
        best = min(abs(int((np.abs(h) >= t).sum()) - target) for t in range(0, 2050))
        assert abs(int(mask.sum()) - target) == best


def test_per_token_rule():
    rng = np.random.default_rng(9)
    h = rng.integers(-20, 21, (6, 30))
    mask, theta = fr.build_mask(h, 0.8, rule="per_token")
    assert theta is None
    c = 6   # floor(0.2 * 30 + 1/2)
    for row, m in zip(h, mask):
        order = sorted(range(30), key=lambda j: (-abs(int(row[j])), j))[:c]
        assert m.tolist() == [j in order for j in range(30)]


def test_change_rule():
    h = np.array([[10, 10, 10, 10]])
    hp = np.array([[0, 10, 7, 10]])
    mask, theta = fr.build_mask(h, 0.5, rule="change", h_prev=hp, width=12)
    assert mask.tolist() == [[True, False, True, False]] and theta == 3
    # no previous dense H: falls back to magnitude
    m2, _ = fr.build_mask(np.array([[1, 9, 2, 8]]), 0.5, rule="change")
    assert m2.tolist() == [[False, True, False, True]]


# -- the FFN -------------------------------------------------------------------------------
def make_ffn(cfg, T, d, F, D, seed):
    rng = np.random.default_rng(seed)
    w1 = rng.integers(cfg.wmin, cfg.wmax + 1, (d, F))
    w2 = rng.integers(cfg.wmin, cfg.wmax + 1, (F, D))
    b1 = rng.integers(-(2**20), 2**20, F)
    b2 = rng.integers(-(2**20), 2**20, D)
    s_acc = 2.0 / (math.sqrt(d) * (2**(cfg.width - 1))**2 / 3)
    gp = gelu_params(s_acc, 4.0 / cfg.wmax)
    x0 = rng.integers(cfg.wmin, cfg.wmax + 1, (T, d))
    xs = [np.clip(x0 + rng.integers(-60, 61, (T, d)) * t, cfg.wmin, cfg.wmax)
          for t in range(7)]
    return xs, w1, b1, w2, b2, gp


def dense_ref(cfg, x, w1, b1, w2, b2, gp):
    h = gelu_requant(int_matmul(cfg, x, w1) + b1, gp, cfg)
    return h, int_matmul(cfg, h, w2) + b2


@pytest.mark.parametrize("cfg", [PRESETS["toy"], PRESETS["exion16"]], ids=["toy", "exion16"])
@pytest.mark.parametrize("rule", ["magnitude", "per_token", "change"])
def test_run_delta_equals_dense_recomputation(cfg, rule):
    xs, w1, b1, w2, b2, gp = make_ffn(cfg, 12, 20, 48, 10, seed=hash(rule) % 1000)
    run = fr.ffn_reuse_run(cfg, xs, w1, b1, w2, b2, gp, n=2, s=0.8, rule=rule)
    assert [it.dense for it in run.iterations] == [1, 0, 0, 1, 0, 0, 1]
    for it, x in zip(run.iterations, xs):
        h_new, y_new = dense_ref(cfg, x, w1, b1, w2, b2, gp)
        if it.dense:
            h_d = h_new
            np.testing.assert_array_equal(it.h, h_new)
            np.testing.assert_array_equal(it.y, y_new)
            assert it.fc1_reduction == 0 and it.fc2_reduction == 0
            continue
        m = it.mask
        np.testing.assert_array_equal(it.h[m], h_new[m])          # recomputed
        np.testing.assert_array_equal(it.h[~m], h_d[~m])          # reused
        np.testing.assert_array_equal(it.y, int_matmul(cfg, it.h, w2) + b2)  # exact delta
        assert it.sparsity == pytest.approx(1 - m.mean())
        assert 0.7 <= it.sparsity <= 0.9
        assert it.fc1_macs == m.sum() * 20 and it.fc2_macs == m.sum() * 10
        assert it.fc1_dense_macs == 12 * 20 * 48 and it.fc2_dense_macs == 12 * 48 * 10
    assert not np.array_equal(run.iterations[1].h, run.iterations[0].h)
    total = sum(it.fc1_macs for it in run.iterations) / (7 * 12 * 20 * 48)
    assert run.fc1_reduction == pytest.approx(1 - total)


def test_fc2_dense_mode_and_w_bit_decomposition():
    cfg = TOY
    xs, w1, b1, w2, b2, gp = make_ffn(cfg, 8, 16, 40, 6, seed=1)
    h_d, y_d = fr.ffn_dense(cfg, xs[0], w1, b1, w2, b2, gp)
    mask, _ = fr.build_mask(h_d, 0.75)
    h1, y1 = fr.ffn_sparse(cfg, xs[3], w1, b1, w2, b2, gp, h_d, y_d, mask, fc2="delta")
    h2, y2 = fr.ffn_sparse(cfg, xs[3], w1, b1, w2, b2, gp, h_d, y_d, mask, fc2="dense")
    np.testing.assert_array_equal(h1, h2)
    np.testing.assert_array_equal(y1, y2)
    # Y' = Y_d + [B*H' | -(B*H_d)] @ [W2; W2], W-bit operands only (docs' hardware mapping).
    lhs = np.concatenate([np.where(mask, h1, 0), -np.where(mask, h_d, 0)], axis=1)
    np.testing.assert_array_equal(y1, y_d + int_matmul(cfg, lhs, np.concatenate([w2, w2])))


def test_gelu_output_is_symmetric_w_bit():
    cfg = TOY
    # acc * 2**-11 is the pre-activation; H step 2**-15: GELU(-0.75) ~ -0.17 -> -5570.
    gp = gelu_params(1 / 2048, 1 / 32768)
    h = gelu_requant(np.array([-1536, 0, 2**20, -(2**20)]), gp, cfg)
    assert h.tolist() == [-2047, 0, 2047, 0]


def test_errors():
    cfg = TOY
    xs, w1, b1, w2, b2, gp = make_ffn(cfg, 4, 8, 16, 4, seed=2)
    with pytest.raises(ExionError, match="b1: expected shape \\(16,\\), got \\(15,\\)"):
        fr.ffn_dense(cfg, xs[0], w1, b1[:15], w2, b2, gp)
    with pytest.raises(ExionError, match="W2: shape \\(15, 4\\) does not chain"):
        fr.ffn_dense(cfg, xs[0], w1, b1, w2[:15], b2, gp)
    with pytest.raises(ExionError, match="b1: the biased accumulator leaves the 32-bit"):
        fr.ffn_dense(cfg, xs[0], w1, np.full(16, 2**31 - 1), w2, b2, gp)
    with pytest.raises(ExionError, match="rule must be one of"):
        fr.build_mask(np.zeros((2, 2), int), 0.5, rule="random")
    with pytest.raises(ExionError, match="X\\[1\\]: expected shape \\(4, 8\\)"):
        fr.ffn_reuse_run(cfg, [xs[0], xs[1][:, :7]], w1, b1, w2, b2, gp, n=1, s=0.5)
    with pytest.raises(ExionError, match="target sparsity s must be in \\[0, 1\\]"):
        fr.build_mask(np.zeros((2, 2), int), 1.5)


# -- CLI ----------------------------------------------------------------------------------


def test_cli_ffnr_file(cli_run, tmp_path):
    np.save(tmp_path / "h.npy", np.arange(100).reshape(1, 100))
    js = tmp_path / "f.json"
    code, out, err = cli_run("golden", "ffnr", "--h-dense", str(tmp_path / "h.npy"),
                         "--sparsity", "0.9", "--n", "4", "--json", str(js),
                         "--out", str(tmp_path / "b.npy"))
    assert code == 0, err
    data = json.loads(js.read_text())
    assert data["theta"] == 92 and data["ones"] == 8
    assert data["sparsity"] == pytest.approx(0.92)
    assert data["period_reduction"] == pytest.approx(0.92 * 4 / 5)
    assert np.load(tmp_path / "b.npy").sum() == 8
    assert "achieved sparsity   0.9200" in out


def test_cli_ffnr_synthetic(cli_run, tmp_path):
    js = tmp_path / "s.json"
    code, out, err = cli_run("golden", "ffnr", "--sparsity", "0.8", "--shape", "8,16,32",
                         "--iters", "4", "--n", "2", "--json", str(js))
    assert code == 0, err
    data = json.loads(js.read_text())
    assert [it["dense"] for it in data["iterations"]] == [True, False, False, True]
    assert data["rel_err_vs_dense"][0] == 0 and data["rel_err_vs_dense"][3] == 0


def test_cli_ffnr_errors(cli_run, tmp_path):
    np.save(tmp_path / "h.npy", np.full((2, 3), 5000))
    np.save(tmp_path / "h1.npy", np.ones(4, int))
    js = tmp_path / "e.json"
    code, _, err = cli_run("golden", "ffnr", "--h-dense", str(tmp_path / "h.npy"),
                       "--sparsity", "0.5", "--json", str(js))
    assert code == 2 and "--h-dense" in err and "h.npy" in err and "(2, 3)" in err \
        and "[5000, 5000]" in err
    code, _, err = cli_run("golden", "ffnr", "--h-dense", str(tmp_path / "h1.npy"),
                       "--sparsity", "0.5")
    assert code == 2 and "--h-dense" in err and "(4,)" in err and "2-D" in err
    code, _, err = cli_run("golden", "ffnr", "--sparsity", "-0.5")
    assert code == 2 and "--sparsity must be in [0, 1]" in err
    code, _, err = cli_run("golden", "ffnr", "--sparsity", "0.5", "--shape", "8,16")
    assert code == 2 and "--shape must be three positive integers" in err
    assert not js.exists()


@pytest.mark.parametrize("s", [0, 0.5, 0.8, 0.97])
def test_ffnr_is_the_units_contract(s):
    """golden ffnr (the FFN-Reuse unit's function): build_mask's magnitude rule with its
    histogram, and the sparse iteration's FC2 input where(B, H' - H_d, 0)."""
    cfg = PRESETS["toy"]
    rng = np.random.default_rng(7)
    h = rng.integers(-cfg.wmax, cfg.wmax + 1, (19, 45))
    h2 = rng.integers(-cfg.wmax, cfg.wmax + 1, (19, 45))
    r = fr.ffnr(cfg, h, s, h_sparse=h2)
    mask, theta = fr.build_mask(h, s, "magnitude", width=cfg.width)
    assert r.theta == theta
    np.testing.assert_array_equal(r.mask, mask)
    np.testing.assert_array_equal(r.histogram, fr.abs_histogram(h, cfg.width))
    for (i, j), m in np.ndenumerate(mask):
        assert r.delta[i, j] == (h2[i, j] - h[i, j] if m else 0)
    with pytest.raises(ExionError, match="more than 6 decimals"):
        fr.ffnr(cfg, h, 0.1234567)
    with pytest.raises(ExionError, match="differs from H_d"):
        fr.ffnr(cfg, h, s, h_sparse=h2[:3])


def test_random_control_keeps_counts_and_the_rules_granularity():
    """The random-mask control (golden.dsc's INT12 path and the float model share it): same
    ones per sample; whole hidden units for the column rule (at most one partial unit)."""
    from exion.golden.ffn_reuse import random_control
    rng = np.random.default_rng(3)
    masks = rng.random((3, 16, 40)) < 0.2
    for rule in ("column", "magnitude"):
        out = random_control(masks, rule, np.random.default_rng(5))
        assert [int(m.sum()) for m in out] == [int(m.sum()) for m in masks]
        partial = [int(((m.sum(axis=0) > 0) & (m.sum(axis=0) < 16)).sum()) for m in out]
        if rule == "column":
            assert max(partial) <= 1
        else:
            assert max(partial) > 1      # element-wise: scattered, not whole units
