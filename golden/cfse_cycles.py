"""Cycle model of the CFSE units (``hw/cfse.py``), exact against the RTL.

A run is counted from the cycle whose clock edge takes the first input beat to the cycle
whose edge transfers the last output beat, inclusive, with the input offered every cycle and
the output always ready (``tests/test_cfse_rtl.py`` asserts equality on every such case).
Every unit takes one beat of L = ``cfg.lanes`` elements per cycle.

* GELU (``gelu_fx`` or ``gelu_requant``): ``ceil(elements / L) + GELU_LATENCY``.
* softmax / layer norm, ``rows`` rows of ``n`` elements, ``w = ceil(n / L)`` beats a row:
  ``(rows + 2) * w + fixed`` with ``fixed = 2 * FIFO_LATENCY + pa + pb + pc``. Phase A
  (ingest, row max or sum) takes w cycles a row, phase B (second pass: exponentials or
  squared deviations) and phase C (the per-element division and output) w cycles each on a
  later row; the three overlap on consecutive rows, so a stream of rows costs w cycles per
  row; the last row pays its own three passes, the two FIFO hand-overs and the phase
  pipelines ``pa`` (A's last beat -> F1), ``pb`` (B's last read -> F2), ``pc`` (C's read ->
  output). Rows longer than the buffer (``n > n_max = cfg.cfse_n_max``) are restreamed: the
  host sends each row three times (pass 1 to A, 2 to B, 3 to C) and a long row starts only
  when the unit is empty, so each row costs ``3 * w + fixed - pc`` and the last adds ``pc``:
  ``rows * (3 * w + fixed - pc) + pc`` (one long row: ``3 * w + fixed``, as a short one):

  ========== ============================ ====================================== =============
  unit       pa                           pb                                     pc
  ========== ============================ ====================================== =============
  softmax    0                            read + exp2 (3)                        read + exp2 + divider (16 + 1)
  layer norm NOT + mean divider (24 + 1)  read, d, d*d + variance divider (48 +  read, NOT, divider (15 + 1),
             + mean register              1), + eps, isqrt (25 + 1)              n, n*gamma, output
  ========== ============================ ====================================== =============

:func:`tile_figures` puts a unit's figures for one R x N tile next to the SDUE's for the
product that makes the tile (``docs/cfse.md``, throughput goal).
"""

from __future__ import annotations

import math

from exion.config import Config
from exion.errors import ExionError

from .conmerge import dense_plan
from .cycles import gemm_cycles

__all__ = ["FIFO_LATENCY", "GELU_LATENCY", "EXP_LATENCY", "phase_latencies", "fixed_cycles",
           "gelu_cycles", "row_cycles", "restreamed", "cfse_cycles", "tile_figures",
           "throughput_table", "GOAL_CASES", "FUNCTIONS"]

FUNCTIONS = ("gelu", "softmax", "layernorm")

#: Row FIFO (Amaranth SyncFIFOBuffered): written in cycle c, offered in cycle c + 2.
FIFO_LATENCY = 2
#: GELU pipeline: requant product, Q.11 input, ROM read, interpolation, product, output.
GELU_LATENCY = 6
#: Softmax exponential: z, p and shift, e registers.
EXP_LATENCY = 3
#: Quotient bits of the pipelined dividers / root bits of the square root (one stage each,
#: plus an input stage): softmax output, layer-norm mean, variance, root, normalised value.
SM_Q_BITS, LN_MU_Q_BITS, LN_VAR_Q_BITS, LN_ROOT_BITS, LN_N_Q_BITS = 16, 24, 48, 25, 15


def phase_latencies(fn: str) -> dict:
    """``pa``, ``pb``, ``pc`` of the softmax or layer-norm unit (see the module docstring)."""
    if fn == "softmax":
        return {"pa": 0, "pb": 1 + EXP_LATENCY, "pc": 1 + EXP_LATENCY + SM_Q_BITS + 1}
    if fn == "layernorm":
        return {"pa": 1 + (LN_MU_Q_BITS + 1) + 1,
                "pb": 3 + (LN_VAR_Q_BITS + 1) + 1 + (LN_ROOT_BITS + 1),
                "pc": 1 + 1 + (LN_N_Q_BITS + 1) + 3}
    raise ExionError(f"phase_latencies: fn must be 'softmax' or 'layernorm', got {fn!r}")


def fixed_cycles(fn: str) -> int:
    """``cycles - (rows + 2) * ceil(n / L)`` of a softmax / layer-norm run."""
    return 2 * FIFO_LATENCY + sum(phase_latencies(fn).values())


