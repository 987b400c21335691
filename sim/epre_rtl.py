"""``rtl_predict``: the Verilated EPRE as a plain function (pytest / CLI side).

    run = rtl_predict(cfg, x, wq, wk, k, q_th_int=..., polarity=...)
    np.testing.assert_array_equal(run.score_mask, run.golden.score_mask)

The host part is here and shared with the Amaranth-simulator tests: :func:`prepare` turns
operands into memory images and a run descriptor (the host's job: stage-1 shifts from the
golden calibration unless given, kN, the clipped q_th, word counts), :func:`decode` turns
the raw read-outs back into arrays. Several cases run in one simulator invocation
(:func:`rtl_predict_many`); the build is shared by the whole session (``sim/runner.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from exion.config import Config
from exion.errors import ExionError
from exion.golden.cycles import epre_run_cycles
from exion.golden.predict import PredictResult, epre

from .runner import rtl_build, run_bench_pickled

__all__ = ["EpreJob", "EpreRun", "Sizes", "prepare", "decode", "rtl_predict",
           "rtl_predict_many"]


@dataclass(frozen=True)
class Sizes:
    """The EPRE instance's maximum sizes (``EpreSizes.as_dict()`` / the manifest)."""

    units: int
    lanes: int
    selectors: int
    rounds: int
    streamed: int
    n_max: int
    d_max: int
    dh_max: int
    g_max: int
    dw_max: int
    hw_max: int
    entries: int
    x_depth: int
    w_depth: int
    h_depth: int
    radix: int = 0          # selector kind: 1 = radix (hw.epre_radix), 0 = insertion
    ports: int = 8          # radix selector ports P

    @property
    def kind(self) -> str:
        return "radix" if self.radix else "insertion"

    @classmethod
    def from_dict(cls, d: dict) -> Sizes:
        return cls(**{k: int(d[k]) for k in cls.__dataclass_fields__ if k in d})


@dataclass
class EpreJob:
    """One prediction prepared for the hardware (pickled to the bench)."""

    name: str
    x_words: np.ndarray        # (x_addrs, units, L): X banks, addresses 0..x_addrs-1
    w_addrs: np.ndarray        # (n,) WMEM addresses
    w_words: np.ndarray        # (n, L)
    run: dict                  # run_layout fields
    n_q: int
    n_k: int
    d: int
    d_head: int
    q_groups: int
    k_groups: int
    h_words: int
    golden: PredictResult | None = field(default=None, repr=False)
    kh_words: np.ndarray | None = None   # (k_groups * h_words, units, L): exact keys (k_given)


@dataclass
class EpreRun:
    """RTL results of one prediction, beside the golden ones."""

    name: str
    qh: np.ndarray
    kh: np.ndarray
    sh: np.ndarray
    score_mask: np.ndarray
    dominant: np.ndarray
    key_needed: np.ndarray
    k_needed: np.ndarray
    cycles: int
    model_cycles: int
    golden: PredictResult

    @property
    def sparsity(self) -> float:
        return 1.0 - float(self.score_mask.sum()) / self.score_mask.size


def _words(a: np.ndarray, L: int) -> np.ndarray:
    """(rows, n) -> (rows, ceil(n / L), L), zero-padded."""
    rows, n = a.shape
    nw = math.ceil(n / L)
    out = np.zeros((rows, nw * L), dtype=np.int64)
    out[:, :n] = a
    return out.reshape(rows, nw, L)


