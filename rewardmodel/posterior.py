"""Per-annotator heads as posterior means under a shared prior (numpy only).

An annotator's own head δ_a (their deviation from the base head) has the prior
δ_a ~ N(0, τ² D) and their normalised ratings y = F (w0 + δ_a) + unit noise, so
the posterior mean is δ_a = τ² D Fᵀ (τ² K + I)⁻¹ r with K = F D Fᵀ and
r = y − F w0: ridge regression of their residuals shrunk toward the base head,
solved in the dual (one eigendecomposition of an n_a × n_a kernel per annotator
serves every τ² and every base of a grid).

τ² is always given **relative** to the data's kernel scale (``kernel_scale``:
1 / mean diagonal of K), so one fixed grid (``TAU2_REL_GRID``) fits every
dataset; the absolute τ² is ``tau2_rel · kscale``.

Shape letters (as in docs/rewardmodel.md): n ratings, n_a one annotator's
ratings, A annotators, k content columns (embedding components kept),
d = k + 2 feature columns [x, crowd, 1], B bases, T values of τ², C candidate
heads, r rank of the prior's low-rank part.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .metrics import by_annotator

# × 1/mean diagonal of K (``kernel_scale``); 0: no personal part.
TAU2_REL_GRID = (0.0,) + tuple(10.0 ** np.arange(-2.5, 1.01, 0.5))


@dataclass
class Prior:
    """Prior covariance D of an annotator's deviation δ_a from the base head:
    ``iso · diag(diag) + L Lᵀ``. The diagonal part treats every embedding column
    alike (crowd column weighted by ρ); the low-rank part ``L`` (d, r) holds the
    taste directions people actually differ along, estimated from everyone's
    heads (the hierarchical part: a newcomer's few ratings only have to place
    them within those directions)."""

    diag: np.ndarray  # (d,)
    lowrank: np.ndarray | None = None  # (d, r)
    iso: float = 1.0

    def kernel(self, f: np.ndarray) -> np.ndarray:
        return self.cross(f, f)

    def primal(self, f: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """D Fᵀ α (α one vector, or one column per solution)."""
        ft_a = f.T.astype(np.float64) @ alpha
        diag = self.diag if alpha.ndim == 1 else self.diag[:, None]
        out = self.iso * diag * ft_a
        if self.lowrank is not None:
            out = out + self.lowrank @ (self.lowrank.T @ ft_a)
        return out

    def cross(self, f: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Prior covariance between the rows of ``f`` and of ``g``: F D Gᵀ."""
        k = self.iso * ((f * self.diag) @ g.T)
        if self.lowrank is not None:
            k = k + (f @ self.lowrank) @ (g @ self.lowrank).T
        return k

    def row_diag(self, f: np.ndarray) -> np.ndarray:
        """The kernel's diagonal, fᵀ D f per row, without the n × n kernel."""
        d = self.iso * ((f * f) @ self.diag)
        if self.lowrank is not None:
            d = d + np.einsum("ij,ij->i", g := f @ self.lowrank, g)
        return d

    def mean_diag(self, f: np.ndarray) -> float:
        return float(np.mean(self.row_diag(f)))

    def dense(self) -> np.ndarray:
        """D itself, (d, d) in float64."""
        out = np.diag(self.iso * self.diag.astype(np.float64))
        if self.lowrank is not None:
            lr = self.lowrank.astype(np.float64)
            out += lr @ lr.T
        return out


def prior_diag(k: int, rho: float) -> Prior:
    """The isotropic prior over d = k + 2 columns, the crowd column weighted ρ."""
    d = np.ones(k + 2, dtype=np.float32)
    d[-2] = rho
    return Prior(d)


