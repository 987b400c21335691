"""One transformer block iteration on one core, GEMM by GEMM, under a named dataflow.

The GEMMs are those of :func:`exion.golden.cycles.transformer_block` (same shapes, same EP
row compaction and masks), each priced by :func:`exion.golden.dataflow.gemm_flow`:

==============  =====================  ===========================================
GEMM            M x K x N              sparse form
==============  =====================  ===========================================
q/k/v_proj      T x d x hd             EP: output mask per head (rows not needed)
scores[h]       T x dh x T             EP: ConMerge on the score mask
pv[h]           T x T x dh             EP: input-sparse (P non-zero where kept)
o_proj          T x hd x d
fc1             T x d x F              FFNR: ConMerge on the FFN-Reuse mask
fc2             T x F x d              FFNR: input-sparse delta (H' - H_d), Y_d preloaded
==============  =====================  ===========================================

CFSE (``golden/cfse.py``'s functions; not the SDUE): GELU over FC1's computed outputs and
softmax over the kept scores run on the OMEM drain at ``cfse_rate`` elements per cycle
(default R: one element per OMEM bank per cycle); only the part longer than the producing
GEMM is exposed (added to the block). Layer norm and residual adds are the host's (SPEC 7).
EPRE (ep / all): :func:`exion.golden.cycles.epre_cycles` (RTL-exact), added in full as in
``transformer_block`` (no EPRE/SDUE overlap is modelled).

Bytes beyond the operands (``col-group`` charges them, ``row-block`` reports them):
FFN-Reuse keeps Y_d at A bits, so FC2 writes A-bit results in ffnr/all; the sparse FC2 adds
into Y_d, preloaded into OMEM (A bits per output); the sparse FC1 reads H_d for its computed
outputs (W bits) so that the drain writes the delta H' - H_d that FC2 streams. Every other
result is written at W bits (the CFSE requantizes).

Masks: ``random`` (Bernoulli(1 - s) per element), ``column`` (a random set of round((1-s) F)
hidden units needed by every token, so the element sparsity is s too), or a file (see
:func:`load_masks`). Synthetic EP masks: i.i.d. N(0, 1) logits per head, top ceil(k T) keys
per query, ties to the lower key; with ``q_th`` the dominant rule of SPEC 3.4 on the logits
(top1 - top2 >= q_th keeps only the top-1). ``key_corr`` (:func:`synth_ep`) adds a per-key
term shared by the queries of a head [choice: 0 here, :data:`EP_KEY_CORR` = 0.65 in the system
model, fitted to real masks].
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from exion.config import Config
from exion.errors import ExionError

from .conmerge import check_mask
from .cycles import epre_cycles, epre_run_cycles
from .dataflow import BYTE_KEYS, DEFAULT_BANK_MAP, gemm_flow

__all__ = ["SHAPES", "MODES", "MASK_KINDS", "shape", "synth_ffn_mask", "synth_ep",
           "load_masks", "block_flow", "EP_KEY_CORR", "ffn_mask_for", "ep_masks_for"]

MODES = ("base", "ffnr", "ep", "all")
MASK_KINDS = ("random", "column")


def _digits_shape() -> dict:
    from exion.workloads.common import ARCH
    d = ARCH["width"]
    return {"T": ARCH["tokens"], "d": d, "heads": ARCH["heads"], "ffn": ARCH["mlp_ratio"] * d}


#: Block shapes: DiT-XL/2 at 256 x 256 px (latent 32 x 32, patch 2 -> 256 tokens) and the
#: digits DiT of exion.workloads (read from its ARCH).
SHAPES = {"dit-xl2": {"T": 256, "d": 1152, "heads": 16, "ffn": 4608}, "digits": None}


def shape(name: str) -> dict:
    if name not in SHAPES:
        raise ExionError(f"shape {name!r} is not one of {', '.join(SHAPES)}")
    s = SHAPES[name] or _digits_shape()
    return {**s, "name": name, "d_head": s["d"] // s["heads"]}


def _check_s(s):
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s < 1.0:
        raise ExionError(f"sparsity s = {s!r} must be a number in [0, 1)")
    return float(s)


def synth_ffn_mask(rng, T: int, F: int, s: float, kind: str) -> np.ndarray:
    """(T, F) FFN-Reuse mask at element sparsity ``s``: ``random`` or ``column``."""
    s = _check_s(s)
    if kind == "random":
        return rng.random((T, F)) < 1.0 - s
    if kind == "column":
        keep = int(round((1.0 - s) * F))
        m = np.zeros((T, F), bool)
        m[:, rng.choice(F, keep, replace=False)] = True
        return m
    raise ExionError(f"mask kind {kind!r} is not one of {', '.join(MASK_KINDS)} (or a file)")


#: Key correlation rho of :func:`synth_ep` fitted to the digits64 DiT's real EP masks by
#: ``bench/perf_ep_masks.py``: the fraction of keys a 16-query row block needs, at
#: k = 0.05 - 0.8, within 0.02 of the real masks' (i.i.d. masks, rho = 0, overstate it by up
#: to 0.39 and the masked scores GEMM's cycles by up to 39 %) [choice, docs/evaluate.md
#: "EP masks"].
EP_KEY_CORR = 0.65


def synth_ep(rng, heads: int, T: int, k: float, q_th: float | None = None,
             key_corr: float = 0.0) -> dict:
    """Synthetic eager-prediction outputs (module docstring): ``score_mask`` (heads, T, T),
    ``skip_q`` (dominant queries), ``skip_k`` (keys no needed query selects), ``skip_v``
    (keys no query selects), each (heads, T).

    ``key_corr`` = rho in [0, 1) makes the logits of one head share a per-key term:
    ``sqrt(rho) z[key] + sqrt(1 - rho) z[query, key]`` (unit variance either way), so that
    queries agree on which keys matter, as real attention does. rho = 0 is i.i.d.;
    :data:`EP_KEY_CORR` is the value fitted to the digits64 DiT's real EP masks
    (docs/evaluate.md, "EP masks")."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0.0 < k <= 1.0:
        raise ExionError(f"top-k ratio k = {k!r} must be in (0, 1]")
    if isinstance(key_corr, bool) or not isinstance(key_corr, (int, float)) \
            or not 0.0 <= key_corr < 1.0:
        raise ExionError(f"EP key correlation = {key_corr!r} must be in [0, 1)")
    kn = max(1, math.ceil(k * T))
    logits = rng.standard_normal((heads, T, T))
    if key_corr:
        logits = (math.sqrt(1.0 - key_corr) * logits
                  + math.sqrt(key_corr) * rng.standard_normal((heads, 1, T)))
    order = np.argsort(-logits, axis=2, kind="stable")
    mask = np.zeros((heads, T, T), bool)
    np.put_along_axis(mask, order[:, :, :kn], True, axis=2)
    dom = np.zeros((heads, T), bool)
    if q_th is not None and T > 1:
        srt = np.take_along_axis(logits, order[:, :, :2], axis=2)
        dom = (srt[:, :, 0] - srt[:, :, 1]) >= q_th
        top1 = np.zeros_like(mask)
        np.put_along_axis(top1, order[:, :, :1], True, axis=2)
        mask = np.where(dom[:, :, None], top1, mask)
    return _ep_outputs(mask, dom)


