"""The one configuration object of the EXION generator (SPEC section 1).

Every hardware block, golden function, bench and CLI command takes a :class:`Config`.
It is a frozen dataclass: parameters are checked once, at construction, and an impossible
configuration raises :class:`ConfigError` naming the field, the bad value and the limit.

Presets: ``toy`` (the seed's 8 x 3 toy model), ``exion16`` (the seed's EXION core) and
``fpga`` (8 x 4 x 4 lanes: fits the multipliers of an ECP5-85F).
Custom configurations load from TOML (:func:`load_config`); a TOML file may start from a
preset with ``base = "toy"`` and override single fields.

Choices made here (also in ``docs/choices.md``):

* Bank counts are derived, not free: IMEM has R banks, WMEM has C banks, OMEM has R banks,
  exactly as in both seed configurations.
* Depths count W-bit elements for IMEM/WMEM and A-bit results for OMEM, for *one side* of
  a double buffer. A physical IMEM/WMEM word holds L elements, so a depth must be a
  multiple of L.
* ``k_max`` is the longest reduction (K) the config guarantees exact; the accumulator rule
  of SPEC 2, ``k_max * 2**(2W-2) < 2**(A-1)``, is enforced. exion16 declares 4608, the
  DiT-XL/2 FC2 reduction, reached with K-splits accumulated in OMEM.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ExionError

__all__ = ["Config", "ConfigError", "PRESETS", "get_config", "load_config", "index_bits",
           "CAU_COLS_PER_CYCLE", "CAU_LANES_DEFAULT_CAP", "CAU_LANES_MAX", "EPRE_PIPE",
           "cau_sort_banks",
           "EPRE_SEL_FIXED", "EPRE_RUN_FIXED", "EPRE_SELECTOR_KINDS"]


class ConfigError(ExionError):
    """A configuration that cannot work. The message names the field and the limit."""


# dpu_mult values: how the DPU's multipliers are built (see Config).
DPU_MULTS = ("infer", "ecp5")
#: EPRE top-kN selector kinds (``Config.epre_selector_kind``, issue 18).
EPRE_SELECTOR_KINDS = ("insertion", "radix")
#: Fields left out of ``Config.hash`` while at these defaults (added after configs were built).
_HASH_DEFAULTS = {"epre_selector_kind": "insertion", "epre_radix_ports": None,
                  "epre_radix_bits": None,
                  "gmem_ports": False, "gemm_striped": True, "omem_drain": 1,
                  "cau_lanes": None, "gemm_pq_reg": False, "gemm_pq_in_reg": False,
                  "gemm_desc_reg": False, "gemm_snoop_reg": False,
                  "gemm_scan_reg": False, "gemm_take_reg": False}


# ---- timing-contract constants shared by hw/ and golden/ (their one home) ---------------
# golden/cycles.py re-exports them under the same names; hw/ reads them through Config.
#: Column cvs per CAU input beat (``hw.cau.CAU``'s ``cols_per_cycle`` default): a 4608-column
#: row block in 576 cycles, below the SDUE's time for it at K/L = 2C down to ~97 % sparsity.
CAU_COLS_PER_CYCLE = 8
#: Cap of the CAU's default merge lanes (:attr:`Config.cau_merge_lanes`).
CAU_LANES_DEFAULT_CAP = 4
#: Most merge lanes a CAU may be generated with (the chained fit tests grow with LN).
CAU_LANES_MAX = 8
#: The gemm engine (``hw.gemm.SparseGemm``) as built: most WMEM regions its row-block fetch
#: fills ahead of the SDUE, and descriptors between that fetch and the SDUE (the cycle model
#: ``golden.cycles.engine_cycles`` needs both).
GEMM_MAX_REGIONS = 4
GEMM_DESC_DEPTH = 2
#: EPRE: cycles from the issue of a phase's last beat to its last result written (read, LOD
#: register, products + lane tree register, accumulator); every phase ends with this drain.
EPRE_PIPE = 4
#: EPRE selector cycles per query row beyond its two passes over the N_k scores (start,
#: insert tail, threshold, mask tail, one output beat when ``mask`` is ready).
EPRE_SEL_FIXED = 5
#: EPRE cycles of a run beyond its phases (the final state).
EPRE_RUN_FIXED = 1


def cau_sort_banks(merge_lanes: int) -> int:
    """Banks of the CAU's sorted buffer for ``merge_lanes`` LN: 1 for LN = 1, else the power
    of two >= 2 LN (toy LN = 2: 4, exion16 LN = 3: 8).

    Each bank is a one-write, one-read block RAM holding the positions ``p`` with
    ``p mod banks`` = its index. Stage C's LN consecutive reads always hit LN different banks
    (banks >= LN); stage B's LN scattered writes may collide, and B then stops at the first
    colliding lane (``golden.cycles`` replays it); twice LN banks keep collisions rare.
    """
    lanes = int(merge_lanes)
    return 1 if lanes <= 1 else 1 << (2 * lanes - 1).bit_length()


def index_bits(n: int) -> int:
    """Bits of an index into ``n`` items (at least 1): the one bit-width helper of hw/ and
    the config's address widths."""
    return max(1, (n - 1).bit_length())



