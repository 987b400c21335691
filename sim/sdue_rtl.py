"""``rtl_sdue`` and ``rtl_sdue_gemm``: the Verilated SDUE as plain functions (pytest side).

Both run the ``sdue`` top alone, with pass descriptors built on the host from a ConMerge plan
(the ``gemm`` top, which derives them in hardware, is :func:`exion.sim.gemm_rtl.rtl_sparse_gemm`).

    out, info = rtl_sdue_gemm(cfg, a, b, plan, prev=..., accumulate=...)
    np.testing.assert_array_equal(out, golden.conmerge.execute_plan(cfg, a, b, plan, ...))

Several products run in one simulator invocation with :func:`rtl_sdue` (the build is
shared by the whole test session, see :mod:`exion.sim.runner`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exion.config import Config
from exion.golden.cycles import sdue_cycles

from .program import Program, build_program
from .runner import rtl_build, run_bench_pickled

__all__ = ["SdueRun", "rtl_sdue", "rtl_sdue_gemm", "model_cycles"]


@dataclass
class SdueRun:
    result: np.ndarray         # (M, N) OMEM contents after the product
    batch_cycles: list[int]    # busy cycles the RTL counted, per batch
    model_cycles: list[int]    # golden.cycles.sdue_cycles of the same batches
    k_words: list[list[int]]   # beats of every pass, per batch
    program: Program
    compute_seconds: float = 0.0  # wall time of the runs alone (memories already loaded)

    @property
    def cycles(self) -> int:
        return sum(self.batch_cycles)

    @property
    def model(self) -> int:
        return sum(self.model_cycles)


def model_cycles(cfg: Config, program: Program) -> list[int]:
    return [sdue_cycles(cfg, b.k_words) for b in program.batches]


def rtl_sdue(cfg: Config, programs: list[Program], *, seed: int | None = None,
             waves: bool = False, gaps: bool = False, run_name: str = "sdue",
             progress=None, box_dpus: bool = True) -> tuple[list[SdueRun], dict]:
    build = rtl_build(cfg, "sdue", waves=waves, progress=progress, box_dpus=box_dpus)
    outs, report = run_bench_pickled(build, "exion.sim.tb_sdue", programs, key="programs",
                                     seed=seed, run_name=run_name, params={"gaps": gaps})
    runs = [SdueRun(o["result"], o["batch_cycles"], model_cycles(cfg, p),
                    [list(b.k_words) for b in p.batches], p, o.get("compute_seconds", 0.0))
            for o, p in zip(outs, programs)]
    return runs, report


def rtl_sdue_gemm(cfg: Config, a, b, plan, prev=None, accumulate=False, input_sparse=False,
                  **kw) -> tuple[np.ndarray, SdueRun]:
    """One product ``a @ b`` by ``plan`` on the Verilated SDUE (host-built descriptors)."""
    prog = build_program(cfg, a, b, plan, prev=prev, accumulate=accumulate,
                         input_sparse=input_sparse)
    runs, _ = rtl_sdue(cfg, [prog], **kw)
    return runs[0].result, runs[0]