def _ep_outputs(mask, dom) -> dict:
    q_needed = ~dom
    return {"score_mask": mask, "skip_q": dom.copy(),
            "skip_k": ~(mask & q_needed[..., None]).any(axis=1),
            "skip_v": ~mask.any(axis=1)}


def load_masks(path, shp: dict, *, block: int = 0, iteration: int | None = None,
               sample: int = 0) -> dict:
    """Masks from a file, as ``{"ffn_mask", "ep", "source"}`` (absent parts are None).

    Two formats:

    * an ``exion trace`` file (``exion.workloads.trace``, schema ``exion-trace-1``; a
      ``light`` trace is enough): block ``block``, iteration ``iteration`` (default: the
      first sparse one), sample ``sample``: ``blk{b}/it{t}/fc1_mask`` rows of that sample
      -> the (T, F) FFN mask; ``ep_mask`` (B, heads, T, T), ``ep_skip_q|k|v`` -> EP masks.
    * a plain ``.npz`` with ``ffn_mask`` (T, F) and/or ``score_mask`` (heads, T, T) with
      ``skip_q``, ``skip_k``, ``skip_v`` (heads, T), all boolean.

    The shapes must match the block shape ``shp``.
    """
    p = Path(path)
    if not p.is_file():
        raise ExionError(f"--masks: file {str(p)!r} does not exist")
    try:
        z = np.load(p, allow_pickle=False)
        files = z.files
    except (OSError, ValueError) as e:
        raise ExionError(f"--masks: cannot read {str(p)!r} as an .npz file: {e}") from None
    T, F, H = shp["T"], shp["ffn"], shp["heads"]
    if "meta" in files:
        from exion.workloads import trace as tr
        z, meta = tr.load(p)
        if (meta["tokens"], meta["ffn"], meta["heads"]) != (T, F, H):
            raise ExionError(f"--masks: trace {str(p)!r} is of a T={meta['tokens']}, "
                             f"F={meta['ffn']}, {meta['heads']}-head model; shape "
                             f"{shp['name']!r} has T={T}, F={F}, {H} heads")
        if not 0 <= block < meta["depth"]:
            raise ExionError(f"--trace-block {block} is out of range 0..{meta['depth'] - 1}")
        if not 0 <= sample < meta["samples"]:
            raise ExionError(f"--trace-sample {sample} is out of range "
                             f"0..{meta['samples'] - 1}")
        dense = meta["dense"]
        if iteration is None:
            sp = [t for t in meta["iterations"] if not dense[t]]
            iteration = sp[0] if sp else meta["iterations"][0]
        if iteration not in meta["iterations"]:
            raise ExionError(f"--trace-iteration {iteration} was not recorded in {str(p)!r}")
        fk = tr.key(block, iteration, "fc1_mask")
        ffn = z[fk][sample * T:(sample + 1) * T] if fk in z.files else None
        ek = tr.key(block, iteration, "ep_mask")
        ep = None
        if ek in z.files:
            mask = z[ek][sample]
            ep = {"score_mask": mask,
                  **{f"skip_{x}": z[tr.key(block, iteration, f"ep_skip_{x}")][sample]
                     for x in "qkv"}}
        src = (f"{p.name}: block {block}, iteration {iteration} "
               f"({'dense' if dense[iteration] else 'sparse'}), sample {sample}")
        return {"ffn_mask": ffn, "ep": ep, "source": src}
    known = {"ffn_mask", "score_mask", "skip_q", "skip_k", "skip_v"}
    if not known & set(files):
        raise ExionError(f"--masks: {str(p)!r} has none of the keys {', '.join(sorted(known))} "
                         f"and is not an exion trace")
    ffn = None
    if "ffn_mask" in files:
        ffn = check_mask(z["ffn_mask"], f"--masks {p.name}: ffn_mask", (T, F))
    ep = None
    if "score_mask" in files:
        sm = np.asarray(z["score_mask"])
        if sm.shape != (H, T, T) or sm.dtype.kind != "b":
            raise ExionError(f"--masks {p.name}: score_mask must be boolean ({H}, {T}, {T}), "
                             f"got {sm.dtype} {sm.shape}")
        ep = {"score_mask": sm}
        for x in "qkv":
            a = np.asarray(z[f"skip_{x}"]) if f"skip_{x}" in files else np.zeros((H, T), bool)
            if a.shape != (H, T) or a.dtype.kind != "b":
                raise ExionError(f"--masks {p.name}: skip_{x} must be boolean ({H}, {T}), "
                                 f"got {a.dtype} {a.shape}")
            ep[f"skip_{x}"] = a
    return {"ffn_mask": ffn, "ep": ep, "source": p.name}


