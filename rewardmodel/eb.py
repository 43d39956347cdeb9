"""The per-annotator blend weights' likelihood (``stacking``): the
between-annotator spread of the weights, τ²/σ², by type-II maximum likelihood."""

from __future__ import annotations

import numpy as np

EB_RATIOS = np.logspace(-3, 1.5, 19)  # τ²/σ² grid for the type-II likelihood


def annotator_sums(z: np.ndarray, r: np.ndarray, idx: np.ndarray, n_people: int):
    """Per annotator (rows ``idx`` into 0..n_people): Zᵀ Z (P, M, M), Zᵀ r (P, M),
    rᵀ r (P,), and the count of ratings (P,)."""
    m = z.shape[1]
    gram = np.zeros((n_people, m, m))
    for i in range(m):
        for j in range(i, m):
            gram[:, i, j] = gram[:, j, i] = np.bincount(
                idx, z[:, i] * z[:, j], minlength=n_people
            )
    zr = np.stack(
        [np.bincount(idx, z[:, i] * r, minlength=n_people) for i in range(m)], 1
    )
    rr = np.bincount(idx, r * r, minlength=n_people)
    return gram, zr, rr, np.bincount(idx, minlength=n_people)


def eb_ratio(gram, zr, rr, n) -> tuple[float, list]:
    """τ²/σ² of the hierarchical model by type-II maximum likelihood (σ²
    profiled out) on the grid ``EB_RATIOS``, or 0 where no spread between
    annotators is likelier than none. Determinant lemma and Woodbury: every
    term is a per-annotator M × M system. Returns (ratio, log-likelihoods)."""
    dof = float(np.maximum(n - 1, 0).sum())  # each annotator's mean is centred out
    if dof <= 0:
        return 0.0, []
    eye = np.eye(gram.shape[1])
    lls = [-0.5 * dof * np.log(max(rr.sum() / dof, 1e-300))]
    for lam in EB_RATIOS:
        sol = np.linalg.solve(eye / lam + gram, zr[..., None])[..., 0]
        quad = float(rr.sum() - (zr * sol).sum())
        logdet = float(np.linalg.slogdet(eye + lam * gram)[1].sum())
        lls.append(-0.5 * (dof * np.log(max(quad / dof, 1e-300)) + logdet))
    best = int(np.argmax(np.round(lls, 9)))
    ratio = 0.0 if best == 0 else float(EB_RATIOS[best - 1])
    return ratio, [round(float(v), 3) for v in lls]
