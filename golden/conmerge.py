"""Masked GEMM and ConMerge (SPEC 3.1, 3.2): the golden model of the CAU and the SDUE passes.

Vocabulary
----------
*Row block* b: the R consecutive rows ``b*R .. b*R+R-1`` of the M x N output mask (the last
block may be partial; its missing rows are ``-1`` in :attr:`Pass.rows`). *Conflict vector*
(cv) of column j in a row block: the R-bit vector ``cv[j][r] = mask[b*R + r, j]``; as an
integer, bit r is row r. *Slot*: a merged column, up to m original columns with pairwise
disjoint cvs. *Pass*: C consecutive slots of one row block, computed by the R x C DPU array.

Choices (also in ``docs/golden-conmerge.md``)
----------------------------------------------
* **Row order**: natural. Row block b holds rows ``b*R .. b*R+R-1``; blocks are processed in
  increasing b and passes never mix row blocks (SPEC 3.2 allows an optional row order; none
  is applied here, so the i_sw of the SDUE maps DPU row r to IMEM bank r).
* **Sort** ``"popcount"`` (default): non-zero columns ordered by popcount(cv) descending,
  ties by column index ascending -- a stable counting sort over the R+1 popcounts, computed
  here as ``np.argsort(-popcount, kind="stable")``, which is the same permutation.
  ``"none"``: non-zero columns in column-index order.
* **Merge window**: the candidates for a column are the ``W_open`` most recently *opened*
  slots of the current row block (a sliding window over slot creation order, full slots
  included; a full slot simply fails the "fewer than m members" test). The column joins the
  *oldest* candidate (lowest slot index) with fewer than m members and no conflict, else it
  opens a new slot. In hardware this is a shift register of ``W_open`` slot registers (OR of
  member cvs + member count); the oldest slot retires when a new one is opened, so slot
  ``s`` is final once slot ``s + W_open`` exists and passes can be emitted in slot order
  with a bounded buffer. ``W_open`` defaults to ``cfg.w_open`` (C unless configured).
* **Member order** inside a slot: join order; member 0 opened the slot. ``Pass.members`` is
  packed (valid entries first, ``-1`` after). ``Pass.select[r, c]`` is the index k of the
  member of slot c whose cv has bit r, ``-1`` if none (DPU idles).
* **Slots to passes**: slots of a row block are taken C at a time in slot order; the last
  pass of a block may have fewer than C slots (missing slots have all members ``-1``).
  A row block whose mask is all zero produces no pass.
* **m = 1** is condense-only (every non-zero column is its own slot).
* **Exactness / speed**: products of W-bit operands are summed exactly. When
  ``K * 2**(2W-2) < 2**53`` every partial sum is an integer exactly representable in float64,
  so a float64 BLAS product is bit-exact and is used; otherwise int64 (also exact below
  ``k_max``). Results are wrapped to A bits (never changes a value inside ``k_max``).
* ``out`` arguments are never modified: functions return a new int64 array equal to ``out``
  (or zeros) except at the computed positions. This models OMEM: positions the mask skips
  keep whatever the buffer held (FFN-Reuse reuses cached values that way).
* **Input (reduction) condensing**: per row block, the K-chunks of L elements (chunk q covers
  ``k in [q*L, q*L+L)``; the last one is zero-padded) that contain a non-zero element of any
  of the block's rows are streamed, in increasing order; the others are skipped. Skipped
  chunks contribute exactly zero, so the result is identical.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from exion.config import Config
from exion.errors import ExionError

from .quant import check_k, check_operand, wrap

__all__ = [
    "Pass", "ConMergePlan", "masked_gemm", "check_mask", "conflict_vectors", "cv_ints",
    "sort_columns", "merge_columns", "conmerge", "dense_plan", "check_plan", "execute_plan",
    "reduction_chunks", "row_block_chunks", "pass_k_words", "SORTS", "CauPasses", "cau",
    "sdue",
]

SORTS = ("popcount", "none")


# ----------------------------------------------------------------------------------------
# input checking and the exact product
# ----------------------------------------------------------------------------------------
def check_mask(mask, name: str = "mask", shape: tuple[int, int] | None = None) -> np.ndarray:
    """Return ``mask`` as a 2-D bool array; refuse other dimensions or non-0/1 values."""
    a = np.asarray(mask)
    if a.ndim != 2:
        raise ExionError(f"{name}: expected a 2-D boolean array, got shape {a.shape}")
    if a.dtype.kind != "b":
        if a.dtype.kind not in "iuf" or (a.size and not np.all((a == 0) | (a == 1))):
            raise ExionError(f"{name}: expected boolean (0/1) values, got dtype {a.dtype}"
                             + (" with values outside {0, 1}" if a.dtype.kind in "iuf"
                                else ""))
        a = a != 0
    if shape is not None and a.shape != tuple(shape):
        raise ExionError(f"{name}: shape {a.shape} does not match the product's output "
                         f"shape {tuple(shape)}")
    return a


def _check_out(out, shape, name="out") -> np.ndarray:
    if out is None:
        return np.zeros(shape, dtype=np.int64)
    o = np.asarray(out)
    if o.shape != tuple(shape):
        raise ExionError(f"{name}: shape {o.shape} does not match the product's output "
                         f"shape {tuple(shape)}")
    if o.dtype.kind not in "iu":
        raise ExionError(f"{name}: expected integers, got dtype {o.dtype}")
    return o.astype(np.int64, copy=True)


def _check_product(cfg: Config, a, b):
    a = check_operand(cfg, a, "A", ndim=2)
    b = check_operand(cfg, b, "B", ndim=2)
    if a.shape[1] != b.shape[0]:
        raise ExionError(f"shapes do not chain: A is {a.shape}, B is {b.shape} "
                         f"(A columns must equal B rows)")
    check_k(cfg, a.shape[1])
    return a, b


def _exact_dot(cfg: Config, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer ``a @ b`` of W-bit int64 operands (see the module notes on float64)."""
    k = a.shape[1]
    if k * 2 ** (2 * cfg.width - 2) < 2 ** 53:
        return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a @ b


