"""``exion sweep``: config fields x the cycle model on FC1 masks, fanned out like regress.

Every point of the cross product of ``--vary FIELD=v1,v2,...`` (aliases: ``R`` rows, ``C``
cols, ``L`` lanes, ``m`` merge_ways, ``W_open`` merge_window, ``bandwidth``
gb_bytes_per_cycle; any other :class:`~exion.config.Config` field by name) is validated
(an impossible point is reported, not run) and scored with
:func:`exion.golden.cycles.gemm_cycles` (ConMerge plan, SDUE passes, global-buffer fill
stalls at the point's bandwidth) summed over the FC1 output masks of a trace
(``exion trace``) or, without one, of seeded synthetic FFN-Reuse masks. The resource axis is
the point's DPU multipliers (R x C x L, analytic); a synthesized figure is not run per point.
Points go to Dask tasks (:func:`exion.sim.regress.run_tasks`); the driver writes
``sweep.json``, ``sweep.md`` (table) and ``sweep.png`` (cycles vs multipliers, Pareto front).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np

from exion.errors import ExionError
from exion.paths import write_json

__all__ = ["ALIASES", "parse_vary", "points", "sweep", "pareto", "save"]

ALIASES = {"R": "rows", "C": "cols", "L": "lanes", "m": "merge_ways",
           "W_open": "merge_window", "bandwidth": "gb_bytes_per_cycle"}


def parse_vary(items: list[str]) -> dict[str, list[int]]:
    """``["R=8,16", "m=2,4"]`` -> ``{"rows": [8, 16], "merge_ways": [2, 4]}``."""
    from dataclasses import fields

    from exion.config import Config
    known = {f.name for f in fields(Config) if not f.name.startswith("_")} - {"name"}
    out = {}
    for item in items:
        name, sep, values = item.partition("=")
        field = ALIASES.get(name.strip(), name.strip())
        if not sep or field not in known:
            raise ExionError(f"--vary {item!r}: expected FIELD=v1,v2 with FIELD one of "
                             f"{', '.join(sorted(ALIASES))} or a config field")
        try:
            out[field] = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ExionError(f"--vary {item!r}: values must be integers") from None
        if not out[field]:
            raise ExionError(f"--vary {item!r}: no values")
    return out


def points(vary: dict[str, list[int]]) -> list[dict]:
    names = list(vary)
    return [dict(zip(names, combo)) for combo in itertools.product(*vary.values())]


def masks_from(trace: str | None, seed: int = 0) -> list[tuple[str, int, np.ndarray]]:
    """``(name, K, mask)`` of every FC1 output mask of ``trace`` (or synthetic ones)."""
    if trace is None:
        from exion.golden.block import synth_ffn_mask
        rng = np.random.default_rng(seed)
        return [(f"synthetic-{kind}-s{s}", 256, synth_ffn_mask(rng, 64, 512, s, kind))
                for kind in ("column", "random") for s in (0.8, 0.9)]
    from exion.workloads import trace as tr
    z, _ = tr.load(trace)
    out = []
    for k in z.files:
        hit = re.fullmatch(r"blk(\d+)/it(\d+)/fc1_mask", k)
        if hit:
            w = f"blk{hit.group(1)}/fc1_w"
            K = int(z[w].shape[0]) if w in z.files else int(z[k].shape[1]) // 4
            out.append((k, K, np.asarray(z[k], bool)))
    if not out:
        raise ExionError(f"--trace {trace}: no blk*/it*/fc1_mask arrays (make one with "
                         f"`exion trace`)")
    return out


def _point_task(base: str, point: dict, trace: str | None, seed: int) -> list[dict]:
    """Score one point (a Dask task): ``[{point, cycles, multipliers, error}]``."""
    from exion.config import get_config
    from exion.golden.conmerge import conmerge
    from exion.golden.cycles import gemm_cycles
    try:
        cfg = get_config(base).replace(**point)
        cfg.derived()   # validates
        total = dense = 0
        for _, K, mask in masks_from(trace, seed):
            if K > cfg.k_max:
                raise ExionError(f"K = {K} > k_max = {cfg.k_max}")
            g = gemm_cycles(cfg, K, conmerge(cfg, mask), mask)
            total += g.total_cycles
            dense += g.dense_cycles
        return [{"point": point, "cycles": int(total), "dense_cycles": int(dense),
                 "multipliers": cfg.rows * cfg.cols * cfg.lanes, "error": None}]
    except Exception as exc:  # noqa: BLE001 - an impossible point is a row, not a crash
        return [{"point": point, "cycles": None, "dense_cycles": None, "multipliers": None,
                 "error": f"{type(exc).__name__}: {exc}"}]


def pareto(rows: list[dict]) -> list[int]:
    """Indices of the rows no other row beats on both cycles and multipliers."""
    ok = [(i, r) for i, r in enumerate(rows) if r["error"] is None]
    front = []
    for i, r in ok:
        dominated = any(o["cycles"] <= r["cycles"] and o["multipliers"] <= r["multipliers"]
                        and (o["cycles"], o["multipliers"]) != (r["cycles"], r["multipliers"])
                        for _, o in ok)
        if not dominated:
            front.append(i)
    return front


def sweep(base: str, vary: dict, trace: str | None = None, *, seed: int = 0,
          scheduler: str | None = None, workers: int | None = None,
          show_progress: bool = True) -> dict:
    from .regress import Bar, run_tasks
    pts = points(vary)
    bar = Bar(len(pts), show_progress, label="sweep")
    rows = []
    for res in run_tasks(_point_task, [(base, p, trace, seed) for p in pts], scheduler,
                         workers, bar):
        rows += res
    order = {tuple(sorted(p.items())): i for i, p in enumerate(pts)}
    rows.sort(key=lambda r: order[tuple(sorted(r["point"].items()))])
    front = pareto(rows)
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    return {"base": base, "vary": vary, "trace": trace,
            "masks": [n for n, _, _ in masks_from(trace, seed)], "rows": rows}


def save(report: dict, out_dir: str | Path) -> list[Path]:
    """``sweep.json``, ``sweep.md`` and ``sweep.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    paths = [write_json(out_dir / "sweep.json", report)]
    fields = list(report["vary"])
    lines = ["| " + " | ".join(fields + ["cycles", "dense SDUE cycles", "multipliers", "Pareto"])
             + " |", "|" + "---|" * (len(fields) + 4)]
    for r in report["rows"]:
        vals = [str(r["point"][f]) for f in fields]
        if r["error"]:
            vals += [f"refused: {r['error']}", "", "", ""]
        else:
            vals += [str(r["cycles"]), str(r["dense_cycles"]), str(r["multipliers"]),
                     "yes" if r["pareto"] else ""]
        lines.append("| " + " | ".join(vals) + " |")
    md = out_dir / "sweep.md"
    md.write_text("\n".join(lines) + "\n")
    paths.append(md)
    paths.append(_plot(report, out_dir / "sweep.png"))
    return paths


def _plot(report: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [r for r in report["rows"] if r["error"] is None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["multipliers"] for r in ok], [r["cycles"] for r in ok], s=14,
               color="0.6", label="points")
    front = sorted((r for r in ok if r["pareto"]), key=lambda r: r["multipliers"])
    ax.plot([r["multipliers"] for r in front], [r["cycles"] for r in front], "o-",
            color="C3", label="Pareto front")
    for r in front:
        ax.annotate(",".join(f"{k}={v}" for k, v in r["point"].items()),
                    (r["multipliers"], r["cycles"]), fontsize=6)
    ax.set_xlabel("DPU multipliers (R x C x L)")
    ax.set_ylabel("cycles (cycle model, FC1 masks)")
    ax.set_xscale("log")
    ax.set_title(f"exion sweep on {report['base']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