def prepare(cfg: Config, sizes: Sizes, x, wq, wk, k, shift_q=None, shift_k=None,
            q_th_int=None, polarity: str = "top1", lod_terms=None, x_kv=None,
            name: str = "case", k_exact=None, q_rows=None) -> EpreJob:
    """Golden prediction + the memory images and run descriptor that make the RTL do it.
    ``k_exact``: exact keys (``wk`` None), written into the Kh banks, run flag ``k_given``.
    ``q_rows`` = (a, b): a **sub-run** (issue 19): X holds every row of ``x`` (the keys of a
    self-attention), the run scores queries a .. b - 1 (a a multiple of the units: run field
    ``q_base``) with the whole head's stage-1 shifts (``shift_q`` / ``shift_k`` None: the
    ideal host's over all rows), so its rows are rows a .. b - 1 of the whole run's."""
    x = np.asarray(x, dtype=np.int64)
    q_lo = 0
    if q_rows is not None:
        q_lo, q_hi = (int(v) for v in q_rows)
        if x_kv is not None:
            raise ExionError(f"EPRE job {name}: q_rows (a sub-run) is for self-attention; "
                             "give no x_kv")
        if x.shape[0] > sizes.n_max:
            raise ExionError(f"EPRE job {name}: X has {x.shape[0]} rows, this EPRE holds "
                             f"{sizes.n_max}")
        if not (0 <= q_lo < q_hi <= x.shape[0]) or q_lo % sizes.units:
            raise ExionError(f"EPRE job {name}: q_rows = {tuple(q_rows)} must be a < b <= "
                             f"N = {x.shape[0]} with a a multiple of the {sizes.units} units")
        if shift_q is None or (k_exact is None and shift_k is None):
            whole = epre(cfg, x, wq, wk, k, shift_q=shift_q, shift_k=shift_k,
                         lod_terms=lod_terms, k_exact=k_exact)
            shift_q, shift_k = whole.shift_q, None if k_exact is not None else whole.shift_k
        x_kv = None if k_exact is not None else x
    res = epre(cfg, x if q_rows is None else x[q_lo:q_hi], wq, wk, k, shift_q=shift_q,
               shift_k=shift_k, q_th_int=q_th_int, polarity=polarity, lod_terms=lod_terms,
               x_kv=x_kv, k_exact=k_exact)
    if q_rows is not None:
        x_kv = None
    given = k_exact is not None
    xk = x if x_kv is None else np.asarray(x_kv, dtype=np.int64)
    wq = np.asarray(wq, dtype=np.int64)
    U, L = sizes.units, sizes.lanes
    n_q, d = res.qh.shape[0], x.shape[1]
    n_k = res.kh.shape[0]
    d_head = wq.shape[1]
    if res.lod_terms == 2 and cfg.lod_terms == 1:   # TS-LOD hardware also runs LOD mode
        raise ExionError(f"lod_terms = {res.lod_terms}: this EPRE was generated with "
                         f"lod_terms = {cfg.lod_terms} (LOD-only hardware has no TS-LOD mode)")
    for nm, v, lim in (("N_q", q_lo + n_q, sizes.n_max), ("N_k", n_k, sizes.n_max),
                       ("d", d, sizes.d_max), ("d_head", d_head, sizes.dh_max)):
        if v > lim:
            raise ExionError(f"{nm} = {v} exceeds this EPRE's maximum {lim} "
                             f"(generate with a larger {'n_max' if nm[0] == 'N' else nm + '_max'})")
    gq, gk = math.ceil(n_q / U), math.ceil(n_k / U)
    kv_group = 0 if x_kv is None else gq
    if given and gk > sizes.g_max:
        raise ExionError(f"N_k = {n_k} exact keys need {gk} row groups of Kh, this EPRE has "
                         f"{sizes.g_max}")
    if not given and kv_group + gk > sizes.g_max:
        raise ExionError(f"cross-attention needs ceil(N_q/units) + ceil(N_k/units) = "
                         f"{kv_group + gk} row groups of X, this EPRE has {sizes.g_max}")
    dw = math.ceil(d / L)
    hw = math.ceil(d_head / L)
    # X banks: row r -> bank r % U, word (r // U) * dw + kw.
    rows = x if x_kv is None else np.concatenate(
        [np.vstack([x, np.zeros((gq * U - n_q, d), np.int64)]), xk])
    g_tot = math.ceil(rows.shape[0] / U)
    padded = np.zeros((g_tot * U, d), dtype=np.int64)
    padded[:rows.shape[0]] = rows
    xw = _words(padded, L).reshape(g_tot, U, dw, L).transpose(0, 2, 1, 3)
    x_words = xw.reshape(g_tot * dw, U, L)
    # W^T rows: Wq^T row j at j * dw + kw; Wk^T at dh_max * dw_max + j * dw + kw (exact
    # keys: Wq^T only).
    w_addrs = np.arange(d_head * dw)
    w_words = _words(wq.T, L).reshape(d_head * dw, L)
    if not given:
        wkw = _words(np.asarray(wk, dtype=np.int64).T, L).reshape(d_head * dw, L)
        w_addrs = np.concatenate([w_addrs, w_addrs + sizes.dh_max * sizes.dw_max])
        w_words = np.concatenate([w_words, wkw])
    kh_words = None
    if given:   # Kh banks: key row r -> bank r % U, word (r // U) * hw + kw
        kp = np.zeros((gk * U, d_head), dtype=np.int64)
        kp[:n_k] = res.kh
        kh_words = _words(kp, L).reshape(gk, U, hw, L).transpose(0, 2, 1, 3) \
            .reshape(gk * hw, U, L)
    run = {"n_q": n_q, "n_k": n_k, "q_groups": gq, "k_groups": gk, "kv_base": kv_group * dw,
           "q_base": q_lo // U * dw,
           "d_words": dw, "d_head": d_head, "h_words": hw,
           "shift_q": res.shift_q, "shift_k": res.shift_k, "k_n": res.k_n,
           "q_th": 0 if q_th_int is None else min(int(q_th_int), 2 ** cfg.acc_width),
           "q_th_en": int(q_th_int is not None), "keep_all": int(polarity == "keep_all"),
           "two_step": int(res.lod_terms == 2), "k_given": int(given)}
    if getattr(sizes, "w_bufs", 1) > 1:
        run["w_buf"] = 0        # the DSC's double-buffered W memory: the host picks the buffer
    if getattr(sizes, "k_bufs", 1) > 1:
        run["k_buf"] = run["k_wait"] = run["k_hold"] = 0   # the DSC's Kh buffers: the host
        #                                                    queues runs
    return EpreJob(name, x_words, w_addrs, w_words, run, n_q, n_k, d, d_head, gq, gk, hw,
                   golden=res, kh_words=kh_words)


