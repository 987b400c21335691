"""golden/quant.py (SPEC 2): rounding, clipping, wrap, exact accumulation limits."""

import numpy as np
import pytest

from exion import PRESETS
from exion.errors import ExionError
from exion.golden import quant

TOY = PRESETS["toy"]      # W = 12, A = 32, k_max = 256
EX16 = PRESETS["exion16"]  # W = 12, A = 36, k_max = 4608


def test_round_half_to_even():
    q, s = quant.quantize(np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49, 2.51]), TOY,
                          scale=1.0)
    assert s == 1.0
    assert q.tolist() == [0, 2, 2, 0, -2, -2, 0, 3]
    assert q.dtype == np.int64


def test_scale_divides_before_rounding():
    q, _ = quant.quantize(np.array([1.0, 3.0, -5.0]), TOY, scale=2.0)  # 0.5, 1.5, -2.5
    assert q.tolist() == [0, 2, -2]


def test_clipping_to_w_bits():
    q, _ = quant.quantize(np.array([5000.0, -5000.0, 2047.4, -2048.4, 2047.6]), TOY, scale=1.0)
    assert q.tolist() == [2047, -2048, 2047, -2048, 2047]


def test_default_scale_maps_max_to_wmax():
    x = np.array([-3.0, 1.0, 0.0])
    q, s = quant.quantize(x, TOY)
    assert s == pytest.approx(3.0 / 2047)
    assert q[0] == -2047 and q[2] == 0           # -2048 is never produced from data
    assert quant.scale_for(np.zeros(4), TOY) == 1.0
    np.testing.assert_allclose(quant.dequantize(q, s), x, atol=s / 2)


def test_bad_scale():
    with pytest.raises(ExionError, match="quantization scale must be > 0, got 0.0"):
        quant.quantize(np.ones(2), TOY, scale=0.0)


def test_wrap_two_complement():
    assert quant.wrap(2 ** 31, 32).tolist() == -2 ** 31
    assert quant.wrap(-2 ** 31 - 1, 32).tolist() == 2 ** 31 - 1
    assert quant.wrap([7, 8, -8, -9, 16, 23], 4).tolist() == [7, -8, -8, 7, 0, 7]
    assert quant.wrap(2 ** 62, 64).tolist() == 2 ** 62
    assert quant.saturate([100, -100, 5], 4).tolist() == [7, -8, 5]


def test_check_operand():
    assert quant.check_operand(TOY, np.array([1.0, -2.0]), "X").tolist() == [1, -2]
    assert quant.check_operand(TOY, np.array([True, False]), "X").tolist() == [1, 0]
    with pytest.raises(ExionError, match=r"X: expected integer operands, got dtype float64"):
        quant.check_operand(TOY, np.array([0.5]), "X")
    with pytest.raises(ExionError, match=r"X: values must be in \[-2048, 2047\] "
                                         r"\(signed 12-bit\), got \[-2049, 3\]"):
        quant.check_operand(TOY, np.array([-2049, 3]), "X")
    with pytest.raises(ExionError, match=r"X: expected a 2-D array, got shape \(3,\)"):
        quant.check_operand(TOY, np.zeros(3, int), "X", ndim=2)


@pytest.mark.parametrize("cfg", [TOY, EX16], ids=["toy", "exion16"])
def test_int_matmul_exact_at_k_max(cfg):
    # Worst case: every product is (-2**(W-1))**2 = 2**(2W-2); the sum must stay exact.
    K = cfg.k_max
    a = np.full((1, K), cfg.wmin)
    b = np.full((K, 2), cfg.wmin)
    got = quant.int_matmul(cfg, a, b)
    assert got.tolist() == [[K * 2 ** (2 * cfg.width - 2)] * 2]
    assert K * 2 ** (2 * cfg.width - 2) < 2 ** (cfg.acc_width - 1)


def test_int_matmul_against_python():
    rng = np.random.default_rng(2)
    a = rng.integers(-2048, 2048, (3, 17))
    b = rng.integers(-2048, 2048, (17, 4))
    ref = [[sum(int(a[i, k]) * int(b[k, j]) for k in range(17)) for j in range(4)]
           for i in range(3)]
    assert quant.int_matmul(TOY, a, b).tolist() == ref


def test_int_matmul_refuses_long_k():
    with pytest.raises(ExionError, match=r"K = 257 exceeds config 'toy' k_max = 256: the "
                                         r"32-bit accumulator"):
        quant.int_matmul(TOY, np.zeros((1, 257), int), np.zeros((257, 1), int))
    with pytest.raises(ExionError, match=r"shapes do not chain: W is \(2, 3\), V is \(4, 1\)"):
        quant.int_matmul(TOY, np.zeros((2, 3), int), np.zeros((4, 1), int), "W", "V")
    quant.check_k(TOY, 256)
