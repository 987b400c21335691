"""``exion golden block``: one transformer block iteration under a named dataflow.

Listed in :data:`exion.gen.cli.golden.GOLDEN_MODULES`; :func:`register` adds ``block`` to
the ``exion golden`` subparsers. The model is :mod:`exion.golden.block` over :mod:`exion.golden.dataflow`
(docs/dataflow.md). Bad input raises :class:`~exion.errors.ExionError` before anything is
written.
"""

from __future__ import annotations

import argparse
import math

from exion.errors import ExionError
from exion.golden import block as bl
from exion.golden.dataflow import BANK_MAPS, DATAFLOWS, DEFAULT_BANK_MAP, ENGINE_FLOWS

from .options import add_config, add_report, add_seed, load_cfg, write_json

DEFAULT_JSON = "build/golden/block.json"
DEFAULT_S = 0.95

JSON_FIELDS = """\
JSON fields (top level; cycles are core clock cycles, bytes are bytes):
  config, config_hash     the config (all fields) and its hash
  shape                   name, T (tokens), d, heads, d_head, ffn
  mode, dataflow, bank_map, bw (global-buffer bytes per cycle, each direction)
  masks                   what the masks are: kind (random | column | file), s, k, q_th, seed,
                          source (file and block/iteration/sample), achieved ffn sparsity
  cycles                  the block iteration: sum of GEMM cycles + exposed CFSE + EPRE
  compute_cycles          SDUE busy cycles: sum over GEMMs of sum_p max(k_p, C) + SDUE fixed
  stall_cycles            GEMM cycles - compute_cycles (SDUE waiting for fills/write-back)
  epre_cycles             EPRE cycles on the block's critical path (ep / all): the exposed
                          cycles of the overlapped schedule (golden.projections.
                          epre_schedule), or every EPRE cycle with --epre-serial
  epre_exposed_cycles     ep / all (overlapped): EPRE cycles the SDUE waits for (schedule)
  epre_bytes, epre_fetch_cycles  ep / all (overlapped): the EPRE's own global-buffer bytes
                          (Wq; X and Wk are captured from the SDUE's fill streams) and
                          bytes / bw, charged as stall (upper bound); epre_cycles =
                          epre_exposed_cycles + epre_fetch_cycles
  ep_saved_cycles         ep / all (overlapped): SDUE cycles EP saves (dense minus EP cycles
                          of the q/k/v projections, scores and P.V, stalls included)
  epre_busy_cycles, epre_run_cycles  ep / all (overlapped): EPRE busy cycles of the layer,
                          of one head (golden.cycles.epre_run_cycles, RTL-exact)
  epre_provisioning       units, lanes (per unit), selectors, shift_adds (the config's)
  epre_schedule           waits (exposed cycles per head), kv_per_head, rest_per_head
  cfse                    softmax / GELU elements, exposed cycles, rate (elements per cycle)
  bytes                   gb_wmem, gb_imem, gb_omem (global buffer -> WMEM / IMEM / OMEM
                          preload), omem_gb (write-back), total
  memory_cycles           sum over GEMMs of max(charged read bytes, charged write bytes) / bw
  bound                   "memory-bound" if memory_cycles > compute_cycles, else
                          "compute-bound"
  useful_macs, utilization  useful MACs; useful / (R * C * L * cycles)
  ffn_cycles              FC1 + exposed GELU + FC2 cycles
  attention_cycles        cycles - ffn_cycles (projections, scores, P.V, o_proj, softmax,
                          EPRE)
  reference               the dense block (mode base) under the same dataflow and bw:
                          cycles, ffn_cycles
  speedup, ffn_speedup    reference / this (block, FFN sub-block)
  amortized_cycles        ffnr / all: (dense iteration + N sparse ones) / (N + 1) with
                          N = --n-reuse (the dense iteration is base, or ep for all, with
                          FC2 writing Y_d at A bits)
  gemms                   one entry per GEMM: name, dataflow, M, N, K, bw, passes, k_words,
                          compute_cycles, stall_cycles, cycles, bytes (as above),
                          bytes_total, charged (byte counters the cycles pay: row-block
                          pays gb_wmem and gb_imem, as golden.cycles), useful_macs,
                          utilization, bound (compute-, memory-, and with the engine
                          flows scan- or cau-bound: golden.cycles.engine_cycles),
                          conmerge_utilization (outputs / (R * C *
                          passes of one K-split)), groups, group_cols (G), k_chunks,
                          bank_map
"""


