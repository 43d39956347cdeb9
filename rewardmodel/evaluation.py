"""PAMELA's protocol on the stored splits: select on validation, report on test.

numpy only. Three phases, each seeing only what it may:

* **selection** (``select``): heads fitted on ``train``; hyper-parameters chosen
  on ``val_seen`` (known annotators, new images) and ``val_unseen`` (newcomers,
  k-shot). The crowd feature sees train + validation ratings. No test rating is
  read here.
* **report** (``report``): the selected model and the baselines, fitted on
  ``train`` with hyper-parameters chosen on validation, scored on ``test_seen``
  and ``test_unseen``. The crowd may see everything (as it would when predicting).
* **deploy**: ``taste.fit_heads`` on every rating with the selected
  hyper-parameters (in ``training``).

Baselines, each trained on its own and tuned on validation the same way:
population (pooled ridge on the embedding), per-annotator ridge (the annotator's
ratings alone, on the same embedding), leave-one-out consensus (the mean
normalised rating of the image by everyone else).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from annotation import splits

from . import taste as T
from .metrics import all_metrics, mean_of

CODES = {name: i for i, name in enumerate(splits.SPLITS)}
BASELINES = ("population", "per_annotator_ridge", "loo_consensus")
METRICS = ("pairwise_accuracy", "spearman", "pearson", "mae")


@dataclass
class Data:
    emb: np.ndarray  # (n_rows, dim)
    ratings: T.Ratings
    split: np.ndarray  # split code per rating (CODES)
    n_ann: int
    ks: list[int]
    seed: int
    # Heads fitted on the train split, by (prior, base, τ): the report reuses
    # what selection computed (same fit ratings, same features).
    heads_memo: dict = field(default_factory=dict)
    _feat: T.Features | None = None

    @property
    def feat(self) -> T.Features:
        """One feature space for every phase (from the embeddings, no ratings)."""
        if self._feat is None:
            self._feat = T.Features.build(self.emb)
        return self._feat

    def part(self, *names: str) -> T.Ratings:
        return self.ratings.take(np.isin(self.split, [CODES[n] for n in names]))


@dataclass
class View:
    """Features and normalised targets of some ratings, with the crowd of the
    visible ratings (own rating left out)."""

    f: np.ndarray
    y: np.ndarray  # normalised
    r: T.Ratings


class Context:
    """What a phase sees: the fit ratings (whose normalisation every fitted
    annotator keeps) and the visible ratings the crowd feature is built from."""

    def __init__(self, data: Data, fit: T.Ratings, visible: T.Ratings):
        self.data = data
        self.fit = fit
        self.feat = data.feat
        if "x" not in data.heads_memo:
            data.heads_memo["x"] = self.feat.x(data.emb)
        self.x = data.heads_memo["x"]
        self.mean, self.std = T.norm_stats(fit, data.n_ann)
        fitted = np.bincount(fit.ann, minlength=data.n_ann) > 0
        counts = np.bincount(fit.ann, minlength=data.n_ann)
        self.global_std = float(np.median(self.std[counts > 1])) if fitted.any() else 1
        vm, vs = T.norm_stats(visible, data.n_ann, fallback_std=self.global_std)
        self.vmean = np.where(fitted, self.mean, vm)
        self.vstd = np.where(fitted, self.std, vs)
        z = T.normalised(visible, self.vmean, self.vstd)
        self.crowd = T.Crowd.build(visible, z, data.emb.shape[0])
        # The fit rows' crowd comes from the fit ratings alone (as in the deployed
        # refit), so no held-out rating shapes a fitted head.
        zf = T.normalised(fit, self.mean, self.std)
        self._fit_view = View(
            T.Features.full(
                self.x[fit.row],
                T.Crowd.build(fit, zf, data.emb.shape[0]).loo(fit.row, zf),
            ),
            zf,
            fit,
        )
        # Own normalised rating per (annotator, row), to leave it out of the crowd.
        pairs = zip(visible.ann.tolist(), visible.row.tolist(), strict=True)
        self._own = dict(zip(pairs, z.tolist(), strict=True))

    def fit_view(self) -> View:
        return self._fit_view

    def pop_path(self, lams, *, crowd: bool) -> list[np.ndarray]:
        """Population ridge on the fit ratings for each λ (relative to the mean
        column energy); ``crowd`` False leaves the crowd column out (the
        independently fitted population baseline). One Gram matrix serves all."""
        memo = self.data.heads_memo
        if "gram" not in memo:
            f, y = self._fit_view.f, self._fit_view.y.astype(np.float32)
            memo["gram"] = ((f.T @ f).astype(np.float64), (f.T @ y).astype(np.float64))
        gram, rhs = memo["gram"]
        gram, rhs = gram.copy(), rhs.copy()
        if not crowd:
            gram[-2, :] = gram[:, -2] = 0.0
            rhs[-2] = 0.0
        scale = float(np.mean(np.diag(gram)[:-2]))
        out = []
        for lam in lams:
            pen = np.full(gram.shape[0], lam * scale)
            pen[-2:] = 1e-6 * max(lam * scale, 1.0)
            out.append(np.linalg.solve(gram + np.diag(pen), rhs))
        return out

    def view(self, r: T.Ratings, *, mean=None, std=None) -> View:
        own = np.fromiter(
            (self._own.get((a, w), np.nan) for a, w in zip(r.ann, r.row, strict=True)),
            dtype=np.float64,
            count=len(r),
        )
        f = T.Features.full(self.x[r.row], self.crowd.loo(r.row, own))
        mean = self.mean if mean is None else mean
        std = self.std if std is None else std
        return View(f, T.normalised(r, mean, std), r)

    def loo_mean(self, r: T.Ratings) -> np.ndarray:
        """The plain leave-one-out consensus (mean of the others; 0 if none)."""
        own = np.fromiter(
            (self._own.get((a, w), np.nan) for a, w in zip(r.ann, r.row, strict=True)),
            dtype=np.float64,
            count=len(r),
        )
        s, c = self.crowd.sums[r.row].copy(), self.crowd.counts[r.row].copy()
        has = ~np.isnan(own)
        s[has] -= own[has]
        c[has] -= 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / c, 0.0)


# --- heads on a context ------------------------------------------------------------


def _content_only(f: np.ndarray) -> np.ndarray:
    g = f.copy()
    g[:, -2] = 0.0  # the crowd column
    return g


def population_fit(ctx: Context, lam_rel: float, *, crowd: bool) -> np.ndarray:
    return ctx.pop_path([lam_rel], crowd=crowd)[0]


def user_heads(
    ctx: Context, w0: np.ndarray, *, prior: T.Prior, taus: list[float], toward_pop: bool
) -> tuple[list[np.ndarray], float]:
    """Per τ: every fitted annotator's head, (n_ann, d+2). ``toward_pop`` False is
    the per-annotator ridge baseline: content only, shrunk toward zero."""
    base = w0 if toward_pop else np.zeros_like(w0)
    memo = ctx.data.heads_memo
    key = _fingerprint(prior, base, toward_pop)
    todo = [t for t in taus if (key, t) not in memo]
    if todo:
        v = ctx.fit_view()
        f = v.f if toward_pop else _content_only(v.f)
        kscale = T.kernel_scale(f, prior)
        resid = v.y - f @ base
        out = [np.tile(base, (ctx.data.n_ann, 1)) for _ in todo]
        for a, idx in T._by_annotator(ctx.fit.ann):
            uk = T.user_kernel(f[idx], resid[idx], prior)
            for j, tau in enumerate(todo):
                out[j][a] = base + T.user_delta(uk, tau * kscale, prior)
        for tau, h in zip(todo, out, strict=True):
            memo[(key, tau)] = (h, kscale)
    return [memo[(key, t)][0] for t in taus], memo[(key, taus[0])][1]


def _fingerprint(prior: T.Prior, base: np.ndarray, toward_pop: bool) -> str:
    h = hashlib.sha1(np.ascontiguousarray(prior.diag).tobytes())
    if prior.lowrank is not None:
        h.update(np.ascontiguousarray(prior.lowrank).tobytes())
    h.update(np.ascontiguousarray(base).tobytes())
    h.update(f"{prior.iso}:{toward_pop}".encode())
    return h.hexdigest()


def model_prior(ctx: Context, w0: np.ndarray, hyper: T.Hyper) -> T.Prior:
    """The prior ``hyper`` describes, its taste directions estimated from the
    isotropic heads of the annotators in the fit ratings."""
    prior = T.prior_diag(ctx.x.shape[1], hyper.rho)
    if hyper.gamma <= 0:
        return prior
    tau_iso = hyper.tau if hyper.tau_iso is None else hyper.tau_iso
    (iso,), _ = user_heads(ctx, w0, prior=prior, taus=[tau_iso], toward_pop=True)
    return _directions(ctx, iso - w0, prior, hyper.gamma)


def _directions(ctx: Context, deltas, prior: T.Prior, gamma: float) -> T.Prior:
    fitted = np.bincount(ctx.fit.ann, minlength=ctx.data.n_ann) > 0
    return T.prior_with_directions(prior, deltas[fitted], gamma=gamma)


def score(v: View, heads: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", v.f, heads[v.r.ann])


# --- newcomers (k-shot) ------------------------------------------------------------


@dataclass
class Newcomer:
    ann: int
    support: T.Ratings  # the first max(k) ratings of a seeded permutation
    query: T.Ratings  # the rest: the same query set for every k


def newcomers(r: T.Ratings, *, ks: list[int], seed: int) -> list[Newcomer]:
    kmax = max(ks) if ks else 0
    rng = np.random.default_rng(seed + 7)
    out = []
    for a, idx in T._by_annotator(r.ann):
        if idx.size < kmax + 3:
            continue
        idx = idx[rng.permutation(idx.size)]
        out.append(Newcomer(a, r.take(idx[:kmax]), r.take(idx[kmax:])))
    return out


def adapt_head(
    ctx: Context,
    w0: np.ndarray,
    sup: T.Ratings,
    *,
    tau: float,
    prior: T.Prior,
    toward_pop: bool,
    kscale: float,
) -> tuple[np.ndarray, float, float]:
    """A newcomer's head from their support ratings: (head, mean, std)."""
    if len(sup) == 0:
        return (w0 if toward_pop else np.zeros_like(w0)), math.nan, ctx.global_std
    m, s = T.norm_stats(sup, ctx.data.n_ann, fallback_std=ctx.global_std)
    v = ctx.view(sup, mean=m, std=s)
    f = v.f if toward_pop else _content_only(v.f)
    base = w0 if toward_pop else np.zeros_like(w0)
    uk = T.user_kernel(f, v.y - f @ base, prior)
    a = int(sup.ann[0])
    return base + T.user_delta(uk, tau * kscale, prior), float(m[a]), float(s[a])


