"""Lattice ECP5 primitives the blocks instantiate when a config asks for them.

Only ``MULT18X18D`` (``Config.dpu_mult = "ecp5"``). Yosys does not pack fabric flip-flops
into ECP5 DSP blocks, so a multiplier whose registers should live inside the DSP (and give
nextpnr a register-to-register path through it) has to be the primitive itself. The
generated Verilog then instantiates ``MULT18X18D``: Yosys and nextpnr know the cell;
Verilator uses the behavioural model ``sim/models/MULT18X18D.v`` (see ``sim_models``).
"""

from __future__ import annotations

from pathlib import Path

from amaranth import ClockSignal, Const, Instance, Signal, signed

__all__ = ["mult18x18d", "sim_models"]

_MODELS = Path(__file__).resolve().parent.parent / "sim" / "models"


def sim_models(cfg) -> list[Path]:
    """Verilog simulation models the blocks of ``cfg`` need besides their own Verilog."""
    return [_MODELS / "MULT18X18D.v"] if cfg.dpu_mult == "ecp5" else []


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