def masked_gemm(cfg: Config, a, b, mask, out=None, accumulate: bool = False) -> np.ndarray:
    """Exact A-bit ``C = A @ B`` only where ``mask`` is 1 (SPEC 3.1).

    ``a`` (M, K) and ``b`` (K, N) are W-bit integer operands (checked like
    :func:`~exion.golden.quant.int_matmul`, K <= ``cfg.k_max``); ``mask`` is (M, N) boolean.
    Returns a new int64 (M, N) array: at masked positions ``wrap(A @ B)`` (or
    ``wrap(out + A @ B)`` with ``accumulate``), elsewhere ``out`` unchanged (0 if ``out`` is
    None). ``out`` itself is not modified.
    """
    a, b = _check_product(cfg, a, b)
    M, N = a.shape[0], b.shape[1]
    mask = check_mask(mask, "mask", (M, N))
    res = _check_out(out, (M, N))
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return res
    full = _exact_dot(cfg, a[rows], b[:, cols])
    sub = mask[np.ix_(rows, cols)]
    ri, ci = np.nonzero(sub)
    val = full[ri, ci]
    if accumulate:
        val = val + res[rows[ri], cols[ci]]
    res[rows[ri], cols[ci]] = wrap(val, cfg.acc_width)
    return res


# ----------------------------------------------------------------------------------------
# conflict vectors, sort, merge
# ----------------------------------------------------------------------------------------
def _block(cfg: Config, mask_block) -> np.ndarray:
    blk = check_mask(mask_block, "mask_block")
    if blk.shape[0] > cfg.rows:
        raise ExionError(f"mask_block: {blk.shape[0]} rows exceed the row-block size "
                         f"R = {cfg.rows} of config {cfg.name!r}")
    return blk


