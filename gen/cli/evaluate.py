"""``exion evaluate``: EXION-4 / EXION-24 on the seed's seven workloads (docs/evaluate.md).

The model is :mod:`exion.golden.system` over the per-core model (:mod:`exion.golden.block`,
:mod:`exion.golden.dataflow`); workloads are :mod:`exion.golden.workloads_sys`. Bad input
raises :class:`~exion.errors.ExionError` before anything is written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import time

from exion.errors import ExionError
from exion.golden import block as bl
from exion.golden import system as sy
from exion.golden import workloads_sys as ws

from .options import add_report, add_seed, check_output, progress, write_json

DEFAULT_JSON = "build/evaluate/evaluate.json"

#: What the per-core figures depend on: the config and the model packages (and NumPy, whose
#: generators draw the synthetic masks). Part of the disk cache's file name.
_MODEL_SOURCES = (("exion", "*.py"), ("exion.golden", "*.py"))


def model_hash() -> str:
    """Hash of the sources the per-core figures are computed from, and NumPy's version (the
    generator's source hash, ``exion.gen.verilog``, over :data:`_MODEL_SOURCES`)."""
    import numpy as np

    from exion.gen.verilog import _hash, source_files
    return _hash(source_files(_MODEL_SOURCES), salt=f"numpy {np.__version__}")


def cache_path():
    """``<build root>/evaluate/per-core-<model hash>.pkl``: the disk cache of the per-core
    figures (``golden.system.per_core_caches``)."""
    from exion.paths import build_root
    return build_root() / "evaluate" / f"per-core-{model_hash()}.pkl"


def _merge(known: dict) -> None:
    """Add the per-core figures ``known`` (by table, as :func:`golden.system.per_core_caches`
    names them) that this process does not have yet."""
    for name, table in sy.per_core_caches().items():
        for k, v in known[name].items():
            table.setdefault(k, v)


@contextlib.contextmanager
def disk_cache(enabled: bool = True, report=None):
    """Load the per-core figures a previous run of the same model code kept, run the block,
    and keep what is known then (written beside and renamed, so a concurrent run reads a
    whole file; an unreadable one is a miss). The figures do not depend on the core count or
    the off-chip memory, so a sweep of those reuses every block's figures [choice]."""
    if not enabled:
        yield
        return
    path = cache_path()
    caches = sy.per_core_caches()
    try:
        kept = pickle.loads(path.read_bytes())
        _merge(kept)
        if report:
            report(f"per-core figures from {path} ({len(kept['block'])} blocks)")
    except FileNotFoundError:
        pass
    except Exception as e:     # damaged or foreign: a miss, and the run rewrites it
        if report:
            report(f"ignoring the unreadable cache {path} ({type(e).__name__})")
    yield                      # a run that fails writes nothing
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps({k: dict(t) for k, t in caches.items()},
                                 protocol=pickle.HIGHEST_PROTOCOL))
    os.replace(tmp, path)

