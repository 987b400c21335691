"""``exion sim block``: the GEMMs of one digits-DiT block iteration through the DSC core."""

from __future__ import annotations

import time

from .options import add_config, add_report, add_seed, add_waves, load_cfg, progress, \
    seed_of, write_json


def register_sim(ssub) -> None:
    b = ssub.add_parser(
        "block", help="one DiT block iteration's core segments through the Verilated DSC core",
        description="Replay the sampling run of an `exion trace` file (its settings: seed, "
                    "steps, samples, FFN-Reuse / EP switches; the run is checked against "
                    "the trace's recorded FC1 input and masks) up to block B of iteration I, "
                    "compute that block iteration with golden/dsc.py, and run every one of "
                    "its core segments -- LN1, eager prediction (EPRE: score masks and "
                    "dominant rows, every head), the GEMMs (Q/K/V, Q.K^T and P.V per head, "
                    "projection, FC1, FC2), the softmax, LN2, the GELU + requantisation and "
                    "the FFN-Reuse unit (mask on a dense iteration, FC2 delta input on a "
                    "sparse one) -- as one descriptor program on the Verilated DSC core "
                    "(hw/dsc.py). EP is scheduled by --ep-schedule: 'overlap' runs each "
                    "head's EPRE in the background while the SDUE computes the K / V "
                    "projection tiles (stage 'kv', every row; the host then discards the "
                    "rows EP found unneeded) and the Q projection (stage 'q', dominant rows "
                    "skipped) after; 'sequential' runs EP first and one Q/K/V product after "
                    "it (stage 'qkv'); 'auto' takes the one the cycle model estimates "
                    "faster. The CFSE work runs beside the GEMMs that do not need it "
                    "(softmax of head h beside Q.K^T of head h+1, a dense iteration's "
                    "FFN-Reuse mask beside FC2, with --unfused-gelu the GELU of an FC1 "
                    "column group beside the next group) where the cycle model estimates it "
                    "faster, or never with "
                    "--no-cfse-overlap. FC1's GELU runs on each FC1 tile's results "
                    "straight from OMEM (op GELU_OMEM; stage 'fc1_gelu') unless "
                    "--unfused-gelu. With EP before the Q/K/V product, the EPRE takes "
                    "each head's Wq / Wk from the product's own weight stream (GMEM_LOAD "
                    "with tee, no EPRE_WLOAD) where that product is its weights and "
                    "every tile holds all its columns (exion16's digits block; not toy's), "
                    "unless --no-shared-weights. "
                    "Each output is checked bit-exactly against golden/dsc.py; "
                    "prints cycles per stage next to the cycle model (golden/dsc_cycles.py), "
                    "the sparsities used, and PASS or FAIL (exit 1). EP runs on the host "
                    "(golden) only when the block exceeds the DSC's EPRE "
                    "(config dsc_epre_dims), LN / softmax only for rows longer than "
                    "dsc_row_max, FFN-Reuse only for an H larger than dsc_ffnr_dims "
                    "(docs/dsc.md).")
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
    b.add_argument("--ep-schedule", choices=("auto", "overlap", "sequential"), default="auto",
                   help="eager prediction beside the K / V projection ('overlap'), before "
                        "the Q/K/V product ('sequential'), or whichever the cycle model "
                        "estimates faster (default: %(default)s)")
    b.add_argument("--no-cfse-overlap", dest="cfse_overlap", action="store_const",
                   const=False, default="auto",
                   help="run the softmax, GELU and FFN-Reuse ops after the GEMMs, each "
                        "GEMM waiting for its engine (default: beside the GEMMs where the "
                        "cycle model estimates it faster)")
    b.add_argument("--unfused-gelu", dest="fuse_gelu", action="store_false",
                   help="store FC1's accumulators and run the GELU op on them over the "
                        "port (default: GELU_OMEM, the GELU of FC1's results in OMEM)")
    b.add_argument("--no-shared-weights", dest="share_w", action="store_false",
                   help="load the EPRE's Wq / Wk with EPRE_WLOAD (16-bit containers) "
                        "and the Q/K/V product's weights with GMEM_LOAD, each on its own "
                        "(default: one copy crosses the port: teed from the product's "
                        "GMEM_LOAD where a tile holds every column, else the product's "
                        "Q/K columns filled from the EPRE's W memory, GMEM_EFILL)")
    b.add_argument("--ep-keys", choices=("trace", "predicted", "exact"), default="trace",
                   help="eager prediction's keys: stage 1's predicted Kh, or the exact K_h "
                        "of the Q/K/V product, teed into the EPRE's Kh banks by each head's "
                        "K/V tile store (OMEM_STORE ktee; needs the overlapped schedule "
                        "with shared weights). Other than the trace's setting, the sampler "
                        "is replayed without checking it against the trace's records "
                        "(default: %(default)s, the trace's, predicted if it has none)")
    b.add_argument("--no-key-queue", dest="key_queue", action="store_false",
                   help="with exact keys, run head h's EPRE run after its K/V tile, in "
                        "order (default: queued runs, each waiting for its keys between "
                        "stage 1 and stage 2, stage 1 beside the tile)")
    b.add_argument("--q-early", choices=("auto", "on", "off"), default="auto",
                   help="with exact keys and queued runs, project each head's Q on every "
                        "row before its masks are stored, beside its run (on), or after "
                        "them with the dominant rows skipped (off); auto keeps the one the "
                        "cycle model estimates faster (default: %(default)s)")
    b.add_argument("--q-split", type=_q_split, default=(), metavar="A,B,...",
                   help="with exact keys and queued runs, score each head's queries in EPRE "
                        "sub-runs starting at row 0 and at these rows (multiples of the "
                        "DSC EPRE's units; docs/dsc.md \"Sub-runs\"; default: one run a "
                        "head)")
    add_report(b, flag="--json")
    add_seed(b)
    add_waves(b)
    b.set_defaults(func=cmd_sim_block)


