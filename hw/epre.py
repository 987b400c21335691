"""Eager prediction engine (SPEC 3.4, 4.4): shift-add score prediction and top-kN / q_th selection.

Bit-exact twin of ``exion.golden.predict.eager_predict`` (``docs/epre.md`` has the picture).

Provisioning (issue 18, config fields): U = ``epre_units`` dot-product units of Le =
``epre_lanes`` shift-add lanes each (an EPRE word is Le elements), S = ``epre_selectors``
top-kN selectors. Every cycle every unit multiplies (approximately: LOD / TS-LOD, sums of
shifted ones, no multiplier) one Le-word of its own row operand with one broadcast Le-word
and accumulates exactly in A bits::

    stage 1 (Q, then K):  unit u holds token row g*U + u of X;  Wq^T / Wk^T row j broadcast
                          loop g (row groups), j (0..d_head-1), kw (0..d_words-1)
                          acc -> (acc >> shift) -> saturate W -> Qh / Kh bank u
    stage 2 (per group g): unit u holds Qh row g*U + u;  Kh row j broadcast (bank j % U)
                          loop j (0..N_k-1), kw (0..h_words-1) -> score buffer [j][u]
    select:               S selectors, S rows at once. S = U (streamed): selector u inserts
                          unit u's scores as stage 2 writes them (no cycles of its own),
                          then latch the kN-th (score, index) and the top-2 gap, one mask
                          pass over the score buffer (N_k cycles) for all U rows, emit the
                          U mask rows on ``mask`` (one per cycle). S < U: rounds of S rows,
                          each an insertion pass (N_k) + latch + mask pass (N_k) + S outputs.

Datapath pipeline: read (1) -> LOD register (1) -> products + lane tree register (1) ->
accumulator (1): a result is written ``PIPE = 4`` cycles after its last beat issues; every
phase ends with a ``PIPE``-cycle drain, so the next phase reads finished data.

Selection (per selector, one row at a time): the network keeps the first
``m`` elements of the row in the total order "score descending, index ascending" (mode
``largest``, ``m = kN``) or its reverse (mode ``smallest``, ``m = N_k - kN + 1``, when
``kN > E``), so ``E = n_max // 2 + 1`` entries suffice for every kN. Its entry ``m - 1`` is the
kN-th element ``(T, t)``; key j is kept iff ``s_j > T or (s_j == T and j <= t)`` -- exactly
the stable-sort rule of ``topk_select``. A two-entry tracker gives the largest score (lowest
index) and the second largest value for the gap test.

Cycles of a run (``cycles`` output, no back-pressure on ``mask``)::

    (Gq + Gk) * d_head * d_words + 2 * PIPE                       stage 1
  + Gq * (N_k * h_words + PIPE)                                   stage 2
  + Gq * (N_k + SEL_FIXED - 3) + N_q                              selection, S = U
    (sum_g ceil(rows_g / S) * (2 * N_k + SEL_FIXED - 1) + N_q      selection, S < U)
  + RUN_FIXED

with ``Gq = ceil(N_q / U)``, ``Gk = ceil(N_k / U)`` (``exion.golden.cycles.epre_run_cycles``
is the model; the constants are ``exion.config.EPRE_*``).
"""

from __future__ import annotations

import math

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from exion.config import EPRE_PIPE, EPRE_RUN_FIXED, EPRE_SEL_FIXED, EPRE_SELECTOR_KINDS, Config

from .util import bits_for as _bits
from .util import pad_mux as _mux
from .epre_radix import EpreRadixSelector
from .epre_stages import EpreControl, EpreLanes, EpreSelector, EpreWriteback, epre_word
from .lod import refuse
from .sdue import mem_write_signature

__all__ = ["EPRE", "EpreSizes", "epre_word", "run_layout", "mask_layout", "score_layout",
           "h_read_signature", "w_read_signature", "PIPE", "SEL_FIXED", "RUN_FIXED"]

#: Cycles from the issue of a phase's last beat to its last result written (drain);
#: ``exion.config.EPRE_PIPE`` (one home, also ``cfg.epre_pipe``).
PIPE = EPRE_PIPE
#: Selector cycles per query row beyond 2 * N_k: start, insert tail, threshold, mask tail, out.
SEL_FIXED = EPRE_SEL_FIXED
#: Cycles of a run beyond the phases (the final ``DONE`` state).
RUN_FIXED = EPRE_RUN_FIXED


