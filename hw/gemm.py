"""Output-sparse product engine: CAU -> weight fetch -> cv_switch -> SDUE (SPEC 4.2, 4.3).

A product ``Y = A @ B`` restricted to a mask runs from (A, B, mask) alone::

    mask beats ──> CAU ──(pass: sel, col, block)──> fetch ──(descriptor)──> SDUE ──> OMEM
                                                      │  ▲
                                    WMEM sub-banks <──┘  └── GMEM (B, one column per
                                    (ring of regions)         2**kbits-word slot)

* The host loads A's row blocks into IMEM (block ``b`` at ``b * kwords``), B into GMEM
  (column ``j``'s K/L words at ``j << kbits``), optionally OMEM (the previous output that
  FFN-Reuse keeps), sets ``setup`` and streams the mask (one row block after another, the
  block's index in the beats' ``block`` field).
* The CAU turns each row block's mask into ConMerge passes (bit-exact with
  ``golden.conmerge.conmerge``) and works on the next row blocks while the SDUE computes.
* The CAU's passes collect in a pass queue (the CAU never waits). The **fetch** unit
  (row-block dataflow) takes one pass at a time, a block's passes once the block's last
  pass is queued (a schedule ``golden.cycles.engine_cycles`` states exactly), and
  copies, for every slot c and member k, the K/L words of column ``col[c][k]`` from
  GMEM into WMEM sub-bank k of bank c: all
  ``C * m`` words of a beat in one cycle, so a pass is fetched in ``kwords`` cycles. WMEM
  holds ``setup.regions`` regions of ``kwords`` words (a ring); a region is free again when
  the SDUE has issued the pass that reads it (``SDUE.issued``), so fetching runs up to
  ``regions`` passes ahead of the SDUE.
* Each fetched pass becomes an SDUE descriptor (``ibase = block * kwords``,
  ``wbase[k]`` = the region, i_sw identity, the CAU's ``sel``/``col``, ``obase = block *
  ncols``, ``accumulate`` from ``setup``) in a small FIFO; the SDUE streams them back to back.
* When ``busy`` falls, OMEM bank r at ``block * ncols + j`` holds ``Y[block * R + r, j]``
  where the mask is set and the preloaded value elsewhere.

* col-group dataflow (``flow.col_group``, :meth:`SparseGemm._col_group`): the run's columns
  in ``flow.ngroups`` groups of ``flow.gcols``, each group's needed columns scanned from
  GMEM into one WMEM half (ping-pong: group g + 1 is scanned while group g computes) and
  read in place by every row block's passes. WMEM map: replicated (every column in every
  sub-bank, one word per scan cycle) or, with ``flow.striped``, striped (column j in bank
  ``j % C`` only, a stripe of C columns per scan cycle; for passes that keep column j in
  slot ``j % C`` alone, e.g. dense masks).

Limits of one run (the host driver ``sim.gemm_rtl`` tiles larger products): ``N <=
omem_depth``, ``blocks * N <= omem_depth``, ``blocks * kwords <= 2 * imem_words``,
``regions * kwords <= 2 * wmem_words``; col-group ``gcols * kwords <= wmem_words`` with
several groups (at most ``cfg.gemm_max_groups``), else ``N * kwords <= 2 * wmem_words``. GMEM is a model of the global buffer with ``C * m``
read ports (one word per WMEM sub-bank per cycle); see ``docs/gemm.md``.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from exion.config import CAU_COLS_PER_CYCLE, GEMM_DESC_DEPTH, GEMM_MAX_REGIONS, Config
from exion.errors import ExionError

from .cau import CAU, cau_pass_layout, mask_layout
from .dpu import operand_layout
from .ecp5 import ff_copies, mult18x18d
from .sdue import SDUE, mem_write_signature, omem_read_signature, pass_layout
from .util import bits_for as _bits
from .util import div_const, pipe_reg, popcount

__all__ = ["SparseGemm", "setup_layout", "flow_layout", "gmem_write_signature",
           "gmem_read_signature", "gmem_port_signature", "gmem_model", "forward_gmem", "gmem_kbits",
           "DATAFLOWS", "group_shift", "block_label", "gather_supported", "kidx_layout",
           "kidx_write_signature"]

#: The engine's dataflows (``flow.col_group``): 0 = row-block, 1 = col-group.
DATAFLOWS = ("row-block", "col-group")


def gmem_kbits(cfg: Config) -> int:
    """Address bits of a word within one GMEM column slot (``2 * imem_words`` words)."""
    return _bits(2 * cfg.imem_words)


def setup_layout(cfg: Config, max_regions: int) -> data.StructLayout:
    """Run parameters, held constant by the host while ``busy``.

    kwords      K/L words of every pass (1 .. 2 * imem_words)
    ncols       N, the OMEM stride of a row block (1 .. omem_depth)
    regions     WMEM regions of ``kwords`` words the fetch may fill ahead (1 .. max_regions)
    accumulate  1 = add the products into OMEM, 0 = overwrite
    """
    return data.StructLayout({
        "kwords": (2 * cfg.imem_words).bit_length(),
        "ncols": cfg.omem_depth.bit_length(),
        "regions": max_regions.bit_length(),
        "accumulate": 1,
    })


def flow_layout(cfg: Config) -> data.StructLayout:
    """Dataflow and global-buffer bandwidth of a run (all zero = today's row-block engine
    with an unlimited weight fetch; held constant by the host while ``busy``).

    col_group  0 = row-block (a pass's weights fetched per pass), 1 = col-group (the run's
               columns fetched once into WMEM, resident for every row block; see
               ``docs/gemm.md``)
    gb_bytes   global-buffer read bandwidth in bytes per cycle for the weight fetch
               (0 = unlimited: one beat of the fetch per cycle)
    nblocks    row blocks of the run (col-group: a group's mask ends with block
               ``nblocks - 1``; block labels 0 .. nblocks - 1)
    gcols      col-group: columns per group (0 = ``ncols``: one group); with more than
               one group a group's columns fit one WMEM half (``wmem_words`` words)
    ngroups    col-group: groups of the run, ``ceil(ncols / gcols)`` (0 = 1); the mask
               streams group by group, each group's row blocks labelled ``b | g << gshift``
               (:func:`group_shift`)
    gather     col-group: word w of every scanned column is gathered from the K rows of the
               index list's word w (``kidx_w``; FC2's needed W2 rows; :func:`gather_supported`)
    striped    col-group: the *striped* WMEM map: column j of a group lives only in bank
               ``j % C`` at ``(j // C) * kwords``, and the scan moves a stripe of C columns
               (word w of each, one per bank) per cycle. Valid only when every pass of the
               run puts a group's column j in slot ``j % C`` alone (no merge, no condensed
               column shifting the others: e.g. a dense mask; the host checks it,
               ``golden.cycles.stripe_ok``); not with ``gather``
    """
    nb = cfg.omem_depth.bit_length()
    return data.StructLayout({
        "col_group": 1,
        "gb_bytes": 16,
        "nblocks": nb,
        "gcols": nb,
        "ngroups": nb,
        "gather": 1,
        "striped": 1,
    })


def gather_supported(cfg: Config) -> bool:
    """The col-group scan can gather (``flow.gather``): one WMEM word = L elements from L
    GMEM words, read through L of the ``C * m`` GMEM read ports in one cycle."""
    return cfg.cols * cfg.merge_ways >= cfg.lanes


def kidx_layout(cfg: Config) -> data.ArrayLayout:
    """One word of the gather index list: for each lane l of a gathered WMEM word, the K row
    it takes, as (``word`` = row // L, ``lane`` = row % L) of the column's GMEM words."""
    return data.ArrayLayout(data.StructLayout({"word": gmem_kbits(cfg),
                                               "lane": _bits(cfg.lanes)}), cfg.lanes)


def kidx_write_signature(cfg: Config) -> wiring.Signature:
    """Host write of the gather index list: entry word ``data`` at ``addr`` when ``en``."""
    return wiring.Signature({
        "en": Out(1),
        "addr": Out(_bits(2 * cfg.imem_words)),
        "data": Out(kidx_layout(cfg)),
    })


def group_shift(cfg: Config) -> int:
    """col-group: bit of a pass's block label where the column group starts (the row
    block sits below it); ``cfg.gemm_max_groups`` groups fit above."""
    return cfg.omem_depth.bit_length()


def block_label(cfg: Config, block: int, group: int = 0) -> int:
    """The mask beats' ``block`` label of row block ``block`` of column group ``group``."""
    return block | group << group_shift(cfg)


def gmem_write_signature(cfg: Config) -> wiring.Signature:
    """Host write of GMEM: word ``data`` (L elements) at ``addr`` when ``en``."""
    return wiring.Signature({
        "en": Out(1),
        "addr": Out(_bits(cfg.omem_depth) + gmem_kbits(cfg)),
        "data": Out(operand_layout(cfg)),
    })


def gmem_read_signature(cfg: Config) -> wiring.Signature:
    """One GMEM read port, seen from the engine: ``data`` = the word at the ``addr`` of the
    previous cycle (a synchronous block-RAM read, always enabled)."""
    return wiring.Signature({
        "addr": Out(_bits(cfg.omem_depth) + gmem_kbits(cfg)),
        "data": In(operand_layout(cfg)),
    })


def gmem_port_signature(cfg: Config) -> wiring.Signature:
    """GMEM outside the engine (``cfg.gmem_ports``): the host write port ``w`` passed
    through, and ``r[c][k]``, the read port of WMEM sub-bank k of bank c."""
    return wiring.Signature({
        "w": Out(gmem_write_signature(cfg)),
        "r": Out(gmem_read_signature(cfg)).array(cfg.cols, cfg.merge_ways),
    })


def gmem_model(mod, cfg: Config, port) -> Memory:
    """GMEM, the model of the global buffer (B, column j's words at ``j << gmem_kbits``), as
    ``mod``'s submodule ``gmem`` behind an interface of :func:`gmem_port_signature` seen
    from the engine (``w`` and the read addresses driven, the read data taken): the
    engine's own (``cfg.gmem_ports`` false) or a model around a ports top (sim)."""
    gmem = Memory(shape=operand_layout(cfg), depth=cfg.omem_depth << gmem_kbits(cfg),
                  init=[])
    mod.submodules.gmem = gmem
    gw = gmem.write_port()
    mod.d.comb += [gw.en.eq(port.w.en), gw.addr.eq(port.w.addr), gw.data.eq(port.w.data)]
    for c in range(cfg.cols):
        for k in range(cfg.merge_ways):
            rp = gmem.read_port()
            mod.d.comb += [rp.addr.eq(port.r[c][k].addr), port.r[c][k].data.eq(rp.data)]
    return gmem


def forward_gmem(mod, cfg: Config, outer, inner) -> None:
    """Pass a component's ``gmem`` member (``outer``) through to a submodule's (``inner``):
    ``w`` and the read addresses out, the read data in."""
    mod.d.comb += [outer.w.en.eq(inner.w.en), outer.w.addr.eq(inner.w.addr),
                   outer.w.data.eq(inner.w.data)]
    for c in range(cfg.cols):
        for k in range(cfg.merge_ways):
            mod.d.comb += [outer.r[c][k].addr.eq(inner.r[c][k].addr),
                           inner.r[c][k].data.eq(outer.r[c][k].data)]


class SparseGemm(wiring.Component):
    """CAU + weight fetch + SDUE: an output-sparse product from (A, B, mask).

    Parameters
    ----------
    cfg : Config
    cols_per_cycle : int
        The CAU's column cvs per mask beat (default: the CAU's default, 8); the CAU's merge
        lanes take the CAU's default for ``cfg``.
    max_regions : int
        Most WMEM regions the fetch may fill ahead of the SDUE (the host sets ``regions``).
    desc_depth : int
        Descriptors buffered between the fetch and the SDUE.
    pass_depth : int
        Passes the col-group dataflow buffers between the CAU and the SDUE (default
        ``omem_depth``: every pass of a run, so the CAU is never held up).
    dpu_module : str or None
        The SDUE's DPUs as black boxes of this module (``hw.sdue.SDUE``): what the
        generator emits.

    Members
    -------
    mask : In(stream.Signature(mask_layout(cfg, cols_per_cycle, True)))
        The mask, row block by row block (see ``hw.cau``); ``block`` = the block's index in
        this run.
    setup : In(setup_layout(cfg, max_regions))
        Run parameters (constant while ``busy``).
    flow : In(flow_layout(cfg))
        Dataflow and global-buffer bandwidth (constant while ``busy``; 0 = row-block,
        unlimited bandwidth, the engine before issue 17).
    gmem_w : In(gmem_write_signature(cfg))
        Host write of the weight store (only while idle).
    gmem : Out(gmem_port_signature(cfg))
        Only with ``cfg.gmem_ports``: GMEM is outside the engine (a synthesis top whose
        global buffer is not on the FPGA); ``gmem_w`` comes out on ``gmem.w`` and the read
        ports on ``gmem.r``.
    imem_w, omem_w, omem_r
        Host access to the SDUE's IMEM and OMEM (as ``hw.sdue.SDUE``; only while idle).
    busy : Out(1)
        The CAU, the fetch or the SDUE is working.
    cycles : Out(32)
        Busy cycles since reset (wraps).
    passes : Out(32)
        Passes the SDUE completed since reset.
    stalls : Out(32)
        Busy cycles in which the SDUE's issue stage held no pass while work was pending
        (CAU, fetch, descriptor or pass queue): ``cycles = sum_p max(k_p, C) + fixed +
        stalls`` per run.
    wwords : Out(32)
        L-element words the weight fetch moved from GMEM (the global buffer) since reset
        (bytes = ``wwords * L * W / 8``).
    overflow : Out(1)
        Sticky: a row block had more than ``omem_depth`` columns.
    """

    def __init__(self, cfg: Config, *, cols_per_cycle: int = CAU_COLS_PER_CYCLE,
                 max_regions: int = GEMM_MAX_REGIONS,
                 desc_depth: int = GEMM_DESC_DEPTH, pass_depth: int | None = None,
                 dpu_module: str | None = None):
        if pass_depth is None:
            pass_depth = cfg.omem_depth
        for name, v, lo in (("max_regions", max_regions, 1), ("desc_depth", desc_depth, 1),
                            ("cols_per_cycle", cols_per_cycle, 1),
                            ("pass_depth", pass_depth, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                self._MustUse__silence = True
                raise ExionError(f"SparseGemm: {name} = {v!r} is invalid: must be an integer "
                                 f">= {lo}")
        self.cfg = cfg
        self.dpu_module = dpu_module
        self.cols_per_cycle = cols_per_cycle
        self.max_regions = max_regions
        self.desc_depth = desc_depth
        self.pass_depth = pass_depth
        R = cfg.rows
        word = operand_layout(cfg)
        super().__init__({
            "mask": In(stream.Signature(mask_layout(cfg, cols_per_cycle, True))),
            "setup": In(setup_layout(cfg, max_regions)),
            "flow": In(flow_layout(cfg)),
            "gmem_w": In(gmem_write_signature(cfg)),
            "kidx_w": In(kidx_write_signature(cfg)),
            "imem_w": In(mem_write_signature(R, cfg.imem_addr_bits + 1, word)),
            "omem_w": In(mem_write_signature(R, cfg.omem_addr_bits, signed(cfg.acc_width))),
            "omem_r": In(omem_read_signature(cfg)),
            "busy": Out(1),
            "cycles": Out(32),
            "passes": Out(32),
            "stalls": Out(32),
            "wwords": Out(32),
            "overflow": Out(1),
            **({"gmem": Out(gmem_port_signature(cfg))} if cfg.gmem_ports else {}),
        })

    def constants(self) -> dict:
        cfg = self.cfg
        return {"cols_per_cycle": self.cols_per_cycle, "max_regions": self.max_regions,
                "desc_depth": self.desc_depth, "pass_depth": self.pass_depth,
                "gmem_kbits": gmem_kbits(cfg),
                "gmem_cols": cfg.omem_depth, "max_cols": cfg.omem_depth}

    def elaborate(self, platform):
        cfg = self.cfg
        mod = Module()
        self._cau_busy = Signal(name="cau_busy")
        # "idle between runs" a cycle late, from a register (issue 22: the engine's busy, an
        # OR over the CAU, the fetch, the scan and the SDUE, fanned out to the between-runs
        # resets was the board build's critical path): the resets of the pass queue's block
        # count, the row-block ring and credit, the col-group counters and the scan's group
        # width happen from the second idle cycle on, and in the first cycle after a run
        # that starts right away, before any of them is used (a run's first take, scan or
        # queued block is cycles after its first beat). The snoop, which takes that first
        # beat, still resets on busy itself.
        self._idle = Signal(name="idle_r", init=1)
        cau = CAU(cfg, cols_per_cycle=self.cols_per_cycle, max_cols=cfg.omem_depth,
                  sort="runtime")
        sdue = SDUE(cfg, fetch=True, wcols=True, dpu_module=self.dpu_module)
        mod.submodules.cau = cau
        mod.submodules.sdue = sdue
        wiring.connect(mod, wiring.flipped(self.imem_w), sdue.imem_w)
        wiring.connect(mod, wiring.flipped(self.omem_w), sdue.omem_w)
        wiring.connect(mod, wiring.flipped(self.omem_r), sdue.omem_r)
        if cfg.omem_drain > 1:
            # a striped run's passes write consecutive columns: D distinct addresses mod D
            # in every group of D slots, so its drain is wide (cfg.omem_drain)
            mod.d.comb += sdue.wide.eq(self.flow.col_group & self._striped())
        gbits = Signal(19, name="gb_bits")      # bandwidth in bits per cycle (0 = unlimited)
        mod.d.comb += [gbits.eq(self.flow.gb_bytes << 3),
                       cau.mask.payload.eq(self.mask.payload),
                       cau.mask.valid.eq(self.mask.valid),
                       self.mask.ready.eq(cau.mask.ready)]
        gmem_rd = self._gmem(mod)
        snoop = self._snoop(mod)
        q = self._pass_queue(mod, cau, snoop, gbits)
        rb = self._row_block(mod, q, sdue, gmem_rd, gbits)
        cg = self._col_group(mod, q, sdue, gmem_rd, gbits, snoop)
        self._sdue_feed(mod, sdue, q, rb, cg, gmem_rd)
        self._status(mod, cau, sdue, q, rb, cg)
        return mod

    def _striped(self):
        """``flow.striped``, or a constant 0 when the config builds no striped map
        (``cfg.gemm_striped`` false: synthesis then removes its logic)."""
        return self.flow.striped if self.cfg.gemm_striped else Const(0, 1)

    def _gmem(self, mod) -> list:
        """GMEM (B, column j's words at ``j << gmem_kbits``), one read port per WMEM
        sub-bank (``[c][k]``), and its host write port. The engine sees the read ports as
        :func:`gmem_read_signature` interfaces, wired to the memory here or, with
        ``cfg.gmem_ports``, to the top-level ``gmem`` ports (the logic is the same)."""
        cfg = self.cfg
        local = gmem_port_signature(cfg).create(path=("gmem_rd",))
        mod.d.comb += [local.w.en.eq(self.gmem_w.en), local.w.addr.eq(self.gmem_w.addr),
                       local.w.data.eq(self.gmem_w.data)]
        if cfg.gmem_ports:
            forward_gmem(mod, cfg, self.gmem, local)
        else:
            gmem_model(mod, cfg, local)
        return local.r

    def _snoop(self, mod) -> dict:
        """While the mask streams into the CAU (col-group): ``gin``, the groups whose mask
        is in (a beat with block ``nblocks - 1`` and ``last`` ends a group), and
        ``need[j]``: column j of the run has a set bit in some row of some block (group g's
        beats cover columns ``g * gcols ..``). ``gin`` is cleared while the engine is idle,
        ``need[]`` restarts at the run's first beat."""
        N, P = self.cfg.omem_depth, self.cols_per_cycle
        flow = self.flow
        gsh = group_shift(self.cfg)
        need = Signal(N, name="cg_need")
        cbase = Signal(range(2 * N + 1), name="cg_snoop_base")   # first column of the group
        gin = Signal(range(N + 1), name="cg_gin")
        beat = self.mask.payload
        taken = Signal(name="beat_taken")
        anyv = Signal(P, name="cg_beat_any")
        gcols = Signal(range(N + 1), name="cg_gcols")
        # the beat's first column (cbase + beat * P) one-hot over the run's N columns, in
        # registers (issue 22: an adder, a subtraction per column and a P:1 select per column
        # were the toy board build's critical path at 69.6 MHz): shifted by P at each beat,
        # and at a block's last beat loaded with the decoded first column of this group or of
        # the next, both decoded from registers
        first = Signal(N, name="cg_beat_first")
        at_cb = Signal(N, name="cg_first_group")            # one-hot of cbase
        at_next = Signal(N, name="cg_first_next")           # one-hot of cbase + gcols
        nxt = Signal(range(3 * N + 1), name="cg_next_base")
        started = Signal(name="cg_started")     # the run's first mask beat is in
        # need[], the group base and the beat position restart at the run's first beat
        # (``started`` low: the values of the last run are ignored), not with a reset while
        # idle, so the engine's busy (a wide OR) reaches only ``started`` and ``gin``
        cb = Signal.like(cbase, name="cg_snoop_base_eff")
        pos = Signal(N, name="cg_beat_pos")
        mod.d.comb += [taken.eq(self.mask.valid & self.mask.ready),
                       anyv.eq(Cat(beat.cv[lane].any() for lane in range(P))),
                       gcols.eq(Mux(flow.gcols == 0, self.setup.ncols, flow.gcols))]
        # what the snoop reads of a beat: the beat as it is taken, or with gemm_snoop_reg the
        # same a cycle later from registers (issue 22: the mask input and the run's inputs
        # reached need[] and the beat position), the run's figures then from registers too
        b_taken, b_any, b_last = taken, anyv, beat.last
        b_end = beat.block[:gsh] == flow.nblocks - 1         # the group's last block
        s_gcols = gcols
        if self.cfg.gemm_snoop_reg:
            b_taken = pipe_reg(mod, taken, "cg_snoop_taken", control=True)
            b_any, b_last, b_end = (pipe_reg(mod, v, f"cg_snoop_{n}") for v, n in (
                (anyv, "any"), (beat.last, "last"), (b_end, "end")))
            s_gcols = self._run_const(mod, gcols, "cg_snoop_gcols")
        # cbase + gcols as a register beside cbase, set with it (issue 22: the adder and then
        # ``started``'s select sat in front of the decoders on the board build's path into
        # the beat position); the started select after the decoders
        nxt_s = Signal.like(nxt, name="cg_next_base_started")
        mod.d.comb += [cb.eq(Mux(started, cbase, 0)), pos.eq(Mux(started, first, 1)),
                       nxt.eq(Mux(started, nxt_s, s_gcols))]
        mod.d.comb += [at_cb[j].eq(Mux(started, cbase == j, j == 0)) for j in range(N)]
        mod.d.comb += [at_next[j].eq(Mux(started, nxt_s == j, s_gcols == j)) for j in range(N)]
        with mod.If(~self.busy & ~b_taken):    # idle between runs: forget the last run
            mod.d.sync += [gin.eq(0), started.eq(0)]
        with mod.If(b_taken):
            mod.d.sync += [started.eq(1), cbase.eq(cb), nxt_s.eq(nxt)]
            with mod.If(b_last):
                mod.d.sync += first.eq(at_cb)
                with mod.If(b_end):
                    mod.d.sync += [gin.eq(gin + 1), cbase.eq(nxt), first.eq(at_next),
                                   nxt_s.eq(Mux(started, nxt_s + s_gcols, s_gcols << 1))]
            with mod.Else():
                mod.d.sync += first.eq(pos << P)
            for j in range(N):      # column j = the beat's lane l: pos[j - l] is set
                hit = Cat(pos[j - lane] & b_any[lane] for lane in range(P) if j - lane >= 0)
                mod.d.sync += need[j].eq((need[j] & started) | (flow.col_group & hit.any()))
        return {"need": need, "gin": gin, "gcols": gcols, "started": started}

    def _pass_queue(self, mod, cau, snoop, gbits) -> dict:
        """The CAU's passes collect in a queue of ``pass_depth`` (both dataflows), so the
        CAU runs on its own schedule; ``head`` is the oldest pass. ``ready_blocks`` counts
        the complete row blocks in the queue (a block's passes may leave once its last pass
        is in: a schedule the model knows per block), one cycle after the write
        (``last_in``), when the buffered queue shows an entry written into it empty;
        ``last_lab`` is the label of the last complete block.

        What the fetch computes from a pass is formed as the pass enters the queue and
        stored beside it (``pre``), so the queue's block-RAM output reaches neither a
        multiplier nor a popcount (issue 22: both were the toy engine's critical path in
        turn): the col-group descriptor's products (``ibase``, ``obase``, ``woff``: a pass's
        block, group and columns times the run's constants) and the row-block fetch's count
        of present members (``npres``, those some DPU selects), its bits per beat
        (``bits`` = ``npres * L * W``) and the run's bit credit per cycle less those bits
        (``gmb``, signed: the fetch's margin adds it)."""
        cfg = self.cfg
        R, C, m = cfg.rows, cfg.cols, cfg.merge_ways
        wbits = cfg.lanes * cfg.width
        cpl = cau_pass_layout(cfg, cfg.omem_depth)
        dl = pass_layout(cfg, True)
        prel = data.StructLayout({"ibase": dl["ibase"].shape, "obase": dl["obase"].shape,
                                  "woff": dl["woff"].shape, "npres": range(C * m + 1),
                                  "bits": range(C * m * wbits + 1), "gmb": signed(21)})
        fq = fifo.SyncFIFOBuffered(width=cpl.size + prel.size, depth=self.pass_depth)
        mod.submodules.pass_queue = fq
        pq = self._pq_head_stage(mod, fq) if cfg.gemm_pq_reg else fq
        head = Signal(cpl, name="pq_head")
        pre = Signal(prel, name="pq_pre")
        w_pre = Signal(prel, name="pq_w_pre")
        p = cau.out.payload
        present = Signal(C * m, name="pq_w_present")    # members some DPU selects
        for c in range(C):
            for k in range(m):
                hits = [p.sel[r][c].valid & (p.sel[r][c].idx == k) for r in range(R)]
                mod.d.comb += present[c * m + k].eq(Cat(*hits).any())
        npres = Signal(range(C * m + 1), name="pq_w_npres")
        # what enters the queue: the CAU's pass and its figures, or with gemm_pq_in_reg the
        # pass and its members' present bits a cycle later from a register stage (full rate:
        # the queue never fills), the count and the products formed from that register
        w_valid = Signal(name="pq_w_valid")
        w_pass = Signal(cpl, name="pq_w_pass")
        if cfg.gemm_pq_in_reg:
            in_valid = Signal(name="pq_in_valid")
            in_present = Signal.like(present, name="pq_in_present")
            mod.d.comb += cau.out.ready.eq(~in_valid | fq.w_rdy)
            with mod.If(cau.out.ready):     # the members' bits staged, counted after
                mod.d.sync += [in_valid.eq(cau.out.valid), w_pass.eq(p),
                               in_present.eq(present)]
            mod.d.comb += [w_valid.eq(in_valid), npres.eq(popcount(mod, in_present)),
                           self._cau_busy.eq(cau.busy | in_valid)]
        else:
            mod.d.comb += [w_valid.eq(cau.out.valid), cau.out.ready.eq(fq.w_rdy),
                           w_pass.eq(p), npres.eq(popcount(mod, present)),
                           self._cau_busy.eq(cau.busy)]
        mod.d.comb += w_pre.npres.eq(npres)
        gsh, kw = group_shift(cfg), self.setup.kwords
        # bits per beat from a table of the few member counts (a product by the constant
        # L * W was a multiplier block on ECP5, on the toy board build's critical path)
        bits_of = Array([Const(n * wbits, range(C * m * wbits + 1)) for n in range(C * m + 1)])
        # gb less the bits of n members, each a run constant in a register (issue 22: the
        # table's subtractors sat between the member count and the queue's block RAM)
        gmb_of = Array([self._run_const(mod, gbits - n * wbits, f"pq_gmb{n}")
                        for n in range(C * m + 1)])
        mod.d.comb += [w_pre.bits.eq(bits_of[w_pre.npres]), w_pre.gmb.eq(gmb_of[w_pre.npres]),
                       fq.w_data.eq(Cat(w_pass.as_value(), w_pre.as_value()))]
        mul = self._stage_mul(mod, cau.out.ready)
        mod.d.comb += [
            w_pre.ibase.eq(mul(p.block[:gsh], w_pass.block[:gsh], kw, "pq_ibase")),
            w_pre.obase.eq(mul(p.block[:gsh], w_pass.block[:gsh], self.setup.ncols, "pq_obase0")
                           + mul(p.block[gsh:], w_pass.block[gsh:], snoop["gcols"], "pq_obase1")),
        ]
        # striped map: column j at (j // C) * kwords of bank j % C (flow.striped); the
        # stripe index is a shift or a constant multiply, not a divider (div_const)
        for c in range(C):
            for k in range(m):
                woff = mul(p.col[c][k], w_pass.col[c][k], kw, f"pq_woff{c}_{k}")
                if cfg.gemm_striped:
                    woff = Mux(self.flow.striped,
                               mul(div_const(p.col[c][k], C), div_const(w_pass.col[c][k], C), kw,
                                   f"pq_swoff{c}_{k}"), woff)
                mod.d.comb += w_pre.woff[c][k].eq(woff)
        mod.d.comb += Cat(head.as_value(), pre.as_value()).eq(pq.r_data)
        mod.d.comb += fq.w_en.eq(w_valid)
        last_in = Signal(name="rb_last_in")
        last_lab = Signal(16, name="pq_last_label")
        ready_blocks = Signal(range(cfg.omem_depth + 1), name="rb_ready_blocks")
        pop_last = Signal(name="pq_pop_last")
        mod.d.sync += last_in.eq(fq.w_en & fq.w_rdy & w_pass.last)
        with mod.If(fq.w_en & fq.w_rdy & w_pass.last):
            mod.d.sync += last_lab.eq(w_pass.block)
        mod.d.comb += pop_last.eq(pq.r_en & pq.r_rdy & head.last)
        # ``ready_blocks != 0`` as a register (the release tests read it; issue 22)
        ready_any = Signal(name="rb_ready_any")
        with mod.If(last_in & ~pop_last):       # the sums from registers, the take selects
            mod.d.sync += [ready_blocks.eq(ready_blocks + 1), ready_any.eq(1)]
        with mod.Elif(pop_last & ~last_in):
            mod.d.sync += [ready_blocks.eq(ready_blocks - 1),
                           ready_any.eq(ready_blocks[1:].any())]
        with mod.If(self._idle):
            mod.d.sync += [ready_blocks.eq(0), ready_any.eq(0)]
        # with the head stage, each slot's pass and figures (the head is the slot at the
        # pointer), for tests formed per slot before the pointer selects
        slots = [(data.View(cpl, d[:cpl.size]), data.View(prel, d[cpl.size:]))
                 for d in pq.slots] if cfg.gemm_pq_reg else None
        return {"pq": pq, "head": head, "pre": pre, "slots": slots,
                "last_in": last_in, "last_lab": last_lab,
                "ready_any": ready_any,
                "queued": ((pq.held | fq.r_rdy) if cfg.gemm_pq_reg else fq.r_rdy) | (
                    in_valid if cfg.gemm_pq_in_reg else Const(0)),
                # a pass at the queue's output not yet in the head stage (its group unknown
                # to the half-free test for that cycle)
                "unstaged": (fq.r_rdy & ~pq.r_rdy) if cfg.gemm_pq_reg else Const(0)}

    def _stage_mul(self, mod, load):
        """``mul(now, staged, b, name)``: the product ``staged * b`` of a pass's field in the
        pass queue's input stage (``staged``, loaded from ``now`` while ``load``) and a run
        input ``b``. With ``gemm_pq_in_reg`` on an ECP5 build (``dpu_mult = "ecp5"``) it is a
        MULT18X18D whose own input registers are the stage (loading ``now`` and ``b`` with
        the stage, so the product is the same in the same cycle): no fabric register, then a
        multiplier, then the queue's block RAM on one path (issue 22: the toy board build's
        critical path at 73.9 MHz). Otherwise an Amaranth product of the staged field."""
        if not (self.cfg.gemm_pq_in_reg and self.cfg.dpu_mult == "ecp5"):
            return lambda now, staged, b, name: staged * b

        def mul(now, staged, b, name):
            width = len(now) + len(b)
            return mult18x18d(mod, now, b, name=name, reg_in=True, reg_out=False,
                              ce_in=load, ce_out=Const(1))[:width]
        return mul

    @staticmethod
    def _run_const(mod, value, name) -> Signal:
        """``value``, a function of the run's inputs (``setup``, ``flow``: constant while
        busy), in a register: equal to it from the run's second cycle, which is before any
        use (the fetch's first take, a scan's start); keeps the input's adders off the
        fetch's and the scan's one-cycle paths (issue 22)."""
        r = Signal(value.shape(), name=name)
        mod.d.sync += r.eq(value)
        return r

    @staticmethod
    def _pq_head_stage(mod, fq) -> SimpleNamespace:
        """``gemm_pq_reg`` (issue 22): the pass queue's head in fabric registers. The queue's
        block RAM (5.8 ns clock-to-out on ECP5) then feeds only these registers, not the
        release tests and the SDUE's descriptor. Two slots: the head is the slot at
        ``pq_st_ptr``; the other fills from the queue whenever it is empty, so the queue's
        read enable comes from flip-flops and a take only flips the pointer and clears its
        slot's valid (it no longer enables the stage's several hundred flip-flops: the toy
        board build's critical path at 65 MHz). Takes stay back to back (the next pass is in
        the other slot); a pass reaches the head one cycle after the queue's output, which
        delays only a block's last pass (``golden.cycles.engine_block_release``), as with
        the one-slot stage this replaces (same cycles)."""
        valid = [Signal(name=f"pq_st_valid{i}") for i in range(2)]
        slot = [Signal(fq.width, name=f"pq_st_data{i}") for i in range(2)]
        ptr = Signal(name="pq_st_ptr")           # the head's slot
        wp = Signal(name="pq_st_wptr")           # the slot the queue fills next
        view = SimpleNamespace(r_en=Signal(name="pq_st_take"), r_rdy=Signal(name="pq_st_valid"),
                               r_data=Signal(fq.width, name="pq_st_head"),
                               held=Signal(name="pq_st_held"), slots=slot, ptr=ptr)
        fill = Signal(name="pq_st_fill")
        mod.d.comb += [view.r_rdy.eq(Mux(ptr, valid[1], valid[0])),
                       view.r_data.eq(Mux(ptr, slot[1], slot[0])),
                       view.held.eq(valid[0] | valid[1]),
                       fill.eq(~Mux(wp, valid[1], valid[0])), fq.r_en.eq(fill)]
        with mod.If(fill & fq.r_rdy):
            mod.d.sync += wp.eq(~wp)
        with mod.If(view.r_en & view.r_rdy):
            mod.d.sync += ptr.eq(~ptr)
        for i in range(2):              # a slot is never filled and taken in one cycle
            with mod.If(fill & fq.r_rdy & (wp == i)):
                mod.d.sync += [valid[i].eq(1), slot[i].eq(fq.r_data)]
            with mod.If(view.r_en & view.r_rdy & (ptr == i)):
                mod.d.sync += valid[i].eq(0)
        return view

    def _row_block(self, mod, q, sdue, gmem_rd, gbits) -> dict:
        """The row-block dataflow's fetch (``flow.col_group = 0``).

        The fetch takes the queued passes in order, one at a time, a block's passes once the
        CAU has queued the block's last pass (so its schedule is the CAU's, known per block,
        not per pass), and copies, for every slot c and member k,
        the K/L words of column ``col[c][k]`` from GMEM into WMEM sub-bank k of bank c (a
        beat of n present members costs ``n * L * W`` bits of the bit credit) into a ring of
        ``regions`` regions; a region is free again when the SDUE has issued its pass. Each
        fetched pass becomes a descriptor in a ``desc_depth`` FIFO to the SDUE.
        """
        cfg = self.cfg
        C, m = cfg.cols, cfg.merge_ways
        KB = gmem_kbits(cfg)
        setup = self.setup
        kw = setup.kwords
        rbf = ~self.flow.col_group
        pq, head = q["pq"], q["head"]
        cpl = cau_pass_layout(cfg, cfg.omem_depth)
        f_pass = Signal(cpl, name="f_pass")
        f_active = Signal(name="f_active")
        f_w = Signal(range(2 * cfg.imem_words + 1), name="f_w")
        f_base = Signal(cfg.wmem_addr_bits + 1, name="f_base")
        f_cg = Signal(20, name="f_credit")         # the bit credit + gbits
        # f_cg - the bits of a beat of the pass, kept beside the credit (issue 22): the
        # bandwidth test is its sign bit, a flip-flop, not a compare on the take's path; set
        # at each take and updated with the credit while the pass is fetched (read only
        # then: the same test, the same cycles)
        f_mg = Signal(signed(22), name="f_margin")
        f_free = Signal(name="f_bw_free")          # a beat of this pass never waits
        f_last = Signal(name="f_last")             # f_w == kwords - 1
        f_words = Signal(range(C * m + 1), name="f_words")
        next_base = Signal.like(f_base, name="next_base")
        next_ridx = Signal(range(self.max_regions), name="next_ridx")
        outstanding = Signal(range(self.max_regions + 2), name="outstanding")
        # outstanding < regions as a register (0 < regions between runs: regions >= 1)
        room = Signal(name="rb_room", init=1)
        # A block's passes may be taken once its last pass is in the queue.
        release = Signal(name="rb_release")
        mod.d.comb += release.eq(rbf & q["ready_any"])
        dq = fifo.SyncFIFO(width=pass_layout(cfg).size, depth=self.desc_depth)
        mod.submodules.desc_queue = dq

        # Members that exist in the head pass (a DPU selects them): only they are charged
        # (counted as the pass entered the queue, ``pre``).
        pre = q["pre"]

        last_beat, want, bw_ok, advance, take = (
            Signal(name=n) for n in ("last_beat", "want", "bw_ok", "advance", "take"))
        # registers (issue 22): the beat's tests (last word, bandwidth) come from flip-flops
        # loaded at the take and at each beat, not from adders and compares of the run's
        # inputs and the credit
        kw_m1, kw_m2, gb = (self._run_const(mod, v, n) for v, n in (
            (kw - 1, "rb_kw_m1"), (kw - 2, "rb_kw_m2"), (gbits, "rb_gbits")))
        mod.d.comb += [
            last_beat.eq(f_active & f_last),
            want.eq(f_active & ~(last_beat & ~dq.w_rdy)),
            bw_ok.eq(f_free | ~f_mg[-1]),
            advance.eq(want & bw_ok),
        ]
        if cfg.gemm_take_reg:
            # decided a cycle ahead (issue 22): the tests only turn false at a take, so the
            # take is the register; the fetch is free next cycle when idle and not taking now,
            # or in its last beat's advance
            take_r = Signal(name="rb_take_r")
            mod.d.sync += take_r.eq(release & pq.r_rdy & room & (
                (~f_active & ~take_r) | (last_beat & advance)))
            mod.d.comb += take.eq(take_r)
        else:
            mod.d.comb += take.eq(release & pq.r_rdy & (~f_active | (last_beat & advance)) &
                                  room)
        # gb less the pass's bits, queued with the pass (pre.gmb) and kept for its fetch
        # (f_gmb), so a beat adds one operand to the margin
        f_gmb = Signal.like(pre.gmb, name="f_gb_less_bits")
        with mod.If(want):      # the credit (f_cg - gb) gains gb, pays a beat; the margin too
            with mod.If(f_free):
                mod.d.sync += [f_cg.eq(gb), f_mg.eq(f_gmb)]
            with mod.Elif(~f_mg[-1]):       # = advance here, read from its register (issue 22)
                mod.d.sync += [f_cg.eq(f_mg + gb), f_mg.eq(f_mg + f_gmb)]
            with mod.Else():
                mod.d.sync += [f_cg.eq(f_cg + gb), f_mg.eq(f_mg + gb)]

        def at_head(f):     # f of the head's figures; with the head stage, per slot first
            if q["slots"] is None:
                return f(pre)
            return Mux(pq.ptr, f(q["slots"][1][1]), f(q["slots"][0][1]))
        # a take: the margin against the next pass's bits instead (a take while active
        # comes with the last beat's advance; an idle take's credit is unchanged)
        with mod.If(take):
            mod.d.sync += f_gmb.eq(pre.gmb)
            with mod.If(want & f_free):
                mod.d.sync += f_mg.eq(pre.gmb)
            with mod.Elif(want):
                mod.d.sync += f_mg.eq(at_head(lambda h: f_mg + h.gmb))
            with mod.Else():
                mod.d.sync += f_mg.eq(at_head(lambda h: f_cg - h.bits))
        for c in range(C):
            for k in range(m):
                mod.d.comb += gmem_rd[c][k].addr.eq(Cat(f_w[:KB], f_pass.col[c][k]))

        # the descriptor's products block * kwords and block * ncols, formed as the pass was
        # queued (pre; a row-block label's group bits are 0), loaded at the take (issue 22:
        # the run's inputs reached the descriptor FIFO through two multipliers)
        f_ibase = Signal.like(pre.ibase, name="f_ibase")
        f_obase = Signal.like(pre.obase, name="f_obase")
        with mod.If(take):
            mod.d.sync += [f_pass.eq(head), f_active.eq(1), f_w.eq(0),
                           f_ibase.eq(pre.ibase), f_obase.eq(pre.obase),
                           f_base.eq(next_base), f_words.eq(pre.npres), f_last.eq(kw_m1 == 0),
                           f_free.eq((gb == 0) | ~pre.gmb[-1])]     # gb >= bits
            with mod.If(next_ridx + 1 >= setup.regions):
                mod.d.sync += [next_base.eq(0), next_ridx.eq(0)]
            with mod.Else():
                mod.d.sync += [next_base.eq(next_base + kw), next_ridx.eq(next_ridx + 1)]
        with mod.Elif(advance):
            mod.d.sync += [f_w.eq(f_w + 1), f_last.eq(f_w == kw_m2)]
            with mod.If(last_beat):
                mod.d.sync += f_active.eq(0)
        with mod.If(take & ~sdue.issued):
            mod.d.sync += [outstanding.eq(outstanding + 1),
                           room.eq(outstanding + 1 < setup.regions)]
        with mod.Elif(~take & sdue.issued & rbf):
            mod.d.sync += [outstanding.eq(outstanding - 1),
                           room.eq(outstanding - 1 < setup.regions)]
        with mod.If(self._idle):    # idle between runs: the ring and the credit restart
            # gbits as the run starts: the flow is valid from the cycle the first beat enters
            mod.d.sync += [next_base.eq(0), next_ridx.eq(0), f_cg.eq(gbits)]

        # GMEM data arrives one cycle after its address: write WMEM then.
        wr_en = Signal(name="wr_en")
        wr_addr = Signal.like(f_base, name="wr_addr")
        mod.d.sync += [wr_en.eq(advance), wr_addr.eq(f_base + f_w)]

        # The descriptor enters the queue with the last beat's GMEM read; its last WMEM
        # write lands before the SDUE can read the pass's first word.
        desc = self._rb_desc(mod, f_pass, f_ibase, f_obase, f_base)
        mod.d.comb += [dq.w_en.eq(last_beat & advance), dq.w_data.eq(desc.as_value())]
        return {"dq": dq, "take": take, "wr_en": wr_en, "wr_addr": wr_addr,
                "advance": advance, "words": f_words,
                "pending": rbf & (f_active | wr_en | dq.r_rdy | q["queued"] | q["last_in"])}

    def _rb_desc(self, mod, f_pass, ibase, obase, wbase) -> Signal:
        """The row-block descriptor of the pass being fetched: its products (``ibase``,
        ``obase``), the run's ``kwords`` and ``accumulate``, the pass's selects and columns,
        its WMEM region ``wbase`` for every member and the identity i_sw."""
        cfg = self.cfg
        R, C, m = cfg.rows, cfg.cols, cfg.merge_ways
        desc = Signal(pass_layout(cfg), name="f_desc")
        mod.d.comb += [desc.ibase.eq(ibase), desc.kwords.eq(self.setup.kwords),
                       desc.sel.eq(f_pass.sel), desc.obase.eq(obase),
                       desc.accumulate.eq(self.setup.accumulate)]
        mod.d.comb += [desc.wbase[k].eq(wbase) for k in range(m)]
        mod.d.comb += [desc.isel[r].eq(r) for r in range(R)]
        mod.d.comb += [desc.col[c][k].eq(f_pass.col[c][k]) for c in range(C) for k in range(m)]
        return desc

    def _gather(self, mod, gmem_rd, s_w, col) -> Signal:
        """The scan's GMEM reads and the word it writes to WMEM: plain (port 0, word
        ``s_w`` of column ``col``) or, with ``flow.gather``, lane l from port l at the K row
        of the index list's word ``s_w`` (read without latency; the lanes registered to
        meet the GMEM data). The read address is registered first (issue 22: the GMEM's
        block RAMs span the FPGA, and the index lookup plus that route was the toy engine's
        critical path), so the word comes two cycles after the scan step that asked for
        it (``golden.cycles.ENGINE_SCAN_RELEASE``)."""
        cfg = self.cfg
        KB, L = gmem_kbits(cfg), cfg.lanes
        ports = [p for row in gmem_rd for p in row]
        word = Signal(operand_layout(cfg), name="cg_wdata")
        # the GMEM address and data selects from a register copy of the run's dataflow
        # (issue 22: the flow input crossed the die to every GMEM port's address select on
        # the board build); valid from the run's second cycle, before any GMEM read
        cg, cg_gather = ff_copies(mod, Cat(self.flow.col_group,
                                           self.flow.col_group & self.flow.gather), 1,
                                  name="cg_gmem_sel", ecp5=cfg.dpu_mult == "ecp5")[0]
        a0 = Signal.like(ports[0].addr, name="cg_gaddr")
        mod.d.sync += a0.eq(Cat(s_w[:KB], col))
        with mod.If(cg):
            mod.d.comb += ports[0].addr.eq(a0)
        if not gather_supported(cfg):
            mod.d.comb += word.eq(ports[0].data)
            return word
        kmem = Memory(shape=kidx_layout(cfg), depth=2 * cfg.imem_words, init=[])
        mod.submodules.kidx = kmem
        kw_ = kmem.write_port()
        kr = kmem.read_port(domain="comb")
        mod.d.comb += [kw_.en.eq(self.kidx_w.en), kw_.addr.eq(self.kidx_w.addr),
                       kw_.data.eq(self.kidx_w.data), kr.addr.eq(s_w)]
        ent = kr.data
        lane_a = [Signal(range(L), name=f"cg_klane_a{lane}") for lane in range(L)]
        lane_d = [Signal(range(L), name=f"cg_klane{lane}") for lane in range(L)]
        ga = [Signal.like(ports[lane].addr, name=f"cg_gaddr{lane}") for lane in range(L)]
        gw = Signal(operand_layout(cfg), name="cg_gathered")
        for lane in range(L):
            mod.d.sync += [lane_a[lane].eq(ent[lane].lane), lane_d[lane].eq(lane_a[lane]),
                           ga[lane].eq(Cat(ent[lane].word, col))]
            mod.d.comb += gw[lane].eq(ports[lane].data[lane_d[lane]])
        with mod.If(cg_gather):
            mod.d.comb += [ports[lane].addr.eq(ga[lane]) for lane in range(L)]
            mod.d.comb += word.eq(gw)
        with mod.Else():
            mod.d.comb += word.eq(ports[0].data)
        return word

    def _col_group(self, mod, q, sdue, gmem_rd, gbits, snoop) -> dict:
        """The col-group dataflow's control (``flow.col_group = 1``), double-buffered
        across the run's column groups.

        1. *Snoop* (:meth:`_snoop`): column j of the run is needed when any row of any
           block has its bit set; ``gin`` groups' masks are in.
        2. *Scan* of group g (in order, once its mask is in, or with the striped map once
           the run's first mask beat is in, and its WMEM half is free: every pass of group
           g - 2 issued): columns ``g * gcols ..`` are visited in order: an
           unneeded one costs one cycle and no byte; a needed one moves its ``kwords`` words
           from GMEM into every WMEM sub-bank at ``half(g) + j * kwords`` (half(g) = ``(g %
           2) * wmem_words``; replicated: any DPU column and weight bus can read it), one
           word per cycle at most and no more than ``gb_bytes`` per cycle on average (a
           bit credit, from 0 at each group's scan).
        3. *Passes*: the CAU's passes wait in the pass queue; a pass of group g goes to
           the SDUE once g's scan is written and its row block is complete in the queue,
           with ``wbase = half(g)``, ``woff[c][k] = col[c][k] * kwords`` and ``obase =
           block * ncols + g * gcols``: while group g computes, group g + 1 is scanned.
        """
        flow = self.flow
        cg = flow.col_group
        grp = self._cg_groups(mod, q, sdue, snoop)
        scan = self._cg_scan(mod, q, grp, gmem_rd, gbits, snoop)
        desc, release = self._cg_desc(mod, q, grp)
        ready = Signal(name="cg_ready")
        pq = q["pq"]
        # gemm_desc_reg: a pass in the descriptor register (driven in _sdue_feed)
        d_valid = Signal(name="cg_desc_valid") if self.cfg.gemm_desc_reg else Const(0)
        return {"desc": desc, "valid": pq.r_rdy & release, "ready": ready,
                "desc_valid": d_valid,
                "wdata": scan["wdata"], "sdata": scan["sdata"], "striped": self._striped(),
                "nwords": scan["nwords"], "release": release, "wr_en": scan["wr_en"],
                "wr_addr": scan["wr_addr"], "word": scan["wr_en"],
                "pending": cg & (scan["busy"] | q["queued"] | q["last_in"] | d_valid |
                                 ((snoop["gin"] != 0) & ~grp["all_in"]))}

    def _cg_groups(self, mod, q, sdue, snoop) -> dict:
        """col-group bookkeeping: ``ngr`` groups of the run, the pass queue head's group
        ``hg``, the groups whose passes are all queued (``cau_gdone``), the group of the
        SDUE's latest pass (``sd_group``) and whether it is still issuing (``inflight``),
        the groups resident in WMEM (``sdone``, counted by the scan), and ``free``: the
        WMEM half of the group the scan is at (``gs``) holds no group still needed (every
        pass of group ``gs - 2`` issued)."""
        cfg = self.cfg
        N = cfg.omem_depth
        gsh = group_shift(cfg)
        flow = self.flow
        cg = flow.col_group
        gin, head = snoop["gin"], q["head"]
        ngr = self._run_const(mod, Mux(flow.ngroups == 0, 1, flow.ngroups), "cg_ngroups")
        hg = Signal(16 - gsh, name="cg_head_group")
        mod.d.comb += hg.eq(head.block[gsh:])
        cau_gdone = Signal(range(N + 1), name="cg_cau_gdone")
        lab = q["last_lab"]
        nb_m1 = self._run_const(mod, flow.nblocks - 1, "cg_nblocks_m1")
        with mod.If(~self._cau_busy):
            mod.d.sync += cau_gdone.eq(gin)
        with mod.Elif(q["last_in"]):
            mod.d.sync += cau_gdone.eq(lab[gsh:] + (lab[:gsh] == nb_m1))
        sd_group = Signal(16 - gsh, name="cg_sdue_group")
        inflight = Signal(2, name="cg_inflight")
        take = Signal(name="cg_take")
        # a pass leaves the queue (to the SDUE, or to the descriptor register)
        mod.d.comb += take.eq(cg & q["pq"].r_en & q["pq"].r_rdy)
        with mod.If(take):
            mod.d.sync += sd_group.eq(hg)
        with mod.If(take & ~sdue.issued):
            mod.d.sync += inflight.eq(inflight + 1)
        with mod.Elif(~take & sdue.issued & cg):
            mod.d.sync += inflight.eq(inflight - 1)
        gs = Signal(range(N + 1), name="cg_scan_group")       # group scanned / next
        sdone = Signal(range(N + 1), name="cg_scanned")       # groups resident
        gp = Signal(range(-2, N + 1), name="cg_prev2", init=-2)  # gs - 2, a register
        all_in = Signal(name="cg_all_scanned")                   # sdone == ngr
        free = Signal(name="cg_half_free")
        mod.d.comb += free.eq((gp < 0) | ((cau_gdone > gp) & ~(q["pq"].r_rdy & (hg <= gp)) &
                                          ~q["unstaged"] & ((inflight == 0) | (sd_group > gp))))
        with mod.If(self._idle):
            mod.d.sync += [cau_gdone.eq(0), inflight.eq(0)]
        return {"ngr": ngr, "hg": hg, "gs": gs, "gp": gp, "sdone": sdone, "free": free,
                "all_in": all_in}

    def _cg_stripes(self, mod, start, step_end, group_end, s_cbase, gcols) -> dict:
        """The striped map's per-stripe figures (``flow.striped``), all registers (issue 22:
        only registers feed the scan's go path): ``g_rem`` the columns of the next group
        (``min(gcols, ncols - its first column)``, set as a group ends and while idle),
        ``rem`` the columns left from this stripe on, ``nv = min(C, rem)`` the stripe's
        columns and ``sbits`` a scan step's bits (a table of ``nv * L * W``; ``L * W``
        with the replicated map; ``first`` and ``next`` the values it takes at a start and
        at a step's end). Updated at the scan's ``start``, at each stripe's
        ``step_end`` and at ``group_end``."""
        cfg = self.cfg
        C, N = cfg.cols, cfg.omem_depth
        wbits = cfg.lanes * cfg.width
        setup, st = self.setup, self._striped()
        nv = Signal(range(C + 1), name="cg_stripe_cols")
        sbits = Signal(range(C * wbits + 1), name="cg_scan_bits")
        rem = Signal(range(N + 1), name="cg_stripe_rem")
        g_rem = Signal(range(N + 1), name="cg_group_cols")
        bits_of = Array([Const(i * wbits, range(C * wbits + 1)) for i in range(C + 1)])

        def clamp(v):
            return Mux(v > C, C, v)

        rem_next = Signal(range(-C, N + 1), name="cg_stripe_rem_next")
        nv_next = Signal.like(nv, name="cg_stripe_next")
        nv_first = Signal.like(nv, name="cg_stripe_first")
        nxt_left = Signal(range(-2 * N - 1, N + 1), name="cg_next_left")
        mod.d.comb += [rem_next.eq(rem - C),
                       nv_next.eq(Mux(rem_next < 0, 0, clamp(rem_next[:len(rem)]))),
                       nv_first.eq(clamp(g_rem)),
                       nxt_left.eq(setup.ncols - s_cbase - gcols)]
        b_first, b_next = (Signal.like(sbits, name=n)
                           for n in ("cg_scan_bits_first", "cg_scan_bits_next"))
        mod.d.comb += [b_first.eq(Mux(st, bits_of[nv_first], wbits)),
                       b_next.eq(Mux(st, bits_of[nv_next], wbits))]
        with mod.If(start):
            mod.d.sync += [rem.eq(g_rem), nv.eq(nv_first), sbits.eq(b_first)]
        with mod.If(step_end):
            mod.d.sync += [nv.eq(nv_next), rem.eq(Mux(rem_next < 0, 0, rem_next)),
                           sbits.eq(b_next)]
        with mod.If(group_end):
            mod.d.sync += g_rem.eq(Mux(nxt_left < 0, 0, Mux(gcols < nxt_left, gcols, nxt_left)))
        with mod.If(self._idle):
            mod.d.sync += g_rem.eq(Mux(gcols < setup.ncols, gcols, setup.ncols))
        return {"nv": nv, "sbits": sbits, "last": rem <= C, "first": b_first, "next": b_next}

    def _cg_scan(self, mod, q, grp, gmem_rd, gbits, snoop) -> dict:
        """The col-group scan (step 2 of :meth:`_col_group`): group by group, the needed
        columns' words (replicated map) or every column's, a stripe of C per step (striped
        map), from GMEM into the group's WMEM half, under the bit credit of ``gb_bytes``;
        the write reaches WMEM two cycles after its step (GMEM address registered)."""
        cfg = self.cfg
        C, N = cfg.cols, cfg.omem_depth
        setup, flow = self.setup, self.flow
        kw = setup.kwords
        cg, st = flow.col_group, self._striped()
        need, gin, gcols = snoop["need"], snoop["gin"], snoop["gcols"]
        gs, sdone = grp["gs"], grp["sdone"]
        s_on = Signal(name="cg_scan")
        fin = Signal(name="cg_scan_fin")
        s_cbase = Signal(range(2 * N + 1), name="cg_scan_base")
        s_col = Signal(range(N + C + 1), name="cg_col")
        s_abs = Signal(range(3 * N + 2 * C + 1), name="cg_abs")    # s_cbase + s_col
        # need_cur's next value a column ahead (issue 22: the next column's need[] select, an
        # adder in front of it and Yosys's merge of the start's and the column end's selects
        # behind the step's decision ran from the scan to need[] and back, the board build's
        # critical path): need_nxt = need[s_abs + 1], loaded from the select at s_nx, a
        # register that is s_cbase + 1 while the scan is idle and s_abs + 2 while it runs;
        # the select, its index and need_nxt sit by need[], only registers cross to the scan
        s_nx = Signal(range(3 * N + 2 * C + 3), name="cg_abs_p2", init=1)
        need_nxt = Signal(name="cg_need_next")
        need_first = Signal(name="cg_need_first")   # need[s_cbase], the start's
        s_w = Signal(range(2 * cfg.imem_words + 1), name="cg_w")
        s_addr = Signal(cfg.wmem_addr_bits + 1, name="cg_addr")
        s_cg = Signal(20, name="cg_credit")         # the bit credit + gbits
        # registers (issue 22): only flip-flops feed the step's decision (go / col_end /
        # grp_end); each holds its test for the scan's current column and word, loaded at
        # the start and at each column's end from the next column's figures
        need_cur = Signal(name="cg_need_cur")       # st | need[s_abs]
        w_last = Signal(name="cg_w_last")           # s_w == kwords - 1
        col_last = Signal(name="cg_col_last")       # the group's last column (replicated)
        go = Signal(name="cg_go")
        bw_free = Signal(name="cg_bw_free")
        col_end = Signal(name="cg_col_end")
        grp_end = Signal(name="cg_group_end")
        start = Signal(name="cg_scan_start")
        stripe = self._cg_stripes(mod, start, col_end, grp_end, s_cbase, gcols)
        nv, sbits = stripe["nv"], stripe["sbits"]
        kw_m1, kw_m2, gcols_m1, gcols_m2, ncols_m1, ncols_m2 = (
            self._run_const(mod, v - d, f"{n}_m{d}")
            for v, n in ((kw, "cg_kw"), (gcols, "cg_gcols"), (setup.ncols, "cg_ncols"))
            for d in (1, 2))
        gb = self._run_const(mod, gbits, "cg_gbits")
        # the group width (+ 1) for the next group's base, from registers (issue 22: the run's
        # inputs reached s_nx through two adders on the board build)
        gcols_r, gcols_p1 = (self._run_const(mod, gcols + d, f"cg_gcols_p{d}") for d in (0, 1))
        # a replicated group's scan waits for its mask (need[]); a striped one moves every
        # column, so it starts once the run has started and its WMEM half is free
        may_start = Signal(name="cg_may_start")
        mod.d.comb += may_start.eq(((gin > gs) | (st & snoop["started"])) & (gs < grp["ngr"])
                                   & grp["free"])
        if self.cfg.gemm_scan_reg:
            # the tests a cycle ahead in a flip-flop (issue 22); taken only while the scan is
            # idle, when they only turn true, so the start is that flip-flop a cycle later
            may_r = Signal(name="cg_may_start_r")
            mod.d.sync += may_r.eq(may_start & ~s_on)
            may_start = may_r
        # registers (issue 22): the step's bandwidth tests as flip-flops, updated with the
        # credit and the step's bits in every case (the same tests, the same cycles): the
        # margin s_cg - sbits (its sign bit) and "a step's bits never wait" (gb >= sbits)
        s_mg = Signal(signed(22), name="cg_margin")
        mod.d.comb += [
            go.eq(s_on & need_cur & (bw_free | ~s_mg[-1])),
            col_end.eq(s_on & (~need_cur | (go & w_last))),
            grp_end.eq(col_end & Mux(st, stripe["last"], col_last)),  # the group's last step
            start.eq(cg & ~s_on & may_start),
        ]
        # need[] of a group is final before its scan starts (gin > gs), so reading the next
        # column's bit a cycle early gives the same test
        if self.cfg.gemm_scan_reg:
            # the start comes at least a cycle after the group's need[] bits are final (its
            # tests are registered): need[s_cbase] from a register too
            mod.d.sync += need_first.eq(need.bit_select(s_cbase, 1))
        else:
            mod.d.comb += need_first.eq(need.bit_select(s_cbase, 1))
        with mod.If(start | col_end):
            mod.d.sync += need_nxt.eq(need.bit_select(s_nx, 1))
        with mod.If(start):
            mod.d.sync += [s_abs.eq(s_cbase), s_nx.eq(s_nx + 1), need_cur.eq(st | need_first),
                           w_last.eq(kw_m1 == 0),
                           col_last.eq((gcols_m1 == 0) | (s_cbase == ncols_m1))]
        with mod.If(go):
            mod.d.sync += w_last.eq(s_w == kw_m2)
        with mod.If(col_end):
            mod.d.sync += [s_abs.eq(s_abs + Mux(st, C, 1)), s_nx.eq(s_nx + Mux(st, C, 1)),
                           need_cur.eq(st | need_nxt),
                           w_last.eq(kw_m1 == 0),
                           col_last.eq((s_col == gcols_m2) | (s_abs == ncols_m2))]
        wdata = self._gather(mod, gmem_rd, s_w, s_abs)
        # striped: bank c's first GMEM port reads word s_w of column s_col + c (address
        # registered as in _gather, so the words land with the same two-cycle delay)
        if cfg.gemm_striped:
            KB = gmem_kbits(cfg)
            sa = [Signal.like(gmem_rd[c][0].addr, name=f"cg_saddr{c}") for c in range(C)]
            mod.d.sync += [sa[c].eq(Cat(s_w[:KB], s_abs + c)) for c in range(C)]
            with mod.If(cg & st):
                mod.d.comb += [gmem_rd[c][0].addr.eq(sa[c]) for c in range(C)]
        with mod.If(start):
            mod.d.sync += [s_on.eq(1), s_col.eq(0), s_w.eq(0),
                           s_addr.eq(Mux(gs[0], cfg.wmem_words, 0)), s_cg.eq(gb)]
        with mod.If(s_on & need_cur):       # the credit (s_cg - gb) gains gb, pays a step
            with mod.If(bw_free):
                mod.d.sync += s_cg.eq(gb)
            with mod.Elif(~s_mg[-1]):       # = go here
                mod.d.sync += s_cg.eq(s_mg + gb)
            with mod.Else():
                mod.d.sync += s_cg.eq(s_cg + gb)
        self._cg_margin(mod, s_mg, bw_free, s_cg, gb, gbits, sbits, stripe, start, w_last, col_end,
                        s_on & need_cur, s_on & ~need_cur)
        with mod.If(go | (s_on & ~need_cur)):   # a word moved, or an unneeded column passed
            mod.d.sync += s_addr.eq(s_addr + Mux(need_cur, 1, kw))  # (the step only enables)
        with mod.If(go):
            mod.d.sync += s_w.eq(s_w + 1)
        with mod.If(col_end):
            mod.d.sync += [s_col.eq(s_col + Mux(st, C, 1)), s_w.eq(0)]
        with mod.If(grp_end):
            mod.d.sync += [s_on.eq(0), gs.eq(gs + 1), grp["gp"].eq(grp["gp"] + 1),
                           s_cbase.eq(s_cbase + gcols_r), s_nx.eq(s_cbase + gcols_p1)]
        # the GMEM read address is registered (_gather): each scan step's word reaches WMEM
        # two cycles later, and the group is resident the cycle after its last write
        fin2 = Signal(name="cg_scan_fin2")
        mod.d.sync += [fin.eq(grp_end), fin2.eq(fin)]
        ngr_m1 = self._run_const(mod, grp["ngr"] - 1, "cg_ngroups_m1")
        with mod.If(fin2):          # the group's last WMEM write has landed
            mod.d.sync += [sdone.eq(sdone + 1), grp["all_in"].eq(sdone == ngr_m1)]
        wr_en1 = Signal(name="cg_wr_en1")
        wr_addr1 = Signal(cfg.wmem_addr_bits + 1, name="cg_wr_addr1")
        wr_en = Signal(name="cg_wr_en")
        wr_addr = Signal(cfg.wmem_addr_bits + 1, name="cg_wr_addr")
        nv1 = Signal.like(nv, name="cg_nv1")
        nwords = Signal.like(nv, name="cg_nwords")       # words of the write (wwords)
        mod.d.sync += [wr_en1.eq(go), wr_addr1.eq(s_addr), wr_en.eq(wr_en1),
                       wr_addr.eq(wr_addr1), nv1.eq(Mux(st, nv, 1)), nwords.eq(nv1)]
        with mod.If(self._idle):
            mod.d.sync += [gs.eq(0), grp["gp"].eq(-2), sdone.eq(0), grp["all_in"].eq(0),
                           s_cbase.eq(0)]
        # (the registered idle flag can still be up in a run's first cycles, when a one-beat
        # group's scan may start: the start's s_nx stands; s_cbase is 0 by then)
        with mod.If(self._idle & ~start):
            mod.d.sync += s_nx.eq(1)
        return {"wdata": wdata, "sdata": [gmem_rd[c][0].data for c in range(C)],
                "nwords": nwords, "wr_en": wr_en, "wr_addr": wr_addr,
                "busy": s_on | wr_en1 | wr_en | fin | fin2}

    def _cg_margin(self, mod, s_mg, bw_free, s_cg, gb, gbits, sbits, stripe, start, w_last,
                   col_end, step, skip):
        """The col-group scan's bandwidth tests as registers (issue 22): ``s_mg`` = the
        credit ``s_cg`` minus the step's bits ``sbits`` and ``bw_free`` = (``gb`` = 0 or
        ``gb >= sbits``), set to what they become whenever the credit or the bits change:
        at the ``start`` (credit gb, the first stripe's bits), on a needed column's ``step``
        (free: credit gb; a word moved: pays the bits and gains gb; else gains gb) and on a
        skipped column (``skip``, credit unchanged), against the next step's bits when the
        column ends (``col_end``). ``gb`` (``gbits`` registered) minus a step's bits is a
        register (a run constant with the replicated map, whose steps are all ``L * W``
        bits; beside ``sbits`` with the striped one), so a step adds one operand to the
        margin."""
        b_first, b_next = stripe["first"], stripe["next"]
        if self.cfg.gemm_striped:
            d_cur = Signal(signed(22), name="cg_gb_less_bits")     # gb - sbits
            d_first, d_next = gb - b_first, gb - b_next
            with mod.If(start):
                mod.d.sync += d_cur.eq(d_first)
            with mod.If(col_end):
                mod.d.sync += d_cur.eq(d_next)
        else:
            wbits = self.cfg.lanes * self.cfg.width
            d_cur = d_first = d_next = self._run_const(     # from the run's input, as gb
                mod, gbits - Const(wbits, range(wbits + 1)), "cg_gb_less_bits")
        with mod.If(start):
            mod.d.sync += [s_mg.eq(d_first), bw_free.eq((gb == 0) | (gb >= b_first))]
        with mod.If(col_end):
            mod.d.sync += bw_free.eq((gb == 0) | (gb >= b_next))
        # within a step, go is "free or the margin's sign clear" and the column ends with its
        # last word (w_last): the selects read those registers, not go and col_end (issue 22)
        with mod.If(step):
            with mod.If(bw_free):
                mod.d.sync += s_mg.eq(Mux(w_last, d_next, d_cur))
            with mod.Elif(~s_mg[-1]):
                mod.d.sync += s_mg.eq(Mux(w_last, s_mg + d_next, s_mg + d_cur))
            with mod.Else():
                mod.d.sync += s_mg.eq(s_mg + gb)
        with mod.Elif(skip):
            mod.d.sync += s_mg.eq(s_cg - b_next)

    def _cg_desc(self, mod, q, grp):
        """Step 3 of :meth:`_col_group`: the SDUE descriptor of the pass queue's head and
        ``release`` (its group is resident and its row block complete in the queue)."""
        cfg = self.cfg
        R, C, m = cfg.rows, cfg.cols, cfg.merge_ways
        setup = self.setup
        head, hg = q["head"], grp["hg"]
        release = Signal(name="cg_release")
        resident = Signal(name="cg_head_resident")       # the head's group is in WMEM
        pq = q["pq"]
        if q["slots"] is not None:     # each slot's test from its register, then the pointer
            gsh = group_shift(cfg)
            ok = [grp["sdone"] > h.block[gsh:] for h, _ in q["slots"]]
            mod.d.comb += resident.eq(Mux(pq.ptr, ok[1], ok[0]))
        else:
            mod.d.comb += resident.eq(grp["sdone"] > hg)
        mod.d.comb += release.eq(self.flow.col_group & resident & q["ready_any"])
        hbase = Signal(cfg.wmem_addr_bits + 1, name="cg_hbase")
        mod.d.comb += hbase.eq(Mux(hg[0], cfg.wmem_words, 0))
        desc = Signal(pass_layout(cfg, True), name="cg_desc")
        pre = q["pre"]                  # the products, formed as the pass was queued
        mod.d.comb += [
            desc.ibase.eq(pre.ibase),
            desc.kwords.eq(setup.kwords),
            desc.sel.eq(head.sel),
            desc.obase.eq(pre.obase),
            desc.accumulate.eq(setup.accumulate),
        ]
        mod.d.comb += [desc.isel[r].eq(r) for r in range(R)]
        mod.d.comb += [desc.wbase[k].eq(hbase) for k in range(m)]
        for c in range(C):
            for k in range(m):
                mod.d.comb += [desc.col[c][k].eq(head.col[c][k]),
                               desc.woff[c][k].eq(pre.woff[c][k])]
        return desc, release

    def _sdue_feed(self, mod, sdue, q, rb, cg, gmem_rd) -> None:
        """SDUE descriptors and WMEM writes: the row-block fetch's (descriptor FIFO; sub-bank
        k of bank c <- member k of slot c) or the col-group scan's (pass queue; every
        sub-bank <- the same word)."""
        cfg = self.cfg
        C, m = cfg.cols, cfg.merge_ways
        pq = q["pq"]
        sdesc = Signal(pass_layout(cfg, True), name="sdue_desc")
        rb_desc = Signal(pass_layout(cfg), name="rb_desc")
        mod.d.comb += rb_desc.as_value().eq(rb["dq"].r_data)
        # the dataflow select of the SDUE's inputs from registers of its own (issue 22: one
        # flip-flop fanned out to every WMEM data bit's 2:1 select and to the descriptor was
        # the toy board build's critical path, 9 ns of routing across the die): a copy for
        # the control, one per descriptor part and one per WMEM sub-bank's data (ECP5 builds:
        # TRELLIS_FF copies, hw.ecp5.ff_copies); valid from the run's second cycle, before
        # the first take or WMEM write
        parts = (("ibase", "kwords", "obase", "accumulate"), ("isel", "sel"),
                 ("col", "woff"))
        sel = ff_copies(mod, self.flow.col_group, 1 + len(parts) + C * m,
                        name="sdue_flow_col_group", ecp5=cfg.dpu_mult == "ecp5")
        colg, sel_desc, sel_data = sel[0], sel[1:1 + len(parts)], sel[1 + len(parts):]
        cg_desc, cg_valid, cg_ready = cg["desc"], cg["valid"], sdue.desc.ready
        if cfg.gemm_desc_reg:
            # issue 22: the descriptor in a register in front of the SDUE; it loads whenever
            # it may (empty, or taken this cycle), so the queue's take enables only its
            # valid bit, and the SDUE's accept comes from flip-flops
            d_valid, d_desc = cg["desc_valid"], Signal.like(cg["desc"], name="cg_desc_reg")
            d_load = Signal(name="cg_desc_load")
            mod.d.comb += d_load.eq(~d_valid | sdue.desc.ready)
            with mod.If(d_load):
                mod.d.sync += [d_valid.eq(self.flow.col_group & cg["valid"]),
                               d_desc.eq(cg["desc"])]
            cg_desc, cg_valid, cg_ready = d_desc, d_valid, d_load
        for part, sw in zip(parts, sel_desc):
            for name in (n for n in part if n != "woff"):     # woff: below
                mod.d.comb += getattr(sdesc, name).eq(
                    Mux(sw, getattr(cg_desc, name), getattr(rb_desc, name)))
        # each (bank, member) WMEM address whole in woff, wbase 0 (issue 22: the SDUE's
        # wbase + woff adder sat after the descriptor FIFO's read on the board build's
        # critical path; the sum with 0 synthesizes to wires): the row-block FIFO's region
        # base, or the col-group descriptor's half + offset, from its register with
        # gemm_desc_reg
        mod.d.comb += [sdesc.wbase[k].eq(0) for k in range(m)]
        mod.d.comb += [sdesc.woff[c][k].eq(Mux(sel_desc[-1], cg_desc.wbase[k] + cg_desc.woff[c][k],
                                                rb_desc.wbase[k]))
                       for c in range(C) for k in range(m)]
        for k in range(m):
            for c in range(C):
                cg_d = (Mux(cg["striped"], cg["sdata"][c], cg["wdata"]) if cfg.gemm_striped
                        else cg["wdata"])
                mod.d.comb += sdue.wmem_f.data[k][c].eq(
                    Mux(sel_data[k * C + c], cg_d, gmem_rd[c][k].data))
        with mod.If(colg):
            mod.d.comb += [sdue.desc.valid.eq(cg_valid), cg["ready"].eq(cg_ready),
                           pq.r_en.eq(cg["ready"] & cg["release"]),
                           sdue.wmem_f.en.eq(Cat(cg["wr_en"] for _ in range(m))),
                           sdue.wmem_f.addr.eq(cg["wr_addr"])]
        with mod.Else():
            mod.d.comb += [sdue.desc.valid.eq(rb["dq"].r_rdy),
                           rb["dq"].r_en.eq(sdue.desc.ready), pq.r_en.eq(rb["take"]),
                           sdue.wmem_f.en.eq(Cat(rb["wr_en"] for _ in range(m))),
                           sdue.wmem_f.addr.eq(rb["wr_addr"])]
        mod.d.comb += sdue.desc.payload.eq(sdesc)

    def _status(self, mod, cau, sdue, q, rb, cg) -> None:
        """``busy``, ``cycles``, ``stalls``, ``wwords``, ``passes``, ``overflow``."""
        busy = Signal(name="busy_int")
        pending = Signal(name="pending")
        mod.d.comb += [
            pending.eq(cau.busy | rb["pending"] | cg["pending"]),
            busy.eq(pending | sdue.busy),
        ]
        mod.d.sync += self._idle.eq(~busy)
        # each counter counts its condition from a register (issue 22: the busy OR reached
        # the 32 clock enables of the cycle counter on the board build) and adds that
        # register's bit: the same count every cycle
        for out, cond, name in ((self.cycles, busy, "cycles"),
                                (self.stalls, busy & ~sdue.active & pending, "stalls")):
            cnt = Signal(32, name=f"{name}_cnt")
            seen = Signal(name=f"{name}_seen")
            mod.d.sync += seen.eq(cond)
            with mod.If(seen):
                mod.d.sync += cnt.eq(cnt + 1)
            mod.d.comb += out.eq(cnt + seen)
        with mod.If(rb["advance"]):
            mod.d.sync += self.wwords.eq(self.wwords + rb["words"])
        with mod.Elif(cg["word"]):
            mod.d.sync += self.wwords.eq(self.wwords + cg["nwords"])
        mod.d.comb += [self.busy.eq(busy), self.passes.eq(sdue.passes),
                       self.overflow.eq(cau.overflow)]


def check_setup(cfg: Config, *, kwords: int, ncols: int, blocks: int, regions: int,
                max_regions: int = GEMM_MAX_REGIONS, col_group: bool = False,
                gcols: int = 0, striped: bool = False) -> None:
    """Raise :class:`ExionError` naming the limit a run's parameters break (``gcols``:
    col-group columns per group, 0 = one group of ``ncols``; ``striped``: the striped WMEM
    map, where a bank holds ``ceil(columns / C)`` of a group's columns)."""
    lim = [
        ("kwords", kwords, 1, 2 * cfg.imem_words),
        ("ncols", ncols, 1, cfg.omem_depth),
        ("regions", regions, 1, max_regions),
    ]
    for name, v, lo, hi in lim:
        if not lo <= v <= hi:
            raise ExionError(f"SparseGemm run: {name} = {v} outside {lo}..{hi} for config "
                             f"{cfg.name!r}")
    if blocks * kwords > 2 * cfg.imem_words:
        raise ExionError(f"SparseGemm run: {blocks} row blocks x {kwords} words exceed IMEM "
                         f"({2 * cfg.imem_words} words per bank)")
    if blocks * ncols > cfg.omem_depth:
        raise ExionError(f"SparseGemm run: {blocks} row blocks x {ncols} columns exceed OMEM "
                         f"({cfg.omem_depth} results per bank)")
    if striped and not col_group:
        raise ExionError("SparseGemm run: the striped map is a col-group map")
    if striped and not cfg.gemm_striped:
        raise ExionError(f"SparseGemm run: config {cfg.name!r} builds the engine without the "
                         f"striped map (gemm_striped = false)")
    if col_group and 0 < gcols < ncols:
        groups = -(-ncols // gcols)
        if groups > cfg.gemm_max_groups:
            raise ExionError(f"SparseGemm run: {groups} column groups exceed the "
                             f"{cfg.gemm_max_groups} a run's block labels hold")
        held = -(-gcols // cfg.cols) if striped else gcols
        if held * kwords > cfg.wmem_words:
            raise ExionError(f"SparseGemm run: {gcols} columns per group x {kwords} words "
                             f"exceed a WMEM half ({cfg.wmem_words} words per sub-bank"
                             f"{', striped over the banks' if striped else ''})")
    elif col_group:
        held = -(-ncols // cfg.cols) if striped else ncols
        if held * kwords > 2 * cfg.wmem_words:
            raise ExionError(f"SparseGemm run: {ncols} resident columns x {kwords} words "
                             f"exceed WMEM ({2 * cfg.wmem_words} words per sub-bank"
                             f"{', striped over the banks' if striped else ''})")
    if regions * kwords > 2 * cfg.wmem_words:
        raise ExionError(f"SparseGemm run: {regions} regions x {kwords} words exceed WMEM "
                         f"({2 * cfg.wmem_words} words per sub-bank)")
