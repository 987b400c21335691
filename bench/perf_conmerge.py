"""ConMerge benchmark: the DiT-XL/2 FC1 output shape (256 x 4608) on exion16.

Random masks (seeded) at 80 / 95 / 97 % sparsity, m = 1, 2, 4, 16: passes, utilization and
wall time of ``conmerge`` (median of 5 runs). Prints a table and writes
``build/bench/conmerge.json``. Run: ``.venv/bin/python bench/perf_conmerge.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from exion import PRESETS
from exion.golden import conmerge as cm

SHAPE = (256, 4608)
SPARSITIES = (0.80, 0.95, 0.97)
WAYS = (1, 2, 4, 16)
REPEATS = 5
SEED = 2025


def run(out: Path, check: bool = True) -> list[dict]:
    cfg = PRESETS["exion16"]
    rng = np.random.default_rng(SEED)
    rows = []
    for s in SPARSITIES:
        mask = rng.random(SHAPE) >= s
        for m in WAYS:
            mcfg = cfg.replace(merge_ways=m)   # a design with m weight buses per column
            times = []
            for _ in range(REPEATS):
                t0 = time.perf_counter()
                plan = cm.conmerge(mcfg, mask, merge_ways=m)
                times.append(time.perf_counter() - t0)
            if check:
                cm.check_plan(mcfg, mask, plan)
            f = plan.figures()
            rows.append({"sparsity": s, "merge_ways": m, "masked": f["masked"],
                         "dense_passes": f["dense_passes"],
                         "condense_passes": f["condense_passes"],
                         "conmerge_passes": f["conmerge_passes"],
                         "utilization": f["utilization"],
                         "dense_utilization": f["dense_utilization"],
                         "seconds_median": statistics.median(times),
                         "seconds_all": times})
    print(f"ConMerge on exion16 (R = C = 16, W_open = {cfg.w_open}, sort = popcount), "
          f"{SHAPE[0]} x {SHAPE[1]} random masks, seed {SEED}, median of {REPEATS}")
    print(f"{'sparsity':>9} {'m':>3} {'dense':>7} {'condense':>9} {'ConMerge':>9} "
          f"{'util %':>7} {'time s':>8}")
    for r in rows:
        print(f"{100 * r['sparsity']:>8.0f}% {r['merge_ways']:>3} {r['dense_passes']:>7} "
              f"{r['condense_passes']:>9} {r['conmerge_passes']:>9} "
              f"{100 * r['utilization']:>7.2f} {r['seconds_median']:>8.3f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": cfg.to_dict(), "config_hash": cfg.hash,
                               "shape": SHAPE, "seed": SEED, "repeats": REPEATS,
                               "python": platform.python_version(),
                               "numpy": np.__version__, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="build/bench/conmerge.json", help="JSON output path")
    p.add_argument("--no-check", action="store_true",
                   help="skip check_plan on each plan (it is not timed either way)")
    a = p.parse_args(argv)
    run(Path(a.out), check=not a.no_check)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
