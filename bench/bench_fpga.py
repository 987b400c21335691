"""FPGA bench: place-and-route fmax and synthesized resources, measured by the flow itself.

* Place and route on ULX3S-85F (LFE5U-85F) at 100 MHz of the ``fpga``-preset DPU and of the
  largest block in ``TOPS`` (by generated Verilog size; the SDUE once it exists), each at
  every DPU pipelining setting (pipe_mul, pipe_tree in {0, 1}; the largest block at the
  default 1/1 and at 0/0 only, as it takes minutes).
* Synthesized resource counts of every block in ``TOPS`` for ``exion16`` on ECP5
  (``synth_ecp5``) and Xilinx 7-series (``synth_xilinx``), with the devices each fits.

Prints tables, writes ``build/bench/fpga.json`` and ``build/bench/fpga.md``.
Run: ``.venv/bin/python bench/bench_fpga.py`` (tens of minutes for exion16's SDUE on 2 cores;
``--skip-exion16-array`` leaves out the exion16 blocks other than the DPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from exion import PRESETS
from exion.gen import fpga
from exion.gen.verilog import TOPS, generate
from exion.sim.runner import build_root

BOARD = "ulx3s-85f"
FREQ_MHZ = 100.0
PIPES = [(True, True), (True, False), (False, True), (False, False)]


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def largest_top(cfg) -> str:
    """The top of TOPS whose generated Verilog for ``cfg`` is the largest."""
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for top in TOPS:
            sizes[top] = generate(cfg, top, Path(tmp) / top).verilog.stat().st_size
    return max(sizes, key=sizes.get)


def pnr_runs(out: Path) -> list[dict]:
    base = PRESETS["fpga"]
    big = largest_top(base)
    plan = [("dpu", p) for p in PIPES]
    if big != "dpu":
        plan += [(big, (True, True)), (big, (False, False))]
    rows = []
    for top, (pm, pt) in plan:
        cfg = base.replace(dpu_pipe_mul=pm, dpu_pipe_tree=pt)
        _say(f"pnr {top} fpga pipe_mul={int(pm)} pipe_tree={int(pt)} on {BOARD} ...")
        r = fpga.pnr(cfg, top, BOARD, FREQ_MHZ, out_dir=out / f"{top}-pipe{int(pm)}{int(pt)}",
                     progress=_say)
        u = r["utilization"]
        rows.append({
            "top": top, "config": "fpga", "pipe_mul": pm, "pipe_tree": pt,
            "dpu_latency": cfg.dpu_latency, "board": BOARD, "target_mhz": FREQ_MHZ,
            "fmax_mhz": r["fmax_mhz"], "timing_met": r["timing_met"],
            "comb": u.get("TRELLIS_COMB", {}).get("used", 0),
            "ff": u.get("TRELLIS_FF", {}).get("used", 0),
            "mult": u.get("MULT18X18D", {}).get("used", 0),
            "bram": u.get("DP16KD", {}).get("used", 0),
            "critical_path": r["critical_paths"][0] if r["critical_paths"] else None,
            "seconds": r["seconds"], "report": r["files"]["json"]})
    return rows


def synth_runs(out: Path, skip_array: bool) -> list[dict]:
    cfg = PRESETS["exion16"]
    rows = []
    for top in TOPS:
        if skip_array and top != "dpu":
            continue
        for family in ("ecp5", "xilinx"):
            _say(f"synth {top} exion16 for {family} ...")
            t0 = time.perf_counter()
            r = fpga.synth(cfg, top, family, out_dir=out / top, progress=_say)
            rows.append({"top": top, "config": "exion16", "family": family,
                         **r["resources"],
                         "fits": [d for d, f in r["fits"].items() if f["fits"]],
                         "seconds": round(time.perf_counter() - t0, 1),
                         "report": r["files"]["json"]})
    return rows


def markdown(pnr_rows, synth_rows) -> str:
    lines = [f"## Place and route, {BOARD}, target {FREQ_MHZ:g} MHz", "",
             "| top | config | pipe_mul | pipe_tree | latency | fmax MHz | met | LUT4 | FF "
             "| MULT18X18D | DP16KD |", "|---|---|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in pnr_rows:
        lines.append(f"| {r['top']} | {r['config']} | {int(r['pipe_mul'])} | "
                     f"{int(r['pipe_tree'])} | {r['dpu_latency']} | {r['fmax_mhz']} | "
                     f"{'yes' if r['timing_met'] else 'no'} | {r['comb']:,} | {r['ff']:,} | "
                     f"{r['mult']} | {r['bram']} |")
    lines += ["", "## Synthesis, exion16", "",
              "| top | family | LUTs | FFs | DSP | BRAM | cells | fits |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in synth_rows:
        lines.append(f"| {r['top']} | {r['family']} | {r['luts']:,} | {r['ffs']:,} | "
                     f"{r['dsp']:,} | {r['bram']:,} | {r['cells']:,} | "
                     f"{', '.join(r['fits']) or 'none listed'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(build_root() / "bench"), help="output folder")
    ap.add_argument("--skip-pnr", action="store_true", help="synthesis counts only")
    ap.add_argument("--skip-exion16-array", action="store_true",
                    help="synthesize only the exion16 DPU (the SDUE takes long)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    work = out / "fpga"
    pnr_rows = [] if args.skip_pnr else pnr_runs(work / "pnr")
    synth_rows = synth_runs(work / "synth-exion16", args.skip_exion16_array)
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