def gelu_cycles(cfg: Config, elements: int) -> int:
    """A GELU run over ``elements`` values (0 for none)."""
    beats = math.ceil(elements / cfg.lanes)
    return beats + GELU_LATENCY if beats else 0


def row_cycles(cfg: Config, fn: str, rows: int, n: int, n_max: int | None = None) -> int:
    """A softmax / layer-norm run over ``rows`` rows of ``n`` elements (0 for no row).

    Rows up to ``n_max`` (default ``cfg.cfse_n_max``) are buffered: ``(rows + 2) * w +
    fixed``. Longer rows are restreamed (the input carries each row three times; the unit
    takes a long row only when empty, so rows do not overlap): ``rows * (3 * w + fixed -
    pc) + pc``."""
    if n < 1:
        raise ExionError(f"row_cycles: row length must be >= 1, got {n}")
    if rows == 0:
        return 0
    w = math.ceil(n / cfg.lanes)
    if n > (cfg.cfse_n_max if n_max is None else n_max):
        pc = phase_latencies(fn)["pc"]
        return rows * (3 * w + fixed_cycles(fn) - pc) + pc
    return (rows + 2) * w + fixed_cycles(fn)


def restreamed(cfg: Config, n: int, n_max: int | None = None) -> bool:
    """Whether rows of ``n`` elements run in the long-row (restream) mode."""
    return n > (cfg.cfse_n_max if n_max is None else n_max)


def cfse_cycles(cfg: Config, fn: str, shape, n_max: int | None = None) -> int:
    """Cycles of ``fn`` on an input of ``shape`` (rows along the last axis for softmax and
    layer norm; GELU is elementwise)."""
    shape = tuple(int(s) for s in shape)
    size = math.prod(shape)
    if fn == "gelu":
        return gelu_cycles(cfg, size)
    if fn not in FUNCTIONS:
        raise ExionError(f"cfse_cycles: fn must be one of {', '.join(FUNCTIONS)}, got {fn!r}")
    if not shape:
        raise ExionError(f"cfse_cycles: {fn} needs rows (at least a 1-D input)")
    n = shape[-1]
    return row_cycles(cfg, fn, size // n if n else 0, n, n_max)


def tile_figures(cfg: Config, fn: str, n: int, k: int) -> dict:
    """One R x ``n`` tile (R = ``cfg.rows``): the CFSE's cycles beside the SDUE's for the
    dense product with reduction ``k`` that produces the tile (``golden.cycles``).

    ``*_stream`` are per-tile costs in a long stream of tiles (the fixed pipeline cycles
    paid once): the CFSE ``R * ceil(n / L)``, the SDUE ``sum_p max(k_p, C)``. ``*_alone``
    are one isolated tile including the fixed cycles.
    """
    R = cfg.rows
    g = gemm_cycles(cfg, k, dense_plan(cfg, R, n))
    cfse_stream = R * math.ceil(n / cfg.lanes)
    sdue_stream = g.compute
    return {"fn": fn, "n": n, "k": k, "rows": R,
            "cfse_stream": cfse_stream, "sdue_stream": sdue_stream,
            "cfse_alone": row_cycles(cfg, fn, R, n), "sdue_alone": g.sdue_cycles,
            "keeps_up": cfse_stream <= sdue_stream}


#: The products whose output tiles the CFSE consumes (docs/cfse.md): softmax after Q.K^T
#: (reduction = head dim 72), layer norm after the output projection (reduction = N = d).
GOAL_CASES = (("softmax", 64, 72), ("softmax", 256, 72), ("softmax", 1024, 72),
              ("layernorm", 64, 64), ("layernorm", 256, 256), ("layernorm", 1152, 1152))


def throughput_table(cfg: Config) -> list[dict]:
    """:func:`tile_figures` for :data:`GOAL_CASES` (rows no longer than the CFSE's default
    ``n_max = min(k_max, 16384)`` and reductions within ``k_max``)."""
    lim = cfg.cfse_n_max
    return [tile_figures(cfg, fn, n, k) for fn, n, k in GOAL_CASES if n <= lim and k <= lim]


if __name__ == "__main__":      # python -m exion.golden.cfse_cycles
    from exion.config import PRESETS
    print("| config | fn | N | SDUE K | CFSE / tile (stream) | SDUE / tile (stream) | "
          "CFSE one tile | SDUE one tile | keeps up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ("toy", "exion16"):
        for f in throughput_table(PRESETS[name]):
            print(f"| {name} | {f['fn']} | {f['n']} | {f['k']} | {f['cfse_stream']} | "
                  f"{f['sdue_stream']} | {f['cfse_alone']} | {f['sdue_alone']} | "
                  f"{'yes' if f['keeps_up'] else 'NO'} |")
