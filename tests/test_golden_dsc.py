"""golden/dsc.py: the DSC core's block iteration against the workload's INT12 path, and its
core steps against the golden unit functions."""

import copy
import math

import numpy as np
import pytest

import int12_reference

from exion import PRESETS
from exion.golden import dsc
from exion.golden.conmerge import masked_gemm
from exion.golden.ffn_reuse import schedule
from exion.golden.predict import epre
from exion.workloads.common import ARCH, alpha_bars
from exion.workloads.dit import DiT, Exion, _silu, ddim_timesteps
from exion.workloads.weights import load_weights

CFG = PRESETS["exion16"]


@pytest.fixture(scope="module")
def model():
    return DiT(load_weights()[0])


def _old_block(model, x, mod, i, ex, st, dense, stats, rng):
    """The INT12 path before issue 16 (tests/int12_reference.py), the reference."""
    return int12_reference.block(model, x, mod, i, ex, st, dense, rng)


def _walk(model, ex, seed, steps, n, fn, old=_old_block):
    """Sample ``steps`` DDIM iterations of ``n`` images; at every block call
    ``fn(i, t, x, mod, st_dsc, dense)`` with the reference state, then advance the
    reference. Returns the number of blocks visited."""
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n, 8, 8))
    y = np.arange(n) % 10
    ab = alpha_bars()
    ts = ddim_timesteps(steps)
    sched = schedule(steps, ex.n) if ex.ffn_reuse else np.ones(steps, bool)
    st_old = [{} for _ in range(model.depth)]
    st_new = [{} for _ in range(model.depth)]
    visited = 0
    w = model.w
    for it, t in enumerate(ts):
        c = model.cond(np.full(n, t), y)
        sc = _silu(c)
        x = model.patchify(img) @ w["patch.w"] + w["patch.b"] + w["pos"]
        for i in range(model.depth):
            m = sc @ w[f"blocks.{i}.ada.w"] + w[f"blocks.{i}.ada.b"]
            mod = [v[:, None, :] for v in np.split(m, 6, axis=-1)]
            fn(i, it, x, mod, st_new[i], bool(sched[it]))
            x = old(model, x, mod, i, ex, st_old[i], bool(sched[it]), {},
                    np.random.default_rng([seed, i, it]))
            visited += 1
        sh, scl = np.split(sc @ w["fada.w"] + w["fada.b"], 2, axis=-1)
        xo = dsc_ln_float(x) * (1 + scl[:, None]) + sh[:, None]
        e = model.unpatchify(xo @ w["out.w"] + w["out.b"])
        a_t = ab[t]
        a_prev = ab[ts[it + 1]] if it + 1 < steps else 1.0
        x0 = (img - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
        img = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * e
    return visited


def dsc_ln_float(x):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ARCH["ln_eps"])


CASES = [
    ("dense-noep", Exion(quant=True), 11),
    ("ffnr-noep", Exion(quant=True, ffn_reuse=True, n=2, s=0.8), 12),
    ("ffnr-ep", Exion(quant=True, ffn_reuse=True, n=2, s=0.8, ep=True, k=0.5), 13),
    ("ffnr-ep-qth", Exion(quant=True, ffn_reuse=True, n=3, s=0.7, ep=True, k=0.25,
                          q_th=0.5), 14),
]


@pytest.mark.parametrize("name,ex,seed", CASES, ids=[c[0] for c in CASES])
def test_block_equals_int12_path(model, name, ex, seed):
    """Bit for bit: every block of every iteration (dense and sparse), EP on and off, with
    Q/K/V row skipping off (the INT12 path computes every row)."""
    ok = []

    def check(i, it, x, mod, st, dense):
        st_ref = copy.deepcopy(st)
        got = dsc.block_iteration(CFG, dsc.block_weights(model.w, model._wq, i, model.heads),
                                  x, mod, ex, st, dense, {}, np.random.default_rng([seed, i, it]),
                                  skip_rows=False, layer=i)
        ref = _old_block(model, x, mod, i, ex, st_ref, dense, {},
                         np.random.default_rng([seed, i, it]))
        assert np.array_equal(got, ref), (name, i, it)
        ok.append(dense)
    _walk(model, ex, seed, 4, 3, check)
    assert len(ok) == 16
    if ex.ffn_reuse:
        assert not all(ok)      # sparse iterations were covered


