"""Break-even of eager prediction (issues 8 and 18): EP's SDUE saving per block iteration
against the EPRE's cost at several provisionings (SPEC 7, "EPRE provisioning"), and the
overlapped schedule of the built EPRE (:func:`epre_schedule`, used by ``golden.block``).
Used by ``bench/perf_workload.py`` (section 5), ``bench/perf_epre.py`` and their tests.

Since issue 18 the RTL is provisioned by the config (units, lanes per unit, selectors;
S = U streams the insertion from stage 2), so every run count below is the built design's
RTL-exact formula; only the EPRE/SDUE overlap is a schedule model (the DSC controller
issue implements it). The older notes below describe the issue-8 projection.

What is exact and what is a projection (every result row says which, in ``basis``):

* **RTL-exact**: U = C dot-product units, one shared selector, EPRE before the SDUE: the
  cycles are :func:`exion.golden.cycles.epre_cycles`, equal to the RTL's count.
* **RTL formula, U units**: the same formula at another U (:func:`epre_projection`); the
  RTL takes ``units`` but was cycle-tested at U = C and 5 only.
* **projection**: one selector per unit (:func:`epre_projection` with
  ``per_unit_selectors``) and/or EPRE/SDUE overlap (:func:`overlap_span`,
  :func:`epre_exposed`). Nothing of it is built; docs/workloads.md states the assumptions.

EP's saving comes from :func:`exion.golden.cycles.transformer_block` (:func:`ep_point`), on
real masks or on masks synthesized for a top-k ratio and a dominant-row fraction
(:func:`synth_ep`, :func:`ep_sweep`); :func:`break_even` turns points x provisionings into
EP- and All-mode speedups. NumPy only, like the rest of ``exion.golden``.
"""

from __future__ import annotations

import math

import numpy as np

from .cycles import EPRE_RUN_FIXED, epre_phase_cycles, transformer_block

__all__ = ["BE_KS", "BE_DOM", "BE_UNITS", "STEPS", "N", "epre_projection", "overlap_span",
           "epre_exposed", "provisioning_variants", "head_sdue", "ep_point", "synth_ep",
           "epre_schedule", "epre_schedule_db", "epre_schedule_k", "epre_schedule_komem",
           "schedule_from_gemms",
           "ep_sweep", "break_even"]

# Sweep points of the bench: top-k ratios and dominant-row fractions (DiT-XL/2 has no
# predicted scores, so the dominant-row rule enters as the fraction of dominant query rows).
BE_KS = (0.05, 0.1, 0.2, 0.3, 0.5)
BE_DOM = (0.0, 0.1, 0.25, 0.5)
BE_UNITS = (16, 32, 64, 128, 256)         # 256 units x L = 16 lanes = the SDUE's 4096 MACs
STEPS, N = 100, 2                         # sampler steps, FFN-Reuse N of the schedule
_PROJ = ("q_proj", "k_proj", "v_proj")


def epre_projection(cfg, T, d, heads, d_head, units=None, per_unit_selectors=False) -> dict:
    """EPRE cycles of one attention layer (``heads`` runs, N_q = N_k = T) at a provisioning,
    from the built design's RTL-exact formula (``golden.cycles.epre_phase_cycles``; the RTL
    takes units, lanes per unit and selectors from the config, issue 18):

    * ``units=None``: the config's provisioning (U, Le, S) = ``cfg.epre_unit_count``,
      ``epre_lane_count``, ``epre_selector_count`` -- this *is* ``golden.cycles.epre_cycles``.
    * ``units=U``: U units of the config's Le lanes with one shared selector, or one selector
      per unit (``per_unit_selectors``: S = U, streamed insertion); insertion selectors
      whatever ``cfg.epre_selector_kind`` (the issue-14 / issue-18 comparison).

    Returns per-layer ``stage1``, ``stage2``, ``select``, ``total`` and per-head ``run``.
    """
    if units is None:
        p = epre_phase_cycles(cfg, T, T, d, d_head)
    else:
        u = int(units)
        p = epre_phase_cycles(cfg, T, T, d, d_head, u, selectors=u if per_unit_selectors else 1,
                              kind="insertion")
    run = p["stage1"] + p["stage2"] + p["select"] + EPRE_RUN_FIXED
    return {**{k: heads * v for k, v in p.items()}, "run": run, "total": heads * run}


