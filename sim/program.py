"""Host-side programs for the SDUE: memory images and pass descriptors for one product.

This is the loader's job in EXION (filling IMEM/WMEM from the global buffer), written as
plain NumPy so that benches, the CLI and the cycle-model comparison share it. Imports no
Amaranth.

Layout choices (documented in docs/sdue.md):

* Passes follow :func:`exion.golden.cycles.sdue_pass_list` (plan order, K-splits expanded,
  later splits accumulate). Input-sparse products stream only the row block's non-zero
  L-chunks (:func:`exion.golden.conmerge.reduction_chunks`), gathered by the loader.
* IMEM: each (row block, K-split) gets ``k_words`` consecutive words; DPU row r reads bank r
  (i_sw identity) which holds ``A[rows[r]]``. With ``isel`` (a permutation of the R banks)
  row r reads bank ``isel[r]`` instead and the loader puts ``A[rows[r]]`` there: the same
  results through a non-trivial i_sw (the RTL tests use it to exercise the switch).
* WMEM: member k of every slot of a pass reads ``wbase[k] + beat`` in bank c; a region holds
  ``B[k-range, members[c, k]]``. Identical regions (same columns, same K-split) are reused,
  so dense passes over several row blocks load their weights once.
* OMEM: each row block's outputs live in an N-entry region (bank r = DPU row r, address
  ``obase + column``), so ``N <= omem_depth``. A batch holds at most ``omem_depth // N`` row
  blocks; the host preloads each region with the previous output (what FFN-Reuse reuses)
  and reads it back after the batch.
* A batch is the longest run of passes whose IMEM, WMEM and OMEM needs fit both sides of the
  memories; it runs back to back from idle. Cycles of a batch follow
  :func:`exion.golden.cycles.sdue_cycles`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from exion.config import Config
from exion.errors import ExionError
from exion.golden.conmerge import ConMergePlan, reduction_chunks
from exion.golden.cycles import sdue_pass_list

__all__ = ["Batch", "Program", "build_program"]


@dataclass
class Batch:
    imem: dict = field(default_factory=dict)   # word address -> (R, L) int array
    wmem: dict = field(default_factory=dict)   # word address -> (C, L) int array
    descs: list = field(default_factory=list)  # pass_layout values (nested dict/list)
    k_words: list = field(default_factory=list)
    regions: dict = field(default_factory=dict)  # row block -> OMEM base


@dataclass
class Program:
    M: int
    N: int
    R: int
    rows: dict            # row block -> (R,) original rows (-1 past M)
    prev: np.ndarray      # (M, N) OMEM contents before the product
    batches: list

    @property
    def n_passes(self) -> int:
        return sum(len(b.descs) for b in self.batches)


def build_program(cfg: Config, a, b, plan: ConMergePlan, prev=None, accumulate: bool = False,
                  input_sparse: bool = False, isel=None) -> Program:
    R = cfg.rows
    isel = list(range(R)) if isel is None else [int(v) for v in isel]
    if sorted(isel) != list(range(R)):
        raise ExionError(f"isel must be a permutation of the {R} IMEM banks, got {isel}")
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    M, K = a.shape
    N = b.shape[1]
    R, C, L, m = cfg.rows, cfg.cols, cfg.lanes, cfg.merge_ways
    cfg.check_merge_ways(plan.merge_ways)   # the run's m: 1..cfg.merge_ways weight buses
    if N > cfg.omem_depth:
        raise ExionError(f"N = {N} output columns exceed omem_depth = {cfg.omem_depth}: split "
                         f"the product into column groups of at most {cfg.omem_depth}")
    prev = np.zeros((M, N), np.int64) if prev is None else np.asarray(prev, np.int64)
    pl = sdue_pass_list(cfg, plan, K, input_mask=(a != 0) if input_sparse else None)
    nb = math.ceil(M / R)
    rows = {blk: np.array([blk * R + r if blk * R + r < M else -1 for r in range(R)])
            for blk in range(nb)}
    # K positions streamed per row block (before splitting), as element indices.
    kpos = {}
    for blk in range(nb):
        if input_sparse:
            rr = rows[blk][rows[blk] >= 0]
            ch = reduction_chunks(cfg, a[rr])
            if ch.size == 0:
                ch = np.zeros(1, np.int64)  # one beat of zeros still writes the outputs
        else:
            ch = np.arange(math.ceil(K / L))
        kpos[blk] = ch
    imem_cap, wmem_cap = 2 * cfg.imem_words, 2 * cfg.wmem_words
    regions_cap = max(1, cfg.omem_depth // N)

    batches: list[Batch] = []
    cur = Batch()
    i_used = w_used = 0
    i_regions: dict = {}
    w_regions: dict = {}

    def new_batch():
        nonlocal cur, i_used, w_used, i_regions, w_regions
        batches.append(cur)
        cur, i_used, w_used, i_regions, w_regions = Batch(), 0, 0, {}, {}

    def split_words(blk, split, kw):
        ch = kpos[blk]
        # the K-split rule (Config.k_splits), as sdue_pass_list applies it
        sizes = cfg.k_splits(len(ch), plan.merge_ways)
        start = sum(sizes[:split])
        return ch[start:start + kw]

    for idx in range(len(pl["plan_pass"])):
        p = int(pl["plan_pass"][idx])
        split = int(pl["split"][idx])
        kw = int(pl["k_words"][idx])
        blk = int(plan.row_block[p])
        members = plan.members[p].astype(np.int64)   # (C, pm)
        select = plan.select[p].astype(np.int64)     # (R, C)
        pm = members.shape[1]
        chunks = split_words(blk, split, kw)
        kidx = (chunks[:, None] * L + np.arange(L)[None, :]).ravel()   # (kw*L,)
        kvalid = kidx < K
        kidx = np.where(kvalid, kidx, 0)
        ikey = (blk, split)
        # member k of every slot reads one WMEM region; a member empty in every slot needs none
        used = [bool(np.any(members[:, k] >= 0)) for k in range(pm)]
        wkeys = [(split, blk if input_sparse else -1, tuple(members[:, k])) if used[k] else None
                 for k in range(pm)]
        need_i = 0 if ikey in i_regions else kw
        need_w = sum(kw for k in set(wkeys) - {None} if k not in w_regions)
        need_o = 0 if blk in cur.regions else 1
        if cur.descs and (i_used + need_i > imem_cap or w_used + need_w > wmem_cap or
                          len(cur.regions) + need_o > regions_cap):
            new_batch()
            need_i, need_w = kw, sum(kw for _ in set(wkeys) - {None})
        if kw > imem_cap or need_w > wmem_cap:
            raise ExionError(f"one pass needs {kw} IMEM and {need_w} WMEM words; config "
                             f"{cfg.name!r} holds {imem_cap} and {wmem_cap}")
        if ikey not in i_regions:
            base = i_used
            rws = rows[blk]
            data = np.zeros((R, kw * L), np.int64)
            for r in range(R):
                if rws[r] >= 0:
                    data[isel[r]] = np.where(kvalid, a[rws[r], kidx], 0)
            for w in range(kw):
                cur.imem[base + w] = data[:, w * L:(w + 1) * L]
            i_regions[ikey] = base
            i_used += kw
        wbase = []
        for k in range(m):
            if k >= pm or wkeys[k] is None:
                wbase.append(0)
                continue
            key = wkeys[k]
            if key not in w_regions:
                base = w_used
                data = np.zeros((C, kw * L), np.int64)
                for c in range(C):
                    j = members[c, k]
                    if j >= 0:
                        data[c] = np.where(kvalid, b[kidx, j], 0)
                for w in range(kw):
                    cur.wmem[base + w] = data[:, w * L:(w + 1) * L]
                w_regions[key] = base
                w_used += kw
            wbase.append(w_regions[key])
        if blk not in cur.regions:
            cur.regions[blk] = len(cur.regions) * N
        valid_rows = rows[blk] >= 0
        desc = {
            "ibase": i_regions[ikey],
            "kwords": kw,
            "wbase": wbase,
            "isel": list(isel),
            "sel": [[{"idx": int(max(select[r, c], 0)),
                      "valid": int(select[r, c] >= 0 and valid_rows[r])}
                     for c in range(C)] for r in range(R)],
            "col": [[int(max(members[c, k], 0)) if k < pm else 0 for k in range(m)]
                    for c in range(C)],
            "obase": cur.regions[blk],
            "accumulate": int(accumulate or split > 0),
        }
        cur.descs.append(desc)
        cur.k_words.append(kw)
    if cur.descs:
        batches.append(cur)
    return Program(M, N, R, rows, prev, batches)