def test_row_skipping_changes_scales_only(model):
    """With EP row skipping the output stays close to the INT12 path (only per-head scales
    of Q/K/V can change) and equals it where no row is skipped."""
    ex = Exion(quant=True, ep=True, k=0.25, q_th=0.3)
    diffs = []

    def check(i, it, x, mod, st, dense):
        bw = dsc.block_weights(model.w, model._wq, i, model.heads)
        rec = {}
        a = dsc.block_iteration(CFG, bw, x, mod, ex, copy.deepcopy(st), dense, {}, rec=rec)
        b = dsc.block_iteration(CFG, bw, x, mod, ex, copy.deepcopy(st), dense, {},
                                skip_rows=False)
        e = rec["epre"]
        skipped = not (e["q_need"].all() and e["k_need"].all() and e["v_need"].all())
        if not skipped:
            assert np.array_equal(a, b)
        diffs.append((skipped, float(np.max(np.abs(a - b)) / np.max(np.abs(b)))))
    _walk(model, ex, 5, 2, 2, check)
    assert any(s for s, _ in diffs)
    assert max(d for _, d in diffs) < 0.05


def test_core_gemm_is_masked_gemm():
    rng = np.random.default_rng(1)
    for trial in range(4):
        M, K, N = rng.integers(1, 40, size=3)
        a = rng.integers(CFG.wmin, CFG.wmax + 1, (M, K))
        b = rng.integers(CFG.wmin, CFG.wmax + 1, (K, N))
        mask = rng.random((M, N)) < 0.4
        prev = rng.integers(-1000, 1000, (M, N))
        ref = masked_gemm(CFG, a, b, mask, out=prev.copy(), accumulate=True)
        assert np.array_equal(dsc.core_gemm(a[None], b, mask[None], base=prev[None])[0], ref)


def test_prob_requant_all_values():
    p = np.arange(0, 32769)
    for cfg in (CFG, PRESETS["toy"]):
        ref = np.rint(p * (cfg.wmax / 32768.0)).astype(np.int64)
        assert np.array_equal(dsc.prob_requant(p, cfg), ref)


def test_prob_requant_mutation():
    """A truncating requantiser (no rounding) differs (the exhaustive test can fail)."""
    p = np.arange(0, 32769)
    assert not np.array_equal((p * CFG.wmax) >> 15, dsc.prob_requant(p, CFG))


@pytest.mark.parametrize("q_th", [None, 40])
def test_epre_batch_is_epre(q_th):
    rng = np.random.default_rng(3)
    B, T, d, dh = 3, 16, 64, 16
    x = rng.integers(-2047, 2048, (B, T, d))
    wq = rng.integers(-2047, 2048, (d, dh))
    wk = rng.integers(-2047, 2048, (d, dh))
    qth = None if q_th is None else np.full(B, q_th * 10**6)
    mask, dom, sq, sk = dsc.epre_batch(CFG, x, wq, wk, 0.5, qth)
    for b in range(B):
        r = epre(CFG, x[b], wq, wk, 0.5, q_th_int=None if qth is None else int(qth[b]))
        assert np.array_equal(r.score_mask, mask[b])
        assert np.array_equal(r.dominant, dom[b])


