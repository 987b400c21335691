"""Demo steps after the DPU; each is ``step(cfg, seed, args, progress) -> dict`` with
``passed``. Blocks add their step here when their RTL lands."""

from __future__ import annotations

import time

import numpy as np


def gemm_sparse_ffn(cfg, seed, args, progress) -> dict:
    """A sparse FFN-sized product (FC1 slice of DiT-XL/2: d = 1152) through the gemm engine.

    32 tokens x 1152 inputs x one OMEM-wide group of FC1 outputs (``omem_depth`` columns),
    output mask 95 % sparse (an FFN-Reuse sparse iteration), previous outputs random (the
    cached values that must survive). The Verilated engine (CAU -> weight fetch -> SDUE)
    gets only A, B, the previous outputs and the mask; the result is checked bit-exactly
    against ``golden.conmerge.masked_gemm``, the pass count against golden ConMerge, and the
    cycles are shown next to the SDUE alone on the same passes and the dense product.
    """
    from exion.golden.conmerge import conmerge, dense_plan, masked_gemm
    from exion.golden.cycles import gemm_cycles, sdue_cycles
    from exion.sim.gemm_rtl import GemmCase, plan_tiles, rtl_sparse_gemm

    rng = np.random.default_rng(seed)
    M, K, N = 2 * cfg.rows, min(1152, cfg.k_max, 2 * cfg.imem_words * cfg.lanes), \
        cfg.omem_depth
    a = rng.integers(cfg.wmin, cfg.wmax + 1, (M, K))
    b = rng.integers(cfg.wmin, cfg.wmax + 1, (K, N))
    prev = rng.integers(-(2 ** 20), 2 ** 20, (M, N))
    mask = rng.random((M, N)) >= 0.95
    case = GemmCase(a, b, mask, prev)
    tiles = plan_tiles(cfg, case)
    t0 = time.perf_counter()
    outs, runs, rep = rtl_sparse_gemm(cfg, [case], seed=seed, waves=args.waves,
                                      run_name="demo", progress=progress)
    run = runs[0]
    plan = conmerge(cfg, mask)
    exact = bool(np.array_equal(outs[0], masked_gemm(cfg, a, b, mask, out=prev)))
    passes = sum(run.tile_passes)
    exact &= passes == plan.n_passes
    cycles = sum(run.tile_cycles)
    kw = tiles[0].setup["kwords"]
    alone = sum(sdue_cycles(cfg, [kw] * p) for p in run.tile_passes if p)
    dense = gemm_cycles(cfg, K, dense_plan(cfg, M, N)).sdue_cycles
    util = int(mask.sum()) * K / (cfg.peak_macs * cycles)
    print(f"  GEMM  C[{M}x{N}] = A[{M}x{K}] @ B with a 95 %-sparse output mask, m = "
          f"{cfg.merge_ways}, through CAU -> fetch -> SDUE: {passes} passes (golden "
          f"{plan.n_passes}, dense {plan.dense_passes}), {cycles} cycles (SDUE alone on the "
          f"same passes {alone}), utilization {util:.1%}, speedup over dense "
          f"{dense / cycles:.2f}x: {'PASS' if exact else 'FAIL'} (bit-exact vs golden, "
          f"unmasked outputs kept)")
    return {"block": "gemm", "passed": exact, "M": M, "K": K, "N": N, "tiles": len(tiles),
            "passes": passes, "golden_passes": plan.n_passes,
            "dense_passes": plan.dense_passes, "rtl_cycles": cycles,
            "sdue_alone_cycles": alone, "dense_cycles_model": dense, "utilization": util,
            "speedup_over_dense": dense / cycles, "wall_seconds": time.perf_counter() - t0,
            "build_seconds": rep["build_seconds"], "waves": rep.get("waves")}


STEPS: list = [gemm_sparse_ffn]