def ffn_mask_for(shp, masks, s, seed):
    """The FFN mask of a run: a kind name (synthesized, seeded) or a loaded dict."""
    if isinstance(masks, dict):
        if masks["ffn_mask"] is None:
            raise ExionError(f"--masks: {masks['source']} holds no FFN-Reuse mask (a dense "
                             f"iteration or an FFN-Reuse-less trace)")
        return masks["ffn_mask"]
    return synth_ffn_mask(np.random.default_rng([seed, 1]), shp["T"], shp["ffn"], s, masks)


def ep_masks_for(shp, masks, k, q_th, seed):
    if isinstance(masks, dict):
        if masks["ep"] is None:
            raise ExionError(f"--masks: {masks['source']} holds no eager-prediction masks")
        return masks["ep"]
    return synth_ep(np.random.default_rng([seed, 2]), shp["heads"], shp["T"], k, q_th)


def _proj_mask(need_ht, d_head):
    return np.repeat(need_ht.T, d_head, axis=1)


def block_flow(cfg: Config, shp: dict, mode: str, *, ffn_mask=None, ep=None,
               dataflow: str = "col-group", bw: int | None = None,
               merge_ways: int | None = None, bank_map: str = DEFAULT_BANK_MAP,
               cfse_rate: int | None = None, reuse_dense: bool = False,
               epre_overlap: bool = False) -> dict:
    """Cycles, bytes and bound of one block iteration in ``mode`` (module docstring).

    ``ffn_mask`` (T, F) is needed by ffnr/all, ``ep`` (dict of :func:`synth_ep`) by ep/all.
    ``reuse_dense``: a dense iteration of an FFN-Reuse run (base/ep modes): FC2 writes Y_d
    at A bits (the cache the sparse iterations add into).
    ``epre_overlap`` (ep / all): charge only the EPRE cycles the overlapped schedule leaves
    exposed (:func:`exion.golden.projections.epre_schedule`, the built EPRE at the config's
    provisioning) instead of every EPRE cycle, plus the EPRE's own global-buffer fetch
    (Wq) as stall cycles (an upper bound: as if the buffer were saturated); the result then
    also carries ``epre_busy_cycles``, ``epre_exposed_cycles``, ``epre_bytes``,
    ``epre_fetch_cycles`` (``epre_cycles`` = exposed + fetch), ``ep_saved_cycles``
    (dense minus EP cycles of the q/k/v projections, scores and P.V) and ``epre_schedule``.
    Returns a dict with the totals (``cycles``, ``compute_cycles``, ``stall_cycles``,
    ``bytes``, ``bound``, ``utilization``, ``ffn_cycles``, ``attention_cycles``,
    ``epre_cycles``, ``cfse``) and ``gemms`` (one :meth:`GemmFlow.to_dict` each).
    """
    if mode not in MODES:
        raise ExionError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    T, d, H, F, dh = shp["T"], shp["d"], shp["heads"], shp["ffn"], shp["d_head"]
    hd = H * dh
    use_ep, use_ffnr = mode in ("ep", "all"), mode in ("ffnr", "all")
    if use_ffnr:
        if ffn_mask is None:
            raise ExionError(f"mode {mode!r} needs an FFN-Reuse mask")
        ffn_mask = check_mask(ffn_mask, "ffn_mask", (T, F))
    if use_ep and ep is None:
        raise ExionError(f"mode {mode!r} needs eager-prediction masks")
    rate = cfg.rows if cfse_rate is None else int(cfse_rate)
    if rate < 1:
        raise ExionError(f"cfse_rate = {rate} must be >= 1 element per cycle")
    W, A = cfg.width, cfg.acc_width
    kw = {"dataflow": dataflow, "bw": bw, "merge_ways": merge_ways, "bank_map": bank_map}
    g = []

    def gemm(name, M, N, K, **k):
        if M == 0:
            return None
        mask = k.pop("mask", None)
        if mask is not None and mask.all():
            mask = None
        r = gemm_flow(cfg, M, N, K, mask=mask, name=name, **kw, **k)
        g.append(r)
        return r

    cfse = {"softmax_elements": 0, "softmax_exposed": 0, "gelu_elements": 0, "gelu_exposed": 0}
    if use_ep:
        sm = ep["score_mask"]
        needs = {x: ~np.asarray(ep[f"skip_{x}"]) for x in "qkv"}
    for nm, x in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v")):
        if use_ep and not needs[x].all():
            pm = _proj_mask(needs[x], dh)
            keep = np.flatnonzero(pm.any(axis=1))
            gemm(nm, keep.size, hd, d, mask=pm[keep])
        else:
            gemm(nm, T, hd, d)
    for h in range(H):
        if use_ep:
            sm_h = sm[h] & needs["q"][h][:, None]
            keep = np.flatnonzero(sm_h.any(axis=1))
            r = gemm(f"scores[{h}]", keep.size, T, dh, mask=sm_h[keep])
            gemm(f"pv[{h}]", keep.size, dh, T, input_mask=sm_h[keep])
            n_el = int(sm_h.sum())
        else:
            r = gemm(f"scores[{h}]", T, T, dh)
            gemm(f"pv[{h}]", T, dh, T)
            n_el = T * T
        sc = math.ceil(n_el / rate)
        cfse["softmax_elements"] += n_el
        cfse["softmax_exposed"] += max(0, sc - (r.cycles if r is not None else 0))
    gemm("o_proj", T, d, hd)
    if use_ffnr:
        f1 = gemm("fc1", T, F, d, mask=ffn_mask, preload_bits=W)
        gemm("fc2", T, d, F, input_mask=ffn_mask, preload_bits=A, out_bits=A)
        n_el = int(ffn_mask.sum())
    else:
        f1 = gemm("fc1", T, F, d)
        gemm("fc2", T, d, F, out_bits=A if reuse_dense else W)
        n_el = T * F
    cfse["gelu_elements"] = n_el
    cfse["gelu_exposed"] = max(0, math.ceil(n_el / rate) - (f1.cycles if f1 else 0))
    cfse["rate"] = rate
    epre = epre_cycles(cfg, T, d, H, dh)["total"] if use_ep else 0
    extra = {}
    if use_ep and epre_overlap:
        extra = _ep_overlap(cfg, shp, g, kw)
        epre = extra["epre_exposed_cycles"] + extra["epre_fetch_cycles"]
    return {**_totals(cfg, g, cfse, epre, dataflow, bw, mode, shp), **extra}


