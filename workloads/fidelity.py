"""Algorithm fidelity (issue 20): eager prediction at the paper's settings, column-level
FFN-Reuse, and the PSNR / modelled-speedup trade-off, on both shipped digits DiTs.

Every configuration is one sampling run (:func:`exion.workloads.dit.sample`, same seed,
noise and labels as the vanilla float run it is compared with) and yields a row: achieved
inter-iteration (FFN-Reuse) and intra-iteration (EP) sparsity, PSNR vs vanilla, classifier
accuracy, FD-PCA (:mod:`exion.workloads.accuracy`) and the **modelled speedup over Base**.

Modelled speedup **[choice]**: the masks the run really used (sample 0) go through the cycle
model of one transformer block, :func:`exion.golden.block.block_flow` (exion16, its default
``col-group`` dataflow, the column-aware one), per block and iteration: a dense iteration of
an FFN-Reuse run is priced as ``base`` (``ep`` with EP) with ``reuse_dense`` (FC2 writes the
A-bit Y_d cache), a sparse one as ``ffnr`` (``all`` with EP), a run without FFN-Reuse as
``base`` / ``ep``. speedup = (Base cycles x iterations x blocks) / (sum of the run's cycles).
To keep the cost bounded, only ``cycle_windows`` evenly spaced FFN-Reuse windows (a dense
iteration and its N sparse ones; single iterations without FFN-Reuse) are priced (default 4;
``None``: every iteration). EP masks enter as ``golden.predict``'s outputs: score mask,
dominant rows (skipped Q rows, ``top1`` polarity), keys no needed query selects (skipped K)
and keys no query selects (skipped V).

q_th **[choice]** is in the units the paper states it in, the gap between the largest and
second largest *predicted* score of a query row, where the predicted score is EP's
``Sh = approx(Qh) approx(Kh)^T`` expressed as the attention logit it stands for (float,
after the ``1 / sqrt(d_head)`` scaling); the sampler converts it to the integer scale of Sh
per sample and head (``Exion.q_th``). "Swept best" q_th **[choice]**: over ``q_grid``, the
q_th with the largest intra-iteration sparsity whose PSNR is at most ``best_tol`` dB (0.5)
below that of the same (k, LOD) with q_th off; if none qualifies, q_th off.

Pareto front: a configuration is on it when no other configuration of the same model has both
a higher-or-equal modelled speedup and a higher-or-equal PSNR (one of them strictly higher).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from exion.config import Config, get_config
from exion.errors import ExionError
from exion.golden.block import block_flow
from exion.golden.ffn_reuse import schedule
from exion.golden.predict import keep_count

from .accuracy import class_accuracy, fd_pca, psnr
from .dit import DiT, Exion, sample
from .weights import WEIGHTS, load_weights

__all__ = ["MODEL_NAMES", "PAPER", "load_model", "block_shape", "Recorder", "modelled_speedup",
           "run_row", "ep_table", "ep_goal", "column_table", "pareto_front", "plot_pareto",
           "ep_markdown", "column_markdown", "write_json"]

MODEL_NAMES = tuple(WEIGHTS)

#: The paper's DiT settings (DiT-XL/2): FFN-Reuse N = 2, s = 0.8; EP k = 0.05, q_th = 0.15;
#: and the PSNR EP costs there on top of FFN-Reuse (about 1.4 dB, the issue's goal).
PAPER = {"n": 2, "s": 0.8, "k": 0.05, "q_th": 0.15, "ep_loss_db": 1.4}


def load_model(name: str = "digits16", path=None) -> DiT:
    """The shipped DiT ``name`` (``digits16`` / ``digits64``), or the weights at ``path``."""
    w, _ = load_weights(path, model=name)
    m = DiT(w)
    if path is None and m.name != name:
        raise ExionError(f"weights of {name!r} hold a {m.tokens}-token model")
    return m


def block_shape(model: DiT) -> dict:
    """The block shape of ``model`` in :mod:`exion.golden.block`'s form."""
    return {"name": model.name, "T": model.tokens, "d": model.d, "heads": model.heads,
            "ffn": 4 * model.d, "d_head": model.dh}


class Recorder(list):
    """The ``record`` list of :func:`~exion.workloads.dit.sample`, keeping only the first
    ``n`` samples of every mask (bounded memory)."""

    def __init__(self, n: int = 1):
        super().__init__()
        self.n = n

    def append(self, item) -> None:
        it, i, kind, m, d = item
        super().append((it, i, kind, np.array(m[:self.n]),
                        None if d is None else np.array(d[:self.n])))


