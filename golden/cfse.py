"""CFSE fixed-point functions (SPEC 2 last bullet, 4.5): GELU, softmax, layer norm.

Bit-exact integer definitions (int64 NumPy, no floating point in any data path; floats only
appear in the host-side helpers that *choose* constants and in the float references the
tests compare against). The RTL in ``hw/cfse.py`` (the ``cfse`` top: GELU, softmax and layer
norm units) mirrors ``gelu_fx``, ``gelu_requant``, ``softmax_fx`` and ``layernorm_fx``
bit-exactly (``tests/test_cfse_rtl.py``); the tables come from ``exion/cfse_tables.py``, which
both import.

Common pieces
-------------
* Fixed point "Q.F": an integer ``q`` stands for ``q / 2**F``. The CFSE works on 16-bit
  values (``FX_BITS = 16``) with ``F = FX_FRAC = 11`` (range [-16, 16), step 2**-11) and
  32-bit intermediates. :data:`FX_MIN`, :data:`FX_MAX` are the 16-bit limits.
* ``rshift_round(v, s)`` = ``(v + 2**(s-1)) >> s`` for ``s > 0`` (``v`` for ``s == 0``):
  round half up (toward +inf) with an arithmetic shift.
* ``requant(v, mult, shift, bits, symmetric)`` = ``saturate(rshift_round(v * mult, shift))``
  to signed ``bits`` (``[-(2**(bits-1)-1), 2**(bits-1)-1]`` when ``symmetric``). ``mult`` is
  an integer in [0, 2**15) and ``shift`` in [0, 62]; the product fits int64 for A <= 48.

GELU  **[choice: 257-entry Q.15 table of GELU on [-8, 0], linear interpolation]**
---------------------------------------------------------------------------------
``gelu_fx(x)`` for 16-bit Q.11 ``x``: with ``a = |x|``,

* ``g(a) = 0`` if ``a >= 8 * 2**11``; else ``i = a >> 6`` (segments of width 1/32),
  ``f = a & 63``, ``g15 = T[i] + rshift_round((T[i+1] - T[i]) * f, 6)`` (Q.15) and
  ``g(a) = rshift_round(g15, 4)`` (Q.11), where ``T[j] = rint(GELU(-j/32) * 2**15)`` (round
  half to even), ``j = 0..256`` (:data:`GELU_TABLE`, values in [-5570, 0]: a 14-bit ROM).
* ``gelu_fx(x) = g(a)`` for ``x <= 0`` and ``x + g(a)`` for ``x > 0``, using the identity
  ``GELU(x) = x + GELU(-x)``: one table serves both signs. The result is in
  [-348, 32767]: no saturation is needed.

Measured error against float ``x * Phi(x)`` (erf form) over all 65536 inputs: max
3.57e-4 (0.73 LSB of 2**-11), mean 3.4e-5; the tests hold it to ``GELU_MAX_ABS_ERR = 4e-4``.

``gelu_requant(acc, p, cfg)`` is the FC1 output path of the FFN (SPEC 3.3): the A-bit FC1
accumulator (bias included) -> ``x = requant(acc, p.in_mult, p.in_shift, 16)`` (Q.11) ->
``y = gelu_fx(x)`` -> ``h = requant(y, p.out_mult, p.out_shift, W, symmetric=True)``.
The output saturates to the *symmetric* range [-(2**(W-1)-1), 2**(W-1)-1] **[choice]**, so
``-h`` is also a W-bit operand (FFN-Reuse's FC2 delta subtracts cached H). The host derives
``p`` from the float scales with :func:`gelu_params`. Error of the whole path against
``GELU(acc * s_acc) / s_h`` (clipped to the W-bit range): measured max 0.72 LSB of H for
``|acc * s_acc| <= 15`` (exion16, H step 4/2047); the tests hold it to 1 LSB. Beyond
``|acc * s_acc| = 16`` the Q.11 input saturates.

Softmax  **[choice]**
---------------------
``softmax_fx(x, axis=-1)`` for 16-bit Q.11 scores (already scaled by 1/sqrt(d)); output
probabilities in Q.15 (``2**15`` = 1.0), each in [0, 32768]:

1. ``d = x - max(x)`` along the row (``d <= 0``, 17 bits).
2. ``z = (-d * LOG2E_Q14 + 2**13) >> 14`` with ``LOG2E_Q14 = 23637`` = rint(log2(e) 2**14):
   ``z`` ~ ``-d * log2(e)`` in Q.11, ``z >= 0``.
3. ``n = z >> 11`` (integer part), ``r = z & 2047`` (fraction, Q.11), ``j = r >> 6``;
   ``p = E[j] + rshift_round((E[j+1] - E[j]) * (r & 63), 6)`` with
   ``E[j] = EXP2_TABLE[j] = rint(2**(15 - j/32))``, j = 0..32 (``p`` ~ 2**-r in Q.15);
   ``e = rshift_round(p << 7, min(n, 23))`` (~ 2**-z in Q.22, a 24-bit value; 0 once
   ``n >= 23``).
4. ``S = sum(e)`` along the row (rows up to 65535 long: S < 2**39).
5. ``out = (e * 2**15 + S // 2) // S`` (round half up integer division; S >= 2**22).

Measured error against float softmax of ``x / 2**11``: max 6e-5 absolute per probability
(random rows of length 2..1000, spreads 0.1..8); the tests hold it to
``SOFTMAX_MAX_ABS_ERR = 1.5e-4`` (5 LSB of Q.15).

Layer norm  **[choice]**
------------------------
``layernorm_fx(x, gamma, beta, eps_q=1)`` along the last axis (N <= 16384 values per row),
``x``, ``gamma``, ``beta`` Q.11 16-bit; output Q.11 16-bit. Mean and deviations carry 8
extra fraction bits (Q.19) so that the mean's rounding is negligible:

1. ``xm = x << 8``; ``mu = (2 * sum(xm) + N) // (2 * N)`` (Q.19, round half up).
2. ``d = xm - mu`` (|d| < 2**24); ``var = sum(d * d) // N`` (Q.38, floor, 64-bit sum);
   ``sd = isqrt(var + eps_q)`` (Q.19, floor square root; ``eps_q`` in Q.38 units, >= 1, so
   ``sd >= 1``).
3. ``n = saturate16((d * 2**11 + sd // 2) // sd)`` (normalised value, Q.11, round half up).
4. ``out = saturate16(rshift_round(n * gamma, 11) + beta)``.

Measured error against float layer norm (eps = 0) of ``x / 2**11``, times ``gamma / 2**11``
plus ``beta / 2**11``, for ``|gamma| <= 2``: max 7.4e-4 absolute (random rows of length
2..1152, standard deviation 2**-6..3); the tests hold it to ``LAYERNORM_MAX_ABS_ERR = 1e-3``
for rows whose standard deviation is at least 2**-6 (the error is about
``(|gamma| + 1) * 2**-12``: output rounding, independent of the spread thanks to Q.19).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from exion.cfse_tables import LOG2E_Q14, exp2_table, gelu_float, gelu_table
from exion.config import Config
from exion.errors import ExionError

__all__ = ["FX_BITS", "FX_FRAC", "FX_MIN", "FX_MAX", "GELU_TABLE", "EXP2_TABLE",
           "LOG2E_Q14", "GELU_MAX_ABS_ERR", "SOFTMAX_MAX_ABS_ERR", "LAYERNORM_MAX_ABS_ERR",
           "rshift_round", "requant", "gelu_fx", "gelu_float", "GeluParams", "gelu_params",
           "gelu_requant", "softmax_fx", "layernorm_fx", "cfse", "CFSE_FUNCTIONS"]

FX_BITS = 16
FX_FRAC = 11
FX_MIN = -(1 << (FX_BITS - 1))
FX_MAX = (1 << (FX_BITS - 1)) - 1

GELU_MAX_ABS_ERR = 4e-4
SOFTMAX_MAX_ABS_ERR = 1.5e-4
LAYERNORM_MAX_ABS_ERR = 1e-3

_SM_EXTRA = 7          # softmax exponentials are kept in Q.22 (24-bit), sums in 40 bits
_LN_XFRAC = 8          # extra fraction bits of the mean / deviations (Q.19)
_LN_MAX_N = 1 << 14    # |d| < 2**24, d*d < 2**48, a 2**14-term sum < 2**62

_GELU_SEG = 6          # log2 of the segment width in Q.11 units (1/32)
_GELU_TFRAC = 15       # the table is Q.15
_GELU_END = 8 << FX_FRAC


#: ``rint(GELU(-j/32) * 2**15)``, j = 0..256 (made by ``exion.cfse_tables``, shared with hw/).
GELU_TABLE = gelu_table()
#: ``rint(2**(15 - j/32))``, j = 0..32: 2**-r in Q.15 at 33 points of r in [0, 1].
EXP2_TABLE = exp2_table()


def rshift_round(v, s: int) -> np.ndarray:
    """``(v + 2**(s-1)) >> s`` (round half up); ``v`` unchanged for ``s == 0``."""
    v = np.asarray(v, dtype=np.int64)
    if s == 0:
        return v
    return (v + (np.int64(1) << np.int64(s - 1))) >> np.int64(s)


def _rshift_round_var(v, s) -> np.ndarray:
    """Elementwise ``rshift_round`` with per-element shifts ``s >= 0``."""
    v = np.asarray(v, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    half = np.where(s > 0, np.int64(1) << np.maximum(s - 1, 0), 0)
    return (v + half) >> s


def _sat(v, bits: int, symmetric: bool = False) -> np.ndarray:
    hi = (1 << (bits - 1)) - 1
    lo = -hi if symmetric else -hi - 1
    return np.clip(np.asarray(v, dtype=np.int64), lo, hi)


def requant(v, mult: int, shift: int, bits: int, symmetric: bool = False) -> np.ndarray:
    """``saturate(rshift_round(v * mult, shift), bits)`` (see the module docstring)."""
    if isinstance(mult, bool) or not isinstance(mult, (int, np.integer)) \
            or not 0 <= mult < (1 << 15):
        raise ExionError(f"requant mult must be an integer in [0, 32767], got {mult!r}")
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) \
            or not 0 <= shift <= 62:
        raise ExionError(f"requant shift must be an integer in [0, 62], got {shift!r}")
    v = np.asarray(v, dtype=np.int64)
    if v.size and int(np.max(np.abs(v))) >= (1 << 48):
        raise ExionError("requant input must satisfy |v| < 2**48 (A <= 48 bits)")
    return _sat(rshift_round(v * np.int64(mult), int(shift)), bits, symmetric)


def _check_fx(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise ExionError(f"{name}: expected integer Q.{FX_FRAC} values, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < FX_MIN or a.max() > FX_MAX):
        raise ExionError(f"{name}: values must be 16-bit [{FX_MIN}, {FX_MAX}], "
                         f"got [{a.min()}, {a.max()}]")
    return a


def gelu_fx(x) -> np.ndarray:
    """GELU of 16-bit Q.11 integers -> Q.11 integers (table + linear interpolation)."""
    x = _check_fx(x, "gelu_fx input")
    a = np.abs(x)
    inside = a < _GELU_END
    ac = np.where(inside, a, 0)
    i = ac >> _GELU_SEG
    f = ac & ((1 << _GELU_SEG) - 1)
    t0 = GELU_TABLE[i]
    t1 = GELU_TABLE[i + 1]
    g15 = t0 + rshift_round((t1 - t0) * f, _GELU_SEG)
    g = np.where(inside, rshift_round(g15, _GELU_TFRAC - FX_FRAC), 0)
    return np.where(x > 0, x + g, g)


@dataclass(frozen=True)
class GeluParams:
    """Requantization constants of the FC1 -> GELU -> H path (see :func:`gelu_requant`).

    ``in_mult / 2**in_shift`` ~ ``s_acc * 2**11`` (accumulator -> Q.11) and
    ``out_mult / 2**out_shift`` ~ ``2**-11 / s_h`` (Q.11 -> W-bit H).
    """

    in_mult: int
    in_shift: int
    out_mult: int
    out_shift: int

    def __post_init__(self):
        for f in ("in_mult", "out_mult"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < (1 << 15):
                raise ExionError(f"GeluParams.{f} must be an integer in [0, 32767], got {v!r}")
        for f in ("in_shift", "out_shift"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 62:
                raise ExionError(f"GeluParams.{f} must be an integer in [0, 62], got {v!r}")

    def to_dict(self) -> dict:
        return {"in_mult": self.in_mult, "in_shift": self.in_shift,
                "out_mult": self.out_mult, "out_shift": self.out_shift}


def _mult_shift(ratio: float, what: str) -> tuple[int, int]:
    """Largest-precision ``(mult, shift)`` with ``mult / 2**shift ~ ratio``, mult < 2**15."""
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ExionError(f"{what} must be a positive finite scale ratio, got {ratio!r}")
    shift = 0
    while shift < 62 and round(ratio * 2 ** (shift + 1)) < (1 << 15):
        shift += 1
    mult = int(round(ratio * 2 ** shift))
    if mult >= (1 << 15):
        raise ExionError(f"{what} = {ratio!r} is too large to requantize (mult >= 2**15 "
                         f"even with shift 0)")
    if mult == 0:
        raise ExionError(f"{what} = {ratio!r} is too small to requantize (underflows "
                         f"with shift 62)")
    return mult, shift


def gelu_params(s_acc: float, s_h: float) -> GeluParams:
    """Host-side: requant constants for an accumulator of scale ``s_acc`` (real value =
    ``acc * s_acc``) and an H output of scale ``s_h`` (real value = ``h * s_h``)."""
    im, ish = _mult_shift(s_acc * (1 << FX_FRAC), "s_acc * 2**11")
    om, osh = _mult_shift(1.0 / (s_h * (1 << FX_FRAC)), "2**-11 / s_h")
    return GeluParams(im, ish, om, osh)


def gelu_requant(acc, p: GeluParams, cfg: Config) -> np.ndarray:
    """FC1 accumulator -> Q.11 -> ``gelu_fx`` -> W-bit H (symmetric saturation)."""
    x = requant(acc, p.in_mult, p.in_shift, FX_BITS)
    y = gelu_fx(x)
    return requant(y, p.out_mult, p.out_shift, cfg.width, symmetric=True)


def softmax_fx(x, axis: int = -1) -> np.ndarray:
    """Softmax of 16-bit Q.11 scores along ``axis`` -> Q.15 probabilities (int64)."""
    x = _check_fx(x, "softmax_fx input")
    if x.ndim == 0:
        raise ExionError("softmax_fx input: expected at least a 1-D array")
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1]
    if n == 0 or n > 65535:
        raise ExionError(f"softmax_fx input: row length must be in 1..65535, got {n}")
    d = x - x.max(axis=-1, keepdims=True)
    z = ((-d) * LOG2E_Q14 + (1 << 13)) >> 14
    ip = z >> FX_FRAC
    r = z & ((1 << FX_FRAC) - 1)
    j = r >> 6
    p = EXP2_TABLE[j] + rshift_round((EXP2_TABLE[j + 1] - EXP2_TABLE[j]) * (r & 63), 6)
    e = _rshift_round_var(p << _SM_EXTRA, np.minimum(ip, 15 + 1 + _SM_EXTRA))
    s = e.sum(axis=-1, keepdims=True)
    out = (e * (1 << 15) + s // 2) // s
    return np.moveaxis(out, -1, axis)


def layernorm_fx(x, gamma, beta, eps_q: int = 1) -> np.ndarray:
    """Layer norm of 16-bit Q.11 rows (last axis) with Q.11 ``gamma``/``beta`` -> Q.11."""
    x = _check_fx(x, "layernorm_fx input")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ExionError(f"layernorm_fx input: expected rows of >= 1 value, got {x.shape}")
    n = x.shape[-1]
    gamma = _check_fx(gamma, "layernorm_fx gamma")
    beta = _check_fx(beta, "layernorm_fx beta")
    for name, v in (("gamma", gamma), ("beta", beta)):
        if v.shape != (n,):
            raise ExionError(f"layernorm_fx {name}: expected shape ({n},), got {v.shape}")
    if isinstance(eps_q, bool) or not isinstance(eps_q, int) or eps_q < 1:
        raise ExionError(f"layernorm_fx eps_q must be an integer >= 1, got {eps_q!r}")
    if n > _LN_MAX_N:
        raise ExionError(f"layernorm_fx input: rows longer than {_LN_MAX_N} are not "
                         f"supported (64-bit variance sum), got {n}")
    xm = x << _LN_XFRAC
    mu = (2 * xm.sum(axis=-1, keepdims=True) + n) // (2 * n)
    d = xm - mu
    var = (d * d).sum(axis=-1, keepdims=True) // n
    isqrt = np.vectorize(lambda v: math.isqrt(int(v)), otypes=[np.int64])
    sd = isqrt(var + eps_q)
    nrm = _sat((d * (1 << FX_FRAC) + sd // 2) // sd, FX_BITS)
    return _sat(rshift_round(nrm * gamma, FX_FRAC) + beta, FX_BITS)


CFSE_FUNCTIONS = ("gelu", "softmax", "layernorm")


def cfse(cfg: Config, fn: str, x, gamma=None, beta=None, eps_q: int = 1,
         params: GeluParams | None = None) -> np.ndarray:
    """The ``cfse`` block's contract (``hw/cfse.py``): one of its three units on ``x``.

    ``gelu``: :func:`gelu_fx` of Q.11 values, or with ``params`` :func:`gelu_requant` of A-bit
    accumulators; ``softmax``: :func:`softmax_fx` along the last axis; ``layernorm``:
    :func:`layernorm_fx` along the last axis with ``gamma``, ``beta``, ``eps_q``.
    """
    if fn == "gelu":
        return gelu_fx(x) if params is None else gelu_requant(x, params, cfg)
    if fn == "softmax":
        return softmax_fx(x)
    if fn == "layernorm":
        if gamma is None or beta is None:
            raise ExionError("layernorm needs gamma and beta (Q.11, one per row element)")
        return layernorm_fx(x, gamma, beta, eps_q)
    raise ExionError(f"unknown CFSE function {fn!r}; available: {', '.join(CFSE_FUNCTIONS)}")