def _bits_of(value, n: int) -> list[int]:
    """Bits 0..n-1 of a (wide) Python integer."""
    v = int(value)
    return [(v >> b) & 1 for b in range(n)]


def decode(cfg: Config, sizes: Sizes, job: EpreJob, raw: dict) -> dict:
    """Raw read-outs -> arrays.

    ``raw``: ``qh_words`` / ``kh_words`` (h addresses, units, L) read through ``h_r``;
    ``scores`` list of (group, key, [units scores]); ``masks`` list of (row, dominant, int);
    ``key_needed`` / ``k_needed`` ints; ``cycles``.
    """
    U, L = sizes.units, sizes.lanes
    hw = job.h_words

    def rows_of(words, groups, n):
        w = np.asarray(words, dtype=np.int64)[:groups * hw].reshape(groups, hw, U, L)
        return w.transpose(0, 2, 1, 3).reshape(groups * U, hw * L)[:n, :job.d_head]

    qh = rows_of(raw["qh_words"], job.q_groups, job.n_q)
    kh = rows_of(raw["kh_words"], job.k_groups, job.n_k)
    sh = np.zeros((job.n_q, job.n_k), dtype=np.int64)
    seen = np.zeros((job.n_q, job.n_k), dtype=bool)
    for grp, key, scores in raw["scores"]:
        for u in range(U):
            r = grp * U + u
            if r < job.n_q:
                sh[r, key] = scores[u]
                seen[r, key] = True
    if not seen.all():
        raise AssertionError(f"{job.name}: the score tap missed {int((~seen).sum())} scores")
    rows = [mk[0] for mk in raw["masks"]]
    if rows != list(range(job.n_q)):
        raise AssertionError(f"{job.name}: mask rows came out as {rows[:8]}..., expected "
                             f"0..{job.n_q - 1} in order")
    mask = np.array([_bits_of(mk[2], job.n_k) for mk in raw["masks"]], dtype=bool)
    mask = mask.reshape(len(raw["masks"]), job.n_k)
    extra = [int(mk[2]) >> job.n_k for mk in raw["masks"]]
    if any(extra):
        raise AssertionError(f"{job.name}: mask rows have bits set beyond N_k = {job.n_k}")
    dom = np.array([bool(mk[1]) for mk in raw["masks"]])
    kn = np.array(_bits_of(raw["key_needed"], job.n_k), dtype=bool)
    kk = np.array(_bits_of(raw["k_needed"], job.n_k), dtype=bool)
    return {"qh": qh, "kh": kh, "sh": sh, "score_mask": mask, "dominant": dom,
            "key_needed": kn, "k_needed": kk, "cycles": int(raw["cycles"])}


