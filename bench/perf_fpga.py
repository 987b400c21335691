"""FPGA bench: place-and-route fmax and synthesized resources, measured by the flow itself.

* Place and route on ULX3S-85F (LFE5U-85F) at 100 MHz of the ``fpga``-preset DPU at every
  DPU pipelining setting (pipe_mul, pipe_tree in {0, 1}) and of the SDUE: ``fpga``
  parameters with 2 x 2 and 4 x 2 DPUs at the default pipelining, and the 4 x 2 with the
  ECP5 DSP registers (``dpu_mult = "ecp5"``, operand and adder-tree input registers), and
  the ``toy`` (8 x 3) array built for ECP5 (configs/toy_ecp5.toml: those DSP registers and
  the i_sw stage; floorplanned by ``exion pnr``'s default ``--floorplan auto``); with
  ``--full-sdue`` also the ``toy`` and ``fpga`` (8 x 4) arrays with inferred multipliers,
  whose routing (router2) does not converge within an hour on a 2-core machine.
* Synthesized resource counts of every block in ``TOPS`` for ``exion16`` on ECP5
  (``synth_ecp5``) and Xilinx 7-series (``synth_xilinx``), with the devices each fits.
  Blocks with DPU instances (the SDUE and the GEMM engine: 256 DPUs x 16 lanes) are counted
  hierarchically (``exion synth --hier``: the block with its DPUs as black boxes + 256 x
  one DPU module), labelled ``hierarchical`` in the tables (an upper bound, see
  docs/fpga.md): a flat synthesis of that array never finished on the shared 2-core
  machine. ``--flat-array`` tries it flat instead.

* ``--seeds TOP ...``: only place and route ``configs/toy_ecp5.toml``'s TOP (``gemm``: the
  toy gemm engine, CAU + fetch + SDUE; ``sdue``) on the ULX3S-85F at 100 MHz for each
  ``--seed-list`` seed: fmax, margin over 100 MHz, median, critical path; writes
  ``build/bench/fpga_seeds.json`` and ``.md`` (issue 22).

Prints tables, writes ``build/bench/fpga.json`` and ``build/bench/fpga.md``.
Run: ``.venv/bin/python bench/perf_fpga.py`` (``--skip-pnr`` leaves out place and route,
``--skip-exion16-array`` the exion16 blocks other than the DPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from exion import PRESETS
from exion.config import load_config
from exion.gen import fpga
from exion.gen.verilog import TOPS
from exion.paths import build_root

ROOT = Path(__file__).resolve().parent.parent
BOARD = "ulx3s-85f"
FREQ_MHZ = 100.0
PIPES = [(True, True), (True, False), (False, True), (False, False)]


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


ECP5_KNOBS = {"dpu_mult": "ecp5", "dpu_pipe_in": True, "dpu_pipe_tree_in": True}


def pnr_runs(out: Path, full_sdue: bool = False) -> list[dict]:
    """The fpga DPU at every pipelining setting, then SDUEs (the issue's target: the array
    with its memories at >= 100 MHz): 2 x 2 and 4 x 2 with inferred multipliers, 4 x 2 with
    MULT18X18D registers and the adder-tree input register, the toy array (8 x 3) built for
    ECP5 (configs/toy_ecp5.toml); ``full_sdue`` adds toy and fpga with inferred ones."""
    base = PRESETS["fpga"]
    toy = PRESETS["toy"]
    plan = [("dpu", base.replace(dpu_pipe_mul=pm, dpu_pipe_tree=pt)) for pm, pt in PIPES]
    plan += [("sdue", base.replace(name="fpga_2x2", rows=2, cols=2)),
             ("sdue", base.replace(name="fpga_4x2", rows=4, cols=2)),
             ("sdue", base.replace(name="fpga_4x2_ecp5", rows=4, cols=2, **ECP5_KNOBS)),
             ("sdue", load_config(ROOT / "configs" / "toy_ecp5.toml"))]
    if full_sdue:   # inferred multipliers: routing does not converge (docs/fpga.md)
        plan += [("sdue", toy), ("sdue", base)]
    rows = []
    for top, cfg in plan:
        knobs = (f"mult={cfg.dpu_mult} in={int(cfg.dpu_pipe_in)} mul={int(cfg.dpu_pipe_mul)} "
                 f"tree_in={int(cfg.dpu_pipe_tree_in)} tree={int(cfg.dpu_pipe_tree)}")
        _say(f"pnr {top} {cfg.name} {knobs} on {BOARD} ...")
        tag = (f"{int(cfg.dpu_pipe_in)}{int(cfg.dpu_pipe_mul)}{int(cfg.dpu_pipe_tree_in)}"
               f"{int(cfg.dpu_pipe_tree)}")
        r = fpga.pnr(cfg, top, BOARD, FREQ_MHZ,
                     out_dir=out / f"{top}-{cfg.name}-{cfg.dpu_mult}-pipe{tag}", progress=_say)
        u = r["utilization"]
        rows.append({
            "top": top, "config": cfg.name, "dpu_mult": cfg.dpu_mult,
            "pipe_in": cfg.dpu_pipe_in, "pipe_mul": cfg.dpu_pipe_mul,
            "pipe_tree_in": cfg.dpu_pipe_tree_in, "pipe_tree": cfg.dpu_pipe_tree,
            "dpu_latency": cfg.dpu_latency, "sdue_in_latency": cfg.sdue_in_latency,
            "floorplan_cells": r["floorplan_cells"], "board": BOARD, "target_mhz": FREQ_MHZ,
            "fmax_mhz": r["fmax_mhz"], "timing_met": r["timing_met"],
            "comb": u.get("TRELLIS_COMB", {}).get("used", 0),
            "ff": u.get("TRELLIS_FF", {}).get("used", 0),
            "mult": u.get("MULT18X18D", {}).get("used", 0),
            "bram": u.get("DP16KD", {}).get("used", 0),
            "critical_path": r["critical_paths"][0] if r["critical_paths"] else None,
            "seconds": r["seconds"], "report": r["files"]["json"]})
    return rows


def seed_runs(out: Path, tops, seeds) -> list[dict]:
    """Place and route of configs/toy_ecp5.toml's ``tops`` for every seed (issue 22)."""
    cfg = load_config(ROOT / "configs" / "toy_ecp5.toml")
    rows = []
    for top in tops:
        for seed in seeds:
            _say(f"pnr {top} {cfg.name} seed {seed} on {BOARD} ...")
            r = fpga.pnr(cfg, top, BOARD, FREQ_MHZ, out_dir=out / f"{top}-seed{seed}",
                         progress=_say, seed=seed)
            u = r["utilization"]
            cp = r["critical_paths"][0] if r["critical_paths"] else None
            rows.append({"top": top, "config": cfg.name, "seed": seed,
                         "fmax_mhz": r["fmax_mhz"], "timing_met": r["timing_met"],
                         "margin_pct": (round(100 * (r["fmax_mhz"] / FREQ_MHZ - 1), 1)
                                        if r["fmax_mhz"] else None),
                         "comb": u.get("TRELLIS_COMB", {}).get("used", 0),
                         "ff": u.get("TRELLIS_FF", {}).get("used", 0),
                         "mult": u.get("MULT18X18D", {}).get("used", 0),
                         "bram": u.get("DP16KD", {}).get("used", 0),
                         "critical_path": cp, "seconds": r["seconds"],
                         "report": r["files"]["json"]})
    return rows


