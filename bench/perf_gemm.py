"""gemm engine benchmark (issue 5): CAU -> weight fetch -> SDUE on Verilator, exion16.

For K/L = 2C (K = 512), 64 (K = 1024) and 72 (K = 1152, DiT-XL/2's d) and output sparsities 80 %,
95 %, 97 % (seeded random masks, M = 4 row blocks, N = 96 so one run holds all four blocks
in OMEM; IMEM holds 2 x 64 words per bank, so K = 1024 runs two blocks per tile and K = 1152
one), the engine's busy cycles are compared with

* the SDUE alone on the same passes (``golden.cycles.sdue_cycles``: what the engine would
  take if ConMerge vectors and weights were free), giving the engine's overhead, and
* per row block, the CAU's interval (``golden.cycles.cau_cycles``) against the SDUE's cycles
  for that block (passes x max(K/L, C)): the CAU never limits the SDUE when this is <= 1.

Every product is checked bit-exactly against ``golden.conmerge.masked_gemm``.

Run: ``.venv/bin/python bench/perf_gemm.py [--seed N] [--config exion16]``; writes
build/bench/gemm.json (and prints a Markdown table).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from exion import PRESETS
from exion.config import load_config
from exion.golden import cycles as cy
from exion.golden.conmerge import conmerge, masked_gemm
from exion.sim.gemm_rtl import GemmCase, plan_tiles, rtl_sparse_gemm


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="exion16", help="preset or TOML (default exion16)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", default="build/bench/gemm.json")
    args = ap.parse_args(argv)
    cfg = PRESETS[args.config] if args.config in PRESETS else load_config(args.config)
    rng = np.random.default_rng(args.seed)
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    M = 4 * R
    N = min(96, cfg.omem_depth // 4)
    ks = sorted({2 * C * L, min(1024, 2 * cfg.imem_words * L),
                 min(1152, 2 * cfg.imem_words * L)})
    cases, meta = [], []
    for K in ks:
        for s in (0.80, 0.95, 0.97):
            a = rng.integers(cfg.wmin, cfg.wmax + 1, (M, K))
            b = rng.integers(cfg.wmin, cfg.wmax + 1, (K, N))
            prev = rng.integers(-(2 ** 20), 2 ** 20, (M, N))
            mask = rng.random((M, N)) >= s
            cases.append(GemmCase(a, b, mask, prev, name=f"K{K}-s{s:.2f}"))
            meta.append((K, s))
    log(f"gemm engine {cfg.name}: {len(cases)} products of {M} x K x {N} ...")
    t0 = time.perf_counter()
    outs, runs, rep = rtl_sparse_gemm(cfg, cases, seed=args.seed, run_name="bench-gemm",
                                      progress=log)
    wall = time.perf_counter() - t0
    rows = []
    for case, (K, s), o, run in zip(cases, meta, outs, runs):
        want = masked_gemm(cfg, case.a, case.b, case.mask, out=case.prev)
        assert np.array_equal(o, want), f"{case.name}: result differs from golden"
        tiles = plan_tiles(cfg, case)
        kw = tiles[0].setup["kwords"]
        plan = conmerge(cfg, case.mask)
        assert sum(run.tile_passes) == plan.n_passes, case.name
        sdue = sum(cy.sdue_cycles(cfg, [kw] * p) for p in run.tile_passes if p)
        per_block_passes = np.bincount(plan.row_block, minlength=M // R)
        sdue_block = per_block_passes * max(kw, C)
        cau_block = cy.cau_cycles(cfg, case.mask)
        ratio = cau_block / np.maximum(sdue_block, 1)
        engine = int(sum(run.tile_cycles))
        rows.append({
            "K": K, "k_words": kw, "sparsity": s, "passes": int(plan.n_passes),
            "tiles": len(tiles), "blocks_per_tile": len(tiles[0].rows) // R,
            "engine_cycles": engine, "sdue_alone_cycles": int(sdue),
            "overhead": engine / sdue - 1,
            "cau_per_block": cau_block.tolist(), "sdue_per_block": sdue_block.tolist(),
            "cau_over_sdue_worst": float(ratio.max()),
            "cau_total": int(cy.cau_schedule(cfg, case.mask)["total"]),
            "bit_exact": True,
        })
    out = {"config": cfg.name, "seed": args.seed, "M": M, "N": N, "rows": rows,
           "sim_wall_seconds": wall, "build_seconds": rep.get("build_seconds")}
    print("| K (K/L) | sparsity | tiles x blocks | passes | engine cycles | SDUE alone | "
          "overhead | CAU/SDUE per block (worst) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['K']} ({r['k_words']}) | {r['sparsity']:.0%} | "
              f"{r['tiles']} x {r['blocks_per_tile']} | {r['passes']} | "
              f"{r['engine_cycles']} | {r['sdue_alone_cycles']} | {r['overhead']:+.1%} | "
              f"{r['cau_over_sdue_worst']:.2f} |")
    print(f"(Verilator build {rep.get('build_seconds', 0):.0f} s, simulation {wall:.0f} s; "
          f"every product bit-exact against golden)")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
