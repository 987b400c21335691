"""CFSE fixed point (SPEC 2, 4.5): hand-derived values, and the error against float that
the docs state as the accuracy claim."""

import math

import numpy as np
import pytest

from exion import PRESETS
from exion.errors import ExionError
from exion.golden import cfse

TOY = PRESETS["toy"]
ALL_FX = np.arange(cfse.FX_MIN, cfse.FX_MAX + 1)


def erf_gelu(x: float) -> float:
    return 0.5 * x * (1 + math.erf(x / math.sqrt(2)))


def test_rshift_round_and_requant():
    assert cfse.rshift_round(np.array([-5, -4, -3, 5, 6, 7]), 1).tolist() == [-2, -2, -1, 3, 3, 4]
    assert cfse.rshift_round(np.array([-7]), 0).tolist() == [-7]
    # 1000 * 3 / 2**4 = 187.5 -> 188; saturation to 8 bits.
    assert cfse.requant(np.array([1000, -1000, 10**6]), 3, 4, 16).tolist() == [188, -187, 32767]
    assert cfse.requant(np.array([-(10**6)]), 1, 0, 8).tolist() == [-128]
    assert cfse.requant(np.array([-(10**6)]), 1, 0, 8, symmetric=True).tolist() == [-127]
    with pytest.raises(ExionError, match="mult must be an integer in \\[0, 32767\\]"):
        cfse.requant(np.array([1]), 1 << 15, 0, 8)


def test_gelu_hand_values():
    assert cfse.GELU_TABLE[0] == 0 and cfse.GELU_TABLE[256] == 0 and len(cfse.GELU_TABLE) == 257
    # T[32] = rint(GELU(-1) * 2**15) = rint(-5198.8) = -5199; g = (-5199 + 8) >> 4 = -325.
    assert cfse.GELU_TABLE[32] == -5199
    got = cfse.gelu_fx(np.array([0, 2048, -2048, 16384, -16384, 32767, -32768]))
    assert got.tolist() == [0, 2048 - 325, -325, 16384, 0, 32767, 0]


def test_gelu_error_exhaustive():
    got = cfse.gelu_fx(ALL_FX) / 2**11
    ref = np.array([erf_gelu(v) for v in ALL_FX / 2**11])
    err = np.abs(got - ref)
    assert err.max() <= cfse.GELU_MAX_ABS_ERR
    assert err.max() > cfse.GELU_MAX_ABS_ERR / 4    # the claim is tight, not vacuous


def test_gelu_requant_path_error():
    cfg = PRESETS["exion16"]
    s_acc, s_h = 3.1e-7, 4.0 / cfg.wmax
    p = cfse.gelu_params(s_acc, s_h)
    acc = np.linspace(-15 / s_acc, 15 / s_acc, 20001).astype(np.int64)
    h = cfse.gelu_requant(acc, p, cfg)
    ref = np.array([erf_gelu(a * s_acc) / s_h for a in acc])
    ref = np.clip(ref, -cfg.wmax, cfg.wmax)
    assert np.abs(h - ref).max() <= 1.0


def softmax_ref(x):
    f = x / 2**11
    e = np.exp(f - f.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_softmax_hand_values():
    assert cfse.softmax_fx(np.array([[5, 5, 5, 5]])).tolist() == [[8192] * 4]
    assert cfse.softmax_fx(np.array([[-100]])).tolist() == [[32768]]
    assert cfse.softmax_fx(np.array([[32767, -32768]])).tolist() == [[32768, 0]]
    # axis handling
    x = np.array([[0, 100], [-3000, 40]])
    np.testing.assert_array_equal(cfse.softmax_fx(x, axis=0), cfse.softmax_fx(x.T).T)


def test_softmax_error():
    rng = np.random.default_rng(17)
    worst = 0.0
    for n in (2, 3, 16, 77, 256, 1000):
        for spread in (0.1, 1.0, 3.0, 8.0):
            x = np.clip(np.rint(rng.normal(0, spread, (6, n)) * 2**11), cfse.FX_MIN,
                        cfse.FX_MAX).astype(np.int64)
            p = cfse.softmax_fx(x)
            worst = max(worst, np.abs(p / 2**15 - softmax_ref(x)).max())
            assert np.all(np.abs(p.sum(axis=-1) - 2**15) <= n)
    assert worst <= cfse.SOFTMAX_MAX_ABS_ERR


def test_layernorm_hand_values():
    g = np.array([2048, 2048])
    assert cfse.layernorm_fx(np.array([[-2048, 2048]]), g, np.zeros(2, int)).tolist() == \
        [[-2048, 2048]]
    # mean 1.5, std 0.5: -> -1, +1, then * [1, 0.5] + [0.25, 0]
    out = cfse.layernorm_fx(np.array([[2048, 4096]]), np.array([2048, 1024]),
                            np.array([512, 0]))
    assert out.tolist() == [[-2048 + 512, 1024]]
    assert cfse.layernorm_fx(np.full((1, 5), 77), np.full(5, 2048),
                             np.arange(5)).tolist() == [[0, 1, 2, 3, 4]]


def test_layernorm_error():
    rng = np.random.default_rng(23)
    for n in (2, 7, 64, 1152):
        for sd in (2**-6, 0.1, 1.0, 3.0):
            x = np.clip(np.rint(rng.normal(rng.uniform(-2, 2), sd, (5, n)) * 2**11),
                        cfse.FX_MIN, cfse.FX_MAX).astype(np.int64)
            g = np.rint(rng.uniform(-2, 2, n) * 2**11).astype(np.int64)
            b = np.rint(rng.uniform(-1, 1, n) * 2**11).astype(np.int64)
            f = x / 2**11
            keep = f.std(axis=-1) >= 2**-6
            ref = (f - f.mean(-1, keepdims=True)) / f.std(-1, keepdims=True) * g / 2**11 \
                + b / 2**11
            got = cfse.layernorm_fx(x, g, b) / 2**11
            assert np.abs(got - ref)[keep].max() <= cfse.LAYERNORM_MAX_ABS_ERR, (n, sd)


def test_errors():
    with pytest.raises(ExionError, match="gelu_fx input: values must be 16-bit"):
        cfse.gelu_fx(np.array([40000]))
    with pytest.raises(ExionError, match="expected integer Q.11"):
        cfse.softmax_fx(np.array([0.5]))
    with pytest.raises(ExionError, match="gamma: expected shape \\(3,\\)"):
        cfse.layernorm_fx(np.zeros((2, 3), int), np.zeros(2, int), np.zeros(3, int))
    with pytest.raises(ExionError, match="too small"):
        cfse.gelu_params(1e-30, 1.0)