def _masks(args, shp):
    """``random`` / ``column`` or a loaded file (dict)."""
    kinds = bl.MASK_KINDS
    trace_opts = [o for o, v in (("--trace-block", args.trace_block),
                                 ("--trace-iteration", args.trace_iteration),
                                 ("--trace-sample", args.trace_sample)) if v is not None]
    if args.masks in kinds:
        if trace_opts:
            raise ExionError(f"{', '.join(trace_opts)}: only with --masks FILE.npz")
        return args.masks
    if args.s is not None:
        raise ExionError("--s applies to synthetic masks (random, column); "
                         f"{args.masks!r} carries its own masks")
    if args.q_th is not None:
        raise ExionError("--q-th applies to synthetic masks; a file carries its own EP masks")
    if not str(args.masks).endswith(".npz"):
        raise ExionError(f"--masks {args.masks!r}: expected random, column or a FILE.npz")
    return bl.load_masks(args.masks, shp, block=args.trace_block or 0,
                         iteration=args.trace_iteration, sample=args.trace_sample or 0)


def cmd_block(args) -> int:
    cfg = load_cfg(args.config)
    shp = bl.shape(args.shape)
    bw = cfg.gb_bytes_per_cycle if args.gb_bytes_per_cycle is None else args.gb_bytes_per_cycle
    if bw < 1:
        raise ExionError(f"--gb-bytes-per-cycle {bw} is invalid: must be >= 1")
    if args.n_reuse < 0:
        raise ExionError(f"--n-reuse {args.n_reuse} is invalid: must be >= 0")
    if args.seed < 0:
        raise ExionError(f"--seed {args.seed} is invalid: must be >= 0")
    if args.merge_ways is not None:
        try:   # the run-time m: the one check (Config.check_merge_ways)
            cfg.check_merge_ways(args.merge_ways)
        except ExionError as e:
            raise ExionError(f"--merge-ways: {e}") from None
    if args.cfse_rate is not None and args.cfse_rate < 1:
        raise ExionError(f"--cfse-rate {args.cfse_rate} is invalid: must be >= 1")
    if args.s is not None and not 0.0 <= args.s < 1.0:
        raise ExionError(f"--s {args.s} is invalid: the sparsity must be in [0, 1)")
    if not 0.0 < args.k <= 1.0:
        raise ExionError(f"--k {args.k} is invalid: the top-k ratio must be in (0, 1]")
    if args.q_th is not None and not math.isfinite(args.q_th):
        raise ExionError(f"--q-th {args.q_th} is invalid: must be a finite number")
    masks = _masks(args, shp)
    s = DEFAULT_S if args.s is None else args.s
    mode = args.mode
    ffn_mask = bl.ffn_mask_for(shp, masks, s, args.seed) if mode in ("ffnr", "all") else None
    ep = bl.ep_masks_for(shp, masks, args.k, args.q_th, args.seed) \
        if mode in ("ep", "all") else None
    kw = {"dataflow": args.dataflow, "bw": bw, "merge_ways": args.merge_ways,
          "bank_map": args.bank_map, "cfse_rate": args.cfse_rate}
    r = bl.block_flow(cfg, shp, mode, ffn_mask=ffn_mask, ep=ep, **kw,
                      epre_overlap=not args.epre_serial)
    ref = r if mode == "base" else bl.block_flow(cfg, shp, "base", **kw)
    res = {"config": cfg.to_dict(), "config_hash": cfg.hash,
           "shape": {k: v for k, v in shp.items()}, "bank_map": args.bank_map}
    res.update({k: v for k, v in r.items() if k != "gemms"})
    src = masks["source"] if isinstance(masks, dict) else None
    res["masks"] = {"kind": masks if isinstance(masks, str) else "file",
                    "s": s if isinstance(masks, str) else None, "k": args.k,
                    "q_th": args.q_th, "seed": args.seed, "source": src,
                    "ffn_sparsity": None if ffn_mask is None else float(1 - ffn_mask.mean())}
    res["reference"] = {"cycles": ref["cycles"], "ffn_cycles": ref["ffn_cycles"]}
    res["speedup"] = ref["cycles"] / r["cycles"]
    res["ffn_speedup"] = ref["ffn_cycles"] / r["ffn_cycles"]
    res["n_reuse"] = args.n_reuse
    if mode in ("ffnr", "all"):
        dense = bl.block_flow(cfg, shp, "base" if mode == "ffnr" else "ep", ep=ep,
                              reuse_dense=True, **kw, epre_overlap=not args.epre_serial)
        res["amortized_cycles"] = (dense["cycles"] + args.n_reuse * r["cycles"]) \
            / (args.n_reuse + 1)
    else:
        res["amortized_cycles"] = r["cycles"]
    res["gemms"] = r["gemms"]
    _print(cfg, shp, res)
    out = write_json(args.json or DEFAULT_JSON, res)
    print(f"wrote {out}")
    return 0


