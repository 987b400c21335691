"""Leading-one detectors (LOD / TS-LOD) and the shift-add approximate product (SPEC 3.4).

Hardware twin of ``exion.golden.lod`` (bit-exact, see ``docs/golden-predict.md`` section 1):

* :func:`leading_one` -- a log-depth priority tree: position of the highest one bit of an
  unsigned value and whether there is one (written here: ``amaranth.lib.coding`` is gone).
* :class:`LOD` -- sign-magnitude detector of a signed ``width``-bit value:
  ``(neg, nonzero, e1, e2, has_e2)``. The magnitude is ``width`` bits unsigned, so
  ``-2**(width-1)`` has ``e1 = width-1`` (the golden choice). Works for W-bit operands and for
  wide (accumulator-width) values alike.
* :func:`approx_product` -- the product of two LOD results as a signed sum of at most four
  shifted ones ``1 << (ea + eb)``: exponent adds, decoders and adders, **no multiplier**.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["LOD", "leading_one", "lod_layout", "approx_product", "exp_bits", "refuse"]


def refuse(component, message: str) -> ValueError:
    """The ``ValueError`` a constructor raises; marks the half-built component as used so
    that Amaranth does not also warn that it was "created but never used"."""
    component._MustUse__used = True
    return ValueError(message)


def exp_bits(width: int) -> int:
    """Bits of an exponent 0 .. width-1."""
    return max(1, ceil_log2(width))


def leading_one(value) -> tuple[Value, Value]:
    """``(index, found)`` of the highest one bit of unsigned ``value`` (index 0 if none).

    A binary tree: the upper half wins when it has a one, so the depth is
    ``ceil(log2(len(value)))`` muxes.
    """
    value = Value.cast(value)
    n = len(value)
    if n == 1:
        return Const(0, 1), value[0]
    half = 1 << (ceil_log2(n) - 1)          # lower part: a power of two
    lo_idx, lo_any = leading_one(value[:half])
    hi_idx, hi_any = leading_one(value[half:])
    bits = ceil_log2(n)
    idx = Mux(hi_any, (hi_idx + half), lo_idx)
    return idx.as_unsigned()[:bits], lo_any | hi_any


def lod_layout(width: int) -> data.StructLayout:
    """One detector result: sign bit, non-zero flag, two exponents, second-term flag."""
    eb = exp_bits(width)
    return data.StructLayout({"neg": 1, "nz": 1, "e1": unsigned(eb), "e2": unsigned(eb),
                              "has_e2": 1})


class LOD(wiring.Component):
    """Leading-one detector of a signed value (combinational).

    Parameters
    ----------
    width : int
        Bits of the signed input (W for operands, A for accumulator values), >= 2.
    terms : int
        1 = LOD only (``has_e2`` is always 0, no second detector is built); 2 = TS-LOD, with
        the second term enabled at run time by ``two_step``.

    Members
    -------
    value : In(signed(width))
        The value to approximate.
    two_step : In(1)
        With ``terms == 2``: 1 = TS-LOD, 0 = plain LOD. Ignored with ``terms == 1``.
    out : Out(lod_layout(width))
        ``neg`` (value < 0), ``nz`` (value != 0), ``e1`` = floor(log2|value|) (0 if zero),
        ``e2`` = position of the next one bit of |value| below e1 (0 if none or LOD mode),
        ``has_e2``. The approximation is ``(-1)**neg * nz * (2**e1 + has_e2 * 2**e2)``.

    Latency 0 (combinational); the EPRE registers its outputs.
    """

    def __init__(self, width: int, terms: int = 2):
        if not isinstance(width, int) or isinstance(width, bool) or width < 2:
            raise refuse(self, f"LOD width must be an integer >= 2, got {width!r}")
        if terms not in (1, 2) or isinstance(terms, bool):
            raise refuse(self, f"LOD terms must be 1 (LOD) or 2 (TS-LOD), got {terms!r}")
        self.width = width
        self.terms = terms
        super().__init__({
            "value": In(signed(width)),
            "two_step": In(1),
            "out": Out(lod_layout(width)),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.width
        v = self.value
        mag = Signal(unsigned(w), name="mag")
        # |v| in w unsigned bits: -2**(w-1) -> 2**(w-1) (two's complement negate, no overflow
        # in the unsigned reading).
        m.d.comb += mag.eq(Mux(v[-1], -v, v))
        e1, nz = leading_one(mag)
        m.d.comb += [self.out.neg.eq(v[-1]), self.out.nz.eq(nz), self.out.e1.eq(e1)]
        if self.terms == 2:
            rest = Signal(unsigned(w), name="rest")
            m.d.comb += rest.eq(mag & ~(Const(1, w) << e1)[:w])
            e2, has = leading_one(rest)
            m.d.comb += [self.out.e2.eq(Mux(self.two_step, e2, 0)),
                         self.out.has_e2.eq(has & self.two_step)]
        return m


def approx_product(a, b, width: int, terms: int) -> Value:
    """Signed product of two :func:`lod_layout` results, ``2*width + 1`` bits, shift-add only.

    Magnitude ``1<<(ea1+eb1) [+ 1<<(ea1+eb2)] [+ 1<<(ea2+eb1)] [+ 1<<(ea2+eb2)]``, each a
    one-hot decode of an exponent sum (< 2**(2W-1)); their sum is < 2**(2W). Sign = XOR, zero
    when either operand is zero. Same as ``exion.golden.lod.approx_mul``.
    """
    mw = 2 * width                      # magnitude bits
    one = Const(1, mw)

    def term(ea, eb):
        return (one << (ea + eb))[:mw]

    mag = term(a.e1, b.e1)
    if terms == 2:
        mag = (mag
               + Mux(b.has_e2, term(a.e1, b.e2), 0)
               + Mux(a.has_e2, term(a.e2, b.e1), 0)
               + Mux(a.has_e2 & b.has_e2, term(a.e2, b.e2), 0))
    mag = mag[:mw]
    signed_mag = Cat(mag, Const(0, 1)).as_signed()
    res = Mux(a.nz & b.nz, Mux(a.neg ^ b.neg, -signed_mag, signed_mag), 0)
    return res.as_signed()[:mw + 1].as_signed()
