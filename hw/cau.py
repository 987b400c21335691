"""ConMerge assistant unit (SPEC 4.3): condense, popcount counting sort, windowed merge.

The CAU turns a row block's output mask into the ConMerge vectors of its passes, bit-exact
with :func:`exion.golden.conmerge.cau` (the passes of ``conmerge``: same slots, same order,
same member order, same selects). It is built for ``cfg.merge_ways`` member lanes; the m a
run uses is the mask beats' ``ways`` field (like ``sort``, a run-time field). Three stages
(``hw.cau_stages``: ``CauRead``, ``CauSort``, ``CauMerge``) work on three different row blocks
at once, joined by ping-pong buffers (``PingPong``; ``docs/cau.md`` has the picture)::

    mask stream --A--> [word buffer x2] --B--> [sorted buffer x2] --C--> pass FIFO --> out
      P cvs/cycle      non-zero words +       (column, cv) in         window of W_open
      condense,        popcount histogram     popcount order          slot registers,
      histogram                               (NBK banks, one write   LN-lane merge,
                                               + one read port each)  pass assembler

LN = ``merge_lanes`` (default :func:`default_merge_lanes`: 3 for exion16, 2 for toy).

* **A (read)**: one beat of ``P = cols_per_cycle`` column cvs per cycle (default 8). Beats
  with a non-zero cv are stored (with their beat index) in the word buffer; the bins' start
  offsets of the sort key ``R - popcount`` (bin 0 = popcount R; the exclusive prefix sum of
  its histogram) grow with every beat. All-zero beats are not stored, so B never spends a
  cycle on them.
* **B (counting sort)**: one cycle to load the bins' start offsets, then per cycle up to LN lowest pending lanes of the current word are
  written to the sorted buffer at ``offset[bin] + (same-bin lanes before it this cycle)``,
  and each bin's offset advances by its count (stable: words in column order, lanes in
  order). The sorted buffer is NBK = ``cau_sort_banks(LN)`` one-write, one-read memories
  interleaved by position (block RAM on an FPGA); B takes the lanes in order and stops at
  the first whose position's bank an earlier lane of the cycle writes (it waits for the
  next cycle). ``sort = none`` puts every column in bin 0 (column order).
* **C (merge)**: LN sorted columns per cycle (LN consecutive positions: LN different banks)
  against the window of W_open
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
stream of blocks, exactly): A ``ceil(N / P)`` beats; B ``2 + sum steps`` over the stored
beats (1 without stored beats; ``cau_sort_steps``: ``ceil(nz / LN)`` for a beat of nz non-zero cvs without bank
collisions, more with them); C ``2 + ceil(n / LN) + flush`` cycles (a fetch and a
load of the read register, then LN columns per cycle), with n the
block's non-zero columns and ``flush = cau_flush_cycles(S, f, C, LN)`` (f = min(S, W_open)
slots left in the window, S slots); C takes 1 cycle for an all-zero block. With LN = 1 this
is ``2 + n`` and ``2 + n + f``. Stalls: A when its next buffer side is still
being sorted, B when its next sorted side is still being merged, C when a completed pass
cannot enter the output FIFO (back-pressure).
"""

from __future__ import annotations

import math

from amaranth import Cat, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from exion.config import CAU_COLS_PER_CYCLE, CAU_LANES_MAX, Config
from exion.errors import ExionError

from .cau_stages import BankedBuffer, CauDims, CauMerge, CauRead, CauSort, PingPong
from .sdue import pass_layout
from .util import bits_for as _bits

__all__ = ["CAU", "mask_layout", "cau_pass_layout", "default_max_cols", "default_merge_lanes",
           "CAU_SORTS"]