# --- selection (validation only) -------------------------------------------------


GAMMA_GRID = (0.8,)


def selection_context(data: Data) -> Context:
    """Train ratings fitted, train + validation visible: nothing of test."""
    if "selection_ctx" not in data.heads_memo:
        fit = data.part(splits.TRAIN)
        visible = T.concat(
            fit, data.part(splits.VAL_SEEN), data.part(splits.VAL_UNSEEN)
        )
        data.heads_memo["selection_ctx"] = Context(data, fit, visible)
    return data.heads_memo["selection_ctx"]


def select(data: Data) -> tuple[T.Hyper, dict, T.Prior]:
    """Hyper-parameters from the validation splits. Reads train, val_seen and
    val_unseen only. Also returns the selected prior (taste directions from the
    train fit), which the deployed refit reuses."""
    val_seen = data.part(splits.VAL_SEEN)
    val_unseen = data.part(splits.VAL_UNSEEN)
    ctx = selection_context(data)
    pop_scores = _pop_grid(ctx, T.concat(val_seen, val_unseen), crowd=True)
    pop_lambda = _argmax(pop_scores)
    w0 = population_fit(ctx, pop_lambda, crowd=True)
    vs = ctx.view(val_seen)
    scores: dict[str, float] = {}
    best = _best_iso(ctx, w0, vs, scores)  # (acc, rho, tau, gamma, heads)
    rho, tau_iso = best[1], best[2]
    base = T.prior_diag(ctx.x.shape[1], rho)
    for gamma in GAMMA_GRID:
        prior = _directions(ctx, best[4] - w0, base, gamma)
        heads, _ = user_heads(
            ctx, w0, prior=prior, taus=list(T.TAU_GRID[1:]), toward_pop=True
        )
        for tau, h in zip(T.TAU_GRID[1:], heads, strict=True):
            acc = T.mean_pairwise(vs.r.ann, vs.y, score(vs, h))
            scores[f"rho={rho:g},tau={tau:.3g},gamma={gamma:g}"] = acc
            if acc > best[0] + 1e-9:
                best = (acc, rho, tau, gamma, best[4])
    hyper = T.Hyper(
        pop_lambda=pop_lambda, tau=best[2], rho=rho, gamma=best[3], tau_iso=tau_iso
    )
    prior = model_prior(ctx, w0, hyper)
    hyper.tau_k, k_scores = _select_tau_k(ctx, w0, val_unseen, prior=prior)
    return (
        hyper,
        prior,
        {
            "population_lambda": {f"{k:.3g}": v for k, v in pop_scores.items()},
            "user": scores,
            "newcomer": k_scores,
            "val_seen_pairwise_accuracy": best[0],
            "val_seen_annotators": int(np.unique(val_seen.ann).size),
            "val_unseen_annotators": int(np.unique(val_unseen.ann).size),
        },
    )