def _ep_dict(mask, dom) -> dict:
    """golden.predict's outputs (top1 polarity) from a (heads, T, T) mask and (heads, T)
    dominant flags, in block_flow's form."""
    q_needed = ~dom
    return {"score_mask": mask, "skip_q": dom.copy(),
            "skip_k": ~(mask & q_needed[..., None]).any(axis=1),
            "skip_v": ~mask.any(axis=1)}


def _priced_iterations(steps: int, ex: Exion, windows) -> list[int]:
    span = ex.n + 1 if ex.ffn_reuse else 1
    starts = list(range(0, steps, span))
    if windows is not None and windows < len(starts):
        idx = np.unique(np.round(np.linspace(0, len(starts) - 1, windows)).astype(int))
        starts = [starts[j] for j in idx]
    return [t for s0 in starts for t in range(s0, min(s0 + span, steps))]


def modelled_speedup(model: DiT, ex: Exion, steps: int, record, cfg: Config | None = None,
                     cycle_windows: int | None = 4) -> dict:
    """Modelled speedup over Base of one run from its recorded masks (module docstring)."""
    cfg = get_config("exion16") if cfg is None else cfg
    shp = block_shape(model)
    dense = schedule(steps, ex.n, ex.dense_tail) if ex.ffn_reuse else np.ones(steps, bool)
    ffn = {(it, i): m[0] for it, i, kind, m, _ in record if kind == "ffn"}
    ep = {(it, i): (m[0], d[0]) for it, i, kind, m, d in record if kind == "ep"}
    base = block_flow(cfg, shp, "base")
    tot = ffn_tot = 0
    its = _priced_iterations(steps, ex, cycle_windows)
    for it in its:
        for i in range(model.depth):
            sparse = ex.ffn_reuse and not dense[it]
            mode = {(False, False): "base", (True, False): "ffnr", (False, True): "ep",
                    (True, True): "all"}[(bool(sparse), ex.ep)]
            kw = {"reuse_dense": bool(ex.ffn_reuse and dense[it])}
            if sparse:
                kw["ffn_mask"] = ffn[(it, i)]
            if ex.ep:
                kw["ep"] = _ep_dict(*ep[(it, i)])
            r = block_flow(cfg, shp, mode, **kw)
            tot += r["cycles"]
            ffn_tot += r["ffn_cycles"]
    n = len(its) * model.depth
    return {"speedup": base["cycles"] * n / tot, "ffn_speedup": base["ffn_cycles"] * n / ffn_tot,
            "base_cycles_per_block": base["cycles"], "priced_iterations": len(its)}


def run_row(model: DiT, name: str, ex: Exion, steps: int, n_samples: int, seed: int,
            ref: np.ndarray, cycles: bool = True, cycle_windows: int | None = 4) -> dict:
    """One configuration: sample, score against ``ref`` (vanilla images), price."""
    t0 = time.time()
    rec = Recorder(1)
    r = sample(model, n_samples, steps, ex, seed, record=rec)
    row = {"row": name, "model": model.name, "exion": asdict(ex),
           "inter_sparsity": r.ffn_sparsity, "intra_sparsity": r.ep_sparsity,
           "psnr": psnr(r.images, ref), "accuracy": class_accuracy(r.images, r.labels),
           "fd_pca": fd_pca(r.images)}
    if r.ep_kept_mass is not None:
        row["kept_mass"] = r.ep_kept_mass
    if cycles:
        row.update(modelled_speedup(model, ex, steps, rec, cycle_windows=cycle_windows))
    row["seconds"] = round(time.time() - t0, 1)
    return row


def _vanilla(model, steps, n_samples, seed):
    t0 = time.time()
    van = sample(model, n_samples, steps, Exion(), seed)
    row = {"row": "Vanilla", "model": model.name, "exion": asdict(Exion()),
           "inter_sparsity": 0.0, "intra_sparsity": 0.0, "psnr": float("inf"),
           "accuracy": class_accuracy(van.images, van.labels), "fd_pca": fd_pca(van.images),
           "speedup": 1.0, "ffn_speedup": 1.0, "seconds": round(time.time() - t0, 1)}
    return van.images, row


