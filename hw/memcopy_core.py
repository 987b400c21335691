"""``MemcopyCore``: a TEST FIXTURE with the DSC core's ports, used to verify the bus shell.

This is not the DSC and not a stub of it. It has exactly the ports of the contract in
``hw/memif.py`` (the flat control members of :func:`dsc_control_signature` and a ``mem``
port on :func:`mem_master_signature`), so ``hw/dsc_top.py`` can wrap it the way it wraps
``DscCore``, and the AXI4-Lite registers and the AXI4 master can be tested end to end
(``sim/tb_axi.py``, the ``axi_shell`` top) before, and independently of, the real core.
It lives in ``hw/`` (not ``sim/``) only because a generated top must be importable by the
Verilog generator, which may not import ``exion.sim``.

What it does with the registers (the fixture's own meaning of them):

* ``start``: copy ``iteration`` beats (0: none) from ``prog_base`` to the block right after
  them (``prog_base + iteration * data_bits / 8``), adding 1 to every 16-bit lane;
* in commands of ``reuse_n`` beats (0 means 256), read and write commands of the same
  split; commands are NOT cut at 4 KiB boundaries (the AXI4 master must do it);
* ``passes``: write responses received; ``cycles``: cycles while busy; ``stage``: 1 while
  data moves, 2 while waiting for the last responses; ``engine``: always 0 (no engine);
* ``error`` bit 0: an ``rd_data`` beat had ``err``; bit 1: a ``wr_resp`` had ``err``;
  bit 3: an ``rd_data`` beat's ``last`` disagreed with the command lengths.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring

from exion.config import Config

from .memif import dsc_control_signature, mem_master_signature

__all__ = ["MemcopyCore", "LANE_BITS"]

LANE_BITS = 16


class MemcopyCore(wiring.Component):
    """Test fixture: copies a block of beats through the memory port, +1 per 16-bit lane.

    Parameters
    ----------
    cfg : Config
        Unused except to match ``DscCore(cfg)``'s constructor.
    data_bits, addr_bits : int
        Widths of the memory port.

    Members
    -------
    The control members of :func:`~exion.hw.memif.dsc_control_signature` (flat), and
    ``mem`` : ``Out(mem_master_signature(data_bits, addr_bits))``.
    """

    def __init__(self, cfg: Config | None = None, *, data_bits: int = 64, addr_bits: int = 32):
        self.cfg, self.data_bits, self.addr_bits = cfg, data_bits, addr_bits
        members = dict(dsc_control_signature(addr_bits).members)
        members["mem"] = wiring.Out(mem_master_signature(data_bits, addr_bits))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        mem = self.mem
        shift = (self.data_bits // 8).bit_length() - 1
        chunk = Signal(9)
        total = Signal(16)
        rd_addr, wr_addr = Signal(self.addr_bits), Signal(self.addr_bits)
        rd_left, wr_left, d_left = Signal(16), Signal(16), Signal(16)
        d_in_chunk = Signal(9)
        cmds, resps = Signal(16), Signal(16)

        with m.If(self.start & ~self.busy):
            m.d.sync += [
                self.busy.eq(1), self.error.eq(0), self.cycles.eq(0), self.passes.eq(0),
                chunk.eq(Mux(self.reuse_n == 0, 256, self.reuse_n)),
                total.eq(self.iteration),
                rd_addr.eq(self.prog_base),
                wr_addr.eq(self.prog_base + (self.iteration << shift)),
                rd_left.eq(self.iteration), wr_left.eq(self.iteration),
                d_left.eq(self.iteration), d_in_chunk.eq(0), cmds.eq(0), resps.eq(0),
            ]
        m.d.sync += self.done.eq(0)
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        # command issuers: min(left, chunk) beats per command
        for cmd, addr, left, count in ((mem.rd_cmd, rd_addr, rd_left, None),
                                       (mem.wr_cmd, wr_addr, wr_left, cmds)):
            n = Signal(9)
            m.d.comb += [n.eq(Mux(left < chunk, left, chunk)),
                         cmd.valid.eq(self.busy & (left != 0)),
                         cmd.p.addr.eq(addr), cmd.p.len.eq(n - 1)]
            with m.If(cmd.valid & cmd.ready):
                m.d.sync += [addr.eq(addr + (n << shift)), left.eq(left - n)]
                if count is not None:
                    m.d.sync += count.eq(count + 1)

        # data: rd_data -> +1 per lane -> wr_data
        last = Signal()
        lanes = self.data_bits // LANE_BITS
        m.d.comb += [
            last.eq((d_in_chunk == chunk - 1) | (d_left == 1)),
            mem.wr_data.valid.eq(mem.rd_data.valid),
            mem.wr_data.p.data.eq(Cat(*(
                (mem.rd_data.p.data.word_select(i, LANE_BITS) + 1)[:LANE_BITS]
                for i in range(lanes)))),
            mem.wr_data.p.last.eq(last),
            mem.rd_data.ready.eq(mem.wr_data.ready),
        ]
        with m.If(mem.rd_data.valid & mem.rd_data.ready):
            m.d.sync += [d_left.eq(d_left - 1), d_in_chunk.eq(Mux(last, 0, d_in_chunk + 1))]
            with m.If(mem.rd_data.p.err):
                m.d.sync += self.error[0].eq(1)
            with m.If(mem.rd_data.p.last != last):
                m.d.sync += self.error[3].eq(1)

        m.d.comb += mem.wr_resp.ready.eq(1)
        with m.If(mem.wr_resp.valid):
            m.d.sync += [resps.eq(resps + 1), self.passes.eq(self.passes + 1)]
            with m.If(mem.wr_resp.p.err):
                m.d.sync += self.error[1].eq(1)

        finished = Signal()
        m.d.comb += finished.eq((wr_left == 0) & (d_left == 0) & (resps == cmds))
        with m.If(self.busy & finished):
            m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        m.d.comb += self.stage.eq(Mux(~self.busy, 0, Mux(d_left != 0, 1, 2)))
        return m