def _best_iso(ctx, w0, vs: View, scores: dict) -> tuple:
    """Best (accuracy, ρ, τ, γ=0, heads at that τ) with the isotropic prior."""
    best = (-1.0, 0.0, 0.0, 0.0, np.tile(w0, (ctx.data.n_ann, 1)))
    for rho in T.RHO_GRID:
        prior = T.prior_diag(ctx.x.shape[1], rho)
        heads, _ = user_heads(
            ctx, w0, prior=prior, taus=list(T.TAU_GRID), toward_pop=True
        )
        for tau, h in zip(T.TAU_GRID, heads, strict=True):
            acc = T.mean_pairwise(vs.r.ann, vs.y, score(vs, h))
            scores[f"rho={rho:g},tau={tau:.3g}"] = acc
            if acc > best[0] + 1e-9:
                best = (acc, rho, tau, 0.0, h)
    return best


def _argmax(scores: dict) -> float:
    clean = {k: (v if v == v else -1.0) for k, v in scores.items()}
    return max(clean, key=lambda k: (clean[k], k))


def _pop_grid(ctx: Context, val: T.Ratings, *, crowd: bool) -> dict[float, float]:
    v = ctx.view(val)
    fq = v.f if crowd else _content_only(v.f)
    ws = ctx.pop_path(T.POP_GRID, crowd=crowd)
    return {
        g: T.mean_pairwise(v.r.ann, v.y, fq @ w)
        for g, w in zip(T.POP_GRID, ws, strict=True)
    }


