"""``exion golden predict`` and ``exion golden ffnr``: eager prediction and FFN-Reuse figures.

* ``predict`` runs :func:`exion.golden.predict.eager_predict` on W-bit integer operands from
  .npy files and prints intra-iteration sparsity, dominant rows and skipped Q/K/V rows;
  ``--json`` writes the figures, ``--out`` the score mask (N_q x N_k bool .npy).
* ``ffnr`` builds the FFN-Reuse bitmask of a dense iteration's H (``--h-dense``) for a target
  sparsity and prints theta, the achieved sparsity and the MAC reduction. Without
  ``--h-dense`` it runs a seeded synthetic workload (random weights, slowly drifting
  inputs) through :func:`exion.golden.ffn_reuse.ffn_reuse_run` and also reports how far the
  reused outputs are from a dense run.

Every input is checked before anything is computed or written; bad input raises
:class:`~exion.errors.ExionError` naming the option, the file and the shape (exit status 2).
"""

from __future__ import annotations

import argparse

import numpy as np

from exion.errors import ExionError
from exion.golden.quant import check_operand
from .options import add_config, add_report, add_seed, load_cfg, load_npy, write_json


def _int_operand(cfg, path, option, ndim=2):
    """A W-bit integer operand from a .npy file (errors name the option and the file)."""
    arr = load_npy(path, option, ndim=ndim)
    return check_operand(cfg, arr, f"{option} {str(path)!r} (shape {arr.shape})")


def _ratio(text: str, option: str) -> str:
    from exion.golden.predict import as_fraction
    v = as_fraction(text, option)
    if not 0 <= v <= 1:
        raise ExionError(f"{option} must be in [0, 1], got {text}")
    return text


def load_predict_inputs(args):
    """Config, k and the checked operands of a predict command (one-line errors)."""
    cfg = load_cfg(args.config)
    k = _ratio(args.k, "--k")
    x = _int_operand(cfg, args.x, "--x")
    kx_path = getattr(args, "k_exact", None)
    if (args.wk is None) == (kx_path is None):
        raise ExionError("give one of --wk (keys predicted from X) and --k-exact (exact keys)")
    wq = _int_operand(cfg, args.wq, "--wq")
    if wq.shape[0] != x.shape[1]:
        raise ExionError(f"--wq: {args.wq!r} has shape {wq.shape}; its rows must equal the "
                         f"columns of --x {args.x!r} (shape {x.shape})")
    wk = kx = None
    if kx_path is not None:
        kx = _int_operand(cfg, kx_path, "--k-exact")
        if kx.shape[1] != wq.shape[1]:
            raise ExionError(f"--k-exact: {kx_path!r} has shape {kx.shape}; expected N_k x "
                             f"{wq.shape[1]} (d_head, the columns of --wq)")
        if args.shift_k is not None:
            raise ExionError("--shift-k does not apply with --k-exact (exact keys are not "
                             "shifted)")
    else:
        wk = _int_operand(cfg, args.wk, "--wk")
        if wk.shape != wq.shape:
            raise ExionError(f"--wk: {args.wk!r} has shape {wk.shape}; expected the shape of "
                             f"--wq {wq.shape}")
    if args.qth is not None and args.qth < 0:
        raise ExionError(f"--qth must be >= 0 (an integer gap at the scale of Sh), "
                         f"got {args.qth}")
    for opt, v in (("--shift-q", args.shift_q), ("--shift-k", args.shift_k)):
        if v is not None and not 0 <= v < cfg.acc_width:
            raise ExionError(f"{opt} must be in [0, {cfg.acc_width - 1}], got {v}")
    return cfg, k, x, wq, wk, kx


