"""System benchmark (issue 19): where each workload becomes memory-bound.

Sweeps the DSC count (1 .. 64) at the exion24 off-chip bandwidth and the off-chip bandwidth
(17 .. 3840 GB/s) at 24 DSCs (exion24 otherwise), for each of the seven workloads in mode
Base and All (golden/system.py; docs/evaluate.md): latency per generation and the bound
(compute / global memory / off-chip). Reports, per model, the smallest core count at which
the run is off-chip-bound (more cores stop helping) and the bandwidth above which it no
longer is.

Writes ``build/bench/system.json`` and ``build/bench/system.png`` (latency against cores and
against bandwidth, log-log, one line per model, markers where off-chip-bound).

Then the EPRE provisioning sweep (docs/evaluate.md, "Mode ordering"): each model on exion4
and exion24 with the core's EPRE at 32 (the exion16 preset), 64 and 128 units
(``configs/exion16_epre64.toml``, ``exion16_epre128.toml`` as the system's ``core``): EP's
speedup over Base and whether Base < EP < FFNR < All holds. Writes
``build/bench/system_epre.json`` and ``system_epre.png``. Run:
``.venv/bin/python bench/perf_system.py [--quick]`` (``--quick``: Base only, fewer points;
the EPRE sweep on exion24 at 32 and 128 units).

``--ep-k`` instead runs EP at other top-k ratios (``EP_KS``) than the seed's, per model on
both systems: EP's speedup over Base (``build/bench/system_ep_k.json``).

``--levers`` instead runs the EPRE design levers of the system model (``EPRE_LEVERS`` in
golden/system.py: the EPRE's weights ``shared`` with the SDUE (built, the default) /
``stall`` (issue 18's separate fetch, built) / ``port-idle``, keys ``predicted`` / ``sdue``
/ ``sdue-port`` / ``komem`` (the DSC's EPRE_KOMEM, built) / ``store-tee`` (in order, built) /
``store-queue`` (queued runs, built) / ``store-queue-q`` (Q dense beside the run, built),
stage 2 ``row`` /
``packed``), alone and combined (``LEVER_SETS``),
every model in all four modes on both systems: EP's speedup over Base and whether
Base < EP < FFNR < All holds (``build/bench/system_levers.json``, ``system_levers.png``;
about 1.5 min).

``--roofline`` instead raises one system field at a time (DSCs, off-chip bandwidth,
global-memory bytes per cycle per core, global-memory size), every model and mode on both
systems, and lists every step up that made a run slower (``build/bench/system_roofline.json``;
exit status 1 if any).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from exion.gen.cli.evaluate import disk_cache
from exion.golden import system as sy
from exion.golden import workloads_sys as ws
from exion.paths import build_root

CORES = (1, 2, 4, 8, 16, 24, 32, 48, 64)
BWS = (17, 34, 68, 136, 272, 480, 960, 1920, 3840)


def sweep(modes, cores, bws):
    base = sy.SYSTEMS["exion24"]
    out = {}
    for name, m in ws.MODELS.items():
        for mode in modes:
            rows_c = []
            for n in cores:
                r = sy.evaluate_model(replace(base, dscs=n), m, mode)
                rows_c.append({"dscs": n, "latency_s": r["latency_s"], "bound": r["bound"]})
            rows_b = []
            for bw in bws:
                r = sy.evaluate_model(replace(base, offchip_gb_per_s=float(bw)), m, mode)
                rows_b.append({"offchip_gb_per_s": bw, "latency_s": r["latency_s"],
                               "bound": r["bound"]})
            first_off = next((x["dscs"] for x in rows_c if x["bound"] == "off-chip"), None)
            free_bw = next((x["offchip_gb_per_s"] for x in rows_b if x["bound"] != "off-chip"),
                           None)
            out[f"{name}/{mode}"] = {"cores": rows_c, "bandwidth": rows_b,
                                     "offchip_bound_from_dscs": first_off,
                                     "not_offchip_bound_from_gb_per_s": free_bw}
            print(f"{name:14} {mode:5} off-chip-bound from {first_off or '-':>3} DSCs "
                  f"(at {base.offchip_gb_per_s:g} GB/s); compute/on-chip-bound from "
                  f"{free_bw or '>' + str(bws[-1])} GB/s (24 DSCs); latency 24 DSCs "
                  f"{rows_c[cores.index(24)]['latency_s'] if 24 in cores else float('nan'):.4g} s",
                  flush=True)
    return out


#: Roofline check (``--roofline``): each field's values, every one at least the one before.
ROOFLINE_FIELDS = {"dscs": (1, 2, 4, 8, 16, 24, 32, 48),
                   "offchip_gb_per_s": (17.0, 68.0, 272.0, 960.0, 3840.0),
                   "gm_bytes_per_cycle": (16, 32, 64, 128, 256),
                   "gm_mb": (2.0, 8.0, 16.0, 64.0, 256.0, 1024.0)}


def roofline_check(systems=("exion4", "exion24"), modes=("Base", "EP", "FFNR", "All")):
    """Raise one system field at a time (:data:`ROOFLINE_FIELDS`, the rest as the preset):
    a run may never get slower (more cores, more bandwidth, more on-chip memory). Returns
    ``{"checked": n, "violations": [...]}`` with each increase's figures."""
    out = {"checked": 0, "violations": []}
    for sname in systems:
        base = sy.SYSTEMS[sname]
        for name, m in ws.MODELS.items():
            for mode in modes:
                for field, vals in ROOFLINE_FIELDS.items():
                    lat = [sy.evaluate_model(replace(base, **{field: v}), m,
                                             mode)["latency_s"] for v in vals]
                    out["checked"] += len(vals) - 1
                    out["violations"] += [
                        {"system": sname, "model": name, "mode": mode, "field": field,
                         "from": a, "to": b, "latency_s": [la, lb]}
                        for a, b, la, lb in zip(vals, vals[1:], lat, lat[1:])
                        if lb > la * (1 + 1e-12)]
            print(f"{sname:8} {name:14} roofline: {len(out['violations'])} increases so far",
                  flush=True)
    return out


