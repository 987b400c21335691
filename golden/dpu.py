"""Golden model of the dot-product unit (SPEC 4.1).

Contract (same as ``exion.hw.dpu.DPU``): a dot product of K elements arrives as
``ceil(K / L)`` beats of L-wide operand vectors; the last beat is zero-padded. The result is
the exact sum of the K products taken as a signed A-bit two's complement value. Within
``cfg.k_max`` the wrap never changes the value; :func:`dpu` refuses longer reductions.
"""

from __future__ import annotations

import numpy as np

from exion.config import Config
from exion.errors import ExionError

from .quant import check_k, check_operand, wrap

__all__ = ["dpu", "dpu_beats"]


def dpu_beats(cfg: Config, a, b) -> tuple[np.ndarray, np.ndarray]:
    """Split (N, K) operand rows into the (N, ceil(K/L), L) beats the hardware streams."""
    a = check_operand(cfg, a, "a", ndim=2)
    b = check_operand(cfg, b, "b", ndim=2)
    if a.shape != b.shape:
        raise ExionError(f"dpu: a has shape {a.shape} but b has shape {b.shape}")
    n, k = a.shape
    if k < 1:
        raise ExionError("dpu: K must be >= 1")
    words = -(-k // cfg.lanes)
    pad = words * cfg.lanes - k
    a = np.pad(a, ((0, 0), (0, pad))).reshape(n, words, cfg.lanes)
    b = np.pad(b, ((0, 0), (0, pad))).reshape(n, words, cfg.lanes)
    return a, b


def dpu(cfg: Config, a, b) -> np.ndarray:
    """Dot products of matching rows: ``a``, ``b`` (N, K) W-bit -> (N,) A-bit int64."""
    a3, b3 = dpu_beats(cfg, a, b)
    check_k(cfg, np.shape(a)[1])
    return wrap(np.einsum("nwl,nwl->n", a3, b3), cfg.acc_width)