def _rows(gemms):
    """Per-GEMM rows, the per-head GEMMs summed into one row each."""
    out: dict[str, dict] = {}
    for x in gemms:
        base = x["name"].split("[")[0]
        key = base + ("[*]" if "[" in x["name"] else "")
        o = out.setdefault(key, {"n": 0, "cycles": 0, "compute_cycles": 0, "stall_cycles": 0,
                                 "bytes": 0, "useful": 0, "bound": set(), "M": x["M"],
                                 "N": x["N"], "K": x["K"], "G": x["group_cols"],
                                 "chunks": x["k_chunks"]})
        o["n"] += 1
        for k in ("cycles", "compute_cycles", "stall_cycles"):
            o[k] += x[k]
        o["bytes"] += x["bytes_total"]
        o["useful"] += x["useful_macs"]
        o["bound"].add(x["bound"].split("-")[0])
    return out


def _print(cfg, shp, r):
    peak = cfg.peak_macs
    m = r["masks"]
    desc = "dense" if r["mode"] == "base" else (
        f"masks {m['kind']}" + (f" s={m['s']}" if m["s"] is not None else "")
        + (f" ({m['source']})" if m["source"] else ""))
    print(f"config {cfg.name}: {cfg.rows}x{cfg.cols}x{cfg.lanes}, m = {cfg.merge_ways}; shape "
          f"{shp['name']} (T={shp['T']}, d={shp['d']}, {shp['heads']} heads of "
          f"{shp['d_head']}, FFN {shp['ffn']}); mode {r['mode']}; dataflow {r['dataflow']}"
          + (f" (bank map {r['bank_map']})" if r["dataflow"] == "col-group" else "")
          + f"; {r['bw']} B/cycle; {desc}")
    print(f"{'GEMM':12}{'M x K x N':>20}{'G/chunks':>10}{'cycles':>11}{'compute':>11}"
          f"{'stall':>10}{'MB':>9}{'util':>8}  bound")
    for name, o in _rows(r["gemms"]).items():
        dims = f"{o['M']}x{o['K']}x{o['N']}" + (f" x{o['n']}" if o["n"] > 1 else "")
        gc = f"{o['G']}/{o['chunks']}" if o["G"] else "-"
        util = o["useful"] / (peak * o["cycles"]) if o["cycles"] else 0.0
        print(f"{name:12}{dims:>20}{gc:>10}{o['cycles']:>11}{o['compute_cycles']:>11}"
              f"{o['stall_cycles']:>10}{o['bytes'] / 1e6:>9.2f}{100 * util:>7.1f}%  "
              f"{'/'.join(sorted(o['bound']))}")
    c = r["cfse"]
    print(f"CFSE exposed: softmax {c['softmax_exposed']}, GELU {c['gelu_exposed']} "
          f"({c['rate']} elements/cycle); EPRE {r['epre_cycles']}")
    if "epre_exposed_cycles" in r:
        p = r["epre_provisioning"]
        print(f"EPRE ({p['units']} units x {p['lanes']} lanes, {p['selectors']} selectors): "
              f"{r['epre_run_cycles']} cycles per head, {r['epre_busy_cycles']} busy, "
              f"{r['epre_exposed_cycles']} exposed + {r['epre_fetch_cycles']} Wq fetch "
              f"({r['epre_bytes'] / 1e6:.2f} MB); EP saves {r['ep_saved_cycles']} SDUE "
              f"cycles (exposed / saved = "
              f"{r['epre_exposed_cycles'] / max(1, r['ep_saved_cycles']):.1%})")
    print(f"block: {r['cycles']} cycles (compute {r['compute_cycles']}, stall "
          f"{r['stall_cycles']}), {r['bytes']['total'] / 1e6:.2f} MB, utilization "
          f"{100 * r['utilization']:.1f}%, {r['bound']}; FFN {r['ffn_cycles']} cycles")
    print(f"vs dense block ({r['dataflow']}, same bandwidth): {r['speedup']:.2f}x block, "
          f"{r['ffn_speedup']:.2f}x FFN; amortized over N = {r['n_reuse']}: "
          f"{r['amortized_cycles']:.0f} cycles per iteration")


