"""Small helpers shared by the hardware blocks."""

from __future__ import annotations

from amaranth import Array, Signal, Value

from exion.config import index_bits

__all__ = ["bits_for", "div_const", "pad_mux", "pipe_reg"]


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
