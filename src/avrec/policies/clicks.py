"""Position bias: a position-based click model (PBM), ``P(click at slot j on item a) = κ_j · γ_a``.

``κ_j`` is the probability that slot ``j`` is examined (κ_1 = 1), ``γ_a`` the probability of a click on an
examined item. :func:`estimate_examination` fits both by expectation–maximisation on logged (item, slot,
click) triples (Wang et al., WSDM 2018: "Position bias estimation for unbiased learning to rank"); the
linear policies weight each shown item by its slot's κ, and the simulator draws clicks from the model.
"""

from __future__ import annotations

import numpy as np

from avrec.errors import DataError


def geometric_examination(k: int, decay: float = 0.85) -> np.ndarray:
    """κ_j = decay^(j-1): a common default when there are no logs to estimate from."""
    if not 0 < decay <= 1:
        raise DataError(f"examination decay must be in (0, 1], not {decay}")
    return decay ** np.arange(k, dtype=np.float64)


def estimate_examination(items: np.ndarray, positions: np.ndarray, clicks: np.ndarray, n_positions: int,
                         iterations: int = 200, tol: float = 1e-7) -> tuple[np.ndarray, dict[int, float]]:
    """(κ per slot, γ per item) from logged triples by EM; κ is scaled so that κ_1 = 1.

    ``positions`` are 0-based slots. Identifiable only when items are shown at several slots (logs of an
    exploring policy); with a greedy log the slots of an item never change and κ stays at its start.
    """
    items = np.asarray(items)
    pos = np.asarray(positions, dtype=np.int64)
    c = np.asarray(clicks, dtype=np.float64)
    if not (len(items) == len(pos) == len(c)):
        raise DataError("estimate_examination: items, positions and clicks differ in length")
    if len(pos) and (pos.min() < 0 or pos.max() >= n_positions):
        raise DataError(f"estimate_examination: positions must be in [0, {n_positions})")
    if ((c < 0) | (c > 1)).any():
        raise DataError("estimate_examination: clicks must be in [0, 1]")
    keys, item_of = np.unique(items, return_inverse=True)
    kappa = np.full(n_positions, 0.5)
    gamma = np.full(len(keys), 0.5)
    for _ in range(iterations):
        k, g = kappa[pos], gamma[item_of]
        denom = np.maximum(1 - k * g, 1e-12)
        # posterior that the row was examined / relevant, given no click; 1 when clicked
        examined = c + (1 - c) * k * (1 - g) / denom
        relevant = c + (1 - c) * (1 - k) * g / denom
        new_kappa = np.bincount(pos, examined, n_positions) / np.maximum(np.bincount(pos, None, n_positions), 1)
        new_gamma = np.bincount(item_of, relevant, len(keys)) / np.bincount(item_of, None, len(keys))
        done = max(np.abs(new_kappa - kappa).max(initial=0), np.abs(new_gamma - gamma).max(initial=0)) < tol
        kappa, gamma = np.clip(new_kappa, 1e-6, 1.0), np.clip(new_gamma, 1e-6, 1 - 1e-6)
        if done:
            break
    scale = kappa[0] if kappa[0] > 0 else 1.0
    return np.minimum(kappa / scale, 1.0), {keys.tolist()[i]: float(min(gamma[i] * scale, 1.0))
                                           for i in range(len(keys))}
