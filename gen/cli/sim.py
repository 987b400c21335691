"""``exion sim ...``: Verilated RTL runs checked bit-exactly against the golden model."""

from __future__ import annotations

from . import cfse, dsc, ffnr
from .options import (add_config, add_mask, add_report, add_seed, add_k_chunk, add_waves,
                      load_cfg, load_mask, progress, seed_of, write_json)


def register(sub) -> None:
    p = sub.add_parser("sim", help="run Verilated RTL against the golden model",
                       description="Simulate generated RTL with Verilator + cocotb and check "
                                   "every output bit-exactly against the golden model.")
    ssub = p.add_subparsers(dest="sim_command", metavar="WHAT", required=True)

    d = ssub.add_parser("dpu", help="the dot-product unit on directed + random vectors")
    add_config(d)
    d.add_argument("--n", type=int, default=200, help="random dot products (default 200)")
    add_seed(d)
    add_waves(d)
    add_report(d)
    d.set_defaults(func=cmd_sim_dpu)

    g = ssub.add_parser(
        "gemm", help="a (masked) matrix product through the Verilated engine",
        description="Run C = A @ B only where MASK is 1, check it bit-exactly against the "
                    "golden model, and print passes, cycles, utilization and speedup over "
                    "dense. With --mask the product runs through the Verilated gemm engine "
                    "(CAU -> weight fetch -> SDUE): the hardware derives the ConMerge vectors "
                    "from the mask. Without --mask, or with --golden-vectors, the SDUE runs "
                    "alone with descriptors from the host (golden ConMerge vectors; K-splits "
                    "and --input-sparse supported). Outputs whose mask is 0 keep their "
                    "previous value (--prev, default 0), which is how FFN-Reuse reuses cached "
                    "results. Products larger than the memories run as tiles.")
    add_config(g)
    g.add_argument("--a", required=True, metavar="A.npy", help="M x K integer operands")
    g.add_argument("--b", required=True, metavar="B.npy", help="K x N integer operands")
    add_mask(g, required=False, absent="dense")
    g.add_argument("--prev", metavar="P.npy", help="M x N previous OMEM contents (default 0)")
    g.add_argument("--accumulate", action="store_true",
                   help="add into --prev instead of overwriting the masked outputs")
    g.add_argument("--input-sparse", action="store_true",
                   help="stream only the L-chunks of A that hold a non-zero (FC2 delta, P.V)")
    g.add_argument("--merge-ways", type=int, default=None, metavar="m",
                   help="ConMerge ways used by the plan (1..config merge_ways; default: the "
                        "config's)")
    g.add_argument("--sort", default="popcount", choices=["popcount", "none"],
                   help="ConMerge column sort (default popcount)")
    g.add_argument("--golden-vectors", action="store_true",
                   help="run the SDUE alone with ConMerge vectors from the golden model "
                        "instead of the gemm engine's hardware CAU (for debugging the SDUE)")
    g.add_argument("--dataflow", choices=["row-block", "col-group"], default="row-block",
                   help="gemm engine dataflow (with --mask, docs/gemm.md): row-block = each "
                        "pass fetches its members' weights; col-group = a tile's columns are "
                        "fetched once (only those the mask needs) and stay in WMEM for every "
                        "row block; a run's column groups are double-buffered (the next "
                        "group's fetch overlaps this group's passes)")
    g.add_argument("--single-buffer", action="store_true",
                   help="col-group only: one column group per engine run, filling the whole "
                        "WMEM, each run from idle (the engine before double buffering)")
    g.add_argument("--gb-bytes-per-cycle", type=int, default=0, metavar="B",
                   help="global-buffer bytes per cycle the gemm engine's weight fetch may "
                        "move (0 = unlimited: one fetch beat per cycle); the engine stalls "
                        "when the fetch is slower than compute")
    g.add_argument("--wmem-map", choices=["replicated", "striped", "auto"],
                   default="replicated",
                   help="col-group only: how a column group sits in WMEM. replicated = every "
                        "column in every bank (any merge; the scan moves one word per "
                        "cycle); striped = column j only in bank j %% C (groups C times "
                        "wider, the scan moves C words per cycle; only for passes that keep "
                        "column j in slot j %% C alone, e.g. a dense mask); auto = striped "
                        "when the mask allows it (docs/gemm.md, 'The striped map')")
    add_k_chunk(g)
    g.add_argument("--compact", action="store_true",
                   help="gemm engine: the host first drops the output columns no row needs "
                        "and runs the product of the rest, scattering it back (their "
                        "weights are never loaded; a column-concentrated mask becomes a "
                        "dense product the striped map may take; docs/gemm.md 'Compaction')")
    g.add_argument("--out", required=True, metavar="C.npy", help="where to write the result")
    add_report(g)
    add_seed(g)
    add_waves(g)
    g.set_defaults(func=cmd_sim_gemm)

    from .golden_predict import add_predict_args
    q = ssub.add_parser(
        "predict", help="eager prediction through the Verilated EPRE",
        description="Run eager prediction (SPEC 3.4: LOD/TS-LOD stage 1 and 2, top-k and "
                    "dominant-row selection) through the Verilated EPRE, check every stage "
                    "(Qh, Kh, Sh) and output (score mask, dominant and key-needed flags) "
                    "bit-exactly against the golden model, and print intra-iteration "
                    "sparsity, dominant rows, skipped Q/K/V rows and the EPRE's cycles next "
                    "to the cycle model.")
    add_config(q)
    add_predict_args(q)
    q.add_argument("--out", required=True, metavar="MASK.npy",
                   help="where to write the N_q x N_k score mask (bool) the RTL produced")
    add_report(q)
    add_seed(q)
    q.set_defaults(func=cmd_sim_predict)

    cfse.register_sim(ssub)
    ffnr.register_sim(ssub)
    dsc.register_sim(ssub)


