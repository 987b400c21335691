"""The EPRE's stages (``hw.epre.EPRE`` composes them with its memories)::

    run --> EpreControl (FSM: stage 1 Q/K, stage 2 per row group, selection per row)
              | addresses                         | strobes
              v                                   v
    X / W / Qh / Kh --> EpreLanes (LOD, shift-add products, accumulate) --> EpreWriteback
                        (shift, saturate -> Qh / Kh; scores -> score buffer) ... score buffer
                        --> EpreSelector (insertion network, top-2 gap, mask row, flags)

Cycle counts are ``exion.golden.cycles.epre_run_cycles`` (exact).
"""

from __future__ import annotations

from amaranth import Const, Instance, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from exion.config import Config

from .lod import LOD, approx_product, lod_layout
from .util import bits_for as _bits
from .util import black_box
from .util import pad_mux as _mux

__all__ = ["epre_word", "EPRE_UNIT_MODULE", "epre_unit_signature", "EpreUnit", "EpreLanes",
           "EpreWriteback", "EpreSelector", "EpreControl"]


def epre_word(cfg: Config) -> data.ArrayLayout:
    """One EPRE memory word: ``cfg.epre_lane_count`` (Le) W-bit elements, one per lane."""
    return data.ArrayLayout(signed(cfg.width), cfg.epre_lane_count)


#: Verilog module name of one EPRE dot-product unit when ``EpreLanes`` instantiates its
#: units as black boxes (``unit_boxes``): the synthesis flow generates :class:`EpreUnit`
#: once under this name (``exion.gen.verilog.generate``, ``box_epre_units``).
EPRE_UNIT_MODULE = "exion_epre_unit"


def epre_unit_signature(cfg: Config) -> wiring.Signature:
    """The ports of one :class:`EpreUnit` (also those of its black-box instance)."""
    word = epre_word(cfg)
    return wiring.Signature({
        "x": In(word), "qh": In(word), "ph_s2": In(1), "two_step": In(1),
        "b": In(data.ArrayLayout(lod_layout(cfg.width), cfg.epre_lane_count)),
        "v": In(1), "first": In(1), "acc": Out(signed(cfg.acc_width))})


