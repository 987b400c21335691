"""``exion sim cfse``: GELU, softmax or layer norm through the Verilated CFSE.

A standalone module: :func:`register_sim` adds the ``cfse`` subcommand to the ``exion sim``
subparsers (``gen/cli_sim.py`` calls it with one line).

Inputs use the golden functions' formats: ``gelu`` 16-bit Q.11 values of any shape
(``gelu_fx``, output Q.11); ``softmax`` Q.11 rows along the last axis (output Q.15, 2**15 =
1.0); ``layernorm`` Q.11 rows along the last axis with Q.11 ``--gamma`` / ``--beta`` of the
row length (output Q.11). Every row length the golden accepts runs (softmax 1..65535, layer
norm 1..16384): rows longer than the CFSE's buffer (``cfg.cfse_n_max``) go through the
long-row (restream) mode, which the command reports. Bad files, shapes, dtypes or values stop with one line naming the
option, the file and the shape; nothing is written.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from exion.errors import ExionError

from .options import (add_config, add_report, add_seed, add_waves, load_cfg, load_npy,
                      seed_of, write_json)

__all__ = ["register_sim", "cmd_sim_cfse", "load_cfse_inputs", "float_reference"]

FX_MIN, FX_MAX = -(1 << 15), (1 << 15) - 1


def register_sim(ssub) -> None:
    """Add ``cfse`` to the ``exion sim`` subparsers ``ssub``."""
    c = ssub.add_parser(
        "cfse", help="GELU / softmax / layer norm through the Verilated CFSE",
        description="Run GELU, softmax or layer norm through the Verilated CFSE, check the "
                    "result bit-exactly against the golden model (gelu_fx, softmax_fx, "
                    "layernorm_fx), print the RTL cycles beside the cycle model and the "
                    "largest error against float, and write the result. Formats: gelu: "
                    "16-bit Q.11 in and out, any shape; softmax: Q.11 rows along the last "
                    "axis, Q.15 out; layernorm: Q.11 rows along the last axis with Q.11 "
                    "--gamma and --beta of the row length, Q.11 out.")
    add_config(c)
    c.add_argument("--fn", required=True, choices=["gelu", "softmax", "layernorm"],
                   help="the function")
    c.add_argument("--x", required=True, metavar="X.npy", help="integer Q.11 input")
    c.add_argument("--gamma", metavar="G.npy", help="layernorm: Q.11 scale, shape (n,)")
    c.add_argument("--beta", metavar="B.npy", help="layernorm: Q.11 shift, shape (n,)")
    c.add_argument("--eps-q", type=int, default=1, metavar="E",
                   help="layernorm: eps in Q.38 units (2**-38), 1..2**48-1 (default 1)")
    c.add_argument("--out", required=True, metavar="Y.npy", help="where to write the result")
    add_report(c)
    add_seed(c)
    add_waves(c)
    c.set_defaults(func=cmd_sim_cfse)


def _fx(path: str, option: str, ndim: int | None = None) -> np.ndarray:
    a = load_npy(path, option, ndim=ndim)
    if a.dtype.kind not in "iu":
        raise ExionError(f"{option}: {path!r} (shape {a.shape}) has dtype {a.dtype}, expected "
                         f"integers (16-bit Q.11)")
    if a.size and (a.min() < FX_MIN or a.max() > FX_MAX):
        raise ExionError(f"{option}: {path!r} (shape {a.shape}) has values in [{a.min()}, "
                         f"{a.max()}], expected 16-bit Q.11 [{FX_MIN}, {FX_MAX}]")
    return a.astype(np.int64)


def load_cfse_inputs(cfg, args):
    """Load and check X (and gamma, beta); every error names the option, file and shape."""
    x = _fx(args.x, "--x")
    gamma = beta = None
    if args.fn == "gelu":
        for opt in ("gamma", "beta"):
            if getattr(args, opt):
                raise ExionError(f"--{opt} is only for --fn layernorm")
        return x, gamma, beta
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ExionError(f"--x: {args.x!r} has shape {x.shape}: {args.fn} needs rows along "
                         f"the last axis (at least 1 element long)")
    n = x.shape[-1]
    lim = 65535 if args.fn == "softmax" else 16384      # golden softmax_fx / layernorm_fx
    if n > lim:
        raise ExionError(f"--x: {args.x!r} has shape {x.shape}: rows of {n} elements exceed "
                         f"{args.fn}_fx's limit of {lim}")
    if args.fn == "softmax":
        for opt in ("gamma", "beta"):
            if getattr(args, opt):
                raise ExionError(f"--{opt} is only for --fn layernorm")
        return x, gamma, beta
    if not args.gamma or not args.beta:
        raise ExionError("--fn layernorm needs --gamma G.npy and --beta B.npy (Q.11, one "
                         f"per row element: shape ({n},))")
    gamma, beta = _fx(args.gamma, "--gamma"), _fx(args.beta, "--beta")
    for opt, path, v in (("--gamma", args.gamma, gamma), ("--beta", args.beta, beta)):
        if v.shape != (n,):
            raise ExionError(f"{opt}: {path!r} has shape {v.shape}, expected ({n},) (the row "
                             f"length of --x {args.x!r}, shape {x.shape})")
    if not 1 <= args.eps_q < (1 << 48):
        raise ExionError(f"--eps-q {args.eps_q} is invalid: must be in 1..2**48-1")
    return x, gamma, beta


def float_reference(fn: str, x, gamma=None, beta=None, eps_q: int = 1) -> np.ndarray:
    """The float function the fixed-point one approximates, in real units (Q.11 input
    ``x / 2**11``; softmax probabilities; layer norm with eps = eps_q * 2**-38, its output
    clipped to the Q.11 range like the fixed-point saturation)."""
    from exion.cfse_tables import gelu_float
    f = np.asarray(x, dtype=np.float64) / 2**11
    if fn == "gelu":
        return gelu_float(f)
    if fn == "softmax":
        e = np.exp(f - f.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    mu = f.mean(axis=-1, keepdims=True)
    var = ((f - mu) ** 2).mean(axis=-1, keepdims=True)
    y = (f - mu) / np.sqrt(var + eps_q * 2.0**-38)
    y = np.clip(y, FX_MIN / 2**11, FX_MAX / 2**11)
    out = y * (np.asarray(gamma) / 2**11) + np.asarray(beta) / 2**11
    return np.clip(out, FX_MIN / 2**11, FX_MAX / 2**11)


def cmd_sim_cfse(args) -> int:
    from exion.golden.cfse_cycles import cfse_cycles, restreamed
    from exion.sim.cfse_rtl import golden_of, rtl_cfse
    from exion.sim.runner import BenchFailure
    cfg = load_cfg(args.config)
    x, gamma, beta = load_cfse_inputs(cfg, args)
    out = Path(args.out)
    if out.suffix != ".npy":
        raise ExionError(f"--out {args.out!r} must be a .npy file")
    want = golden_of(cfg, args.fn, x, gamma, beta, args.eps_q)
    seed = seed_of(args)
    try:
        y, cycles = rtl_cfse(cfg, args.fn, x, gamma, beta, args.eps_q, seed=seed,
                             waves=args.waves,
                             progress=lambda msg: print(f"[exion] {msg}", file=sys.stderr))
    except BenchFailure as e:
        print(f"FAIL: {e}")
        return 1
    model = cfse_cycles(cfg, args.fn, x.shape)
    n = x.shape[-1] if x.ndim else 1
    long_ = args.fn != "gelu" and restreamed(cfg, n)
    mode = "" if args.fn == "gelu" else (
        f"long-row mode (restream: rows of {n} > n_max = {cfg.cfse_n_max} sent 3 times)"
        if long_ else f"buffered mode (rows of {n} <= n_max = {cfg.cfse_n_max})")
    scale = 2.0**15 if args.fn == "softmax" else 2.0**11
    ref = float_reference(args.fn, x, gamma, beta, args.eps_q)
    err = float(np.abs(y / scale - ref).max()) if y.size else 0.0
    exact = bool(np.array_equal(y, want))
    rows = 1 if args.fn == "gelu" else (x.size // x.shape[-1] if x.size else 0)
    figures = {"config": cfg.name, "fn": args.fn, "shape": list(x.shape), "rows": rows,
               "rtl_cycles": cycles, "model_cycles": model,
               "mode": None if args.fn == "gelu" else ("restream" if long_ else "buffered"), "bit_exact": exact,
               "max_abs_err_vs_float": err, "seed": seed, "out": str(out)}
    print(f"CFSE {cfg.name}: {args.fn} on {x.shape} ({cfg.lanes} lanes), seed {seed}")
    if mode:
        print(f"  {mode}")
    print(f"  RTL cycles {cycles} (model {model}); largest error vs float {err:.3g} "
          f"({err * scale:.2f} LSB)")
    if not exact:
        bad = np.argwhere(y != want)
        first = tuple(int(i) for i in bad[0])
        print(f"  FAIL: {len(bad)} of {y.size} outputs differ from golden "
              f"{'gelu_fx' if args.fn == 'gelu' else args.fn + '_fx'} (first at {first}: "
              f"RTL {int(y[first])}, golden {int(want[first])}); nothing written")
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, y)
    print(f"  bit-exact vs golden: PASS; wrote {out}")
    if args.report:
        write_json(args.report, figures)
    return 1 if math.isnan(err) else 0
