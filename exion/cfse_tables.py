"""The CFSE's constant tables, made in one place for the golden model and the hardware.

``exion.golden.cfse`` (the bit-exact definition) and ``exion.hw.cfse`` (the RTL) both import
these functions, so the ROM contents in the Verilog and the tables of the golden model come
from the same formula (``hw/`` may not import ``exion.golden``). Plain NumPy, no Amaranth.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["gelu_float", "gelu_table", "exp2_table", "LOG2E_Q14", "GELU_TFRAC"]

#: rint(log2(e) * 2**14): the softmax's base change e**x = 2**(x log2 e) in Q.14.
LOG2E_Q14 = 23637
#: The GELU table is Q.15.
GELU_TFRAC = 15


def gelu_float(x):
    """Float reference ``x * Phi(x)`` (exact erf GELU), elementwise."""
    x = np.asarray(x, dtype=np.float64)
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def gelu_table() -> np.ndarray:
    """``rint(GELU(-j/32) * 2**15)``, j = 0..256 (int64; values in [-5570, 0])."""
    xs = -np.arange(257, dtype=np.float64) / 32.0
    return np.rint(gelu_float(xs) * (1 << GELU_TFRAC)).astype(np.int64)


def exp2_table() -> np.ndarray:
    """``rint(2**(15 - j/32))``, j = 0..32: 2**-r in Q.15 at 33 points of r in [0, 1]."""
    return np.rint(2.0 ** (15 - np.arange(33) / 32.0)).astype(np.int64)
