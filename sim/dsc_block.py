"""One block iteration of the digits DiT as the DSC core runs it (``exion sim block``).

:func:`block_case` replays the sampler of an ``exion trace`` run (its ``meta``: seed,
steps, samples, EXION switches; the INT12 path is ``golden.dsc``) up to block ``b`` of
iteration ``t`` and returns that block iteration's inputs (residual stream, adaLN vectors,
FFN-Reuse state), its golden output and its record of core steps (``rec``), for one sample.
It checks the replay against the trace's own arrays (FC1 input, FFN-Reuse mask, EP mask)
where the trace has them, so a trace from another model or setting is refused.
:func:`run_block` then runs every core GEMM and the GELU + requant of it through the
Verilated DSC and compares.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from exion.config import Config
from exion.errors import ExionError
from exion.golden import dsc
from exion.golden.dsc_cycles import program_cycles
from exion.golden.ffn_reuse import schedule

__all__ = ["BlockCase", "block_case", "run_block", "exion_from_meta", "sample_loop"]


@dataclass
class BlockCase:
    block: int
    iteration: int
    dense: bool
    sample: int
    out: np.ndarray                 # golden block output (1, T, d)
    rec: dict                       # golden.dsc record of the core steps
    stats: dict = field(default_factory=dict)
    rec_sample: int = 0             # sample of ``rec``'s batch (a guided batch: 0 or 1)


def exion_from_meta(meta: dict):
    from exion.workloads.dit import Exion
    e = dict(meta.get("exion", {}))
    return Exion(**{k: v for k, v in e.items() if k in Exion.__dataclass_fields__})


def sample_loop(model, ex, steps: int, n: int, seed: int, labels, block_fn,
                guidance: float = 1.0) -> np.ndarray:
    """``exion.workloads.dit.sample`` (DDIM, eta 0; the same noise, labels and mask RNG;
    the same classifier-free ``guidance``) with each block iteration done by ``block_fn(i,
    it, x, mod, bw, state_i, dense, stats, mask_rng)`` (returns the new residual stream;
    ``golden.dsc.block_iteration`` gives the INT12 sampler; with guidance its batch is the n
    conditional samples then their n unconditional copies). Returns the final images (n, 8,
    8)."""
    from exion.workloads.common import ARCH, alpha_bars
    from exion.workloads.dit import _silu, check_guidance, ddim_timesteps, guided, guided_batch
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n, ARCH["image"], ARCH["image"]))
    labels = np.asarray(labels)
    mask_rng = np.random.default_rng([seed, 1])
    ab = alpha_bars()
    ts = ddim_timesteps(steps)
    sched = schedule(steps, ex.n, ex.dense_tail) if ex.ffn_reuse else np.ones(steps, bool)
    state = [{} for _ in range(model.depth)]
    w = model.w
    guidance = check_guidance(guidance)
    for it, t in enumerate(ts):
        stats: dict = {}
        imgb, yb = guided_batch(img, labels, guidance)
        c = model.cond(np.full(len(yb), t), yb)
        sc = _silu(c)
        x = model.patchify(imgb) @ w["patch.w"] + w["patch.b"] + w["pos"]
        for i in range(model.depth):
            m = sc @ w[f"blocks.{i}.ada.w"] + w[f"blocks.{i}.ada.b"]
            mod = [v[:, None, :] for v in np.split(m, 6, axis=-1)]
            bw = dsc.block_weights(w, model._wq, i, model.heads)
            x = block_fn(i, it, x, mod, bw, state[i], bool(sched[it]), stats, mask_rng)
        sh, scl = np.split(sc @ w["fada.w"] + w["fada.b"], 2, axis=-1)
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        xo = (x - mu) / np.sqrt(var + ARCH["ln_eps"]) * (1 + scl[:, None]) + sh[:, None]
        e = guided(model.unpatchify(xo @ w["out.w"] + w["out.b"]), n, guidance)
        a_t = ab[t]
        a_prev = ab[ts[it + 1]] if it + 1 < steps else 1.0
        x0 = (img - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
        img = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * e
    return img


class _Found(Exception):
    pass


def block_case(model, meta: dict, block: int, iteration: int, sample: int = 0,
               z=None) -> BlockCase:
    """Replay the sampler of ``meta`` to (block, iteration) for ``sample``."""
    ex = exion_from_meta(meta)
    steps, n, seed = int(meta["steps"]), int(meta["samples"]), int(meta["seed"])
    if not 0 <= block < model.depth:
        raise ExionError(f"--block {block} is out of range 0..{model.depth - 1}")
    if not 0 <= iteration < steps:
        raise ExionError(f"--iter {iteration} is out of range 0..{steps - 1}")
    if not 0 <= sample < n:
        raise ExionError(f"--sample {sample} is out of range 0..{n - 1}")
    labels = np.asarray(meta.get("labels", np.arange(n) % 10))

    def fn(i, it, x, mod, bw, st_i, dense, stats, mask_rng):
        if it == iteration and i == block:
            sl = slice(sample, sample + 1)
            st = {k: (v[sl] if isinstance(v, np.ndarray) and v.shape[:1] == (n,) else v)
                  for k, v in copy.deepcopy(st_i).items()}
            rec: dict = {}
            bstats: dict = {}
            out = dsc.block_iteration(model.cfg, bw, x[sl], [v[sl] for v in mod], ex, st,
                                      dense, bstats, None, rec, layer=i)
            raise _Found(BlockCase(block, iteration, dense, sample, out, rec, bstats))
        return dsc.block_iteration(model.cfg, bw, x, mod, ex, st_i, dense, stats, mask_rng,
                                   layer=i)
    try:
        sample_loop(model, ex, steps, n, seed, labels, fn)
    except _Found as f:
        case = f.args[0]
        if z is not None:
            _check_trace(z, meta, case)
        return case
    raise ExionError("iteration not reached")   # unreachable: the range is checked


def _check_trace(z, meta, case: BlockCase) -> None:
    """The replay must reproduce the trace's recorded operands (same model and run)."""
    from exion.workloads.trace import extract, key
    b, t, s = case.block, case.iteration, case.sample
    checks = [("fc1_x", case.rec["ffn"]["x"][0])]
    if case.rec["ffn"]["mask"] is not None:
        checks.append(("fc1_mask", case.rec["ffn"]["mask"][0]))
    if "epre" in case.rec:
        checks.append(("ep_mask", case.rec["epre"]["keep"][0]))
    for name, mine in checks:
        k = key(b, t, name)
        if k not in z.files:
            continue
        theirs = extract(z, meta, k, sample_idx=s)
        if not np.array_equal(np.asarray(theirs, np.int64), np.asarray(mine, np.int64)):
            raise ExionError(f"trace key {k!r} differs from the replay of its run (another "
                             f"model or weights?)")


