"""Eager prediction engine (SPEC 3.4, 4.4): shift-add score prediction and top-kN / q_th selection.

Bit-exact twin of ``exion.golden.predict.eager_predict`` (``docs/epre.md`` has the picture).

Lanes: ``units`` dot-product units (default C) of L shift-add lanes each. Every cycle every
unit multiplies (approximately: LOD / TS-LOD, sums of shifted ones, no multiplier) one L-word
of its own row operand with one broadcast L-word and accumulates exactly in A bits::

    stage 1 (Q, then K):  unit u holds token row g*U + u of X;  Wq^T / Wk^T row j broadcast
                          loop g (row groups), j (0..d_head-1), kw (0..d_words-1)
                          acc -> (acc >> shift) -> saturate W -> Qh / Kh bank u
    stage 2 (per group g): unit u holds Qh row g*U + u;  Kh row j broadcast (bank j % U)
                          loop j (0..N_k-1), kw (0..h_words-1) -> score buffer [j][u]
    select (per row):     insert the row's N_k scores into one sorted insertion network
                          (N_k cycles), latch the kN-th (score, index) and the top-2 gap,
                          then one mask pass (N_k cycles), emit the mask row on ``mask``.

Datapath pipeline: read (1) -> LOD register (1) -> products + lane tree register (1) ->
accumulator (1): a result is written ``PIPE = 4`` cycles after its last beat issues; every
phase ends with a ``PIPE``-cycle drain, so the next phase reads finished data.

Selection (one shared selector, rows one after the other): the network keeps the first
``m`` elements of the row in the total order "score descending, index ascending" (mode
``largest``, ``m = kN``) or its reverse (mode ``smallest``, ``m = N_k - kN + 1``, when
``kN > E``), so ``E = n_max // 2 + 1`` entries suffice for every kN. Its entry ``m - 1`` is the
kN-th element ``(T, t)``; key j is kept iff ``s_j > T or (s_j == T and j <= t)`` -- exactly
the stable-sort rule of ``topk_select``. A two-entry tracker gives the largest score (lowest
index) and the second largest value for the gap test.

Cycles of a run (``cycles`` output, no back-pressure on ``mask``)::

    (Gq + Gk) * d_head * d_words + 2 * PIPE                       stage 1
  + Gq * (N_k * h_words + PIPE)                                   stage 2
  + N_q * (2 * N_k + SEL_FIXED)                                   selection
  + RUN_FIXED

with ``Gq = ceil(N_q / U)``, ``Gk = ceil(N_k / U)`` (``exion.golden.cycles.epre_run_cycles``
is the model; the constants are ``exion.config.EPRE_*``).
"""

from __future__ import annotations

import enum
import math

from amaranth import Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from exion.config import EPRE_PIPE, EPRE_RUN_FIXED, EPRE_SEL_FIXED, Config

from .util import bits_for as _bits
from .util import pad_mux as _mux
from .dpu import operand_layout
from .lod import LOD, approx_product, lod_layout, refuse
from .sdue import mem_write_signature

__all__ = ["EPRE", "EpreSizes", "run_layout", "mask_layout", "score_layout",
           "h_read_signature", "PIPE", "SEL_FIXED", "RUN_FIXED"]

#: Cycles from the issue of a phase's last beat to its last result written (drain);
#: ``exion.config.EPRE_PIPE`` (one home, also ``cfg.epre_pipe``).
PIPE = EPRE_PIPE
#: Selector cycles per query row beyond 2 * N_k: start, insert tail, threshold, mask tail, out.
SEL_FIXED = EPRE_SEL_FIXED
#: Cycles of a run beyond the phases (the final ``DONE`` state).
RUN_FIXED = EPRE_RUN_FIXED


