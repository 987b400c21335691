"""Dataflows of one GEMM on one core: loop order, bytes per memory, overlapped fills (SPEC 3.5, 7).

A *dataflow* is the loop order in which the core walks a (masked) product
``C[M x N] = A[M x K] @ B[K x N]`` and therefore which operand stays in its on-chip memory
and which one is fetched again. Two are modelled (``DATAFLOWS``):

``row-block`` (today's)
    Row block outer, passes inner; every pass fetches its members' weights again, so every
    weight is fetched once per R-row block (exion16 dense: ``C * L * W / 8 = 384`` bytes of
    weights per compute cycle). Figures are exactly :func:`exion.golden.cycles.gemm_cycles`'s
    (this module only adds the byte counts per memory).

``col-group`` (weight-stationary column groups)
    WMEM holds a *column group*: ``G = C * n`` output columns' weights for a K-chunk of the
    (gathered) reduction, ``n`` columns per bank (as many as a bank side, or with ConMerge a
    sub-bank side, holds at the chunk's length, and at most ``omem_depth // 2`` results per
    OMEM bank row). All row blocks stream through IMEM against that group; the other WMEM side
    is filled with the next group meanwhile (double buffering, SPEC 4.2). Loop order::

        for g in column groups:            WMEM side g % 2 <- B[chunk, group g]
          for c in K-chunks:               (one chunk unless the reduction is longer than
            for b in row blocks:            a bank side holds: then partial sums spill)
              OMEM half t % 2 <- partial sums / FFN-Reuse Y_d   (if any)
              for s in IMEM splits:        IMEM side <- A[block b, split s]
                ConMerge passes of (b, g)  (accumulate after the first split / chunk)
              OMEM half -> global buffer   (results, or A-bit partial sums)

    The planner (:func:`plan_col_group`) picks the number of K-chunks that minimises the
    estimated time ``max(compute, read bytes / B, write bytes / B)`` at the given bandwidth.

Column-aware sparsity (FFN-Reuse, SPEC 7): only the *needed* output columns (any 1 in the
output mask, over all M rows) are fetched and grouped, and for an input-sparse product (FC2
of a sparse iteration, P.V after eager prediction) only the reduction rows that some row
needs are fetched and *gathered* into a dense reduction index; per row block only the
gathered L-chunks holding a non-zero are streamed (SPEC 3.2, last paragraph, on the gathered
index).

Bank mapping (``BANK_MAPS``; only matters for ConMerge with m > 1): merged members of a slot
are read by DPU column c through its m weight buses (SPEC 4.2: bank c = m sub-banks, one read
port each). In ``col-group`` the group's weights are resident, so *where* each column sits
decides which slots are possible. With a mask, a column lives whole in one sub-bank side
(``wmem_words // m`` words), so a bank holds ``m * (sub-bank words // chunk words)`` columns.

``bank``      (a) column i of the group in bank ``i % C``, sub-bank ``(i // C) % m``; a slot
              merges columns of one bank only, at most one per sub-bank; passes of a (row
              block, group) = the most slots of any bank. No datapath change.
``placed``    (c) as ``bank``, but the fetch unit places the group's columns by the mask:
              by total popcount (all M rows), descending, each into the bank with the least
              popcount so far (and its least-filled sub-bank), so the banks' work is balanced.
              No datapath change; the placement needs the group's column popcounts.
``crossbar``  (b) a C*m x C*m crossbar from every sub-bank to every weight bus: slots merge
              over all the group's columns (placed as in ``bank``), at most one member per
              sub-bank, and a pass never reads a sub-bank twice (one port each): slots are
              packed first-fit into passes under that rule.
``ideal``     the global ConMerge over the group's columns with no port limit (an upper bound:
              it needs every weight readable by every DPU column at once).

Measured utilizations (``docs/dataflow.md``): equal on column-concentrated masks; on the
digits DiT's real masks bank 0.31, placed 0.33, crossbar 0.40, ideal 0.51; on random masks at
s = 0.95 bank 0.16, placed 0.16, crossbar 0.14, ideal 0.30. Default ``placed``.

Timing of ``col-group`` (event model, :func:`_simulate`): the SDUE runs the steps (one IMEM
split of one row block against one group chunk) back to back; a step starts when the previous
one has ended and its data is in: its IMEM split (released when the step two earlier, on the
same IMEM side, has ended) and its OMEM preload (released when the tile two earlier has been
written back: two OMEM halves). A group chunk's weights go to the WMEM side freed when the
chunk two earlier has ended; they arrive in pass order, so the chunk's first step may start
before they are all in and ends no earlier than their arrival plus one pass. The global
buffer has a *read* channel (fills of WMEM, IMEM, OMEM) and a *write* channel (OMEM
write-back), each ``B`` bytes per cycle (an AXI4 master's separate read and write data
channels, SPEC 7). The read channel always serves the released request that is needed first
(a step's preload and IMEM split, then its chunk's weights) and lets later ones (the next
group's weights) use the gaps, byte by byte (a preemptive priority schedule, modelled exactly
as a fluid). A tile's results leave OMEM pass by pass (from the end of its last step's first
pass). Cycles = last step's end + ``sdue_fixed`` (or the last write-back, if later); compute =
sum of the steps' ``max(k, C)`` per pass + ``sdue_fixed``; stall = cycles - compute.

Bytes: W-bit operands (``ceil(W / 8)`` is not used: 12-bit elements are 1.5 bytes, packed),
A-bit partial sums, results written at ``out_bits`` (default W: the CFSE requantizes) and an
optional OMEM preload at ``preload_bits`` per output (FFN-Reuse FC2 delta: Y_d, A bits).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from exion.config import Config
from exion.errors import ExionError

from .conmerge import _pack, _sorted_cols, check_mask, conmerge, dense_plan, merge_columns
from .cycles import gemm_cycles, sdue_fixed, sdue_pass_list

__all__ = ["DATAFLOWS", "ENGINE_FLOWS", "BANK_MAPS", "DEFAULT_BANK_MAP", "GemmFlow", "gemm_flow",
           "plan_col_group", "bank_slots", "crossbar_passes", "BYTE_KEYS"]

DATAFLOWS = ("row-block", "col-group")
#: The built gemm engine's dataflows through its exact model (``golden.cycles.engine_cycles``,
#: K-splits ``auto``, col-group's striped WMEM map where the mask allows it); ``engine-best``
#: takes the faster of the two per GEMM (issue 17). Accepted by :func:`gemm_flow` and
#: ``golden.block.block_flow`` next to :data:`DATAFLOWS`.
ENGINE_FLOWS = ("engine-row-block", "engine-col-group", "engine-best")
BANK_MAPS = ("bank", "placed", "crossbar", "ideal")
#: Default bank mapping of ``col-group`` (docs/dataflow.md): no new datapath, the best of the
#: two such options on real masks, equal to every option on column-concentrated masks.
DEFAULT_BANK_MAP = "placed"
#: Byte counters of a GEMM: global buffer -> WMEM / IMEM / OMEM (preload), OMEM -> global buffer.
BYTE_KEYS = ("gb_wmem", "gb_imem", "gb_omem", "omem_gb")


@dataclass(frozen=True)
class GemmFlow:
    """Figures of one GEMM under one dataflow (see the module docstring for each term)."""

    name: str
    dataflow: str
    M: int
    N: int
    K: int
    bw: int                   # global-buffer bytes per cycle (each direction)
    passes: int               # SDUE passes (every group, chunk and split)
    k_words: int              # beats streamed
    compute_cycles: int       # sum_p max(k_p, C) + sdue_fixed
    stall_cycles: int         # cycles - compute_cycles
    cycles: int
    bytes: dict               # BYTE_KEYS -> bytes
    useful_macs: int
    utilization: float        # useful MACs / (R * C * L * cycles)
    bound: str                # "compute-bound" / "memory-bound"
    conmerge_utilization: float  # outputs computed / (R * C * passes of one K-split)
    groups: int = 1
    group_cols: int = 0       # G (col-group), 0 for row-block
    k_chunks: int = 1         # WMEM K-chunks (col-group; > 1: partial sums spill)
    bank_map: str = ""
    charged: tuple = field(default=("gb_wmem", "gb_imem"))  # byte counters the cycles pay
    preload_bytes: int = 0    # of gb_omem: outputs preloaded (Y_d, H_d); the rest re-reads
    #                           spilled partial sums (col-group K-chunks)

    @property
    def bytes_total(self) -> int:
        return int(sum(self.bytes.values()))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["charged"] = list(self.charged)
        d["bytes_total"] = self.bytes_total
        return d


def _bits_to_bytes(bits) -> int:
    return int(math.ceil(bits / 8))


def _check_bw(cfg: Config, bw):
    b = cfg.gb_bytes_per_cycle if bw is None else bw
    if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
        raise ExionError(f"bandwidth = {b!r} bytes per cycle is invalid: must be an integer >= 1")
    return int(b)


def _check_dims(M, N, K):
    for nm, v in (("M", M), ("N", N), ("K", K)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ExionError(f"gemm_flow: {nm} = {v!r} must be an integer >= 1")


def _useful(M, N, K, omask, imask) -> int:
    om = np.ones((M, N), bool) if omask is None else omask
    if imask is None:
        return int(om.sum()) * K
    nnz = imask.sum(axis=1).astype(np.int64)
    return int((om.sum(axis=1).astype(np.int64) * nnz).sum())


def gemm_flow(cfg: Config, M: int, N: int, K: int, *, mask=None, input_mask=None,
              dataflow: str = "col-group", bw: int | None = None, merge_ways: int | None = None,
              bank_map: str = DEFAULT_BANK_MAP, out_bits: int | None = None,
              preload_bits: int = 0, name: str = "gemm") -> GemmFlow:
    """One GEMM ``A (M x K) @ B (K x N)`` under ``dataflow`` at ``bw`` bytes per cycle.

    ``mask`` (M, N): output mask (None = dense); ``input_mask`` (M, K): which input elements
    may be non-zero (input-sparse product). ``out_bits``: bits per result written back
    (default W); ``preload_bits``: bits per output loaded into OMEM before accumulating
    (FFN-Reuse FC2 delta: A). ``merge_ways`` defaults to the config's m.
    """
    _check_dims(M, N, K)
    if dataflow not in DATAFLOWS + ENGINE_FLOWS:
        raise ExionError(f"dataflow = {dataflow!r} is not one of "
                         f"{', '.join(DATAFLOWS + ENGINE_FLOWS)}")
    if bank_map not in BANK_MAPS:
        raise ExionError(f"bank_map = {bank_map!r} is not one of {', '.join(BANK_MAPS)}")
    bw = _check_bw(cfg, bw)
    m = cfg.check_merge_ways(merge_ways)   # the one check of the run-time m
    omask = None if mask is None else check_mask(mask, "mask", (M, N))
    imask = None if input_mask is None else check_mask(input_mask, "input_mask", (M, K))
    ob = cfg.width if out_bits is None else int(out_bits)
    if dataflow in ENGINE_FLOWS:
        return _engine_flow(cfg, M, N, K, omask, imask, bw, m, name, dataflow)
    if dataflow == "row-block":
        return _row_block(cfg, M, N, K, omask, imask, bw, m, name, ob, int(preload_bits))
    return _col_group(cfg, M, N, K, omask, imask, bw, m, bank_map, name, ob,
                      int(preload_bits))


# ---- the built engine: golden.cycles.engine_cycles --------------------------------------
def _engine_flow(cfg, M, N, K, omask, imask, bw, m, name, dataflow):
    """A GEMM through the gemm engine's exact model (``ENGINE_FLOWS``). Bytes: ``gb_wmem``
    the weight fetch (charged, as the engine counts it), ``gb_imem`` the A the host writes
    into IMEM per run (not charged: the engine has no IMEM loader), no OMEM traffic (the host
    writes and reads OMEM between runs). ``k_words`` = the passes' L-words streamed,
    ``groups`` = runs. Where the masks leave a column or a K row unneeded by every row, the
    host also tries the compacted product (``engine_cycles(compact="auto")``: the unneeded
    weights never loaded) and keeps the faster [choice, issue 17]."""
    from .cycles import engine_cycles
    mask = np.ones((M, N), bool) if omask is None else omask
    flows = ("row-block", "col-group") if dataflow == "engine-best" else (dataflow[7:],)
    best = None
    for df in flows:
        e = engine_cycles(cfg, mask, K, dataflow=df, gb_bytes=bw, merge_ways=m,
                          input_mask=imask, k_chunk="auto",
                          striped="auto" if df == "col-group" else False, compact="auto")
        if best is None or e["cycles"] < best[1]["cycles"]:
            best = (df, e)
    df, e = best
    passes = sum(t["passes"] for t in e["tiles"])
    by = {"gb_wmem": int(e["bytes"]["gb_wmem"]), "gb_imem": int(e["host_a_bytes"]),
          "gb_omem": 0, "omem_gb": 0}
    useful = e["useful_macs"]
    return GemmFlow(
        name=name, dataflow=f"engine-{df}" + ("-striped" if e["striped"] else "")
        + ("-compact" if e["compact"] else ""), M=M, N=N,
        K=K, bw=bw, passes=passes,
        k_words=sum(t["passes"] * t["kwords"] for t in e["tiles"]),
        compute_cycles=int(e["compute_cycles"]), stall_cycles=int(e["stall_cycles"]),
        cycles=int(e["cycles"]), bytes=by, useful_macs=int(useful),
        utilization=float(e["utilization"]), bound=e["bound"],
        conmerge_utilization=(int(mask.sum()) * e["k_splits"]
                              / (cfg.rows * cfg.cols * passes) if passes else 0.0),
        groups=len(e["tiles"]), k_chunks=int(e["k_splits"]), charged=("gb_wmem",))


# ---- row-block: golden.cycles, plus bytes per memory ----------------------------------
def _row_block(cfg, M, N, K, omask, imask, bw, m, name, out_bits, preload_bits):
    c2 = cfg if bw == cfg.gb_bytes_per_cycle else cfg.replace(gb_bytes_per_cycle=bw)
    plan = dense_plan(cfg, M, N) if omask is None else conmerge(cfg, omask, merge_ways=m)
    g = gemm_cycles(c2, K, plan, mask=omask, input_mask=imask, name=name)
    pl = sdue_pass_list(cfg, plan, K, imask)
    L, W = cfg.lanes, cfg.width
    imem = wmem = 0
    prev_key = prev_blk = None
    for q in range(pl["plan_pass"].size):    # the same walk as golden.cycles._fill
        p, s = int(pl["plan_pass"][q]), int(pl["split"][q])
        k_el = int(pl["k_words"][q]) * L
        blk = (int(plan.row_block[p]), s)
        if blk != prev_blk:
            imem += int((plan.rows[p] >= 0).sum()) * k_el * W
            prev_blk = blk
        mem = plan.members[p]
        key = (s, mem.tobytes())
        if key != prev_key:
            wmem += int((mem >= 0).sum()) * k_el * W
            prev_key = key
    outs = M * N if omask is None else int(omask.sum())
    by = {"gb_wmem": _bits_to_bytes(wmem), "gb_imem": _bits_to_bytes(imem),
          "gb_omem": _bits_to_bytes(outs * preload_bits),
          "omem_gb": _bits_to_bytes(outs * out_bits)}
    cu = outs / (plan.n_passes * cfg.rows * cfg.cols) if plan.n_passes else 0.0
    return GemmFlow(name=name, dataflow="row-block", M=M, N=N, K=K, bw=bw, passes=g.passes,
                    k_words=g.k_words, compute_cycles=g.sdue_cycles, stall_cycles=g.stall,
                    cycles=g.total_cycles, bytes=by, useful_macs=g.useful_macs,
                    utilization=g.useful_macs / (cfg.peak_macs * g.total_cycles)
                    if g.total_cycles else 0.0,
                    bound=g.bound, conmerge_utilization=cu, groups=1, group_cols=0,
                    k_chunks=1, bank_map="", charged=("gb_wmem", "gb_imem"),
                    preload_bytes=by["gb_omem"])


# ---- col-group: bank mapping and ConMerge per (row block, group) ----------------------
def _merge(cvs, subbank, merge_ways: int, window: int):
    """Windowed first-fit merge (SPEC 3.2 step 4) of cvs (ints, walk order) with one more
    rule: at most one member per sub-bank (``subbank`` ids; one read port each). Returns the
    slots' sub-bank masks (bit k = sub-bank k used)."""
    m = merge_ways
    ors: list[int] = []
    cnt: list[int] = []
    used: list[int] = []
    for v, k in zip(cvs, subbank):
        ns = len(ors)
        s = ns - window if ns > window else 0
        bit = 1 << int(k)
        while s < ns and m > 1:
            if cnt[s] < m and not (ors[s] & v) and not (used[s] & bit):
                ors[s] |= v
                cnt[s] += 1
                used[s] |= bit
                break
            s += 1
        else:
            ors.append(v)
            cnt.append(1)
            used.append(bit)
    return used


