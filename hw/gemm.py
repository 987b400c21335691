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
* The **fetch** unit takes one pass at a time and copies, for every slot c and member k,
  the K/L words of column ``col[c][k]`` from GMEM into WMEM sub-bank k of bank c: all
  ``C * m`` words of a beat in one cycle, so a pass is fetched in ``kwords`` cycles. WMEM
  holds ``setup.regions`` regions of ``kwords`` words (a ring); a region is free again when
  the SDUE has issued the pass that reads it (``SDUE.issued``), so fetching runs up to
  ``regions`` passes ahead of the SDUE.
* Each fetched pass becomes an SDUE descriptor (``ibase = block * kwords``,
  ``wbase[k]`` = the region, i_sw identity, the CAU's ``sel``/``col``, ``obase = block *
  ncols``, ``accumulate`` from ``setup``) in a small FIFO; the SDUE streams them back to back.
* When ``busy`` falls, OMEM bank r at ``block * ncols + j`` holds ``Y[block * R + r, j]``
  where the mask is set and the preloaded value elsewhere.

Limits of one run (the host driver ``sim.gemm_rtl`` tiles larger products): ``N <=
omem_depth``, ``blocks * N <= omem_depth``, ``blocks * kwords <= 2 * imem_words``,
``regions * kwords <= 2 * wmem_words``. GMEM is a model of the global buffer with ``C * m``
read ports (one word per WMEM sub-bank per cycle); see ``docs/gemm.md``.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from exion.config import CAU_COLS_PER_CYCLE, Config
from exion.errors import ExionError

from .cau import CAU, cau_pass_layout, mask_layout
from .dpu import operand_layout
from .sdue import SDUE, mem_write_signature, omem_read_signature, pass_layout
from .util import bits_for as _bits

__all__ = ["SparseGemm", "setup_layout", "gmem_write_signature", "gmem_kbits"]


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


