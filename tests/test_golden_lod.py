"""LOD / TS-LOD and the shift-add approximate products (SPEC 3.4) against references
written here with Python integers (bit_length and explicit bit loops)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exion.errors import ExionError
from exion.golden.lod import approx_dot, approx_matmul, approx_mul, bit_length, lod, \
    lod_approx


def ref_lod(v: int, terms: int):
    """Direct bit-twiddling reference: scan the magnitude's bits from the top."""
    if v == 0:
        return 0, 0, 0, False
    m = -v if v < 0 else v
    ones = [i for i in range(63, -1, -1) if (m >> i) & 1]
    e1 = ones[0]
    has2 = terms == 2 and len(ones) > 1
    return (-1 if v < 0 else 1), e1, (ones[1] if has2 else 0), has2


def ref_approx(v: int, terms: int) -> int:
    s, e1, e2, h = ref_lod(v, terms)
    return s * ((1 << e1) + ((1 << e2) if h else 0))


@pytest.mark.parametrize("terms", [1, 2])
def test_lod_exhaustive_12bit(terms):
    v = np.arange(-2048, 2048)
    sign, e1, e2, h = lod(v, terms)
    ref = [ref_lod(int(x), terms) for x in v]
    np.testing.assert_array_equal(sign, [r[0] for r in ref])
    np.testing.assert_array_equal(e1, [r[1] for r in ref])
    np.testing.assert_array_equal(e2, [r[2] for r in ref])
    np.testing.assert_array_equal(h, [r[3] for r in ref])
    np.testing.assert_array_equal(lod_approx(v, terms), [ref_approx(int(x), terms) for x in v])


@pytest.mark.parametrize("terms", [1, 2])
def test_lod_random_wide(terms):
    rng = np.random.default_rng(3)
    bits = rng.integers(1, 63, size=2000)
    v = rng.integers(0, 1 << 62, size=2000, dtype=np.int64) >> (62 - bits)
    v = np.where(rng.random(2000) < 0.5, -v, v)
    v = np.concatenate([v, [2**63 - 1, -(2**63 - 1), 2**62, -(2**62)]])
    approx = lod_approx(v, terms)
    np.testing.assert_array_equal(approx, [ref_approx(int(x), terms) for x in v])
    np.testing.assert_array_equal(lod(v, terms)[1], [abs(int(x)).bit_length() - 1 if x else 0
                                                     for x in v])


def test_hand_examples():
    # 0b1011 = 11: LOD 8, TS-LOD 8 + 2 = 10.
    assert lod_approx(np.array([11]), 1)[0] == 8
    assert lod_approx(np.array([11]), 2)[0] == 10
    assert lod_approx(np.array([-11]), 2)[0] == -10
    # 2047 = 0b111_1111_1111: 1024 + 512 = 1536.
    assert lod_approx(np.array([2047]), 2)[0] == 1536
    # -2048 (the W = 12 minimum) is a power of two in magnitude: exact, still 12-bit.
    assert lod_approx(np.array([-2048]), 2)[0] == -2048
    assert tuple(int(a) for a in lod(np.array(-2048), 2)) == (-1, 11, 0, 0)
    assert lod_approx(np.array([0]), 2)[0] == 0
    assert lod_approx(np.array([1]), 2)[0] == 1
    assert lod_approx(np.array([3]), 2)[0] == 3
    assert lod_approx(np.array([7]), 2)[0] == 6


def test_approx_never_grows():
    v = np.arange(-2048, 2048)
    for terms in (1, 2):
        a = lod_approx(v, terms)
        assert np.all(np.abs(a) <= np.abs(v))
        assert np.all(np.sign(a) == np.sign(v))


def test_bit_length_matches_python():
    vals = [0, 1, 2, 3, 255, 256, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1]
    np.testing.assert_array_equal(bit_length(np.array(vals)), [x.bit_length() for x in vals])


def ref_approx_mul(a: int, b: int, terms: int) -> int:
    """Shift-add reference from explicit exponent lists (no approximation multiply)."""
    sa, a1, a2, ha = ref_lod(a, terms)
    sb, b1, b2, hb = ref_lod(b, terms)
    if sa == 0 or sb == 0:
        return 0
    ea = [a1] + ([a2] if ha else [])
    eb = [b1] + ([b2] if hb else [])
    mag = sum(1 << (x + y) for x in ea for y in eb)
    return mag if (sa < 0) == (sb < 0) else -mag


@pytest.mark.parametrize("terms", [1, 2])
def test_approx_mul_power_of_two_formula_12bit_grid(terms):
    v = np.arange(-2048, 2048, 7)
    a, b = np.meshgrid(v, v[::-1] + 3, indexing="ij")
    b = np.clip(b, -2048, 2047)
    got = approx_mul(a, b, terms)
    formula = lod_approx(a, terms).astype(object) * lod_approx(b, terms).astype(object)
    np.testing.assert_array_equal(got, formula.astype(np.int64))
    for i, j in [(0, 0), (5, 100), (300, 17), (585, 585), (292, 0)]:
        assert got[i, j] == ref_approx_mul(int(a[i, j]), int(b[i, j]), terms)


@settings(deadline=None, max_examples=200)
@given(st.integers(-(2**30), 2**30), st.integers(-(2**30), 2**30), st.sampled_from([1, 2]))
def test_approx_mul_wide_property(a, b, terms):
    got = int(approx_mul(np.array(a), np.array(b), terms))
    assert got == ref_approx_mul(a, b, terms) == ref_approx(a, terms) * ref_approx(b, terms)


def test_approx_mul_examples():
    # 11 ~ 8 + 2, 6 = 4 + 2: (8+2)(4+2) = 32+16+8+4 = 60; LOD: 8 * 4 = 32.
    assert approx_mul(np.array(11), np.array(6), 2) == 60
    assert approx_mul(np.array(11), np.array(-6), 1) == -32
    assert approx_mul(np.array(-2048), np.array(-2048), 2) == 2**22
    assert approx_mul(np.array(0), np.array(-5), 2) == 0


@pytest.mark.parametrize("terms", [1, 2])
def test_approx_matmul_and_dot(terms):
    rng = np.random.default_rng(11)
    a = rng.integers(-2048, 2048, size=(5, 37))
    b = rng.integers(-2048, 2048, size=(37, 4))
    want = np.array([[sum(ref_approx_mul(int(a[i, k]), int(b[k, j]), terms)
                          for k in range(37)) for j in range(4)] for i in range(5)])
    np.testing.assert_array_equal(approx_matmul(a, b, terms), want)
    np.testing.assert_array_equal(approx_dot(a, b.T[1], terms), want[:, 1])


def test_errors():
    with pytest.raises(ExionError, match="lod_terms must be 1"):
        lod(np.array([1]), 3)
    with pytest.raises(ExionError, match="expected integers"):
        lod(np.array([1.5]))
    with pytest.raises(ExionError, match="2\\*\\*63"):
        lod(np.array([np.iinfo(np.int64).min]))
    with pytest.raises(ExionError, match="exponent sum"):
        approx_mul(np.array(2**40), np.array(2**30))
    with pytest.raises(ExionError, match="shapes do not chain: A is \\(2, 3\\)"):
        approx_matmul(np.zeros((2, 3), int), np.zeros((4, 2), int))
