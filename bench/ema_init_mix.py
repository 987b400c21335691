"""The digits64 diagnosis (issue 20 item 1, docs/fidelity.md section 1): how much of its
*initial* weights an exported EMA may hold before the samples stop being digits.

The shipped digits16 EMA weights are mixed with the recipe's initial weights (seed 0):
``(1 - f) * w16 + f * w_init`` for f = 0 (the shipped file), 0.018 (digits16's own 4000-step
plain EMA), 0.135 (a 2000-step plain 0.999 EMA) and 0.5 (700 steps), then sampled (DDIM,
seed 0, labels ``arange(n) % 10``) and scored by the digit classifier. Needs torch (for the
initial weights). Writes ``build/bench/ema_init_mix.json``.

Run: ``nice .venv/bin/python bench/ema_init_mix.py [--samples 50] [--steps 20]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from exion.workloads.accuracy import class_accuracy, fd_pca
from exion.workloads.common import MODELS
from exion.workloads.dit import DiT, sample
from exion.workloads.weights import load_weights

OUT = Path("build/bench")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.018, 0.135, 0.5])
    args = ap.parse_args(argv)
    import torch
    from exion.workloads.train import build, export
    a = MODELS["digits16"]
    torch.manual_seed(a["train_seed"])          # train.main's first draw: the model's init
    init = export(build(torch, torch.nn, a)().double())
    w16, _ = load_weights()
    rows = []
    for f in args.fractions:
        w = {k: (1 - f) * w16[k] + f * init[k] for k in w16}
        r = sample(DiT(w), args.samples, args.steps, seed=0)
        rows.append({"init_fraction": f, "accuracy": class_accuracy(r.images, r.labels),
                     "fd_pca": fd_pca(r.images)})
        print(f"init fraction {f:5.3f}: classifier {rows[-1]['accuracy']:.2f}  "
              f"FD-PCA {rows[-1]['fd_pca']:.3f}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ema_init_mix.json").write_text(json.dumps(
        {"samples": args.samples, "steps": args.steps, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
