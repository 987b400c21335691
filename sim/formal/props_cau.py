"""CAU properties (``hw.cau.CAU``), stated on its ports against the row block's mask.

The harness drives the CAU's ``mask`` stream with free beats (the environment obeys the
stream rule, keeps a block within ``max_cols`` columns, ``ways`` in 1..M and ``sort``
constant within a block) and a free ``out.ready``. It tracks one row block, the ``pick``-th
of the run (a solver-chosen constant, so the block may follow earlier blocks still in the
pipeline), records its mask and checks every pass the CAU emits for it:

``members``  no sel points at member ``k >= m`` (m = the block's ``ways``): never more than
             m members in a slot.
``overlap``  no two members present in a slot (columns j1 and j2) have overlapping conflict
             vectors.
``cover``    every set mask bit (r, j1) is computed exactly once over the block's passes (a
             DPU (r, c) with a valid sel whose member's ``col`` is j1); no unset bit is.
``stable``   the output holds ``valid`` and its payload while not accepted.

Mutants (each breaks one rule through the CAU's ports, so they survive internal rewrites):
``overlap`` hides row 0 of every cv that has another row set from the CAU; ``members`` tells the CAU one more way than
the run has; ``cover`` hides the block's first column; ``stable`` changes the payload's
``block`` field while stalled.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib.wiring import In

from exion.config import Config
from exion.hw.cau import CAU, mask_layout

from .common import Harness, held_constant, stream_stable

__all__ = ["CauProps"]


class CauProps(Harness):
    """Property harness of the CAU (see the module docstring)."""

    GROUPS = ("members", "overlap", "cover", "stable")
    MUTANTS = {
        "overlap": "the CAU sees cvs with another row set without row 0 (merges columns sharing row 0)",
        "members": "the CAU sees ways + 1 (up to M): uses a member place the run does not have",
        "cover": "the CAU sees column 0 of each block as all zero (drops it)",
        "stable": "out.payload.block changes while out is valid and not ready",
    }

    def __init__(self, cfg: Config, *, max_cols: int = 4, cols_per_cycle: int = 2,
                 merge_lanes: int | None = None, blocks: int = 2, props=None,
                 mutant: str | None = None):
        self.cfg, self.max_cols, self.P = cfg, max_cols, cols_per_cycle
        self.merge_lanes, self.blocks = merge_lanes, blocks
        beat = mask_layout(cfg, cols_per_cycle, True)
        super().__init__({
            "in_valid": In(1), "in_beat": In(beat), "out_ready": In(1),
            "pick": In(range(max(blocks, 2))), "j1": In(range(max_cols)), "j2": In(range(max_cols)),
        }, props=props, mutant=mutant)

    def elaborate(self, platform):
        cfg, P, N = self.cfg, self.P, self.max_cols
        R, C, M = cfg.rows, cfg.cols, cfg.merge_ways
        words = -(-N // P)
        m = Module()
        self.no_reset(m)
        dut = CAU(cfg, cols_per_cycle=P, max_cols=N, sort="runtime",
                  merge_lanes=self.merge_lanes)
        m.submodules.dut = dut
        beat = self.in_beat

        # ---- environment ------------------------------------------------------------------
        self.assume(m, held_constant(m, self.pick, "pick"), "pick is a constant")
        self.assume(m, self.pick < self.blocks, "pick < blocks")
        self.assume(m, stream_stable(m, self.in_valid, dut.mask.ready, beat, "in"),
                    "mask source obeys the stream rule")
        self.assume(m, (beat.ways >= 1) & (beat.ways <= M), "ways in 1..M")
        bidx = Signal(range(words + 1))           # beat index within the input block
        sort0 = Signal()
        self.assume(m, ~self.in_valid | (bidx != words - 1) | beat.last, "at most max_cols")
        self.assume(m, ~self.in_valid | (bidx == 0) | (beat.sort == sort0), "sort per block")
        take = self.in_valid & dut.mask.ready
        with m.If(take):
            m.d.sync += bidx.eq(Mux(beat.last, 0, bidx + 1))
            with m.If(bidx == 0):
                m.d.sync += sort0.eq(beat.sort)

        # ---- the design (and its mutants, on the ports) -----------------------------------
        to = dut.mask.payload
        m.d.comb += [dut.mask.valid.eq(self.in_valid), to.eq(beat)]
        if self.mutant == "overlap":
            for i in range(P):
                rest = beat.cv[i] & ~1
                m.d.comb += to.cv[i].eq(Mux(rest != 0, rest, beat.cv[i]))
        elif self.mutant == "members":
            m.d.comb += to.ways.eq(Mux(beat.ways < M, beat.ways + 1, beat.ways))
        elif self.mutant == "cover":
            m.d.comb += to.cv[0].eq(Mux(bidx == 0, 0, beat.cv[0]))
        out = Signal(dut.out.payload.shape())
        m.d.comb += [out.eq(dut.out.payload), dut.out.ready.eq(self.out_ready)]
        if self.mutant == "stable":
            tick = Signal()
            m.d.sync += tick.eq(~tick)
            m.d.comb += out.block.eq(dut.out.payload.block ^ (tick & ~self.out_ready))

        # ---- record the picked block (two solver-chosen columns j1 < j2 of it) -------------
        in_blk = Signal(range(self.blocks + 1))   # input blocks completed (saturating)
        nz_before = Signal(range(self.blocks + 1))  # non-zero blocks before the picked one
        nz = Signal()                             # current input block has a set bit
        cv1, cv2 = Signal(R), Signal(R)           # cvs of columns j1 and j2 of the block
        ways = Signal(range(M + 1))
        pick_nz = Signal()
        full = Signal(range(N + 1))               # non-zero columns of the picked block
        lane_nz = sum((beat.cv[i].any() for i in range(P)), Const(0, range(P + 1)))
        beat_nz = Cat(*[beat.cv[i] for i in range(P)]).any()
        mine = in_blk == self.pick
        j1, j2 = self.j1, self.j2
        self.assume(m, held_constant(m, Cat(j1, j2), "cols"), "j1, j2 are constants")
        self.assume(m, (j1 < j2) & (j2 < N), "0 <= j1 < j2 < max_cols")
        with m.If(take):
            m.d.sync += nz.eq(Mux(beat.last, 0, nz | beat_nz))
            with m.If(beat.last & (in_blk < self.blocks)):
                m.d.sync += in_blk.eq(in_blk + 1)
                with m.If((in_blk < self.pick) & (nz | beat_nz)):
                    m.d.sync += nz_before.eq(nz_before + 1)
            with m.If(mine):
                m.d.sync += full.eq(full + lane_nz)
                for j in range(N):
                    with m.If((bidx == j // P) & (j1 == j)):
                        m.d.sync += cv1.eq(beat.cv[j % P])
                    with m.If((bidx == j // P) & (j2 == j)):
                        m.d.sync += cv2.eq(beat.cv[j % P])
                with m.If(beat.last):
                    m.d.sync += [ways.eq(beat.ways), pick_nz.eq(nz | beat_nz)]

        # ---- check the picked block's passes ----------------------------------------------
        self.check(m, "stable", stream_stable(m, dut.out.valid, self.out_ready, out, "out"),
                   "out holds valid and payload until accepted")
        out_blk = Signal(range(self.blocks + 1))  # output blocks completed
        acc = dut.out.valid & self.out_ready
        with m.If(acc & out.last & (out_blk < self.blocks)):
            m.d.sync += out_blk.eq(out_blk + 1)
        ours = acc & (in_blk > self.pick) & pick_nz & (out_blk == nz_before)
        hits = [Const(0, 2) for _ in range(R)]    # DPUs computing (r, j1) in this pass
        for c in range(C):
            sel = [out.sel[r][c] for r in range(R)]
            col = [out.col[c][k] for k in range(M)]
            present = [Cat(*[s.valid & (s.idx == k) for s in sel]).any() for k in range(M)]
            for r in range(R):
                self.check(m, "members", ~ours | ~sel[r].valid | (sel[r].idx < ways),
                           f"sel[{r}][{c}] within the run's m members")
                hits[r] = hits[r] + (sel[r].valid & (Array(col)[sel[r].idx] == j1))
            for k in range(M):
                for k2 in range(M):
                    if k2 != k:
                        pair = present[k] & present[k2] & (col[k] == j1) & (col[k2] == j2)
                        self.check(m, "overlap", ~ours | ~pair | ((cv1 & cv2) == 0),
                                   f"slot {c}: members {k} and {k2} do not overlap")
        last_ours = Signal()
        m.d.comb += last_ours.eq(ours & out.last)
        for r in range(R):
            cnt = Signal(2, name=f"cnt{r}")
            new = Signal(3, name=f"cnt_new{r}")
            m.d.comb += new.eq(cnt + Mux(ours, hits[r], 0))
            with m.If(ours):
                m.d.sync += cnt.eq(Mux(new > 2, 2, new))
            self.check(m, "cover", ~last_ours | (new == cv1[r]),
                       f"bit ({r}, j1) computed exactly as often as it is set")
        self.cover(m, last_ours & (self.pick == self.blocks - 1) & (full == N),
                   "the last pickable block's last pass is accepted, all its columns set")
        return m
