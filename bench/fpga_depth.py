"""Static timing *estimate* of an ECP5 netlist in seconds, not a place-and-route in minutes.

``exion pnr`` reports one critical path per run (8-10 minutes for the toy engine), so closing
timing path by path is slow. This script reads the netlist Yosys wrote for the same build
(``exion pnr --out DIR`` keeps it: ``DIR/pnr-<board>-<MHz>MHz/exion_board.json``; ``exion synth
--family ecp5 --netlist --out DIR`` writes the block's own, ``DIR/synth-ecp5/netlist.json``, in
about a minute for the toy engine; any ``synth_ecp5`` JSON works) and estimates every register-to-register path at once:

* arrival at a cell output = the latest input arrival + routing + the cell's delay;
* starts: flip-flop outputs (clock-to-q ``FF_CQ``), block-RAM outputs (``EBR_CQ``: a DP16KD
  without its output register), registered multiplier outputs;
* cells: LUT4 / PFUMX / L6MUX21 (``LUT``, ``MUX``), carry chains (``CCU2C``: ``CARRY`` per
  cell along the chain, ``CARRY_S`` into a sum), LUT-RAM reads (``LUTRAM``), multipliers
  without output registers (``MULT``);
* routing: ``HOP`` per net, none along a carry chain;
* ends: flip-flop data / enable / set-reset inputs, block-RAM and LUT-RAM write inputs,
  registered multiplier inputs.

The constants are rough ECP5 speed-6 figures read off nextpnr timing reports; routing is the
weak part (a net across the die costs 3-8 ns, not ``HOP``). On the toy gemm engine the
estimate ranked the routed critical path among its worst and put it at 16.7 ns where nextpnr
routed 19.5 ns: use it to find and rank deep logic, then confirm with ``exion pnr``.

    .venv/bin/python bench/fpga_depth.py NETLIST.json [--period 10] [--depth 2]
        [--strip shim.block.] [--top 20] [--json OUT.json]

Prints the endpoints over ``--period`` grouped by the hierarchy of the endpoint cell
(``--depth`` levels after ``--strip``): count, worst estimate, LUT levels of the worst path
and its start; then the worst distinct paths. Writes the same as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from pathlib import Path

FF_CQ, EBR_CQ, MULT_CQ = 0.4, 5.8, 3.0
LUT, MUX, CARRY, CARRY_S, LUTRAM, MULT = 0.24, 0.26, 0.06, 0.3, 1.0, 4.0
HOP, SETUP = 0.75, 0.2

_COMB = {  # cell type -> {output pin: (delay, input pins)}
    "LUT4": {"Z": (LUT, ("A", "B", "C", "D"))},
    "PFUMX": {"Z": (MUX, ("ALUT", "BLUT", "C0"))},
    "L6MUX21": {"Z": (MUX, ("D0", "D1", "SD"))},
    "CCU2C": {"COUT": (CARRY, ("CIN", "A0", "B0", "C0", "D0", "A1", "B1", "C1", "D1")),
              "S0": (CARRY_S, ("CIN", "A0", "B0", "C0", "D0")),
              "S1": (CARRY_S, ("CIN", "A0", "B0", "C0", "D0", "A1", "B1", "C1", "D1"))},
    "TRELLIS_DPR16X4": {"DO": (LUTRAM, ("RAD",))},
}
_ENDS = {"TRELLIS_FF": ("DI", "CE", "LSR", "M"), "TRELLIS_DPR16X4": ("WAD", "DI", "WRE")}


def _registered(param) -> bool:
    return "NONE" not in str(param or "NONE")


class Netlist:
    """Arrival times over a flattened Yosys JSON module (the top, or the largest)."""

    def __init__(self, doc: dict):
        mods = doc["modules"]
        top = [n for n, m in mods.items() if m.get("attributes", {}).get("top")]
        self.mod = mods[top[0] if top else max(mods, key=lambda n: len(mods[n].get("cells", {})))]
        self.cells = self.mod.get("cells", {})
        self.drv: dict = {}
        for cn, c in self.cells.items():
            for p, d in c.get("port_directions", {}).items():
                if d == "output":
                    for b in c["connections"].get(p, []):
                        if isinstance(b, int):
                            self.drv[b] = (cn, p)
        self.name: dict = {}
        for n, v in self.mod.get("netnames", {}).items():
            for b in v["bits"]:
                if isinstance(b, int) and (b not in self.name or self.name[b].startswith("$")):
                    self.name[b] = n
        self.arr: dict = {}
        self.pred: dict = {}

    def _start(self, c) -> float | None:
        t = c["type"]
        if t == "TRELLIS_FF":
            return FF_CQ
        if t == "DP16KD":
            return EBR_CQ
        if t == "MULT18X18D" and _registered(c.get("parameters", {}).get("REG_OUTPUT_CLK")):
            return MULT_CQ
        return None

    def _through(self, c, pin):
        """(delay, input pins) of a combinational cell output; None for a start."""
        if self._start(c) is not None:
            return None
        if c["type"] == "MULT18X18D":      # without output registers
            return MULT, ("A", "B")
        return _COMB.get(c["type"], {}).get(pin)

    def arrival(self, bit) -> float:
        """Arrival (ns after the clock edge) at a net bit; iterative, so deep logic cannot
        overflow Python's stack."""
        if not isinstance(bit, int) or bit not in self.drv:
            return 0.0
        stack = [bit]
        while stack:
            b = stack[-1]
            if b in self.arr:
                stack.pop()
                continue
            cn, pin = self.drv[b]
            c = self.cells[cn]
            through = self._through(c, pin)
            if through is None:            # a path start (or a cell the model ignores)
                self.arr[b], self.pred[b] = self._start(c) or 0.0, None
                stack.pop()
                continue
            delay, ins = through
            inputs = [(ip, ib) for ip in ins for ib in c["connections"].get(ip, [])
                      if isinstance(ib, int) and ib in self.drv]
            todo = [ib for _ip, ib in inputs if ib not in self.arr]
            if todo:
                for ib in todo:
                    if ib in stack:        # a combinational loop: cut it
                        self.arr[ib], self.pred[ib] = 0.0, None
                    else:
                        stack.append(ib)
                continue
            best, bp = 0.0, None
            for ip, ib in inputs:
                a = self.arr[ib] + (0.0 if ip == "CIN" else HOP)
                if a > best:
                    best, bp = a, ib
            self.arr[b], self.pred[b] = best + delay, bp
            stack.pop()
        return self.arr[bit]

    def path(self, bit) -> list[str]:
        out = []
        while isinstance(bit, int):
            out.append(self.name.get(bit, str(bit)))
            bit = self.pred.get(bit)
        return out[::-1]

    def endpoints(self):
        """(estimate ns, cell, pin, bit) of every endpoint bit."""
        for cn, c in self.cells.items():
            t, prm = c["type"], c.get("parameters", {})
            if t in _ENDS:
                pins = _ENDS[t]
            elif t == "DP16KD":
                pins = tuple(p for p in c["connections"]
                             if p.startswith(("AD", "DI", "CE", "WE", "CS")))
            elif t == "MULT18X18D" and _registered(prm.get("REG_INPUTA_CLK")):
                pins = ("A", "B")
            else:
                continue
            for p in pins:
                for b in c["connections"].get(p, []):
                    if isinstance(b, int) and b in self.drv:
                        yield self.arrival(b) + HOP + SETUP, cn, p, b


