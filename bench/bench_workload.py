"""Workload benchmark: the cycle model (golden.cycles) on the digits DiT's real masks and on
DiT-XL/2 shapes with masks synthesized from the digits DiT's measured sparsity statistics.

1. Real masks: a traced run of the shipped digits DiT (``exion.workloads.trace``; 100 DDIM
   steps, 4 samples, FFN-Reuse N = 2, s = 0.8, EP k = 0.5, INT12). Every block, iteration
   and sample goes through ``transformer_block`` (exion16, T = 16, d = 64, 4 heads,
   FFN 256) in modes Base / EP / FFNR / All; dense iterations have no FFN mask (FFNR = Base
   there). ConMerge utilization of FC1 on the real masks (the 4 samples stacked as 64 rows).
2. DiT-XL/2 (T = 256, d = 1152, 16 heads, FFN 4608, 100 steps, N = 2): FC1 masks
   ``P(i, j) = rho * r_i * c_j`` (Bernoulli, clipped, rescaled to mean rho) with r_i drawn
   from the measured per-token (row) density factors and c_j from the measured per-hidden-
   unit (column) density factors of the real masks, rho = measured mean density. EP score
   masks: exactly ceil(k T) keys per query, drawn without replacement (Gumbel top-k) with
   per-key weights from the measured key-popularity factors. Per-iteration cycles of one
   block; 100-step totals: Base = 100 Base, EP = 100 EP, FFNR = 34 Base + 66 FFNR,
   All = 34 EP + 66 All.
3. Utilization vs merge ways m (1, 2, 4, 8, 16) and FC1 sparsity, compute- vs memory-bound.
4. Per-layer cosine similarity of GELU outputs between consecutive iterations (vanilla INT12).

Writes ``build/bench/workload.json`` and PNGs ``workload_cosine.png``,
``workload_sparsity.png``, ``workload_utilization.png``. Run:
``.venv/bin/python bench/bench_workload.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from exion import PRESETS
from exion.golden.conmerge import conmerge
from exion.golden.cycles import MODES, gemm_cycles, transformer_block
from exion.workloads import trace as tr
from exion.workloads.dit import DiT, Exion, sample
from exion.workloads.weights import load_weights

CFG = "exion16"
STEPS, SAMPLES, N, S, K = 100, 4, 2, 0.8, 0.5
XL = {"T": 256, "d": 1152, "heads": 16, "ffn": 4608, "blocks": 28}
WAYS = (1, 2, 4, 8, 16)
SPARSITIES = (0.5, 0.8, 0.9, 0.95)
T_TINY, D_TINY, H_TINY, F_TINY = 16, 64, 4, 256


def _schedule_totals(per_it: dict, n_dense: int, n_sparse: int, key: str) -> dict:
    """100-step totals from one sparse iteration's per-mode figures (see the docstring)."""
    m = per_it
    tot = {"Base": (n_dense + n_sparse) * m["Base"][key],
           "EP": (n_dense + n_sparse) * m["EP"][key],
           "FFNR": n_dense * m["Base"][key] + n_sparse * m["FFNR"][key],
           "All": n_dense * m["EP"][key] + n_sparse * m["All"][key]}
    return tot


def _compute_total(v: dict) -> int:
    return v["sdue_cycles"] + v["epre_cycles"]


def _bound(v: dict) -> str:
    fill = sum(g["fill"] for g in v["gemms"])
    comp = sum(g["compute"] for g in v["gemms"])
    return "memory-bound" if fill > comp else "compute-bound"


def _ffn_cycles(v: dict) -> int:
    return sum(g["sdue_cycles"] for g in v["gemms"] if g["name"] in ("fc1", "fc2"))


# -- 1. real masks ------------------------------------------------------------------------
def real_masks(model, steps, samples, log):
    ex = Exion(ffn_reuse=True, n=N, s=S, ep=True, k=K, quant=True)
    t0 = time.perf_counter()
    arrays, meta = tr.collect(model, steps=steps, samples=samples, seed=0, ex=ex, light=True)
    log(f"traced {steps} steps x {samples} samples in {time.perf_counter() - t0:.1f} s; "
        f"FFN-Reuse sparsity {meta['ffn_sparsity']:.3f}, EP sparsity {meta['ep_sparsity']:.3f}")
    return arrays, meta


