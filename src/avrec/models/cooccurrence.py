"""Co-occurrence cosine rows: the item similarity of models without item vectors."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def cooccurrence_unit_rows(seen: sp.spmatrix) -> sp.csr_matrix:
    """Items × users rows of the training matrix scaled to unit length: their products are co-occurrence cosines."""
    x = sp.csr_matrix(seen.T, dtype=np.float32)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1 / np.where(norms > 0, norms, 1)) @ x)
