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

import math
from dataclasses import dataclass

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
        self.feat = T.Features.build(data.emb, fit.row)
        self.x = self.feat.x(data.emb)
        self.mean, self.std = T.norm_stats(fit, data.n_ann)
        fitted = np.bincount(fit.ann, minlength=data.n_ann) > 0
        counts = np.bincount(fit.ann, minlength=data.n_ann)
        self.global_std = float(np.median(self.std[counts > 1])) if fitted.any() else 1
        vm, vs = T.norm_stats(visible, data.n_ann, fallback_std=self.global_std)
        self.vmean = np.where(fitted, self.mean, vm)
        self.vstd = np.where(fitted, self.std, vs)
        z = T.normalised(visible, self.vmean, self.vstd)
        self.crowd = T.Crowd.build(visible, z, data.emb.shape[0])
        # Own normalised rating per (annotator, row), to leave it out of the crowd.
        pairs = zip(visible.ann.tolist(), visible.row.tolist(), strict=True)
        self._own = dict(zip(pairs, z.tolist(), strict=True))

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
    v = ctx.view(ctx.fit)
    f = v.f if crowd else _content_only(v.f)
    scale = float(np.mean(np.sum(f[:, :-2] ** 2, axis=0)))
    return T.ridge_solve(f, v.y, lam_rel * scale)


def user_heads(
    ctx: Context, w0: np.ndarray, *, rho: float, taus: list[float], toward_pop: bool
) -> tuple[list[np.ndarray], float]:
    """Per τ: every fitted annotator's head, (n_ann, d+2). ``toward_pop`` False is
    the per-annotator ridge baseline: content only, shrunk toward zero."""
    v = ctx.view(ctx.fit)
    f = v.f if toward_pop else _content_only(v.f)
    base = w0 if toward_pop else np.zeros_like(w0)
    diag = T.prior_diag(ctx.x.shape[1], rho if toward_pop else 0.0)
    kscale = T.kernel_scale(f, diag)
    resid = v.y - f @ base
    out = [np.tile(base, (ctx.data.n_ann, 1)) for _ in taus]
    for a, idx in T._by_annotator(ctx.fit.ann):
        uk = T.user_kernel(f[idx], resid[idx], diag)
        for j, tau in enumerate(taus):
            out[j][a] = base + T.user_delta(uk, tau * kscale, diag)
    return out, kscale


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
    rho: float,
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
    diag = T.prior_diag(ctx.x.shape[1], rho if toward_pop else 0.0)
    uk = T.user_kernel(f, v.y - f @ base, diag)
    a = int(sup.ann[0])
    return base + T.user_delta(uk, tau * kscale, diag), float(m[a]), float(s[a])


# --- selection (validation only) -------------------------------------------------


def select(data: Data) -> tuple[T.Hyper, dict]:
    """Hyper-parameters from the validation splits. Reads train, val_seen and
    val_unseen only."""
    fit = data.part(splits.TRAIN)
    val_seen = data.part(splits.VAL_SEEN)
    val_unseen = data.part(splits.VAL_UNSEEN)
    ctx = Context(data, fit, T.concat(fit, val_seen, val_unseen))
    pop_scores = _pop_grid(ctx, T.concat(val_seen, val_unseen), crowd=True)
    pop_lambda = _argmax(pop_scores)
    w0 = population_fit(ctx, pop_lambda, crowd=True)
    vs = ctx.view(val_seen)
    best, user_scores = (0.0, 0.0, -1.0), {}
    for rho in T.RHO_GRID:
        heads, _ = user_heads(ctx, w0, rho=rho, taus=list(T.TAU_GRID), toward_pop=True)
        for tau, h in zip(T.TAU_GRID, heads, strict=True):
            acc = T.mean_pairwise(vs.r.ann, vs.y, score(vs, h))
            user_scores[f"rho={rho:g},tau={tau:.3g}"] = acc
            if acc > best[2] + 1e-9:
                best = (rho, tau, acc)
    rho, tau, _ = best
    tau_k, k_scores = _select_tau_k(ctx, w0, val_unseen, rho=rho)
    hyper = T.Hyper(pop_lambda=pop_lambda, tau=tau, rho=rho, tau_k=tau_k)
    return hyper, {
        "population_lambda": {f"{k:.3g}": v for k, v in pop_scores.items()},
        "user": user_scores,
        "newcomer": k_scores,
        "val_seen_pairwise_accuracy": best[2],
        "val_seen_annotators": int(np.unique(val_seen.ann).size),
        "val_unseen_annotators": int(np.unique(val_unseen.ann).size),
    }


def _argmax(scores: dict) -> float:
    clean = {k: (v if v == v else -1.0) for k, v in scores.items()}
    return max(clean, key=lambda k: (clean[k], k))


def _pop_grid(ctx: Context, val: T.Ratings, *, crowd: bool) -> dict[float, float]:
    v = ctx.view(val)
    f_fit = ctx.view(ctx.fit)
    f = f_fit.f if crowd else _content_only(f_fit.f)
    fq = v.f if crowd else _content_only(v.f)
    scale = float(np.mean(np.sum(f[:, :-2] ** 2, axis=0)))
    ws = T.ridge_path(f, f_fit.y, [g * scale for g in T.POP_GRID])
    return {
        g: T.mean_pairwise(v.r.ann, v.y, fq @ w)
        for g, w in zip(T.POP_GRID, ws, strict=True)
    }