def cmd_sim_dpu(args) -> int:
    from exion.errors import ExionError
    from exion.sim.runner import BenchFailure, rtl_build, run_bench
    cfg = load_cfg(args.config)
    if args.n < 0:
        raise ExionError(f"--n must be >= 0, got {args.n}")
    seed = seed_of(args)
    build = rtl_build(cfg, "dpu", waves=args.waves, progress=progress)
    try:
        r = run_bench(build, "exion.sim.tb_dpu", seed=seed,
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


def load_gemm_inputs(cfg, args):
    """Load and check A, B, mask, prev; every error names the option, file and shape."""
    import numpy as np

    from exion.errors import ExionError
    from exion.golden.quant import check_operand

    from .options import load_npy
    a = check_operand(cfg, load_npy(args.a, "--a", ndim=2, dtype_kind="iub"), f"--a {args.a}")
    b = check_operand(cfg, load_npy(args.b, "--b", ndim=2, dtype_kind="iub"), f"--b {args.b}")
    if a.shape[1] != b.shape[0]:
        raise ExionError(f"--a {args.a} is {a.shape} and --b {args.b} is {b.shape}: A's "
                         f"columns ({a.shape[1]}) must equal B's rows ({b.shape[0]})")
    M, N = a.shape[0], b.shape[1]
    mask = None
    if args.mask:
        mask = load_mask(args.mask, shape=(M, N), shape_from="A and B")
    prev = None
    if args.prev:
        prev = load_npy(args.prev, "--prev", ndim=2, dtype_kind="iu").astype(np.int64)
        if prev.shape != (M, N):
            raise ExionError(f"--prev {args.prev} has shape {prev.shape}, expected {(M, N)}")
        lim = 2 ** (cfg.acc_width - 1)
        if prev.size and (prev.min() < -lim or prev.max() >= lim):
            raise ExionError(f"--prev {args.prev} has values outside signed "
                             f"{cfg.acc_width}-bit")
    try:   # the run-time m: the one check (Config.check_merge_ways)
        m = cfg.check_merge_ways(args.merge_ways)
    except ExionError as e:
        raise ExionError(f"--merge-ways: {e}") from None
    from exion.golden.quant import check_k
    check_k(cfg, a.shape[1])
    return a, b, mask, prev, m


def cmd_sim_gemm(args) -> int:
    import time
    from pathlib import Path

    import numpy as np

    from exion.errors import ExionError
    from exion.golden.conmerge import conmerge, dense_plan, masked_gemm
    from exion.golden.cycles import gemm_cycles
    from exion.sim.program import build_program
    from exion.sim.runner import BenchFailure
    from exion.sim.sdue_rtl import rtl_sdue

    cfg = load_cfg(args.config)
    if not 0 <= args.gb_bytes_per_cycle < 1 << 16:
        raise ExionError(f"--gb-bytes-per-cycle: {args.gb_bytes_per_cycle} is invalid: must "
                         f"be in 0..65535 (0 = unlimited)")
    a, b, mask, prev, m = load_gemm_inputs(cfg, args)
    if (mask is None or args.golden_vectors) and (args.dataflow != "row-block" or
                                                   args.gb_bytes_per_cycle or
                                                   args.k_chunk is not None or args.compact):
        raise ExionError("--dataflow / --gb-bytes-per-cycle / --k-chunk / --compact apply to "
                         "the gemm engine: give --mask and no --golden-vectors")
    if args.single_buffer and args.dataflow != "col-group":
        raise ExionError("--single-buffer applies to --dataflow col-group only")
    if args.wmem_map != "replicated" and args.dataflow != "col-group":
        raise ExionError("--wmem-map applies to --dataflow col-group only")
    out = Path(args.out)
    if out.suffix != ".npy":
        raise ExionError(f"--out {args.out!r} must be a .npy file")
    M, K = a.shape
    N = b.shape[1]
    prev0 = np.zeros((M, N), np.int64) if prev is None else prev
    seed = seed_of(args)
    want = masked_gemm(cfg, a, b, np.ones((M, N), bool) if mask is None else mask,
                       out=prev0, accumulate=args.accumulate)
    group = cfg.omem_depth
    groups = [(j, min(N, j + group)) for j in range(0, N, group)]
    dense_model = sum(gemm_cycles(cfg, K, dense_plan(cfg, M, j1 - j0)).sdue_cycles
                      for j0, j1 in groups)
    if mask is not None and not args.golden_vectors:
        return _sim_gemm_engine(cfg, args, a, b, mask, prev0, m, out, want, dense_model, seed,
                                progress)
    plans = []
    for j0, j1 in groups:
        sub_mask = None if mask is None else mask[:, j0:j1]
        plans.append(dense_plan(cfg, M, j1 - j0) if sub_mask is None else
                     conmerge(cfg, sub_mask, merge_ways=m, sort=args.sort))
    progs = [build_program(cfg, a, b[:, j0:j1], plan, prev=prev0[:, j0:j1],
                           accumulate=args.accumulate, input_sparse=args.input_sparse)
             for (j0, j1), plan in zip(groups, plans)]
    t0 = time.perf_counter()
    try:
        runs, rep = rtl_sdue(cfg, progs, seed=seed, waves=args.waves, run_name="gemm",
                             progress=progress)
    except BenchFailure as e:
        print(f"FAIL: {e}")
        return 1
    wall = time.perf_counter() - t0
    result = np.concatenate([r.result for r in runs], axis=1)
    exact = bool(np.array_equal(result, want))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, result)
    rtl_cycles = sum(r.cycles for r in runs)
    model = sum(r.model for r in runs)
    passes = sum(r.program.n_passes for r in runs)
    masked = int(mask.sum()) if mask is not None else M * N
    util = masked * K / (cfg.peak_macs * rtl_cycles) if rtl_cycles else 0.0
    figures = {
        "config": cfg.name, "M": M, "K": K, "N": N, "merge_ways": m, "sort": args.sort,
        "engine": "sdue", "conmerge_vectors": "golden",
        "masked_outputs": masked, "mask_density": masked / (M * N) if M * N else 0.0,
        "column_groups": len(groups), "passes": passes,
        "dense_passes": sum(p.dense_passes for p in plans),
        "rtl_cycles": rtl_cycles, "model_cycles": model,
        "dense_cycles_model": dense_model,
        "speedup_over_dense": dense_model / rtl_cycles if rtl_cycles else None,
        "utilization": util, "bit_exact": exact, "seed": seed,
        "sim_wall_seconds": wall, "out": str(out),
    }
    if args.waves:
        figures["waves"] = rep.get("waves")
    print(f"SDUE {cfg.name}: C[{M}x{N}] = A[{M}x{K}] @ B, mask density "
          f"{figures['mask_density']:.1%}, m = {m}, ConMerge vectors from the golden model")
    print(f"  passes {passes} (dense {figures['dense_passes']}), RTL cycles {rtl_cycles} "
          f"(model {model}), utilization {util:.1%}, speedup over dense "
          f"{figures['speedup_over_dense'] or 0:.2f}x")
    print(f"  bit-exact vs golden: {'PASS' if exact else 'FAIL'}; wrote {out}")
    if args.report:
        write_json(args.report, figures)
    return 0 if exact else 1


