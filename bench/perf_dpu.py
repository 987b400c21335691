"""DPU benchmark (issue 2): Verilog generation time, Verilator build time, cocotb cycles/s.

Builds into a fresh temporary folder (no cache) so the build time is real; the bench drives
every input every cycle from Python, so cycles/s is the cocotb-bound figure. Medians over
``--repeat`` runs; writes build/bench/dpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from exion import PRESETS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument("--out", default="build/bench/dpu.json")
    args = ap.parse_args(argv)
    from exion.gen.verilog import generate
    from exion.sim.runner import rtl_build, run_bench
    results = {}
    for name in ("toy", "exion16"):
        cfg = PRESETS[name]
        gens = []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                generate(cfg, "dpu", Path(tmp) / "g", reuse=False)
                gens.append(time.perf_counter() - t0)
            os.environ["EXION_BUILD"] = tmp
            try:
                build = rtl_build(cfg, "dpu")
                rates = []
                for i in range(args.repeat):
                    r = run_bench(build, "exion.sim.tb_dpu", seed=args.seed + i,
                                  params={"cases": ["random"], "n_random": 200,
                                          "k_random_max": 16 * cfg.lanes})
                    rates.append(r["cycles_per_second"])
            finally:
                del os.environ["EXION_BUILD"]
        results[name] = {"gen_seconds_median": statistics.median(gens),
                         "verilator_build_seconds": build.build_seconds,
                         "cocotb_cycles_per_second_median": statistics.median(rates)}
        print(f"DPU {name}: generation {statistics.median(gens):.2f} s, Verilator build "
              f"{build.build_seconds:.1f} s, cocotb {statistics.median(rates):.0f} cycles/s "
              f"(median of {args.repeat})")
    p = Path(args.out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
