"""ConMerge assistant unit (SPEC 4.3): condense, popcount counting sort, windowed merge.

The CAU turns a row block's output mask into the ConMerge vectors of its passes, bit-exact
with :func:`exion.golden.conmerge.conmerge` (same slots, same order, same member order, same
selects). Three stages work on three different row blocks at once, joined by ping-pong
buffers (``docs/cau.md`` has the picture)::

    mask stream --A--> [word buffer x2] --B--> [sorted buffer x2] --C--> pass FIFO --> out
      P cvs/cycle      non-zero words +       (column, cv) in         window of W_open
      condense,        popcount histogram     popcount order          slot registers,
      histogram                               (LN write, LN read      LN-lane merge,
                                               ports)                 pass assembler

LN = ``merge_lanes`` (default :func:`default_merge_lanes`: 3 for exion16, 2 for toy).

* **A (read)**: one beat of ``P = cols_per_cycle`` column cvs per cycle (default 8). Beats
  with a non-zero cv are stored (with their beat index) in the word buffer; the histogram of
  ``R - popcount`` (the sort key: bin 0 = popcount R) counts the non-zero columns. All-zero
  beats are not stored, so B never spends a cycle on them.
* **B (counting sort)**: one cycle to take the prefix sum of the histogram (the bins'
  start offsets), then per cycle the LN lowest pending lanes of the current word are
  written to the sorted buffer (LN write ports) at ``offset[bin] + (same-bin lanes before
  it this cycle)``, and each bin's offset advances by its count (stable: words in column
  order, lanes in order). ``sort = none`` puts every column in bin 0 (column order).
* **C (merge)**: LN sorted columns per cycle (LN read ports) against the window of W_open
  slot registers (OR of member cvs, member count, member columns, per-row member index).
  Lane j sees the window as lanes 0..j-1 left it: all its W_open + j fit tests run in
  parallel and are chained on the earlier lanes only through their one-hot placements (a
  slot an earlier lane joined also needs no conflict with that lane's cv and a free member
  place; the new slots of earlier lanes are candidates after the window's; a window slot
  pushed out by the earlier lanes' new slots is not). The oldest fitting candidate takes
  the column, else the lane opens a new slot. The window is rebuilt once per cycle: the
  ``max(0, slots - W_open)`` oldest slots retire (at most LN) to the pass assembler, the
  rest shift down and the new slots append. After the block's last column the window is
  flushed, at most LN slots per cycle and never past the end of the pass being assembled.
  The assembler (a queue of C + LN - 1 slots) hands a pass to the output FIFO whenever C
  slots are in it (fewer for the block's last pass); retired slots beyond C wait behind it.

Cycle counts (``exion.golden.cycles.cau_stage_cycles`` models them, and the schedule of a
stream of blocks, exactly): A ``ceil(N / P)`` beats; B ``1 + sum ceil(nz / LN)`` over the
stored beats (nz = the beat's non-zero cvs); C ``1 + ceil(n / LN) + flush`` cycles, with n the
block's non-zero columns and ``flush = cau_flush_cycles(S, f, C, LN)`` (f = min(S, W_open)
slots left in the window, S slots); C takes 1 cycle for an all-zero block. With LN = 1 this
is the original ``1 + n`` and ``1 + n + f``. Stalls: A when its next buffer side is still
being sorted, B when its next sorted side is still being merged, C when a completed pass
cannot enter the output FIFO (back-pressure).
"""

from __future__ import annotations

import math

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from exion.config import CAU_COLS_PER_CYCLE, CAU_LANES_MAX, Config
from exion.errors import ExionError

from .util import bits_for as _bits
from .util import pad_mux as _mux
from .sdue import pass_layout

__all__ = ["CAU", "mask_layout", "cau_pass_layout", "default_max_cols", "default_merge_lanes",
           "CAU_SORTS"]

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


def default_merge_lanes(cfg: Config) -> int:
    """Default ``merge_lanes``: :attr:`exion.config.Config.cau_merge_lanes` (one home).

    ``m // 2 + 1`` columns per cycle for the config's m (a pass of C slots holds at most
    C * m columns and the SDUE computes it in 2C cycles at K/L = 2C, so m / 2 per cycle is
    the break-even; one more gives the margin for the window flush and partly filled
    slots), capped at ``CAU_LANES_DEFAULT_CAP`` = 4, at C and at W_open.
    """
    return cfg.cau_merge_lanes


def _lowest(v: Value) -> Value:
    """One-hot of the lowest set bit of ``v`` (0 if none): ``v & -v``."""
    n = len(v)
    return (v & (~v + 1)[:n])[:n]


