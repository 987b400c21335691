"""Floorplan of the SDUE on an ECP5 (``exion pnr --floorplan``): DSP groups per DPU and block
RAMs beside the rows and columns they feed, as nextpnr BEL constraints set by Yosys."""

from __future__ import annotations

from exion.config import Config
from exion.errors import ExionError

from .devices import _mem_blocks_ecp5

__all__ = ["SDUE_PATHS", "FLOORPLANS", "ECP5_GRID", "FLOORPLAN_AUTO_SHARE", "floorplan", "floorplan_script"]


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
#: Tops that hold an SDUE, and the SDUE's instance path in them (cell names get this prefix).
SDUE_PATHS = {"sdue": "", "gemm": "sdue."}


def floorplan(cfg: Config, top: str, device: str, mode: str = "auto") -> dict[str, str]:
    """Placement constraints for an SDUE: ``{cell path in the block: nextpnr BEL}``.

    ``top``: the SDUE itself or a top that holds one (``SDUE_PATHS``: the gemm engine's
    ``sdue``); the cells of the rest of the top are placed by nextpnr.

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
    if mode == "none" or top not in SDUE_PATHS or cfg.dpu_mult != "ecp5" or grid is None \
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
    D = cfg.omem_drain                # OMEM sub-banks per row (omem{r}_{s} when D > 1)
    for r in range(R):
        for s in range(D):
            place(f"omem{r}" if D == 1 else f"omem{r}_{s}", cfg.omem_depth // D,
                  cfg.acc_width, where[(r, 0)][0], ebr_rows[-1])
    for c in range(C):
        xs = sorted(where[(r, c)][0] for r in range(R))
        y = min(ebr_rows, key=lambda e: (abs(e - where[(0, c)][1]), -e))
        for k in range(cfg.merge_ways):
            place(f"wmem{c}_{k}", 2 * cfg.wmem_words, word, xs[len(xs) // 2], y)
    return {SDUE_PATHS[top] + cell: bel for cell, bel in plan.items()}


def floorplan_script(plan: dict[str, str], top: str, prefix: str) -> str:
    """Yosys commands that set each planned cell's ``BEL`` attribute (nextpnr places the
    cell there). A name that synthesis did not produce only draws a Yosys warning."""
    return "\n".join(f'setattr -set BEL "{bel}" {top}/{prefix}{cell}'
                      for cell, bel in sorted(plan.items()))
