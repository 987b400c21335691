"""Sparse-dense unified engine (SPEC 4.2): R x C DPUs, i_sw, w_sw, cv_switch, IMEM/WMEM/OMEM.

Data path of one pass (``pass_layout``)::

    IMEM bank b --(i_sw: isel[r])--> DPU row r           (one L-word per cycle, broadcast)
    WMEM bank c, read port k --(w_sw: sel[r][c].idx)--> DPU (r, c)
    DPU (r, c) result --(cv_switch)--> OMEM bank r at obase + col[c][sel[r][c].idx]

Timing contract (mirrored by ``exion.golden.cycles.sdue_cycles``):

* A pass occupies the issue stage for ``period = max(kwords, C)`` cycles; its ``kwords``
  beats are issued in the *last* ``kwords`` cycles of the period. A new descriptor is taken
  in the last cycle of a period, so passes stream back to back with no bubble.
* A beat reaches the DPU inputs ``cfg.sdue_in_latency`` cycles after its memory address:
  one cycle of memory read, plus (``sdue_pipe``) a register on the memory read data and a
  register on the switched operands, plus (``sdue_pipe_isw``) a register in the middle of
  the i_sw. The DPUs add ``cfg.dpu_latency``. The results of a pass
  are then captured and drained into OMEM one column per cycle per bank (C cycles) while
  the next pass computes. The ``max(kwords, C)`` period guarantees a drain ends before the
  next capture.
* The drain is a read-modify-write: OMEM is read ``cfg.sdue_drain_latency`` cycles before
  it is written (one, plus a register on the read data with ``sdue_pipe``). Without
  ``sdue_pipe`` the read port is transparent to the write port; with it the read data is
  registered straight out of the block RAM and the writes the read could not see (in its
  own cycle and the next) are forwarded from registers. So back-to-back passes that
  accumulate into the same addresses (K-splits) see each other's results.
* ``cycles`` counts cycles while ``busy``; a run of passes that starts idle takes
  ``sum(period) + C + dpu_latency + sdue_in_latency + sdue_drain_latency`` busy cycles.

Memories: every IMEM/WMEM bank holds both sides of its double buffer (``2 * depth`` words;
the side is the address MSB), so the host loads one side while passes read the other.
OMEM is single-buffered. Host ports write IMEM/WMEM at any time and read/write OMEM while
the engine is idle.
"""

from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from exion.config import Config

from .dpu import DPU, dpu_box, operand_layout
from .sdue_stages import OmemDrain, SdueIssue, SdueOperands
from .util import bits_for as _bits
from .util import pad_mux as _mux
from .util import pipe_reg

__all__ = ["SDUE", "pass_layout", "sel_layout", "mem_write_signature", "omem_read_signature",
           "wmem_fetch_signature"]




def sel_layout(cfg: Config) -> data.StructLayout:
    """Per-DPU ConMerge select: which member (weight bus) and whether the DPU works."""
    return data.StructLayout({"idx": unsigned(_bits(cfg.merge_ways)), "valid": 1})


def pass_layout(cfg: Config, wcols: bool = False) -> data.StructLayout:
    """One pass descriptor (SPEC 4.2).

    ibase      IMEM word address of beat 0 (MSB = double-buffer side); same in every bank
    kwords     beats in the pass, 1 .. 2 * imem_words
    wbase[k]   WMEM word address of beat 0 for member (read port) k, same in every bank
    isel[r]    i_sw: IMEM bank feeding DPU row r
    sel[r][c]  cv_switch / w_sw: member index and valid bit of DPU (r, c)
    col[c][k]  original column of member k of slot c: OMEM offset of its results
    obase      OMEM base address added to every column
    accumulate 1 = add into OMEM, 0 = overwrite
    woff[c][k] (only with ``wcols``) WMEM offset of member k of slot c, added to ``wbase[k]``
               in bank c: weights resident in WMEM, read in place (col-group gemm engine)
    """
    R, C, m = cfg.rows, cfg.cols, cfg.merge_ways
    fields = {
        "ibase": unsigned(cfg.imem_addr_bits + 1),
        "kwords": unsigned((2 * cfg.imem_words).bit_length()),
        "wbase": data.ArrayLayout(unsigned(cfg.wmem_addr_bits + 1), m),
        "isel": data.ArrayLayout(unsigned(_bits(R)), R),
        "sel": data.ArrayLayout(data.ArrayLayout(sel_layout(cfg), C), R),
        "col": data.ArrayLayout(data.ArrayLayout(unsigned(cfg.omem_addr_bits), m), C),
        "obase": unsigned(cfg.omem_addr_bits),
        "accumulate": 1,
    }
    if wcols:
        fields["woff"] = data.ArrayLayout(
            data.ArrayLayout(unsigned(cfg.wmem_addr_bits + 1), m), C)
    return data.StructLayout(fields)


