"""Board-level wrapper for place-and-route of any generated block (``exion pnr``).

A block's ports are far too many for an FPGA's pins (a DPU of the ``fpga`` preset has 99
input bits; an SDUE has thousands), and a block whose inputs are constant or whose outputs
are unused is optimized away. :class:`StimulusShim` keeps the whole block alive with two
wires of IO:

* **Inputs**: a 32-bit maximal-length LFSR (x^32 + x^22 + x^2 + x + 1), XORed with one
  external pin (a button) so synthesis cannot treat it as a known sequence, shifts 32 bits per
  cycle into a register as wide as all the block's inputs; every input port is driven
  straight from that register (so every input path starts at a flip-flop).
* **Outputs**: every output port is registered, then XOR-reduced to one bit in stages of 16:1
  with a register after each stage (two LUT4 levels), and the last bit drives an LED.
  Every output bit reaches the LED, so no logic of the block can be removed.

The shim adds register-to-block and block-to-register paths only, so the critical path that
nextpnr reports is the block's own (or the shim's short XOR stages, which are never slower
than two LUT levels).

:class:`BoardTop` is the platform top (a plain ``Elaboratable``, as the Amaranth platform
``build`` expects): the board oscillator feeds an ECP5 ``EHXPLLL`` PLL that makes the target
clock, the PLL's lock holds the ``sync`` domain in reset (synchronized, then distributed on a
global clock line through a ``DCCA``), and the shim runs in ``sync``.
"""

from __future__ import annotations

from amaranth import (Cat, ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal,
                      Signal, Value)
from amaranth.lib import io, wiring
from amaranth.lib.cdc import AsyncFFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["StimulusShim", "BoardTop", "block_ports", "LFSR_TAPS"]

# Fibonacci LFSR taps for x^32 + x^22 + x^2 + x + 1 (maximal length), as bit indices.
LFSR_TAPS = (31, 21, 1, 0)
_XOR_STAGE = 16  # inputs per XOR-reduction stage: two LUT4 levels, then a register


def block_ports(block: wiring.Component) -> tuple[list[Signal], list[Signal]]:
    """(inputs, outputs) of a component: every signature member that is a signal.

    Constant members (the ``ready`` of an ``always_ready`` stream) are not ports.
    """
    ins, outs = [], []
    for _path, member, value in block.signature.flatten(block):
        value = Value.cast(value)  # a struct/array payload is a View over one Signal
        if not isinstance(value, Signal):
            continue
        (ins if member.flow == In else outs).append(value)
    return ins, outs


