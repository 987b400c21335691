"""The accuracy table of EXION's software optimizations on the digits DiT.

Rows (same seeds, same noise, same labels): Vanilla (float), FFN-Reuse (magnitude rule),
its two controls at the same sparsity (random mask, zero-fill instead of reuse), +EP
(FFN-Reuse + eager prediction) and +Quant (FFN-Reuse + EP + INT12 path); also Vanilla INT12
for reference. Columns: achieved inter-iteration (FFN-Reuse, mean over sparse iterations)
and intra-iteration (EP) sparsity, PSNR vs vanilla, digit-classifier accuracy (label = the
class the sample was conditioned on) and FD-PCA (below).

Definitions **[choice]**:

* PSNR vs vanilla: images clipped to [-1, 1] (peak-to-peak 2), ``10 log10(4 / MSE)`` with
  the MSE over every pixel of every sample against the vanilla float run of the same seed.
* Classifier: scikit-learn ``SVC(gamma=0.001, C=10)`` on all 1797 digits (pixel scale
  [0, 16]); samples are mapped to that scale and clipped. Its accuracy on the training
  data is reported in the JSON; it is a scorer, not a held-out benchmark.
* FD-PCA: the Frechet distance between Gaussians fitted to the samples and to the 1797 real
  digits, in the space of the dataset's first 16 principal components (pixel scale / 16).
  It is *not* FID (no Inception features, 8x8 images); with ~100 samples its estimate is
  biased upward, so the JSON carries the floor: the same statistic for 100 real digits drawn
  at random (seed 0) against the whole set. Compare rows with each other and with the floor.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from exion.errors import ExionError

from .common import load_digits_images, to_pixels
from .dit import DiT, Exion, sample
from .weights import load_weights

__all__ = ["classifier", "classify", "psnr", "fd_pca", "accuracy_table", "to_markdown",
           "sweep", "plot_sweep"]

N_PCA = 16


@lru_cache(maxsize=1)
def classifier():
    """The digit classifier (fit once per process, deterministic)."""
    from sklearn.svm import SVC
    imgs, labels = load_digits_images()
    clf = SVC(gamma=0.001, C=10.0)
    clf.fit(to_pixels(imgs).reshape(len(imgs), -1), labels)
    return clf


def classify(images) -> np.ndarray:
    x = to_pixels(images).reshape(len(images), -1)
    return classifier().predict(x)


def class_accuracy(images, labels) -> float:
    return float(np.mean(classify(images) == np.asarray(labels)))


def psnr(images, ref) -> float:
    a = np.clip(images, -1, 1)
    b = np.clip(ref, -1, 1)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)


@lru_cache(maxsize=1)
def _pca_real():
    imgs, _ = load_digits_images()
    x = to_pixels(imgs).reshape(len(imgs), -1) / 16.0
    mu = x.mean(0)
    _, _, vt = np.linalg.svd(x - mu, full_matrices=False)
    basis = vt[:N_PCA].T
    f = (x - mu) @ basis
    return mu, basis, f.mean(0), np.cov(f, rowvar=False), f


def _psd_sqrt(c):
    """The symmetric square root of a covariance (its negative rounding eigenvalues as 0)."""
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _frechet(m1, c1, m2, c2) -> float:
    """Frechet distance of two Gaussians. ``tr sqrt(c1 c2)`` as the trace of the symmetric
    ``sqrt(s1 c2 s1)``, ``s1 = sqrt(c1)`` (the same value for covariances): defined for a
    singular covariance (fewer samples than PCA dimensions), where ``scipy.linalg.sqrtm``
    of the product only warns."""
    s1 = _psd_sqrt(c1)
    tr_covmean = float(np.trace(_psd_sqrt(s1 @ c2 @ s1)))
    return float(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2) - 2 * tr_covmean)


def fd_pca(images) -> float:
    mu, basis, fm, fc, _ = _pca_real()
    x = to_pixels(images).reshape(len(images), -1) / 16.0
    f = (x - mu) @ basis
    return _frechet(f.mean(0), np.cov(f, rowvar=False), fm, fc)


def fd_pca_floor(n: int = 100, seed: int = 0) -> float:
    _, _, fm, fc, f = _pca_real()
    idx = np.random.default_rng(seed).choice(len(f), n, replace=False)
    return _frechet(f[idx].mean(0), np.cov(f[idx], rowvar=False), fm, fc)


def _row(name, res, ref, seconds):
    return {"row": name, "inter_sparsity": res.ffn_sparsity, "intra_sparsity": res.ep_sparsity,
            "psnr_vs_vanilla": psnr(res.images, ref), "accuracy": class_accuracy(
                res.images, res.labels), "fd_pca": fd_pca(res.images),
            "ffn_sparsity_per_layer": res.per_layer.get("ffn_sparsity"),
            "ep_sparsity_per_layer": res.per_layer.get("ep_sparsity"),
            "seconds": round(seconds, 1)}


def table_rows(n: int, s: float, k: float, q_th, lod_terms: int, rule: str):
    """(name, Exion) of the table for one (N, s)."""
    fr = Exion(ffn_reuse=True, n=n, s=s, rule=rule)
    ep = replace(fr, ep=True, k=k, q_th=q_th, lod_terms=lod_terms)
    return [
        ("FFN-Reuse", fr),
        ("control: random mask", replace(fr, control="random")),
        ("control: zero-fill", replace(fr, control="zero")),
        ("+EP", ep),
        ("+Quant", replace(ep, quant=True)),
    ]


def accuracy_table(model: DiT | None = None, steps=(50, 100), n_samples: int = 100,
                   seed: int = 0, n: int = 2, s_list=(0.8, 0.95), k: float = 0.5,
                   q_th=None, lod_terms: int = 2, rule: str = "magnitude",
                   log=None) -> dict:
    """The table as a JSON-ready dict (see the module docstring)."""
    model = DiT(load_weights()[0]) if model is None else model
    out = {"n_samples": n_samples, "seed": seed, "N": n, "s": list(s_list), "k": k,
           "q_th": q_th, "lod_terms": lod_terms, "rule": rule,
           "fd_pca_floor": fd_pca_floor(n_samples, seed),
           "classifier_train_accuracy": class_accuracy(*load_digits_images()),
           "tables": []}
    for st in steps:
        t0 = time.time()
        van = sample(model, n_samples, st, Exion(), seed)
        ref = van.images
        rows = [_row("Vanilla", van, ref, time.time() - t0)]
        t0 = time.time()
        rows.append(_row("Vanilla INT12", sample(model, n_samples, st, Exion(quant=True),
                                                 seed), ref, time.time() - t0))
        for s in s_list:
            for name, ex in table_rows(n, s, k, q_th, lod_terms, rule):
                t0 = time.time()
                r = _row(f"{name} (s={s:g})", sample(model, n_samples, st, ex, seed), ref,
                         time.time() - t0)
                rows.append(r)
                if log:
                    log(f"{st} steps: {r['row']}: PSNR {r['psnr_vs_vanilla']:.2f} dB, "
                        f"acc {r['accuracy']:.3f}")
        out["tables"].append({"steps": st, "rows": rows})
    return out


def to_markdown(res: dict) -> str:
    lines = [f"Digits DiT, {res['n_samples']} samples (seed {res['seed']}), N = {res['N']}, "
             f"k = {res['k']}, q_th = {res['q_th']}, lod_terms = {res['lod_terms']}, "
             f"rule = {res['rule']}. FD-PCA floor (100 real digits vs all): "
             f"{res['fd_pca_floor']:.3f}.", ""]
    for tab in res["tables"]:
        lines += [f"### {tab['steps']} steps", "",
                  "| row | inter sparsity | intra sparsity | PSNR vs vanilla (dB) | "
                  "classifier acc. | FD-PCA |", "|---|---|---|---|---|---|"]
        for r in tab["rows"]:
            p = r["psnr_vs_vanilla"]
            ps = "inf" if p == float("inf") else f"{p:.2f}"
            lines.append(f"| {r['row']} | {r['inter_sparsity']:.3f} | "
                         f"{r['intra_sparsity']:.3f} | {ps} | {100 * r['accuracy']:.1f} % | "
                         f"{r['fd_pca']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def sweep(model: DiT | None = None, steps: int = 50, n_samples: int = 50, seed: int = 0,
          s_list=(0.5, 0.7, 0.8, 0.9, 0.95), n_list=(1, 2, 4), k_list=(0.25, 0.5, 0.75),
          log=None) -> dict:
    """Quality vs sparsity: FFN-Reuse over s x N (rule and both controls), EP over k."""
    model = DiT(load_weights()[0]) if model is None else model
    ref = sample(model, n_samples, steps, Exion(), seed).images
    ffn = []
    for nn in n_list:
        for s in s_list:
            for label, ctl in (("magnitude", None), ("random", "random"), ("zero", "zero")):
                r = sample(model, n_samples, steps,
                           Exion(ffn_reuse=True, n=nn, s=s, control=ctl), seed)
                ffn.append({"N": nn, "s": s, "mask": label, "sparsity": r.ffn_sparsity,
                            "psnr": psnr(r.images, ref),
                            "accuracy": class_accuracy(r.images, r.labels)})
                if log:
                    log(f"N={nn} s={s} {label}: {ffn[-1]['psnr']:.2f} dB")
    ep = []
    for k in k_list:
        r = sample(model, n_samples, steps, Exion(ep=True, k=k), seed)
        ep.append({"k": k, "sparsity": r.ep_sparsity, "psnr": psnr(r.images, ref),
                   "accuracy": class_accuracy(r.images, r.labels)})
    return {"steps": steps, "n_samples": n_samples, "seed": seed, "ffn_reuse": ffn, "ep": ep}


def plot_sweep(res: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"magnitude": "-o", "random": "--x", "zero": ":s"}
    for nn in sorted({r["N"] for r in res["ffn_reuse"]}):
        for label, sty in styles.items():
            pts = [r for r in res["ffn_reuse"] if r["N"] == nn and r["mask"] == label]
            axs[0].plot([r["sparsity"] for r in pts],
                        [min(r["psnr"], 99) for r in pts], sty, label=f"N={nn} {label}")
    axs[0].set_xlabel("achieved inter-iteration sparsity")
    axs[0].set_ylabel("PSNR vs vanilla (dB)")
    axs[0].set_title(f"FFN-Reuse, {res['steps']} DDIM steps")
    axs[0].legend(fontsize=7)
    axs[1].plot([r["sparsity"] for r in res["ep"]], [min(r["psnr"], 99) for r in res["ep"]],
                "-o")
    for r in res["ep"]:
        axs[1].annotate(f"k={r['k']}", (r["sparsity"], min(r["psnr"], 99)))
    axs[1].set_xlabel("achieved intra-iteration sparsity")
    axs[1].set_ylabel("PSNR vs vanilla (dB)")
    axs[1].set_title("Eager prediction (TS-LOD)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def write(res: dict, out_dir, stem: str = "accuracy") -> tuple[Path, Path | None]:
    """Write ``<stem>.json`` and, for an accuracy table, ``<stem>.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jp, mp = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    jp.write_text(json.dumps(res, indent=1, default=_json_default) + "\n")
    if "tables" not in res:
        return jp, None
    mp.write_text(to_markdown(res) + "\n")
    return jp, mp


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Exion):
        return asdict(o)
    raise ExionError(f"cannot write {type(o).__name__} as JSON")
