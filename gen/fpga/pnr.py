"""Place and route of a block in the board wrapper (amaranth-boards platform build with the
YoWASP tools): PLL settings, the fit pre-check, the floorplan, fmax, utilization and the
critical path, ``pnr.json`` and ``pnr.md``."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from exion.config import Config
from exion.errors import ExionError
from exion.paths import write_json

from .devices import BOARDS, DEVICES, READ_FIXUP, Board, check_fit, estimate
from .floorplan import FLOORPLANS, floorplan, floorplan_script
from .synth import pipelining, synth
from .tools import Progress, _out_dir, _run, _say, _tool, _tool_env

__all__ = ["ROUTERS", "PLACERS", "RIPUPS", "pnr", "pnr_markdown", "ecp5_pll"]


# -- place and route -----------------------------------------------------------------------
# nextpnr routers: router2 (default) converges on the SDUE where router1 stalls on congestion
# with thousands of overused wires after minutes (its rip-up loop is slow on high-fan-out nets).
ROUTERS = ("router2", "router1")
# nextpnr placers: heap (analytic, nextpnr's default) and static (electrostatic); auto is
# static for the tops that hold the gemm engine and heap for the others. On one netlist of
# the toy gemm engine (configs/toy_ecp5.toml) static placed it at 92.1 MHz where heap gave
# 70.2 (docs/fpga.md); the SDUE and the blocks were measured with heap.
PLACERS = ("auto", "heap", "static")
#: Tops that hold the gemm engine (``auto`` places them with the static placer).
ENGINE_TOPS = ("gemm", "dsc_core", "dsc")


# router2's timing-driven rip-up (nextpnr's ``--tmg-ripup``): auto is on for the tops that hold
# the gemm engine and off for the others. On the toy engine's netlist of 2026-12-06 it routed
# seeds 1-4 at 101.1 / 99.5 / 102.3 / 100.9 MHz where the same placements gave 96.6 / 95.0 /
# 94.9 / 85.3 without (docs/fpga.md); the SDUE and the blocks were measured without it.
RIPUPS = ("auto", "on", "off")


def resolve_ripup(ripup: str, top: str) -> bool:
    """Whether router2 runs nextpnr's timing-driven rip-up for ``top`` (``auto``: on for the
    engine's tops, off otherwise)."""
    if ripup == "auto":
        return top in ENGINE_TOPS
    return ripup == "on"


#: nextpnr's timing constraint above the PLL's clock, in percent, for ``margin="auto"``: the
#: engine's tops are placed and routed for 5 % more than they run at (router2's rip-up works
#: on the paths that fail the constraint, so a tighter one leaves slack at the real clock;
#: docs/fpga.md), the other tops at the clock itself. The reported fmax is the routed
#: design's, checked against the PLL's clock, not against the constraint.
AUTO_MARGIN_PCT = 5.0
MAX_MARGIN_PCT = 50.0


def resolve_margin(margin: float | str, top: str) -> float:
    """The constraint margin over the clock, in percent, for ``top`` (``"auto"``:
    :data:`AUTO_MARGIN_PCT` for the engine's tops, 0 otherwise)."""
    if margin == "auto":
        return AUTO_MARGIN_PCT if top in ENGINE_TOPS else 0.0
    return float(margin)


def resolve_placer(placer: str, top: str) -> str:
    """The nextpnr placer ``placer`` names for ``top`` (``auto``: static for the engine's
    tops, heap otherwise)."""
    if placer == "auto":
        return "static" if top in ENGINE_TOPS else "heap"
    return placer


_PLL_PARAM = re.compile(r"\.(\w+)\((\"?)([^\")]*)\2\)")
_PLL_ATTR = re.compile(r"\(\*\s*(\w+)=\"([^\"]*)\"\s*\*\)")
_PLL_FREQ = re.compile(r"clkout0 frequency:\s*([0-9.]+)\s*MHz")


def ecp5_pll(f_in_mhz: float, f_out_mhz: float, work_dir: Path) -> dict:
    """EHXPLLL settings from ``yowasp-ecppll`` (the Trellis PLL calculator).

    Returns ``{"params": {...}, "attrs": {...}, "f_out_mhz": achieved}``.
    """
    vfile = work_dir / "pll_ecppll.v"
    text = _run([_tool("yowasp-ecppll"), "-i", f"{f_in_mhz:g}", "-o", f"{f_out_mhz:g}",
                 "-f", vfile.name], work_dir, work_dir / "ecppll.log",
                f"ecppll for {f_in_mhz:g} -> {f_out_mhz:g} MHz")
    src = vfile.read_text()
    m = _PLL_FREQ.search(text)
    if m is None:
        raise ExionError(f"ecppll gave no output frequency for {f_out_mhz:g} MHz "
                         f"(log: {work_dir / 'ecppll.log'})")
    body = src[src.index("EHXPLLL #("):src.index(") pll_i")]
    params = {}
    for name, quote, value in _PLL_PARAM.findall(body):
        params[name] = value if quote else int(value)
    attrs = dict(_PLL_ATTR.findall(src[:src.index("EHXPLLL #(")]))
    return {"params": params, "attrs": attrs, "f_out_mhz": float(m.group(1))}


