"""Where a DSC block iteration's cycles go (issue 16): the cycle model of the core's program.

For one block iteration of the digits DiT (block 1 of a 6-step run, seed 7: FFN-Reuse N = 2,
s = 0.8, EP k = 0.5; the dense iteration 0 and the sparse iteration 1), on ``toy`` and
``exion16``, this builds the program the host gives the DSC core (``sim.dsc_program.
block_program``) for each EP schedule (``overlap``: the EPRE beside the K / V projection;
``sequential``) and each memory-port width (32 .. 256 bits), and reports
``golden.dsc_cycles.program_cycles``, with the CFSE work beside the GEMMs and FC1's GELU
from OMEM (``auto`` also without the first, ``auto_no_cfse``, ``sim.dsc_program.
overlap_cfse``, without the second, ``auto_unfused``, GELU_OMEM, and with the EPRE's
Wq / Wk loaded on their own, ``auto_no_share``, instead of teed from the Q|K|V product's
GMEM_LOAD or filled from the EPRE's W memory into GMEM, GMEM_EFILL; and ``exact_keys``, the
same block with EP on the exact keys teed by the K/V tiles' stores, ``ep_keys = "exact"``,
whose masks differ): total cycles, cycles
per op kind (the gemm engine's
part is the model's estimate, within 5 % of the RTL on these blocks, ``docs/dsc.md``
section 3; everything else is exact), the beats moved and the schedule ``auto`` picks.
The same programs run on the Verilated core with ``exion sim block`` (``docs/dsc.md``
section 4 has the RTL figures). No RTL runs here: a few seconds.

A port width whose GELU op timing the model does not cover (toy at 256 bits, unfused only:
an accumulator word fits one beat, the output side becomes the bound) is reported as not
modelled (``n/m``).

Writes ``build/bench/dsc.json`` and ``build/bench/dsc.png`` (stacked cycles per op kind,
per config and port width, the ``auto`` schedule, dense iteration). Run:
``.venv/bin/python bench/perf_dsc.py [--buses 32 64 128 256]``.
"""

from __future__ import annotations

import argparse
import json
import time

from exion import PRESETS
from exion.errors import ExionError
from exion.paths import build_root

META = {"steps": 6, "samples": 1, "seed": 7,
        "exion": {"ffn_reuse": True, "n": 2, "s": 0.8, "ep": True, "k": 0.5, "quant": True}}
META_EXACT = {**META, "exion": {**META["exion"], "ep_keys": "exact"}}
#: op kinds drawn in the plot, bottom to top (the rest is "other")
KINDS = ("GMEM_LOAD", "IMEM_LOAD", "OMEM_LOAD", "OMEM_STORE", "GEMM", "GELU", "FFNR",
         "EPRE_XLOAD", "EPRE_WLOAD", "EPRE_STORE")


