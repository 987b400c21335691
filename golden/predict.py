"""Eager prediction (SPEC 3.4): which attention scores, and which Q/K/V rows, are needed.

The golden model of the EPRE. Stages, in the hardware's order (each result is kept in
:class:`PredictResult` so the RTL can be checked stage by stage):

1. ``Qh_acc = approx_matmul(X, Wq)``, ``Kh_acc = approx_matmul(X_kv, Wk)``: both operands
   LOD / TS-LOD approximated (``lod_terms``, default ``cfg.lod_terms``), exact accumulation.
   The reduction length ``d`` must be <= ``cfg.k_max`` (so the A-bit accumulator is exact:
   ``|approx(v)| <= |v|``), and the result is held as an A-bit value.
2. ``Qh = saturate(Qh_acc >> shift_q, W)`` and the same for K: ``>>`` is an *arithmetic*
   shift right (floor division by ``2**shift``, rounding toward minus infinity), then
   clipping to ``[-2**(W-1), 2**(W-1)-1]``. The shifts are per-tensor registers the host
   writes. **[choice]** The host picks them with :func:`stage1_shift`: the smallest
   ``s >= 0`` with which ``acc >> s`` fits W bits, i.e. no saturation on the calibration
   data. ``eager_predict(shift_q=None)`` calibrates on the very input it is given (the ideal
   host); pass explicit shifts to model a host that calibrated on earlier data.
   **[choice] Exact keys** (``k_exact``, the EPRE's ``k_given`` run flag; issue 19's
   ``epre_keys = "sdue"`` lever): the keys' K rows come from the SDUE, which computes K in
   full before the queries' Q rows; stage 1 then computes Qh only, ``Kh = k_exact``
   unshifted (no ``shift_k``), and stage 2 is unchanged: the prediction sees the exact keys
   instead of approximated ones. **[choice] Keys from OMEM** (issue 19, the DSC's
   EPRE_KOMEM): the exact keys reach the EPRE on the core, from the K_h accumulators the
   SDUE left in its OMEM, requantised exactly as stage 1 requantises Kh_acc:
   :func:`omem_keys` = ``saturate(K_acc >> shift, W)``, ``shift`` from
   :func:`stage1_shift` on K_acc (the same ideal host); ``k_exact = omem_keys(...)``.
3. ``Sh = approx_matmul(Qh, Kh^T)`` (approximated again), exact; ``d_head <= cfg.k_max``.
4. Selection per query row (:func:`topk_select`): keep the ``kN`` largest ``Sh[i, :]``; among
   equal scores the lower key index wins (a stable descending sort). ``kN`` =
   :func:`keep_count`\\ ``(k, N_k)`` = ``max(1, ceil(k * N_k))`` where ``k`` is read as the
   exact decimal it prints as (``0.1`` is 1/10, not the binary float below it).
   **[choice] k = 0** keeps the top-1 of every row (kN is at least 1): a query with no key
   has an undefined softmax, so "attend to the single best key" is the smallest selection
   that still defines an attention output. ``topk_select`` itself accepts ``k_n = 0`` (keeps
   nothing) because the EPRE's kN register can hold 0; ``eager_predict`` never writes it.
5. Dominant rows (:func:`dominant_rows`): ``gap = largest - second largest`` of ``Sh[i, :]``
   (values, so two equal maxima give gap 0); the row is dominant iff ``gap >= q_th_int``.
   With a single key (``N_k == 1``) the gap is taken as infinite (dominant whenever the rule
   is on). ``q_th_int=None`` disables the rule (no row is dominant); ``q_th_int`` must be an
   integer >= 0 (``0`` makes every row dominant).
   Polarity **[choice]**: ``"top1"`` (default) -- a dominant row keeps only its top-1 key
   (the lowest-index maximum) and its attention output is that key's V row, so its Q row is
   not needed; ``"keep_all"`` -- a dominant row keeps every key (its Q row is needed).
   **[choice] Selection in hardware** (issue 18): :func:`threshold_select` -- the kN-th
   element (T, t) of the row, then a threshold pass -- gives the same mask; rows are
   independent, so the EPRE selects S rows at once (``cfg.epre_selector_count``; with one
   selector per unit the insertion rides on stage 2's output stream). The tie rule and the
   gap test are unchanged. ``cfg.epre_selector_kind = "radix"`` replaces the insertion
   networks by U lockstep radix searches over a P-bank score buffer (the kN-th score MSB
   first, ``cfg.epre_radix_bit_count`` bits a pass [choice, issue 19: 4 on exion16], then
   the first ``kN - #{s > T}`` keys equal to T by index: the same mask), whose
   key flags are ORed from the emitted mask rows; :func:`select_rows` is the selection step
   either kind must match (also for a hand-made ``k_n = 0``).
6. Outputs: ``score_mask`` (N_q x N_k bool), ``dominant`` (N_q), ``key_needed`` (N_k: the key
   is selected by some query; SPEC's flag, it decides the V rows), ``q_needed`` (N_q: not a
   dominant row under ``top1``). A refinement reported beside SPEC's flag: ``k_needed`` (N_k)
   = selected by some query whose Q row is needed. A key chosen only by dominant ``top1``
   rows needs its V row but not its K row (no score is computed for those rows).
   ``skipped_q = N_q - sum(q_needed)``, ``skipped_k = N_k - sum(k_needed)``,
   ``skipped_v = N_k - sum(key_needed)``, and intra-iteration
   ``sparsity = 1 - sum(score_mask) / (N_q * N_k)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from exion.config import Config
from exion.errors import ExionError

from .lod import approx_matmul
from .quant import check_k, check_operand, saturate, wrap

__all__ = ["PredictResult", "eager_predict", "epre", "topk_select", "threshold_select", "dominant_rows", "keep_count",
           "select_rows",
           "stage1_shift", "omem_keys", "as_fraction", "POLARITIES"]

POLARITIES = ("top1", "keep_all")


def as_fraction(x, name: str) -> Fraction:
    """``x`` as an exact rational: a float is read as the decimal it prints as (``repr``)."""
    if isinstance(x, bool):
        raise ExionError(f"{name} must be a number, got {x!r}")
    if isinstance(x, Fraction):
        return x
    if isinstance(x, (int, np.integer)):
        return Fraction(int(x))
    if isinstance(x, (float, np.floating)):
        if not math.isfinite(float(x)):
            raise ExionError(f"{name} must be a finite number, got {x!r}")
        return Fraction(repr(float(x)))
    if isinstance(x, str):
        try:
            return Fraction(x)
        except ValueError:
            raise ExionError(f"{name} must be a number, got {x!r}") from None
    raise ExionError(f"{name} must be a number, got {type(x).__name__} {x!r}")


def keep_count(k, n_k: int) -> int:
    """kN = ``max(1, ceil(k * n_k))`` for k in [0, 1] (``0`` when ``n_k == 0``)."""
    kf = as_fraction(k, "k (top-k ratio)")
    if not 0 <= kf <= 1:
        raise ExionError(f"k (top-k ratio) must be in [0, 1], got {k!r}")
    if n_k == 0:
        return 0
    return max(1, math.ceil(kf * n_k))


def stage1_shift(acc, width: int) -> int:
    """Smallest ``s >= 0`` with ``-2**(W-1) <= (acc >> s) <= 2**(W-1)-1`` for every element.

    ``>>`` is the arithmetic (floor) shift, so the condition is
    ``max(acc) < 2**(W-1+s)`` and ``min(acc) >= -2**(W-1+s)``. Host-side calibration.
    """
    a = np.asarray(acc, dtype=np.int64)
    if a.size == 0:
        return 0
    hi, lo = int(a.max()), int(a.min())
    s = 0
    while hi >= (1 << (width - 1 + s)) or lo < -(1 << (width - 1 + s)):
        s += 1
    return s


def omem_keys(cfg: Config, k_acc, shift: int | None = None) -> np.ndarray:
    """Exact keys as the DSC's EPRE_KOMEM writes them into the EPRE's Kh banks **[choice]**:
    the SDUE's K_h accumulators ``k_acc`` (N_k, d_head; A-bit two's complement, as OMEM holds
    them) requantised like stage 1's Kh, ``saturate(k_acc >> shift, W)`` (arithmetic shift);
    ``shift`` (0 .. A-1) defaults to :func:`stage1_shift` of ``k_acc`` (no saturation)."""
    acc = np.asarray(k_acc)
    if acc.ndim != 2 or acc.shape[0] < 1 or acc.shape[1] < 1 \
            or not np.issubdtype(acc.dtype, np.integer):
        raise ExionError(f"k_acc: expected a non-empty 2-D integer array (N_k, d_head), got "
                         f"shape {acc.shape} of {acc.dtype}")
    acc = acc.astype(np.int64)
    lim = 1 << (cfg.acc_width - 1)
    if acc.min() < -lim or acc.max() >= lim:
        raise ExionError(f"k_acc: values must fit acc_width = {cfg.acc_width} bits, got "
                         f"{int(acc.min())} .. {int(acc.max())}")
    s = stage1_shift(acc, cfg.width) if shift is None else _check_shift(cfg, shift, "shift")
    return saturate(acc >> np.int64(s), cfg.width)


def _check_scores(scores) -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ExionError(f"scores: expected a 2-D array (N_q x N_k), got shape {s.shape}")
    if s.dtype.kind not in "iu":
        raise ExionError(f"scores: expected integers, got dtype {s.dtype}")
    return s.astype(np.int64)


def topk_select(scores, k_n: int) -> np.ndarray:
    """Per row, True at the ``k_n`` largest scores; equal scores: the lower index wins."""
    s = _check_scores(scores)
    n_q, n_k = s.shape
    if isinstance(k_n, bool) or not isinstance(k_n, (int, np.integer)) or not 0 <= k_n <= n_k:
        raise ExionError(f"k_n must be an integer in [0, {n_k}] (N_k), got {k_n!r}")
    # Stable sort of -score: descending score, ascending index among equals.
    # |scores| < 2**62 after wrap, so negation cannot overflow.
    order = np.argsort(-s, axis=1, kind="stable")[:, :k_n]
    mask = np.zeros((n_q, n_k), dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def threshold_select(scores, k_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The selection as the EPRE computes it, row by row and independently of other rows
    (so S selectors may take S rows at once, issue 18) **[choice]**: per row the kN-th
    element ``(T, t)`` of the order "score descending, index ascending", then one threshold
    pass: key j is kept iff ``s_j > T or (s_j == T and j <= t)``. Returns ``(mask, T, t)``
    (``k_n = 0``: nothing kept, T / t undefined and returned as 0). The mask equals
    :func:`topk_select` (the stable-sort rule) exactly; ``tests/test_golden_predict.py``
    checks it on ties. **[choice]** The radix selector (``hw/epre_radix.py``) finds T bit by
    bit (MSB first, scores as unsigned ``s XOR 2**(A-1)``) and keeps, instead of comparing
    with t, the first ``k_n - #{s > T}`` keys equal to T in index order: the same mask."""
    s = _check_scores(scores)
    n_q, n_k = s.shape
    if isinstance(k_n, bool) or not isinstance(k_n, (int, np.integer)) or not 0 <= k_n <= n_k:
        raise ExionError(f"k_n must be an integer in [0, {n_k}] (N_k), got {k_n!r}")
    if k_n == 0:
        z = np.zeros(n_q, dtype=np.int64)
        return np.zeros((n_q, n_k), dtype=bool), z, z
    order = np.argsort(-s, axis=1, kind="stable")
    t = order[:, k_n - 1]
    T = s[np.arange(n_q), t]
    j = np.arange(n_k)[None, :]
    mask = (s > T[:, None]) | ((s == T[:, None]) & (j <= t[:, None]))
    return mask, T, t


