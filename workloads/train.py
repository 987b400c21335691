"""Train the tiny class-conditional DiT on scikit-learn's 8x8 digits (torch, CPU).

Training only: torch is an optional extra (``pip install .[train]``), never imported at
inference time. The NumPy model in :mod:`exion.workloads.dit` mirrors this module's
``TinyDiT`` layer for layer (weights are exported as ``x @ W`` matrices, i.e. transposed
from torch's ``nn.Linear`` layout).

Reproduce the shipped weights::

    python -m exion.workloads.train --out workloads/data/dit_digits.npz

Everything is seeded (torch, the data order, the noise, the timesteps); torch runs with
deterministic algorithms on ``--threads`` CPU threads (1 by default). The same torch
version and thread count reproduce the weights; other versions reproduce them up to float
rounding (the model card states the sample quality that was measured, which is what the
tests check).
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np

from .weights import weights_path, save_weights
from .common import (MODELS, arch, betas_linear, ema_decay, load_digits_images)


def build(torch, nn, ARCH=MODELS["digits16"]):
    """Return the TinyDiT class (defined lazily so that importing this module needs no torch)."""
    F = nn.functional

    class Block(nn.Module):
        def __init__(self, d, heads, mlp):
            super().__init__()
            self.heads = heads
            self.ada = nn.Linear(d, 6 * d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.fc1 = nn.Linear(d, mlp)
            self.fc2 = nn.Linear(mlp, d)
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)

        def forward(self, x, c):
            B, T, d = x.shape
            sh1, sc1, g1, sh2, sc2, g2 = self.ada(F.silu(c)).unsqueeze(1).chunk(6, dim=-1)
            h = F.layer_norm(x, (d,), eps=ARCH["ln_eps"]) * (1 + sc1) + sh1
            q, k, v = self.qkv(h).chunk(3, dim=-1)
            dh = d // self.heads
            q = q.view(B, T, self.heads, dh).transpose(1, 2)
            k = k.view(B, T, self.heads, dh).transpose(1, 2)
            v = v.view(B, T, self.heads, dh).transpose(1, 2)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1) @ v
            a = a.transpose(1, 2).reshape(B, T, d)
            x = x + g1 * self.proj(a)
            h = F.layer_norm(x, (d,), eps=ARCH["ln_eps"]) * (1 + sc2) + sh2
            x = x + g2 * self.fc2(F.gelu(self.fc1(h)))
            return x

    class TinyDiT(nn.Module):
        def __init__(self):
            super().__init__()
            d, p = ARCH["width"], ARCH["patch"]
            self.patch = nn.Linear(p * p, d)
            self.pos = nn.Parameter(torch.randn(ARCH["tokens"], d) * 0.02)
            self.t1 = nn.Linear(ARCH["t_freq"], d)
            self.t2 = nn.Linear(d, d)
            self.y_emb = nn.Embedding(ARCH["classes"] + 1, d)   # last row: "no class"
            nn.init.normal_(self.y_emb.weight, std=0.02)
            self.blocks = nn.ModuleList(Block(d, ARCH["heads"], ARCH["mlp_ratio"] * d)
                                        for _ in range(ARCH["depth"]))
            self.fada = nn.Linear(d, 2 * d)
            self.out = nn.Linear(d, p * p)
            for m in (self.fada, self.out):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

        def forward(self, img, t, y):
            B = img.shape[0]
            p, g = ARCH["patch"], ARCH["grid"]
            x = img.view(B, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(B, g * g, p * p)
            x = self.patch(x) + self.pos
            half = ARCH["t_freq"] // 2
            dt = self.t1.weight.dtype
            freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=dt) / half)
            args = t.to(dt)[:, None] * freqs[None]
            temb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
            c = self.t2(F.silu(self.t1(temb))) + self.y_emb(y)
            for blk in self.blocks:
                x = blk(x, c)
            sh, sc = self.fada(F.silu(c)).unsqueeze(1).chunk(2, dim=-1)
            x = F.layer_norm(x, (x.shape[-1],), eps=ARCH["ln_eps"]) * (1 + sc) + sh
            x = self.out(x)
            x = x.view(B, g, g, p, p).permute(0, 1, 3, 2, 4).reshape(B, g * p, g * p)
            return x

    return TinyDiT


def export(model) -> dict[str, np.ndarray]:
    """torch state -> the NumPy layout of :mod:`exion.workloads.dit` (``x @ W`` matrices)."""
    sd = {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items()}
    out = {}
    for k, v in sd.items():
        if k.endswith(".weight") and v.ndim == 2 and not k.startswith("y_emb"):
            out[k[:-len(".weight")] + ".w"] = v.T.copy()
        elif k.endswith(".bias"):
            out[k[:-len(".bias")] + ".b"] = v
        elif k == "y_emb.weight":
            out["y_emb"] = v
        else:
            out[k] = v
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="digits16", choices=sorted(MODELS),
                    help="digits16 (2x2 patches, 16 tokens) or digits64 (1x1, 64 tokens)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output .npz (default: the shipped file of --model)")
    ap.add_argument("--steps", type=int, default=None, help="default: the model's recipe")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=None)
    # 1 thread: on a shared 2-core machine two torch threads contend with other jobs and
    # ran 15x slower in a measurement here; one thread is also the reproducible default.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--diag-dir", type=Path, default=None,
                    help="also write raw.npz (the trained weights, no EMA) and plain_ema.npz "
                         "(EMA without warm-up) there, for diagnosis; the --out file is the same")
    args = ap.parse_args(argv)
    ARCH = arch(args.model)
    for name in ("steps", "batch", "lr", "seed"):
        if getattr(args, name) is None:
            setattr(args, name, ARCH[f"train_{name}"])
    if args.out is None:
        args.out = weights_path(args.model)

    import torch
    from torch import nn
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    TinyDiT = build(torch, nn, ARCH)
    model = TinyDiT()
    ema = TinyDiT()
    ema.load_state_dict(model.state_dict())
    for p_ in ema.parameters():
        p_.requires_grad_(False)
    plain = copy.deepcopy(ema) if args.diag_dir is not None else None   # no RNG draw
    n_params = sum(p_.numel() for p_ in model.parameters())

    imgs, labels = load_digits_images()
    X = torch.tensor(imgs, dtype=torch.float32)
    Y = torch.tensor(labels, dtype=torch.long)
    betas = torch.tensor(betas_linear(), dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float()
    n_t = len(betas)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 1)
    warm = 200
    t0 = time.time()
    losses = []
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / warm) * \
            0.5 * (1 + math.cos(math.pi * step / args.steps))
        for gr in opt.param_groups:
            gr["lr"] = lr
        idx = torch.randint(0, X.shape[0], (args.batch,), generator=gen)
        x0, y = X[idx], Y[idx].clone()
        drop = torch.rand(args.batch, generator=gen) < ARCH["label_dropout"]
        y[drop] = ARCH["classes"]
        t = torch.randint(0, n_t, (args.batch,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = ((model(xt, t, y) - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = ema_decay(ARCH, step)
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(decay).add_(pm, alpha=1 - decay)
            if args.diag_dir is not None:   # the plain 0.999 EMA, for comparison only
                for pe, pm in zip(plain.parameters(), model.parameters()):
                    pe.mul_(ARCH["ema"]).add_(pm, alpha=1 - ARCH["ema"])
        losses.append(loss.item())
        if step % 500 == 0 or step == args.steps - 1:
            print(f"step {step:6d}  loss {np.mean(losses[-500:]):.4f}  lr {lr:.2e}  "
                  f"{time.time() - t0:7.1f} s", flush=True)
    elapsed = time.time() - t0
    # No wall-clock time in the file: it would change the checksum from run to run.
    meta = {"params": n_params,
            "final_loss_avg500": float(np.mean(losses[-500:])),
            "steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
            "threads": args.threads, "torch": torch.__version__}
    if args.model != "digits16":    # digits16's file predates the field: keep its bytes
        meta.update(model=args.model, tokens=ARCH["tokens"],
                    ema_warmup=bool(ARCH.get("ema_warmup", False)))
    sha = save_weights(args.out, export(ema), meta)
    if args.diag_dir is not None:
        save_weights(args.diag_dir / "raw.npz", export(model), dict(meta, diag="raw"))
        save_weights(args.diag_dir / "plain_ema.npz", export(plain), dict(meta, diag="plain_ema"))
    print(f"params {n_params}, {elapsed:.1f} s, weights {args.out} sha256 {sha}")
    print(meta)


if __name__ == "__main__":
    main()