def measure(buses) -> dict:
    from exion.golden.dsc_cycles import program_cycles
    from exion.sim.dsc_block import block_case
    from exion.sim.dsc_program import block_program, program_beats
    from exion.workloads.dit import DiT
    from exion.workloads.weights import load_weights
    model = DiT(load_weights()[0])
    cases = {it: block_case(model, META, 1, it) for it in (0, 1)}
    exact = {it: block_case(model, META_EXACT, 1, it) for it in (0, 1)}
    out: dict = {}
    for name in ("toy", "exion16"):
        cfg = PRESETS[name]
        for bus in buses:
            for it, case in cases.items():
                row: dict = {}
                for sched in ("overlap", "sequential", "auto", "auto_no_cfse",
                              "auto_unfused", "auto_no_share"):
                    try:
                        _, prog, used = block_program(
                            cfg, case.rec, 0, sched[:4] if sched.startswith("auto") else sched,
                            bus, cfse_overlap=False if sched == "auto_no_cfse" else "auto",
                            fuse_gelu=sched != "auto_unfused",
                            share_w=sched != "auto_no_share")
                        m = program_cycles(cfg, prog.descs, bus)
                    except ExionError as e:
                        row[sched] = {"modelled": False, "why": str(e)}
                        continue
                    row[sched] = {"modelled": True, "schedule": used, "cycles": m["total"],
                                  "cfse_overlap": prog.cfse_overlap,
                                  "shared_w": prog.shared_w,
                                  "efill": prog.filled_w,
                                  "by_op": m["by_op"], "engine_estimate": m["gemm"],
                                  "epre_hidden": m["epre_hidden"],
                                  "epre_wait": m["epre_wait"],
                                  "engine_hidden": m["engine_hidden"],
                                  "engine_wait": m["engine_wait"],
                                  "beats": program_beats(cfg, prog),
                                  "bytes": program_beats(cfg, prog) * bus // 8}
                try:
                    _, prog, _ = block_program(cfg, exact[it].rec, 0, "auto", bus)
                    row["exact_keys"] = {"modelled": True,
                                         "cycles": program_cycles(cfg, prog.descs, bus)["total"]}
                except ExionError as e:
                    row["exact_keys"] = {"modelled": False, "why": str(e)}
                out[f"{name}/{bus}/{'dense' if it == 0 else 'sparse'}"] = row
    return out


def report(res: dict) -> None:
    print(f"{'config/bus/iteration':<26} {'overlap':>9} {'sequential':>10} {'auto':>9} "
          f"{'no CFSE ov.':>11} {'unfused':>9} {'no share':>9} {'exact keys':>10} "
          f"{'picks':>10} "
          f"{'bus bytes':>10}  "
          f"largest parts (auto)")
    for key, row in res.items():
        a = row["auto"]
        if not a["modelled"]:
            print(f"{key:<26} not modelled: {a['why']}")
            continue
        top = sorted(a["by_op"].items(), key=lambda kv: -kv[1])[:3]
        print(f"{key:<26} {row['overlap']['cycles']:>9,} {row['sequential']['cycles']:>10,} "
              f"{a['cycles']:>9,} {row['auto_no_cfse']['cycles']:>11,} "
              f"{_c(row['auto_unfused']):>9} {_c(row['auto_no_share']):>9} "
              f"{_c(row['exact_keys']):>10} "
              f"{a['schedule'] + _share(a):>10} "
              f"{a['bytes']:>10,}  "
              + ", ".join(f"{k} {100 * v / a['cycles']:.0f} %" for k, v in top))


def _share(a: dict) -> str:
    """How the EPRE's weights were shared: ``+tee`` / ``+fill`` (GMEM_EFILL) / none."""
    return ("+fill" if a["efill"] else "+tee") if a["shared_w"] else ""


def _c(r: dict) -> str:
    return f"{r['cycles']:,}" if r["modelled"] else "n/m"


def plot(res: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [k for k, r in res.items() if k.endswith("/dense") and r["auto"]["modelled"]]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bottom = [0] * len(keys)
    for i, kind in enumerate((*KINDS, "other")):
        vals = []
        for k in keys:
            by = res[k]["auto"]["by_op"]
            vals.append(sum(v for o, v in by.items() if o not in KINDS) if kind == "other"
                        else by.get(kind, 0))
        ax.bar(range(len(keys)), vals, bottom=bottom, label=kind,
               color=plt.cm.tab20.colors[2 * i % 20 + (2 * i // 20)])
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(keys)), [k.rsplit("/", 1)[0] + " bits" for k in keys],
                  rotation=30, ha="right")
    ax.set_ylabel("cycles (cycle model, engine estimated)")
    ax.set_title("DSC: one dense digits-DiT block iteration by op kind (EP schedule: auto)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--buses", type=int, nargs="+", default=[32, 64, 128, 256],
                    help="memory-port widths in bits (32, 64, 128, 256; default: all)")
    args = ap.parse_args(argv)
    bad = [b for b in args.buses if b not in (32, 64, 128, 256)]
    if bad:
        raise SystemExit(f"error: --buses {bad[0]}: the DSC core's port is 32, 64, 128 or "
                         f"256 bits wide")
    t0 = time.perf_counter()
    res = measure(args.buses)
    report(res)
    out = build_root() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "dsc.json").write_text(json.dumps({"meta": META, "block": 1, "results": res},
                                             indent=1))
    plot(res, out / "dsc.png")
    print(f"wrote {out / 'dsc.json'}, {out / 'dsc.png'} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