def overlap_span(epre_run: int, sdue_heads) -> float:
    """**PROJECTION**: cycles of the attention phase when the EPRE runs one head ahead of the
    SDUE (EPRE run h+1 while the SDUE computes head h).

    Dependencies kept: the EPRE's runs need only the block's LN output X and Wq/Wk, so they go
    back to back from the start of the attention phase; the SDUE's head-h work (the Q/K/V
    projection rows of head h, scores[h], P.V[h]) needs EPRE run h's mask. Nothing of the
    next block can overlap (its EPRE needs this block's output), so the first run is always
    exposed. Assumes the masks of finished runs are buffered (T x T bits per head) and that
    the SDUE issues the Q/K/V projections in head (column) order, interleaved with scores[h]
    and P.V[h] (``sdue_heads`` charges each head 1/heads of the projection cycles). Splitting
    them into separate per-head GEMMs instead would pay the d_head = 72 padding (5 column
    tiles per head instead of 4.5: +9.5 k cycles per DiT-XL/2 projection); a column tile that
    straddles heads h and h+1 waiting for run h+1 is ignored. Both make it optimistic for EP.
    """
    e_done = s_end = 0.0
    for s in sdue_heads:
        e_done += epre_run
        s_end = max(s_end, e_done) + s
    return s_end


def epre_exposed(epre_run: int, sdue_heads, overlap: bool) -> float:
    """EPRE cycles on the block's critical path: all of them (as built, and as
    ``transformer_block`` charges them), or what :func:`overlap_span` leaves exposed."""
    if not overlap:
        return float(epre_run * len(sdue_heads))
    return overlap_span(epre_run, sdue_heads) - float(sum(sdue_heads))


def provisioning_variants(cfg) -> list[dict]:
    """EPRE provisionings compared: the config's (as built), U units with one shared or one
    per-unit selector, each before the SDUE or overlapped (:func:`epre_schedule`), and the
    EPRE-free bound. Every run count is the built RTL's formula; the overlap is the model of
    the schedule (``basis`` says which)."""
    out = [{"name": "config", "units": None, "per_unit_selectors": False, "overlap": False,
            "basis": "RTL-exact (config provisioning, EPRE before the SDUE)"},
           {"name": "config, overlap", "units": None, "per_unit_selectors": False,
            "overlap": True, "basis": "RTL-exact run, overlapped schedule (model)"}]
    for ov in (False, True):
        for sel in (False, True):
            for u in BE_UNITS:
                name = f"U={u}" + (", sel/unit" if sel else "") + (", overlap" if ov else "")
                out.append({"name": name, "units": u, "per_unit_selectors": sel,
                            "overlap": ov, "basis": "RTL formula" + (
                                ", overlapped schedule (model)" if ov else "")})
    out.append({"name": "EPRE free", "units": None, "per_unit_selectors": False,
                "overlap": False, "basis": "bound (EPRE cost 0)", "free": True})
    return out


def head_sdue(gemms, heads):
    """Per-head SDUE cycles of the attention work in one mode (projections split evenly)."""
    by = {g["name"]: g["sdue_cycles"] for g in gemms}
    proj = sum(by[n] for n in _PROJ) / heads
    return [proj + by[f"scores[{h}]"] + by[f"pv[{h}]"] for h in range(heads)]


def ep_point(cfg, T, d, heads, ffn, m, score_mask, skip_q, skip_k, skip_v):
    """Base and EP SDUE cycles of one block iteration (no FFN mask: EP and FFNR touch
    disjoint GEMMs, so their savings add exactly), per-head EP work, skipped rows."""
    r = transformer_block(cfg, T, d, heads, ffn=ffn, score_mask=score_mask, skip_q=skip_q,
                          skip_k=skip_k, skip_v=skip_v, merge_ways=m)
    b, e = r["modes"]["Base"], r["modes"]["EP"]
    by_b = {g["name"]: g["sdue_cycles"] for g in b["gemms"]}
    by_e = {g["name"]: g["sdue_cycles"] for g in e["gemms"]}
    grp = {"q_proj": ("q_proj",), "k_proj": ("k_proj",), "v_proj": ("v_proj",),
           "scores": tuple(f"scores[{h}]" for h in range(heads)),
           "pv": tuple(f"pv[{h}]" for h in range(heads))}
    return {"saving_by_gemm": {g: sum(by_b[x] - by_e[x] for x in xs) for g, xs in grp.items()},
            "base_by_gemm": {g: sum(by_b[x] for x in xs) for g, xs in grp.items()},
            "base_sdue": b["sdue_cycles"], "ep_sdue": e["sdue_cycles"],
            "ep_saving": b["sdue_cycles"] - e["sdue_cycles"],
            "base_stall": b["stall_cycles"],
            "ep_stall_saving": b["stall_cycles"] - e["stall_cycles"],
            "head_sdue": head_sdue(e["gemms"], heads),
            "head_kv": schedule_from_gemms(by_e, heads)[0],
            "head_rest": schedule_from_gemms(by_e, heads)[1],
            "skipped_q": int(skip_q.sum()), "skipped_k": int(skip_k.sum()),
            "skipped_v": int(skip_v.sum()), "rows": heads * T,
            "score_density": float((score_mask & ~skip_q[..., None]).mean())}