def conflict_vectors(cfg: Config, mask_block) -> np.ndarray:
    """Conflict vectors of a row block: bool (N, R), ``cv[j, r] = mask_block[r, j]``.

    ``mask_block`` is (R', N) with R' <= R (a partial last block); rows R'..R-1 are False.
    """
    blk = _block(cfg, mask_block)
    cv = np.zeros((blk.shape[1], cfg.rows), dtype=bool)
    cv[:, :blk.shape[0]] = blk.T
    return cv


def cv_ints(cfg: Config, mask_block) -> list[int]:
    """Conflict vectors as Python ints (bit r = row r of the block), one per column."""
    blk = _block(cfg, mask_block)
    return _pack(blk)


def _pack(blk: np.ndarray) -> list[int]:
    r = blk.shape[0]
    if r <= 62:
        w = np.left_shift(np.int64(1), np.arange(r, dtype=np.int64))
        return (blk.T.astype(np.int64) @ w).tolist() if r else [0] * blk.shape[1]
    by = np.packbits(blk, axis=0, bitorder="little")  # (ceil(r/8), N)
    return [int.from_bytes(by[:, j].tobytes(), "little") for j in range(blk.shape[1])]


def sort_columns(cfg: Config, mask_block, sort: str = "popcount") -> np.ndarray:
    """Condense + sort (SPEC 3.2 steps 2-3): the non-zero columns of a row block, in order.

    ``"popcount"``: popcount(cv) descending, ties by column index ascending;
    ``"none"``: column index ascending.
    """
    blk = _block(cfg, mask_block)
    return _sorted_cols(blk, _check_sort(sort))


def _check_sort(sort):
    if sort not in SORTS:
        raise ExionError(f"sort = {sort!r} is not a sorting strategy; choose one of "
                         f"{', '.join(SORTS)}")
    return sort


def _sorted_cols(blk: np.ndarray, sort: str) -> np.ndarray:
    pc = blk.sum(axis=0)
    nz = np.flatnonzero(pc)
    if sort == "popcount":
        nz = nz[np.argsort(-pc[nz], kind="stable")]
    return nz


