"""The digits DiT workload: shipped weights, NumPy forward pass, sampling quality, EXION
switches. Fast tests only (a few samples, few DDIM steps); no torch."""

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from exion.config import get_config
from exion.errors import ExionError
from exion.golden.cfse import gelu_float
from exion.golden.predict import eager_predict
from exion.workloads import accuracy as acc
from exion.workloads.common import ARCH
from exion.workloads.dit import DiT, Exion, batched_predict, ddim_timesteps, sample
from exion.workloads.weights import DEFAULT_WEIGHTS, WEIGHTS_SHA256, file_sha256, load_weights

# Measured with the shipped weights (see workloads/data/MODEL_CARD.md); the bounds leave
# margin for BLAS summation-order differences across machines.
QUALITY_SAMPLES, QUALITY_STEPS, QUALITY_MIN_ACC = 30, 20, 0.85
QUANT_MIN_PSNR_DB = 30.0


@pytest.fixture(scope="module")
def model():
    return DiT(load_weights()[0])


def test_shipped_weights_match_checksum_and_card():
    assert file_sha256(DEFAULT_WEIGHTS) == WEIGHTS_SHA256
    card = (DEFAULT_WEIGHTS.parent / "MODEL_CARD.md").read_text()
    assert WEIGHTS_SHA256 in card
    w, meta = load_weights()
    n = sum(v.size for v in w.values())
    assert n == meta["params"] and 250_000 < n < 400_000