#: Top-k ratios of the EP break-even sweep (``--ep-k``).
EP_KS = (0.02, 0.05, 0.1, 0.2, 0.5)


def ep_k_sweep(systems=("exion4", "exion24"), ks=EP_KS):
    """EP's speedup over Base per model at other top-k ratios than the seed's (q_th kept):
    ``{system: {model: {k: speedup}}}`` and the largest k at which EP pays (> 1.0005x)."""
    out = {}
    for sname in systems:
        sysm = sy.SYSTEMS[sname]
        out[sname] = {}
        for name, m in ws.MODELS.items():
            base = sy.evaluate_model(sysm, m, "Base")["latency_s"]
            sp = {k: base / sy.evaluate_model(sysm, replace(m, k=k), "EP")["latency_s"]
                  for k in ks}
            pays = [k for k in ks if sp[k] > 1.0005]
            out[sname][name] = {"seed_k": m.k, "speedup": sp,
                                "pays_up_to_k": max(pays) if pays else None}
            print(f"{sname:8} {name:14} seed k {m.k:<5} EP speedup "
                  + " ".join(f"k={k}: {v:.3f}x" for k, v in sp.items()), flush=True)
    return out


def ep_bound(systems=("exion4", "exion24")):
    """What EP could give with a free EPRE: per model, EP's and All's speedup over Base as
    built, and with EP forced on every block and the EPRE's exposed cycles removed
    (``evaluate_model(..., ep_per_block=False)["projection_epre_hidden"]``, a bound of the
    model, not a design), FFNR's, and whether Base < EP < FFNR < All would hold with the
    bound's EP and All: ``{system: {model: {...}}}``."""
    out = {}
    for sname in systems:
        sysm = sy.SYSTEMS[sname]
        out[sname] = {}
        built = _ordering_row(sysm)
        for name, m in ws.MODELS.items():
            lat = built[name]["latency_s"]
            free = {mode: min(lat[mode], sy.evaluate_model(
                sysm, m, mode, ep_per_block=False)["projection_epre_hidden"]["latency_s"])
                for mode in ("EP", "All")}
            bound = {**lat, **free}
            r = {"built": {k: lat["Base"] / v for k, v in lat.items()},
                 "epre_free": {k: lat["Base"] / v for k, v in bound.items()},
                 "ordered_built": sy.ordering_holds(lat),
                 "ordered_epre_free": sy.ordering_holds(bound)}
            out[sname][name] = r
            print(f"{sname:8} {name:14} EP built {r['built']['EP']:.4f}x, free EPRE "
                  f"{r['epre_free']['EP']:.4f}x; FFNR {r['built']['FFNR']:.4f}x; All built "
                  f"{r['built']['All']:.4f}x, free {r['epre_free']['All']:.4f}x; ordered "
                  f"{'yes' if r['ordered_built'] else 'no'} / "
                  f"{'yes' if r['ordered_epre_free'] else 'no'}", flush=True)
    return out