def _unit(cell: str, depth: int) -> str:
    """Group of an endpoint cell: its module path (up to ``depth`` levels), or for a signal
    of the top module its name without indices (``cg_addr_TRELLIS_FF_Q_4`` -> ``cg_addr``)."""
    parts = cell.split(".")
    mods = [p for p in parts[:-1] if not p.isdigit()][:depth]
    if mods:
        return ".".join(mods)
    sig = re.sub(r"_TRELLIS.*|\$.*|_(LUT|CCU2|PFUMX|L6MUX).*", "", parts[-1])
    return re.sub(r"(_+\d+)+$", "", sig) or parts[-1]


def analyse(doc: dict, period: float, depth: int = 2, strip: str = "", top: int = 20) -> dict:
    nl = Netlist(doc)
    ends = sorted(nl.endpoints(), key=lambda e: -e[0])
    groups: dict = collections.OrderedDict()
    worst = []
    seen = set()
    for a, cn, p, b in ends:
        if a <= period:
            break
        name = cn[len(strip):] if strip and cn.startswith(strip) else cn
        key = _unit(name, depth)
        pth = nl.path(b)
        g = groups.setdefault(key, {"unit": key, "endpoints": 0, "worst_ns": round(a, 2),
                                    "levels": len(pth), "from": pth[0] if pth else ""})
        g["endpoints"] += 1
        sig = (re.sub(r"\d+", "#", pth[0] if pth else ""), re.sub(r"\d+", "#", key))
        if len(worst) < top and sig not in seen:
            seen.add(sig)
            worst.append({"ns": round(a, 2), "to": f"{cn}.{p}", "levels": len(pth),
                          "path": pth})
    return {"period_ns": period, "endpoints": len(ends),
            "over": sum(1 for e in ends if e[0] > period),
            "worst_ns": round(ends[0][0], 2) if ends else 0.0,
            "groups": list(groups.values()), "worst": worst}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("netlist", help="Yosys JSON netlist after synth_ecp5")
    ap.add_argument("--period", type=float, default=10.0, help="target period in ns (10)")
    ap.add_argument("--depth", type=int, default=2, help="hierarchy levels to group by (2)")
    ap.add_argument("--strip", default="shim.block.",
                    help="cell-name prefix to drop (the board wrapper's, default)")
    ap.add_argument("--top", type=int, default=20, help="distinct worst paths to list (20)")
    ap.add_argument("--json", default=None, help="also write the result as JSON")
    a = ap.parse_args(argv)
    p = Path(a.netlist)
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        print(f"fpga_depth: cannot read netlist {str(p)!r}: {e}", file=sys.stderr)
        return 2
    if "modules" not in doc:
        print(f"fpga_depth: {str(p)!r} is not a Yosys JSON netlist (no 'modules')",
              file=sys.stderr)
        return 2
    r = analyse(doc, a.period, a.depth, a.strip, a.top)
    print(f"{r['endpoints']} endpoints, {r['over']} estimated over {a.period:g} ns, worst "
          f"{r['worst_ns']} ns (an estimate: confirm with exion pnr)")
    print("| unit (endpoint) | endpoints over | worst (ns) | LUT levels | from |")
    print("|---|---:|---:|---:|---|")
    for g in r["groups"]:
        print(f"| {g['unit']} | {g['endpoints']} | {g['worst_ns']} | {g['levels']} | "
              f"{g['from'][len(a.strip):] if g['from'].startswith(a.strip) else g['from']} |")
    for w in r["worst"]:
        pth = w["path"]
        short = pth if len(pth) <= 5 else pth[:2] + ["..."] + pth[-2:]
        print(f"{w['ns']:6.2f} ns  {w['levels']:2d} levels  {' -> '.join(short)}  => {w['to']}")
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
