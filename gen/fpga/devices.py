"""FPGA families (how Yosys maps to them, how their cells are counted), devices, boards, and
the resource estimate and fit check that run before synthesis and place-and-route."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from exion.config import Config
from exion.errors import ExionError

__all__ = ["READ_FIXUP", "Family", "FAMILIES", "Device", "DEVICES", "Board", "BOARDS", "ESTIMATORS",
           "estimate", "check_fit", "fits"]


# -- families and devices ------------------------------------------------------------------
#: Yosys commands run right after reading the generated design, before any synthesis script.
#: Amaranth names the element views of an array-layout signal ``x[0]``, ``x[1]``, ... beside
#: ``x`` itself; ABC9's reintegration rebuilds wide wires from bit names ``x[0]`` and then
#: asserts on the duplicate (``Assert `count_id(wire->name) == 0' failed``; Yosys issue
#: #4349, still in 0.69). Giving every non-port wire a plain name avoids it: the toy gemm
#: engine's ``synth_ecp5`` died in ABC9 without it and passes with it (docs/fpga.md).
READ_FIXUP = "rename -unescape w:* x:* %d"


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