def _cmd_predict(args) -> int:
    from exion.golden.predict import eager_predict, keep_count

    cfg, k, x, wq, wk, kx = load_predict_inputs(args)
    res = eager_predict(cfg, x, wq, wk, k, shift_q=args.shift_q, shift_k=args.shift_k,
                        q_th_int=args.qth, polarity=args.polarity, lod_terms=args.lod_terms,
                        k_exact=kx)
    s = res.summary()
    assert s["k_n"] == keep_count(k, res.n_k)
    print(f"eager prediction, config {cfg.name}: N_q = {res.n_q}, N_k = {res.n_k}, "
          f"d = {x.shape[1]}, d_head = {wq.shape[1]}, "
          f"{'TS-LOD' if res.lod_terms == 2 else 'LOD'}"
          + (", exact keys (--k-exact)" if kx is not None else ""))
    print(f"  stage-1 shifts      Q >> {res.shift_q}, "
          + ("K given" if kx is not None else f"K >> {res.shift_k}"))
    print(f"  top-k               k = {k} -> kN = {res.k_n} of {res.n_k} keys")
    qth = "off" if res.q_th_int is None else str(res.q_th_int)
    print(f"  dominant rows       {s['dominant_rows']} of {res.n_q} (q_th_int = {qth}, "
          f"polarity {res.polarity})")
    print(f"  kept scores         {res.kept} of {res.n_q * res.n_k}")
    print(f"  intra-iter sparsity {res.sparsity:.4f}")
    print(f"  skipped rows        Q {res.skipped_q}, K {res.skipped_k}, V {res.skipped_v}")
    if args.out:
        np.save(args.out, res.score_mask)
        print(f"  score mask          {args.out}")
    if args.json:
        write_json(args.json, {"command": "predict", "config": cfg.name,
                               "config_hash": cfg.hash, "k": k, **s,
                               "inputs": {"x": args.x, "wq": args.wq, "wk": args.wk,
                                          "k_exact": getattr(args, "k_exact", None)}})
        print(f"  json                {args.json}")
    return 0


def _synthetic(cfg, shape, iters, seed, drift):
    """Seeded synthetic FFN workload: weights ~ N(0, 1/d), inputs a slow random walk."""
    from exion.golden.cfse import gelu_params
    from exion.golden.quant import quantize

    T, d, F = shape
    rng = np.random.default_rng(seed)
    w1f = rng.normal(0, 1 / np.sqrt(d), (d, F))
    w2f = rng.normal(0, 1 / np.sqrt(F), (F, d))
    xsf = [rng.normal(0, 1, (T, d))]
    for _ in range(iters - 1):
        xsf.append(xsf[-1] + drift * rng.normal(0, 1, (T, d)))
    xs_scale = max(float(np.abs(x).max()) for x in xsf) / cfg.wmax
    xs = [quantize(x, cfg, xs_scale)[0] for x in xsf]
    w1, s1 = quantize(w1f, cfg)
    w2, _ = quantize(w2f, cfg)
    s_acc = xs_scale * s1
    s_h = 4.0 / cfg.wmax   # H covers [-4, 4): GELU outputs of |pre-activation| < 4
    b1 = np.zeros(F, dtype=np.int64)
    b2 = np.zeros(d, dtype=np.int64)
    return xs, w1, b1, w2, b2, gelu_params(s_acc, s_h)


def _shape3(text: str):
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or min(vals) < 1:
        raise ExionError(f"--shape must be three positive integers T,d,F, got {text!r}")
    return vals


def _cmd_ffnr(args) -> int:
    from exion.golden import ffn_reuse as fr

    cfg = load_cfg(args.config)
    s = _ratio(args.sparsity, "--sparsity")
    if args.n < 0:
        raise ExionError(f"--n must be >= 0, got {args.n}")
    if args.h_dense is None:
        return _ffnr_synthetic(cfg, args, s)
    if args.rule == "change" and args.h_prev is None:
        raise ExionError("--rule change needs --h-prev (the previous dense H)")
    h = _int_operand(cfg, args.h_dense, "--h-dense")
    h_prev = None
    if args.h_prev is not None:
        h_prev = _int_operand(cfg, args.h_prev, "--h-prev")
        if h_prev.shape != h.shape:
            raise ExionError(f"--h-prev: {args.h_prev!r} has shape {h_prev.shape}; expected "
                             f"the shape of --h-dense {h.shape}")
    mask, theta = fr.build_mask(h, s, args.rule, h_prev, cfg.width, args.hist_mant_bits)
    ones = int(mask.sum())
    sp = 1 - ones / mask.size if mask.size else 0.0
    period = sp * args.n / (args.n + 1)
    print(f"FFN-Reuse bitmask, config {cfg.name}: H_d {h.shape[0]} x {h.shape[1]}, "
          f"rule {args.rule}, target sparsity {s}")
    print(f"  theta               {'per-row top-c' if theta is None else theta}")
    print(f"  recomputed outputs  {ones} of {mask.size}")
    print(f"  achieved sparsity   {sp:.4f}")
    print(f"  MAC reduction       FC1 {sp:.4f}, FC2 (delta) {sp:.4f} per sparse iteration; "
          f"{period:.4f} over a period of 1 dense + {args.n} sparse")
    if args.out:
        np.save(args.out, mask)
        print(f"  bitmask             {args.out}")
    if args.json:
        write_json(args.json, {"command": "ffnr", "config": cfg.name, "config_hash": cfg.hash,
                               "rule": args.rule, "target_sparsity": s, "theta": theta,
                               "shape": list(h.shape), "ones": ones, "sparsity": sp,
                               "fc1_reduction_sparse_iter": sp,
                               "fc2_reduction_sparse_iter": sp, "n": args.n,
                               "period_reduction": period, "h_dense": args.h_dense})
        print(f"  json                {args.json}")
    return 0


