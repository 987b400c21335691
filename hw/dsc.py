"""The DSC core (SPEC 4.5, issue 16): a descriptor-driven stream DMA around the units.

The host writes a *program* (a list of 32-byte descriptors, ``docs/dsc.md``) and the
operands, each in its unit's own beat format, into host memory; ``start`` runs the program
at ``prog_base``. The core fetches one descriptor at a time over the memory port
(``hw/memif.py``: burst reads and writes, never AXI), moves the described data between host
memory and the unit, runs the unit, and goes on until an ``END`` descriptor.

Descriptor (256 bits, little-endian; bit ranges of the 32 bytes):

=========  ==========  ===================================================================
bits       field       meaning
=========  ==========  ===================================================================
0..7       op          0 END, 1 IMEM_LOAD, 2 GMEM_LOAD, 3 OMEM_LOAD, 4 GEMM, 5 OMEM_STORE
8..15      stage       shown on ``ctrl.stage`` while the descriptor runs (host's label)
16         accumulate  GEMM: add into OMEM (FFN-Reuse's delta FC2 on the cached Y_d)
32..63     count       items: words (loads), mask beats (GEMM), OMEM addresses (store)
64..95     src         byte address of the first beat read (loads, GEMM)
96..127    dst         byte address of the first beat written (OMEM_STORE)
128..159   ubase       first unit address (IMEM / GMEM / OMEM word address)
160..175   glen        unit addresses advance in groups of ``glen`` consecutive words ...
176..191   gstride     ... and each group starts ``gstride`` after the previous one
192..207   kwords      GEMM setup: K/L words of every pass
208..223   ncols       GEMM setup: OMEM stride of a row block
224..231   regions     GEMM setup: WMEM regions the fetch may fill ahead
=========  ==========  ===================================================================

Item formats (the host lays them out; ``D`` = bus bits): an operand word (L elements) is
``L`` 16-bit little-endian containers (each the sign-extended W-bit element) in
``ceil(16 L / D)`` beats; an OMEM address is R results in 64-bit containers (sign-extended
A bits) in ``ceil(64 R / D)`` beats; a mask beat is the ``hw.cau.mask_layout`` value in
``ceil(bits / D)`` beats. IMEM_LOAD writes word ``i`` to bank ``i mod R``; GMEM_LOAD and
OMEM_LOAD write one word / address per item. A GEMM descriptor sets the engine's ``setup``,
streams its mask beats and waits until the engine is idle.

Error flags (``ctrl.error``, sticky for the run; :data:`ERROR_FLAGS`):

* bit 0 ``rd_err``: a read beat came back with an error response (the run goes on);
* bit 1 ``wr_err``: a write response carried an error (the run goes on);
* bit 2 ``bad_op``: an unknown op code (the run stops);
* bit 3 ``overflow``: the gemm engine's CAU saw a row block wider than ``max_cols``.

Timing (no memory stalls; ``golden/dsc_cycles.py`` is the exact model): every step is
sequential -- fetch, then the descriptor's transfer, then the unit. Units other than the
gemm engine (CFSE, FFN-Reuse, EPRE) are not yet behind the DMA: their ops are reserved and
stop the run with ``bad_op`` (``docs/dsc.md``, "status").
"""

from __future__ import annotations

import math

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from exion.config import CAU_COLS_PER_CYCLE, Config
from exion.errors import ExionError

from .cau import mask_layout
from .gemm import SparseGemm
from .memif import dsc_control_signature, mem_master_signature

__all__ = ["DscCore", "ERROR_FLAGS", "OPS", "DESC_BYTES", "item_beats"]

#: error bit -> (name, meaning); the register map lists these.
ERROR_FLAGS = {
    0: ("rd_err", "a read beat returned SLVERR/DECERR"),
    1: ("wr_err", "a write response returned SLVERR/DECERR"),
    2: ("bad_op", "unknown or unsupported descriptor op (run stopped)"),
    3: ("overflow", "gemm engine: a row block wider than max_cols"),
}