def dominant_rows(scores, q_th_int) -> np.ndarray:
    """Per row, True iff ``largest - second largest >= q_th_int`` (``None``: all False)."""
    s = _check_scores(scores)
    n_q, n_k = s.shape
    if q_th_int is None:
        return np.zeros(n_q, dtype=bool)
    if isinstance(q_th_int, bool) or not isinstance(q_th_int, (int, np.integer)) \
            or q_th_int < 0:
        raise ExionError(f"q_th_int must be an integer >= 0 or None (rule off), "
                         f"got {q_th_int!r}")
    if n_k == 0:
        return np.zeros(n_q, dtype=bool)
    if n_k == 1:
        return np.ones(n_q, dtype=bool)
    top2 = np.sort(s, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) >= int(q_th_int)


def select_rows(sh, k_n: int, q_th_int, polarity: str = "top1") -> tuple:
    """The selection step of :func:`eager_predict` (the EPRE's selectors, either kind) on
    stage-2 scores ``sh`` with a given ``k_n`` (0..N_k; the host's :func:`keep_count` never
    gives 0, a hand-made run descriptor may): ``(topk, dominant, score_mask, q_needed,
    key_needed, k_needed)``. A dominant row keeps its top-1 key (``top1``, its Q row is not
    needed) or every key (``keep_all``)."""
    topk = topk_select(sh, k_n)
    dom = dominant_rows(sh, q_th_int)
    score = topk.copy()
    if polarity == "top1":
        score[dom] = topk_select(sh[dom], 1) if sh.shape[1] else score[dom]
        q_needed = ~dom
    else:
        score[dom] = True
        q_needed = np.ones(sh.shape[0], dtype=bool)
    return topk, dom, score, q_needed, score.any(axis=0), score[q_needed].any(axis=0)


