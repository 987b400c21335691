"""EPRE provisioning sweep (issue 18): exposed EPRE cycles vs EP's saving, and area.

For every provisioning (U units x Le shift-add lanes per unit, S selectors of either kind:
``insertion`` networks or ``radix`` searches over a P-port score buffer, S = U) of the built
EPRE, the run cycles of one DiT-XL/2 head are the RTL-exact model
(``golden.cycles.epre_phase_cycles`` with the kind and P), and the exposed cycles are those the overlapped
schedule leaves on the block's critical path (``golden.projections.epre_schedule``, the
schedule ``exion golden block`` charges). EP's saving comes from ``golden.block.block_flow``
(col-group dataflow, exion16) on synthetic DiT-XL/2 EP masks (N(0, 1) logits, q_th = 0.15)
at k = 0.05, 0.2, 0.5, and on the digits DiT's real traces (``exion.workloads.trace``).

Area: a linear LUT model per family, ``LUTs = base + lane * U * Le + unit * U + sel * S``,
from the stage synthesis of ``bench/epre_area.py`` (``build/bench/epre_area.json``; run it
first), against the exion16 SDUE's LUTs (docs/fpga.md). The goal of
issue 18: exposed <= 10 % of the saving at k = 0.05, and EPRE LUTs <= 40 % of the SDUE's.

For the picked provisioning and the config's default, the block's mode ordering at each k
(``block_flow`` with that provisioning, overlapped EPRE): Base, EP, FFNR, All cycles, EP vs
Base and All vs FFNR (synthetic random FFN-Reuse masks, s = 0.95, as ``exion golden block``).

Writes ``build/bench/epre.json`` (``--selector all``: ``epre_all.json``) and the sweep plot.
Run: ``.venv/bin/python bench/perf_epre.py [--quick] [--selector insertion|radix|all]``
(a few minutes; ``--quick`` skips the traces).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from exion import PRESETS
from exion.golden import block as bl
from exion.golden.cycles import EPRE_RUN_FIXED, epre_phase_cycles
from exion.golden.projections import epre_schedule, schedule_from_gemms
from exion.paths import build_root, write_json

KS = (0.05, 0.2, 0.5)
Q_TH = 0.15
UNITS = (8, 16, 32, 64)
LANES = (16, 32, 48, 64, 96, 128, 144, 192, 288)
GOAL_EXPOSED, GOAL_LUTS = 0.10, 0.40
#: exion16 SDUE LUTs (docs/fpga.md: `exion synth --config exion16 --top sdue --hier`).
SDUE_LUTS = {"ecp5": 497_062, "xilinx": 159_580}


#: ECP5 LUT4 of the stage pieces as measured by ``bench/epre_area.py ecp5`` in issue 18's
#: first pass (docs/epre.md, "Area"); used when ``build/bench/epre_area.json`` lacks them
#: (the insertion selector alone takes many minutes to synthesize on the shared machine).
ECP5_PIECES = {"lanes1": 10_552, "lanes2": 20_194, "writeback1": 1_037, "selector": 35_477}
#: Radix selector reading this many keys per cycle (``--selector radix --ports P``; the
#: pieces ``radix_p8`` / ``radix_p32`` of ``bench/epre_area.py`` price P = 8 / 32).
RADIX_PORTS = 32


def area_model(fam: str, selector: str = "insertion", ports: int | None = None,
               bits: int = 1) -> dict | None:
    """Linear LUT model from ``bench/epre_area.py``'s stage synthesis (``build/bench/
    epre_area.json``): per lane (one unit of 16 lanes / 16), per unit write-back, per
    selector (``insertion``: ``EpreSelector``; ``radix``: ``EpreRadixSelector`` with
    ``RADIX_PORTS`` ports deciding ``bits`` threshold bits a pass, the piece
    ``radix_pP`` or ``radix_pP_bB``), shared broadcast-side LODs. None if the pieces of
    ``fam`` are missing."""
    import json
    path = build_root() / "bench" / "epre_area.json"
    r = json.loads(path.read_text()) if path.exists() else {}
    if fam == "ecp5":
        r = {**{f"ecp5/{k}": {"luts": v} for k, v in ECP5_PIECES.items()}, **r}
    sel_piece = "selector" if selector == "insertion" else \
        f"radix_p{ports or RADIX_PORTS}" + ("" if bits == 1 else f"_b{bits}")
    for lanes, n in (("lanes1", "lanes2"), 16), (("lanes1_le4", "lanes2_le4"), 4):
        need = [f"{fam}/{k}" for k in (*lanes, "writeback1", sel_piece)]
        if all(k in r for k in need):
            l1, l2, wb, sel = (r[k]["luts"] for k in need)
            lane = (l2 - l1) / n
            return {"base": l1 - n * lane, "lane": lane, "unit": wb, "sel": sel,
                    "lanes_piece": n}
    return None


def luts(model: dict, U: int, Le: int, S: int) -> float:
    return model["base"] + model["lane"] * U * Le + model["unit"] * U + model["sel"] * S


def ep_case(cfg, shp, k, masks=None, seed=0):
    """EP-mode GEMM cycles by name, EP's saving and the Base / FFNR / All block cycles."""
    ep = masks if masks is not None else bl.synth_ep(np.random.default_rng([seed, 2]),
                                                      shp["heads"], shp["T"], k, Q_TH)
    r = bl.block_flow(cfg, shp, "ep", ep=ep, epre_overlap=True)
    by = {g["name"]: g["cycles"] for g in r["gemms"]}
    base = bl.block_flow(cfg, shp, "base")["cycles"]
    return {"by": by, "saved": r["ep_saved_cycles"], "base": base,
            "ep_sdue": r["cycles"] - r["epre_cycles"], "fetch": r["epre_fetch_cycles"],
            "exposed": r["epre_exposed_cycles"]}


