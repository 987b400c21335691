"""Cycle model of the SDUE, CAU and EPRE, with global-buffer fill traffic (SPEC 3.5).

Every timing constant is at the top of this file, named and commented, so that it can be
calibrated against RTL simulation in one place. The SDUE part is the *contract* the RTL
follows; the CAU part is calibrated to ``hw/cau.py`` (exact, ``tests/test_cau.py``); the EPRE
part is calibrated to ``hw/epre.py`` (exact cycle counts, ``tests/test_epre_rtl.py``).

SDUE timing contract
--------------------
* A pass streams ``k_words = ceil(K_eff / L)`` beats; ``K_eff = K`` for a dense reduction,
  or (streamed L-chunks) * L for an input-sparse one (:func:`~exion.golden.conmerge.
  reduction_chunks`).
* A pass occupies the issue stage for ``max(k_words, C)`` cycles: its results drain into OMEM
  one column per cycle per bank (C cycles), overlapped with the next pass; a short pass
  waits for the previous drain.
* ``sdue_cycles = sum_p max(k_p, C) + SDUE_FIXED(cfg)`` with
  ``SDUE_FIXED(cfg) = C + cfg.dpu_latency + cfg.sdue_in_latency + cfg.sdue_drain_latency``
  (last drain, DPU pipeline, address-to-DPU pipeline, OMEM read before write); zero passes
  cost 0 cycles. Exact for hw/sdue.py (tests/test_sdue_rtl.py checks every case).
* K-splits: a pass's reduction must fit one side of IMEM (a row of K elements in one bank,
  ``imem_depth``) and WMEM (m members of K elements in one bank, ``wmem_depth // m``). A
  longer reduction of n beats is split into ``ceil(n / (k_cap / L))`` balanced pieces (the
  first ``n % splits`` one beat longer), each a separate pass accumulating into OMEM. Loop order: row block, then K-split, then
  the block's ConMerge passes. With K <= k_cap the SDUE passes are exactly the plan's passes.

Global-buffer fill (double-buffered IMEM/WMEM)
-----------------------------------------------
* Per (row block, K-split): the IMEM row block, (valid rows) x K_eff elements of W bits,
  charged to the first pass of that (block, split).
* Per pass: the weights of its valid members, (valid members) x K_eff elements of W bits,
  unless the previous pass had exactly the same members and split (reused in WMEM).
* ``fill_p = ceil(bytes_p / cfg.gb_bytes_per_cycle)``. The fill of pass p overlaps the
  compute of pass p-1 (double buffering): ``stall_0 = fill_0`` (nothing to hide it),
  ``stall_p = max(0, fill_p - compute_{p-1})`` with ``compute_p = max(k_p, C)``.
* Bound: ``"memory-bound"`` when the total fill exceeds the total compute, else
  ``"compute-bound"``. OMEM write-back to the global buffer is not modeled (OMEM capacity
  limits are the controller's concern; see docs/golden-conmerge.md).

CAU (calibrated to hw/cau.py; exact, see docs/cau.md)
------------------------------------------------------
Three stages on three consecutive row blocks, joined by ping-pong buffers. LN = the CAU's
``merge_lanes`` (:attr:`Config.cau_merge_lanes`), P = ``cols_per_cycle``. For a block of N columns,
n non-zero columns, S slots and f = min(S, W_open) slots left in the merge window at the end
(slots from the golden merge)::

    read   ceil(N / P) beats                       (P = CAU_COLS_PER_CYCLE by default)
    sort   CAU_SORT_START + CAU_SORT_LOAD          (bin offsets, load of the first stored
           + sum_beats steps(beat)                  beat, then up to LN columns of one
                                                    stored beat per cycle, see below;
                                                    CAU_SORT_START alone if none stored)
    merge  CAU_MERGE_START + CAU_MERGE_LOAD        (fetch, load of the first LN sorted
           + ceil(n / LN) + flush                   columns, LN columns per cycle, window
                                                    flush; CAU_MERGE_START alone if n = 0)

``flush`` (:func:`cau_flush_cycles`) retires the f window slots at most LN per cycle and never
past the end of the pass being assembled (which holds (S - f) mod C slots when the flush
starts). With LN = 1 this is ``2 + n`` / ``2 + n + f``.
``steps(beat)`` (:func:`cau_sort_steps`): the sorted buffer is banked (``cau_sort_banks(LN)``
one-write block RAMs, position p in bank ``p mod banks``); each cycle stage B takes the
beat's pending non-zero columns in lane order, at most LN, and stops at the first one whose
sorted position falls in a bank already written this cycle. Without bank collisions (or
LN = 1) that is ``ceil(nz / LN)`` (nz = the beat's non-zero columns).
``cau_block_cycles`` is the block's steady-state interval, ``max(read, sort, merge)``;
:func:`cau_schedule` gives the exact cycle of every block's stage ends and last pass for a
stream of blocks (input always offered, output always ready). The CAU works one row block
ahead of the SDUE (its output FIFO decouples them):
``overlapped = cau[0] + sum_b max(sdue[b], cau[b+1])``.

EPRE (calibrated to hw/epre.py)
-------------------------------
One run per attention head: U = ``cfg.epre_unit_count`` dot-product units of Le =
``cfg.epre_lane_count`` shift-add lanes (one approximate product per lane per cycle), stage 1
Q then K, stage 2 one row group at a time, then S = ``cfg.epre_selector_count`` selectors
select S query rows at once (two passes over the N_k scores per round). :func:`epre_run_cycles` is exact for the RTL (no back-pressure on its mask output);
:func:`epre_cycles` is ``heads`` runs for a layer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from exion.config import (CAU_COLS_PER_CYCLE, CAU_LANES_DEFAULT_CAP, CAU_LANES_MAX,
                          EPRE_PIPE, GEMM_DESC_DEPTH, GEMM_MAX_REGIONS, cau_sort_banks, EPRE_RUN_FIXED, EPRE_SEL_FIXED, Config)
from exion.config import EPRE_SELECTOR_KINDS
from exion.errors import ExionError

from .conmerge import (ConMergePlan, _check_sort, _check_window, _pack, _sorted_cols,
                       check_mask, conmerge, dense_plan, merge_columns, row_block_chunks)

__all__ = [
    "sdue_fixed", "sdue_cycles", "k_cap", "sdue_pass_list", "GemmCycles",
    "gemm_cycles", "cau_block_cycles", "cau_stage_cycles", "cau_cycles", "cau_schedule",
    "cau_default_lanes", "cau_flush_cycles", "cau_sort_steps", "engine_tiles", "engine_cycles",
    "engine_chunks", "engine_k_chunk", "engine_striped", "stripe_ok", "striped_scan_cycles",
    "engine_plan", "group_mask", "col_group_run", "loader_plan", "imem_loader_estimate",
    "scan_cycles", "row_block_fetch", "engine_regions", "ENGINE_DATAFLOWS",
    "engine_cau_release",
    "epre_cycles", "epre_run_cycles", "epre_phase_cycles", "transformer_block",
    "MODES", "CAU_COLS_PER_CYCLE", "CAU_LANES_DEFAULT_CAP", "CAU_LANES_MAX", "CAU_SORT_START", "CAU_SORT_LOAD",
    "CAU_MERGE_START", "CAU_MERGE_LOAD", "CAU_OUT_LATENCY", "EPRE_PIPE", "EPRE_SEL_FIXED", "EPRE_RUN_FIXED",
]

# ---- SDUE (contract; calibrate against RTL) --------------------------------------------
# The SDUE's fixed cycles come from the config (hw/sdue.py's pipeline): C (last drain),
# cfg.dpu_latency, cfg.sdue_in_latency (memory read + the sdue_pipe registers before the
# DPUs + the sdue_pipe_isw register inside the i_sw) and cfg.sdue_drain_latency (OMEM read
# before the drain's write, + sdue_pipe).
# Build choices that change no cycle and are not modelled: dpu_mult (MULT18X18D or
# inferred) and the FPGA DSP floorplan of exion pnr.

# ---- CAU (calibrated to hw/cau.py: exact, tests/test_cau.py, tests/test_cau_rtl.py) ---
# CAU_COLS_PER_CYCLE, CAU_LANES_DEFAULT_CAP and CAU_LANES_MAX live in exion/config.py (the
# hardware needs them too); the default merge lanes are Config.cau_merge_lanes.
#: Sort stage: one cycle to load the bins' start offsets before the first column.
CAU_SORT_START = 1
#: Sort stage, a block with stored words: one cycle to load the first word into the word
#: register stage (hw.cau_stages.CauSort; the FPGA timing fix of issue 22).
CAU_SORT_LOAD = 1
#: Merge stage: one cycle to fetch the first sorted column (also the whole cost of a block
#: with no non-zero column).
CAU_MERGE_START = 1
#: Merge stage, a block with non-zero columns: one cycle to load the first LN sorted columns
#: into the read register stage (hw.cau_stages.CauMerge; the FPGA timing fix of issue 22).
CAU_MERGE_LOAD = 1
#: From the merge stage's last cycle to the transfer of the block's last pass: the retire
#: register (issue 22), the pass assembler register and the output FIFO (output always
#: ready).
CAU_OUT_LATENCY = 3

# ---- EPRE (calibrated to hw/epre.py; exact, see docs/epre.md) ---------------------------
# EPRE_PIPE, EPRE_SEL_FIXED and EPRE_RUN_FIXED live in exion/config.py (the RTL's drain
# length and state sequence; Config.epre_pipe / epre_sel_fixed / epre_run_fixed).


def sdue_fixed(cfg: Config, wide: bool = False) -> int:
    """Fixed SDUE cycles per run of passes: :attr:`Config.sdue_fixed_cycles`
    (:attr:`Config.sdue_fixed_wide` for a wide run, ``omem_drain``)."""
    return cfg.sdue_fixed_wide if wide else cfg.sdue_fixed_cycles


def sdue_cycles(cfg: Config, k_words_per_pass, wide: bool = False) -> int:
    """``sum_p max(k_p, C) + sdue_fixed(cfg)``; 0 for no pass. ``wide`` (a run whose drain
    writes ``omem_drain`` = D results per bank per cycle): ``sum_p max(k_p, C / D) +
    sdue_fixed(cfg, True)``."""
    k = np.asarray(k_words_per_pass, dtype=np.int64).ravel()
    if k.size == 0:
        return 0
    if np.any(k < 1):
        raise ExionError(f"k_words_per_pass: every pass streams >= 1 beat, got min {k.min()}")
    floor = cfg.pass_period(1, wide)
    return int(np.maximum(k, floor).sum()) + sdue_fixed(cfg, wide)


def k_cap(cfg: Config, merge_ways: int | None = None) -> int:
    """Longest reduction (elements) one pass of a run with m ways holds: :meth:`Config.k_cap`."""
    return cfg.k_cap(merge_ways)


def sdue_pass_list(cfg: Config, plan: ConMergePlan, K: int, input_mask=None) -> dict:
    """The SDUE passes of ``plan`` for a reduction of length K, K-splits expanded.

    Returns arrays (one entry per SDUE pass, in issue order): ``plan_pass`` (index into the
    plan), ``split``, ``k_words``. ``input_mask`` (M, K) marks input elements that may be
    non-zero (input-sparse product); only chunks with a non-zero are streamed.
    """
    if not isinstance(K, (int, np.integer)) or K < 1:
        raise ExionError(f"K = {K!r} must be an integer >= 1")
    L = cfg.lanes
    nb = math.ceil(plan.M / plan.R)
    if input_mask is None:
        words = [np.arange(math.ceil(K / L))] * nb
    else:
        im = check_mask(input_mask, "input_mask", (plan.M, K))
        words = row_block_chunks(cfg, im)
    pp, ss, kw = [], [], []
    rb = plan.row_block.astype(np.int64)
    # passes of each row block, in plan order
    starts = np.searchsorted(rb, np.arange(nb + 1))
    for b in range(nb):
        idx = np.arange(starts[b], starts[b + 1])
        if idx.size == 0:
            continue
        # Config.k_splits: balanced splits; an all-zero input block still streams one beat
        # of zeros (the pass runs to write its outputs)
        for s, kws in enumerate(cfg.k_splits(len(words[b]), plan.merge_ways)):
            pp.append(idx)
            ss.append(np.full(idx.size, s))
            kw.append(np.full(idx.size, kws))
    cat = (lambda x: np.concatenate(x).astype(np.int64) if x else np.zeros(0, np.int64))
    return {"plan_pass": cat(pp), "split": cat(ss), "k_words": cat(kw)}


@dataclass(frozen=True)
class GemmCycles:
    """Cycle figures of one masked GEMM on one config."""

    name: str
    M: int
    N: int
    K: int
    plan_passes: int
    passes: int           # SDUE passes (plan passes x K-splits)
    k_words: int          # total beats streamed
    compute: int          # sum_p max(k_p, C)
    sdue_cycles: int      # compute + fixed
    useful_macs: int
    utilization: float    # useful / (peak * sdue_cycles)
    dense_cycles: int
    speedup: float        # dense_cycles / sdue_cycles
    fill: int             # global-buffer fill cycles
    stall: int
    total_cycles: int     # sdue_cycles + stall
    bound: str            # "compute-bound" / "memory-bound"
    cau_cycles: int       # sum of the CAU's per-block intervals (cau_cycles)
    cau_overlapped: int   # SDUE with the CAU one row block ahead

    def to_dict(self) -> dict:
        return asdict(self)


def _fill(cfg: Config, plan: ConMergePlan, pl: dict) -> np.ndarray:
    """Global-buffer fill cycles per SDUE pass (see the module notes)."""
    L, W = cfg.lanes, cfg.width
    P = pl["plan_pass"].size
    fill = np.zeros(P, dtype=np.int64)
    prev_key = None
    prev_blk = None
    for q in range(P):
        p = int(pl["plan_pass"][q])
        s = int(pl["split"][q])
        k_el = int(pl["k_words"][q]) * L
        blk = (int(plan.row_block[p]), s)
        bits = 0
        if blk != prev_blk:
            bits += int((plan.rows[p] >= 0).sum()) * k_el * W
            prev_blk = blk
        mem = plan.members[p]
        key = (s, mem.tobytes())
        if key != prev_key:
            bits += int((mem >= 0).sum()) * k_el * W
            prev_key = key
        fill[q] = math.ceil(bits / 8 / cfg.gb_bytes_per_cycle)
    return fill


def cau_default_lanes(cfg: Config) -> int:
    """The CAU's default ``merge_lanes`` (LN): :attr:`Config.cau_merge_lanes`.

    A build-time value: a run with fewer ways than ``cfg.merge_ways`` uses the same lanes.
    """
    return cfg.cau_merge_lanes


def cau_flush_cycles(slots: int, window_slots: int, cols: int, merge_lanes: int) -> int:
    """Cycles to retire the f = ``window_slots`` slots left in the window at a block's end.

    At most LN = ``merge_lanes`` per cycle and never past the end of a pass: the pass being
    assembled holds ``(slots - f) mod C`` slots when the flush starts.
    """
    f, C, LN = int(window_slots), int(cols), int(merge_lanes)
    base = (int(slots) - f) % C
    cycles = 0
    while f > 0:
        k = min(f, LN, C - base)
        base = (base + k) % C
        f -= k
        cycles += 1
    return cycles


def cau_block_cycles(cfg: Config, N: int, n_nonzero: int, window_slots: int = 0,
                     cols_per_cycle: int = CAU_COLS_PER_CYCLE, *,
                     merge_lanes: int | None = None, beat_nz=None,
                     slots: int | None = None) -> int:
    """CAU cycles per row block in a stream: ``max(read, sort, merge)`` (module notes).

    ``window_slots``: f, the slots left in the merge window at the end of the block,
    ``min(slots, W_open)`` (0 for a block without non-zero column). ``merge_lanes`` defaults
    to :func:`cau_default_lanes`; with more than one lane, ``beat_nz`` and ``slots`` are
    needed (see :func:`cau_stage_cycles`).
    """
    lanes = cau_default_lanes(cfg) if merge_lanes is None else merge_lanes
    st = cau_stage_cycles(N, n_nonzero, window_slots, cols_per_cycle, merge_lanes=lanes,
                          beat_nz=beat_nz, slots=slots, cols=cfg.cols)
    return max(st.values())


def cau_stage_cycles(N: int, n_nonzero: int, window_slots: int,
                     cols_per_cycle: int = CAU_COLS_PER_CYCLE, *, merge_lanes: int = 1,
                     beat_nz=None, slots: int | None = None,
                     cols: int | None = None, sort_steps=None) -> dict:
    """Cycles of one row block in each CAU stage: ``read``, ``sort``, ``merge``.

    ``sort_steps`` (optional): stage B's cycles per stored beat from
    :func:`cau_sort_steps` (the banked sorted buffer's collisions); without it the sort
    assumes none (``ceil(nz / LN)`` per beat).

    ``merge_lanes`` = LN (1: the single-lane formulas ``2 + n`` and ``2 + n + f``, which
    need nothing else). With LN > 1 the sort needs ``beat_nz`` (the non-zero columns of
    each input beat of the block, zero beats allowed) and the flush needs ``slots`` (S, the
    block's slot count) and ``cols`` (C).
    """
    n, f, LN = int(n_nonzero), int(window_slots), int(merge_lanes)
    if LN < 1:
        raise ExionError(f"cau_stage_cycles: merge_lanes = {merge_lanes!r} must be >= 1")
    read = max(1, math.ceil(N / cols_per_cycle))
    if LN == 1:
        return {"read": read, "sort": CAU_SORT_START + (CAU_SORT_LOAD + n if n else 0),
                "merge": CAU_MERGE_START + (CAU_MERGE_LOAD + n + f if n else 0)}
    if n and (beat_nz is None or slots is None or cols is None):
        raise ExionError(f"cau_stage_cycles: merge_lanes = {LN} needs beat_nz, slots and cols "
                         f"(got beat_nz={'None' if beat_nz is None else '...'}, "
                         f"slots={slots!r}, cols={cols!r})")
    if not n:
        return {"read": read, "sort": CAU_SORT_START, "merge": CAU_MERGE_START}
    nz = np.asarray(beat_nz, dtype=np.int64)
    if int(nz.sum()) != n:
        raise ExionError(f"cau_stage_cycles: beat_nz sums to {int(nz.sum())}, not "
                         f"n_nonzero = {n}")
    if sort_steps is None:
        sort = CAU_SORT_START + CAU_SORT_LOAD + int(((nz + LN - 1) // LN).sum())
    else:
        sort = CAU_SORT_START + CAU_SORT_LOAD + int(np.asarray(sort_steps,
                                                                dtype=np.int64).sum())
    merge = CAU_MERGE_START + CAU_MERGE_LOAD + math.ceil(n / LN) + cau_flush_cycles(slots, f,
                                                                                    cols, LN)
    return {"read": read, "sort": sort, "merge": merge}


def cau_sort_steps(positions, beat_of, merge_lanes: int, banks: int | None = None):
    """Stage B's cycles per beat with the banked sorted buffer (exact, ``hw.cau_stages``).

    ``positions[i]``: sorted position of the block's i-th non-zero column in column order;
    ``beat_of[i]``: its input beat. Per cycle the beat's pending columns are taken in order,
    at most LN = ``merge_lanes``, stopping at the first whose bank (``position mod banks``,
    default ``cau_sort_banks(LN)``) another column took this cycle. Returns a dict beat ->
    cycles (beats without non-zero column absent).
    """
    LN = int(merge_lanes)
    nbk = cau_sort_banks(LN) if banks is None else int(banks)
    steps: dict[int, int] = {}
    i, n = 0, len(positions)
    while i < n:
        beat = int(beat_of[i])
        used: set[int] = set()
        took = 0
        while i < n and int(beat_of[i]) == beat and took < LN:
            bank = int(positions[i]) % nbk
            if bank in used:
                break
            used.add(bank)
            took += 1
            i += 1
        steps[beat] = steps.get(beat, 0) + 1
    return steps


def _cau_blocks(cfg: Config, mask, merge_ways, sort, window, cols_per_cycle,
                lanes: int = 1):
    """Per row block: n (non-zero columns), f (window slots at the end), S (slots) and the
    non-zero columns per input beat, from the golden sort and merge."""
    mask = check_mask(mask)
    m = cfg.check_merge_ways(merge_ways)
    w = _check_window(cfg, window)
    sort = _check_sort(sort)
    R, P = cfg.rows, int(cols_per_cycle)
    N = mask.shape[1]
    nbeats = max(1, math.ceil(N / P))
    out = []
    for b in range(math.ceil(mask.shape[0] / R)):
        blk = mask[b * R:(b + 1) * R]
        cols = _sorted_cols(blk, sort)
        if cols.size == 0:
            out.append({"n": 0, "f": 0, "slots": 0, "beat_nz": np.zeros(nbeats, np.int64)})
            continue
        nzc = np.zeros(nbeats * P, np.int64)
        nzc[:N] = blk.any(axis=0)
        slot, _ = merge_columns(_pack(blk[:, cols]), m, w)
        S = int(slot.max()) + 1
        pos = np.empty(N, np.int64)
        pos[cols] = np.arange(cols.size)
        in_order = np.sort(cols)
        st = cau_sort_steps(pos[in_order], in_order // P, lanes)
        steps = np.zeros(nbeats, np.int64)
        for beat, k in st.items():
            steps[beat] = k
        out.append({"n": int(cols.size), "f": min(S, w), "slots": S,
                    "beat_nz": nzc.reshape(nbeats, P).sum(axis=1), "sort_steps": steps})
    return out


def _cau_lanes(cfg, merge_lanes):
    return cfg.cau_merge_lanes if merge_lanes is None else merge_lanes


def _cau_stages(cfg, N, blocks, cols_per_cycle, lanes):
    return [cau_stage_cycles(N, bl["n"], bl["f"], cols_per_cycle, merge_lanes=lanes,
                             beat_nz=bl["beat_nz"], slots=bl["slots"], cols=cfg.cols,
                             sort_steps=bl.get("sort_steps"))
            for bl in blocks]


def cau_cycles(cfg: Config, mask, merge_ways: int | None = None, sort: str = "popcount",
               window: int | None = None,
               cols_per_cycle: int = CAU_COLS_PER_CYCLE, *,
               merge_lanes: int | None = None) -> np.ndarray:
    """CAU cycles per row block of an output mask (``max(read, sort, merge)`` of each
    block; ``merge_lanes`` defaults to :func:`cau_default_lanes`)."""
    N = check_mask(mask).shape[1]
    lanes = _cau_lanes(cfg, merge_lanes)
    blocks = _cau_blocks(cfg, mask, merge_ways, sort, window, cols_per_cycle, lanes)
    return np.asarray([max(s.values()) for s in _cau_stages(cfg, N, blocks, cols_per_cycle,
                                                             lanes)], dtype=np.int64)


def cau_schedule(cfg: Config, mask, merge_ways: int | None = None, sort: str = "popcount",
                 window: int | None = None,
                 cols_per_cycle: int = CAU_COLS_PER_CYCLE, *,
                 merge_lanes: int | None = None) -> dict:
    """Exact CAU timing of a whole mask streamed through ``hw.cau.CAU`` from idle.

    The CAU is generated with ``cols_per_cycle`` and ``merge_lanes`` (default
    :func:`cau_default_lanes`, as ``hw.cau.CAU``). Input beats offered every cycle from cycle
    0, output always ready. Stage hand-offs through the ping-pong buffers take one cycle (a
    flag register). Returns per block (arrays): ``read``, ``sort``, ``merge`` (stage cycles),
    ``read_end``, ``sort_end``, ``merge_end`` (cycle of the stage's last cycle), ``done``
    (cycles from the start until the block's last pass has been taken, -1 for a block without
    pass), and ``total`` (cycles until the CAU is idle again), plus ``interval`` =
    :func:`cau_cycles`.
    """
    N = check_mask(mask).shape[1]
    lanes = _cau_lanes(cfg, merge_lanes)
    blocks = _cau_blocks(cfg, mask, merge_ways, sort, window, cols_per_cycle, lanes)
    nb = len(blocks)
    st = _cau_stages(cfg, N, blocks, cols_per_cycle, lanes)
    a_end, b_end, c_end, c_rel = ([0] * nb for _ in range(4))
    done = [-1] * nb
    for b, (bl, s) in enumerate(zip(blocks, st)):
        n = bl["n"]
        a0 = max(a_end[b - 1] + 1 if b else 0, b_end[b - 2] + 1 if b >= 2 else 0)
        a_end[b] = a0 + s["read"] - 1
        b0 = max(a_end[b] + 1, b_end[b - 1] + 1 if b else 0,
                 c_rel[b - 2] + 1 if b >= 2 else 0)
        b_end[b] = b0 + s["sort"] - CAU_SORT_START
        c0 = max(b_end[b] + 1, c_end[b - 1] + 1 if b else 0)
        c_end[b] = c0 + s["merge"] - CAU_MERGE_START
        c_rel[b] = c0 + (CAU_MERGE_LOAD + math.ceil(n / lanes) if n else 0)
        if n:
            done[b] = c_end[b] + CAU_OUT_LATENCY + 1
    last = max([d for d in done if d >= 0], default=0)
    total = max(last, c_end[-1] + 1 if nb else 0)
    arr = (lambda x: np.asarray(x, dtype=np.int64))
    return {"read": arr([s["read"] for s in st]), "sort": arr([s["sort"] for s in st]),
            "merge": arr([s["merge"] for s in st]), "read_end": arr(a_end),
            "sort_end": arr(b_end), "merge_end": arr(c_end), "done": arr(done),
            "total": int(total), "merge_lanes": lanes,
            "interval": arr([max(s.values()) for s in st])}


def gemm_cycles(cfg: Config, K: int, plan: ConMergePlan, mask=None, input_mask=None,
                name: str = "gemm") -> GemmCycles:
    """Cycles of one masked GEMM executed with ``plan`` (SDUE contract + memory + CAU).

    ``mask``: the (M, N) output mask the plan was made for (None = dense / all ones);
    ``input_mask``: (M, K) non-zero pattern of the input for an input-sparse product.
    Useful MACs: per computed output, the number of its row's possibly non-zero inputs
    (K for a dense input).
    """
    M, N = plan.M, plan.N
    pl = sdue_pass_list(cfg, plan, K, input_mask)
    kw = pl["k_words"]
    compute_p = np.maximum(kw, cfg.cols)
    sc = sdue_cycles(cfg, kw)
    omask = np.ones((M, N), bool) if mask is None else check_mask(mask, "mask", (M, N))
    if input_mask is None:
        useful = int(omask.sum()) * K
    else:
        nnz_row = check_mask(input_mask, "input_mask", (M, K)).sum(axis=1).astype(np.int64)
        useful = int((omask.sum(axis=1).astype(np.int64) * nnz_row).sum())
    dplan = dense_plan(cfg, M, N)
    dc = sdue_cycles(cfg, sdue_pass_list(cfg, dplan, K)["k_words"])
    fill = _fill(cfg, plan, pl)
    stall = fill.copy()
    if fill.size > 1:
        stall[1:] = np.maximum(0, fill[1:] - compute_p[:-1])
    # CAU: only for ConMerge plans
    if plan.kind == "conmerge" and plan.n_passes:
        cau_b = cau_cycles(cfg, omask, plan.merge_ways, plan.sort, plan.window)
        rb = pl["plan_pass"]
        blk = plan.row_block[rb].astype(np.int64) if rb.size else rb
        sdue_b = np.bincount(blk, weights=compute_p, minlength=cau_b.size).astype(np.int64)
        ov = int(cau_b[0]) + int(np.maximum(sdue_b[:-1], cau_b[1:]).sum()) + int(sdue_b[-1])
        ov += sdue_fixed(cfg)
        cau_total = int(cau_b.sum())
    else:
        cau_total, ov = 0, sc
    peak = cfg.peak_macs
    return GemmCycles(
        name=name, M=M, N=N, K=K, plan_passes=plan.n_passes, passes=int(kw.size),
        k_words=int(kw.sum()), compute=int(compute_p.sum()), sdue_cycles=sc,
        useful_macs=useful, utilization=useful / (peak * sc) if sc else 0.0,
        dense_cycles=dc, speedup=dc / sc if sc else math.inf,
        fill=int(fill.sum()), stall=int(stall.sum()), total_cycles=sc + int(stall.sum()),
        bound="memory-bound" if fill.sum() > compute_p.sum() else "compute-bound",
        cau_cycles=cau_total, cau_overlapped=ov)


# ---- EPRE ------------------------------------------------------------------------------
def epre_run_cycles(cfg: Config, n_q: int, n_k: int, d: int, d_head: int,
                    units: int | None = None, lanes: int | None = None,
                    selectors: int | None = None, kind: str | None = None,
                    ports: int | None = None, k_given: bool = False) -> int:
    """Busy cycles of one EPRE run (one attention head), exactly as ``hw/epre.py`` counts them.

    U = ``units`` (default ``cfg.epre_unit_count``) dot-product units of Le =
    ``cfg.epre_lane_count`` shift-add lanes, S = ``cfg.epre_selector_count`` selectors of
    kind ``cfg.epre_selector_kind`` (P = ``cfg.epre_radix_port_count`` ports for ``radix``);
    ``G = ceil(rows / U)``, ``rows_g`` the query rows of group g (``lanes`` / ``selectors`` /
    ``kind`` / ``ports`` override Le / S / the kind / P, as ``units`` overrides U: an EPRE
    generated with other sizes, e.g. the DSC's, which is always ``insertion``)::

        stage 1   (Gq + Gk) * d_head * ceil(d / Le) + 2 * EPRE_PIPE
        stage 2   Gq * (N_k * ceil(d_head / Le) + EPRE_PIPE)
        select    insertion, S < U:  sum_g ceil(rows_g / S) * (2 * N_k + EPRE_SEL_FIXED - 1) + N_q
                  insertion, S = U:  Gq * (N_k + EPRE_SEL_FIXED - 3) + N_q   (streamed insertion)
                  radix (S = U):     Gq * epre_radix_select_cycles(N_k, P) + N_q
        + EPRE_RUN_FIXED

    (no back-pressure on the mask output; S = 1 gives ``N_q * (2 N_k + EPRE_SEL_FIXED)``).
    ``k_given`` (the run's exact-keys flag, ``golden.predict.eager_predict(k_exact=...)``):
    stage 1 is ``Gq * d_head * ceil(d / Le) + EPRE_PIPE`` (the query side only, one drain).
    With S = U every unit has its selector, which inserts the unit's scores as stage 2
    produces them, so a row group pays only the threshold latch, one mask pass over the
    score buffer, its tail and one output cycle per row. The radix selectors of a row group
    run in lockstep (one shared read of the P-bank score buffer per cycle): a row group pays
    one radix search (ceil(A / b) digit passes and the mask pass over ``ceil(N_k / P)``
    words), then one output cycle per row.
    """
    u = cfg.epre_unit_count if units is None else units
    for nm, v in (("n_q", n_q), ("n_k", n_k), ("d", d), ("d_head", d_head), ("units", u)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ExionError(f"epre_run_cycles: {nm} = {v!r} must be an integer >= 1")
    p = epre_phase_cycles(cfg, n_q, n_k, d, d_head, u, lanes, selectors, kind, ports, k_given)
    return p["stage1"] + p["stage2"] + p["select"] + EPRE_RUN_FIXED


def epre_phase_cycles(cfg: Config, n_q: int, n_k: int, d: int, d_head: int,
                      units: int | None = None, lanes: int | None = None,
                      selectors: int | None = None, kind: str | None = None,
                      ports: int | None = None, k_given: bool = False) -> dict:
    """The three phase terms of :func:`epre_run_cycles` (without ``EPRE_RUN_FIXED``);
    ``lanes`` / ``selectors`` / ``kind`` / ``ports`` override the config's (provisioning
    sweeps; ``kind = "radix"`` implies S = U); ``k_given``: exact keys (no key groups)."""
    u = cfg.epre_unit_count if units is None else units
    L = cfg.epre_lane_count if lanes is None else lanes
    S = min(u, cfg.epre_selector_count if selectors is None else selectors)
    kind = cfg.epre_selector_kind if kind is None else kind
    if kind not in EPRE_SELECTOR_KINDS:
        raise ExionError(f"epre_phase_cycles: kind = {kind!r} must be one of "
                         f"{', '.join(repr(k) for k in EPRE_SELECTOR_KINDS)}")
    if kind == "radix" and S != u:
        raise ExionError(f"epre_phase_cycles: the radix kind has one selector per unit, got "
                         f"selectors = {S} for units = {u}")
    gq, gk = math.ceil(n_q / u), math.ceil(n_k / u)
    s1 = (gq + (0 if k_given else gk)) * d_head * math.ceil(d / L) \
        + (1 if k_given else 2) * EPRE_PIPE
    s2 = gq * (n_k * math.ceil(d_head / L) + EPRE_PIPE)
    if kind == "radix":     # S = U lockstep radix searches per row group, then the outputs
        P = cfg.epre_radix_port_count if ports is None else ports
        sel = gq * epre_radix_select_cycles(cfg, n_k, P) + n_q
    elif S == u:    # streamed: insertion rides on stage 2; threshold, mask pass, tail
        sel = gq * (n_k + EPRE_SEL_FIXED - 3) + n_q
    else:           # rounds of S rows: start, insertion pass, tail, threshold, mask pass, tail
        rounds = (n_q // u) * math.ceil(u / S) + math.ceil((n_q % u) / S)
        sel = rounds * (2 * n_k + EPRE_SEL_FIXED - 1) + n_q
    return {"stage1": s1, "stage2": s2, "select": sel}


def epre_cycles(cfg: Config, T: int, d: int, heads: int, d_head: int,
                units: int | None = None) -> dict:
    """EPRE cycles of eager prediction for one attention layer: one run per head."""
    p = epre_phase_cycles(cfg, T, T, d, d_head, units)
    out = {k: heads * v for k, v in p.items()}
    out["total"] = heads * epre_run_cycles(cfg, T, T, d, d_head, units)
    return out


def epre_radix_select_cycles(cfg: Config, n_k: int, ports: int,
                             bits: int | None = None) -> int:
    """Cycles of one row's selection by ``hw.epre_radix.EpreRadixSelector`` (issue 18,
    ``epre_selector_kind = "radix"``), from its ``go`` cycle to its ``done`` cycle
    inclusive: one pass per digit of ``bits`` b bits (``cfg.epre_radix_bit_count`` by
    default; G = ceil(A / b) digits, A = ``cfg.acc_width``) over ``ceil(N_k / P)`` buffer
    words plus its tail and decision, then the mask pass and its tail:
    ``G * (ceil(N_k / P) + 2) + ceil(N_k / P) + 3``."""
    bits = cfg.epre_radix_bit_count if bits is None else bits
    for nm, v in (("n_k", n_k), ("ports", ports), ("bits", bits)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ExionError(f"epre_radix_select_cycles: {nm} = {v!r} must be an integer >= 1")
    nw = math.ceil(n_k / ports)
    return math.ceil(cfg.acc_width / bits) * (nw + 2) + nw + 3


# ---- transformer block -----------------------------------------------------------------
MODES = ("Base", "EP", "FFNR", "All")


def _rows_needed(skip, heads, T, name):
    if skip is None:
        return np.ones((heads, T), bool)
    s = np.asarray(skip)
    if s.dtype.kind != "b":
        raise ExionError(f"{name}: expected a boolean array, got dtype {s.dtype}")
    if s.shape == (T,):
        s = np.broadcast_to(s, (heads, T))
    if s.shape != (heads, T):
        raise ExionError(f"{name}: shape {s.shape}, expected ({T},) or ({heads}, {T})")
    return ~s


def _proj_mask(need_ht, d_head):
    """(T, heads*d_head) output mask of a projection from per-head needed rows."""
    return np.repeat(need_ht.T, d_head, axis=1)


def _compact(mask_rows_needed):
    """Row compaction: keep rows with any needed output (the i_sw picks rows)."""
    return np.flatnonzero(mask_rows_needed)


def _gemm(cfg, name, K, M, N, mask=None, input_mask=None, merge_ways=None):
    """One GEMM: dense tiling when there is no mask or it is all ones, else ConMerge."""
    if mask is None or mask.all():
        plan = dense_plan(cfg, M, N)
        mask = None
    else:
        plan = conmerge(cfg, mask, merge_ways=merge_ways)
    return gemm_cycles(cfg, K, plan, mask=mask, input_mask=input_mask, name=name)


def transformer_block(cfg: Config, T: int, d: int, heads: int, d_head: int | None = None,
                      ffn: int | None = None, *, ffn_mask=None, score_mask=None,
                      skip_q=None, skip_k=None, skip_v=None, merge_ways=None,
                      memory: bool = False) -> dict:
    """Per-GEMM cycles and totals of one transformer block in modes Base / EP / FFNR / All.

    Shapes: T tokens, model width d, ``heads`` heads of ``d_head`` (default d // heads),
    FFN width ``ffn`` (default 4d). GEMMs: q/k/v projections (T x d x d), per-head scores
    (T x d_head x T) and P.V (T x T x d_head), output projection, FC1 (T x d x ffn), FC2
    (T x ffn x d).

    Masks (boolean, produced elsewhere): ``ffn_mask`` (T, ffn) FFN-Reuse FC1 output mask,
    also FC2's input non-zero pattern (delta mode); ``score_mask`` (heads, T, T) or (T, T)
    eager-prediction score mask; ``skip_q`` / ``skip_k`` / ``skip_v`` (T,) or (heads, T)
    rows whose projection is skipped (dominant queries, unneeded keys).

    EP: projections are output-masked per head (rows skipped by all heads are compacted
    away), scores use ConMerge on ``score_mask`` minus skipped-query rows, P.V is
    input-sparse (P non-zero only where the score mask is) with the skipped-query rows
    compacted away, and the EPRE's cycles are added. FFNR: FC1 uses ConMerge on
    ``ffn_mask`` and FC2 streams only the non-zero chunks of its input. All: both.
    ``memory``: add global-buffer stall cycles to the totals.
    Returns ``{"modes": {mode: {"gemms": [...], "total": cycles, "speedup": x}}, ...}``.
    """
    d_head = d // heads if d_head is None else d_head
    ffn = 4 * d if ffn is None else ffn
    for nm, v in (("T", T), ("d", d), ("heads", heads), ("d_head", d_head), ("ffn", ffn)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ExionError(f"transformer_block: {nm} = {v!r} must be an integer >= 1")
    hd = heads * d_head
    if ffn_mask is not None:
        ffn_mask = check_mask(ffn_mask, "ffn_mask", (T, ffn))
    if score_mask is not None:
        sm = np.asarray(score_mask)
        if sm.ndim == 2:
            sm = np.broadcast_to(sm, (heads,) + sm.shape)
        if sm.shape != (heads, T, T) or sm.dtype.kind != "b":
            raise ExionError(f"score_mask: expected a boolean ({heads}, {T}, {T}) or "
                             f"({T}, {T}) array, got {sm.dtype} {sm.shape}")
        score_mask = sm
    need_q = _rows_needed(skip_q, heads, T, "skip_q")
    need_k = _rows_needed(skip_k, heads, T, "skip_k")
    need_v = _rows_needed(skip_v, heads, T, "skip_v")

    def block(ep: bool, ffnr: bool):
        g = []
        for nm, need in (("q_proj", need_q), ("k_proj", need_k), ("v_proj", need_v)):
            if ep and not need.all():
                pm = _proj_mask(need, d_head)
                keep = _compact(pm.any(axis=1))
                g.append(_gemm(cfg, nm, d, keep.size, hd, mask=pm[keep],
                               merge_ways=merge_ways))
            else:
                g.append(_gemm(cfg, nm, d, T, hd))
        for h in range(heads):
            if ep and score_mask is not None:
                sm_h = score_mask[h] & need_q[h][:, None]
                keep = _compact(sm_h.any(axis=1))
                g.append(_gemm(cfg, f"scores[{h}]", d_head, keep.size, T, mask=sm_h[keep],
                               merge_ways=merge_ways))
                g.append(_gemm(cfg, f"pv[{h}]", T, keep.size, d_head, input_mask=sm_h[keep]))
            else:
                g.append(_gemm(cfg, f"scores[{h}]", d_head, T, T))
                g.append(_gemm(cfg, f"pv[{h}]", T, T, d_head))
        g.append(_gemm(cfg, "o_proj", hd, T, d))
        if ffnr and ffn_mask is not None:
            g.append(_gemm(cfg, "fc1", d, T, ffn, mask=ffn_mask, merge_ways=merge_ways))
            g.append(_gemm(cfg, "fc2", ffn, T, d, input_mask=ffn_mask))
        else:
            g.append(_gemm(cfg, "fc1", d, T, ffn))
            g.append(_gemm(cfg, "fc2", ffn, T, d))
        sdue = sum(x.sdue_cycles for x in g)
        stall = sum(x.stall for x in g)
        epre = epre_cycles(cfg, T, d, heads, d_head)["total"] if ep else 0
        total = sdue + epre + (stall if memory else 0)
        return {"gemms": [x.to_dict() for x in g], "sdue_cycles": sdue, "epre_cycles": epre,
                "stall_cycles": stall, "total": total,
                "useful_macs": sum(x.useful_macs for x in g)}

    res = {"Base": block(False, False), "EP": block(True, False),
           "FFNR": block(False, True), "All": block(True, True)}
    base = res["Base"]["total"]
    for v in res.values():
        v["speedup"] = base / v["total"] if v["total"] else math.inf
        v["utilization"] = v["useful_macs"] / (cfg.peak_macs * v["total"]) if v["total"] else 0.0
    return {"config": cfg.name, "T": T, "d": d, "heads": heads, "d_head": d_head, "ffn": ffn,
            "memory": memory, "modes": res}


# ---- the gemm engine (hw/gemm.py), per run ("tile") --------------------------------------
#: Engine dataflows (``hw.gemm.DATAFLOWS``; ``flow.col_group`` 0 / 1).
ENGINE_DATAFLOWS = ("row-block", "col-group")
#: col-group: cycles from the CAU's last mask read of a group (``cau_schedule`` read_end
#: of its last block) to its first scan cycle (the snoop's group counter, then the scan's
#: start register).
ENGINE_SCAN_START = 2
#: col-group: cycles from the end of a group's scan (the cycle after its last) to the first
#: cycle its passes may go to the SDUE: the GMEM read address register, then the WMEM write
#: of the last word (issue 22: ``hw.gemm`` registers the scan's GMEM address), then the done
#: pulse.
ENGINE_SCAN_RELEASE = 2
#: col-group: cycles from the CAU idle (``cau_schedule`` total), or from a block's
#: ``done``, to the cycle the engine counts the group's passes as all queued.
ENGINE_CAU_RELEASE = 1
#: row-block: cycles from a block's ``cau_schedule`` done (its last pass handed over) to the
#: first cycle the fetch may take the block's passes (the pass queue's write, its output
#: register; the engine's complete-block counter is timed to match).
ENGINE_BLOCK_RELEASE = 1
#: col-group: group g's scan waits for group g - 2's passes (the WMEM half it refills);
#: False only in the mutation test that shows the rule is measured.
ENGINE_HALF_RULE = True
#: Busy cycles before ``cau_schedule``'s cycle 0 (the first beat is taken while idle).
ENGINE_ORIGIN = 0


def engine_block_release(cfg: Config, row_block) -> np.ndarray:
    """Per pass (``row_block``: each pass's block, in queue order): cycles from its block's
    ``cau_schedule`` done to the first cycle the engine may take it: ``ENGINE_BLOCK_RELEASE``,
    one more for every pass with ``gemm_pq_in_reg`` (a register stage in front of the
    queue, issue 22: each pass, and so the block's completion, reaches the queue a cycle
    later), and one more for a block's last pass with ``gemm_pq_reg`` (the queue's head in
    fabric registers, issue 22: the pass written at ``done`` reaches that stage a cycle after
    the queue's output; a block's earlier passes are there by then)."""
    rb = np.asarray(row_block, np.int64)
    last = np.ones(rb.size, bool)
    last[:-1] = rb[1:] != rb[:-1]
    return (ENGINE_BLOCK_RELEASE + int(bool(cfg.gemm_pq_in_reg))
            + (last & bool(cfg.gemm_pq_reg)).astype(np.int64))


def engine_cau_release(cfg: Config) -> int:
    """col-group: cycles from the CAU idle (``cau_schedule`` total), or from a block's
    ``done``, to the cycle the engine counts the group's passes as all queued:
    ``ENGINE_CAU_RELEASE``, one more with ``gemm_pq_in_reg`` (the last pass waits a cycle in
    the stage in front of the queue, which also holds the engine's view of the CAU busy)."""
    return ENGINE_CAU_RELEASE + int(bool(cfg.gemm_pq_in_reg))


def engine_chunks(cfg: Config, K: int, k_chunk: int | None = None) -> list:
    """The K-splits of the engine's host tiling: ``[(k0, kwords)]``, word offset and L-words
    of each piece of a reduction of K elements (``kw = ceil(K / L)`` words).

    ``k_chunk`` = None: the fewest pieces one IMEM side pair holds (``2 * imem_words`` words
    each; one piece whenever K fits, the engine before K-splits); an integer c: the fewest
    pieces of at most c words. Pieces are balanced, the first ``kw % s`` one word longer
    (as ``Config.k_splits``). Every piece is a run of its own over the same rows and
    columns; the first uses the product's ``accumulate``, the later ones add into the
    OMEM the earlier left (``accumulate`` = 1, OMEM kept), which is exact because OMEM
    wraps at A bits like the golden ``masked_gemm`` [choice, issue 17: K-splits]."""
    L = cfg.lanes
    kw = max(1, math.ceil(K / L))
    cap = 2 * cfg.imem_words
    if k_chunk is None:
        c = cap
    else:
        if not isinstance(k_chunk, (int, np.integer)) or isinstance(k_chunk, bool) \
                or not 1 <= k_chunk <= cap:
            raise ExionError(f"gemm engine: k_chunk = {k_chunk!r} must be an integer in "
                             f"1..{cap} (L-words per K-split; IMEM holds {cap} per row)")
        c = int(k_chunk)
    s = -(-kw // c)
    sizes = [kw // s + (1 if i < kw % s else 0) for i in range(s)]
    return [(sum(sizes[:i]), w) for i, w in enumerate(sizes)]


def engine_plan(cfg: Config, M: int, N: int, K: int, dataflow: str = "row-block", *,
                double_buffer: bool = True, group_cols: int | None = None,
                k_chunk: int | None = None, striped: bool = False) -> list:
    """The runs (tiles) the host driver cuts a product into, as dicts ``b0``, ``blocks``,
    ``c0``, ``ncols``, ``gcols`` (col-group columns per group; ``ncols`` = one group),
    ``k0``, ``kwords`` (the run's K-split, :func:`engine_chunks` with ``k_chunk``; the
    shapes below use the longest piece's ``kwords``). Order: column range, row range,
    K-split (the K-splits of one (rows, columns) tile run back to back on the same OMEM).

    row-block: column groups of ``omem_depth``, then as many row blocks as IMEM and OMEM
    hold. col-group, single-buffered (``double_buffer=False``, or a column longer than a
    WMEM half): a tile is one column group (``ncols * kwords <= 2 * wmem_words``) against
    as many row blocks as IMEM holds (``blocks * ncols <= omem_depth``; ``group_cols``
    caps the group). col-group,
    double-buffered (default): a tile is as many row blocks as IMEM holds against as many
    columns as OMEM holds for them, in groups of ``gcols = wmem_words // kwords`` columns
    (one WMEM half each; ``group_cols`` caps it), at most ``cfg.gemm_max_groups`` groups.
    ``striped`` (col-group, the striped WMEM map): a bank holds every C-th column, so a
    group may be C times wider; double-buffered, a group is one stripe of C columns unless
    ``group_cols`` says otherwise (its scan is then short and overlaps the previous group's
    passes: exion16, dense 256 x 1152 x 1152 at 64 B/cycle, 119,616 cycles against 161,088
    with one 48-column group a run).
    """
    if dataflow not in ENGINE_DATAFLOWS:
        raise ExionError(f"dataflow {dataflow!r} is not one of {', '.join(ENGINE_DATAFLOWS)}")
    R = cfg.rows
    chunks = engine_chunks(cfg, K, k_chunk)
    kw = max(w for _, w in chunks)
    if group_cols is not None and (not isinstance(group_cols, (int, np.integer))
                                   or group_cols < 1):
        raise ExionError(f"gemm engine: group_cols = {group_cols!r} must be an integer >= 1")
    nblk = math.ceil(M / R)
    wide = cfg.cols if striped and dataflow == "col-group" else 1
    half = cfg.wmem_words // kw * wide
    if dataflow == "col-group" and double_buffer and half >= 1:
        tb = max(1, min(nblk, 2 * cfg.imem_words // kw))
        # striped: one stripe (C columns) a group by default, so each group's short scan
        # overlaps the previous group's passes [choice, issue 17]
        dflt = cfg.cols if wide > 1 else half
        gc = dflt if group_cols is None else min(half, int(group_cols))
        ng = min(N, max(1, cfg.omem_depth // tb), gc * cfg.gemm_max_groups)
        tb = max(1, min(tb, cfg.omem_depth // ng))
    elif dataflow == "col-group":
        tb = max(1, min(nblk, 2 * cfg.imem_words // kw))
        ng = min(N, max(1, cfg.omem_depth // tb), 2 * cfg.wmem_words // kw * wide,
                 N if group_cols is None else int(group_cols))
        tb = max(1, min(tb, cfg.omem_depth // ng))
        gc = ng
    else:
        ng = min(N, cfg.omem_depth)
        tb = max(1, min(2 * cfg.imem_words // kw, cfg.omem_depth // ng))
        gc = ng
    return [{"b0": b0, "blocks": min(tb, nblk - b0), "c0": c0, "ncols": min(ng, N - c0),
             "gcols": min(gc, ng, N - c0), "k0": k0, "kwords": w}
            for c0 in range(0, N, ng) for b0 in range(0, nblk, tb) for k0, w in chunks]


def engine_tiles(cfg: Config, M: int, N: int, K: int, dataflow: str = "row-block", *,
                 double_buffer: bool = True, k_chunk: int | None = None) -> list:
    """:func:`engine_plan` as ``(b0, blocks, c0, ncols)`` tuples (one per run: a tile of
    several K-splits appears once per split)."""
    return [(t["b0"], t["blocks"], t["c0"], t["ncols"])
            for t in engine_plan(cfg, M, N, K, dataflow, double_buffer=double_buffer,
                                 k_chunk=k_chunk)]


def group_mask(cfg: Config, sub, blocks: int, gcols: int) -> np.ndarray:
    """The mask a col-group run streams into the CAU: group by group, each group's row
    blocks (``R`` rows, zero-padded) over ``gcols`` columns (the last group zero-padded),
    stacked as one ``(groups * blocks * R, gcols)`` mask (row block ``g * blocks + b``)."""
    R = cfg.rows
    rows, ncols = sub.shape
    groups = -(-ncols // gcols)
    out = np.zeros((groups * blocks * R, gcols), bool)
    for g in range(groups):
        part = sub[:, g * gcols:(g + 1) * gcols]
        out[g * blocks * R:g * blocks * R + rows, :part.shape[1]] = part
    return out


def col_group_run(cfg: Config, sub, kw: int, gcols: int, blocks: int, *, gb_bytes: int = 0,
                  merge_ways: int | None = None, sort: str = "popcount",
                  cols_per_cycle: int = CAU_COLS_PER_CYCLE, striped: bool = False) -> dict:
    """Exact timing of one col-group run (``hw.gemm``, double-buffered across groups).

    Choices (docs/choices.md, "col-group double-buffered"): groups of ``wmem_words //
    kwords`` columns in alternating WMEM halves; the mask streamed group by group, each
    group's row blocks one CAU block (the last group zero-padded); a group's scan waits for
    the passes of the group two before it; a pass leaves once its group is resident and its
    row block complete in the queue. With ``gather`` (FC2's W2 rows) the scan's timing is
    the same at the gathered ``kw``.

    Per group g (``ngroups = ceil(ncols / gcols)``; stacked mask :func:`group_mask`, CAU
    schedule of it, ``v = g * blocks + b``):

    * scan start ``S_g = max(read_end[last v of g] + ENGINE_SCAN_START (+ 1 with
      gemm_snoop_reg), S_{g-1} + scan_{g-1} + 1, F_{g-2} + 1)`` (+ 1 with
      ``gemm_scan_reg``: the start tests decided into a register, a cycle ahead): the
      group's mask is in, the scanner is free, and the WMEM half
      is free: ``F_h = max(X_h, A_q + per + 1)`` with q the last pass of groups <= h (it
      issues its last beat at ``A_q + per``, the engine counts it the cycle after) and
      ``X_h`` = the first cycle the engine knows group h's passes are all queued
      (``min(done[v] + cr`` over blocks from h's last on, ``CAU total + cr)``, ``cr`` =
      :func:`engine_cau_release`: 1, 2 with ``gemm_pq_in_reg``);
    * its columns are resident at ``S_g + scan_g + ENGINE_SCAN_RELEASE`` (2: the GMEM
      address register, then the WMEM write; :func:`scan_cycles`, credit from 0);
    * the SDUE takes pass p at ``A_p = max(max(resident(g_p), done[v_p] + rel_p) + d,
      A_{p-1} + per)``, ``rel_p`` = :func:`engine_block_release` (``ENGINE_BLOCK_RELEASE``,
      + 1 with ``gemm_pq_in_reg``, + 1 for a block's last pass with ``gemm_pq_reg``), ``d``
      = 1 with ``gemm_desc_reg`` (the descriptor register in front of the SDUE), else 0,
      ``per`` = :meth:`Config.pass_period`
      (``max(kw, C)``; ``C / D`` for C on a striped run with ``omem_drain`` D, whose drain
      is wide [choice, issue 17]);
    * ``cycles = max(A_last + per + sdue_fixed(cfg, striped), S_last + scan_last
      + ENGINE_SCAN_RELEASE - 1, CAU total - 1)``;
    * ``tail``: cycles of the SDUE's final drain (after ``A_last + per``) in which a scan
      (of trailing empty groups) or the CAU was still working: the stall counter counts
      them (issue idle, work pending), so ``stall = cycles - compute + tail``.

    ``striped`` (the striped WMEM map, :func:`stripe_ok` must hold): ``scan_g`` is
    :func:`striped_scan_cycles` of the group's columns (every column moved, a stripe of C
    per step) and the scan does not wait for the group's mask (``read_end`` term replaced
    by ``ENGINE_SCAN_START``: the first beat is in at cycle 0); the rest as above
    [choice, issue 17].
    """
    m = cfg.check_merge_ways(merge_ways)
    wbits = cfg.lanes * cfg.width
    ncols = sub.shape[1]
    groups = -(-ncols // gcols)
    stack = group_mask(cfg, sub, blocks, gcols)
    plan = conmerge(cfg, stack, sort=sort, merge_ways=m)
    sch = cau_schedule(cfg, stack, merge_ways=m, sort=sort, cols_per_cycle=cols_per_cycle)
    done, total = sch["done"], int(sch["total"])
    per = cfg.pass_period(kw, striped)          # a striped run drains wide (omem_drain)
    pgroup = np.asarray(plan.row_block, np.int64) // blocks
    A = np.zeros(plan.n_passes, np.int64)
    S = [0] * groups
    scan = [0] * groups
    words = steps = 0
    rel = engine_block_release(cfg, plan.row_block)
    # gemm_desc_reg: the descriptor register in front of the SDUE, one cycle from the take
    # to the SDUE's accept (full rate: it loads again in the cycle the SDUE takes it)
    issue_delay = int(bool(cfg.gemm_desc_reg))
    s0 = ENGINE_SCAN_START + int(bool(cfg.gemm_snoop_reg))   # + the snoop's beat register
    late = int(bool(cfg.gemm_scan_reg))    # the start tests decided a cycle ahead
    p = 0
    for g in range(groups):
        need = sub[:, g * gcols:(g + 1) * gcols].any(axis=0)
        if striped:       # every column of the group, a stripe of C per step
            words += need.size * kw
            scan[g] = striped_scan_cycles(cfg, need.size, kw, gb_bytes)
            steps += striped_scan_cycles(cfg, need.size, kw, 0)
        else:
            words += int(need.sum()) * kw
            scan[g] = scan_cycles(need, kw, gb_bytes, wbits)
            steps += scan_cycles(need, kw, 0, wbits)
        lastv = g * blocks + blocks - 1
        # striped: every column moves, so the scan does not wait for the group's mask
        s = s0 if striped else int(sch["read_end"][lastv]) + s0
        if g:
            s = max(s, S[g - 1] + scan[g - 1] + 1)
        if g >= 2 and ENGINE_HALF_RULE:
            h = g - 2
            cr = engine_cau_release(cfg)
            later = [int(d) + cr for d in done[(h + 1) * blocks - 1:] if d >= 0]
            free = min(later + [total + cr])
            q = np.flatnonzero(pgroup <= h)
            if q.size:
                free = max(free, int(A[q[-1]]) + per + 1)
            s = max(s, free + 1)
        s += late
        S[g] = s
        resident = s + scan[g] + ENGINE_SCAN_RELEASE
        while p < plan.n_passes and pgroup[p] == g:
            a = max(resident, int(done[plan.row_block[p]]) + int(rel[p])) + issue_delay
            A[p] = a if p == 0 else max(a, int(A[p - 1]) + per)
            p += 1
    # the last cycle work is pending: the last scan's words still in flight to WMEM
    pend = max(S[-1] + scan[-1] + ENGINE_SCAN_RELEASE - 1, total - 1)
    cycles, tail = pend, 0
    if plan.n_passes:
        cycles = max(cycles, int(A[-1]) + per + sdue_fixed(cfg, striped))
        tail = max(0, min(pend, cycles) - int(A[-1]) - per)
    return {"passes": plan.n_passes, "groups": groups, "words": words, "cau": total,
            "cycles": cycles + ENGINE_ORIGIN, "tail": tail, "scan_start": S, "scan": scan,
            "scan_steps": steps,
            "take": A,
            "pass_group": pgroup}


def striped_scan_cycles(cfg: Config, ncols: int, kwords: int, gb_bytes: int) -> int:
    """Cycles of the striped col-group scan (``flow.striped``) of a group of ``ncols``
    columns: stripes of C columns (the last one ``ncols % C`` if shorter), ``kwords`` steps
    each, a step moving one word per column of the stripe (``nv * L * W`` bits) in one cycle
    or, when the bandwidth is lower, the cycles a bit credit (``+8 * gb_bytes`` per cycle, from
    0 at the group's start, reset while a step's bits fit one cycle) needs."""
    C, wbits = cfg.cols, cfg.lanes * cfg.width
    gbits = 8 * int(gb_bytes)
    t, credit = 0, 0
    for c0 in range(0, ncols, C):
        bits = min(C, ncols - c0) * wbits
        for _ in range(kwords):        # a step is a fetch beat of the stripe's bits
            adv, credit = _beat(t, credit, bits, gbits)
            t = adv + 1
    return t


def stripe_ok(cfg: Config, sub, blocks: int, gcols: int, *, merge_ways: int | None = None,
              sort: str = "popcount") -> bool:
    """Whether a col-group run may use the striped WMEM map (``hw.gemm`` ``flow.striped``):
    every pass of the run's stacked mask (:func:`group_mask`) puts a group's column j in slot
    ``j % C`` as its only member, so bank ``j % C`` holding column j at stripe ``j // C``
    serves every read. True for a dense mask (nothing merges or condenses, ties keep column
    order); a merge, or a condensed column shifting the later ones, breaks it. A run without
    passes (an empty mask) holds it trivially."""
    m = cfg.check_merge_ways(merge_ways)
    plan = conmerge(cfg, group_mask(cfg, sub, blocks, gcols), sort=sort, merge_ways=m)
    if plan.n_passes == 0:
        return True
    mem = np.asarray(plan.members).reshape(plan.n_passes, cfg.cols, -1)
    if mem.shape[2] > 1 and (mem[:, :, 1:] >= 0).any():
        return False
    first = mem[:, :, 0]
    slot = np.broadcast_to(np.arange(cfg.cols), first.shape)
    return bool(((first < 0) | (first % cfg.cols == slot)).all())


def scan_cycles(need, kwords: int, gb_bytes: int, word_bits: int) -> int:
    """Cycles of the col-group column scan: one per unneeded column; per needed column
    ``kwords`` words, each one cycle or, when ``8 * gb_bytes < word_bits``, the cycles a bit
    credit (``+8 * gb_bytes`` per cycle, from 0 at the scan's start) needs to reach a word."""
    gbits = 8 * int(gb_bytes)
    need = np.asarray(need, bool)
    n_need = int(need.sum())
    skip = int(need.size - n_need)
    if gbits == 0 or gbits >= word_bits:
        return skip + n_need * kwords
    t, credit = skip, 0
    for _ in range(n_need * kwords):
        n = max(1, -(-(word_bits - credit) // gbits))
        t += n
        credit += n * gbits - word_bits
    return t


def engine_regions(cfg: Config, K: int, max_regions: int = GEMM_MAX_REGIONS) -> int:
    """WMEM regions the host driver gives a row-block run: as many as fit, at most
    ``max_regions`` (``sim.gemm_rtl.plan_tiles``)."""
    kw = max(1, math.ceil(K / cfg.lanes))
    return max(1, min(max_regions, 2 * cfg.wmem_words // kw))


def _beat(t0: int, credit: int, bits: int, gbits: int) -> tuple[int, int]:
    """One fetch beat of ``bits`` whose want cycles start at ``t0``: (cycle it advances,
    credit after). Credit grows by ``gbits`` per want cycle; unlimited or a whole beat per
    cycle: one cycle, credit 0."""
    if gbits == 0 or gbits >= bits:
        return t0, 0
    n = max(1, -(-(bits - credit) // gbits))
    return t0 + n - 1, credit + n * gbits - bits


def row_block_fetch(cfg: Config, members, kwords: int, start, *, gb_bytes: int = 0,
                    regions: int = GEMM_MAX_REGIONS,
                    desc_depth: int = GEMM_DESC_DEPTH) -> np.ndarray:
    """Cycle at which the SDUE takes each pass of a row-block run (``hw.gemm`` fetch, exact).

    ``members[p]``: the present members of pass p (the words one fetch beat moves, charged
    ``members * L * W`` bits); ``start[p]``: the first cycle the fetch may take pass p (its
    block's release; a scalar: the same for every pass). Per pass p, with ``per =
    max(kwords, C)``, D = ``desc_depth``:

    * take ``T_p = max(start_p, L_{p-1}, E_{p-regions} + 1)`` (the fetch is free in its last
      beat's cycle; a WMEM region is free the cycle after the SDUE issued its pass);
    * beats from ``T_p + 1``, each when the bit credit allows (:func:`_beat`; the credit
      carries over between passes and only grows in cycles the fetch wants a beat); the
      last beat also waits for room in the D-entry descriptor FIFO (cycle > ``A_{p-D}``);
      its cycle is ``L_p``;
    * the SDUE takes the descriptor at ``A_p = max(L_p + 1, A_{p-1} + per)`` and issues it
      at ``E_p = A_p + per``.

    With ``cfg.gemm_take_reg`` the take is decided a cycle ahead into a register (its tests
    only turn false at a take): ``T_p`` + 1 in every case, so a pass's fetch starts the cycle
    after its predecessor's last beat at the earliest.
    """
    C, gbits = cfg.cols, 8 * int(gb_bytes)
    wbits = cfg.lanes * cfg.width
    per = max(int(kwords), C)
    n = len(members)
    start = np.broadcast_to(np.asarray(start, np.int64), (n,))
    A = np.zeros(n, np.int64)
    last, credit = None, 0
    late = int(bool(cfg.gemm_take_reg))     # the take decided a cycle ahead
    for p in range(n):
        t = int(start[p]) if last is None else max(int(start[p]), last)
        if p >= regions:
            t = max(t, int(A[p - regions]) + per + 1)
        t += late
        bits = int(members[p]) * wbits
        x = t
        for _ in range(int(kwords) - 1):
            x, credit = _beat(x + 1, credit, bits, gbits)
        s0 = x + 1
        if p >= desc_depth:
            s0 = max(s0, int(A[p - desc_depth]) + 1)
        last, credit = _beat(s0, credit, bits, gbits)
        A[p] = last + 1 if p == 0 else max(last + 1, int(A[p - 1]) + per)
    return A


def engine_striped(cfg: Config, mask, K: int, *, dataflow: str = "col-group", striped=False,
                   gather: bool = False, double_buffer: bool = True,
                   group_cols: int | None = None, k_chunk=None,
                   merge_ways: int | None = None, sort: str = "popcount") -> bool:
    """Resolve ``striped`` (False / True / ``"auto"``) for a product, as the host driver does:
    the striped map needs col-group, no gather, and :func:`stripe_ok` on every run of the
    striped plan. True when it cannot hold raises :class:`ExionError` naming why; ``"auto"``
    gives False then; so does a config built without the map (``cfg.gemm_striped``), and so
    does an empty mask (the replicated map moves no word for it)."""
    if striped is False or striped is None:
        return False
    if striped not in (True, "auto"):
        raise ExionError(f"gemm engine: striped = {striped!r} must be True, False or 'auto'")
    why = None
    if striped == "auto" and not np.asarray(mask, bool).any():
        return False            # nothing to compute: the replicated map moves no word
    if not cfg.gemm_striped:
        why = f"config {cfg.name!r} builds the engine without it (gemm_striped = false)"
    elif dataflow != "col-group":
        why = f"it is a col-group map (dataflow {dataflow!r})"
    elif gather:
        why = "FC2's gather reads one column per scan step"
    else:
        mask = np.asarray(mask, bool)
        M, N = mask.shape
        R = cfg.rows
        seen = set()
        for tp in engine_plan(cfg, M, N, K, dataflow, double_buffer=double_buffer,
                              group_cols=group_cols, k_chunk=k_chunk, striped=True):
            key = (tp["b0"], tp["c0"])
            if key in seen:
                continue
            seen.add(key)
            sub = mask[tp["b0"] * R:min(M, (tp["b0"] + tp["blocks"]) * R),
                       tp["c0"]:tp["c0"] + tp["ncols"]]
            if not stripe_ok(cfg, sub, tp["blocks"], tp["gcols"], merge_ways=merge_ways,
                             sort=sort):
                why = (f"the passes of the run at row block {tp['b0']}, column {tp['c0']} "
                       f"merge or shift columns out of their stripe slot")
                break
    if why is None:
        return True
    if striped == "auto":
        return False
    raise ExionError(f"gemm engine: the striped map does not apply: {why}")


def engine_k_chunk(cfg: Config, mask, K: int, *, dataflow: str = "row-block",
                   **kw) -> int:
    """The K-split the host picks with ``k_chunk="auto"``: the piece length (L-words) of
    :func:`engine_chunks` whose :func:`engine_cycles` (same arguments ``kw``) is fewest,
    ties to the longer piece (fewer runs) [choice, issue 17].

    Candidates: the balanced splits of ``kw = ceil(K / L)`` words into s pieces, s from the
    fewest IMEM allows up to ``ceil(kw / max(1, C // 2))`` (pieces much shorter than C
    words leave the SDUE drain-bound, ``max(kwords, C)`` cycles a pass), at most 12 of
    them. Short pieces let IMEM hold more row blocks and a WMEM half more columns, so a
    col-group run fetches each weight for more row blocks (exion16 at K = 1152: one row
    block and 7-column groups whole, 8 row blocks and 32-column groups at 16 words)."""
    return _k_search(cfg, mask, K, dataflow, kw)[0]


def _k_search(cfg: Config, mask, K: int, dataflow: str, kw: dict) -> tuple[int, dict]:
    """(piece, :func:`engine_cycles` of it) of :func:`engine_k_chunk`'s search."""
    L, C = cfg.lanes, cfg.cols
    w = max(1, math.ceil(K / L))
    s_lo = -(-w // (2 * cfg.imem_words))
    s_hi = max(s_lo, -(-w // max(1, C // 2)))
    best = None
    for c in sorted({-(-w // s) for s in range(s_lo, s_hi + 1)}, reverse=True)[:12]:
        e = engine_cycles(cfg, mask, K, dataflow=dataflow, k_chunk=c, **kw)
        if best is None or e["cycles"] < best[1]["cycles"]:
            best = (c, e)
    return best


def engine_compact(mask, input_mask=None) -> tuple:
    """The host's compaction of a masked product (``compact``, issue 17, column-aware
    sparsity): the output columns no row needs (all-False ``mask`` columns) and, for an
    input-sparse product, the K rows no row reads (all-False ``input_mask`` columns) are
    left out before tiling. The engine runs the product of the rest and the host scatters
    its results back: a dropped column keeps ``prev``, as its mask says, and a dropped K row
    is zero in A, so the result is the same. When every kept K row is read by every row the
    input mask goes too: a dense product, which the striped WMEM map may take [choice].
    At least one column and one K row are kept (an all-empty product still runs, as an
    uncompacted one does). The host loads only the kept columns and K rows into the global
    buffer's window (``GemmTile.gmem``), so unneeded weights are never fetched.

    Returns ``(cols, krows, mask', input_mask')``: the kept column indices, the kept K rows
    (None without an input mask), the compacted mask and input mask (None when dense)."""
    mask = np.asarray(mask, bool)
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        cols = np.arange(min(1, mask.shape[1]))
    mc = mask[:, cols]
    if input_mask is None:
        return cols, None, mc, None
    im = np.asarray(input_mask, bool)
    krows = np.flatnonzero(im.any(axis=0))
    if krows.size == 0:
        krows = np.arange(min(1, im.shape[1]))
    ic = im[:, krows]
    return cols, krows, mc, (None if ic.all() else ic)


def engine_cycles(cfg: Config, mask, K: int, *, dataflow: str = "row-block",
                  gb_bytes: int = 0, merge_ways: int | None = None, sort: str = "popcount",
                  cols_per_cycle: int = CAU_COLS_PER_CYCLE,
                  regions: int | None = None, input_mask=None, double_buffer: bool = True,
                  group_cols: int | None = None, k_chunk=None, striped=False,
                  compact: bool | str = False) -> dict:
    """Cycles, bytes and bound of a masked product through the gemm engine (``hw/gemm.py``).

    Per tile (:func:`engine_tiles`): ``passes`` (golden ConMerge), ``compute`` = sum_p
    max(kwords, C) + SDUE fixed, ``words`` / ``wmem_bytes`` (global buffer -> WMEM),
    ``cycles``, ``stall`` = cycles - compute (the RTL's ``stalls`` counter), ``exact``.

    col-group (exact, :func:`col_group_run`): the CAU runs freely (``cau_schedule``; its
    passes queue); a run's column groups (:func:`engine_plan`; ``double_buffer=False``: one
    group per run, the whole WMEM) are scanned in order into alternating WMEM halves, each
    once its mask is in and its half is free, moving only the needed columns
    (:func:`scan_cycles`); a pass goes to the SDUE once its group is resident and its row
    block complete in the queue, so group g + 1's scan overlaps group g's passes.
    ``group_cols`` caps the columns per group (the host driver's ``GemmCase.group_cols``).

    row-block (exact): the CAU's passes queue (the CAU runs freely, ``cau_schedule``); the
    fetch takes a block's passes from ``ENGINE_BLOCK_RELEASE`` cycles after the block's
    ``done`` (its last pass one more with ``gemm_pq_reg``: :func:`engine_block_release`), in
    order, and the SDUE takes each at :func:`row_block_fetch`'s cycle ``A_p``:
    ``cycles = A_last + max(kwords, C) + SDUE fixed`` (no pass: the CAU's total - 1).
    ``regions``: the run's WMEM regions (default :func:`engine_regions`).

    ``input_mask`` (M, K), FC2's gathered W2 rows: a tile reduces only over the K rows some
    of its rows need (``kwords = ceil(K' / L)``, at least 1; the tile shapes stay those of
    the full K), as ``sim.gemm_rtl`` with ``GemmCase.gather`` loads it; with K-splits, per
    split over the rows of that split.

    ``k_chunk``: the K-splits (:func:`engine_chunks`: None = the fewest IMEM allows, an
    integer = pieces of at most that many L-words, ``"auto"`` = :func:`engine_k_chunk`).
    Each split is a run (a tile entry with ``k0`` and ``kwords``); ``k_chunk`` in the
    result is the piece length used.

    ``striped`` (col-group): the striped WMEM map (``hw.gemm`` ``flow.striped``; groups C
    times wider, the scan a stripe of C columns per step, every column moved): True (an
    error if some run's passes break it, :func:`stripe_ok`), False, or ``"auto"`` (striped
    when every run allows it). ``striped`` in the result is what ran.

    Totals: ``cycles``, ``compute_cycles``, ``stall_cycles``, ``bytes`` (``gb_wmem``),
    ``scan_cycles`` (col-group: the scans' steps at unlimited bandwidth, one word or one
    stripe a step), ``cau_cycles`` (the CAU's cycles over the tiles' masks), ``bound`` (the
    largest of the four limits: ``cau-bound`` when the CAU's cycles exceed the compute, the
    fetch and the scan (short-K dense tiles: a row block every ~14 cycles on exion16),
    ``scan-bound`` when the scan's steps exceed both the compute and the fetch at
    ``gb_bytes``, ``memory-bound`` when the weight fetch alone, bytes / gb_bytes, exceeds
    the compute, else ``compute-bound``),
    ``utilization`` (useful MACs / (R*C*L * cycles)).

    ``compact``: the host first drops the columns no row needs and the K rows no row reads
    (:func:`engine_compact`); the tiles, ``striped`` and ``k_chunk`` are then those of the
    compacted product (``GemmCase.compact``), and ``compact`` in the result gives the kept
    ``cols`` and ``k`` (None when off). ``"auto"``: where a column or a K row drops, the
    faster of the plain and the compacted run (ties to the plain one) [choice, issue 17].
    """
    mask = check_mask(mask)
    if compact is not False:
        return _engine_compacted(cfg, mask, K, compact, dict(
            dataflow=dataflow, gb_bytes=gb_bytes, merge_ways=merge_ways, sort=sort,
            cols_per_cycle=cols_per_cycle, regions=regions, input_mask=input_mask,
            double_buffer=double_buffer, group_cols=group_cols, k_chunk=k_chunk,
            striped=striped))
    M, N = mask.shape
    m = cfg.check_merge_ways(merge_ways)
    R, L = cfg.rows, cfg.lanes
    wbits = L * cfg.width
    tiles = []
    imask = None if input_mask is None else check_mask(input_mask, "input_mask", (M, K))
    if isinstance(k_chunk, str):
        if k_chunk != "auto":
            raise ExionError(f"gemm engine: k_chunk = {k_chunk!r} must be an integer, None "
                             f"or 'auto'")
        # the search already ran the product at every candidate: return the best run
        return _k_search(cfg, mask, K, dataflow, dict(
            gb_bytes=gb_bytes, merge_ways=merge_ways, sort=sort,
            cols_per_cycle=cols_per_cycle, regions=regions, input_mask=input_mask,
            double_buffer=double_buffer, group_cols=group_cols, striped=striped))[1]
    striped = engine_striped(cfg, mask, K, dataflow=dataflow, striped=striped,
                             gather=imask is not None, double_buffer=double_buffer,
                             group_cols=group_cols, k_chunk=k_chunk, merge_ways=m, sort=sort)
    plans = {}        # (b0, c0) -> the tile's ConMerge plan (the same for every K-split)
    runs = {}         # (b0, c0, kwords) -> its col-group run (no gather)
    host_a = 0
    for tp in engine_plan(cfg, M, N, K, dataflow, double_buffer=double_buffer,
                          group_cols=group_cols, k_chunk=k_chunk, striped=striped):
        b0, blocks, c0, ncols = tp["b0"], tp["blocks"], tp["c0"], tp["ncols"]
        k0, kw = tp["k0"], tp["kwords"]
        sub = mask[b0 * R:min(M, (b0 + blocks) * R), c0:c0 + ncols]
        groups, tail = 1, 0
        if imask is not None:
            kg = int(imask[b0 * R:(b0 + blocks) * R, k0 * L:(k0 + kw) * L]
                     .any(axis=0).sum())
            kw = max(1, math.ceil(kg / L))
        host_a += sub.shape[0] * kw * wbits // 8
        if (b0, c0) not in plans:
            plans[(b0, c0)] = conmerge(cfg, sub, sort=sort, merge_ways=m)
        plan = plans[(b0, c0)]
        npass = plan.n_passes
        compute = sdue_cycles(cfg, [kw] * npass)
        if dataflow == "col-group":
            key = (b0, c0, kw)
            if imask is not None or key not in runs:
                runs[key] = col_group_run(cfg, sub, kw, tp["gcols"], blocks,
                                          gb_bytes=gb_bytes, merge_ways=m, sort=sort,
                                          cols_per_cycle=cols_per_cycle, striped=striped)
            run = runs[key]
            npass, words, cycles, groups = (run["passes"], run["words"], run["cycles"],
                                            run["groups"])
            cau = run["cau"]
            steps = run["scan_steps"]
            compute = sdue_cycles(cfg, [kw] * npass, wide=striped)
            tail = run["tail"]
            exact = True
        else:
            steps = 0
            present = (plan.members >= 0).reshape(npass, -1).sum(axis=1) if npass else []
            words = int(np.sum(present)) * kw
            sch = cau_schedule(cfg, sub, merge_ways=m, sort=sort,
                               cols_per_cycle=cols_per_cycle)
            cau = int(sch["total"])
            if npass:
                start = (sch["done"][plan.row_block] + engine_block_release(cfg, plan.row_block)
                         + ENGINE_ORIGIN)
                acc = row_block_fetch(cfg, present, kw, start, gb_bytes=gb_bytes,
                                      regions=engine_regions(cfg, tp["kwords"] * L)
                                      if regions is None else regions)
                cycles = int(acc[-1]) + max(kw, cfg.cols) + sdue_fixed(cfg)
            else:   # busy while the CAU is: cycles 1 .. total - 1 (not the first beat's)
                cycles = int(sch["total"]) - 1 + ENGINE_ORIGIN
            exact = True
        tiles.append({"b0": b0, "blocks": blocks, "c0": c0, "ncols": ncols, "passes": npass,
                      "gcols": tp["gcols"], "groups": groups, "k0": k0,
                      "kwords": kw, "compute": compute, "words": words,
                      "wmem_bytes": words * wbits // 8, "cycles": cycles, "scan_steps": steps,
                      "cau": cau,
                      "stall": cycles - compute + tail, "tail": tail, "exact": exact})
    return {"dataflow": dataflow, "gb_bytes_per_cycle": gb_bytes, "M": M, "N": N, "K": K,
            "compact": None, "k_chunk": max(w for _, w in engine_chunks(cfg, K, k_chunk)),
            "striped": striped, "k_splits": len(engine_chunks(cfg, K, k_chunk)),
            "host_a_bytes": host_a, **_engine_totals(cfg, tiles, mask, imask, K, gb_bytes)}


def _engine_compacted(cfg: Config, mask, K: int, compact, kw: dict) -> dict:
    """:func:`engine_cycles` with ``compact`` True (the compacted product, ``compact`` in the
    result the kept ``cols`` and ``k``) or ``"auto"`` (where something drops, the faster of
    the plain and the compacted run, ties to the plain one)."""
    if compact == "auto":
        im = kw["input_mask"]
        drops = not mask.any(axis=0).all() or (
            im is not None and not np.asarray(im, bool).any(axis=0).all())
        return min((engine_cycles(cfg, mask, K, compact=c, **kw)
                    for c in ((False, True) if drops else (False,))),
                   key=lambda r: r["cycles"])
    if compact is not True:
        raise ExionError(f"gemm engine: compact = {compact!r} must be True, False or 'auto'")
    im = kw["input_mask"]
    if im is not None:
        im = check_mask(im, "input_mask", (mask.shape[0], K))
    cols, krows, mc, ic = engine_compact(mask, im)
    K = K if krows is None else len(krows)
    res = engine_cycles(cfg, mc, K, **{**kw, "input_mask": ic})
    return {**res, "compact": {"cols": len(cols), "k": K}}


def _engine_totals(cfg: Config, tiles: list, mask, imask, K: int, gb_bytes: int) -> dict:
    """:func:`engine_cycles`'s totals over its tiles: cycles, compute, stall, bytes, the
    four limits and the bound they give, useful MACs and utilization."""
    tot_c = sum(t["cycles"] or 0 for t in tiles)
    scan = sum(t["scan_steps"] for t in tiles)
    comp = sum(t["compute"] for t in tiles)
    cau_c = sum(t["cau"] for t in tiles)
    wb = sum(t["wmem_bytes"] for t in tiles)
    mem = wb / gb_bytes if gb_bytes else 0.0
    if imask is None:
        useful = int(mask.sum()) * K
    else:
        useful = int((mask.sum(axis=1).astype(np.int64) * imask.sum(axis=1)).sum())
    return {"tiles": tiles, "cycles": tot_c, "compute_cycles": comp,
            "stall_cycles": tot_c - comp, "bytes": {"gb_wmem": wb}, "memory_cycles": mem,
            "scan_cycles": scan, "cau_cycles": cau_c,
            "bound": "cau-bound" if cau_c > max(comp, mem, scan) else
                     "scan-bound" if scan > max(comp, mem) else
                     "memory-bound" if mem > comp else "compute-bound",
            "useful_macs": useful,
            "utilization": useful / (cfg.peak_macs * tot_c) if tot_c else 0.0}


# ---- an IMEM loader for the col-group engine: a planned design's estimate (not built) -----

def loader_plan(cfg: Config, M: int, N: int, K: int, *, group_cols: int | None = None) -> list:
    """Runs of the col-group engine with an IMEM loader (issue 17, dbuf2; not built): A's
    row blocks stream from the global buffer, so a run holds **every** row block of the
    product (as many as OMEM holds results for: ``blocks * ncols <= omem_depth``) against
    as many columns as OMEM holds for them, in groups of ``gcols = wmem_words // kwords``
    (``group_cols`` caps it). Dicts as :func:`engine_plan`'s."""
    R, L = cfg.rows, cfg.lanes
    kw = max(1, math.ceil(K / L))
    if kw > 2 * cfg.imem_words:
        raise ExionError(f"gemm engine: K = {K} needs {kw} words per row, more than IMEM's "
                         f"{2 * cfg.imem_words} (the engine runs no K-splits)")
    half = cfg.wmem_words // kw
    if half < 1:
        raise ExionError(f"gemm engine: K = {K} does not fit a WMEM half "
                         f"({cfg.wmem_words} words); the loader estimate needs one")
    gc = half if group_cols is None else max(1, min(half, int(group_cols)))
    nblk = math.ceil(M / R)
    tb = max(1, min(nblk, cfg.omem_depth // min(gc, N)))
    ng = min(N, max(1, cfg.omem_depth // tb), gc * cfg.gemm_max_groups)
    if gc < ng < N:
        ng -= ng % gc               # whole groups: A is fetched once per group
    return [{"b0": b0, "blocks": min(tb, nblk - b0), "c0": c0, "ncols": min(ng, N - c0),
             "gcols": min(gc, ng, N - c0)}
            for c0 in range(0, N, ng) for b0 in range(0, nblk, tb)]


def _loader_run(cfg: Config, sub, kw: int, gcols: int, blocks: int, bw: float,
                scan_words: int, m: int) -> dict:
    """One loader run (:func:`imem_loader_estimate`): a serial global-buffer channel in
    program order (group g's scan, then its row blocks' A loads), the SDUE in order."""
    R, L, W = cfg.rows, cfg.lanes, cfg.width
    rows_in = sub.shape[0]
    per = max(kw, cfg.cols)
    slots = max(1, 2 * cfg.imem_words // kw)        # IMEM ring: row blocks resident
    stack = group_mask(cfg, sub, blocks, gcols)
    plan = conmerge(cfg, stack, merge_ways=m)
    npb = np.bincount(np.asarray(plan.row_block, np.int64),
                      minlength=stack.shape[0] // R)   # passes per (group, block)
    groups = -(-sub.shape[1] // gcols)
    wbytes = L * W / 8
    chan = 0.0                                       # the channel is free from here
    sdue = 0.0                                       # the SDUE is free from here
    group_end = []                                   # last pass of group g issued
    slot_free: list[float] = []                      # per loaded block: its passes issued
    wb = ab = 0.0
    for g in range(groups):
        need = sub[:, g * gcols:(g + 1) * gcols].any(axis=0)
        nw = int(need.sum()) * kw
        rel = group_end[g - 2] if g >= 2 else 0.0    # its WMEM half is free
        start = max(chan, rel)
        chan = start + max(nw * wbytes / bw if bw else 0.0,
                           math.ceil(nw / scan_words) + int((~need).sum()))
        resident = chan
        wb += nw * wbytes
        for b in range(blocks):
            p = int(npb[g * blocks + b])
            if p == 0:
                continue                              # no pass: A block not loaded
            rows = min(R, rows_in - b * R)
            nbytes = kw * rows * wbytes
            free = slot_free[-slots] if len(slot_free) >= slots else 0.0
            start = max(chan, free)
            chan = start + max(nbytes / bw if bw else 0.0, kw)
            ab += nbytes
            sdue = max(sdue, chan, resident) + p * per
            slot_free.append(sdue)
        group_end.append(sdue)
    return {"passes": plan.n_passes, "groups": groups, "end": sdue,
            "chan_end": chan, "gb_wmem": wb, "gb_imem": ab}


def imem_loader_estimate(cfg: Config, mask, K: int, *, gb_bytes: int = 0,
                         merge_ways: int | None = None, group_cols: int | None = None,
                         scan_words: int = 1) -> dict:
    """Estimated cycles and bytes of the col-group engine with an IMEM loader (issue 17,
    dbuf2): a **planned design, not built**, so not exact (``exact`` False).

    The design: the host writes A into the global buffer (not IMEM); a run covers every
    row block of the product (:func:`loader_plan`); per column group g, in order, the scan
    moves g's needed columns into a WMEM half (``scan_words`` L-words per cycle at most: 1
    for the replicated map, up to ``C * m`` for the bank maps) once the half is free
    (group g - 2's passes issued), then each row block with a pass in g has its A rows
    (``kwords`` beats of one word per IMEM bank, ``rows * L * W`` bits per beat) loaded
    into an IMEM ring of ``2 * imem_words // kwords`` block slots (at least one), a slot
    free once the passes of the block it held are issued; the block's passes go to the
    SDUE once its A block and its group are in. A row block without a pass in g is not
    loaded for g. A is therefore fetched once per column group, the weights once per run.

    Estimate: one global-buffer channel of ``gb_bytes`` bytes per cycle (0 = unlimited)
    serving the scans and loads in that program order, each request at least one cycle per
    word / beat; the CAU assumed hidden (it runs ahead in the built engine); the SDUE as
    :func:`sdue_cycles` per pass. Returns the totals of :func:`engine_cycles` plus
    ``bytes`` ``gb_wmem`` (weights) and ``gb_imem`` (A).
    """
    mask = check_mask(mask)
    M, N = mask.shape
    m = cfg.check_merge_ways(merge_ways)
    R, L = cfg.rows, cfg.lanes
    kw = max(1, math.ceil(K / L))
    if not isinstance(scan_words, (int, np.integer)) or scan_words < 1:
        raise ExionError(f"scan_words = {scan_words!r} must be an integer >= 1")
    tiles = []
    for tp in loader_plan(cfg, M, N, K, group_cols=group_cols):
        b0, blocks, c0, ncols = tp["b0"], tp["blocks"], tp["c0"], tp["ncols"]
        sub = mask[b0 * R:min(M, (b0 + blocks) * R), c0:c0 + ncols]
        run = _loader_run(cfg, sub, kw, tp["gcols"], blocks, float(gb_bytes), scan_words, m)
        compute = sdue_cycles(cfg, [kw] * run["passes"])
        cycles = math.ceil(run["end"] + sdue_fixed(cfg)) if run["passes"] else \
            math.ceil(run["chan_end"])
        tiles.append({**tp, "passes": run["passes"], "groups": run["groups"], "kwords": kw,
                      "compute": compute, "gb_wmem": round(run["gb_wmem"]),
                      "gb_imem": round(run["gb_imem"]), "cycles": cycles,
                      "stall": cycles - compute, "exact": False})
    tot_c = sum(t["cycles"] for t in tiles)
    comp = sum(t["compute"] for t in tiles)
    by = {"gb_wmem": sum(t["gb_wmem"] for t in tiles),
          "gb_imem": sum(t["gb_imem"] for t in tiles)}
    mem = (by["gb_wmem"] + by["gb_imem"]) / gb_bytes if gb_bytes else 0.0
    useful = int(mask.sum()) * K
    return {"dataflow": "col-group+loader", "gb_bytes_per_cycle": gb_bytes, "M": M, "N": N,
            "K": K, "tiles": tiles, "cycles": tot_c, "compute_cycles": comp,
            "stall_cycles": tot_c - comp, "bytes": by, "memory_cycles": mem,
            "bound": "memory-bound" if mem > comp else "compute-bound",
            "useful_macs": useful,
            "utilization": useful / (cfg.peak_macs * tot_c) if tot_c else 0.0}