#: op name -> code
OPS = {"END": 0, "IMEM_LOAD": 1, "GMEM_LOAD": 2, "OMEM_LOAD": 3, "GEMM": 4, "OMEM_STORE": 5}

DESC_BYTES = 32
_MAX_REGIONS = 4


def item_beats(cfg: Config, bus_bits: int) -> dict:
    """Bus beats per item: operand word, OMEM address (R results), mask beat."""
    mbits = mask_layout(cfg, CAU_COLS_PER_CYCLE, True).size
    return {"word": math.ceil(16 * cfg.lanes / bus_bits),
            "omem": math.ceil(64 * cfg.rows / bus_bits),
            "mask": math.ceil(mbits / bus_bits)}


def _burst_len(addr, rem, D: int):
    """Beats of the next burst: min(256, rem, beats to the next 4 KiB boundary)."""
    sh = (D // 8).bit_length() - 1
    to4k = (Const(4096, 13) - addr[:12]) >> sh
    a = Mux(rem < 256, rem, 256)
    return Mux(to4k < a, to4k, a)


class DscCore(wiring.Component):
    """Descriptor-driven DSC core around the gemm engine.

    Parameters
    ----------
    cfg : Config
    bus_bits : int
        Memory port data width (default ``cfg.dsc_bus_bits`` if the config has it, else 64).

    Members
    -------
    start, prog_base, iteration, reuse_n, mode, busy, done, error, cycles, passes, stage
        The control port, flattened (``hw.memif.dsc_control_signature``).
    mem : Out(mem_master_signature(bus_bits))
        Burst memory master.
    """

    def __init__(self, cfg: Config, bus_bits: int | None = None):
        D = bus_bits or getattr(cfg, "dsc_bus_bits", None) or 64
        if D not in (32, 64, 128, 256):
            self._MustUse__silence = True
            raise ExionError(f"DscCore: bus_bits = {D} must be 32, 64, 128 or 256")
        self.cfg = cfg
        self.bus_bits = D
        members = dict(dsc_control_signature().members)
        members["mem"] = Out(mem_master_signature(D))
        super().__init__(members)

    def constants(self) -> dict:
        return {"bus_bits": self.bus_bits, "desc_bytes": DESC_BYTES,
                "cols_per_cycle": CAU_COLS_PER_CYCLE, "max_regions": _MAX_REGIONS,
                **{f"beats_{k}": v for k, v in item_beats(self.cfg, self.bus_bits).items()}}

    def elaborate(self, platform):
        cfg = self.cfg
        R, L, W, A = cfg.rows, cfg.lanes, cfg.width, cfg.acc_width
        D = self.bus_bits
        BB = D // 8
        ib = item_beats(cfg, D)
        maxper = max(ib.values())
        desc_beats = max(1, 256 // D)
        m = Module()
        gemm = SparseGemm(cfg, max_regions=_MAX_REGIONS)
        m.submodules.gemm = gemm
        mem = self.mem

        # ---- descriptor --------------------------------------------------------------
        desc = Signal(desc_beats * D, name="desc")
        op, stage = desc[0:8], desc[8:16]
        count, src, dst = desc[32:64], desc[64:96], desc[96:128]
        ubase, glen, gstride = desc[128:160], desc[160:176], desc[176:192]
        pc = Signal(32, name="pc")
        m.d.comb += self.stage.eq(stage)

        # ---- read engine: bursts from rd_addr, rd_left beats ----------------------------
        rd_addr = Signal(32, name="rd_addr")
        rd_left = Signal(40, name="rd_left")
        rd_go = Signal(name="rd_go")
        blen = Signal(9, name="rd_blen")
        m.d.comb += [blen.eq(_burst_len(rd_addr, rd_left, D)),
                     mem.rd_cmd.valid.eq(rd_go & (rd_left != 0)),
                     mem.rd_cmd.payload.addr.eq(rd_addr),
                     mem.rd_cmd.payload.len.eq(blen - 1)]
        with m.If(mem.rd_cmd.valid & mem.rd_cmd.ready):
            m.d.sync += [rd_addr.eq(rd_addr + blen * BB), rd_left.eq(rd_left - blen)]
        with m.If(mem.rd_data.valid & mem.rd_data.ready & mem.rd_data.payload.err):
            m.d.sync += self.error[0].eq(1)
        with m.If(gemm.overflow & self.busy):
            m.d.sync += self.error[3].eq(1)

        # ---- assembler: per beats -> one item ------------------------------------------
        per = Signal(range(maxper + 1), name="per")
        asm = Signal(maxper * D, name="asm")
        asm_cnt = Signal(range(maxper), name="asm_cnt")
        pending = Signal(name="pending")       # asm holds a complete item for the sink
        items_in = Signal(32, name="items_in")  # items assembled so far
        items_out = Signal(32, name="items_out")  # items the sink consumed
        sink_ready = Signal(name="sink_ready")
        consume = Signal(name="consume")
        loading = Signal(name="loading")
        m.d.comb += [
            consume.eq(pending & sink_ready),
            mem.rd_data.ready.eq(loading & (items_in != count) & (~pending | consume)),
        ]
        beat_in = mem.rd_data.valid & mem.rd_data.ready
        with m.If(consume):
            m.d.sync += [pending.eq(0), items_out.eq(items_out + 1)]
        with m.If(beat_in & loading):
            with m.Switch(asm_cnt):
                for i in range(maxper):
                    with m.Case(i):
                        m.d.sync += asm[i * D:(i + 1) * D].eq(mem.rd_data.payload.data)
            with m.If(asm_cnt == per - 1):
                m.d.sync += [asm_cnt.eq(0), pending.eq(1), items_in.eq(items_in + 1)]
            with m.Else():
                m.d.sync += asm_cnt.eq(asm_cnt + 1)

        # ---- sinks -------------------------------------------------------------------------
        bank = Signal(range(R), name="bank")
        off = Signal(16, name="off")
        gb = Signal(32, name="gbase")
        uaddr = Signal(32, name="uaddr")
        m.d.comb += uaddr.eq(ubase + gb + off)
        word = Cat(asm[16 * lane:16 * lane + W] for lane in range(L))
        is_imem = op == OPS["IMEM_LOAD"]
        m.d.comb += [
            gemm.imem_w.addr.eq(uaddr), gemm.gmem_w.addr.eq(uaddr),
            gemm.omem_w.addr.eq(uaddr),
            gemm.imem_w.data.as_value().eq(Cat(word for _ in range(R))),
            gemm.gmem_w.data.as_value().eq(word),
            gemm.omem_w.data.as_value().eq(Cat(asm[64 * r:64 * r + A] for r in range(R))),
            gemm.mask.payload.as_value().eq(asm[:len(gemm.mask.payload.as_value())]),
        ]
        advance = Signal(name="advance")
        with m.If(consume):
            with m.If(is_imem):
                m.d.sync += bank.eq(Mux(bank == R - 1, 0, bank + 1))
                m.d.comb += advance.eq(bank == R - 1)
            with m.Else():
                m.d.comb += advance.eq(1)
        with m.If(advance):
            with m.If(off + 1 >= glen):
                m.d.sync += [off.eq(0), gb.eq(gb + gstride)]
            with m.Else():
                m.d.sync += off.eq(off + 1)

        # ---- write engine (OMEM_STORE) -------------------------------------------------
        wr_addr = Signal(32, name="wr_addr")
        wr_left = Signal(40, name="wr_left")
        wr_go = Signal(name="wr_go")
        wblen = Signal(9, name="wr_blen")
        outstanding = Signal(16, name="wr_outstanding")
        m.d.comb += [wblen.eq(_burst_len(wr_addr, wr_left, D)),
                     mem.wr_cmd.valid.eq(wr_go & (wr_left != 0)),
                     mem.wr_cmd.payload.addr.eq(wr_addr),
                     mem.wr_cmd.payload.len.eq(wblen - 1),
                     mem.wr_resp.ready.eq(1)]
        cmd_fire = mem.wr_cmd.valid & mem.wr_cmd.ready
        resp_fire = mem.wr_resp.valid & mem.wr_resp.ready
        with m.If(cmd_fire):
            m.d.sync += [wr_addr.eq(wr_addr + wblen * BB), wr_left.eq(wr_left - wblen)]
        with m.If(cmd_fire & ~resp_fire):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~cmd_fire & resp_fire):
            m.d.sync += outstanding.eq(outstanding - 1)
        with m.If(resp_fire & mem.wr_resp.payload.err):
            m.d.sync += self.error[1].eq(1)
        # data side: its own burst bookkeeping (same split as the commands)
        d_addr = Signal(32, name="wd_addr")
        d_left = Signal(40, name="wd_left")
        d_burst = Signal(9, name="wd_burst")     # beats left in the current burst
        sbuf = Signal(R * 64, name="sbuf")
        sbeat = Signal(range(max(2, ib["omem"])), name="sbeat")
        sa = Signal(32, name="store_addr")
        dblen = Signal(9, name="wd_blen")
        m.d.comb += [dblen.eq(_burst_len(d_addr, d_left, D)),
                     gemm.omem_r.addr.eq(ubase + sa)]
        cur_burst = Mux(d_burst == 0, dblen, d_burst)
        with m.Switch(sbeat):
            for i in range(ib["omem"]):
                with m.Case(i):
                    m.d.comb += mem.wr_data.payload.data.eq(sbuf[i * D:(i + 1) * D])
        m.d.comb += mem.wr_data.payload.last.eq(cur_burst == 1)

        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        p0 = Signal(32, name="passes0")
        m.d.comb += self.passes.eq(gemm.passes - p0)
        m.d.sync += self.done.eq(0)
        settle = Signal(2, name="settle")

        def load_items(n_beats):
            m.d.sync += [rd_addr.eq(src), rd_left.eq(n_beats), rd_go.eq(1),
                         asm_cnt.eq(0), items_in.eq(0), items_out.eq(0), pending.eq(0),
                         bank.eq(0), off.eq(0), gb.eq(0)]

        with m.FSM(name="dsc"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.busy.eq(1), self.error.eq(0), self.cycles.eq(0),
                                 pc.eq(self.prog_base), p0.eq(gemm.passes)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.sync += [rd_addr.eq(pc), rd_left.eq(desc_beats), rd_go.eq(1),
                             asm_cnt.eq(0), pc.eq(pc + max(DESC_BYTES, BB))]
                m.next = "FETCH_DATA"
            with m.State("FETCH_DATA"):
                m.d.comb += mem.rd_data.ready.eq(1)
                with m.If(mem.rd_data.valid):
                    with m.Switch(asm_cnt):
                        for i in range(desc_beats):
                            with m.Case(i):
                                m.d.sync += desc[i * D:(i + 1) * D].eq(
                                    mem.rd_data.payload.data)
                    m.d.sync += asm_cnt.eq(asm_cnt + 1)
                    with m.If(asm_cnt == desc_beats - 1):
                        m.d.sync += [asm_cnt.eq(0), rd_go.eq(0)]
                        m.next = "DECODE"
            with m.State("DECODE"):
                with m.Switch(op):
                    with m.Case(OPS["END"]):
                        m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                        m.next = "IDLE"
                    with m.Case(OPS["IMEM_LOAD"], OPS["GMEM_LOAD"]):
                        load_items(count * ib["word"])
                        m.d.sync += per.eq(ib["word"])
                        m.next = "LOAD"
                    with m.Case(OPS["OMEM_LOAD"]):
                        load_items(count * ib["omem"])
                        m.d.sync += per.eq(ib["omem"])
                        m.next = "LOAD"
                    with m.Case(OPS["GEMM"]):
                        load_items(count * ib["mask"])
                        m.d.sync += [per.eq(ib["mask"]),
                                     gemm.setup.kwords.eq(desc[192:208]),
                                     gemm.setup.ncols.eq(desc[208:224]),
                                     gemm.setup.regions.eq(desc[224:232]),
                                     gemm.setup.accumulate.eq(desc[16])]
                        m.next = "LOAD"
                    with m.Case(OPS["OMEM_STORE"]):
                        m.d.sync += [wr_addr.eq(dst), wr_left.eq(count * ib["omem"]),
                                     wr_go.eq(1), d_addr.eq(dst),
                                     d_left.eq(count * ib["omem"]), d_burst.eq(0),
                                     sa.eq(0), sbeat.eq(0)]
                        with m.If(count == 0):
                            m.next = "FETCH"
                        with m.Else():
                            m.next = "ST_ADDR"
                    with m.Default():
                        m.d.sync += [self.error[2].eq(1), self.busy.eq(0), self.done.eq(1)]
                        m.next = "IDLE"
            with m.State("LOAD"):
                m.d.comb += loading.eq(1)
                with m.Switch(op):
                    with m.Case(OPS["IMEM_LOAD"]):
                        m.d.comb += [sink_ready.eq(1),
                                     gemm.imem_w.en.eq(Mux(consume, 1 << bank, 0))]
                    with m.Case(OPS["GMEM_LOAD"]):
                        m.d.comb += [sink_ready.eq(1), gemm.gmem_w.en.eq(consume)]
                    with m.Case(OPS["OMEM_LOAD"]):
                        m.d.comb += [sink_ready.eq(1),
                                     gemm.omem_w.en.eq(Mux(consume, (1 << R) - 1, 0))]
                    with m.Case(OPS["GEMM"]):
                        m.d.comb += [gemm.mask.valid.eq(pending),
                                     sink_ready.eq(gemm.mask.ready)]
                done_now = (items_out + consume) == count
                with m.If(done_now):
                    m.d.sync += rd_go.eq(0)
                    with m.If(op == OPS["GEMM"]):
                        m.d.sync += settle.eq(0)
                        m.next = "GEMM_WAIT"
                    with m.Else():
                        m.next = "FETCH"
            with m.State("GEMM_WAIT"):
                with m.If(settle != 2):
                    m.d.sync += settle.eq(settle + 1)
                with m.Elif(~gemm.busy):
                    m.next = "FETCH"
            with m.State("ST_ADDR"):
                m.next = "ST_LATCH"
            with m.State("ST_LATCH"):
                m.d.sync += [sbuf.eq(Cat(_sext(Value.cast(gemm.omem_r.data[r]), 64)
                                         for r in range(R))),
                             sbeat.eq(0)]
                m.next = "ST_SEND"
            with m.State("ST_SEND"):
                m.d.comb += mem.wr_data.valid.eq(1)
                with m.If(mem.wr_data.ready):
                    m.d.sync += [d_left.eq(d_left - 1), d_addr.eq(d_addr + BB),
                                 d_burst.eq(cur_burst - 1), sbeat.eq(sbeat + 1)]
                    with m.If(sbeat == ib["omem"] - 1):
                        m.d.sync += sa.eq(sa + 1)
                        with m.If(sa + 1 == count):
                            m.next = "ST_DRAIN"
                        with m.Else():
                            m.next = "ST_ADDR"
            with m.State("ST_DRAIN"):
                with m.If((wr_left == 0) & (outstanding == 0)):
                    m.d.sync += wr_go.eq(0)
                    m.next = "FETCH"
        return m


def _sext(v, bits: int):
    """Sign-extend the signed value ``v`` to ``bits`` bits."""
    n = len(v)
    return Cat(v, v[n - 1].replicate(bits - n)) if bits > n else v[:bits]