def _ffnr_synthetic(cfg, args, s) -> int:
    from exion.golden import ffn_reuse as fr

    if args.h_prev is not None:
        raise ExionError("--h-prev needs --h-dense")
    T, d, F = _shape3(args.shape)
    if args.iters < 1:
        raise ExionError(f"--iters must be >= 1, got {args.iters}")
    xs, w1, b1, w2, b2, gp = _synthetic(cfg, (T, d, F), args.iters, args.seed, args.drift)
    run = fr.ffn_reuse_run(cfg, xs, w1, b1, w2, b2, gp, args.n, s, rule=args.rule,
                           hist_mant_bits=args.hist_mant_bits)
    dense_y = [fr.ffn_dense(cfg, x, w1, b1, w2, b2, gp)[1] for x in xs]
    errs = [float(np.abs(it.y - y).max() / max(1, np.abs(y).max()))
            for it, y in zip(run.iterations, dense_y)]
    print(f"FFN-Reuse synthetic run, config {cfg.name}: T={T}, d={d}, F={F}, "
          f"{args.iters} iterations, N={args.n}, rule {args.rule}, target sparsity {s}, "
          f"seed {args.seed}")
    print("     t  kind    sparsity  FC1 red.  FC2 red.  max|Y-Y_dense|/max|Y_dense|")
    for it, e in zip(run.iterations, errs):
        print(f"  {it.t:4d}  {'dense ' if it.dense else 'sparse'}  {it.sparsity:8.4f}  "
              f"{it.fc1_reduction:8.4f}  {it.fc2_reduction:8.4f}  {e:.4f}")
    print(f"  total MAC reduction FC1 {run.fc1_reduction:.4f}, FC2 {run.fc2_reduction:.4f}")
    if args.json:
        write_json(args.json, {"command": "ffnr", "synthetic": True, "config": cfg.name,
                               "config_hash": cfg.hash, "shape": [T, d, F], "seed": args.seed,
                               "n": args.n, "rule": args.rule, "target_sparsity": s,
                               "gelu": gp.to_dict(), "rel_err_vs_dense": errs,
                               **run.summary()})
        print(f"  json                {args.json}")
    return 0


def add_predict_args(p) -> None:
    """The operand and rule options shared by ``golden predict`` and ``sim predict``."""
    p.add_argument("--x", required=True, metavar="X.npy",
                   help="input tokens, N x d W-bit integers (self-attention: Q and K from X)")
    p.add_argument("--wq", required=True, metavar="WQ.npy",
                   help="query projection, d x d_head W-bit integers")
    p.add_argument("--wk", metavar="WK.npy",
                   help="key projection, d x d_head W-bit integers (or --k-exact)")
    p.add_argument("--k-exact", metavar="K.npy",
                   help="exact keys instead of --wk: N_k x d_head W-bit K rows as the SDUE "
                        "computed them; stage 1 predicts Qh only and stage 2 scores Qh "
                        "against these (the EPRE's k_given run, docs/epre.md)")
    p.add_argument("--k", required=True, metavar="K",
                   help="top-k ratio in [0, 1], read as an exact decimal (0 keeps the top-1)")
    p.add_argument("--qth", type=int, default=None, metavar="Q",
                   help="q_th_int: dominant-row gap threshold (largest - second largest "
                        "score) at the integer scale of Sh; omit to disable the rule")
    p.add_argument("--polarity", choices=["top1", "keep_all"], default="top1",
                   help="what a dominant row keeps: only its top-1 key (default) or every key")
    p.add_argument("--lod-terms", type=int, choices=[1, 2], default=None,
                   help="1 = LOD, 2 = TS-LOD (default: the config's lod_terms)")
    p.add_argument("--shift-q", type=int, default=None, metavar="S",
                   help="stage-1 right shift of Qh (default: the smallest shift that avoids "
                        "saturation on this input)")
    p.add_argument("--shift-k", type=int, default=None, metavar="S",
                   help="stage-1 right shift of Kh (default as --shift-q)")