def real_cycles(cfg, arrays, meta, m, log):
    """Mode totals over every block, iteration and sample of the traced run."""
    tot = {mode: {"compute": 0, "memory": 0, "ffn": 0} for mode in MODES}
    bounds = {mode: {"memory-bound": 0, "compute-bound": 0} for mode in MODES}
    t0 = time.perf_counter()
    for b in range(meta["depth"]):
        for t in range(meta["steps"]):
            fm = arrays.get(tr.key(b, t, "fc1_mask"))
            em = arrays[tr.key(b, t, "ep_mask")]
            sq, sk, sv = (arrays[tr.key(b, t, f"ep_skip_{x}")] for x in "qkv")
            for s in range(meta["samples"]):
                r = transformer_block(
                    cfg, T_TINY, D_TINY, H_TINY, ffn=F_TINY,
                    ffn_mask=None if fm is None else fm[s * T_TINY:(s + 1) * T_TINY],
                    score_mask=em[s], skip_q=sq[s], skip_k=sk[s], skip_v=sv[s],
                    merge_ways=m, memory=True)
                for mode, v in r["modes"].items():
                    tot[mode]["compute"] += _compute_total(v)
                    tot[mode]["memory"] += v["total"]
                    tot[mode]["ffn"] += _ffn_cycles(v)
                    bounds[mode][_bound(v)] += 1
    log(f"real-mask cycle model: {time.perf_counter() - t0:.1f} s")
    base = tot["Base"]
    out = {}
    for mode in MODES:
        v = tot[mode]
        out[mode] = {**v, "speedup_compute": base["compute"] / v["compute"],
                     "speedup_memory": base["memory"] / v["memory"],
                     "speedup_ffn": base["ffn"] / v["ffn"],
                     "bound_counts": bounds[mode]}
    return out


def real_utilization(cfg, arrays, meta):
    """FC1 ConMerge utilization on the real masks (samples stacked: 64 x 256), per m.
    Masks are constant over a dense window; each window's mask is counted once."""
    res = {}
    masks = []
    for b in range(meta["depth"]):
        for t in range(meta["steps"]):
            if t > 0 and meta["dense"][t - 1] and not meta["dense"][t]:
                masks.append(arrays[tr.key(b, t, "fc1_mask")])
    for m in WAYS:
        masked = passes = dense = cond = 0
        cyc_u = []
        for mk in masks:
            p = conmerge(cfg, mk, merge_ways=m)
            masked += p.masked
            passes += p.n_passes
            dense += p.dense_passes
            cond += p.condense_passes
            if m == cfg.merge_ways:
                cyc_u.append(gemm_cycles(cfg, D_TINY, p, mask=mk).utilization)
        rc = cfg.rows * cfg.cols
        res[m] = {"utilization": masked / (passes * rc), "passes": passes,
                  "dense_passes": dense, "condense_passes": cond,
                  "dense_utilization": masked / (dense * rc),
                  "condense_utilization": masked / (cond * rc)}
        if cyc_u:
            res[m]["mac_utilization_K64"] = float(np.mean(cyc_u))
    return res, len(masks)


def mask_stats(arrays, meta):
    """Row / column density factors of the FC1 masks and key-popularity factors of EP."""
    rows, cols, keys, dens, dom = [], [], [], [], []
    per_layer_ffn = [[] for _ in range(meta["depth"])]
    per_layer_ep = [[] for _ in range(meta["depth"])]
    T = meta["tokens"]
    for b in range(meta["depth"]):
        for t in range(meta["steps"]):
            em = arrays[tr.key(b, t, "ep_mask")]
            per_layer_ep[b].append(1 - em.mean())
            kf = em.mean(axis=2)                       # (B, heads, T) per-key popularity
            keys.append((kf / kf.mean(axis=-1, keepdims=True)).ravel())
            dom.append(arrays[tr.key(b, t, "ep_dominant")].mean())
            fm = arrays.get(tr.key(b, t, "fc1_mask"))
            if fm is None:
                continue
            per_layer_ffn[b].append(1 - fm.mean())
            if not (t > 0 and meta["dense"][t - 1]):
                continue                                 # one per dense window
            dens.append(fm.mean())
            cols.append(fm.mean(axis=0) / fm.mean())
            for s in range(meta["samples"]):
                blk = fm[s * T:(s + 1) * T]
                rows.append(blk.mean(axis=1) / blk.mean())
    return {"row_factors": np.concatenate(rows), "col_factors": np.concatenate(cols),
            "key_factors": np.concatenate(keys), "density": float(np.mean(dens)),
            "dominant_fraction": float(np.mean(dom)),
            "ffn_sparsity_per_layer": [float(np.mean(v)) for v in per_layer_ffn],
            "ep_sparsity_per_layer": [float(np.mean(v)) for v in per_layer_ep]}