@dataclass(frozen=True)
class PredictResult:
    """Everything eager prediction computes, stage by stage (see the module docstring)."""

    lod_terms: int
    shift_q: int
    shift_k: int
    k_n: int
    q_th_int: int | None
    polarity: str
    qh_acc: np.ndarray      # (N_q, d_head) stage-1 accumulator of Q, int64 (A-bit values)
    kh_acc: np.ndarray      # (N_k, d_head)
    qh: np.ndarray          # (N_q, d_head) shifted and saturated to W bits
    kh: np.ndarray          # (N_k, d_head)
    sh: np.ndarray          # (N_q, N_k) stage-2 scores (A-bit values)
    topk_mask: np.ndarray   # (N_q, N_k) bool, the top-kN selection before the dominant rule
    dominant: np.ndarray    # (N_q,) bool
    score_mask: np.ndarray  # (N_q, N_k) bool, the final selection
    q_needed: np.ndarray    # (N_q,) bool
    key_needed: np.ndarray  # (N_k,) bool: selected by some query (V row needed)
    k_needed: np.ndarray    # (N_k,) bool: selected by some query whose Q row is needed

    @property
    def n_q(self) -> int:
        return self.score_mask.shape[0]

    @property
    def n_k(self) -> int:
        return self.score_mask.shape[1]

    @property
    def kept(self) -> int:
        return int(self.score_mask.sum())

    @property
    def sparsity(self) -> float:
        """Intra-iteration sparsity ``1 - kept / (N_q * N_k)``."""
        total = self.n_q * self.n_k
        return 1.0 - self.kept / total if total else 0.0

    @property
    def skipped_q(self) -> int:
        return int(self.n_q - self.q_needed.sum())

    @property
    def skipped_k(self) -> int:
        return int(self.n_k - self.k_needed.sum())

    @property
    def skipped_v(self) -> int:
        return int(self.n_k - self.key_needed.sum())

    def summary(self) -> dict:
        """JSON-ready figures (no arrays)."""
        return {
            "n_q": self.n_q, "n_k": self.n_k, "d_head": int(self.qh.shape[1]),
            "lod_terms": self.lod_terms, "shift_q": self.shift_q, "shift_k": self.shift_k,
            "k_n": self.k_n, "q_th_int": self.q_th_int, "polarity": self.polarity,
            "kept": self.kept, "sparsity": self.sparsity,
            "dominant_rows": int(self.dominant.sum()),
            "skipped_q_rows": self.skipped_q, "skipped_k_rows": self.skipped_k,
            "skipped_v_rows": self.skipped_v,
        }