EPRE_CORES = {32: "exion16",
              64: str(Path(__file__).resolve().parents[1] / "configs" / "exion16_epre64.toml"),
              128: str(Path(__file__).resolve().parents[1] / "configs" / "exion16_epre128.toml")}


def _ordering_row(sysm) -> dict:
    """{model: {latency_s per mode, ep_speedup, ordered}} of every workload on ``sysm``."""
    row = {}
    for name, m in ws.MODELS.items():
        lat = {mode: sy.evaluate_model(sysm, m, mode)["latency_s"] for mode in sy.MODE_NAMES}
        row[name] = {"latency_s": lat, "ep_speedup": lat["Base"] / lat["EP"],
                     "ordered": sy.ordering_holds(lat)}
    return row


def epre_sweep(systems, units):
    """{system: {units: {model: {ep_speedup, ordered, latency_s per mode}}, ...}}"""
    out = {}
    for sname in systems:
        out[sname] = {}
        for u in units:
            row = _ordering_row(replace(sy.SYSTEMS[sname], core=EPRE_CORES[u]))
            out[sname][u] = row
            n = sum(r["ordered"] for r in row.values())
            best = max(row.items(), key=lambda kv: kv[1]["ep_speedup"])
            print(f"{sname:8} EPRE {u:3} units: ordering holds for {n} of {len(row)}; best EP "
                  f"gain {best[1]['ep_speedup']:.3f}x ({best[0]})", flush=True)
    return out


#: EPRE lever sets of ``--levers`` (label -> System overrides); the first is the default
#: (built) design: the EPRE's weights cross the port once (issue 19).
LEVER_SETS = {
    "built (shared, per-block keys)": {},
    "keys predicted (before 2026-12-06 evening)": {"epre_keys": "predicted"},
    "fetch stall (issue 18)": {"epre_fetch": "stall"},
    "fetch port-idle": {"epre_fetch": "port-idle"},
    "keys sdue-port": {"epre_keys": "sdue-port"},
    "keys sdue": {"epre_keys": "sdue"},
    "keys komem (EPRE_KOMEM)": {"epre_keys": "komem"},
    "keys store-tee (in order, built, everywhere)": {"epre_keys": "store-tee"},
    "keys store-queue (queued, built, everywhere)": {"epre_keys": "store-queue"},
    "keys store-queue-q (Q dense beside the run, built, everywhere)":
        {"epre_keys": "store-queue-q"},
    "stage2 packed": {"epre_stage2": "packed"},
    "stall + sdue": {"epre_fetch": "stall", "epre_keys": "sdue"},
    "sdue + packed": {"epre_keys": "sdue", "epre_stage2": "packed"},
    "gather port (EPRE words, before 2026-12-07 late)": {"epre_gather": "port"},
    "gather multicast (no key over a port, not built)": {"epre_gather": "multicast"},
    "sub-runs off (before 2026-12-07, night)": {"epre_sub_runs": "off"},
}


