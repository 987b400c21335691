"""Sparse-dense unified engine (SPEC 4.2): R x C DPUs, i_sw, w_sw, cv_switch, IMEM/WMEM/OMEM.

Data path of one pass (``pass_layout``)::

    IMEM bank b --(i_sw: isel[r])--> DPU row r           (one L-word per cycle, broadcast)
    WMEM bank c, read port k --(w_sw: sel[r][c].idx)--> DPU (r, c)
    DPU (r, c) result --(cv_switch)--> OMEM bank r at obase + col[c][sel[r][c].idx]

Timing contract (mirrored by ``exion.golden.cycles.sdue_cycles``):

* A pass occupies the issue stage for ``period = max(kwords, C)`` cycles; its ``kwords``
  beats are issued in the *last* ``kwords`` cycles of the period. A new descriptor is taken
  in the last cycle of a period, so passes stream back to back with no bubble.
* Memory reads take one cycle; the DPU adds ``cfg.dpu_latency``. The results of a pass are
  captured ``1 + dpu_latency`` cycles after its last beat, then drained into OMEM one column
  per cycle per bank (C cycles) while the next pass computes. The ``max(kwords, C)`` period
  guarantees a drain ends before the next capture.
* The drain is a read-modify-write: OMEM is read one cycle before it is written, through a
  read port transparent to the write port, so back-to-back passes that accumulate into the
  same addresses (K-splits) see each other's results.
* ``cycles`` counts cycles while ``busy``; a run of passes that starts idle takes
  ``sum(period) + C + dpu_latency + 2`` busy cycles.

Memories: every IMEM/WMEM bank holds both sides of its double buffer (``2 * depth`` words;
the side is the address MSB), so the host loads one side while passes read the other.
OMEM is single-buffered. Host ports write IMEM/WMEM at any time and read/write OMEM while
the engine is idle.
"""

from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from exion.config import Config

from .dpu import DPU, operand_layout

__all__ = ["SDUE", "pass_layout", "sel_layout", "mem_write_signature", "omem_read_signature"]


def _bits(n: int) -> int:
    return max(1, ceil_log2(n))


def _mux(items, index):
    """``items[index]`` as a mux; the list is padded to ``2**len(index)`` with its last item
    so that every index value is covered (no incomplete ``case`` in the Verilog)."""
    items = [Value.cast(v) for v in items]
    if len(items) == 1:
        return items[0]
    items += [items[-1]] * (2 ** len(Value.cast(index)) - len(items))
    return Array(items)[index]


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
    """The part of a descriptor the drain needs, queued from last beat to capture."""
    full = pass_layout(cfg)
    return data.StructLayout({k: full[k].shape for k in ("sel", "col", "obase", "accumulate")})


