"""Cross-simulation: the same seeded cases on Verilator and on Icarus Verilog (``make xsim``).

For each block (:data:`exion.sim.cases.BLOCKS`) one batch of seeds runs through the block's
cocotb bench on both simulators with the same simulator seed; per seed the two must agree
on every output (bit for bit) and on the cycle count, and both must match golden.

    python -m exion.sim.xsim --config toy --seeds 6 --seed-base 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np

from exion.config import get_config
from exion.paths import build_root, write_json

from .cases import BLOCKS, CaseResult, run_batch

__all__ = ["compare", "xsim", "main"]


@contextlib.contextmanager
def _simulator(name: str):
    old = os.environ.get("EXION_SIM")
    os.environ["EXION_SIM"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("EXION_SIM", None)
        else:
            os.environ["EXION_SIM"] = old


def compare(a: CaseResult, b: CaseResult) -> str | None:
    """Why two simulators' results of one seed differ (``None``: they agree)."""
    if a.cycles != b.cycles:
        return f"cycles {a.cycles} (verilator) != {b.cycles} (icarus)"
    for name in sorted(set(a.outputs) | set(b.outputs)):
        x, y = a.outputs.get(name), b.outputs.get(name)
        if x is None or y is None or not np.array_equal(np.asarray(x), np.asarray(y)):
            return f"output {name} differs"
    return None


def xsim(cfg, blocks=BLOCKS, seeds=(1, 2, 3, 4), progress=None) -> dict:
    """Run ``seeds`` of every block on both simulators; return the agreement report."""
    rows = []
    for block in blocks:
        per = {}
        for sim in ("verilator", "icarus"):
            t0 = time.perf_counter()
            with _simulator(sim):
                per[sim] = run_batch(block, cfg, list(seeds), progress=progress,
                                     run_name=f"xsim-{block}")
            per[f"{sim}_seconds"] = time.perf_counter() - t0
        for v, i in zip(per["verilator"], per["icarus"]):
            rows.append({"block": block, "seed": v.seed, "cycles_verilator": v.cycles,
                         "cycles_icarus": i.cycles, "golden_verilator": v.error,
                         "golden_icarus": i.error, "disagreement": compare(v, i)})
        if progress:
            progress(f"{block}: verilator {per['verilator_seconds']:.1f} s, icarus "
                     f"{per['icarus_seconds']:.1f} s")
    ok = all(r["disagreement"] is None and r["golden_verilator"] is None
             and r["golden_icarus"] is None for r in rows)
    return {"config": cfg.name, "seeds": list(seeds), "blocks": list(blocks), "cases": rows,
            "agree": ok}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m exion.sim.xsim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="toy", help="preset or TOML file (default: toy)")
    ap.add_argument("--blocks", default=",".join(BLOCKS),
                    help=f"comma-separated blocks (default: {','.join(BLOCKS)})")
    ap.add_argument("--seeds", type=int, default=6, help="seeds per block (default: 6)")
    ap.add_argument("--seed-base", type=int, default=1, help="first seed (default: 1)")
    ap.add_argument("--json", default=None,
                    help="report path (default: <build>/xsim/xsim-<config>.json)")
    args = ap.parse_args(argv)
    from exion.gen.toolchain import require_icarus
    require_icarus()
    cfg = get_config(args.config)
    blocks = [b for b in args.blocks.split(",") if b]
    bad = [b for b in blocks if b not in BLOCKS]
    if bad:
        ap.error(f"--blocks: unknown {bad}; available: {', '.join(BLOCKS)}")
    seeds = range(args.seed_base, args.seed_base + args.seeds)
    rep = xsim(cfg, blocks, seeds,
               progress=lambda m: print(f"[xsim] {m}", file=sys.stderr, flush=True))
    path = write_json(args.json or build_root() / "xsim" / f"xsim-{cfg.name}.json", rep)
    print(f"{'block':6s} {'seed':>6s} {'cycles V':>9s} {'cycles I':>9s}  result")
    for r in rep["cases"]:
        verdict = (r["disagreement"] or r["golden_verilator"] or r["golden_icarus"]
                   or "agree, bit-exact vs golden")
        print(f"{r['block']:6s} {r['seed']:6d} {r['cycles_verilator']:9d} "
              f"{r['cycles_icarus']:9d}  {verdict}")
    print(f"XSIM {cfg.name}: {'AGREE' if rep['agree'] else 'DISAGREE'} "
          f"({len(rep['cases'])} cases, report {path})")
    return 0 if rep["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