@pytest.mark.parametrize("q_th", [None, 0.3])
def test_exact_keys_are_the_products_k(model, q_th):
    """``ep_keys = "exact"`` (issue 19): EP's keys are the Q|K|V product's K_h accumulators
    (bias included), equal to the recorded product wherever it computed the row; its masks
    are ``golden.predict.epre`` on ``omem_keys`` of them, per sample and head; and they are
    not the predicted keys' masks."""
    from exion.golden.predict import omem_keys, stage1_shift
    ex = Exion(quant=True, ep=True, k=0.25, q_th=q_th, ep_keys="exact")
    pred = Exion(quant=True, ep=True, k=0.25, q_th=q_th)
    differ = []

    def check(i, it, x, mod, st, dense):
        bw = dsc.block_weights(model.w, model._wq, i, model.heads)
        rec, rp = {}, {}
        h = dsc.layernorm(x) * (1 + mod[1]) + mod[0]
        dsc.attention(CFG, h, bw, ex, {}, rec)
        dsc.attention(CFG, h, bw, pred, {}, rp)
        ep, out = rec["epre"], rec["qkv"]["out"]
        B, H, T, dh = ep["k_acc"].shape
        for b in range(B):
            for hd in range(H):
                cols = slice(H * dh + hd * dh, H * dh + (hd + 1) * dh)
                rows = ep["k_need"][b, hd]
                assert np.array_equal(out[b, rows, cols], ep["k_acc"][b, hd][rows])
                th = None if ep["q_th_int"] is None else int(ep["q_th_int"][b, hd])
                r = epre(CFG, ep["x"][b], ep["wq"][hd], None, 0.25, int(ep["shifts"][b, hd, 0]),
                         None, th, k_exact=omem_keys(CFG, ep["k_acc"][b, hd]))
                assert int(ep["shifts"][b, hd, 1]) == stage1_shift(ep["k_acc"][b, hd],
                                                                        CFG.width)
                assert np.array_equal(r.score_mask, ep["keep"][b, hd])
                assert np.array_equal(r.dominant, ep["dominant"][b, hd])
        differ.append(not np.array_equal(ep["keep"], rp["epre"]["keep"]))
    _walk(model, ex, 5, 1, 2, check)
    assert any(differ)
    with pytest.raises(Exception, match="ep_keys"):
        Exion(ep=True, ep_keys="exact")            # the float path has no K accumulators


def test_block_mutation_is_caught(model, monkeypatch):
    """A broken core step (truncating probability requantiser) breaks bit-exactness."""
    monkeypatch.setattr(dsc, "prob_requant", lambda p, cfg: (np.asarray(p) * cfg.wmax) >> 15)
    ex = Exion(quant=True)
    bad = []

    def check(i, it, x, mod, st, dense):
        st_ref = copy.deepcopy(st)
        got = dsc.block_iteration(CFG, dsc.block_weights(model.w, model._wq, i, model.heads),
                                  x, mod, ex, st, dense, {}, skip_rows=False)
        ref = _old_block(model, x, mod, i, ex, st_ref, dense, {}, None)
        bad.append(not np.array_equal(got, ref))
    _walk(model, ex, 2, 1, 2, check)
    assert any(bad)


def test_kload_packed_body_by_hand():
    """EPRE_KLOAD ``kpack``'s body (``golden.dsc_cycles.kload_packed_body``), hand-counted.
    5 keys of 1 beat, 2 Kh words a key, row blocks of 4: keys 0..3 taken at 2, 3, 4, 5 (the
    command in cycle 0, a key's beat the cycle before it is taken); key 3 closes the first
    block, whose 8 writes run in cycles 6..13; key 4 closes the last block, so it waits for
    them: taken at 14; its 2 writes, and the end the cycle after: 14 + 1 + 2 = 17. With 3
    beats a key (more than its 2 writes) every key is a block of its own, written while the
    next key's beats arrive: keys at 4, 7, 10, 13, 16, and the last key's 2 writes:
    16 + 1 + 2 = 19 (4 keys: 13 + 1 + 2 = 16)."""
    from exion.golden.dsc_cycles import kload_packed_body
    assert kload_packed_body(5, 1, 2, 4) == 17
    assert kload_packed_body(5, 3, 2, 4) == 19
    assert kload_packed_body(4, 3, 2, 4) == 16
    assert kload_packed_body(0, 3, 2, 4) == 1
