"""EP mask structure: real masks of the digits64 DiT against synthetic ones (issue 19).

The system model prices eager prediction on synthetic score masks
(:func:`exion.golden.block.synth_ep`). With i.i.d. logits every query picks its keys
independently, so a 16-query row block needs almost every key and ConMerge packs a
50 %-dense mask into as many passes as the dense product. Real attention is not like that:
queries agree on which keys matter. This script measures it and fits the synthetic model's
key correlation rho (``sqrt(rho) z[key] + sqrt(1 - rho) z[query, key]``):

1. sample the shipped digits64 DiT (64 tokens, 4 heads) with eager prediction at each k of
   ``--ks`` (``workloads.trace.collect``, ``--steps`` DDIM steps, ``--samples`` images,
   FFN-Reuse off) and keep every block's score masks of the recorded iterations;
2. per k, the real masks' density, their **union density over 16-query row blocks** (the
   fraction of keys an SDUE row block needs) and the masked scores GEMM's cycles
   (``golden.dataflow.gemm_flow``, exion16, col-group, d_head 64) against the dense one;
3. the same for synthetic masks at every rho of ``--rhos``; the fitted rho minimizes the
   squared error of the union density over the ks.

Prints a table, writes ``build/bench/ep_masks.json`` and ``ep_masks.png`` (union density
against k: real points, synthetic curves). ``golden.block.EP_KEY_CORR`` is this fit,
rounded (docs/evaluate.md, "EP masks"). Run: ``.venv/bin/python bench/perf_ep_masks.py``
(about a minute).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from exion.config import PRESETS
from exion.golden import block as bl
from exion.golden.dataflow import gemm_flow
from exion.paths import build_root

KS = (0.05, 0.2, 0.5, 0.8)
RHOS = tuple(round(0.05 * i, 2) for i in range(19))
ROWS = 16


def union_density(masks: np.ndarray, rows: int = ROWS) -> float:
    """Mean fraction of keys that some query of a ``rows``-query block keeps; ``masks`` is
    (n, T, T)."""
    n, T, _ = masks.shape
    return float(np.mean([masks[i, r:r + rows].any(axis=0).mean()
                          for i in range(n) for r in range(0, T, rows)]))


def scores_cycles(cfg, masks: np.ndarray, d_head: int) -> float:
    """Mean col-group cycles of the masked scores GEMM (T x d_head x T) over ``masks``."""
    T = masks.shape[1]
    return float(np.mean([gemm_flow(cfg, T, T, d_head, mask=m).cycles for m in masks]))


def real_masks(k: float, steps: int, samples: int, seed: int) -> np.ndarray:
    """Every (sample, block, head) score mask of the digits64 DiT at top-k ratio ``k``, as
    (n, T, T), from iterations spread over the run."""
    from exion.workloads import trace as tr
    from exion.workloads.dit import DiT, Exion
    from exion.workloads.weights import load_weights
    model = DiT(load_weights(None, model="digits64")[0])
    ex = Exion(ffn_reuse=False, ep=True, k=k, quant=True)
    its = sorted({0, steps // 4, steps // 2, steps - 1})
    arrays, _ = tr.collect(model, steps=steps, samples=samples, seed=seed, ex=ex,
                           iterations=its, ffn=False, light=True)
    ms = [v for name, v in arrays.items() if name.endswith("ep_mask")]
    return np.concatenate([m.reshape(-1, m.shape[-2], m.shape[-1]) for m in ms])


def synth_masks(k: float, rho: float, T: int, n: int, seed: int) -> np.ndarray:
    return bl.synth_ep(np.random.default_rng([seed, int(1000 * k), int(100 * rho)]), n, T,
                       k, key_corr=rho)["score_mask"]


def run(ks=KS, rhos=RHOS, steps=20, samples=4, seed=0, d_head=64) -> dict:
    cfg = PRESETS["exion16"]
    out = {"model": "digits64", "steps": steps, "samples": samples, "seed": seed,
           "d_head": d_head, "rows": ROWS, "ks": list(ks), "rhos": list(rhos), "real": {},
           "synthetic": {}}
    T = None
    for k in ks:
        m = real_masks(k, steps, samples, seed)
        T = m.shape[1]
        sub = m[::max(1, len(m) // 16)]
        out["real"][str(k)] = {"masks": len(m), "density": float(m.mean()),
                               "union16": union_density(m),
                               "scores_cycles": scores_cycles(cfg, sub, d_head)}
    out["dense_scores_cycles"] = gemm_flow(cfg, T, T, d_head).cycles
    for rho in rhos:
        row = {}
        for k in ks:
            s = synth_masks(k, rho, T, 32, seed)
            row[str(k)] = {"density": float(s.mean()), "union16": union_density(s),
                           "scores_cycles": scores_cycles(cfg, s[::2], d_head)}
        out["synthetic"][str(rho)] = row
    err = {r: sum((out["synthetic"][str(r)][str(k)]["union16"]
                   - out["real"][str(k)]["union16"]) ** 2 for k in ks) for r in rhos}
    out["fit_rho"] = min(err, key=err.get)
    out["fit_rms"] = math.sqrt(err[out["fit_rho"]] / len(ks))
    out["iid_rms"] = math.sqrt(err[rhos[0]] / len(ks)) if rhos[0] == 0 else None
    return out


def _print(res):
    print(f"digits64 real EP masks vs synthetic (union density of {ROWS}-query blocks; "
          f"masked scores GEMM cycles, dense = {res['dense_scores_cycles']})")
    fit = str(res["fit_rho"])
    print(f"{'k':>5} {'density':>8} {'real u16':>9} {'iid u16':>8} {'fit u16':>8} "
          f"{'real cyc':>9} {'iid cyc':>8} {'fit cyc':>8}")
    for k in res["ks"]:
        r, i = res["real"][str(k)], res["synthetic"]["0.0"][str(k)]
        f = res["synthetic"][fit][str(k)]
        print(f"{k:>5} {r['density']:>8.3f} {r['union16']:>9.3f} {i['union16']:>8.3f} "
              f"{f['union16']:>8.3f} {r['scores_cycles']:>9.0f} {i['scores_cycles']:>8.0f} "
              f"{f['scores_cycles']:>8.0f}")
    print(f"fitted key correlation rho = {res['fit_rho']} (union16 rms {res['fit_rms']:.3f}; "
          f"i.i.d. rms {res['iid_rms']:.3f}); golden.block.EP_KEY_CORR = {bl.EP_KEY_CORR}")


def _plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ks = res["ks"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for rho in ("0.0", "0.5", str(res["fit_rho"]), "0.9"):
        if rho in res["synthetic"]:
            ax.plot(ks, [res["synthetic"][rho][str(k)]["union16"] for k in ks], "-",
                    label=f"synthetic rho = {rho}")
    ax.plot(ks, [res["real"][str(k)]["union16"] for k in ks], "ko", label="digits64 real")
    ax.set_xlabel("top-k ratio k")
    ax.set_ylabel(f"keys a {ROWS}-query block needs (fraction)")
    ax.set_title("EP masks: real vs synthetic key correlation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    ap.add_argument("--samples", type=int, default=4, help="images per k (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output directory (default build/bench)")
    a = ap.parse_args(argv)
    res = run(steps=a.steps, samples=a.samples, seed=a.seed)
    _print(res)
    out = Path(a.out) if a.out else build_root() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ep_masks.json").write_text(json.dumps(res, indent=1))
    _plot(res, out / "ep_masks.png")
    print(f"wrote {out / 'ep_masks.json'}, {out / 'ep_masks.png'}")


if __name__ == "__main__":
    main()