def lever_sweep(systems=("exion4", "exion24"), sets=None):
    """{system: {label: {"levers", "holds", "models": {model: {latency_s, ep_speedup,
    ordered}}}}}: every model in every mode under each lever set of ``LEVER_SETS``."""
    out = {}
    for sname in systems:
        out[sname] = {}
        for label, over in (sets or LEVER_SETS).items():
            sysm = replace(sy.SYSTEMS[sname], **over)
            row = _ordering_row(sysm)
            n = sum(r["ordered"] for r in row.values())
            out[sname][label] = {"levers": {k: getattr(sysm, k)
                                            for k in (*sy.LEVERS, *sy.SCHEDULES)},
                                 "holds": n, "models": row}
            fails = [k for k, r in row.items() if not r["ordered"]]
            print(f"{sname:8} {label:24} ordering holds for {n} of {len(row)}"
                  + (f"; not for {', '.join(fails)}" if fails else ""), flush=True)
    return out


def lever_tables(res) -> str:
    """docs/evaluate.md's "EPRE levers" tables (markdown) from a ``lever_sweep`` result."""
    out = []
    for sname, by in res.items():
        models = list(next(iter(by.values()))["models"])
        out += [f"{sname}:", "", "| levers | " + " | ".join(models) + " | holds |",
                "|---|" + "---|" * (len(models) + 1)]
        for lab, v in by.items():
            cells = [f"{v['models'][m]['ep_speedup']:.4f}x"
                     + ("" if v["models"][m]["ordered"] else " (no)") for m in models]
            out.append(f"| {lab} | " + " | ".join(cells) + f" | {v['holds']} of {len(models)} |")
        out.append("")
    return "\n".join(out)


