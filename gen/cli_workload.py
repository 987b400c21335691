"""``exion accuracy``: the accuracy table of EXION's software optimizations on the trained
digits DiT (:mod:`exion.workloads.accuracy`), as Markdown and JSON, plus an optional sweep
over s, N and k with a PNG plot.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from exion.errors import ExionError


def _frac(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return v


def _steps(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated step counts, got {text!r}")
    if not vals or any(not 1 <= v <= 1000 for v in vals):
        raise argparse.ArgumentTypeError(f"step counts must be in 1..1000, got {text!r}")
    return vals


def register(sub) -> None:
    p = sub.add_parser(
        "accuracy", help="accuracy table of FFN-Reuse / EP / INT12 on the digits DiT",
        description="Sample the shipped digits DiT with EXION's software optimizations "
                    "switched on one by one (same seeds and noise) and write the accuracy "
                    "table (sparsity, PSNR vs vanilla, classifier accuracy, FD-PCA) with the "
                    "random-mask and zero-fill controls, as Markdown and JSON.")
    p.add_argument("--out", type=Path, default=Path("build/accuracy"),
                   help="output folder (default: build/accuracy)")
    p.add_argument("--steps", type=_steps, default=[50, 100],
                   help="DDIM step counts, comma-separated (default: 50,100)")
    p.add_argument("--samples", type=int, default=100, help="samples per row (default: 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=2, help="FFN-Reuse N (default: 2)")
    p.add_argument("--s", type=_frac, nargs="+", default=[0.8, 0.95],
                   help="FFN-Reuse target sparsities (default: 0.8 0.95)")
    p.add_argument("--rule", default="magnitude", choices=["magnitude", "change", "per_token"])
    p.add_argument("--k", type=_frac, default=0.5, help="EP top-k ratio (default: 0.5)")
    p.add_argument("--q-th", type=float, default=None,
                   help="EP dominant-row threshold in logit units (default: off)")
    p.add_argument("--lod-terms", type=int, default=2, choices=[1, 2])
    p.add_argument("--sweep", action="store_true",
                   help="also sweep s x N (with controls) and k at the first step count; "
                        "writes sweep.json and sweep.png")
    p.add_argument("--weights", type=Path, default=None,
                   help="weights .npz (default: the shipped ones, checksum verified)")
    p.set_defaults(func=run)


def run(args) -> int:
    from exion.workloads import accuracy as acc
    from exion.workloads.dit import DiT
    from exion.workloads.weights import load_weights

    if args.samples < 1:
        raise ExionError(f"--samples must be >= 1, got {args.samples}")
    if args.n < 0:
        raise ExionError(f"--n must be >= 0, got {args.n}")
    model = DiT(load_weights(args.weights)[0])
    res = acc.accuracy_table(model, steps=args.steps, n_samples=args.samples, seed=args.seed,
                             n=args.n, s_list=args.s, k=args.k, q_th=args.q_th,
                             lod_terms=args.lod_terms, rule=args.rule, log=print)
    jp, mp = acc.write(res, args.out)
    print(acc.to_markdown(res))
    print(f"wrote {mp} and {jp}")
    if args.sweep:
        sw = acc.sweep(model, steps=args.steps[0], n_samples=min(args.samples, 50),
                       seed=args.seed, log=print)
        sj, _ = acc.write(sw, args.out, "sweep")
        acc.plot_sweep(sw, args.out / "sweep.png")
        print(f"wrote {sj} and {args.out / 'sweep.png'}")
    return 0