def _select_tau_k(ctx, w0, val_unseen, *, prior: T.Prior) -> tuple[dict, dict]:
    people = newcomers(val_unseen, ks=ctx.data.ks, seed=ctx.data.seed)
    kscale = T.kernel_scale(ctx.fit_view().f, prior)
    tau_k, report = {}, {}
    for k in ctx.data.ks:
        if k == 0 or not people:
            tau_k[k] = 0.0
            continue
        accs = {}
        for tau in T.TAU_GRID:
            accs[tau] = _newcomer_accuracy(ctx, w0, people, k, tau, prior, kscale)
        tau_k[k] = _argmax(accs)
        report[f"k={k}"] = {f"{t:.3g}": a for t, a in accs.items()}
    return tau_k, report


def _newcomer_accuracy(ctx, w0, people, k, tau, prior, kscale) -> float:
    accs = []
    for p in people:
        sup = p.support.take(np.arange(k))
        head, m, s = adapt_head(
            ctx, w0, sup, tau=tau, prior=prior, toward_pop=True, kscale=kscale
        )
        v = ctx.view(p.query, mean=_const(ctx, m), std=_const(ctx, s))
        acc = T.mean_pairwise(v.r.ann, v.y, v.f @ head)
        if acc == acc:
            accs.append(acc)
    return float(np.mean(accs)) if accs else math.nan