def _log(log, row):
    if log:
        sp = f", speedup {row['speedup']:.3f}x" if "speedup" in row else ""
        log(f"{row['model']} {row['row']}: PSNR {row['psnr']:.2f} dB, acc "
            f"{row['accuracy']:.3f}, inter {row['inter_sparsity']:.3f}, intra "
            f"{row['intra_sparsity']:.3f}{sp} ({row['seconds']} s)")


def ep_table(model: DiT, steps: int = 50, n_samples: int = 100, seed: int = 0,
             k_list=(0.05, 0.2, 0.5, 0.8), q_grid=(0.3, 1.0, 3.0), lods=(1, 2),
             s: float = 0.8, n: int = 2, rule: str = "magnitude", best_tol: float = 0.5,
             cycle_windows: int | None = 4, exact: bool = True, log=None) -> dict:
    """EP at the paper's settings on top of FFN-Reuse (N = ``n``, s = ``s``): for every LOD
    mode and k, q_th off, 0.15 and the swept best (module docstring); with ``exact``, one
    control row per k that keeps the exact top-k logits (``Exion.ep_scores = "exact"``:
    the loss of truncating attention to k keys alone, without EP's prediction error)."""
    ref, van = _vanilla(model, steps, n_samples, seed)
    fr_ex = Exion(ffn_reuse=True, n=n, s=s, rule=rule)
    fr = run_row(model, f"FFN-Reuse (s={s:g}, N={n})", fr_ex, steps, n_samples, seed, ref,
                 cycle_windows=cycle_windows)
    _log(log, fr)
    rows, sweep = [], []
    for lod in lods:
        for k in k_list:
            def one(q, tag, lod=lod, k=k):
                ex = replace(fr_ex, ep=True, k=k, q_th=q, lod_terms=lod)
                r = run_row(model, f"+EP {'TS-LOD' if lod == 2 else 'LOD'} k={k:g} q_th={tag}",
                            ex, steps, n_samples, seed, ref, cycle_windows=cycle_windows)
                r.update(k=k, q_th=q, lod_terms=lod, loss_vs_ffn_reuse=fr["psnr"] - r["psnr"])
                _log(log, r)
                return r
            off = one(None, "off")
            if keep_count(k, model.tokens) == 1:
                # top-1 already: the dominant rule cannot change the mask (same run)
                def same(q):
                    return dict(off, row=off["row"].replace("q_th=off", f"q_th={q:g}"),
                                q_th=q, exion=dict(off["exion"], q_th=q))
                p15, cands = same(0.15), [same(q) for q in q_grid]
            else:
                p15 = one(0.15, "0.15")
                cands = [one(q, f"{q:g}") for q in q_grid]
            sweep += cands
            ok = [c for c in cands if c["psnr"] >= off["psnr"] - best_tol]
            best = max(ok, key=lambda c: (c["intra_sparsity"], c["psnr"])) if ok else off
            best = dict(best, row=best["row"] + " (swept best)", swept_best=True)
            rows += [off, p15, best]
    controls = []
    for k in (k_list if exact else ()):
        ex = replace(fr_ex, ep=True, k=k, ep_scores="exact")
        r = run_row(model, f"+exact top-k k={k:g} (control)", ex, steps, n_samples, seed,
                    ref, cycles=False)
        r.update(k=k, q_th=None, lod_terms=None, loss_vs_ffn_reuse=fr["psnr"] - r["psnr"])
        _log(log, r)
        controls.append(r)
    return {"kind": "ep", "model": model.name, "tokens": model.tokens, "steps": steps,
            "n_samples": n_samples, "seed": seed, "N": n, "s": s, "rule": rule,
            "q_grid": list(q_grid), "best_tol": best_tol, "vanilla": van, "ffn_reuse": fr,
            "rows": rows, "sweep": sweep, "controls": controls,
            "goal": ep_goal(rows + sweep)}


def ep_goal(rows: list[dict], max_loss: float = PAPER["ep_loss_db"]) -> dict | None:
    """The issue's EP goal: of the EP rows with some intra-iteration sparsity whose PSNR loss
    from FFN-Reuse alone is at most ``max_loss`` dB (the paper's 1.4), the one with the
    largest intra sparsity (then the smallest loss); ``None`` when no row qualifies."""
    ok = [r for r in rows if r["intra_sparsity"] > 0 and r["loss_vs_ffn_reuse"] <= max_loss]
    if not ok:
        return None
    r = max(ok, key=lambda r: (r["intra_sparsity"], -r["loss_vs_ffn_reuse"]))
    return {"row": r["row"], "k": r["k"], "q_th": r["q_th"], "lod_terms": r["lod_terms"],
            "intra_sparsity": r["intra_sparsity"], "loss_vs_ffn_reuse": r["loss_vs_ffn_reuse"],
            "max_loss": max_loss}


