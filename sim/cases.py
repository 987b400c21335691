"""Seeded random RTL cases per block, shared by ``make xsim`` and ``exion regress``.

One *case* is fully determined by ``(block, config, seed)``: :func:`make_case` draws its
operands from ``numpy.random.default_rng(seed)``. :func:`run_batch` runs a list of seeds of
one block in ONE simulator launch (the bench takes a list of cases; launching a simulator
costs seconds, a case milliseconds) and returns one :class:`CaseResult` per seed: the RTL's
outputs and cycles, and ``error`` (``None`` when it matches golden bit-exactly and, where the
block is cycle-exact, the cycle model).

Timing randomness inside the bench (the DPU's input gaps) comes from the simulator seed,
which is the batch's first seed; a seed therefore re-runs *exactly* with the same batch
(``exion regress --seed-base FIRST --seeds N --batch N``) and its data alone with
``--seed-base SEED --seeds 1``.

The five blocks of the verification contract: ``dpu``, ``sdue``, ``cau``, ``epre``, ``gemm``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from exion.config import Config

__all__ = ["BLOCKS", "CaseResult", "make_case", "run_batch", "mutate"]

BLOCKS = ("dpu", "sdue", "cau", "epre", "gemm")


@dataclass
class CaseResult:
    """One seed's outcome: ``outputs`` (name -> array or int, compared across simulators),
    ``cycles`` (the RTL's count) and ``error`` (``None`` = bit-exact with golden)."""

    block: str
    seed: int
    outputs: dict = field(default_factory=dict)
    cycles: int = 0
    error: str | None = None


def _ints(rng, cfg: Config, *shape) -> np.ndarray:
    return rng.integers(cfg.wmin, cfg.wmax + 1, size=shape)


def _mask(rng, M: int, N: int) -> np.ndarray:
    return rng.random((M, N)) >= rng.choice([0.0, 0.5, 0.8, 0.95, 0.99])


def make_case(block: str, cfg: Config, seed: int):
    """The case of ``block`` for ``seed`` (small shapes: partial row blocks and beats; for
    ``gemm`` a ``GemmCase`` with the run options of :func:`_gemm_case`)."""
    rng = np.random.default_rng([seed, BLOCKS.index(block)])
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    if block == "dpu":
        n, k = int(rng.integers(1, 6)), int(rng.integers(1, min(6 * L, cfg.k_max) + 1))
        return _ints(rng, cfg, n, k), _ints(rng, cfg, n, k)
    if block in ("sdue", "gemm"):
        M, K, N = (int(rng.integers(1, 2 * R + 2)), int(rng.integers(1, 3 * L + 2)),
                   int(rng.integers(1, 2 * C + 2)))
        prev = rng.integers(-(2 ** 20), 2 ** 20, (M, N))
        case = _ints(rng, cfg, M, K), _ints(rng, cfg, K, N), _mask(rng, M, N), prev
        return case if block == "sdue" else _gemm_case(rng, cfg, seed, *case)
    if block == "cau":
        return _mask(rng, int(rng.integers(1, 3 * R + 1)), int(rng.integers(1, 6 * C + 1)))
    if block == "epre":
        n, d, dh = (int(rng.integers(1, 24)), int(rng.integers(1, 2 * L + 4)),
                    int(rng.integers(1, L + 3)))
        k = float(rng.choice([0.05, 0.2, 0.5, 1.0]))
        return dict(x=_ints(rng, cfg, n, d), wq=_ints(rng, cfg, d, dh),
                    wk=_ints(rng, cfg, d, dh), k=k, q_th_int=int(rng.integers(0, 1 << 16)),
                    name=f"seed{seed}")
    raise ValueError(f"unknown block {block!r}; available: {', '.join(BLOCKS)}")


def _gemm_case(rng, cfg: Config, seed: int, a, b, mask, prev):
    """A ``GemmCase`` over the engine's run options (issue 17): dataflow, accumulate,
    global-buffer bandwidth, K-splits (forced pieces of 1 or 2 words, ``auto``), the
    striped map where the mask allows it (``auto``; dense masks draw it often), single- or
    double-buffered groups, FC2's gather (host or engine, on an A with zero columns)."""
    from exion.hw.gemm import gather_supported

    from .gemm_rtl import GemmCase
    if rng.random() < 0.5:      # a larger product: several groups, longer K
        R, C, L = cfg.rows, cfg.cols, cfg.lanes
        M, K, N = (int(rng.integers(1, 4 * R + 4)), int(rng.integers(1, 24 * L + 1)),
                   int(rng.integers(1, 8 * C + 3)))
        a, b, mask = _ints(rng, cfg, M, K), _ints(rng, cfg, K, N), _mask(rng, M, N)
        prev = rng.integers(-(2 ** 20), 2 ** 20, (M, N))
    flow = str(rng.choice(["row-block", "col-group"]))
    kw = dict(dataflow=flow, accumulate=bool(rng.integers(2)),
              gb_bytes=int(rng.choice([0, 0, 3, 7, 64])),
              k_chunk=[None, None, "auto", 1, 2][int(rng.integers(5))])
    if flow == "col-group":
        kw.update(double_buffer=bool(rng.integers(2)), striped="auto")
        if rng.random() < 0.25:
            a = a * (rng.random(a.shape[1]) >= 0.5)        # unneeded K rows
            kw.update(gather=True, striped=False,
                      gather_hw=bool(rng.integers(2)) and gather_supported(cfg))
    return GemmCase(a, b, mask, prev, name=f"seed{seed}", **kw)


def _diff(name: str, got, want) -> str | None:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"{name}: shape {got.shape} != golden {want.shape}"
    if not np.array_equal(got, want):
        idx = tuple(int(i) for i in np.argwhere(got != want)[0])
        return f"{name}{list(idx)}: {got[idx]} != golden {want[idx]}"
    return None


def _first(*errors) -> str | None:
    return next((e for e in errors if e), None)


def run_batch(block: str, cfg: Config, seeds: list[int], *, progress=None,
              run_name: str | None = None) -> list[CaseResult]:
    """Run ``seeds`` of ``block`` in one simulator launch (``EXION_SIM`` picks the
    simulator) and check each against golden; a crashed launch marks every seed failed."""
    from .runner import BenchFailure
    seeds = [int(s) for s in seeds]
    cases = [make_case(block, cfg, s) for s in seeds]
    run_name = run_name or f"regress-{block}-{seeds[0]}x{len(seeds)}"
    try:
        results = _RUNNERS[block](cfg, seeds, cases, run_name, progress)
    except BenchFailure as exc:
        msg = str(exc).splitlines()[0]
        return [CaseResult(block, s, error=f"simulation failed: {msg}") for s in seeds]
    return mutate(results, int(os.environ.get("EXION_REGRESS_MUTATE", "0") or 0))


def _run_dpu(cfg, seeds, cases, run_name, progress):
    from exion.golden.dpu import dpu as golden

    from .runner import rtl_build, run_bench_pickled
    build = rtl_build(cfg, "dpu", progress=progress)
    outs, _ = run_bench_pickled(build, "exion.sim.tb_dpu", cases, key="rows", seed=seeds[0],
                                run_name=run_name, params={"cases": ["rows"], "max_gap": 3})
    return [CaseResult("dpu", s, {"result": o["result"]}, int(o["cycles"]),
                       _diff("result", o["result"], golden(cfg, a, b)))
            for s, (a, b), o in zip(seeds, cases, outs)]


def _run_sdue(cfg, seeds, cases, run_name, progress):
    from exion.golden.conmerge import conmerge, sdue

    from .program import build_program
    from .sdue_rtl import rtl_sdue
    plans = [conmerge(cfg, mask) for _, _, mask, _ in cases]
    progs = [build_program(cfg, a, b, plan, prev=prev)
             for (a, b, _, prev), plan in zip(cases, plans)]
    runs, _ = rtl_sdue(cfg, progs, seed=seeds[0], run_name=run_name, progress=progress)
    out = []
    for s, (a, b, _, prev), plan, run in zip(seeds, cases, plans, runs):
        err = _first(_diff("result", run.result, sdue(cfg, a, b, plan, out=prev)),
                     *(f"batch {i}: {got} cycles, model {want} (more than 2 % apart)"
                       for i, (got, want) in enumerate(zip(run.batch_cycles, run.model_cycles))
                       if abs(got - want) > 0.02 * want))
        out.append(CaseResult("sdue", s, {"result": run.result}, sum(run.batch_cycles), err))
    return out


def _run_cau(cfg, seeds, cases, run_name, progress):
    from exion.golden import cycles as cy
    from exion.golden.conmerge import cau

    from .cau_rtl import CauCase, rtl_cau
    runs, _ = rtl_cau(cfg, [CauCase(m) for m in cases], seed=seeds[0], run_name=run_name,
                      progress=progress)
    out = []
    for s, mask, run in zip(seeds, cases, runs):
        want = cau(cfg, mask)
        total = cy.cau_schedule(cfg, mask, cols_per_cycle=cy.CAU_COLS_PER_CYCLE)["total"]
        err = _first(*(_diff(f, getattr(run, f), getattr(want, f))
                       for f in ("row_block", "members", "select", "last")),
                     None if run.cycles == total else f"cycles {run.cycles} != model {total}")
        out.append(CaseResult("cau", s, {"members": run.members, "select": run.select,
                                         "pass_cycles": run.pass_cycles}, run.cycles, err))
    return out


EPRE_FIELDS = ("qh", "kh", "sh", "score_mask", "dominant", "key_needed", "k_needed")


def _run_epre(cfg, seeds, cases, run_name, progress):
    from .epre_rtl import rtl_predict_many
    runs, _ = rtl_predict_many(cfg, cases, seed=seeds[0], run_name=run_name,
                               progress=progress)
    out = []
    for s, r in zip(seeds, runs):
        err = _first(*(_diff(f, getattr(r, f), getattr(r.golden, f)) for f in EPRE_FIELDS),
                     None if r.cycles == r.model_cycles
                     else f"cycles {r.cycles} != model {r.model_cycles}")
        out.append(CaseResult("epre", s, {f: getattr(r, f) for f in EPRE_FIELDS},
                              int(r.cycles), err))
    return out


def _run_gemm(cfg, seeds, cases, run_name, progress):
    from exion.golden.conmerge import masked_gemm

    from .gemm_rtl import model_error, rtl_sparse_gemm
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=seeds[0], run_name=run_name,
                                    progress=progress)
    return [CaseResult("gemm", s, {"result": o, "tile_passes": np.array(r.tile_passes)},
                       int(sum(r.tile_cycles)),
                       _first(_diff("result", o, masked_gemm(cfg, c.a, c.b, c.mask, out=c.prev,
                                                              accumulate=c.accumulate)),
                              model_error(cfg, c, r)))
            for s, c, o, r in zip(seeds, cases, outs, runs)]


_RUNNERS = {"dpu": _run_dpu, "sdue": _run_sdue, "cau": _run_cau, "epre": _run_epre,
            "gemm": _run_gemm}


def mutate(results: list[CaseResult], every: int) -> list[CaseResult]:
    """Test hook (``EXION_REGRESS_MUTATE=N``): corrupt the outputs of every N-th seed as a
    broken block would, so the failure path (report, repro command) is exercised end to end."""
    for r in results:
        if every and r.seed % every == 0:
            r.error = r.error or "mutation: output corrupted on purpose (EXION_REGRESS_MUTATE)"
    return results