JSON_FIELDS = """\
JSON layout (times in seconds, energies in joules, per generated image / clip / motion):
  system                  the system's fields (dscs, core, clock_mhz, gm_mb,
                          gm_bytes_per_cycle, offchip_gb_per_s, offchip_pj_per_byte,
                          leak_mw_per_core, leak_mw_per_gm_mb, dataflow, gpu, and the
                          EPRE levers epre_fetch, epre_keys, epre_stage2,
                          epre_gather, docs/evaluate.md "EPRE levers"; shared,
                          per-block, row, packed = the default design; the schedules
                          cond_layers and epre_sub_runs)
  energy_table_pj         the energy constants (docs/evaluate.md gives each source)
  seed, masks             synthetic-mask seed and kind (random | column)
  ep_key_corr             the synthetic EP masks' key correlation rho (--ep-key-corr)
  guidance                true with --guidance: every step runs the conditional and the
                          unconditional prediction as one batch of two (weights fetched once)
  ordering_holds_count    models for which Base < EP < FFNR < All holds
  models.<NAME>           one per model:
    task, iterations, s, n_reuse, k, q_th, ep_sparsity_seed, params, dense_macs_per_iter,
    network_evals_per_step (1, or 2 with --guidance)
    ordering_holds        Base < EP < FFNR < All in speed (strictly falling latency)
    gpu                   gpu, latency_s, energy_j, estimate (a roofline estimate)
    modes.<Base|EP|FFNR|All>:
      latency_s, energy_j       one generation on the system
      speedup_vs_gpu            gpu latency_s / latency_s
      energy_eff_vs_gpu         gpu energy_j / energy_j
      utilization               useful MACs / (peak MACs/s x latency_s)
      bound                     compute | global memory | off-chip (the one holding for
                                most of the time); bound_time_s: time under each
      energy_breakdown_j        mac, shift_add, sram, gm, offchip, cfse, leakage
      onchip_s, offchip_s, macs, iterations {total, dense, sparse}
      time_by_part_s            on-chip time by part (sums to onchip_s): qkv, attention,
                                o_proj, cross, fc1, fc2, cfse, epre (exposed), outside
      offchip_fraction          activations / ffnr_caches / context_kv / cond_outputs /
                                weights / once_weights held off chip
      footprint_bytes           weights (a step's), activations, ffnr_caches, context_kv
                                (the contexts' K / V, computed once), cond_outputs (every
                                step's conditioning), once_weights (read by the once pass
                                alone)
      projection_epre_hidden    {latency_s, speedup_vs_gpu}: EPRE fully overlapped with the
                                SDUE (a projection, not the per-core model)
      outside_blocks            layers outside transformer blocks (dense, included in the
                                totals): macs_per_iteration, weight_params, onchip_s,
                                mac_energy_j; step_conditioning {schedule (batched |
                                per-step), macs_per_step, weight_params, outputs_per_step,
                                context_kv {macs, params, outputs} of one step,
                                condition_encoder {macs, weight_params}, once: the
                                batched pass {latency_s, onchip_s, offchip_s,
                                offchip_bytes, macs, context_kv_macs, encoder_macs} or
                                null}
      blocks                    per block and iteration kind: cycles_per_instance (on the
                                system), core_cycles_1core, useful_macs, ffn_sparsity, mode (the
                                mode the schedule ran: EP or not), attn_split, epre_keys
                                (with EP: predicted or store-queue, the key path it ran),
                                ep_sub_rows (with EP: the query counts of a unit's EPRE
                                runs; more than one: sub-runs), ...
"""


def _models(arg, guidance=False):
    models = list(ws.MODELS.values()) if arg == "all" else [ws.get_model(arg)]
    return [ws.guided(m) for m in models] if guidance else models


def _model_entry(sysm, m, seed, masks, guidance, ep_key_corr, prog=None) -> dict:
    """One model's JSON entry (``models.<NAME>``): every mode on ``sysm``."""
    e = {"task": m.task, "unit": m.unit, "iterations": m.iterations, "s": m.s,
         "n_reuse": m.n_reuse, "k": m.k, "q_th": m.q_th, "ep_sparsity_seed": m.ep_sparsity,
         "params": m.params, "dense_macs_per_iter": m.step_macs,
         "network_evals_per_step": ws.GUIDANCE_EVALS if guidance else 1,
         "gpu": sy.gpu_estimate(m, sysm.gpu, sysm.cond_layers), "modes": {}}
    for mode in sy.MODE_NAMES:
        r = sy.evaluate_model(sysm, m, mode, seed=seed, masks_kind=masks, progress=prog,
                              ep_key_corr=ep_key_corr)
        r.pop("gpu")
        e["modes"][mode] = r
    e["ordering_holds"] = sy.ordering_holds({k: r["latency_s"] for k, r in e["modes"].items()})
    return e


def _throttled(report, t0: float, every: float = 2.0):
    """A progress callback: ``report(f"{seconds since t0} s  {msg}")`` at most every
    ``every`` seconds, and none in the first 2 s (or nothing if ``report`` is None)."""
    last = [t0]

    def prog(msg):
        now = time.monotonic()
        if report and now - t0 > 2 and now - last[0] > every:
            report(f"{now - t0:5.1f} s  {msg}")
            last[0] = now
    return prog


def _model_job(args):
    """:func:`_model_entry` in a worker process (its progress lines every 5 s), with the
    per-core figures it computed (not the ones it inherited from the parent)."""
    *entry_args, t0, report = args
    caches = sy.per_core_caches()
    inherited = {k: set(t) for k, t in caches.items()}
    e = _model_entry(*entry_args, _throttled(progress if report else None, t0, 5.0))
    return e, {k: {key: t[key] for key in t.keys() - inherited[k]} for k, t in caches.items()}


