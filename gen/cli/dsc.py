"""``exion sim block``: the GEMMs of one digits-DiT block iteration through the DSC core."""

from __future__ import annotations

import time

from .options import add_config, add_report, add_seed, add_waves, load_cfg, progress, \
    seed_of, write_json


def register_sim(ssub) -> None:
    b = ssub.add_parser(
        "block", help="one DiT block iteration's GEMMs through the Verilated DSC core",
        description="Replay the sampling run of an `exion trace` file (its settings: seed, "
                    "steps, samples, FFN-Reuse / EP switches; the run is checked against "
                    "the trace's recorded FC1 input and masks) up to block B of iteration I, "
                    "compute that block iteration with golden/dsc.py, and run every one of "
                    "its core GEMMs (Q/K/V, Q.K^T and P.V per head, projection, FC1, FC2) as "
                    "one descriptor program on the Verilated DSC core (hw/dsc.py). Each GEMM "
                    "output is checked bit-exactly against golden/dsc.py; prints cycles per "
                    "stage next to the cycle model (golden/dsc_cycles.py), the sparsities "
                    "used, and PASS or FAIL (exit 1). Layer norm, softmax, GELU, FFN-Reuse "
                    "and EPRE steps are golden code in this version (docs/dsc.md).")
    add_config(b)
    b.add_argument("--trace", required=True, metavar="T.npz",
                   help="an `exion trace` file (INT12, any --iterations)")
    b.add_argument("--block", type=int, required=True, metavar="B", help="block index")
    b.add_argument("--iter", type=int, required=True, metavar="I",
                   help="iteration index 0..steps-1 of the trace's run")
    b.add_argument("--sample", type=int, default=0, metavar="S",
                   help="sample of the run (default: %(default)s)")
    b.add_argument("--weights", default=None, metavar="W.npz",
                   help="the DiT weights the trace was made with (default: the packaged "
                        "weights, as `exion trace`)")
    b.add_argument("--stall", type=float, default=0.0, metavar="P",
                   help="memory-side stall probability per handshake and cycle, in [0, 1) "
                        "(default: %(default)s: the timing the cycle model describes)")
    add_report(b, flag="--json")
    add_seed(b)
    add_waves(b)
    b.set_defaults(func=cmd_sim_block)


def cmd_sim_block(args) -> int:
    from exion.errors import ExionError
    from exion.sim.dsc_block import block_case, run_block
    from exion.sim.runner import BenchFailure
    from exion.workloads.dit import DiT
    from exion.workloads.trace import load
    from exion.workloads.weights import load_weights

    cfg = load_cfg(args.config)
    if not 0 <= args.stall < 1:
        raise ExionError(f"--stall {args.stall} must be in [0, 1)")
    z, meta = load(args.trace)
    if meta.get("light"):
        raise ExionError(f"--trace {args.trace!r} is a --light trace (masks only); the "
                         f"block replay needs its FC1 inputs")
    model = DiT(load_weights(args.weights)[0] if args.weights else load_weights()[0])
    case = block_case(model, meta, args.block, args.iter, args.sample, z=z)
    seed = seed_of(args)
    t0 = time.perf_counter()
    try:
        r = run_block(cfg, case, stall=args.stall, seed=seed, waves=args.waves,
                      progress=progress)
    except BenchFailure as e:
        print(f"FAIL: {e}")
        return 1
    wall = time.perf_counter() - t0
    ffn = case.stats.get("ffn_sparsity", [])
    ep = case.stats.get("ep_sparsity", [])
    kind = "dense" if case.dense else "sparse"
    print(f"block {case.block} iteration {case.iteration} ({kind}), sample {case.sample}, "
          f"config {cfg.name}, seed {seed}, stall {args.stall}")
    print(f"  FFN-Reuse sparsity {ffn[0][1]:.3f}" if ffn else "  FFN-Reuse: dense")
    print(f"  EP sparsity {ep[0][1]:.3f}" if ep else "  EP: off")
    print(f"  {'stage':<10} {'cycles':>9}")
    for name, cyc in r["gemm_cycles"].items():
        print(f"  {name:<10} {cyc:>9}")
    print(f"  {'total':<10} {r['cycles']:>9}  model {r['model']['total']} (engine measured), "
          f"{r['estimate']['total']} (estimated); SDUE passes {r['passes']}")
    status = "PASS" if r["pass"] and (args.stall or r["model"]["total"] == r["cycles"]) \
        else "FAIL"
    if r["mismatch"]:
        print(f"  mismatching GEMMs: {', '.join(r['mismatch'][:8])}")
    if r["error"]:
        print(f"  error flags {r['error']:#x}")
    print(f"{status}: {r['jobs']} GEMMs bit-exact vs golden/dsc.py"
          if status == "PASS" else f"{status}")
    if args.json:
        write_json(args.json, {"block": case.block, "iteration": case.iteration,
                               "dense": case.dense, "sample": case.sample, "config": cfg.name,
                               "seed": seed, "stall": args.stall, "pass": status == "PASS",
                               "cycles": r["cycles"], "model_cycles": r["model"]["total"],
                               "estimated_cycles": r["estimate"]["total"],
                               "gemm_cycles": r["gemm_cycles"], "passes": r["passes"],
                               "ffn_sparsity": float(ffn[0][1]) if ffn else 0.0,
                               "ep_sparsity": float(ep[0][1]) if ep else 0.0,
                               "mismatch": r["mismatch"], "sim_wall_seconds": wall})
    return 0 if status == "PASS" else 1
