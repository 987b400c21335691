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

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from exion.config import Config

from .util import bits_for as _bits
from .util import pad_mux as _mux
from .util import pipe_reg
from .dpu import DPU, operand_layout

__all__ = ["SDUE", "pass_layout", "sel_layout", "mem_write_signature", "omem_read_signature",
           "wmem_fetch_signature"]




def sel_layout(cfg: Config) -> data.StructLayout:
    """Per-DPU ConMerge select: which member (weight bus) and whether the DPU works."""
    return data.StructLayout({"idx": unsigned(_bits(cfg.merge_ways)), "valid": 1})


def pass_layout(cfg: Config) -> data.StructLayout:
    """One pass descriptor (SPEC 4.2).

    ibase      IMEM word address of beat 0 (MSB = double-buffer side); same in every bank
    kwords     beats in the pass, 1 .. 2 * imem_words
    wbase[k]   WMEM word address of beat 0 for member (read port) k, same in every bank
    isel[r]    i_sw: IMEM bank feeding DPU row r
    sel[r][c]  cv_switch / w_sw: member index and valid bit of DPU (r, c)
    col[c][k]  original column of member k of slot c: OMEM offset of its results
    obase      OMEM base address added to every column
    accumulate 1 = add into OMEM, 0 = overwrite
    """
    R, C, m = cfg.rows, cfg.cols, cfg.merge_ways
    return data.StructLayout({
        "ibase": unsigned(cfg.imem_addr_bits + 1),
        "kwords": unsigned((2 * cfg.imem_words).bit_length()),
        "wbase": data.ArrayLayout(unsigned(cfg.wmem_addr_bits + 1), m),
        "isel": data.ArrayLayout(unsigned(_bits(R)), R),
        "sel": data.ArrayLayout(data.ArrayLayout(sel_layout(cfg), C), R),
        "col": data.ArrayLayout(data.ArrayLayout(unsigned(cfg.omem_addr_bits), m), C),
        "obase": unsigned(cfg.omem_addr_bits),
        "accumulate": 1,
    })


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
    busy : Out(1)
        A pass is issuing, in the DPU pipeline, or draining into OMEM.
    issued : Out(1)
        High in the last issue cycle of each pass: its IMEM/WMEM words have all been read.
    cycles : Out(32)
        Cycles spent busy since reset (wraps).
    passes : Out(32)
        Passes whose results have been captured since reset.

    Throughput: R * C * L MACs per cycle while beats issue; see the module docstring for the
    exact cycle count of a run.
    """

    def __init__(self, cfg: Config, *, fetch: bool = False):
        self.cfg = cfg
        self.fetch = bool(fetch)
        R, C = cfg.rows, cfg.cols
        word = operand_layout(cfg)
        members = {
            "desc": In(stream.Signature(pass_layout(cfg))),
            "imem_w": In(mem_write_signature(R, cfg.imem_addr_bits + 1, word)),
            "wmem_w": In(mem_write_signature(C, cfg.wmem_addr_bits + 1, word)),
            "omem_w": In(mem_write_signature(R, cfg.omem_addr_bits, signed(cfg.acc_width))),
            "omem_r": In(omem_read_signature(cfg)),
            "busy": Out(1),
            "issued": Out(1),
            "cycles": Out(32),
            "passes": Out(32),
        }
        if self.fetch:
            members["wmem_f"] = In(wmem_fetch_signature(cfg))
        super().__init__(members)

    @property
    def fixed_cycles(self) -> int:
        """Busy cycles of a run beyond ``sum(max(kwords, C))``: ``cfg.sdue_fixed_cycles``."""
        return self.cfg.sdue_fixed_cycles

    def constants(self) -> dict:
        return {"fixed_cycles": self.fixed_cycles, "dpu_latency": self.cfg.dpu_latency,
                "in_latency": self.cfg.sdue_in_latency,
                "drain_latency": self.cfg.sdue_drain_latency,
                "capture_delay": self.cfg.sdue_in_latency + self.cfg.dpu_latency}

    def elaborate(self, platform):
        cfg = self.cfg
        R, C, m = cfg.rows, cfg.cols, cfg.merge_ways
        lat = cfg.dpu_latency
        mod = Module()
        word = operand_layout(cfg)
        desc_layout = pass_layout(cfg)
        res_layout = _result_layout(cfg)

        # ---- memories ------------------------------------------------------------------
        imem_rd, wmem_rd = [], []
        issue_iaddr = Signal(cfg.imem_addr_bits + 1)
        issue_waddr = [Signal(cfg.wmem_addr_bits + 1, name=f"issue_waddr{k}") for k in range(m)]
        for r in range(R):
            mem = Memory(shape=word, depth=2 * cfg.imem_words, init=[])
            mod.submodules[f"imem{r}"] = mem
            wp = mem.write_port()
            mod.d.comb += [wp.addr.eq(self.imem_w.addr), wp.data.eq(self.imem_w.data[r]),
                           wp.en.eq(self.imem_w.en[r])]
            rp = mem.read_port()
            mod.d.comb += rp.addr.eq(issue_iaddr)
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
                if self.fetch:
                    with mod.If(self.wmem_f.en[k]):
                        mod.d.comb += [wp.addr.eq(self.wmem_f.addr),
                                       wp.data.eq(self.wmem_f.data[k][c]), wp.en.eq(1)]
                    with mod.Else():
                        mod.d.comb += [wp.addr.eq(self.wmem_w.addr),
                                       wp.data.eq(self.wmem_w.data[c]),
                                       wp.en.eq(self.wmem_w.en[c])]
                else:
                    mod.d.comb += [wp.addr.eq(self.wmem_w.addr), wp.data.eq(self.wmem_w.data[c]),
                                   wp.en.eq(self.wmem_w.en[c])]
                rp = mem.read_port()
                mod.d.comb += rp.addr.eq(issue_waddr[k])
                ports.append(rp.data)
            wmem_rd.append(ports)

        # ---- issue stage ---------------------------------------------------------------
        # Every signal the memories and the beat flags see is a register (no adder or
        # comparator between the state and the block-RAM addresses): the addresses count up
        # from the descriptor's bases, ``lead_left`` counts the idle cycles before beat 0
        # down, ``left`` the beats still to issue, and ``last_r`` is ``left == 1`` computed
        # one cycle ahead.
        cur = Signal(desc_layout, name="cur")            # the pass being issued
        active = Signal(name="active")
        issuing = Signal(name="issuing")                  # a beat is issued this cycle
        first_r = Signal(name="first_r")                  # the next beat is beat 0
        last_r = Signal(name="last_r")                    # the next beat is the last one
        lead_left = Signal(range(C + 1), name="lead_left")  # idle cycles left before beat 0
        left = Signal(range(2 * cfg.imem_words + 1), name="left")  # beats left to issue
        # ``ending`` = issuing & last_r (the last cycle of the period), kept as its own
        # register with the same next-state logic, so ``desc.ready`` and ``accept`` are one
        # LUT away from flip-flops (this loop was the critical path on ECP5, docs/fpga.md).
        ending = Signal(name="ending")
        accept = Signal(name="accept")
        mod.d.comb += [
            self.desc.ready.eq(~active | ending),
            accept.eq(self.desc.valid & self.desc.ready),
        ]

        with mod.If(accept):
            kw = self.desc.payload.kwords
            mod.d.sync += [
                cur.eq(self.desc.payload), active.eq(1), first_r.eq(1),
                issuing.eq(kw >= C), lead_left.eq(C - kw), left.eq(kw),
                last_r.eq(kw <= 1),       # (kwords = 0 is out of contract; it runs as 1)
                ending.eq((kw >= C) & (kw <= 1)),
                issue_iaddr.eq(self.desc.payload.ibase),
            ]
            for k in range(m):
                mod.d.sync += issue_waddr[k].eq(self.desc.payload.wbase[k])
        with mod.Elif(issuing):
            mod.d.sync += [issue_iaddr.eq(issue_iaddr + 1), left.eq(left - 1),
                           last_r.eq(left == 2), first_r.eq(0),
                           ending.eq(~last_r & (left == 2))]
            for k in range(m):
                mod.d.sync += issue_waddr[k].eq(issue_waddr[k] + 1)
            with mod.If(last_r):
                mod.d.sync += [active.eq(0), issuing.eq(0)]
        with mod.Elif(active):
            mod.d.sync += lead_left.eq(lead_left - 1)
            with mod.If(lead_left == 1):
                mod.d.sync += [issuing.eq(1), ending.eq(last_r)]

        pipe = cfg.sdue_pipe
        in_lat = cfg.sdue_in_latency          # issue -> DPU input

        def stage(value, name, enable=None, control=False):
            return pipe_reg(mod, value, name, enable, control)

        # Beat flags and selects travel with the data. Stage 1: memory read data.
        # The datapath registers (selects, memory data, switched operands) have no clock
        # enable: only the beat-valid flags say which cycles matter (the DPUs load on
        # ``valid``). On ECP5 an enable is a slice CE input; these hundred-fan-out CE nets
        # were among the most congested ones in nextpnr's router2 heat map (docs/fpga.md).
        first0 = issuing & first_r
        last0 = ending
        b_valid = stage(issuing, "b_valid1", control=True)
        b_first = stage(first0, "b_first1", control=True)
        b_last = stage(last0, "b_last1", control=True)
        sel_d = stage(cur.sel, "sel1")
        isel_d = stage(cur.isel, "isel1")
        imem_data, wmem_data = imem_rd, wmem_rd
        ctl_valid = [b_valid]                 # every beat-valid register (for ``busy``)

        def beat_stage(n):
            """Stage ``n`` of what travels with the beat: DPU selects, flags, WMEM data."""
            nonlocal sel_d, b_first, b_last, b_valid, wmem_data
            wmem_data = [[stage(v, f"wmem_q{n}_{c}_{k}") for k, v in enumerate(p)]
                         for c, p in enumerate(wmem_data)]
            sel_d = stage(sel_d, f"sel{n}")
            b_first = stage(b_first, f"b_first{n}", control=True)
            b_last = stage(b_last, f"b_last{n}", control=True)
            b_valid = stage(b_valid, f"b_valid{n}", control=True)
            ctl_valid.append(b_valid)

        if pipe:
            # Stage 2: registered memory outputs (FPGA block RAM output registers).
            imem_data = [stage(v, f"imem_q{r}") for r, v in enumerate(imem_rd)]
            isel_d = stage(isel_d, "isel2")
            beat_stage(2)
        row_pre = None
        if cfg.sdue_pipe_isw:
            # Stage 2b (sdue_pipe_isw): the i_sw's R:1 mux in two halves, registered, and the
            # select's MSB beside them; the final 2:1 comes in stage 3. Everything else that
            # travels with the beat (WMEM data, selects, flags) gets the same register.
            nb = len(isel_d[0])
            row_pre = []
            for r in range(R):
                if nb == 0:
                    row_pre.append(stage(imem_data[0], f"isw_q{r}"))
                    continue
                half = 1 << (nb - 1)
                low_bits = isel_d[r][:nb - 1]
                lo = stage(_mux(imem_data[:half], low_bits), f"isw_lo{r}")
                hi = stage(_mux(imem_data[half:], low_bits), f"isw_hi{r}")
                msb = stage(isel_d[r][nb - 1], f"isw_msb{r}")
                row_pre.append(Mux(msb, hi, lo))
            beat_stage(3)

        # Result descriptors wait in a FIFO from the last beat until capture. They are
        # written one cycle after the last beat, with the OMEM address of every member
        # computed in that cycle (registered), so no adder sits between the queue and the
        # drain; the capture comes at least two cycles after the last beat
        # (in_latency + dpu_latency >= 2), when the entry is readable.
        res_in = Signal(res_layout, name="res_in", reset_less=True)
        res_we = stage(last0, "res_we", control=True)
        with mod.If(last0):
            mod.d.sync += [res_in.sel.eq(cur.sel), res_in.accumulate.eq(cur.accumulate)]
            for c in range(C):
                for k in range(m):
                    mod.d.sync += res_in.oaddr[c][k].eq(cur.obase + cur.col[c][k])
        depth = -(-(in_lat + lat) // C) + 1
        rq = fifo.SyncFIFO(width=res_layout.size, depth=max(2, depth))
        mod.submodules.result_queue = rq
        mod.d.comb += [rq.w_en.eq(res_we), rq.w_data.eq(res_in)]

        # ---- the array (i_sw, w_sw, DPUs) ----------------------------------------------
        if pipe:   # stage 3: switched operands registered at the DPU inputs
            d_first = stage(b_first, "dpu_first", control=True)
            d_last = stage(b_last, "dpu_last", control=True)
            d_any = stage(b_valid, "dpu_any", control=True)
            ctl_valid.append(d_any)
        else:
            d_first, d_last = b_first, b_last
        results, results_valid = [], []
        for r in range(R):
            row_in = Signal(word, name=f"row_in{r}")
            if row_pre is not None:
                mod.d.comb += row_in.eq(row_pre[r])
            else:
                mod.d.comb += row_in.eq(_mux(imem_data, isel_d[r]))
            if pipe:
                row_in = stage(row_in, f"row_q{r}")
            row_res, row_valid = [], []
            for c in range(C):
                dpu = DPU(cfg)
                mod.submodules[f"dpu_{r}_{c}"] = dpu
                s = sel_d[r][c]
                wsel = _mux(wmem_data[c], s.idx)
                valid = b_valid & s.valid
                if pipe:
                    wsel = stage(wsel, f"w_q{r}_{c}")
                    valid = stage(valid, f"valid_q{r}_{c}", control=True)
                mod.d.comb += [
                    dpu.inp.valid.eq(valid),
                    dpu.inp.payload.a.eq(row_in),
                    dpu.inp.payload.b.eq(wsel),
                    dpu.inp.payload.first.eq(d_first),
                    dpu.inp.payload.last.eq(d_last),
                ]
                row_res.append(dpu.out.payload)
                row_valid.append(dpu.out.valid)
            results.append(row_res)
            results_valid.append(row_valid)

        # Capture strobe: the last beat's flag at the DPU inputs, delayed to the DPU output.
        cap_line = Signal(lat, name="cap_line")
        mod.d.sync += cap_line.eq(Cat(d_last, cap_line[:-1]) if lat > 1 else d_last)
        cap = Signal(name="cap")
        mod.d.comb += [cap.eq(cap_line[-1]), rq.r_en.eq(cap)]
        rdesc = Signal(res_layout, name="rdesc")
        mod.d.comb += rdesc.as_value().eq(rq.r_data)

        # ---- cv_switch drain into OMEM -------------------------------------------------
        # Per bank: R stage (read the old value at the head entry's address), D stage (the
        # entry waits for the read data), [Q stage (read data registered, sdue_pipe)], write.
        # The captured results, addresses and valid bits form a shift register per bank
        # (loaded at capture, shifted by one column every cycle after): the head entry is
        # always column 0, so no C:1 multiplexer sits in front of OMEM.
        A = cfg.acc_width
        draining = Signal(name="draining")
        didx = Signal(range(C), name="didx")
        dacc = Signal(name="dacc", reset_less=True)
        w_pending = Signal(name="w_pending")
        with mod.If(cap):
            mod.d.sync += [draining.eq(1), didx.eq(0), dacc.eq(rdesc.accumulate)]
        with mod.Elif(draining):
            mod.d.sync += didx.eq(didx + 1)
            with mod.If(didx == C - 1):
                mod.d.sync += draining.eq(0)
        mod.d.sync += w_pending.eq(draining)
        pending = [w_pending]
        if pipe:
            q_pending = stage(w_pending, "q_pending", control=True)
            pending.append(q_pending)

        busy = Signal(name="busy_int")
        mod.d.comb += busy.eq(active | Cat(*ctl_valid).any() | cap_line.any() | draining |
                              Cat(*pending).any())

        for r in range(R):
            dval = [Signal(signed(A), name=f"dval_{r}_{c}", reset_less=True) for c in range(C)]
            daddr = [Signal(cfg.omem_addr_bits, name=f"daddr_{r}_{c}", reset_less=True)
                     for c in range(C)]
            dvalid = Signal(C, name=f"dvalid_{r}")
            # The bank loads its drain entries on its own DPUs' result strobes: they rise
            # with ``cap`` in every pass where one of the row's DPUs is valid, and a row
            # with none would only load zeros into a drain that has already shifted empty
            # (period >= C). One ``cap`` net fanned out to every bank's entries was the
            # floorplanned toy SDUE's critical path on ECP5 (docs/fpga.md).
            cap_r = Signal(name=f"cap_{r}")
            mod.d.comb += cap_r.eq(Cat(*results_valid[r]).any())
            with mod.If(cap_r):
                for c in range(C):
                    s = rdesc.sel[r][c]
                    mod.d.sync += [dval[c].eq(results[r][c]),
                                   daddr[c].eq(_mux(list(rdesc.oaddr[c]), s.idx))]
                mod.d.sync += dvalid.eq(Cat(rdesc.sel[r][c].valid for c in range(C)))
            with mod.Else():
                for c in range(C - 1):
                    mod.d.sync += [dval[c].eq(dval[c + 1]), daddr[c].eq(daddr[c + 1])]
                mod.d.sync += dvalid.eq(dvalid[1:])

            mem = Memory(shape=signed(A), depth=cfg.omem_depth, init=[])
            mod.submodules[f"omem{r}"] = mem
            wp = mem.write_port()
            # Transparent (read-during-write returns the new word) without sdue_pipe; with
            # it the Q stage forwards instead, so nothing sits after the block RAM.
            rp = mem.read_port(transparent_for=() if pipe else (wp,))
            w_valid = Signal(name=f"w_valid{r}")
            w_addr = Signal(cfg.omem_addr_bits, name=f"w_addr{r}", reset_less=True)
            w_val = Signal(signed(A), name=f"w_val{r}", reset_less=True)
            head_addr = daddr[0]
            mod.d.sync += [w_valid.eq(draining & dvalid[0]),
                           w_addr.eq(head_addr), w_val.eq(dval[0])]
            with mod.If(draining):  # host reads only while idle
                mod.d.comb += rp.addr.eq(head_addr)
            with mod.Else():
                mod.d.comb += rp.addr.eq(self.omem_r.addr)
            mod.d.comb += self.omem_r.data[r].eq(rp.data)
            if pipe:
                # Q stage: the block RAM's read data goes straight into a register (no
                # logic after the block RAM's slow clock-to-output). The port is not
                # transparent, so the two drain writes this read cannot see are forwarded
                # from registers, newest first: the write in the cycle after the read
                # (the entry ahead, compared with w_addr) and the write in the cycle of the
                # read (compared with the read address, head_addr).
                # The accumulate flag per bank (ANDed with the bank's own write, so synthesis
                # keeps one register per bank): one flag shared by every bank's adder
                # crossed the die once OMEM was floorplanned (docs/fpga.md). Where the
                # write is off, x_new is never used.
                w_acc_r = Signal(name=f"w_acc{r}", reset_less=True)
                mod.d.sync += w_acc_r.eq(draining & dvalid[0] & dacc)
                x_acc = stage(w_acc_r, f"x_acc{r}")
                x_valid = stage(w_valid, f"x_valid{r}", control=True)
                x_addr = stage(w_addr, f"x_addr{r}")
                x_val = stage(w_val, f"x_val{r}")
                x_raw = stage(rp.data, f"x_raw{r}")
                x_new = Signal(signed(A), name=f"x_new{r}")
                fwd_a = stage(x_valid & (x_addr == w_addr), f"fwd_a{r}", control=True)
                fwd_a_val = stage(x_new, f"fwd_a_val{r}")
                fwd_b = stage(stage(x_valid & (x_addr == head_addr), f"fwd_b1_{r}",
                                    control=True), f"fwd_b{r}", control=True)
                fwd_b_val = stage(fwd_a_val, f"fwd_b_val{r}")  # x_new two cycles back
                x_old = Mux(fwd_a, fwd_a_val, Mux(fwd_b, fwd_b_val, x_raw))
                mod.d.comb += x_new.eq(x_val + Mux(x_acc, x_old, 0))
                wr_valid, wr_addr, wr_data = x_valid, x_addr, x_new
            else:
                w_acc = Signal(name="w_acc", reset_less=True)   # one cycle after dacc
                mod.d.sync += w_acc.eq(dacc)
                wr_valid, wr_addr = w_valid, w_addr
                wr_data = w_val + Mux(w_acc, rp.data, 0)
            # The drain's write (a flip-flop, local to the bank) selects the write port's
            # address and data; ``busy`` only gates the host's enable.
            mod.d.comb += [
                wp.en.eq(wr_valid | (~busy & self.omem_w.en[r])),
                wp.addr.eq(Mux(wr_valid, wr_addr, self.omem_w.addr)),
                wp.data.eq(Mux(wr_valid, wr_data, self.omem_w.data[r])),
            ]

        # ---- status ----------------------------------------------------------------------
        mod.d.comb += [self.busy.eq(busy), self.issued.eq(ending)]
        with mod.If(busy):
            mod.d.sync += self.cycles.eq(self.cycles + 1)
        with mod.If(cap):
            mod.d.sync += self.passes.eq(self.passes + 1)
        return mod