def plot_levers(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(res), 1, figsize=(12, 4.2 * len(res)), squeeze=False)
    names = list(ws.MODELS)
    for ax, (sname, by) in zip(axes[:, 0], res.items()):
        labels = list(by)
        w = 0.8 / len(labels)
        for i, lab in enumerate(labels):
            xs = [j + (i - (len(labels) - 1) / 2) * w for j in range(len(names))]
            ys = [by[lab]["models"][n]["ep_speedup"] for n in names]
            ax.bar(xs, [y - 1 for y in ys], w, bottom=1, color=f"C{i}",
                   label=f"{lab} ({by[lab]['holds']} of {len(names)})")
            for x, y, n in zip(xs, ys, names):
                if by[lab]["models"][n]["ordered"]:
                    ax.plot(x, y, "*", ms=7, color="k")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("EP speedup over Base")
        ax.set_title(f"{sname}: EPRE levers (what-ifs; stars: Base < EP < FFNR < All)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_epre(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(res), figsize=(6 * len(res), 4.5), squeeze=False)
    names = list(ws.MODELS)
    for ax, (sname, byu) in zip(axes[0], res.items()):
        us = sorted(byu, key=int)
        for name in names:
            ys = [byu[u][name]["ep_speedup"] for u in us]
            ax.plot([int(u) for u in us], ys, "o-", color=f"C{names.index(name)}", label=name)
            for u, y in zip(us, ys):
                if byu[u][name]["ordered"]:
                    ax.plot(int(u), y, "*", ms=12, color=f"C{names.index(name)}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks([int(u) for u in us], [str(u) for u in us])
        ax.set_xlabel("EPRE units per core (exion16 preset: 32)")
        ax.set_ylabel("EP speedup over Base")
        ax.set_title(f"{sname} (stars: Base < EP < FFNR < All)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5))
    names = list(ws.MODELS)
    for key, r in res.items():
        name, mode = key.split("/")
        sty = {"color": f"C{names.index(name)}", "ls": "-" if mode == "Base" else "--"}
        for ax, sweep, xkey in ((a, "cores", "dscs"), (b, "bandwidth", "offchip_gb_per_s")):
            pts = r[sweep]
            xs, ys = [p[xkey] for p in pts], [p["latency_s"] for p in pts]
            ln, = ax.plot(xs, ys, label=key, **sty)
            off = [(x, y) for x, y, p in zip(xs, ys, pts) if p["bound"] == "off-chip"]
            if off:   # off-chip-bound points marked
                ax.plot(*zip(*off), "o", color=ln.get_color(), ms=4)
    for ax, xl in ((a, "DSC cores (960 GB/s off-chip)"), (b, "off-chip GB/s (24 DSCs)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("latency per generation (s)")
        ax.grid(which="both", alpha=0.3)
    b.legend(fontsize=6, ncol=2)
    fig.suptitle("EXION system model: latency vs cores and off-chip bandwidth "
                 "(solid Base, dashed All; dots: off-chip-bound)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write(name: str, res) -> Path:
    """``res`` as ``build/bench/<name>`` (JSON); returns the path."""
    out = build_root() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(res, indent=2) + "\n")
    return out / name


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--roofline", action="store_true",
                    help="only the roofline check: raise DSCs, off-chip and global-memory "
                         "bandwidth, global-memory size one at a time, every model and mode on "
                         "both systems; no run may get slower (build/bench/system_roofline."
                         "json; about 4 min)")
    ap.add_argument("--ep-k", action="store_true",
                    help="only the EP top-k sweep: EP's speedup over Base per model at k = "
                         f"{', '.join(map(str, EP_KS))} on both systems (build/bench/"
                         "system_ep_k.json)")
    ap.add_argument("--levers", action="store_true",
                    help="only the EPRE lever what-ifs (LEVER_SETS): every model and mode on "
                         "both systems (build/bench/system_levers.{json,png}; about 1.5 min; "
                         "with --quick only the built design and predicted keys)")
    ap.add_argument("--ep-bound", action="store_true",
                    help="only EP's bound with a free EPRE (EP forced on every block, its "
                         "exposed EPRE cycles removed) against the built design, per model on "
                         "both systems (build/bench/system_ep_bound.json; about 6 min)")
    ap.add_argument("--no-cache", action="store_true",
                    help="compute every block's per-core figures afresh (by default they come "
                         "from and go to exion evaluate's disk cache; the times printed are "
                         "then mostly the cache's)")
    a = ap.parse_args()
    with disk_cache(not a.no_cache, lambda msg: print(f"[exion] {msg}")):
        return _run(a)


def _run(a) -> int:
    if a.ep_bound:
        print(f"wrote {_write('system_ep_bound.json', ep_bound())}")
        return 0
    if a.levers:
        t = time.time()
        sets = {k: LEVER_SETS[k] for k in list(LEVER_SETS)[:2]} if a.quick else None
        res = lever_sweep(sets=sets)
        out = build_root() / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "system_levers.json").write_text(json.dumps(res, indent=2) + "\n")
        plot_levers(res, out / "system_levers.png")
        print(lever_tables(res))
        print(f"wrote {out / 'system_levers.json'}, {out / 'system_levers.png'} "
              f"({time.time() - t:.0f} s)")
        return 0
    if a.ep_k:
        print(f"wrote {_write('system_ep_k.json', ep_k_sweep())}")
        return 0
    if a.roofline:
        t = time.time()
        res = roofline_check()
        out = build_root() / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "system_roofline.json").write_text(json.dumps(res, indent=2) + "\n")
        print(f"roofline: {res['checked']} steps up, {len(res['violations'])} slower "
              f"({time.time() - t:.0f} s); wrote {out / 'system_roofline.json'}")
        for v in res["violations"]:
            print("  ", v)
        return 1 if res["violations"] else 0
    t = time.time()
    modes = ("Base",) if a.quick else ("Base", "All")
    cores = (1, 4, 24, 64) if a.quick else CORES
    bws = (17, 68, 960, 3840) if a.quick else BWS
    res = sweep(modes, cores, bws)
    out = build_root() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "system.json").write_text(json.dumps(res, indent=2) + "\n")
    plot(res, out / "system.png")
    print(f"wrote {out / 'system.json'}, {out / 'system.png'} ({time.time() - t:.0f} s)")
    t = time.time()
    ep = epre_sweep(("exion24",) if a.quick else ("exion4", "exion24"),
                    (32, 128) if a.quick else (32, 64, 128))
    (out / "system_epre.json").write_text(json.dumps(ep, indent=2) + "\n")
    plot_epre(ep, out / "system_epre.png")
    print(f"wrote {out / 'system_epre.json'}, {out / 'system_epre.png'} "
          f"({time.time() - t:.0f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
