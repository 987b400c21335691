"""Fidelity benchmark (issue 20): the EP table at the paper's settings, element vs column
FFN-Reuse with controls, and PSNR vs modelled speedup (Pareto front), for both shipped
digits DiTs (16 and 64 tokens). Method: :mod:`exion.workloads.fidelity` (its docstring).

Same code path as ``exion accuracy --pareto --model M`` (which writes the same JSON/MD/PNG
per model under ``--out``); this script runs both models and writes everything under
``build/bench/``: ``fidelity_ep_<model>.{json,md}``, ``fidelity_column_<model>.{json,md}``,
``fidelity_pareto.json`` and ``fidelity_pareto.png`` (one panel per model).

Run: ``nice .venv/bin/python bench/perf_fidelity.py [--samples 20] [--steps 50]
[--models digits16 digits64] [--quick]``. The full tables are about 100 sampling runs per
model; on the loaded shared 2-core machine digits16 at 20 samples x 50 steps took about
40 min and digits64 is 4-5x more per run, hence the per-model size options below and
``--quick`` (a few configurations, for a smoke run).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from exion.workloads import fidelity as fi

OUT = Path("build/bench")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(fi.MODEL_NAMES),
                    choices=list(fi.MODEL_NAMES))
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k-list", type=float, nargs="+", default=[0.05, 0.2, 0.5, 0.8])
    ap.add_argument("--q-grid", type=float, nargs="+", default=[1.0, 3.0])
    ap.add_argument("--lods", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--s-list", type=float, nargs="+", default=[0.8, 0.95, 0.97])
    ap.add_argument("--n-list", type=int, nargs="+", default=[2, 3, 4, 5])
    ap.add_argument("--cycle-windows", type=int, default=2)
    ap.add_argument("--quick", action="store_true",
                    help="k 0.05 and 0.8, TS-LOD, q_grid 1; s 0.8, N 2; 10 samples, 20 steps")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    if a.quick:
        a.samples, a.steps, a.k_list, a.q_grid, a.lods = 10, 20, [0.05, 0.8], [1.0], [2]
        a.s_list, a.n_list = [0.8], [2]
    results = []
    for name in a.models:
        model = fi.load_model(name)
        t0 = time.time()
        kw = dict(steps=a.steps, n_samples=a.samples, seed=a.seed,
                  cycle_windows=a.cycle_windows or None, log=print)
        e = fi.ep_table(model, k_list=a.k_list, q_grid=a.q_grid, lods=a.lods, **kw)
        fi.write_json(e, a.out / f"fidelity_ep_{name}.json")
        (a.out / f"fidelity_ep_{name}.md").write_text(fi.ep_markdown(e) + "\n")
        c = fi.column_table(model, s_list=a.s_list, n_list=a.n_list, **kw)
        fi.write_json(c, a.out / f"fidelity_column_{name}.json")
        (a.out / f"fidelity_column_{name}.md").write_text(fi.column_markdown(c) + "\n")
        print(fi.ep_markdown(e), "", fi.column_markdown(c), sep="\n")
        print(f"{name}: {time.time() - t0:.0f} s")
        results += [e, c]
    par = fi.pareto(results)
    fi.write_json(par, a.out / "fidelity_pareto.json")
    fi.plot_pareto(par, a.out / "fidelity_pareto.png")
    for m, v in par["models"].items():
        print(f"Pareto front {m}: " + "; ".join(v["front"]))
    print(f"wrote {a.out}/fidelity_*")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