def _board_platform(board: Board):
    import importlib
    mod = importlib.import_module(f"amaranth_boards.{board.module}")
    return getattr(mod, board.platform)()


def _critical_path_text(log: str) -> list[str]:
    """The first 'Critical path report' block of nextpnr's log (the sync clock)."""
    lines = log.splitlines()
    out, on = [], False
    for ln in lines:
        body = re.sub(r"^Info:\s?", "", ln)
        if "Critical path report for clock" in body:
            if out:
                break
            on = True
        if on:
            if not body.strip() or body.startswith("Max frequency") or \
                    body.startswith("Critical path report for cross"):
                if len(out) > 1:
                    break
                continue
            out.append(body.rstrip())
    return out


def _constrained_cells(log: str, netlist: Path) -> int | None:
    """Cells nextpnr placed from BEL constraints (the floorplan, the PLL, the pins). The heap
    placer logs their count; the electrostatic placer does not, so it is counted: the cells
    of the synthesized netlist with a ``BEL`` attribute (the floorplan; nextpnr stops if one
    cannot be placed there), the pins nextpnr constrained and the PLL it placed."""
    m = re.search(r"Placed (\d+) cells based on constraints", log)
    if m:
        return int(m.group(1))
    if not netlist.exists():
        return None
    design = json.loads(netlist.read_text())
    bel = sum("BEL" in c.get("attributes", {}) for mod in design.get("modules", {}).values()
              for c in mod.get("cells", {}).values())
    return bel + len(re.findall(r"^Info: pin '.*' constrained to Bel", log, re.M)) + \
        len(re.findall(r"^Info: placed PLL '.*' at bel", log, re.M))


def _parse_report(rep: dict, log: str) -> dict:
    fmax = {}
    for net, v in rep.get("fmax", {}).items():
        fmax[net] = {"achieved_mhz": round(v.get("achieved", 0.0), 2),
                     "constraint_mhz": round(v.get("constraint", 0.0), 2)}
    util = {k: {"used": v.get("used", 0), "available": v.get("available", 0)}
            for k, v in rep.get("utilization", {}).items() if v.get("used", 0)}
    paths = []
    for cp in rep.get("critical_paths", []):
        steps = cp.get("path", [])
        delay = sum(s.get("delay", 0.0) for s in steps)
        logic = sum(s.get("delay", 0.0) for s in steps if s.get("type") != "routing")
        first = steps[0].get("from", {}) if steps else {}
        last = steps[-1].get("to", {}) if steps else {}
        paths.append({"from_clock": cp.get("from"), "to_clock": cp.get("to"),
                      "delay_ns": round(delay, 3), "logic_ns": round(logic, 3),
                      "routing_ns": round(delay - logic, 3), "steps": len(steps),
                      "start": f"{first.get('cell', '?')}.{first.get('port', '?')}",
                      "end": f"{last.get('cell', '?')}.{last.get('port', '?')}"})
    # Clock-to-clock paths first (the pin paths to/from <async> are the shim's, untimed).
    paths.sort(key=lambda p: "<async>" in f"{p['from_clock']}{p['to_clock']}")
    return {"fmax": fmax, "utilization": util, "critical_paths": paths,
            "critical_path_log": _critical_path_text(log)}