def run_block(cfg: Config, case: BlockCase, *, stall: float = 0.0, seed: int | None = None,
              waves: bool = False, progress=None, session=None,
              ep_schedule: str = "auto", cfse_overlap: bool | str = "auto",
              fuse_gelu: bool = True, share_w: bool = True, key_queue: bool = True,
              q_early: bool | str = "auto", q_split: tuple = ()) -> dict:
    """Every core segment of ``case`` the DSC runs (LN, EP on the EPRE, its GEMMs, softmax,
    GELU + requant, FFN-Reuse unit: ``sim.dsc_program.block_program``) through the Verilated
    DSC (one program, one run;
    on ``session``'s simulator if given):
    bit-exact check against golden.dsc, cycles per job and descriptor vs the model.
    ``ep_schedule``: EP beside the K / V projection or before the Q/K/V product, or the one
    the cycle model estimates faster (``sim.dsc_program.block_program``); ``cfse_overlap``:
    the CFSE work beside the GEMMs that do not need it (``sim.dsc_program.overlap_cfse``;
    ``"auto"``: where the cycle model estimates it faster); ``fuse_gelu``: FC1's GELU
    straight from OMEM (GELU_OMEM; ``sim.dsc_program.block_jobs``); ``share_w``: the EPRE's
    Wq / Wk teed from the Q|K|V product's GMEM_LOAD where it applies
    (``sim.dsc_program.build_program``); ``key_queue``: exact keys' runs queued or in order;
    ``q_early``: queued runs' Q projection dense beside them; ``q_split``: queued runs in
    sub-runs from these query rows (``sim.dsc_program.block_program``)."""
    from .dsc_program import block_program, gemm_bodies, read_results, stage_durations
    from .dsc_rtl import rtl_dsc
    jobs, prog, used = block_program(cfg, case.rec, case.rec_sample, ep_schedule,
                                     cfse_overlap=cfse_overlap, fuse_gelu=fuse_gelu,
                                     share_w=share_w, key_queue=key_queue,
                                     q_early=q_early, q_split=q_split)
    if session is not None:      # a DscSession: one simulator for many block iterations
        runs, report = session.run([prog]), {}
    else:
        runs, report = rtl_dsc(cfg, [prog], stall=stall, seed=seed, waves=waves,
                               progress=progress)
    run = runs[0]
    outs = read_results(cfg, prog, run["image"])
    bad = [j.name for j, o in zip(jobs, outs) if not np.array_equal(o, j.expect)]
    durs = stage_durations(prog.descs, run["stages"], run["cycles"], prog.bus_bits)
    bodies = gemm_bodies(prog.descs, durs, run.get("engine", []), prog.bus_bits)
    model = program_cycles(cfg, prog.descs, prog.bus_bits, bodies)
    est = program_cycles(cfg, prog.descs, prog.bus_bits)
    per_job: dict = {}
    for d, dur in zip(prog.descs, durs):
        j = d.get("job")
        if j is not None:
            name = j.split("[")[0]
            per_job[name] = per_job.get(name, 0) + dur
    return {"pass": not bad and run["error"] == 0, "mismatch": bad, "error": run["error"],
            "cycles": run["cycles"], "passes": run["passes"], "durations": durs,
            "model": model, "estimate": est, "descs": prog.descs, "gemm_cycles": per_job,
            "jobs": len(jobs), "report": report, "ep_schedule": used,
            "cfse_overlap": prog.cfse_overlap, "shared_w": prog.shared_w,
            "filled_w": prog.filled_w, "q_early": prog.q_early}