class StimulusShim(wiring.Component):
    """LFSR-driven inputs and XOR-reduced outputs around one block (see module docstring).

    Parameters
    ----------
    block : wiring.Component
        The block to keep alive; it is added as submodule ``block``.

    Members
    -------
    entropy : In(1)
        One external bit mixed into the LFSR (ties the stimulus to a pin).
    led : Out(1)
        XOR of every output bit of the block, delayed by ``latency`` register stages.

    Attributes
    ----------
    in_bits, out_bits : int
        Total input / output port bits of the block.
    """

    def __init__(self, block: wiring.Component):
        self.block = block
        ins, outs = block_ports(block)
        if not ins or not outs:
            raise ValueError(f"block {type(block).__name__} needs at least one input and one "
                             f"output port to be wrapped (has {len(ins)} inputs, "
                             f"{len(outs)} outputs)")
        self._ins, self._outs = ins, outs
        self.in_bits = sum(len(s) for s in ins)
        self.out_bits = sum(len(s) for s in outs)
        super().__init__({"entropy": In(1), "led": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.block = self.block

        # Stimulus: LFSR (control state: resets to a nonzero seed) and a wide shift register.
        lfsr = Signal(32, init=0xACE1_5EED)
        feedback = lfsr[LFSR_TAPS[0]]
        for t in LFSR_TAPS[1:]:
            feedback = feedback ^ lfsr[t]
        m.d.sync += lfsr.eq(lfsr.shift_left(1)[:32] | (feedback ^ self.entropy))
        stim = Signal(self.in_bits, reset_less=True)
        if self.in_bits > 32:
            m.d.sync += stim.eq(lfsr | stim.shift_left(32)[:self.in_bits])
        else:
            m.d.sync += stim.eq(lfsr[:self.in_bits])
        offset = 0
        for sig in self._ins:
            m.d.comb += sig.eq(stim[offset:offset + len(sig)])
            offset += len(sig)

        # Observation: register every output, then XOR-reduce in registered 16:1 stages.
        level = Signal(self.out_bits, reset_less=True)
        m.d.sync += level.eq(Cat(*self._outs))
        stage = 0
        while len(level) > 1:
            n = (len(level) + _XOR_STAGE - 1) // _XOR_STAGE
            nxt = Signal(n, name=f"xor_stage{stage}", reset_less=True)
            for i in range(n):
                m.d.sync += nxt[i].eq(level[i * _XOR_STAGE:(i + 1) * _XOR_STAGE].xor())
            level, stage = nxt, stage + 1
        m.d.comb += self.led.eq(level[0])
        return m


class BoardTop(Elaboratable):
    """Platform top: oscillator -> PLL -> ``sync`` domain -> :class:`StimulusShim` -> LED.

    Parameters
    ----------
    block : wiring.Component
        The block under test.
    pll : dict
        ``EHXPLLL`` parameters and attributes (``{"params": {...}, "attrs": {...}}``) for the
        target clock, as computed by ``exion.gen.fpga.ecp5_pll`` (from ``ecppll``).
    freq_hz : float
        The PLL output frequency.
    constraint_hz : float or None
        The clock constraint of ``sync`` for place and route (``None``: ``freq_hz``); above
        ``freq_hz`` it leaves the router a margin.
    led : tuple
        ``(resource name, number, subsignal or None)`` of the LED to drive.
    entropy : tuple or None
        ``(resource name, number)`` of the input pin mixed into the LFSR (a button).
    """

    def __init__(self, block, *, pll: dict, freq_hz: float, led: tuple, entropy: tuple | None,
                 constraint_hz: float | None = None):
        self.shim = StimulusShim(block)
        self.pll = pll
        self.freq_hz = freq_hz
        self.constraint_hz = freq_hz if constraint_hz is None else constraint_hz
        self.led = led
        self.entropy = entropy

    def elaborate(self, platform):
        m = Module()
        clk_io = platform.request(platform.default_clk, dir="-")
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
        clk_out = Signal()
        lock = Signal()
        kwargs = {f"p_{k}": v for k, v in self.pll["params"].items()}
        kwargs.update({f"a_{k}": v for k, v in self.pll["attrs"].items()})
        m.submodules.pll = Instance(
            "EHXPLLL", **kwargs,
            i_CLKI=clk_buf.i, o_CLKOP=clk_out, i_CLKFB=clk_out, o_LOCK=lock,
            i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1,
            i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0)
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(clk_out)
        # Reset: the PLL's lock, synchronized (asserted at once, released on a clock edge),
        # then through a DCCA onto a global clock line. The reset reaches every control
        # register of the block; as a fabric net it was the critical path of the floorplanned
        # toy SDUE (13 ns of routing across the die, docs/fpga.md).
        rst_local, rst_global = Signal(init=1), Signal()
        m.submodules.reset_sync = AsyncFFSynchronizer(~lock, rst_local, o_domain="sync")
        m.submodules.reset_buf = Instance("DCCA", i_CLKI=rst_local, i_CE=1, o_CLKO=rst_global)
        m.d.comb += ResetSignal("sync").eq(rst_global)
        platform.add_clock_constraint(clk_out, self.constraint_hz)

        m.submodules.shim = shim = self.shim
        if self.entropy is not None:
            button = platform.request(*self.entropy, dir="-")
            m.submodules.button_buf = button_buf = io.Buffer("i", button)
            m.d.comb += shim.entropy.eq(button_buf.i)
        name, number, sub = self.led
        led = platform.request(name, number, dir="-")
        if sub is not None:
            led = getattr(led, sub)
        m.submodules.led_buf = led_buf = io.Buffer("o", led)
        m.d.comb += led_buf.o.eq(shim.led)
        return m