def pnr(cfg: Config, top: str, board: str = "ulx3s-85f", freq_mhz: float = 100.0,
        out_dir=None, progress: Progress = None, seed: int = 1, precheck: bool = True,
        router: str = "router2", placer: str = "auto", floorplan_mode: str = "auto",
        timing_weight: int | None = None, ripup: str = "auto",
        margin: float | str = "auto") -> dict:
    """Place and route ``top`` in the board wrapper; write and return the timing report.

    Before building: the config estimate and then a synthesis of the block alone are checked
    against the board's device (ExionError naming the overflowing resource). Files in
    ``<out>/pnr-<board>-<freq>MHz/``: the amaranth build (``exion_board.*``: Verilog, LPF,
    nextpnr log ``.tim``, ``report.json``, bitstream ``.bit``), ``pnr.json``, ``pnr.md``.
    ``timing_weight``: the heap placer's timing weight (nextpnr's
    ``--placer-heap-timingweight``; ``None``: nextpnr's default, 10). ``ripup``: router2's
    timing-driven rip-up (``--tmg-ripup``), one of :data:`RIPUPS`. ``margin``: nextpnr's
    clock constraint this many percent above the PLL's clock (``"auto"``:
    :func:`resolve_margin`); fmax is still checked against the PLL's clock.
    """
    from exion.gen.verilog import TOPS
    if top not in TOPS:
        raise ExionError(f"unknown top {top!r}; available: {', '.join(TOPS)}")
    if board not in BOARDS:
        raise ExionError(f"unknown board {board!r}; available: {', '.join(BOARDS)}")
    if router not in ROUTERS:
        raise ExionError(f"unknown router {router!r}; available: {', '.join(ROUTERS)}")
    if placer not in PLACERS:
        raise ExionError(f"unknown placer {placer!r}; available: {', '.join(PLACERS)}")
    if ripup not in RIPUPS:
        raise ExionError(f"unknown ripup {ripup!r}; available: {', '.join(RIPUPS)}")
    if floorplan_mode not in FLOORPLANS:
        raise ExionError(f"unknown floorplan {floorplan_mode!r}; available: "
                         f"{', '.join(FLOORPLANS)}")
    if margin != "auto" and not (isinstance(margin, (int, float))
                                 and 0.0 <= margin <= MAX_MARGIN_PCT):
        raise ExionError(f"--margin {margin}: the constraint margin is 0..{MAX_MARGIN_PCT:g} "
                         f"percent above the clock, or auto")
    placer = resolve_placer(placer, top)
    margin_pct = resolve_margin(margin, top)
    tmg_ripup = resolve_ripup(ripup, top)
    if timing_weight is not None and (placer != "heap" or not 1 <= timing_weight <= 1000):
        raise ExionError(f"--timing-weight {timing_weight}: the heap placer's timing weight "
                         f"is 1..1000 and needs --placer heap (got --placer {placer})")
    if not (1.0 <= freq_mhz <= 500.0):
        raise ExionError(f"--freq {freq_mhz:g} MHz is out of range: use 1..500 MHz")
    b = BOARDS[board]
    dev = DEVICES[b.device]
    what = f"config {cfg.name!r} top {top!r}"
    est = estimate(cfg, top, dev)
    if precheck and est is not None:
        # Multipliers are certain (one block each); memories may go to LUT RAM, so block
        # RAM is checked after synthesis only.
        check_fit({"dsp": est["dsp"]}, dev, f"{what} (estimate from the config)")
    syn = None
    if precheck:
        syn = synth(cfg, top, dev.family, out_dir=out_dir, progress=progress)
        check_fit(syn["resources"], dev, f"{what} (after synthesis)")
    out = _out_dir(cfg, top, f"pnr-{board}-{freq_mhz:g}MHz", out_dir)

    from exion.hw.board import BoardTop
    platform = _board_platform(b)
    clk_res = platform.lookup(platform.default_clk)
    f_in = clk_res.clock.frequency / 1e6
    _say(progress, f"PLL {f_in:g} MHz -> {freq_mhz:g} MHz (ecppll) ...")
    pll = ecp5_pll(f_in, freq_mhz, out)
    plan = floorplan(cfg, top, b.device, floorplan_mode)
    if plan:
        _say(progress, f"floorplan: {sum('.mult' in k for k in plan)} MULT18X18D and "
                       f"{sum('.mult' not in k for k in plan)} DP16KD cells pinned, spread over "
                       f"the {b.device} ...")
    block = TOPS[top][0](cfg)
    wrapper = BoardTop(block, pll=pll, freq_hz=pll["f_out_mhz"] * 1e6,
                       constraint_hz=pll["f_out_mhz"] * 1e6 * (1 + margin_pct / 100), led=b.led,
                       entropy=b.entropy)
    name = "exion_board"
    nextpnr_opts = f"--report report.json --detailed-timing-report --timing-allow-fail " \
                   f"--seed {seed} --placer {placer} --router {router}" + (
                       " --tmg-ripup" if tmg_ripup else "") + (
                       f" --placer-heap-timingweight {timing_weight}" if timing_weight else "")
    _say(progress, f"preparing {board} build of {top} ({wrapper.shim.in_bits} input bits from "
                   f"the LFSR, {wrapper.shim.out_bits} output bits XOR-reduced to the LED) ...")
    build = platform.prepare(wrapper, name=name, nextpnr_opts=nextpnr_opts,
                             script_after_read=READ_FIXUP,
                             script_after_synth=floorplan_script(plan, name, "shim.block."))
    build.extract(str(out))
    _say(progress, f"yosys + nextpnr-ecp5 + ecppack for {dev.name} at {freq_mhz:g} MHz "
                   f"(minutes for large blocks; log: {out / (name + '.tim')}) ...")
    t0 = time.perf_counter()
    _run(["sh", f"{build.script}.sh"], out, out / "build.log",
         f"place-and-route of {top} on {board}", env=_tool_env())
    seconds = time.perf_counter() - t0
    log = (out / f"{name}.tim").read_text()
    rep = json.loads((out / "report.json").read_text())
    parsed = _parse_report(rep, log)
    sync = [v for k, v in parsed["fmax"].items() if "pll" in k.lower() or "clk" in k.lower()]
    fmax_mhz = min((v["achieved_mhz"] for v in (sync or parsed["fmax"].values())),
                   default=None)
    report = {
        "kind": "pnr",
        "top": top,
        "config": cfg.name,
        "config_hash": cfg.hash,
        "dpu_mult": cfg.dpu_mult,
        "dpu_pipe_in": cfg.dpu_pipe_in,
        "dpu_pipe_mul": cfg.dpu_pipe_mul,
        "dpu_pipe_tree_in": cfg.dpu_pipe_tree_in,
        "dpu_pipe_tree": cfg.dpu_pipe_tree,
        "sdue_pipe": cfg.sdue_pipe,
        "dpu_latency": cfg.dpu_latency,
        "board": board,
        "device": dev.name,
        "target_mhz": freq_mhz,
        "pll_mhz": pll["f_out_mhz"],
        "margin_pct": margin_pct,
        "fmax_mhz": fmax_mhz,
        "timing_met": fmax_mhz is not None and fmax_mhz >= pll["f_out_mhz"],
        "seed": seed,
        "router": router,
        "placer": placer,
        "timing_weight": timing_weight,
        "tmg_ripup": tmg_ripup,
        "floorplan": floorplan_mode if plan else "none",
        "floorplan_cells": len(plan),
        "constrained_cells": _constrained_cells(log, out / f"{name}.json"),
        "shim": {"input_bits": wrapper.shim.in_bits, "output_bits": wrapper.shim.out_bits},
        **parsed,
        "block_synthesis": syn["resources"] if syn else None,
        "seconds": round(seconds, 1),
        "files": {"dir": str(out), "log": str(out / f"{name}.tim"),
                  "report": str(out / "report.json"), "bitstream": str(out / f"{name}.bit")},
    }
    write_json(out / "pnr.json", report)
    (out / "pnr.md").write_text(pnr_markdown(report, cfg))
    report["files"].update(json=str(out / "pnr.json"), markdown=str(out / "pnr.md"))
    return report


