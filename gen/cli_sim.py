"""``exion sim ...``: Verilated RTL runs checked bit-exactly against the golden model."""

from __future__ import annotations

import sys

from .common import add_config_arg, load_cfg, write_json


def register(sub) -> None:
    p = sub.add_parser("sim", help="run Verilated RTL against the golden model",
                       description="Simulate generated RTL with Verilator + cocotb and check "
                                   "every output bit-exactly against the golden model.")
    ssub = p.add_subparsers(dest="sim_command", metavar="WHAT", required=True)

    d = ssub.add_parser("dpu", help="the dot-product unit on directed + random vectors")
    add_config_arg(d)
    d.add_argument("--n", type=int, default=200, help="random dot products (default 200)")
    d.add_argument("--seed", type=int, default=None, help="seed (default: random, printed)")
    d.add_argument("--waves", action="store_true", help="write an FST waveform (also "
                   "EXION_WAVES=1)")
    d.add_argument("--report", default=None, metavar="R.json", help="write the report here")
    d.set_defaults(func=cmd_sim_dpu)


def cmd_sim_dpu(args) -> int:
    from exion.errors import ExionError
    from exion.sim.runner import BenchFailure, new_seed, rtl_build, run_bench
    cfg = load_cfg(args.config)
    if args.n < 0:
        raise ExionError(f"--n must be >= 0, got {args.n}")
    seed = args.seed if args.seed is not None else new_seed()
    build = rtl_build(cfg, "dpu", waves=args.waves,
                      progress=lambda m: print(f"[exion] {m}", file=sys.stderr))
    try:
        r = run_bench(build, "exion.sim.bench_dpu", seed=seed,
                      params={"cases": ["extremes", "random"], "n_random": args.n})
    except BenchFailure as e:
        print(f"FAIL: {e}")
        return 1
    print(f"DPU {cfg.name}: {r['dot_products']} dot products, {r['cycles']} cycles, "
          f"{r['cycles_per_second']:.0f} cycles/s, seed {seed}: PASS")
    if args.waves:
        print(f"waves: {r['waves']}")
    if args.report:
        write_json(args.report, r)
    return 0
