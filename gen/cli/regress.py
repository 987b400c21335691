"""``exion regress`` (seeded random RTL regressions on Dask, :mod:`exion.sim.regress`) and
``exion sweep`` (config fields x the cycle model, same fan-out, :mod:`exion.sim.sweep`)."""

from __future__ import annotations

import argparse

from exion.errors import ExionError

from .options import add_config, add_seed, load_cfg

BLOCK_NAMES = ("dpu", "sdue", "cau", "epre", "gemm")


def register(sub) -> None:
    p = sub.add_parser(
        "regress", help="N seeded random RTL cases per block, fanned out on Dask",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run N seeded random cases per block on the Verilated RTL (EXION_SIM="
                    "icarus: on Icarus), each checked bit-exactly against golden (and the "
                    "cycle model where the block is cycle-exact). Batches of seeds run in one "
                    "simulator launch per Dask task; results merge into regress.json and a "
                    "JUnit regress.xml listing every failing seed with the command that "
                    "re-runs it. Exit status 1 if any seed fails.")
    p.add_argument("--block", default="all", choices=["all", *BLOCK_NAMES],
                   help="block to regress (default: all)")
    add_config(p)
    p.add_argument("--seeds", type=int, default=100, metavar="N",
                   help="seeds per block (default: %(default)s)")
    p.add_argument("--seed-base", type=int, default=1, metavar="S",
                   help="first seed; seeds are S .. S+N-1 (default: %(default)s)")
    p.add_argument("--batch", type=int, default=50, metavar="B",
                   help="seeds per task, i.e. per simulator launch (default: %(default)s)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address (tcp://host:8786); default: a LocalCluster "
                        "with one worker per core; 'inline': no Dask, run here")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="LocalCluster workers (default: the number of cores)")
    p.add_argument("--out", default="build/regress", metavar="DIR",
                   help="where regress.json and regress.xml go (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_regress)
    register_sweep(sub)


def cmd_regress(args) -> int:
    cfg = load_cfg(args.config)   # a bad config fails here, before any worker starts
    for name in ("seeds", "batch"):
        if getattr(args, name) < 1:
            raise ExionError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.workers is not None and args.workers < 1:
        raise ExionError(f"--workers must be at least 1, got {args.workers}")
    from exion.sim.regress import regress, save
    blocks = list(BLOCK_NAMES) if args.block == "all" else [args.block]
    rep = regress(args.config, blocks, args.seeds, args.seed_base, batch=args.batch,
                  scheduler=args.scheduler, workers=args.workers,
                  show_progress=not args.no_progress)
    js, xml = save(rep, args.out)
    for b, s in rep["summary"].items():
        print(f"  {b:5s} {s['cases']} cases ({cfg.name}), {s['failed']} failed")
    for f in rep["failures"][:20]:
        print(f"  FAIL {f['block']} seed {f['seed']}: {f['error']}\n    re-run: {f['repro']}")
    if len(rep["failures"]) > 20:
        print(f"  ... {len(rep['failures']) - 20} more in {js}")
    print(f"RESULT: {'PASS' if rep['passed'] else 'FAIL'} in {rep['wall_seconds']:.1f} s "
          f"({rep['scheduler']}); {js}, {xml}")
    return 0 if rep["passed"] else 1


def register_sweep(sub) -> None:
    p = sub.add_parser(
        "sweep", help="config fields x the cycle model on FC1 masks, table + Pareto plot",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score every combination of --vary values with the cycle model "
                    "(golden.cycles.gemm_cycles: ConMerge passes, SDUE, fill stalls at the "
                    "point's bandwidth) on the FC1 output masks of a trace (exion trace) or "
                    "on synthetic FFN-Reuse masks; points fan out on Dask like exion regress. "
                    "Writes sweep.json, sweep.md (table) and sweep.png (cycles vs DPU "
                    "multipliers, Pareto front). Impossible points are listed as refused.",
        epilog="example:\n  exion sweep --config exion16 --vary R=8,16 --vary m=1,2,4 "
               "--vary bandwidth=32,64 --scheduler inline")
    add_config(p, default="exion16")
    p.add_argument("--vary", action="append", default=[], metavar="FIELD=V1,V2",
                   help="a field and its values (repeatable); aliases R, C, L, m, W_open, "
                        "bandwidth, or any integer config field")
    p.add_argument("--trace", default=None, metavar="T.npz",
                   help="trace of exion trace (default: synthetic masks, 64 x 512, K = 256)")
    add_seed(p, default=0, help="seed of the synthetic masks (default: %(default)s)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address; default a LocalCluster; 'inline': no Dask")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="LocalCluster workers (default: the number of cores)")
    p.add_argument("--out", default="build/sweep", metavar="DIR",
                   help="where sweep.json/.md/.png go (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from pathlib import Path

    from exion.sim.sweep import parse_vary, save, sweep
    load_cfg(args.config)
    if not args.vary:
        raise ExionError("--vary: give at least one FIELD=V1,V2 (e.g. --vary m=1,2,4)")
    vary = parse_vary(args.vary)
    if args.trace is not None and not Path(args.trace).exists():
        raise ExionError(f"--trace: file {args.trace!r} does not exist")
    rep = sweep(args.config, vary, args.trace, seed=args.seed, scheduler=args.scheduler,
                workers=args.workers, show_progress=not args.no_progress)
    paths = save(rep, args.out)
    print(paths[1].read_text(), end="")
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
