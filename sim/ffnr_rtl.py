"""``rtl_ffnr``: the Verilated FFN-Reuse unit as a plain function, and its stream helpers.

    run = rtl_ffnr(cfg, h, 0.8)                       # one dense H: mask, theta, histogram
    mask, theta = build_mask(h, 0.8, "magnitude", width=cfg.width)
    np.testing.assert_array_equal(run.mask, mask)

:func:`rtl_ffnr_batch` runs many cases in one simulator invocation (one Verilator build per
config, shared by the session, see :mod:`exion.sim.runner`). Per case the bench sends a DENSE
command with H, reads the histogram, sends MASK and collects the mask beats, and, when the
case has an ``h_sparse`` (H'), sends DELTA with H' and collects ``where(B, H' - H_d, 0)``.
The helpers :func:`h_beats`, :func:`mask_from_beats` and :func:`delta_from_beats` are shared
by the cocotb bench (``sim/tb_ffnr.py``) and the Amaranth-simulator tests, so all agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from exion.config import Config
from exion.errors import ExionError
from exion.golden.ffn_reuse import S_DIGITS, sparsity_code
from exion.golden.quant import check_operand

from .runner import rtl_build, run_bench_pickled

__all__ = ["FfnrCase", "FfnrRun", "h_beats", "mask_from_beats", "delta_from_beats",
           "rows_from_beats", "cmd_fields", "rtl_ffnr", "rtl_ffnr_batch", "check_case"]

OP_DENSE, OP_MASK, OP_DELTA, OP_YSTORE, OP_YLOAD = 0, 1, 2, 3, 4


@dataclass
class FfnrCase:
    """One dense H (T x N, W-bit), a target sparsity, and optionally H' for a sparse pass."""

    h: np.ndarray
    s: object = 0.8
    h_sparse: np.ndarray | None = None
    name: str = ""
    y_d: np.ndarray | None = None      # T x D A-bit FC2 accumulator: stored, then replayed


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


def check_case(cfg: Config, case: FfnrCase, t_max: int, n_max: int) -> FfnrCase:
    """Validate a case against the unit's limits (ExionError naming the limit)."""
    h = check_operand(cfg, case.h, f"H{' ' + case.name if case.name else ''}", ndim=2)
    T, N = h.shape
    if not (1 <= T <= t_max and 1 <= N <= n_max):
        raise ExionError(f"H has shape {h.shape}: the FFN-Reuse unit holds 1..{t_max} tokens "
                         f"x 1..{n_max} hidden units (t_max, n_max)")
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
    return FfnrCase(h, case.s, hs, case.name, yd)


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


def _run_from_output(cfg, case, o, P) -> FfnrRun:
    T, N = case.h.shape
    delta = None
    if o.get("delta") is not None:
        delta = delta_from_beats(cfg, o["delta"], T, N)
    y = None
    if o.get("y") is not None:
        y = rows_from_beats(cfg, o["y"], T, case.y_d.shape[1])
    return FfnrRun(mask_from_beats(cfg, o["mask"], T, N, P), o["theta"], o["theta_bin"],
                   o["ones"], o["total"], np.asarray(o["hist"], dtype=np.int64), delta, y,
                   o["cycles"], o["mask"])


def rtl_ffnr_batch(cfg: Config, cases: list[FfnrCase], *, seed: int | None = None,
                   gaps: float = 0.0, backpressure: float = 0.0, waves: bool = False,
                   run_name: str = "ffnr", progress=None) -> tuple[list[FfnrRun], dict]:
    """Run ``cases`` through the Verilated ``ffnr`` top (default sizes) in one simulation.

    ``gaps``: probability of an idle input cycle on ``cmd`` and ``h``; ``backpressure``:
    probability that ``ready`` of ``mask`` / ``delta`` is low in a cycle.
    """
    build = rtl_build(cfg, "ffnr", waves=waves, progress=progress)
    const = build.manifest_data()["constants"]
    if const["s_digits"] != S_DIGITS:
        raise ExionError(f"the ffnr build has s_digits = {const['s_digits']}, the golden "
                         f"{S_DIGITS}")
    cases = [check_case(cfg, c, const["t_max"], const["n_max"]) for c in cases]
    for c in cases:
        if c.y_d is not None and not 1 <= c.y_d.shape[1] <= const["d_max"]:
            raise ExionError(f"Y_d has {c.y_d.shape[1]} columns: the unit holds 1.."
                             f"{const['d_max']} (d_max)")
    payload = [(c.h, sparsity_code(c.s), c.h_sparse, c.y_d) for c in cases]
    outs, report = run_bench_pickled(build, "exion.sim.tb_ffnr", payload, key="cases",
                                     seed=seed, run_name=run_name,
                                     params={"gaps": gaps, "backpressure": backpressure})
    runs = [_run_from_output(cfg, c, o, const["P"]) for c, o in zip(cases, outs)]
    return runs, report


def rtl_ffnr(cfg: Config, h, s, *, h_sparse=None, **kw) -> FfnrRun:
    """One H through the Verilated unit: ``FfnrRun`` (mask, theta, histogram, cycles, ...)."""
    runs, report = rtl_ffnr_batch(cfg, [FfnrCase(h, s, h_sparse)], **kw)
    runs[0].report = report
    return runs[0]