def register(gsub) -> None:
    p = gsub.add_parser(
        "block", help="one transformer block under a named dataflow: cycles, bytes, bound",
        description="Model one transformer block iteration (Q/K/V, scores, softmax, P.V, "
                    "output projection, FC1, GELU, FC2) GEMM by GEMM under a dataflow "
                    "(row-block: today's, golden.cycles; col-group: weight-stationary column "
                    "groups) at a global-buffer bandwidth, in mode base / ffnr / ep / all, "
                    "with synthetic (random, column-concentrated) or real (exion trace) masks. "
                    "Prints a per-GEMM table and writes JSON (docs/dataflow.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=JSON_FIELDS)
    add_config(p, default="exion16")
    p.add_argument("--shape", choices=list(bl.SHAPES), default="dit-xl2",
                   help="block shape: dit-xl2 (T=256, d=1152, 16 heads, FFN 4608) or digits "
                        "(the digits DiT of exion.workloads) (default: dit-xl2)")
    p.add_argument("--mode", choices=bl.MODES, default="base",
                   help="base (dense), ffnr (FFN-Reuse sparse iteration), ep (eager "
                        "prediction), all (both) (default: base)")
    p.add_argument("--s", type=float, default=None,
                   help=f"FFN-Reuse element sparsity of synthetic masks (default {DEFAULT_S})")
    p.add_argument("--masks", default="random", metavar="random|column|FILE.npz",
                   help="FFN-Reuse / EP masks: random (i.i.d. per element), column (whole "
                        "hidden units), or a FILE.npz: an `exion trace` file or an .npz with "
                        "ffn_mask (T, F), score_mask (heads, T, T), skip_q/k/v (heads, T) "
                        "(default: random)")
    p.add_argument("--trace-block", type=int, default=None, metavar="B",
                   help="with a trace: the block (default 0)")
    p.add_argument("--trace-iteration", type=int, default=None, metavar="T",
                   help="with a trace: the iteration (default: the first sparse one)")
    p.add_argument("--trace-sample", type=int, default=None, metavar="S",
                   help="with a trace: the sample (default 0)")
    p.add_argument("--k", type=float, default=0.5,
                   help="EP top-k ratio of synthetic score masks (default 0.5)")
    p.add_argument("--q-th", type=float, default=None, metavar="Q",
                   help="EP dominant-row gap on the synthetic N(0,1) logits (default: rule off)")
    p.add_argument("--n-reuse", type=int, default=2, metavar="N",
                   help="FFN-Reuse N (sparse iterations per dense one) for amortized_cycles "
                        "(default 2)")
    p.add_argument("--dataflow", choices=DATAFLOWS + ENGINE_FLOWS, default="col-group",
                   help="the block model's row-block (today's) or col-group (default), or "
                        "the built gemm engine through its exact model (docs/gemm.md): "
                        "engine-row-block, engine-col-group (striped WMEM map where the mask "
                        "allows it) or engine-best (the faster per GEMM); engine flows pick "
                        "each GEMM's K-split, and their bytes are the weight fetch (charged) "
                        "and the A the host writes (not charged, gb_imem), no OMEM traffic")
    p.add_argument("--bank-map", choices=BANK_MAPS, default=DEFAULT_BANK_MAP,
                   help=f"col-group: how merged members reach a DPU column (default "
                        f"{DEFAULT_BANK_MAP})")
    p.add_argument("--gb-bytes-per-cycle", type=int, default=None, metavar="B",
                   help="global-buffer bytes per cycle, each direction (default: the "
                        "config's gb_bytes_per_cycle)")
    p.add_argument("--merge-ways", type=int, default=None, metavar="m",
                   help="ConMerge ways (default: the config's)")
    p.add_argument("--epre-serial", action="store_true",
                   help="ep / all: charge every EPRE cycle (EPRE before the SDUE) instead of "
                        "the exposed cycles of the overlapped schedule (docs/epre.md)")
    p.add_argument("--cfse-rate", type=int, default=None, metavar="E",
                   help="CFSE elements per cycle (default R)")
    add_seed(p, default=0, help="seed of synthetic masks (default: %(default)s)")
    add_report(p, flag="--json", default_path=DEFAULT_JSON)
    p.set_defaults(func=cmd_block)