def _const(ctx: Context, value: float) -> np.ndarray:
    return np.full(ctx.data.n_ann, 0.0 if value != value else value)


# --- report (test) -----------------------------------------------------------------


@dataclass
class Tuned:
    """Baselines' own hyper-parameters, chosen on validation like the model's."""

    pop_lambda: float  # content-only population ridge
    ridge_tau: float  # per-annotator ridge (τ = prior variance, relative)


def tune_baselines(data: Data) -> Tuned:
    val_seen = data.part(splits.VAL_SEEN)
    val_unseen = data.part(splits.VAL_UNSEEN)
    ctx = selection_context(data)
    pop_lambda = _argmax(_pop_grid(ctx, T.concat(val_seen, val_unseen), crowd=False))
    zero = np.zeros(ctx.x.shape[1] + 2)
    taus = [t for t in T.TAU_GRID if t > 0]
    ridge = T.prior_diag(ctx.x.shape[1], 0.0)
    heads, _ = user_heads(ctx, zero, prior=ridge, taus=taus, toward_pop=False)
    vs = ctx.view(val_seen)
    accs = {
        t: T.mean_pairwise(vs.r.ann, vs.y, score(vs, h))
        for t, h in zip(taus, heads, strict=True)
    }
    return Tuned(pop_lambda=pop_lambda, ridge_tau=_argmax(accs))


def report(
    data: Data, hyper: T.Hyper, tuned: Tuned
) -> tuple[dict, list[dict], list[HeldOut]]:
    """Test metrics of the model fitted on train with ``hyper``, next to the
    baselines. Returns (summary, per-annotator rows, the model's held-out
    predictions per annotator: test_seen images, or for newcomers the query images
    at the largest k)."""
    fit = data.part(splits.TRAIN)
    ctx = Context(data, fit, data.ratings)
    w0 = population_fit(ctx, hyper.pop_lambda, crowd=True)
    pop = population_fit(ctx, tuned.pop_lambda, crowd=False)
    prior = model_prior(ctx, w0, hyper)
    (mine,), kscale = user_heads(
        ctx, w0, prior=prior, taus=[hyper.tau], toward_pop=True
    )
    ridge_prior = T.prior_diag(ctx.x.shape[1], 0.0)
    (ridge,), kscale_r = user_heads(
        ctx,
        np.zeros_like(w0),
        prior=ridge_prior,
        taus=[tuned.ridge_tau],
        toward_pop=False,
    )
    rows: list[dict] = []
    heldout: list[HeldOut] = []
    v = ctx.view(data.part(splits.TEST_SEEN))
    preds = {
        "model": score(v, mine),
        "population": _content_only(v.f) @ pop,
        "per_annotator_ridge": score(v, ridge),
        "loo_consensus": ctx.loo_mean(v.r),
    }
    rows += _rows(ctx, v, preds, split="seen", k=None, heldout=heldout)
    people = newcomers(data.part(splits.TEST_UNSEEN), ks=data.ks, seed=data.seed)
    for k in data.ks:
        rows += _newcomer_rows(
            ctx,
            people,
            k,
            w0=w0,
            pop=pop,
            hyper=hyper,
            tuned=tuned,
            priors=(prior, ridge_prior),
            kscales=(kscale, kscale_r),
            heldout=heldout if k == max(data.ks) else None,
        )
    return summarise(rows, data.ks), rows, heldout


def _newcomer_rows(
    ctx, people, k, *, w0, pop, hyper, tuned, priors, kscales, heldout=None
) -> list[dict]:
    rows = []
    for p in people:
        sup = p.support.take(np.arange(k))
        tau = hyper.tau_k.get(k, hyper.tau_for(k))
        head, m, s = adapt_head(
            ctx, w0, sup, tau=tau, prior=priors[0], toward_pop=True, kscale=kscales[0]
        )
        rhead, _, _ = adapt_head(
            ctx,
            np.zeros_like(w0),
            sup,
            tau=tuned.ridge_tau,
            prior=priors[1],
            toward_pop=False,
            kscale=kscales[1],
        )
        mean, std = _const(ctx, m), _const(ctx, s)
        v = ctx.view(p.query, mean=mean, std=std)
        preds = {
            "model": v.f @ head,
            "population": _content_only(v.f) @ pop,
            "per_annotator_ridge": _content_only(v.f) @ rhead,
            "loo_consensus": ctx.loo_mean(v.r),
        }
        rows += _rows(
            ctx, v, preds, split="unseen", k=k, mean=mean, std=std, heldout=heldout
        )
    return rows


