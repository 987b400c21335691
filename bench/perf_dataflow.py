"""Dataflow benchmark (issue 17): one DiT-XL/2 block under the row-block and col-group
dataflows (golden/dataflow.py, golden/block.py) against global-buffer bandwidth.

1. DiT-XL/2 block (T = 256, d = 1152, 16 heads of 72, FFN 4608) on exion16: Base and FFNR
   sparse iterations (s = 0.8, 0.95, 0.97; random and column-concentrated masks, seed 0),
   row-block vs col-group, at 64, 128, 256 and 512 B/cycle: block and FFN cycles, compute,
   stall, bytes, utilization, bound; speedups against the dense block under the same
   dataflow and bandwidth.
2. The goals of issue 17, side by side from the runs of 1.
3. Bank mapping of col-group (bank / placed / crossbar / ideal): ConMerge utilization and
   FC1 cycles (256 B/cycle) on the digits DiT's real FFN-Reuse masks (a light trace: 30 DDIM
   steps, 4 samples stacked as 64 rows, N = 2, s = 0.8, every block's first sparse iteration
   after each dense one) and on synthetic DiT-XL/2 FC1 masks; the row-block ConMerge (global
   over the whole row block) for reference.
4. The digits DiT block from its real masks (trace block 0, first sparse iteration, sample 0),
   modes base / ffnr / all, both dataflows, 64 B/cycle.

Writes ``build/bench/dataflow.json`` and ``build/bench/dataflow_roofline.png`` (achieved
MACs per cycle against operational intensity, useful MACs per byte read from the global
buffer, with the R*C*L peak and each bandwidth's roof). Run:
``.venv/bin/python bench/perf_dataflow.py [--quick] [--rtl]`` (about 10 minutes, most of it
the engine-level block of 7., which searches each GEMM's K-split; ``--quick`` about 4:
64 and 256 B/cycle only; ``--rtl``: 6. the toy gemm engine's RTL cycles against the model,
both dataflows, col-group single- and double-buffered, 64 / 128 / 256 B/cycle and two
toy-scale bandwidths).

5. The gemm engine's own model (``golden.cycles.engine_cycles``, exact against the RTL) on
   the issue's 256 x 1152 mask at s = 0.8, K = 1152: row-block, col-group single- and
   double-buffered at 64 / 128 / 256 B/cycle, next to the block model, config what-ifs
   (IMEM, OMEM x16) that locate the gap, and both dataflows with K-splits chosen by the
   model (``k_chunk="auto"``) (``engine_model`` in the JSON).
7. A DiT-XL/2 block through the engine model with K-splits (``engine_block``): Base and
   FFN-Reuse s = 0.95 (column, random), row-block vs col-group, per bandwidth; Base with
   the 4-wide OMEM drain (``engine_block_drain4``); Base and FFN-Reuse s = 0.95 column on
   ``configs/exion16_omem2x.toml`` (the drain and a 2x OMEM, ``engine_block_omem2x``); the
   issue's goals read on both configs' engine results (``engine_goals``); Base at 256
   B/cycle against OMEM depth and drain width (``omem_sweep``, ``dataflow_omem_sweep.png``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from exion import PRESETS
from exion.config import load_config
from exion.golden import block as bl
from exion.golden.conmerge import conmerge
from exion.golden.dataflow import BANK_MAPS, gemm_flow

CFG = PRESETS["exion16"]
#: the 90 % design: exion16 with the 4-wide OMEM drain and a 2x OMEM (docs/gemm.md)
OMEM2X = load_config(Path(__file__).resolve().parent.parent / "configs" / "exion16_omem2x.toml")
BWS = (64, 128, 256, 512)
SPARSITIES = (0.8, 0.95, 0.97)
KINDS = ("random", "column")
DATAFLOWS = ("row-block", "col-group")
SEED = 0


def _summary(r):
    return {k: r[k] for k in ("cycles", "compute_cycles", "stall_cycles", "ffn_cycles",
                              "attention_cycles", "utilization", "bound", "memory_cycles",
                              "bytes")} | {
        "fc1": next(g for g in r["gemms"] if g["name"] == "fc1")["cycles"],
        "fc2": next(g for g in r["gemms"] if g["name"] == "fc2")["cycles"],
        "fc1_bound": next(g for g in r["gemms"] if g["name"] == "fc1")["bound"],
        "fc2_bound": next(g for g in r["gemms"] if g["name"] == "fc2")["bound"],
        "useful_macs": r["useful_macs"],
        "read_bytes": r["bytes"]["gb_wmem"] + r["bytes"]["gb_imem"] + r["bytes"]["gb_omem"]}


def xl_sweep(bws, log):
    shp = bl.shape("dit-xl2")
    masks = {(k, s): bl.synth_ffn_mask(np.random.default_rng([SEED, 1]), shp["T"], shp["ffn"],
                                       s, k) for k in KINDS for s in SPARSITIES}
    rows = []
    for bw in bws:
        for dfl in DATAFLOWS:
            t0 = time.perf_counter()
            base = _summary(bl.block_flow(CFG, shp, "base", dataflow=dfl, bw=bw))
            rows.append({"mode": "base", "masks": "-", "s": 0.0, "bw": bw, "dataflow": dfl,
                         **base, "speedup": 1.0, "ffn_speedup": 1.0})
            for (k, s), fm in masks.items():
                r = _summary(bl.block_flow(CFG, shp, "ffnr", ffn_mask=fm, dataflow=dfl, bw=bw))
                rows.append({"mode": "ffnr", "masks": k, "s": s, "bw": bw, "dataflow": dfl, **r,
                             "speedup": base["cycles"] / r["cycles"],
                             "ffn_speedup": base["ffn_cycles"] / r["ffn_cycles"]})
            log(f"  {bw} B/cycle {dfl}: {time.perf_counter() - t0:.1f} s")
    return rows


def print_sweep(rows):
    print(f"{'mode':5} {'masks':6} {'s':>5} {'B/cyc':>5} {'dataflow':9} {'cycles':>9} "
          f"{'stall':>9} {'util':>6} {'bound':14} {'FFN':>9} {'FC1':>8} {'FC2':>8} "
          f"{'x block':>7} {'x FFN':>6} {'MB':>7}")
    for r in rows:
        print(f"{r['mode']:5} {r['masks']:6} {r['s']:>5.2f} {r['bw']:>5} {r['dataflow']:9} "
              f"{r['cycles']:>9} {r['stall_cycles']:>9} {100 * r['utilization']:>5.1f}% "
              f"{r['bound']:14} {r['ffn_cycles']:>9} {r['fc1']:>8} {r['fc2']:>8} "
              f"{r['speedup']:>6.2f}x {r['ffn_speedup']:>5.2f}x "
              f"{r['bytes']['total'] / 1e6:>7.1f}")


def _find(rows, **kw):
    return next(r for r in rows if all(r[k] == v for k, v in kw.items()))


def goals(rows, bws):
    out = {}
    if 256 in bws:
        r = _find(rows, mode="base", bw=256, dataflow="col-group")
        out["base_256_col_group_utilization"] = {"value": r["utilization"], "goal": ">= 0.90",
                                                 "met": r["utilization"] >= 0.90}
    new = _find(rows, mode="base", bw=64, dataflow="col-group")
    old = _find(rows, mode="base", bw=64, dataflow="row-block")
    out["base_64_speedup_vs_row_block"] = {"value": old["cycles"] / new["cycles"],
                                           "old": old["cycles"], "new": new["cycles"],
                                           "goal": ">= 4", "met": old["cycles"] >= 4 * new["cycles"]}
    for bw in bws:
        for k in KINDS:
            r = _find(rows, mode="ffnr", masks=k, s=0.95, bw=bw, dataflow="col-group")
            key = f"ffn_s0.95_{k}_{bw}"
            out[key] = {"ffn_speedup": r["ffn_speedup"], "block_speedup": r["speedup"],
                        "fc1_bound": r["fc1_bound"], "fc2_bound": r["fc2_bound"],
                        "goal": ">= 5 (column masks)" if k == "column" else "report",
                        "met": r["ffn_speedup"] >= 5 if k == "column" else None}
    return out


def print_goals(g):
    print("\nGoals (col-group unless stated):")
    for k, v in g.items():
        val = v.get("value", v.get("ffn_speedup"))
        extra = (f" (block {v['block_speedup']:.2f}x; FC1 {v['fc1_bound']}, FC2 "
                 f"{v['fc2_bound']})" if "block_speedup" in v else "")
        met = {True: "MET", False: "NOT MET", None: ""}[v["met"]]
        print(f"  {k:38} {val:8.3f}  goal {v['goal']:20} {met}{extra}")


def digits_trace(log):
    from exion.workloads import trace as tr
    from exion.workloads.dit import DiT
    from exion.workloads.weights import load_weights
    path = Path("build/bench/digits_trace_light.npz")
    if not path.is_file():
        t0 = time.perf_counter()
        arrays, meta = tr.collect(DiT(load_weights(None)[0]), steps=30, samples=4, seed=0,
                                  light=True)
        tr.save(path, arrays, meta)
        log(f"  traced the digits DiT (30 steps, 4 samples, light) in "
            f"{time.perf_counter() - t0:.1f} s -> {path}")
    return path


def bank_maps(trace_path, log):
    from exion.workloads import trace as tr
    z, meta = tr.load(trace_path)
    real = [z[tr.key(b, t, "fc1_mask")] for b in range(meta["depth"])
            for t in range(meta["steps"])
            if tr.key(b, t, "fc1_mask") in z.files and meta["dense"][t - 1]]
    sets = {"digits real (64 x 256, K = 64)": (real, 64)}
    shp = bl.shape("dit-xl2")
    for k in KINDS:
        for s in SPARSITIES:
            fm = bl.synth_ffn_mask(np.random.default_rng([SEED, 1]), shp["T"], shp["ffn"], s, k)
            sets[f"dit-xl2 {k} s={s} (256 x 4608, K = 1152)"] = ([fm], 1152)
    out = {}
    for name, (masks, K) in sets.items():
        t0 = time.perf_counter()
        rb_masked = rb_passes = 0
        for mk in masks:
            p = conmerge(CFG, mk)
            rb_masked += p.masked
            rb_passes += p.n_passes
        row = {"row-block": {"utilization": rb_masked / (rb_passes * CFG.rows * CFG.cols)}}
        for bm in BANK_MAPS:
            masked = slots = cyc = 0
            for mk in masks:
                g = gemm_flow(CFG, mk.shape[0], mk.shape[1], K, mask=mk, bank_map=bm, bw=256)
                masked += int(mk.sum())
                slots += int(mk.sum()) / g.conmerge_utilization
                cyc += g.cycles
            row[bm] = {"utilization": masked / slots, "fc1_cycles_256": cyc}
        out[name] = {"masks": len(masks),
                     "sparsity": float(np.mean([1 - m.mean() for m in masks])), **row}
        log(f"  bank maps on {name}: {time.perf_counter() - t0:.1f} s")
    return out


def print_bank_maps(res):
    print("\nBank mapping (col-group FC1, exion16 m = 4): ConMerge utilization "
          "(FC1 cycles at 256 B/cycle)")
    print(f"{'masks':44}{'s':>6}{'row-block':>11}" + "".join(f"{b:>18}" for b in BANK_MAPS))
    for name, r in res.items():
        print(f"{name:44}{r['sparsity']:>6.3f}{100 * r['row-block']['utilization']:>10.1f}%"
              + "".join(f"{100 * r[b]['utilization']:>8.1f}% ({r[b]['fc1_cycles_256']:>6})"
                        for b in BANK_MAPS))


def digits_block(trace_path):
    shp = bl.shape("digits")
    m = bl.load_masks(trace_path, shp)
    out = {}
    for dfl in DATAFLOWS:
        for mode in ("base", "ffnr", "all"):
            r = bl.block_flow(CFG, shp, mode, ffn_mask=m["ffn_mask"], ep=m["ep"],
                              dataflow=dfl, bw=64)
            out[f"{dfl} {mode}"] = _summary(r) | {"epre_cycles": r["epre_cycles"]}
    return out, m["source"]


def plot(rows, bws, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5.5))
    peak = CFG.peak_macs
    xs = np.logspace(0, 3, 200)
    for bw in bws:
        ax.plot(xs, np.minimum(peak, bw * xs), lw=0.8, color="0.6")
        ax.text(xs[0] * 1.1, bw * xs[0] * 1.15, f"{bw} B/cycle", fontsize=7, color="0.4")
    ax.axhline(peak, color="k", lw=1)
    ax.text(1.1, peak * 1.04, f"peak R*C*L = {peak} MACs/cycle", fontsize=8)
    styles = {"row-block": "o", "col-group": "s"}
    colors = {"base": "C0", "random": "C1", "column": "C2"}
    seen = set()
    for r in rows:
        x = r["useful_macs"] / max(1, r["read_bytes"])
        y = r["useful_macs"] / r["cycles"]
        c = colors["base" if r["mode"] == "base" else r["masks"]]
        lab = f"{r['dataflow']}, {'Base' if r['mode'] == 'base' else 'FFNR ' + r['masks']}"
        ax.scatter([x], [y], marker=styles[r["dataflow"]], color=c, s=22,
                   label=None if lab in seen else lab, alpha=0.8)
        seen.add(lab)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("operational intensity: useful MACs per byte read from the global buffer")
    ax.set_ylabel("achieved useful MACs per cycle")
    ax.set_title("DiT-XL/2 block on exion16: row-block vs col-group (64-512 B/cycle)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_engine_block(eb, path, extra=None, extra_name=""):
    """Bars: % of R*C*L peak of the DiT-XL/2 block through the built engine (engine model),
    per mode and bandwidth, row-block / col-group / the faster dataflow per GEMM, and the
    faster per GEMM of a second config's :func:`engine_block` (``extra``) where it has the
    mode."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    modes = list(dict.fromkeys(k.rsplit(" ", 1)[0] for k in eb))
    fig, axes = plt.subplots(1, len(modes), figsize=(4.2 * len(modes), 4), sharey=True)
    for ax, mode in zip(np.atleast_1d(axes), modes):
        keys = [k for k in eb if k.rsplit(" ", 1)[0] == mode]
        bws = [k.rsplit(" ", 1)[1] for k in keys]
        x = np.arange(len(keys))
        bars = [("row-block", eb, lambda r: r["row-block"]["utilization"]),
                ("col-group (striped where dense)", eb, lambda r: r["col-group"]["utilization"]),
                ("faster per GEMM", eb, lambda r: r["best_per_gemm"]["utilization"])]
        if extra and all(k in extra for k in keys):
            bars.append((f"{extra_name}, faster per GEMM", extra,
                         lambda r: r["best_per_gemm"]["utilization"]))
        w = 0.8 / len(bars)
        for i, (lab, src, get) in enumerate(bars):
            ax.bar(x + (i - (len(bars) - 1) / 2) * w, [100 * get(src[k]) for k in keys], w,
                   label=lab)
        ax.set_xticks(x, [f"{b} B/c" for b in bws])
        ax.set_title(mode, fontsize=9)
        ax.axhline(90, color="k", lw=0.6, ls="--")
        ax.grid(True, axis="y", lw=0.3)
    np.atleast_1d(axes)[0].set_ylabel("% of R*C*L peak (useful MACs)")
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels))
    fig.suptitle("DiT-XL/2 block through the built gemm engine (exion16, exact engine model; "
                 "dashed: the 90 % goal)", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


ENGINE_BWS = (64, 128, 256)
#: Config what-ifs for the engine-level gap (model only; not built): IMEM holding all 16 row
#: blocks of K = 1152 (what an IMEM loader gives), and OMEM 16x as well (what an OMEM drain
#: gives).
ENGINE_WHATIF = {"exion16": {},
                 "imem_x16": {"imem_depth": 16},
                 "imem_x16_omem_x16": {"imem_depth": 16, "omem_depth": 16}}


def engine_model(log) -> dict:
    """Engine level (``golden.cycles.engine_cycles``, exact against the RTL on toy) against
    the block model (``golden.dataflow.gemm_flow``) on the issue's case: a 256 x 1152 output
    mask at s = 0.8 (``default_rng(0).random((256, 1152)) >= 0.8``), K = 1152, exion16, at
    64 / 128 / 256 B/cycle: row-block, col-group single-buffered (one group per run) and
    col-group double-buffered (several groups per run), the row-block / col-group ratios,
    and the config what-ifs of :data:`ENGINE_WHATIF` that locate the remaining gap."""
    from exion.golden.cycles import engine_cycles
    M, N, K = 256, 1152, 1152
    mask = np.random.default_rng(0).random((M, N)) >= 0.8
    runs = {}
    for name, scale in ENGINE_WHATIF.items():
        cfg = CFG.replace(name=f"{CFG.name}_{name}", **{k: v * getattr(CFG, k)
                                                        for k, v in scale.items()}) \
            if scale else CFG
        for bw in ENGINE_BWS:
            row = {}
            for key, df, db, kc in (("row-block", "row-block", True, None),
                                    ("col-group-single", "col-group", False, None),
                                    ("col-group", "col-group", True, None),
                                    ("row-block auto-K", "row-block", True, "auto"),
                                    ("col-group auto-K", "col-group", True, "auto")):
                if kc and scale:
                    continue
                e = engine_cycles(cfg, mask, K, dataflow=df, gb_bytes=bw, double_buffer=db,
                                  k_chunk=kc)
                t0 = e["tiles"][0]
                row[key] = {"cycles": e["cycles"], "compute_cycles": e["compute_cycles"],
                            "stall_cycles": e["stall_cycles"], "bytes": e["bytes"]["gb_wmem"],
                            "bound": e["bound"], "utilization": e["utilization"],
                            "tiles": len(e["tiles"]), "blocks_per_run": t0["blocks"],
                            "cols_per_run": t0["ncols"], "group_cols": t0["gcols"],
                            "groups_per_run": t0["groups"], "k_chunk": e["k_chunk"],
                            "k_splits": e["k_splits"], "host_a_bytes": e["host_a_bytes"]}
            if not scale:
                for key in ("row-block", "col-group"):
                    g = gemm_flow(CFG, M, N, K, mask=mask, dataflow=key, bw=bw)
                    row[f"block-model {key}"] = {
                        "cycles": g.cycles, "compute_cycles": g.compute_cycles,
                        "stall_cycles": g.stall_cycles, "bytes": g.bytes["gb_wmem"],
                        "bound": g.bound, "utilization": g.utilization}
            rb = row["row-block"]["cycles"]
            row["ratio_row_block_over_col_group"] = rb / row["col-group"]["cycles"]
            row["ratio_row_block_over_col_group_single"] = rb / row["col-group-single"]["cycles"]
            row["double_buffer_gain"] = (row["col-group-single"]["cycles"] /
                                         row["col-group"]["cycles"])
            if not scale:
                row["block_model_ratio"] = (row["block-model row-block"]["cycles"] /
                                            row["block-model col-group"]["cycles"])
                row["ratio_row_block_over_col_group_auto_k"] = (
                    rb / row["col-group auto-K"]["cycles"])
            runs[f"{name} {bw}"] = row
    log("\nGemm engine model vs block model: 256 x 1152 mask, s = 0.8, K = 1152, exion16 "
        "(cycles; ratio = row-block / col-group, > 1: col-group faster)")
    log(f"  {'config':18} {'B/cyc':>5} {'row-block':>10} {'cg single':>10} {'cg double':>10} "
        f"{'ratio':>6} {'dbuf gain':>9} {'block model rb / cg (ratio)':>30}")
    for key, r in runs.items():
        name, bw = key.rsplit(" ", 1)
        bm = (f"{r['block-model row-block']['cycles']:>9} / "
              f"{r['block-model col-group']['cycles']:>7} ({r['block_model_ratio']:.2f}x)"
              if "block_model_ratio" in r else "")
        log(f"  {name:18} {bw:>5} {r['row-block']['cycles']:>10} "
            f"{r['col-group-single']['cycles']:>10} {r['col-group']['cycles']:>10} "
            f"{r['ratio_row_block_over_col_group']:>5.2f}x {r['double_buffer_gain']:>8.2f}x "
            f"{bm:>30}")
    log("  with K-splits (issue 17, k_chunk = auto; the host writes A per run, not charged "
        "in either dataflow):")
    for key, r in runs.items():
        if "col-group auto-K" not in r:
            continue
        name, bw = key.rsplit(" ", 1)
        c = r["col-group auto-K"]
        log(f"  {name:18} {bw:>5} row-block {r['row-block auto-K']['cycles']:>8} "
            f"(K in {r['row-block auto-K']['k_splits']}), col-group {c['cycles']:>8} (K in "
            f"{c['k_splits']} of <= {c['k_chunk']} words, {c['blocks_per_run']} row blocks x "
            f"{c['group_cols']}-column groups a run), row-block / col-group "
            f"{r['ratio_row_block_over_col_group_auto_k']:.2f}x; weights "
            f"{c['bytes'] / 1e6:.2f} MB vs {r['row-block']['bytes'] / 1e6:.2f} MB, A written "
            f"{c['host_a_bytes'] / 1e6:.2f} MB vs {r['row-block']['host_a_bytes'] / 1e6:.2f} MB")
    return runs


def _block_gemms(shp: dict, fm=None) -> list:
    """The DiT block's GEMMs as (name, M, N, K, output mask, input mask, count): the
    attention GEMMs once per head; with an FC1 mask ``fm`` (FFN-Reuse) FC1 output-sparse
    and FC2 gathered over the hidden units its rows need."""
    T, d, H, F = shp["T"], shp["d"], shp["heads"], shp["ffn"]
    dh = d // H
    return [("qkv_proj", T, 3 * d, d, None, None, 1), ("o_proj", T, d, d, None, None, 1),
            ("scores", T, T, dh, None, None, H), ("pv", T, dh, T, None, None, H),
            ("fc1", T, F, d, fm, None, 1), ("fc2", T, d, F, None, fm, 1)]


def engine_block(log, bws, cfg=CFG, kinds=("column", "random")) -> dict:
    """A DiT-XL/2 block (T = 256, d = 1152, 16 heads of 72, FFN 4608) through the gemm
    engine's own model (``golden.cycles.engine_cycles``, exact against the RTL on toy), each
    GEMM with the K-split the model finds fastest (``k_chunk="auto"``; FC2's K = 4608 needs
    at least 3) and, under col-group, the striped WMEM map wherever the mask allows it
    (``striped="auto"``: the dense GEMMs): Base (dense) and an FFN-Reuse sparse iteration
    (s = 0.95, column and random masks, seed 0: FC1 output-sparse, FC2 gathered over the
    hidden units its rows need), row-block and col-group, per bandwidth. Attention GEMMs (scores, P.V per head)
    are charged 16 x one head. Softmax, GELU and the EPRE are not in the engine (0 here)."""
    from exion.golden.cycles import engine_cycles
    shp = bl.shape("dit-xl2")
    out = {}
    log(f"\nDiT-XL/2 block through the gemm engine model ({cfg.name}, K-splits auto, col-group "
        "striped where the mask allows; % of R*C*L peak on useful MACs):")
    log(f"  {'mode':18} {'B/cyc':>5} {'row-block':>10} {'col-group':>10} {'ratio':>6} "
        f"{'util rb':>8} {'util cg':>8} {'FFN rb':>9} {'FFN cg':>9} {'best/GEMM':>10} "
        f"{'util':>6}")
    modes = {"base": None}
    for kind in kinds:
        modes[f"ffnr s=0.95 {kind}"] = bl.ffn_mask_for(shp, kind, 0.95, SEED)
    for mname, fm in modes.items():
        for bw in bws:
            row = {}
            for df in DATAFLOWS:
                gem = _block_gemms(shp, fm)
                tot = {"cycles": 0, "useful_macs": 0, "bytes": 0, "ffn_cycles": 0}
                per = {}
                for name, M, N, K, om, im, n in gem:
                    mask = np.ones((M, N), bool) if om is None else om
                    # the host compacts where a column / K row is unneeded and that
                    # is faster (as the block model's engine flows)
                    e = engine_cycles(cfg, mask, K, dataflow=df, gb_bytes=bw, input_mask=im,
                                      k_chunk="auto",
                                      striped="auto" if df == "col-group" else False,
                                      compact="auto")
                    per[name] = {"cycles": e["cycles"], "k_chunk": e["k_chunk"],
                                 "compact": e["compact"],
                                 "k_splits": e["k_splits"], "bound": e["bound"],
                                 "bytes": e["bytes"]["gb_wmem"], "striped": e["striped"],
                                 "utilization": e["utilization"]}
                    tot["cycles"] += n * e["cycles"]
                    tot["useful_macs"] += n * e["useful_macs"]
                    tot["bytes"] += n * e["bytes"]["gb_wmem"]
                    if name in ("fc1", "fc2"):
                        tot["ffn_cycles"] += n * e["cycles"]
                tot["utilization"] = tot["useful_macs"] / (cfg.peak_macs * tot["cycles"])
                row[df] = {**tot, "gemms": per}
            row["ratio_row_block_over_col_group"] = (row["row-block"]["cycles"] /
                                                     row["col-group"]["cycles"])
            # the host picks the faster dataflow per GEMM from the model (both are built)
            n_of = {g[0]: g[6] for g in gem}
            pick = {nm: min(DATAFLOWS, key=lambda df: row[df]["gemms"][nm]["cycles"])
                    for nm in n_of}
            best = sum(n_of[nm] * row[pick[nm]]["gemms"][nm]["cycles"] for nm in n_of)
            row["best_per_gemm"] = {"cycles": best, "dataflow": pick,
                                    "ffn_cycles": sum(row[pick[nm]]["gemms"][nm]["cycles"]
                                                      for nm in ("fc1", "fc2")),
                                    "utilization": row["row-block"]["useful_macs"]
                                    / (cfg.peak_macs * best)}
            out[f"{mname} {bw}"] = row
            log(f"  {mname:18} {bw:>5} {row['row-block']['cycles']:>10} "
                f"{row['col-group']['cycles']:>10} {row['ratio_row_block_over_col_group']:>5.2f}x "
                f"{100 * row['row-block']['utilization']:>7.1f}% "
                f"{100 * row['col-group']['utilization']:>7.1f}% "
                f"{row['row-block']['ffn_cycles']:>9} {row['col-group']['ffn_cycles']:>9} "
                f"{row['best_per_gemm']['cycles']:>10} "
                f"{100 * row['best_per_gemm']['utilization']:>5.1f}%")
    return out


def engine_goals(log, eb: dict, today_64: int, name: str) -> dict:
    """The issue's goals read on :func:`engine_block`'s results (the built engine's exact
    model) of one config: Base at 256 B/cycle >= 90 % of R*C*L peak (best dataflow per
    GEMM); Base at 64 B/cycle >= 4x faster than ``today_64`` (the block model's cycles under
    today's row-block dataflow); the FFN (FC1 + FC2) of the s = 0.95 column-mask iteration
    >= 5x fewer cycles than the dense FFN under the same dataflow and bandwidth, per
    dataflow and for the best per GEMM."""
    out = {}
    bws = sorted({int(k.rsplit(" ", 1)[1]) for k in eb})
    if 256 in bws:
        u = eb["base 256"]["best_per_gemm"]["utilization"]
        out["base_256_utilization"] = {"value": u, "goal": ">= 0.90", "met": u >= 0.90}
    if 64 in bws:
        c = eb["base 64"]["best_per_gemm"]["cycles"]
        out["base_64_speedup_vs_today"] = {"value": today_64 / c, "old": today_64, "new": c,
                                           "goal": ">= 4", "met": today_64 >= 4 * c}
    for bw in bws:
        sp = eb.get(f"ffnr s=0.95 column {bw}")
        if sp is None:
            continue
        dense = eb[f"base {bw}"]
        for df in DATAFLOWS + ("best_per_gemm",):
            r = dense[df]["ffn_cycles"] / sp[df]["ffn_cycles"]
            out[f"ffn_s0.95_column_{bw}_{df}"] = {"value": r, "goal": ">= 5", "met": r >= 5}
    log(f"\nIssue 17 goals on the engine model, {name} (today at 64 B/cycle: {today_64} "
        "cycles, the block model's row-block):")
    for k, v in out.items():
        met = "MET" if v["met"] else "NOT MET"
        log(f"  {k:40} {v['value']:8.3f}  goal {v['goal']:6} {met}")
    return out


#: OMEM depths (results per bank) x drain widths of the sweep behind the 2x OMEM choice
OMEM_SWEEP = ((384, 512, 640, 768, 1024), (1, 4))


def omem_sweep(log, bw: int = 256, known: dict | None = None) -> dict:
    """Base on the DiT-XL/2 block at ``bw`` B/cycle (best dataflow per GEMM, engine model)
    against the OMEM depth and the drain width: where the tile's start and end stop
    mattering. Keys ``"<depth> <drain>"``; ``known`` gives points already computed
    (``cycles``, ``utilization``), which are not run again."""
    out = {}
    depths, drains = OMEM_SWEEP
    for d in depths:
        for w in drains:
            r = (known or {}).get(f"{d} {w}")
            if r is None:
                cfg = CFG.replace(name=f"{CFG.name}_o{d}_d{w}", omem_depth=d, omem_drain=w)
                r = engine_block(lambda *_: None, (bw,), cfg, kinds=())[f"base {bw}"]
                r = r["best_per_gemm"]
            out[f"{d} {w}"] = {"cycles": r["cycles"], "utilization": r["utilization"],
                               "omem_kb": CFG.rows * d * CFG.acc_width / 8 / 1024}
    log(f"\nDiT-XL/2 Base block at {bw} B/cycle against OMEM depth (results per bank) and "
        "drain width (best dataflow per GEMM; % of peak):")
    log("  " + f"{'depth':>6} {'OMEM KB':>8} " + " ".join(f"{'drain ' + str(w):>9}"
                                                         for w in drains))
    for d in depths:
        log(f"  {d:>6} {out[f'{d} {drains[0]}']['omem_kb']:>8.1f} " + " ".join(
            f"{100 * out[f'{d} {w}']['utilization']:>8.1f}%" for w in drains))
    return out


def plot_omem_sweep(sw: dict, path, bw: int = 256):
    """Utilization of the Base block against OMEM depth, one line per drain width."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    depths, drains = OMEM_SWEEP
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for w in drains:
        ax.plot(depths, [100 * sw[f"{d} {w}"]["utilization"] for d in depths], "o-",
                label=f"drain {w} column{'s' if w > 1 else ''}/cycle")
    ax.axhline(90, color="k", lw=0.6, ls="--")
    ax.axvline(CFG.omem_depth, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("OMEM results per bank (dotted: the seed's 384)")
    ax.set_ylabel("% of R*C*L peak")
    ax.set_title(f"DiT-XL/2 Base block, exion16 engine model, {bw} B/cycle", fontsize=9)
    ax.grid(True, lw=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def engine_block_drain(log, eb: dict, bws, drain: int = 4) -> dict:
    """Base on the DiT-XL/2 block with the wide OMEM drain (``omem_drain`` = ``drain``,
    configs/exion16_drain4.toml): best dataflow per GEMM, against :func:`engine_block`'s
    Base (``eb``). Only col-group's striped runs drain wide, so row-block's cycles are
    :func:`engine_block`'s; col-group is recomputed on the wide config."""
    from exion.golden.cycles import engine_cycles
    cfg = CFG.replace(name=f"{CFG.name}_drain{drain}", omem_drain=drain)
    shp = bl.shape("dit-xl2")
    H = shp["heads"]
    out = {}
    log(f"\nDiT-XL/2 Base block with a {drain}-wide OMEM drain ({cfg.name}; best dataflow "
        f"per GEMM; scores = the 16 heads):")
    log(f"  {'B/cyc':>5} {'drain 1':>10} {'drain ' + str(drain):>10} {'speedup':>7} "
        f"{'util 1':>7} {'util ' + str(drain):>7} {'scores 1':>9} {'scores ' + str(drain):>9}")
    for bw in bws:
        base = eb[f"base {bw}"]
        cyc, macs, per = 0, 0, {}
        for name, M, N, K, _, _, n in _block_gemms(shp):
            e = engine_cycles(cfg, np.ones((M, N), bool), K, dataflow="col-group",
                              gb_bytes=bw, k_chunk="auto", striped="auto")
            rb = base["row-block"]["gemms"][name]["cycles"]
            per[name] = min(e["cycles"], rb)
            cyc += n * per[name]
            macs += n * e["useful_macs"]
        one = base["best_per_gemm"]
        s1 = min(base[df]["gemms"]["scores"]["cycles"] for df in DATAFLOWS) * H
        row = {"cycles": cyc, "utilization": macs / (cfg.peak_macs * cyc), "gemms": per,
               "drain1_cycles": one["cycles"], "drain1_utilization": one["utilization"],
               "speedup": one["cycles"] / cyc}
        out[str(bw)] = row
        log(f"  {bw:>5} {one['cycles']:>10} {cyc:>10} {row['speedup']:>6.2f}x "
            f"{100 * one['utilization']:>6.1f}% {100 * row['utilization']:>6.1f}% "
            f"{s1:>9} {per['scores'] * H:>9}")
    return out


#: IMEM loader what-ifs (``golden.cycles.imem_loader_estimate``, a planned design, not
#: built): (config scale, scan L-words per cycle; 0 = C * m): today's replicated WMEM; C
#: times the columns per group and C * m scan words per cycle (what the bank / placed maps
#: give); and OMEM 16x as well (what an OMEM drain gives: every row block in one run).
LOADER_WHATIF = {"exion16": ({}, 1),
                 "bank_maps": ({"wmem_depth": 16}, 0),
                 "bank_maps_omem_x16": ({"wmem_depth": 16, "omem_depth": 16}, 0)}


#: WMEM scales of the loader's group-width crossover (G = f * 7 columns at K = 1152).
LOADER_WMEM_SCALES = (1, 2, 3, 4, 8, 16)


def engine_loader(log) -> dict:
    """The col-group engine with an IMEM loader (A streamed from the global buffer through
    the weights' bandwidth; every row block in one run; A fetched once per column group,
    the weights once per run), ``golden.cycles.imem_loader_estimate``, on the case of
    :func:`engine_model`, against today's row-block engine (A written by the host, not
    charged), with the what-ifs of :data:`LOADER_WHATIF`, and the group width at which the
    loader starts to pay (``crossover_64``: WMEM x f, C * m scan words, OMEM x 1 or 16)."""
    from exion.golden.cycles import engine_cycles, imem_loader_estimate
    M, N, K = 256, 1152, 1152
    mask = np.random.default_rng(0).random((M, N)) >= 0.8
    out = {}
    log("\nGemm engine with an IMEM loader (estimate, not built): 256 x 1152, s = 0.8, "
        "K = 1152 (ratio = row-block / loader, > 1: loader faster)")
    log(f"  {'what-if':20} {'B/cyc':>5} {'row-block':>10} {'loader':>10} {'ratio':>6} "
        f"{'weights MB':>10} {'A MB':>7} {'runs':>4} {'blk/run':>7} {'G':>4} bound")
    for bw in ENGINE_BWS:
        rb = engine_cycles(CFG, mask, K, dataflow="row-block", gb_bytes=bw)
        for name, (scale, sw) in LOADER_WHATIF.items():
            cfg = CFG.replace(name=f"{CFG.name}_{name}",
                              **{k: v * getattr(CFG, k) for k, v in scale.items()}) \
                if scale else CFG
            e = imem_loader_estimate(cfg, mask, K, gb_bytes=bw,
                                     scan_words=sw or cfg.cols * cfg.merge_ways)
            t0 = e["tiles"][0]
            r = {"row_block_cycles": rb["cycles"], "row_block_bytes": rb["bytes"]["gb_wmem"],
                 "cycles": e["cycles"], "compute_cycles": e["compute_cycles"],
                 "stall_cycles": e["stall_cycles"], "bytes": e["bytes"], "bound": e["bound"],
                 "runs": len(e["tiles"]), "blocks_per_run": t0["blocks"],
                 "cols_per_run": t0["ncols"], "group_cols": t0["gcols"],
                 "ratio_row_block_over_loader": rb["cycles"] / e["cycles"]}
            out[f"{name} {bw}"] = r
            log(f"  {name:20} {bw:>5} {rb['cycles']:>10} {e['cycles']:>10} "
                f"{r['ratio_row_block_over_loader']:>5.2f}x "
                f"{e['bytes']['gb_wmem'] / 1e6:>10.2f} {e['bytes']['gb_imem'] / 1e6:>7.2f} "
                f"{r['runs']:>4} {r['blocks_per_run']:>7} {r['group_cols']:>4} {e['bound']}")
    rb = engine_cycles(CFG, mask, K, dataflow="row-block", gb_bytes=64)["cycles"]
    cross = []
    for f in LOADER_WMEM_SCALES:
        for om in (1, 16):
            cfg = CFG.replace(name=f"{CFG.name}_w{f}_o{om}", wmem_depth=f * CFG.wmem_depth,
                              omem_depth=om * CFG.omem_depth)
            e = imem_loader_estimate(cfg, mask, K, gb_bytes=64,
                                     scan_words=CFG.cols * CFG.merge_ways)
            cross.append({"wmem_x": f, "omem_x": om, "group_cols": e["tiles"][0]["gcols"],
                          "blocks_per_run": e["tiles"][0]["blocks"], "cycles": e["cycles"],
                          "bytes": e["bytes"], "ratio_row_block_over_loader": rb / e["cycles"]})
    out["crossover_64"] = cross
    log("  group width crossover at 64 B/cycle (WMEM x f, C*m scan words; OMEM x1 / x16): "
        + ", ".join(f"G {a['group_cols']}: {a['ratio_row_block_over_loader']:.2f}x / "
                    f"{b['ratio_row_block_over_loader']:.2f}x"
                    for a, b in zip(cross[::2], cross[1::2])))
    return out


def engine_rtl(log) -> list:
    """The gemm engine (toy RTL, Verilated) against ``golden.cycles.engine_cycles``: a
    32 x 32 @ 32 x 16 product (seed 5) with a dense, a random 50 % and a column-concentrated
    (2 of 16 columns) mask, row-block and col-group, at unlimited, 6 and 2 B/cycle (a toy
    L-word is 6 bytes), and a 16 x 128 @ 128 x 32 product (K/L = 32: 8 columns a WMEM half,
    4 column groups; random 50 % mask) row-block, col-group single- and double-buffered at
    64, 128, 256, 6 and 2 B/cycle (on toy 64 B/cycle and more equal unlimited: a scan moves
    one 6-byte word per cycle, a row-block beat at most 36 bytes). RTL cycles, model cycles,
    stall cycles, weight bytes."""
    from exion.sim.gemm_rtl import GemmCase, plan_tiles, rtl_sparse_gemm
    from exion.golden.conmerge import masked_gemm
    from exion.golden.cycles import engine_cycles
    cfg = PRESETS["toy"]
    rng = np.random.default_rng(5)
    M, K, N = 4 * cfg.rows, 8 * cfg.lanes, 16
    a = rng.integers(cfg.wmin, cfg.wmax + 1, (M, K))
    b = rng.integers(cfg.wmin, cfg.wmax + 1, (K, N))
    col = np.zeros((M, N), bool)
    col[:, ::8] = True
    masks = {"dense": np.ones((M, N), bool), "random0.5": rng.random((M, N)) >= 0.5,
             "column": col}
    cases = [GemmCase(a, b, mk, dataflow=df, gb_bytes=gb, name=f"{nm}/{df}/{gb}")
             for nm, mk in masks.items() for df in ("row-block", "col-group")
             for gb in (0, 6, 2)]
    M2, K2, N2 = 2 * cfg.rows, 32 * cfg.lanes, 32
    a2 = rng.integers(cfg.wmin, cfg.wmax + 1, (M2, K2))
    b2 = rng.integers(cfg.wmin, cfg.wmax + 1, (K2, N2))
    m2 = rng.random((M2, N2)) >= 0.5
    cases += [GemmCase(a2, b2, m2, dataflow=df, gb_bytes=gb, double_buffer=db,
                       name=f"groups/{nm}/{gb}")
              for df, nm, db in (("row-block", "row-block", True),
                                 ("col-group", "cg-single", False),
                                 ("col-group", "cg-double", True))
              for gb in ENGINE_BWS + (6, 2)]
    outs, runs, _ = rtl_sparse_gemm(cfg, cases, seed=5, run_name="bench-engine")
    rows = []
    for c, o, r in zip(cases, outs, runs):
        e = engine_cycles(cfg, c.mask, c.a.shape[1], dataflow=c.dataflow, gb_bytes=c.gb_bytes,
                          regions=plan_tiles(cfg, c)[0].setup["regions"],
                          double_buffer=c.double_buffer)
        rtl = sum(r.tile_cycles)
        rows.append({"case": c.name, "rtl_cycles": rtl, "model_cycles": e["cycles"],
                     "model_over_rtl": e["cycles"] / rtl, "rtl_stall": sum(r.tile_stalls),
                     "weight_bytes": sum(r.tile_words) * cfg.lanes * cfg.width // 8,
                     "bit_exact": bool(np.array_equal(o, masked_gemm(cfg, c.a, c.b,
                                                                     c.mask)))})
    log("\nGemm engine, toy RTL vs model (32x32 @ 32x16 and, 'groups', 16x128 @ 128x32, "
        "seed 5):")
    log(f"  {'case':24} {'RTL':>6} {'model':>6} {'ratio':>6} {'stall':>6} {'bytes':>6}")
    for x in rows:
        log(f"  {x['case']:24} {x['rtl_cycles']:>6} {x['model_cycles']:>6} "
            f"{x['model_over_rtl']:>6.3f} {x['rtl_stall']:>6} {x['weight_bytes']:>6}"
            f"{'' if x['bit_exact'] else '  NOT BIT-EXACT'}")
    by = {x["case"]: x["rtl_cycles"] for x in rows}
    log("  'groups' ratios (RTL): " + ", ".join(
        f"{gb} B/cycle row-block / cg-double {by[f'groups/row-block/{gb}'] / by[f'groups/cg-double/{gb}']:.2f}x,"
        f" cg-single / cg-double {by[f'groups/cg-single/{gb}'] / by[f'groups/cg-double/{gb}']:.2f}x"
        for gb in ENGINE_BWS + (6, 2)))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 and 256 B/cycle only")
    ap.add_argument("--out", type=Path, default=Path("build/bench"))
    ap.add_argument("--rtl", action="store_true",
                    help="also run toy products through the Verilated gemm engine and "
                         "compare its cycles with the model (needs Verilator; ~1-2 min)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    bws = (64, 256) if args.quick else BWS
    t_start = time.perf_counter()
    print(f"perf_dataflow: {CFG.name}, DiT-XL/2 block, seed {SEED}, bandwidths {bws}")
    rows = xl_sweep(bws, print)
    print_sweep(rows)
    g = goals(rows, bws)
    print_goals(g)
    tp = digits_trace(print)
    bm = bank_maps(tp, print)
    print_bank_maps(bm)
    db, src = digits_block(tp)
    print(f"\nDigits DiT block from real masks ({src}), 64 B/cycle:")
    for k, v in db.items():
        print(f"  {k:18} {v['cycles']:>7} cycles (FFN {v['ffn_cycles']:>5}, EPRE "
              f"{v['epre_cycles']:>5}), {v['bound']}")
    png = args.out / "dataflow_roofline.png"
    plot(rows, bws, png)
    res = {"config": CFG.name, "seed": SEED, "bandwidths": list(bws), "xl": rows,
           "goals": g, "bank_maps": bm, "digits_block": {"source": src, **db},
           "engine_model": engine_model(print), "engine_loader": engine_loader(print),
           "engine_block": engine_block(print, bws),
           "engine_rtl": engine_rtl(print) if args.rtl else None,
           "seconds": time.perf_counter() - t_start}
    res["engine_block_drain4"] = engine_block_drain(print, res["engine_block"], bws)
    # the 4-wide drain with a 2x OMEM (configs/exion16_omem2x.toml): the 90 % design
    res["engine_block_omem2x"] = engine_block(print, bws, OMEM2X, kinds=("column",))
    today = _find(rows, mode="base", bw=64, dataflow="row-block")["cycles"] if 64 in bws else 0
    res["engine_goals"] = {c.name: engine_goals(print, eb, today, c.name) for c, eb in
                           ((CFG, res["engine_block"]), (OMEM2X, res["engine_block_omem2x"]))}
    if 256 in bws:
        d4 = res["engine_block_drain4"]["256"]      # the seed's depth: computed above
        res["omem_sweep"] = omem_sweep(print, known={
            f"{CFG.omem_depth} 1": res["engine_block"]["base 256"]["best_per_gemm"],
            f"{CFG.omem_depth} 4": d4, "768 4": res["engine_block_omem2x"]["base 256"][
                "best_per_gemm"]})
        plot_omem_sweep(res["omem_sweep"], args.out / "dataflow_omem_sweep.png")
    res["seconds"] = time.perf_counter() - t_start
    (args.out / "dataflow.json").write_text(json.dumps(res, indent=1) + "\n")
    epng = args.out / "dataflow_engine_block.png"
    plot_engine_block(res["engine_block"], epng, res["engine_block_omem2x"], OMEM2X.name)
    print(f"wrote {args.out / 'dataflow.json'}, {png} and {epng} ({res['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