class EpreSizes:
    """Maximum problem sizes of one EPRE instance (memory and counter dimensions).

    ``n_max`` tokens (N_q + key rows placed after them for cross-attention; N_q, N_k <= n_max),
    ``d_max`` model width (stage-1 reduction), ``dh_max`` head width (stage-2 reduction),
    ``selectors`` S, selector ``kind`` (``"insertion"`` / ``"radix"``, default
    ``cfg.epre_selector_kind``) and radix ``ports`` P (default ``cfg.epre_radix_port_count``).
    ``w_bufs``: W-memory buffers of one head's Wq^T / Wk^T each (1; the DSC's EPRE has 2: a
    run reads the one its ``w_buf`` field names while the host fills the other).
    ``k_bufs``: Kh buffers of ``h_depth`` words per bank (1; the DSC's EPRE has 2, issue 19:
    a run reads / writes the one its ``k_buf`` field names, from ``k_buf * h_depth``, while
    the next head's exact keys go into the other; with 2 a run may also wait for its keys
    between stage 1 and stage 2, ``k_wait``).
    """

    def __init__(self, cfg: Config, units: int, n_max: int, d_max: int, dh_max: int,
                 selectors: int | None = None, kind: str | None = None,
                 ports: int | None = None, w_bufs: int = 1, k_bufs: int = 1):
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
        if w_bufs not in (1, 2):
            raise ValueError(f"EPRE w_bufs must be 1 or 2, got {w_bufs!r}")
        if k_bufs not in (1, 2):
            raise ValueError(f"EPRE k_bufs must be 1 or 2, got {k_bufs!r}")
        self.w_bufs, self.k_bufs = w_bufs, k_bufs
        L = self.lanes = cfg.epre_lane_count
        self.selectors = cfg.epre_selector_count if selectors is None else selectors
        if not isinstance(self.selectors, int) or isinstance(self.selectors, bool) \
                or self.selectors < 1:
            raise ValueError(f"EPRE selectors must be an integer >= 1, got {self.selectors!r}")
        if self.selectors > units:
            raise ValueError(f"EPRE selectors = {self.selectors} exceeds units = {units} "
                             f"(a selector serves one unit's rows at a time)")
        kind = cfg.epre_selector_kind if kind is None else kind
        if kind not in EPRE_SELECTOR_KINDS:
            raise ValueError(f"EPRE selector kind must be one of "
                             f"{', '.join(repr(k) for k in EPRE_SELECTOR_KINDS)}, got {kind!r}")
        self.radix = int(kind == "radix")
        self.ports = cfg.epre_radix_port_count if ports is None else ports
        if self.radix and self.selectors != units:
            raise ValueError(f"EPRE radix selectors = {self.selectors} must equal units = "
                             f"{units} (one radix selector per unit, fed by stage 2)")
        if self.radix and (not isinstance(self.ports, int) or isinstance(self.ports, bool)
                           or not 1 <= self.ports <= n_max):
            raise ValueError(f"EPRE radix ports must be an integer in 1..n_max ({n_max}), "
                             f"got {self.ports!r}")
        self.rounds = math.ceil(units / self.selectors)   # selector rounds per row group
        self.streamed = int(self.selectors == units)      # insert from the stage-2 stream
        self.units, self.n_max, self.d_max, self.dh_max = units, n_max, d_max, dh_max
        self.g_max = math.ceil(n_max / units)        # row groups
        self.dw_max = math.ceil(d_max / L)            # stage-1 words per row
        self.hw_max = math.ceil(dh_max / L)           # stage-2 words per row
        self.entries = n_max // 2 + 1                 # selector network
        # A one-word memory has a zero-width address, which Verilator flags (ASCRANGE) in the
        # emitted Verilog: such banks (units = n_max and a row of <= L elements, e.g. the DSC's
        # EPRE on exion16) get one spare word.
        self.x_depth = max(2, self.g_max * self.dw_max)   # per X bank
        self.w_half = 2 * dh_max * self.dw_max            # one buffer: Wq^T then Wk^T
        self.w_depth = w_bufs * self.w_half
        self.h_depth = max(2, self.g_max * self.hw_max)   # per Qh bank, per Kh buffer
        self.kh_depth = k_bufs * self.h_depth             # per Kh bank
        self.s_words = math.ceil(n_max / self.ports)      # radix: words per score bank

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("units", "lanes", "selectors", "rounds",
                                              "streamed", "n_max", "d_max", "dh_max", "g_max",
                                              "dw_max", "hw_max", "entries", "x_depth",
                                              "w_depth", "h_depth", "radix", "ports",
                                              "w_bufs", "w_half", "k_bufs", "kh_depth")}

    @property
    def kind(self) -> str:
        """The selector kind, ``"radix"`` or ``"insertion"``."""
        return "radix" if self.radix else "insertion"


