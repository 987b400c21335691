"""Leading-one detection (LOD / TS-LOD) and shift-add approximate products (SPEC 3.4).

This is the arithmetic of the EPRE's converters and dot-product lanes. Nothing in the
approximate path multiplies two data values: a product of two approximations is a sum of
at most four powers of two, each built with a shift whose amount is an *exponent sum*.

Definitions (bit-exact; ``docs/golden-predict.md`` has the same text):

* ``v`` is any signed integer with ``|v| < 2**63`` (int64 arrays; ``-2**63`` is refused).
  The detector looks at the **magnitude** ``|v|``: sign-magnitude, not two's complement.
  So ``-2**(W-1)`` (magnitude ``2**(W-1)``, a one followed by zeros) has ``e1 = W-1`` and
  approximates to itself; its W-bit two's complement pattern is never scanned directly.
  **[choice]** Because both approximations only drop low one-bits, ``|approx(v)| <= |v|``:
  the approximation of a W-bit value is again a W-bit value.
* ``lod(v, terms)`` -> ``(sign, e1, e2, has_e2)``:
  ``sign`` = -1 / 0 / +1 (0 means ``v == 0``); ``e1 = floor(log2|v|)`` (0 when v == 0);
  ``e2`` = position of the highest one bit of ``|v| - 2**e1`` (0 when there is none);
  ``has_e2`` is True only when ``terms == 2`` and that bit exists. With ``terms == 1`` (plain
  LOD) ``has_e2`` is always False and ``e2`` is 0.
* ``lod_approx(v, terms) = sign * (2**e1 + has_e2 * 2**e2)``; 0 -> 0.
* ``approx_mul(a, b, terms)``: sign = XOR of the signs (0 if either is zero); magnitude =
  ``2**(ea1+eb1) [+ 2**(ea1+eb2)] [+ 2**(ea2+eb1)] [+ 2**(ea2+eb2)]`` (a bracketed term is
  present when both of its exponents are). Equal to ``lod_approx(a) * lod_approx(b)``.
* ``approx_dot`` / ``approx_matmul``: exact integer sums of ``approx_mul`` terms (int64; an
  input whose sum could leave int64 is refused). Bounding the sum to the A-bit accumulator is
  the caller's job (``exion.golden.predict`` applies ``check_k`` and ``wrap``).
"""

from __future__ import annotations

import numpy as np

from exion.errors import ExionError

__all__ = ["lod", "lod_approx", "approx_mul", "approx_dot", "approx_matmul", "bit_length"]

_I64_MIN = np.iinfo(np.int64).min