def register(gsub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = gsub.add_parser(
        "predict", formatter_class=fmt,
        help="eager prediction (LOD/TS-LOD): score mask, dominant rows, skipped Q/K/V rows",
        description=(
            "Run the golden eager prediction (SPEC 3.4) on W-bit integer operands:\n"
            "stage 1 Qh = X Wq, Kh = X Wk with LOD/TS-LOD approximated operands, shift and\n"
            "saturate; stage 2 Sh = Qh Kh^T approximated again; per query row keep the\n"
            "kN = max(1, ceil(k N_k)) largest scores (ties: lower key index), and apply the\n"
            "dominant-row gap test. Prints intra-iteration sparsity, dominant rows and\n"
            "skipped Q/K/V rows. Algorithms and choices: docs/golden-predict.md."))
    add_config(p)
    add_predict_args(p)
    add_report(p, "--json")
    p.add_argument("--out", metavar="MASK.npy", help="write the N x N score mask (bool)")
    p.set_defaults(func=_cmd_predict)

    q = gsub.add_parser(
        "ffnr", formatter_class=fmt,
        help="FFN-Reuse: bitmask threshold, achieved sparsity and MAC reduction",
        description=(
            "With --h-dense: build the FFN-Reuse bitmask B = |H_d| >= theta of a dense\n"
            "iteration's GELU output (theta from the log-linear |H| histogram, SPEC 3.3) and\n"
            "print theta, the achieved sparsity and the FC1/FC2 MAC reduction.\n"
            "Without --h-dense: run a seeded synthetic workload (random weights, slowly\n"
            "drifting inputs) over --iters iterations with N sparse iterations per dense one\n"
            "and print per-iteration sparsity, MAC reduction and the error against a fully\n"
            "dense run. Algorithms and choices: docs/golden-predict.md."))
    add_config(q)
    q.add_argument("--h-dense", metavar="H.npy",
                   help="dense-iteration H (T x F, W-bit integers); omit for a synthetic run")
    q.add_argument("--h-prev", metavar="H.npy",
                   help="previous dense H, same shape (needed by --rule change)")
    q.add_argument("--sparsity", required=True, metavar="S",
                   help="target inter-iteration sparsity s in [0, 1] (fraction of reused H)")
    q.add_argument("--rule", choices=["magnitude", "change", "per_token", "column"],
                   default="magnitude",
                   help="mask rule: |H_d| histogram threshold (default), |H_d - H_prev| "
                        "threshold, the same count per token row, or whole hidden units at "
                        "the magnitude rule's count (column)")
    q.add_argument("--n", type=int, default=4, metavar="N",
                   help="sparse iterations between two dense ones (default 4)")
    q.add_argument("--hist-mant-bits", type=int, default=4, metavar="M",
                   help="histogram resolution: bins are 2**-M of their value wide (default 4)")
    q.add_argument("--shape", default="16,32,128", metavar="T,d,F",
                   help="synthetic run: tokens, model width, FFN width (default 16,32,128)")
    q.add_argument("--iters", type=int, default=10,
                   help="synthetic run: iterations (default 10)")
    add_seed(q, default=0, help="synthetic run: RNG seed (default 0)")
    q.add_argument("--drift", type=float, default=0.02,
                   help="synthetic run: random-walk step of the inputs per iteration, relative "
                        "to their unit spread (default 0.02)")
    add_report(q, "--json")
    q.add_argument("--out", metavar="MASK.npy", help="write the bitmask (bool, with --h-dense)")
    q.set_defaults(func=_cmd_ffnr)