class _S(enum.IntEnum):
    """Controller states, in run order."""
    IDLE = 0
    S1 = 1           # stage 1 issue (Q, then K)
    S1_DRAIN = 2
    S2 = 3           # stage 2 issue, one row group
    S2_DRAIN = 4
    SEL_START = 5    # selector: clear the network
    INS = 6          # insertion pass
    INS_TAIL = 7
    THR = 8          # latch the kN-th element and the dominant flag
    MASK = 9         # mask pass
    MASK_TAIL = 10
    OUT = 11         # mask row on the output stream
    DONE = 12




class EpreSizes:
    """Maximum problem sizes of one EPRE instance (memory and counter dimensions).

    ``n_max`` tokens (N_q + key rows placed after them for cross-attention; N_q, N_k <= n_max),
    ``d_max`` model width (stage-1 reduction), ``dh_max`` head width (stage-2 reduction).
    """

    def __init__(self, cfg: Config, units: int, n_max: int, d_max: int, dh_max: int):
        for name, v in (("units", units), ("n_max", n_max), ("d_max", d_max),
                        ("dh_max", dh_max)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"EPRE {name} must be an integer >= 1, got {v!r}")
        for name, v in (("d_max", d_max), ("dh_max", dh_max)):
            if v > cfg.k_max:
                raise ValueError(f"EPRE {name} = {v} exceeds cfg.k_max = {cfg.k_max}: the "
                                 f"A = {cfg.acc_width}-bit accumulator is exact only up to k_max")
        if n_max < 2:
            raise ValueError(f"EPRE n_max must be >= 2, got {n_max}")
        L = cfg.lanes
        self.units, self.n_max, self.d_max, self.dh_max = units, n_max, d_max, dh_max
        self.g_max = math.ceil(n_max / units)        # row groups
        self.dw_max = math.ceil(d_max / L)            # stage-1 words per row
        self.hw_max = math.ceil(dh_max / L)           # stage-2 words per row
        self.entries = n_max // 2 + 1                 # selector network
        self.x_depth = self.g_max * self.dw_max       # per X bank
        self.w_depth = 2 * dh_max * self.dw_max       # Wq^T then Wk^T
        self.h_depth = self.g_max * self.hw_max       # per Qh / Kh bank

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("units", "n_max", "d_max", "dh_max", "g_max",
                                              "dw_max", "hw_max", "entries", "x_depth",
                                              "w_depth", "h_depth")}


def run_layout(cfg: Config, s: EpreSizes) -> data.StructLayout:
    """One prediction run (the host computes every field; ``exion.sim.epre_rtl`` shows how).

    n_q, n_k      query / key rows, 1..n_max
    q_groups      ceil(n_q / units);   k_groups  ceil(n_k / units)
    kv_base       X word of key row 0: kv_group * d_words (0: self-attention, the keys are the
                  query rows; cross-attention puts X_kv at row group kv_group after X)
    d_words       ceil(d / L), X and W^T words per row
    d_head        Wq / Wk columns (Qh / Kh width), 1..dh_max
    h_words       ceil(d_head / L)
    shift_q/k     stage-1 arithmetic shift right, 0..A-1
    k_n           kept keys per row, 0..n_k
    q_th          gap threshold, min(q_th_int, 2**A) (a gap is < 2**A)
    q_th_en       1 = dominant-row rule on
    keep_all      polarity: 1 = a dominant row keeps every key, 0 = its top-1 only
    two_step      1 = TS-LOD, 0 = LOD (only with cfg.lod_terms == 2)
    """
    nb = (s.n_max).bit_length()
    return data.StructLayout({
        "n_q": unsigned(nb), "n_k": unsigned(nb),
        "q_groups": unsigned(s.g_max.bit_length()), "k_groups": unsigned(s.g_max.bit_length()),
        "kv_base": unsigned(_bits(s.x_depth)),
        "d_words": unsigned(s.dw_max.bit_length()),
        "d_head": unsigned(s.dh_max.bit_length()),
        "h_words": unsigned(s.hw_max.bit_length()),
        "shift_q": unsigned(_bits(cfg.acc_width)), "shift_k": unsigned(_bits(cfg.acc_width)),
        "k_n": unsigned(nb),
        "q_th": unsigned(cfg.acc_width + 1),
        "q_th_en": 1, "keep_all": 1, "two_step": 1,
    })