def _cv(x):
    return float(np.std(x) / np.mean(x))


# -- 2. synthesized DiT-XL/2 masks -------------------------------------------------------
def synth_ffn_mask(rng, st, T, F, rho):
    r = rng.choice(st["row_factors"], T)
    c = rng.choice(st["col_factors"], F)
    p = np.outer(r, c) * rho
    for _ in range(20):                                   # clip at 1, rescale to mean rho
        p = np.minimum(p, 1.0)
        p *= rho / p.mean()
    return rng.random((T, F)) < np.minimum(p, 1.0)


def synth_score_mask(rng, st, heads, T, k):
    k_n = math.ceil(k * T)
    out = np.zeros((heads, T, T), bool)
    for h in range(heads):
        w = rng.choice(st["key_factors"], T)
        g = np.log(w + 1e-3)[None, :] + rng.gumbel(size=(T, T))
        np.put_along_axis(out[h], np.argsort(-g, axis=1)[:, :k_n], True, axis=1)
    return out


def xl_block(cfg, st, m, rho, seed=0):
    rng = np.random.default_rng(seed)
    fm = synth_ffn_mask(rng, st, XL["T"], XL["ffn"], rho)
    sm = synth_score_mask(rng, st, XL["heads"], XL["T"], K)
    r = transformer_block(cfg, XL["T"], XL["d"], XL["heads"], ffn=XL["ffn"], ffn_mask=fm,
                          score_mask=sm, skip_q=np.zeros(XL["T"], bool),
                          skip_k=~sm.any(axis=1), skip_v=~sm.any(axis=1),
                          merge_ways=m, memory=True)
    per_it = {}
    for mode, v in r["modes"].items():
        per_it[mode] = {"compute": _compute_total(v), "memory": v["total"],
                        "ffn": _ffn_cycles(v), "sdue": v["sdue_cycles"],
                        "epre": v["epre_cycles"], "stall": v["stall_cycles"],
                        "bound": _bound(v), "utilization_compute":
                            v["useful_macs"] / (cfg.peak_macs * _compute_total(v))}
    fm_stats = {"density": float(fm.mean()), "row_cv": _cv(fm.mean(axis=1)),
                "col_cv": _cv(fm.mean(axis=0)),
                "score_density": float(sm.mean())}
    return per_it, fm, fm_stats


def xl_totals(per_it, steps=STEPS, n=N):
    n_dense = sum(1 for t in range(steps) if t % (n + 1) == 0)
    n_sparse = steps - n_dense
    out = {}
    for key in ("compute", "sdue", "memory", "ffn"):
        tot = _schedule_totals(per_it, n_dense, n_sparse, key)
        out[key] = {mode: {"cycles_per_block": tot[mode],
                           "speedup": tot["Base"] / tot[mode]} for mode in MODES}
    return out


def xl_utilization(cfg, st, log):
    """FC1 (K = 1152) on synthesized masks: utilization vs m and sparsity, bound."""
    rows = []
    for s in SPARSITIES:
        rng = np.random.default_rng(7)
        fm = synth_ffn_mask(rng, st, XL["T"], XL["ffn"], 1 - s)
        for m in WAYS:
            p = conmerge(cfg, fm, merge_ways=m)
            g = gemm_cycles(cfg, XL["d"], p, mask=fm, name="fc1")
            rows.append({"sparsity": s, "achieved": float(1 - fm.mean()), "m": m,
                         "passes": p.n_passes, "dense_passes": p.dense_passes,
                         "conmerge_utilization": p.utilization,
                         "mac_utilization": g.utilization, "speedup": g.speedup,
                         "sdue_cycles": g.sdue_cycles, "fill": g.fill, "stall": g.stall,
                         "bound": g.bound})
        log(f"  s = {s}: " + ", ".join(f"m={r['m']} {100 * r['conmerge_utilization']:.1f}%"
                                       for r in rows[-len(WAYS):]))
    return rows