def synth_ep(rng, key_factors, heads, T, k, f_dom):
    """Synthesized EP outputs (DiT-XL/2 has no predicted scores here): ceil(k T) keys per query,
    drawn without replacement (Gumbel top-k) with per-key weights from ``key_factors`` (the
    key-popularity factors measured on real masks, drawn with replacement); a fraction ``f_dom`` of the query rows of each head
    is dominant (Bernoulli) and keeps only its top-1 key (polarity ``top1``). Skipped rows as
    golden.predict: Q of dominant rows, K of keys no non-dominant query selects, V of keys
    no query selects."""
    k_n = math.ceil(k * T)
    sm = np.zeros((heads, T, T), bool)
    dom = rng.random((heads, T)) < f_dom
    for h in range(heads):
        w = rng.choice(key_factors, T)
        order = np.argsort(-(np.log(w + 1e-3)[None, :] + rng.gumbel(size=(T, T))), axis=1)
        np.put_along_axis(sm[h], order[:, :k_n], True, axis=1)
        top1 = np.zeros((T, T), bool)
        np.put_along_axis(top1, order[:, :1], True, axis=1)
        sm[h] = np.where(dom[h][:, None], top1, sm[h])
    skip_k = ~(sm & ~dom[..., None]).any(axis=1)
    skip_v = ~sm.any(axis=1)
    return sm, dom, skip_k, skip_v


def ep_sweep(cfg, shape, key_factors, m, ks=BE_KS, doms=BE_DOM, seed=11) -> list[dict]:
    """EP points (:func:`ep_point`) over top-k ratios ``ks`` x dominant-row fractions ``doms``
    on synthesized masks (:func:`synth_ep`) of a ``shape`` = {"T", "d", "heads", "ffn"}; each
    point is seeded from ``(seed, k, fraction)``."""
    T, d, heads, ffn = shape["T"], shape["d"], shape["heads"], shape["ffn"]
    pts = []
    for f in doms:
        for k in ks:
            rng = np.random.default_rng([seed, int(1000 * k), int(1000 * f)])
            sm, dom, sk, sv = synth_ep(rng, key_factors, heads, T, k, f)
            p = ep_point(cfg, T, d, heads, ffn, m, sm, dom, sk, sv)
            pts.append({"k": k, "dominant": f, "dominant_measured": float(dom.mean()), **p})
    return pts


