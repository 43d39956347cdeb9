"""Few-shot adaptation of a taste vector (numpy only: usable without torch)."""

from __future__ import annotations

import numpy as np


def adapt_taste(
    *, z: np.ndarray, residual: np.ndarray, prior: np.ndarray, ridge: float
) -> np.ndarray:
    """Closed-form taste vector from k ratings: ridge regression of the residual
    (normalised score minus population score) on the taste-space projection,
    shrunk towards ``prior``. k = 0 returns the prior."""
    if len(residual) == 0:
        return prior.copy()
    z = np.asarray(z, dtype=np.float64)
    r = np.asarray(residual, dtype=np.float64) - z @ prior
    gram = z.T @ z + ridge * np.eye(z.shape[1])
    return prior + np.linalg.solve(gram, z.T @ r)