def _ep_overlap(cfg, shp, g, kw) -> dict:
    """EP's saving and the exposed EPRE cycles of the overlapped schedule (``epre_overlap``)."""
    from .projections import epre_schedule, schedule_from_gemms
    T, d, H, dh = shp["T"], shp["d"], shp["heads"], shp["d_head"]
    by = {x.name: x.cycles for x in g}
    run = epre_run_cycles(cfg, T, T, d, dh)
    kv, rest = schedule_from_gemms(by, H)
    sch = epre_schedule(run, kv, rest)
    dense = {n: gemm_flow(cfg, T, H * dh, d, name=n, **kw).cycles
             for n in ("q_proj", "k_proj", "v_proj")}
    sc = gemm_flow(cfg, T, T, dh, name="scores", **kw).cycles
    pv = gemm_flow(cfg, T, dh, T, name="pv", **kw).cycles
    dense_sum = sum(dense.values()) + H * (sc + pv)
    att = [n for n in by if n.split("[")[0] in ("q_proj", "k_proj", "v_proj", "scores", "pv")]
    saved = dense_sum - sum(by[n] for n in att)
    # Global-buffer bytes of the EPRE beyond the SDUE's: Wq_h (the EPRE needs it before the
    # SDUE's Q_h columns stream); X and Wk_h are captured from the SDUE's IMEM / WMEM fill
    # streams (X of K_0, Wk_h of K_h while the EPRE's Q phase runs: Q phase >= K_h columns).
    fetch = H * d * dh * cfg.width / 8
    bw = cfg.gb_bytes_per_cycle if kw.get("bw") is None else kw["bw"]
    return {"epre_busy_cycles": H * run, "epre_run_cycles": run,
            "epre_bytes": int(fetch), "epre_fetch_cycles": int(math.ceil(fetch / bw)),
            "epre_exposed_cycles": int(math.ceil(sch["exposed"])),
            "ep_saved_cycles": int(saved),
            "epre_provisioning": {"units": cfg.epre_unit_count, "lanes": cfg.epre_lane_count,
                                  "selectors": cfg.epre_selector_count,
                                  "selector_kind": cfg.epre_selector_kind,
                                  "shift_adds": cfg.epre_shift_adds},
            "epre_schedule": {"waits": [int(math.ceil(w)) for w in sch["waits"]],
                              "kv_per_head": kv[0], "rest_per_head": rest}}