# -- 4. cosine similarity ------------------------------------------------------------------
def cosine(model, steps, samples):
    cur = {"it": -1}
    hs: dict[int, list] = {}

    def hook(i, name, arr):
        if name == "iteration":
            cur["it"] = int(arr[0])
        elif name == "gelu_out":
            hs.setdefault(i, []).append(np.asarray(arr, np.float64).reshape(arr.shape[0], -1))

    sample(model, samples, steps, Exion(quant=True), seed=0, hook=hook)
    out = {}
    for i, lst in sorted(hs.items()):
        a = np.stack(lst)                                   # (S, B, T*F)
        num = (a[1:] * a[:-1]).sum(-1)
        den = np.linalg.norm(a[1:], axis=-1) * np.linalg.norm(a[:-1], axis=-1)
        out[i] = (num / den).mean(axis=1).tolist()          # (S-1,) mean over samples
    return out


# -- plots -----------------------------------------------------------------------------
def plots(out_dir, cos, st, util_xl, util_real, cfg):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, v in cos.items():
        ax.plot(range(1, len(v) + 1), v, label=f"block {i} (mean {np.mean(v):.4f})")
    ax.set_xlabel("DDIM iteration t (vs t-1)")
    ax.set_ylabel("cosine similarity of GELU outputs")
    ax.set_title("Digits DiT, INT12, 100 steps: H(t) vs H(t-1)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "workload_cosine.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    x = np.arange(len(st["ffn_sparsity_per_layer"]))
    ax.bar(x - 0.2, st["ffn_sparsity_per_layer"], 0.4, label="FFN-Reuse (inter, sparse its)")
    ax.bar(x + 0.2, st["ep_sparsity_per_layer"], 0.4, label="eager prediction (intra)")
    ax.set_xticks(x, [f"block {i}" for i in x])
    ax.set_ylabel("sparsity")
    ax.set_ylim(0, 1)
    ax.set_title(f"Measured sparsity per layer (N = {N}, s = {S}, k = {K})")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / "workload_sparsity.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for s in SPARSITIES:
        r = [x for x in util_xl if x["sparsity"] == s]
        ax.plot([x["m"] for x in r], [x["conmerge_utilization"] for x in r], "o-",
                label=f"DiT-XL/2 FC1 synth., s = {s}")
    ax.plot(list(util_real), [v["utilization"] for v in util_real.values()], "k*--",
            label="digits DiT FC1, real masks (64 x 256)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(WAYS, [str(m) for m in WAYS])
    ax.set_xlabel(f"merge ways m ({cfg.name}, R = C = {cfg.rows})")
    ax.set_ylabel("ConMerge utilization (masked / passes R C)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "workload_utilization.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("build/bench"))
    ap.add_argument("--quick", action="store_true",
                    help="20 steps, 2 samples for the real masks (smoke run)")
    args = ap.parse_args(argv)
    steps, samples = (20, 2) if args.quick else (STEPS, SAMPLES)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = PRESETS[CFG]
    model = DiT(load_weights()[0])
    t_start = time.perf_counter()

    arrays, meta = real_masks(model, steps, samples, print)
    st = mask_stats(arrays, meta)
    real = real_cycles(cfg, arrays, meta, cfg.merge_ways, print)
    util_real, n_masks = real_utilization(cfg, arrays, meta)
    print(f"\nDigits DiT, real masks ({steps} steps, {samples} samples, {CFG}, "
          f"m = {cfg.merge_ways}), per-sample T = 16:")
    print("mode   compute-only speedup   with memory stalls   FFN (fc1+fc2) speedup")
    for mode in MODES:
        v = real[mode]
        print(f"{mode:6s} {v['speedup_compute']:10.3f}x {v['speedup_memory']:18.3f}x "
              f"{v['speedup_ffn']:18.3f}x   bound {v['bound_counts']}")
    print(f"FC1 ConMerge utilization on the real masks ({n_masks} window masks, 64 x 256):")
    for m, v in util_real.items():
        print(f"  m = {m:2d}: {100 * v['utilization']:.1f} % (dense "
              f"{100 * v['dense_utilization']:.1f} %, condense-only "
              f"{100 * v['condense_utilization']:.1f} %)")

    print(f"\nMask statistics (synthesis inputs): FC1 density {st['density']:.3f}, "
          f"row-factor CV {_cv(st['row_factors']):.3f}, column-factor CV "
          f"{_cv(st['col_factors']):.3f}, key-factor CV {_cv(st['key_factors']):.3f}, "
          f"dominant rows {st['dominant_fraction']:.3f}")
    xl = {}
    for m in (cfg.merge_ways, 16):
        per_it, _, fstats = xl_block(cfg, st, m, st["density"])
        xl[m] = {"per_iteration": per_it, "totals": xl_totals(per_it), "mask": fstats}
    print(f"DiT-XL/2 synthesized masks: density {xl[4]['mask']['density']:.3f}, row CV "
          f"{xl[4]['mask']['row_cv']:.3f}, column CV {xl[4]['mask']['col_cv']:.3f}")
    for m, v in xl.items():
        print(f"DiT-XL/2 ({CFG}, m = {m}), 100 steps, N = 2, per block (x28 blocks):")
        print("mode   compute-only cycles  speedup   with stalls   speedup   FFN speedup  "
              "bound (sparse it)")
        for mode in MODES:
            c, mm, f = (v["totals"][k][mode] for k in ("compute", "memory", "ffn"))
            print(f"{mode:6s} {c['cycles_per_block']:18,d} {c['speedup']:7.3f}x "
                  f"{mm['cycles_per_block']:13,d} {mm['speedup']:7.3f}x {f['speedup']:9.3f}x"
                  f"   {v['per_iteration'][mode]['bound']}")
    print("\nDiT-XL/2 FC1 (K = 1152) ConMerge utilization vs m and sparsity:")
    util_xl = xl_utilization(cfg, st, print)

    cos = cosine(model, steps, samples)
    print("\nMean cosine similarity of consecutive GELU outputs per block: " +
          ", ".join(f"{np.mean(v):.4f}" for v in cos.values()))
    plots(args.out, cos, st, util_xl, util_real, cfg)

    for m, v in xl.items():
        print(f"DiT-XL/2 m = {m}, SDUE only (EPRE hidden): " + ", ".join(
            f"{mode} {v['totals']['sdue'][mode]['speedup']:.3f}x" for mode in MODES))
    all_real = real["All"]["speedup_compute"]
    all_xl = xl[cfg.merge_ways]["totals"]["compute"]["All"]["speedup"]
    print(f"\nAll vs Base (compute-only, {CFG}, m = {cfg.merge_ways}): digits DiT real masks "
          f"{all_real:.3f}x, DiT-XL/2 synthesized {all_xl:.3f}x; ConMerge utilization on the "
          f"real FC1 masks {100 * util_real[cfg.merge_ways]['utilization']:.1f} %")
    res = {"config": CFG, "steps": steps, "samples": samples, "N": N, "s": S, "k": K,
           "trace_meta": {k: meta[k] for k in ("ffn_sparsity", "ep_sparsity", "per_layer")},
           "real": real, "real_fc1_utilization": util_real,
           "stats": {k: v for k, v in st.items() if not k.endswith("factors")} |
           {f"{k}_cv": _cv(st[k]) for k in ("row_factors", "col_factors", "key_factors")},
           "dit_xl2": {str(m): v for m, v in xl.items()}, "dit_xl2_fc1_utilization": util_xl,
           "cosine": {str(k): v for k, v in cos.items()},
           "cosine_mean": {str(k): float(np.mean(v)) for k, v in cos.items()},
           "seconds": time.perf_counter() - t_start}
    (args.out / "workload.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out / 'workload.json'} and 3 PNGs in {args.out} "
          f"({res['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
