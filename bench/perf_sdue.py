"""SDUE benchmark (issue 4): RTL cycles on Verilator, printed and written as JSON.

* exion16 dense GEMM, K = 1024, 16 back-to-back passes: fraction of peak R*C*L MACs/cycle.
* a 95 %-sparse output mask vs dense, for m = 1, 2, 4 (RTL cycles, speedup, utilization).
* Verilator build time and simulated cycles per second with memories preloaded.

Run: ``.venv/bin/python bench/perf_sdue.py [--seed N] [--quick]``; writes build/bench/sdue.json.
Medians over ``--repeat`` simulator runs for the wall-clock figures (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from exion import PRESETS
from exion.golden.conmerge import conmerge, dense_plan, execute_plan
from exion.sim.program import build_program
from exion.sim.sdue_rtl import rtl_sdue


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument("--repeat", type=int, default=3, help="runs for wall-clock medians")
    ap.add_argument("--out", default="build/bench/sdue.json")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    out = {"seed": args.seed}

    # 1. dense K = 1024, 16 passes on exion16
    cfg = PRESETS["exion16"]
    M, K, N = 2 * cfg.rows, 1024, 8 * cfg.cols
    a = rng.integers(cfg.wmin, cfg.wmax + 1, (M, K))
    b = rng.integers(cfg.wmin, cfg.wmax + 1, (K, N))
    plan = dense_plan(cfg, M, N)
    prog = build_program(cfg, a, b, plan)
    log(f"dense exion16 {M}x{K}x{N}: {prog.n_passes} passes ...")
    walls, runs = [], None
    for i in range(args.repeat):
        t0 = time.perf_counter()
        runs, rep = rtl_sdue(cfg, [prog], seed=args.seed + i, run_name="bench-dense",
                             progress=log)
        walls.append(time.perf_counter() - t0)
    run = runs[0]
    assert np.array_equal(run.result, execute_plan(cfg, a, b, plan)), "dense result mismatch"
    macs = M * K * N
    eff = macs / (cfg.peak_macs * run.cycles)
    out["dense_k1024"] = {"M": M, "K": K, "N": N, "passes": prog.n_passes,
                          "rtl_cycles": run.cycles, "model_cycles": run.model,
                          "fraction_of_peak": eff, "sim_wall_seconds_median":
                          statistics.median(walls),
                          "preloaded_cycles_per_second": run.cycles / run.compute_seconds,
                          "build_seconds": rep["build_seconds"]}
    print(f"exion16 dense K=1024, {prog.n_passes} passes: {run.cycles} cycles (model "
          f"{run.model}), {eff:.2%} of peak {cfg.peak_macs} MACs/cycle; "
          f"{run.cycles / run.compute_seconds:.0f} simulated cycles/s with memories preloaded")

    # 2. 95 % sparse vs dense for m = 1, 2, 4: plans with run-time m on the one exion16 build
    M, K, N = 2 * cfg.rows, 256, cfg.omem_depth
    a = rng.integers(cfg.wmin, cfg.wmax + 1, (M, K))
    b = rng.integers(cfg.wmin, cfg.wmax + 1, (K, N))
    mask = rng.random((M, N)) >= 0.95
    rows = []
    for m in (1, 2, 4):
        c = cfg
        sparse, dense = conmerge(c, mask, merge_ways=m), dense_plan(c, M, N)
        progs = [build_program(c, a, b, sparse), build_program(c, a, b, dense)]
        log(f"m = {m}: {progs[0].n_passes} sparse / {progs[1].n_passes} dense passes ...")
        t0 = time.perf_counter()
        (rs, rd), rep = rtl_sdue(c, progs, seed=args.seed, run_name="bench-sparse",
                                 progress=log)
        wall = time.perf_counter() - t0
        assert np.array_equal(rs.result, execute_plan(c, a, b, sparse)), f"m={m} mismatch"
        busy = rs.cycles + rd.cycles
        compute = rs.compute_seconds + rd.compute_seconds
        row = {"merge_ways": m, "sparse_passes": progs[0].n_passes,
               "dense_passes": progs[1].n_passes, "sparse_cycles": rs.cycles,
               "sparse_model": rs.model, "dense_cycles": rd.cycles, "dense_model": rd.model,
               "speedup": rd.cycles / rs.cycles,
               "utilization": int(mask.sum()) * K / (c.peak_macs * rs.cycles),
               "build_seconds": rep["build_seconds"],
               "sim_wall_seconds_including_loads_and_build": wall,
               "preloaded_cycles_per_second": busy / compute}
        rows.append(row)
        print(f"m={m}: sparse {rs.cycles} cycles ({progs[0].n_passes} passes), dense "
              f"{rd.cycles} ({progs[1].n_passes}), speedup {row['speedup']:.2f}x, "
              f"utilization {row['utilization']:.1%}")
    out["sparse95_vs_dense"] = rows
    p = Path(args.out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