def seeds_markdown(rows) -> str:
    import statistics
    lines = [f"## Place and route over seeds, {BOARD}, target {FREQ_MHZ:g} MHz", "",
             "| top | seed | fmax MHz | margin | met | LUT4 | FF | MULT18X18D | DP16KD | "
             "critical path |", "|---|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        cp = r["critical_path"] or {}
        lines.append(f"| {r['top']} | {r['seed']} | {r['fmax_mhz']} | {r['margin_pct']} % | "
                     f"{'yes' if r['timing_met'] else 'no'} | {r['comb']:,} | {r['ff']:,} | "
                     f"{r['mult']} | {r['bram']} | {cp.get('delay_ns')} ns "
                     f"({cp.get('logic_ns')} logic): {cp.get('start')} -> {cp.get('end')} |")
    for top in dict.fromkeys(r["top"] for r in rows):
        f = [r["fmax_mhz"] for r in rows if r["top"] == top and r["fmax_mhz"]]
        if f:
            lines.append(f"\n{top}: median {statistics.median(f):.1f} MHz, min {min(f):.1f}, "
                         f"max {max(f):.1f} over {len(f)} seeds")
    return "\n".join(lines) + "\n"


HIER_TOPS = ("sdue", "gemm")   # blocks with DPU instances: hierarchical unless --flat-array


def synth_runs(out: Path, skip_array: bool, flat_array: bool = False) -> list[dict]:
    cfg = PRESETS["exion16"]
    rows = []
    for top in TOPS:
        if skip_array and top != "dpu":
            continue
        hier = top in HIER_TOPS and not flat_array
        for family in ("ecp5", "xilinx"):
            _say(f"synth {top} exion16 for {family}{' (hierarchical)' if hier else ''} ...")
            t0 = time.perf_counter()
            r = fpga.synth(cfg, top, family, out_dir=out / top, progress=_say, hier=hier)
            rows.append({"top": top, "config": "exion16", "family": family,
                         "method": r["method"], **r["resources"],
                         "fits": [d for d, f in r["fits"].items() if f["fits"]],
                         "seconds": round(time.perf_counter() - t0, 1),
                         "report": r["files"]["json"]})
    return rows


def markdown(pnr_rows, synth_rows) -> str:
    lines = [f"## Place and route, {BOARD}, target {FREQ_MHZ:g} MHz", "",
             "| top | config | dpu_mult | pipe in/mul/tree_in/tree | latency | SDUE in | "
             "pinned | fmax MHz | met | LUT4 | FF | MULT18X18D | DP16KD |",
             "|---|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in pnr_rows:
        pipes = "/".join(str(int(r[k])) for k in ("pipe_in", "pipe_mul", "pipe_tree_in",
                                                  "pipe_tree"))
        lines.append(f"| {r['top']} | {r['config']} | {r['dpu_mult']} | {pipes} | "
                     f"{r['dpu_latency']} | {r['sdue_in_latency'] if r['top'] == 'sdue' else '-'} "
                     f"| {r['floorplan_cells']} | {r['fmax_mhz']} | "
                     f"{'yes' if r['timing_met'] else 'no'} | {r['comb']:,} | {r['ff']:,} | "
                     f"{r['mult']} | {r['bram']} |")
    lines += ["", "## Synthesis, exion16", "",
              "| top | family | method | LUTs | FFs | DSP | BRAM | cells | fits |",
              "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in synth_rows:
        lines.append(f"| {r['top']} | {r['family']} | {r['method']} | {r['luts']:,} | "
                     f"{r['ffs']:,} | "
                     f"{r['dsp']:,} | {r['bram']:,} | {r['cells']:,} | "
                     f"{', '.join(r['fits']) or 'none listed'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(build_root() / "bench"), help="output folder")
    ap.add_argument("--skip-pnr", action="store_true", help="synthesis counts only")
    ap.add_argument("--skip-exion16-array", action="store_true",
                    help="synthesize only the exion16 DPU (the SDUE takes long)")
    ap.add_argument("--full-sdue", action="store_true",
                    help="also place and route the toy and fpga SDUE arrays with inferred "
                         "multipliers (hours: their routing does not converge)")
    ap.add_argument("--flat-array", action="store_true",
                    help="synthesize exion16's SDUE flat instead of hierarchically (hours)")
    ap.add_argument("--seeds", nargs="+", default=None, metavar="TOP",
                    help="only: place and route configs/toy_ecp5.toml's TOP (gemm, sdue) for "
                         "each --seed-list seed")
    ap.add_argument("--seed-list", nargs="+", type=int, default=[1, 2, 3], metavar="N",
                    help="nextpnr seeds for --seeds (default: 1 2 3)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    work = out / "fpga"
    if args.seeds:
        rows = seed_runs(work / "seeds", args.seeds, args.seed_list)
        md = seeds_markdown(rows)
        print(md)
        out.mkdir(parents=True, exist_ok=True)
        (out / "fpga_seeds.json").write_text(json.dumps(rows, indent=2) + "\n")
        (out / "fpga_seeds.md").write_text(md)
        print(f"wrote {out / 'fpga_seeds.json'} and {out / 'fpga_seeds.md'}")
        return 0
    pnr_rows = [] if args.skip_pnr else pnr_runs(work / "pnr", args.full_sdue)
    synth_rows = synth_runs(work / "synth-exion16", args.skip_exion16_array, args.flat_array)
    md = markdown(pnr_rows, synth_rows)
    print(md)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fpga.json").write_text(json.dumps({"pnr": pnr_rows, "synth": synth_rows},
                                              indent=2) + "\n")
    (out / "fpga.md").write_text(md)
    print(f"wrote {out / 'fpga.json'} and {out / 'fpga.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