def evaluate(system, models, seed=0, masks="column", report=None, guidance=False,
             ep_key_corr=bl.EP_KEY_CORR, jobs: int = 1) -> dict:
    """``models`` as given (:func:`_models` applies ``guidance``); ``guidance`` is recorded
    in the JSON and in each model's ``network_evals_per_step``. ``jobs`` > 1 evaluates the
    models in that many forked processes (the same figures: every model's masks are seeded
    on their own) and merges the per-core figures they computed into this process's."""
    sysm = sy.get_system(system)
    out = {"system": sysm.to_dict(), "energy_table_pj": dict(sy.ENERGY), "seed": seed,
           "masks": masks, "ep_key_corr": ep_key_corr, "guidance": bool(guidance),
           "models": {}}
    t0 = time.monotonic()
    prog = _throttled(report, t0)
    jobs = max(1, min(int(jobs), len(models)))
    if jobs == 1:
        for m in models:
            out["models"][m.name] = _model_entry(sysm, m, seed, masks, guidance, ep_key_corr,
                                                 prog)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        entries = {}
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as ex:
            # the largest first (by MACs per iteration), so that no process ends alone
            futs = {ex.submit(_model_job, (sysm, m, seed, masks, guidance, ep_key_corr, t0,
                                           report is not None)): m
                    for m in sorted(models, key=lambda m: -m.block_macs)}
            for f in as_completed(futs):
                entries[futs[f].name], known = f.result()
                _merge(known)
                if report:
                    report(f"{time.monotonic() - t0:5.1f} s  {futs[f].name} done "
                           f"({len(entries)} of {len(models)} models, {jobs} processes)")
        out["models"] = {m.name: entries[m.name] for m in models}
    out["ordering_holds_count"] = sum(e["ordering_holds"] for e in out["models"].values())
    return out


def _print(res):
    s = res["system"]
    g = next(iter(res["models"].values()))["gpu"]["gpu"] if res["models"] else ""
    print(f"system {s['name']}: {s['dscs']} DSCs ({s['core']}) at {s['clock_mhz']:g} MHz, "
          f"global memory {s['gm_mb']:g} MB ({s['gm_bytes_per_cycle']} B/cycle/core), "
          f"off-chip {s['offchip_gb_per_s']:g} GB/s; vs {g} (roofline estimate)"
          + ("; classifier-free guidance (2 predictions per step)" if res.get("guidance")
             else ""))
    lev = {k: s[k] for k in sy.LEVERS if k in s}
    if any(v != sy.LEVERS[k][0] for k, v in lev.items()):
        print("EPRE levers (not the default design; docs/evaluate.md \"EPRE levers\" says "
              "which are built): "
              + ", ".join(f"{k} = {v}" for k, v in lev.items()))
    if s.get("cond_layers", sy.SCHEDULES["cond_layers"][0]) != sy.SCHEDULES["cond_layers"][0]:
        print(f"cond_layers = {s['cond_layers']}: the step conditioning, the condition "
              "encoder and the contexts' K / V run in every step (the default runs them "
              "once, before the first step)")
    print(f"{'model':15}{'mode':6}{'latency':>12}{'energy':>11}{'speedup':>9}{'en.eff':>9}"
          f"{'util':>7}  bound           {'EPRE hidden':>11}")
    for name, e in res["models"].items():
        for mode, r in e["modes"].items():
            print(f"{name:15}{mode:6}{r['latency_s']:>11.4g}s{r['energy_j']:>10.4g}J"
                  f"{r['speedup_vs_gpu']:>8.3g}x{r['energy_eff_vs_gpu']:>8.3g}x"
                  f"{100 * r['utilization']:>6.1f}%  {r['bound']:15} "
                  f"{r['projection_epre_hidden']['speedup_vs_gpu']:>10.3g}x")
        print(f"{'':15}{'GPU':6}{e['gpu']['latency_s']:>11.4g}s{e['gpu']['energy_j']:>10.4g}J")