def run_cycles(cfg, shp, U, Le, S, selector: str = "insertion",
               ports: int | None = None) -> int:
    """One head's EPRE run of the built design (RTL-exact for both kinds:
    ``golden.cycles.epre_phase_cycles``; ``radix``: S = U selectors in lockstep, per row
    group one ``epre_radix_select_cycles`` search of P = ``ports`` keys per cycle, then one
    output cycle per row)."""
    T, d, dh = shp["T"], shp["d"], shp["d_head"]
    p = epre_phase_cycles(cfg, T, T, d, dh, units=U, lanes=Le, selectors=S, kind=selector,
                          ports=ports or RADIX_PORTS)
    return p["stage1"] + p["stage2"] + p["select"] + EPRE_RUN_FIXED


def sweep(cfg, shp, case, models, selector: str = "insertion",
          ports: int | None = None) -> list[dict]:
    """Every provisioning of one selector kind (``models``: family -> area model)."""
    kv, rest = schedule_from_gemms(case["by"], shp["heads"])
    rows = []
    P = (ports or RADIX_PORTS) if selector == "radix" else None
    for U in UNITS:
        for Le in LANES:
            ss = {1, 2, 4, 8, 16, 32, 64, U} if selector == "insertion" else {U}
            for S in sorted(ss & set(range(1, U + 1))):
                run = run_cycles(cfg, shp, U, Le, S, selector, P)
                exp = epre_schedule(run, kv, rest)["exposed"]
                row = {"units": U, "lanes": Le, "selectors": S, "shift_adds": U * Le,
                       "selector": selector, "ports": P,
                       "run": run, "exposed": exp, "ratio": exp / max(1, case["saved"]),
                       "ep_speedup": case["base"] / (case["ep_sdue"] + exp + case["fetch"])}
                for fam, mdl in models.items():
                    if mdl is not None:
                        row[f"luts_{fam}"] = luts(mdl, U, Le, S)
                        row[f"luts_frac_{fam}"] = row[f"luts_{fam}"] / SDUE_LUTS[fam]
                rows.append(row)
    return rows


def pick(rows) -> dict | None:
    """Smallest provisioning meeting the exposed goal: by ECP5 LUTs when the area model is
    known, else by shift-add lanes, then selectors."""
    ok = [r for r in rows if r["ratio"] <= GOAL_EXPOSED]
    if not ok:
        return None
    return min(ok, key=lambda r: (r.get("luts_ecp5", 0), r["shift_adds"], r["selectors"],
                                  r["units"]))


