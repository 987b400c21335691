"""``rtl_ffnr``: the Verilated FFN-Reuse unit as a plain function, and its stream helpers.

    run = rtl_ffnr(cfg, h, 0.8)                       # one dense H: mask, theta, histogram
    mask, theta = build_mask(h, 0.8, "magnitude", width=cfg.width)
    np.testing.assert_array_equal(run.mask, mask)

:func:`rtl_ffnr_batch` runs many cases in one simulator invocation (one Verilator build per
config, shared by the session, see :mod:`exion.sim.runner`). Per case the bench sends a DENSE
command with H, reads the histogram, sends MASK and collects the mask beats, and, when the
case has an ``h_sparse`` (H'), sends DELTA with H' and collects ``where(B, H' - H_d, 0)``.
An H larger than the unit's cache (t_max x n_max; any T x N up to ``hist_max`` values) is
tiled in the same simulation: CLEAR, HIST per tile, THRESH, then STORE, MASK (and DELTA) per
tile; the host assembles mask and delta (``ffnr_program`` builds the bench's command list,
``ffnr_run_from_outputs`` decodes it).
The helpers :func:`h_beats`, :func:`mask_from_beats` and :func:`delta_from_beats` are shared
by the cocotb bench (``sim/tb_ffnr.py``) and the Amaranth-simulator tests, so all agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from exion.config import Config
from exion.errors import ExionError
from exion.golden import ffnr_cycles as fc
from exion.golden.ffn_reuse import S_DIGITS, sparsity_code
from exion.golden.quant import check_operand
from exion.hw.cau import mask_layout
from exion.hw.ffnr import (HIST_MAX, FfnrSizes, beat_layout, cmd_layout, delta_layout,
                           y_layout)

from .payload import pack, unpack

from .runner import rtl_build, run_bench_pickled

__all__ = ["FfnrCase", "FfnrRun", "h_beats", "mask_from_beats", "delta_from_beats",
           "rows_from_beats", "cmd_fields", "rtl_ffnr", "rtl_ffnr_batch", "check_case", "tile_of",
           "ffnr_program", "ffnr_run_from_outputs"]

OP_DENSE, OP_MASK, OP_DELTA, OP_YSTORE, OP_YLOAD = 0, 1, 2, 3, 4
OP_CLEAR, OP_HIST, OP_THRESH, OP_STORE = 5, 6, 7, 8


@dataclass
class FfnrCase:
    """One dense H (T x N, W-bit), a target sparsity, and optionally H' for a sparse pass."""

    h: np.ndarray
    s: object = 0.8
    h_sparse: np.ndarray | None = None
    name: str = ""
    y_d: np.ndarray | None = None      # T x D A-bit FC2 accumulator: stored, then replayed
    tile: tuple | None = None          # force tiling with (t_tile, n_tile) tiles


@dataclass
class FfnrRun:
    mask: np.ndarray            # (T, N) bool, decoded from the mask beats
    theta: int
    theta_bin: int
    ones: int                   # values >= theta (the unit's own count)
    total: int
    histogram: np.ndarray       # (bins,) int64
    delta: np.ndarray | None    # (T, N) int64 where(B, H' - H_d, 0), if the case had H'
    y_replay: np.ndarray | None = None   # (T, D) Y_d as replayed by YLOAD, if the case had Y_d
    cycles: dict = field(default_factory=dict)   # DENSE / MASK / DELTA, cmd to idle
    mask_beats: list = field(default_factory=list)  # raw decoded beats (format checks)
    report: dict = field(default_factory=dict)      # the bench report (seed, run folder, waves)
    tiling: dict | None = None      # {t_tile, n_tile, tiles} of a tiled run, None for one DENSE