def column_table(model: DiT, steps: int = 50, n_samples: int = 100, seed: int = 0,
                 s_list=(0.8, 0.95, 0.97), n_list=(2, 3, 4, 5), control_n=(2,),
                 cycle_windows: int | None = 4, log=None) -> dict:
    """Element-wise (magnitude) vs column-level FFN-Reuse at equal recomputed-element count,
    with the random-mask and zero-fill controls of each rule at the N in ``control_n``
    (``None``: every N)."""
    ref, van = _vanilla(model, steps, n_samples, seed)
    rows = []
    for nn in n_list:
        for s in s_list:
            for rule in ("magnitude", "column"):
                ex = Exion(ffn_reuse=True, n=nn, s=s, rule=rule)
                variants = [(rule, ex)]
                if control_n is None or nn in control_n:
                    variants += [(f"{rule}, random mask", replace(ex, control="random")),
                                 (f"{rule}, zero-fill", replace(ex, control="zero"))]
                for label, e in variants:
                    r = run_row(model, f"{label} (s={s:g}, N={nn})", e, steps, n_samples,
                                seed, ref, cycle_windows=cycle_windows)
                    r.update(rule=rule, control=e.control, s=s, N=nn)
                    _log(log, r)
                    rows.append(r)
    return {"kind": "column", "model": model.name, "tokens": model.tokens, "steps": steps,
            "n_samples": n_samples, "seed": seed, "control_n": control_n, "vanilla": van,
            "rows": rows}


# -- Pareto --------------------------------------------------------------------------------
def pareto_front(points: list[dict]) -> list[dict]:
    """The points (dicts with ``speedup`` and ``psnr``) no other point dominates."""
    front = []
    for p in points:
        dom = any(q["speedup"] >= p["speedup"] and q["psnr"] >= p["psnr"]
                  and (q["speedup"] > p["speedup"] or q["psnr"] > p["psnr"]) for q in points)
        if not dom:
            front.append(p)
    return sorted(front, key=lambda p: p["speedup"])


def is_paper_setting(p: dict) -> bool:
    """FFN-Reuse at N = 2, s = 0.8 with EP off or at k = 0.05, q_th = 0.15 (element rule)."""
    ex = p["exion"]
    if not ex["ffn_reuse"] or ex["n"] != PAPER["n"] or ex["s"] != PAPER["s"] \
            or ex["control"] is not None or ex["rule"] != "magnitude":
        return False
    return not ex["ep"] or (ex["k"] == PAPER["k"] and ex["q_th"] == PAPER["q_th"])


def pareto(results: list[dict]) -> dict:
    """Every priced configuration of the given tables, per model, with its Pareto front."""
    out = {}
    for res in results:
        pts = out.setdefault(res["model"], [])
        for r in [res.get("ffn_reuse")] + res["rows"] + res.get("sweep", []):
            if r is None or "speedup" not in r or (r["exion"]["control"] is not None):
                continue
            if any(p["exion"] == r["exion"] for p in pts):
                continue
            pts.append({"row": r["row"].replace(" (swept best)", ""), "exion": r["exion"],
                        "speedup": r["speedup"], "psnr": min(r["psnr"], 99.0),
                        "accuracy": r["accuracy"]})
    models = {}
    for m, pts in out.items():
        front = pareto_front(pts)
        for p in pts:
            p["paper_setting"] = is_paper_setting(p)
            p["on_front"] = any(p is f for f in front)
        models[m] = {"points": pts, "front": [p["row"] for p in front]}
    return {"models": models}