def traces(cfg, log) -> list[dict]:
    """The digits DiT's real EP masks (a light trace, 20 steps, 1 sample)."""
    from exion.workloads import trace as tr
    from exion.workloads.dit import DiT, Exion
    from exion.workloads.weights import load_weights
    model = DiT(load_weights()[0])
    ex = Exion(ffn_reuse=True, n=2, s=0.8, ep=True, k=0.5, quant=True)
    arrays, meta = tr.collect(model, steps=20, samples=1, seed=0, ex=ex, light=True)
    shp = bl.shape("digits")
    out = []
    for t in meta["iterations"][:6]:
        for b in range(meta["depth"]):
            ek = tr.key(b, t, "ep_mask")
            if ek not in arrays:
                continue
            m = {"score_mask": arrays[ek][0],
                 **{f"skip_{x}": arrays[tr.key(b, t, f"ep_skip_{x}")][0] for x in "qkv"}}
            c = ep_case(cfg, shp, None, masks=m)
            run = run_cycles(cfg, shp, cfg.epre_unit_count, cfg.epre_lane_count,
                             cfg.epre_selector_count, cfg.epre_selector_kind,
                             cfg.epre_radix_port_count)
            kv, rest = schedule_from_gemms(c["by"], shp["heads"])
            exp = epre_schedule(run, kv, rest)["exposed"]
            out.append({"block": b, "iteration": t, "saved": c["saved"], "run": run,
                        "exposed": exp, "fetch": c["fetch"], "base": c["base"],
                        "ep": c["ep_sdue"] + exp + c["fetch"]})
    log(f"digits traces: {len(out)} block iterations")
    return out


