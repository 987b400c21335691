"""AXI4-Lite: the bus signature and a register block generated from ``exion.regmap``.

:class:`AxiLiteRegs` is the DSC's control/status slave. Its registers, offsets, access
types and reset values all come from one table (:func:`exion.regmap.dsc_registers`); the
same table renders ``docs/dsc_regs.md`` and the C header, so they cannot drift apart.

Signal names are the AXI specification's lower-case names (``awaddr``, ``awvalid``, ...):
a top that exposes the bus as members ``s_axil_<name>`` gives Verilog ports that
``cocotbext.axi.AxiLiteBus.from_prefix(dut, "s_axil")`` (and Vivado/Quartus interface
inference) recognize.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from exion.regmap import Register

__all__ = ["axi_lite_signature", "AxiLiteRegs", "RESP_OKAY", "RESP_EXOKAY", "RESP_SLVERR",
           "RESP_DECERR"]

RESP_OKAY, RESP_EXOKAY, RESP_SLVERR, RESP_DECERR = 0b00, 0b01, 0b10, 0b11


def axi_lite_signature(addr_bits: int = 12, data_bits: int = 32) -> wiring.Signature:
    """An AXI4-Lite port seen from the master (flip it for a slave)."""
    if data_bits not in (32, 64):
        raise ValueError(f"AXI4-Lite data_bits must be 32 or 64, got {data_bits}")
    return wiring.Signature({
        "awaddr": Out(addr_bits), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wvalid": Out(1),
        "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_bits), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(data_bits), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


def _member(reg: Register, kind: str) -> str:
    return f"{kind}_{reg.name.lower()}"


class AxiLiteRegs(wiring.Component):
    """A 32-bit AXI4-Lite register block generated from a register table.

    Parameters
    ----------
    regs : list of :class:`exion.regmap.Register`
        The table (offsets below 0x1000, 32-bit registers).

    Members
    -------
    bus : ``In(axi_lite_signature(12, 32))``
        The slave port (12-bit byte address: a 4 KiB window).
    q_<reg> : ``Out(32)``, for a register with ``rw`` fields
        The stored value (only the bits of ``rw`` fields; others zero).
    pulse_<reg> : ``Out(32)``, for a register with ``w1p`` or ``w1c`` fields
        For one cycle after an accepted write: the written 1-bits of those fields.
    d_<reg> : ``In(32)``, for a register with ``ro`` or ``w1c`` fields
        The hardware value read at those fields' bits.

    Behaviour: the AW and W channels are accepted independently (each has a one-entry
    holding register; ``awready``/``wready`` are high while it is empty). A write takes
    effect in the cycle after both are held and the B channel is free; ``bvalid`` then
    stays high until ``bready``. A read is answered one cycle after ``arvalid & arready``
    and ``rvalid`` stays high until ``rready``; ``arready`` is low while a response waits.
    Byte strobes select the bytes of a field that a write changes (``w1p``/``w1c`` bits in
    a byte whose strobe is low are not acted on). Unmapped offsets answer DECERR (reads
    return 0), a write to a register without a writable field answers SLVERR and changes
    nothing. Throughput: one write per two cycles, one read per two cycles.
    """

    def __init__(self, regs: list[Register]):
        self.regs = sorted(regs, key=lambda r: r.offset)
        members = {"bus": In(axi_lite_signature(12, 32))}
        for r in self.regs:
            acc = {f.access for f in r.fields}
            if "rw" in acc:
                members[_member(r, "q")] = Out(32, init=r.reset & self._mask(r, "rw"))
            if acc & {"w1p", "w1c"}:
                members[_member(r, "pulse")] = Out(32)
            if acc & {"ro", "w1c"}:
                members[_member(r, "d")] = In(32)
        super().__init__(members)

    @staticmethod
    def _mask(r: Register, *access: str) -> int:
        return sum(f.mask for f in r.fields if f.access in access)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        # ---- write: independent AW and W holding registers -------------------------------
        aw_full, aw_addr = Signal(), Signal(10)
        w_full, w_data, w_strb = Signal(), Signal(32), Signal(4)
        m.d.comb += [bus.awready.eq(~aw_full), bus.wready.eq(~w_full)]
        with m.If(bus.awvalid & ~aw_full):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(bus.awaddr[2:])]
        with m.If(bus.wvalid & ~w_full):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        bits = Signal(32)  # the bits a write may change: its strobed bytes
        m.d.comb += bits.eq(Cat(*(w_strb[i].replicate(8) for i in range(4))))
        do_write = Signal()
        m.d.comb += do_write.eq(aw_full & w_full & ~bus.bvalid)
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        for r in self.regs:
            if _member(r, "pulse") in self.signature.members:
                m.d.sync += getattr(self, _member(r, "pulse")).eq(0)
        with m.If(do_write):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), bus.bvalid.eq(1),
                         bus.bresp.eq(RESP_DECERR)]
            with m.Switch(aw_addr):
                for r in self.regs:
                    with m.Case(r.offset >> 2):
                        m.d.sync += bus.bresp.eq(RESP_OKAY if r.writable else RESP_SLVERR)
                        self._write(m, r, w_data, bits)

        # ---- read ---------------------------------------------------------------------------
        m.d.comb += bus.arready.eq(~bus.rvalid)
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        with m.If(bus.arvalid & ~bus.rvalid):
            m.d.sync += [bus.rvalid.eq(1), bus.rresp.eq(RESP_DECERR), bus.rdata.eq(0)]
            with m.Switch(bus.araddr[2:]):
                for r in self.regs:
                    with m.Case(r.offset >> 2):
                        m.d.sync += [bus.rresp.eq(RESP_OKAY), bus.rdata.eq(self._read(r))]
        return m

    def _write(self, m: Module, r: Register, data, bits) -> None:
        rw = self._mask(r, "rw")
        if rw:
            q = getattr(self, _member(r, "q"))
            keep = bits & rw
            m.d.sync += q.eq((q & ~keep) | (data & keep))
        pulse = self._mask(r, "w1p", "w1c")
        if pulse:
            m.d.sync += getattr(self, _member(r, "pulse")).eq(data & bits & pulse)

    def _read(self, r: Register):
        value = Const(sum(f.value << f.lsb for f in r.fields if f.access == "const"), 32)
        if _member(r, "q") in self.signature.members:
            value = value | getattr(self, _member(r, "q"))
        ro = self._mask(r, "ro", "w1c")
        if ro:
            value = value | (getattr(self, _member(r, "d")) & ro)
        return value
