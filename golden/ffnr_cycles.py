"""Cycle model of the FFN-Reuse unit (``hw/ffnr.py``), exact for the RTL without stalls.

Commands are timed from the cycle the command is taken to the first idle cycle (input always
offered, outputs always ready; ``tests/test_ffnr.py`` and ``tests/test_ffnr_rtl.py`` assert
equality). ``NW = ceil(N / L)`` words per token, ``bins`` histogram bins (129 at W = 12, 4
mantissa bits), P mask columns per beat, ``Q = min(P, L)``::

    DENSE   1 + T * NW + HIST_LATENCY + bins + SEARCH_FIXED
    MASK    1 + ceil(T / R) * ceil(N / P) * (P / Q) + MASK_LATENCY
    DELTA   1 + T * NW + DELTA_LATENCY
    YSTORE  1 + T * ceil(D / L) + 1           (Y_d in, D = FC2 outputs per token)
    YLOAD   1 + T * ceil(D / L) + 2           (Y_d replayed)
    CLEAR   1                                 (histogram zeroed)
    HIST    1 + T * NW + HIST_LATENCY         (tile into the histogram, no H_d write)
    THRESH  1 + bins + SEARCH_FIXED           (search over the accumulated histogram)
    STORE   1 + T * NW                        (tile into H_d, histogram untouched)

A layer larger than the cache (``tiled_cycles``) runs CLEAR, one HIST per tile, THRESH, then
per tile STORE and MASK (and DELTA on a sparse pass); tiles are ``t_tile`` rows x ``n_tile``
columns, row tiles outer, the last ones smaller.

A dense iteration runs DENSE (H in, histogram, threshold), YSTORE (Y_d in) and, for the next
sparse iteration, MASK; a sparse iteration runs MASK (to the CAU), DELTA (H' in, delta out)
and YLOAD (Y_d out, the OMEM preload FC2 accumulates onto).
"""

from __future__ import annotations

import math

from exion.config import Config

from .ffn_reuse import num_bins

__all__ = ["HIST_LATENCY", "SEARCH_FIXED", "MASK_LATENCY", "DELTA_LATENCY", "DEFAULT_P",
           "dense_cycles", "mask_cycles", "delta_cycles", "y_store_cycles", "y_load_cycles",
           "iteration_cycles", "clear_cycles", "hist_cycles", "thresh_cycles",
           "store_cycles", "tiles", "tiled_cycles"]

#: Histogram pipeline: input register, bin register, counter add.
HIST_LATENCY = 3
#: Threshold search beyond one cycle per bin: target product, first candidate, last
#: compare, edge, idle detect.
SEARCH_FIXED = 4
#: Mask emitter: H_d read, output register, idle.
MASK_LATENCY = 3
#: Delta unit: H_d read / output, idle detect.
DELTA_LATENCY = 2
#: The CAU's mask beat width (``hw/cau.py`` default cols_per_cycle).
DEFAULT_P = 8


def _bins(cfg: Config, bins: int | None, mant_bits: int) -> int:
    return num_bins(1 << (cfg.width - 1), mant_bits) if bins is None else bins


def dense_cycles(cfg: Config, t: int, n: int, bins: int | None = None,
                 mant_bits: int = 4) -> int:
    return (1 + t * math.ceil(n / cfg.lanes) + HIST_LATENCY + _bins(cfg, bins, mant_bits)
            + SEARCH_FIXED)


def mask_cycles(cfg: Config, t: int, n: int, p: int = DEFAULT_P) -> int:
    q = min(p, cfg.lanes)
    return 1 + math.ceil(t / cfg.rows) * math.ceil(n / p) * (p // q) + MASK_LATENCY


def delta_cycles(cfg: Config, t: int, n: int) -> int:
    return 1 + t * math.ceil(n / cfg.lanes) + DELTA_LATENCY


def y_store_cycles(cfg: Config, t: int, d: int) -> int:
    return 1 + t * math.ceil(d / cfg.lanes) + 1


def y_load_cycles(cfg: Config, t: int, d: int) -> int:
    return 1 + t * math.ceil(d / cfg.lanes) + 2


def iteration_cycles(cfg: Config, t: int, n: int, d: int, dense: bool,
                     p: int = DEFAULT_P) -> int:
    """FFN-Reuse unit cycles of one iteration (its own, not overlapped with the SDUE): dense
    DENSE + MASK + YSTORE, sparse MASK + DELTA + YLOAD."""
    if dense:
        return dense_cycles(cfg, t, n) + mask_cycles(cfg, t, n, p) + y_store_cycles(cfg, t, d)
    return mask_cycles(cfg, t, n, p) + delta_cycles(cfg, t, n) + y_load_cycles(cfg, t, d)


def clear_cycles(cfg: Config) -> int:
    return 1


def hist_cycles(cfg: Config, t: int, n: int) -> int:
    return 1 + t * math.ceil(n / cfg.lanes) + HIST_LATENCY


def thresh_cycles(cfg: Config, bins: int | None = None, mant_bits: int = 4) -> int:
    return 1 + _bins(cfg, bins, mant_bits) + SEARCH_FIXED


def store_cycles(cfg: Config, t: int, n: int) -> int:
    return 1 + t * math.ceil(n / cfg.lanes)


def tiles(T: int, N: int, t_tile: int, n_tile: int) -> list[tuple[int, int, int, int]]:
    """``(row0, col0, rows, cols)`` of every tile of a T x N layer, row tiles outer."""
    return [(r, c, min(t_tile, T - r), min(n_tile, N - c))
            for r in range(0, T, t_tile) for c in range(0, N, n_tile)]


def tiled_cycles(cfg: Config, T: int, N: int, t_tile: int, n_tile: int, *,
                 delta: bool = False, p: int = DEFAULT_P, bins: int | None = None) -> dict:
    """Cycles of a whole tiled layer, per command kind and ``total``: CLEAR, HIST per tile,
    THRESH, then STORE + MASK (+ DELTA) per tile."""
    ts = tiles(T, N, t_tile, n_tile)
    c = {"clear": clear_cycles(cfg),
         "hist": sum(hist_cycles(cfg, t, n) for _, _, t, n in ts),
         "thresh": thresh_cycles(cfg, bins),
         "store": sum(store_cycles(cfg, t, n) for _, _, t, n in ts),
         "mask": sum(mask_cycles(cfg, t, n, p) for _, _, t, n in ts)}
    if delta:
        c["delta"] = sum(delta_cycles(cfg, t, n) for _, _, t, n in ts)
    c["total"] = sum(c.values())
    return c
