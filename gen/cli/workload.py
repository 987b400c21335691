"""``exion accuracy`` and ``exion trace``.

``accuracy``: the accuracy table of EXION's software optimizations on the trained digits DiT
(:mod:`exion.workloads.accuracy`), as Markdown and JSON, plus an optional sweep over s, N and
k with a PNG plot. ``trace``: per-block, per-iteration INT12 operands and masks of a sampling
run as one .npz (:mod:`exion.workloads.trace`), and ``--extract`` of one array as .npy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from exion.errors import ExionError

from .options import add_seed

#: Names only (importing exion.workloads here would slow `exion --help`); kept equal to
#: exion.golden.ffn_reuse.RULES and exion.workloads.weights.WEIGHTS by the tests.
RULES = ("magnitude", "change", "per_token", "column")
MODELS = ("digits16", "digits64")


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
    add_seed(p, default=0)
    p.add_argument("--n", type=int, default=2, help="FFN-Reuse N (default: 2)")
    p.add_argument("--s", type=_frac, nargs="+", default=[0.8, 0.95],
                   help="FFN-Reuse target sparsities (default: 0.8 0.95)")
    p.add_argument("--model", default="digits16", choices=list(MODELS),
                   help="digits16 (2x2 patches, 16 tokens; default) or digits64 (1x1 "
                        "patches, 64 tokens)")
    p.add_argument("--rule", default="magnitude", choices=list(RULES),
                   help="FFN-Reuse mask rule (default magnitude; column: whole hidden units "
                        "at the magnitude rule's element count)")
    p.add_argument("--k", type=_frac, default=0.5, help="EP top-k ratio (default: 0.5)")
    p.add_argument("--q-th", type=float, default=None,
                   help="EP dominant-row threshold: the gap between the largest and second "
                        "largest predicted score of a query, in attention-logit units "
                        "(default: off)")
    p.add_argument("--lod-terms", type=int, default=2, choices=[1, 2])
    p.add_argument("--sweep", action="store_true",
                   help="also sweep s x N (with controls) and k at the first step count; "
                        "writes sweep.json and sweep.png")
    p.add_argument("--weights", type=Path, default=None,
                   help="weights .npz (default: the shipped ones of --model, checksum "
                        "verified)")
    g = p.add_argument_group(
        "fidelity tables (issue 20; any of these replaces the accuracy table; they use the "
        "first --steps value and --samples)")
    g.add_argument("--ep-table", action="store_true",
                   help="EP on FFN-Reuse (N=--n, s=0.8): k x q_th (off, 0.15, swept best) x "
                        "LOD/TS-LOD; writes ep_<model>.md/.json")
    g.add_argument("--column-table", action="store_true",
                   help="element vs column FFN-Reuse over --column-s x --n-list with "
                        "controls; writes column_<model>.md/.json")
    g.add_argument("--pareto", action="store_true",
                   help="both tables, then PSNR vs modelled speedup over Base of every "
                        "configuration (paper settings and Pareto front marked); writes "
                        "pareto_<model>.png/.json")
    g.add_argument("--k-list", type=_frac, nargs="+", default=[0.05, 0.2, 0.5, 0.8],
                   help="EP table k values (default 0.05 0.2 0.5 0.8)")
    g.add_argument("--lod-list", type=int, nargs="+", default=[1, 2], choices=[1, 2],
                   help="EP table LOD modes: 1 = LOD, 2 = TS-LOD (default both)")
    g.add_argument("--q-grid", type=float, nargs="+", default=[0.3, 1.0, 3.0],
                   help="q_th values swept for the best (default 0.3 1 3)")
    g.add_argument("--no-exact-control", action="store_true",
                   help="leave out the EP table's exact top-k control rows (one run per k that "
                        "keeps each row's k largest float logits: the loss of the truncation "
                        "alone, without prediction error)")
    g.add_argument("--column-s", type=_frac, nargs="+", default=[0.8, 0.95, 0.97],
                   help="column table s values (default 0.8 0.95 0.97)")
    g.add_argument("--n-list", type=int, nargs="+", default=[2, 3, 4, 5],
                   help="column table N values (default 2 3 4 5)")
    g.add_argument("--cycle-windows", type=int, default=4,
                   help="FFN-Reuse windows priced by the cycle model per run (default 4; "
                        "0 = every iteration)")
    p.set_defaults(func=run)
    register_trace(sub)


def run(args) -> int:
    from exion.workloads import accuracy as acc
    from exion.workloads.dit import DiT
    from exion.workloads.weights import load_weights

    if args.samples < 1:
        raise ExionError(f"--samples must be >= 1, got {args.samples}")
    if args.n < 0:
        raise ExionError(f"--n must be >= 0, got {args.n}")
    model = DiT(load_weights(args.weights, model=args.model)[0])
    if args.ep_table or args.column_table or args.pareto:
        return run_fidelity(args, model)
    res = acc.accuracy_table(model, steps=args.steps, n_samples=args.samples, seed=args.seed,
                             n=args.n, s_list=args.s, k=args.k, q_th=args.q_th,
                             lod_terms=args.lod_terms, rule=args.rule, log=print)
    jp, mp = acc.write(res, args.out,
                       "accuracy" if args.model == "digits16" else f"accuracy_{args.model}")
    print(acc.to_markdown(res))
    print(f"wrote {mp} and {jp}")
    if args.sweep:
        sw = acc.sweep(model, steps=args.steps[0], n_samples=min(args.samples, 50),
                       seed=args.seed, log=print)
        sj, _ = acc.write(sw, args.out, "sweep")
        acc.plot_sweep(sw, args.out / "sweep.png")
        print(f"wrote {sj} and {args.out / 'sweep.png'}")
    return 0


def run_fidelity(args, model) -> int:
    """The issue-20 tables and the Pareto plot (``exion accuracy --ep-table|--column-table|
    --pareto``)."""
    from exion.workloads import fidelity as fi

    if any(n < 0 for n in args.n_list):
        raise ExionError(f"--n-list values must be >= 0, got {args.n_list}")
    if args.cycle_windows < 0:
        raise ExionError(f"--cycle-windows must be >= 0, got {args.cycle_windows}")
    if any(not q >= 0 for q in args.q_grid) or (args.q_th is not None and args.q_th < 0):
        raise ExionError(f"--q-grid / --q-th values must be >= 0, got {args.q_grid}")
    cw = args.cycle_windows or None
    kw = dict(steps=args.steps[0], n_samples=args.samples, seed=args.seed, cycle_windows=cw,
              log=print)
    name = model.name
    done = []
    if args.ep_table or args.pareto:
        e = fi.ep_table(model, k_list=args.k_list, q_grid=args.q_grid, n=args.n,
                        lods=tuple(args.lod_list), exact=not args.no_exact_control,
                        rule=args.rule, **kw)
        fi.write_json(e, args.out / f"ep_{name}.json")
        (args.out / f"ep_{name}.md").write_text(fi.ep_markdown(e) + "\n")
        print(fi.ep_markdown(e))
        done.append(e)
    if args.column_table or args.pareto:
        c = fi.column_table(model, s_list=args.column_s, n_list=args.n_list, **kw)
        fi.write_json(c, args.out / f"column_{name}.json")
        (args.out / f"column_{name}.md").write_text(fi.column_markdown(c) + "\n")
        print(fi.column_markdown(c))
        done.append(c)
    if args.pareto:
        par = fi.pareto(done)
        fi.write_json(par, args.out / f"pareto_{name}.json")
        fi.plot_pareto(par, args.out / f"pareto_{name}.png")
        print(f"Pareto front ({name}): " + "; ".join(par["models"][name]["front"]))
    print(f"wrote {args.out}/{{ep,column,pareto}}_{name}.*")
    return 0


# -- exion trace ----------------------------------------------------------------------
TRACE_DEFAULT = Path("build/trace/dit_trace.npz")


def _iters(text: str) -> list[int]:
    """``0-5,9`` -> [0, 1, 2, 3, 4, 5, 9]."""
    out = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-")
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected iterations like 0-5,9, got {text!r}")
    return out


def register_trace(sub) -> None:
    p = sub.add_parser(
        "trace", help="export per-layer, per-iteration INT12 operands and masks of the DiT",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sample the shipped digits DiT with EXION's switches on (INT12; FFN-Reuse "
                    "and eager prediction unless turned off) and write, per block b and "
                    "iteration t, the FC1 input X, W1/W2, the FFN-Reuse FC1 mask, the cached "
                    "FC1 accumulator and H of the dense iteration, the FC2 delta input, the "
                    "EP score masks, dominant/skipped rows and shifts, with their scales, as "
                    "one .npz (layout: docs/workloads.md, 'Trace layout').\n\n"
                    "With --extract KEY the command instead reads a trace (--file) and writes "
                    "one array as .npy (--out), optionally cut to one --sample and --head, "
                    "ready for `exion golden conmerge --mask`, `exion sim gemm --a/--b/--mask"
                    "/--prev` and `exion sim predict --x/--wq/--wk`.",
        epilog="examples:\n"
               "  exion trace --steps 30 --samples 2\n"
               "  exion trace --list\n"
               "  exion trace --extract blk0/it1/fc1_x --sample 0 --out X.npy\n"
               "  exion trace --extract blk0/fc1_w --out W1.npy\n"
               "  exion trace --extract blk0/it1/fc1_mask --sample 0 --out M.npy\n"
               "  exion trace --extract blk0/it1/fc1_prev --sample 0 --out P.npy\n"
               "  exion sim gemm --config exion16 --a X.npy --b W1.npy --mask M.npy "
               "--prev P.npy --out C.npy\n"
               "  exion trace --extract blk0/it1/ep_x --sample 0 --out EX.npy\n"
               "  exion trace --extract blk0/ep_wq --head 0 --out WQ.npy   (and ep_wk)\n"
               "  exion sim predict --config exion16 --x EX.npy --wq WQ.npy --wk WK.npy "
               "--k 1/2 --out S.npy")
    p.add_argument("--file", type=Path, default=TRACE_DEFAULT,
                   help=f"trace .npz to write (or to read with --extract/--list; default "
                        f"{TRACE_DEFAULT})")
    p.add_argument("--steps", type=int, default=100, help="DDIM steps (default 100)")
    p.add_argument("--samples", type=int, default=1,
                   help="samples B; GEMM operands stack them as B*T rows (default 1)")
    add_seed(p, default=0)
    p.add_argument("--iterations", type=_iters, default=None, metavar="LIST",
                   help="record only these iterations, e.g. 0-5,9 (default: all; the run "
                        "is always complete)")
    p.add_argument("--n", type=int, default=2, help="FFN-Reuse N (default 2)")
    p.add_argument("--s", type=_frac, default=0.8, help="FFN-Reuse target sparsity (0.8)")
    p.add_argument("--rule", default="magnitude", choices=list(RULES),
                   help="FFN-Reuse mask rule (default magnitude)")
    p.add_argument("--model", default="digits16", choices=list(MODELS),
                   help="digits16 (16 tokens; default) or digits64 (64 tokens)")
    p.add_argument("--no-ffn-reuse", action="store_true", help="turn FFN-Reuse off")
    p.add_argument("--k", type=_frac, default=0.5, help="EP top-k ratio (default 0.5)")
    p.add_argument("--lod-terms", type=int, default=2, choices=[1, 2])
    p.add_argument("--no-ep", action="store_true", help="turn eager prediction off")
    p.add_argument("--weights", type=Path, default=None,
                   help="weights .npz (default: the shipped ones, checksum verified)")
    p.add_argument("--list", action="store_true", help="list the keys of --file and exit")
    p.add_argument("--extract", metavar="KEY", default=None,
                   help="write array KEY of --file to --out as .npy")
    p.add_argument("--sample", type=int, default=None,
                   help="with --extract: only this sample (rows s*16..s*16+15 of (M, .) "
                        "arrays, index s of (B, ...) arrays)")
    p.add_argument("--head", type=int, default=None,
                   help="with --extract: only this head (ep_wq/ep_wk, ep_mask, ...)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE.npy",
                   help="with --extract: output .npy")
    p.set_defaults(func=run_trace)


def run_trace(args) -> int:
    import numpy as np

    from exion.workloads import trace as tr

    if args.list or args.extract:
        z, meta = tr.load(args.file)
        if args.list:
            for k in z.files:
                if k != "meta":
                    a = z[k]
                    print(f"{k}\t{a.dtype}\t{tuple(a.shape)}")
            return 0
        if args.out is None or args.out.suffix != ".npy":
            raise ExionError("--extract needs --out FILE.npy")
        a = tr.extract(z, meta, args.extract, args.sample, args.head)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.out, a)
        print(f"wrote {args.out}: {args.extract} {a.dtype} {a.shape}")
        return 0
    if args.out is not None or args.sample is not None or args.head is not None:
        raise ExionError("--out/--sample/--head only go with --extract")
    from exion.workloads.dit import DiT, Exion
    from exion.workloads.weights import load_weights
    if args.steps < 1 or args.steps > 1000:
        raise ExionError(f"--steps must be in 1..1000, got {args.steps}")
    if args.n < 0:
        raise ExionError(f"--n must be >= 0, got {args.n}")
    ex = Exion(ffn_reuse=not args.no_ffn_reuse, n=args.n, s=args.s, rule=args.rule,
               ep=not args.no_ep, k=args.k, lod_terms=args.lod_terms, quant=True)
    model = DiT(load_weights(args.weights, model=args.model)[0])
    arrays, meta = tr.collect(model, steps=args.steps, samples=args.samples, seed=args.seed,
                              ex=ex, iterations=args.iterations)
    path = tr.save(args.file, arrays, meta)
    print(f"wrote {path}: {len(arrays)} arrays, {path.stat().st_size / 1e6:.1f} MB; "
          f"FFN-Reuse sparsity {meta['ffn_sparsity']:.3f}, EP sparsity "
          f"{meta['ep_sparsity']:.3f}")
    return 0