class EpreUnit(wiring.Component):
    """One dot-product unit of :class:`EpreLanes`: its row word's L LODs, the L shift-add
    products with the broadcast word's LODs, their sum and the accumulator.

    Parameters
    ----------
    cfg : Config

    Members
    -------
    x, qh : In(word)
        The unit's X / Qh bank read data (the lanes' cycle 1).
    ph_s2 : In(1)
        Stage 2: the row word is ``qh``, else ``x``.
    two_step : In(1)
        TS-LOD for the row word's detectors (ignored with ``cfg.lod_terms == 1``).
    b : In(ArrayLayout(lod_layout(W), L))
        The broadcast word's registered LODs (cycle 2, shared by every unit).
    v, first : In(1)
        ``psum`` holds a beat (cycle 3), the first of its dot product.
    acc : Out(signed(A))
        The accumulator: ``psum`` (``first``) or ``acc + psum`` after each ``v`` cycle.

    Latency: the row word's LODs are registered (1 cycle), the products' sum ``psum``
    (1 cycle), then accumulated (1 cycle): ``acc`` holds a beat's sum 3 cycles after its
    ``x`` / ``qh``, when ``b`` arrives 1 cycle after them and ``v`` 2 cycles after them.
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        super().__init__(epre_unit_signature(cfg))

    def elaborate(self, platform):
        cfg = self.cfg
        L, W, A, terms = cfg.epre_lane_count, cfg.width, cfg.acc_width, cfg.lod_terms
        m = Module()
        a_word = Mux(self.ph_s2, Value.cast(self.qh), Value.cast(self.x))
        la = _lod_regs(m, a_word, "a", cfg, self.two_step)
        psum_w = 2 * W + 1 + ceil_log2(L) if L > 1 else 2 * W + 1
        psum = Signal(signed(psum_w), name="psum", reset_less=True)
        total = approx_product(la[0], self.b[0], W, terms)
        for lane in range(1, L):
            total = total + approx_product(la[lane], self.b[lane], W, terms)
        m.d.sync += psum.eq(total)
        acc = Signal(signed(A), name="acc", reset_less=True)
        with m.If(self.v):
            m.d.sync += acc.eq(Mux(self.first, psum, acc + psum))
        m.d.comb += self.acc.eq(acc)
        return m


def _lod_regs(m: Module, raw, prefix: str, cfg: Config, two_step) -> list:
    """L detectors (``LOD``) on the W-bit elements of ``raw``, each output registered."""
    L, W, terms = cfg.epre_lane_count, cfg.width, cfg.lod_terms
    lay = lod_layout(W)
    two_step = two_step if terms == 2 else Const(0, 1)
    regs = []
    for lane in range(L):
        det = LOD(W, terms)
        m.submodules[f"{prefix}_l{lane}"] = det
        m.d.comb += [det.value.eq(raw[lane * W:(lane + 1) * W].as_signed()),
                     det.two_step.eq(two_step)]
        reg = Signal(lay, name=f"{prefix}_lod{lane}", reset_less=True)
        m.d.sync += reg.eq(det.out)
        regs.append(reg)
    return regs


def _unit_box(cfg: Config, unit) -> Instance:
    """A black-box instance of module :data:`EPRE_UNIT_MODULE` on the ports of ``unit`` (an
    interface made by ``epre_unit_signature(cfg).create()``)."""
    return black_box(EPRE_UNIT_MODULE, epre_unit_signature(cfg), unit)


class EpreLanes(wiring.Component):
    """U dot-product units of L shift-add lanes: read -> LOD -> products -> accumulate.

    Every issued beat multiplies (LOD / TS-LOD approximations, shifts and adds only) unit u's
    row word ``a[u]`` (X in stage 1, Qh in stage 2) with one broadcast word (a W^T row in
    stage 1, the Kh row of key j from bank ``j mod U`` in stage 2) and accumulates exactly
    in A bits; ``first`` restarts the sum. The broadcast word's L LODs are shared here; each
    unit is an :class:`EpreUnit`.

    Parameters
    ----------
    cfg : Config
    units : int
    unit_boxes : bool
        Instantiate each unit as a black box of module :data:`EPRE_UNIT_MODULE` (same
        ports) instead of elaborating it: for hierarchical synthesis, where the unit is
        generated once on its own (``exion.gen.verilog.generate(..., box_epre_units=True)``
        appends it). Same circuit once that module is supplied.

    Members
    -------
    issue, first, last : In(1)
        A beat is read this cycle, the first / last of its dot product.
    jc : In(range(units))
        Stage 2: the Kh bank of the broadcast key.
    ph_s2 : In(1)
        Stage 2 (a = Qh, b = Kh) rather than stage 1 (a = X, b = W^T).
    two_step : In(1)
        TS-LOD (only with ``cfg.lod_terms == 2``).
    x, qh, kh : In(ArrayLayout(word, units)); w : In(word)
        Memory read data (one cycle after ``issue``).
    acc : Out(ArrayLayout(signed(A), units))
    res_v : Out(1)
        ``acc`` holds a finished dot product.

    Latency: ``cfg.epre_pipe`` cycles from the last beat's issue to ``res_v``.
    """

    def __init__(self, cfg: Config, units: int, unit_boxes: bool = False):
        self.cfg, self.units, self.unit_boxes = cfg, units, unit_boxes
        word = epre_word(cfg)
        arr = data.ArrayLayout(word, units)
        super().__init__({
            "issue": In(1), "first": In(1), "last": In(1), "jc": In(range(units)),
            "ph_s2": In(1), "two_step": In(1), "x": In(arr), "qh": In(arr), "kh": In(arr),
            "w": In(word), "acc": Out(data.ArrayLayout(signed(cfg.acc_width), units)),
            "res_v": Out(1)})

    def elaborate(self, platform):
        cfg, U = self.cfg, self.units
        m = Module()
        v1, first1, last1 = Signal(), Signal(), Signal()
        jc1 = Signal.like(self.jc, name="jc1")
        m.d.sync += [v1.eq(self.issue), first1.eq(self.first), last1.eq(self.last),
                     jc1.eq(self.jc)]
        kh = [self.kh[u] for u in range(U)]
        b_word = Mux(self.ph_s2, Value.cast(_mux(kh, jc1)), Value.cast(self.w))
        lb = _lod_regs(m, b_word, "b", cfg, self.two_step)
        v2, first2, last2 = Signal(), Signal(), Signal()
        m.d.sync += [v2.eq(v1), first2.eq(first1), last2.eq(last1)]
        v3, first3, last3 = Signal(), Signal(), Signal()     # psum valid
        m.d.sync += [v3.eq(v2), first3.eq(first2), last3.eq(last2)]
        m.d.sync += self.res_v.eq(v3 & last3)
        for u in range(U):
            if self.unit_boxes:
                unit = epre_unit_signature(cfg).create(path=(f"unit{u}",))
                m.submodules[f"unit{u}"] = _unit_box(cfg, unit)
            else:
                m.submodules[f"unit{u}"] = unit = EpreUnit(cfg)
            m.d.comb += [unit.x.eq(self.x[u]), unit.qh.eq(self.qh[u]),
                         unit.ph_s2.eq(self.ph_s2), unit.two_step.eq(self.two_step),
                         unit.v.eq(v3), unit.first.eq(first3), self.acc[u].eq(unit.acc)]
            m.d.comb += [unit.b[lane].eq(lb[lane]) for lane in range(cfg.epre_lane_count)]
        return m


class EpreWriteback(wiring.Component):
    """Results to memory: stage 1 shifts, saturates and packs L results per Qh / Kh word;
    stage 2 writes each key's U scores to the score buffer and the ``score`` tap.

    Parameters
    ----------
    cfg : Config
    units, h_bits, n_max, g_bits, j_range : sizes (``hw.epre.EpreSizes``)

    Members
    -------
    res_v : In(1); acc : In(ArrayLayout(signed(A), units))
        A finished dot product per unit.
    ph_k, ph_s2 : In(1)
        Stage 1 K (else Q) / stage 2.
    shift_q, shift_k : In(shift bits); d_head, h_words : In(...)
        Run parameters.
    group : In(g_bits)
        Stage 2's row group (the ``score`` tap's label).
    clear_all, clear_j : In(1)
        A stage 1 phase starts (every counter to 0) / a stage 2 group starts (key to 0).
    h_addr : Out(h_bits); h_data : Out(ArrayLayout(word, units)); h_en_q, h_en_k : Out(1)
        The Qh / Kh banks' write port.
    s_addr : Out(key bits); s_en : Out(1)
        The score buffer's write port (data: ``acc``).
    score : Out(stream.Signature(score_layout, always_ready=True))

    Latency: results are written in the cycle ``res_v`` is high.
    """

    def __init__(self, cfg: Config, units: int, h_bits: int, j_range: int, score_layout,
                 dh_bits: int, hw_bits: int):
        self.cfg, self.units = cfg, units
        A = cfg.acc_width
        word = epre_word(cfg)
        self._j_range = j_range
        super().__init__({
            "res_v": In(1), "acc": In(data.ArrayLayout(signed(A), units)),
            "ph_k": In(1), "ph_s2": In(1),
            "shift_q": In(_bits(A)), "shift_k": In(_bits(A)), "d_head": In(dh_bits),
            "h_words": In(hw_bits), "group": In(score_layout["group"].shape),
            "clear_all": In(1), "clear_j": In(1),
            "h_addr": Out(h_bits), "h_data": Out(data.ArrayLayout(word, units)),
            "h_en_q": Out(1), "h_en_k": Out(1),
            "s_addr": Out(range(j_range)), "s_en": Out(1),
            "score": Out(stream.Signature(score_layout, always_ready=True))})

    def elaborate(self, platform):
        cfg, U = self.cfg, self.units
        L, W, A = cfg.epre_lane_count, cfg.width, cfg.acc_width
        m = Module()
        word = epre_word(cfg)
        wb_j = Signal(range(self._j_range), name="wb_j")
        wb_je = Signal(range(L), name="wb_je")
        wb_addr = Signal.like(self.h_addr, name="wb_addr")       # word of (group, j // L)
        wb_gbase = Signal.like(self.h_addr, name="wb_gbase")
        shift = Mux(self.ph_k, self.shift_k, self.shift_q)
        hword = [Signal(word, name=f"hword{u}", reset_less=True) for u in range(U)]
        res_h = self.res_v & ~self.ph_s2
        for u in range(U):
            sh = Signal(signed(A), name=f"shifted{u}")
            sat = Signal(signed(W), name=f"sat{u}")
            m.d.comb += sh.eq(self.acc[u] >> shift)
            m.d.comb += sat.eq(Mux(sh > cfg.wmax, cfg.wmax, Mux(sh < cfg.wmin, cfg.wmin, sh)))
            for e in range(L):
                older = Mux(wb_je > e, hword[u][e], 0) if e < L - 1 else 0
                m.d.comb += self.h_data[u][e].eq(Mux(wb_je == e, sat, older))
            with m.If(res_h):
                m.d.sync += hword[u].eq(self.h_data[u])
        m.d.comb += [self.h_addr.eq(wb_addr),
                     self.h_en_q.eq(res_h & ~self.ph_k), self.h_en_k.eq(res_h & self.ph_k),
                     self.s_addr.eq(wb_j), self.s_en.eq(self.res_v & self.ph_s2),
                     self.score.valid.eq(self.res_v & self.ph_s2),
                     self.score.payload.group.eq(self.group),
                     self.score.payload.key.eq(wb_j)]
        m.d.comb += [self.score.payload.scores[u].eq(self.acc[u]) for u in range(U)]
        with m.If(self.res_v):
            m.d.sync += wb_j.eq(wb_j + 1)
            with m.If(~self.ph_s2):
                with m.If(wb_j == self.d_head - 1):      # next row group
                    m.d.sync += [wb_j.eq(0), wb_je.eq(0), wb_gbase.eq(wb_gbase + self.h_words),
                                 wb_addr.eq(wb_gbase + self.h_words)]
                with m.Elif(wb_je == L - 1):
                    m.d.sync += [wb_je.eq(0), wb_addr.eq(wb_addr + 1)]
                with m.Else():
                    m.d.sync += wb_je.eq(wb_je + 1)
        with m.If(self.clear_all):
            m.d.sync += [wb_j.eq(0), wb_je.eq(0), wb_addr.eq(0), wb_gbase.eq(0)]
        with m.If(self.clear_j):
            m.d.sync += wb_j.eq(0)
        return m


class EpreSelector(wiring.Component):
    """Per query row: top-kN (ties to the lower key) and the dominant-row gap test.

    An insertion network of E = ``n_max // 2 + 1`` entries keeps the first m elements of the
    row in the order "score descending, index ascending" (``largest``, m = kN) or its
    reverse (``smallest``, m = N_k - kN + 1 when kN > E); its entry m - 1 is the kN-th
    element (T, t), and key j is kept iff ``s_j > T or (s_j == T and j <= t)``. A two-entry
    tracker gives the largest score (lowest index) and the second largest value.

    Parameters
    ----------
    cfg : Config
    n_max : int
    streamed : bool
        Insert from the stage-2 result stream (``s_v``, ``s_score``, ``s_key``: one selector
        per unit, S = U) instead of a pass over the score buffer (``ins``): the insertion
        pass costs no cycles of its own (docs/epre.md, "Selection").

    Members
    -------
    start : In(1); k_n, n_k : In(key count bits)
        A run starts (latch the network's mode and m - 1; clear the flags).
    keep_all, q_th_en : In(1); q_th : In(A + 1)
        Run parameters (dominant polarity, gap rule on, threshold).
    clear : In(1)
        A row starts (empty network, tracker and mask row).
    s_v : In(1); s_score : In(signed(A)); s_key : In(key bits)
        ``streamed``: insert ``s_score`` of key ``s_key`` this cycle.
    score : In(signed(A)); sj : In(key bits)
        The score of key ``sj`` read from the score buffer (valid one cycle after ``sj``).
    ins, msk : In(1)
        Insert / mask pass: key ``sj`` is read this cycle.
    act : In(1)
        This selector serves a real query row in this round (else its mask bits do not
        reach ``key_needed`` / ``k_needed``; rows past N_q or past the last unit).
    latch : In(1)
        Latch the kN-th element and the dominant flag (after the insertion pass).
    mask_row : Out(n_max); dominant : Out(1)
    key_needed, k_needed : Out(n_max)
        OR of the mask rows; OR of the rows whose Q row is needed.

    Latency: a key's mask bit is set two cycles after its ``msk`` read.
    """

    def __init__(self, cfg: Config, n_max: int, streamed: bool = False):
        self.cfg, self.n_max, self.streamed = cfg, n_max, streamed
        nb = n_max.bit_length()
        super().__init__({
            "start": In(1), "k_n": In(nb), "n_k": In(nb),
            "keep_all": In(1), "q_th_en": In(1), "q_th": In(cfg.acc_width + 1),
            "clear": In(1), "score": In(signed(cfg.acc_width)), "sj": In(range(n_max + 1)),
            "ins": In(1), "msk": In(1), "latch": In(1), "act": In(1),
            "s_v": In(1), "s_score": In(signed(cfg.acc_width)), "s_key": In(range(n_max + 1)),
            "mask_row": Out(n_max), "dominant": Out(1),
            "key_needed": Out(n_max), "k_needed": Out(n_max)})

    def elaborate(self, platform):
        A, n_max = self.cfg.acc_width, self.n_max
        E = n_max // 2 + 1
        ib = _bits(n_max)
        m = Module()
        ent_v = [Signal(signed(A), name=f"ent_v{i}", reset_less=True) for i in range(E)]
        ent_i = [Signal(ib, name=f"ent_i{i}", reset_less=True) for i in range(E)]
        ent_ok = [Signal(name=f"ent_ok{i}") for i in range(E)]
        small = Signal(name="sel_small")            # network keeps the smallest m
        thr_idx = Signal(range(E), name="thr_idx")  # m - 1
        kn_nz = Signal(name="kn_nz")
        max1 = Signal(signed(A), name="max1", reset_less=True)
        idx1 = Signal(ib, name="idx1", reset_less=True)
        max2 = Signal(signed(A), name="max2", reset_less=True)
        have1, have2 = Signal(name="have1"), Signal(name="have2")
        thr_v = Signal(signed(A), name="thr_v", reset_less=True)
        thr_i = Signal(ib, name="thr_i", reset_less=True)
        dom = self.dominant
        sj1 = Signal(ib, name="sj1")
        ins_v = Signal(name="ins_v")
        msk_v = Signal(name="msk_v")
        rd = self.score
        m.d.sync += [ins_v.eq(self.ins), msk_v.eq(self.msk), sj1.eq(self.sj)]
        msk_rd = rd
        if self.streamed:                 # insert from the stage-2 stream
            ins_v, rd, ins_j = self.s_v, self.s_score, self.s_key
        else:                             # insert from the score buffer (read one cycle ago)
            ins_j = sj1

        # insertion
        beat = [~ent_ok[i] | ((rd > ent_v[i]) ^ small) for i in range(E)]
        with m.If(self.clear):
            m.d.sync += [ok.eq(0) for ok in ent_ok]
            m.d.sync += [have1.eq(0), have2.eq(0)]
        with m.Elif(ins_v):
            for i in range(E):
                with m.If(beat[i]):
                    if i == 0:
                        m.d.sync += [ent_v[0].eq(rd), ent_i[0].eq(ins_j), ent_ok[0].eq(1)]
                    else:
                        with m.If(beat[i - 1]):
                            m.d.sync += [ent_v[i].eq(ent_v[i - 1]), ent_i[i].eq(ent_i[i - 1]),
                                         ent_ok[i].eq(ent_ok[i - 1])]
                        with m.Else():
                            m.d.sync += [ent_v[i].eq(rd), ent_i[i].eq(ins_j), ent_ok[i].eq(1)]
            with m.If(~have1 | (rd > max1)):
                m.d.sync += [max1.eq(rd), idx1.eq(ins_j), have1.eq(1),
                             max2.eq(max1), have2.eq(have1)]
            with m.Elif(~have2 | (rd > max2)):
                m.d.sync += [max2.eq(rd), have2.eq(1)]

        gap = Signal(unsigned(A + 1), name="gap")
        m.d.comb += gap.eq((max1 - max2).as_unsigned())
        with m.If(self.latch):
            m.d.sync += [thr_v.eq(_mux(ent_v, thr_idx)), thr_i.eq(_mux(ent_i, thr_idx)),
                         dom.eq(self.q_th_en & (~have2 | (gap >= self.q_th)))]
        # mask bit of key sj1
        rd = msk_rd
        keep = Signal(name="keep")
        m.d.comb += keep.eq(Mux(dom, Mux(self.keep_all, 1, sj1 == idx1),
                                kn_nz & ((rd > thr_v) | ((rd == thr_v) & (sj1 <= thr_i)))))
        onehot = Signal(n_max, name="onehot")
        m.d.comb += onehot.eq(Const(1, n_max) << sj1)
        with m.If(msk_v & keep):
            m.d.sync += self.mask_row.eq(self.mask_row | onehot)
        with m.If(msk_v & keep & self.act):
            m.d.sync += self.key_needed.eq(self.key_needed | onehot)
            with m.If(~dom | self.keep_all):
                m.d.sync += self.k_needed.eq(self.k_needed | onehot)
        with m.If(self.clear):
            m.d.sync += self.mask_row.eq(0)
        with m.If(self.start):
            big = self.k_n > E
            m.d.sync += [self.key_needed.eq(0), self.k_needed.eq(0), small.eq(big),
                         kn_nz.eq(self.k_n != 0),
                         thr_idx.eq(Mux(big, self.n_k - self.k_n, self.k_n - 1))]
        return m


class EpreControl(wiring.Component):
    """The EPRE's controller: one run = stage 1 (Q, then K unless the run's ``k_given``),
    then per row group stage 2 and the selection of its rows.

    FSM states: ``IDLE``; ``S1`` / ``S1_DRAIN`` (issue a stage-1 phase, drain the pipeline);
    ``KWAIT`` (a ``k_wait`` run: its exact keys are not in, ``keys_ok`` low);
    ``S2`` / ``S2_DRAIN`` (one row group's scores); ``SEL_START`` (clear the selector),
    ``INS`` / ``INS_TAIL`` (insertion pass), ``THR`` (latch the kN-th element and the
    dominant flag), ``MASK`` / ``MASK_TAIL`` (mask pass), ``RSEL`` (radix kind: the U radix
    searches, from ``rgo`` to ``rdone``), ``OUT`` (the row on ``mask``);
    ``DONE``. The issue counters (row group g, output column / key j, word kw) and the
    memory addresses they give live here.

    Parameters
    ----------
    cfg : Config
    sizes : hw.epre.EpreSizes
    run_layout : Layout

    Members
    -------
    run : In(stream.Signature(run_layout))
        Taken in ``IDLE`` (``ready``).
    params : Out(run_layout)
        The run being executed.
    start : Out(1)
        A run is taken this cycle (``run.payload`` valid).
    x_addr, w_addr, qh_addr, kh_addr : Out(...)
        Read addresses of this cycle's beat.
    issue, first, last : Out(1); jc : Out(range(U)); ph_k, ph_s2 : Out(1)
        The beat for :class:`EpreLanes`; the phase.
    group : Out(...)
        Stage 2 / selection row group.
    wb_clear_all, wb_clear_j : Out(1)
        A stage 1 phase / a stage 2 group starts (:class:`EpreWriteback`).
    sel_clear, ins, msk, latch : Out(1); sj : Out(...)
        Selector strobes and the key read.
    rgo : Out(1); rdone : In(1)
        Radix kind (``sizes.radix``): start the row group's lockstep radix searches (state
        ``RSEL``, one cycle) / the searches are done (``RSEL`` ends in that cycle).
    rnd : Out(range(max(rounds, 2))); rbase : Out(range(U + S))
        Selector round of the row group: selector i serves unit ``rbase + i`` =
        ``rnd * S + i`` (score-buffer column) and query row ``row + i``.
    row : Out(...); orow : Out(range(max(S, 2))); mask_valid : Out(1); mask_ready : In(1)
        The row on the ``mask`` stream, from selector ``orow``.
    keys_ok : In(1)
        The run's Kh buffer holds its keys (``k_wait`` runs; ``sizes.k_bufs = 2``).
    busy : Out(1); cycles : Out(32)
        Busy, and busy cycles of the last run.

    Latency: ``golden.cycles.epre_run_cycles`` cycles per run (no back-pressure).
    """

    def __init__(self, cfg: Config, sizes, run_layout):
        self.cfg, self.sizes = cfg, sizes
        s = sizes
        self._jr = max(s.dh_max, s.n_max) + 1
        super().__init__({
            "run": In(stream.Signature(run_layout)), "params": Out(run_layout),
            "start": Out(1),
            "x_addr": Out(_bits(s.x_depth)), "w_addr": Out(_bits(s.w_depth)),
            "qh_addr": Out(_bits(s.h_depth)), "kh_addr": Out(_bits(s.h_depth)),
            "issue": Out(1), "first": Out(1), "last": Out(1), "jc": Out(range(s.units)),
            "ph_k": Out(1), "ph_s2": Out(1), "group": Out(range(s.g_max + 1)),
            "wb_clear_all": Out(1), "wb_clear_j": Out(1),
            "sel_clear": Out(1), "ins": Out(1), "msk": Out(1), "latch": Out(1),
            "rgo": Out(1), "rdone": In(1),
            "sj": Out(range(s.n_max + 1)), "rnd": Out(range(max(s.rounds, 2))),
            "rbase": Out(range(s.units + s.selectors)), "orow": Out(range(max(s.selectors, 2))),
            "row": Out(range(s.n_max + 1)), "mask_valid": Out(1), "mask_ready": In(1),
            "keys_ok": In(1), "busy": Out(1), "cycles": Out(32)})

    def elaborate(self, platform):
        s, U, PIPE = self.sizes, self.sizes.units, self.cfg.epre_pipe
        S = s.selectors
        m = Module()
        run = self.params
        kw = Signal(range(s.dw_max + s.hw_max + 1), name="kw")
        j = Signal(range(self._jr), name="j")
        g = Signal(range(s.g_max + 1), name="g")              # stage-1 row group
        xa_base = Signal.like(self.x_addr, name="xa_base")   # X word of (group, kw=0)
        wa_base = Signal.like(self.w_addr, name="wa_base")   # W word of (row j, kw=0)
        kh_base = Signal.like(self.kh_addr, name="kh_base")  # Kh word of (j // U, kw=0)
        qh_base = Signal.like(self.qh_addr, name="qh_base")  # Qh word of (group, kw=0)
        drain = Signal(range(PIPE + 1), name="drain")
        ph_k, ph_s2, jc, ig, sj = self.ph_k, self.ph_s2, self.jc, self.group, self.sj
        kw_last, j_last, g_last = Signal(name="kw_last"), Signal(name="j_last"), Signal()
        m.d.comb += [
            kw_last.eq(kw == Mux(ph_s2, run.h_words, run.d_words) - 1),
            j_last.eq(j == Mux(ph_s2, run.n_k, run.d_head) - 1),
            g_last.eq(g == Mux(ph_k, run.k_groups, run.q_groups) - 1),
            self.x_addr.eq(xa_base + kw), self.w_addr.eq(wa_base + kw),
            self.qh_addr.eq(qh_base + kw), self.kh_addr.eq(kh_base + kw),
            self.first.eq(kw == 0), self.last.eq(kw_last),
        ]
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        def start_stage1(k: bool):
            # the query phase starts in IDLE, as the run is latched: its q_base comes from
            # the stream's payload
            m.d.comb += self.wb_clear_all.eq(1)
            m.d.sync += [ph_k.eq(int(k)), ph_s2.eq(0), kw.eq(0), j.eq(0), g.eq(0),
                         xa_base.eq(run.kv_base if k else self.run.payload.q_base),
                         wa_base.eq(s.dh_max * s.dw_max if k else 0)]

        def start_stage2():
            m.d.comb += self.wb_clear_j.eq(1)
            if s.streamed:               # the selectors insert from this group's stream
                m.d.comb += self.sel_clear.eq(1)
            m.d.sync += [ph_s2.eq(1), kw.eq(0), j.eq(0), jc.eq(0), kh_base.eq(0)]

        def drain_then(state_after):
            m.d.comb += self.busy.eq(1)
            m.d.sync += drain.eq(drain + 1)
            with m.If(drain == PIPE - 1):
                state_after()

        def s1_done():
            kwait = (run.k_wait & ~self.keys_ok) if s.k_bufs > 1 else Const(0, 1)
            with m.If(run.k_given & kwait):     # k_wait: stage 2 once the keys are in
                m.next = "KWAIT"
            with m.Elif(ph_k | run.k_given):    # k_given: the host wrote Kh, no key groups
                start_stage2()
                m.d.sync += ph_k.eq(1)
                m.next = "S2"
            with m.Else():
                start_stage1(True)
                m.next = "S1"

        rgo = Signal(name="rgo_pending")      # RSEL's first cycle

        def s2_done():
            if s.radix:
                m.d.sync += rgo.eq(1)
                m.next = "RSEL"
            else:
                m.next = "THR" if s.streamed else "SEL_START"

        def count_keys(state_after):
            m.d.sync += sj.eq(sj + 1)
            with m.If(sj == run.n_k - 1):
                m.next = state_after

        with m.FSM(name="epre_fsm"):
            with m.State("IDLE"):
                m.d.comb += self.run.ready.eq(1)
                with m.If(self.run.valid):
                    m.d.comb += self.start.eq(1)
                    m.d.sync += [run.eq(self.run.payload), self.cycles.eq(0), ig.eq(0),
                                 qh_base.eq(0), self.rnd.eq(0), self.rbase.eq(0),
                                 self.orow.eq(0), self.row.eq(0)]
                    start_stage1(False)
                    m.next = "S1"
            with m.State("S1"):
                m.d.comb += [self.busy.eq(1), self.issue.eq(1)]
                m.d.sync += kw.eq(kw + 1)
                with m.If(kw_last):
                    m.d.sync += [kw.eq(0), j.eq(j + 1), wa_base.eq(wa_base + run.d_words)]
                    with m.If(j_last):
                        m.d.sync += [j.eq(0), g.eq(g + 1), xa_base.eq(xa_base + run.d_words),
                                     wa_base.eq(Mux(ph_k, s.dh_max * s.dw_max, 0))]
                        with m.If(g_last):
                            m.d.sync += drain.eq(0)
                            m.next = "S1_DRAIN"
            with m.State("S1_DRAIN"):
                drain_then(s1_done)
            with m.State("KWAIT"):      # a k_wait run's keys are not in yet
                m.d.comb += self.busy.eq(1)
                with m.If(self.keys_ok):
                    start_stage2()
                    m.d.sync += ph_k.eq(1)
                    m.next = "S2"
            with m.State("S2"):
                m.d.comb += [self.busy.eq(1), self.issue.eq(1)]
                m.d.sync += kw.eq(kw + 1)
                with m.If(kw_last):
                    m.d.sync += [kw.eq(0), j.eq(j + 1), jc.eq(jc + 1)]
                    with m.If(jc == U - 1):
                        m.d.sync += [jc.eq(0), kh_base.eq(kh_base + run.h_words)]
                    with m.If(j_last):
                        m.d.sync += drain.eq(0)
                        m.next = "S2_DRAIN"
            with m.State("S2_DRAIN"):
                drain_then(s2_done)
            self._select_states(m, count_keys)
            if s.radix:
                with m.State("RSEL"):   # radix: the group's U searches run in lockstep
                    m.d.comb += [self.busy.eq(1), self.rgo.eq(rgo)]
                    m.d.sync += rgo.eq(0)
                    with m.If(self.rdone):
                        m.next = "OUT"
            with m.State("OUT"):        # one row per cycle, selectors 0.. of the round
                m.d.comb += [self.busy.eq(1), self.mask_valid.eq(1)]
                row_last = self.row == run.n_q - 1
                unit_last = self.rbase + self.orow == U - 1
                with m.If(self.mask_ready):
                    m.d.sync += [self.row.eq(self.row + 1), self.orow.eq(self.orow + 1)]
                    with m.If(row_last | unit_last):            # the row group is done
                        m.d.sync += [self.orow.eq(0), self.rnd.eq(0), self.rbase.eq(0),
                                     ig.eq(ig + 1), qh_base.eq(qh_base + run.h_words)]
                        with m.If(row_last):
                            m.next = "DONE"
                        with m.Else():
                            start_stage2()
                            m.next = "S2"
                    with m.Elif(self.orow == S - 1):            # next round of the group
                        m.d.sync += [self.orow.eq(0), self.rnd.eq(self.rnd + 1),
                                     self.rbase.eq(self.rbase + S)]
                        m.next = "SEL_START"
            with m.State("DONE"):
                m.d.comb += self.busy.eq(1)
                m.next = "IDLE"
        return m

    def _select_states(self, m, count_keys):
        """The selection of a row group's S rows (insertion kind): ``SEL_START`` (clear
        the selectors), ``INS`` / ``INS_TAIL`` (insertion pass), ``THR`` (latch the kN-th
        element), ``MASK`` / ``MASK_TAIL`` (mask pass), then ``OUT``."""
        sj = self.sj

        def one_pass(first, first_strobe, body, body_strobe, after):
            with m.State(first):         # a strobe cycle, then one key a cycle, then a tail
                m.d.comb += [self.busy.eq(1), first_strobe.eq(1)]
                m.d.sync += sj.eq(0)
                m.next = body
            with m.State(body):
                m.d.comb += [self.busy.eq(1), body_strobe.eq(1)]
                count_keys(f"{body}_TAIL")
            with m.State(f"{body}_TAIL"):
                m.d.comb += self.busy.eq(1)
                m.next = after
        one_pass("SEL_START", self.sel_clear, "INS", self.ins, "THR")
        one_pass("THR", self.latch, "MASK", self.msk, "OUT")
