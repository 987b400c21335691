"""Pipelined arithmetic stages of the CFSE (``hw/cfse.py``).

Each stage is a small ``wiring.Component`` with a clock enable ``en`` (the parent's pipeline
advance: every register of the stage loads only while ``en`` is high, so a stalled pipeline
holds its contents), a published ``latency`` (cycles from the inputs to the outputs, counted
in cycles with ``en`` high) and a golden counterpart it matches bit-exactly:

* :class:`PipeDiv`: ``min(num // den, 2**q_bits - 1)`` (unsigned), one restoring
  shift/subtract stage per quotient bit.
* :class:`PipeSqrt`: ``floor(sqrt(v))``, one digit-by-digit stage per root bit.
* :class:`Exp2Lanes`: the softmax exponential of ``golden.cfse.softmax_fx`` steps 1-3
  (``e`` in Q.22 from ``x`` and the row maximum), L lanes.

Datapath registers are reset-less; nothing here has control state.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from exion.cfse_tables import LOG2E_Q14, exp2_table

from .lod import refuse

__all__ = ["reg", "delay", "rshift_round_var", "saturate", "PipeDiv", "PipeSqrt",
           "Exp2Lanes", "EXP_LATENCY", "E_BITS", "FX", "FX_FRAC"]

FX = 16            # CFSE fixed-point width (golden FX_BITS)
FX_FRAC = 11       # Q.11
E_BITS = 23        # softmax exponentials e <= 2**22 (Q.22)
EXP_LATENCY = 3    # Exp2Lanes: z, p/shift, e


def reg(m: Module, value, name: str, en, *, shape=None, control: bool = False) -> Signal:
    """``value`` registered in ``m`` while ``en`` (datapath: reset-less)."""
    value = Value.cast(value)
    r = Signal(value.shape() if shape is None else shape, name=name, reset_less=not control)
    with m.If(en):
        m.d.sync += r.eq(value)
    return r


def delay(m: Module, value, n: int, en, name: str, *, control: bool = False):
    """``value`` after ``n`` registers enabled by ``en``."""
    for i in range(n):
        value = reg(m, value, f"{name}_d{i}", en, control=control)
    return Value.cast(value)


def rshift_round_var(v, s, s_bits: int):
    """``(v + 2**(s-1)) >> s`` for a run-time ``s`` (``v`` for ``s == 0``), written as
    ``((v >> (s - 1)) + 1) >> 1`` so that no wide constant is shifted."""
    sm1 = Signal(s_bits, name="sm1")
    v = Value.cast(v)
    return Mux(s == 0, v, ((v >> sm1) + 1) >> 1), sm1.eq((s - 1)[:s_bits])


def saturate(v, bits: int, symmetric: bool = False):
    """Clamp to signed ``bits`` ([-(2**(bits-1)-1), ...] when ``symmetric``)."""
    hi = (1 << (bits - 1)) - 1
    lo = -hi if symmetric else -hi - 1
    return Mux(v > hi, hi, Mux(v < lo, lo, v))


class PipeDiv(wiring.Component):
    """Pipelined restoring divider: ``q = min(num // den, 2**q_bits - 1)`` (unsigned).

    Parameters
    ----------
    num_bits, den_bits, q_bits : int
        Operand and quotient widths. ``den`` must be >= 1 (the callers guarantee it).

    Members
    -------
    en : In(1)
        Pipeline advance (clock enable of every register).
    num : In(num_bits), den : In(den_bits)
        Operands, taken when ``en``.
    q : Out(q_bits)
        The quotient of the operands taken ``latency`` advances earlier; saturated to
        ``2**q_bits - 1`` when ``num >= den * 2**q_bits`` (found in the input stage).

    Latency ``q_bits + 1`` (input stage, then one compare/subtract stage per quotient bit,
    most significant first); throughput one division per advance.
    """

    def __init__(self, num_bits: int, den_bits: int, q_bits: int):
        for name, v in (("num_bits", num_bits), ("den_bits", den_bits), ("q_bits", q_bits)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise refuse(self, f"PipeDiv {name} must be an integer >= 1, got {v!r}")
        self.num_bits, self.den_bits, self.q_bits = num_bits, den_bits, q_bits
        super().__init__({"en": In(1), "num": In(num_bits), "den": In(den_bits),
                          "q": Out(q_bits)})

    @property
    def latency(self) -> int:
        return self.q_bits + 1

    def elaborate(self, platform):
        m = Module()
        en, nb, qb = self.en, self.num_bits, self.q_bits
        rem = reg(m, self.num, "rem_in", en)
        den = reg(m, self.den, "den_in", en)
        ovf = reg(m, self.num >= (self.den << qb), "ovf_in", en)
        q = Const(0, qb)
        for i in reversed(range(qb)):
            ge = rem >= (den << i)
            nxt = Mux(ge, rem - (den << i), rem)[:nb]
            q = Cat([q[b] if b != i else ge for b in range(qb)])
            rem = reg(m, nxt, f"rem{i}", en, shape=unsigned(nb))
            q = reg(m, q, f"q{i}", en)
            den = reg(m, den, f"den{i}", en)
            ovf = reg(m, ovf, f"ovf{i}", en)
        m.d.comb += self.q.eq(Mux(ovf, (1 << qb) - 1, q))
        return m


class PipeSqrt(wiring.Component):
    """Pipelined floor square root: ``root = isqrt(v)`` for ``v < 2**(2 * root_bits)``.

    Members
    -------
    en : In(1)
    v : In(2 * root_bits)
    root : Out(root_bits)

    Latency ``root_bits + 1`` (input stage, one digit stage per root bit: the classic
    ``if v >= res + one: v -= res + one; res = res/2 + one else res /= 2; one /= 4``).
    """

    def __init__(self, root_bits: int):
        if not isinstance(root_bits, int) or isinstance(root_bits, bool) or root_bits < 1:
            raise refuse(self, f"PipeSqrt root_bits must be an integer >= 1, got "
                               f"{root_bits!r}")
        self.root_bits = root_bits
        super().__init__({"en": In(1), "v": In(2 * root_bits), "root": Out(root_bits)})

    @property
    def latency(self) -> int:
        return self.root_bits + 1

    def elaborate(self, platform):
        m = Module()
        nb, en = self.root_bits, self.en
        w = 2 * nb
        op = reg(m, self.v, "op_in", en)
        res = Const(0, w)
        for k in range(nb):
            one = 1 << (2 * (nb - 1 - k))
            trial = res + one
            ge = op >= trial
            op = reg(m, Mux(ge, op - trial, op)[:w], f"op{k}", en, shape=unsigned(w))
            res = reg(m, Mux(ge, (res >> 1) + one, res >> 1)[:w], f"res{k}", en,
                      shape=unsigned(w))
        m.d.comb += self.root.eq(res[:nb])
        return m


class Exp2Lanes(wiring.Component):
    """The softmax exponential of ``golden.cfse.softmax_fx`` (steps 1-3), L lanes.

    Per lane: ``d = x - mx``; ``z = (-d * LOG2E_Q14 + 2**13) >> 14``; ``n = z >> 11``,
    ``r = z & 2047``, ``j = r >> 6``; ``p = E[j] + rshift_round((E[j+1] - E[j]) * (r & 63),
    6)``; ``e = rshift_round(p << 7, min(n, 23))`` (``E`` = ``exp2_table()``, constants).

    Members
    -------
    en : In(1)
    x : In(ArrayLayout(signed(16), lanes))
    mx : In(signed(16))
        The row maximum (``mx >= x`` on the lanes that matter).
    e : Out(ArrayLayout(unsigned(23), lanes))

    Latency ``EXP_LATENCY = 3``: ``z`` register, ``p`` and shift register, ``e`` register.
    """

    def __init__(self, lanes: int):
        self.lanes = lanes
        super().__init__({"en": In(1), "x": In(data.ArrayLayout(signed(FX), lanes)),
                          "mx": In(signed(FX)), "e": Out(data.ArrayLayout(unsigned(E_BITS),
                                                                          lanes))})

    @property
    def latency(self) -> int:
        return EXP_LATENCY

    def elaborate(self, platform):
        m = Module()
        en = self.en
        tab = [int(v) for v in exp2_table()]
        e0 = Array([Const(tab[j], unsigned(16)) for j in range(32)])
        e1 = Array([Const(tab[j + 1], unsigned(16)) for j in range(32)])
        for lane in range(self.lanes):
            nd = (self.mx - self.x[lane])[:17]                  # -d, 0..65535
            z = reg(m, ((nd * LOG2E_Q14 + (1 << 13)) >> 14)[:17], f"z{lane}", en)
            n, r = z[11:], z[:11]
            j, f = r[6:], r[:6]
            a, b = e0[j], e1[j]
            step = ((b - a) * f + 32) >> 6           # unsigned - unsigned is signed
            p = reg(m, (a + step)[:16], f"p{lane}", en, shape=unsigned(16))
            s = reg(m, Mux(n > 23, 23, n)[:5], f"s{lane}", en, shape=unsigned(5))
            val, fix = rshift_round_var(p << 7, s, 5)
            m.d.comb += fix
            e = reg(m, val[:E_BITS], f"e{lane}", en, shape=unsigned(E_BITS))
            m.d.comb += self.e[lane].eq(e)
        return m
