"""EPRE selector properties (``hw.epre_stages.EpreSelector``), stated on its ports.

The harness plays the EPRE controller's selection sequence for a row (as ``EpreControl``
does: ``clear``; an insertion pass ``ins`` over keys 0..N_k-1, the score of key ``sj``
arriving one cycle after ``sj`` as from the score buffer; one idle cycle; ``latch``; a mask
pass ``msk``; one idle cycle) on ``rows`` rows one after the other, with solver-chosen
scores per row (free inputs taken at the row's start), solver-chosen ``k_n`` and ``n_k``
(1 <= n_k <= n_max, 0 <= k_n <= n_k, constant for the run) and the gap rule off
(``q_th_en = 0``, ``keep_all = 0``). After each row's mask pass:

``count``  the mask row keeps exactly ``k_n`` (= ceil(k * N_k)) keys, none at or above n_k.
``tie``    a kept key beats every dropped key in the golden order: higher score, or the same
           score and a lower index (``golden.predict.topk_select``'s stable tie rule).

Mutants (through the ports): ``count`` tells the selector k_n + 1 (when below n_k);
``tie`` shows it the scores ``2 s + (j odd)`` (same order, but ties go to odd keys).
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib.wiring import In

from exion.config import Config
from exion.hw.epre_stages import EpreSelector

from .common import Harness, held_constant

__all__ = ["SelectorProps"]


class SelectorProps(Harness):
    """Property harness of the EPRE selector (see the module docstring)."""

    GROUPS = ("count", "tie")
    MUTANTS = {
        "count": "the selector sees k_n + 1 (when k_n < n_k): keeps one key too many",
        "tie": "the selector sees 2 s + (j odd): ties go to the odd (higher) key",
    }

    def __init__(self, cfg: Config, *, n_max: int = 6, score_bits: int = 4, rows: int = 2,
                 props=None, mutant: str | None = None):
        self.cfg, self.n_max, self.score_bits, self.rows = cfg, n_max, score_bits, rows
        nb = n_max.bit_length()
        super().__init__({
            "scores": In(score_bits * n_max), "k_n": In(nb), "n_k": In(nb),
        }, props=props, mutant=mutant)

    def elaborate(self, platform):
        cfg, N, SB = self.cfg, self.n_max, self.score_bits
        A = cfg.acc_width
        m = Module()
        self.no_reset(m)
        m.submodules.dut = dut = EpreSelector(cfg, N)
        self.assume(m, held_constant(m, Cat(self.k_n, self.n_k), "run"), "k_n, n_k constant")
        self.assume(m, (self.n_k >= 1) & (self.n_k <= N) & (self.k_n <= self.n_k),
                    "1 <= n_k <= n_max, k_n <= n_k")

        # ---- the controller's selection sequence ------------------------------------------
        sc = Signal(SB * N)                        # this row's scores (signed SB bits each)
        s = [sc[i * SB:(i + 1) * SB].as_signed() for i in range(N)]
        sj, sj1 = Signal(range(N + 1)), Signal(range(N + 1))
        phase = Signal(range(8))                  # 0 start, 1 ins, 2 tail, 3 latch, 4 msk,
        row = Signal(range(self.rows + 1))        # 5 tail, 6 check, 7 done
        last = sj == self.n_k - 1
        m.d.sync += sj1.eq(sj)
        kn = Signal.like(self.k_n)
        m.d.comb += kn.eq(self.k_n)
        score = Signal(signed(A))
        m.d.comb += score.eq(Array(s)[sj1])
        if self.mutant == "count":
            m.d.comb += kn.eq(Mux(self.k_n < self.n_k, self.k_n + 1, self.k_n))
        elif self.mutant == "tie":
            m.d.comb += score.eq(Array(s)[sj1] * 2 + sj1[0])
        m.d.comb += [dut.k_n.eq(kn), dut.n_k.eq(self.n_k), dut.score.eq(score),
                     dut.sj.eq(sj), dut.keep_all.eq(0), dut.q_th_en.eq(0), dut.q_th.eq(0)]
        started = Signal()
        m.d.sync += started.eq(1)
        m.d.comb += dut.start.eq(~started)
        with m.Switch(phase):
            with m.Case(0):
                m.d.comb += dut.clear.eq(1)
                m.d.sync += [sj.eq(0), phase.eq(1), sc.eq(self.scores)]
            with m.Case(1, 4):
                m.d.comb += [dut.ins.eq(phase == 1), dut.msk.eq(phase == 4)]
                m.d.sync += sj.eq(sj + 1)
                with m.If(last):
                    m.d.sync += phase.eq(phase + 1)
            with m.Case(2, 5):
                m.d.sync += phase.eq(phase + 1)
            with m.Case(3):
                m.d.comb += dut.latch.eq(1)
                m.d.sync += [sj.eq(0), phase.eq(4)]
            with m.Case(6):
                m.d.sync += [row.eq(row + 1), phase.eq(Mux(row == self.rows - 1, 7, 0))]

        # ---- properties on the finished mask row ------------------------------------------
        at = phase == 6
        keep = dut.mask_row
        pop = sum((keep[j] for j in range(N)), Const(0, N.bit_length()))
        inside = Cat(*[Const(j, N.bit_length()) < self.n_k for j in range(N)])
        self.check(m, "count", ~at | ((pop == self.k_n) & ((keep & ~inside) == 0)),
                   "exactly k_n keys kept, all below n_k")
        for j in range(N):
            for i in range(N):
                if i != j:
                    better = (s[j] > s[i]) | ((s[j] == s[i]) & (j < i))
                    self.check(m, "tie", ~at | ~(keep[j] & ~keep[i] & inside[i]) | better,
                               f"kept key {j} precedes dropped key {i}")
        # the longest row (n_k = n_max) in the "smallest" network mode (k_n > E) is reached
        big = self.k_n > N // 2 + 1
        self.cover(m, at & (row == self.rows - 1) & (self.n_k == N) & big,
                   "the last row's mask is checked (n_k = n_max, k_n > E)")
        return m