def plot_pareto(par: dict, path) -> None:
    """PSNR vs modelled speedup per model; paper settings starred, the front as a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ms = sorted(par["models"])
    fig, axs = plt.subplots(1, max(1, len(ms)), figsize=(6 * max(1, len(ms)), 4.5),
                            squeeze=False)
    for ax, m in zip(axs[0], ms):
        pts = par["models"][m]["points"]
        for kind, sty in (("element", "o"), ("column", "s"), ("ep", "^")):
            sel = [p for p in pts if _kind(p) == kind]
            ax.scatter([p["speedup"] for p in sel], [p["psnr"] for p in sel], marker=sty,
                       s=22, alpha=0.7, label=kind)
        fr = sorted((p for p in pts if p["on_front"]), key=lambda p: p["speedup"])
        ax.plot([p["speedup"] for p in fr], [p["psnr"] for p in fr], "k-", lw=1,
                label="Pareto front")
        pp = [p for p in pts if p["paper_setting"]]
        ax.scatter([p["speedup"] for p in pp], [p["psnr"] for p in pp], marker="*", s=160,
                   c="red", label="paper's DiT setting", zorder=5)
        ax.set_xlabel("modelled speedup over Base (exion16, col-group)")
        ax.set_ylabel("PSNR vs vanilla (dB)")
        ax.set_title(m)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def _kind(p) -> str:
    if p["exion"]["ep"]:
        return "ep"
    return "column" if p["exion"]["rule"] == "column" else "element"


# -- output --------------------------------------------------------------------------------
def _f(v, fmt="{:.2f}"):
    return "inf" if v == float("inf") else fmt.format(v)


def ep_markdown(res: dict) -> str:
    fr = res["ffn_reuse"]
    lines = [f"{res['model']} ({res['tokens']} tokens), {res['n_samples']} samples, "
             f"{res['steps']} steps, seed {res['seed']}; FFN-Reuse alone "
             f"(N={res['N']}, s={res['s']:g}): {_f(fr['psnr'])} dB, speedup "
             f"{fr['speedup']:.3f}x; vanilla accuracy {100 * res['vanilla']['accuracy']:.1f} %.",
             "", "| LOD | k | q_th | intra sparsity | PSNR (dB) | loss vs FFN-Reuse (dB) | "
             "classifier acc. | FD-PCA | modelled speedup |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        q = "off" if r["q_th"] is None else f"{r['q_th']:g}"
        if r.get("swept_best"):
            q = f"{q} (best)"
        lines.append(f"| {'TS-LOD' if r['lod_terms'] == 2 else 'LOD'} | {r['k']:g} | {q} | "
                     f"{r['intra_sparsity']:.3f} | {_f(r['psnr'])} | "
                     f"{r['loss_vs_ffn_reuse']:.2f} | {100 * r['accuracy']:.1f} % | "
                     f"{r['fd_pca']:.3f} | {r['speedup']:.3f}x |")
    if res.get("controls"):
        lines += ["", "Control, exact top-k (the float logits' k largest keys per row, no "
                  "prediction error; kept mass: the share of the softmax mass the kept keys "
                  "hold):", "", "| k | intra sparsity | kept mass | PSNR (dB) | loss vs "
                  "FFN-Reuse (dB) | classifier acc. |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['k']:g} | {r['intra_sparsity']:.3f} | {r.get('kept_mass', 0):.3f} | "
                  f"{_f(r['psnr'])} | {r['loss_vs_ffn_reuse']:.2f} | "
                  f"{100 * r['accuracy']:.1f} % |" for r in res["controls"]]
    g = res.get("goal")
    lines += ["", f"Goal (EP loss <= {PAPER['ep_loss_db']:g} dB): " + (
        "no EP row meets it." if g is None else
        f"met by {g['row']}: intra sparsity {g['intra_sparsity']:.3f}, loss "
        f"{g['loss_vs_ffn_reuse']:.2f} dB.")]
    return "\n".join(lines)


def column_markdown(res: dict) -> str:
    lines = [f"{res['model']} ({res['tokens']} tokens), {res['n_samples']} samples, "
             f"{res['steps']} steps, seed {res['seed']}; vanilla accuracy "
             f"{100 * res['vanilla']['accuracy']:.1f} %.", "",
             "| N | s | mask | inter sparsity | PSNR (dB) | classifier acc. | FD-PCA | "
             "modelled speedup | FFN speedup |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lab = r["rule"] + ("" if r["control"] is None else f", {r['control']}")
        lines.append(f"| {r['N']} | {r['s']:g} | {lab} | {r['inter_sparsity']:.3f} | "
                     f"{_f(r['psnr'])} | {100 * r['accuracy']:.1f} % | {r['fd_pca']:.3f} | "
                     f"{r['speedup']:.3f}x | {r['ffn_speedup']:.3f}x |")
    return "\n".join(lines)


def write_json(obj, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=_default) + "\n")
    return path


def _default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, float) and math.isinf(o):
        return None
    raise ExionError(f"cannot write {type(o).__name__} as JSON")
