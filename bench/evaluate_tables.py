"""Markdown tables of docs/evaluate.md section 6 from ``exion evaluate`` JSON files.

Reads ``DIR/exion4.json`` and ``DIR/exion24.json`` (the default runs), and where present
``DIR/<system>_random.json`` (``--masks random``) and ``DIR/<system>_guided.json``
(``--guidance``), and prints the results tables, the headline ranges, the mode-ordering
tables, the on-chip time by part and the column-vs-random comparison, so the document's
figures are regenerated, not retyped. No model runs here. Make the inputs with::

    for s in exion4 exion24; do
      .venv/bin/exion evaluate --system $s --model all --json build/evaluate/$s.json
      .venv/bin/exion evaluate --system $s --model all --masks random --json build/evaluate/${s}_random.json
      .venv/bin/exion evaluate --system $s --model all --guidance --json build/evaluate/${s}_guided.json
    done
    .venv/bin/python bench/evaluate_tables.py [--dir build/evaluate] [--only results|ordering|parts|masks|guided]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from exion.golden.system import ordering_holds

MODES = ("Base", "EP", "FFNR", "All")
SYSTEMS = (("exion4", "EXION-4", "NVIDIA Jetson Orin Nano"),
           ("exion24", "EXION-24", "NVIDIA RTX 6000 Ada"))
PARTS = ("qkv", "attention", "o_proj", "cross", "fc1", "fc2", "cfse", "epre", "outside")


def _g(x: float) -> str:
    return f"{x:.3g}"


def _load(d: Path, name: str):
    p = d / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def ordered(e: dict) -> bool:
    """Base < EP < FFNR < All in speed (:func:`exion.golden.system.ordering_holds`)."""
    return ordering_holds({m: e["modes"][m]["latency_s"] for m in MODES})


def _why(e: dict) -> str:
    lat = {m: e["modes"][m]["latency_s"] for m in MODES}
    w = []
    if lat["EP"] >= lat["Base"]:
        w.append("EP = Base" if abs(lat["EP"] / lat["Base"] - 1) < 5e-4 else "EP slower than Base")
    if lat["FFNR"] >= lat["EP"]:
        w.append("FFNR slower than EP")
    if lat["All"] >= lat["FFNR"]:
        w.append("All = FFNR" if abs(lat["All"] / lat["FFNR"] - 1) < 5e-4 else "All slower than FFNR")
    return f"no ({', '.join(w)})"


def results(res: dict) -> str:
    out = ["| model | GPU latency (est.) | mode | latency | energy | speedup | energy eff. | "
           "util. | bound | EP on blocks |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in res["models"].items():
        for i, m in enumerate(MODES):
            r = e["modes"][m]
            ep = ""
            if m in ("EP", "All"):
                bl = r["blocks"]
                ep = f"{sum(b['count'] for b in bl if b['mode'] in ('ep', 'all'))}/" \
                     f"{sum(b['count'] for b in bl)}"
            out.append(f"| {name if i == 0 else ''} | "
                       f"{_g(e['gpu']['latency_s']) + ' s' if i == 0 else ''} | {m} | "
                       f"{_g(r['latency_s'])} s | {_g(r['energy_j'])} J | "
                       f"{_g(r['speedup_vs_gpu'])}x | {_g(r['energy_eff_vs_gpu'])}x | "
                       f"{100 * r['utilization']:.1f} % | {r['bound']} | {ep} |")
    return "\n".join(out)


def headline(runs: dict) -> str:
    rows = []
    for key, label, _gpu in SYSTEMS:
        res = runs.get(key)
        if res is None:
            continue
        a = [e["modes"]["All"] for e in res["models"].values()]
        sp = [r["speedup_vs_gpu"] for r in a]
        ee = [r["energy_eff_vs_gpu"] for r in a]
        rows.append((label, min(sp), max(sp), min(ee), max(ee)))
    return "\n".join(f"{lab}: speedup {_g(a)} - {_g(b)}x, energy efficiency {_g(c)} - {_g(d)}x"
                     for lab, a, b, c, d in rows)


def ordering(res: dict) -> str:
    out = ["| model | Base (s) | EP | FFNR | All | Base < EP < FFNR < All |",
           "|---|---|---|---|---|---|"]
    n = 0
    for name, e in res["models"].items():
        base = e["modes"]["Base"]["latency_s"]
        ok = ordered(e)
        n += ok
        out.append(f"| {name} | {_g(base)} | "
                   + " | ".join(f"{base / e['modes'][m]['latency_s']:.3f}x" for m in MODES[1:])
                   + f" | {'yes' if ok else _why(e)} |")
    return "\n".join(out) + f"\n\n(ordering holds for {n} of {len(res['models'])})"


def parts(res: dict) -> str:
    out = ["| model | mode | " + " | ".join(PARTS) + " | on-chip | off-chip | latency |",
           "|---|---|" + "---|" * (len(PARTS) + 3)]
    for name, e in res["models"].items():
        for i, m in enumerate(MODES):
            r = e["modes"][m]
            p = r["time_by_part_s"]
            out.append(f"| {name if i == 0 else ''} | {m} | "
                       + " | ".join(_g(1e3 * p.get(k, 0.0)) for k in PARTS)
                       + f" | {_g(1e3 * r['onchip_s'])} | {_g(1e3 * r['offchip_s'])} | "
                       f"{_g(1e3 * r['latency_s'])} |")
    return "\n".join(out)


def masks(col: dict, rnd: dict) -> str:
    out = ["| model | FFNR random | FFNR column | All random | All column |",
           "|---|---|---|---|---|"]
    for name, e in col["models"].items():
        f = rnd["models"][name]
        b_c, b_r = e["modes"]["Base"]["latency_s"], f["modes"]["Base"]["latency_s"]
        out.append(f"| {name} | "
                   + " | ".join(f"{_g(b / x['modes'][m]['latency_s'])}x"
                                for m in ("FFNR", "All")
                                for b, x in ((b_r, f), (b_c, e))) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="build/evaluate", help="folder of the JSON files")
    ap.add_argument("--only", choices=("results", "ordering", "parts", "masks", "guided"),
                    help="print one kind of table (default: all)")
    a = ap.parse_args(argv)
    d = Path(a.dir)
    runs = {k: _load(d, k) for k, _l, _g2 in SYSTEMS}
    if not any(runs.values()):
        print(f"no {d}/exion4.json or {d}/exion24.json: run exion evaluate first "
              f"(see this script's docstring)", file=sys.stderr)
        return 2
    want = (lambda k: a.only in (None, k))
    for key, label, gpu in SYSTEMS:
        res = runs[key]
        if res is None:
            continue
        if want("results"):
            print(f"### {key} vs {gpu} (roofline estimate)\n\n{results(res)}\n")
        if want("ordering"):
            print(f"{label} (`--system {key}`):\n\n{ordering(res)}\n")
        if want("parts"):
            print(f"{label}:\n\n{parts(res)}\n")
        rnd = _load(d, f"{key}_random")
        if want("masks") and rnd is not None:
            print(f"{label}:\n\n{masks(res, rnd)}\n")
        gd = _load(d, f"{key}_guided")
        if want("guided") and gd is not None:
            print(f"{label} (`--system {key} --guidance`):\n\n{ordering(gd)}\n")
    if want("results"):
        print("Headline (mode All):\n" + headline(runs))
        gds = {k: _load(d, f"{k}_guided") for k, _l, _g2 in SYSTEMS}
        if any(gds.values()):
            print("With --guidance:\n" + headline({k: v for k, v in gds.items() if v}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
