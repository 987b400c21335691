"""``exion demo``: generate, simulate against golden, print a report.

Step 1 is the DPU; the later steps are ``step(cfg, seed, args, progress) -> dict`` with
``passed``, listed in :data:`STEPS`. Blocks add their step here when their RTL lands.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

from .options import add_config, add_seed, add_waves, load_cfg, progress, seed_of, write_json


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="the main job: generate, simulate against golden, print a report",
        description="Generate the accelerator's Verilog, run golden-checked Verilator "
                    "simulations and print a report (cycles, pass/fail). Writes "
                    "DIR/demo.json and the Verilog under DIR/rtl.")
    add_config(p, default="exion16")
    p.add_argument("--cxx-opt", default=None, metavar="LEVEL",
                   help="C++ optimisation of the demo's Verilator builds (default -O0: the "
                        "demo's builds run a few thousand cycles, so a fast compile beats a "
                        "fast simulation; --cxx-opt=-Os is Verilator's default; also "
                        "EXION_CXX_OPT)")
    p.add_argument("--out", default="build/demo", metavar="DIR", help="output folder")
    add_seed(p)
    add_waves(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    saved = os.environ.get("EXION_CXX_OPT")
    try:
        return _demo(args)
    finally:            # the demo's build level must not leak into the caller's later builds
        if saved is None:
            os.environ.pop("EXION_CXX_OPT", None)
        else:
            os.environ["EXION_CXX_OPT"] = saved


def _demo(args) -> int:
    from exion.sim.runner import cxx_opt, rtl_build, run_bench

    cfg = load_cfg(args.config)
    seed = seed_of(args)
    out = Path(args.out)
    os.environ["EXION_CXX_OPT"] = cxx_opt(args.cxx_opt or os.environ.get("EXION_CXX_OPT")
                                          or "-O0")
    print(f"EXION demo: config {cfg.name} ({cfg.rows}x{cfg.cols} DPUs, {cfg.lanes} lanes, "
          f"INT{cfg.width}, {cfg.acc_width}-bit accumulators), seed {seed}")
    report = {"config": cfg.to_dict(), "seed": seed, "cxx_opt": os.environ["EXION_CXX_OPT"],
              "steps": []}
    pool, pending = _prebuild(cfg, args.waves)
    ok = True
    t_start = time.perf_counter()

    # Step 1: the DPU (SPEC 4.1), Verilated and checked against golden.dpu.
    t0 = time.perf_counter()
    build = rtl_build(cfg, "dpu", waves=args.waves, progress=progress)
    r = run_bench(build, "exion.sim.tb_dpu", seed=seed,
                  params={"cases": ["extremes", "random"], "n_random": 200})
    step = {"block": "dpu", "verilog": str(build.verilog), "gen_seconds": build.gen_seconds,
            "build_seconds": build.build_seconds, "wall_seconds": time.perf_counter() - t0, **r}
    report["steps"].append(step)
    print(f"  DPU   {r['dot_products']} dot products (directed extremes at K = {cfg.k_max} "
          f"and 1, random K), {r['cycles']} cycles, {r['cycles_per_second']:.0f} cycles/s: "
          f"{'PASS' if r.get('passed') else 'FAIL'} (bit-exact vs golden.dpu)")
    ok &= bool(r.get("passed"))

    for fut in pending:     # the later steps' builds, started in the background
        try:
            fut.result()
        except Exception as exc:   # noqa: BLE001 -- the step itself rebuilds and reports
            print(f"  (background build failed: {exc}; the step retries it)")
    pool.shutdown()
    for extra in STEPS:
        step = extra(cfg, seed, args, progress)
        report["steps"].append(step)
        ok &= bool(step.get("passed"))

    report["wall_seconds"] = time.perf_counter() - t_start
    print(f"demo time: {report['wall_seconds']:.0f} s (builds with C++ "
          f"{report['cxx_opt']}; a second run reuses them)")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "demo.json", report)
    print(f"report: {out / 'demo.json'}" + (f"; waves: {step.get('waves')}" if args.waves
                                              else ""))
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


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


def _dsc_block(cfg, seed, args, progress) -> dict:
    from .dsc import demo_dsc_block     # issue 16: one sparse block iteration on the DSC
    return demo_dsc_block(cfg, seed, args, progress)


STEPS: list = [gemm_sparse_ffn, _dsc_block]

#: Tops the later steps build, started in background processes when the demo starts so that
#: their single-threaded generation and Verilation overlap the DPU step (``None``: the
#: demo's config).
PREBUILD: list[tuple[str | None, str]] = [(None, "gemm"), ("toy", "dsc_core")]


def _build_one(cfg, top: str, waves: bool) -> float:
    """One prebuild; the DSC step runs with no stalls, so on the Verilog memory model
    (``sim.dsc_harness``, the build ``sim.dsc_rtl.rtl_dsc`` picks for it)."""
    from exion.sim.runner import rtl_build
    if top == "dsc_core":
        from exion.sim.dsc_rtl import dsc_build
        b = dsc_build(cfg, verilog_memory=True, waves=waves)
    else:
        b = rtl_build(cfg, top, waves=waves)
    return b.gen_seconds + b.build_seconds


def _prebuild(cfg, waves: bool):
    """Start :data:`PREBUILD`'s builds, one worker process each; returns (pool, futures).

    One process per top: the exion16 engine's generation and Verilation are single-threaded,
    so the small toy DSC core builds beside it (and beside the DPU step) on the other core."""
    from exion.config import get_config

    ctx = multiprocessing.get_context("spawn")   # no forked Amaranth/cocotb state
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=len(PREBUILD), mp_context=ctx)
    futs = []
    for name, top in PREBUILD:
        c = cfg if name is None else get_config(name)
        print(f"  (building {top} for {c.name} in the background)")
        futs.append(pool.submit(_build_one, c, top, waves))
    return pool, futs
