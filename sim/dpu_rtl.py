"""``rtl_dpu``: the Verilated DPU as a plain function (pytest side).

    got, run = rtl_dpu(cfg, a, b)
    np.testing.assert_array_equal(got, golden.dpu.dpu(cfg, a, b))

The operands are pickled to the cocotb testbench :mod:`exion.sim.tb_dpu` (case ``rows``),
which streams them through the Verilated ``dpu`` top and pickles the results back; the
comparison with golden happens here, in pytest. The build is shared by the whole test
session (:mod:`exion.sim.runner`).
"""

from __future__ import annotations

import numpy as np

from exion.config import Config
from exion.errors import ExionError
from exion.golden.quant import check_k, check_operand

from .runner import rtl_build, run_bench_pickled

__all__ = ["rtl_dpu"]


def rtl_dpu(cfg: Config, a, b, *, seed: int | None = None, max_gap: int = 3,
            waves: bool = False, progress=None) -> tuple[np.ndarray, dict]:
    """Dot products of the rows of ``a`` and ``b`` (both n x K, W-bit integers) on the
    Verilated DPU, with random idle gaps of up to ``max_gap`` cycles between beats.

    Returns ``(results, run)``: the n A-bit results and the run's report (``cycles``, seed,
    run folder, build times).
    """
    a = check_operand(cfg, a, "a", ndim=2)
    b = check_operand(cfg, b, "b", ndim=2)
    if a.shape != b.shape:
        raise ExionError(f"a and b must have the same shape (n x K), got {a.shape} and "
                         f"{b.shape}")
    check_k(cfg, a.shape[1])
    build = rtl_build(cfg, "dpu", waves=waves, progress=progress)
    outs, report = run_bench_pickled(build, "exion.sim.tb_dpu", [(a, b)], key="rows",
                                     seed=seed, run_name="rows",
                                     params={"cases": ["rows"], "max_gap": max_gap})
    return outs[0]["result"], {**report, "cycles": outs[0]["cycles"]}