def _q_split(text: str) -> tuple:
    """``--q-split A,B,...`` -> (A, B, ...); a clear error for anything else."""
    import argparse
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of query rows (e.g. 6,12)") from None


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
    # the trace names its model (digits16 / digits64); --weights overrides the shipped file
    model = DiT(load_weights(args.weights)[0] if args.weights
                else load_weights(model=meta.get("model", "digits16"))[0])
    keys = meta.get("exion", {}).get("ep_keys", "predicted")
    if args.ep_keys not in ("trace", keys):    # another EP: the trace's records do not apply
        meta, z = {**meta, "exion": {**meta.get("exion", {}), "ep_keys": args.ep_keys}}, None
        keys = args.ep_keys
    case = block_case(model, meta, args.block, args.iter, args.sample, z=z)
    seed = seed_of(args)
    t0 = time.perf_counter()
    try:
        r = run_block(cfg, case, stall=args.stall, seed=seed, waves=args.waves,
                      progress=progress, ep_schedule=args.ep_schedule,
                      cfse_overlap=args.cfse_overlap, fuse_gelu=args.fuse_gelu,
                      share_w=args.share_w, key_queue=args.key_queue,
                      q_early={"auto": "auto", "on": True, "off": False}[args.q_early],
                      q_split=args.q_split)
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
    print(f"  EP sparsity {ep[0][1]:.3f}, keys {keys}" if ep else "  EP: off")
    print(f"  {'stage':<10} {'cycles':>9}")
    for name, cyc in r["gemm_cycles"].items():
        print(f"  {name:<10} {cyc:>9}")
    print(f"  {'total':<10} {r['cycles']:>9}  model {r['model']['total']} (engine measured), "
          f"{r['estimate']['total']} (estimated); SDUE passes {r['passes']}")
    mo = r["model"]
    print(f"  EP schedule {r['ep_schedule']}" + (
        f": EPRE busy {mo['epre_wait'] + mo['epre_hidden']} cycles, {mo['epre_hidden']} "
        f"hidden behind K / V, {mo['epre_wait']} waited for (cycle model)"
        if r["ep_schedule"] == "overlap" else ""))
    queued = any(d.get("kq") for d in r["descs"])
    if any(d.get("ktee") for d in r["descs"]):
        print("  exact keys teed into the EPRE's Kh banks by each head's K/V tile store "
              "(OMEM_STORE ktee); runs " + ("queued, waiting for their keys" if queued
                                            else "in order, after each tile")
              + ("; Q projected densely beside them" if r["q_early"] else "")
              + (f"; sub-runs from rows 0,{','.join(map(str, args.q_split))}"
                 if args.q_split else ""))
    if r["shared_w"]:
        print("  EPRE weights shared: " + (
            "the Q/K/V product's Q/K columns filled from the EPRE's W memory (GMEM_EFILL)"
            if r["filled_w"] else "teed from the Q/K/V product's GMEM_LOAD (no EPRE_WLOAD)"))
    if mo["engine_hidden"] or mo["engine_wait"]:
        print(f"  CFSE beside the engine: {mo['engine_hidden']} engine cycles hidden, "
              f"{mo['engine_wait']} waited for (cycle model)")
    status = "PASS" if r["pass"] and (args.stall or r["model"]["total"] == r["cycles"]) \
        else "FAIL"
    if r["mismatch"]:
        print(f"  mismatching segments: {', '.join(r['mismatch'][:8])}")
    if r["error"]:
        print(f"  error flags {r['error']:#x}")
    print(f"{status}: {r['jobs']} core segments (LN, EP, GEMMs, softmax, GELU, FFN-Reuse) "
          f"bit-exact vs golden/dsc.py"
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
                               "ep_schedule": r["ep_schedule"], "ep_keys": keys,
                               "key_tees": sum(1 for d in r["descs"] if d.get("ktee")),
                               "key_queue": queued, "q_early": r["q_early"],
                               "q_split": list(args.q_split),
                               "epre_wait_cycles": r["model"]["epre_wait"],
                               "epre_hidden_cycles": r["model"]["epre_hidden"],
                               "cfse_overlap": r["cfse_overlap"],
                               "fuse_gelu": args.fuse_gelu,
                               "shared_weights": r["shared_w"],
                               "engine_wait_cycles": r["model"]["engine_wait"],
                               "engine_hidden_cycles": r["model"]["engine_hidden"],
                               "mismatch": r["mismatch"], "sim_wall_seconds": wall})
    return 0 if status == "PASS" else 1