def check_case(cfg: Config, case: FfnrCase, hist_max: int = HIST_MAX) -> FfnrCase:
    """Validate a case against the unit's limits (ExionError naming the limit): any T x N
    with T, N >= 1 and T * N <= hist_max (what one layer's histogram counts)."""
    h = check_operand(cfg, case.h, f"H{' ' + case.name if case.name else ''}", ndim=2)
    T, N = h.shape
    if T < 1 or N < 1 or T * N > hist_max:
        raise ExionError(f"H has shape {h.shape}: the FFN-Reuse unit takes T, N >= 1 with "
                         f"T x N <= {hist_max} values per layer (hist_max)")
    sparsity_code(case.s)
    hs = None
    if case.h_sparse is not None:
        hs = check_operand(cfg, case.h_sparse, "H'", ndim=2)
        if hs.shape != h.shape:
            raise ExionError(f"H' has shape {hs.shape}, expected H's {h.shape}")
    yd = None
    if case.y_d is not None:
        yd = np.asarray(case.y_d)
        lim = 1 << (cfg.acc_width - 1)
        if yd.ndim != 2 or yd.shape[0] != T or yd.dtype.kind not in "iu" or (
                yd.size and (yd.min() < -lim or yd.max() >= lim)):
            raise ExionError(f"Y_d: expected a ({T}, D) array of signed {cfg.acc_width}-bit "
                             f"integers, got {yd.dtype} {yd.shape}")
        yd = yd.astype(np.int64)
    return FfnrCase(h, case.s, hs, case.name, yd, case.tile)


def cmd_fields(op: int, t: int = 0, n: int = 0, s_code: int = 0, d: int = 0) -> dict:
    return {"op": op, "t": t, "n": n, "d": d, "s_code": s_code}


def h_beats(cfg: Config, h) -> list[list[int]]:
    """Row-major beats of L values (the last beat of a row padded with 0)."""
    h = np.asarray(h, dtype=np.int64)
    T, N = h.shape
    L = cfg.lanes
    nw = math.ceil(N / L)
    pad = np.zeros((T, nw * L), dtype=np.int64)
    pad[:, :N] = h
    return [[int(v) for v in pad[t, w * L:(w + 1) * L]] for t in range(T) for w in range(nw)]


def rows_from_beats(cfg: Config, beats: list[list[int]], T: int, N: int) -> np.ndarray:
    """Inverse of :func:`h_beats`: (T, N) from row-major beats of L values."""
    L = cfg.lanes
    nw = math.ceil(N / L)
    assert len(beats) == T * nw, f"{len(beats)} beats, expected {T} x {nw}"
    return np.asarray(beats, dtype=np.int64).reshape(T, nw * L)[:, :N]


def mask_from_beats(cfg: Config, beats: list[dict], T: int, N: int, P: int) -> np.ndarray:
    """(T, N) mask from CAU mask beats; checks the beat count, ``last``, ``block`` and that
    columns past N and rows past T are zero (AssertionError otherwise)."""
    R = cfg.rows
    nblk, per = math.ceil(T / R), math.ceil(N / P)
    assert len(beats) == nblk * per, f"{len(beats)} mask beats, expected {nblk * per}"
    full = np.zeros((nblk * R, per * P), dtype=bool)
    for i, b in enumerate(beats):
        blk, j = divmod(i, per)
        assert b["block"] == blk % 2**16, f"beat {i}: block {b['block']}, expected {blk}"
        assert b["last"] == int(j == per - 1), f"beat {i}: last = {b['last']}"
        assert b.get("sort", 0) == 0
        assert b.get("ways", cfg.merge_ways) == cfg.merge_ways, f"beat {i}: ways {b.get('ways')}"
        for lane in range(P):
            cv = b["cv"][lane]
            for r in range(R):
                full[blk * R + r, j * P + lane] = bool((cv >> r) & 1)
    assert not full[T:].any() and not full[:, N:].any(), "mask bits past T or N"
    return full[:T, :N]


def delta_from_beats(cfg: Config, beats: list[list[int]], T: int, N: int) -> np.ndarray:
    L = cfg.lanes
    nw = math.ceil(N / L)
    assert len(beats) == T * nw, f"{len(beats)} delta beats, expected {T * nw}"
    arr = np.asarray(beats, dtype=np.int64).reshape(T, nw * L)
    assert not arr[:, N:].any(), "delta lanes past N must be 0"
    return arr[:, :N]