def break_even(cfg, shape, pts, base_sdue, ffnr_saving, ffnr_saving_mem=None, steps=STEPS,
               n=N):
    """EP- and All-mode speedups over Base for every sweep point x provisioning variant.

    Per block iteration (compute = SDUE + exposed EPRE, no global-buffer stalls):
    ``EP = Base - EP saving + exposed EPRE``; ``All = Base - EP saving - FFNR saving +
    exposed EPRE`` (disjoint GEMMs). 100 steps, N = 2: EP = 100 EP, FFNR = 34 Base + 66 FFNR,
    All = 34 EP + 66 All. EP pays off (EP > 1x, and All > FFNR) iff exposed EPRE < EP saving.
    ``*_mem`` speedups add the global-buffer stalls (Base stalls, EP's and FFNR's stall
    savings ``ffnr_saving_mem`` = FFNR's saving including stalls); the EPRE stays exposed as
    computed without stalls (its overlap window is the SDUE's compute only: conservative).
    """
    T, d, heads, dh = shape["T"], shape["d"], shape["heads"], shape["d"] // shape["heads"]
    n_dense = sum(1 for t in range(steps) if t % (n + 1) == 0)
    n_sparse = steps - n_dense
    base_tot = steps * base_sdue
    ffnr_tot = n_dense * base_sdue + n_sparse * (base_sdue - ffnr_saving)
    rows = []
    for v in provisioning_variants(cfg):
        if v.get("free"):
            proj = {"run": 0, "total": 0}
        else:
            proj = epre_projection(cfg, T, d, heads, dh, v["units"], v["per_unit_selectors"])
        for p in pts:
            if v["overlap"] and "head_kv" in p:
                exp = epre_schedule(proj["run"], p["head_kv"], p["head_rest"])["exposed"]
            else:
                exp = epre_exposed(proj["run"], p["head_sdue"], v["overlap"])
            ep_it = base_sdue - p["ep_saving"] + exp
            all_it = ep_it - ffnr_saving
            mem = {}
            if ffnr_saving_mem is not None:
                b_m = base_sdue + p["base_stall"]
                ep_m = b_m - p["ep_saving"] - p["ep_stall_saving"] + exp
                mem = {"speedup_ep_mem": b_m / ep_m,
                       "speedup_all_mem": steps * b_m / (n_dense * ep_m + n_sparse *
                                                         (ep_m - ffnr_saving_mem)),
                       "speedup_ffnr_mem": steps * b_m / (n_dense * b_m + n_sparse *
                                                          (b_m - ffnr_saving_mem))}
            rows.append({
                "variant": v["name"], "basis": v["basis"], "units": v["units"],
                "per_unit_selectors": v["per_unit_selectors"], "overlap": v["overlap"],
                "k": p["k"], "dominant": p.get("dominant"), "q_th": p.get("q_th"),
                "epre_total": proj["total"], "epre_exposed": exp, "ep_saving": p["ep_saving"],
                "net_ep_per_iteration": p["ep_saving"] - exp,
                "speedup_ep": base_tot / (steps * ep_it),
                "speedup_all": base_tot / (n_dense * ep_it + n_sparse * all_it),
                "speedup_ffnr": base_tot / ffnr_tot, "pays_off": exp < p["ep_saving"],
                **mem})
    return rows


# ---- the built overlapped schedule (issue 18) -----------------------------------------------
def epre_schedule(epre_run: int, kv_heads, rest_heads) -> dict:
    """Exposed EPRE cycles of one attention layer under the overlapped schedule of the built
    EPRE (SPEC 7: only exposed EPRE cycles count against EP's saving).

    The SDUE runs head by head: head h's K and V projection columns first (``kv_heads[h]``
    cycles; they do not wait for eager prediction: at k = 0.05 a key is needed by some
    query almost always, so EP skips almost no K/V rows, and those are charged dense), then
    head h's Q projection (skipping the dominant query rows EP found, at the SDUE's
    granularity: the (row, head) output segment, dropped by ConMerge on the projection's
    output mask), scores[h] and P.V[h] (``rest_heads[h]``), which need EPRE run h. The EPRE
    runs its heads back to back from the start of the attention phase (it needs only the
    block's LN output X and Wq_h / Wk_h, double-buffered in its W memory; masks of finished
    runs are buffered, N_q x N_k bits per head)::

        e_h = (h + 1) * epre_run                     EPRE run h done
        t  += kv_heads[h];  wait = max(0, e_h - t);  t += wait + rest_heads[h]

    ``exposed = sum(wait)``. Returns ``exposed``, ``span`` (the layer's attention cycles
    with the EPRE), ``sdue`` (without it) and ``waits`` per head.
    """
    if len(kv_heads) != len(rest_heads):
        raise ValueError("kv_heads and rest_heads must have one entry per head")
    t, waits = 0.0, []
    for h, (kv, rest) in enumerate(zip(kv_heads, rest_heads)):
        t += kv
        w = max(0.0, (h + 1) * epre_run - t)
        waits.append(w)
        t += w + rest
    sdue = float(sum(kv_heads) + sum(rest_heads))
    return {"exposed": float(sum(waits)), "span": t, "sdue": sdue, "waits": waits}