@dataclass
class HeldOut:
    """The model's predictions for one annotator on their held-out images (the
    report fit's: it saw none of these ratings), on the annotator's scale."""

    annotator: int
    split: str
    k: int | None
    rows: np.ndarray  # embedding rows (study images)
    actual: np.ndarray
    predicted: np.ndarray


def _rows(
    ctx, v: View, preds: dict, *, split, k, mean=None, std=None, heldout=None
) -> list[dict]:
    """One row per annotator: metrics of the model and each baseline, and a 95%
    bootstrap interval of the model's MAE. Predictions are mapped back to the
    annotator's scale (for MAE; rankings do not change). With ``heldout`` (a
    list), the model's predictions are appended to it too."""
    mean = ctx.mean if mean is None else mean
    std = ctx.std if std is None else std
    out = []
    for a, idx in T._by_annotator(v.r.ann):
        if idx.size < 2:
            continue
        y = v.r.score[idx]
        back = {n: mean[a] + std[a] * p[idx] for n, p in preds.items()}
        seed = (ctx.data.seed, int(a), split == "unseen", k or 0)
        row = {
            "annotator": a,
            "split": split,
            "k": k,
            "n_test": int(idx.size),
            "model": all_metrics(y, back["model"]),
            "mae_ci95": mae_bootstrap(y, back["model"], seed=seed),
        }
        for name in BASELINES:
            row[name] = all_metrics(y, back[name])
        out.append(row)
        if heldout is not None:
            heldout.append(HeldOut(a, split, k, v.r.row[idx], y, back["model"]))
    return out


BOOTSTRAP_RESAMPLES = 1000
# Below this many images a bootstrap only replays the few errors there are: no
# interval rather than a misleading one.
BOOTSTRAP_MIN_IMAGES = 5


def mae_bootstrap(y, pred, *, seed, resamples: int = BOOTSTRAP_RESAMPLES):
    """95% percentile-bootstrap interval of the MAE, resampling the images (the
    absolute errors are skewed and n is small, where a normal interval would be
    too narrow on the high side). Seeded: the same run gives the same interval.
    None under ``BOOTSTRAP_MIN_IMAGES`` images."""
    err = np.abs(np.asarray(y, dtype=np.float64) - np.asarray(pred, dtype=np.float64))
    n = err.size
    if n < BOOTSTRAP_MIN_IMAGES:
        return None
    rng = np.random.default_rng([int(x) for x in seed])
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)  # bounded memory for annotators with many images
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = err[rng.integers(0, n, size=(stop - start, n))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


def _ci(values: list[float]) -> list[float] | None:
    vals = [v for v in values if v is not None and v == v]
    if len(vals) < 2:
        return None
    m, sd = float(np.mean(vals)), float(np.std(vals, ddof=1))
    half = 1.96 * sd / math.sqrt(len(vals))
    return [m - half, m + half]


def _summary(rows: list[dict]) -> dict:
    out: dict = {"n_annotators": len(rows)}
    for who in ("model", *BASELINES):
        out[who] = {m: mean_of(r[who][m] for r in rows) for m in METRICS}
        out[who]["pairwise_accuracy_ci95"] = _ci(
            [r[who]["pairwise_accuracy"] for r in rows]
        )
    return out


def summarise(rows: list[dict], ks: list[int]) -> dict:
    seen = [r for r in rows if r["split"] == "seen"]
    return {
        "seen": _summary(seen),
        "unseen": {
            f"k={k}": _summary(
                [r for r in rows if r["split"] == "unseen" and r["k"] == k]
            )
            for k in ks
        },
        "noise_ceiling": None,
    }