def _result_layout(cfg: Config) -> data.StructLayout:
    """What the drain needs of a descriptor, queued from the last beat to the capture:
    the selects, the OMEM address ``obase + col[c][k]`` of every member (precomputed when
    the pass ends) and the accumulate flag."""
    full = pass_layout(cfg)
    return data.StructLayout({
        "sel": full["sel"].shape,
        "oaddr": data.ArrayLayout(data.ArrayLayout(unsigned(cfg.omem_addr_bits),
                                                   cfg.merge_ways), cfg.cols),
        "accumulate": 1,
    })


def mem_write_signature(banks: int, addr_bits: int, word) -> wiring.Signature:
    """Host write port over several banks: one shared address, per-bank enable and data."""
    return wiring.Signature({
        "en": Out(banks),
        "addr": Out(addr_bits),
        "data": Out(data.ArrayLayout(word, banks)),
    })


def wmem_fetch_signature(cfg: Config) -> wiring.Signature:
    """Weight fetch into WMEM: sub-bank k of every bank c gets ``data[k][c]`` at ``addr``
    when ``en[k]`` (takes priority over the host port ``wmem_w`` for that sub-bank)."""
    word = operand_layout(cfg)
    return wiring.Signature({
        "en": Out(cfg.merge_ways),
        "addr": Out(cfg.wmem_addr_bits + 1),
        "data": Out(data.ArrayLayout(data.ArrayLayout(word, cfg.cols), cfg.merge_ways)),
    })


def omem_read_signature(cfg: Config) -> wiring.Signature:
    """Host read of all OMEM banks at one address; ``data`` one cycle after ``addr``."""
    return wiring.Signature({
        "addr": Out(cfg.omem_addr_bits),
        "data": In(data.ArrayLayout(signed(cfg.acc_width), cfg.rows)),
    })