@dataclass(frozen=True)
class Config:
    """All parameters of one EXION core.

    Parameters
    ----------
    name : str
        Identifier used in file names and reports.
    rows, cols : int
        R x C array of dot-product units (DPUs).
    lanes : int
        L, multipliers per DPU (elements per memory word).
    width : int
        W, operand width in bits (signed two's complement), 4..16.
    acc_width : int
        A, accumulator / result width in bits.
    merge_ways : int
        m, ConMerge ways the hardware is built with: weight buses (WMEM sub-banks) per DPU
        column, 1..R. A run uses any m in 1..merge_ways (run-time, :meth:`check_merge_ways`).
    imem_depth, wmem_depth : int
        Elements per IMEM / WMEM bank (one side of the double buffer).
    omem_depth : int
        Results per OMEM bank.
    k_max : int
        Longest reduction length guaranteed exact in ``acc_width`` bits.
    merge_window : int or None
        W_open of the ConMerge merge step; ``None`` means C.
    lod_terms : int
        Eager prediction: 1 = LOD, 2 = two-step LOD (TS-LOD).
    dpu_pipe_in, dpu_pipe_mul, dpu_pipe_tree_in, dpu_pipe_tree : bool
        Pipeline register of every DPU on the operands in front of the multipliers / after
        the multipliers / a second one on the products at the adder tree's inputs / after
        the adder tree (each one adds a cycle to ``dpu_latency``). ``dpu_pipe_tree_in`` is
        for FPGAs whose multiplier blocks sit in columns away from the logic: it gives the
        route from the DSP block to the adder tree a cycle of its own.
    dpu_mult : str
        How the DPU's multipliers are built. ``"infer"`` (default): ``a * b`` in Amaranth,
        mapped by synthesis (Yosys puts each into a DSP block; on ECP5 without the DSP's
        registers). ``"ecp5"``: one Lattice ``MULT18X18D`` instance per lane, whose internal
        input registers implement ``dpu_pipe_in`` and output register ``dpu_pipe_mul``, so the
        multiplier's path is register-to-register inside the DSP (FPGA timing, docs/fpga.md).
        Same cycles and results; simulation uses ``sim/models/MULT18X18D.v``.
    sdue_pipe : bool
        SDUE pipeline registers on the memory read data, on the switched DPU operands and on
        the OMEM read data of the drain (+3 cycles per run; needed near 100 MHz on FPGAs).
    sdue_pipe_isw : bool
        One more SDUE stage, inside the i_sw: each row's R:1 mux is split into two R/2:1
        halves with a register between them and the final 2:1 (the WMEM data, selects and
        beat flags get the matching register). +1 cycle of ``sdue_in_latency``; needs
        ``sdue_pipe``. For FPGAs: the crossbar was the toy SDUE's critical path on ECP5
        (docs/fpga.md).
    gb_bytes_per_cycle : int
        Global-buffer bandwidth that fills IMEM/WMEM, in bytes per cycle (cycle model).
    omem_drain : int
        OMEM drain width D (issue 17, the short-K limit): each OMEM bank is D sub-banks by
        address (``addr % D``), and in a *wide* run (the SDUE's ``wide`` input: every pass
        writes, in each group of D consecutive DPU columns, D addresses distinct mod D;
        the gemm engine sets it on striped runs, whose passes write consecutive columns)
        a row's drain writes D results per cycle: a pass occupies the issue stage
        ``max(kwords, C / D)`` cycles instead of ``max(kwords, C)``, and the run's last
        drain takes C / D. A power of two dividing C and ``omem_depth``; 1 = one drain
        write per cycle (the seed's design).
    gemm_striped : bool
        Build the gemm engine's striped WMEM map (``flow.striped``, issue 17). ``false``
        builds the engine without it (the scan moves one word per cycle into every
        sub-bank: the replicated map only), for FPGA builds that do not use it: its C GMEM
        read addresses and the mux on each WMEM fill word cost the toy board build about
        10 MHz (docs/fpga.md). Hosts and models then never choose it.
    cau_lanes : int or None
        CAU merge lanes LN (columns sorted and merged per cycle) of every CAU the config
        builds (standalone, in the gemm engine, in the DSC core); ``None``: the derived
        default :attr:`cau_merge_lanes` (``m // 2 + 1``, capped). Fewer lanes shorten the
        CAU's one-cycle loops (stage B's pick chain, stage C's first-fit chain: both LN
        long) at the cost of CAU cycles a block, which the cycle model counts
        (``golden.cycles.cau_schedule``); an FPGA build's knob (docs/fpga.md). 1..min(C,
        merge window).
    gemm_pq_reg : bool
        The gemm engine's pass-queue head in fabric registers (issue 22): the queue's block
        RAM then feeds only that register, not the release tests and the SDUE descriptor
        (the toy board build's critical path). A block's last pass reaches the head one
        cycle later (``golden.cycles.engine_block_release``); every other take is
        unchanged. Off in the presets, on in ``configs/toy_ecp5.toml``.
    gemm_pq_in_reg : bool
        A register stage in front of the gemm engine's pass queue (issue 22): the CAU's
        output FIFO (LUT RAM) and the pass's present-member bits end at fabric registers
        near the CAU; the member count and the descriptor products are formed from that
        register on the way to the queue's block RAM (before, the whole chain was the toy
        board build's critical path). Every pass reaches the queue one cycle later, so a
        block's passes and a group's "all queued" count one cycle later
        (``golden.cycles.engine_block_release``, ``engine_cau_release``). Off in the
        presets, on in ``configs/toy_ecp5.toml``.
    gemm_desc_reg : bool
        The col-group dataflow's SDUE descriptor in a register (issue 22): the release
        tests (the head's group resident, its block complete) and the take end at that
        register, which loads whenever it is empty or being taken, and the SDUE accepts from
        flip-flops (the toy board build's critical path ran from the release compare into
        the SDUE issue stage's clock enables). A pass reaches the SDUE one cycle after its
        take, so a pass the SDUE waits for issues one cycle later
        (``golden.cycles.col_group_run``); back-to-back passes keep their rate. The
        row-block dataflow feeds the SDUE from its descriptor FIFO as before. Off in the
        presets, on in ``configs/toy_ecp5.toml``.
    gemm_snoop_reg : bool
        The col-group snoop (which columns a run needs, which groups' masks are in) reads
        each mask beat and the run's figures from registers, a cycle after the beat is taken
        (issue 22: the mask input and the run's inputs reached ``need[]`` and the beat
        position on the toy board build). A group's scan starts one cycle later
        (``golden.cycles.col_group_run``: ``ENGINE_SCAN_START`` + 1). Off in the presets, on
        in ``configs/toy_ecp5.toml``.
    gemm_scan_reg : bool
        The col-group scan's start decided a cycle ahead into a register (issue 22): the
        start tests (the group's mask is in, the group exists, its WMEM half is free: three
        compares of group counters) end at one flip-flop, and the start that loads the
        scan's registers is that flip-flop and the scan being idle (the toy board build's
        critical path ran from the half-free compares into those clock enables). The tests
        only turn true while the scan is idle, so every scan starts one cycle later
        (``golden.cycles.col_group_run``: ``S_g`` + 1). Off in the presets, on in
        ``configs/toy_ecp5.toml``.
    gemm_take_reg : bool
        The row-block fetch's take decided a cycle ahead into a register (issue 22): the
        take's tests (the head pass's block released, a WMEM region free, the fetch free:
        idle, or its last beat advancing) end at one flip-flop, and the take that loads the
        fetch's registers and pops the pass queue is that flip-flop (the toy board build's
        critical path ran from the descriptor FIFO's level through the last beat's advance
        and the take into the queue head's pointer and block counter). The tests stay true
        until a take, so every take moves exactly one cycle later
        (``golden.cycles.row_block_fetch``: ``T_p`` + 1); a pass's fetch no longer starts
        in its predecessor's last beat, so back-to-back passes take ``kwords + 1`` fetch
        cycles each. Off in the presets, on in ``configs/toy_ecp5.toml``.
    gmem_ports : bool
        The gemm engine's GMEM (the model of the global buffer, ``C * m`` read ports) is left
        out of the generated top: its write port and read ports become top-level ports
        (``gmem``, :func:`exion.hw.gemm.gmem_port_signature`) of the tops that hold the
        engine (``gemm``, ``dsc_core``, ``dsc``). For synthesis of configs whose GMEM does
        not fit an FPGA (exion16: 64 read ports on 9.4 Mbit); the synthesis flow sets it for
        hierarchical runs. Same engine logic either way.
    epre_units, epre_lanes, epre_selectors : int or None
        EPRE provisioning (issue 18): dot-product units (query / key rows computed at once;
        ``None``: C), shift-add lanes per unit (elements of one EPRE memory word; ``None``:
        L) and top-kN selectors (rows selected at once, 1..units; ``None``: 1). The
        effective values are :attr:`epre_unit_count`, :attr:`epre_lane_count`,
        :attr:`epre_selector_count`.
    epre_selector_kind : str
        EPRE top-kN selector (issue 18): ``"insertion"`` (``hw.epre_stages.EpreSelector``,
        an n_max / 2 + 1-entry sorted network per selector) or ``"radix"``
        (``hw.epre_radix.EpreRadixSelector``, a bitwise threshold search over the score
        buffer; needs ``epre_selectors`` = ``epre_units``). The DSC's EPRE is always
        insertion (``dsc_epre_dims``).
    epre_radix_ports : int or None
        Radix selector: scores read per cycle P (score-buffer banks); ``None``: 8. Effective
        value :attr:`epre_radix_port_count`.
    epre_radix_bits : int or None
        Radix selector: bits b of the threshold decided per pass over the scores (radix
        2^b: ``ceil(acc_width / b)`` passes, 2^b - 1 counters per selector), 1..4;
        ``None``: 1. Effective value :attr:`epre_radix_bit_count`.
    """

    name: str
    rows: int
    cols: int
    lanes: int
    width: int = 12
    acc_width: int = 32
    merge_ways: int = 1
    imem_depth: int = 256
    wmem_depth: int = 1024
    omem_depth: int = 64
    k_max: int = 256
    merge_window: int | None = None
    lod_terms: int = 2
    dpu_pipe_in: bool = False
    dpu_pipe_mul: bool = True
    dpu_pipe_tree_in: bool = False
    dpu_pipe_tree: bool = True
    dpu_mult: str = "infer"
    sdue_pipe: bool = True
    sdue_pipe_isw: bool = False
    gb_bytes_per_cycle: int = 64
    omem_drain: int = 1
    gemm_striped: bool = True
    gemm_pq_reg: bool = False
    gemm_pq_in_reg: bool = False
    gemm_desc_reg: bool = False
    gemm_snoop_reg: bool = False
    gemm_scan_reg: bool = False
    gemm_take_reg: bool = False
    gmem_ports: bool = False
    cau_lanes: int | None = None
    epre_units: int | None = None
    epre_lanes: int | None = None
    epre_selectors: int | None = None
    epre_selector_kind: str = "insertion"
    epre_radix_ports: int | None = None
    epre_radix_bits: int | None = None
    # Not a parameter: keeps dataclasses.replace() and ==/hash honest.
    _checked: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self):
        self._validate()
        object.__setattr__(self, "_checked", True)

    # -- validation -------------------------------------------------------------------
    def _validate(self):
        def need(cond, fieldname, value, limit):
            if not cond:
                raise ConfigError(
                    f"config {self.name!r}: {fieldname} = {value!r} is invalid: {limit}")

        if not isinstance(self.name, str) or not self.name or not all(
                ch.isalnum() or ch in "_-." for ch in self.name):
            raise ConfigError(
                f"config name {self.name!r} is invalid: use letters, digits, '_', '-', '.'")
        ints = ["rows", "cols", "lanes", "width", "acc_width", "merge_ways", "imem_depth",
                "wmem_depth", "omem_depth", "k_max", "lod_terms", "gb_bytes_per_cycle"]
        for f in ints:
            v = getattr(self, f)
            need(isinstance(v, int) and not isinstance(v, bool), f, v, "must be an integer")
        for f in ("dpu_pipe_in", "dpu_pipe_mul", "dpu_pipe_tree_in", "dpu_pipe_tree",
                  "sdue_pipe", "sdue_pipe_isw", "gemm_striped", "gemm_pq_reg", "gemm_pq_in_reg",
                  "gemm_desc_reg", "gemm_snoop_reg", "gemm_scan_reg", "gemm_take_reg",
                  "gmem_ports"):
            v = getattr(self, f)
            need(isinstance(v, bool), f, v, "must be true or false")
        need(self.sdue_pipe or not self.sdue_pipe_isw, "sdue_pipe_isw", self.sdue_pipe_isw,
             "needs sdue_pipe = true (the i_sw stage sits after its memory-data register)")
        for f in ("rows", "cols", "lanes", "k_max", "gb_bytes_per_cycle"):
            need(getattr(self, f) >= 1, f, getattr(self, f), "must be >= 1")
        D = self.omem_drain
        need(isinstance(D, int) and not isinstance(D, bool) and D >= 1 and D & (D - 1) == 0
             and self.cols % D == 0 and self.omem_depth % D == 0, "omem_drain", D,
             f"must be a power of two dividing cols ({self.cols}) and omem_depth "
             f"({self.omem_depth})")
        need(4 <= self.width <= 16, "width", self.width, "must be in 4..16")
        need(2 * self.width <= self.acc_width <= 64, "acc_width", self.acc_width,
             f"must be in {2 * self.width}..64 (2 * width .. 64)")
        need(1 <= self.merge_ways <= self.rows, "merge_ways", self.merge_ways,
             f"must be in 1..{self.rows} (1..rows)")
        if self.merge_window is not None:
            need(isinstance(self.merge_window, int) and self.merge_window >= 1,
                 "merge_window", self.merge_window, "must be an integer >= 1 (or omitted)")
        need(self.lod_terms in (1, 2), "lod_terms", self.lod_terms, "must be 1 or 2")
        need(self.dpu_mult in DPU_MULTS, "dpu_mult", self.dpu_mult,
             f"must be one of {', '.join(repr(k) for k in DPU_MULTS)}")
        lim = min(self.cols, self.w_open)
        need(self.cau_lanes is None or (isinstance(self.cau_lanes, int)
                                        and not isinstance(self.cau_lanes, bool)
                                        and 1 <= self.cau_lanes <= lim),
             "cau_lanes", self.cau_lanes,
             f"must be an integer in 1..{lim} (1..min(cols, merge window), or omitted)")
        for f in ("epre_units", "epre_lanes", "epre_selectors"):
            v = getattr(self, f)
            need(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1), f, v,
                 "must be an integer >= 1 (or omitted)")
        need(self.epre_units is None or self.epre_units <= 1024, "epre_units", self.epre_units,
             "must be <= 1024")
        need(self.epre_lanes is None or self.epre_lanes <= 1024, "epre_lanes", self.epre_lanes,
             "must be <= 1024")
        need(self.epre_selector_count <= self.epre_unit_count, "epre_selectors",
             self.epre_selectors, f"must be in 1..{self.epre_unit_count} (1..epre units: a "
             f"selector serves the rows of one unit at a time)")
        need(self.epre_selector_kind in EPRE_SELECTOR_KINDS, "epre_selector_kind",
             self.epre_selector_kind,
             f"must be one of {', '.join(repr(k) for k in EPRE_SELECTOR_KINDS)}")
        rp = self.epre_radix_ports
        need(rp is None or (isinstance(rp, int) and not isinstance(rp, bool) and 1 <= rp <= 1024),
             "epre_radix_ports", rp, "must be an integer in 1..1024 (or omitted)")
        rb = self.epre_radix_bits
        need(rb is None or (isinstance(rb, int) and not isinstance(rb, bool) and 1 <= rb <= 4),
             "epre_radix_bits", rb, "must be an integer in 1..4 (or omitted)")
        need(self.epre_selector_kind != "radix"
             or self.epre_selector_count == self.epre_unit_count, "epre_selectors",
             self.epre_selectors, f"must equal epre units = {self.epre_unit_count} with "
             f"epre_selector_kind = 'radix' (one radix selector per unit, fed by stage 2)")
        L = self.lanes
        for f in ("imem_depth", "wmem_depth"):
            v = getattr(self, f)
            need(v >= L and v % L == 0, f, v,
                 f"must be a positive multiple of lanes = {L} (one memory word is L elements)")
        need(self.wmem_depth >= self.merge_ways * L, "wmem_depth", self.wmem_depth,
             f"must hold one word per merge way: >= merge_ways * lanes = {self.merge_ways * L}")
        need(self.omem_depth >= self.cols, "omem_depth", self.omem_depth,
             f"must hold one pass's columns: >= cols = {self.cols}")
        # SPEC 2: K_max * 2^(2W-2) < 2^(A-1).
        limit = self.k_max_limit
        need(self.k_max <= limit, "k_max", self.k_max,
             f"accumulator too narrow: k_max * 2**(2*width-2) must be < 2**(acc_width-1), "
             f"so k_max <= {limit} for width = {self.width}, acc_width = {self.acc_width}")

    # -- derived values ---------------------------------------------------------------
    @property
    def cfse_n_max(self) -> int:
        """Longest softmax / layer-norm row the CFSE buffers (``min(k_max, 16384)``); longer
        rows, up to the golden limits, are restreamed (``docs/cfse.md``)."""
        return min(self.k_max, 1 << 14)

    @property
    def k_max_limit(self) -> int:
        """Largest K with ``K * 2**(2W-2) < 2**(A-1)``."""
        return (2 ** (self.acc_width - 1) - 1) // 2 ** (2 * self.width - 2)

    @property
    def imem_banks(self) -> int:
        return self.rows

    @property
    def wmem_banks(self) -> int:
        return self.cols

    @property
    def omem_banks(self) -> int:
        return self.rows

    @property
    def imem_words(self) -> int:
        return self.imem_depth // self.lanes

    @property
    def wmem_words(self) -> int:
        return self.wmem_depth // self.lanes

    @property
    def gemm_max_groups(self) -> int:
        """Most column groups one col-group run of the gemm engine holds: a pass's 16-bit
        block label carries the row block in its low ``omem_depth.bit_length()`` bits and
        the group above them (``hw.gemm``, ``golden.cycles.engine_tiles``)."""
        return 1 << (16 - self.omem_depth.bit_length())

    @property
    def w_open(self) -> int:
        """ConMerge merge window (SPEC 3.2 step 4)."""
        return self.cols if self.merge_window is None else self.merge_window

    @property
    def peak_macs(self) -> int:
        """Peak multiply-accumulates per cycle: R * C * L."""
        return self.rows * self.cols * self.lanes

    @property
    def wmin(self) -> int:
        return -(2 ** (self.width - 1))

    @property
    def wmax(self) -> int:
        return 2 ** (self.width - 1) - 1

    @property
    def imem_addr_bits(self) -> int:
        return index_bits(self.imem_words)

    @property
    def wmem_addr_bits(self) -> int:
        return index_bits(self.wmem_words)

    @property
    def omem_addr_bits(self) -> int:
        return index_bits(self.omem_depth)

    @property
    def dpu_latency(self) -> int:
        """Cycles from a DPU input beat with ``last`` to its result (see hw/dpu.py)."""
        return (1 + int(self.dpu_pipe_in) + int(self.dpu_pipe_mul) + int(self.dpu_pipe_tree_in)
                + int(self.dpu_pipe_tree))

    @property
    def sdue_in_latency(self) -> int:
        """SDUE cycles from a beat's memory address to the DPU inputs (see hw/sdue.py)."""
        return 1 + 2 * int(self.sdue_pipe) + int(self.sdue_pipe_isw)

    @property
    def sdue_drain_latency(self) -> int:
        """SDUE drain cycles from an OMEM read to the write of the same entry."""
        return 1 + int(self.sdue_pipe)

    @property
    def sdue_fixed_cycles(self) -> int:
        """SDUE busy cycles of a run of passes beyond ``sum_p max(kwords_p, C)``: the last
        drain (C), the DPU pipeline, the address-to-DPU pipeline and the OMEM read before
        the drain's write (hw/sdue.py; golden.cycles.sdue_cycles)."""
        return self.cols + self.dpu_latency + self.sdue_in_latency + self.sdue_drain_latency

    @property
    def sdue_fixed_wide(self) -> int:
        """:attr:`sdue_fixed_cycles` of a wide run (``omem_drain``): its last drain takes
        C / D cycles."""
        return self.sdue_fixed_cycles - self.cols + self.cols // self.omem_drain

    def pass_period(self, kwords: int, wide: bool = False) -> int:
        """Cycles a pass of ``kwords`` beats occupies the SDUE's issue stage: ``max(kwords,
        C)``, or ``max(kwords, C / D)`` in a wide run (``omem_drain``)."""
        return max(int(kwords), self.cols // self.omem_drain if wide else self.cols)

    @property
    def cau_cols_per_cycle(self) -> int:
        """Default column cvs per CAU input beat (``CAU_COLS_PER_CYCLE``)."""
        return CAU_COLS_PER_CYCLE

    @property
    def cau_merge_lanes(self) -> int:
        """Default CAU merge lanes LN (columns sorted and merged per cycle).

        ``m // 2 + 1`` with m = ``merge_ways`` (the CAU is built for the most ways a run may
        use): a pass of C slots holds at most C * m columns and the SDUE computes it in 2C
        cycles at K/L = 2C, so m / 2 columns per cycle is the break-even and one more lane
        leaves room for the window flush and slots that are not full. Capped at
        ``CAU_LANES_DEFAULT_CAP``, at C and at W_open (the window logic retires at most LN
        slots per cycle, all from the window). A run with fewer ways uses the same lanes.
        The ``cau_lanes`` field, when set, overrides it.
        """
        if self.cau_lanes is not None:
            return self.cau_lanes
        return max(1, min(self.merge_ways // 2 + 1, CAU_LANES_DEFAULT_CAP, self.cols,
                          self.w_open))

    @property
    def cau_sort_banks(self) -> int:
        """Banks of the CAU's sorted buffer for the default lanes (:func:`cau_sort_banks`)."""
        return cau_sort_banks(self.cau_merge_lanes)

    @property
    def epre_pipe(self) -> int:
        """EPRE drain cycles at the end of every phase (``EPRE_PIPE``)."""
        return EPRE_PIPE

    @property
    def epre_sel_fixed(self) -> int:
        """EPRE selector cycles per query row beyond 2 * N_k (``EPRE_SEL_FIXED``)."""
        return EPRE_SEL_FIXED

    @property
    def epre_run_fixed(self) -> int:
        """EPRE cycles of a run beyond its phases (``EPRE_RUN_FIXED``)."""
        return EPRE_RUN_FIXED

    @property
    def dsc_epre_dims(self) -> tuple:
        """``(n_max, d_max, dh_max, units, selectors)`` of the EPRE inside the DSC core
        (issue 16): the digits DiT's block (16 tokens, d = 64, d_head = 16), d and d_head
        capped at ``k_max``; units ``min(epre_unit_count, n_max)`` (more units than tokens
        would idle), selectors ``min(epre_selector_count, units)``. The EPRE's own defaults
        (256 tokens, d = 1152, d_head = 72, a DiT-XL/2 head) would make the DSC's memories
        and selector network ~16x larger than the toy block needs; a block that does not
        fit runs EP on the host (``sim.dsc_program.epre_fits``)."""
        n_max = 16
        units = min(self.epre_unit_count, n_max)
        return (n_max, min(64, self.k_max), min(16, self.k_max), units,
                min(self.epre_selector_count, units))

    @property
    def dsc_row_max(self) -> int:
        """Longest softmax / layer-norm row of the CFSE row units inside the DSC core (issue
        16): the digits DiTs' ``max(width, tokens)`` = 64 (digits64's 64 keys, the width 64),
        capped at ``cfse_n_max``. The standalone CFSE's ``cfse_n_max`` (``k_max``: 4608 on
        exion16) would size the DSC's ring buffers for rows it never sees; a longer row runs
        on the host (``sim.dsc_program.block_jobs``)."""
        return min(64, self.cfse_n_max)

    @property
    def dsc_ffnr_dims(self) -> tuple:
        """``(t_max, n_max)`` of the FFN-Reuse unit's H_d cache inside the DSC core (issue
        16): the largest digits DiT's FFN, digits64's 64 tokens x 256 hidden units, n capped
        at ``k_max`` (the standalone unit's 4 R x ``k_max`` is 64 x 4608 on exion16). Its Y_d
        cache (unused by the DSC) is one word per row block and its histogram counts up to
        ``t_max * n_max`` values; a larger H runs on the host (``sim.dsc_program.ffnr_fits``)."""
        return (64, min(256, self.k_max))

    @property
    def epre_unit_count(self) -> int:
        """EPRE dot-product units U (``epre_units``, default C)."""
        return self.cols if self.epre_units is None else self.epre_units

    @property
    def epre_lane_count(self) -> int:
        """EPRE shift-add lanes per unit Le = elements per EPRE word (``epre_lanes``, default L)."""
        return self.lanes if self.epre_lanes is None else self.epre_lanes

    @property
    def epre_selector_count(self) -> int:
        """EPRE top-kN selectors S, rows selected at once (``epre_selectors``, default 1)."""
        return 1 if self.epre_selectors is None else self.epre_selectors

    @property
    def epre_radix_port_count(self) -> int:
        """Radix selector ports P, scores read per cycle (``epre_radix_ports``, default 8)."""
        return 8 if self.epre_radix_ports is None else self.epre_radix_ports

    @property
    def epre_radix_bit_count(self) -> int:
        """Radix selector bits b decided per pass (``epre_radix_bits``, default 1)."""
        return 1 if self.epre_radix_bits is None else self.epre_radix_bits

    @property
    def epre_shift_adds(self) -> int:
        """EPRE approximate products per cycle: U * Le."""
        return self.epre_unit_count * self.epre_lane_count

    # -- run-time merge ways, reduction capacity and K-splits --------------------------------
    def check_merge_ways(self, merge_ways=None) -> int:
        """The ConMerge ways a run uses, validated: the one check of m (golden, sim, CLI).

        ``None`` means ``merge_ways`` (all weight buses). The hardware is built with
        ``merge_ways`` weight buses per DPU column; a run may use any m in 1..merge_ways
        (the CAU's run-time ``ways`` field, the plan's ``merge_ways``). To study a design
        with more ways, use a config with that ``merge_ways`` (1..rows).
        """
        m = self.merge_ways if merge_ways is None else merge_ways
        if not isinstance(m, numbers.Integral) or isinstance(m, bool) \
                or not 1 <= m <= self.merge_ways:
            raise ConfigError(f"merge_ways = {m!r} is invalid for config {self.name!r}: must "
                              f"be an integer in 1..{self.merge_ways} (the weight buses per "
                              f"DPU column the config is built with)")
        return int(m)

    def k_cap(self, merge_ways=None) -> int:
        """Longest reduction (elements) one SDUE pass of a run with ``merge_ways`` ways holds.

        ``min(imem_depth, wmem_depth // m)`` rounded down to whole words: one IMEM side holds
        a row of K elements; the host loads every weight bus's region into one WMEM address
        space (its write port reaches every sub-bank), so one side holds m regions of K.
        A run-time value (m of the run); ``wmem_depth >= merge_ways * lanes`` makes it >= L.
        """
        m = self.check_merge_ways(merge_ways)
        cap = min(self.imem_depth, self.wmem_depth // m)
        return max(self.lanes, cap // self.lanes * self.lanes)

    def k_splits(self, beats: int, merge_ways=None) -> list[int]:
        """Beats of each K-split of a reduction of ``beats`` L-words (the K-split rule).

        ``ceil(beats / (k_cap / L))`` balanced pieces, the first ``beats % splits`` one beat
        longer; a later split accumulates into OMEM. ``beats = 0`` streams one beat of zeros.
        """
        n = max(1, int(beats))
        cap_w = self.k_cap(merge_ways) // self.lanes
        ns = -(-n // cap_w)
        return [n // ns + (1 if s < n % ns else 0) for s in range(ns)]

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("_checked")
        return d

    def derived(self) -> dict:
        names = ["k_max_limit", "imem_banks", "wmem_banks", "omem_banks", "imem_words",
                 "wmem_words", "w_open", "peak_macs", "imem_addr_bits", "wmem_addr_bits",
                 "omem_addr_bits", "dpu_latency", "sdue_in_latency", "sdue_drain_latency",
                 "sdue_fixed_cycles", "sdue_fixed_wide", "cau_cols_per_cycle", "cau_merge_lanes", "cau_sort_banks",
                 "epre_pipe", "epre_sel_fixed", "epre_run_fixed", "epre_unit_count",
                 "epre_lane_count", "epre_selector_count", "epre_radix_port_count",
                 "epre_radix_bit_count",
                 "epre_shift_adds", "dsc_epre_dims", "dsc_row_max", "dsc_ffnr_dims",
                 "gemm_max_groups"]
        d = {n: getattr(self, n) for n in names}
        d["k_cap"] = self.k_cap()      # a run with all merge_ways; k_cap(m) for fewer
        return d

    @property
    def hash(self) -> str:
        """Short stable hash of every parameter (used in build-cache keys and manifests).
        Fields added later are left out while at their default, so that adding one does not
        change (and rebuild) every existing config (``_HASH_DEFAULTS``)."""
        d = {k: v for k, v in self.to_dict().items()
             if k not in _HASH_DEFAULTS or v != _HASH_DEFAULTS[k]}
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def replace(self, **changes) -> Config:
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - set(self.to_dict())
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(self.to_dict())}")
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, Config] = {
    # The seed's toy model: 8 x 3 array, 8/3/8 banks.
    "toy": Config(name="toy", rows=8, cols=3, lanes=4, width=12, acc_width=32, merge_ways=2,
                  imem_depth=256, wmem_depth=1024, omem_depth=64, k_max=256),
    # The seed's EXION core: 16 x 16 DPUs, IMEM 1.5 KB, WMEM 12 KB, OMEM 384 results per bank.
    "exion16": Config(name="exion16", rows=16, cols=16, lanes=16, width=12, acc_width=36,
                      merge_ways=4, imem_depth=1024, wmem_depth=8192, omem_depth=384,
                      k_max=4608,
                      # EPRE: the smallest provisioning (ECP5 LUTs) whose exposed cycles stay
                      # within 10 % of EP's saving on the DiT-XL/2 block at k = 0.05
                      # (bench/perf_epre.py --selector all, docs/epre.md): 32 x 96 lanes,
                      # 32 radix selectors of 32 ports; 4 threshold bits a pass (issue 19,
                      # 2026-12-07: a quarter of the selection time for +2.3 k LUT4 a
                      # selector, docs/epre.md "Selection")
                      epre_units=32, epre_lanes=96, epre_selectors=32,
                      epre_selector_kind="radix", epre_radix_ports=32, epre_radix_bits=4),
    # FPGA-sized: 8 x 4 DPUs x 4 lanes = 128 12x12 multipliers, inside ECP5-85F's 156
    # MULT18X18D blocks; same memories as toy.
    "fpga": Config(name="fpga", rows=8, cols=4, lanes=4, width=12, acc_width=32, merge_ways=2,
                   imem_depth=256, wmem_depth=1024, omem_depth=64, k_max=256),
}


def load_config(path: str | Path) -> Config:
    """Load a config from a TOML file of top-level keys (optionally ``base = "PRESET"``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None
    base = data.pop("base", None)
    known = set(PRESETS["toy"].to_dict())
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"config file {str(path)!r}: unknown field(s) {', '.join(unknown)}; "
                          f"known fields: {', '.join(sorted(known))}")
    for k, v in data.items():
        if isinstance(v, (dict, list)):
            raise ConfigError(f"config file {str(path)!r}: field {k} must be a single value, "
                              f"got {type(v).__name__}")
    if base is not None:
        if not isinstance(base, str) or base not in PRESETS:
            raise ConfigError(f"config file {str(path)!r}: base = {base!r} is not a preset; "
                              f"presets: {', '.join(PRESETS)}")
        data.setdefault("name", path.stem)
        try:
            return PRESETS[base].replace(**data)
        except ConfigError as e:
            raise ConfigError(f"config file {str(path)!r}: {e}") from None
    missing = [f for f in ("rows", "cols", "lanes") if f not in data]
    if missing:
        raise ConfigError(f"config file {str(path)!r}: missing field(s) {', '.join(missing)} "
                          f"(or give base = \"toy\" / \"exion16\")")
    data.setdefault("name", path.stem)
    try:
        return Config(**data)
    except ConfigError as e:
        raise ConfigError(f"config file {str(path)!r}: {e}") from None
    except TypeError as e:  # wrong kinds of values reaching dataclass init
        raise ConfigError(f"config file {str(path)!r}: {e}") from None


def get_config(name_or_path: str | Path | Config) -> Config:
    """A preset by name, or a config loaded from a TOML file path."""
    if isinstance(name_or_path, Config):
        return name_or_path
    s = str(name_or_path)
    if s in PRESETS:
        return PRESETS[s]
    if s.endswith(".toml") or Path(s).exists():
        return load_config(s)
    raise ConfigError(f"unknown config {s!r}: not a preset ({', '.join(PRESETS)}) "
                      f"and not a TOML file")