def run_layout(cfg: Config, s: EpreSizes) -> data.StructLayout:
    """One prediction run (the host computes every field; ``exion.sim.epre_rtl`` shows how).

    n_q, n_k      query / key rows, 1..n_max
    q_groups      ceil(n_q / units);   k_groups  ceil(n_k / units)
    kv_base       X word of key row 0: kv_group * d_words (0: self-attention, the keys are the
                  query rows; cross-attention puts X_kv at row group kv_group after X)
    q_base        X word of query row 0: q_group * d_words (0: the run's queries are X's first
                  rows; a **sub-run** scores the queries from row group q_group on, issue 19)
    d_words       ceil(d / L), X and W^T words per row
    d_head        Wq / Wk columns (Qh / Kh width), 1..dh_max
    h_words       ceil(d_head / L)
    shift_q/k     stage-1 arithmetic shift right, 0..A-1
    k_n           kept keys per row, 0..n_k
    q_th          gap threshold, min(q_th_int, 2**A) (a gap is < 2**A)
    q_th_en       1 = dominant-row rule on
    keep_all      polarity: 1 = a dominant row keeps every key, 0 = its top-1 only
    two_step      1 = TS-LOD, 0 = LOD (only with cfg.lod_terms == 2)
    k_given       1 = exact keys: the host wrote the keys' K rows into the Kh banks (``kh_w``);
                  stage 1 computes Qh only (``k_groups`` still counts the key row groups)
    w_buf         only with ``w_bufs = 2``: the W buffer the run reads (its Wq^T at
                  ``w_buf * w_half``, Wk^T ``dh_max * dw_max`` after)
    k_buf         only with ``k_bufs = 2``: the Kh buffer the run reads (stage 2) and stage 1
                  writes, from Kh word ``k_buf * h_depth``
    k_wait        only with ``k_bufs = 2`` and ``k_given``: after stage 1 the run waits until
                  ``keys_ok[k_buf]`` (its keys are in) before stage 2
    k_hold        only with ``k_bufs = 2``: a queued run that keeps its Kh buffer full when it
                  ends (the DSC's ``epre_keys_full``), for the next sub-run of the same head
                  (issue 19); 0: the buffer is free for the next head's keys
    """
    nb = (s.n_max).bit_length()
    return data.StructLayout({
        "n_q": unsigned(nb), "n_k": unsigned(nb),
        "q_groups": unsigned(s.g_max.bit_length()), "k_groups": unsigned(s.g_max.bit_length()),
        "kv_base": unsigned(_bits(s.x_depth)), "q_base": unsigned(_bits(s.x_depth)),
        "d_words": unsigned(s.dw_max.bit_length()),
        "d_head": unsigned(s.dh_max.bit_length()),
        "h_words": unsigned(s.hw_max.bit_length()),
        "shift_q": unsigned(_bits(cfg.acc_width)), "shift_k": unsigned(_bits(cfg.acc_width)),
        "k_n": unsigned(nb),
        "q_th": unsigned(cfg.acc_width + 1),
        "q_th_en": 1, "keep_all": 1, "two_step": 1, "k_given": 1,
        **({"w_buf": 1} if s.w_bufs > 1 else {}),
        **({"k_buf": 1, "k_wait": 1, "k_hold": 1} if s.k_bufs > 1 else {}),
    })


def bank_write_signature(banks: int, addr_bits: int, word) -> wiring.Signature:
    """Host write port over several banks: one address and one word, written into every
    bank whose ``en`` bit is set."""
    return wiring.Signature({"en": Out(banks), "addr": Out(addr_bits), "data": Out(word)})


def mask_layout(s: EpreSizes) -> data.StructLayout:
    """One selector result: query row (within its run), dominant flag, score-mask row (bit
    j = key j)."""
    return data.StructLayout({"row": unsigned(_bits(s.n_max)), "dominant": 1,
                              "mask": unsigned(s.n_max)})


