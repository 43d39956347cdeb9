"""PAMELA's protocol on the stored splits: what each phase sees, and the report.

numpy only. Three phases, each seeing only what it may:

* **selection** (``selection.select``): heads fitted on ``train``;
  hyper-parameters chosen on ``val_seen`` (known annotators, new images) and
  ``val_unseen`` (newcomers, k-shot). The crowd feature sees train + validation
  ratings. No test rating is read there.
* **report** (``report``, here): the selected model and the baselines, fitted
  on ``train`` with hyper-parameters chosen on validation, scored on
  ``test_seen`` and ``test_unseen``. The crowd may see everything (as it would
  when predicting).
* **deploy**: ``taste.fit_heads`` on every rating with the selected
  hyper-parameters (in ``training``).

Every prediction goes through ``taste.forward`` with the crowd feature of
``crowd.Crowd`` and its fill, as serving does (``inference``), so a test can pin
served = evaluated (tests/rewardmodel/test_served_equals_trained.py).

Baselines, each trained on its own and tuned on validation the same way:
population (pooled ridge on the embedding), per-annotator ridge (the annotator's
ratings alone, on the same embedding), leave-one-out consensus (the mean
normalised rating of the image by everyone else). Shape letters as in ``taste``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from annotation import splits

from . import posterior as P
from . import stacking as S
from . import taste as T
from .crowd import crowd_expected, crowd_fill_fit, similar_part
from .metrics import PairScorer, all_metrics, by_annotator, mae_bootstrap, mean_of

if TYPE_CHECKING:
    from .selection import Tuned

CODES = {name: i for i, name in enumerate(splits.SPLITS)}
BASELINES = ("population", "per_annotator_ridge", "loo_consensus")
METRICS = ("pairwise_accuracy", "spearman", "pearson", "mae")


@dataclass
class Data:
    emb: np.ndarray  # (rows, e)
    ratings: T.Ratings
    split: np.ndarray  # split code per rating (CODES)
    n_ann: int
    ks: list[int]
    seed: int
    blend_mode: str | None = None  # stacking.BLEND_MODES; None: its BLEND_MODE
    similar: bool | tuple = False  # crowd.Similar; (rank, λ): lowrank.py's prior
    # Heads fitted on the train split, by (prior, base, τ²), reused by the report.
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
    """Features (n, d) and normalised targets of some ratings, with the crowd
    of the visible ratings (own rating left out)."""

    f: np.ndarray
    y: np.ndarray  # normalised
    r: T.Ratings

    def forward(self, heads: np.ndarray, *, per_annotator: bool = True):
        """``taste.forward`` on these ratings: ``heads`` (A, d), one per
        annotator (row i with its annotator's head), or with ``per_annotator``
        False one head (d,) or C candidates (C, d) for every row."""
        ann = self.r.ann if per_annotator else None
        return T.forward(self.f[:, :-2], self.f[:, -2], heads, ann)


def _fit_state(fit: T.Ratings, mean, std, x: np.ndarray) -> tuple:
    """(view, crowd fill) of the fit ratings, both from the fit ratings alone
    (as ``fit_heads`` gives the deployed model): no held-out rating shapes a
    fitted head or the fill (the crowd expected where nobody else rated)."""
    zf = T.normalised(fit, mean, std)
    fit_crowd = T.Crowd.build(fit, zf, x.shape[0]).feature(fit.row, zf)
    view = View(T.Features.full_rows(x, fit.row, fit_crowd), zf, fit)
    return view, crowd_fill_fit(x, fit.row, fit_crowd, lambdas=T.POP_GRID)


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
        counts = np.bincount(fit.ann, minlength=data.n_ann)
        fitted = counts > 0
        self.global_std = T.global_std(self.std, counts)
        vm, vs = T.norm_stats(visible, data.n_ann, fallback_std=self.global_std)
        self.vmean = np.where(fitted, self.mean, vm)
        self.vstd = np.where(fitted, self.std, vs)
        z = T.normalised(visible, self.vmean, self.vstd)
        self.crowd = T.Crowd.build(visible, z, data.emb.shape[0])
        # Once per fit ratings: selection's and the report's contexts fit the
        # same train split, and one copy of its features (n × d) is enough.
        key = ("fit", len(fit), int(fit.row.sum()), int(fit.ann.sum()))
        key += (float(fit.score.sum()),)
        if key not in data.heads_memo:
            data.heads_memo[key] = _fit_state(fit, self.mean, self.std, self.x)
        self._fit_view, self.crowd_fill = data.heads_memo[key]

    def fill(self, rows: np.ndarray) -> np.ndarray:
        return crowd_expected(self.crowd_fill, self.x[rows])

    def fit_view(self) -> View:
        return self._fit_view

    def base(self, kind: str, lam_rel: float) -> np.ndarray:
        """A base head (``T.BASES``) on the fit ratings, ``lam_rel`` relative to the
        mean column energy. One Gram matrix serves every kind and λ, and the
        population baseline comes from here too (content kind), so the model's
        content base at the baseline's λ is the baseline itself, bit for bit."""
        memo = self.data.heads_memo
        if "gram" not in memo:
            memo["gram"] = T.gram_of(self._fit_view.f, self._fit_view.y)
        return T.base_head(*memo["gram"], kind, lam_rel)

    def view(self, r: T.Ratings, *, mean=None, std=None) -> View:
        crowd = self.crowd.of_ratings(r, fill=self.fill)
        f = T.Features.full_rows(self.x, r.row, crowd)
        mean = self.mean if mean is None else mean
        std = self.std if std is None else std
        return View(f, T.normalised(r, mean, std), r)

    def loo_mean(self, r: T.Ratings) -> np.ndarray:
        """The plain leave-one-out consensus (mean of the others; 0 if none)."""
        return self.crowd.others_mean(r)

    def eig_cache(self, prior: P.Prior, *, content_only: bool = False) -> dict:
        """Eigendecompositions of the fit ratings' kernels under ``prior``, kept
        between calls: every context fits the train split. Without the crowd
        column the kernel only changes where the prior weighs it (ρ > 0)."""
        key = (P.prior_key(prior), content_only and bool(prior.diag[-2]))
        return self.data.heads_memo.setdefault("eig", {}).setdefault(key, {})


# --- heads on a context ------------------------------------------------------------


def _content_only(f: np.ndarray, prior: P.Prior, bases) -> np.ndarray:
    """``f`` with the crowd column zeroed; no copy where the prior and every
    base weigh it 0 (then it enters nothing: 0 · c = 0, bit for bit)."""
    lowrank = prior.lowrank is not None and prior.lowrank[-2].any()
    if not (prior.diag[-2] or lowrank or any(np.asarray(b)[-2] for b in bases)):
        return f
    g = f.copy()
    g[:, -2] = 0.0  # the crowd column
    return g


def heads_on(
    ctx: Context,
    bases: list[np.ndarray],
    *,
    prior: P.Prior,
    tau2_rel: list[float],
    content_only: bool = False,
) -> tuple[np.ndarray, float]:
    """Heads of every fitted annotator for each (base, τ²): (B, T, A, d), and
    the kernel scale. ``content_only`` leaves the crowd column out of the
    features (the per-annotator ridge baseline)."""
    v = ctx.fit_view()
    f = _content_only(v.f, prior, bases) if content_only else v.f
    cache = ctx.eig_cache(prior, content_only=content_only)
    return P.heads_grid(
        f, v.y, ctx.fit.ann, ctx.data.n_ann, prior, bases, tau2_rel, cache
    )


def ridge_on(ctx: Context, tau2_rel: float) -> tuple[np.ndarray, float]:
    """The per-annotator ridge baseline's heads (A, d) on the fit ratings:
    zero base, ρ = 0, content only (``taste.ridge_heads``' form)."""
    v = ctx.fit_view()
    prior = P.prior_diag(ctx.x.shape[1], 0.0)
    cache = ctx.eig_cache(prior, content_only=True)
    return T.ridge_heads(v.f, v.y, ctx.fit.ann, ctx.data.n_ann, tau2_rel, cache)


def model_prior(
    ctx: Context, w0: np.ndarray, *, rho: float, gamma: float, tau2_rel_iso: float
) -> P.Prior:
    """``posterior.prior_for`` on the context's fit ratings (decompositions of
    the isotropic pass shared with the grid search)."""
    v = ctx.fit_view()
    iso = P.prior_diag(ctx.x.shape[1], rho)
    return P.prior_for(
        v.f,
        v.y,
        ctx.fit.ann,
        ctx.data.n_ann,
        w0=w0,
        rho=rho,
        gamma=gamma,
        tau2_rel_iso=tau2_rel_iso,
        eig_cache=ctx.eig_cache(iso),
    )


def scorer(ctx: Context, name: str, r: T.Ratings) -> tuple[View, PairScorer]:
    """The view of validation ratings ``r`` and their pair scorer (memoised by
    ``name``: selection and baseline tuning score the same ratings)."""
    memo = ctx.data.heads_memo
    if ("scorer", name) not in memo:
        v = ctx.view(r)
        memo[("scorer", name)] = (v, PairScorer(v.r.ann, v.y))
    return memo[("scorer", name)]


def grid_accuracies(v: View, sc: PairScorer, grid: np.ndarray) -> np.ndarray:
    """Per-annotator accuracy of every head set in ``grid`` (C, A, d) on the
    ratings of ``v``: (annotators, C)."""

    def pred(a, idx):
        return T.forward(v.f[idx, :-2], v.f[idx, -2], grid[:, a, :])

    return sc.accuracies(pred, grid.shape[0])


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
    for a, idx in by_annotator(r.ann):
        if idx.size < kmax + 3:
            continue
        idx = idx[rng.permutation(idx.size)]
        out.append(Newcomer(a, r.take(idx[:kmax]), r.take(idx[kmax:])))
    return out


def adapt_head(
    ctx: Context,
    base: np.ndarray,
    sup: T.Ratings,
    *,
    tau2_rel: float,
    prior: P.Prior,
    content_only: bool,
    kscale: float,
) -> tuple[np.ndarray, float, float]:
    """A newcomer's head from their support ratings: (head, mean, std), the
    posterior mean around ``base``."""
    f = ctx.view(sup).f
    return T.adapted_head(
        _content_only(f, prior, [base]) if content_only else f,
        sup.score,
        base=base,
        prior=prior,
        tau2=tau2_rel * kscale,
        fallback_std=ctx.global_std,
    )


def const(ctx: Context, value: float) -> np.ndarray:
    return np.full(ctx.data.n_ann, 0.0 if value != value else value)


# --- report (test) -----------------------------------------------------------------


def report(
    data: Data, hyper: T.Hyper, tuned: Tuned, prior: P.Prior | None = None
) -> tuple[dict, list[dict], list[HeldOut]]:
    """Test metrics of the model fitted on train with ``hyper`` (and ``prior``,
    the one selection estimated on the same train fit; else estimated here), next
    to the baselines. Returns (summary, per-annotator rows, the model's held-out
    predictions: test_seen images, or newcomers' query images at the largest k)."""
    ctx = Context(data, data.part(splits.TRAIN), data.ratings)
    m = report_heads(ctx, hyper, tuned, prior)
    v = ctx.view(data.part(splits.TEST_SEEN))
    heldout: list[HeldOut] = []
    preds = seen_predictions(ctx, hyper, m, v)
    rows = _rows(ctx, v, preds, split="seen", k=None, heldout=heldout)
    people = newcomers(data.part(splits.TEST_UNSEEN), ks=data.ks, seed=data.seed)
    ridge_prior = P.prior_diag(ctx.x.shape[1], 0.0)
    for k in data.ks:
        rows += _newcomer_rows(
            ctx,
            people,
            k,
            heads=(m["w_new"], m["population"], np.zeros_like(m["w_new"])),
            tau2_rel=(hyper.newcomer_tau2_rel, tuned.ridge_tau2_rel),
            priors=(m["prior"], ridge_prior),
            kscales=(m["kscale"], m["kscale_ridge"]),
            heldout=heldout if k == max(data.ks) else None,
        )
    return summarise(rows, data.ks), rows, heldout


def report_heads(ctx: Context, hyper: T.Hyper, tuned: Tuned, prior=None) -> dict:
    """The report's heads on ``ctx`` (train): the model (the members' blend
    where selection blended), the population and ridge baselines, the newcomer
    base, the prior and both kernel scales."""
    w0 = ctx.base(hyper.base, hyper.pop_lambda)
    prior = prior or model_prior(
        ctx, w0, rho=hyper.rho, gamma=hyper.gamma, tau2_rel_iso=hyper.iso_tau2_rel
    )
    mine, kscale = heads_on(ctx, [w0], prior=prior, tau2_rel=[hyper.tau2_rel])
    # Same call shape as the model's heads: a model that selection left at the
    # ridge member (zero base, ρ = 0, the ridge's τ²) predicts exactly as it.
    ridge, kscale_r = ridge_on(ctx, tuned.ridge_tau2_rel)
    model = mine[0, 0]
    if hyper.blend is not None:  # the deployed form: the members' blend
        model = S.blend_heads(
            S.weights_of(hyper),
            model,
            ctx.base("content", hyper.blend_pop_lambda),
            ridge,
            ctx.base("crowd_only", hyper.blend_crowd_lambda),
        )
    return {
        "model": model,
        "population": ctx.base("content", tuned.pop_lambda),
        "ridge": ridge,
        "w_new": ctx.base(hyper.new_base, hyper.newcomer_lambda),
        "prior": prior,
        "kscale": kscale,
        "kscale_ridge": kscale_r,
    }


def seen_predictions(ctx: Context, hyper: T.Hyper, m: dict, v: View) -> dict:
    """The model's and the baselines' predictions of the ratings of ``v``
    (fitted annotators; ``report_heads``' heads ``m``). Any (annotator, image)
    pairs will do, rated or not (benchmarks/expected_gap.py scores every one)."""
    return {
        "model": v.forward(m["model"]) + similar_part(hyper, ctx, v.r),
        "population": v.forward(m["population"], per_annotator=False),
        "per_annotator_ridge": v.forward(m["ridge"]),
        "loo_consensus": ctx.loo_mean(v.r),
    }


def _newcomer_rows(
    ctx, people, k, *, heads, tau2_rel, priors, kscales, heldout=None
) -> list[dict]:
    """Newcomers adapted from their first k ratings: the model around its
    newcomer base, the ridge around zero (content only)."""
    w_new, pop, zero = heads
    rows = []
    for p in people:
        sup = p.support.take(np.arange(k))
        head, m, s = adapt_head(
            ctx,
            w_new,
            sup,
            tau2_rel=tau2_rel[0],
            prior=priors[0],
            content_only=False,
            kscale=kscales[0],
        )
        rhead, _, _ = adapt_head(
            ctx,
            zero,
            sup,
            tau2_rel=tau2_rel[1],
            prior=priors[1],
            content_only=True,
            kscale=kscales[1],
        )
        rhead = rhead.copy()
        rhead[-2] = 0.0  # the ridge sees content only
        mean, std = const(ctx, m), const(ctx, s)
        v = ctx.view(p.query, mean=mean, std=std)
        preds = {
            "model": v.forward(head, per_annotator=False),
            "population": v.forward(pop, per_annotator=False),  # crowd weight 0
            "per_annotator_ridge": v.forward(rhead, per_annotator=False),
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
    for a, idx in by_annotator(v.r.ann):
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