def pnr_markdown(r: dict, cfg: Config) -> str:
    met = "met" if r["timing_met"] else "NOT met"
    lines = [
        f"# Place and route: `{r['top']}`, config `{cfg.name}`, board {r['board']} "
        f"({r['device']})",
        "",
        f"Pipelining: {pipelining(cfg)}. Target {r['target_mhz']:g} MHz, PLL "
        f"{r['pll_mhz']:g} MHz, nextpnr seed {r['seed']}, {r.get('placer', 'heap')} placer"
        f"{' (timing weight %d)' % r['timing_weight'] if r.get('timing_weight') else ''}, "
        f"{r.get('router', 'router1')}"
        f"{' with timing-driven rip-up' if r.get('tmg_ripup') else ''}"
        f"{', constraint %g %% above the clock' % r['margin_pct'] if r.get('margin_pct') else ''}"
        f", floorplan: {r.get('floorplan', 'none')} "
        f"({r.get('floorplan_cells', 0)} cells pinned).",
        "",
        f"**fmax {r['fmax_mhz']} MHz: timing {met}.**",
        "",
        "| clock | achieved MHz | constraint MHz |",
        "|---|---:|---:|",
    ]
    for k, v in r["fmax"].items():
        lines.append(f"| `{k}` | {v['achieved_mhz']} | {v['constraint_mhz']} |")
    lines += ["", "| resource | used | available | % |", "|---|---:|---:|---:|"]
    for k, v in r["utilization"].items():
        pct = 100.0 * v["used"] / v["available"] if v["available"] else 0.0
        lines.append(f"| {k} | {v['used']:,} | {v['available']:,} | {pct:.1f} |")
    if r["critical_paths"]:
        cp = r["critical_paths"][0]
        lines += ["", f"Critical path ({cp['from_clock']} -> {cp['to_clock']}): "
                      f"{cp['delay_ns']} ns = {cp['logic_ns']} ns logic + "
                      f"{cp['routing_ns']} ns routing, {cp['steps']} steps, "
                      f"from `{cp['start']}` to `{cp['end']}`."]
    if r["critical_path_log"]:
        lines += ["", "```", *r["critical_path_log"], "```"]
    lines += ["", f"Wrapper: {r['shim']['input_bits']} block input bits driven from the "
                  f"LFSR shift register, {r['shim']['output_bits']} output bits XOR-reduced "
                  f"to one LED (hw/board.py).", ""]
    return "\n".join(lines)
