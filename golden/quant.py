"""Number formats (SPEC 2): INT-W operands, symmetric quantization, exact A-bit accumulation.

Choices (also in ``docs/choices.md``):

* Quantization is symmetric per tensor: ``q = clip(rint(x / s), -2**(W-1), 2**(W-1)-1)`` with
  ``rint`` = round half to even (``numpy.rint``). The default scale maps ``max|x|`` onto
  ``2**(W-1)-1`` (so ``-2**(W-1)`` is never produced from data; it is still a legal operand
  and the hardware handles it).
* Dequantization: ``x ~ q * s``.
* Accumulation is an exact integer sum, then taken modulo ``2**A`` as a signed A-bit value
  (:func:`wrap`). Inside ``cfg.k_max`` the wrap never changes a value (SPEC 2 rule); golden
  functions refuse longer reductions with :class:`~exion.errors.ExionError`.
"""

from __future__ import annotations

import numpy as np

from exion.config import Config
from exion.errors import ExionError

__all__ = ["quantize", "dequantize", "scale_for", "check_operand", "check_k", "wrap",
           "saturate", "int_matmul"]


def scale_for(x: np.ndarray, cfg: Config) -> float:
    """Symmetric per-tensor scale: ``max|x| / (2**(W-1)-1)`` (1.0 for an all-zero tensor)."""
    m = float(np.max(np.abs(x))) if np.size(x) else 0.0
    return m / cfg.wmax if m > 0 else 1.0


def quantize(x: np.ndarray, cfg: Config, scale: float | None = None) -> tuple[np.ndarray, float]:
    """``(q, s)`` with ``q = clip(rint(x / s))`` as int64 in the W-bit signed range."""
    s = scale_for(x, cfg) if scale is None else float(scale)
    if not s > 0:
        raise ExionError(f"quantization scale must be > 0, got {s}")
    q = np.clip(np.rint(np.asarray(x, dtype=np.float64) / s), cfg.wmin, cfg.wmax)
    return q.astype(np.int64), s


def dequantize(q: np.ndarray, scale: float) -> np.ndarray:
    return np.asarray(q, dtype=np.float64) * scale


def check_operand(cfg: Config, arr, name: str, ndim: int | None = None) -> np.ndarray:
    """Return ``arr`` as int64 after checking it is integral and inside the W-bit range."""
    a = np.asarray(arr)
    if ndim is not None and a.ndim != ndim:
        raise ExionError(f"{name}: expected a {ndim}-D array, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        if a.dtype.kind == "b" or (a.dtype.kind == "f" and np.all(np.rint(a) == a)):
            a = a.astype(np.int64)
        else:
            raise ExionError(f"{name}: expected integer operands, got dtype {a.dtype} with "
                             f"non-integer values (quantize first: "
                             f"exion.golden.quant.quantize)")
    a = a.astype(np.int64)
    if a.size and (a.min() < cfg.wmin or a.max() > cfg.wmax):
        raise ExionError(f"{name}: values must be in [{cfg.wmin}, {cfg.wmax}] "
                         f"(signed {cfg.width}-bit), got [{a.min()}, {a.max()}]")
    return a


def check_k(cfg: Config, k: int, what: str = "K") -> None:
    """Refuse a reduction longer than the config's exact range (SPEC 2)."""
    if k > cfg.k_max:
        raise ExionError(f"{what} = {k} exceeds config {cfg.name!r} k_max = {cfg.k_max}: "
                         f"the {cfg.acc_width}-bit accumulator is only guaranteed exact up to "
                         f"k_max (raise acc_width or k_max in the config)")


def wrap(v, bits: int) -> np.ndarray:
    """Two's complement wrap of integers to ``bits`` bits (what an A-bit register holds)."""
    v = np.asarray(v, dtype=np.int64)
    if bits >= 64:
        return v
    half = np.int64(1) << np.int64(bits - 1)
    mask = (np.int64(1) << np.int64(bits)) - np.int64(1)
    return ((v + half) & mask) - half


def saturate(v, bits: int) -> np.ndarray:
    """Clip integers to the signed ``bits``-bit range."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(np.asarray(v, dtype=np.int64), lo, hi)


def int_matmul(cfg: Config, a, b, a_name: str = "A", b_name: str = "B") -> np.ndarray:
    """Exact ``a @ b`` of W-bit operands in A-bit two's complement (int64 result).

    ``a``: (M, K), ``b``: (K, N). Refuses K > ``cfg.k_max`` and out-of-range operands.
    """
    a = check_operand(cfg, a, a_name, ndim=2)
    b = check_operand(cfg, b, b_name, ndim=2)
    if a.shape[1] != b.shape[0]:
        raise ExionError(f"shapes do not chain: {a_name} is {a.shape}, {b_name} is {b.shape} "
                         f"({a_name} columns must equal {b_name} rows)")
    check_k(cfg, a.shape[1])
    # int64 is exact: |sum| <= k_max * 2**(2W-2) < 2**(A-1) <= 2**63.
    return wrap(a @ b, cfg.acc_width)
