"""ConMerge assistant unit (SPEC 4.3): condense, popcount counting sort, windowed merge.

The CAU turns a row block's output mask into the ConMerge vectors of its passes, bit-exact
with :func:`exion.golden.conmerge.conmerge` (same slots, same order, same member order, same
selects). Three stages work on three different row blocks at once, joined by ping-pong
buffers (``docs/cau.md`` has the picture)::

    mask stream --A--> [word buffer x2] --B--> [sorted buffer x2] --C--> pass FIFO --> out
      P cvs/cycle      non-zero words +       (column, cv) in         window of W_open
      condense,        popcount histogram     popcount order          slot registers,
      histogram                                                        pass assembler

* **A (read)**: one beat of ``P = cols_per_cycle`` column cvs per cycle. Beats with a
  non-zero cv are stored (with their beat index) in the word buffer; the histogram of
  ``R - popcount`` (the sort key: bin 0 = popcount R) counts the non-zero columns. All-zero
  beats are not stored, so B never spends a cycle on them.
* **B (counting sort)**: one cycle to take the prefix sum of the histogram (the bins'
  start offsets), then one non-zero column per cycle: the lowest pending lane of the current
  word is written to the sorted buffer at ``offset[bin]++`` (stable: words in column order,
  lanes in order). ``sort = none`` puts every column in bin 0 (column order).
* **C (merge)**: one sorted column per cycle against the window of W_open slot registers
  (OR of member cvs, member count, member columns, per-row member index), all conflict and
  occupancy checks in parallel; the oldest fitting slot takes the column, else a new slot
  opens and, if the window is full, the oldest slot retires to the pass assembler. After the
  block's last column the window is flushed one slot per cycle. The assembler collects C
  retired slots (fewer for the block's last pass) and pushes the pass into the output FIFO.

Cycle counts (``exion.golden.cycles.cau_stage_cycles`` models them, and the schedule of a
stream of blocks, exactly): A ``ceil(N / P)`` beats; B ``1 + n`` cycles; C ``1 + n + f``
cycles, with n the block's non-zero columns and f = min(slots, W_open) the slots left in the
window at the end (C takes 1 cycle for an all-zero block). Stalls: A when its next buffer
side is still being sorted, B when its next sorted side is still being merged, C when the
output FIFO is full (back-pressure).
"""

from __future__ import annotations

import math

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from exion.config import Config
from exion.errors import ExionError

from .util import bits_for as _bits
from .util import pad_mux as _mux
from .sdue import pass_layout

__all__ = ["CAU", "mask_layout", "cau_pass_layout", "default_max_cols", "CAU_SORTS"]

#: ``sort`` constructor values: fixed strategies, or a run-time ``sort`` bit in the input.
CAU_SORTS = ("popcount", "none", "runtime")




def _popcount(v: Value) -> Value:
    return sum((v[i] for i in range(len(v))), Const(0, _bits(len(v) + 1)))


def default_max_cols(cfg: Config) -> int:
    """Default ``max_cols``: the widest row block the config is built for.

    ``max(omem_depth, k_max)``: exion16 declares k_max = 4608 (DiT-XL/2's FFN width, also
    FC1's N), toy 256. A mask wider than this must be split by the controller.
    """
    return max(cfg.omem_depth, cfg.k_max)


def mask_layout(cfg: Config, cols_per_cycle: int, runtime_sort: bool) -> data.StructLayout:
    """One input beat: ``cols_per_cycle`` column cvs of a row block.

    cv[l]   conflict vector of column ``beat * P + l`` (bit r = row r of the block); lanes
            beyond the block's N must be 0 (zero columns are condensed away)
    last    this is the block's last beat
    block   row block label, copied to every pass of the block (taken from the last beat)
    sort    (only with ``sort="runtime"``) 0 = popcount, 1 = none; constant within a block
    """
    fields = {
        "cv": data.ArrayLayout(cfg.rows, cols_per_cycle),
        "last": 1,
        "block": 16,
    }
    if runtime_sort:
        fields["sort"] = 1
    return data.StructLayout(fields)