def plot(res, path):
    """Bar charts in the seed's style: per model four modes, log scale; speedup and energy
    efficiency against the matching GPU (= 1)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pathlib import Path
    names = list(res["models"])
    modes = list(sy.MODE_NAMES)
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 1.4 * len(names) + 2), 7))
    w = 0.8 / len(modes)
    for ax, key, title in ((axes[0], "energy_eff_vs_gpu", "energy efficiency"),
                           (axes[1], "speedup_vs_gpu", "speedup")):
        for i, mode in enumerate(modes):
            ys = [res["models"][n]["modes"][mode][key] for n in names]
            ax.bar([j + (i - (len(modes) - 1) / 2) * w for j in range(len(names))], ys, w,
                   label=f"{res['system']['name']}_{mode}")
        ax.axhline(1.0, color="k", lw=0.8, label="GPU (roofline estimate) = 1")
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, rotation=15)
        ax.set_ylabel(f"{title} vs GPU (x)")
        ax.legend(fontsize=7, ncol=3)
        ax.grid(axis="y", which="both", alpha=0.3)
    fig.suptitle(f"{res['system']['name']} vs "
                 f"{next(iter(res['models'].values()))['gpu']['gpu']} (estimate)")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def cmd_evaluate(args) -> int:
    if args.seed < 0:
        raise ExionError(f"--seed {args.seed} is invalid: must be >= 0")
    sysm = sy.get_system(args.system)
    models = _models(args.model, args.guidance)
    if args.plot and not str(args.plot).endswith(".png"):
        raise ExionError(f"--plot {args.plot!r}: expected a FILE.png")
    check_output(args.json or DEFAULT_JSON, "--json")
    if args.plot:
        check_output(args.plot, "--plot")
    if args.jobs is not None and args.jobs < 1:
        raise ExionError(f"--jobs {args.jobs} is invalid: must be at least 1")
    if not 0.0 <= args.ep_key_corr < 1.0:
        raise ExionError(f"--ep-key-corr {args.ep_key_corr!r} is invalid: must be in [0, 1)")
    with disk_cache(not args.no_cache, progress):
        res = evaluate(sysm, models, seed=args.seed, masks=args.masks, report=progress,
                       guidance=args.guidance, ep_key_corr=args.ep_key_corr,
                       jobs=args.jobs or os.cpu_count() or 1)
    _print(res)
    out = write_json(args.json or DEFAULT_JSON, res)
    print(f"wrote {out}")
    if args.plot:
        print(f"wrote {plot(res, args.plot)}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="system model: EXION-4 / EXION-24 on the seven workloads vs GPUs",
        description="Latency and energy of one generation of each of the seed's seven "
                    "workloads on an EXION system (N DSC cores, global memory, off-chip "
                    "memory) in modes Base / EP / FFNR / All, with speedup and energy "
                    "efficiency against the matching GPU (Jetson Orin Nano for exion4, RTX "
                    "6000 Ada for exion24; GPU figures are roofline estimates). "
                    "docs/evaluate.md has the model and the sources of every constant.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=JSON_FIELDS)
    p.add_argument("--system", default="exion24", metavar="exion4|exion24|FILE.toml",
                   help="a system preset or a TOML file (base = \"exion24\" plus overrides "
                        "of the system's fields, e.g. dscs, offchip_gb_per_s, core, or the "
                        "EPRE what-if levers epre_fetch / epre_keys / epre_stage2 / "
                        "epre_gather, epre_sub_runs = \"off\" (one EPRE run a unit), "
                        "or cond_layers = \"per-step\" to run the step "
                        "conditioning (DiT's adaLN modulation, the UNets' time embedding), "
                        "the condition encoder (EDGE's music encoder) and the "
                        "cross-attention contexts' K / V in every step instead of once "
                        "before the first) "
                        "(default: %(default)s)")
    p.add_argument("--model", default="all", metavar="NAME|all",
                   help=f"one of {', '.join(ws.MODELS)}, or all (default: %(default)s)")
    p.add_argument("--masks", choices=("random", "column"), default="column",
                   help="synthetic FFN-Reuse masks: random elements or whole hidden units "
                        "(the column rule of issue 20, docs/choices.md issue 19) "
                        "(default: %(default)s)")
    p.add_argument("--ep-key-corr", type=float, default=bl.EP_KEY_CORR, metavar="RHO",
                   help="key correlation of the synthetic eager-prediction masks: queries "
                        "share a per-key logit term of weight RHO (0 = i.i.d. keys). The "
                        "default is the fit to the digits64 DiT's real masks "
                        "(bench/perf_ep_masks.py, docs/evaluate.md) (default: %(default)s)")
    p.add_argument("--guidance", action="store_true",
                   help="sample with classifier-free guidance, as the seven models' released "
                        "samplers do: each step runs the conditional and the unconditional "
                        "prediction, batched (twice the sequences and contexts, the same "
                        "weights; docs/evaluate.md). Default: one prediction per step, the "
                        "seed's setting")
    add_seed(p, default=0, help="seed of synthetic masks (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="evaluate the models in N processes (default: the number of cores; "
                        "1: in this process). The figures do not depend on it")
    p.add_argument("--no-cache", action="store_true",
                   help="compute every block's per-core figures afresh and keep none. By "
                        "default a run reads and extends <build root>/evaluate/per-core-"
                        "<hash>.pkl (the hash is of the model's sources): the figures depend "
                        "on the core config, the global-memory bytes per cycle and the "
                        "masks, not on the core count or the off-chip memory, so a sweep of "
                        "those takes seconds after its first run")
    add_report(p, flag="--json", default_path=DEFAULT_JSON)
    p.add_argument("--plot", default=None, metavar="OUT.png",
                   help="bar charts (four modes per model, log scale)")
    p.set_defaults(func=cmd_evaluate)
