"""Complex-function streaming engine (SPEC 4.5): GELU, softmax, layer norm.

Bit-exact twin of ``exion.golden.cfse`` (``gelu_fx``, ``gelu_requant``, ``softmax_fx``,
``layernorm_fx``); ``docs/cfse.md`` has the formats, pictures, cycles and error bounds.

Three independent streaming units share nothing but the clock; the ``cfse`` top exposes each
under its own name (``gelu__*``, ``softmax__*``, ``layernorm__*``)::

    GELU       inp (L x A-bit) -> [requant in] -> |x|, ROM (T[i], T[i+1]) -> interpolate
               -> [requant out, symmetric W-bit] -> out (L x 16-bit)           L per cycle

    softmax    x --A: write ring buffer, row max--> F1 --B: read, exp2, row sum--> F2
    layer norm x --A: write ring buffer, row sum -> mean divider--> F1
                 --B: read, (x<<8 - mu)^2 sum -> variance divider -> isqrt--> F2
    (both)       --C: read, per-element function -> L pipelined dividers -> ... --> y

A row of ``n`` values (``n`` a run-time port, 1..``n_lim``) arrives as ``ceil(n / L)`` beats
of L lanes (the last beat's lanes >= n are ignored; the outputs there are don't-care). The
three phases A, B, C work on three different rows at once, each at one beat per cycle, so a
steady stream of rows costs ``ceil(n / L)`` cycles per row: no per-row gap. Rows wait in a
ring buffer (one write port, two read ports); the per-row scalars (max, sum, mean, standard
deviation) travel in the FIFOs F1 and F2 with the row's start address. Phases A and B and the
scalar pipelines never stall; phase C stalls on the output's back-pressure; A takes a new
row only while fewer than ``rows_max`` rows are in flight and a beat only while the buffer
has room, so the FIFOs (``rows_max`` deep) cannot overflow and nothing is lost.

Long rows (``n_max < n <= n_lim``: 65535 softmax, 16384 layer norm, the golden limits) do not
fit the buffer: the host sends such a row three times and the ``restream`` FSM gives pass 1
to A, pass 2 to B and pass 3 to C in place of their buffer reads; a long row starts only on
an empty unit. The mode follows from ``n`` alone.

Cycles (first input beat to last output beat, inclusive; input offered every cycle, output
always ready): GELU ``beats + latency``; softmax / layer norm
``(rows + 2) * ceil(n / L) + fixed_cycles``, long rows ``rows * (3 * ceil(n / L) +
fixed_cycles - pc) + pc``. ``exion.golden.cfse_cycles`` is the model.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from amaranth import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from exion.cfse_tables import GELU_TFRAC, gelu_table
from exion.config import Config

from .cfse_stages import (EXP_LATENCY, FX, FX_FRAC, Exp2Lanes, PipeDiv, PipeSqrt, delay, reg,
                          rshift_round_var, saturate)
from .lod import refuse
from .util import bits_for

__all__ = ["CFSE", "GeluUnit", "SoftmaxUnit", "LayerNormUnit", "RowIssue", "gelu_par_layout", "gb_layout",
           "fx_vector", "default_n_max", "FIFO_LATENCY", "GELU_LATENCY", "LN_EPS_BITS",
           "SM_N_LIM"]

#: SyncFIFOBuffered: a row written in cycle c is offered to its reader in cycle c + 2.
FIFO_LATENCY = 2
#: GELU pipeline: requant product, Q.11 input, ROM read, interpolation, product, output.
GELU_LATENCY = 6
#: Lanes that share one copy of the GELU table (the two ports of a block RAM).
GELU_ROM_PORTS = 2
#: Width of the layer norm's ``eps`` port (Q.38 units); ``eps_q`` in 1 .. 2**48 - 1.
LN_EPS_BITS = 48
#: Longest softmax row (golden ``softmax_fx``: S < 2**39); layer norm: 16384 (``_RowUnit``).
SM_N_LIM = 65535
_GELU_SEG = 6
_LN_XFRAC = 8


def default_n_max(cfg: Config) -> int:
    """Longest row by default: ``min(cfg.k_max, 16384)``. A softmax row (keys) and a layer
    norm row (model width) both become the reduction of the next product (P.V, the next
    projection), which the config bounds by ``k_max``; 16384 is golden ``layernorm_fx``'s
    limit (64-bit variance sum). Longer rows are restreamed (three passes)."""
    return cfg.cfse_n_max


def fx_vector(lanes: int, signed_: bool = True) -> data.ArrayLayout:
    """One beat of L 16-bit values (Q.11 signed; Q.15 probabilities unsigned)."""
    return data.ArrayLayout(signed(FX) if signed_ else unsigned(FX), lanes)


def gb_layout(lanes: int, n_max: int) -> data.StructLayout:
    """One gamma / beta word of the layer norm: elements ``addr*L .. addr*L + L - 1``."""
    return data.StructLayout({"addr": unsigned(bits_for(math.ceil(n_max / lanes))),
                              "gamma": fx_vector(lanes), "beta": fx_vector(lanes)})


def gelu_par_layout() -> data.StructLayout:
    """Run-time GELU registers (hold them stable while elements are in flight).

    requant   0: ``gelu_fx`` (inputs are Q.11 16-bit, outputs Q.11);
              1: ``gelu_requant`` (inputs are A-bit accumulators, outputs W-bit H)
    in_mult, in_shift, out_mult, out_shift   ``GeluParams`` (mult < 2**15, shift <= 62)
    """
    return data.StructLayout({"requant": 1, "in_mult": unsigned(15), "in_shift": unsigned(6),
                              "out_mult": unsigned(15), "out_shift": unsigned(6)})


def _check(component, cfg: Config, n_max: int):
    if cfg.acc_width > 48:
        raise refuse(component, f"CFSE needs acc_width <= 48 (golden requant takes |v| < "
                                f"2**48), got {cfg.acc_width}")
    if not isinstance(n_max, int) or isinstance(n_max, bool) or not 1 <= n_max <= 1 << 14:
        raise refuse(component, f"CFSE n_max must be an integer in 1..16384, got {n_max!r}")


class GeluUnit(wiring.Component):
    """GELU, L elements per cycle (``gelu_fx`` or the whole ``gelu_requant`` path).

    Members
    -------
    par : In(gelu_par_layout())
        Mode and requant constants (run-time registers).
    inp : In(stream.Signature(ArrayLayout(signed(max(A, 16)), L)))
        L values per beat: A-bit accumulators (requant) or Q.11 values (``gelu_fx``).
    out : Out(stream.Signature(ArrayLayout(signed(16), L)))
        Q.11 GELU values (``gelu_fx``) or W-bit H (requant), ``latency`` advances later.

    Latency ``GELU_LATENCY`` (6); throughput one beat per cycle; the whole pipeline stalls
    while ``out`` is valid and not ready (``inp.ready`` = advance).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.in_bits = max(cfg.acc_width, FX)
        super().__init__({
            "par": In(gelu_par_layout()),
            "inp": In(stream.Signature(data.ArrayLayout(signed(self.in_bits), cfg.lanes))),
            "out": Out(stream.Signature(fx_vector(cfg.lanes))),
        })

    @property
    def latency(self) -> int:
        return GELU_LATENCY

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        adv = Signal(name="adv")
        m.d.comb += [adv.eq(~self.out.valid | self.out.ready), self.inp.ready.eq(adv)]
        v = self.inp.valid
        for k in range(GELU_LATENCY):
            v = reg(m, v, f"valid{k}", adv, control=True)
        m.d.comb += self.out.valid.eq(v)
        tab = [int(t) for t in gelu_table()]
        init = [(tab[i] & 0x3FFF) | ((tab[i + 1] & 0x3FFF) << 14) for i in range(256)]
        # One copy of the table per GELU_ROM_PORTS lanes: a block RAM has two ports, and
        # Yosys's memory mapping stops with an uncaught exception on one 16-port ROM (the
        # exion16 CFSE did not synthesize; docs/fpga.md).
        roms = []
        for i in range(-(-cfg.lanes // GELU_ROM_PORTS)):
            rom = Memory(shape=unsigned(28), depth=256, init=init)
            m.submodules[f"rom{i}"] = rom
            roms.append(rom)
        for lane in range(cfg.lanes):
            self._lane(m, roms[lane // GELU_ROM_PORTS].read_port(), self.inp.payload[lane],
                       self.out.payload[lane], lane, adv)
        return m

    def _lane(self, m, rp, acc_in, out, lane, adv):
        cfg, par = self.cfg, self.par
        rq = par.requant
        # 1: the input requant product acc * in_mult (and the raw value for gelu_fx).
        raw = reg(m, acc_in, f"raw{lane}", adv)
        prod = reg(m, acc_in * par.in_mult, f"prod_in{lane}", adv)
        # 2: Q.11 input: saturate16(rshift_round(prod, in_shift)) or the low 16 bits.
        rounded, fix = rshift_round_var(prod, par.in_shift, 6)
        m.d.comb += fix
        x = reg(m, Mux(rq, saturate(rounded, FX), raw[:FX].as_signed()), f"x{lane}", adv,
                shape=signed(FX))
        # 3: |x|, segment index into the ROM (read registered), fraction, sign.
        a = Mux(x < 0, -x, x)[:FX + 1]
        inside = a < (8 << FX_FRAC)
        ac = Mux(inside, a, 0)
        m.d.comb += [rp.addr.eq(ac[_GELU_SEG:_GELU_SEG + 8]), rp.en.eq(adv)]
        x3 = reg(m, x, f"x3_{lane}", adv)
        f3 = reg(m, ac[:_GELU_SEG], f"f3_{lane}", adv)
        in3 = reg(m, inside, f"in3_{lane}", adv)
        # 4: g15 = T[i] + rshift_round((T[i+1] - T[i]) * f, 6); g = rshift_round(g15, 4).
        t0, t1 = rp.data[:14].as_signed(), rp.data[14:].as_signed()
        g15 = t0 + (((t1 - t0) * f3 + (1 << (_GELU_SEG - 1))) >> _GELU_SEG)
        sh = GELU_TFRAC - FX_FRAC
        g = Mux(in3, (g15 + (1 << (sh - 1))) >> sh, 0)
        y = reg(m, Mux(x3 > 0, x3 + g, g)[:FX].as_signed(), f"y{lane}", adv, shape=signed(FX))
        # 5: the output requant product; 6: round, symmetric W-bit saturation (or Q.11 y).
        prod2 = reg(m, y * par.out_mult, f"prod_out{lane}", adv)
        y5 = reg(m, y, f"y5_{lane}", adv)
        rounded2, fix2 = rshift_round_var(prod2, par.out_shift, 6)
        m.d.comb += fix2
        h = Mux(rq, saturate(rounded2, cfg.width, symmetric=True), y5)
        m.d.comb += out.eq(reg(m, h, f"h{lane}", adv, shape=signed(FX)))


class RowIssue(wiring.Component):
    """Issues the words of queued rows to a buffer read port, one per advance, with no gap
    between rows when the next row is already queued.

    Members
    -------
    en : In(1)            advance
    n : In(range(n_max + 1))   row length (elements)
    row_valid : In(1), row_start : In(addr_bits), row_pop : Out(1)
        Head of the row FIFO; ``row_pop`` takes it (then its words issue from the next
        advance on). The parent latches the row's scalars when ``row_pop``.
    valid, first, last : Out(1)   a word issues this cycle (``valid`` implies ``en``)
    busy : Out(1)                 a row is being issued (state RUN)
    addr : Out(addr_bits)         its ring-buffer address
    word : Out(word_bits)         its index within the row
    rem : Out(range(n_max + 1))   elements of the row from this word on (lane l is part of
                                  the row iff l < rem)
    """

    def __init__(self, lanes: int, n_max: int, addr_bits: int):
        self.lanes = lanes
        wb = bits_for(math.ceil(n_max / lanes))
        super().__init__({"en": In(1), "n": In(range(n_max + 1)),
                          "row_valid": In(1), "row_start": In(addr_bits), "row_pop": Out(1),
                          "valid": Out(1), "first": Out(1), "last": Out(1), "busy": Out(1),
                          "addr": Out(addr_bits), "word": Out(wb),
                          "rem": Out(range(n_max + 1))})

    def elaborate(self, platform):
        m = Module()
        L = self.lanes

        def load():
            m.d.sync += [self.addr.eq(self.row_start), self.rem.eq(self.n), self.word.eq(0)]

        m.d.comb += [self.last.eq(self.rem <= L), self.first.eq(self.word == 0)]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.row_pop.eq(self.row_valid & self.en)
                with m.If(self.row_pop):
                    load()
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.valid.eq(self.en), self.busy.eq(1)]
                with m.If(self.en):
                    with m.If(self.last):
                        m.d.comb += self.row_pop.eq(self.row_valid)
                        with m.If(self.row_valid):
                            load()
                        with m.Else():
                            m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [self.addr.eq(self.addr + 1), self.rem.eq(self.rem - L),
                                     self.word.eq(self.word + 1)]
        return m


def _tree(values, op):
    level = list(values)
    while len(level) > 1:
        nxt = [op(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = nxt + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def _smax(a, b):
    return Mux(a > b, a, b)


class _RowUnit(wiring.Component):
    """Shared skeleton of the softmax and layer-norm units: ring buffer, phase A (ingest),
    the row FIFOs and the flow control (see the module docstring)."""

    #: Longest row the unit takes (the golden's limit); rows longer than ``n_max`` restream.
    N_LIM = 1 << 14

    def __init__(self, cfg: Config, n_max: int | None, members: dict):
        n_max = default_n_max(cfg) if n_max is None else n_max
        _check(self, cfg, n_max)
        self.cfg, self.n_max = cfg, n_max
        self.n_lim = max(self.N_LIM, n_max)
        self.words_max = math.ceil(n_max / cfg.lanes)
        slack = self.fixed_cycles_for(cfg) + 16
        self.rows_max = 1 << bits_for(slack)
        self.depth = 1 << bits_for(3 * self.words_max + slack)
        self.addr_bits = bits_for(self.depth)
        super().__init__({"n": In(range(self.n_lim + 1)),
                          "x": In(stream.Signature(fx_vector(cfg.lanes))), **members})

    @classmethod
    def phase_latencies(cls, cfg: Config) -> dict:
        raise NotImplementedError

    @classmethod
    def fixed_cycles_for(cls, cfg: Config) -> int:
        """``cycles - (rows + 2) * ceil(n / L)``: two FIFO hand-overs (write to offer, then
        one cycle to the first issue) and the three phase latencies."""
        return 2 * FIFO_LATENCY + sum(cls.phase_latencies(cfg).values())

    @property
    def fixed_cycles(self) -> int:
        return self.fixed_cycles_for(self.cfg)

    def constants(self) -> dict:
        return {"n_max": self.n_max, "n_lim": self.n_lim, "words_max": self.words_max, "depth": self.depth,
                "rows_max": self.rows_max, "fixed_cycles": self.fixed_cycles}

    def _skeleton(self, m, f1_layout, f2_layout):
        """Buffer, FIFOs, phase A's beat control and the phase-C row issue.

        Returns a namespace of the signals the unit's phases use."""
        L = self.cfg.lanes
        k = SimpleNamespace()
        buf = Memory(shape=fx_vector(L), depth=self.depth, init=[])
        m.submodules.buf = buf
        wp = buf.write_port()
        k.rp_b, k.rp_c = buf.read_port(), buf.read_port()
        k.f1 = SyncFIFOBuffered(width=Value.cast(Signal(f1_layout)).shape().width,
                                depth=self.rows_max)
        k.f2 = SyncFIFOBuffered(width=Value.cast(Signal(f2_layout)).shape().width,
                                depth=self.rows_max)
        m.submodules.f1, m.submodules.f2 = k.f1, k.f2
        k.f1_out = data.View(f1_layout, k.f1.r_data)
        k.f2_out = data.View(f2_layout, k.f2.r_data)
        # Phase A: beat control.
        used = Signal(range(self.depth + 1), name="used")
        inflight = Signal(range(self.rows_max + 1), name="inflight")
        a_first = Signal(init=1, name="a_first")
        a_rem = Signal(range(self.n_lim + 1), name="a_rem")
        wr = Signal(self.addr_bits, name="wr")
        a_start = Signal(self.addr_bits, name="a_start")
        cur = Mux(a_first, self.n, a_rem)
        k.a_last = Signal(name="a_last")
        k.a_first = a_first
        m.d.comb += k.a_last.eq(cur <= L)
        k.long = long = Signal(name="long")          # restream mode: n > n_max
        m.d.comb += long.eq(self.n > self.n_max)
        ok = (used < self.depth) & (~a_first | (inflight < self.rows_max))
        ok_long = ~a_first | (inflight == 0)         # a long row starts on an empty unit
        k.xfer = Signal(name="xfer")
        m.d.comb += [wp.addr.eq(wr), wp.data.eq(self.x.payload), wp.en.eq(k.xfer & ~long)]
        with m.If(k.xfer):
            m.d.sync += [wr.eq(wr + Mux(long, 0, 1)), a_first.eq(k.a_last), a_rem.eq(cur - L)]
            with m.If(a_first):
                m.d.sync += a_start.eq(wr)
        k.a_start = Mux(a_first, wr, a_start)
        k.a_mask = [cur > lane for lane in range(L)]
        # Phase C issue (stalls with the output).
        k.adv = Signal(name="adv")
        k.ic = ic = RowIssue(L, self.n_lim, self.addr_bits)
        m.submodules.issue_c = ic
        m.d.comb += [ic.n.eq(self.n), ic.row_valid.eq(k.f2.r_rdy),
                     ic.row_start.eq(k.f2_out.start), k.f2.r_en.eq(ic.row_pop),
                     k.rp_c.addr.eq(ic.addr), k.rp_c.en.eq(k.adv)]
        # Phase B issue (never stalls).
        k.ib = ib = RowIssue(L, self.n_lim, self.addr_bits)
        m.submodules.issue_b = ib
        m.d.comb += [ib.n.eq(self.n), ib.row_valid.eq(k.f1.r_rdy),
                     ib.row_start.eq(k.f1_out.start), k.f1.r_en.eq(ib.row_pop),
                     k.rp_b.addr.eq(ib.addr)]
        self._passes(m, k, ok, ok_long)
        # Flow control: buffer words and rows in flight (freed when C issues them).
        m.d.sync += used.eq(used + (k.xfer & ~long) - (ic.valid & ~long))
        m.d.sync += inflight.eq(inflight + (k.xfer & a_first) - (ic.valid & ic.last))
        return k

    def _passes(self, m, k, ok, ok_long):
        """Where an input beat goes, and the data B and C read.

        Short rows (``n <= n_max``): every beat is phase A's; B and C read the ring buffer.
        Long rows (restream, ``n > n_max``): the host sends the row three times; the FSM
        gives pass 1 to A, pass 2 to B and pass 3 to C, which take the beats in place of
        their buffer reads (same one-cycle read timing), one beat per issued word."""
        L, x, ib, ic, long = self.cfg.lanes, self.x, k.ib, k.ic, k.long
        to_a, to_b, to_c = Signal(name="to_a"), Signal(name="to_b"), Signal(name="to_c")
        with m.FSM(name="restream"):
            with m.State("A"):
                m.d.comb += to_a.eq(1)
                with m.If(long & k.xfer & k.a_last):
                    m.next = "B"
            with m.State("B"):
                m.d.comb += to_b.eq(1)
                with m.If(ib.valid & ib.last):
                    m.next = "C"
            with m.State("C"):
                m.d.comb += to_c.eq(1)
                with m.If(ic.valid & ic.last):
                    m.next = "A"
        b_take = to_b & ib.busy                       # B issues one word per beat
        c_take = to_c & ic.busy & k.adv
        m.d.comb += [
            x.ready.eq(Mux(long, (to_a & ok_long) | b_take | c_take, ok)),
            k.xfer.eq(x.valid & to_a & Mux(long, ok_long, ok)),
            ib.en.eq(Mux(long & ib.busy, x.valid & to_b, 1)),
            ic.en.eq(Mux(long & ic.busy, x.valid & c_take, k.adv))]
        xb = reg(m, x.payload, "x_b", 1)              # the read ports' one-cycle timing
        xc = reg(m, x.payload, "x_c", k.adv)
        k.b_data, k.c_data = Signal(fx_vector(L), name="b_data"), Signal(fx_vector(L),
                                                                          name="c_data")
        m.d.comb += [k.b_data.eq(Mux(long, xb, k.rp_b.data)),
                     k.c_data.eq(Mux(long, xc, k.rp_c.data))]

    @staticmethod
    def _latch(m, pop, value, name):
        """A row scalar held from its FIFO pop for the row's issue."""
        return reg(m, value, name, pop)


def _mask(rem, lanes):
    return [rem > lane for lane in range(lanes)]


class SoftmaxUnit(_RowUnit):
    """Softmax of rows of ``n`` Q.11 values -> Q.15 probabilities (``softmax_fx``).

    Parameters
    ----------
    cfg : Config   (L = ``lanes``)
    n_max : int    longest row (default :func:`default_n_max`)

    Members
    -------
    n : In(range(SM_N_LIM + 1))
        Row length, 1..65535 (hold it while rows are in flight). Rows longer than ``n_max``
        are restreamed: the host sends each such row three times (``docs/cfse.md``).
    x : In(stream.Signature(ArrayLayout(signed(16), L)))
        Rows, ``ceil(n / L)`` beats each, element ``k*L + l`` of a row in lane l of beat k.
    y : Out(stream.Signature(ArrayLayout(unsigned(16), L)))
        The probabilities, same packing, rows in order.

    Throughput one beat per cycle; cycles ``(rows + 2) * ceil(n / L) + fixed_cycles``.
    """

    N_LIM = SM_N_LIM

    def __init__(self, cfg: Config, n_max: int | None = None):
        super().__init__(cfg, n_max, {"y": Out(stream.Signature(fx_vector(cfg.lanes, False)))})

    @staticmethod
    def s_bits(n_max: int) -> int:
        return (n_max << 22).bit_length()     # S = sum(e) <= n * 2**22

    @classmethod
    def phase_latencies(cls, cfg: Config) -> dict:
        """Pipeline latencies: A's last beat -> F1 write (pa), B's last issue -> F2 write
        (pb), C's issue -> output (pc)."""
        return {"pa": 0, "pb": 1 + EXP_LATENCY, "pc": 1 + EXP_LATENCY + (16 + 1)}

    def elaborate(self, platform):
        m = Module()
        L = self.cfg.lanes
        ab, sb = self.addr_bits, self.s_bits(self.n_lim)
        f1_l = data.StructLayout({"start": unsigned(ab), "mx": signed(FX)})
        f2_l = data.StructLayout({"start": unsigned(ab), "mx": signed(FX), "s": unsigned(sb)})
        k = self._skeleton(m, f1_l, f2_l)
        # Phase A: the row maximum (lanes beyond the row count as -32768).
        red = _tree([Mux(k.a_mask[i], self.x.payload[i], -(1 << 15)) for i in range(L)], _smax)
        acc = Signal(signed(FX), name="a_max", reset_less=True)
        new = Mux(k.a_first, red, _smax(acc, red))
        with m.If(k.xfer):
            m.d.sync += acc.eq(new)
        f1_in = data.View(f1_l, k.f1.w_data)
        m.d.comb += [k.f1.w_en.eq(k.xfer & k.a_last), f1_in.start.eq(k.a_start),
                     f1_in.mx.eq(new)]
        # Phase B: read, exponentials, row sum S.
        ib, one = k.ib, 1
        b_start = self._latch(m, ib.row_pop, k.f1_out.start, "b_start")
        b_mx = self._latch(m, ib.row_pop, k.f1_out.mx, "b_mx")
        lat = 1 + EXP_LATENCY
        exp_b = Exp2Lanes(L)
        m.submodules.exp_b = exp_b
        m.d.comb += [exp_b.en.eq(one), exp_b.x.eq(k.b_data),
                     exp_b.mx.eq(delay(m, b_mx, 1, one, "b_mx1"))]
        vb = delay(m, ib.valid, lat, one, "vb", control=True)
        fb = delay(m, ib.first, lat, one, "fb")
        lb = delay(m, ib.last, lat, one, "lb")
        mb = [delay(m, x, lat, one, f"mb{i}") for i, x in enumerate(_mask(ib.rem, L))]
        tb = _tree([Mux(mb[i], exp_b.e[i], 0) for i in range(L)], lambda a, b: a + b)
        s_acc = Signal(unsigned(sb), name="b_sum", reset_less=True)
        s_new = Mux(fb, tb, s_acc + tb)[:sb]
        with m.If(vb):
            m.d.sync += s_acc.eq(s_new)
        f2_in = data.View(f2_l, k.f2.w_data)
        m.d.comb += [k.f2.w_en.eq(vb & lb), f2_in.start.eq(delay(m, b_start, lat, one, "bs")),
                     f2_in.mx.eq(delay(m, b_mx, lat, one, "bm")), f2_in.s.eq(s_new)]
        # Phase C: read, exponentials again, e * 2**15 + S // 2 divided by S.
        ic, adv = k.ic, k.adv
        c_mx = self._latch(m, ic.row_pop, k.f2_out.mx, "c_mx")
        c_s = self._latch(m, ic.row_pop, k.f2_out.s, "c_s")
        exp_c = Exp2Lanes(L)
        m.submodules.exp_c = exp_c
        m.d.comb += [exp_c.en.eq(adv), exp_c.x.eq(k.c_data),
                     exp_c.mx.eq(delay(m, c_mx, 1, adv, "c_mx1"))]
        s4 = delay(m, c_s, 1 + EXP_LATENCY, adv, "c_s4")
        vc = delay(m, ic.valid, 1 + EXP_LATENCY, adv, "vc", control=True)
        for i in range(L):
            div = PipeDiv(sb + 16, sb, 16)
            m.submodules[f"div{i}"] = div
            m.d.comb += [div.en.eq(adv), div.num.eq((exp_c.e[i] << 15) + (s4 >> 1)),
                         div.den.eq(s4), self.y.payload[i].eq(div.q)]
        vy = delay(m, vc, div.latency, adv, "vy", control=True)
        m.d.comb += [self.y.valid.eq(vy), adv.eq(~self.y.valid | self.y.ready)]
        return m


class LayerNormUnit(_RowUnit):
    """Layer norm of rows of ``n`` Q.11 values with Q.11 gamma / beta (``layernorm_fx``).

    Members
    -------
    n : In(range(16385))       row length 1..16384 (hold it while rows are in flight); rows
                               longer than ``n_max`` are sent three times (restream)
    eps : In(LN_EPS_BITS)      ``eps_q`` (Q.38 units), 1 .. 2**48 - 1 (hold it likewise)
    gb : In(stream.Signature(gb_layout, always_ready=True))
        Write gamma / beta word ``addr`` (elements ``addr*L .. addr*L+L-1``); load
        ``ceil(n / L)`` words before the rows that use them.
    x : In(stream.Signature(ArrayLayout(signed(16), L)))
    y : Out(stream.Signature(ArrayLayout(signed(16), L)))

    Throughput one beat per cycle; cycles ``(rows + 2) * ceil(n / L) + fixed_cycles``.
    """

    def __init__(self, cfg: Config, n_max: int | None = None):
        n_max_ = default_n_max(cfg) if n_max is None else n_max
        _check(self, cfg, n_max_)
        self.gb_layout = gb_layout(cfg.lanes, max(self.N_LIM, n_max_))
        super().__init__(cfg, n_max, {
            "eps": In(LN_EPS_BITS),
            "gb": In(stream.Signature(self.gb_layout, always_ready=True)),
            "y": Out(stream.Signature(fx_vector(cfg.lanes)))})

    @staticmethod
    def widths(n_max: int) -> dict:
        nb = n_max.bit_length()
        return {"sum": FX + nb + 1,           # sum(x), |.| <= n * 2**15
                "a": FX + nb + 11,            # 2 * sum(x << 8) + n
                "mu_q": 24,                   # |mu| < 2**23 (+ the NOT trick's 1)
                "s2": 48 + nb,                # sum(d * d), d * d < 2**48
                "var_q": 48,                  # var <= max d*d < 2**48
                "root": 25,                   # isqrt(var + eps) < 2**25
                "num": 37,                    # |d * 2**11 + sd // 2| < 2**36
                "n_q": 15}                    # |n| saturates at 2**15

    @classmethod
    def phase_latencies(cls, cfg: Config) -> dict:
        """As :meth:`SoftmaxUnit.phase_latencies` (the widths that matter are fixed)."""
        w = cls.widths(1)
        return {"pa": 1 + (w["mu_q"] + 1) + 1,                      # NOT, divider, mean
                "pb": 3 + (w["var_q"] + 1) + 1 + (w["root"] + 1),   # read, d, d*d; P2
                "pc": 1 + 1 + (w["n_q"] + 1) + 3}                  # read, NOT, divider, n,
                                                                   # n * gamma, output

    def elaborate(self, platform):
        m = Module()
        w = self.widths(self.n_lim)
        ab = self.addr_bits
        f1_l = data.StructLayout({"start": unsigned(ab), "mu": signed(25)})
        f2_l = data.StructLayout({"start": unsigned(ab), "mu": signed(25),
                                  "sd": unsigned(w["root"])})
        k = self._skeleton(m, f1_l, f2_l)
        self._phase_a(m, k, w, f1_l)
        self._phase_b(m, k, w, f2_l)
        self._phase_c(m, k, w)
        return m

    def _floor_div(self, m, a, den, qbits, en, name, lat_in=1):
        """``floor(a / den)`` for signed ``a`` through an unsigned divider: for a < 0,
        ``floor(a / den) = ~(~a // den)``. Returns (quotient, latency incl. the NOT stages)."""
        neg = reg(m, a < 0, f"{name}_neg", en)
        ua = reg(m, Mux(a < 0, ~a, a).as_unsigned()[:len(Value.cast(a)) - 1],
                 f"{name}_ua", en)
        dn = reg(m, den, f"{name}_den", en)
        div = PipeDiv(len(ua), len(Value.cast(den)), qbits)
        m.submodules[f"{name}_div"] = div
        m.d.comb += [div.en.eq(en), div.num.eq(ua), div.den.eq(dn)]
        negd = delay(m, neg, div.latency, en, f"{name}_negd")
        qs = Cat(div.q, 0).as_signed()
        q = Mux(negd, ~qs, qs)
        return q, 1 + div.latency

    def _phase_a(self, m, k, w, f1_l):
        L, one = self.cfg.lanes, 1
        red = _tree([Mux(k.a_mask[i], self.x.payload[i], 0) for i in range(L)],
                    lambda a, b: a + b)
        acc = Signal(signed(w["sum"]), name="a_sum", reset_less=True)
        new = Mux(k.a_first, red, acc + red)
        with m.If(k.xfer):
            m.d.sync += acc.eq(new)
        a = Signal(signed(w["a"]), name="a_num")      # 2 * sum(x << 8) + n
        m.d.comb += a.eq((new << 9) + self.n)
        q, lat = self._floor_div(m, a, self.n << 1, w["mu_q"], one, "mu")
        mu = reg(m, q, "mu", one, shape=signed(25))
        v = delay(m, k.xfer & k.a_last, lat + 1, one, "va", control=True)
        f1_in = data.View(f1_l, k.f1.w_data)
        m.d.comb += [k.f1.w_en.eq(v), f1_in.start.eq(delay(m, k.a_start, lat + 1, one, "as")),
                     f1_in.mu.eq(mu)]

    def _phase_b(self, m, k, w, f2_l):
        L, one, ib = self.cfg.lanes, 1, k.ib
        b_start = self._latch(m, ib.row_pop, k.f1_out.start, "b_start")
        b_mu = self._latch(m, ib.row_pop, k.f1_out.mu, "b_mu")
        mu1 = delay(m, b_mu, 1, one, "b_mu1")
        sq = []
        for i in range(L):
            d = reg(m, (k.b_data[i] << _LN_XFRAC) - mu1, f"b_d{i}", one, shape=signed(26))
            sq.append(reg(m, (d * d).as_unsigned()[:50], f"b_sq{i}", one))
        lat = 3
        vb = delay(m, ib.valid, lat, one, "vb", control=True)
        fb = delay(m, ib.first, lat, one, "fb")
        lb = delay(m, ib.last, lat, one, "lb")
        mb = [delay(m, x, lat, one, f"mb{i}") for i, x in enumerate(_mask(ib.rem, L))]
        t = _tree([Mux(mb[i], sq[i], 0) for i in range(L)], lambda a, b: a + b)
        s2 = Signal(unsigned(w["s2"]), name="b_s2", reset_less=True)
        s2_new = Mux(fb, t, s2 + t)[:w["s2"]]
        with m.If(vb):
            m.d.sync += s2.eq(s2_new)
        # P2: var = S2 // n; sd = isqrt(var + eps).
        div = PipeDiv(w["s2"], len(self.n), w["var_q"])
        m.submodules.var_div = div
        m.d.comb += [div.en.eq(one), div.num.eq(s2_new), div.den.eq(self.n)]
        ve = reg(m, div.q + self.eps, "var_eps", one)
        sqrt = PipeSqrt(w["root"])
        m.submodules.isqrt = sqrt
        m.d.comb += [sqrt.en.eq(one), sqrt.v.eq(ve)]
        p2 = div.latency + 1 + sqrt.latency
        f2_in = data.View(f2_l, k.f2.w_data)
        m.d.comb += [k.f2.w_en.eq(delay(m, vb & lb, p2, one, "v2", control=True)),
                     f2_in.start.eq(delay(m, b_start, lat + p2, one, "bs")),
                     f2_in.mu.eq(delay(m, b_mu, lat + p2, one, "bm")),
                     f2_in.sd.eq(sqrt.root)]

    def _phase_c(self, m, k, w):
        L, ic, adv = self.cfg.lanes, k.ic, k.adv
        gbm = Memory(shape=data.StructLayout({"gamma": fx_vector(L), "beta": fx_vector(L)}),
                     depth=math.ceil(self.n_lim / L), init=[])
        m.submodules.gb_mem = gbm
        gw, gr = gbm.write_port(), gbm.read_port()
        m.d.comb += [gw.addr.eq(self.gb.payload.addr), gw.data.gamma.eq(self.gb.payload.gamma),
                     gw.data.beta.eq(self.gb.payload.beta), gw.en.eq(self.gb.valid),
                     gr.addr.eq(ic.word), gr.en.eq(adv)]
        c_mu = self._latch(m, ic.row_pop, k.f2_out.mu, "c_mu")
        c_sd = self._latch(m, ic.row_pop, k.f2_out.sd, "c_sd")
        mu1 = delay(m, c_mu, 1, adv, "c_mu1")
        sd1 = delay(m, c_sd, 1, adv, "c_sd1")
        lat = None
        for i in range(L):
            d = (k.c_data[i] << _LN_XFRAC) - mu1
            num = Signal(signed(w["num"] + 1), name=f"c_num{i}")
            m.d.comb += num.eq((d << FX_FRAC) + (sd1 >> 1))
            q, lat = self._floor_div(m, num, sd1, w["n_q"], adv, f"n{i}")
            nq = reg(m, q, f"c_n{i}", adv, shape=signed(FX))
            g = delay(m, gr.data.gamma[i], lat + 1, adv, f"c_g{i}")
            b = delay(m, gr.data.beta[i], lat + 2, adv, f"c_b{i}")
            prod = reg(m, nq * g, f"c_prod{i}", adv)
            out = saturate(((prod + (1 << (FX_FRAC - 1))) >> FX_FRAC) + b, FX)
            m.d.comb += self.y.payload[i].eq(reg(m, out, f"c_y{i}", adv, shape=signed(FX)))
        vy = delay(m, ic.valid, 1 + lat + 3, adv, "vy", control=True)
        m.d.comb += [self.y.valid.eq(vy), adv.eq(~self.y.valid | self.y.ready)]


class CFSE(wiring.Component):
    """The CFSE block: a GELU, a softmax and a layer-norm unit side by side.

    Parameters
    ----------
    cfg : Config
        L = ``lanes`` (elements per beat of every unit), A = ``acc_width`` (<= 48: the GELU
        requant input), W = ``width`` (GELU requant output).
    n_max : int
        Longest softmax / layer-norm row (default :func:`default_n_max`, 1..16384).

    Members
    -------
    gelu : Out(GeluUnit.signature)          ``gelu__par``, ``gelu__inp``, ``gelu__out``
    softmax : Out(SoftmaxUnit.signature)    ``softmax__n``, ``softmax__x``, ``softmax__y``
    layernorm : Out(LayerNormUnit.signature)
        ``layernorm__n``, ``layernorm__eps``, ``layernorm__gb``, ``layernorm__x``,
        ``layernorm__y``

    Each unit: one beat of L elements per cycle; latencies and cycles in ``constants()``.
    """

    def __init__(self, cfg: Config, n_max: int | None = None):
        self.cfg = cfg
        n_max = default_n_max(cfg) if n_max is None else n_max
        _check(self, cfg, n_max)
        self._gelu = GeluUnit(cfg)
        self._sm = SoftmaxUnit(cfg, n_max)
        self._ln = LayerNormUnit(cfg, n_max)
        super().__init__({"gelu": Out(self._gelu.signature),
                          "softmax": Out(self._sm.signature),
                          "layernorm": Out(self._ln.signature)})

    @property
    def latency(self) -> int:
        """The GELU unit's latency."""
        return GELU_LATENCY

    def constants(self) -> dict:
        return {"lanes": self.cfg.lanes, "gelu_latency": GELU_LATENCY,
                "softmax": self._sm.constants(), "layernorm": self._ln.constants()}

    def elaborate(self, platform):
        m = Module()
        m.submodules.gelu = self._gelu
        m.submodules.softmax = self._sm
        m.submodules.layernorm = self._ln
        wiring.connect(m, wiring.flipped(self.gelu), self._gelu)
        wiring.connect(m, wiring.flipped(self.softmax), self._sm)
        wiring.connect(m, wiring.flipped(self.layernorm), self._ln)
        return m
