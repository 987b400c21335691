"""Directed output masks shared by the CAU and SDUE tests (SPEC 5's directed cases).

Callers pick M, N with a partial last row block and N not a multiple of C. (The golden
ConMerge tests keep a richer set of their own in tests/test_golden_conmerge.py.)
"""

import numpy as np


def adversarial_masks(cfg, M, N) -> dict[str, np.ndarray]:
    R = cfg.rows
    z = np.zeros((M, N), bool)
    one = z.copy()
    one[M // 2, N // 3] = True
    row = z.copy()
    row[min(R + 1, M - 1)] = True
    col = z.copy()
    col[:, N - 1] = True
    checker = (np.add.outer(np.arange(M), np.arange(N)) % 2).astype(bool)
    stripes = z.copy()
    stripes[:, ::3] = True
    return {"all0": z, "all1": ~z, "one_bit": one, "dense_row": row, "dense_col": col,
            "checkerboard": checker, "stripes": stripes}