def merge_columns(cvs, merge_ways: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Windowed first-fit merge (SPEC 3.2 step 4) of cvs given in walk order.

    ``cvs``: conflict vectors as Python ints, already condensed (non-zero) and sorted.
    Returns ``(slot, k)``: for each input column, its slot index (slots numbered in opening
    order) and its member index inside the slot.
    """
    n = len(cvs)
    if merge_ways == 1:
        r = np.arange(n, dtype=np.int64)
        return r, np.zeros(n, dtype=np.int64)
    m, w = merge_ways, window
    slot = [0] * n
    kk = [0] * n
    ors: list[int] = []
    cnt: list[int] = []
    for i, v in enumerate(cvs):
        ns = len(ors)
        s = ns - w if ns > w else 0
        while s < ns:
            if cnt[s] < m and not (ors[s] & v):
                ors[s] |= v
                kk[i] = cnt[s]
                cnt[s] += 1
                break
            s += 1
        else:
            ors.append(v)
            cnt.append(1)
        slot[i] = s
    return np.asarray(slot, dtype=np.int64), np.asarray(kk, dtype=np.int64)


# ----------------------------------------------------------------------------------------
# passes and plans
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Pass:
    """One SDUE pass: the ConMerge vectors the CAU emits and the cv_switch consumes.

    Attributes
    ----------
    row_block : int
        Row block b (rows ``b*R ..``).
    rows : np.ndarray, (R,) int32
        Original row index per DPU row, -1 beyond M (partial last block).
    members : np.ndarray, (C, m) int32
        Original column index of member k of slot c, -1 = empty (valid entries first).
    select : np.ndarray, (R, C) int32
        Member index k that DPU (r, c) computes, -1 = idle.
    """

    row_block: int
    rows: np.ndarray
    members: np.ndarray
    select: np.ndarray

    def targets(self) -> np.ndarray:
        """(R, C) original column computed by each DPU, -1 = idle."""
        c = np.arange(self.members.shape[0])[None, :]
        j = self.members[c, np.maximum(self.select, 0)]
        return np.where(self.select >= 0, j, -1)


@dataclass(frozen=True, eq=False)
class ConMergePlan:
    """All passes of one masked product, as stacked arrays (``passes`` gives :class:`Pass`).

    ``row_block`` (P,), ``rows`` (P, R), ``members`` (P, C, m), ``select`` (P, R, C).
    """

    M: int
    N: int
    R: int
    C: int
    merge_ways: int
    window: int
    sort: str
    kind: str  # "conmerge" or "dense"
    row_block: np.ndarray
    rows: np.ndarray
    members: np.ndarray
    select: np.ndarray
    masked: int
    condense_passes: int

    @property
    def n_passes(self) -> int:
        return int(self.row_block.shape[0])

    conmerge_passes = n_passes

    @property
    def dense_passes(self) -> int:
        return math.ceil(self.M / self.R) * math.ceil(self.N / self.C)

    def _util(self, passes: int) -> float:
        return self.masked / (passes * self.R * self.C) if passes else 0.0

    @property
    def utilization(self) -> float:
        """masked outputs / (passes * R * C); 0.0 when there is no pass."""
        return self._util(self.n_passes)

    @functools.cached_property
    def passes(self) -> tuple[Pass, ...]:
        return tuple(Pass(int(self.row_block[p]), self.rows[p], self.members[p],
                          self.select[p]) for p in range(self.n_passes))

    def __len__(self) -> int:
        return self.n_passes

    def figures(self) -> dict:
        cells = self.M * self.N
        return {
            "M": self.M, "N": self.N, "R": self.R, "C": self.C,
            "merge_ways": self.merge_ways, "window": self.window, "sort": self.sort,
            "kind": self.kind,
            "masked": self.masked,
            "masked_fraction": self.masked / cells if cells else 0.0,
            "dense_passes": self.dense_passes,
            "condense_passes": self.condense_passes,
            "conmerge_passes": self.n_passes,
            "dense_utilization": self._util(self.dense_passes),
            "condense_utilization": self._util(self.condense_passes),
            "utilization": self.utilization,
        }


def _check_window(cfg: Config, window):
    w = cfg.w_open if window is None else window
    if not isinstance(w, (int, np.integer)) or isinstance(w, bool) or w < 1:
        raise ExionError(f"window = {w!r} is invalid: must be an integer >= 1")
    return int(w)


def _rows_of_block(cfg: Config, b: int, M: int) -> np.ndarray:
    r = b * cfg.rows + np.arange(cfg.rows)
    return np.where(r < M, r, -1).astype(np.int32)


def conmerge(cfg: Config, mask, merge_ways: int | None = None, sort: str = "popcount",
             window: int | None = None) -> ConMergePlan:
    """ConMerge a full (M, N) output mask into passes (SPEC 3.2 steps 1-5).

    Row blocks in natural order; per block: cvs, condense, sort, windowed first-fit merge,
    slots C at a time into passes. ``merge_ways`` is the run's m, 1..``cfg.merge_ways``
    (default: all of them; :meth:`Config.check_merge_ways` is the one check of m), ``window``
    defaults to ``cfg.w_open``; ``sort`` is ``"popcount"`` or ``"none"``.
    """
    mask = check_mask(mask)
    m = cfg.check_merge_ways(merge_ways)
    w = _check_window(cfg, window)
    sort = _check_sort(sort)
    R, C = cfg.rows, cfg.cols
    M, N = mask.shape
    rb_l, rows_l, mem_l, sel_l = [], [], [], []
    condense = 0
    for b in range(math.ceil(M / R)):
        blk = mask[b * R:(b + 1) * R]
        cols = _sorted_cols(blk, sort)
        n = cols.size
        if n == 0:
            continue
        condense += math.ceil(n / C)
        sub = blk[:, cols]
        slot, k = merge_columns(_pack(sub), m, w)
        nslots = int(slot[-1]) + 1 if m == 1 else int(slot.max()) + 1
        npass = math.ceil(nslots / C)
        members = np.full((npass * C, m), -1, dtype=np.int32)
        members[slot, k] = cols
        select = np.full((npass, R, C), -1, dtype=np.int32)
        rr, ii = np.nonzero(sub)
        select[slot[ii] // C, rr, slot[ii] % C] = k[ii]
        rb_l.append(np.full(npass, b, dtype=np.int32))
        rows_l.append(np.broadcast_to(_rows_of_block(cfg, b, M), (npass, R)))
        mem_l.append(members.reshape(npass, C, m))
        sel_l.append(select)
    return _make_plan(cfg, M, N, m, w, sort, "conmerge", rb_l, rows_l, mem_l, sel_l,
                      int(mask.sum()), condense)


def _make_plan(cfg, M, N, m, w, sort, kind, rb_l, rows_l, mem_l, sel_l, masked, condense):
    R, C = cfg.rows, cfg.cols
    if rb_l:
        rb = np.concatenate(rb_l)
        rows = np.concatenate(rows_l).astype(np.int32)
        members = np.concatenate(mem_l)
        select = np.concatenate(sel_l)
    else:
        rb = np.zeros(0, dtype=np.int32)
        rows = np.zeros((0, R), dtype=np.int32)
        members = np.zeros((0, C, m), dtype=np.int32)
        select = np.zeros((0, R, C), dtype=np.int32)
    for arr in (rb, rows, members, select):
        arr.flags.writeable = False
    return ConMergePlan(M=M, N=N, R=R, C=C, merge_ways=m, window=w, sort=sort, kind=kind,
                        row_block=rb, rows=rows, members=members, select=select,
                        masked=masked, condense_passes=condense)


def dense_plan(cfg: Config, M: int, N: int) -> ConMergePlan:
    """Plain tiling as passes: row block b x column tile t, ``members[:, 0] = t*C + c``.

    Order: row blocks outer, column tiles inner. ``masked`` counts all M*N outputs.
    """
    for name, v in (("M", M), ("N", N)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ExionError(f"dense_plan: {name} = {v!r} must be an integer >= 0")
    R, C = cfg.rows, cfg.cols
    nb, nt = math.ceil(M / R), math.ceil(N / C)
    P = nb * nt
    rb = np.repeat(np.arange(nb, dtype=np.int32), nt)
    r = np.arange(nb)[:, None] * R + np.arange(R)[None, :]
    rows_b = np.where(r < M, r, -1)
    rows = np.repeat(rows_b, nt, axis=0)
    cidx = np.arange(nt)[:, None] * C + np.arange(C)[None, :]
    cidx = np.where(cidx < N, cidx, -1)
    members = np.tile(cidx, (nb, 1))[:, :, None].astype(np.int32)
    valid = (rows[:, :, None] >= 0) & (members[:, None, :, 0] >= 0)
    select = np.where(valid, 0, -1).astype(np.int32)
    return _make_plan(cfg, M, N, 1, cfg.w_open, "none", "dense",
                      [rb] if P else [], [rows] if P else [], [members] if P else [],
                      [select] if P else [], M * N, P)


# ----------------------------------------------------------------------------------------
# invariants
# ----------------------------------------------------------------------------------------
def check_plan(cfg: Config, mask, plan: ConMergePlan) -> None:
    """Assert every SPEC 3.2 invariant of ``plan`` for ``mask`` (AssertionError if not).

    Checked: array shapes; each pass's rows are one row block in natural order; member
    indices in range, packed, no duplicates in a slot, at most m per slot; every member has a
    non-zero cv in its row block (condensed); members of a slot have disjoint cvs (no
    conflict); ``select[r, c] == k`` exactly when member k's cv has bit r, -1 otherwise
    (consistent with the cvs; one output per DPU by construction of the (R, C) array); no
    unmasked output computed; every masked output computed exactly once.
    """
    mask = check_mask(mask)
    M, N = mask.shape
    R, C = cfg.rows, cfg.cols
    P = plan.n_passes
    m = plan.merge_ways

    def need(cond, msg):
        if not cond:
            raise AssertionError(f"ConMerge plan invalid: {msg}")

    need((plan.M, plan.N) == (M, N), f"plan is for {plan.M} x {plan.N}, mask is {M} x {N}")
    need((plan.R, plan.C) == (R, C), f"plan is for R x C = {plan.R} x {plan.C}, "
                                     f"config {cfg.name!r} has {R} x {C}")
    need(1 <= m <= cfg.merge_ways, f"merge_ways = {m} not in 1..{cfg.merge_ways}")
    need(plan.rows.shape == (P, R), f"rows shape {plan.rows.shape} != {(P, R)}")
    need(plan.members.shape == (P, C, m), f"members shape {plan.members.shape} != "
                                          f"{(P, C, m)} (no slot may have > m members)")
    need(plan.select.shape == (P, R, C), f"select shape {plan.select.shape} != {(P, R, C)}")
    if P == 0:
        need(not mask.any(), f"no pass but {int(mask.sum())} masked outputs")
        return
    rb = plan.row_block.astype(np.int64)
    need(bool(np.all(np.diff(rb) >= 0)), "row blocks are not in natural (increasing) order")
    exp_rows = rb[:, None] * R + np.arange(R)[None, :]
    exp_rows = np.where(exp_rows < M, exp_rows, -1)
    bad = np.flatnonzero(np.any(plan.rows != exp_rows, axis=1))
    need(bad.size == 0, f"pass {bad[:1].tolist()}: rows are not row block "
                        f"{rb[bad[:1]].tolist()} in natural order")
    mem = plan.members.astype(np.int64)
    need(bool(np.all((mem >= -1) & (mem < N))), "member column index out of range")
    valid = mem >= 0
    need(bool(np.all(valid[:, :, :-1] | ~valid[:, :, 1:])),
         "members not packed (a valid member after an empty one)")
    srt = np.sort(np.where(valid, mem, -1 - np.arange(m)[None, None, :]), axis=2)
    need(not np.any(srt[:, :, 1:] == srt[:, :, :-1]), "a slot lists the same column twice")
    # cv bits of every member: bits[p, r, c, k] = mask[rows[p, r], members[p, c, k]]
    rows = plan.rows.astype(np.int64)
    vr = rows >= 0
    bits = (mask[np.maximum(rows, 0)[:, :, None, None], np.maximum(mem, 0)[:, None, :, :]]
            & vr[:, :, None, None] & valid[:, None, :, :])
    nonzero = bits.any(axis=1)  # (P, C, m)
    p, c, k = np.nonzero(valid & ~nonzero)
    need(p.size == 0, f"pass {p[:1].tolist()} slot {c[:1].tolist()}: member "
                      f"{mem[p[:1], c[:1], k[:1]].tolist()} has an all-zero cv (not condensed)")
    hits = bits.sum(axis=3)  # (P, R, C)
    p, r, c = np.nonzero(hits > 1)
    need(p.size == 0, f"pass {p[:1].tolist()} slot {c[:1].tolist()}: members conflict on "
                      f"DPU row {r[:1].tolist()}")
    want = np.where(hits == 1, np.argmax(bits, axis=3), -1)
    sel = plan.select.astype(np.int64)
    p, r, c = np.nonzero(sel != want)
    need(p.size == 0, f"pass {p[:1].tolist()} DPU (r, c) = "
                      f"({r[:1].tolist()}, {c[:1].tolist()}): select "
                      f"{sel[p[:1], r[:1], c[:1]].tolist()} but the member cvs say "
                      f"{want[p[:1], r[:1], c[:1]].tolist()}")
    # coverage: count the outputs computed by the select vectors alone
    act = sel >= 0
    pp, rr, cc = np.nonzero(act)
    i = rows[pp, rr]
    j = mem[pp, cc, sel[pp, rr, cc]]
    need(bool(np.all(i >= 0) and np.all(j >= 0)), "a DPU selects an empty member or row")
    need(bool(np.all(mask[i, j])), "an unmasked output is computed")
    count = np.bincount(i * N + j, minlength=M * N).reshape(M, N)
    twice = np.argwhere(count > 1)
    need(twice.size == 0, f"output {twice[:1].tolist()} computed more than once")
    miss = np.argwhere(mask & (count == 0))
    need(miss.size == 0, f"masked output {miss[:1].tolist()} never computed "
                         f"({int((mask & (count == 0)).sum())} missing)")


# ----------------------------------------------------------------------------------------
# reduction condensing and the executor
# ----------------------------------------------------------------------------------------
def reduction_chunks(cfg: Config, a_rows) -> np.ndarray:
    """Indices q of the L-element K-chunks ``[q*L, q*L+L)`` with a non-zero in ``a_rows``.

    ``a_rows`` is (R', K), the input rows of one row block (values or a boolean
    "non-zero" mask); returns an increasing int64 array (SPEC 3.2, input sparsity).
    """
    a = np.asarray(a_rows)
    if a.ndim != 2:
        raise ExionError(f"a_rows: expected a 2-D array, got shape {a.shape}")
    L = cfg.lanes
    K = a.shape[1]
    nz = np.zeros(math.ceil(K / L) * L, dtype=bool)
    nz[:K] = np.any(a != 0, axis=0)
    return np.flatnonzero(nz.reshape(-1, L).any(axis=1)).astype(np.int64)


def row_block_chunks(cfg: Config, a_or_mask, M: int | None = None) -> list[np.ndarray]:
    """:func:`reduction_chunks` of every row block of an (M, K) input or input mask."""
    a = np.asarray(a_or_mask)
    if a.ndim != 2:
        raise ExionError(f"input: expected a 2-D array, got shape {a.shape}")
    R = cfg.rows
    return [reduction_chunks(cfg, a[b * R:(b + 1) * R]) for b in range(math.ceil(a.shape[0] / R))]


def _chunk_k(cfg: Config, chunks: np.ndarray, K: int) -> np.ndarray:
    L = cfg.lanes
    k = (chunks[:, None] * L + np.arange(L)[None, :]).ravel()
    return k[k < K]


def pass_k_words(cfg: Config, plan: ConMergePlan, K: int, input_mask=None) -> np.ndarray:
    """Beats each pass streams: ``ceil(K / L)``, or the row block's non-zero chunk count
    when ``input_mask`` ((M, K): which input elements may be non-zero) is given."""
    if input_mask is None:
        return np.full(plan.n_passes, math.ceil(K / cfg.lanes), dtype=np.int64)
    im = np.asarray(input_mask)
    if im.ndim != 2 or im.shape != (plan.M, K):
        raise ExionError(f"input_mask: shape {im.shape} does not match the product's input "
                         f"shape {(plan.M, K)}")
    per_block = np.array([c.size for c in row_block_chunks(cfg, im)] or [0], dtype=np.int64)
    return per_block[plan.row_block.astype(np.int64)]


def execute_plan(cfg: Config, a, b, plan: ConMergePlan, out=None, accumulate: bool = False,
                 input_sparse: bool = False) -> np.ndarray:
    """Run ``A @ B`` pass by pass from the ConMerge vectors only, as the SDUE does.

    DPU (r, c) of a pass computes ``A[rows[r]] . B[:, members[c, select[r, c]]]`` (idle if
    either index is -1) and writes (or, with ``accumulate``, adds) the A-bit result at
    (rows[r], that column). With ``input_sparse``, each pass streams only the row block's
    :func:`reduction_chunks` of A. Returns a new int64 array; ``out`` is not modified.
    """
    a, b = _check_product(cfg, a, b)
    M, K = a.shape
    N = b.shape[1]
    if (plan.M, plan.N) != (M, N):
        raise ExionError(f"plan is for a {plan.M} x {plan.N} output, A @ B is {M} x {N}")
    if (plan.R, plan.C) != (cfg.rows, cfg.cols):
        raise ExionError(f"plan is for R x C = {plan.R} x {plan.C}, config {cfg.name!r} "
                         f"has {cfg.rows} x {cfg.cols}")
    res = _check_out(out, (M, N))
    C, m = plan.C, plan.merge_ways
    kidx_cache: dict[int, np.ndarray] = {}
    for p in range(plan.n_passes):
        rows = plan.rows[p].astype(np.int64)
        mem = plan.members[p].astype(np.int64)
        sel = plan.select[p].astype(np.int64)
        vr = rows >= 0
        ar = a[rows[vr]]
        wt = b[:, np.maximum(mem, 0).ravel()]  # (K, C*m): m weight buses per column
        if input_sparse:
            blk = int(plan.row_block[p])
            if blk not in kidx_cache:
                kidx_cache[blk] = _chunk_k(cfg, reduction_chunks(cfg, ar), K)
            kk = kidx_cache[blk]
            ar, wt = ar[:, kk], wt[kk]
        full = _exact_dot(cfg, ar, wt).reshape(-1, C, m)  # every (row, column, way)
        s = sel[vr]
        got = np.take_along_axis(full, np.maximum(s, 0)[:, :, None], axis=2)[:, :, 0]
        cidx = np.arange(C)[None, :]
        j = mem[cidx, np.maximum(s, 0)]
        act = (s >= 0) & (j >= 0)
        ri, ci = np.nonzero(act)
        i_out, j_out = rows[vr][ri], j[ri, ci]
        val = got[ri, ci]
        if accumulate:
            val = val + res[i_out, j_out]
        res[i_out, j_out] = wrap(val, cfg.acc_width)
    return res


# ----------------------------------------------------------------------------------------
# the golden functions of the hardware blocks of the same name
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CauPasses:
    """What ``hw.cau.CAU`` emits for a mask, one entry per pass in output order.

    ``row_block`` (P,), ``members`` (P, C, cfg.merge_ways) (the CAU's ``col`` lanes for every
    weight bus the hardware has; -1 where no member exists, so lanes k >= the run's m are
    all -1), ``select`` (P, R, C) (-1 = idle DPU) and ``last`` (P,) (the last pass of its
    row block).
    """

    row_block: np.ndarray
    members: np.ndarray
    select: np.ndarray
    last: np.ndarray


def cau(cfg: Config, mask, sort: str = "popcount", merge_ways: int | None = None) -> CauPasses:
    """The golden function of ``hw.cau.CAU`` (same name, same contract).

    The CAU is built for ``cfg`` (R, C, W_open = ``cfg.w_open`` window registers,
    ``cfg.merge_ways`` member lanes); ``sort`` and ``merge_ways`` (the run's m, checked by
    :meth:`Config.check_merge_ways`) are the run-time fields of its mask beats. Its passes
    are :func:`conmerge`'s, with the member lanes padded to ``cfg.merge_ways``.
    """
    plan = conmerge(cfg, mask, merge_ways=merge_ways, sort=sort)
    P, m = plan.n_passes, plan.merge_ways
    members = np.full((P, cfg.cols, cfg.merge_ways), -1, dtype=np.int32)
    members[:, :, :m] = plan.members
    rb = plan.row_block
    last = np.r_[rb[1:] != rb[:-1], True] if P else np.zeros(0, bool)
    return CauPasses(rb, members, plan.select, last)


def sdue(cfg: Config, a, b, plan: ConMergePlan, out=None, accumulate: bool = False,
         input_sparse: bool = False) -> np.ndarray:
    """The golden function of ``hw.sdue.SDUE`` (same name, same contract): run a product's
    passes from their ConMerge vectors and return the OMEM contents, (M, N).

    The SDUE executes pass descriptors (IMEM/WMEM addresses, the ConMerge vectors, OMEM base,
    accumulate) on the memories the host loaded; ``sim.program.build_program`` turns
    ``(a, b, plan)`` into exactly those, so the result is :func:`execute_plan`'s (which this
    is). Its cycles are ``golden.cycles.sdue_cycles`` of the program's passes.
    """
    return execute_plan(cfg, a, b, plan, out=out, accumulate=accumulate,
                        input_sparse=input_sparse)