def plot(rows, path, chosen):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for S in (1, 16, 32):
        pts = sorted((r["shift_adds"], r["ratio"]) for r in rows
                     if r["selectors"] == S and r["units"] in (16, 32))
        if pts:
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o", label=f"S = {S}",
                    alpha=0.7)
    ax.axhline(100 * GOAL_EXPOSED, color="k", ls="--", lw=1, label="goal 10 %")
    if chosen:
        ax.plot([chosen["shift_adds"]], [100 * chosen["ratio"]], "r*", ms=14, label="default")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("EPRE shift-add lanes (U x Le)")
    ax.set_ylabel("exposed EPRE / SDUE cycles EP saves (%)")
    ax.set_title("DiT-XL/2 block, k = 0.05, q_th = 0.15, exion16 (col-group)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


VARIANTS = {"insertion": [("insertion", None)], "radix": None,
            "all": [("insertion", None), ("radix", 8), ("radix", 32)]}


def prov_cfg(cfg, row):
    """``cfg`` with the EPRE provisioning of a sweep row."""
    return cfg.replace(epre_units=row["units"], epre_lanes=row["lanes"],
                       epre_selectors=row["selectors"], epre_selector_kind=row["selector"],
                       epre_radix_ports=row["ports"])


def modes(cfg, shp, k, seed=0) -> dict:
    """Base / EP / FFNR / All block cycles for ``cfg``'s EPRE (overlapped, as ``exion golden
    block``), and the ratios the issue's goals name."""
    ep = bl.synth_ep(np.random.default_rng([seed, 2]), shp["heads"], shp["T"], k, Q_TH)
    ffn = bl.synth_ffn_mask(np.random.default_rng([seed, 1]), shp["T"], shp["ffn"], 0.95,
                            "random")
    c = {m: bl.block_flow(cfg, shp, m, ep=ep if m in ("ep", "all") else None,
                          ffn_mask=ffn if m in ("ffnr", "all") else None,
                          epre_overlap=True)["cycles"] for m in ("base", "ep", "ffnr", "all")}
    return {**c, "ep_vs_base": c["base"] / c["ep"], "all_vs_ffnr": c["ffnr"] / c["all"]}


def _is_default(cfg, r) -> bool:
    return (r["units"], r["lanes"], r["selectors"], r["selector"]) == (
        cfg.epre_unit_count, cfg.epre_lane_count, cfg.epre_selector_count,
        cfg.epre_selector_kind) and (r["selector"] != "radix"
                                     or r["ports"] == cfg.epre_radix_port_count)


def _print_best(best, models):
    for fam, mdl in models.items():
        if best and mdl is not None:
            U, Le, S = best["units"], best["lanes"], best["selectors"]
            need = (GOAL_LUTS * SDUE_LUTS[fam] - mdl["base"] - mdl["unit"] * U
                    - mdl["sel"] * S) / (U * Le)
            best[f"lane_luts_for_goal_{fam}"] = need
            print(f"   {fam}: {best[f'luts_{fam}']:.0f} LUTs = "
                  f"{100 * best[f'luts_frac_{fam}']:.0f} % of the SDUE (lanes "
                  f"{mdl['lane'] * U * Le:.0f}, selectors {mdl['sel'] * S:.0f}); 40 % "
                  f"needs <= {need:.0f} LUTs per lane (now {mdl['lane']:.0f})")


def _label(r) -> str:
    kind = r["selector"] + (f" P={r['ports']}" if r["selector"] == "radix" else "")
    return f"U={r['units']} Le={r['lanes']} S={r['selectors']} {kind}"


def main(argv=None) -> int:
    global RADIX_PORTS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the digits traces")
    ap.add_argument("--selector", choices=("insertion", "radix", "all"), default="insertion",
                    help="selector kind swept: insertion networks, S = U radix selectors of "
                         "--ports P (writes epre_radix_pP.json), or all (insertion, radix P = 8 "
                         "and 32; writes epre_all.json); run cycles are the built design's")
    ap.add_argument("--ports", type=int, choices=(8, 32), default=RADIX_PORTS,
                    help="radix selector: keys read per cycle P (default %(default)s)")
    args = ap.parse_args(argv)
    RADIX_PORTS = args.ports
    variants = VARIANTS[args.selector] or [("radix", args.ports)]
    t0 = time.time()
    cfg = PRESETS["exion16"]
    shp = bl.shape("dit-xl2")
    # radix selectors priced at the preset's bits a pass (the run cycles use them too)
    models = {f"{kind}{P or ''}": {f: area_model(f, kind, P, cfg.epre_radix_bit_count)
                                   for f in SDUE_LUTS}
              for kind, P in variants}
    res = {"config": cfg.name, "provisioning": {"units": cfg.epre_unit_count,
                                                "lanes": cfg.epre_lane_count,
                                                "selectors": cfg.epre_selector_count,
                                                "selector_kind": cfg.epre_selector_kind,
                                                "radix_ports": cfg.epre_radix_port_count},
           "selector": args.selector, "radix_ports": args.ports, "area_model": models,
           "sdue_luts": SDUE_LUTS, "q_th": Q_TH, "ks": {}}
    for k in KS:
        case = ep_case(cfg, shp, k)
        rows = [r for kind, P in variants
                for r in sweep(cfg, shp, case, models[f"{kind}{P or ''}"], kind, P)]
        best = pick(rows)
        here = next((r for r in rows if _is_default(cfg, r)), None)
        ent = res["ks"][str(k)] = {"saved": case["saved"], "base": case["base"],
                                   "ep_sdue": case["ep_sdue"], "smallest_meeting_goal": best,
                                   "config_default": here, "rows": rows}
        print(f"k = {k}: EP saves {case['saved']} SDUE cycles per block (base "
              f"{case['base']}); smallest provisioning with exposed <= 10 %: "
              + (f"{_label(best)} ({best['shift_adds']} lanes, run {best['run']}, exposed "
                 f"{best['exposed']:.0f} = {100 * best['ratio']:.1f} %)" if best else "none"))
        if best:
            _print_best(best, models[f"{best['selector']}{best['ports'] or ''}"])
            ent["modes_smallest"] = ms = modes(prov_cfg(cfg, best), shp, k)
            print(f"   modes: Base {ms['base']}, EP {ms['ep']} ({ms['ep_vs_base']:.3f}x), FFNR "
                  f"{ms['ffnr']}, All {ms['all']} ({ms['all_vs_ffnr']:.3f}x of FFNR)")
        if here:
            ent["modes_default"] = md = modes(cfg, shp, k)
            print(f"   exion16 default {_label(here)}: run {here['run']}, exposed "
                  f"{here['exposed']:.0f} ({100 * here['ratio']:.1f} % of the saving); "
                  f"Base {md['base']}, EP {md['ep']} ({md['ep_vs_base']:.3f}x), FFNR "
                  f"{md['ffnr']}, All {md['all']} ({md['all_vs_ffnr']:.3f}x of FFNR)"
                  + "".join(f", {f} LUTs {here[f'luts_{f}']:.0f} "
                            f"({100 * here[f'luts_frac_{f}']:.0f} % of the SDUE)"
                            for f in SDUE_LUTS if f"luts_{f}" in here))
    if not args.quick:
        res["digits"] = traces(cfg, print)
        d = res["digits"]
        if d:
            print(f"digits DiT real traces: median saved {np.median([x['saved'] for x in d]):.0f},"
                  f" exposed {np.median([x['exposed'] for x in d]):.0f}, EP/Base "
                  f"{np.median([x['base'] / x['ep'] for x in d]):.3f}x (median)")
    out = build_root() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    k0 = res["ks"][str(KS[0])]
    tag = {"insertion": "", "radix": f"_radix_p{args.ports}", "all": "_all"}[args.selector]
    plot(k0["rows"], out / f"epre_sweep{tag}.png", k0["smallest_meeting_goal"])
    path = write_json(out / f"epre{tag}.json", res)
    print(f"wrote {path} and {out / f'epre_sweep{tag}.png'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