def epre_schedule_db(epre_run: float, kv_heads, rest_heads) -> dict:
    """Exposed EPRE cycles under the DSC's double-buffered schedule (issue 19,
    ``sim.dsc_program._epre_descs`` ``double``): head h + 1's Wq^T / Wk^T go into the W
    buffer run h does not read, beside it, and the SDUE takes its Q_h / K_h weight columns
    from the EPRE's W memory (GMEM_EFILL), so the weights cross the port once. The order is
    ``EPRE_0, [K/V_h, EPRE_STORE_h (waits for run h), EPRE_(h+1), rest_h]`` for each h: run
    h + 1 starts once run h's masks are out, beside the SDUE's rest_h and K/V_(h+1)::

        t += kv_heads[h];  wait = max(0, e - t);  t += wait;  e = t + epre_run;  t += rest_h

    (``e`` = end of the running run, ``epre_run`` from 0 for run 0). Returns ``exposed``,
    ``span``, ``sdue`` and ``waits`` as :func:`epre_schedule`."""
    if len(kv_heads) != len(rest_heads):
        raise ValueError("kv_heads and rest_heads must have one entry per head")
    t, e, waits = 0.0, float(epre_run), []
    for kv, rest in zip(kv_heads, rest_heads):
        t += kv
        waits.append(max(0.0, e - t))
        t += waits[-1]
        e = t + epre_run
        t += rest
    return {"exposed": float(sum(waits)), "span": t,
            "sdue": float(sum(kv_heads) + sum(rest_heads)), "waits": waits}


def epre_schedule_k(before: float, after: float, kv_heads, rest_heads) -> dict:
    """:func:`epre_schedule` when stage 2 of run h also waits for
    the SDUE's K_h (``epre_keys = "sdue"``). The SDUE runs one head ahead, so that run h's
    stage 2 overlaps head h+1's K / V projection: K/V_0, K/V_1, rest_0, K/V_2, rest_1, ...,
    rest_(H-1) (``rest`` = Q projection, scores, P.V, which need run h)::

        r_h = end of K/V_h;  e_h = max(e_(h-1) + before, r_h) + after
        before rest_h: wait = max(0, e_h - t)
    """
    if len(kv_heads) != len(rest_heads):
        raise ValueError("kv_heads and rest_heads must have one entry per head")
    H = len(kv_heads)
    t = e = 0.0
    waits = []
    ready = [0.0] * H
    if H:
        t = ready[0] = kv_heads[0]
    for h in range(H):
        e = max(e + before, ready[h]) + after
        if h + 1 < H:
            t += kv_heads[h + 1]
            ready[h + 1] = t
        waits.append(max(0.0, e - t))
        t += waits[-1] + rest_heads[h]
    return {"exposed": float(sum(waits)), "span": t, "waits": waits}


def epre_schedule_komem(epre_run: float, komem: float, kv_heads, rest_heads) -> dict:
    """Exposed EPRE cycles with exact keys over the DSC's on-core path (issue 19,
    EPRE_KOMEM): the DSC runs in order, and a run with ``k_given`` takes its keys when it
    starts, so head h's run starts after K/V_h and the KOMEM that moves K_h from OMEM into
    the Kh banks (``komem`` cycles of the DSC's own time, waiting for run h - 1 to end):
    ``K/V_0, KOMEM_0, EPRE_0, [K/V_(h+1), EPRE_STORE_h (waits for run h), KOMEM_(h+1),
    EPRE_(h+1), rest_h]``, run h + 1 beside rest_h and K/V_(h+2)::

        t = kv_0 + komem;  e = t + epre_run
        t += kv_(h+1);  wait = max(0, e - t);  t += wait + komem;  e = t + epre_run;
        t += rest_h

    ``exposed`` = the waits + every KOMEM (H ``komem``: EP's own cycles on the DSC).
    Returns ``exposed``, ``span``, ``sdue`` and ``waits`` as :func:`epre_schedule`."""
    if len(kv_heads) != len(rest_heads):
        raise ValueError("kv_heads and rest_heads must have one entry per head")
    H = len(kv_heads)
    t = float(kv_heads[0] + komem) if H else 0.0
    e, waits = t + epre_run, []
    for h in range(H):
        if h + 1 < H:
            t += kv_heads[h + 1]
        waits.append(max(0.0, e - t))
        t += waits[-1]
        if h + 1 < H:
            t += komem
            e = t + epre_run
        t += rest_heads[h]
    return {"exposed": float(sum(waits) + H * komem), "span": t,
            "sdue": float(sum(kv_heads) + sum(rest_heads)), "waits": waits}