def prior_with_directions(
    base: Prior, deltas: np.ndarray, *, gamma: float, rank: int = 24
) -> Prior:
    """``base`` mixed with the top ``rank`` directions of the annotators' head
    deviations ``deltas`` (A, d); ``gamma`` is the low-rank share of the
    prior's trace."""
    if gamma <= 0 or deltas.shape[0] < 4 or not np.any(deltas):
        return base
    _, sv, vt = np.linalg.svd(deltas, full_matrices=False)
    r = min(rank, deltas.shape[0] // 2, sv.size)
    lr = vt[:r].T * sv[:r]  # (d, r)
    scale = gamma * float(np.sum(base.diag)) / max(float(np.sum(lr**2)), 1e-12)
    return Prior(base.diag, (lr * np.sqrt(scale)).astype(np.float32), 1.0 - gamma)


def prior_for(
    f: np.ndarray,
    y: np.ndarray,
    ann: np.ndarray,
    n_ann: int,
    *,
    w0: np.ndarray,
    rho: float,
    gamma: float,
    tau2_rel_iso: float,
    eig_cache: dict | None = None,
) -> Prior:
    """The model's prior, the one definition of it: isotropic with the crowd
    column weighted ρ, and with γ > 0 mixed with the taste directions of the
    heads (around ``w0``) that a first isotropic pass at ``tau2_rel_iso`` gives
    the annotators of the fit ratings (features ``f``, normalised targets
    ``y``). Selection, the report and the deployed refit all call this."""
    prior = prior_diag(f.shape[1] - 2, rho)
    if gamma <= 0:
        return prior
    iso, _ = heads_grid(f, y, ann, n_ann, prior, [w0], [tau2_rel_iso], eig_cache)
    fitted = np.bincount(ann, minlength=n_ann) > 0
    return prior_with_directions(prior, (iso[0, 0] - w0)[fitted], gamma=gamma)


@dataclass
class UserKernel:
    """One annotator's fit ratings, decomposed once for a given prior."""

    f: np.ndarray  # (n_a, d) features of their fit ratings
    resid: np.ndarray  # (n_a,) or (n_a, B): normalised target minus the base head
    evals: np.ndarray
    evecs: np.ndarray
    proj: np.ndarray  # evecs' @ resid


def user_kernel(f: np.ndarray, resid: np.ndarray, prior: Prior) -> UserKernel:
    evals, evecs = np.linalg.eigh(prior.kernel(f).astype(np.float32))
    evals = np.maximum(evals, 0.0)
    return UserKernel(f, resid, evals, evecs, evecs.T @ resid.astype(np.float32))


def user_delta(uk: UserKernel, tau2: float, prior: Prior) -> np.ndarray:
    """Primal δ_a = τ² D Fᵀ (τ² K + I)⁻¹ r (``tau2``: the absolute τ²)."""
    if tau2 <= 0 or uk.resid.size == 0:
        return np.zeros(uk.f.shape[1])
    alpha = uk.evecs @ (uk.proj / (tau2 * uk.evals + 1.0))
    return tau2 * prior.primal(uk.f, alpha.astype(np.float64))


def kernel_scale(f: np.ndarray, prior: Prior) -> float:
    """1 / mean diagonal of the kernel: the unit of a relative τ²."""
    if f.size == 0:
        return 1.0
    step = max(1, f.shape[0] // 4000)  # a scale: a fixed subsample is plenty
    return 1.0 / max(prior.mean_diag(f[::step]), 1e-6)


def heads_grid(
    f: np.ndarray,
    y: np.ndarray,
    ann: np.ndarray,
    n_ann: int,
    prior: Prior,
    bases: list[np.ndarray],
    tau2_rel: list[float],
    eig_cache: dict | None = None,
) -> tuple[np.ndarray, float]:
    """Every annotator's head w0 + δ_a for every (base, relative τ²):
    (B, T, A, d), and the kernel scale τ² is relative to. The one solver of
    the heads: one eigendecomposition per annotator serves the whole grid;
    annotators without ratings keep the base. ``eig_cache`` (annotator →
    (eigenvalues, eigenvectors)) carries the decompositions between calls with
    the same features and prior. One base and one τ² without a cache (the
    deployed refit) take ``_heads_solved``: a decomposition only pays where
    many τ² share it."""
    if eig_cache is None and len(bases) == 1 and len(tau2_rel) == 1:
        return _heads_solved(f, y, ann, n_ann, prior, bases[0], tau2_rel[0])
    kscale = kernel_scale(f, prior)
    nb, nt, d = len(bases), len(tau2_rel), f.shape[1]
    b = np.stack(bases).astype(np.float64)  # (B, d)
    out = np.broadcast_to(b[:, None, None, :], (nb, nt, n_ann, d)).copy()
    resid = _residuals(f, y, b)  # (n, B)
    t2 = np.asarray(tau2_rel, np.float64) * kscale
    live = t2 > 0
    if not live.any():
        return out, kscale
    for a, idx in by_annotator(ann):
        cached = None if eig_cache is None else eig_cache.get(a)
        if cached is None:
            uk = user_kernel(f[idx], resid[idx], prior)  # proj: (n_a, B)
            evals, evecs, proj = uk.evals, uk.evecs, uk.proj
            if eig_cache is not None:
                eig_cache[a] = (evals, evecs)
        else:
            evals, evecs = cached
            proj = evecs.T @ resid[idx]
        # α for every (base, τ²) at once: evecs (proj / (τ² λ + 1))
        shrink = 1.0 / (t2[live][None, :] * evals[:, None] + 1.0)  # (n_a, T')
        scaled = proj[:, :, None] * shrink[:, None, :]  # (n_a, B, T')
        alpha = evecs.astype(np.float64) @ scaled.reshape(len(idx), -1)
        delta = prior.primal(f[idx], alpha).reshape(d, nb, -1) * t2[live]
        out[:, live, a, :] += np.transpose(delta, (1, 2, 0))
    return out, kscale


def _heads_solved(f, y, ann, n_ann, prior: Prior, base, tau2_rel: float):
    """``heads_grid`` for one base and one τ² as (1, 1, A, d): per annotator
    one Cholesky-sized linear solve of (τ²K + I) α = r in float64 instead of
    an eigendecomposition (several times the work, in float32). The same
    posterior mean; it differs from the grid's only by that rounding."""
    kscale = kernel_scale(f, prior)
    b = np.asarray(base, np.float64)
    out = np.broadcast_to(b, (1, 1, n_ann, b.size)).copy()
    t2 = float(tau2_rel) * kscale
    if t2 <= 0:
        return out, kscale
    resid = _residuals(f, y, b[None, :])[:, 0]
    for a, idx in by_annotator(ann):
        fa = f[idx].astype(np.float64)
        system = prior.kernel(fa) * t2
        system[np.diag_indices_from(system)] += 1.0
        alpha = np.linalg.solve(system, resid[idx].astype(np.float64))
        out[0, 0, a] += t2 * prior.primal(fa, alpha)
    return out, kscale


# Rows per block of ``_residuals``: 17 MB of float64 at d = 258, small enough
# for malloc to reuse rather than map afresh (and fault in) for every block.
RESID_BLOCK = 8_192


def _residuals(f: np.ndarray, y: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y − F bᵀ (n, B) as float32, computed in float64 a block of rows at a
    time: a float64 copy of the whole of F (n × d × 8 bytes, 2 GB at a million
    ratings) is never made."""
    y64 = np.asarray(y, np.float64)
    out = np.empty((f.shape[0], b.shape[0]), np.float32)
    for s in range(0, f.shape[0], RESID_BLOCK):
        blk = slice(s, s + RESID_BLOCK)
        out[blk] = y64[blk, None] - f[blk].astype(np.float64) @ b.T
    return out


def prior_key(prior: Prior) -> str:
    """A fingerprint of a prior (which eigendecompositions may be reused)."""
    h = hashlib.sha1(np.ascontiguousarray(prior.diag).tobytes())
    if prior.lowrank is not None:
        h.update(np.ascontiguousarray(prior.lowrank).tobytes())
    h.update(f"{prior.iso!r}".encode())
    return h.hexdigest()


@dataclass
class HeadSpread:
    """How unsure the model is of one annotator's own taste on given images: the
    posterior standard deviation of f · δ_a, in the annotator's normalised units.

    δ_a's posterior mean is the head (``user_delta``); its posterior covariance
    under the same prior and unit noise is τ²D − τ²D Fᵀ (τ²K + I)⁻¹ F D τ², so for
    images G the variance is τ² diag(G D Gᵀ) − τ⁴ kᵀ (τ²K + I)⁻¹ k with k = F D Gᵀ.
    Small where the annotator rated images like these, large where their ratings
    say little (steering uses it to discount candidates the model is guessing
    about). The base head, fitted on everyone's ratings, is taken as known."""

    f: np.ndarray  # (n_a, d) features of the annotator's fit ratings
    evals: np.ndarray
    evecs: np.ndarray
    tau2: float  # absolute
    prior: Prior

    @classmethod
    def build(cls, f: np.ndarray, tau2: float, prior: Prior) -> HeadSpread:
        """No personal part (τ = 0) needs no decomposition: the spread is 0."""
        f = np.asarray(f, np.float64)
        if f.shape[0] and tau2 > 0:
            evals, evecs = np.linalg.eigh(prior.kernel(f).astype(np.float64))
        else:
            f, evals, evecs = f[:0], np.zeros(0), np.zeros((0, 0))
        return cls(f, np.maximum(evals, 0.0), evecs, float(tau2), prior)

    def sd(self, g: np.ndarray) -> np.ndarray:
        g = np.asarray(g, np.float64)
        var = self.tau2 * self.prior.row_diag(g)
        if self.f.shape[0]:
            proj = self.evecs.T @ self.prior.cross(self.f, g)  # (n_a, m)
            shrink = self.tau2**2 / (self.tau2 * self.evals + 1.0)
            var = var - np.einsum("i,ij->j", shrink, proj**2)
        return np.sqrt(np.maximum(var, 0.0))


# Ratings folded into a ``LivePosterior`` per block: a block of c costs
# O(c d² + c² d + c³), so a whole history (a fresh start) goes in blocks.
BLOCK = 64


def row_sd(cov: np.ndarray, g: np.ndarray) -> np.ndarray:
    """sqrt(diag(G Σ Gᵀ)) for the rows of ``g`` (m, d): one (m, d) product,
    never the (m, m) matrix."""
    g = np.asarray(g, np.float64)
    return np.sqrt(np.maximum(np.einsum("ij,ij->i", g @ cov, g), 0.0))


def conditioned(cov: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Σ after ratings with features ``f`` (c, d) under unit noise:
    Σ − ΣFᵀ(FΣFᵀ + I)⁻¹FΣ, in blocks of ``BLOCK``. Updates ``cov`` in place
    and returns it. The scores do not enter: in this linear Gaussian model
    what a rating teaches about δ_a is known before it is given."""
    f = np.asarray(f, np.float64).reshape(-1, cov.shape[0])
    for lo in range(0, f.shape[0], BLOCK):
        b = f[lo : lo + BLOCK]
        p = b @ cov  # (c, d) F_bΣ
        if b.shape[0] == 1:
            cov -= np.outer(p[0], p[0] / (1.0 + p[0] @ b[0]))
            continue
        m = p @ b.T
        m[np.diag_indices_from(m)] += 1.0
        cov -= p.T @ np.linalg.solve(m, p)
        cov[...] = 0.5 * (cov + cov.T)
    return cov


@dataclass
class LivePosterior:
    """One annotator's head posterior kept in feature space (d × d), updated
    in place as they rate: a new rating costs O(d²) whatever they rated before,
    where the dual form (``user_kernel``, ``HeadSpread``) decomposes their whole
    n_a × n_a kernel again. The live newcomer path serves both the head and its
    spread from this one state (``inference.Predictor``).

    Prior δ_a ~ N(0, τ²D) and ratings y = F(w0 + δ_a) + unit noise: the
    posterior covariance Σ starts at τ²D and each block of ratings F_b takes
    Σ ← Σ − ΣF_bᵀ(F_bΣF_bᵀ + I)⁻¹F_bΣ (one rating: the Sherman–Morrison,
    recursive least-squares step). Σ equals the dual form's
    τ²D − τ⁴DFᵀ(τ²K + I)⁻¹FD, and the posterior mean Σ Fᵀr equals
    ``user_delta``'s τ²DFᵀ(τ²K + I)⁻¹r (push-through identity). The residuals
    r = (y_raw − m)/s − F w0 move with every rating (the annotator's mean m
    and std s do), so Fᵀr is kept as sums that do not: Fᵀy_raw, Fᵀ1 and
    FᵀF w0. The base head is taken as known, as in the dual form."""

    tau2: float  # absolute
    cov: np.ndarray  # (d, d) Σ, the posterior covariance of δ_a
    base: np.ndarray  # (d,) w0, the head δ_a deviates from
    ft_y: np.ndarray  # (d,) Fᵀ y_raw
    ft_1: np.ndarray  # (d,) Fᵀ 1
    ft_fb: np.ndarray  # (d,) Fᵀ F w0
    scores: list[float]  # y_raw, in the order added

    @classmethod
    def start(cls, prior: Prior, tau2: float, base: np.ndarray) -> LivePosterior:
        """The posterior before any rating: the prior."""
        base = np.asarray(base, np.float64)
        d = base.size
        cov = tau2 * prior.dense() if tau2 > 0 else np.zeros((d, d))
        z = np.zeros(d)
        return cls(float(tau2), cov, base, z, z.copy(), z.copy(), [])

    @property
    def n(self) -> int:
        return len(self.scores)

    def add(self, f: np.ndarray, y_raw) -> None:
        """Fold in ratings with features ``f`` (c, d) and raw scores ``y_raw``."""
        f = np.asarray(f, np.float64).reshape(-1, self.base.size)
        y = np.asarray(y_raw, np.float64).reshape(-1)
        self.ft_y += f.T @ y
        self.ft_1 += f.sum(axis=0)
        self.ft_fb += f.T @ (f @ self.base)
        self.scores.extend(y.tolist())
        if self.tau2 <= 0:
            return  # no personal part: Σ stays 0
        self.cov = conditioned(self.cov, f)

    def delta(self, mean: float, std: float) -> np.ndarray:
        """The posterior mean of δ_a when the annotator's ratings are
        normalised with ``mean`` and ``std``."""
        if self.tau2 <= 0 or not self.scores:
            return np.zeros(self.base.size)
        ft_r = (self.ft_y - mean * self.ft_1) / std - self.ft_fb
        return self.cov @ ft_r

    def sd(self, g: np.ndarray) -> np.ndarray:
        """Posterior sd of g · δ_a for each row of ``g`` (m, d), in normalised
        units (``HeadSpread.sd``)."""
        return row_sd(self.cov, g)
