"""Small helpers shared by the hardware blocks."""

from __future__ import annotations

from amaranth import Array, Cat, ClockSignal, Const, Instance, ResetSignal, Signal, Value
from amaranth.lib.wiring import In

from exion.config import index_bits

__all__ = ["bits_for", "div_const", "pad_mux", "pipe_reg", "popcount", "ge_const", "add_logic",
           "lt_logic", "black_box"]


def black_box(module: str, signature, ifc) -> Instance:
    """An instance of Verilog module ``module`` (``clk``, ``rst`` and the ports a component
    of ``signature`` has as a generated top: ``i_`` / ``o_`` plus its members' paths joined
    by ``__``) on the signals of ``ifc``, an interface of ``signature``; constant members
    (an always-ready stream's ``ready``) are not ports."""
    ports = {("i_" if member.flow == In else "o_") + "__".join(map(str, path)): Value.cast(v)
             for path, member, v in signature.flatten(ifc)
             if not isinstance(Value.cast(v), Const)}
    return Instance(module, i_clk=ClockSignal(), i_rst=ResetSignal(), **ports)


#: Bits of an index into ``n`` items (at least 1): ``exion.config.index_bits`` (one home).
bits_for = index_bits


def div_const(value, divisor: int):
    """``value // divisor`` for an unsigned ``value`` and a constant ``divisor`` >= 1, as a
    shift (a power of two) or a multiply by a constant and a shift (``m = ceil(2**s /
    divisor)`` with ``s = width + ceil_log2(divisor)``: the round-up method, exact for every
    value of the width because ``m * divisor - 2**s < divisor <= 2**ceil_log2(divisor)``),
    never a divider circuit (issue 22: Yosys builds ``//`` as a divider array; on the toy
    engine's pass-queue write path it cost 13 MHz)."""
    value = Value.cast(value)
    n = len(value)
    d = int(divisor)
    if d < 1:
        raise ValueError(f"div_const: divisor {divisor!r} must be >= 1")
    if d & (d - 1) == 0:
        return value >> (d.bit_length() - 1)
    sh = n + (d - 1).bit_length()
    mul = -(-(1 << sh) // d)
    return (value * mul) >> sh


def pad_mux(items, index):
    """``items[index]`` as a mux; the list is padded to ``2**len(index)`` with its last item
    so that every index value is covered (no incomplete ``case`` in the Verilog, which
    ``verilator -Wall`` flags as CASEINCOMPLETE)."""
    items = [Value.cast(v) for v in items]
    if len(items) == 1:
        return items[0]
    items += [items[-1]] * (2 ** len(Value.cast(index)) - len(items))
    return Array(items)[index]


def pipe_reg(m, value, name: str, enable=None, control: bool = False):
    """``value`` one cycle later in ``m``'s sync domain.

    Datapath registers are reset-less (``control=False``); control registers reset. With
    ``enable`` the register holds its value while the enable is low (no idle toggling).
    """
    reg = Signal.like(value, name=name, reset_less=not control)
    if enable is None:
        m.d.sync += reg.eq(value)
    else:
        with m.If(enable):
            m.d.sync += reg.eq(value)
    return reg


def _wire(m, value, name: str):
    """``value`` as a signal driven in ``m``'s comb domain (``value`` itself without ``m``):
    Amaranth emits an expression again at every use, so a gate tree whose terms are used
    more than once must name them, or the Verilog grows exponentially with its depth."""
    if m is None:
        return value
    value = Value.cast(value)
    sig = Signal(len(value), name=name)
    m.d.comb += sig.eq(value)
    return sig


def add_logic(a, b, m=None) -> Value:
    """``a + b`` (unsigned, one bit wider than the wider) as XOR/AND/OR gates, no ``+``: for
    small operands on a short path, where a carry chain (a box the LUT mapper cannot merge
    into the logic around it) costs more than the gates. With ``m`` the sum is a signal
    driven in ``m`` (see ``_wire``; needed when it feeds further gate arithmetic)."""
    a, b = Value.cast(a), Value.cast(b)
    n = max(len(a), len(b))
    bits, carry = [], Const(0, 1)
    for i in range(n):
        x = a[i] if i < len(a) else Const(0, 1)
        y = b[i] if i < len(b) else Const(0, 1)
        bits.append(x ^ y ^ carry)
        carry = _wire(m, (x & y) | (carry & (x ^ y)), "carry")
    return _wire(m, Cat(*bits, carry), "sum")


def popcount(m, bits) -> Value:
    """Number of set bits of ``bits`` (unsigned), as a balanced tree of small adders made of
    gates, each a signal driven in ``m`` (issue 22: ``sum()`` of bits became a chain of
    carry-chain adders in Yosys, which the LUT mapper cannot restructure; gates let it build
    a few LUT levels)."""
    terms = [Value.cast(b) for b in Value.cast(bits)]
    if not terms:
        return Const(0, 1)
    while len(terms) > 1:
        nxt = [add_logic(terms[i], terms[i + 1], m) for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    return terms[0]


def ge_const(value, k: int) -> Value:
    """``value >= k`` for an unsigned ``value`` and a constant ``k``, as AND/OR gates (a
    compare with a constant otherwise becomes a carry chain in Yosys)."""
    value = Value.cast(value)
    k = int(k)
    if k <= 0:
        return Const(1, 1)
    if k >= 1 << len(value):
        return Const(0, 1)
    ge = Const(1, 1)                       # value[:0] >= k[:0]
    for i in range(len(value)):            # from the LSB: value[:i+1] >= k[:i+1]
        ge = (value[i] & ge) if (k >> i) & 1 else (value[i] | ge)
    return ge


def lt_logic(a, b) -> Value:
    """``a < b`` for unsigned ``a`` and ``b`` as gates (no carry chain; see ``add_logic``)."""
    a, b = Value.cast(a), Value.cast(b)
    lt = Const(0, 1)                       # a[:0] < b[:0]
    for i in range(max(len(a), len(b))):  # from the LSB: a[:i+1] < b[:i+1]
        x = a[i] if i < len(a) else Const(0, 1)
        y = b[i] if i < len(b) else Const(0, 1)
        lt = (~x & y) | (~(x ^ y) & lt)
    return lt
