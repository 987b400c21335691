"""``exion trace``: layout, consistency with the golden FFN-Reuse and eager-prediction rules,
and one real FC1 sparse iteration of the digits DiT through the Verilated SDUE."""

import json

import numpy as np
import pytest

from exion import PRESETS
from exion.golden.conmerge import conmerge, execute_plan, masked_gemm
from exion.golden.ffn_reuse import build_mask
from exion.golden.predict import eager_predict
from exion.workloads import trace as tr
from exion.workloads.dit import DiT, Exion
from exion.workloads.weights import load_weights

STEPS, SAMPLES, N_REUSE, S = 7, 2, 2, 0.8
T, D, F, HEADS, DH = 16, 64, 256, 4, 16


@pytest.fixture(scope="module")
def traced():
    model = DiT(load_weights()[0])
    ex = Exion(ffn_reuse=True, n=N_REUSE, s=S, ep=True, k=0.5, quant=True)
    return tr.collect(model, steps=STEPS, samples=SAMPLES, seed=3, ex=ex)


def _last_dense(meta, t):
    return max(i for i in range(t + 1) if meta["dense"][i])


def test_layout_keys_shapes_dtypes_and_int12_range(traced):
    a, meta = traced
    M = SAMPLES * T
    assert meta["schema"] == tr.SCHEMA and meta["dense"] == [t % 3 == 0 for t in range(STEPS)]
    per_block = {"fc1_w": ("int16", (D, F)), "fc2_w": ("int16", (F, D)),
                 "ep_wq": ("int16", (HEADS, D, DH)), "ep_wk": ("int16", (HEADS, D, DH)),
                 "fc1_w_scale": ("float64", ()), "ep_wq_scale": ("float64", (HEADS,))}
    every = {"fc1_x": ("int16", (M, D)), "fc1_x_scale": ("float64", (SAMPLES,)),
             "fc1_bias": ("int64", (SAMPLES, F)), "h": ("int16", (M, F)),
             "h_scale": ("float64", (SAMPLES,)), "ep_x": ("int16", (M, D)),
             "ep_mask": ("bool", (SAMPLES, HEADS, T, T)),
             "ep_dominant": ("bool", (SAMPLES, HEADS, T)),
             "ep_skip_q": ("bool", (SAMPLES, HEADS, T)), "ep_skip_k": ("bool", (SAMPLES, HEADS, T)),
             "ep_skip_v": ("bool", (SAMPLES, HEADS, T)),
             "ep_shift_q": ("int16", (SAMPLES, HEADS))}
    sparse = {"fc1_mask": ("bool", (M, F)), "fc1_prev": ("int64", (M, F)),
              "h_prev": ("int16", (M, F)), "fc2_in": ("int16", (M, F)),
              "fc2_prev": ("int64", (M, D))}
    want = {}
    for b in range(4):
        want.update({tr.key(b, None, n): v for n, v in per_block.items()})
        for t in range(STEPS):
            want.update({tr.key(b, t, n): v for n, v in every.items()})
            if not meta["dense"][t]:
                want.update({tr.key(b, t, n): v for n, v in sparse.items()})
    for k, (dt, shape) in want.items():
        assert k in a, k
        assert a[k].dtype == np.dtype(dt) and a[k].shape == shape, (k, a[k].dtype, a[k].shape)
    extra = set(a) - set(want) - {tr.key(b, None, n) for b in range(4)
                                  for n in ("fc2_w_scale", "ep_wk_scale")} \
        - {tr.key(b, t, n) for b in range(4) for t in range(STEPS)
           for n in ("ep_x_scale", "ep_shift_k")}
    assert not extra, sorted(extra)[:5]
    for k, v in a.items():
        if v.dtype == np.int16 and not k.endswith(("fc2_in", "ep_shift_q", "ep_shift_k")):
            assert v.min() >= -2048 and v.max() <= 2047, k
    for k in (k for k in a if k.endswith("fc2_in")):
        assert np.abs(a[k]).max() <= 4095  # a difference of two INT12 values


def test_masks_follow_the_golden_ffn_reuse_rule(traced):
    a, meta = traced
    cfg = PRESETS["exion16"]
    checked = 0
    for b in range(4):
        for t in range(STEPS):
            if meta["dense"][t]:
                continue
            td = _last_dense(meta, t)
            h_d = a[tr.key(b, td, "h")]
            mask, h = a[tr.key(b, t, "fc1_mask")], a[tr.key(b, t, "h")]
            np.testing.assert_array_equal(a[tr.key(b, t, "h_prev")], h_d)
            for s in range(SAMPLES):
                rows = slice(s * T, (s + 1) * T)
                want, _ = build_mask(h_d[rows], S, "magnitude", None, cfg.width)
                np.testing.assert_array_equal(mask[rows], want)
            # Reuse: H' = H_d outside the mask; FC2's delta input is zero there.
            np.testing.assert_array_equal(h[~mask], h_d[~mask])
            np.testing.assert_array_equal(a[tr.key(b, t, "fc2_in")],
                                          h.astype(np.int64) - h_d)
            assert 0.1 < mask.mean() < 0.35  # histogram threshold: close to 1 - s
            # OMEM: the cached accumulator is the dense iteration's X W1 (bias added later).
            w1 = a[tr.key(b, None, "fc1_w")]
            np.testing.assert_array_equal(a[tr.key(b, t, "fc1_prev")],
                                          masked_gemm(cfg, a[tr.key(b, td, "fc1_x")], w1,
                                                      np.ones((SAMPLES * T, F), bool)))
            # FC2 delta form: Y_d + (H' - H_d) W2 == H' W2 (exact).
            w2 = a[tr.key(b, None, "fc2_w")]
            y = masked_gemm(cfg, a[tr.key(b, t, "fc2_in")], w2,
                            np.ones((SAMPLES * T, D), bool), out=a[tr.key(b, t, "fc2_prev")],
                            accumulate=True)
            np.testing.assert_array_equal(y, h.astype(np.int64) @ w2.astype(np.int64))
            checked += 1
    assert checked == 4 * sum(not d for d in meta["dense"])