def _select_tau_k(ctx, w0, val_unseen, *, rho) -> tuple[dict, dict]:
    people = newcomers(val_unseen, ks=ctx.data.ks, seed=ctx.data.seed)
    diag = T.prior_diag(ctx.x.shape[1], rho)
    kscale = T.kernel_scale(ctx.view(ctx.fit).f, diag)
    tau_k, report = {}, {}
    for k in ctx.data.ks:
        if k == 0 or not people:
            tau_k[k] = 0.0
            continue
        accs = {}
        for tau in T.TAU_GRID:
            accs[tau] = _newcomer_accuracy(ctx, w0, people, k, tau, rho, kscale)
        tau_k[k] = _argmax(accs)
        report[f"k={k}"] = {f"{t:.3g}": a for t, a in accs.items()}
    return tau_k, report


def _newcomer_accuracy(ctx, w0, people, k, tau, rho, kscale) -> float:
    accs = []
    for p in people:
        sup = p.support.take(np.arange(k))
        head, m, s = adapt_head(
            ctx, w0, sup, tau=tau, rho=rho, toward_pop=True, kscale=kscale
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
    fit = data.part(splits.TRAIN)
    val_seen = data.part(splits.VAL_SEEN)
    val_unseen = data.part(splits.VAL_UNSEEN)
    ctx = Context(data, fit, T.concat(fit, val_seen, val_unseen))
    pop_lambda = _argmax(_pop_grid(ctx, T.concat(val_seen, val_unseen), crowd=False))
    zero = np.zeros(ctx.x.shape[1] + 2)
    taus = [t for t in T.TAU_GRID if t > 0]
    heads, _ = user_heads(ctx, zero, rho=0.0, taus=taus, toward_pop=False)
    vs = ctx.view(val_seen)
    accs = {
        t: T.mean_pairwise(vs.r.ann, vs.y, score(vs, h))
        for t, h in zip(taus, heads, strict=True)
    }
    return Tuned(pop_lambda=pop_lambda, ridge_tau=_argmax(accs))


def report(data: Data, hyper: T.Hyper, tuned: Tuned) -> tuple[dict, list[dict]]:
    """Test metrics of the model fitted on train with ``hyper``, next to the
    baselines. Returns (summary, per-annotator rows)."""
    fit = data.part(splits.TRAIN)
    ctx = Context(data, fit, data.ratings)
    w0 = population_fit(ctx, hyper.pop_lambda, crowd=True)
    pop = population_fit(ctx, tuned.pop_lambda, crowd=False)
    (mine,), kscale = user_heads(
        ctx, w0, rho=hyper.rho, taus=[hyper.tau], toward_pop=True
    )
    (ridge,), kscale_r = user_heads(
        ctx, np.zeros_like(w0), rho=0.0, taus=[tuned.ridge_tau], toward_pop=False
    )
    rows: list[dict] = []
    v = ctx.view(data.part(splits.TEST_SEEN))
    preds = {
        "model": score(v, mine),
        "population": _content_only(v.f) @ pop,
        "per_annotator_ridge": score(v, ridge),
        "loo_consensus": ctx.loo_mean(v.r),
    }
    rows += _rows(ctx, v, preds, split="seen", k=None)
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
            kscales=(kscale, kscale_r),
        )
    return summarise(rows, data.ks), rows


def _newcomer_rows(ctx, people, k, *, w0, pop, hyper, tuned, kscales) -> list[dict]:
    rows = []
    for p in people:
        sup = p.support.take(np.arange(k))
        tau = hyper.tau_k.get(k, hyper.tau_for(k))
        head, m, s = adapt_head(
            ctx, w0, sup, tau=tau, rho=hyper.rho, toward_pop=True, kscale=kscales[0]
        )
        rhead, _, _ = adapt_head(
            ctx,
            np.zeros_like(w0),
            sup,
            tau=tuned.ridge_tau,
            rho=0.0,
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
        rows += _rows(ctx, v, preds, split="unseen", k=k, mean=mean, std=std)
    return rows


def _rows(ctx, v: View, preds: dict, *, split, k, mean=None, std=None) -> list[dict]:
    """One row per annotator: metrics of the model and each baseline. Predictions
    are mapped back to the annotator's scale (for MAE; rankings do not change)."""
    mean = ctx.mean if mean is None else mean
    std = ctx.std if std is None else std
    out = []
    for a, idx in T._by_annotator(v.r.ann):
        if idx.size < 2:
            continue
        y = v.r.score[idx]
        back = {n: mean[a] + std[a] * p[idx] for n, p in preds.items()}
        row = {
            "annotator": a,
            "split": split,
            "k": k,
            "n_test": int(idx.size),
            "model": all_metrics(y, back["model"]),
        }
        for name in BASELINES:
            row[name] = all_metrics(y, back[name])
        out.append(row)
    return out


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