def mem_write_signature(banks: int, addr_bits: int, word) -> wiring.Signature:
    """Host write port over several banks: one shared address, per-bank enable and data."""
    return wiring.Signature({
        "en": Out(banks),
        "addr": Out(addr_bits),
        "data": Out(data.ArrayLayout(word, banks)),
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

    Members
    -------
    desc : In(stream.Signature(pass_layout(cfg)))
        Pass descriptors. Taken when the issue stage is idle or in the last cycle of a pass.
    imem_w : In(mem_write_signature(R, imem_addr_bits + 1, operand_layout))
        Host write of IMEM: bank r gets ``data[r]`` at ``addr`` when ``en[r]``.
    wmem_w : In(mem_write_signature(C, wmem_addr_bits + 1, operand_layout))
        Host write of WMEM (all m read ports of a bank see the same contents).
    omem_w : In(mem_write_signature(R, omem_addr_bits, signed(A)))
        Host write of OMEM (only while not ``busy``; e.g. FFN-Reuse's cached values).
    omem_r : In(omem_read_signature(cfg))
        Host read of OMEM bank r at ``addr``: ``data[r]`` one cycle later (only while idle).
    busy : Out(1)
        A pass is issuing, in the DPU pipeline, or draining into OMEM.
    cycles : Out(32)
        Cycles spent busy since reset (wraps).
    passes : Out(32)
        Passes whose results have been captured since reset.

    Throughput: R * C * L MACs per cycle while beats issue; see the module docstring for the
    exact cycle count of a run.
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        R, C = cfg.rows, cfg.cols
        word = operand_layout(cfg)
        super().__init__({
            "desc": In(stream.Signature(pass_layout(cfg))),
            "imem_w": In(mem_write_signature(R, cfg.imem_addr_bits + 1, word)),
            "wmem_w": In(mem_write_signature(C, cfg.wmem_addr_bits + 1, word)),
            "omem_w": In(mem_write_signature(R, cfg.omem_addr_bits, signed(cfg.acc_width))),
            "omem_r": In(omem_read_signature(cfg)),
            "busy": Out(1),
            "cycles": Out(32),
            "passes": Out(32),
        })

    @property
    def fixed_cycles(self) -> int:
        """Busy cycles of a run beyond ``sum(max(kwords, C))``."""
        return self.cfg.cols + self.cfg.dpu_latency + 2

    def constants(self) -> dict:
        return {"fixed_cycles": self.fixed_cycles, "dpu_latency": self.cfg.dpu_latency,
                "capture_delay": 1 + self.cfg.dpu_latency}

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
            mem = Memory(shape=word, depth=2 * cfg.wmem_words, init=[])
            mod.submodules[f"wmem{c}"] = mem
            wp = mem.write_port()
            mod.d.comb += [wp.addr.eq(self.wmem_w.addr), wp.data.eq(self.wmem_w.data[c]),
                           wp.en.eq(self.wmem_w.en[c])]
            ports = []
            for k in range(m):
                rp = mem.read_port()
                mod.d.comb += rp.addr.eq(issue_waddr[k])
                ports.append(rp.data)
            wmem_rd.append(ports)

        # ---- issue stage ---------------------------------------------------------------
        cur = Signal(desc_layout, name="cur")            # the pass being issued
        active = Signal(name="active")
        cnt = Signal(range(max(2 * cfg.imem_words, C) + 1), name="cnt")
        lead = Signal.like(cnt, name="lead")              # idle cycles before beat 0
        period_last = Signal.like(cnt, name="period_last")
        beat = Signal.like(cnt, name="beat")
        issuing = Signal(name="issuing")
        ending = Signal(name="ending")                    # last cycle of the period
        mod.d.comb += [
            issuing.eq(active & (cnt >= lead)),
            beat.eq(cnt - lead),
            ending.eq(active & (cnt == period_last)),
            issue_iaddr.eq(cur.ibase + beat),
            self.desc.ready.eq(~active | ending),
        ]
        for k in range(m):
            mod.d.comb += issue_waddr[k].eq(cur.wbase[k] + beat)

        with mod.If(self.desc.valid & self.desc.ready):
            kw = self.desc.payload.kwords
            mod.d.sync += [
                cur.eq(self.desc.payload), active.eq(1), cnt.eq(0),
                lead.eq(Mux(kw < C, C - kw, 0)),
                period_last.eq(Mux(kw < C, C - 1, kw - 1)),
            ]
        with mod.Elif(ending):
            mod.d.sync += active.eq(0)
        with mod.Elif(active):
            mod.d.sync += cnt.eq(cnt + 1)

        # Beat flags and the selects, one cycle later (aligned with the memory data).
        b_valid = Signal(name="b_valid")
        b_first = Signal(name="b_first")
        b_last = Signal(name="b_last")
        sel_d = Signal(desc_layout["sel"].shape, name="sel_d", reset_less=True)
        isel_d = Signal(desc_layout["isel"].shape, name="isel_d", reset_less=True)
        mod.d.sync += [b_valid.eq(issuing), b_first.eq(issuing & (beat == 0)),
                       b_last.eq(issuing & (beat == cur.kwords - 1))]
        with mod.If(issuing):
            mod.d.sync += [sel_d.eq(cur.sel), isel_d.eq(cur.isel)]

        # Result descriptors wait in a FIFO from the last beat until capture.
        depth = -(-(1 + lat) // C) + 1
        rq = fifo.SyncFIFO(width=res_layout.size, depth=max(2, depth))
        mod.submodules.result_queue = rq
        last_issue = Signal(name="last_issue")
        mod.d.comb += [
            last_issue.eq(issuing & (beat == cur.kwords - 1)),
            rq.w_en.eq(last_issue),
            rq.w_data.eq(Cat(cur.sel, cur.col, cur.obase, cur.accumulate)),
        ]

        # ---- the array (i_sw, w_sw, DPUs) ----------------------------------------------
        results = []
        for r in range(R):
            row_in = Signal(word, name=f"row_in{r}")
            mod.d.comb += row_in.eq(_mux(imem_rd, isel_d[r]))
            row_res = []
            for c in range(C):
                dpu = DPU(cfg)
                mod.submodules[f"dpu_{r}_{c}"] = dpu
                s = sel_d[r][c]
                wsel = _mux(wmem_rd[c], s.idx)
                mod.d.comb += [
                    dpu.inp.valid.eq(b_valid & s.valid),
                    dpu.inp.payload.a.eq(row_in),
                    dpu.inp.payload.b.eq(wsel),
                    dpu.inp.payload.first.eq(b_first),
                    dpu.inp.payload.last.eq(b_last),
                ]
                row_res.append(dpu.out.payload)
            results.append(row_res)

        # Capture strobe: the last beat's flag delayed to the DPU output.
        cap_line = Signal(lat, name="cap_line")
        mod.d.sync += cap_line.eq(Cat(b_last, cap_line[:-1]) if lat > 1 else b_last)
        cap = Signal(name="cap")
        mod.d.comb += [cap.eq(cap_line[-1]), rq.r_en.eq(cap)]
        rdesc = Signal(res_layout, name="rdesc")
        mod.d.comb += rdesc.as_value().eq(rq.r_data)

        # ---- cv_switch drain into OMEM -------------------------------------------------
        A = cfg.acc_width
        draining = Signal(name="draining")
        didx = Signal(range(C), name="didx")
        dacc = Signal(name="dacc", reset_less=True)
        w_pending = Signal(name="w_pending")
        w_acc = Signal(name="w_acc", reset_less=True)
        with mod.If(cap):
            mod.d.sync += [draining.eq(1), didx.eq(0), dacc.eq(rdesc.accumulate)]
        with mod.Elif(draining):
            mod.d.sync += didx.eq(didx + 1)
            with mod.If(didx == C - 1):
                mod.d.sync += draining.eq(0)
        mod.d.sync += [w_pending.eq(draining), w_acc.eq(dacc)]

        busy = Signal(name="busy_int")
        mod.d.comb += busy.eq(active | b_valid | cap_line.any() | draining | w_pending)

        for r in range(R):
            dval = [Signal(signed(A), name=f"dval_{r}_{c}", reset_less=True) for c in range(C)]
            daddr = [Signal(cfg.omem_addr_bits, name=f"daddr_{r}_{c}", reset_less=True)
                     for c in range(C)]
            dvalid = Signal(C, name=f"dvalid_{r}")
            with mod.If(cap):
                for c in range(C):
                    s = rdesc.sel[r][c]
                    col = _mux([rdesc.col[c][k] for k in range(m)], s.idx)
                    mod.d.sync += [dval[c].eq(results[r][c]),
                                   daddr[c].eq(rdesc.obase + col)]
                mod.d.sync += dvalid.eq(Cat(rdesc.sel[r][c].valid for c in range(C)))

            mem = Memory(shape=signed(A), depth=cfg.omem_depth, init=[])
            mod.submodules[f"omem{r}"] = mem
            wp = mem.write_port()
            rp = mem.read_port(transparent_for=(wp,))
            w_valid = Signal(name=f"w_valid{r}")
            w_addr = Signal(cfg.omem_addr_bits, name=f"w_addr{r}", reset_less=True)
            w_val = Signal(signed(A), name=f"w_val{r}", reset_less=True)
            head_addr = _mux(daddr, didx)
            mod.d.sync += [w_valid.eq(draining & _mux(list(dvalid), didx)),
                           w_addr.eq(head_addr), w_val.eq(_mux(dval, didx))]
            with mod.If(busy):
                mod.d.comb += rp.addr.eq(head_addr)
            with mod.Else():
                mod.d.comb += rp.addr.eq(self.omem_r.addr)
            mod.d.comb += self.omem_r.data[r].eq(rp.data)
            with mod.If(w_valid):
                mod.d.comb += [wp.en.eq(1), wp.addr.eq(w_addr),
                               wp.data.eq(w_val + Mux(w_acc, rp.data, 0))]
            with mod.Elif(~busy):
                mod.d.comb += [wp.en.eq(self.omem_w.en[r]), wp.addr.eq(self.omem_w.addr),
                               wp.data.eq(self.omem_w.data[r])]

        # ---- status ----------------------------------------------------------------------
        mod.d.comb += self.busy.eq(busy)
        with mod.If(busy):
            mod.d.sync += self.cycles.eq(self.cycles + 1)
        with mod.If(cap):
            mod.d.sync += self.passes.eq(self.passes + 1)
        return mod