# -- exion generate ------------------------------------------------------------------------
#: ``exion generate``'s default classifier-free guidance scale (docs/dsc.md, "Recognisable
#: digits"; measured with bench/perf_generate.py).
GENERATE_GUIDANCE = 2.0


def register(sub) -> None:
    g = sub.add_parser(
        "generate", help="sample one digit with the DDIM sampler (golden, or blocks on RTL)",
        description="DDIM-sample one 8x8 digit with the digits DiT on its INT12 path with "
                    "EXION's switches (FFN-Reuse N/s, eager prediction k; golden/dsc.py). "
                    "With --rtl every core segment (layer norms, EPRE, GEMMs, softmax, GELU, "
                    "FFN-Reuse unit) of every transformer block of every step runs on the "
                    "Verilated DSC core and is checked bit-exactly (slow: several seconds "
                    "of simulation per block on toy; the host steps are golden "
                    "code, docs/dsc.md). Writes the PNG, the raw sample as .npy beside it and a "
                    "JSON report (cycles per dense and sparse iteration: measured with "
                    "--rtl, else the cycle model's estimate; sparsities), and checks that the "
                    "image equals the golden INT12 sampler's bit for bit. Classifier-free "
                    "guidance (--guidance, on by default) runs every block twice per step: "
                    "for the digit and for the model's 'no class' label.")
    add_config(g)
    g.add_argument("--digit", type=int, required=True, metavar="D", help="class 0..9")
    g.add_argument("--steps", type=int, default=50, metavar="S",
                   help="DDIM steps (default: %(default)s)")
    g.add_argument("--n", type=int, default=2, help="FFN-Reuse N (default: %(default)s)")
    g.add_argument("--s", type=float, default=0.8,
                   help="FFN-Reuse target sparsity (default: %(default)s)")
    g.add_argument("--k", type=float, default=0.5,
                   help="EP top-k ratio (default: %(default)s)")
    g.add_argument("--guidance", type=float, default=GENERATE_GUIDANCE, metavar="W",
                   help="classifier-free guidance scale: eps_u + W (eps_c - eps_u), the "
                        "unconditional pass with the model's 'no class' label (trained by "
                        "label dropout); 1 = off, one pass per block (default: %(default)s)")
    g.add_argument("--model", default="digits16", choices=["digits16", "digits64"],
                   help="the shipped DiT: digits16 (16 tokens, default) or digits64 (64 tokens)")
    g.add_argument("--rtl", action="store_true",
                   help="run every block's core segments on the Verilated DSC core")
    g.add_argument("--out", required=True, metavar="digit.png", help="PNG to write")
    add_seed(g, default=0)
    g.set_defaults(func=cmd_generate)


