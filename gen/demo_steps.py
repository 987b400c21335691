"""Demo steps after the DPU; each is ``step(cfg, seed, args, progress) -> dict`` with
``passed``. Blocks add their step here when their RTL lands."""

from __future__ import annotations

import time

import numpy as np


def sdue_sparse_ffn(cfg, seed, args, progress) -> dict:
    """A sparse FFN-sized product (FC1 slice of DiT-XL/2: d = 1152) through the SDUE.

    32 tokens x 1152 inputs x one OMEM-wide group of FC1 outputs (``omem_depth`` columns),
    output mask 95 % sparse (an FFN-Reuse sparse iteration), previous outputs random (the
    cached values that must survive). Checked bit-exactly against the golden executor; the
    RTL cycle count is shown next to the cycle model and the dense product's cycles.
    """
    from exion.golden.conmerge import conmerge, dense_plan, execute_plan
    from exion.golden.cycles import gemm_cycles
    from exion.sim.program import build_program
    from exion.sim.sdue_rtl import rtl_sdue

    rng = np.random.default_rng(seed)
    M, K, N = 2 * cfg.rows, min(1152, cfg.k_max), cfg.omem_depth
    a = rng.integers(cfg.wmin, cfg.wmax + 1, (M, K))
    b = rng.integers(cfg.wmin, cfg.wmax + 1, (K, N))
    prev = rng.integers(-(2 ** 20), 2 ** 20, (M, N))
    mask = rng.random((M, N)) >= 0.95
    plan = conmerge(cfg, mask)
    prog = build_program(cfg, a, b, plan, prev=prev)
    t0 = time.perf_counter()
    runs, rep = rtl_sdue(cfg, [prog], seed=seed, waves=args.waves, run_name="demo",
                         progress=progress)
    run = runs[0]
    exact = bool(np.array_equal(run.result, execute_plan(cfg, a, b, plan, out=prev)))
    dense = gemm_cycles(cfg, K, dense_plan(cfg, M, N)).sdue_cycles
    useful = int(mask.sum()) * K
    util = useful / (cfg.peak_macs * run.cycles)
    print(f"  SDUE  C[{M}x{N}] = A[{M}x{K}] @ B with a 95 %-sparse output mask, m = "
          f"{cfg.merge_ways}: {prog.n_passes} passes (dense {plan.dense_passes}), "
          f"{run.cycles} cycles (model {run.model}), utilization {util:.1%}, "
          f"speedup over dense {dense / run.cycles:.2f}x: "
          f"{'PASS' if exact else 'FAIL'} (bit-exact vs golden executor, unmasked outputs kept)")
    return {"block": "sdue", "passed": exact, "M": M, "K": K, "N": N,
            "passes": prog.n_passes, "dense_passes": plan.dense_passes,
            "rtl_cycles": run.cycles, "model_cycles": run.model, "dense_cycles_model": dense,
            "utilization": util, "speedup_over_dense": dense / run.cycles,
            "wall_seconds": time.perf_counter() - t0, "build_seconds": rep["build_seconds"],
            "waves": rep.get("waves")}


STEPS: list = [sdue_sparse_ffn]
