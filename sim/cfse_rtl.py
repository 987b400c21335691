"""``rtl_cfse``: the Verilated CFSE as a plain function (pytest / CLI side).

    y, cycles = rtl_cfse(cfg, "softmax", x)
    np.testing.assert_array_equal(y, golden.cfse.softmax_fx(x))

Inputs use the golden functions' own formats: ``gelu`` takes 16-bit Q.11 values of any shape
(``gelu_fx``), or with ``params`` (a ``GeluParams``) A-bit accumulators (``gelu_requant``);
``softmax`` takes Q.11 rows along the last axis and returns Q.15; ``layernorm`` takes Q.11
rows along the last axis with Q.11 ``gamma`` / ``beta`` of the row length and ``eps_q``.
:func:`prepare` validates the input through the golden function (same errors), packs beats of
L lanes and keeps the golden result; :func:`rtl_cfse_many` runs several cases in one
simulator invocation (one Verilator build per config, shared by the session).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from exion.config import Config
from exion.errors import ExionError
from exion.golden import cfse as golden
from exion.golden.cfse_cycles import cfse_cycles, restreamed

from .runner import rtl_build, run_bench_pickled

__all__ = ["CfseCase", "CfseRun", "prepare", "rtl_cfse", "rtl_cfse_many", "golden_of"]

EPS_LIMIT = 1 << 48          # hw.cfse.LN_EPS_BITS


@dataclass
class CfseCase:
    """One prepared run (``job`` is what the bench gets)."""

    name: str
    fn: str
    shape: tuple
    job: dict
    golden: np.ndarray = field(repr=False)


@dataclass
class CfseRun:
    name: str
    fn: str
    y: np.ndarray
    cycles: int
    model_cycles: int
    golden: np.ndarray
    restream: bool = False


def golden_of(cfg: Config, fn: str, x, gamma=None, beta=None, eps_q: int = 1, params=None):
    """The golden result of ``fn`` (``golden.cfse.cfse``; raises its ExionError on bad input)."""
    return golden.cfse(cfg, fn, x, gamma, beta, eps_q, params)


def _beats(rows: np.ndarray, L: int) -> np.ndarray:
    """(rows, n) -> (rows * ceil(n / L), L), each row zero-padded to whole beats."""
    r, n = rows.shape
    nw = math.ceil(n / L)
    out = np.zeros((r, nw * L), dtype=np.int64)
    out[:, :n] = rows
    return out.reshape(r * nw, L)


def prepare(cfg: Config, n_max: int, fn: str, x, gamma=None, beta=None, eps_q: int = 1,
            params=None, *, name: str = "case", gaps: float = 0.0,
            stall: float = 0.0) -> CfseCase:
    """Golden result + the bench job for one run (``gaps`` / ``stall``: probabilities of an
    idle input cycle / a not-ready output cycle)."""
    want = golden_of(cfg, fn, x, gamma, beta, eps_q, params)
    x = np.asarray(x).astype(np.int64)
    L = cfg.lanes
    job = {"name": name, "fn": fn, "gaps": float(gaps), "stall": float(stall)}
    if fn == "gelu":
        lim = 1 << (cfg.acc_width - 1)
        if params is not None and x.size and (x.min() < -lim or x.max() >= lim):
            raise ExionError(f"gelu_requant input: accumulators must be signed "
                             f"{cfg.acc_width}-bit, got [{x.min()}, {x.max()}]")
        p = params.to_dict() if params is not None else {
            "in_mult": 0, "in_shift": 0, "out_mult": 0, "out_shift": 0}
        job["par"] = {"requant": int(params is not None), **p}
        job["beats"] = _beats(x.reshape(1, -1), L) if x.size else np.zeros((0, L), np.int64)
    else:
        n = x.shape[-1]
        job["n"] = n
        rows = x.reshape(-1, n)
        job["long"] = restreamed(cfg, n, n_max)
        job["out_beats"] = len(rows) * math.ceil(n / L)
        # Long rows (n > n_max): the unit keeps no copy, so each row is sent three times.
        job["beats"] = _beats(np.repeat(rows, 3, axis=0) if job["long"] else rows, L)
        if fn == "layernorm":
            if not (isinstance(eps_q, int) and 1 <= eps_q < EPS_LIMIT):
                raise ExionError(f"layernorm eps_q must be an integer in 1..2**48-1 (the "
                                 f"RTL's eps register), got {eps_q!r}")
            job["eps"] = eps_q
            job["gamma"] = _beats(np.asarray(gamma, np.int64).reshape(1, n), L)
            job["beta"] = _beats(np.asarray(beta, np.int64).reshape(1, n), L)
    return CfseCase(name, fn, tuple(x.shape), job, np.asarray(want, dtype=np.int64))


def _decode(cfg: Config, case: CfseCase, raw: dict) -> np.ndarray:
    y = np.asarray(raw["y"], dtype=np.int64).reshape(-1, cfg.lanes)
    if case.fn == "gelu":
        return y.reshape(-1)[:math.prod(case.shape)].reshape(case.shape)
    n = case.shape[-1]
    nw = math.ceil(n / cfg.lanes)
    return y.reshape(-1, nw * cfg.lanes)[:, :n].reshape(case.shape)


def rtl_cfse_many(cfg: Config, cases: list[dict], *, seed: int | None = None,
                  waves: bool = False, run_name: str = "cfse",
                  progress=None) -> tuple[list[CfseRun], dict]:
    """Run several cases (keyword dicts of :func:`prepare` without ``cfg`` / ``n_max``) in
    one simulator invocation of the Verilated ``cfse`` top for ``cfg``."""
    build = rtl_build(cfg, "cfse", waves=waves, progress=progress)
    n_max = int(build.manifest_data()["constants"]["softmax"]["n_max"])
    prepared = [prepare(cfg, n_max, **c) for c in cases]
    todo = [p for p in prepared if len(p.job["beats"])]
    raws, report = ([], {}) if not todo else run_bench_pickled(
        build, "exion.sim.tb_cfse", [p.job for p in todo], key="jobs", seed=seed,
        run_name=run_name)
    it = iter(raws)
    runs = []
    for p in prepared:
        raw = next(it) if len(p.job["beats"]) else {"y": [], "cycles": 0}
        runs.append(CfseRun(p.name, p.fn, _decode(cfg, p, raw), int(raw["cycles"]),
                            cfse_cycles(cfg, p.fn, p.shape, n_max), p.golden,
                            bool(p.job.get("long", False))))
    return runs, report


def rtl_cfse(cfg: Config, fn: str, x, gamma=None, beta=None, eps_q: int = 1, params=None, *,
             seed: int | None = None, waves: bool = False, gaps: float = 0.0,
             stall: float = 0.0, progress=None) -> tuple[np.ndarray, int]:
    """``fn`` on the Verilated CFSE: ``(y, cycles)`` (the caller compares ``y`` with the
    golden function; :func:`golden_of` gives it)."""
    runs, _ = rtl_cfse_many(cfg, [dict(fn=fn, x=x, gamma=gamma, beta=beta, eps_q=eps_q,
                                       params=params, name=fn, gaps=gaps, stall=stall)],
                            seed=seed, waves=waves, run_name=fn, progress=progress)
    return runs[0].y, runs[0].cycles
