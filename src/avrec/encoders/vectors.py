"""Row normalisation of embedding matrices without catalogue-sized temporaries."""

from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` with every row scaled to unit L2 norm (all-zero rows stay zero), as float32.

    Rows that already have unit norm (what the encoders return) come back as ``x`` itself, not a copy:
    at a million 384-d items a copy is 1.5 GB. Squared norms come from ``einsum``, which needs no
    ``x * x`` temporary.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.size == 0:
        return x
    squared = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    if np.all(np.abs(squared - 1.0) < 1e-5):
        return x
    return x / np.maximum(np.sqrt(squared), 1e-9).astype(np.float32)[:, None]  # float32 all through: no float64 copy