def gmem_write_signature(cfg: Config) -> wiring.Signature:
    """Host write of GMEM: word ``data`` (L elements) at ``addr`` when ``en``."""
    return wiring.Signature({
        "en": Out(1),
        "addr": Out(_bits(cfg.omem_depth) + gmem_kbits(cfg)),
        "data": Out(operand_layout(cfg)),
    })


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

    Members
    -------
    mask : In(stream.Signature(mask_layout(cfg, cols_per_cycle, True)))
        The mask, row block by row block (see ``hw.cau``); ``block`` = the block's index in
        this run.
    setup : In(setup_layout(cfg, max_regions))
        Run parameters (constant while ``busy``).
    gmem_w : In(gmem_write_signature(cfg))
        Host write of the weight store (only while idle).
    imem_w, omem_w, omem_r
        Host access to the SDUE's IMEM and OMEM (as ``hw.sdue.SDUE``; only while idle).
    busy : Out(1)
        The CAU, the fetch or the SDUE is working.
    cycles : Out(32)
        Busy cycles since reset (wraps).
    passes : Out(32)
        Passes the SDUE completed since reset.
    overflow : Out(1)
        Sticky: a row block had more than ``omem_depth`` columns.
    """

    def __init__(self, cfg: Config, *, cols_per_cycle: int = CAU_COLS_PER_CYCLE,
                 max_regions: int = 4,
                 desc_depth: int = 2):
        for name, v, lo in (("max_regions", max_regions, 1), ("desc_depth", desc_depth, 1),
                            ("cols_per_cycle", cols_per_cycle, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                self._MustUse__silence = True
                raise ExionError(f"SparseGemm: {name} = {v!r} is invalid: must be an integer "
                                 f">= {lo}")
        self.cfg = cfg
        self.cols_per_cycle = cols_per_cycle
        self.max_regions = max_regions
        self.desc_depth = desc_depth
        R = cfg.rows
        word = operand_layout(cfg)
        super().__init__({
            "mask": In(stream.Signature(mask_layout(cfg, cols_per_cycle, True))),
            "setup": In(setup_layout(cfg, max_regions)),
            "gmem_w": In(gmem_write_signature(cfg)),
            "imem_w": In(mem_write_signature(R, cfg.imem_addr_bits + 1, word)),
            "omem_w": In(mem_write_signature(R, cfg.omem_addr_bits, signed(cfg.acc_width))),
            "omem_r": In(omem_read_signature(cfg)),
            "busy": Out(1),
            "cycles": Out(32),
            "passes": Out(32),
            "overflow": Out(1),
        })

    def constants(self) -> dict:
        cfg = self.cfg
        return {"cols_per_cycle": self.cols_per_cycle, "max_regions": self.max_regions,
                "desc_depth": self.desc_depth, "gmem_kbits": gmem_kbits(cfg),
                "gmem_cols": cfg.omem_depth, "max_cols": cfg.omem_depth}

    def elaborate(self, platform):
        cfg = self.cfg
        R, C, m = cfg.rows, cfg.cols, cfg.merge_ways
        KB = gmem_kbits(cfg)
        mod = Module()
        word = operand_layout(cfg)

        cau = CAU(cfg, cols_per_cycle=self.cols_per_cycle, max_cols=cfg.omem_depth,
                  sort="runtime")
        sdue = SDUE(cfg, fetch=True)
        mod.submodules.cau = cau
        mod.submodules.sdue = sdue
        wiring.connect(mod, wiring.flipped(self.mask), cau.mask)
        wiring.connect(mod, wiring.flipped(self.imem_w), sdue.imem_w)
        wiring.connect(mod, wiring.flipped(self.omem_w), sdue.omem_w)
        wiring.connect(mod, wiring.flipped(self.omem_r), sdue.omem_r)
        setup = self.setup
        kw = setup.kwords

        # ---- GMEM: B, column j's words at j << KB; one read port per WMEM sub-bank ----------
        gmem = Memory(shape=word, depth=cfg.omem_depth << KB, init=[])
        mod.submodules.gmem = gmem
        gw = gmem.write_port()
        mod.d.comb += [gw.en.eq(self.gmem_w.en), gw.addr.eq(self.gmem_w.addr),
                       gw.data.eq(self.gmem_w.data)]

        # ---- fetch ------------------------------------------------------------------------
        cpl = cau_pass_layout(cfg, cfg.omem_depth)
        f_pass = Signal(cpl, name="f_pass")
        f_active = Signal(name="f_active")
        f_w = Signal(range(2 * cfg.imem_words + 1), name="f_w")
        f_base = Signal(cfg.wmem_addr_bits + 1, name="f_base")
        next_base = Signal.like(f_base, name="next_base")
        next_ridx = Signal(range(self.max_regions), name="next_ridx")
        outstanding = Signal(range(self.max_regions + 2), name="outstanding")

        dq = fifo.SyncFIFO(width=pass_layout(cfg).size, depth=self.desc_depth)
        mod.submodules.desc_queue = dq

        last_beat = Signal(name="last_beat")
        advance = Signal(name="advance")
        take = Signal(name="take")
        mod.d.comb += [
            last_beat.eq(f_active & (f_w == kw - 1)),
            advance.eq(f_active & ~(last_beat & ~dq.w_rdy)),
            take.eq(cau.out.valid & (~f_active | (last_beat & advance)) &
                    (outstanding < setup.regions)),
            cau.out.ready.eq(take),
        ]
        gmem_rd = []
        for c in range(C):
            ports = []
            for k in range(m):
                rp = gmem.read_port()
                mod.d.comb += rp.addr.eq(Cat(f_w[:KB], f_pass.col[c][k]))
                ports.append(rp.data)
            gmem_rd.append(ports)

        with mod.If(take):
            mod.d.sync += [f_pass.eq(cau.out.payload), f_active.eq(1), f_w.eq(0),
                           f_base.eq(next_base)]
            with mod.If(next_ridx + 1 >= setup.regions):
                mod.d.sync += [next_base.eq(0), next_ridx.eq(0)]
            with mod.Else():
                mod.d.sync += [next_base.eq(next_base + kw), next_ridx.eq(next_ridx + 1)]
        with mod.Elif(advance):
            mod.d.sync += f_w.eq(f_w + 1)
            with mod.If(last_beat):
                mod.d.sync += f_active.eq(0)
        with mod.If(take & ~sdue.issued):
            mod.d.sync += outstanding.eq(outstanding + 1)
        with mod.Elif(~take & sdue.issued):
            mod.d.sync += outstanding.eq(outstanding - 1)

        # GMEM data arrives one cycle after its address: write WMEM then.
        wr_en = Signal(name="wr_en")
        wr_addr = Signal.like(f_base, name="wr_addr")
        mod.d.sync += [wr_en.eq(advance), wr_addr.eq(f_base + f_w)]
        mod.d.comb += [sdue.wmem_f.en.eq(Cat(wr_en for _ in range(m))),
                       sdue.wmem_f.addr.eq(wr_addr)]
        for k in range(m):
            for c in range(C):
                mod.d.comb += sdue.wmem_f.data[k][c].eq(gmem_rd[c][k])

        # The descriptor enters the queue with the last beat's GMEM read; its last WMEM
        # write lands before the SDUE can read the pass's first word.
        desc = Signal(pass_layout(cfg), name="f_desc")
        mod.d.comb += [
            desc.ibase.eq(f_pass.block * kw),
            desc.kwords.eq(kw),
            desc.sel.eq(f_pass.sel),
            desc.obase.eq(f_pass.block * setup.ncols),
            desc.accumulate.eq(setup.accumulate),
        ]
        for k in range(m):
            mod.d.comb += desc.wbase[k].eq(f_base)
        for r in range(R):
            mod.d.comb += desc.isel[r].eq(r)
        for c in range(C):
            for k in range(m):
                mod.d.comb += desc.col[c][k].eq(f_pass.col[c][k])
        mod.d.comb += [dq.w_en.eq(last_beat & advance), dq.w_data.eq(desc.as_value()),
                       sdue.desc.valid.eq(dq.r_rdy), sdue.desc.payload.eq(dq.r_data),
                       dq.r_en.eq(sdue.desc.ready)]

        # ---- status ---------------------------------------------------------------------
        busy = Signal(name="busy_int")
        mod.d.comb += busy.eq(cau.busy | f_active | wr_en | dq.r_rdy | sdue.busy)
        with mod.If(~busy):
            mod.d.sync += [next_base.eq(0), next_ridx.eq(0)]
        with mod.If(busy):
            mod.d.sync += self.cycles.eq(self.cycles + 1)
        mod.d.comb += [self.busy.eq(busy), self.passes.eq(sdue.passes),
                       self.overflow.eq(cau.overflow)]
        return mod


def check_setup(cfg: Config, *, kwords: int, ncols: int, blocks: int, regions: int,
                max_regions: int = 4) -> None:
    """Raise :class:`ExionError` naming the limit a run's parameters break."""
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
    if regions * kwords > 2 * cfg.wmem_words:
        raise ExionError(f"SparseGemm run: {regions} regions x {kwords} words exceed WMEM "
                         f"({2 * cfg.wmem_words} words per sub-bank)")