def ffnr_program(cfg, case, sz, tile):
    """The bench steps ``(cmd, beats, inp, out, read)`` of one case (packed payloads) and the
    names of their cycle counts. ``tile`` None: one DENSE tile; else (t_tile, n_tile)."""
    c_lay, h_lay, y_lay = cmd_layout(sz), beat_layout(cfg), y_layout(cfg)

    def cmd(op, t=0, n=0, code=0, d=0):
        return pack(c_lay, cmd_fields(op, t, n, code, d))

    def beats(a, lay=h_lay):
        return [pack(lay, b) for b in h_beats(cfg, a)]

    code = sparsity_code(case.s)
    T, N = case.h.shape
    steps = []
    if tile is None:
        steps += [("dense", cmd(OP_DENSE, T, N, code), beats(case.h), "h", None, True),
                  ("mask", cmd(OP_MASK), [], "h", "mask", False)]
        if case.h_sparse is not None:
            steps.append(("delta", cmd(OP_DELTA), beats(case.h_sparse), "h", "delta", False))
        if case.y_d is not None:
            steps += [("ystore", cmd(OP_YSTORE, T, d=case.y_d.shape[1]), beats(case.y_d, y_lay),
                       "y", None, False),
                      ("yload", cmd(OP_YLOAD), [], "h", "y_out", False)]
        return steps
    ts = fc.tiles(T, N, *tile)
    steps.append(("clear", cmd(OP_CLEAR), [], "h", None, False))
    for r, c, t, n in ts:
        steps.append(("hist", cmd(OP_HIST, t, n), beats(case.h[r:r + t, c:c + n]), "h", None,
                      False))
    steps.append(("thresh", cmd(OP_THRESH, code=code), [], "h", None, True))
    for r, c, t, n in ts:
        steps += [("store", cmd(OP_STORE, t, n), beats(case.h[r:r + t, c:c + n]), "h", None,
                   False),
                  ("mask", cmd(OP_MASK), [], "h", "mask", False)]
        if case.h_sparse is not None:
            steps.append(("delta", cmd(OP_DELTA), beats(case.h_sparse[r:r + t, c:c + n]), "h",
                          "delta", False))
    return steps


def ffnr_run_from_outputs(cfg, case, steps, outs, sz, tile) -> FfnrRun:
    """Assemble one case's FfnrRun from its steps' raw outputs (tiles placed by the host)."""
    T, N = case.h.shape
    m_lay, d_lay, y_lay = mask_layout(cfg, sz.P, True), delta_layout(cfg), y_layout(cfg)
    ts = [(0, 0, T, N)] if tile is None else fc.tiles(T, N, *tile)
    mask = np.zeros((T, N), dtype=bool)
    delta = None if case.h_sparse is None else np.zeros((T, N), dtype=np.int64)
    y, cycles, res, beats, k = None, {}, None, [], -1
    for (name, *_), o in zip(steps, outs):
        if o["error"]:
            raise ExionError(f"the FFN-Reuse unit refused {name.upper()} (case {case.name!r})")
        cycles[name] = cycles.get(name, 0) + o["cycles"]
        res = o.get("results", res)
        if name in ("dense", "store"):
            k += 1
            r, c, t, n = ts[k]
        elif name == "mask":
            got = [unpack(m_lay, b) for b in o["out"]]
            beats += got
            mask[r:r + t, c:c + n] = mask_from_beats(cfg, got, t, n, sz.P)
        elif name == "delta":
            delta[r:r + t, c:c + n] = delta_from_beats(
                cfg, [unpack(d_lay, b) for b in o["out"]], t, n)
        elif name == "yload":
            y = rows_from_beats(cfg, [unpack(y_lay, b) for b in o["out"]], T, case.y_d.shape[1])
    cycles["total"] = sum(cycles.values())
    tiling = None if tile is None else {"t_tile": tile[0], "n_tile": tile[1], "tiles": len(ts)}
    return FfnrRun(mask, res["theta"], res["theta_bin"], res["ones"], res["total"],
                   np.asarray(res["hist"], dtype=np.int64), delta, y, cycles, beats,
                   tiling=tiling)


