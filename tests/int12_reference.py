"""The digits DiT's INT12 path as it was before issue 16 routed it through golden/dsc.py
(frozen here as the reference of tests/test_golden_dsc.py: the DSC golden model must equal
it bit for bit when EP's Q/K/V row skipping is off)."""

import math

import numpy as np

from exion.golden.cfse import (FX_FRAC, FX_MAX, FX_MIN, gelu_params, gelu_requant,
                               layernorm_fx, softmax_fx)
from exion.golden.ffn_reuse import build_mask
from exion.workloads.dit import _erf_gelu, _imatmul, _q, _scales, batched_predict


def linear(model, x, i, name):
    b = model.w[f"blocks.{i}.{name}.b"]
    qw, sw = model._wq[(i, name)]
    sx = _scales(x, model.cfg, (1, 2))
    acc = _imatmul(_q(x, sx, model.cfg), qw) + np.rint(b / (sx * sw)).astype(np.int64)
    return acc * (sx * sw)


def layernorm(x):
    m = np.max(np.abs(x), axis=-1, keepdims=True)
    e = np.ceil(np.log2(np.maximum(m, 1e-30) / 8.0))
    xs = np.clip(np.rint(x * 2.0 ** (FX_FRAC - e)), FX_MIN, FX_MAX).astype(np.int64)
    gamma = np.full(x.shape[-1], 1 << FX_FRAC, dtype=np.int64)
    beta = np.zeros(x.shape[-1], dtype=np.int64)
    return layernorm_fx(xs, gamma, beta) / float(1 << FX_FRAC)


def attention(model, h, i, ex):
    B, T, d = h.shape
    cfg = model.cfg
    qkv = linear(model, h, i, "qkv")
    q, k, v = (qkv[..., j * d:(j + 1) * d].reshape(B, T, model.heads, model.dh)
               .transpose(0, 2, 1, 3) for j in range(3))
    scale = 1.0 / math.sqrt(model.dh)
    sq, sk, sv = (_scales(a, cfg, (2, 3)) for a in (q, k, v))
    logits = _imatmul(_q(q, sq, cfg), np.swapaxes(_q(k, sk, cfg), 2, 3)) * (sq * sk * scale)
    keep = None
    if ex.ep:
        sx = _scales(h, cfg, (1, 2))
        xq = _q(h, sx, cfg)
        keep = np.zeros((B, model.heads, T, T), dtype=bool)
        for hd in range(model.heads):
            wq, swq = model._wq[(i, f"ep_q{hd}")]
            wk, swk = model._wq[(i, f"ep_k{hd}")]
            q_th_int = None
            if ex.q_th is not None:
                _, _, shq, shk, _ = batched_predict(cfg, xq, wq, wk, ex.k, None,
                                                    ex.polarity, ex.lod_terms)
                unit = (sx[:, 0, 0] ** 2) * swq * swk * 2.0 ** (shq + shk) * scale
                q_th_int = np.rint(ex.q_th / unit).astype(np.int64)
            m, _, _, _, _ = batched_predict(cfg, xq, wq, wk, ex.k, q_th_int,
                                            ex.polarity, ex.lod_terms)
            keep[:, hd] = m
    lq = np.clip(np.rint(logits * (1 << FX_FRAC)), FX_MIN, FX_MAX).astype(np.int64)
    if keep is not None:
        lq = np.where(keep, lq, FX_MIN)
    p15 = softmax_fx(lq)
    if keep is not None:
        p15 = np.where(keep, p15, 0)
    pq = np.rint(p15 * (cfg.wmax / 32768.0)).astype(np.int64)
    a = _imatmul(pq, _q(v, sv, cfg)) * (sv / cfg.wmax)
    a = a.transpose(0, 2, 1, 3).reshape(B, T, d)
    return linear(model, a, i, "proj")


def ffn(model, h, i, ex, st, dense, rng):
    cfg = model.cfg
    b1 = model.w[f"blocks.{i}.fc1.b"]
    B = h.shape[0]
    qw1, sw1 = model._wq[(i, "fc1")]
    sx = _scales(h, cfg, (1, 2))
    acc = _imatmul(_q(h, sx, cfg), qw1) + np.rint(b1 / (sx * sw1)).astype(np.int64)
    s_acc = (sx * sw1)[:, 0, 0]
    if dense or "s_h" not in st:
        gmax = np.max(np.abs(_erf_gelu(acc * (sx * sw1))), axis=(1, 2))
        st["s_h"] = np.where(gmax > 0, gmax / cfg.wmax, 1.0)
    H = np.stack([gelu_requant(acc[b], gelu_params(float(s_acc[b]), float(st["s_h"][b])),
                               cfg) for b in range(B)])
    if ex.ffn_reuse:
        if dense:
            prev = st.get("Hq")
            masks = np.stack([build_mask(H[b], ex.s, ex.rule,
                                         None if prev is None else prev[b], cfg.width)[0]
                              for b in range(B)])
            if ex.control == "random":
                rnd = np.empty_like(masks)
                for b in range(B):
                    flat = np.zeros(masks[b].size, dtype=bool)
                    flat[rng.permutation(masks[b].size)[:int(masks[b].sum())]] = True
                    rnd[b] = flat.reshape(masks[b].shape)
                masks = rnd
            st.update(Hq=H, H_d=H, mask=masks)
        else:
            fill = 0 if ex.control == "zero" else st["H_d"]
            H = np.where(st["mask"], H, fill)
    qw2, sw2 = model._wq[(i, "fc2")]
    b2 = model.w[f"blocks.{i}.fc2.b"]
    s_y = st["s_h"][:, None, None] * sw2
    return (_imatmul(H, qw2) + np.rint(b2 / s_y).astype(np.int64)) * s_y


def block(model, x, mod, i, ex, st, dense, rng):
    """One block of DiT.eps's loop body on the old INT12 path."""
    sh1, sc1, g1, sh2, sc2, g2 = mod
    h = layernorm(x) * (1 + sc1) + sh1
    x = x + g1 * attention(model, h, i, ex)
    h = layernorm(x) * (1 + sc2) + sh2
    return x + g2 * ffn(model, h, i, ex, st, dense, rng)
