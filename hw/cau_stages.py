"""The CAU's stages (``hw.cau.CAU`` composes them; ``docs/cau.md`` has the picture).

    mask --> CauRead (A) --word buffer + PingPong--> CauSort (B) --sorted buffer + PingPong-->
             CauMerge (C: FSM, CauMergeNet, CauAssembler) --> pass FIFO

Each stage is a ``wiring.Component``; the ping-pong buffers' flags and per-side block data
live in :class:`PingPong` (set by the writer's ``fill``, cleared by the reader's
``release``). Cycle behaviour is documented on ``hw.cau.CAU`` and modelled exactly by
``exion.golden.cycles.cau_schedule``.
"""

from __future__ import annotations

import math

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from exion.config import Config, cau_sort_banks

from .ecp5 import ff_copies
from .util import bits_for as _bits
from .util import add_logic, ge_const, lt_logic, popcount
from .util import pad_mux as _mux

__all__ = ["CauDims", "BankedBuffer", "PingPong", "CauRead", "CauSort", "CauMergeNet", "CauAssembler",
           "CauMerge"]


class CauDims:
    """Sizes of one CAU instance, derived once from its parameters and shared by its stages.

    R, C = rows, cols; M = ``cfg.merge_ways`` (member lanes built); W = W_open; LN merge
    lanes; P column cvs per beat; NMAX columns per block; WORDS beats per block; widths of a
    column index (CB), member index (IB), sort key (KB), column count (CNTW), beat index (WB),
    lane index (LB) and of the run-time ``ways`` field (WYB); NBK sorted-buffer banks
    (``cau_sort_banks(LN)``, BKB index bits), SIDE entries per sorted side (NMAX rounded up
    to a multiple of NBK, so a position's bank is the same on both sides). Layouts: ``word`` (word
    buffer entry), ``ent`` (sorted buffer entry), ``slot`` (a merge-window slot), ``a_meta``
    / ``s_meta`` (per-block data handed over with a buffer side).
    """

    def __init__(self, cfg: Config, cols_per_cycle: int, max_cols: int, merge_lanes: int):
        self.cfg = cfg
        self.R, self.C, self.M, self.W = cfg.rows, cfg.cols, cfg.merge_ways, cfg.w_open
        self.LN, self.P, self.NMAX = merge_lanes, cols_per_cycle, max_cols
        self.NBK = cau_sort_banks(merge_lanes)      # sorted-buffer banks (power of two)
        self.BKB = self.NBK.bit_length() - 1        # bank-index bits
        self.SIDE = math.ceil(max_cols / self.NBK) * self.NBK   # one sorted side, in entries
        self.WORDS = math.ceil(max_cols / cols_per_cycle)
        self.CB = _bits(max_cols)
        self.IB = _bits(self.M)
        self.NB = self.R                          # histogram bins: key R - popcount
        self.KB = _bits(self.NB)
        self.CNTW = (max_cols + 1).bit_length()   # column counts 0..NMAX
        self.WB = _bits(self.WORDS + 1)           # beat index 0..WORDS (WORDS = overflow)
        self.LB = _bits(self.P)
        self.WYB = self.M.bit_length()            # run-time ways 1..M
        # a stored beat, with what stage B needs of it precomputed by A (issue 22: B loads
        # its word register straight from the block RAM, no popcount after the read)
        self.word = data.StructLayout({"widx": _bits(self.WORDS),
                                       "cv": data.ArrayLayout(self.R, self.P),
                                       "key": data.ArrayLayout(self.KB, self.P),
                                       "nz": self.P, "nnz": range(self.P + 1),
                                       "first": self.P, "few": 1})   # nnz <= LN
        self.ent = data.StructLayout({"col": self.CB, "cv": self.R})
        self.slot = data.StructLayout({
            "ors": self.R, "cnt": range(self.M + 1),
            "mem": data.ArrayLayout(self.CB, self.M), "idx": data.ArrayLayout(self.IB, self.R)})
        self.a_meta = data.StructLayout({
            "nw": range(self.WORDS + 1), "start": data.ArrayLayout(self.CNTW, self.NB),
            "n": self.CNTW,
            "label": 16, "ways": self.WYB})
        self.s_meta = data.StructLayout({"n": self.CNTW, "label": 16, "ways": self.WYB})

    def key(self, pc, none) -> Value:
        """Counting-sort key of a cv of popcount ``pc``: ``R - pc`` (bin 0 = popcount R), 0
        for no sort."""
        return Mux(none, 0, self.R - pc)[:self.KB]


def write_signature(addr_bits: int, layout) -> wiring.Signature:
    """A memory write port driven by a stage: ``data`` at ``addr`` when ``en``."""
    return wiring.Signature({"addr": Out(addr_bits), "data": Out(layout), "en": Out(1)})


def read_signature(addr_bits: int, layout) -> wiring.Signature:
    """A memory read port driven by a stage: ``data`` one cycle after ``addr`` with ``en``."""
    return wiring.Signature({"addr": Out(addr_bits), "en": Out(1), "data": In(layout)})


def _lowest(v: Value) -> Value:
    """One-hot of the lowest set bit of ``v`` (0 if none), as logic: bit i is set when
    bit i is and no lower one is (issue 22: ``v & -v`` became a carry chain that synthesis
    could not restructure, on stage B's lane loop)."""
    v = Value.cast(v)
    bits, seen = [], Const(0, 1)
    for i in range(len(v)):
        bits.append(v[i] & ~seen)
        seen = seen | v[i]
    return Cat(*bits)


def _first_fit(fits: Value) -> Value:
    """Stage C's choice among the fitting slots of one lane (bit order = age): the oldest."""
    return _lowest(fits)


def _conflict(a: Value, b: Value) -> Value:
    """Two cvs share a row (the test that chains lane j on the lanes before it)."""
    return (a & b).any()


def _bank_free(earlier, bank) -> Value:
    """Stage B: no earlier lane of this cycle writes the sorted-buffer bank ``bank``."""
    free = Const(1, 1)
    for b in earlier:
        free = free & (b != bank)
    return free


def _run_ways(beat) -> Value:
    """The run's merge ways of a block: the ``ways`` field of its (last) beat."""
    return beat.ways


def _in_pass(taken: Value, waiting: Value, cols: int) -> Value:
    """Stage C: slots of the pass being assembled, ``(taken + waiting) mod C``, from the
    slots the assembler took (mod C) and those waiting in the retire register."""
    tot = taken + waiting
    return Mux(tot >= cols, tot - cols, tot)


def _read_ahead(lanes: int) -> int:
    """Stage C: sorted positions between the group merged and the group read this cycle
    (one group in the read register, the next in the block RAM's output)."""
    return 2 * lanes


def _onehot_index(oh: Value, width: int) -> Value:
    """Index of the set bit of a one-hot ``oh`` (an OR per index bit, no priority)."""
    bits = []
    for b in range(width):
        terms = [oh[i] for i in range(len(oh)) if (i >> b) & 1]
        bits.append(Cat(*terms).any() if terms else Const(0, 1))
    return Cat(*bits)