#: ``sort`` constructor values: fixed strategies, or a run-time ``sort`` bit in the input.
CAU_SORTS = ("popcount", "none", "runtime")




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
    ways    the run's merge ways m, 1..cfg.merge_ways (the CAU is built for
            ``cfg.merge_ways``; a run may use fewer); taken from the last beat
    sort    (only with ``sort="runtime"``) 0 = popcount, 1 = none; constant within a block
    """
    fields = {
        "cv": data.ArrayLayout(cfg.rows, cols_per_cycle),
        "last": 1,
        "block": 16,
        "ways": cfg.merge_ways.bit_length(),
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
        Row blocks as beats of P column cvs; ``last`` ends a block; ``ways`` is the run's
        merge ways (1..cfg.merge_ways).
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
    cycles; B ``2 + sum over stored beats of its steps`` (1 without any; ``ceil(nz / LN)``
    for nz non-zero cvs, plus a cycle per sorted-buffer bank collision, ``golden.cycles.cau_sort_steps``);
    C ``2 + ceil(n / LN) + flush`` (flush: the window's f slots retire at most LN per cycle
    and never across a pass boundary). The three stages overlap on consecutive row blocks;
    the last pass of a block is taken 4 cycles after C's last cycle (output ready: the
    retire register, the assembler, the FIFO).
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
        d = CauDims(cfg, self.cols_per_cycle, self.max_cols, self.merge_lanes)
        mod = Module()
        out_layout = cau_pass_layout(cfg, d.NMAX)

        # ---- buffers: word buffer (A -> B), sorted buffer (B -> C, NBK one-port banks) -----
        mem_a = Memory(shape=d.word, depth=2 * d.WORDS, init=[])
        mem_s = BankedBuffer(d.ent, 2 * d.SIDE, d.NBK, d.LN)
        mod.submodules.word_buf = mem_a
        mod.submodules.sort_buf = mem_s
        ecp5 = cfg.dpu_mult == "ecp5"
        mod.submodules.word_pp = pp_a = PingPong(d.a_meta, late=("start", "n"), ecp5=ecp5)
        mod.submodules.sort_pp = pp_s = PingPong(d.s_meta, early_meta=True, ecp5=ecp5)

        # ---- the three stages --------------------------------------------------------------
        mod.submodules.read = st_a = CauRead(d, self.mask.payload.shape(), self.sort)
        mod.submodules.sort = st_b = CauSort(d)
        mod.submodules.merge = st_c = CauMerge(d, out_layout)
        wiring.connect(mod, wiring.flipped(self.mask), st_a.mask)
        _write_port(mod, mem_a, st_a.wr)
        _read_port(mod, mem_a, st_b.rd)
        for t in range(d.LN):
            wiring.connect(mod, st_b.wr[t], mem_s.wr[t])
            wiring.connect(mod, st_c.rd[t], mem_s.rd[t])
        mod.d.comb += [
            st_a.full.eq(pp_a.w_full), st_a.side.eq(pp_a.w_side),
            pp_a.fill.eq(st_a.fill), pp_a.meta.eq(st_a.meta), pp_a.late_we.eq(st_a.late_we),
            st_b.a_full.eq(pp_a.r_full), st_b.a_side.eq(pp_a.r_side),
            st_b.a_meta.eq(pp_a.r_meta), pp_a.release.eq(st_b.release),
            st_b.s_full.eq(pp_s.w_full), st_b.s_side.eq(pp_s.w_side),
            pp_s.fill.eq(st_b.fill), pp_s.meta.eq(st_b.s_meta), pp_s.meta_we.eq(st_b.meta_we),
            st_c.s_full.eq(pp_s.r_full), st_c.s_side.eq(pp_s.r_side),
            st_c.s_meta.eq(pp_s.r_meta), pp_s.release.eq(st_c.release),
        ]

        # ---- output FIFO and status --------------------------------------------------------
        q = fifo.SyncFIFO(width=out_layout.size, depth=self.fifo_depth)
        mod.submodules.out_fifo = q
        # the FIFO's room (``q.w_rdy``, ``level != depth``) as a register of its own, set
        # from this cycle's write and read (issue 22: the level's compare was on stage C's
        # step and from there on the sorted buffer's read enable); equal to w_rdy every cycle
        room = Signal(init=1, name="q_room")
        do_w, do_r = st_c.out.valid & room, q.r_en & q.r_rdy
        with mod.If(do_w & ~do_r):
            mod.d.sync += room.eq(q.level != self.fifo_depth - 1)
        with mod.Elif(do_r & ~do_w):
            mod.d.sync += room.eq(1)
        mod.d.comb += [
            q.w_en.eq(st_c.out.valid), q.w_data.eq(st_c.out.payload),
            st_c.out.ready.eq(room),
            self.out.valid.eq(q.r_rdy),
            self.out.payload.eq(q.r_data),
            q.r_en.eq(self.out.ready),
            self.overflow.eq(st_a.overflow),
            self.active.eq(Cat(st_a.active, st_b.running, st_c.active)),
            self.busy.eq(st_a.active | pp_a.any_full | st_b.running | pp_s.any_full
                         | st_c.active | st_c.pending | q.r_rdy),
        ]
        return mod


def _write_port(mod, mem, port):
    wp = mem.write_port()
    mod.d.comb += [wp.addr.eq(port.addr), wp.data.eq(port.data), wp.en.eq(port.en)]


def _read_port(mod, mem, port):
    rp = mem.read_port()
    mod.d.comb += [rp.addr.eq(port.addr), rp.en.eq(port.en), port.data.eq(rp.data)]