def mask_layout(s: EpreSizes) -> data.StructLayout:
    """One selector result: query row, dominant flag, score-mask row (bit j = key j)."""
    return data.StructLayout({"row": unsigned(_bits(s.n_max)), "dominant": 1,
                              "mask": unsigned(s.n_max)})


def score_layout(cfg: Config, s: EpreSizes) -> data.StructLayout:
    """Stage-2 tap: the scores of key ``key`` for query rows ``group * units + u``."""
    return data.StructLayout({"group": unsigned(_bits(s.g_max)), "key": unsigned(_bits(s.n_max)),
                              "scores": data.ArrayLayout(signed(cfg.acc_width), s.units)})


def h_read_signature(cfg: Config, s: EpreSizes) -> wiring.Signature:
    """Host read of the Qh (``k = 0``) or Kh (``k = 1``) banks; ``data`` one cycle later."""
    return wiring.Signature({
        "addr": Out(_bits(s.h_depth)),
        "k": Out(1),
        "data": In(data.ArrayLayout(operand_layout(cfg), s.units)),
    })


class EPRE(wiring.Component):
    """Eager prediction engine.

    Parameters
    ----------
    cfg : Config
        L = ``lanes``, W = ``width``, A = ``acc_width``, ``lod_terms`` (1: LOD hardware only;
        2: TS-LOD, LOD selectable per run), C = ``cols`` (default units).
    units : int
        Dot-product units (rows computed in parallel), default ``cfg.cols``.
    n_max, d_max, dh_max : int
        Largest N_q / N_k (and N_q + N_k for cross-attention), d, d_head. Defaults cover a
        DiT-XL/2 head (256 tokens, d = 1152, d_head = 72), d and d_head capped at ``k_max``.

    Members
    -------
    run : In(stream.Signature(run_layout))
        Start a prediction; taken while idle (``ready`` = not ``busy``).
    x_w : In(mem_write_signature(units, x_addr_bits, word))
        Host write of X: bank u holds token rows ``g*units + u`` at words ``g*d_words + kw``
        (zero-padded L-words).
    w_w : In(mem_write_signature(1, w_addr_bits, word))
        Host write of Wq^T (row j at ``j*d_words + kw``) and Wk^T (the same, plus
        ``dh_max * dw_max``).
    h_r : In(h_read_signature)
        Host read of Qh / Kh (bank u, word ``g*h_words + hw``) while idle.
    mask : Out(stream.Signature(mask_layout))
        One score-mask row per query row, in row order, with its dominant flag.
    score : Out(stream.Signature(score_layout, always_ready=True))
        Stage-2 tap (observation): one beat per key per row group.
    key_needed, k_needed : Out(n_max)
        OR of the mask rows (SPEC's key-needed flag); OR of the rows whose Q row is needed.
        Valid once ``busy`` falls; cleared when a run starts.
    busy : Out(1)
    cycles : Out(32)
        Busy cycles of the last run (see the module docstring for the formula).
    """

    def __init__(self, cfg: Config, *, units: int | None = None, n_max: int = 256,
                 d_max: int | None = None, dh_max: int | None = None):
        self.cfg = cfg
        units = cfg.cols if units is None else units
        d_max = min(1152, cfg.k_max) if d_max is None else d_max
        dh_max = min(72, cfg.k_max) if dh_max is None else dh_max
        try:
            self.sizes = s = EpreSizes(cfg, units, n_max, d_max, dh_max)
        except ValueError as e:
            raise refuse(self, str(e)) from None
        word = operand_layout(cfg)
        super().__init__({
            "run": In(stream.Signature(run_layout(cfg, s))),
            "x_w": In(mem_write_signature(units, _bits(s.x_depth), word)),
            "w_w": In(mem_write_signature(1, _bits(s.w_depth), word)),
            "h_r": In(h_read_signature(cfg, s)),
            "mask": Out(stream.Signature(mask_layout(s))),
            "score": Out(stream.Signature(score_layout(cfg, s), always_ready=True)),
            "key_needed": Out(n_max),
            "k_needed": Out(n_max),
            "busy": Out(1),
            "cycles": Out(32),
        })

    @property
    def latency(self) -> int:
        """Cycles from a phase's last issued beat to its last result written."""
        return PIPE

    def constants(self) -> dict:
        return {"pipe": PIPE, "sel_fixed": SEL_FIXED, "run_fixed": RUN_FIXED,
                "lod_terms": self.cfg.lod_terms, **self.sizes.as_dict()}

    def elaborate(self, platform):
        cfg, s = self.cfg, self.sizes
        U, L, W, A = s.units, cfg.lanes, cfg.width, cfg.acc_width
        terms = cfg.lod_terms
        m = Module()
        word = operand_layout(cfg)
        run = Signal(run_layout(cfg, s), name="run_cfg")

        # ---- memories -------------------------------------------------------------------
        x_rd, qh_rd, kh_rd = [], [], []
        x_addr = Signal(_bits(s.x_depth))
        qh_addr = Signal(_bits(s.h_depth))
        kh_addr = Signal(_bits(s.h_depth))
        h_wr_en_q = Signal(name="h_wr_en_q")
        h_wr_en_k = Signal(name="h_wr_en_k")
        h_wr_addr = Signal(_bits(s.h_depth))
        h_wr_data = [Signal(word, name=f"h_wr_data{u}") for u in range(U)]
        for u in range(U):
            mem = Memory(shape=word, depth=s.x_depth, init=[])
            m.submodules[f"xmem{u}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.x_w.addr), wp.data.eq(self.x_w.data[u]),
                         wp.en.eq(self.x_w.en[u])]
            rp = mem.read_port()
            m.d.comb += rp.addr.eq(x_addr)
            x_rd.append(rp.data)
            for kind, rd, addr, en in (("q", qh_rd, qh_addr, h_wr_en_q),
                                       ("k", kh_rd, kh_addr, h_wr_en_k)):
                mem = Memory(shape=word, depth=s.h_depth, init=[])
                m.submodules[f"{kind}hmem{u}"] = mem
                wp = mem.write_port()
                m.d.comb += [wp.addr.eq(h_wr_addr), wp.data.eq(h_wr_data[u]), wp.en.eq(en)]
                rp = mem.read_port()
                m.d.comb += rp.addr.eq(Mux(self.busy, addr, self.h_r.addr))
                rd.append(rp.data)
        wmem = Memory(shape=word, depth=s.w_depth, init=[])
        m.submodules.wmem = wmem
        wp = wmem.write_port()
        m.d.comb += [wp.addr.eq(self.w_w.addr), wp.data.eq(self.w_w.data[0]),
                     wp.en.eq(self.w_w.en[0])]
        w_rp = wmem.read_port()
        w_addr = Signal(_bits(s.w_depth))
        m.d.comb += w_rp.addr.eq(w_addr)
        smem = Memory(shape=data.ArrayLayout(signed(A), U), depth=s.n_max, init=[])
        m.submodules.smem = smem
        s_wp = smem.write_port()
        s_rp = smem.read_port()

        h_r_k = Signal(name="h_r_k")
        m.d.sync += h_r_k.eq(self.h_r.k)
        for u in range(U):
            m.d.comb += self.h_r.data[u].eq(Mux(h_r_k, kh_rd[u], qh_rd[u]))

        # ---- issue counters (stage 1 and stage 2) --------------------------------------
        ph_k = Signal(name="ph_k")        # stage 1: 0 = Q, 1 = K
        ph_s2 = Signal(name="ph_s2")      # stage 2 (scores)
        kw = Signal(range(s.dw_max + s.hw_max + 1), name="kw")
        j = Signal(range(max(s.dh_max, s.n_max) + 1), name="j")
        g = Signal(range(s.g_max + 1), name="g")              # stage-1 row group
        ig = Signal(range(s.g_max + 1), name="ig")            # stage-2 / selection group
        xa_base = Signal.like(x_addr, name="xa_base")        # X word of (group, kw=0)
        wa_base = Signal.like(w_addr, name="wa_base")        # W word of (row j, kw=0)
        jc = Signal(range(U), name="jc")                     # key j mod U
        kh_base = Signal.like(kh_addr, name="kh_base")       # Kh word of (j // U, kw=0)
        qh_base = Signal.like(qh_addr, name="qh_base")       # Qh word of (ig, kw=0)
        issue = Signal(name="issue")
        kw_last = Signal(name="kw_last")
        j_last = Signal(name="j_last")
        g_last = Signal(name="g_last")
        kw_n = Mux(ph_s2, run.h_words, run.d_words)
        m.d.comb += [
            kw_last.eq(kw == kw_n - 1),
            j_last.eq(j == Mux(ph_s2, run.n_k, run.d_head) - 1),
            g_last.eq(g == Mux(ph_k, run.k_groups, run.q_groups) - 1),
            x_addr.eq(xa_base + kw),
            w_addr.eq(wa_base + kw),
            qh_addr.eq(qh_base + kw),
            kh_addr.eq(kh_base + kw),
        ]

        # ---- datapath: read -> LOD -> products -> accumulate ---------------------------
        v1, first1, last1 = Signal(), Signal(), Signal()
        jc1 = Signal.like(jc, name="jc1")
        m.d.sync += [v1.eq(issue), first1.eq(kw == 0), last1.eq(kw_last), jc1.eq(jc)]
        b_word = Mux(ph_s2, Value.cast(_mux(kh_rd, jc1)), Value.cast(w_rp.data))
        lay = lod_layout(W)
        two_step = run.two_step if terms == 2 else Const(0, 1)

        def lods(raw, prefix):
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

        lb = lods(b_word, "b")
        v2, first2, last2 = Signal(), Signal(), Signal()
        m.d.sync += [v2.eq(v1), first2.eq(first1), last2.eq(last1)]
        v3, first3, last3 = Signal(), Signal(), Signal()     # psum valid
        m.d.sync += [v3.eq(v2), first3.eq(first2), last3.eq(last2)]
        res_v = Signal(name="res_valid")                     # acc holds a finished result
        m.d.sync += res_v.eq(v3 & last3)
        psum_w = 2 * W + 1 + ceil_log2(L) if L > 1 else 2 * W + 1
        accs = []
        for u in range(U):
            a_word = Mux(ph_s2, Value.cast(qh_rd[u]), Value.cast(x_rd[u]))
            la = lods(a_word, f"a{u}")
            psum = Signal(signed(psum_w), name=f"psum{u}", reset_less=True)
            total = approx_product(la[0], lb[0], W, terms)
            for lane in range(1, L):
                total = total + approx_product(la[lane], lb[lane], W, terms)
            m.d.sync += psum.eq(total)
            acc = Signal(signed(A), name=f"acc{u}", reset_less=True)
            with m.If(v3):
                m.d.sync += acc.eq(Mux(first3, psum, acc + psum))
            accs.append(acc)

        # ---- write-back ----------------------------------------------------------------
        wb_j = Signal(range(max(s.dh_max, s.n_max) + 1), name="wb_j")
        wb_je = Signal(range(L), name="wb_je")
        wb_addr = Signal.like(h_wr_addr, name="wb_addr")       # word of (group, j // L)
        wb_gbase = Signal.like(h_wr_addr, name="wb_gbase")
        shift = Mux(ph_k, run.shift_k, run.shift_q)
        hword = [Signal(word, name=f"hword{u}", reset_less=True) for u in range(U)]
        for u in range(U):
            sh = Signal(signed(A), name=f"shifted{u}")
            sat = Signal(signed(W), name=f"sat{u}")
            m.d.comb += sh.eq(accs[u] >> shift)
            m.d.comb += sat.eq(Mux(sh > cfg.wmax, cfg.wmax, Mux(sh < cfg.wmin, cfg.wmin, sh)))
            for e in range(L):
                older = Mux(wb_je > e, hword[u][e], 0) if e < L - 1 else 0
                m.d.comb += h_wr_data[u][e].eq(Mux(wb_je == e, sat, older))
            with m.If(res_v & ~ph_s2):
                m.d.sync += hword[u].eq(h_wr_data[u])
        m.d.comb += [h_wr_addr.eq(wb_addr),
                     h_wr_en_q.eq(res_v & ~ph_s2 & ~ph_k), h_wr_en_k.eq(res_v & ~ph_s2 & ph_k),
                     s_wp.addr.eq(wb_j), s_wp.en.eq(res_v & ph_s2)]
        for u in range(U):
            m.d.comb += s_wp.data[u].eq(accs[u])
        m.d.comb += [self.score.valid.eq(res_v & ph_s2), self.score.payload.group.eq(ig),
                     self.score.payload.key.eq(wb_j)]
        for u in range(U):
            m.d.comb += self.score.payload.scores[u].eq(accs[u])
        with m.If(res_v):
            m.d.sync += wb_j.eq(wb_j + 1)
            with m.If(~ph_s2):
                with m.If(wb_j == run.d_head - 1):      # next row group
                    m.d.sync += [wb_j.eq(0), wb_je.eq(0), wb_gbase.eq(wb_gbase + run.h_words),
                                 wb_addr.eq(wb_gbase + run.h_words)]
                with m.Elif(wb_je == L - 1):
                    m.d.sync += [wb_je.eq(0), wb_addr.eq(wb_addr + 1)]
                with m.Else():
                    m.d.sync += wb_je.eq(wb_je + 1)

        # ---- selector ------------------------------------------------------------------
        E = s.entries
        ib = _bits(s.n_max)
        ent_v = [Signal(signed(A), name=f"ent_v{i}", reset_less=True) for i in range(E)]
        ent_i = [Signal(ib, name=f"ent_i{i}", reset_less=True) for i in range(E)]
        ent_ok = [Signal(name=f"ent_ok{i}") for i in range(E)]
        small = Signal(name="sel_small")          # network keeps the smallest m
        thr_idx = Signal(range(E), name="thr_idx")  # m - 1
        kn_nz = Signal(name="kn_nz")
        max1 = Signal(signed(A), name="max1", reset_less=True)
        idx1 = Signal(ib, name="idx1", reset_less=True)
        max2 = Signal(signed(A), name="max2", reset_less=True)
        have1, have2 = Signal(name="have1"), Signal(name="have2")
        thr_v = Signal(signed(A), name="thr_v", reset_less=True)
        thr_i = Signal(ib, name="thr_i", reset_less=True)
        dom = Signal(name="dom")
        c_sel = Signal(range(U), name="c_sel")
        row = Signal(range(s.n_max + 1), name="row")
        sj = Signal(range(s.n_max + 1), name="sj")            # selector key counter
        sj1 = Signal(ib, name="sj1")
        ins_v = Signal(name="ins_v")
        msk_v = Signal(name="msk_v")
        sel_rd = Signal(signed(A), name="sel_rd")
        mask_row = Signal(s.n_max, name="mask_row")
        sel_clear = Signal(name="sel_clear")
        ins_issue = Signal(name="ins_issue")
        msk_issue = Signal(name="msk_issue")
        m.d.comb += [s_rp.addr.eq(sj), sel_rd.eq(_mux(list(s_rp.data), c_sel))]
        m.d.sync += [ins_v.eq(ins_issue), msk_v.eq(msk_issue), sj1.eq(sj)]

        # insertion
        beat = []
        for i in range(E):
            gt = sel_rd > ent_v[i]
            beat.append(~ent_ok[i] | (gt ^ small))
        with m.If(sel_clear):
            m.d.sync += [ok.eq(0) for ok in ent_ok]
            m.d.sync += [have1.eq(0), have2.eq(0)]
        with m.Elif(ins_v):
            for i in range(E):
                with m.If(beat[i]):
                    if i == 0:
                        m.d.sync += [ent_v[0].eq(sel_rd), ent_i[0].eq(sj1), ent_ok[0].eq(1)]
                    else:
                        with m.If(beat[i - 1]):
                            m.d.sync += [ent_v[i].eq(ent_v[i - 1]), ent_i[i].eq(ent_i[i - 1]),
                                         ent_ok[i].eq(ent_ok[i - 1])]
                        with m.Else():
                            m.d.sync += [ent_v[i].eq(sel_rd), ent_i[i].eq(sj1),
                                         ent_ok[i].eq(1)]
            with m.If(~have1 | (sel_rd > max1)):
                m.d.sync += [max1.eq(sel_rd), idx1.eq(sj1), have1.eq(1),
                             max2.eq(max1), have2.eq(have1)]
            with m.Elif(~have2 | (sel_rd > max2)):
                m.d.sync += [max2.eq(sel_rd), have2.eq(1)]

        gap = Signal(unsigned(A + 1), name="gap")
        m.d.comb += gap.eq((max1 - max2).as_unsigned())
        # mask bit of key sj1
        keep = Signal(name="keep")
        m.d.comb += keep.eq(Mux(dom, Mux(run.keep_all, 1, sj1 == idx1),
                                kn_nz & ((sel_rd > thr_v) | ((sel_rd == thr_v) & (sj1 <= thr_i)))))
        onehot = Signal(s.n_max, name="onehot")
        m.d.comb += onehot.eq(Const(1, s.n_max) << sj1)
        with m.If(msk_v & keep):
            m.d.sync += [mask_row.eq(mask_row | onehot),
                         self.key_needed.eq(self.key_needed | onehot)]
            with m.If(~dom | run.keep_all):
                m.d.sync += self.k_needed.eq(self.k_needed | onehot)

        m.d.comb += [self.mask.payload.row.eq(row), self.mask.payload.dominant.eq(dom),
                     self.mask.payload.mask.eq(mask_row)]

        # ---- control -------------------------------------------------------------------
        drain = Signal(range(PIPE + 1), name="drain")
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        def start_stage1(k: bool):
            m.d.sync += [ph_k.eq(int(k)), ph_s2.eq(0), kw.eq(0), j.eq(0), g.eq(0),
                         xa_base.eq(run.kv_base if k else 0),
                         wa_base.eq(s.dh_max * s.dw_max if k else 0),
                         wb_j.eq(0), wb_je.eq(0), wb_addr.eq(0), wb_gbase.eq(0)]

        def start_stage2():
            m.d.sync += [ph_s2.eq(1), kw.eq(0), j.eq(0), jc.eq(0), kh_base.eq(0),
                         wb_j.eq(0)]

        # Control: a state register and an if/elif chain (a Verilog case over the states
        # would be incomplete: lint).
        state = Signal(range(len(_S)), name="state")
        with m.If(state == _S.IDLE):
            m.d.comb += self.run.ready.eq(1)
            with m.If(self.run.valid):
                p = self.run.payload
                big = p.k_n > E
                m.d.sync += [run.eq(p), self.cycles.eq(0), self.key_needed.eq(0),
                             self.k_needed.eq(0), small.eq(big), kn_nz.eq(p.k_n != 0),
                             thr_idx.eq(Mux(big, p.n_k - p.k_n, p.k_n - 1)),
                             ig.eq(0), qh_base.eq(0), c_sel.eq(0), row.eq(0)]
                start_stage1(False)
                m.d.sync += state.eq(_S.S1)
        with m.Elif(state == _S.S1):
            m.d.comb += [self.busy.eq(1), issue.eq(1)]
            m.d.sync += kw.eq(kw + 1)
            with m.If(kw_last):
                m.d.sync += [kw.eq(0), j.eq(j + 1), wa_base.eq(wa_base + run.d_words)]
                with m.If(j_last):
                    m.d.sync += [j.eq(0), g.eq(g + 1), xa_base.eq(xa_base + run.d_words),
                                 wa_base.eq(Mux(ph_k, s.dh_max * s.dw_max, 0))]
                    with m.If(g_last):
                        m.d.sync += drain.eq(0)
                        m.d.sync += state.eq(_S.S1_DRAIN)
        with m.Elif(state == _S.S1_DRAIN):
            m.d.comb += self.busy.eq(1)
            m.d.sync += drain.eq(drain + 1)
            with m.If(drain == PIPE - 1):
                with m.If(ph_k):
                    start_stage2()
                    m.d.sync += state.eq(_S.S2)
                with m.Else():
                    start_stage1(True)
                    m.d.sync += state.eq(_S.S1)
        with m.Elif(state == _S.S2):
            m.d.comb += [self.busy.eq(1), issue.eq(1)]
            m.d.sync += kw.eq(kw + 1)
            with m.If(kw_last):
                m.d.sync += [kw.eq(0), j.eq(j + 1), jc.eq(jc + 1)]
                with m.If(jc == U - 1):
                    m.d.sync += [jc.eq(0), kh_base.eq(kh_base + run.h_words)]
                with m.If(j_last):
                    m.d.sync += drain.eq(0)
                    m.d.sync += state.eq(_S.S2_DRAIN)
        with m.Elif(state == _S.S2_DRAIN):
            m.d.comb += self.busy.eq(1)
            m.d.sync += drain.eq(drain + 1)
            with m.If(drain == PIPE - 1):
                m.d.sync += state.eq(_S.SEL_START)
        with m.Elif(state == _S.SEL_START):
            m.d.comb += [self.busy.eq(1), sel_clear.eq(1)]
            m.d.sync += [sj.eq(0), mask_row.eq(0)]
            m.d.sync += state.eq(_S.INS)
        with m.Elif(state == _S.INS):
            m.d.comb += [self.busy.eq(1), ins_issue.eq(1)]
            m.d.sync += sj.eq(sj + 1)
            with m.If(sj == run.n_k - 1):
                m.d.sync += state.eq(_S.INS_TAIL)
        with m.Elif(state == _S.INS_TAIL):
            m.d.comb += self.busy.eq(1)
            m.d.sync += state.eq(_S.THR)
        with m.Elif(state == _S.THR):
            m.d.comb += self.busy.eq(1)
            m.d.sync += [thr_v.eq(_mux(ent_v, thr_idx)), thr_i.eq(_mux(ent_i, thr_idx)),
                         dom.eq(run.q_th_en & (~have2 | (gap >= run.q_th))), sj.eq(0)]
            m.d.sync += state.eq(_S.MASK)
        with m.Elif(state == _S.MASK):
            m.d.comb += [self.busy.eq(1), msk_issue.eq(1)]
            m.d.sync += sj.eq(sj + 1)
            with m.If(sj == run.n_k - 1):
                m.d.sync += state.eq(_S.MASK_TAIL)
        with m.Elif(state == _S.MASK_TAIL):
            m.d.comb += self.busy.eq(1)
            m.d.sync += state.eq(_S.OUT)
        with m.Elif(state == _S.OUT):
            m.d.comb += [self.busy.eq(1), self.mask.valid.eq(1)]
            with m.If(self.mask.ready):
                m.d.sync += [row.eq(row + 1), c_sel.eq(c_sel + 1)]
                with m.If((row == run.n_q - 1) | (c_sel == U - 1)):
                    m.d.sync += [c_sel.eq(0), ig.eq(ig + 1),
                                 qh_base.eq(qh_base + run.h_words)]
                    with m.If(row == run.n_q - 1):
                        m.d.sync += state.eq(_S.DONE)
                    with m.Else():
                        start_stage2()
                        m.d.sync += state.eq(_S.S2)
                with m.Else():
                    m.d.sync += state.eq(_S.SEL_START)
        with m.Elif(state == _S.DONE):
            m.d.comb += self.busy.eq(1)
            m.d.sync += state.eq(_S.IDLE)
        return m