def _striped_arg(wmem_map: str):
    """``--wmem-map`` -> ``GemmCase.striped`` / ``engine_cycles(striped=...)``."""
    return {"replicated": False, "striped": True, "auto": "auto"}[wmem_map]


def _sim_gemm_engine(cfg, args, a, b, mask, prev, m, out, want, dense_model, seed,
                     progress) -> int:
    """The masked product through the Verilated ``gemm`` top (CAU -> fetch -> SDUE)."""
    import time

    import numpy as np

    from exion.errors import ExionError
    from exion.golden.conmerge import conmerge
    from exion.golden.cycles import engine_cycles, group_mask, sdue_cycles
    from exion.sim.gemm_rtl import GemmCase, plan_tiles, rtl_sparse_gemm
    from exion.sim.runner import BenchFailure

    if args.input_sparse:
        raise ExionError("--input-sparse is not supported by the gemm engine (it streams "
                         "dense K): add --golden-vectors to run it on the SDUE alone")
    ecfg = cfg    # the engine built for cfg; m is a run-time field of the mask beats
    M, K = a.shape
    N = b.shape[1]
    case = GemmCase(a, b, mask, prev, accumulate=args.accumulate, sort=args.sort, ways=m,
                    dataflow=args.dataflow, gb_bytes=args.gb_bytes_per_cycle,
                    double_buffer=not args.single_buffer, k_chunk=args.k_chunk,
                    striped=_striped_arg(args.wmem_map), compact=args.compact)
    tiles = plan_tiles(ecfg, case)   # checks the limits before anything is built
    t0 = time.perf_counter()
    try:
        outs, runs, rep = rtl_sparse_gemm(ecfg, [case], seed=seed, waves=args.waves,
                                          run_name="gemm-engine", progress=progress)
    except BenchFailure as e:
        print(f"FAIL: {e}")
        return 1
    wall = time.perf_counter() - t0
    result, run = outs[0], runs[0]
    exact = bool(np.array_equal(result, want))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, result)
    rtl_cycles = sum(run.tile_cycles)
    passes = sum(run.tile_passes)
    sdue_only = sum(sdue_cycles(ecfg, [t.setup["kwords"]] * p,
                                wide=bool(t.flow.get("striped"))) if p else 0
                    for t, p in zip(tiles, run.tile_passes))     # striped runs drain wide
    golden_passes = 0
    for t in tiles:
        sub = mask[t.rows[t.rows >= 0][:, None], t.cols[None, :]]
        if t.flow.get("gcols"):   # col-group, several groups: ConMerge per group
            sub = group_mask(ecfg, sub, t.flow["nblocks"], t.flow["gcols"])
        golden_passes += conmerge(ecfg, sub, sort=args.sort, merge_ways=m).n_passes
    masked = int(mask.sum())
    util = masked * K / (cfg.peak_macs * rtl_cycles) if rtl_cycles else 0.0
    model = engine_cycles(ecfg, mask, K, dataflow=args.dataflow,
                          gb_bytes=args.gb_bytes_per_cycle, merge_ways=m, sort=args.sort,
                          double_buffer=not args.single_buffer, k_chunk=args.k_chunk,
                          striped=_striped_arg(args.wmem_map), compact=args.compact)
    wbytes = sum(run.tile_words) * cfg.lanes * cfg.width // 8
    figures = {
        "config": cfg.name, "M": M, "K": K, "N": N, "merge_ways": m, "sort": args.sort,
        "engine": "gemm", "conmerge_vectors": "rtl-cau",
        "masked_outputs": masked, "mask_density": masked / (M * N) if M * N else 0.0,
        "tiles": len(tiles), "passes": passes, "golden_passes": golden_passes,
        "rtl_cycles": rtl_cycles, "tile_cycles": run.tile_cycles,
        "dataflow": args.dataflow, "gb_bytes_per_cycle": args.gb_bytes_per_cycle,
        "double_buffer": not args.single_buffer,
        "k_chunk": model["k_chunk"], "k_splits": model["k_splits"],
        "wmem_map": "striped" if model["striped"] else "replicated",
        "compact": model["compact"],
        "rtl_stall_cycles": sum(run.tile_stalls), "rtl_wmem_bytes": wbytes,
        "model_cycles": model["cycles"], "model_stall_cycles": model["stall_cycles"],
        "model_wmem_bytes": model["bytes"]["gb_wmem"], "model_bound": model["bound"],
        "model_exact": all(t["exact"] for t in model["tiles"]),
        "sdue_cycles_same_passes": sdue_only,
        "engine_overhead": rtl_cycles / sdue_only - 1 if sdue_only else None,
        "dense_cycles_model": dense_model,
        "speedup_over_dense": dense_model / rtl_cycles if rtl_cycles else None,
        "utilization": util, "bit_exact": exact, "seed": seed,
        "sim_wall_seconds": wall, "out": str(out),
    }
    if args.waves:
        figures["waves"] = rep.get("waves")
    print(f"gemm engine {ecfg.name}: C[{M}x{N}] = A[{M}x{K}] @ B, mask density "
          f"{figures['mask_density']:.1%}, m = {m}, {len(tiles)} tile(s); ConMerge vectors "
          f"from the Verilated CAU")
    print(f"  passes {passes} (golden {golden_passes}), RTL cycles {rtl_cycles} (the SDUE "
          f"alone on the same passes: {sdue_only}), utilization {util:.1%}, speedup over "
          f"dense {figures['speedup_over_dense'] or 0:.2f}x")
    kind = "exact" if figures["model_exact"] else "lower bound"
    print(f"  {args.dataflow}, {args.gb_bytes_per_cycle or 'unlimited'} B/cycle: stall "
          f"{figures['rtl_stall_cycles']} cycles, weights {wbytes} B from the global buffer; "
          f"model ({kind}) {model['cycles']} cycles, {model['bytes']['gb_wmem']} B, "
          f"{model['bound']}")
    if model["striped"]:
        print("  WMEM map: striped (column j in bank j % C, a stripe of C columns per scan "
              "cycle)")
    if model["k_splits"] > 1:
        print(f"  K-splits: {model['k_splits']} of <= {model['k_chunk']} L-words, each a run "
              f"adding into OMEM")
    if model["compact"]:
        print(f"  compacted: {model['compact']['cols']} of {N} columns needed, the rest "
              f"never loaded")
    print(f"  bit-exact vs golden: {'PASS' if exact else 'FAIL'}; wrote {out}")
    if args.report:
        write_json(args.report, figures)
    return 0 if exact else 1


