"""Recognisability of ``exion generate`` (issue 16): the digit each (digit, seed) pair of the
sampler produces, as the scorer of ``docs/workloads.md`` (scikit-learn SVC on the 1797
digits) classifies it.

``exion generate`` samples one digit per call from its own seed, on the INT12 path with
EXION's switches (FFN-Reuse N / s, eager prediction k; ``golden/dsc.py``); with ``--rtl``
its image is the golden sampler's bit for bit (the command checks it), so this golden run
is what the RTL produces. Default: digits 0-9 x seeds 0-9 at the command's defaults
(50 steps, N = 2, s = 0.8, k = 0.5, classifier-free guidance 2, digits16), about 200 s
(100 s with ``--guidance 1``). Prints the grid (the class each
pair was scored as), the accuracy per digit and per seed, and writes
``build/bench/generate_accuracy.json``.

Run: ``nice .venv/bin/python bench/perf_generate.py [--digits 0 .. 9] [--seeds 0 .. 9]
[--steps 50] [--n 2] [--s 0.8] [--k 0.5] [--guidance W ...] [--model digits16]``; several
``--guidance`` values give one grid each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

OUT = Path("build/bench")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--n", type=int, default=2, help="FFN-Reuse N (default: 2)")
    ap.add_argument("--s", type=float, default=0.8, help="FFN-Reuse s (default: 0.8)")
    ap.add_argument("--k", type=float, default=0.5, help="EP top-k ratio (default: 0.5)")
    from exion.gen.cli.dsc import GENERATE_GUIDANCE
    ap.add_argument("--guidance", type=float, nargs="+", default=[GENERATE_GUIDANCE],
                    help=f"classifier-free guidance scales, 1 = off (default: "
                         f"{GENERATE_GUIDANCE}, exion generate's)")
    ap.add_argument("--model", default="digits16", choices=["digits16", "digits64"])
    ap.add_argument("--json", type=Path, default=OUT / "generate_accuracy.json")
    args = ap.parse_args(argv)

    import numpy as np

    from exion.errors import ExionError
    from exion.workloads.accuracy import classify
    from exion.workloads.dit import DiT, Exion, check_guidance, sample
    from exion.workloads.weights import load_weights

    bad = [d for d in args.digits if not 0 <= d <= 9]
    if bad:
        raise SystemExit(f"error: --digits {bad[0]} must be in 0..9")
    try:
        ex = Exion(ffn_reuse=True, n=args.n, s=args.s, ep=True, k=args.k, quant=True)
        model = DiT(load_weights(model=args.model)[0])
        for w in args.guidance:
            check_guidance(w)
    except ExionError as e:
        raise SystemExit(f"error: {e}")
    res = {"model": args.model, "steps": args.steps, "n": args.n, "s": args.s, "k": args.k,
           "digits": args.digits, "seeds": args.seeds, "runs": []}
    for w in args.guidance:
        grid = np.zeros((len(args.seeds), len(args.digits)), dtype=int)
        t0 = time.perf_counter()
        total = grid.size
        for i, seed in enumerate(args.seeds):
            for j, d in enumerate(args.digits):
                img = sample(model, 1, args.steps, ex, seed=seed, labels=[d],
                             guidance=w).images
                grid[i, j] = int(classify(img)[0])
                done = i * len(args.digits) + j + 1
                sys.stderr.write(f"\r[bench] guidance {w:g}: {done}/{total} samples, "
                                 f"{time.perf_counter() - t0:.0f} s")
        sys.stderr.write("\n")
        ok = grid == np.asarray(args.digits)[None, :]
        print(f"guidance {w:g}: scored class per (seed row, digit column):")
        print("seed | " + " ".join(f"{d:2d}" for d in args.digits) + " | correct")
        for i, seed in enumerate(args.seeds):
            print(f"{seed:4d} | " + " ".join(f"{c:2d}" for c in grid[i]) + f" | {ok[i].sum()}")
        print(f"guidance {w:g}: recognisable {int(ok.sum())} of {ok.size} ({ok.mean():.1%}); "
              "per digit: " + ", ".join(f"{d}: {ok[:, j].mean():.0%}"
                                        for j, d in enumerate(args.digits)))
        res["runs"].append({
            "guidance": w, "scored": grid.tolist(), "accuracy": float(ok.mean()),
            "per_digit": {str(d): float(ok[:, j].mean()) for j, d in enumerate(args.digits)},
            "per_seed": {str(s): float(ok[i].mean()) for i, s in enumerate(args.seeds)},
            "seconds": round(time.perf_counter() - t0, 1)})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
