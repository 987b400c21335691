"""Shared constants of the digits DiT: architecture, noise schedule, data."""

from __future__ import annotations

import numpy as np

__all__ = ["ARCH", "MODELS", "arch", "ema_decay", "ema_init_weight", "betas_linear", "alpha_bars", "load_digits_images", "to_pixels"]

#: Architecture and training hyper-parameters (the model card repeats them).
ARCH = {
    "image": 8, "patch": 2, "grid": 4, "tokens": 16,
    "width": 64, "depth": 4, "heads": 4, "mlp_ratio": 4,
    "t_freq": 64, "classes": 10, "ln_eps": 1e-6,
    "n_train_t": 1000, "beta_start": 1e-4, "beta_end": 0.02,
    "train_steps": 4000, "train_batch": 128, "train_lr": 2e-3, "train_seed": 0,
    "label_dropout": 0.1, "ema": 0.999,
}

#: The shipped models **[choice]**: ``digits16`` (2x2 patches, 16 tokens; ``ARCH``) and
#: ``digits64`` (1x1 patches, 64 tokens; the same recipe but 6000 training steps -- 2000
#: sampled at 44-56 % classifier accuracy -- and an EMA warm-up, see :func:`ema_decay`).
MODELS = {
    "digits16": dict(ARCH),
    "digits64": dict(ARCH, patch=1, grid=8, tokens=64, train_steps=6000, ema_warmup=True),
}


def ema_decay(a: dict, step: int) -> float:
    """EMA decay at training step ``step`` (0-based) of recipe ``a``.

    Plain ``a["ema"]`` (0.999) keeps ``ema ** steps`` of the *initial* weights in the
    exported EMA: 1.8 % after digits16's 4000 steps, but 13.5 % after 2000 and 50 % after
    700, with most of the rest on early, far-from-converged weights -- the cause of
    digits64's chance-level samples. With ``a["ema_warmup"]`` **[choice]** the decay is
    ``min(ema, (1 + step) / (10 + step))`` (the usual warm-up), so the average covers the
    last few hundred steps. digits16 keeps the plain EMA (its shipped bytes depend on it).
    """
    if a.get("ema_warmup", False):
        return min(a["ema"], (1.0 + step) / (10.0 + step))
    return a["ema"]


def ema_init_weight(a: dict, steps: int | None = None) -> float:
    """Weight of the initial parameters left in the EMA after ``steps`` (default: the
    recipe's) steps: the product of the decays."""
    steps = a["train_steps"] if steps is None else steps
    return float(np.prod([ema_decay(a, s) for s in range(steps)]))


def arch(model: str = "digits16") -> dict:
    """Architecture and training hyper-parameters of model ``model`` (a key of MODELS)."""
    from exion.errors import ExionError
    if model not in MODELS:
        raise ExionError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    return MODELS[model]


def betas_linear() -> np.ndarray:
    """DDPM linear schedule, ``n_train_t`` values from ``beta_start`` to ``beta_end``."""
    return np.linspace(ARCH["beta_start"], ARCH["beta_end"], ARCH["n_train_t"],
                       dtype=np.float64)


def alpha_bars() -> np.ndarray:
    return np.cumprod(1.0 - betas_linear())


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits scaled from [0, 16] to [-1, 1], and their labels."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images.astype(np.float64) / 8.0 - 1.0), d.target.astype(np.int64)


def to_pixels(x: np.ndarray) -> np.ndarray:
    """Model space [-1, 1] -> the dataset's [0, 16] pixel scale (clipped)."""
    return np.clip((np.asarray(x) + 1.0) * 8.0, 0.0, 16.0)