def _totals(cfg, g, cfse, epre, dataflow, bw, mode, shp):
    bw = cfg.gb_bytes_per_cycle if bw is None else bw
    gemm_cyc = sum(x.cycles for x in g)
    comp = sum(x.compute_cycles for x in g)
    cyc = gemm_cyc + cfse["softmax_exposed"] + cfse["gelu_exposed"] + epre
    by = {k: sum(x.bytes[k] for x in g) for k in BYTE_KEYS}
    mem = 0.0
    for x in g:
        rd = sum(x.bytes[k] for k in x.charged if k != "omem_gb")
        wr = x.bytes["omem_gb"] if "omem_gb" in x.charged else 0
        mem += max(rd, wr) / bw
    useful = sum(x.useful_macs for x in g)
    ffn = sum(x.cycles for x in g if x.name in ("fc1", "fc2")) + cfse["gelu_exposed"]
    return {"shape": shp["name"], "mode": mode, "dataflow": dataflow, "bw": bw,
            "cycles": cyc, "compute_cycles": comp, "stall_cycles": gemm_cyc - comp,
            "epre_cycles": epre, "cfse": cfse,
            "bytes": {**by, "total": sum(by.values())},
            "memory_cycles": math.ceil(mem),
            "bound": "memory-bound" if mem > comp else "compute-bound",
            "useful_macs": useful,
            "utilization": useful / (cfg.peak_macs * cyc) if cyc else 0.0,
            "ffn_cycles": ffn, "attention_cycles": cyc - ffn,
            "gemms": [x.to_dict() for x in g]}
