"""Lattice ECP5 primitives the blocks instantiate when a config asks for them.

Two, both only when a config builds for ECP5 (``Config.dpu_mult = "ecp5"``):

* ``MULT18X18D``: Yosys does not pack fabric flip-flops into ECP5 DSP blocks, so a
  multiplier whose registers should live inside the DSP (and give nextpnr a
  register-to-register path through it) has to be the primitive itself.
* ``TRELLIS_FF``, for copies of one register (:func:`ff_copies`): Yosys merges identical
  registers (``opt_merge``), so a register replicated to split its fan-out over the die has
  to be the fabric flip-flop itself.

The generated Verilog then instantiates the cells: Yosys and nextpnr know them; Verilator
uses the behavioural models ``sim/models/MULT18X18D.v`` and ``sim/models/TRELLIS_FF.v``
(see ``sim_models``).
"""

from __future__ import annotations

import re
from pathlib import Path

from amaranth import ClockSignal, Const, Instance, Signal, signed

__all__ = ["ff_copies", "mult18x18d", "sim_models"]

_MODELS = Path(__file__).resolve().parent.parent / "sim" / "models"
#: The vendor cells the blocks may instantiate, each with its simulation model.
CELLS = ("MULT18X18D", "TRELLIS_FF")


def sim_models(cfg, verilog: str | None = None) -> list[Path]:
    """Verilog simulation models the blocks of ``cfg`` need besides their own Verilog: with
    the generated ``verilog`` text, the models of the cells it instantiates; without, every
    model a config building for ECP5 may need."""
    if cfg.dpu_mult != "ecp5":
        return []
    return [_MODELS / f"{c}.v" for c in CELLS
            if verilog is None or re.search(rf"^\s*{c}\s", verilog, re.M)]


def ff_copies(m, value, n: int, *, name: str, ecp5: bool) -> list:
    """``n`` registered copies of ``value`` (each equal to ``value`` one cycle earlier), to
    split a register's fan-out: nextpnr places each copy near its own loads. On an ECP5
    build (``ecp5``) each bit of each copy is a ``TRELLIS_FF`` (no reset, no enable), which
    Yosys keeps apart; otherwise one Amaranth register (reset to 0) serves every copy, as
    Yosys would merge identical ones anyway. A copy ignores the domain's reset: it follows
    ``value`` from the first clock edge, which only matters in the cycle after a reset."""
    width = len(value)
    if not ecp5:
        r = Signal(width, name=name)
        m.d.sync += r.eq(value)
        return [r] * n
    v = Signal(width, name=f"{name}_d")
    m.d.comb += v.eq(value)
    copies = []
    for i in range(n):
        q = Signal(width, name=f"{name}{i}")
        for b in range(width):
            m.submodules[f"{name}{i}_ff{b}"] = Instance(
                "TRELLIS_FF", p_GSR="AUTO", p_CEMUX="1", p_CLKMUX="CLK", p_LSRMUX="LSR",
                p_REGSET="RESET", i_CLK=ClockSignal("sync"), i_LSR=Const(0), i_DI=v[b],
                o_Q=q[b])
        copies.append(q)
    return copies


def mult18x18d(m, a, b, *, name: str, reg_in: bool, reg_out: bool, ce_in, ce_out):
    """Signed ``a * b`` (each at most 18 bits) on one MULT18X18D; returns the product.

    ``reg_in``: the DSP's A and B input registers are used, loading while ``ce_in`` is high
    (clock enable CE0). ``reg_out``: the output register is used, loading while ``ce_out``
    is high (CE1). Each register adds one cycle, exactly like an Amaranth register with the
    same enable. The pipeline register is not used; the reset inputs are left unconnected
    (datapath registers, as Yosys's own DSP mapping leaves them).
    """
    width = len(a) + len(b)
    assert len(a) <= 18 and len(b) <= 18, "MULT18X18D operands are at most 18 bits"
    a18, b18 = Signal(signed(18), name=f"{name}_a"), Signal(signed(18), name=f"{name}_b")
    p = Signal(36, name=f"{name}_p")
    m.d.comb += [a18.eq(a), b18.eq(b)]  # sign extension to the DSP's 18-bit ports
    clk = "CLK0"  # parameter value: the register is clocked by the CLK0 input
    ports = {f"i_A{i}": a18[i] for i in range(18)}
    ports.update({f"i_B{i}": b18[i] for i in range(18)})
    ports.update({f"o_P{i}": p[i] for i in range(36)})
    m.submodules[name] = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK=clk if reg_in else "NONE", p_REG_INPUTA_CE="CE0",
        p_REG_INPUTB_CLK=clk if reg_in else "NONE", p_REG_INPUTB_CE="CE0",
        p_REG_OUTPUT_CLK=clk if reg_out else "NONE", p_REG_OUTPUT_CE="CE1",
        i_SIGNEDA=Const(1), i_SIGNEDB=Const(1), i_SOURCEA=Const(0), i_SOURCEB=Const(0),
        i_CLK0=ClockSignal("sync"), i_CE0=ce_in, i_CE1=ce_out,
        **ports,
    )
    return p[:width].as_signed()