def _bar(i: int, n: int, extra: str = "") -> None:
    import sys
    w = 30
    k = w * i // max(n, 1)
    sys.stderr.write(f"\r[exion] [{'#' * k}{'.' * (w - k)}] {i}/{n} {extra}")
    if i == n:
        sys.stderr.write("\n")
    sys.stderr.flush()


def cmd_generate(args) -> int:
    import contextlib
    from pathlib import Path

    import numpy as np

    from exion.errors import ExionError
    from exion.golden import dsc as gdsc
    from exion.golden.dsc_cycles import program_cycles
    from exion.sim.dsc_block import BlockCase, run_block, sample_loop
    from exion.sim.dsc_program import block_program
    from exion.sim.dsc_rtl import DscSession
    from exion.workloads.dit import DiT, Exion, check_guidance, sample
    from exion.workloads.weights import load_weights

    cfg = load_cfg(args.config)
    if not 0 <= args.digit <= 9:
        raise ExionError(f"--digit {args.digit} must be in 0..9")
    out = Path(args.out)
    if out.suffix != ".png":
        raise ExionError(f"--out {args.out!r}: expected a FILE.png")
    ex = Exion(ffn_reuse=True, n=args.n, s=args.s, ep=True, k=args.k, quant=True)
    from exion.workloads.dit import ddim_timesteps
    ddim_timesteps(args.steps)      # checks --steps
    guidance = check_guidance(args.guidance)
    model = DiT(load_weights(model=args.model)[0])
    per_it: dict = {}
    ffn_sp, ep_sp = [], []
    failures = []
    depth = model.depth

    def block_fn(i, it, x, mod, bw, st, dense, stats, mask_rng):
        rec: dict = {}
        bst: dict = {}
        y = gdsc.block_iteration(model.cfg, bw, x, mod, ex, st, dense, bst, mask_rng, rec,
                                 layer=i)
        ffn_sp.extend(v for _, v in bst.get("ffn_sparsity", []))
        ep_sp.extend(v for _, v in bst.get("ep_sparsity", []))
        cyc = 0
        for smp in range(x.shape[0]):       # the digit, then (guided) its "no class" copy
            if args.rtl:
                r = run_block(cfg, BlockCase(i, it, dense, smp, y[smp:smp + 1], rec, bst,
                                             rec_sample=smp), session=session)
                if not r["pass"]:
                    failures.append((it, i, smp, r["mismatch"][:3], r["error"]))
                cyc += r["cycles"]
            else:
                prog = block_program(cfg, rec, smp)[1]
                cyc += program_cycles(cfg, prog.descs, prog.bus_bits)["total"]
        per_it.setdefault(it, {"dense": dense, "cycles": 0})["cycles"] += int(cyc)
        _bar(it * depth + i + 1, args.steps * depth, f"step {it + 1}/{args.steps}")
        return y

    with contextlib.ExitStack() as stack:   # --rtl: one simulator for every block iteration
        session = (stack.enter_context(DscSession(cfg, seed=args.seed, progress=progress))
                   if args.rtl else None)
        img = sample_loop(model, ex, args.steps, 1, args.seed, [args.digit], block_fn,
                          guidance=guidance)
    ref = sample(model, 1, args.steps, ex, seed=args.seed, labels=[args.digit],
                 guidance=guidance).images
    same = bool(np.array_equal(img, ref))
    out.parent.mkdir(parents=True, exist_ok=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.imsave(out, np.clip((img[0] + 1) / 2, 0, 1).repeat(16, 0).repeat(16, 1), cmap="gray",
               vmin=0, vmax=1)
    np.save(out.with_suffix(".npy"), img[0])
    dense_c = [v["cycles"] for v in per_it.values() if v["dense"]]
    sparse_c = [v["cycles"] for v in per_it.values() if not v["dense"]]
    report = {"digit": args.digit, "steps": args.steps, "seed": args.seed, "config": cfg.name,
              "guidance": guidance, "block_runs_per_block_iteration": 1 if guidance == 1 else 2,
              "rtl": args.rtl, "cycles_source": "rtl" if args.rtl else "model estimate",
              "cycles_per_dense_iteration": float(np.mean(dense_c)) if dense_c else 0.0,
              "cycles_per_sparse_iteration": float(np.mean(sparse_c)) if sparse_c else 0.0,
              "total_cycles": int(sum(v["cycles"] for v in per_it.values())),
              "ffn_sparsity": float(np.mean(ffn_sp)) if ffn_sp else 0.0,
              "ep_sparsity": float(np.mean(ep_sp)) if ep_sp else 0.0,
              "equals_golden_sampler": same, "rtl_failures": [str(f) for f in failures],
              "png": str(out), "npy": str(out.with_suffix(".npy"))}
    write_json(out.with_suffix(".json"), report)
    print(f"wrote {out}, {out.with_suffix('.npy')}, {out.with_suffix('.json')}")
    print(f"cycles ({report['cycles_source']}): dense iteration "
          f"{report['cycles_per_dense_iteration']:.0f}, sparse "
          f"{report['cycles_per_sparse_iteration']:.0f}, total {report['total_cycles']}; "
          f"FFN-Reuse sparsity {report['ffn_sparsity']:.3f}, EP {report['ep_sparsity']:.3f}")
    ok = same and not failures
    print(("image equals the golden INT12 sampler's bit for bit" if same else
           "image DIFFERS from the golden INT12 sampler's")
          + ("" if not args.rtl else ("; every core segment on the RTL matched" if not failures
                                      else f"; {len(failures)} blocks FAILED on the RTL")))
    return 0 if ok else 1


def demo_dsc_block(cfg, seed, args, progress) -> dict:
    """``make demo`` step: one sparse block iteration of the digits DiT through the DSC core.

    Always on the ``toy`` config (an exion16 ``dsc_core`` Verilator build takes ~15 min; the
    demo's other steps keep ``cfg``): block 1 of iteration 1 (sparse: FFN-Reuse N = 2,
    s = 0.8; EP k = 0.5) of a 3-step DDIM run with ``seed``, the EPRE, every GEMM, LN, the softmax,
    the FFN-Reuse unit and the GELU +
    requant as one descriptor program, each output bit-exact vs golden/dsc.py and the
    cycles equal to the cycle model with the gemm engine's measured time."""
    from exion import PRESETS
    from exion.sim.dsc_block import block_case, run_block
    from exion.workloads.dit import DiT
    from exion.workloads.weights import load_weights
    toy = PRESETS["toy"]
    t0 = time.perf_counter()
    meta = {"steps": 3, "samples": 1, "seed": int(seed) % (1 << 31),
            "exion": {"ffn_reuse": True, "n": 2, "s": 0.8, "ep": True, "k": 0.5,
                      "quant": True}}
    case = block_case(DiT(load_weights()[0]), meta, 1, 1)
    r = run_block(toy, case, seed=seed, progress=progress)
    wall = time.perf_counter() - t0
    exact = bool(r["pass"] and r["model"]["total"] == r["cycles"])
    stages = ", ".join(f"{k} {v}" for k, v in r["gemm_cycles"].items())
    ffn = case.stats.get("ffn_sparsity", [(0, 0.0)])[0][1]
    print(f"  DSC   one sparse block iteration (digits DiT block 1, FFN-Reuse sparsity "
          f"{ffn:.2f}, EP k = 0.5) on the toy DSC core (toy: the exion16 core build takes "
          f"~15 min): {r['jobs']} core segments, {r['cycles']} cycles (model "
          f"{r['model']['total']}); per stage: {stages}: {'PASS' if exact else 'FAIL'} "
          f"(bit-exact vs golden/dsc.py, cycles == model)")
    rep = r.get("report", {}) or {}
    return {"block": "dsc", "config": "toy", "passed": exact, "cycles": r["cycles"],
            "model_cycles": r["model"]["total"], "stage_cycles": r["gemm_cycles"],
            "segments": r["jobs"], "ffn_sparsity": float(ffn),
            "build_seconds": rep.get("build_seconds"), "wall_seconds": wall}