class SDUE(wiring.Component):
    """Sparse-dense unified engine.

    Parameters
    ----------
    cfg : Config
        R = ``rows``, C = ``cols``, L = ``lanes``, W, A, m = ``merge_ways`` and the memory
        depths.
    fetch : bool
        Add the weight-fetch write port ``wmem_f`` (``hw.gemm``).
    wcols : bool
        Descriptors carry ``woff[c][k]`` (``pass_layout(cfg, wcols=True)``): every (bank,
        weight bus) reads its own WMEM address (``hw.gemm``'s col-group dataflow, weights
        resident in WMEM).
    dpu_module : str or None
        Instantiate each DPU as a black box of this Verilog module (``hw.dpu.dpu_box``, the
        DPU's ports) instead of elaborating it (``None``): the generator emits the DPU once
        under that name and the array as R x C instances of it (``exion.gen.verilog.
        generate``, ``box_dpus``; the same circuit, and much less to generate, Verilate and
        compile). Amaranth's simulator needs ``None``.

    Members
    -------
    desc : In(stream.Signature(pass_layout(cfg)))
        Pass descriptors. Taken when the issue stage is idle or in the last cycle of a pass.
    imem_w : In(mem_write_signature(R, imem_addr_bits + 1, operand_layout))
        Host write of IMEM: bank r gets ``data[r]`` at ``addr`` when ``en[r]``.
    wmem_w : In(mem_write_signature(C, wmem_addr_bits + 1, operand_layout))
        Host write of WMEM: bank c = m sub-banks (one per weight bus), all written.
    wmem_f : In(wmem_fetch_signature(cfg)), only with ``fetch=True``
        Weight-fetch write of WMEM: sub-bank k of every bank at once (``hw.gemm``).
    omem_w : In(mem_write_signature(R, omem_addr_bits, signed(A)))
        Host write of OMEM (only while not ``busy``; e.g. FFN-Reuse's cached values).
    omem_r : In(omem_read_signature(cfg))
        Host read of OMEM bank r at ``addr``: ``data[r]`` one cycle later (only while idle).
    wide : In(1), only with ``cfg.omem_drain`` D > 1
        The run drains D results per OMEM bank per cycle (constant while ``busy``): its
        passes take ``max(kwords, C / D)`` cycles. Contract: in every pass, each group of D
        consecutive DPU columns writes D OMEM addresses distinct mod D in every row (e.g.
        consecutive columns; the gemm engine's striped runs); otherwise results are lost.
    busy : Out(1)
        A pass is issuing, in the DPU pipeline, or draining into OMEM.
    active : Out(1)
        A pass occupies the issue stage (``max(kwords, C)`` cycles per pass, ``C / D``
        in a wide run).
    issued : Out(1)
        High in the last issue cycle of each pass: its IMEM/WMEM words have all been read.
    cycles : Out(32)
        Cycles spent busy since reset (wraps).
    passes : Out(32)
        Passes whose results have been captured since reset.

    Throughput: R * C * L MACs per cycle while beats issue; see the module docstring for the
    exact cycle count of a run.
    """

    def __init__(self, cfg: Config, *, fetch: bool = False, wcols: bool = False,
                 dpu_module: str | None = None):
        self.cfg = cfg
        self.dpu_module = dpu_module
        self.fetch = bool(fetch)
        self.wcols = bool(wcols)
        R, C = cfg.rows, cfg.cols
        word = operand_layout(cfg)
        members = {
            "desc": In(stream.Signature(pass_layout(cfg, self.wcols))),
            "imem_w": In(mem_write_signature(R, cfg.imem_addr_bits + 1, word)),
            "wmem_w": In(mem_write_signature(C, cfg.wmem_addr_bits + 1, word)),
            "omem_w": In(mem_write_signature(R, cfg.omem_addr_bits, signed(cfg.acc_width))),
            "omem_r": In(omem_read_signature(cfg)),
            "busy": Out(1),
            "active": Out(1),
            "issued": Out(1),
            "cycles": Out(32),
            "passes": Out(32),
        }
        if self.fetch:
            members["wmem_f"] = In(wmem_fetch_signature(cfg))
        if cfg.omem_drain > 1:
            members["wide"] = In(1)
        super().__init__(members)

    @property
    def fixed_cycles(self) -> int:
        """Busy cycles of a run beyond ``sum(max(kwords, C))``: ``cfg.sdue_fixed_cycles``."""
        return self.cfg.sdue_fixed_cycles

    def constants(self) -> dict:
        return {"fixed_cycles": self.fixed_cycles,
                "fixed_cycles_wide": self.cfg.sdue_fixed_wide,
                "omem_drain": self.cfg.omem_drain, "dpu_latency": self.cfg.dpu_latency,
                "in_latency": self.cfg.sdue_in_latency,
                "drain_latency": self.cfg.sdue_drain_latency,
                "capture_delay": self.cfg.sdue_in_latency + self.cfg.dpu_latency}

    def _memories(self, mod, iaddr, waddr):
        """IMEM banks ``imem{r}`` and WMEM sub-banks ``wmem{c}_{k}`` (instance names the FPGA
        floorplan places) with their host and fetch write ports; returns the read data."""
        cfg = self.cfg
        R, C, m = cfg.rows, cfg.cols, cfg.merge_ways
        word = operand_layout(cfg)
        imem_rd, wmem_rd = [], []
        for r in range(R):
            mem = Memory(shape=word, depth=2 * cfg.imem_words, init=[])
            mod.submodules[f"imem{r}"] = mem
            wp = mem.write_port()
            mod.d.comb += [wp.addr.eq(self.imem_w.addr), wp.data.eq(self.imem_w.data[r]),
                           wp.en.eq(self.imem_w.en[r])]
            rp = mem.read_port()
            mod.d.comb += rp.addr.eq(iaddr)
            imem_rd.append(rp.data)
        for c in range(C):
            # Bank c = m sub-banks (one per weight bus), each one write and one read port:
            # host writes go to every sub-bank; a fetch port (``fetch=True``) writes
            # sub-bank k alone, so a pass's m members load in parallel.
            ports = []
            for k in range(m):
                mem = Memory(shape=word, depth=2 * cfg.wmem_words, init=[])
                mod.submodules[f"wmem{c}_{k}"] = mem
                wp = mem.write_port()
                host = [wp.addr.eq(self.wmem_w.addr), wp.data.eq(self.wmem_w.data[c]),
                        wp.en.eq(self.wmem_w.en[c])]
                if self.fetch:
                    with mod.If(self.wmem_f.en[k]):
                        mod.d.comb += [wp.addr.eq(self.wmem_f.addr),
                                       wp.data.eq(self.wmem_f.data[k][c]), wp.en.eq(1)]
                    with mod.Else():
                        mod.d.comb += host
                else:
                    mod.d.comb += host
                rp = mem.read_port()
                mod.d.comb += rp.addr.eq(waddr[c][k] if self.wcols else waddr[k])
                ports.append(rp.data)
            wmem_rd.append(ports)
        return imem_rd, wmem_rd

    def _omem_bank(self, mod, r, drain):
        """OMEM bank ``omem{r}`` behind its drain (host read data straight from the port);
        with ``omem_drain`` D > 1 sub-banks ``omem{r}_{s}`` (address ``a`` in ``a % D`` at
        ``a // D``), the host's read data picked by the address's low bits of the cycle
        before."""
        cfg = self.cfg
        D = cfg.omem_drain
        kb = D.bit_length() - 1
        mod.d.comb += [
            drain.host_we.eq(self.omem_w.en[r]), drain.host_waddr.eq(self.omem_w.addr),
            drain.host_wdata.eq(self.omem_w.data[r]), drain.host_raddr.eq(self.omem_r.addr),
        ]
        rdata = []
        for s in range(D):
            mem = Memory(shape=signed(cfg.acc_width), depth=cfg.omem_depth // D, init=[])
            mod.submodules[f"omem{r}" if D == 1 else f"omem{r}_{s}"] = mem
            wp = mem.write_port()
            # Transparent (read-during-write returns the new word) without sdue_pipe; with
            # it the drain's Q stage forwards instead, so nothing sits after the block RAM.
            rp = mem.read_port(transparent_for=() if cfg.sdue_pipe else (wp,))
            mod.d.comb += [
                wp.en.eq(drain.we[s]), wp.addr.eq(drain.waddr[s]), wp.data.eq(drain.wdata[s]),
                rp.addr.eq(drain.rd_addr[s]), drain.rd_data[s].eq(rp.data),
            ]
            rdata.append(rp.data)
        if D == 1:
            mod.d.comb += self.omem_r.data[r].eq(rdata[0])
        else:
            lo = pipe_reg(mod, self.omem_r.addr[:kb], f"omem_r_lo{r}")
            mod.d.comb += self.omem_r.data[r].eq(Array(rdata)[lo])

    def elaborate(self, platform):
        cfg = self.cfg
        R, C, m = cfg.rows, cfg.cols, cfg.merge_ways
        lat, in_lat = cfg.dpu_latency, cfg.sdue_in_latency
        mod = Module()
        desc_layout = pass_layout(cfg, self.wcols)
        res_layout = _result_layout(cfg)

        # ---- issue stage and memories ------------------------------------------------------
        mod.submodules.issue = issue = SdueIssue(cfg, desc_layout)
        wiring.connect(mod, wiring.flipped(self.desc), issue.desc)
        D = cfg.omem_drain
        if D > 1:
            mod.d.comb += issue.wide.eq(self.wide)
        imem_rd, wmem_rd = self._memories(mod, issue.iaddr, issue.waddr)
        cur = issue.cur

        # ---- beat pipeline, i_sw, w_sw -----------------------------------------------------
        mod.submodules.operands = ops = SdueOperands(cfg, desc_layout["sel"].shape,
                                                      desc_layout["isel"].shape)
        mod.d.comb += [ops.issuing.eq(issue.issuing), ops.first.eq(issue.first),
                       ops.ending.eq(issue.ending), ops.sel.eq(cur.sel), ops.isel.eq(cur.isel)]
        mod.d.comb += [ops.imem[r].eq(imem_rd[r]) for r in range(R)]
        mod.d.comb += [ops.wmem[c][k].eq(wmem_rd[c][k]) for c in range(C) for k in range(m)]

        # Result descriptors wait in a FIFO from the last beat until capture. They are
        # written one cycle after the last beat, with the OMEM address of every member
        # computed in that cycle (registered), so no adder sits between the queue and the
        # drain; the capture comes at least two cycles after the last beat
        # (in_latency + dpu_latency >= 2), when the entry is readable.
        res_in = Signal(res_layout, name="res_in", reset_less=True)
        res_we = pipe_reg(mod, issue.ending, "res_we", control=True)
        with mod.If(issue.ending):
            mod.d.sync += [res_in.sel.eq(cur.sel), res_in.accumulate.eq(cur.accumulate)]
            for c in range(C):
                for k in range(m):
                    mod.d.sync += res_in.oaddr[c][k].eq(cur.obase + cur.col[c][k])
        # results in flight between a last beat and its capture: one per period (>= C / D)
        rq = fifo.SyncFIFO(width=res_layout.size,
                           depth=max(2, -(-(in_lat + lat) // max(1, C // D)) + 1))
        mod.submodules.result_queue = rq
        mod.d.comb += [rq.w_en.eq(res_we), rq.w_data.eq(res_in)]

        # ---- the DPU array -----------------------------------------------------------------
        results = [[None] * C for _ in range(R)]
        results_valid = [[None] * C for _ in range(R)]
        for r in range(R):
            for c in range(C):
                name = f"dpu_{r}_{c}"
                if self.dpu_module:
                    dpu, mod.submodules[name] = dpu_box(cfg, name, self.dpu_module)
                else:
                    dpu = mod.submodules[name] = DPU(cfg)
                mod.d.comb += [
                    dpu.inp.valid.eq(ops.valid[r][c]),
                    dpu.inp.payload.a.eq(ops.a[r]),
                    dpu.inp.payload.b.eq(ops.b[r][c]),
                    dpu.inp.payload.first.eq(ops.dpu_first),
                    dpu.inp.payload.last.eq(ops.dpu_last),
                ]
                results[r][c], results_valid[r][c] = dpu.out.payload, dpu.out.valid

        # Capture strobe: the last beat's flag at the DPU inputs, delayed to the DPU output.
        cap_line = Signal(lat, name="cap_line")
        mod.d.sync += cap_line.eq(Cat(ops.dpu_last, cap_line[:-1]) if lat > 1 else ops.dpu_last)
        cap = Signal(name="cap")
        mod.d.comb += [cap.eq(cap_line[-1]), rq.r_en.eq(cap)]
        rdesc = Signal(res_layout, name="rdesc")
        mod.d.comb += rdesc.as_value().eq(rq.r_data)

        # ---- cv_switch drain into OMEM (shared control, one OmemDrain per bank) -------------
        draining = Signal(name="draining")
        didx = Signal(range(C), name="didx")
        dacc = Signal(name="dacc", reset_less=True)
        w_pending = Signal(name="w_pending")
        with mod.If(cap):
            mod.d.sync += [draining.eq(1), didx.eq(0), dacc.eq(rdesc.accumulate)]
        with mod.Elif(draining):
            mod.d.sync += didx.eq(didx + 1)
            last = (didx == C - 1) if D == 1 else \
                (didx == Mux(self.wide, C // D - 1, C - 1))   # a wide drain: C / D steps
            with mod.If(last):
                mod.d.sync += draining.eq(0)
        mod.d.sync += w_pending.eq(draining)
        pending = [w_pending]
        if cfg.sdue_pipe:
            pending.append(pipe_reg(mod, w_pending, "q_pending", control=True))
        busy = Signal(name="busy_int")
        mod.d.comb += busy.eq(issue.active | ops.in_flight | cap_line.any() | draining |
                              Cat(*pending).any())
        for r in range(R):
            drain = OmemDrain(cfg)
            mod.submodules[f"drain{r}"] = drain
            # The bank loads on its own DPUs' result strobes: they rise with ``cap`` in every
            # pass where one of the row's DPUs is valid; a row with none would only load
            # zeros into a drain that has already shifted empty (period >= C). One ``cap``
            # net fanned out to every bank was the toy SDUE's critical path on ECP5.
            mod.d.comb += [drain.load.eq(Cat(*results_valid[r]).any()),
                           drain.draining.eq(draining), drain.acc.eq(dacc), drain.busy.eq(busy)]
            if D > 1:
                mod.d.comb += drain.wide.eq(self.wide)
            for c in range(C):
                s = rdesc.sel[r][c]
                mod.d.comb += [drain.vals[c].eq(results[r][c]),
                               drain.addrs[c].eq(_mux(list(rdesc.oaddr[c]), s.idx)),
                               drain.valids[c].eq(s.valid)]
            self._omem_bank(mod, r, drain)

        # ---- status ----------------------------------------------------------------------
        mod.d.comb += [self.busy.eq(busy), self.issued.eq(issue.ending),
                       self.active.eq(issue.active)]
        with mod.If(busy):
            mod.d.sync += self.cycles.eq(self.cycles + 1)
        with mod.If(cap):
            mod.d.sync += self.passes.eq(self.passes + 1)
        return mod
