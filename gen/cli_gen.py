"""``exion gen``, ``exion lint`` and ``exion demo``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from exion.errors import ExionError

from .common import add_config_arg, load_cfg


def _progress(msg: str) -> None:
    print(f"[exion] {msg}", file=sys.stderr, flush=True)


def register(sub) -> None:
    from .verilog import TOPS
    tops = "\n".join(f"  {name:8s} {desc}" for name, (_, desc) in TOPS.items())

    p = sub.add_parser(
        "gen", help="generate Verilog + JSON manifest for one block",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Generate the Verilog of one block for a config, plus a JSON manifest "
                    "(config, derived values, config hash, latency, ports) beside it.\n\n"
                    f"Tops:\n{tops}")
    add_config_arg(p)
    p.add_argument("--top", required=True, choices=list(TOPS), help="block to generate")
    p.add_argument("--out", default="build/gen", metavar="DIR",
                   help="output folder (default: build/gen); gets exion_<top>.v and .json")
    p.add_argument("--lint", action="store_true",
                   help="also run verilator --lint-only -Wall on the result")
    p.set_defaults(func=cmd_gen)

    p = sub.add_parser("lint", help="verilator --lint-only -Wall on generated blocks",
                       description="Generate each block (into a temporary build folder) and "
                                   "lint it; exit 1 on any warning.")
    add_config_arg(p)
    p.add_argument("--top", default="all", choices=["all", *TOPS],
                   help="block to lint (default: all)")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser(
        "demo", help="the main job: generate, simulate against golden, print a report",
        description="Generate the accelerator's Verilog, run golden-checked Verilator "
                    "simulations and print a report (cycles, pass/fail). Writes "
                    "DIR/demo.json and the Verilog under DIR/rtl.")
    add_config_arg(p, default="exion16")
    p.add_argument("--out", default="build/demo", metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, "
                   "printed)")
    p.add_argument("--waves", action="store_true", help="write FST waveforms")
    p.set_defaults(func=cmd_demo)


def cmd_gen(args) -> int:
    from .verilog import generate, lint, sources
    cfg = load_cfg(args.config)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ExionError(f"--out {str(out)!r} exists and is not a folder")
    g = generate(cfg, args.top, out, reuse=False)
    print(f"wrote {g.verilog} and {g.manifest} (config {cfg.name}, hash {cfg.hash}, "
          f"{g.seconds:.2f} s)")
    for model in sources(g.verilog)[1:]:
        print(f"wrote {model} (simulation model of a vendor cell the Verilog instantiates; "
              f"simulate and lint it with the Verilog, synthesis uses the real cell)")
    if args.lint:
        problems = lint(g.verilog, f"exion_{args.top}")
        if problems:
            print("\n".join(problems))
            return 1
        print("lint: clean (verilator --lint-only -Wall)")
    return 0


def cmd_lint(args) -> int:
    from exion.sim.runner import build_root

    from .verilog import TOPS, generate, lint
    cfg = load_cfg(args.config)
    tops = list(TOPS) if args.top == "all" else [args.top]
    bad = 0
    for top in tops:
        g = generate(cfg, top, build_root() / "rtl" / f"{cfg.name}-{cfg.hash}")
        problems = lint(g.verilog, f"exion_{top}")
        print(f"{top:8s} {cfg.name:10s} {'clean' if not problems else 'WARNINGS'}")
        for line in problems:
            print(f"  {line}")
        bad += bool(problems)
    return 1 if bad else 0


def cmd_demo(args) -> int:
    from exion.sim.runner import new_seed, rtl_build, run_bench

    from .common import write_json
    cfg = load_cfg(args.config)
    seed = args.seed if args.seed is not None else new_seed()
    out = Path(args.out)
    print(f"EXION demo: config {cfg.name} ({cfg.rows}x{cfg.cols} DPUs, {cfg.lanes} lanes, "
          f"INT{cfg.width}, {cfg.acc_width}-bit accumulators), seed {seed}")
    report = {"config": cfg.to_dict(), "seed": seed, "steps": []}
    ok = True

    # Step 1: the DPU (SPEC 4.1), Verilated and checked against golden.dpu.
    t0 = time.perf_counter()
    build = rtl_build(cfg, "dpu", waves=args.waves, progress=_progress)
    r = run_bench(build, "exion.sim.tb_dpu", seed=seed,
                  params={"cases": ["extremes", "random"], "n_random": 200})
    step = {"block": "dpu", "verilog": str(build.verilog), "gen_seconds": build.gen_seconds,
            "build_seconds": build.build_seconds, "wall_seconds": time.perf_counter() - t0, **r}
    report["steps"].append(step)
    print(f"  DPU   {r['dot_products']} dot products (directed extremes at K = {cfg.k_max} "
          f"and 1, random K), {r['cycles']} cycles, {r['cycles_per_second']:.0f} cycles/s: "
          f"{'PASS' if r.get('passed') else 'FAIL'} (bit-exact vs golden.dpu)")
    ok &= bool(r.get("passed"))

    for extra in _demo_extras():
        step = extra(cfg, seed, args, _progress)
        report["steps"].append(step)
        ok &= bool(step.get("passed"))

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "demo.json", report)
    print(f"report: {out / 'demo.json'}" + (f"; waves: {step.get('waves')}" if args.waves
                                              else ""))
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def _demo_extras():
    """Later demo steps (SDUE, CAU, EPRE) register here as they land."""
    from . import demo_steps
    return demo_steps.STEPS