def _as_int(v, name: str) -> np.ndarray:
    a = np.asarray(v)
    if a.dtype.kind == "u":
        if a.size and a.max() > np.iinfo(np.int64).max:
            raise ExionError(f"{name}: values must be < 2**63, got max {a.max()}")
    elif a.dtype.kind not in "i":
        raise ExionError(f"{name}: expected integers, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and a.min() == _I64_MIN:
        raise ExionError(f"{name}: -2**63 has no int64 magnitude; values must satisfy "
                         f"|v| < 2**63")
    return a


def _check_terms(terms) -> int:
    if terms not in (1, 2) or isinstance(terms, bool):
        raise ExionError(f"lod_terms must be 1 (LOD) or 2 (TS-LOD), got {terms!r}")
    return int(terms)


def bit_length(m) -> np.ndarray:
    """Vectorised ``int.bit_length`` of non-negative int64 values (0 -> 0).

    A binary search on the magnitude (shift by 32, 16, ..., 1), no floating point.
    """
    x = np.asarray(m, dtype=np.int64).copy()
    n = np.zeros(x.shape, dtype=np.int64)
    for s in (32, 16, 8, 4, 2, 1):
        big = x >= (np.int64(1) << np.int64(s))
        n += np.where(big, s, 0)
        x = np.where(big, x >> np.int64(s), x)
    return n + (x > 0)


def lod(v, terms: int = 2):
    """Leading-one detection of each element of ``v``: ``(sign, e1, e2, has_e2)``.

    All four are arrays of ``v``'s shape: ``sign`` int64 in {-1, 0, 1}, ``e1`` and ``e2``
    int64 exponents, ``has_e2`` bool. See the module docstring for the exact definition.
    """
    terms = _check_terms(terms)
    a = _as_int(v, "lod input")
    mag = np.abs(a)
    sign = np.sign(a)
    e1 = np.maximum(bit_length(mag) - 1, 0)
    rest = np.where(mag > 0, mag - (np.int64(1) << e1), 0)
    has_e2 = (rest > 0) & (terms == 2)
    e2 = np.where(has_e2, bit_length(rest) - 1, 0)
    return sign, e1, e2, has_e2


def lod_approx(v, terms: int = 2) -> np.ndarray:
    """The LOD (``terms=1``) or TS-LOD (``terms=2``) approximation of ``v`` as int64."""
    sign, e1, e2, has_e2 = lod(v, terms)
    one = np.int64(1)
    mag = np.where(sign != 0, (one << e1) + np.where(has_e2, one << e2, 0), 0)
    return np.where(sign < 0, -mag, mag)


def approx_mul(a, b, terms: int = 2) -> np.ndarray:
    """Product of the approximations of ``a`` and ``b`` (broadcast), by shifts and adds only.

    Sign XOR, exponent adds, a sum of up to four powers of two. Refuses operands whose
    approximate product could reach 2**63.
    """
    sa, ea1, ea2, ha = lod(a, terms)
    sb, eb1, eb2, hb = lod(b, terms)
    if np.size(ea1) and np.size(eb1):
        top = int(np.max(np.where(sa != 0, ea1, 0))) + int(np.max(np.where(sb != 0, eb1, 0)))
        if top > 61:
            raise ExionError(f"approx_mul: exponent sum {top} > 61, the product could leave "
                             f"int64 (operands too wide)")
    one = np.int64(1)
    mag = one << (ea1 + eb1)
    mag = mag + np.where(hb, one << (ea1 + eb2), 0)
    mag = mag + np.where(ha, one << (ea2 + eb1), 0)
    mag = mag + np.where(ha & hb, one << (ea2 + eb2), 0)
    zero = (sa == 0) | (sb == 0)
    neg = (sa < 0) != (sb < 0)
    return np.where(zero, 0, np.where(neg, -mag, mag))


def _check_sum_fits(a_lod, b_lod, k: int, what: str) -> None:
    # Each |approx product| < 2**(ea1 + eb1 + 2); K of them must stay below 2**63.
    sa, ea1 = a_lod[0], a_lod[1]
    sb, eb1 = b_lod[0], b_lod[1]
    if not (np.size(ea1) and np.size(eb1)) or k == 0:
        return
    top = int(np.max(np.where(sa != 0, ea1, 0))) + int(np.max(np.where(sb != 0, eb1, 0))) + 2
    if top + (k - 1).bit_length() > 63:
        raise ExionError(f"{what}: K = {k} products of up to 2**{top} could leave int64")


def approx_dot(a, b, terms: int = 2) -> np.ndarray:
    """Approximate dot product along the last axis: ``sum(approx_mul(a, b), -1)``, exact."""
    a = _as_int(a, "approx_dot a")
    b = _as_int(b, "approx_dot b")
    if a.shape[-1:] != b.shape[-1:]:
        raise ExionError(f"approx_dot: last axes differ: a is {a.shape}, b is {b.shape}")
    _check_sum_fits(lod(a, terms), lod(b, terms), a.shape[-1] if a.ndim else 1, "approx_dot")
    return np.sum(approx_mul(a, b, terms), axis=-1)


def approx_matmul(a, b, terms: int = 2, a_name: str = "A", b_name: str = "B") -> np.ndarray:
    """Approximate ``a @ b`` for ``a`` (M, K) and ``b`` (K, N): exact int64 sums of
    :func:`approx_mul` terms. Vectorised over K in chunks (memory ~ a few million elements).
    """
    a = _as_int(a, a_name)
    b = _as_int(b, b_name)
    if a.ndim != 2 or b.ndim != 2:
        raise ExionError(f"approx_matmul: expected 2-D arrays, got {a_name} {a.shape}, "
                         f"{b_name} {b.shape}")
    if a.shape[1] != b.shape[0]:
        raise ExionError(f"shapes do not chain: {a_name} is {a.shape}, {b_name} is {b.shape} "
                         f"({a_name} columns must equal {b_name} rows)")
    terms = _check_terms(terms)
    M, K = a.shape
    N = b.shape[1]
    la, lb = lod(a, terms), lod(b, terms)
    _check_sum_fits(la, lb, K, "approx_matmul")
    out = np.zeros((M, N), dtype=np.int64)
    chunk = max(1, (1 << 22) // max(1, M * N))
    for k0 in range(0, K, chunk):
        sl = slice(k0, min(K, k0 + chunk))
        # (M, k, 1) x (1, k, N) -> (M, k, N) terms, summed over k.
        prod = approx_mul(a[:, sl, None], b[None, sl, :], terms)
        out += prod.sum(axis=1)
    return out