def to_run(cfg: Config, sizes: Sizes, job: EpreJob, raw: dict) -> EpreRun:
    out = decode(cfg, sizes, job, raw)
    return EpreRun(name=job.name, model_cycles=epre_run_cycles(
        cfg, job.n_q, job.n_k, job.d, job.d_head, units=sizes.units,
        lanes=sizes.lanes, selectors=sizes.selectors, kind=sizes.kind, ports=sizes.ports,
        k_given=bool(job.run.get("k_given"))), golden=job.golden, **out)


def rtl_predict_many(cfg: Config, cases: list[dict], *, seed: int | None = None,
                     waves: bool = False, backpressure: bool = False, tap: bool = True,
                     run_name: str = "epre", progress=None,
                     box_epre_units: bool = False) -> tuple[list[EpreRun], dict]:
    """Run several predictions (``cases``: keyword dicts of :func:`prepare`, plus ``name``)
    in one simulator invocation of the Verilated EPRE for ``cfg``; ``box_epre_units``: of
    the Verilog that hierarchical synthesis reads (its units as instances of one module)."""
    build = rtl_build(cfg, "epre", waves=waves, progress=progress,
                      box_epre_units=box_epre_units)
    sizes = Sizes.from_dict(build.manifest_data()["constants"])
    jobs = [prepare(cfg, sizes, **c) for c in cases]
    raws, report = run_bench_pickled(
        build, "exion.sim.tb_epre", [_strip(j) for j in jobs], key="jobs", seed=seed,
        run_name=run_name, params={"backpressure": backpressure, "tap": tap})
    runs = []
    for j, raw in zip(jobs, raws):
        if not tap:
            raw = dict(raw, scores=[(g, key, [0] * sizes.units)
                                    for g in range(j.q_groups) for key in range(j.n_k)])
        runs.append(to_run(cfg, sizes, j, raw))
    return runs, report


def _strip(job: EpreJob) -> EpreJob:
    """The job without its golden result (the bench needs only the images)."""
    return EpreJob(job.name, job.x_words, job.w_addrs, job.w_words, job.run, job.n_q,
                   job.n_k, job.d, job.d_head, job.q_groups, job.k_groups, job.h_words,
                   kh_words=job.kh_words)


def rtl_predict(cfg: Config, x, wq, wk, k, shift_q=None, shift_k=None, q_th_int=None,
                polarity: str = "top1", lod_terms=None, x_kv=None, *, seed: int | None = None,
                progress=None, k_exact=None) -> EpreRun:
    """Eager prediction on the Verilated EPRE; same arguments as ``golden.predict.epre``
    (= ``eager_predict``).

    Returns an :class:`EpreRun` (``score_mask``, ``dominant``, ``key_needed``, ``k_needed``,
    stage outputs ``qh``/``kh``/``sh``, ``cycles`` measured and ``model_cycles``) whose
    ``golden`` is the :class:`PredictResult` of the same call. The caller compares.
    """
    runs, _ = rtl_predict_many(cfg, [dict(x=x, wq=wq, wk=wk, k=k, shift_q=shift_q,
                                          shift_k=shift_k, q_th_int=q_th_int,
                                          polarity=polarity, lod_terms=lod_terms, x_kv=x_kv,
                                          k_exact=k_exact, name="predict")],
                               seed=seed, progress=progress, run_name="predict")
    return runs[0]