def schedule_from_gemms(gemm_cycles: dict, heads: int) -> tuple[list, list]:
    """Per-head (K/V projection, Q projection + scores + P.V) SDUE cycles from a block's GEMM
    cycles by name (``q_proj``, ``k_proj``, ``v_proj``, ``scores[h]``, ``pv[h]``); a projection
    is split evenly over the heads (its columns are head-major)."""
    kv = (gemm_cycles.get("k_proj", 0) + gemm_cycles.get("v_proj", 0)) / heads
    q = gemm_cycles.get("q_proj", 0) / heads
    rest = [q + gemm_cycles.get(f"scores[{h}]", 0) + gemm_cycles.get(f"pv[{h}]", 0)
            for h in range(heads)]
    return [kv] * heads, rest


def epre_schedule_q(before: float, after: float, kv_heads, rest_heads,
                    beside_heads=None) -> dict:
    """Exposed EPRE cycles of the DSC's queued order with exact keys (issue 19,
    ``sim.dsc_program._queued_order``): runs 0 and 1 are handed over first, run h + 2
    after head h's rest; a run starts when the previous one ends (or at its hand-over),
    does stage 1 (``before``, the query side) and enters stage 2 (``after``: stage 2,
    selection, the fixed cycles) once head h's K_h | V_h tile has teed its keys; the SDUE
    runs one head ahead and waits for run h's masks before rest_h::

        K/V_0, [K/V_(h+1), wait run h, rest_h, hand over run h + 2]
        s_h = max(e_(h-1), hand_h);  e_h = max(s_h + before, end of K/V_h) + after

    ``beside_heads`` (``store-queue-q``, the DSC's ``q_early``): per head SDUE work that
    needs no mask (the Q projection computed densely), done after K/V_(h+1) and before the
    wait for run h. Returns ``exposed`` (the waits), ``span``, ``sdue`` and ``waits`` as
    :func:`epre_schedule`."""
    if len(kv_heads) != len(rest_heads):
        raise ValueError("kv_heads and rest_heads must have one entry per head")
    return epre_schedule_sub([[(before, after, r)] for r in rest_heads], kv_heads,
                             beside_heads)


def epre_schedule_sub(runs_heads, kv_heads, beside_heads=None) -> dict:
    """:func:`epre_schedule_q` with each head's queries scored in **sub-runs** (issue 19,
    the DSC's ``q_split``: run field ``q_base``, ``k_hold``): ``runs_heads[h]`` lists head
    h's sub-runs as ``(before, after, rest)``, ``rest`` the SDUE work that needs that
    sub-run's masks (the scores of the row blocks it completes; the last's with the head's
    P.V). The runs are queued in order over all
    heads (run r + 2 handed over after run r's rest), each starts when the previous one
    ends, does its stage 1 and enters stage 2 once its head's K_h | V_h tile has teed the
    keys (the sub-runs of a head share them); the SDUE waits for each sub-run's masks::

        K/V_0, [K/V_(h+1), beside_h, [wait run (h, j), rest_(h,j)] for each j]

    :func:`epre_schedule_q` is the case of one sub-run per head. Returns ``exposed``,
    ``span``, ``sdue`` and ``waits`` (one per sub-run)."""
    if len(kv_heads) != len(runs_heads):
        raise ValueError("kv_heads and runs_heads must have one entry per head")
    H = len(kv_heads)
    beside = [0.0] * H if beside_heads is None else list(beside_heads)
    flat = [(h, float(b), float(a)) for h in range(H) for b, a, _ in runs_heads[h]]
    hand = [0.0] * len(flat)
    ready = [0.0] * H
    ends: list = []
    t, waits = 0.0, []

    def end(i):
        while len(ends) <= i:
            k = len(ends)
            h, b, a = flat[k]
            s0 = max(ends[-1] if ends else 0.0, hand[k])
            ends.append(max(s0 + b, ready[h]) + a)
        return ends[i]
    if H:
        t = ready[0] = float(kv_heads[0])
    i = 0
    for h in range(H):
        if h + 1 < H:
            t += kv_heads[h + 1]
            ready[h + 1] = t
        t += beside[h]
        for _, _, rest in runs_heads[h]:
            waits.append(max(0.0, end(i) - t))
            t += waits[-1] + rest
            if i + 2 < len(flat):
                hand[i + 2] = t
            i += 1
    return {"exposed": float(sum(waits)), "span": t,
            "sdue": float(sum(kv_heads) + sum(r for rs in runs_heads for *_, r in rs)
                          + sum(beside)), "waits": waits}
