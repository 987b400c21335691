"""AXI4 memory-mapped master: bridges the core's burst port (``hw/memif.py``) to AXI4.

Stages (each a component): :class:`BurstSplitter` cuts a command of 1..256 beats into INCR
bursts that never cross a 4 KiB boundary; :class:`AxiMaster` queues the bursts of the read
and write sides, drives the AR/AW/W channels, and maps R and B back onto the core's
``rd_data`` and ``wr_resp`` streams, so the core sees exactly one ``last`` and one response
per command whatever the split.

Signal names are the AXI specification's lower-case names; a top exposing the port as
``m_axi_<name>`` members gives Verilog ports that ``cocotbext.axi.AxiBus.from_prefix(dut,
"m_axi")`` recognizes.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .memif import mem_master_signature

__all__ = ["axi4_signature", "BurstSplitter", "AxiMaster", "BURST_INCR", "BOUNDARY"]

BURST_INCR = 0b01
#: AXI4: a burst must not cross a 4 KiB address boundary.
BOUNDARY = 4096
#: ``awcache``/``arcache``: normal non-cacheable bufferable memory.
CACHE_NORMAL = 0b0011


def axi4_signature(addr_bits: int = 32, data_bits: int = 64, id_bits: int = 1
                   ) -> wiring.Signature:
    """An AXI4 port seen from the master (no ``*user``, ``*qos``, ``*region``)."""
    members = {}
    for ch in ("aw", "ar"):
        members.update({
            f"{ch}id": Out(id_bits), f"{ch}addr": Out(addr_bits), f"{ch}len": Out(8),
            f"{ch}size": Out(3), f"{ch}burst": Out(2), f"{ch}lock": Out(1),
            f"{ch}cache": Out(4), f"{ch}prot": Out(3), f"{ch}valid": Out(1),
            f"{ch}ready": In(1)})
    members.update({
        "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(id_bits), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "rid": In(id_bits), "rdata": In(data_bits), "rresp": In(2), "rlast": In(1),
        "rvalid": In(1), "rready": Out(1),
    })
    return wiring.Signature(members)


def burst_layout(addr_bits: int) -> data.StructLayout:
    """One AXI burst: start address, ``len`` = beats - 1, ``last`` = final burst of its
    command."""
    return data.StructLayout({"addr": addr_bits, "len": 8, "last": 1})


class BurstSplitter(wiring.Component):
    """Cuts a burst command into AXI4 INCR bursts inside 4 KiB pages.

    Parameters
    ----------
    data_bits, addr_bits : int
        Beat width and address width (addresses are aligned to ``data_bits // 8``).

    Members
    -------
    cmd : ``In(stream.Signature({addr, len}))``
        A command of ``len + 1`` beats from ``addr``.
    burst : ``Out(stream.Signature(burst_layout))``
        Its bursts in address order; ``last`` marks the final one.

    Latency: a command is taken in one cycle, then one burst per cycle while ``burst`` is
    ready (a command inside one page: one cycle in, one burst out).
    """

    def __init__(self, *, data_bits: int = 64, addr_bits: int = 32):
        self.data_bits, self.addr_bits = data_bits, addr_bits
        self.shift = (data_bits // 8).bit_length() - 1
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({"addr": addr_bits, "len": 8}))),
            "burst": Out(stream.Signature(burst_layout(addr_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        busy = Signal()
        addr = Signal(self.addr_bits)
        left = Signal(9)                      # beats still to issue: 1..256
        page_beats = BOUNDARY >> self.shift   # beats in a 4 KiB page
        to_edge = Signal(range(page_beats + 1))
        n = Signal(9)
        m.d.comb += to_edge.eq(page_beats - addr[self.shift:12])
        m.d.comb += n.eq(left)
        with m.If(to_edge < left):
            m.d.comb += n.eq(to_edge)
        m.d.comb += [
            self.cmd.ready.eq(~busy),
            self.burst.valid.eq(busy),
            self.burst.p.addr.eq(addr),
            self.burst.p.len.eq(n - 1),
            self.burst.p.last.eq(n == left),
        ]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [busy.eq(1), addr.eq(self.cmd.p.addr), left.eq(self.cmd.p.len + 1)]
        with m.If(self.burst.valid & self.burst.ready):
            m.d.sync += [addr.eq(addr + (n << self.shift)), left.eq(left - n)]
            with m.If(n == left):
                m.d.sync += busy.eq(0)
        return m


class AxiMaster(wiring.Component):
    """The core's memory port as an AXI4 master.

    Parameters
    ----------
    data_bits, addr_bits : int
        Data and address widths of both sides.
    id_bits : int
        AXI ID width; every transaction uses ID 0, so responses return in order.
    max_reads, max_writes : int
        Outstanding bursts per direction: AR bursts whose last R beat has not arrived, and
        write bursts (queued or issued) whose B response has not arrived.

    Members
    -------
    mem : ``In(mem_master_signature(data_bits, addr_bits))``
        The core's port (this block is its memory).
    axi : ``Out(axi4_signature(addr_bits, data_bits, id_bits))``
        The AXI4 master port.

    Behaviour: commands are split at 4 KiB boundaries (:class:`BurstSplitter`); ``rd_data``
    carries R beats unchanged (``err`` = RRESP is SLVERR/DECERR) with ``last`` only on the
    final beat of the command; ``wr_data`` beats go out on W as soon as their burst is
    queued (W may lead AW, as AXI allows), ``wlast`` from the burst length (the core's
    ``last`` is not needed); one ``wr_resp`` per command once every burst's B arrived,
    ``err`` the OR of their BRESP errors. Full write strobes. Reads and writes are
    independent. R and W pass through combinationally (no added latency, full throughput).
    """

    def __init__(self, *, data_bits: int = 64, addr_bits: int = 32, id_bits: int = 1,
                 max_reads: int = 4, max_writes: int = 4):
        for name, v in (("max_reads", max_reads), ("max_writes", max_writes)):
            if not 1 <= v <= 64:
                raise ValueError(f"{name} must be 1..64, got {v}")
        self.data_bits, self.addr_bits, self.id_bits = data_bits, addr_bits, id_bits
        self.max_reads, self.max_writes = max_reads, max_writes
        super().__init__({
            "mem": In(mem_master_signature(data_bits, addr_bits)),
            "axi": Out(axi4_signature(addr_bits, data_bits, id_bits)),
        })

    def _ax_constants(self, m: Module, ch: str) -> None:
        axi = self.axi
        m.d.comb += [getattr(axi, f"{ch}size").eq((self.data_bits // 8).bit_length() - 1),
                     getattr(axi, f"{ch}burst").eq(BURST_INCR),
                     getattr(axi, f"{ch}cache").eq(CACHE_NORMAL),
                     getattr(axi, f"{ch}id").eq(0), getattr(axi, f"{ch}lock").eq(0),
                     getattr(axi, f"{ch}prot").eq(0)]

    def elaborate(self, platform):
        m = Module()
        self._read_side(m)
        self._write_side(m)
        return m

    def _read_side(self, m: Module) -> None:
        axi, mem = self.axi, self.mem
        m.submodules.rd_split = split = BurstSplitter(data_bits=self.data_bits,
                                                      addr_bits=self.addr_bits)
        wiring.connect(m, wiring.flipped(mem.rd_cmd), split.cmd)
        # one entry per AR burst in flight: is it the final burst of its command?
        m.submodules.rd_info = info = fifo.SyncFIFO(width=1, depth=self.max_reads)
        self._ax_constants(m, "ar")
        m.d.comb += [
            axi.arvalid.eq(split.burst.valid & info.w_rdy),
            axi.araddr.eq(split.burst.p.addr),
            axi.arlen.eq(split.burst.p.len),
            split.burst.ready.eq(axi.arready & info.w_rdy),
            info.w_en.eq(axi.arvalid & axi.arready),
            info.w_data.eq(split.burst.p.last),
            # R -> rd_data
            mem.rd_data.valid.eq(axi.rvalid & info.r_rdy),
            mem.rd_data.p.data.eq(axi.rdata),
            mem.rd_data.p.err.eq(axi.rresp[1]),
            mem.rd_data.p.last.eq(axi.rlast & info.r_data[0]),
            axi.rready.eq(mem.rd_data.ready & info.r_rdy),
            info.r_en.eq(axi.rvalid & axi.rready & axi.rlast),
        ]

    def _write_side(self, m: Module) -> None:
        axi, mem = self.axi, self.mem
        m.submodules.wr_split = split = BurstSplitter(data_bits=self.data_bits,
                                                      addr_bits=self.addr_bits)
        wiring.connect(m, wiring.flipped(mem.wr_cmd), split.cmd)
        n = self.max_writes
        # A burst is queued three ways at once: for AW, for W (its length) and for B (last?).
        m.submodules.aw_q = aw_q = fifo.SyncFIFO(width=self.addr_bits + 8, depth=n)
        m.submodules.w_q = w_q = fifo.SyncFIFO(width=8, depth=n)
        m.submodules.b_q = b_q = fifo.SyncFIFO(width=1, depth=n)
        room = aw_q.w_rdy & w_q.w_rdy & b_q.w_rdy
        push = split.burst.valid & room
        m.d.comb += [
            split.burst.ready.eq(room),
            aw_q.w_en.eq(push), aw_q.w_data.eq(split.burst.p.as_value()[:self.addr_bits + 8]),
            w_q.w_en.eq(push), w_q.w_data.eq(split.burst.p.len),
            b_q.w_en.eq(push), b_q.w_data.eq(split.burst.p.last),
        ]
        self._ax_constants(m, "aw")
        m.d.comb += [
            axi.awvalid.eq(aw_q.r_rdy),
            axi.awaddr.eq(aw_q.r_data[:self.addr_bits]),
            axi.awlen.eq(aw_q.r_data[self.addr_bits:]),
            aw_q.r_en.eq(axi.awvalid & axi.awready),
        ]
        # W: beats of the head burst; wlast from its length
        beat = Signal(8)
        m.d.comb += [
            axi.wvalid.eq(mem.wr_data.valid & w_q.r_rdy),
            axi.wdata.eq(mem.wr_data.p.data),
            axi.wstrb.eq(-1),
            axi.wlast.eq(beat == w_q.r_data),
            mem.wr_data.ready.eq(axi.wready & w_q.r_rdy),
        ]
        with m.If(axi.wvalid & axi.wready):
            m.d.sync += beat.eq(beat + 1)
            with m.If(axi.wlast):
                m.d.sync += beat.eq(0)
                m.d.comb += w_q.r_en.eq(1)
        # B -> wr_resp: one response per command, errors of its bursts ORed
        err = Signal()
        last_burst = b_q.r_data[0]
        m.d.comb += [
            mem.wr_resp.valid.eq(axi.bvalid & b_q.r_rdy & last_burst),
            mem.wr_resp.p.err.eq(err | axi.bresp[1]),
            axi.bready.eq(b_q.r_rdy & (~last_burst | mem.wr_resp.ready)),
            b_q.r_en.eq(axi.bvalid & axi.bready),
        ]
        with m.If(axi.bvalid & axi.bready):
            m.d.sync += err.eq(Mux(last_burst, 0, err | axi.bresp[1]))

