"""``exion golden conmerge`` and ``exion golden cycles``: ConMerge figures and the cycle model.

Both read an (M, N) boolean output mask from a ``.npy`` file, print a short report and write
JSON (``build/golden/conmerge.json`` / ``build/golden/cycles.json`` unless ``--json``).
Bad input raises :class:`~exion.errors.ExionError` before anything is written.
"""

from __future__ import annotations

import argparse
import math

from exion.errors import ExionError
from exion.golden import conmerge as cm
from exion.golden import cycles as cy

from .options import (add_config, add_k_chunk, add_mask, add_report, load_cfg, load_mask,
                      write_json)

DEFAULT_CONMERGE_JSON = "build/golden/conmerge.json"
DEFAULT_CYCLES_JSON = "build/golden/cycles.json"


def _ways(cfg, m):
    try:   # the run-time m: the one check (Config.check_merge_ways)
        return cfg.check_merge_ways(m)
    except ExionError as e:
        raise ExionError(f"--merge-ways: {e}") from None


def _window(w):
    if w is not None and w < 1:
        raise ExionError(f"--window: {w} is invalid: must be >= 1")
    return w


def _finite(x):
    """JSON-safe numbers: inf/nan -> None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def _plan(args):
    cfg = load_cfg(args.config)
    mask = load_mask(args.mask)
    m = _ways(cfg, args.merge_ways)
    w = _window(args.window)
    plan = cm.conmerge(cfg, mask, merge_ways=m, sort=args.sort, window=w)
    return cfg, mask, plan


def cmd_conmerge(args) -> int:
    cfg, mask, plan = _plan(args)
    f = plan.figures()
    print(f"config {cfg.name}: R x C = {cfg.rows} x {cfg.cols}, m = {plan.merge_ways}, "
          f"W_open = {plan.window}, sort = {plan.sort}")
    print(f"mask {args.mask}: {f['M']} x {f['N']}, masked {f['masked']} "
          f"({100 * f['masked_fraction']:.2f} %, sparsity {100 * (1 - f['masked_fraction']):.2f} %)")
    print(f"{'':14}{'passes':>10}{'utilization':>14}")
    for name, key, ukey in (("dense", "dense_passes", "dense_utilization"),
                            ("condense-only", "condense_passes", "condense_utilization"),
                            ("ConMerge", "conmerge_passes", "utilization")):
        print(f"{name:14}{f[key]:>10}{100 * f[ukey]:>13.2f}%")
    out = write_json(args.json or DEFAULT_CONMERGE_JSON,
                     _finite({"config": cfg.to_dict(), "config_hash": cfg.hash,
                              "mask": str(args.mask), "figures": f}))
    print(f"wrote {out}")
    return 0


def cmd_cycles(args) -> int:
    cfg, mask, plan = _plan(args)
    K = cfg.k_max if args.k is None else args.k
    if K < 1:
        raise ExionError(f"--k: {K} is invalid: must be >= 1")
    g = cy.gemm_cycles(cfg, K, plan, mask=mask, name="conmerge")
    gd = cy.gemm_cycles(cfg, K, cm.dense_plan(cfg, *mask.shape), name="dense")
    print(f"config {cfg.name}: R x C x L = {cfg.rows} x {cfg.cols} x {cfg.lanes}, "
          f"m = {plan.merge_ways}, K = {K}, global buffer {cfg.gb_bytes_per_cycle} B/cycle")
    print(f"{'':10}{'passes':>8}{'SDUE cyc':>11}{'util':>9}{'fill':>11}{'stall':>11}"
          f"{'total':>11}  bound")
    for name, x in (("dense", gd), ("ConMerge", g)):
        print(f"{name:10}{x.passes:>8}{x.sdue_cycles:>11}{100 * x.utilization:>8.2f}%"
              f"{x.fill:>11}{x.stall:>11}{x.total_cycles:>11}  {x.bound}")
    sp = gd.sdue_cycles / g.sdue_cycles if g.sdue_cycles else math.inf
    spt = gd.total_cycles / g.total_cycles if g.total_cycles else math.inf
    print(f"speedup over dense: {sp:.2f}x (SDUE), {spt:.2f}x (with memory stalls); "
          f"CAU {g.cau_cycles} cycles per row block, SDUE with CAU overlapped "
          f"{g.cau_overlapped} cycles")
    engine = _engine(cfg, mask, K, plan, args)
    out = write_json(args.json or DEFAULT_CYCLES_JSON, _finite({
        "config": cfg.to_dict(), "config_hash": cfg.hash, "mask": str(args.mask), "K": K,
        "dense": gd.to_dict(), "conmerge": g.to_dict(), "speedup_sdue": sp,
        "speedup_total": spt, "figures": plan.figures(), "engine": engine}))
    print(f"wrote {out}")
    return 0


def _engine(cfg, mask, K, plan, args) -> dict:
    """The gemm engine model (``golden.cycles.engine_cycles``): row-block, col-group and
    col-group single-buffered (one group per run), K-splits chosen, the striped map, both
    dataflows on the compacted product (``compact``: the columns no row needs dropped,
    ``docs/gemm.md`` "Compaction"); and the estimate of col-group with an IMEM loader
    (``golden.cycles.imem_loader_estimate``, a design not built)."""
    bw = cfg.gb_bytes_per_cycle if args.gb_bytes_per_cycle is None else args.gb_bytes_per_cycle
    if bw < 0:
        raise ExionError(f"--gb-bytes-per-cycle: {bw} is invalid: must be >= 0 (0 = unlimited)")
    out = {}
    print(f"gemm engine (hw/gemm.py, docs/gemm.md), weight fetch {bw or 'unlimited'} B/cycle:")
    kc = getattr(args, "k_chunk", None)
    for df, name, db, kci in (("row-block", "row-block", True, kc),
                              ("col-group", "col-group", True, kc),
                              ("col-group", "col-group-single", False, kc),
                              ("col-group", "col-group-auto-k", True, "auto"),
                              ("col-group", "col-group-striped", True, "auto"),
                              ("row-block", "row-block-compact", True, "auto"),
                              ("col-group", "col-group-compact", True, "auto")):
        try:
            e = cy.engine_cycles(cfg, mask, K, dataflow=df, gb_bytes=bw,
                                 merge_ways=plan.merge_ways, sort=plan.sort, double_buffer=db,
                                 k_chunk=kci,
                                 striped="auto" if name in ("col-group-striped",
                                                            "col-group-compact") else False,
                                 compact=name.endswith("-compact"))
        except ExionError as err:
            print(f"  {name:16} not runnable: {err}")
            out[name] = {"error": str(err)}
            continue
        exact = all(t["exact"] for t in e["tiles"])
        kept = (f", {e['compact']['cols']} of {mask.shape[1]} columns kept"
                if e["compact"] else "")
        print(f"  {name:17} {len(e['tiles'])} run(s), K-splits {e['k_splits']} of <= "
              f"{e['k_chunk']} words{', striped map' if e['striped'] else ''}{kept}, cycles "
              f"{e['cycles']} "
              f"({'exact' if exact else 'lower bound'}), compute {e['compute_cycles']}, stall "
              f"{e['stall_cycles']}, weights {e['bytes']['gb_wmem']} B, {e['bound']}, "
              f"utilization {100 * e['utilization']:.2f}%")
        e["exact"] = exact
        e["tiles"] = len(e["tiles"])
        out[name] = e
    try:
        e = cy.imem_loader_estimate(cfg, mask, K, gb_bytes=bw, merge_ways=plan.merge_ways)
    except ExionError as err:
        print(f"  {'col-group-loader':16} not estimable: {err}")
        return {**out, "col-group-loader": {"error": str(err)}}
    print(f"  {'col-group-loader':16} {len(e['tiles'])} run(s), cycles {e['cycles']} "
          f"(estimate: IMEM loader, not built), compute {e['compute_cycles']}, weights "
          f"{e['bytes']['gb_wmem']} B, A {e['bytes']['gb_imem']} B, {e['bound']}")
    e["exact"] = False
    e["tiles"] = len(e["tiles"])
    out["col-group-loader"] = e
    return out


def _common(p, default_json):
    add_config(p)
    add_mask(p)
    p.add_argument("--merge-ways", type=int, default=None, metavar="m",
                   help="ConMerge ways m of the run, 1..the config's merge_ways (a config "
                        "with more merge_ways, up to R, studies wider designs): original "
                        "columns per merged column (default: the config's merge_ways; 1 = "
                        "condense only)")
    p.add_argument("--sort", choices=cm.SORTS, default="popcount",
                   help="column order before merging: popcount = popcount(cv) descending, "
                        "ties by column index (the CAU's counting sort, default); "
                        "none = column index order")
    p.add_argument("--window", type=int, default=None, metavar="W",
                   help="merge window W_open: a column may join one of the W most recently "
                        "opened slots (default: the config's w_open, C unless set)")
    add_report(p, "--json", default_path=default_json)


def register(gsub) -> None:
    p = gsub.add_parser(
        "conmerge", help="ConMerge a mask: dense / condense-only / ConMerge passes",
        description="Run the golden ConMerge (SPEC 3.2) on an output mask and print the dense, "
                    "condense-only (m = 1) and ConMerge pass counts, the utilization of each "
                    "(masked outputs / (passes * R * C)) and the masked fraction.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(p, DEFAULT_CONMERGE_JSON)
    p.set_defaults(func=cmd_conmerge)

    p = gsub.add_parser(
        "cycles", help="cycle model of one masked GEMM: SDUE cycles dense vs ConMerge",
        description="Cycle model (SPEC 3.5) of the product A (M x K) @ B (K x N) with the given "
                    "output mask: SDUE passes and cycles dense vs ConMerge, utilization "
                    "(useful MACs / (R*C*L * cycles)), speedup, global-buffer fill and stall "
                    "cycles and which bound holds, and the CAU's cycles per row block.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(p, DEFAULT_CYCLES_JSON)
    p.add_argument("--k", type=int, default=None, metavar="K",
                   help="reduction length K of the product (default: the config's k_max)")
    p.add_argument("--gb-bytes-per-cycle", type=int, default=None, metavar="B",
                   help="global-buffer bytes per cycle of the gemm engine's weight fetch in "
                        "the engine section (row-block and col-group, docs/gemm.md; also the "
                        "A loads of the col-group-loader estimate, a design not built; "
                        "default: the config's gb_bytes_per_cycle; 0 = unlimited)")
    add_k_chunk(p, " (the engine rows; the col-group-auto-k row always uses auto, the "
                   "col-group-striped row auto with the striped WMEM map where the mask "
                   "allows it)")
    p.set_defaults(func=cmd_cycles)
