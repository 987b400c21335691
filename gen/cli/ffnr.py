"""``exion sim ffnr``: the Verilated FFN-Reuse unit on one H, checked against the golden mask.

Standalone: :func:`register_sim` adds the ``ffnr`` subcommand to the ``exion sim``
subparsers (``gen/cli_sim.py`` calls it).
"""

from __future__ import annotations

import sys

from .options import (add_config, add_report, add_seed, add_waves, load_cfg, load_npy,
                      seed_of, write_json)

__all__ = ["register_sim", "cmd_sim_ffnr", "load_ffnr_inputs"]


def register_sim(ssub) -> None:
    f = ssub.add_parser(
        "ffnr", help="FFN-Reuse bitmask of an H through the Verilated unit",
        description="Stream a dense iteration's GELU output H (T x N, W-bit integers) through "
                    "the Verilated FFN-Reuse unit: it builds the |H| histogram (leading-one "
                    "exponent + 4 mantissa bits), picks theta for the target sparsity s and "
                    "emits the bitmask B = |H| >= theta as the CAU's mask beats. An H larger "
                    "than the unit's cache (t_max x n_max) is streamed in tiles: every tile "
                    "into the histogram (HIST), one threshold search (THRESH), then per tile "
                    "H_d stored (STORE) and its mask emitted (MASK). Histogram, "
                    "theta and mask are checked bit-exactly against the golden "
                    "build_mask(H, s, 'magnitude'); prints cycles (next to the cycle model), "
                    "theta and the achieved sparsity, and writes the mask (bool .npy) only "
                    "when everything matches (exit 1 otherwise).")
    add_config(f)
    f.add_argument("--h", required=True, metavar="H.npy",
                   help="T x N integer array, signed W-bit, any shape (T x N <= 2**32 - 1); "
                        "tiled in t_max x n_max tiles (4 R tokens x k_max hidden units) when "
                        "larger than the unit's cache")
    f.add_argument("--s", required=True, metavar="S",
                   help="target sparsity in [0, 1), at most 6 decimals (the unit's register "
                        "holds s * 10**6), e.g. 0.8")
    f.add_argument("--out", required=True, metavar="MASK.npy",
                   help="where to write the T x N boolean mask (True = recompute)")
    add_report(f, flag="--json")
    add_seed(f)
    add_waves(f)
    f.set_defaults(func=cmd_sim_ffnr)


def load_ffnr_inputs(args):
    """(cfg, H, s_code, out path); every error names the option, the file and the shape."""
    from pathlib import Path

    from exion.errors import ExionError
    from exion.golden.ffn_reuse import sparsity_code
    from exion.golden.quant import check_operand
    from exion.hw.ffnr import FfnrSizes

    cfg = load_cfg(args.config)
    h = load_npy(args.h, "--h", ndim=2)
    if h.dtype.kind not in "iu":
        raise ExionError(f"--h {args.h!r} has dtype {h.dtype} (shape {h.shape}), expected "
                         f"signed {cfg.width}-bit integers")
    h = check_operand(cfg, h, f"--h {args.h!r} (shape {h.shape})")
    sz = FfnrSizes(cfg)
    T, N = h.shape
    if T < 1 or N < 1 or T * N > sz.hist_max:
        raise ExionError(f"--h {args.h!r} has shape {h.shape}: the {cfg.name} FFN-Reuse unit "
                         f"takes T, N >= 1 with T x N <= {sz.hist_max} values per layer "
                         f"(its histogram counters)")
    try:
        code = sparsity_code(args.s)
    except ExionError as e:
        raise ExionError(f"--s {args.s}: {e}") from None
    out = Path(args.out)
    if out.suffix != ".npy":
        raise ExionError(f"--out {args.out!r} must be a .npy file")
    return cfg, h, code, out


def cmd_sim_ffnr(args) -> int:
    import numpy as np

    from exion.golden import ffnr_cycles as fc
    from exion.golden.ffn_reuse import abs_histogram, build_mask
    from exion.sim.ffnr_rtl import rtl_ffnr
    from exion.sim.runner import BenchFailure

    cfg, h, code, out = load_ffnr_inputs(args)
    seed = seed_of(args)
    T, N = h.shape
    try:
        run = rtl_ffnr(cfg, h, args.s, seed=seed, waves=args.waves,
                       progress=lambda msg: print(f"[exion] {msg}", file=sys.stderr))
    except BenchFailure as e:
        print(f"FAIL: {e}")
        return 1
    want_mask, want_theta = build_mask(h, args.s, "magnitude", width=cfg.width)
    checks = {"histogram": bool(np.array_equal(run.histogram, abs_histogram(h, cfg.width))),
              "theta": run.theta == want_theta,
              "mask": bool(np.array_equal(run.mask, want_mask))}
    exact = all(checks.values())
    if run.tiling:
        model = fc.tiled_cycles(cfg, T, N, run.tiling["t_tile"], run.tiling["n_tile"])
    else:
        model = {"dense": fc.dense_cycles(cfg, T, N), "mask": fc.mask_cycles(cfg, T, N)}
        model["total"] = model["dense"] + model["mask"]
    ones = int(run.mask.sum())
    figures = {"config": cfg.name, "T": T, "N": N, "s": args.s, "s_code": code,
               "theta": run.theta, "theta_golden": want_theta, "theta_bin": run.theta_bin,
               "ones": ones, "achieved_sparsity": 1 - ones / run.mask.size,
               "tiling": run.tiling, "rtl_cycles": {k: run.cycles[k] for k in model},
               "model_cycles": model, "bit_exact": exact, "checks": checks, "seed": seed,
               "out": str(out) if exact else None}
    print(f"FFN-Reuse unit {cfg.name}: H {T} x {N}, s = {args.s} (s_code {code})")
    print(f"  theta {run.theta} (bin {run.theta_bin}), mask ones {ones} of {run.mask.size}, "
          f"achieved sparsity {figures['achieved_sparsity']:.4f}")
    if run.tiling:
        tl = run.tiling
        print(f"  tiled: {tl['tiles']} tiles of up to {tl['t_tile']} x {tl['n_tile']} (the "
              f"unit's cache); CLEAR, HIST per tile, THRESH, STORE + MASK per tile")
    print("  RTL cycles: " + ", ".join(f"{k} {run.cycles[k]} (model {model[k]})"
                                       for k in model))
    if not exact:
        bad = [k for k, ok in checks.items() if not ok]
        print(f"  FAIL: RTL differs from golden build_mask in {', '.join(bad)} "
              f"(theta RTL {run.theta}, golden {want_theta}); seed {seed}; nothing written")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, run.mask.astype(bool))
        print(f"  bit-exact vs golden (histogram, theta, mask): PASS; wrote {out}")
    if args.waves:
        figures["waves"] = run.report.get("waves")
        print(f"  waves: {figures['waves']}")
    if args.json:
        write_json(args.json, figures)
    return 0 if exact else 1