def test_ep_masks_match_golden_eager_predict(traced):
    a, meta = traced
    cfg = PRESETS["exion16"]
    for b, t, s, hd in ((0, 0, 0, 0), (3, 5, 1, 2)):
        x = tr.extract(a_npz(a), meta, tr.key(b, t, "ep_x"), s)
        wq = tr.extract(a_npz(a), meta, tr.key(b, None, "ep_wq"), head=hd)
        wk = tr.extract(a_npz(a), meta, tr.key(b, None, "ep_wk"), head=hd)
        r = eager_predict(cfg, x, wq, wk, 0.5, lod_terms=2)
        np.testing.assert_array_equal(
            r.score_mask, tr.extract(a_npz(a), meta, tr.key(b, t, "ep_mask"), s, hd))
        sq = a[tr.key(b, t, "ep_shift_q")][s, hd]
        assert r.shift_q == sq
        np.testing.assert_array_equal(~r.key_needed, a[tr.key(b, t, "ep_skip_v")][s, hd])
        np.testing.assert_array_equal(~r.q_needed, a[tr.key(b, t, "ep_skip_q")][s, hd])


class a_npz:  # noqa: N801 -- a dict seen through the NpzFile interface extract() uses
    def __init__(self, d):
        self.d, self.files = d, list(d)

    def __getitem__(self, k):
        return self.d[k]


def test_save_load_extract_roundtrip(traced, tmp_path, cli_run):
    a, meta = traced
    p = tr.save(tmp_path / "t.npz", a, meta)
    z, m2 = tr.load(p)
    assert m2 == json.loads(json.dumps(meta))
    np.testing.assert_array_equal(z["blk1/it2/fc1_mask"], a["blk1/it2/fc1_mask"])
    code, out, _ = cli_run("trace", "--file", str(p), "--extract", "blk1/it2/fc1_mask",
                           "--sample", "1", "--out", str(tmp_path / "m.npy"))
    assert code == 0, out
    m = np.load(tmp_path / "m.npy")
    assert m.dtype == bool and m.shape == (T, F)
    np.testing.assert_array_equal(m, a["blk1/it2/fc1_mask"][T:])
    code, out, _ = cli_run("golden", "conmerge", "--config", "exion16", "--mask",
                           str(tmp_path / "m.npy"), "--json", str(tmp_path / "c.json"))
    assert code == 0, out
    code, _, err = cli_run("trace", "--file", str(p), "--extract", "blk1/fc1_w",
                           "--sample", "0", "--out", str(tmp_path / "w.npy"))
    assert code == 2 and "no sample axis" in err


def _fc1_group(traced, cfg):
    """A sparse FC1 iteration of block 1, sample 0, first omem_depth output columns."""
    a, meta = traced
    t = next(i for i in range(STEPS) if not meta["dense"][i])
    cols = slice(0, cfg.omem_depth)
    x = a[tr.key(1, t, "fc1_x")][:T]
    w1 = a[tr.key(1, None, "fc1_w")][:, cols]
    mask = a[tr.key(1, t, "fc1_mask")][:T, cols]
    prev = a[tr.key(1, t, "fc1_prev")][:T, cols]
    return x, w1, mask, prev


def test_fc1_sparse_iteration_golden_executor(traced):
    cfg = PRESETS["toy"]
    x, w1, mask, prev = _fc1_group(traced, cfg)
    plan = conmerge(cfg, mask)
    want = masked_gemm(cfg, x, w1, mask, out=prev)
    np.testing.assert_array_equal(execute_plan(cfg, x, w1, plan, out=prev), want)
    assert len(plan) < plan.dense_passes


@pytest.mark.rtl
def test_fc1_sparse_iteration_through_rtl_sdue(traced):
    from exion.sim.sdue_rtl import rtl_sdue_gemm
    cfg = PRESETS["toy"]
    x, w1, mask, prev = _fc1_group(traced, cfg)
    plan = conmerge(cfg, mask)
    out, run = rtl_sdue_gemm(cfg, x, w1, plan, prev=prev, seed=1)
    np.testing.assert_array_equal(out, masked_gemm(cfg, x, w1, mask, out=prev))
    assert run.cycles == run.model
