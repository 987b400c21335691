"""A small EPRE selector (issue 18, area): bitwise radix (threshold) search over a banked
score buffer instead of a sorted insertion network.

``EpreSelector`` keeps n_max / 2 + 1 sorted (score, index) entries, each with an A-bit
comparator and a shifting register pair: 35,477 LUT4 and 6,719 FF on ECP5 for n_max = 256
(docs/epre.md, "Area"). ``EpreRadixSelector`` keeps no keys: the row's scores stay in the
score buffer (block RAM / LUTRAM, banked by ``key % P`` so that P keys are read per cycle)
and the kN-th element is found digit by digit, MSB first, b bits a digit (``bits``,
``cfg.epre_radix_bit_count``; issue 19: b = 1 until 2026-12-07), one pass per digit:

* scores are compared as unsigned keys ``u = s XOR 2**(A-1)`` (same order as signed s),
  zero-padded to G = ceil(A / b) digits;
* pass for digit position i: ``c_v`` = number of keys whose digits above i equal the
  prefix found so far and whose digit i is >= v, for v = 1 .. 2^b - 1 (2^b - 1 counters).
  The digit D of T is the largest v with ``above + c_v >= kN`` (0 if none; the counts fall
  with v), and ``above += c_(D+1)`` (0 for D = 2^b - 1): ``above`` counts keys strictly
  above the candidate range;
* after G passes T is the kN-th largest score and ``above`` = #{s > T}; a last pass emits
  the mask: key j is kept iff ``s_j > T`` or ``s_j == T`` and fewer than ``kN - above``
  keys equal to T precede it (index order).

That is exactly the stable-sort rule of ``golden.predict.topk_select`` (all scores above
the kN-th value, then equal scores by ascending index) = ``threshold_select``'s
``s_j > T or (s_j == T and j <= t)``. The dominant-row gap test uses the same two-entry
tracker as ``EpreSelector``, fed by the stage-2 score stream (``s_v`` / ``s_score`` /
``s_key``, one key per cycle, as stage 2 produces them). Dominant rows keep only the top-1
key (``top1``) or every key (``keep_all``).

Cycles, from the ``go`` cycle to the ``done`` cycle inclusive (the buffer read has one
cycle latency), ``golden.cycles.epre_radix_select_cycles``::

    G * (ceil(N_k / P) + 2) + ceil(N_k / P) + 3     (N_k >= 1, G = ceil(A / b))

Measured by ``bench/epre_area.py`` and checked bit-exact against
``golden.predict.threshold_select`` / ``dominant_rows`` in ``tests/test_epre_radix.py``;
``EPRE`` uses U of them in lockstep when ``cfg.epre_selector_kind == "radix"``
(``hw.epre.EPRE._radix``: one shared read of its P-bank score buffer, selector u takes
column u; docs/epre.md, "Selection").
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from exion.config import Config

from .util import bits_for as _bits

__all__ = ["EpreRadixSelector"]


class EpreRadixSelector(wiring.Component):
    """Top-kN of one query row by radix search over a banked score buffer, plus the
    dominant-row gap test (module docstring).

    Parameters
    ----------
    cfg : Config
        ``acc_width`` A is the score width.
    n_max : int
        Largest key count N_k.
    ports : int
        P, keys read per cycle (the score buffer has P banks, key j in bank ``j % P`` at
        address ``j // P``).
    bits : int or None
        b, threshold bits decided per pass (1..4; default ``cfg.epre_radix_bit_count``).

    Members
    -------
    start : In(1); k_n, n_k : In(key count)
        A run starts: latch kN and N_k.
    keep_all, q_th_en : In(1); q_th : In(A + 1)
        Dominant polarity, gap rule on, threshold (as ``EpreSelector``).
    clear : In(1)
        A row starts (empty tracker).
    s_v : In(1); s_score : In(signed(A)); s_key : In(key bits)
        Stage-2 stream: key ``s_key``'s score of this row (feeds the top-2 tracker).
    go : In(1)
        The row's scores are in the buffer: search, then emit the mask row.
    addr : Out(word bits); rd : Out(1)
        Buffer read (all P banks at ``addr``); data expected on ``rdata`` one cycle later.
    rdata : In(ArrayLayout(signed(A), P))
    mask_row : Out(n_max); dominant : Out(1)
    busy : Out(1); done : Out(1)
        ``done`` is high for one cycle when ``mask_row`` / ``dominant`` are final.
    """

    def __init__(self, cfg: Config, n_max: int, ports: int, bits: int | None = None):
        if not (isinstance(ports, int) and 1 <= ports <= n_max):
            raise ValueError(f"ports = {ports!r} must be an integer in 1..n_max ({n_max})")
        bits = cfg.epre_radix_bit_count if bits is None else bits
        if not (isinstance(bits, int) and not isinstance(bits, bool) and 1 <= bits <= 4):
            raise ValueError(f"bits = {bits!r} must be an integer in 1..4")
        self.cfg, self.n_max, self.ports, self.bits = cfg, n_max, ports, bits
        self.words = -(-n_max // ports)
        self.digits = -(-cfg.acc_width // bits)           # passes G = ceil(A / b)
        A = cfg.acc_width
        super().__init__({
            "start": In(1), "k_n": In(range(n_max + 1)), "n_k": In(range(n_max + 1)),
            "keep_all": In(1), "q_th_en": In(1), "q_th": In(A + 1),
            "clear": In(1), "s_v": In(1), "s_score": In(signed(A)),
            "s_key": In(range(n_max + 1)), "go": In(1),
            # >= 1 address bit: a zero-width port is [-1:0] in Verilog (Verilator ASCRANGE)
            "addr": Out(range(max(2, self.words))), "rd": Out(1),
            "rdata": In(data.ArrayLayout(signed(A), ports)),
            "mask_row": Out(n_max), "dominant": Out(1), "busy": Out(1), "done": Out(1)})

    def _tracker(self, m, A, ib):
        """Largest score (lowest index) and second largest value of the stream."""
        max1 = Signal(signed(A), name="max1", reset_less=True)
        idx1 = Signal(ib, name="idx1", reset_less=True)
        max2 = Signal(signed(A), name="max2", reset_less=True)
        have1, have2 = Signal(name="have1"), Signal(name="have2")
        with m.If(self.clear):
            m.d.sync += [have1.eq(0), have2.eq(0)]
        with m.Elif(self.s_v):
            with m.If(~have1 | (self.s_score > max1)):
                m.d.sync += [max1.eq(self.s_score), idx1.eq(self.s_key), have1.eq(1),
                             max2.eq(max1), have2.eq(have1)]
            with m.Elif(~have2 | (self.s_score > max2)):
                m.d.sync += [max2.eq(self.s_score), have2.eq(1)]
        gap = Signal(unsigned(A + 1), name="gap")
        m.d.comb += gap.eq((max1 - max2).as_unsigned())
        return idx1, self.q_th_en & (~have2 | (gap >= self.q_th))

    @staticmethod
    def _match(u, pfx, hmask):
        """Key ``u`` is a candidate of the pass: its bits above the pass's digit (``hmask``)
        equal the prefix found so far (in the mask pass, ``hmask`` is every bit: u == T)."""
        return ((u ^ pfx) & hmask) == 0

    def elaborate(self, platform):
        A, P, nw_max = self.cfg.acc_width, self.ports, self.words
        B, G = self.bits, self.digits
        Ap, V = G * B, (1 << B) - 1                        # padded width, digit values
        cb = range(self.n_max + 1)
        ib = _bits(self.n_max)
        m = Module()
        k_n, n_k = Signal(cb, name="r_kn"), Signal(cb, name="r_nk")
        with m.If(self.start):
            m.d.sync += [k_n.eq(self.k_n), n_k.eq(self.n_k)]
        idx1, dom_now = self._tracker(m, A, ib)
        nw = Signal(range(nw_max + 1), name="nw")         # ceil(N_k / P)
        m.d.comb += nw.eq((n_k + (P - 1)) // P)

        pfx = Signal(Ap, name="pfx")                       # T's digits found so far
        sel = Signal(G, name="sel")                        # one-hot: the digit of this pass
        hi = Signal(G, name="hi")                          # digits above it
        hmask = Signal(Ap, name="hmask")
        m.d.comb += hmask.eq(Cat(hi[k].replicate(B) for k in range(G)))
        above = Signal(cb, name="above")
        cnt = [Signal(cb, name=f"cnt{v}") for v in range(1, V + 1)]   # keys with digit >= v
        eq_seen = Signal(cb, name="eq_seen")
        w = Signal(range(nw_max + 1), name="w")
        w1 = Signal(range(nw_max + 1), name="w1")
        v1 = Signal(name="v1")
        masking = Signal(name="masking")
        mrow = Signal(nw_max * P, name="mrow")
        m.d.comb += [self.addr.eq(w), self.mask_row.eq(mrow[:self.n_max])]
        m.d.sync += [v1.eq(self.rd), w1.eq(w)]

        # per-lane compares on the word read one cycle ago
        sign = Const(1 << (A - 1), A)
        u = [Signal(Ap, name=f"u{p}") for p in range(P)]   # zero-padded to G digits
        val = [Signal(name=f"val{p}") for p in range(P)]
        # lane p of word w1 is key w1 * P + p: decode N_k and the top-1 index once per
        # word instead of comparing every lane's key index
        nk_w, nk_p = n_k // P, n_k % P
        top_w, top_p = idx1 // P, idx1 % P
        for p in range(P):
            m.d.comb += [u[p].eq(self.rdata[p].as_unsigned() ^ sign),
                         val[p].eq((w1 < nk_w) | ((w1 == nk_w) & (p < nk_p)))]
        # signals, not expressions: every use of a slice of an expression re-emits the
        # whole expression, and ``run`` below uses the P slices O(P^2) times (exion16, P =
        # 32: 76,000 cells per selector before Yosys merges them, 14 GB to generate the EPRE)
        cand = Signal(P, name="cand")                      # candidates (mask pass: == T)
        m.d.comb += cand.eq(Cat(val[p] & self._match(u[p], pfx, hmask) for p in range(P)))
        digit = [Signal(B, name=f"dig{p}") for p in range(P)]     # the pass's digit
        for p in range(P):
            m.d.comb += digit[p].eq(_or_digits(u[p], sel, B, G))
        hits = []                                          # candidates with digit >= v
        for v in range(1, V + 1):
            h = Signal(P, name=f"hit{v}")
            m.d.comb += h.eq(Cat(cand[p] & (digit[p] >= v) for p in range(P)))
            hits.append(h)
        gt = [val[p] & (u[p] > pfx) for p in range(P)]
        eq = [cand[p] for p in range(P)]
        rem = Signal(signed(len(cb) + 1), name="rem")       # equal keys still to keep
        m.d.comb += rem.eq(k_n - above - eq_seen)
        keep = []
        run = Const(0, len(cb))
        for p in range(P):
            kp = Signal(name=f"keep{p}")
            m.d.comb += kp.eq(Mux(self.dominant,
                                  val[p] & (self.keep_all | ((w1 == top_w) & (top_p == p))),
                                  (k_n != 0) & (gt[p] | (eq[p] & (run < rem)))))
            keep.append(kp)
            nxt = Signal(cb, name=f"run{p + 1}")    # equal keys in lanes 0..p (<= P <= n_max)
            m.d.comb += nxt.eq(run + eq[p])
            run = nxt
        with m.If(v1 & ~masking):
            m.d.sync += [c.eq(c + sum(h[p] for p in range(P))) for c, h in zip(cnt, hits)]
        with m.If(v1 & masking):
            m.d.sync += [mrow.word_select(w1, P).eq(Cat(keep)), eq_seen.eq(eq_seen + run)]

        # the pass's digit D: the largest v with above + #{digit >= v} >= kN (the counts
        # fall with v, so D = how many v pass); keys with a larger digit are above T
        ok = [Signal(name=f"ok{v}") for v in range(1, V + 1)]
        m.d.comb += [o.eq(above + c >= k_n) for o, c in zip(ok, cnt)]
        dsel = Signal(B, name="dsel")
        m.d.comb += dsel.eq(sum(ok))
        gain = Signal(cb, name="gain")                      # #{digit > D}
        m.d.comb += gain.eq(0)
        for v in range(1, V + 1):
            with m.If(dsel == v - 1):
                m.d.comb += gain.eq(cnt[v - 1])

        with m.FSM(name="rsel"):
            with m.State("IDLE"):
                with m.If(self.go):
                    m.d.sync += [pfx.eq(0), sel.eq(1 << (G - 1)), hi.eq(0),
                                 above.eq(0), w.eq(0), masking.eq(0),
                                 eq_seen.eq(0), mrow.eq(0), self.dominant.eq(dom_now)]
                    m.d.sync += [c.eq(0) for c in cnt]
                    m.next = "PASS"
            with m.State("PASS"):
                m.d.comb += [self.rd.eq(1), self.busy.eq(1)]
                m.d.sync += w.eq(w + 1)
                with m.If(w + 1 == nw):
                    m.next = "TAIL"
            with m.State("TAIL"):                  # last word's count / mask bits land
                m.d.comb += self.busy.eq(1)
                m.d.sync += w.eq(0)
                with m.If(masking):
                    m.next = "DONE"
                with m.Else():
                    m.next = "DEC"
            with m.State("DEC"):                   # decide the pass's digit
                m.d.comb += self.busy.eq(1)
                m.d.sync += [pfx.eq(pfx | Cat(Mux(sel[k], dsel, 0) for k in range(G))),
                             above.eq(above + gain), sel.eq(sel >> 1), hi.eq(hi | sel)]
                m.d.sync += [c.eq(0) for c in cnt]
                with m.If(sel[0]):
                    m.d.sync += masking.eq(1)
                m.next = "PASS"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        return m


def _or_digits(u, sel, B, G):
    """The digit of ``u`` (G digits of B bits) that the one-hot ``sel`` names."""
    out = Const(0, B)
    for k in range(G):
        out = out | (u[k * B:(k + 1) * B] & sel[k].replicate(B))
    return out