def _check_shift(cfg: Config, shift, name: str):
    if shift is None:
        return None
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) \
            or not 0 <= shift < cfg.acc_width:
        raise ExionError(f"{name} must be an integer in [0, {cfg.acc_width - 1}] "
                         f"(0 .. acc_width-1), got {shift!r}")
    return int(shift)


def eager_predict(cfg: Config, x, wq, wk, k, shift_q=None, shift_k=None, q_th_int=None,
                  polarity: str = "top1", lod_terms=None, x_kv=None,
                  k_exact=None) -> PredictResult:
    """Run eager prediction (SPEC 3.4) on W-bit integer operands.

    ``x``: (N_q, d) queries' input tokens; ``wq``, ``wk``: (d, d_head); ``x_kv``: (N_k, d)
    the keys' input tokens (default ``x``: self-attention). ``k``: top-k ratio in [0, 1].

    ``k_exact`` (N_k, d_head) **[choice, exact keys]**: the keys' K rows as the SDUE computed
    them (W-bit, already requantized). Stage 1 then predicts only Qh; ``Kh = k_exact`` (no
    shift, ``shift_k`` = 0, ``kh_acc`` = the same values); ``wk``, ``x_kv`` and ``shift_k``
    must be None. Stage 2 approximates Kh again as usual. The EPRE's ``k_given`` run flag.
    """
    if k_exact is not None:
        for name, v in (("wk", wk), ("x_kv", x_kv), ("shift_k", shift_k)):
            if v is not None:
                raise ExionError(f"{name} must be None with k_exact (the keys are given)")
    if polarity not in POLARITIES:
        raise ExionError(f"polarity must be one of {', '.join(POLARITIES)}, got {polarity!r}")
    terms = cfg.lod_terms if lod_terms is None else lod_terms
    if terms not in (1, 2) or isinstance(terms, bool):
        raise ExionError(f"lod_terms must be 1 (LOD) or 2 (TS-LOD), got {terms!r}")
    x = check_operand(cfg, x, "x", ndim=2)
    x_kv = x if x_kv is None else check_operand(cfg, x_kv, "x_kv", ndim=2)
    wq = check_operand(cfg, wq, "wq", ndim=2)
    d = x.shape[1]
    if k_exact is not None:
        kx = check_operand(cfg, k_exact, "k_exact", ndim=2)
        if kx.shape[1] != wq.shape[1] or kx.shape[0] < 1:
            raise ExionError(f"k_exact: shape {kx.shape} does not fit wq {wq.shape}; expected "
                             f"(N_k >= 1, {wq.shape[1]})")
        if wq.shape[0] != d:
            raise ExionError(f"wq: shape {wq.shape} does not fit x {x.shape}; expected "
                             f"({d}, {wq.shape[1]})")
        return _predict(cfg, x, wq, None, None, kx, k, shift_q, 0, q_th_int, polarity, terms)
    wk = check_operand(cfg, wk, "wk", ndim=2)
    for name, arr, want in (("x_kv", x_kv, (x_kv.shape[0], d)), ("wq", wq, (d, wq.shape[1])),
                            ("wk", wk, (d, wq.shape[1]))):
        if arr.shape != want:
            raise ExionError(f"{name}: shape {arr.shape} does not fit x {x.shape} and wq "
                             f"{wq.shape}; expected {want}")
    return _predict(cfg, x, wq, x_kv, wk, None, k, shift_q, shift_k, q_th_int, polarity,
                    terms)