class BankedBuffer(wiring.Component):
    """The sorted buffer: ``nbk`` one-write, one-read memories interleaved by address.

    Logical address a lives in bank ``a mod nbk`` at ``a // nbk`` (``nbk`` a power of two).
    ``wr[t]``/``rd[t]`` are LN logical ports; the caller guarantees that the ports enabled
    in one cycle address different banks (stage B stops at a bank collision; stage C reads
    LN consecutive addresses, ``nbk >= LN``). Each bank takes the write (and the read) of
    the port that addresses it; a read's data returns the next cycle through a rotation
    by the registered bank index and holds while the port is not enabled, as a plain
    ``lib.memory`` read port. Every bank maps to block RAM (or LUT RAM) on an FPGA.
    """

    def __init__(self, shape, depth: int, nbk: int, ports: int):
        assert nbk >= 1 and nbk & (nbk - 1) == 0 and depth % nbk == 0 and ports <= nbk
        self._shape, self._depth, self._nbk, self._ports = shape, depth, nbk, ports
        ab = _bits(depth)
        super().__init__({
            "wr": In(write_signature(ab, shape)).array(ports),
            "rd": In(read_signature(ab, shape)).array(ports)})

    def elaborate(self, platform):
        m = Module()
        nbk, lg = self._nbk, self._nbk.bit_length() - 1
        bdepth = self._depth // nbk
        banks = []
        for b in range(nbk):
            mem = Memory(shape=self._shape, depth=bdepth, init=[])
            m.submodules[f"bank{b}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            banks.append(rp)
            w_hit = [p.en & (p.addr[:lg] == b) if lg else p.en for p in self.wr]
            r_hit = [p.en & (p.addr[:lg] == b) if lg else p.en for p in self.rd]
            # the enabled ports address different banks: an OR of the gated ports selects;
            # one port on one bank drives the bank directly (issue 22: the enable gating
            # the address put stage C's read enable on the block RAM's address)
            w_sel = _or_sel(w_hit, [p.addr[lg:] for p in self.wr]), _or_sel(
                w_hit, [p.data.as_value() for p in self.wr])
            r_sel = _or_sel(r_hit, [p.addr[lg:] for p in self.rd])
            if lg == 0 and len(self.wr) == 1:
                w_sel = self.wr[0].addr, self.wr[0].data.as_value()
            if lg == 0 and len(self.rd) == 1:
                r_sel = self.rd[0].addr
            m.d.comb += [
                wp.en.eq(Cat(*w_hit).any()), wp.addr.eq(w_sel[0]), wp.data.eq(w_sel[1]),
                rp.en.eq(Cat(*r_hit).any()), rp.addr.eq(r_sel),
            ]
        for t, p in enumerate(self.rd):
            if lg == 0:
                m.d.comb += p.data.eq(banks[0].data)
                continue
            sel = Signal(lg, name=f"rd{t}_bank")
            with m.If(p.en):
                m.d.sync += sel.eq(p.addr[:lg])
            m.d.comb += p.data.eq(_mux([bk.data for bk in banks], sel))
        return m


def _or_sel(hits, values) -> Value:
    """OR of ``values[i]`` gated by one-hot (or all-zero) ``hits``."""
    width = max(len(v) for v in values)
    acc = Const(0, width)
    for h, v in zip(hits, values):
        acc = acc | Mux(h, v, 0)
    return acc


class PingPong(wiring.Component):
    """Flags and per-block data of a two-sided buffer between a writer and a reader stage.

    Parameters
    ----------
    meta : Layout
        The data a block hands over with its side (counts, label, run-time fields).
    early_meta : bool
        The writer latches ``meta`` with ``meta_we`` (e.g. when it starts the block: side
        ``w_side`` is free then) instead of with ``fill``, so ``fill`` only drives the flags
        (issue 22: stage B's end-of-block test drove every meta register's enable).
    ecp5 : bool
        The meta select reads a ``TRELLIS_FF`` copy of ``r_side`` (``hw.ecp5.ff_copies``).
    late : tuple of str
        Fields of ``meta`` the writer gives one cycle after ``fill`` (with ``late_we``, into
        the side it filled last, ``~w_side``) instead of with it (issue 22: stage A's bin
        offsets come from a register stage one cycle behind the beats). The reader must not
        read them before the second cycle after ``fill``.

    Members
    -------
    fill : In(1)
        The writer finished a block in side ``w_side``: that side is full, ``meta`` latched.
    meta : In(meta)
    meta_we : In(1)
        (only with ``early_meta``) latch ``meta`` into side ``w_side``.
    late_we : In(1)
        (only with ``late``) latch the ``late`` fields of ``meta`` into side ``~w_side``.
    release : In(1)
        The reader finished side ``r_side``: that side is free again.
    w_side, r_side : Out(1)
        The side the writer fills / the reader reads next (toggle on fill / release).
    w_full, r_full : Out(1)
        Side ``w_side`` is still full (writer stalls) / side ``r_side`` is full (reader may go).
    r_meta : Out(meta)
        The data of side ``r_side``.
    any_full : Out(1)

    Latency: a fill is visible to the reader (``r_full``) one cycle later.
    """

    def __init__(self, meta, *, early_meta: bool = False, late: tuple = (), ecp5: bool = False):
        assert all(f in dict(meta) for f in late)
        self._meta, self._early, self._late = meta, early_meta, tuple(late)
        self._ecp5 = ecp5
        ports = {"fill": In(1), "meta": In(meta), "release": In(1),
                 "w_side": Out(1), "r_side": Out(1), "w_full": Out(1),
                 "r_full": Out(1), "r_meta": Out(meta), "any_full": Out(1)}
        if early_meta:
            ports["meta_we"] = In(1)
        if late:
            ports["late_we"] = In(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        full = Signal(2, name="full")
        metas = [Signal(self._meta, name=f"meta{s}") for s in range(2)]
        for s in range(2):
            with m.If(self.release & (self.r_side == s)):
                m.d.sync += full[s].eq(0)
            with m.If(self.fill & (self.w_side == s)):
                m.d.sync += full[s].eq(1)
            with m.If((self.meta_we if self._early else self.fill) & (self.w_side == s)):
                m.d.sync += [metas[s][f].eq(self.meta[f]) for f, _ in self._meta
                             if f not in self._late]
            if self._late:
                with m.If(self.late_we & (self.w_side != s)):
                    m.d.sync += [metas[s][f].eq(self.meta[f]) for f in self._late]
        with m.If(self.fill):
            m.d.sync += self.w_side.eq(~self.w_side)
        with m.If(self.release):
            m.d.sync += self.r_side.eq(~self.r_side)
        # the meta select from a copy of r_side of its own (hw.ecp5.ff_copies; issue 22: the
        # one flip-flop fanned out to every meta bit's select and the reader's side logic,
        # 6.9 ns of routing on the board build)
        meta_side = ff_copies(m, self.r_side ^ self.release, 1, name="r_side_meta",
                              ecp5=True)[0] if self._ecp5 else self.r_side
        m.d.comb += [
            self.w_full.eq(_mux([full[0], full[1]], self.w_side)),
            self.r_full.eq(_mux([full[0], full[1]], self.r_side)),
            self.r_meta.eq(Mux(meta_side, metas[1], metas[0])),
            self.any_full.eq(full.any()),
        ]
        return m


class CauRead(wiring.Component):
    """Stage A: one beat of P column cvs per cycle; condense and bin offsets.

    Beats with a non-zero cv are stored (with their beat index) in the word buffer. The
    counting sort's bin offsets are kept as they grow: ``start[j]`` counts the block's
    non-zero columns with a sort key below ``j`` (the exclusive prefix sum of the key
    histogram), each beat adding, per bin, the popcount of its lanes with a smaller key; and
    ``n`` counts them all. So stage B loads its offsets without an adder (issue 22: the
    prefix sum of the histogram, a chain of adders after the ping-pong's side mux, was the
    single-lane CAU's critical path on ECP5). The offsets run one cycle behind the beats
    (a register stage of per-lane key thermometers between the popcounts and the adders)
    and reach the side one cycle after it is handed over; stage B reads them in its
    ``LOAD`` cycle, so this costs no cycle. All-zero beats are not stored. A block ends
    with its ``last`` beat, which hands the side over (``fill``).

    Parameters
    ----------
    dims : CauDims
    mask_layout : Layout
        The input beat (``hw.cau.mask_layout``).
    sort : str
        ``"popcount"``, ``"none"`` or ``"runtime"`` (the beat's ``sort`` bit).

    Members
    -------
    mask : In(stream.Signature(mask_layout))
    full, side : In(1)
        The word-buffer side to write is still full (stall) / which side it is.
    wr : Out(write_signature(word buffer))
    fill : Out(1)
        The block's last beat is taken this cycle.
    meta : Out(dims.a_meta)
        Stored words, label and run-time ways of the block (with fill); its bin offsets
        and column count (``start``, ``n``: with ``late_we``).
    late_we : Out(1)
        The block filled last cycle: ``meta.start`` and ``meta.n`` are its.
    active : Out(1)
        Inside a block (some beat taken, not the last).
    overflow : Out(1)
        Sticky: a block had more than ``max_cols`` columns.

    Latency: 1 cycle per beat (``ceil(N / P)`` per block); the bin offsets follow one
    cycle after the block's last beat (``late_we``).
    """

    def __init__(self, dims: CauDims, mask_layout, sort: str):
        self.dims, self.sort = dims, sort
        super().__init__({
            "mask": In(stream.Signature(mask_layout)), "full": In(1), "side": In(1),
            "wr": Out(write_signature(_bits(2 * dims.WORDS), dims.word)),
            "fill": Out(1), "meta": Out(dims.a_meta), "late_we": Out(1), "active": Out(1),
            "overflow": Out(1)})

    def elaborate(self, platform):
        d = self.dims
        m = Module()
        ptr = Signal(range(d.WORDS + 1), name="a_ptr")      # stored words of the block
        widx = Signal(d.WB, name="a_widx")                  # beats of the block so far
        start = [Signal(d.CNTW, name=f"a_start{j}") for j in range(1, d.NB)]   # bin 0: 0
        tot = Signal(d.CNTW, name="a_n")
        beat = self.mask.payload
        none_in = (Const(1) if self.sort == "none" else Const(0) if self.sort == "popcount"
                   else beat.sort)
        lane_nz = Signal(d.P)
        take = Signal()
        m.d.comb += [
            lane_nz.eq(Cat(beat.cv[i].any() for i in range(d.P))),
            self.mask.ready.eq(~self.full),
            take.eq(self.mask.valid & self.mask.ready),
        ]
        in_range = ~ge_const(widx, d.WORDS)
        store = take & lane_nz.any() & in_range
        ptr_inc = Signal.like(ptr, name="a_ptr_inc")       # from the register only: the
        m.d.comb += ptr_inc.eq(ptr + 1)                     # beat's test selects, no adder
        m.d.comb += [
            self.wr.addr.eq(Mux(self.side, d.WORDS, 0) + ptr),
            self.wr.data.widx.eq(widx),
            self.wr.data.cv.eq(beat.cv),
            self.wr.data.nz.eq(lane_nz),
            self.wr.data.nnz.eq(popcount(m, lane_nz)),
            self.wr.data.few.eq(~ge_const(self.wr.data.nnz, d.LN + 1)),
            self.wr.data.first.eq(_lowest(lane_nz)),
            # every taken beat in range is written at ``ptr`` (issue 22: the beat's zero
            # test reached the word buffer's write enable, from the mask input on the
            # board build); an all-zero beat does not advance ``ptr``, so the next stored
            # beat overwrites it, and stage B reads only the ``nw`` stored words
            self.wr.en.eq(take & in_range),
        ]
        pcs = [popcount(m, beat.cv[i]) for i in range(d.P)]
        keys = [d.key(pcs[i], none_in) for i in range(d.P)]
        m.d.comb += [self.wr.data.key[i].eq(keys[i]) for i in range(d.P)]
        m.d.comb += [
            self.fill.eq(take & beat.last),
            self.meta.nw.eq(Mux(store, ptr_inc, ptr)), self.meta.label.eq(beat.block),
            self.meta.ways.eq(_run_ways(beat)),
            self.active.eq(widx != 0),
        ]
        with m.If(take):
            with m.If(~in_range):
                m.d.sync += self.overflow.eq(1)
            with m.If(beat.last):
                m.d.sync += [ptr.eq(0), widx.eq(0)]
            with m.Else():
                m.d.sync += [ptr.eq(Mux(store, ptr_inc, ptr)),
                             widx.eq(Mux(in_range, widx + 1, widx))]
        # the bin offsets one cycle behind the beats (issue 22: the popcounts, key compares,
        # per-bin counts and offset adders were one path from the mask input): a register
        # stage holds, per lane, the thermometer ``lt[j - 1] = (lane counted) & key < j``
        # for j = 1..NB (j = NB: the lane is counted at all); the next cycle adds its
        # per-bin counts. The block's offsets and count reach the ping-pong side one cycle
        # after ``fill`` (``late_we``; stage B reads them in its LOAD cycle, two after).
        lt = [Signal(d.NB, name=f"a_lt{i}") for i in range(d.P)]
        dv = Signal(name="a_dv")            # lt holds a beat taken last cycle
        dfirst = Signal(name="a_dfirst")    # ... the first of its block
        dlast = Signal(name="a_dlast")      # ... the last of its block
        m.d.sync += [dv.eq(take), dfirst.eq(widx == 0), dlast.eq(beat.last)]
        for i in range(d.P):
            pc = pcs[i]
            counted = lane_nz[i] & in_range
            # key = R - pc for a counted lane (pc >= 1): key < j  <=>  pc > R - j
            m.d.sync += lt[i].eq(Cat(counted & (none_in | ge_const(pc, d.R - j + 1))
                                     for j in range(1, d.NB + 1)))
        nxt = []
        for j in range(1, d.NB):
            inc = popcount(m, Cat(lt[i][j - 1] for i in range(d.P)))
            nxt.append((Mux(dfirst, 0, start[j - 1]) + inc)[:d.CNTW])
        nxt_n = (Mux(dfirst, 0, tot)
                 + popcount(m, Cat(lt[i][d.NB - 1] for i in range(d.P))))
        m.d.comb += [self.meta.start[j + 1].eq(nxt[j]) for j in range(d.NB - 1)]
        m.d.comb += [self.meta.start[0].eq(0), self.meta.n.eq(nxt_n[:d.CNTW]),
                     self.late_we.eq(dv & dlast)]
        with m.If(dv):
            m.d.sync += [start[j].eq(nxt[j]) for j in range(d.NB - 1)]
            m.d.sync += tot.eq(nxt_n[:d.CNTW])
        return m


class CauSort(wiring.Component):
    """Stage B: counting sort of one block's stored words into the sorted buffer.

    One cycle to start the block (read its first word), one cycle (``LOAD``) to load the
    bins' start offsets (kept by stage A) and the first stored word into the word register
    stage (cvs, per-lane sort keys, non-zero lanes; the next word is read with every load),
    then per cycle
    up to LN lowest pending lanes of the current word are written (one port per lane into
    the banked sorted buffer; a lane whose position's bank an earlier lane of the cycle
    writes, and every lane after it, waits for the next cycle) at
    ``offset[bin] + (same-bin lanes before it this cycle)``; each bin's offset advances by
    its count (stable: words in column order, lanes in order). A block without stored words
    is handed over in its first cycle.

    Parameters
    ----------
    dims : CauDims

    Members
    -------
    a_full, a_side : In(1); a_meta : In(dims.a_meta)
        The word-buffer side to read: full, which side, its block data.
    rd : Out(read_signature(word buffer))
    release : Out(1)
        The word-buffer side is sorted (free again).
    s_full, s_side : In(1)
        The sorted-buffer side to write is still full (wait) / which side it is.
    wr : Out(write_signature(sorted buffer)).array(LN)
    fill : Out(1)
        The block is in the sorted buffer.
    s_meta : Out(dims.s_meta); meta_we : Out(1)
        The block's column count, label and run-time ways, given when the block starts.
    running : Out(1)

    Latency: ``2 + sum over stored words of steps`` cycles per block (1 without stored words)
    (``golden.cycles.cau_sort_steps``; ``ceil(nz / LN)`` per word without bank collisions).
    """

    def __init__(self, dims: CauDims):
        self.dims = dims
        super().__init__({
            "a_full": In(1), "a_side": In(1), "a_meta": In(dims.a_meta),
            "rd": Out(read_signature(_bits(2 * dims.WORDS), dims.word)),
            "release": Out(1), "s_full": In(1), "s_side": In(1),
            "wr": Out(write_signature(_bits(2 * dims.SIDE), dims.ent)).array(dims.LN),
            "fill": Out(1), "s_meta": Out(dims.s_meta), "meta_we": Out(1),
            "running": Out(1)})

    def elaborate(self, platform):
        d = self.dims
        m = Module()
        ptr = Signal(range(d.WORDS + 1), name="b_ptr")      # the word in the cur registers
        nw = Signal(range(d.WORDS + 1), name="b_nw")
        last = Signal(name="b_last")                        # cur is the block's last word
        # cur's lanes still to write, how many (below) and the lowest of them (one-hot):
        # the word's own (cur_nz, ...) in its first cycle (fresh), then these registers
        pend = Signal(d.P, name="b_pend")
        npend = Signal(range(d.P + 1), name="b_npend")
        low0 = Signal(d.P, name="b_low0")
        fresh = Signal(name="b_fresh")
        cur_nz = Signal(d.P, name="b_nz")
        cur_nnz = Signal(range(d.P + 1), name="b_nnz")
        cur_first = Signal(d.P, name="b_first")
        # "at most LN lanes pending" (the word can be done this cycle) as registers beside
        # the counts (issue 22: the count's compare fed the word register's load enable)
        cur_few = Signal(name="b_few")
        few = Signal(name="b_pend_few")
        cur_cv = [Signal(d.R, name=f"b_cv{i}") for i in range(d.P)]
        cur_key = [Signal(d.KB, name=f"b_k{i}") for i in range(d.P)]
        cur_widx = Signal.like(self.rd.data.widx, name="b_widx")
        # the bins' next positions in the sorted buffer, the side's base included
        off = [Signal(range(2 * d.SIDE + 1), name=f"b_off{j}") for j in range(d.NB)]
        # one lane: each bin's offset + 1 kept beside it, so a take selects a register
        # instead of ending in an adder (issue 22: the board CAU's routed critical path)
        off1 = [Signal.like(off[j], name=f"b_off{j}_p1") for j in range(d.NB)] \
            if d.LN == 1 else []
        a = self.a_meta
        base = Mux(self.a_side, d.WORDS, 0)
        word = self.rd.data
        # the word-buffer read address is a register (issue 22: the FSM's address muxes
        # were on the block RAM's address path): the word a read with a load fetches, i.e.
        # the word after the next (the block's first word in IDLE); it moves with each read,
        # and whether that word is in the block is a register too
        raddr = Signal(_bits(2 * d.WORDS), name="b_raddr")
        more = Signal(name="b_more")
        m.d.comb += self.rd.addr.eq(raddr)
        # the word register stage: the word-buffer read (block RAM) only loads cur_* (keys,
        # non-zero lanes, their count and the lowest of them all stored by stage A), through
        # no logic (issue 22: the block RAM's 5.8 ns clock-to-out left no time for a mux)
        load = Signal()
        with m.If(load):
            m.d.sync += [cur_cv[i].eq(word.cv[i]) for i in range(d.P)]
            m.d.sync += [cur_key[i].eq(word.key[i]) for i in range(d.P)]
            m.d.sync += [cur_widx.eq(word.widx), cur_nz.eq(word.nz), cur_nnz.eq(word.nnz),
                         cur_first.eq(word.first), cur_few.eq(word.few)]
        pend_e, npend_e, low0_e = (Signal.like(pend, name="b_pend_e"),
                                   Signal.like(npend, name="b_npend_e"),
                                   Signal.like(low0, name="b_low0_e"))
        m.d.comb += [pend_e.eq(Mux(fresh, cur_nz, pend)), npend_e.eq(Mux(fresh, cur_nnz, npend)),
                     low0_e.eq(Mux(fresh, cur_first, low0))]
        m.d.sync += fresh.eq(load)
        take, lows, key, done = self._lanes(m, pend_e, npend_e, low0_e, cur_cv, cur_key,
                                            cur_widx, off, Mux(fresh, cur_few, few))
        keq = [[cur_key[i] == j for j in range(d.NB)] for i in range(d.P)]
        rest = Signal(d.P)
        taken = Const(0, d.P)
        for tk, lo in zip(take, lows):
            taken = taken | Mux(tk, lo, 0)
        # with one lane a word not done this cycle had its lane taken (>= 2 were pending)
        m.d.comb += rest.eq(pend_e & ~(low0_e if d.LN == 1 else taken))
        other = Mux(self.a_side, 0, d.WORDS)        # the next block's first word

        with m.FSM(name="sort_fsm"):
            with m.State("IDLE"):
                with m.If(self.a_full & ~self.s_full):
                    m.d.comb += self.rd.en.eq(1)
                    m.d.sync += [nw.eq(a.nw), ptr.eq(0), last.eq(a.nw == 1),
                                 raddr.eq(base + 1), more.eq(a.nw > 1)]
                    # the block's data goes to the sorted side now (it is free: ~s_full);
                    # its column count (stage A's, one cycle late) is 0 without stored
                    # words and is given again in LOAD
                    m.d.comb += [self.meta_we.eq(1), self.s_meta.n.eq(0),
                                 self.s_meta.label.eq(a.label), self.s_meta.ways.eq(a.ways)]
                    with m.If(a.nw == 0):           # nothing to sort: hand over an empty block
                        m.d.comb += [self.release.eq(1), self.fill.eq(1)]
                        m.d.sync += raddr.eq(other)
                    with m.Else():
                        m.next = "LOAD"
            with m.State("LOAD"):                   # word 0 into cur, read word 1
                m.d.comb += [load.eq(1), self.rd.en.eq(more)]
                m.d.sync += [raddr.eq(raddr + 1), more.eq(nw > 2)]
                # stage A's offsets and count of the block are in the side from now on
                side = Mux(self.s_side, d.SIDE, 0)
                m.d.sync += [off[j].eq(a.start[j] + side) for j in range(d.NB)]
                m.d.sync += [o1.eq(a.start[j] + side + 1) for j, o1 in enumerate(off1)]
                m.d.comb += [self.meta_we.eq(1), self.s_meta.n.eq(a.n),
                             self.s_meta.label.eq(a.label), self.s_meta.ways.eq(a.ways)]
                m.next = "SORT"
            with m.State("SORT"):
                m.d.comb += self.running.eq(1)
                for j in range(d.NB):
                    # each bin's offset advances by the lanes of its key taken (one-hot
                    # picks against the lanes' key compares, no key mux)
                    hits = [tk & _or_sel(lo, [keq[i][j] for i in range(d.P)])
                            for tk, lo in zip(take, lows)]
                    if off1:
                        with m.If(hits[0]):
                            m.d.sync += [off[j].eq(off1[j]), off1[j].eq(off1[j] + 1)]
                    else:
                        m.d.sync += off[j].eq(off[j] + popcount(m, Cat(*hits)))
                with m.If(done):
                    with m.If(last):
                        m.d.comb += [self.release.eq(1), self.fill.eq(1)]
                        m.d.sync += raddr.eq(other)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += [load.eq(1), self.rd.en.eq(more)]
                        m.d.sync += [ptr.eq(ptr + 1), last.eq(ptr + 2 == nw),
                                     raddr.eq(raddr + 1), more.eq(ptr + 3 < nw)]
                with m.Else():
                    npend_n = Signal.like(npend, name="b_npend_next")
                    m.d.comb += npend_n.eq(npend_e - (1 if d.LN == 1
                                                      else popcount(m, Cat(*take))))
                    m.d.sync += [pend.eq(rest), low0.eq(_lowest(rest)), npend.eq(npend_n),
                                 few.eq(~ge_const(npend_n, d.LN + 1))]
        return m

    def _lanes(self, m, pend, npend, low0, cur_cv, cur_key, cur_widx, off, few):
        """The LN lanes of one cycle: the lowest pending lanes of the word in lane order
        (lane 0's pick is the register ``low0``), each taken while every lane before it is
        and its position's bank is free; their sorted-buffer writes. Returns the takes, the
        one-hot picks, the picks' keys and ``done`` (every pending lane written; ``few``:
        at most LN are pending, from registers)."""
        d = self.dims
        # each lane's position, in parallel with the picks
        lane_off = [Signal.like(off[0], name=f"b_loff{i}") for i in range(d.P)]
        m.d.comb += [lane_off[i].eq(_mux(off, cur_key[i])) for i in range(d.P)]
        # and the bank of each lane's position for every same-bin count c < LN (beside the
        # picks too), so the lane chain's bank test has no adder
        lane_bank = [[Signal(d.BKB, name=f"b_lbank{i}_{c}") for c in range(d.LN)]
                     for i in range(d.P)] if d.BKB else []
        for i, row in enumerate(lane_bank):
            m.d.comb += [row[c].eq((lane_off[i][:d.BKB] + c)[:d.BKB]) for c in range(d.LN)]
        # the pending-lane count is a register beside pend: lane t is valid when more than
        # t are, and the word is done when at most LN are and no valid lane's bank collides
        # (neither test waits for the chain of picks, nor for a popcount of pend). Lane 0 is
        # always valid while sorting: a stored word has a non-zero lane (stage A stores no
        # all-zero beat) and a word not done keeps one pending (issue 22: the count's test
        # ran from the fresh-word select to the bins' offset enables on the board CAU)
        ab = len(self.wr[0].addr)
        rem = pend
        key, take, banks, lows, oks, vs = [], [], [], [], [], []
        for t in range(d.LN):
            low = Signal(d.P, name=f"b_low{t}")
            lane = Signal(d.LB, name=f"b_lane{t}")
            v = Signal(name=f"b_valid{t}")
            k = Signal(d.KB, name=f"b_key{t}")
            pos = Signal.like(off[0], name=f"b_pos{t}")
            tk = Signal(name=f"b_take{t}")
            m.d.comb += [low.eq(low0 if t == 0 else _lowest(rem)),
                         lane.eq(_onehot_index(low, d.LB)),
                         v.eq(ge_const(npend, t + 1) if t else 1), k.eq(_or_sel(low, cur_key))]
            # same-bin columns picked earlier in this cycle go first (lane t is taken only
            # if every earlier pick is, so counting picks equals counting takes)
            dup = sum(((vs[u] & (key[u] == k)).as_unsigned() for u in range(t)), Const(0, 1))
            m.d.comb += pos.eq(_or_sel(low, lane_off) + dup)
            if d.BKB:   # = pos[:BKB]
                bank = _mux([_or_sel(low, [row[c] for row in lane_bank])
                             for c in range(t + 1)], dup)
            else:
                bank = pos[:0]
            free = Signal(name=f"b_free{t}")
            m.d.comb += [free.eq(_bank_free(banks, bank)),
                         tk.eq(v & (take[t - 1] if t else 1) & free)]
            wp = self.wr[t]
            # a side starts at a multiple of NBK: the address's bank bits are the bank's
            m.d.comb += [
                wp.addr.eq(Cat(bank, pos[d.BKB:ab])),
                wp.data.col.eq(cur_widx * d.P + lane),
                wp.data.cv.eq(_or_sel(low, cur_cv)),
                wp.en.eq(self.running & tk),
            ]
            key.append(k)
            vs.append(v)
            take.append(tk)
            banks.append(bank)
            lows.append(low)
            oks.append(free | ~v)
            rem = rem & ~low
        done = Signal()             # every pending lane of cur is written this cycle
        m.d.comb += done.eq(few & Cat(*oks).all())
        return take, lows, key, done


class CauMergeNet(wiring.Component):
    """Stage C's combinational merge of LN sorted columns against the window.

    Virtual slots: v < W the window registers (oldest first), W + j the slot lane j opens
    when nothing fits. Lane j sees the window as lanes 0..j-1 left it: their members added,
    their new slots appended and, beyond W_open slots, the oldest ones out of reach
    (retired). Its candidates in age order: window slots, then the new slots of earlier
    lanes, then its own new slot (always fits). A slot fits when it has fewer than ``ways``
    members (the run's m) and no conflict; the oldest fitting candidate takes the column.

    Parameters
    ----------
    dims : CauDims

    Members
    -------
    win : In(ArrayLayout(dims.slot, W)); nwin : In(range(W + 1))
        The window and its occupied slots.
    occ : In(W)
        ``nwin`` as a thermometer (``occ[v]``: slot v is occupied), from a register.
    ents : In(ArrayLayout(dims.ent, LN)); lv : In(LN)
        This cycle's sorted columns and which lanes hold one.
    ways : In(dims.WYB)
        The run's merge ways m (1..cfg.merge_ways).
    next_win : Out(ArrayLayout(dims.slot, W)); next_nwin : Out(range(W + 1))
        The window after this cycle.
    next_occ : Out(W)
        ``next_nwin`` as a thermometer.
    ret_n : Out(range(LN + 1)); ret : Out(ArrayLayout(dims.slot, LN))
        The oldest slots retiring this cycle (``ret[0 .. ret_n - 1]``).

    Latency: combinational.
    """

    def __init__(self, dims: CauDims):
        self.dims = dims
        W, LN = dims.W, dims.LN
        super().__init__({
            "win": In(data.ArrayLayout(dims.slot, W)), "nwin": In(range(W + 1)),
            "occ": In(W),
            "ents": In(data.ArrayLayout(dims.ent, LN)), "lv": In(LN), "ways": In(dims.WYB),
            "next_win": Out(data.ArrayLayout(dims.slot, W)), "next_nwin": Out(range(W + 1)),
            "next_occ": Out(W),
            "ret_n": Out(range(LN + 1)), "ret": Out(data.ArrayLayout(dims.slot, LN))})

    def _placements(self, m, start):
        """One-hot placement of every lane over the virtual slots, and which lanes open."""
        d = self.dims
        W, LN = d.W, d.LN
        ents = [self.ents[t] for t in range(LN)]
        pair_conf = [[_conflict(ents[k].cv, ents[j].cv) for j in range(LN)] for k in range(LN)]
        place, opens, o_before = [], [], []
        for j in range(LN):
            cv = ents[j].cv
            o_j = popcount(m, Cat(*opens[:j]))
            o_before.append(o_j)
            fits = []
            for v in range(W + LN):
                if v >= W + j:
                    fits.append(Const(int(v == W + j), 1))   # its own new slot always fits
                    continue
                if v < W:     # occupied, and not retired by this cycle's earlier opens
                    cand = self.occ[v] if j == 0 else self.occ[v] & ~ge_const(
                        add_logic(self.nwin, o_j, m), v + W + 1)
                    cnt, conf, src = start[v].cnt, (start[v].ors & cv).any(), range(j)
                else:
                    cand, cnt, conf, src = opens[v - W], Const(0, 1), Const(0, 1), range(v - W, j)
                for k in src:
                    cnt = add_logic(cnt, place[k][v], m)
                    conf = conf | (place[k][v] & pair_conf[k][j])
                fits.append(cand & lt_logic(cnt, self.ways) & ~conf)
            fitv = Signal(W + LN, name=f"c_fit{j}")
            pl = Signal(W + LN, name=f"c_place{j}")
            op = Signal(name=f"c_open{j}")
            m.d.comb += [fitv.eq(Cat(*fits)), pl.eq(Mux(self.lv[j], _first_fit(fitv), 0)),
                         op.eq(pl[W + j])]
            place.append(pl)
            opens.append(op)
        return place, opens, o_before

    def elaborate(self, platform):
        d = self.dims
        R, M, W, LN, IB = d.R, d.M, d.W, d.LN, d.IB
        m = Module()
        zero_slot = Const(0, d.slot.size)
        start = [self.win[v] for v in range(W)] + [d.slot(zero_slot) for _ in range(LN)]
        place, opens, o_before = self._placements(m, start)
        if LN == 1:
            self._one_lane(m, place[0], opens[0])
            return m
        o_tot = popcount(m, Cat(*opens))
        # every virtual slot after this cycle's lanes
        fin = [Signal(d.slot, name=f"c_fin{v}") for v in range(W + LN)]
        for v in range(W + LN):
            s0 = start[v]
            ors, cnt = s0.ors, s0.cnt
            mem = [s0.mem[k] for k in range(M)]
            idx = [s0.idx[r] for r in range(R)]
            for j in (range(LN) if v < W else range(v - W, LN)):
                hit = place[j][v]
                cv, col = self.ents[j].cv, self.ents[j].col
                ors = ors | Mux(hit, cv, 0)
                for k in range(M):
                    mem[k] = Mux(hit & (cnt == k), col, mem[k])
                for r in range(R):
                    idx[r] = Mux(hit & cv[r], cnt[:IB], idx[r])
                cnt = add_logic(cnt, hit, m)
            m.d.comb += [fin[v].ors.eq(ors), fin[v].cnt.eq(cnt)]
            m.d.comb += [fin[v].mem[k].eq(mem[k]) for k in range(M)]
            m.d.comb += [fin[v].idx[r].eq(idx[r]) for r in range(R)]
        # the q-th slot opened this cycle
        new_rank = []
        for qq in range(LN):
            val = Value.cast(zero_slot)
            for j in range(qq, LN):
                val = Mux(opens[j] & (o_before[j] == qq), fin[W + j].as_value(), val)
            new_rank.append(val)
        # all slots in age order (window, then the opened ones), the oldest ret_n retire
        seq = []
        for p in range(W + LN):
            val = fin[p].as_value() if p < W else Value.cast(zero_slot)
            for qq in range(LN):
                if 0 <= p - qq <= W:
                    val = Mux(self.nwin == p - qq, new_rank[qq], val)
            seq.append(val)
        # the window's growth and the slots retired, as gates (small widths, no carry chain)
        grown = add_logic(self.nwin, o_tot, m)
        rets = [grown == W + rr for rr in range(1, LN + 1)]     # ret_n == rr
        m.d.comb += [self.ret_n.eq(_onehot_index(Cat(Const(0, 1), *rets), len(self.ret_n))),
                     self.next_nwin.eq(Mux(ge_const(grown, W + 1), W, grown))]
        m.d.comb += [self.next_occ[v].eq(ge_const(self.next_nwin, v + 1)) for v in range(W)]
        for i in range(W):
            val = seq[i]
            for rr in range(1, LN + 1):
                val = Mux(rets[rr - 1], seq[i + rr], val)
            m.d.comb += self.next_win[i].eq(val)
        m.d.comb += [self.ret[i].eq(fin[i]) for i in range(LN)]
        return m


    def _one_lane(self, m, place, opened):
        """The window after one lane (LN = 1), each slot a one-hot choice among registers
        and values formed from registers only (issue 22: the general form's chains of muxes
        by slot position and retire count followed the placement): shifted down (the
        column opened a slot in a full window: the oldest retires, untouched), the new slot
        (opened here), the slot with the column added (joined), or unchanged."""
        d = self.dims
        W, M, R, IB = d.W, d.M, d.R, d.IB
        win, ent = self.win, self.ents[0]
        new = Signal(d.slot, name="c_new")          # the slot the column opens
        m.d.comb += [new.ors.eq(ent.cv), new.cnt.eq(1), new.mem[0].eq(ent.col)]
        upd = [Signal(d.slot, name=f"c_upd{v}") for v in range(W)]   # slot v joined
        for v in range(W):
            cnt = win[v].cnt
            m.d.comb += [upd[v].ors.eq(win[v].ors | ent.cv), upd[v].cnt.eq(cnt + 1)]
            m.d.comb += [upd[v].mem[k].eq(Mux(cnt == k, ent.col, win[v].mem[k]))
                         for k in range(M)]
            m.d.comb += [upd[v].idx[r].eq(Mux(ent.cv[r], cnt[:IB], win[v].idx[r]))
                         for r in range(R)]
        # the window's fill from the thermometer register (issue 22: nwin's compares were on
        # the board CAU's merge loop): full = slot W - 1 occupied, nwin == i = slot i the
        # first free one
        occ = self.occ
        full = occ[W - 1]
        shift = Signal(name="c_shift")
        grow = Signal(name="c_grow")
        m.d.comb += [shift.eq(opened & full), grow.eq(opened & ~full)]
        for i in range(W):
            first_free = ~occ[i] if i == 0 else occ[i - 1] & ~occ[i]
            val = Mux(place[i], upd[i].as_value(), win[i].as_value())
            val = Mux(opened & first_free, new.as_value(), val)
            val = Mux(shift, win[i + 1].as_value() if i + 1 < W else new.as_value(), val)
            m.d.comb += self.next_win[i].eq(val)
        m.d.comb += [self.next_nwin.eq(Mux(grow, self.nwin + 1, self.nwin)),
                     self.next_occ.eq(Mux(grow, Cat(Const(1, 1), occ[:W - 1]), occ)),
                     self.ret_n.eq(shift),
                     self.ret[0].eq(win[0])]    # a retiring slot took no column


class CauAssembler(wiring.Component):
    """Stage C's pass assembler: a queue of C + LN - 1 retired slots.

    A pass leaves (to ``out``) from positions 0..C-1 whenever C slots are in it (fewer for
    the block's last pass); up to LN - 1 slots retired in the same cycle wait behind it and
    move down by C when ``out`` takes the pass.

    Parameters
    ----------
    dims : CauDims
    out_layout : Layout
        ``hw.cau.cau_pass_layout``.

    Members
    -------
    ret_n : In(range(LN + 1)); ret : In(ArrayLayout(dims.slot, LN))
        Slots retired this cycle, oldest first.
    final : In(1)
        The block's last slot is among them.
    label : In(16)
        The block's label (copied into its passes).
    qbase : Out(range(C + LN))
        Where this cycle's retired slots go (the flush never fills past a pass).
    step_ok : Out(1)
        The merge may retire slots this cycle (no complete pass waiting on ``out``).
    out : Out(stream.Signature(out_layout))
    pending : Out(1)
        A pass or a slot is in the queue.

    Latency: a pass is offered the cycle after its last slot retires.
    """

    def __init__(self, dims: CauDims, out_layout):
        self.dims = dims
        QN = dims.C + dims.LN - 1
        super().__init__({
            "ret_n": In(range(dims.LN + 1)), "ret": In(data.ArrayLayout(dims.slot, dims.LN)),
            "final": In(1), "label": In(16), "qbase": Out(range(QN + 1)), "step_ok": Out(1),
            "out": Out(stream.Signature(out_layout)), "pending": Out(1)})

    def elaborate(self, platform):
        d = self.dims
        R, C, M, LN = d.R, d.C, d.M, d.LN
        QN = C + LN - 1
        m = Module()
        asm = [Signal(d.slot, name=f"asm{p}") for p in range(QN)]
        qn = Signal(range(QN + 1), name="qn")           # slots in the queue
        complete = Signal(name="complete")              # asm[0..C-1] is a pass for out
        last = Signal(name="asm_last")
        block = Signal(16, name="asm_block")
        accept = Signal()
        m.d.comb += [
            accept.eq(complete & self.out.ready),
            self.qbase.eq(Mux(accept, Mux(qn >= C, qn - C, 0), qn)),
            self.step_ok.eq(~complete | self.out.ready),
        ]
        for p in range(QN):
            if p + C < QN:
                with m.If(accept):
                    m.d.sync += asm[p].eq(asm[p + C])
            for i in range(LN):
                with m.If((i < self.ret_n) & (self.qbase + i == p)):
                    m.d.sync += asm[p].eq(self.ret[i])
        tot = self.qbase + self.ret_n
        m.d.sync += qn.eq(tot)
        with m.If(~complete | accept):
            m.d.sync += complete.eq((tot >= C) | self.final)
            with m.If((tot >= C) | self.final):
                m.d.sync += [last.eq(self.final), block.eq(self.label)]
        # the pass in asm[0..C-1], as the output payload
        opass = self.out.payload
        for c in range(C):
            aval = qn > c
            for r in range(R):
                m.d.comb += [opass.sel[r][c].idx.eq(asm[c].idx[r]),
                             opass.sel[r][c].valid.eq(aval & asm[c].ors[r])]
            for k in range(M):
                m.d.comb += opass.col[c][k].eq(Mux(aval, asm[c].mem[k], 0))
        m.d.comb += [opass.block.eq(block), opass.last.eq(last),
                     self.out.valid.eq(complete), self.pending.eq(complete | (qn != 0))]
        return m


class CauMerge(wiring.Component):
    """Stage C: windowed first-fit merge of one sorted block, LN columns per cycle.

    FSM: ``IDLE`` (wait for a full sorted side, read its first LN entries), ``LOAD`` (the
    first group into the read register ``c_ent*``, read the second), ``MERGE`` (LN columns
    per cycle from the read register through :class:`CauMergeNet`; the group two ahead is
    read with every load), ``FLUSH`` (the window's slots retire at most LN per cycle and
    never past the end of the pass being assembled). Retired slots go through a retire
    register (``r_*``) to :class:`CauAssembler`, which takes it whenever it may step
    (``step_ok``). Both registers are issue 22's FPGA timing fix: the block-RAM read and the
    assembler's queue logic are off the merge network's paths. A block without columns is
    released from ``IDLE``; a block starts once the retire register is emptied.

    Parameters
    ----------
    dims : CauDims
    out_layout : Layout
        ``hw.cau.cau_pass_layout``.

    Members
    -------
    s_full, s_side : In(1); s_meta : In(dims.s_meta)
        The sorted-buffer side to merge: full, which side, its block data (with the run's
        merge ways).
    rd : Out(read_signature(sorted buffer)).array(LN)
    release : Out(1)
        The sorted side has been read.
    out : Out(stream.Signature(out_layout))
        Passes; back-pressure stalls the merge.
    active : Out(1)
        Merging or flushing.
    pending : Out(1)
        The retire register or the assembler holds a slot or a pass.

    Latency: ``2 + ceil(n / LN) + flush`` cycles per block (``golden.cycles``).
    """

    def __init__(self, dims: CauDims, out_layout):
        self.dims, self._out_layout = dims, out_layout
        super().__init__({
            "s_full": In(1), "s_side": In(1), "s_meta": In(dims.s_meta),
            "rd": Out(read_signature(_bits(2 * dims.SIDE), dims.ent)).array(dims.LN),
            "release": Out(1), "out": Out(stream.Signature(out_layout)),
            "active": Out(1), "pending": Out(1)})

    def elaborate(self, platform):
        d = self.dims
        C, W, LN = d.C, d.W, d.LN
        m = Module()
        m.submodules.net = net = CauMergeNet(d)
        m.submodules.assembler = asm = CauAssembler(d, self._out_layout)
        wiring.connect(m, asm.out, wiring.flipped(self.out))
        win = [Signal(d.slot, name=f"win{i}") for i in range(W)]
        nwin = Signal(range(W + 1), name="nwin")
        occ = Signal(W, name="c_occ")               # nwin as a thermometer (slot v occupied)
        ptr = Signal(d.CNTW, name="c_ptr")          # the group in the ents register stage
        n = Signal(d.CNTW, name="c_n")
        label = Signal(16, name="c_label")
        ways = Signal(d.WYB, name="c_ways")
        # the sorted-buffer read register stage (issue 22): the block RAM's data only loads
        # ents; the read of the group after it is issued with the load
        ents = [Signal(d.ent, name=f"c_ent{t}") for t in range(LN)]
        # with each group, which of its lanes hold a column and whether it is the block's
        # last group (from ld_ptr, the group's first position: off the merge network's path)
        load = Signal()
        ld_ptr = Signal(d.CNTW + 1, name="c_ld_ptr")
        lv = Signal(LN, name="c_lv")
        lastg = Signal(name="c_lastg")
        with m.If(load):
            m.d.sync += [ents[t].eq(self.rd[t].data) for t in range(LN)]
            m.d.sync += [lv.eq(Cat(ld_ptr + t < n for t in range(LN))),
                         lastg.eq(ld_ptr + LN >= n)]
        # the retire register stage (issue 22): this cycle's retired slots reach the
        # assembler the next cycle; it moves whenever the assembler takes it (step_ok)
        r_n = Signal(range(LN + 1), name="r_n")
        r_slot = [Signal(d.slot, name=f"r_slot{i}") for i in range(LN)]
        r_final = Signal(name="r_final")
        r_label = Signal(16, name="r_label")
        ret_n = Signal(range(LN + 1), name="c_ret_n")     # what retires this cycle
        ret = [Signal(d.slot, name=f"c_ret{i}") for i in range(LN)]
        final = Signal(name="c_final")
        step = asm.step_ok
        with m.If(step):
            m.d.sync += [r_n.eq(ret_n), r_final.eq(final), r_label.eq(label)]
            m.d.sync += [r_slot[i].eq(ret[i]) for i in range(LN)]
        m.d.comb += [
            asm.ret_n.eq(Mux(step, r_n, 0)), asm.final.eq(step & r_final),
            asm.label.eq(r_label),
            self.pending.eq(asm.pending | (r_n != 0)),
            net.nwin.eq(nwin), net.occ.eq(occ), net.ways.eq(ways),
        ]
        m.d.comb += [asm.ret[i].eq(r_slot[i]) for i in range(LN)]
        m.d.comb += [net.win[i].eq(win[i]) for i in range(W)]
        for t in range(LN):
            m.d.comb += [net.ents[t].eq(ents[t]), net.lv[t].eq(lv[t])]
        # slots of the pass being assembled (retired in this block before this cycle, mod
        # C): those the assembler took (inpass) and those in the retire register; from
        # registers only. The flush retires at most LN per cycle and never beyond that pass.
        inpass = Signal(range(C + 1), name="c_inpass")
        cur = Signal(range(C + 1), name="c_cur")
        m.d.comb += cur.eq(_in_pass(inpass, r_n, C))
        with m.If(step):
            m.d.sync += inpass.eq(cur)
        fl_k = Signal(range(LN + 1), name="fl_k")
        room = C - cur
        lim = Mux(nwin < LN, nwin, LN)
        m.d.comb += fl_k.eq(Mux(room < lim, room, lim))
        zero_slot = Const(0, d.slot.size)
        f_win = []
        for i in range(W):
            val = win[i].as_value()
            for kk in range(1, LN + 1):
                val = Mux(fl_k == kk, win[i + kk].as_value() if i + kk < W else zero_slot, val)
            f_win.append(val)
        side = Mux(self.s_side, d.SIDE, 0)
        ahead = _read_ahead(LN)
        # the sorted-buffer read address is a register (issue 22: the FSM's address adders
        # and muxes were on the block RAM's address path): the first position a read
        # fetches, i.e. the group two ahead (the side's group 0 in IDLE); it moves with each
        # read, and whether that group has columns is a register too
        raddr = Signal(_bits(2 * d.SIDE), name="c_raddr")
        more = Signal(name="c_more")                # ptr + ahead < n
        m.d.comb += [self.rd[t].addr.eq(raddr + t) for t in range(LN)]
        other = Mux(self.s_side, 0, d.SIDE)         # the next block's group 0

        with m.FSM(name="merge_fsm"):
            with m.State("IDLE"):
                # a block starts once the retire register holds nothing of the block before
                # (it is emptied this cycle: step); the output always ready, step is 1
                with m.If(self.s_full & step):
                    meta = self.s_meta
                    m.d.sync += [n.eq(meta.n), ptr.eq(0), label.eq(meta.label),
                                 ways.eq(meta.ways), inpass.eq(0), raddr.eq(side + LN),
                                 more.eq(ge_const(meta.n, ahead + 1))]
                    m.d.comb += [self.rd[t].en.eq(1) for t in range(LN)]
                    with m.If(meta.n == 0):
                        m.d.comb += self.release.eq(1)
                        m.d.sync += raddr.eq(other)
                    with m.Else():
                        m.next = "LOAD"
            with m.State("LOAD"):                   # group 0 into ents, read group 1
                m.d.comb += [self.active.eq(1), load.eq(1), ld_ptr.eq(0)]
                m.d.comb += [self.rd[t].en.eq(ge_const(n, LN + 1)) for t in range(LN)]
                m.d.sync += raddr.eq(raddr + (ahead - LN))      # the first MERGE's read
                m.next = "MERGE"
            with m.State("MERGE"):
                m.d.comb += self.active.eq(1)
                m.d.comb += [ret_n.eq(net.ret_n)]
                m.d.comb += [ret[i].eq(net.ret[i]) for i in range(LN)]
                with m.If(step):
                    m.d.sync += [win[i].eq(net.next_win[i]) for i in range(W)]
                    m.d.sync += [nwin.eq(net.next_nwin), occ.eq(net.next_occ)]
                    with m.If(lastg):
                        m.d.comb += self.release.eq(1)
                        m.d.sync += raddr.eq(other)
                        m.next = "FLUSH"
                    with m.Else():
                        m.d.comb += [load.eq(1), ld_ptr.eq(ptr + LN)]
                        m.d.comb += [self.rd[t].en.eq(more) for t in range(LN)]
                        m.d.sync += [ptr.eq(ptr + LN), raddr.eq(raddr + LN),
                                     more.eq(ptr + (LN + ahead) < n)]
            with m.State("FLUSH"):
                m.d.comb += self.active.eq(1)
                m.d.comb += [ret_n.eq(fl_k), final.eq(fl_k == nwin)]
                m.d.comb += [ret[i].eq(win[i]) for i in range(LN)]
                with m.If(step):
                    m.d.sync += [win[i].eq(f_win[i]) for i in range(W)]
                    m.d.sync += [nwin.eq(nwin - fl_k), occ.eq(occ >> fl_k)]
                    with m.If(fl_k == nwin):
                        m.next = "IDLE"
        return m