def _first_fit(fits: Value) -> Value:
    """Stage C's choice among the fitting slots of one lane (bit order = age): the oldest."""
    return _lowest(fits)


def _conflict(a: Value, b: Value) -> Value:
    """Two cvs share a row (the test that chains lane j on the lanes before it)."""
    return (a & b).any()


def _onehot_index(oh: Value, width: int) -> Value:
    """Index of the set bit of a one-hot ``oh`` (an OR per index bit, no priority)."""
    bits = []
    for b in range(width):
        terms = [oh[i] for i in range(len(oh)) if (i >> b) & 1]
        bits.append(Cat(*terms).any() if terms else Const(0, 1))
    return Cat(*bits)


class CAU(wiring.Component):
    """ConMerge assistant unit.

    Parameters
    ----------
    cfg : Config
        R = ``rows``, C = ``cols``, m = ``merge_ways``, W_open = ``w_open``.
    cols_per_cycle : int
        P, column cvs per input beat (default 8: reads a 4608-column block in 576 cycles).
    max_cols : int or None
        Largest N of a row block (column index width, buffer depths); default
        :func:`default_max_cols`.
    sort : str
        ``"popcount"`` (SPEC 3.2 default), ``"none"`` (column order) or ``"runtime"`` (an
        input ``sort`` bit per block chooses; costs one mux on the sort key).
    fifo_depth : int
        Passes buffered at the output (>= 1).
    merge_lanes : int or None
        LN, columns sorted (stage B) and merged (stage C) per cycle, 1..min(C, W_open, 8);
        default :func:`default_merge_lanes` (3 for exion16, 2 for toy). 1 is the original
        one-column-per-cycle CAU.

    Members
    -------
    mask : In(stream.Signature(mask_layout(cfg, P, sort == "runtime")))
        Row blocks as beats of P column cvs; ``last`` ends a block.
    out : Out(stream.Signature(cau_pass_layout(cfg, max_cols)))
        One pass per transfer, in golden order; back-pressure stalls the merge.
    busy : Out(1)
        Some block is in a stage or a pass is in the output FIFO.
    active : Out(3)
        Bit 0: stage A is inside a block; bit 1: stage B sorting; bit 2: stage C merging or
        flushing.
    overflow : Out(1)
        Sticky: a block had more than ``max_cols`` columns (the excess was dropped).

    Timing
    ------
    Per row block (exact, :func:`exion.golden.cycles.cau_schedule`): A ``ceil(N / P)``
    cycles; B ``1 + sum over stored beats of ceil(nz / LN)`` (nz = non-zero cvs of the beat);
    C ``1 + ceil(n / LN) + flush`` (flush: the window's f slots retire at most LN per cycle
    and never across a pass boundary). The three stages overlap on consecutive row blocks;
    the last pass of a block is taken 3 cycles after C's last cycle (output ready).
    """

    def __init__(self, cfg: Config, *, cols_per_cycle: int = CAU_COLS_PER_CYCLE,
                 max_cols: int | None = None, sort: str = "runtime", fifo_depth: int = 2,
                 merge_lanes: int | None = None):
        try:
            max_cols, merge_lanes = self._check(cfg, cols_per_cycle, max_cols, sort,
                                                fifo_depth, merge_lanes)
        except ExionError:
            self._MustUse__silence = True   # a refused component is not an unused one
            raise
        self.cfg = cfg
        self.cols_per_cycle = cols_per_cycle
        self.max_cols = max_cols
        self.sort = sort
        self.fifo_depth = fifo_depth
        self.merge_lanes = merge_lanes
        super().__init__({
            "mask": In(stream.Signature(mask_layout(cfg, cols_per_cycle, sort == "runtime"))),
            "out": Out(stream.Signature(cau_pass_layout(cfg, max_cols))),
            "busy": Out(1),
            "active": Out(3),
            "overflow": Out(1),
        })

    @staticmethod
    def _check(cfg, cols_per_cycle, max_cols, sort, fifo_depth, merge_lanes):
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
        if merge_lanes is None:
            merge_lanes = default_merge_lanes(cfg)
        hi = min(cfg.cols, cfg.w_open, CAU_LANES_MAX)
        if not isinstance(merge_lanes, int) or isinstance(merge_lanes, bool) \
                or not 1 <= merge_lanes <= hi:
            raise ExionError(f"CAU: merge_lanes = {merge_lanes!r} is invalid: must be an integer "
                             f"in 1..{hi} (at most C = {cfg.cols}, W_open = {cfg.w_open} and "
                             f"{CAU_LANES_MAX})")
        return max_cols, merge_lanes

    @property
    def words(self) -> int:
        """Beats of a ``max_cols``-column block (depth of one word-buffer side)."""
        return math.ceil(self.max_cols / self.cols_per_cycle)

    def constants(self) -> dict:
        return {"cols_per_cycle": self.cols_per_cycle, "max_cols": self.max_cols,
                "sort": self.sort, "fifo_depth": self.fifo_depth,
                "merge_lanes": self.merge_lanes,
                "window": self.cfg.w_open, "col_bits": _bits(self.max_cols),
                "block_bits": 16}

    def elaborate(self, platform):
        cfg = self.cfg
        R, C, m, W = cfg.rows, cfg.cols, cfg.merge_ways, cfg.w_open
        LN = self.merge_lanes
        P, NMAX, WORDS = self.cols_per_cycle, self.max_cols, self.words
        CB = _bits(NMAX)
        IB = _bits(m)                         # member index width (sel idx)
        NB = R                                # histogram bins: key R - popcount in 0..R-1
        KB = _bits(NB)
        CNTW = (NMAX + 1).bit_length()        # column counts 0..NMAX
        WB = _bits(WORDS + 1)                 # beat index 0..WORDS (WORDS = overflow)
        LB = _bits(P)                         # lane index width
        mod = Module()

        # ---- buffers ---------------------------------------------------------------------
        # The sorted buffer has LN write ports (stage B scatters LN columns per cycle to
        # arbitrary bin offsets) and LN read ports (stage C reads LN consecutive entries).
        word_layout = data.StructLayout({"widx": _bits(WORDS), "cv": data.ArrayLayout(R, P)})
        ent_layout = data.StructLayout({"col": CB, "cv": R})
        mem_a = Memory(shape=word_layout, depth=2 * WORDS, init=[])
        mem_s = Memory(shape=ent_layout, depth=2 * NMAX, init=[])
        mod.submodules.word_buf = mem_a
        mod.submodules.sort_buf = mem_s
        a_wp, a_rp = mem_a.write_port(), mem_a.read_port()
        s_wps = [mem_s.write_port() for _ in range(LN)]
        s_rps = [mem_s.read_port() for _ in range(LN)]

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

        # ---- stage B: counting sort (prefix sum, then up to LN columns per cycle) ---------
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
        # the LN lowest pending lanes of the word, in lane order (stable)
        rem = pend
        b_valid, b_key = [], []
        for t in range(LN):
            low = Signal(P, name=f"b_low{t}")
            mod.d.comb += low.eq(_lowest(rem))
            lane = Signal(LB, name=f"b_lane{t}")
            mod.d.comb += lane.eq(_onehot_index(low, LB))
            valid = Signal(name=f"b_valid{t}")
            mod.d.comb += valid.eq(rem.any())
            lane_cv = _mux([word.cv[i] for i in range(P)], lane)
            bkey = Signal(KB, name=f"b_key{t}")
            mod.d.comb += bkey.eq(key(lane_cv, b_none))
            # same-bin columns taken earlier in this cycle go first
            dup = sum(((b_valid[u] & (b_key[u] == bkey)).as_unsigned() for u in range(t)),
                      Const(0, 1))
            wp = s_wps[t]
            mod.d.comb += [
                wp.addr.eq(Mux(sb, NMAX, 0) + _mux(b_off, bkey) + dup),
                wp.data.col.eq(word.widx * P + lane),
                wp.data.cv.eq(lane_cv),
                wp.en.eq(b_run & valid),
            ]
            b_valid.append(valid)
            b_key.append(bkey)
            rem = rem & ~low
        rest = Signal(P)
        mod.d.comb += rest.eq(rem)
        with mod.If(b_run):
            for j in range(NB):
                inc = sum(((b_valid[t] & (b_key[t] == j)).as_unsigned() for t in range(LN)),
                          Const(0, 1))
                mod.d.sync += b_off[j].eq(b_off[j] + inc)
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

        # ---- stage C: windowed first-fit merge, LN columns per cycle ----------------------
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

        # -- pass assembler: a queue of C + LN - 1 retired slots. A pass leaves (into the
        # output FIFO) from positions 0..C-1; up to LN - 1 slots retired in the same cycle
        # wait behind it and move down by C when the FIFO takes the pass.
        QN = C + LN - 1
        asm = [Signal(slot_layout, name=f"asm{p}") for p in range(QN)]
        qn = Signal(range(QN + 1))              # slots in the queue
        complete = Signal()                     # asm[0..C-1] is a pass for the FIFO
        a_last = Signal()
        a_block = Signal(16)
        accept = Signal()
        qbase = Signal(range(QN + 1))           # where this cycle's retired slots go
        step_ok = Signal()
        r_n = Signal(range(LN + 1))             # slots retired this cycle ...
        r_slots = [Signal(slot_layout, name=f"ret{i}") for i in range(LN)]
        r_final = Signal()                      # ... and the block's last one is among them
        mod.d.comb += [
            accept.eq(complete & q.w_rdy),
            qbase.eq(Mux(accept, Mux(qn >= C, qn - C, 0), qn)),
            step_ok.eq(~complete | q.w_rdy),
        ]
        for p in range(QN):
            if p + C < QN:
                with mod.If(accept):
                    mod.d.sync += asm[p].eq(asm[p + C])
            for i in range(LN):
                with mod.If((i < r_n) & (qbase + i == p)):
                    mod.d.sync += asm[p].eq(r_slots[i])
        tot = qbase + r_n
        mod.d.sync += qn.eq(tot)
        with mod.If(~complete | accept):
            mod.d.sync += complete.eq((tot >= C) | r_final)
            with mod.If((tot >= C) | r_final):
                mod.d.sync += [a_last.eq(r_final), a_block.eq(c_label)]
        # the pass in asm[0..C-1], as the output payload
        opass = Signal(out_layout)
        for c in range(C):
            aval = qn > c
            for r in range(R):
                mod.d.comb += [opass.sel[r][c].idx.eq(asm[c].idx[r]),
                               opass.sel[r][c].valid.eq(aval & asm[c].ors[r])]
            for k in range(m):
                mod.d.comb += opass.col[c][k].eq(Mux(aval, asm[c].mem[k], 0))
        mod.d.comb += [opass.block.eq(a_block), opass.last.eq(a_last),
                       q.w_en.eq(complete), q.w_data.eq(opass)]

        # -- the merge of LN sorted columns against the window (combinational) --
        # Virtual slots: v < W the window registers (oldest first), W + j the slot lane j
        # opens when nothing fits. Lane j sees the window as lanes 0..j-1 left it: their
        # members added, their new slots appended and, beyond W_open slots, the oldest ones
        # out of reach (retired). Its candidates in age order: window slots, then the new
        # slots of earlier lanes, then its own new slot (always fits).
        ents = [s_rps[t].data for t in range(LN)]
        lv = [Signal(name=f"c_lv{t}") for t in range(LN)]
        for t in range(LN):
            mod.d.comb += lv[t].eq(c_ptr + t < c_n)
        NV = W + LN
        zero_slot = Const(0, slot_layout.size)
        start = [win[v] for v in range(W)] + [slot_layout(zero_slot) for _ in range(LN)]
        pair_conf = [[_conflict(ents[k].cv, ents[j].cv) for j in range(LN)] for k in range(LN)]
        place = []                              # place[j]: one-hot over NV (0 if lane idle)
        opens = []
        o_before = []                           # slots opened by lanes before j
        for j in range(LN):
            cv = ents[j].cv
            o_j = sum((opens[k].as_unsigned() for k in range(j)), Const(0, 1))
            o_before.append(o_j)
            fits = []
            for v in range(NV):
                if v >= W + j + 1:
                    fits.append(Const(0, 1))
                    continue
                if v < W:
                    cand = (v < nwin) & (v + W >= nwin + o_j)
                    cnt = start[v].cnt
                    conf = (start[v].ors & cv).any()
                    src = range(j)
                elif v < W + j:
                    cand = opens[v - W]
                    cnt = Const(0, 1)
                    conf = Const(0, 1)
                    src = range(v - W, j)
                else:
                    fits.append(Const(1, 1))       # its own new slot
                    continue
                for k in src:
                    cnt = cnt + place[k][v]
                    conf = conf | (place[k][v] & pair_conf[k][j])
                fits.append(cand & (cnt < m) & ~conf)
            fitv = Signal(NV, name=f"c_fit{j}")
            mod.d.comb += fitv.eq(Cat(*fits))
            pl = Signal(NV, name=f"c_place{j}")
            mod.d.comb += pl.eq(Mux(lv[j], _first_fit(fitv), 0))
            place.append(pl)
            op = Signal(name=f"c_open{j}")
            mod.d.comb += op.eq(pl[W + j])
            opens.append(op)
        o_tot = sum((op.as_unsigned() for op in opens), Const(0, 1))
        # every virtual slot after this cycle's lanes
        fin = [Signal(slot_layout, name=f"c_fin{v}") for v in range(NV)]
        for v in range(NV):
            s0 = start[v]
            lanes = range(LN) if v < W else range(v - W, LN)
            ors = s0.ors
            cnt = s0.cnt
            mem = [s0.mem[k] for k in range(m)]
            idx = [s0.idx[r] for r in range(R)]
            for j in lanes:
                hit = place[j][v]
                cv, col = ents[j].cv, ents[j].col
                ors = ors | Mux(hit, cv, 0)
                for k in range(m):
                    mem[k] = Mux(hit & (cnt == k), col, mem[k])
                for r in range(R):
                    idx[r] = Mux(hit & cv[r], cnt[:IB], idx[r])
                cnt = cnt + hit
            mod.d.comb += [fin[v].ors.eq(ors), fin[v].cnt.eq(cnt)]
            mod.d.comb += [fin[v].mem[k].eq(mem[k]) for k in range(m)]
            mod.d.comb += [fin[v].idx[r].eq(idx[r]) for r in range(R)]
        # the q-th slot opened this cycle
        new_rank = []
        for qq in range(LN):
            val = Value.cast(zero_slot)
            for j in range(qq, LN):
                val = Mux(opens[j] & (o_before[j] == qq), fin[W + j].as_value(), val)
            new_rank.append(val)
        # all slots in age order (window, then the opened ones), the oldest ret_n retire
        seq = []
        for p in range(NV):
            val = fin[p].as_value() if p < W else Value.cast(zero_slot)
            for qq in range(LN):
                if 0 <= p - qq <= W:
                    val = Mux(nwin == p - qq, new_rank[qq], val)
            seq.append(val)
        grown = nwin + o_tot
        ret_n = Signal(range(LN + 1))
        mod.d.comb += ret_n.eq(Mux(grown > W, grown - W, 0))
        m_win = []
        for i in range(W):
            val = seq[i]
            for rr in range(1, LN + 1):
                val = Mux(ret_n == rr, seq[i + rr], val)
            m_win.append(val)
        # -- flush: at most LN slots per cycle, never beyond the pass being assembled --
        fl_k = Signal(range(LN + 1))
        room = C - qbase
        lim = Mux(nwin < LN, nwin, LN)
        mod.d.comb += fl_k.eq(Mux(room < lim, room, lim))
        f_win = []
        for i in range(W):
            val = win[i].as_value()
            for kk in range(1, LN + 1):
                val = Mux(fl_k == kk, win[i + kk].as_value() if i + kk < W else zero_slot, val)
            f_win.append(val)

        s_rd_full = _mux([s_full[0], s_full[1]], sc)
        for t in range(LN):
            mod.d.comb += s_rps[t].en.eq(0)
        side = Mux(sc, NMAX, 0)
        with mod.If(c_state == 0):
            with mod.If(s_rd_full):
                n = _mux(s_n, sc)
                mod.d.sync += [c_n.eq(n), c_ptr.eq(0), c_label.eq(_mux(s_label, sc))]
                for t in range(LN):
                    mod.d.comb += [s_rps[t].addr.eq(side + t), s_rps[t].en.eq(1)]
                with mod.If(n == 0):
                    mod.d.comb += s_release.eq(1)
                with mod.Else():
                    mod.d.sync += c_state.eq(1)
        with mod.Elif(c_state == 1):
            with mod.If(step_ok):
                mod.d.comb += r_n.eq(ret_n)
                mod.d.comb += [r_slots[i].eq(fin[i]) for i in range(LN)]
                mod.d.sync += [win[i].eq(m_win[i]) for i in range(W)]
                mod.d.sync += nwin.eq(Mux(grown > W, W, grown))
                with mod.If(c_ptr + LN >= c_n):
                    mod.d.comb += s_release.eq(1)
                    mod.d.sync += c_state.eq(2)
                with mod.Else():
                    for t in range(LN):
                        mod.d.comb += [s_rps[t].addr.eq(side + c_ptr + (LN + t)),
                                       s_rps[t].en.eq(1)]
                    mod.d.sync += c_ptr.eq(c_ptr + LN)
        with mod.Elif(c_state == 2):
            with mod.If(step_ok):
                mod.d.comb += [r_n.eq(fl_k), r_final.eq(fl_k == nwin)]
                mod.d.comb += [r_slots[i].eq(win[i]) for i in range(LN)]
                mod.d.sync += [win[i].eq(f_win[i]) for i in range(W)]
                mod.d.sync += nwin.eq(nwin - fl_k)
                with mod.If(fl_k == nwin):
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
                         | (c_state != 0) | complete | (qn != 0) | q.r_rdy),
        ]
        return mod