def _predict(cfg, x, wq, x_kv, wk, k_exact, k, shift_q, shift_k, q_th_int, polarity,
             terms) -> PredictResult:
    """:func:`eager_predict` on checked operands (``k_exact`` given: ``x_kv`` / ``wk`` None)."""
    d = x.shape[1]
    shift_q = _check_shift(cfg, shift_q, "shift_q")
    shift_k = _check_shift(cfg, shift_k, "shift_k")
    check_k(cfg, d, "stage-1 reduction d (x columns)")
    check_k(cfg, wq.shape[1], "stage-2 reduction d_head (wq columns)")
    k_n = keep_count(k, x_kv.shape[0] if k_exact is None else k_exact.shape[0])

    # Stage 1: approximate projections, exact A-bit accumulation, shift, saturate.
    qh_acc = wrap(approx_matmul(x, wq, terms, "x", "wq"), cfg.acc_width)
    if shift_q is None:
        shift_q = stage1_shift(qh_acc, cfg.width)
    qh = saturate(qh_acc >> np.int64(shift_q), cfg.width)
    if k_exact is None:
        kh_acc = wrap(approx_matmul(x_kv, wk, terms, "x_kv", "wk"), cfg.acc_width)
        if shift_k is None:
            shift_k = stage1_shift(kh_acc, cfg.width)
        kh = saturate(kh_acc >> np.int64(shift_k), cfg.width)
    else:                        # exact keys: Kh is the SDUE's K, unshifted
        kh_acc = np.asarray(k_exact, dtype=np.int64).copy()
        kh = kh_acc.copy()

    # Stage 2: approximate scores.
    sh = wrap(approx_matmul(qh, kh.T, terms, "Qh", "Kh^T"), cfg.acc_width)

    # Selection.
    topk, dom, score, q_needed, key_needed, k_needed = select_rows(sh, k_n, q_th_int, polarity)
    return PredictResult(
        lod_terms=terms, shift_q=shift_q, shift_k=shift_k, k_n=k_n,
        q_th_int=None if q_th_int is None else int(q_th_int), polarity=polarity,
        qh_acc=qh_acc, kh_acc=kh_acc, qh=qh, kh=kh, sh=sh, topk_mask=topk, dominant=dom,
        score_mask=score, q_needed=q_needed, key_needed=key_needed, k_needed=k_needed)


def epre(cfg: Config, x, wq, wk, k, shift_q=None, shift_k=None, q_th_int=None,
         polarity: str = "top1", lod_terms=None, x_kv=None, k_exact=None) -> PredictResult:
    """The golden function of ``hw.epre.EPRE`` (same name, same contract): one prediction run.

    The EPRE takes X (and X_kv), Wq, Wk and a run descriptor (shifts, kN, q_th, polarity,
    LOD or TS-LOD) and emits Qh and Kh (its banks), the stage-2 scores (its ``score`` tap),
    the score mask row by row with the dominant flag, and the key-needed / k-needed flags:
    the fields ``qh``, ``kh``, ``sh``, ``score_mask``, ``dominant``, ``key_needed`` and
    ``k_needed`` of :func:`eager_predict`, which this is. With ``k_exact`` (the run's
    ``k_given`` flag) the host writes the keys' K rows into the Kh banks before the run and
    stage 1 computes Qh only.
    """
    return eager_predict(cfg, x, wq, wk, k, shift_q=shift_q, shift_k=shift_k,
                         q_th_int=q_th_int, polarity=polarity, lod_terms=lod_terms, x_kv=x_kv,
                         k_exact=k_exact)