def score_layout(cfg: Config, s: EpreSizes) -> data.StructLayout:
    """Stage-2 tap: the scores of key ``key`` for query rows ``group * units + u``."""
    return data.StructLayout({"group": unsigned(_bits(s.g_max)), "key": unsigned(_bits(s.n_max)),
                              "scores": data.ArrayLayout(signed(cfg.acc_width), s.units)})


def w_read_signature(addr_bits: int, word) -> wiring.Signature:
    """Read of the W memory: ``data`` one cycle after ``addr``."""
    return wiring.Signature({"addr": Out(addr_bits), "data": In(word)})


def h_read_signature(cfg: Config, s: EpreSizes) -> wiring.Signature:
    """Host read of the Qh (``k = 0``) or Kh (``k = 1``) banks; ``data`` one cycle later."""
    return wiring.Signature({
        "addr": Out(_bits(s.h_depth)),
        "k": Out(1),
        "data": In(data.ArrayLayout(epre_word(cfg), s.units)),
    })


class EPRE(wiring.Component):
    """Eager prediction engine.

    Parameters
    ----------
    cfg : Config
        Le = ``epre_lane_count`` (shift-add lanes per unit = elements per EPRE word),
        W = ``width``, A = ``acc_width``, ``lod_terms`` (1: LOD hardware only; 2: TS-LOD, LOD
        selectable per run), U = ``epre_unit_count``, S = ``epre_selector_count``.
    units : int
        Dot-product units (rows computed in parallel), default ``cfg.epre_unit_count``.
    selectors : int
        Top-kN selectors (rows selected at once, 1..units), default
        ``cfg.epre_selector_count``. S = U: each unit's selector inserts from the stage-2
        stream (no insertion pass); S < U: rounds of S rows over the score buffer.
    selector_kind : str
        ``"insertion"`` (``EpreSelector``) or ``"radix"`` (``EpreRadixSelector``, S = U, a
        score buffer of P banks), default ``cfg.epre_selector_kind``. The DSC passes
        ``"insertion"`` explicitly.
    radix_ports : int
        Radix selector: P, scores per cycle (default ``cfg.epre_radix_port_count``).
    epre_unit_boxes : bool
        The U dot-product units as black-box instances of module
        ``hw.epre_stages.EPRE_UNIT_MODULE`` (``EpreLanes``' ``unit_boxes``): hierarchical
        synthesis generates the EPRE this way and the unit once on its own, so the exion16
        EPRE's 32 x 96 lanes are not elaborated 32 times. Default: the full units.
    w_bufs : int
        W-memory buffers (1; the DSC's EPRE: 2, issue 19): with 2, a run reads the buffer its
        ``w_buf`` run field names (``w_buf * w_half`` on), so that the host may write the
        other one (``w_w``) while it runs.
    k_bufs : int
        Kh buffers (1; the DSC's EPRE: 2, issue 19): with 2, a run uses the buffer its
        ``k_buf`` run field names, the host may write exact keys into the other one while
        the run is busy (``kh_w`` is taken whenever stage 1 does not write Kh), and a run
        with ``k_given`` and ``k_wait`` waits after stage 1 until ``keys_ok[k_buf]``.
    w_read : bool
        Build ``w_r``, the W memory's second read port (the DSC's EPRE; default False).
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
    w_r : In(w_read_signature(w_addr_bits, word))
        Only with ``w_read``: a second read port of the W memory, ``data`` one cycle after
        ``addr``, usable while the EPRE runs (the run only reads W): the DSC's GMEM_EFILL
        copies Wq^T / Wk^T rows from here into the gemm engine's GMEM (docs/dsc.md).
    kh_w : In(bank_write_signature(units, h_addr_bits, word))
        Host write of exact keys into the Kh banks while idle, one word at a time into the
        banks ``en`` selects (key row ``g*units + u`` in bank u, words ``g*h_words + hw``),
        for a run with ``k_given``; ignored while ``busy`` (with ``k_bufs = 2``: while
        stage 1 writes Kh; the address includes the buffer's ``h_depth`` offset). One word
        wide, not one per bank as ``x_w``: the exion16 EPRE's top would pass Amaranth's
        65,536 input bits.
    h_r : In(h_read_signature)
        Host read of Qh / Kh (bank u, word ``g*h_words + hw``) while idle.
    mask : Out(stream.Signature(mask_layout))
        One score-mask row per query row, in row order, with its dominant flag.
    score : Out(stream.Signature(score_layout, always_ready=True))
        Stage-2 tap (observation): one beat per key per row group.
    key_needed, k_needed : Out(n_max)
        OR of the mask rows (SPEC's key-needed flag); OR of the rows whose Q row is needed.
        Valid once ``busy`` falls; cleared when a run starts.
    keys_ok : In(2)
        Only with ``k_bufs = 2``: Kh buffer b holds its run's exact keys (a ``k_wait`` run
        leaves stage 1 for stage 2 once ``keys_ok[k_buf]`` is high).
    busy : Out(1)
    cycles : Out(32)
        Busy cycles of the last run (see the module docstring for the formula).
    """

    def __init__(self, cfg: Config, *, units: int | None = None, n_max: int = 256,
                 d_max: int | None = None, dh_max: int | None = None,
                 selectors: int | None = None, selector_kind: str | None = None,
                 radix_ports: int | None = None, epre_unit_boxes: bool = False,
                 w_bufs: int = 1, w_read: bool = False, k_bufs: int = 1):
        self.cfg = cfg
        self.w_read = w_read
        self.epre_unit_boxes = epre_unit_boxes
        units = cfg.epre_unit_count if units is None else units
        d_max = min(1152, cfg.k_max) if d_max is None else d_max
        dh_max = min(72, cfg.k_max) if dh_max is None else dh_max
        try:
            self.sizes = s = EpreSizes(cfg, units, n_max, d_max, dh_max, selectors,
                                       selector_kind, radix_ports, w_bufs, k_bufs)
        except ValueError as e:
            raise refuse(self, str(e)) from None
        word = epre_word(cfg)
        super().__init__({
            "run": In(stream.Signature(run_layout(cfg, s))),
            "x_w": In(mem_write_signature(units, _bits(s.x_depth), word)),
            "w_w": In(mem_write_signature(1, _bits(s.w_depth), word)),
            **({"w_r": In(w_read_signature(_bits(s.w_depth), word))} if w_read else {}),
            "kh_w": In(bank_write_signature(units, _bits(s.kh_depth), word)),
            "h_r": In(h_read_signature(cfg, s)),
            "mask": Out(stream.Signature(mask_layout(s))),
            "score": Out(stream.Signature(score_layout(cfg, s), always_ready=True)),
            "key_needed": Out(n_max),
            "k_needed": Out(n_max),
            **({"keys_ok": In(2)} if k_bufs > 1 else {}),
            "busy": Out(1),
            "cycles": Out(32),
        })

    @property
    def latency(self) -> int:
        """Cycles from a phase's last issued beat to its last result written."""
        return PIPE

    def constants(self) -> dict:
        return {"pipe": self.cfg.epre_pipe, "sel_fixed": self.cfg.epre_sel_fixed,
                "run_fixed": self.cfg.epre_run_fixed,
                "lod_terms": self.cfg.lod_terms, **self.sizes.as_dict()}

    def elaborate(self, platform):
        cfg, s = self.cfg, self.sizes
        U = s.units
        m = Module()
        word = epre_word(cfg)
        rl = run_layout(cfg, s)

        # ---- stages --------------------------------------------------------------------
        m.submodules.control = ctl = EpreControl(cfg, s, rl)
        m.submodules.lanes = lanes = EpreLanes(cfg, U, unit_boxes=self.epre_unit_boxes)
        m.submodules.writeback = wb = EpreWriteback(
            cfg, U, _bits(s.h_depth), max(s.dh_max, s.n_max) + 1, score_layout(cfg, s),
            rl["d_head"].shape.width, rl["h_words"].shape.width)
        wiring.connect(m, wiring.flipped(self.run), ctl.run)
        wiring.connect(m, wb.score, wiring.flipped(self.score))
        run = ctl.params
        m.d.comb += [
            self.busy.eq(ctl.busy), self.cycles.eq(ctl.cycles),
            lanes.issue.eq(ctl.issue), lanes.first.eq(ctl.first), lanes.last.eq(ctl.last),
            lanes.jc.eq(ctl.jc), lanes.ph_s2.eq(ctl.ph_s2),
            lanes.two_step.eq(run.two_step if cfg.lod_terms == 2 else 0),
            wb.res_v.eq(lanes.res_v), wb.acc.eq(lanes.acc), wb.ph_k.eq(ctl.ph_k),
            wb.ph_s2.eq(ctl.ph_s2), wb.shift_q.eq(run.shift_q), wb.shift_k.eq(run.shift_k),
            wb.d_head.eq(run.d_head), wb.h_words.eq(run.h_words), wb.group.eq(ctl.group),
            wb.clear_all.eq(ctl.wb_clear_all), wb.clear_j.eq(ctl.wb_clear_j),
            self.mask.valid.eq(ctl.mask_valid), ctl.mask_ready.eq(self.mask.ready),
            self.mask.payload.row.eq(ctl.row),
        ]
        sels = (self._radix if s.radix else self._insertion)(m, ctl, lanes, wb)
        for i, sel in enumerate(sels):
            m.d.comb += [
                sel.start.eq(ctl.start), sel.k_n.eq(self.run.payload.k_n),
                sel.n_k.eq(self.run.payload.n_k), sel.keep_all.eq(run.keep_all),
                sel.q_th_en.eq(run.q_th_en), sel.q_th.eq(run.q_th), sel.clear.eq(ctl.sel_clear),
                # streamed (S = U): selector i sees unit i's scores as stage 2 writes them
                sel.s_v.eq(wb.s_en), sel.s_score.eq(lanes.acc[i]), sel.s_key.eq(wb.s_addr),
            ]
        m.d.comb += [
            self.mask.payload.dominant.eq(_mux([x.dominant for x in sels], ctl.orow)),
            self.mask.payload.mask.eq(_mux([x.mask_row for x in sels], ctl.orow)),
        ]

        # ---- memories: X, Qh, Kh banks per unit; W^T (the score buffer: _insertion / _radix)
        h_rd = {"q": [], "k": []}
        kb2 = s.k_bufs > 1
        koff = Mux(run.k_buf, s.h_depth, 0) if kb2 else 0       # the run's Kh buffer
        if kb2:
            m.d.comb += ctl.keys_ok.eq(self.keys_ok.bit_select(run.k_buf, 1))
        for u in range(U):
            mem = Memory(shape=word, depth=s.x_depth, init=[])
            m.submodules[f"xmem{u}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.x_w.addr), wp.data.eq(self.x_w.data[u]),
                         wp.en.eq(self.x_w.en[u])]
            rp = mem.read_port()
            m.d.comb += [rp.addr.eq(ctl.x_addr), lanes.x[u].eq(rp.data)]
            for kind, addr, en in (("q", ctl.qh_addr, wb.h_en_q),
                                   ("k", ctl.kh_addr + koff, wb.h_en_k)):
                mem = Memory(shape=word, depth=s.kh_depth if kind == "k" else s.h_depth,
                             init=[])
                m.submodules[f"{kind}hmem{u}"] = mem
                wp = mem.write_port()
                if kind == "q":
                    m.d.comb += [wp.addr.eq(wb.h_addr), wp.data.eq(wb.h_data[u]), wp.en.eq(en)]
                else:       # stage 1's Kh while busy (k_bufs = 2: while it writes Kh), the
                    #         host's exact keys otherwise
                    mine = wb.h_en_k if kb2 else self.busy
                    m.d.comb += [
                        wp.addr.eq(Mux(mine, wb.h_addr + koff, self.kh_w.addr)),
                        wp.data.eq(Mux(mine, wb.h_data[u], self.kh_w.data)),
                        wp.en.eq(en | (self.kh_w.en[u] & ~mine))]
                rp = mem.read_port()
                m.d.comb += rp.addr.eq(Mux(self.busy, addr, self.h_r.addr))
                h_rd[kind].append(rp.data)
            m.d.comb += [lanes.qh[u].eq(h_rd["q"][u]), lanes.kh[u].eq(h_rd["k"][u])]
        wmem = Memory(shape=word, depth=s.w_depth, init=[])
        m.submodules.wmem = wmem
        wp = wmem.write_port()
        m.d.comb += [wp.addr.eq(self.w_w.addr), wp.data.eq(self.w_w.data[0]),
                     wp.en.eq(self.w_w.en[0])]
        w_rp = wmem.read_port()
        w_off = Mux(ctl.params.w_buf, s.w_half, 0) if s.w_bufs > 1 else 0
        m.d.comb += [w_rp.addr.eq(ctl.w_addr + w_off), lanes.w.eq(w_rp.data)]
        if self.w_read:                  # the DSC's GMEM_EFILL (any time: the run only reads)
            x_rp = wmem.read_port()
            m.d.comb += [x_rp.addr.eq(self.w_r.addr), self.w_r.data.eq(x_rp.data)]

        h_r_k = Signal(name="h_r_k")
        m.d.sync += h_r_k.eq(self.h_r.k)
        for u in range(U):
            m.d.comb += self.h_r.data[u].eq(Mux(h_r_k, h_rd["k"][u], h_rd["q"][u]))
        return m

    def _insertion(self, m, ctl, lanes, wb) -> list:
        """S insertion selectors (``EpreSelector``) over the one-port score buffer (key j at
        address j, U scores per word); they own ``key_needed`` / ``k_needed``."""
        s, U, S = self.sizes, self.sizes.units, self.sizes.selectors
        run = ctl.params
        sels = [EpreSelector(self.cfg, s.n_max, streamed=bool(s.streamed)) for _ in range(S)]
        smem = Memory(shape=data.ArrayLayout(signed(self.cfg.acc_width), U), depth=s.n_max,
                      init=[])
        m.submodules.smem = smem
        s_wp = smem.write_port()
        s_rp = smem.read_port()
        m.d.comb += [s_wp.addr.eq(wb.s_addr), s_wp.en.eq(wb.s_en), s_wp.data.eq(lanes.acc),
                     s_rp.addr.eq(ctl.sj)]
        kn, kk = 0, 0
        for i, sel in enumerate(sels):
            m.submodules[f"selector{i}" if S > 1 else "selector"] = sel
            cols = [s_rp.data[c] for c in range(i, U, S)]    # column rnd * S + i
            m.d.comb += [
                sel.score.eq(_mux(cols, ctl.rnd)),
                sel.sj.eq(ctl.sj), sel.ins.eq(ctl.ins), sel.msk.eq(ctl.msk),
                sel.latch.eq(ctl.latch),
                # selector i serves unit rnd * S + i, query row ctl.row + i of this round
                sel.act.eq((ctl.rbase + i < U) & (ctl.row + i < run.n_q)),
            ]
            kn, kk = kn | sel.key_needed, kk | sel.k_needed
        m.d.comb += [self.key_needed.eq(kn), self.k_needed.eq(kk)]
        return sels

    def _radix(self, m, ctl, lanes, wb) -> list:
        """U radix selectors (``EpreRadixSelector``) over a P-bank score buffer (key j in bank
        ``j % P`` at word ``j // P``, U scores per word), in lockstep: selector 0's read
        address serves all, selector u takes column u. ``key_needed`` / ``k_needed`` OR the
        mask rows as they leave on ``mask`` (only real query rows are emitted)."""
        s, U, P = self.sizes, self.sizes.units, self.sizes.ports
        run = ctl.params
        sels = [EpreRadixSelector(self.cfg, s.n_max, P) for _ in range(U)]
        for i, sel in enumerate(sels):
            m.submodules[f"rselector{i}"] = sel
            m.d.comb += sel.go.eq(ctl.rgo)
        m.d.comb += ctl.rdone.eq(sels[0].done)
        # stage 2 writes key j's U scores to bank j % P, word j // P (counted, no divider)
        bank = Signal(range(P), name="sbank")
        word = Signal(range(max(2, s.s_words)), name="sword")   # no zero-width signal
        with m.If(ctl.wb_clear_j):
            m.d.sync += [bank.eq(0), word.eq(0)]
        with m.Elif(wb.s_en):
            m.d.sync += bank.eq(bank + 1)
            with m.If(bank == P - 1):
                m.d.sync += [bank.eq(0), word.eq(word + 1)]
        for p in range(P):
            mem = Memory(shape=data.ArrayLayout(signed(self.cfg.acc_width), U),
                         depth=max(2, s.s_words), init=[])   # no zero-width address
            m.submodules[f"smem{p}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(word), wp.data.eq(lanes.acc),
                         wp.en.eq(wb.s_en & (bank == p)), rp.addr.eq(sels[0].addr)]
            for u, sel in enumerate(sels):
                m.d.comb += sel.rdata[p].eq(rp.data[u])
        out = self.mask.valid & self.mask.ready
        row, dom = self.mask.payload.mask, self.mask.payload.dominant
        with m.If(ctl.start):
            m.d.sync += [self.key_needed.eq(0), self.k_needed.eq(0)]
        with m.Elif(out):
            m.d.sync += self.key_needed.eq(self.key_needed | row)
            with m.If(~dom | run.keep_all):
                m.d.sync += self.k_needed.eq(self.k_needed | row)
        return sels