def tile_of(case: FfnrCase, t_max: int, n_max: int):
    """The case's tiling: None (one DENSE) when H fits the cache and no tile is forced, else
    (t_tile, n_tile) (default the cache, t_max x n_max)."""
    T, N = case.h.shape
    if case.tile is not None:
        t, n = case.tile
        if not (1 <= t <= t_max and 1 <= n <= n_max):
            raise ExionError(f"tile {case.tile}: tiles are 1..{t_max} x 1..{n_max}")
        return (t, n)
    return None if (T <= t_max and N <= n_max) else (t_max, n_max)


def rtl_ffnr_batch(cfg: Config, cases: list[FfnrCase], *, seed: int | None = None,
                   gaps: float = 0.0, backpressure: float = 0.0, waves: bool = False,
                   run_name: str = "ffnr", progress=None) -> tuple[list[FfnrRun], dict]:
    """Run ``cases`` through the Verilated ``ffnr`` top (default sizes) in one simulation.

    A case whose H fits the cache (t_max x n_max) runs DENSE, MASK (, DELTA, YSTORE, YLOAD);
    a larger one (or one with ``tile``) is tiled: CLEAR, HIST per tile, THRESH, then STORE +
    MASK (+ DELTA) per tile; the host assembles mask and delta. ``gaps``: probability of an
    idle input cycle on ``cmd`` and ``h``; ``backpressure``: probability that ``ready`` of
    ``mask`` / ``delta`` / ``y_out`` is low in a cycle.
    """
    build = rtl_build(cfg, "ffnr", waves=waves, progress=progress)
    const = build.manifest_data()["constants"]
    if const["s_digits"] != S_DIGITS:
        raise ExionError(f"the ffnr build has s_digits = {const['s_digits']}, the golden "
                         f"{S_DIGITS}")
    sz = FfnrSizes(cfg, t_max=const["t_max"], n_max=const["n_max"], d_max=const["d_max"],
                   cols_per_cycle=const["P"], mant_bits=const["mant_bits"],
                   s_digits=const["s_digits"], hist_max=const["hist_max"])
    cases = [check_case(cfg, c, sz.hist_max) for c in cases]
    tiles = [tile_of(c, sz.t_max, sz.n_max) for c in cases]
    for c, tl in zip(cases, tiles):
        if c.y_d is not None and (tl is not None or not 1 <= c.y_d.shape[1] <= sz.d_max):
            raise ExionError(f"Y_d ({c.y_d.shape[1]} columns) needs one tile (H within "
                             f"{sz.t_max} x {sz.n_max}) and 1..{sz.d_max} columns (d_max)")
    programs = [ffnr_program(cfg, c, sz, tl) for c, tl in zip(cases, tiles)]
    payload = [[st[1:] for st in prog] for prog in programs]
    outs, report = run_bench_pickled(build, "exion.sim.tb_ffnr", payload, key="cases",
                                     seed=seed, run_name=run_name,
                                     params={"gaps": gaps, "backpressure": backpressure})
    runs = [ffnr_run_from_outputs(cfg, c, prog, o, sz, tl)
            for c, prog, o, tl in zip(cases, programs, outs, tiles)]
    return runs, report


def rtl_ffnr(cfg: Config, h, s, *, h_sparse=None, tile=None, **kw) -> FfnrRun:
    """One H (any T x N) through the Verilated unit: ``FfnrRun`` (mask, theta, histogram,
    cycles, tiling, ...). H larger than the cache (or ``tile`` given) runs tiled."""
    runs, report = rtl_ffnr_batch(cfg, [FfnrCase(h, s, h_sparse, tile=tile)], **kw)
    runs[0].report = report
    return runs[0]
