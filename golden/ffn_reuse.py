"""FFN-Reuse (SPEC 3.3): inter-iteration output sparsity of the FFN, integer-exact.

FFN: ``H = GELU(X W1 + b1)`` (T x F), ``Y = H W2 + b2`` (T x D). All operands are W-bit
integers, biases are integers at accumulator scale, ``Y`` is the A-bit FC2 accumulator.
The FC1 -> H path is ``exion.golden.cfse.gelu_requant`` (accumulator -> Q.11 -> table GELU ->
symmetric W-bit H).

Choices (also in ``docs/golden-predict.md``):

* **Schedule**: iteration t (0..S-1) is dense iff ``t % (N+1) == 0`` or t is in the dense
  tail: the last ``ceil(dense_tail * S)`` iterations (``dense_tail`` in [0, 1], read as the
  exact decimal it prints as). Iteration 0 is always dense.
* **Accumulator range**: ``X W1 + b1`` and ``H W2 + b2`` are computed exactly and must fit
  A bits; an input that leaves the range is refused (ExionError naming the bias).
* **Histogram** **[choice: log-linear bins]**: ``|v|`` goes to bin ``|v|`` when
  ``|v| < 2**(M+1)`` and otherwise to ``(e - M + 1) * 2**M + ((|v| >> (e - M)) - 2**M)``
  with ``e = floor(log2|v|)`` and ``M = hist_mant_bits`` (default 4): the exponent from the
  same leading-one detector the EPRE has, plus the next M bits, so each bin is at most
  ``2**-M`` (6 %) of its value wide and W = 12 needs 129 bins (one bin per value for
  ``M >= W-2``). Lower edge of bin b: ``b`` for ``b < 2**(M+1)``, else
  ``(2**M + b % 2**M) << (b // 2**M - 1)``. The hardware increments the bin of every GELU
  output as it streams out of the CFSE.
* **Threshold**: theta is a bin lower edge (or "above every value" -> no ones). With
  ``ones(theta)`` = the number of values with ``|v| >= theta`` (a suffix sum of the
  histogram), theta is the edge whose ``ones`` is closest to ``(1 - s) * count``; on a tie,
  the larger theta (fewer ones) wins. So the achieved fraction of ones is within half of the
  straddled bin's count of the target; ``B = |H_d| >= theta``. The FFN-Reuse unit
  (``hw/ffnr.py``) takes s as the integer ``sparsity_code(s) = s * 10**6`` and gives the same
  theta for every s with at most 6 decimals (its integer distance is this one times a
  positive constant).
* **Rules**: ``magnitude`` (default, the seed's) as above on ``|H_d|``; ``change``: the same
  histogram/threshold on ``|H_d - H_d_prev|`` (the last two dense iterations; the first dense
  iteration has no predecessor and falls back to ``magnitude``); ``per_token``: every row
  keeps exactly ``c = floor((1 - s) * F + 1/2)`` columns, its c largest ``|H_d|`` with the lower
  column index winning ties (the same selector as the EPRE's top-kN); ``column`` **[choice]**
  (issue 20, column-level reuse): recompute whole hidden units. ``n`` = the number of ones the
  ``magnitude`` rule gives on the same ``H_d`` (so both rules recompute the same number of
  elements); the hidden units are ranked by the column score ``sum_t |H_d[t, j]|`` (exact
  integers; ties: the lower column index wins) and the first ``c = n // T`` of them are
  recomputed for every token; the remaining ``n - c*T`` elements are the largest ``|H_d|``
  of the next-ranked column (lower row index on ties). So the mask has exactly ``n`` ones,
  at most one partial column, and every other column is all-ones or all-zeros.
* **Sparse iteration**: ``H' = where(B, gelu_requant(X' W1 + b1), H_d)``; FC2 by delta
  (default) ``Y' = Y_d + (H' - H_d) W2`` -- exact: it equals ``H' W2 + b2``. ``H_d``/``Y_d`` are
  the last dense iteration's. The hardware may run it incrementally (``Y_t = Y_{t-1} +
  (H'_t - H'_{t-1}) W2``: the same integers, telescoping) and, because ``H' - H_d`` needs
  W+1 bits, as one input-sparse product over W-bit operands with doubled reduction:
  ``Y' = Y_d + [B*H' | -(B*H_d)] @ [W2; W2]`` (``-H_d`` is W-bit because GELU outputs saturate
  symmetrically). ``fc2="dense"`` recomputes ``Y' = H' W2 + b2``.
* **MAC counts** (ideal, element level): dense FC1 ``T*d*F``, sparse FC1 ``nnz(B)*d``; dense
  FC2 ``T*F*D``, delta FC2 ``nnz(B)*D`` (rows' masked H elements times outputs; the W-bit
  two-operand mapping above doubles it, the cycle model charges chunk granularity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from exion.config import Config
from exion.errors import ExionError

from .cfse import GeluParams, gelu_requant
from .lod import bit_length
from .predict import as_fraction, topk_select
from .quant import check_k, check_operand, int_matmul, wrap

__all__ = ["ffnr", "FfnrResult", "RULES", "FC2_MODES", "S_DIGITS", "sparsity_code", "is_dense", "schedule",
           "hist_bin", "hist_bin_edges",
           "num_bins", "abs_histogram", "threshold_from_histogram", "build_mask", "column_mask",
           "random_control",
           "ffn_dense", "ffn_sparse", "ffn_reuse_run", "FFNIteration", "FFNReuseRun"]

RULES = ("magnitude", "change", "per_token", "column")
FC2_MODES = ("delta", "dense")
#: Decimal digits of the hardware's sparsity register (``hw/ffnr.py``): s_code = s * 10**6.
S_DIGITS = 6


# -- schedule ---------------------------------------------------------------------------
def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ExionError(f"N (sparse iterations between dense ones) must be an integer >= 0, "
                         f"got {n!r}")
    return int(n)


def schedule(num_iters: int, n: int, dense_tail=0) -> np.ndarray:
    """Bool array of length ``num_iters``: True where the iteration is dense."""
    n = _check_n(n)
    if isinstance(num_iters, bool) or not isinstance(num_iters, (int, np.integer)) \
            or num_iters < 0:
        raise ExionError(f"number of iterations must be an integer >= 0, got {num_iters!r}")
    tail = as_fraction(dense_tail, "dense_tail")
    if not 0 <= tail <= 1:
        raise ExionError(f"dense_tail must be in [0, 1], got {dense_tail!r}")
    t = np.arange(num_iters)
    n_tail = math.ceil(tail * num_iters)
    return (t % (n + 1) == 0) | (t >= num_iters - n_tail)


def is_dense(t: int, n: int, num_iters: int | None = None, dense_tail=0) -> bool:
    """Whether iteration ``t`` is dense (``num_iters`` is needed only for ``dense_tail``)."""
    n = _check_n(n)
    if num_iters is None:
        if as_fraction(dense_tail, "dense_tail") != 0:
            raise ExionError("dense_tail needs num_iters (the tail is counted from the end)")
        return t % (n + 1) == 0
    return bool(schedule(num_iters, n, dense_tail)[t])


# -- histogram and threshold ------------------------------------------------------------
def _check_mant(mant_bits) -> int:
    if isinstance(mant_bits, bool) or not isinstance(mant_bits, (int, np.integer)) \
            or not 0 <= mant_bits <= 30:
        raise ExionError(f"hist_mant_bits must be an integer in [0, 30], got {mant_bits!r}")
    return int(mant_bits)


def hist_bin(mag, mant_bits: int = 4) -> np.ndarray:
    """Bin index of non-negative magnitudes (log-linear bins, see the module docstring)."""
    M = _check_mant(mant_bits)
    m = np.asarray(mag, dtype=np.int64)
    if m.size and m.min() < 0:
        raise ExionError("hist_bin: magnitudes must be >= 0")
    e = bit_length(m) - 1
    small = m < (np.int64(1) << np.int64(M + 1))
    es = np.where(small, M, e)
    big = (es - M + 1) * (1 << M) + ((m >> (es - M)) - (1 << M))
    return np.where(small, m, big)


def num_bins(max_mag: int, mant_bits: int = 4) -> int:
    """Number of bins needed for magnitudes 0..max_mag."""
    return int(hist_bin(np.array([max_mag]), mant_bits)[0]) + 1


def hist_bin_edges(n_bins: int, mant_bits: int = 4) -> np.ndarray:
    """Lower edge (smallest magnitude) of bins 0..n_bins-1."""
    M = _check_mant(mant_bits)
    b = np.arange(n_bins, dtype=np.int64)
    small = b < (1 << (M + 1))
    octave = np.where(small, 1, b >> M)
    edge = ((1 << M) + (b & ((1 << M) - 1))) << (octave - 1)
    return np.where(small, b, edge)


def abs_histogram(values, bits: int, mant_bits: int = 4) -> np.ndarray:
    """Counts of ``|values|`` per bin; values are signed ``bits``-bit integers, so the
    histogram has ``num_bins(2**(bits-1))`` bins (fixed by the width, not the data)."""
    v = np.asarray(values, dtype=np.int64)
    nb = num_bins(1 << (bits - 1), mant_bits)
    return np.bincount(hist_bin(np.abs(v).ravel(), mant_bits), minlength=nb).astype(np.int64)


def threshold_from_histogram(hist, s, mant_bits: int = 4) -> int:
    """theta for target sparsity ``s`` (see the module docstring). Returns the lower edge
    of the chosen bin, or ``edge(len(hist))`` (above every value) for no ones."""
    h = np.asarray(hist, dtype=np.int64)
    sf = as_fraction(s, "target sparsity s")
    if not 0 <= sf <= 1:
        raise ExionError(f"target sparsity s must be in [0, 1], got {s!r}")
    total = int(h.sum())
    # ones(b) for b = 0..nb (b = nb: nothing is >= theta).
    suffix = np.concatenate([np.cumsum(h[::-1])[::-1], [0]])
    # |ones*den - (den - num)*total|, exact integers.
    num, den = sf.numerator, sf.denominator
    dist = np.abs(suffix * den - (den - num) * total)
    best = np.flatnonzero(dist == dist.min())[-1]   # ties: the larger theta
    return int(hist_bin_edges(len(h) + 1, mant_bits)[best])


def sparsity_code(s, digits: int = S_DIGITS) -> int:
    """The integer form of ``s`` the FFN-Reuse unit takes: ``s_code = s * 10**digits``.

    ``threshold_from_histogram`` reads ``s`` as an exact rational (a float as the decimal it
    prints as) and compares ``|ones * den - (den - num) * total|``; with ``s = s_code /
    10**digits`` that is the hardware's ``|ones * 10**digits - (10**digits - s_code) *
    total|`` times a positive constant, so the same bin wins (ties included). Every ``s`` in
    [0, 1) with at most ``digits`` decimals is representable; any other ``s`` is refused
    (rounding it would change theta where the golden's exact s would not).
    """
    sf = as_fraction(s, "target sparsity s")
    if not 0 <= sf < 1:
        raise ExionError(f"target sparsity s must be in [0, 1) for the FFN-Reuse unit, "
                         f"got {s!r}")
    code = sf * 10 ** digits
    if code.denominator != 1:
        raise ExionError(f"target sparsity s = {s!r} has more than {digits} decimals: the "
                         f"FFN-Reuse unit's register holds s * 10**{digits} as an integer")
    return int(code)


def _keep_per_row(n_cols: int, s) -> int:
    sf = as_fraction(s, "target sparsity s")
    if not 0 <= sf <= 1:
        raise ExionError(f"target sparsity s must be in [0, 1], got {s!r}")
    return math.floor((1 - sf) * n_cols + Fraction(1, 2))


def column_mask(h_d, n_ones: int) -> np.ndarray:
    """The ``column`` rule's mask with exactly ``n_ones`` ones (module docstring)."""
    h = np.abs(np.asarray(h_d, dtype=np.int64))
    T, F = h.shape
    if not 0 <= n_ones <= T * F:
        raise ExionError(f"column rule: {n_ones} ones do not fit a {T} x {F} mask")
    order = np.argsort(-h.sum(axis=0), kind="stable")   # descending, lower index on ties
    c, r = divmod(int(n_ones), T) if T else (0, 0)
    mask = np.zeros((T, F), dtype=bool)
    mask[:, order[:c]] = True
    if r:
        j = order[c]
        rows = np.argsort(-h[:, j], kind="stable")[:r]
        mask[rows, j] = True
    return mask


def random_control(masks: np.ndarray, rule: str, rng) -> np.ndarray:
    """The random-mask control of ``masks`` (B, T, F): per sample the same number of ones,
    placed at random -- random whole hidden units for the ``column`` rule (its count's
    remainder in one more random unit, as :func:`column_mask`), random elements otherwise."""
    out = np.empty_like(masks)
    for b, m in enumerate(masks):
        if rule == "column":
            out[b] = column_mask(np.broadcast_to(rng.integers(0, 1 << 40, m.shape[1]), m.shape),
                                 int(m.sum()))
        else:
            flat = np.zeros(m.size, dtype=bool)
            flat[rng.permutation(m.size)[:int(m.sum())]] = True
            out[b] = flat.reshape(m.shape)
    return out


def build_mask(h_d, s, rule: str = "magnitude", h_prev=None, width: int = 12,
               mant_bits: int = 4) -> tuple[np.ndarray, int | None]:
    """FFN-Reuse bitmask ``B`` (True = recompute) and its theta (``None`` for per_token;
    for ``column``, the theta of the magnitude rule whose count it matches).

    ``h_d``: the dense iteration's W-bit H; ``h_prev``: the previous dense H (``change``).
    """
    if rule not in RULES:
        raise ExionError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    h = np.asarray(h_d, dtype=np.int64)
    if h.ndim != 2:
        raise ExionError(f"H_d: expected a 2-D array (T x F), got shape {h.shape}")
    if rule == "per_token":
        c = _keep_per_row(h.shape[1], s)
        return topk_select(np.abs(h), c), None
    if rule == "column":
        mag, theta = build_mask(h, s, "magnitude", None, width, mant_bits)
        return column_mask(h, int(mag.sum())), theta
    if rule == "change" and h_prev is not None:
        hp = np.asarray(h_prev, dtype=np.int64)
        if hp.shape != h.shape:
            raise ExionError(f"H_d_prev: shape {hp.shape} differs from H_d {h.shape}")
        score, bits = np.abs(h - hp), width + 1
    else:
        score, bits = np.abs(h), width
    theta = threshold_from_histogram(abs_histogram(score, bits, mant_bits), s, mant_bits)
    return score >= theta, theta


@dataclass(frozen=True)
class FfnrResult:
    """What the FFN-Reuse unit (``hw/ffnr.py``) computes for one layer."""

    histogram: np.ndarray      # (bins,) counts of |H_d| per bin (leading one + mant_bits)
    theta: int                 # the chosen threshold (lower edge of a bin)
    mask: np.ndarray           # (T, N) bool, |H_d| >= theta
    delta: np.ndarray | None   # (T, N) where(mask, H' - H_d, 0), with H' given


def ffnr(cfg: Config, h_d, s, h_sparse=None) -> FfnrResult:
    """The FFN-Reuse unit's contract (same name as ``hw.ffnr.FFNR``): the magnitude rule
    of :func:`build_mask` over the whole W-bit ``h_d`` with its histogram and theta, and the
    FC2 input ``where(B, H' - H_d, 0)`` of a sparse iteration when ``h_sparse`` is given.
    ``s`` is read as the unit reads it (:func:`sparsity_code`: at most 6 decimals, in [0, 1)).
    """
    sparsity_code(s)
    h = np.asarray(h_d, dtype=np.int64)
    if h.ndim != 2:
        raise ExionError(f"H_d: expected a 2-D array (T x N), got shape {h.shape}")
    hist = abs_histogram(h, cfg.width)
    theta = threshold_from_histogram(hist, s)
    mask = np.abs(h) >= theta
    delta = None
    if h_sparse is not None:
        hs = np.asarray(h_sparse, dtype=np.int64)
        if hs.shape != h.shape:
            raise ExionError(f"H': shape {hs.shape} differs from H_d {h.shape}")
        delta = np.where(mask, hs - h, 0)
    return FfnrResult(hist, theta, mask, delta)


# -- one iteration ----------------------------------------------------------------------
def _acc_with_bias(cfg: Config, prod, bias, name: str) -> np.ndarray:
    out = prod + bias[None, :]
    lim = 1 << (cfg.acc_width - 1)
    if out.size and (out.min() < -lim or out.max() >= lim):
        raise ExionError(f"{name}: the biased accumulator leaves the {cfg.acc_width}-bit "
                         f"range (|bias| too large)")
    return out


def _check_bias(b, n: int, name: str) -> np.ndarray:
    a = np.asarray(b)
    if a.dtype.kind not in "iu":
        raise ExionError(f"{name}: expected integers at accumulator scale, got dtype {a.dtype}")
    if a.shape != (n,):
        raise ExionError(f"{name}: expected shape ({n},), got {a.shape}")
    return a.astype(np.int64)


def _check_weights(cfg, w1, b1, w2, b2):
    w1 = check_operand(cfg, w1, "W1", ndim=2)
    w2 = check_operand(cfg, w2, "W2", ndim=2)
    if w2.shape[0] != w1.shape[1]:
        raise ExionError(f"W2: shape {w2.shape} does not chain with W1 {w1.shape} "
                         f"(W2 rows must equal W1 columns)")
    b1 = _check_bias(b1, w1.shape[1], "b1")
    b2 = _check_bias(b2, w2.shape[1], "b2")
    check_k(cfg, w1.shape[0], "FC1 reduction d (W1 rows)")
    check_k(cfg, w2.shape[0], "FC2 reduction F (W2 rows)")
    return w1, b1, w2, b2


def _fc1(cfg, x, w1, b1, gelu):
    acc = _acc_with_bias(cfg, int_matmul(cfg, x, w1, "X", "W1"), b1, "b1")
    return gelu_requant(acc, gelu, cfg)


def ffn_dense(cfg: Config, x, w1, b1, w2, b2, gelu: GeluParams):
    """Dense FFN: ``(H, Y)`` with ``H = gelu_requant(X W1 + b1)``, ``Y = H W2 + b2``."""
    w1, b1, w2, b2 = _check_weights(cfg, w1, b1, w2, b2)
    h = _fc1(cfg, x, w1, b1, gelu)
    y = _acc_with_bias(cfg, int_matmul(cfg, h, w2, "H", "W2"), b2, "b2")
    return h, y


def ffn_sparse(cfg: Config, x, w1, b1, w2, b2, gelu: GeluParams, h_d, y_d, mask,
               fc2: str = "delta"):
    """Sparse FFN-Reuse iteration: ``(H', Y')`` (see the module docstring)."""
    if fc2 not in FC2_MODES:
        raise ExionError(f"fc2 must be one of {', '.join(FC2_MODES)}, got {fc2!r}")
    w1, b1, w2, b2 = _check_weights(cfg, w1, b1, w2, b2)
    h_d = check_operand(cfg, h_d, "H_d", ndim=2)
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != h_d.shape:
        raise ExionError(f"mask: expected a bool array of H_d's shape {h_d.shape}, got "
                         f"{mask.dtype} {mask.shape}")
    # Golden: compute FC1 everywhere, keep it only where B = 1 (the SDUE computes only there).
    h = np.where(mask, _fc1(cfg, x, w1, b1, gelu), h_d)
    if fc2 == "dense":
        y = _acc_with_bias(cfg, int_matmul(cfg, h, w2, "H'", "W2"), b2, "b2")
    else:
        y_d = np.asarray(y_d, dtype=np.int64)
        if y_d.shape != (h.shape[0], w2.shape[1]):
            raise ExionError(f"Y_d: expected shape {(h.shape[0], w2.shape[1])}, got "
                             f"{y_d.shape}")
        delta = h - h_d            # W+1-bit values, nonzero only where B = 1
        y = wrap(y_d + delta @ w2, cfg.acc_width)
    return h, y


# -- a run over iterations --------------------------------------------------------------
@dataclass(frozen=True)
class FFNIteration:
    t: int
    dense: bool
    h: np.ndarray
    y: np.ndarray
    mask: np.ndarray | None      # the bitmask used (sparse) or built (dense)
    theta: int | None
    sparsity: float              # achieved inter-iteration sparsity (0 for dense)
    fc1_macs: int
    fc2_macs: int
    fc1_dense_macs: int
    fc2_dense_macs: int

    @property
    def fc1_reduction(self) -> float:
        return 1 - self.fc1_macs / self.fc1_dense_macs if self.fc1_dense_macs else 0.0

    @property
    def fc2_reduction(self) -> float:
        return 1 - self.fc2_macs / self.fc2_dense_macs if self.fc2_dense_macs else 0.0

    def summary(self) -> dict:
        return {"t": self.t, "dense": self.dense, "theta": self.theta,
                "sparsity": self.sparsity, "fc1_macs": self.fc1_macs,
                "fc2_macs": self.fc2_macs, "fc1_reduction": self.fc1_reduction,
                "fc2_reduction": self.fc2_reduction}


@dataclass(frozen=True)
class FFNReuseRun:
    iterations: list = field(default_factory=list)

    def _tot(self, attr):
        return sum(getattr(it, attr) for it in self.iterations)

    @property
    def fc1_reduction(self) -> float:
        d = self._tot("fc1_dense_macs")
        return 1 - self._tot("fc1_macs") / d if d else 0.0

    @property
    def fc2_reduction(self) -> float:
        d = self._tot("fc2_dense_macs")
        return 1 - self._tot("fc2_macs") / d if d else 0.0

    @property
    def sparse_sparsity(self) -> float:
        """Mean achieved sparsity over the sparse iterations (0 if there are none)."""
        sp = [it.sparsity for it in self.iterations if not it.dense]
        return float(np.mean(sp)) if sp else 0.0

    def summary(self) -> dict:
        return {"iterations": [it.summary() for it in self.iterations],
                "sparse_iterations": sum(not it.dense for it in self.iterations),
                "mean_sparse_sparsity": self.sparse_sparsity,
                "fc1_reduction": self.fc1_reduction, "fc2_reduction": self.fc2_reduction}


def ffn_reuse_run(cfg: Config, xs, w1, b1, w2, b2, gelu: GeluParams, n: int, s,
                  rule: str = "magnitude", fc2: str = "delta", dense_tail=0,
                  hist_mant_bits: int = 4) -> FFNReuseRun:
    """Run FFN-Reuse over iterations ``xs[t]`` (each T x d) with given weights."""
    if rule not in RULES:
        raise ExionError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if fc2 not in FC2_MODES:
        raise ExionError(f"fc2 must be one of {', '.join(FC2_MODES)}, got {fc2!r}")
    w1, b1, w2, b2 = _check_weights(cfg, w1, b1, w2, b2)
    xs = [check_operand(cfg, x, f"X[{t}]", ndim=2) for t, x in enumerate(xs)]
    for t, x in enumerate(xs):
        if x.shape != (xs[0].shape[0], w1.shape[0]):
            raise ExionError(f"X[{t}]: expected shape {(xs[0].shape[0], w1.shape[0])} "
                             f"(T x d, d = W1 rows), got {x.shape}")
    dense_sched = schedule(len(xs), n, dense_tail)
    T, d = xs[0].shape if xs else (0, w1.shape[0])
    F, D = w2.shape
    out = []
    h_d = y_d = mask = h_prev = None
    for t, x in enumerate(xs):
        if dense_sched[t]:
            h, y = ffn_dense(cfg, x, w1, b1, w2, b2, gelu)
            h_prev, h_d, y_d = h_d, h, y
            mask, theta = build_mask(h_d, s, rule, h_prev if rule == "change" else None,
                                     cfg.width, hist_mant_bits)
            out.append(FFNIteration(t, True, h, y, mask, theta, 0.0, T * d * F, T * F * D,
                                    T * d * F, T * F * D))
        else:
            h, y = ffn_sparse(cfg, x, w1, b1, w2, b2, gelu, h_d, y_d, mask, fc2)
            ones = int(mask.sum())
            sp = 1 - ones / mask.size if mask.size else 0.0
            fc2_macs = ones * D if fc2 == "delta" else T * F * D
            out.append(FFNIteration(t, False, h, y, mask, theta, sp, ones * d, fc2_macs,
                                    T * d * F, T * F * D))
    return FFNReuseRun(out)