def cmd_sim_predict(args) -> int:
    from pathlib import Path

    import numpy as np

    from exion.errors import ExionError
    from exion.sim.epre_rtl import rtl_predict
    from exion.sim.runner import BenchFailure

    from .golden_predict import load_predict_inputs
    cfg, k, x, wq, wk, kx = load_predict_inputs(args)
    out = Path(args.out)
    if out.suffix != ".npy":
        raise ExionError(f"--out {args.out!r} must be a .npy file")
    try:
        run = rtl_predict(cfg, x, wq, wk, k, shift_q=args.shift_q, shift_k=args.shift_k,
                          q_th_int=args.qth, polarity=args.polarity,
                          lod_terms=args.lod_terms, seed=args.seed, progress=progress,
                          k_exact=kx)
    except BenchFailure as e:
        print(f"FAIL: {e}")
        return 1
    g = run.golden
    checks = {name: bool(np.array_equal(getattr(run, name), getattr(g, name)))
              for name in ("qh", "kh", "sh", "score_mask", "dominant", "key_needed",
                           "k_needed")}
    exact = all(checks.values())
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, run.score_mask)
    n_q, n_k = run.score_mask.shape
    figures = {"config": cfg.name, "n_q": n_q, "n_k": n_k, "d": x.shape[1],
               "d_head": wq.shape[1], "k": k, "sparsity": run.sparsity,
               "dominant_rows": int(run.dominant.sum()),
               "skipped_q": int(g.skipped_q), "skipped_k": int(g.skipped_k),
               "skipped_v": int(g.skipped_v), "rtl_cycles": run.cycles,
               "model_cycles": run.model_cycles, "bit_exact": exact, "checks": checks,
               "out": str(out)}
    print(f"EPRE {cfg.name}: N_q = {n_q}, N_k = {n_k}, d = {x.shape[1]}, "
          f"d_head = {wq.shape[1]}, k = {k}")
    print(f"  intra-iteration sparsity {run.sparsity:.4f}, dominant rows "
          f"{figures['dominant_rows']}, skipped rows Q {g.skipped_q}, K {g.skipped_k}, "
          f"V {g.skipped_v}")
    print(f"  RTL cycles {run.cycles} (model {run.model_cycles})")
    bad = [n for n, ok in checks.items() if not ok]
    print(f"  bit-exact vs golden (Qh, Kh, Sh, mask, flags): "
          f"{'PASS' if exact else 'FAIL: ' + ', '.join(bad)}; wrote {out}")
    if args.report:
        write_json(args.report, figures)
    return 0 if exact else 1