def test_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    import exion.workloads.weights as wmod
    monkeypatch.setattr(wmod, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(ExionError, match=r"has SHA-256 [0-9a-f]{64}, expected 0{64}"):
        wmod.load_weights()
    with pytest.raises(ExionError, match="not found"):
        wmod.load_weights(tmp_path / "missing.npz")


def _reference_eps(w, img, t, y):
    """Independent, loop-based forward pass for ONE sample (pure Python over tokens and
    heads, math.erf GELU) -- shares nothing with DiT but the weights."""
    d, H = ARCH["width"], ARCH["heads"]
    dh = d // H
    tok = np.array([[img[2 * gi + a, 2 * gj + b] for a in range(2) for b in range(2)]
                    for gi in range(4) for gj in range(4)])
    x = tok @ w["patch.w"] + w["patch.b"] + w["pos"]
    half = ARCH["t_freq"] // 2
    te = [math.cos(t * math.exp(-math.log(10000) * j / half)) for j in range(half)] + \
        [math.sin(t * math.exp(-math.log(10000) * j / half)) for j in range(half)]

    def silu(v):
        return v / (1 + np.exp(-v))

    def ln(r):
        return (r - r.mean()) / math.sqrt(r.var() + ARCH["ln_eps"])

    c = silu(np.array(te) @ w["t1.w"] + w["t1.b"]) @ w["t2.w"] + w["t2.b"] + w["y_emb"][y]
    for i in range(ARCH["depth"]):
        m = silu(c) @ w[f"blocks.{i}.ada.w"] + w[f"blocks.{i}.ada.b"]
        sh1, sc1, g1, sh2, sc2, g2 = (m[j * d:(j + 1) * d] for j in range(6))
        h = np.array([ln(r) * (1 + sc1) + sh1 for r in x])
        qkv = h @ w[f"blocks.{i}.qkv.w"] + w[f"blocks.{i}.qkv.b"]
        att = np.zeros((16, d))
        for hd in range(H):
            q = qkv[:, hd * dh:(hd + 1) * dh]
            k = qkv[:, d + hd * dh:d + (hd + 1) * dh]
            v = qkv[:, 2 * d + hd * dh:2 * d + (hd + 1) * dh]
            for a in range(16):
                sc = [float(q[a] @ k[b]) / math.sqrt(dh) for b in range(16)]
                mx = max(sc)
                e = [math.exp(s - mx) for s in sc]
                att[a, hd * dh:(hd + 1) * dh] = sum(e[b] * v[b] for b in range(16)) / sum(e)
        x = x + g1 * (att @ w[f"blocks.{i}.proj.w"] + w[f"blocks.{i}.proj.b"])
        h = np.array([ln(r) * (1 + sc2) + sh2 for r in x])
        f = gelu_float(h @ w[f"blocks.{i}.fc1.w"] + w[f"blocks.{i}.fc1.b"])
        x = x + g2 * (f @ w[f"blocks.{i}.fc2.w"] + w[f"blocks.{i}.fc2.b"])
    m = silu(c) @ w["fada.w"] + w["fada.b"]
    x = np.array([ln(r) * (1 + m[d:]) + m[:d] for r in x]) @ w["out.w"] + w["out.b"]
    out = np.zeros((8, 8))
    for n_, (gi, gj) in enumerate((a, b) for a in range(4) for b in range(4)):
        for p in range(4):
            out[2 * gi + p // 2, 2 * gj + p % 2] = x[n_, p]
    return out


@pytest.mark.parametrize("t,y", [(999, 3), (420, 7), (0, 10)], ids=["t999", "t420", "t0-null"])
def test_forward_matches_loop_reference(model, t, y):
    img = np.random.default_rng(t).standard_normal((8, 8))
    got = model.eps(img[None], np.array([t]), np.array([y]))[0]
    np.testing.assert_allclose(got, _reference_eps(model.w, img, t, y), rtol=0, atol=1e-9)


def test_samples_are_recognisable_digits(model):
    r = sample(model, QUALITY_SAMPLES, QUALITY_STEPS, Exion(), seed=0)
    a = acc.class_accuracy(r.images, r.labels)
    assert a >= QUALITY_MIN_ACC, f"classifier accuracy of samples {a:.3f}"


def test_ffn_reuse_off_or_all_dense_equals_vanilla(model):
    van = sample(model, 6, 6, Exion(), seed=1)
    # N = 0: every iteration dense; s = 0: every element recomputed.
    for ex in (Exion(ffn_reuse=True, n=0, s=0.8), Exion(ffn_reuse=True, n=2, s=0.0)):
        r = sample(model, 6, 6, ex, seed=1)
        np.testing.assert_array_equal(r.images, van.images)
    # Same seed -> same noise and labels, whatever the switches.
    r = sample(model, 6, 6, Exion(ffn_reuse=True, s=0.9), seed=1)
    np.testing.assert_array_equal(r.labels, van.labels)
    assert not np.array_equal(r.images, van.images)


def test_reported_sparsities_are_in_range(model):
    r = sample(model, 4, 9, Exion(ffn_reuse=True, n=2, s=0.8, ep=True, k=0.5), seed=2)
    assert abs(r.ffn_sparsity - 0.8) < 0.05
    assert r.ep_sparsity == pytest.approx(0.5)      # kN = 8 of 16 keys, no dominant rule
    assert len(r.per_layer["ffn_sparsity"]) == ARCH["depth"]
    r = sample(model, 4, 6, Exion(ep=True, k=0.25, q_th=0.0), seed=2)
    assert r.ep_sparsity == pytest.approx(15 / 16)  # q_th = 0: every row keeps its top-1


def test_batched_predict_equals_golden(model):
    cfg = get_config("exion16")
    rng = np.random.default_rng(5)
    xq = rng.integers(-2047, 2048, size=(3, 16, 64))
    xq[1] //= 64                                    # a small-range sample: different shifts
    wq, _ = model._wq[(2, "ep_q1")]
    wk, _ = model._wq[(2, "ep_k1")]
    for pol, qth in (("top1", None), ("top1", [0, 5000, 10 ** 6]), ("keep_all", [0, 1, 2])):
        m, dom, sq, sk, _ = batched_predict(cfg, xq, wq, wk, 0.25, qth and np.array(qth), pol)
        for b in range(3):
            g = eager_predict(cfg, xq[b], wq, wk, 0.25, q_th_int=qth and qth[b], polarity=pol)
            np.testing.assert_array_equal(m[b], g.score_mask)
            np.testing.assert_array_equal(dom[b], g.dominant)
            assert (sq[b], sk[b]) == (g.shift_q, g.shift_k)


def test_quantized_path_stays_close_to_float(model):
    van = sample(model, 10, 10, Exion(), seed=3)
    q = sample(model, 10, 10, Exion(quant=True), seed=3)
    assert acc.psnr(q.images, van.images) >= QUANT_MIN_PSNR_DB


def test_exion_switches_are_validated():
    with pytest.raises(ExionError, match=r"rule must be one of .* got 'mag'"):
        Exion(rule="mag")
    with pytest.raises(ExionError, match=r"target sparsity s must be in \[0, 1\], got 1.5"):
        Exion(s=1.5)
    with pytest.raises(ExionError, match="control must be None, 'random' or 'zero'"):
        Exion(control="noise")
    with pytest.raises(ExionError, match=r"steps must be an integer in 1..1000, got 0"):
        ddim_timesteps(0)


def test_accuracy_cli_writes_table(tmp_path):
    from exion.gen.cli import workload as cli_workload
    p = argparse.ArgumentParser()
    cli_workload.register(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["accuracy", "--out", str(tmp_path), "--steps", "3", "--samples", "4",
                         "--s", "0.8"])
    assert args.func(args) == 0
    res = json.loads((tmp_path / "accuracy.json").read_text())
    rows = [r["row"] for r in res["tables"][0]["rows"]]
    assert rows == ["Vanilla", "Vanilla INT12", "FFN-Reuse (s=0.8)",
                    "control: random mask (s=0.8)", "control: zero-fill (s=0.8)",
                    "+EP (s=0.8)", "+Quant (s=0.8)"]
    md = (tmp_path / "accuracy.md").read_text()
    assert re.search(r"\| Vanilla \| 0.000 \| 0.000 \| inf \|", md)
    assert Path(tmp_path / "accuracy.md").stat().st_size > 0