def cau_pass_layout(cfg: Config, max_cols: int, block_bits: int = 16) -> data.StructLayout:
    """One pass's ConMerge vectors, as the CAU emits them.

    sel[r][c]  member index and valid bit of DPU (r, c): ``pass_layout(cfg)["sel"]``
    col[c][k]  original column of member k of slot c (0 when member k does not exist);
               ``ceil_log2(max_cols)`` bits, the shape of ``pass_layout(cfg)["col"]`` when
               that is as wide (the SDUE's col is an OMEM offset: see docs/cau.md)
    block      row block label
    last       this is the last pass of its row block
    """
    sdue = pass_layout(cfg)
    cb = _bits(max_cols)
    col_shape = sdue["col"].shape
    if col_shape.elem_shape.elem_shape.width != cb:
        col_shape = data.ArrayLayout(data.ArrayLayout(cb, cfg.merge_ways), cfg.cols)
    return data.StructLayout({
        "sel": sdue["sel"].shape,
        "col": col_shape,
        "block": block_bits,
        "last": 1,
    })


class CAU(wiring.Component):
    """ConMerge assistant unit.

    Parameters
    ----------
    cfg : Config
        R = ``rows``, C = ``cols``, m = ``merge_ways``, W_open = ``w_open``.
    cols_per_cycle : int
        P, column cvs per input beat (default 4: reads a 4608-column block in 1152 cycles).
    max_cols : int or None
        Largest N of a row block (column index width, buffer depths); default
        :func:`default_max_cols`.
    sort : str
        ``"popcount"`` (SPEC 3.2 default), ``"none"`` (column order) or ``"runtime"`` (an
        input ``sort`` bit per block chooses; costs one mux on the sort key).
    fifo_depth : int
        Passes buffered at the output (>= 1).

    Members
    -------
    mask : In(stream.Signature(mask_layout(cfg, P, sort == "runtime")))
        Row blocks as beats of P column cvs; ``last`` ends a block.
    out : Out(stream.Signature(cau_pass_layout(cfg, max_cols)))
        One pass per transfer, in golden order; back-pressure stalls the merge.
    busy : Out(1)
        Some block is in a stage or a pass is in the output FIFO.
    active : Out(3)
        Stage B (bit 1) / C (bit 2) is working on a block; bit 0: A is inside a block.
    overflow : Out(1)
        Sticky: a block had more than ``max_cols`` columns (the excess was dropped).

    Throughput: one beat per cycle at the input, one non-zero column per cycle through the
    sort and the merge (stages overlap on consecutive blocks); see the module docstring.
    """

    def __init__(self, cfg: Config, *, cols_per_cycle: int = 4, max_cols: int | None = None,
                 sort: str = "runtime", fifo_depth: int = 2):
        try:
            max_cols = self._check(cfg, cols_per_cycle, max_cols, sort, fifo_depth)
        except ExionError:
            self._MustUse__silence = True   # a refused component is not an unused one
            raise
        self.cfg = cfg
        self.cols_per_cycle = cols_per_cycle
        self.max_cols = max_cols
        self.sort = sort
        self.fifo_depth = fifo_depth
        super().__init__({
            "mask": In(stream.Signature(mask_layout(cfg, cols_per_cycle, sort == "runtime"))),
            "out": Out(stream.Signature(cau_pass_layout(cfg, max_cols))),
            "busy": Out(1),
            "active": Out(3),
            "overflow": Out(1),
        })

    @staticmethod
    def _check(cfg, cols_per_cycle, max_cols, sort, fifo_depth) -> int:
        if not isinstance(cols_per_cycle, int) or isinstance(cols_per_cycle, bool) \
                or not 1 <= cols_per_cycle <= 64:
            raise ExionError(f"CAU: cols_per_cycle = {cols_per_cycle!r} is invalid: must be an "
                             f"integer in 1..64")
        if max_cols is None:
            max_cols = default_max_cols(cfg)
        if not isinstance(max_cols, int) or isinstance(max_cols, bool) or max_cols < 1:
            raise ExionError(f"CAU: max_cols = {max_cols!r} is invalid: must be an integer >= 1")
        if sort not in CAU_SORTS:
            raise ExionError(f"CAU: sort = {sort!r} is invalid: choose one of "
                             f"{', '.join(CAU_SORTS)}")
        if not isinstance(fifo_depth, int) or isinstance(fifo_depth, bool) or fifo_depth < 1:
            raise ExionError(f"CAU: fifo_depth = {fifo_depth!r} is invalid: must be an integer "
                             f">= 1")
        return max_cols

    @property
    def words(self) -> int:
        """Beats of a ``max_cols``-column block (depth of one word-buffer side)."""
        return math.ceil(self.max_cols / self.cols_per_cycle)

    def constants(self) -> dict:
        return {"cols_per_cycle": self.cols_per_cycle, "max_cols": self.max_cols,
                "sort": self.sort, "fifo_depth": self.fifo_depth,
                "window": self.cfg.w_open, "col_bits": _bits(self.max_cols),
                "block_bits": 16}

    def elaborate(self, platform):
        cfg = self.cfg
        R, C, m, W = cfg.rows, cfg.cols, cfg.merge_ways, cfg.w_open
        P, NMAX, WORDS = self.cols_per_cycle, self.max_cols, self.words
        CB = _bits(NMAX)
        IB = _bits(m)                         # member index width (sel idx)
        NB = R                                # histogram bins: key R - popcount in 0..R-1
        KB = _bits(NB)
        CNTW = (NMAX + 1).bit_length()        # column counts 0..NMAX
        WB = _bits(WORDS + 1)                 # beat index 0..WORDS (WORDS = overflow)
        mod = Module()

        # ---- buffers ---------------------------------------------------------------------
        word_layout = data.StructLayout({"widx": _bits(WORDS), "cv": data.ArrayLayout(R, P)})
        ent_layout = data.StructLayout({"col": CB, "cv": R})
        mem_a = Memory(shape=word_layout, depth=2 * WORDS, init=[])
        mem_s = Memory(shape=ent_layout, depth=2 * NMAX, init=[])
        mod.submodules.word_buf = mem_a
        mod.submodules.sort_buf = mem_s
        a_wp, a_rp = mem_a.write_port(), mem_a.read_port()
        s_wp, s_rp = mem_s.write_port(), mem_s.read_port()

        # per side of the word buffer: full flag, stored words, histogram, label, sort mode
        a_full = Signal(2)
        a_nw = [Signal(range(WORDS + 1), name=f"a_nw{s}") for s in range(2)]
        a_hist = [[Signal(CNTW, name=f"a_hist{s}_{j}") for j in range(NB)] for s in range(2)]
        a_label = [Signal(16, name=f"a_label{s}") for s in range(2)]
        a_none = Signal(2)
        # per side of the sorted buffer
        s_full = Signal(2)
        s_n = [Signal(CNTW, name=f"s_n{s}") for s in range(2)]
        s_label = [Signal(16, name=f"s_label{s}") for s in range(2)]

        def key(cv, none):
            return Mux(none, 0, R - _popcount(cv))[:KB]

        # ---- stage A: read, condense, histogram -------------------------------------------
        wa = Signal()
        a_ptr = Signal(range(WORDS + 1))        # stored words of the current block
        a_widx = Signal(WB)                     # beats of the current block so far
        overflow = Signal()
        beat = self.mask.payload
        none_in = (Const(1) if self.sort == "none" else Const(0) if self.sort == "popcount"
                   else beat.sort)
        lane_nz = Signal(P)
        mod.d.comb += lane_nz.eq(Cat(beat.cv[i].any() for i in range(P)))
        take = Signal()
        mod.d.comb += [
            self.mask.ready.eq(~_mux([a_full[0], a_full[1]], wa)),
            take.eq(self.mask.valid & self.mask.ready),
        ]
        in_range = a_widx < WORDS
        store = take & lane_nz.any() & in_range
        mod.d.comb += [
            a_wp.addr.eq(Mux(wa, WORDS, 0) + a_ptr),
            a_wp.data.widx.eq(a_widx),
            a_wp.data.cv.eq(beat.cv),
            a_wp.en.eq(store),
        ]
        keys = [key(beat.cv[i], none_in) for i in range(P)]
        first = a_widx == 0
        with mod.If(take):
            for s in range(2):
                with mod.If(wa == s):
                    for j in range(NB):
                        inc = sum((lane_nz[i] & (keys[i] == j) & in_range).as_unsigned()
                                  for i in range(P))
                        mod.d.sync += a_hist[s][j].eq(Mux(first, 0, a_hist[s][j]) + inc)
            with mod.If(~in_range):
                mod.d.sync += overflow.eq(1)
            with mod.If(beat.last):
                for s in range(2):
                    with mod.If(wa == s):
                        mod.d.sync += [a_nw[s].eq(a_ptr + store), a_label[s].eq(beat.block),
                                       a_none[s].eq(none_in)]
                mod.d.sync += [wa.eq(~wa), a_ptr.eq(0), a_widx.eq(0)]
            with mod.Else():
                mod.d.sync += [a_ptr.eq(a_ptr + store),
                               a_widx.eq(Mux(in_range, a_widx + 1, a_widx))]

        # ---- stage B: counting sort (prefix sum, then one column per cycle) -------------
        rb = Signal()                           # word-buffer side being read
        sb = Signal()                           # sorted-buffer side being written
        b_run = Signal()
        b_ptr = Signal(range(WORDS + 1))
        b_nw = Signal(range(WORDS + 1))
        b_none = Signal()
        b_fresh = Signal()
        b_pend = Signal(P)
        b_off = [Signal(CNTW, name=f"b_off{j}") for j in range(NB)]
        b_n = Signal(CNTW)
        b_label = Signal(16)
        a_release = Signal()
        s_fill = Signal()

        a_rd_full = _mux([a_full[0], a_full[1]], rb)
        s_wr_full = _mux([s_full[0], s_full[1]], sb)
        hist = [_mux([a_hist[0][j], a_hist[1][j]], rb) for j in range(NB)]
        mod.d.comb += a_rp.en.eq(0)
        with mod.If(~b_run):
            with mod.If(a_rd_full & ~s_wr_full):
                acc = Const(0, CNTW)
                for j in range(NB):
                    mod.d.sync += b_off[j].eq(acc)
                    acc = (acc + hist[j])[:CNTW]
                nw = _mux(a_nw, rb)
                mod.d.sync += [b_n.eq(acc), b_nw.eq(nw), b_ptr.eq(0), b_fresh.eq(1),
                               b_label.eq(_mux(a_label, rb)),
                               b_none.eq(_mux([a_none[0], a_none[1]], rb))]
                mod.d.comb += [a_rp.addr.eq(Mux(rb, WORDS, 0)), a_rp.en.eq(1)]
                with mod.If(nw == 0):           # nothing to sort: hand over an empty block
                    mod.d.comb += [a_release.eq(1), s_fill.eq(1)]
                    for s in range(2):
                        with mod.If(sb == s):
                            mod.d.sync += [s_n[s].eq(0), s_label[s].eq(_mux(a_label, rb))]
                with mod.Else():
                    mod.d.sync += b_run.eq(1)
        word = a_rp.data
        pend = Signal(P)
        mod.d.comb += pend.eq(Mux(b_fresh, Cat(word.cv[i].any() for i in range(P)), b_pend))
        lane = Signal(range(P) if P > 1 else 1)
        for i in reversed(range(P)):
            with mod.If(pend[i]):
                mod.d.comb += lane.eq(i)
        lane_cv = _mux([word.cv[i] for i in range(P)], lane)
        bkey = key(lane_cv, b_none)
        rest = pend & ~(Const(1, P) << lane)[:P]
        with mod.If(b_run):
            mod.d.comb += [
                s_wp.addr.eq(Mux(sb, NMAX, 0) + _mux(b_off, bkey)),
                s_wp.data.col.eq(word.widx * P + lane),
                s_wp.data.cv.eq(lane_cv),
                s_wp.en.eq(1),
            ]
            for j in range(NB):
                with mod.If(bkey == j):
                    mod.d.sync += b_off[j].eq(b_off[j] + 1)
            with mod.If(rest == 0):
                with mod.If(b_ptr == b_nw - 1):
                    mod.d.comb += [a_release.eq(1), s_fill.eq(1)]
                    mod.d.sync += b_run.eq(0)
                    for s in range(2):
                        with mod.If(sb == s):
                            mod.d.sync += [s_n[s].eq(b_n), s_label[s].eq(b_label)]
                with mod.Else():
                    mod.d.comb += [a_rp.addr.eq(Mux(rb, WORDS, 0) + b_ptr + 1), a_rp.en.eq(1)]
                    mod.d.sync += [b_ptr.eq(b_ptr + 1), b_fresh.eq(1)]
            with mod.Else():
                mod.d.sync += [b_pend.eq(rest), b_fresh.eq(0)]
        with mod.If(a_release):
            mod.d.sync += rb.eq(~rb)
        with mod.If(s_fill):
            mod.d.sync += sb.eq(~sb)

        # ---- stage C: windowed first-fit merge ---------------------------------------------
        slot_layout = data.StructLayout({
            "ors": R, "cnt": range(m + 1),
            "mem": data.ArrayLayout(CB, m), "idx": data.ArrayLayout(IB, R)})
        win = [Signal(slot_layout, name=f"win{i}") for i in range(W)]
        nwin = Signal(range(W + 1))
        sc = Signal()                           # sorted-buffer side being merged
        c_state = Signal(2)                     # 0 idle, 1 merge, 2 flush
        c_ptr = Signal(CNTW)
        c_n = Signal(CNTW)
        c_label = Signal(16)
        s_release = Signal()

        out_layout = cau_pass_layout(cfg, NMAX)
        q = fifo.SyncFIFO(width=out_layout.size, depth=self.fifo_depth)
        mod.submodules.out_fifo = q
        # pass assembler
        asm = [Signal(slot_layout, name=f"asm{c}") for c in range(C)]
        aval = Signal(C)
        acnt = Signal(range(max(C, 2)))     # (no zero-width signal for C = 1)
        complete = Signal()
        a_last = Signal()
        a_block = Signal(16)
        step_ok = Signal()
        mod.d.comb += step_ok.eq(~complete | q.w_rdy)

        retire = Signal()                       # win[0] goes to the assembler this cycle
        final = Signal()                        # ... and it is the block's last slot
        with mod.If(complete & q.w_rdy):
            mod.d.sync += complete.eq(0)
        with mod.If(retire):
            for c in range(C):
                with mod.If(acnt == c):
                    mod.d.sync += asm[c].eq(win[0])
            with mod.If((acnt == C - 1) | final):
                mod.d.sync += [acnt.eq(0), complete.eq(1), a_last.eq(final),
                               a_block.eq(c_label)]
            with mod.Else():
                mod.d.sync += acnt.eq(acnt + 1)
        # the pass in the assembler, as the output payload
        opass = Signal(out_layout)
        for c in range(C):
            for r in range(R):
                mod.d.comb += [opass.sel[r][c].idx.eq(asm[c].idx[r]),
                               opass.sel[r][c].valid.eq(aval[c] & asm[c].ors[r])]
            for k in range(m):
                mod.d.comb += opass.col[c][k].eq(Mux(aval[c], asm[c].mem[k], 0))
        mod.d.comb += [opass.block.eq(a_block), opass.last.eq(a_last),
                       q.w_en.eq(complete), q.w_data.eq(opass)]
        with mod.If(complete & q.w_rdy):
            mod.d.sync += aval.eq(0)
        with mod.If(retire):
            for c in range(C):
                with mod.If(acnt == c):
                    mod.d.sync += aval[c].eq(1)

        # merge of one column
        col = s_rp.data
        fit = Signal(W)
        for i in range(W):
            mod.d.comb += fit[i].eq((i < nwin) & (win[i].cnt < m) & ((win[i].ors & col.cv) == 0))
        new_slot = Signal(slot_layout)
        mod.d.comb += [new_slot.ors.eq(col.cv), new_slot.cnt.eq(1), new_slot.mem[0].eq(col.col)]

        def shift_down():
            for i in range(W - 1):
                mod.d.sync += win[i].eq(win[i + 1])

        def merge():
            with mod.If(fit.any()):
                done = Const(0)
                for i in range(W):
                    this = fit[i] & ~done
                    done = done | fit[i]
                    with mod.If(this):
                        s = win[i]
                        mod.d.sync += [s.ors.eq(s.ors | col.cv), s.cnt.eq(s.cnt + 1)]
                        for k in range(1, m):
                            with mod.If(s.cnt == k):
                                mod.d.sync += s.mem[k].eq(col.col)
                        for r in range(R):
                            with mod.If(col.cv[r]):
                                mod.d.sync += s.idx[r].eq(s.cnt)
            with mod.Elif(nwin == W):
                mod.d.comb += retire.eq(1)
                shift_down()
                mod.d.sync += win[W - 1].eq(new_slot)
            with mod.Else():
                for i in range(W):
                    with mod.If(nwin == i):
                        mod.d.sync += win[i].eq(new_slot)
                mod.d.sync += nwin.eq(nwin + 1)

        s_rd_full = _mux([s_full[0], s_full[1]], sc)
        mod.d.comb += s_rp.en.eq(0)
        with mod.If(c_state == 0):
            with mod.If(s_rd_full):
                n = _mux(s_n, sc)
                mod.d.sync += [c_n.eq(n), c_ptr.eq(0), c_label.eq(_mux(s_label, sc))]
                mod.d.comb += [s_rp.addr.eq(Mux(sc, NMAX, 0)), s_rp.en.eq(1)]
                with mod.If(n == 0):
                    mod.d.comb += s_release.eq(1)
                with mod.Else():
                    mod.d.sync += c_state.eq(1)
        with mod.Elif(c_state == 1):
            with mod.If(step_ok):
                merge()
                with mod.If(c_ptr == c_n - 1):
                    mod.d.comb += s_release.eq(1)
                    mod.d.sync += c_state.eq(2)
                with mod.Else():
                    mod.d.comb += [s_rp.addr.eq(Mux(sc, NMAX, 0) + c_ptr + 1),
                                   s_rp.en.eq(1)]
                    mod.d.sync += c_ptr.eq(c_ptr + 1)
        with mod.Elif(c_state == 2):
            with mod.If(step_ok):
                mod.d.comb += [retire.eq(1), final.eq(nwin == 1)]
                shift_down()
                mod.d.sync += nwin.eq(nwin - 1)
                with mod.If(nwin == 1):
                    mod.d.sync += c_state.eq(0)
        with mod.Else():
            mod.d.sync += c_state.eq(0)
        with mod.If(s_release):
            mod.d.sync += sc.eq(~sc)

        # ---- buffer flags (set by the writer, cleared by the reader) ------------------------
        for s in range(2):
            with mod.If(a_release & (rb == s)):
                mod.d.sync += a_full[s].eq(0)
            with mod.If(take & beat.last & (wa == s)):
                mod.d.sync += a_full[s].eq(1)
            with mod.If(s_release & (sc == s)):
                mod.d.sync += s_full[s].eq(0)
            with mod.If(s_fill & (sb == s)):
                mod.d.sync += s_full[s].eq(1)

        # ---- output and status ---------------------------------------------------------------
        mod.d.comb += [
            self.out.valid.eq(q.r_rdy),
            self.out.payload.eq(q.r_data),
            q.r_en.eq(self.out.ready),
            self.overflow.eq(overflow),
            self.active.eq(Cat(a_widx != 0, b_run, c_state != 0)),
            self.busy.eq((a_widx != 0) | a_full.any() | b_run | s_full.any()
                         | (c_state != 0) | complete | q.r_rdy),
        ]
        return mod
