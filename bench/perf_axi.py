"""DSC bus shell benchmark: copy throughput of the ``axi_shell`` top through AXI4.

Runs the ``dma`` case of ``sim/tb_axi.py`` (``MemcopyCore`` fixture: every beat is read
and written once) on toy at several stall probabilities (the fraction of cycles each of the
ten AXI channels of the cocotbext-axi models is paused) and reports, per probability, the
median over the copies of cycles per copied beat (``CYCLES / beats``; the run's cycle
counter includes the start, the read latency of the first burst and the last write
response). Writes build/bench/axi.json.

    python bench/perf_axi.py [--stalls 0 0.3 0.6] [--seed 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from exion import PRESETS
from exion.paths import write_json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stalls", type=float, nargs="+", default=[0.0, 0.3, 0.6])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--n-random", type=int, default=6)
    ap.add_argument("--out", default="build/bench/axi.json")
    args = ap.parse_args(argv)
    from exion.sim.runner import rtl_build, run_bench
    build = rtl_build(PRESETS["toy"], "axi_shell")
    rows = []
    for p in args.stalls:
        rep = run_bench(build, "exion.sim.tb_axi", seed=args.seed, run_name=f"perf-{p}",
                        params={"cases": ["dma"], "stall": p, "n_random": args.n_random})
        runs = [r for r in rep["dma"]["runs"] if r["beats"] >= 64]
        per_beat = statistics.median(r["cycles"] / r["beats"] for r in runs)
        rows.append({"stall": p, "copies": len(runs), "median_cycles_per_beat": per_beat,
                     "beats": sum(r["beats"] for r in runs)})
        print(f"stall {p:4.2f}: median {per_beat:.2f} cycles per copied beat over "
              f"{len(runs)} copies of >= 64 beats")
    write_json(args.out, {"config": "toy", "top": "axi_shell", "seed": args.seed,
                          "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