def bank_slots(cvs, subbank, merge_ways: int, window: int) -> int:
    """Slots of one bank's columns (``bank``/``placed`` mappings): :func:`_merge`'s count."""
    return len(_merge(cvs, subbank, merge_ways, window))


def crossbar_passes(cvs, subbank, merge_ways: int, window: int, cols: int) -> int:
    """Passes of one (row block, group) through a port-limited crossbar: slots merged over
    all the group's columns (at most one member per sub-bank, ``subbank`` = global sub-bank
    id), then packed first-fit into passes of ``cols`` slots in which no sub-bank is read
    twice (one read port per sub-bank per cycle)."""
    p_used: list[int] = []
    p_cnt: list[int] = []
    for u in _merge(cvs, subbank, merge_ways, window):
        for p in range(len(p_used)):
            if p_cnt[p] < cols and not (p_used[p] & u):
                p_used[p] |= u
                p_cnt[p] += 1
                break
        else:
            p_used.append(u)
            p_cnt.append(1)
    return len(p_used)


def _placement(cfg, gmask, n_per_bank, per_sub, m, bank_map):
    """(bank, sub-bank) of each column of a group (``gmask``: (M, G) mask of the group)."""
    G = gmask.shape[1]
    C = cfg.cols
    i = np.arange(G)
    if bank_map in ("bank", "crossbar"):
        return i % C, (i // C) % m
    # placed: by total popcount, descending, into the least-loaded bank with room
    pc = gmask.sum(axis=0)
    order = np.argsort(-pc, kind="stable")
    load = np.zeros(C, np.int64)
    count = np.zeros(C, np.int64)
    subc = np.zeros((C, m), np.int64)
    bank = np.zeros(G, np.int64)
    sub = np.zeros(G, np.int64)
    big = np.iinfo(np.int64).max
    for j in order:
        cand = np.where(count < n_per_bank, load, big)
        c = int(np.argmin(cand))
        sc = np.where(subc[c] < per_sub, subc[c], big)
        k = int(np.argmin(sc))
        bank[j], sub[j] = c, k
        load[c] += pc[j]
        count[c] += 1
        subc[c, k] += 1
    return bank, sub


def _tile_passes(cfg, blk, m, window, bank_map, bank, sub):
    """SDUE passes of one (row block, group) for the block's mask ``blk`` (R', G)."""
    C = cfg.cols
    if bank_map == "crossbar":
        cols = _sorted_cols(blk, "popcount")
        if cols.size == 0:
            return 0
        gsub = bank[cols] * m + sub[cols]
        return crossbar_passes(_pack(blk[:, cols]), gsub, m, window, C)
    if bank is None:
        cols = _sorted_cols(blk, "popcount")
        if cols.size == 0:
            return 0
        slot, _ = merge_columns(_pack(blk[:, cols]), m, window)
        return math.ceil((int(slot.max()) + 1) / C)
    best = 0
    for c in range(C):
        idx = np.flatnonzero(bank == c)
        if idx.size == 0:
            continue
        b = blk[:, idx]
        cols = _sorted_cols(b, "popcount")
        if cols.size == 0:
            continue
        best = max(best, bank_slots(_pack(b[:, cols]), sub[idx[cols]], m, window))
    return best


@dataclass(frozen=True)
class ColGroupPlan:
    """The loop nest :func:`plan_col_group` chose (see the module docstring)."""

    cols: np.ndarray          # needed output columns, in order
    kgath: np.ndarray | None  # needed reduction rows (gathered), None = all K
    Kg: int                   # gathered reduction length
    chunks: list              # K-chunks as (first L-chunk, end L-chunk) of the gathered index
    n_per_bank: int
    per_sub: int              # columns per sub-bank (sub-bank mapping), else 0
    G: int
    estimate: dict


def _chunk_ranges(nq: int, n: int) -> list:
    """``n`` balanced contiguous ranges of ``nq`` L-chunks (the first ``nq % n`` longer)."""
    out, q = [], 0
    for i in range(n):
        w = nq // n + (1 if i < nq % n else 0)
        out.append((q, q + w))
        q += w
    return out


def _splits(beats: int, cap: int) -> list:
    """IMEM splits of ``beats`` beats, balanced, each <= ``cap`` (golden.cycles' rule)."""
    if beats <= 0:
        return []
    n = math.ceil(beats / cap)
    return [beats // n + (1 if s < beats % n else 0) for s in range(n)]


def plan_col_group(cfg: Config, M: int, N: int, K: int, omask=None, imask=None, *,
                   bw: int | None = None, merge_ways: int | None = None,
                   bank_map: str = DEFAULT_BANK_MAP, out_bits: int | None = None,
                   preload_bits: int = 0) -> ColGroupPlan:
    """Choose the number of WMEM K-chunks (and so the group width G) for ``col-group``.

    Capacity: a column of a chunk of ``kw`` words needs ``kw`` words of a bank side
    (``wmem_words``); with ConMerge under the ``bank``/``placed`` mappings (m > 1) a column
    lives in one sub-bank side (``wmem_words // m`` words). ``n`` columns per bank, at most
    ``max(1, omem_depth // 2 // C)`` (a row block's G results per OMEM bank, two halves).
    Estimate per candidate: compute = row blocks x ceil(columns / C) x sum over chunks and
    IMEM splits of ``max(split, C)``; reads = groups x A + B + OMEM preloads (Y_d, spilled
    partial sums); writes = results + spilled partial sums. The candidate with the least
    ``max(compute, reads / bw, writes / bw)`` wins; ties go to fewer bytes, then fewer chunks.
    """
    bw = _check_bw(cfg, bw)
    R, C, L, W, A = cfg.rows, cfg.cols, cfg.lanes, cfg.width, cfg.acc_width
    m = cfg.check_merge_ways(merge_ways)
    ob = W if out_bits is None else out_bits
    cols = np.arange(N) if omask is None else np.flatnonzero(omask.any(axis=0))
    if imask is None:
        kg, Kg = None, K
    else:
        kg = np.flatnonzero(imask.any(axis=0))
        Kg = int(kg.size)
    nb = math.ceil(M / R)
    nq = math.ceil(Kg / L)
    sub_map = omask is not None and bank_map != "ideal" and m > 1
    n_omem = max(1, cfg.omem_depth // 2 // C)
    cap_i = cfg.imem_words
    ncols = int(cols.size)
    outs = M * ncols if omask is None else int(omask.sum())
    a_bits = M * Kg * W
    b_bits = ncols * Kg * W
    best = None
    if ncols == 0 or nq == 0:
        return ColGroupPlan(cols, kg, Kg, [], 1, 0, C, {"empty": True})
    for n_kw in range(1, nq + 1):
        ranges = _chunk_ranges(nq, n_kw)
        kw = ranges[0][1] - ranges[0][0]
        if sub_map:
            per_sub = (cfg.wmem_words // m) // kw
            n = m * per_sub
        else:
            per_sub = 0
            n = cfg.wmem_words // kw
        if n == 0:
            continue
        n = min(n, n_omem)
        if sub_map:
            per_sub = math.ceil(n / m)
        G = C * n
        groups = math.ceil(ncols / G)
        comp = nb * math.ceil(ncols / C) * sum(max(s, C) for (q0, q1) in ranges
                                               for s in _splits(q1 - q0, cap_i))
        spill = (n_kw - 1) * outs * A
        reads = groups * a_bits + b_bits + spill + outs * preload_bits
        writes = outs * ob + spill
        t = max(comp, reads / 8 / bw, writes / 8 / bw)
        est = {"k_chunks": n_kw, "G": G, "groups": groups, "compute": comp,
               "read_bytes": reads / 8, "write_bytes": writes / 8, "time": t}
        key = (math.ceil(t), reads + writes)
        if best is None or key < best[0]:
            best = (key, ranges, n, per_sub, G, est)
        if n == n_omem:
            break                     # more chunks cannot widen the group any further
    if best is None:
        raise ExionError(f"col-group: no column of K = {K} fits a WMEM "
                         f"{'sub-bank' if sub_map else 'bank'} side of config {cfg.name!r}")
    _, ranges, n, per_sub, G, est = best
    return ColGroupPlan(cols, kg, Kg, ranges, n, per_sub, G, est)


class _Channel:
    """A global-buffer channel of ``bw`` bytes per cycle, allocated in priority order.

    ``alloc(release, nbytes)`` takes the earliest free capacity at or after ``release``,
    possibly in several gaps (requests allocated earlier have priority and keep theirs):
    a preemptive priority schedule of a fluid channel. Returns the finish time.
    """

    def __init__(self, bw: float):
        self.bw = float(bw)
        self.starts = [0.0]
        self.ends = [math.inf]

    def alloc(self, release: float, nbytes: float) -> float:
        if nbytes <= 0:
            return release
        need = nbytes / self.bw
        i = max(0, bisect.bisect_right(self.starts, release) - 1)
        while self.ends[i] <= release:
            i += 1
        finish = release
        while need > 0:
            s, e = self.starts[i], self.ends[i]
            st = max(s, release)
            take = min(need, e - st)
            ns, ne = [], []
            if st > s:
                ns.append(s)
                ne.append(st)
            if st + take < e:
                ns.append(st + take)
                ne.append(e)
            self.starts[i:i + 1] = ns
            self.ends[i:i + 1] = ne
            need -= take
            finish = st + take
            i += 1 if st > s else 0
        return finish


def _col_group(cfg, M, N, K, omask, imask, bw, m, bank_map, name, out_bits, preload_bits):
    R, C, L, W, A = cfg.rows, cfg.cols, cfg.lanes, cfg.width, cfg.acc_width
    window = cfg.w_open
    plan = plan_col_group(cfg, M, N, K, omask, imask, bw=bw, merge_ways=m, bank_map=bank_map,
                          out_bits=out_bits, preload_bits=preload_bits)
    useful = _useful(M, N, K, omask, imask)
    sub_map = omask is not None and bank_map != "ideal" and m > 1
    nb = math.ceil(M / R)
    cap_i = cfg.imem_words
    cols = plan.cols
    # per row block: rows present, gathered non-zero L-chunks
    nq = math.ceil(plan.Kg / L) if plan.Kg else 0
    if imask is not None and plan.Kg:
        gi = imask[:, plan.kgath]
        pad = np.zeros((M, nq * L), bool)
        pad[:, :plan.Kg] = gi
        chunk_nz = pad.reshape(M, nq, L).any(axis=2)          # (M, nq)
        row_nz = gi.any(axis=1)
    else:
        chunk_nz = None
        row_nz = np.ones(M, bool)
    steps = []      # (q, tile, compute, a_bytes, passes, beats)
    tiles = []      # (preload_bytes, write_bytes, producer tile or -1)
    wbytes = []     # per chunk-of-group q: weight bytes
    passes_total = beats_total = one_split_passes = 0
    outs_computed = preload_bits_total = 0
    for g0 in range(0, cols.size, plan.G):
        gcols = cols[g0:g0 + plan.G]
        Gv = gcols.size
        gmask = None if omask is None else omask[:, gcols]
        bank = sub = None
        if gmask is not None and bank_map != "ideal":
            bank, sub = _placement(cfg, gmask, plan.n_per_bank,
                                   plan.per_sub if sub_map else plan.n_per_bank, m, bank_map)
        # passes, rows and outputs of each row block against this group
        tp = []
        for b in range(nb):
            r0, r1 = b * R, min(M, b * R + R)
            if gmask is None:
                rows = int(row_nz[r0:r1].sum())
                P = math.ceil(Gv / C) if rows else 0
                outs = rows * Gv
            else:
                blk = gmask[r0:r1]
                rows = int(blk.any(axis=1).sum())
                P = _tile_passes(cfg, blk, m, window, bank_map, bank, sub) if rows else 0
                outs = int(blk.sum())
            tp.append((P, rows, outs))
            one_split_passes += P
            outs_computed += outs
        last_tile = {}
        for q0, q1 in plan.chunks:
            q = len(wbytes)
            k_el = min(q1 * L, plan.Kg) - q0 * L
            wbytes.append(Gv * k_el * W / 8)
            for b in range(nb):
                P, rows, outs = tp[b]
                if P == 0:
                    continue
                r0, r1 = b * R, min(M, b * R + R)
                beats = (q1 - q0) if chunk_nz is None else \
                    int(chunk_nz[r0:r1, q0:q1].any(axis=0).sum())
                if beats == 0:
                    continue
                prev = last_tile.get(b, -1)
                pre_bits = (outs * preload_bits) if prev < 0 else outs * A
                if prev < 0:
                    preload_bits_total += outs * preload_bits
                t = len(tiles)
                tiles.append([pre_bits / 8, outs * out_bits / 8, prev])
                if prev >= 0:
                    tiles[prev][1] = outs * A / 8     # it spills partial sums instead
                last_tile[b] = t
                for s in _splits(beats, cap_i):
                    steps.append((q, t, P * max(s, C), rows * s * L * W / 8, P, s))
                    passes_total += P
                    beats_total += P * s
    compute = sum(s[2] for s in steps)
    fixed = sdue_fixed(cfg) if steps else 0
    cyc = _simulate(steps, tiles, wbytes, bw)
    total = math.ceil(max(cyc[0] + fixed, cyc[1])) if steps else 0
    by = {"gb_wmem": _bits_to_bytes(8 * sum(wbytes)),
          "gb_imem": _bits_to_bytes(8 * sum(s[3] for s in steps)),
          "gb_omem": _bits_to_bytes(8 * sum(t[0] for t in tiles)),
          "omem_gb": _bits_to_bytes(8 * sum(t[1] for t in tiles))}
    reads = by["gb_wmem"] + by["gb_imem"] + by["gb_omem"]
    comp_c = compute + fixed
    mem_c = max(reads, by["omem_gb"]) / bw
    cu = outs_computed / (one_split_passes * R * C) if one_split_passes else 0.0
    return GemmFlow(name=name, dataflow="col-group", M=M, N=N, K=K, bw=bw,
                    passes=passes_total, k_words=beats_total, compute_cycles=comp_c,
                    stall_cycles=total - comp_c, cycles=total, bytes=by, useful_macs=useful,
                    utilization=useful / (cfg.peak_macs * total) if total else 0.0,
                    bound="memory-bound" if mem_c > compute else "compute-bound",
                    conmerge_utilization=cu, groups=math.ceil(cols.size / plan.G)
                    if cols.size else 0, group_cols=plan.G, k_chunks=len(plan.chunks),
                    bank_map=bank_map if omask is not None else "",
                    charged=BYTE_KEYS, preload_bytes=_bits_to_bytes(preload_bits_total))


def _simulate(steps, tiles, wbytes, bw):
    """Event model of the double-buffered fills (module docstring). Returns
    ``(end of the last step, end of the last write-back)``."""
    rd, wr = _Channel(bw), _Channel(bw)
    nq = len(wbytes)
    q_end = [0.0] * nq
    w_done = [None] * nq
    t_first = {}
    wb_end = [0.0] * len(tiles)
    ends: list[float] = []
    e_prev = 0.0
    for i, (q, t, comp, a_b, npass, _) in enumerate(steps):
        ready = e_prev
        if t not in t_first:
            t_first[t] = i
            pre_b, _, prod = tiles[t]
            rel = wb_end[t - 2] if t >= 2 else 0.0
            if prod >= 0:
                rel = max(rel, wb_end[prod])
            ready = max(ready, rel, rd.alloc(rel, pre_b))
        a_rel = ends[i - 2] if i >= 2 else 0.0
        ready = max(ready, rd.alloc(a_rel, a_b))
        if w_done[q] is None:
            # the chunk's weights arrive in pass order: pass p may start once its columns
            # are in, so the step ends no earlier than the last weights + one pass
            rel = q_end[q - 2] if q >= 2 else 0.0
            w_done[q] = rd.alloc(rel, wbytes[q])
            end = max(ready + comp, w_done[q] + comp / npass)
        else:
            end = max(ready, w_done[q]) + comp
        ends.append(end)
        e_prev = end
        q_end[q] = end
        if i + 1 == len(steps) or steps[i + 1][1] != t:
            # results leave pass by pass: from the end of the step's first pass, the last
            # pass's share no earlier than the end of the step
            wb = tiles[t][1]
            rel = end - (npass - 1) * comp / npass
            wb_end[t] = max(wr.alloc(rel, wb), end + wb / npass / bw)
    return (e_prev, max(wb_end) if wb_end else 0.0)
