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
from dataclasses import dataclass, field

import numpy as np

from annotation import splits

from . import stacking as S
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


def heads_on(
    ctx: Context,
    bases: list[np.ndarray],
    *,
    prior: T.Prior,
    taus: list[float],
    content_only: bool = False,
) -> tuple[np.ndarray, float]:
    """Heads of every fitted annotator for each (base, τ): (B, T, n_ann, d), and
    the kernel scale. ``content_only`` leaves the crowd column out of the features
    (the per-annotator ridge baseline)."""
    v = ctx.fit_view()
    f = _content_only(v.f) if content_only else v.f
    # Every context fits the train split, so decompositions carry over between
    # calls with the same prior; without the crowd column the kernel only changes
    # where the prior weighs that column (ρ > 0).
    key = (T.prior_key(prior), content_only and bool(prior.diag[-2]))
    cache = ctx.data.heads_memo.setdefault("eig", {}).setdefault(key, {})
    return T.heads_grid(
        f, v.y, ctx.fit.ann, ctx.data.n_ann, prior, bases, taus, eig_cache=cache
    )


def scorer(ctx: Context, name: str, r: T.Ratings) -> tuple[View, T.PairScorer]:
    """The view of validation ratings ``r`` and their pair scorer (memoised by
    ``name``: selection and baseline tuning score the same ratings)."""
    memo = ctx.data.heads_memo
    if ("scorer", name) not in memo:
        v = ctx.view(r)
        memo[("scorer", name)] = (v, T.PairScorer(v.r.ann, v.y))
    return memo[("scorer", name)]


def grid_accuracies(v: View, sc: T.PairScorer, grid: np.ndarray) -> np.ndarray:
    """Per-annotator accuracy of every head set in ``grid`` (C, n_ann, d) on the
    ratings of ``v``: (annotators, C)."""
    return sc.accuracies(lambda a, idx: v.f[idx] @ grid[:, a, :].T, grid.shape[0])


def _mean(values) -> float:
    vals = np.asarray(list(values), np.float64)
    return float(vals.mean()) if vals.size else math.nan


def model_prior(ctx: Context, w0: np.ndarray, hyper: T.Hyper) -> T.Prior:
    """The prior ``hyper`` describes, its taste directions estimated from the
    isotropic heads (around ``w0``) of the annotators in the fit ratings."""
    prior = T.prior_diag(ctx.x.shape[1], hyper.rho)
    if hyper.gamma <= 0:
        return prior
    tau_iso = hyper.tau if hyper.tau_iso is None else hyper.tau_iso
    iso, _ = heads_on(ctx, [w0], prior=prior, taus=[tau_iso])
    return _directions(ctx, iso[0, 0] - w0, prior, hyper.gamma)


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
    base: np.ndarray,
    sup: T.Ratings,
    *,
    tau: float,
    prior: T.Prior,
    content_only: bool,
    kscale: float,
) -> tuple[np.ndarray, float, float]:
    """A newcomer's head from their support ratings: (head, mean, std), the
    posterior mean around ``base``."""
    if len(sup) == 0:
        return base, math.nan, ctx.global_std
    m, s = T.norm_stats(sup, ctx.data.n_ann, fallback_std=ctx.global_std)
    v = ctx.view(sup, mean=m, std=s)
    f = _content_only(v.f) if content_only else v.f
    uk = T.user_kernel(f, v.y - f @ base, prior)
    a = int(sup.ann[0])
    return base + T.user_delta(uk, tau * kscale, prior), float(m[a]), float(s[a])


# --- selection (validation only) -------------------------------------------------


GAMMA_GRID = (0.8,)
# Newcomers adapt (and take a base other than the population's) only where that
# beats the simpler choice by this many standard errors of the paired
# per-annotator difference, out of fold: a grid maximum is optimistic on the
# data that chose it. (Fitted annotators are not chosen this way any more: their
# head is a blend of the members, ``stacking``.)
PREFER_BASELINE_Z = 2.0


@dataclass(frozen=True)
class Config:
    """One member of the model family (see ``taste``)."""

    base: str
    rho: float
    tau: float
    gamma: float = 0.0
    tau_iso: float | None = None

    @property
    def label(self) -> str:
        return (
            f"base={self.base},rho={self.rho:g},tau={self.tau:.3g},gamma={self.gamma:g}"
        )


def selection_context(data: Data) -> Context:
    """Train ratings fitted, train + validation visible: nothing of test."""
    if "selection_ctx" not in data.heads_memo:
        fit = data.part(splits.TRAIN)
        visible = T.concat(
            fit, data.part(splits.VAL_SEEN), data.part(splits.VAL_UNSEEN)
        )
        data.heads_memo["selection_ctx"] = Context(data, fit, visible)
    return data.heads_memo["selection_ctx"]


def select(data: Data) -> tuple[T.Hyper, T.Prior, dict]:
    """Hyper-parameters from the validation splits. Reads train, val_seen and
    val_unseen only. Also returns the selected prior (taste directions from the
    train fit), which the deployed refit reuses.

    The grid covers every base × ρ × τ (then γ around the best isotropic fit);
    the population baseline (content base, τ = 0), the leave-one-out consensus
    (crowd-only base, τ = 0) and the per-annotator ridge (zero base, ρ = 0, the
    ridge's τ) are members of it. The best configuration is then blended with
    the three baseline members, weights chosen out of fold on val_seen
    (``stacking.blend_out_of_fold``)."""
    val_seen = data.part(splits.VAL_SEEN)
    val_unseen = data.part(splits.VAL_UNSEEN)
    ctx = selection_context(data)
    tuned = tune_baselines(data)
    crowd_scores = _pop_grid(ctx, T.concat(val_seen, val_unseen), kind="crowd")
    lam = _argmax(crowd_scores)
    lams = {"content": tuned.pop_lambda, "crowd": lam, "crowd_only": lam, "zero": lam}
    bases = {b: ctx.base(b, lams[b]) for b in T.BASES}
    new_base, new_scores = _newcomer_base(ctx, T.concat(val_seen, val_unseen), bases)
    search = _Search(ctx, val_seen, bases, seed=data.seed)
    members = {
        "population": Config("content", 0.0, 0.0),
        "loo_consensus": Config("crowd_only", 0.0, 0.0),
        "per_annotator_ridge": Config("zero", 0.0, tuned.ridge_tau),
    }
    for rho in T.RHO_GRID:
        search.run(T.prior_diag(ctx.x.shape[1], rho), rho, T.TAU_GRID)
    best_iso = search.best
    if best_iso is not None and best_iso.tau > 0:
        iso_prior = T.prior_diag(ctx.x.shape[1], best_iso.rho)
        deltas = search.best_heads - bases[best_iso.base]
        for gamma in GAMMA_GRID:
            prior = _directions(ctx, deltas, iso_prior, gamma)
            search.run(
                prior,
                best_iso.rho,
                T.TAU_GRID[1:],
                gamma=gamma,
                only=best_iso.base,
                tau_iso=best_iso.tau,
            )
    chosen = search.best or members["population"]
    ridge = heads_on(
        ctx,
        [np.zeros(ctx.x.shape[1] + 2)],
        prior=T.prior_diag(ctx.x.shape[1], 0.0),
        taus=[tuned.ridge_tau],
        content_only=True,
    )[0][0, 0]
    pop, consensus = ctx.base("content", tuned.pop_lambda), bases["crowd_only"]
    weights, blend_info = S.blend_out_of_fold(
        search, pop=pop, ridge=ridge, consensus=consensus
    )
    # Newcomers adapt only if the personal part earns its place on val_seen
    # (selected τ against τ = 0 on the same base, out of fold).
    personal = search.personal_part() if chosen.tau > 0 else {"win": False}
    hyper = T.Hyper(
        pop_lambda=lams[chosen.base],
        tau=chosen.tau,
        rho=chosen.rho,
        gamma=chosen.gamma,
        tau_iso=chosen.tau_iso,
        base=chosen.base,
        new_base=new_base,
        new_lambda=lams[new_base],
        new_tau=chosen.tau if personal["win"] else 0.0,
        blend=weights,
        ridge_tau=tuned.ridge_tau,
        blend_pop_lambda=tuned.pop_lambda,
        blend_crowd_lambda=lams["crowd_only"],
    )
    prior = search.priors[chosen]
    return (
        hyper,
        prior,
        {
            "population_lambda": {f"{k:.3g}": v for k, v in crowd_scores.items()},
            "user": search.scores,
            "blend": blend_info,
            "personal_part": personal,
            "newcomer_base": new_scores,
            "newcomer": _newcomer_check(ctx, val_unseen, hyper, prior, bases),
            "val_seen_pairwise_accuracy": search.scores[chosen.label],
            "val_seen_annotators": int(np.unique(val_seen.ann).size),
            "val_unseen_annotators": int(np.unique(val_unseen.ann).size),
        },
    )


class _Search:
    """Scores configurations on val_seen (per annotator, so that any two can be
    compared pairwise) and keeps the best one's heads."""

    def __init__(self, ctx: Context, val_seen: T.Ratings, bases: dict, *, seed: int):
        self.ctx, self.bases = ctx, bases
        self.vs, self.sc = scorer(ctx, "val_seen", val_seen)
        # Two folds of val_seen annotators (seeded) for honest gain estimates.
        n = len(self.sc.groups)
        self.fold = np.zeros(n, bool)
        self.fold[np.random.default_rng(seed + 11).permutation(n)[: n // 2]] = True
        self.scores: dict[str, float] = {}
        self.acc: dict[Config, np.ndarray] = {}
        self.priors: dict[Config, T.Prior] = {}
        self.best: Config | None = None
        self.best_heads: np.ndarray | None = None
        self._best_acc = -1.0

    def run(self, prior, rho, taus, *, gamma=0.0, only=None, tau_iso=None) -> None:
        names = [only] if only else list(T.BASES)
        grid, _ = heads_on(
            self.ctx, [self.bases[b] for b in names], prior=prior, taus=list(taus)
        )
        flat = grid.reshape(len(names) * len(taus), *grid.shape[2:])
        accs = grid_accuracies(self.vs, self.sc, flat)
        for c in range(flat.shape[0]):
            b, tau = names[c // len(taus)], taus[c % len(taus)]
            cfg = Config(b, rho, tau, gamma, tau_iso if gamma else None)
            self.acc[cfg] = accs[:, c]
            self.priors[cfg] = prior
            mean = self.scores[cfg.label] = _mean(accs[:, c])
            if mean == mean and mean > self._best_acc + 1e-12:
                self._best_acc, self.best = mean, cfg
                self.best_heads = flat[c].copy()

    def heads_of(self, cfg: Config) -> np.ndarray:
        """Every fitted annotator's head under ``cfg`` (n_ann, d)."""
        grid, _ = heads_on(
            self.ctx, [self.bases[cfg.base]], prior=self.priors[cfg], taus=[cfg.tau]
        )
        return grid[0, 0]

    def _pick(self, mask: np.ndarray, among=None) -> Config:
        """The configuration (of ``among``, default all) with the best mean
        accuracy over the annotators in ``mask``."""
        among = list(self.acc) if among is None else among
        best, best_mean = among[0], -math.inf
        for c in among:  # first of equals wins (τ = 0 repeats across ρ)
            m = _mean(self.acc[c][mask]) if c in self.acc else math.nan
            if m == m and m > best_mean:
                best, best_mean = c, m
        return best

    def crossfit(self, against) -> dict:
        """The gain of *selecting* on val_seen, estimated honestly: on each fold
        the best configuration is chosen on the other fold and compared, on this
        fold's annotators, with ``against(chosen, other fold)``. A grid maximum
        scored on the data that chose it is optimistic (by about two standard
        errors on these grids); this is not. Win: mean over every annotator above
        ``PREFER_BASELINE_Z`` standard errors."""
        diffs = []
        for held in (self.fold, ~self.fold):
            if not held.any() or held.all():
                continue
            chosen = self._pick(~held)
            other = against(chosen, ~held)
            diffs.append(self.acc[chosen][held] - self.acc[other][held])
        d = np.concatenate(diffs) if diffs else np.zeros(0)
        if d.size < 2:
            return {"win": False}
        gain = float(d.mean())
        se = float(np.std(d, ddof=1) / math.sqrt(d.size))
        return {"gain": gain, "se": se, "win": gain > PREFER_BASELINE_Z * se}

    def personal_part(self) -> dict:
        """Whether the personal heads earn their place: selecting against the
        same base with τ = 0, out of fold (``crossfit``)."""
        return self.crossfit(lambda c, m: Config(c.base, 0.0, 0.0))


def _newcomer_base(ctx: Context, val: T.Ratings, bases: dict) -> tuple[str, dict]:
    """Newcomers' base head, i.e. their prediction at k = 0: a population kind
    (content, crowd, crowd only), scored on every validation annotator. The
    content base is the population baseline itself and is kept unless another
    beats it by ``PREFER_BASELINE_Z`` paired standard errors."""
    v, sc = scorer(ctx, "validation", val)
    kinds = ("content", "crowd", "crowd_only")
    acc = sc.of_matrix(v.f @ np.stack([bases[b] for b in kinds], 1))
    means = {b: _mean(acc[:, i]) for i, b in enumerate(kinds)}
    rival = _argmax({b: means[b] for b in kinds[1:]})
    d = acc[:, kinds.index(rival)] - acc[:, 0]
    se = float(np.std(d, ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.inf
    win = d.size > 1 and float(d.mean()) > PREFER_BASELINE_Z * se
    return (rival if win else "content"), {**means, "se_vs_content": se}


def _newcomer_check(ctx, val_unseen, hyper, prior, bases) -> dict:
    """val_unseen accuracy of the selected newcomer heads per k (a diagnostic:
    nothing is chosen from it)."""
    people = newcomers(val_unseen, ks=ctx.data.ks, seed=ctx.data.seed)
    kscale = T.kernel_scale(ctx.fit_view().f, prior)
    out = {}
    for k in ctx.data.ks:
        accs = []
        for p in people:
            head, m, s = adapt_head(
                ctx,
                bases[hyper.new_base],
                p.support.take(np.arange(k)),
                tau=hyper.newcomer_tau,
                prior=prior,
                content_only=False,
                kscale=kscale,
            )
            v = ctx.view(p.query, mean=_const(ctx, m), std=_const(ctx, s))
            acc = T.mean_pairwise(v.r.ann, v.y, v.f @ head)
            if acc == acc:
                accs.append(acc)
        out[f"k={k}"] = float(np.mean(accs)) if accs else math.nan
    return out


def _argmax(scores: dict):
    clean = {k: (v if v == v else -1.0) for k, v in scores.items()}
    return max(clean, key=lambda k: (clean[k], k))


def _pop_grid(ctx: Context, val: T.Ratings, *, kind: str) -> dict[float, float]:
    v, sc = scorer(ctx, "validation", val)
    heads = np.stack([ctx.base(kind, g) for g in T.POP_GRID], 1)
    acc = sc.of_matrix(v.f @ heads)
    return {g: _mean(acc[:, i]) for i, g in enumerate(T.POP_GRID)}


def _const(ctx: Context, value: float) -> np.ndarray:
    return np.full(ctx.data.n_ann, 0.0 if value != value else value)


# --- report (test) -----------------------------------------------------------------


@dataclass
class Tuned:
    """Baselines' own hyper-parameters, chosen on validation like the model's."""

    pop_lambda: float  # content-only population ridge
    ridge_tau: float  # per-annotator ridge (τ = prior variance, relative)


def tune_baselines(data: Data) -> Tuned:
    """The baselines' hyper-parameters, each on validation, independently of the
    model (memoised: selection and the report ask for the same)."""
    if "tuned" in data.heads_memo:
        return data.heads_memo["tuned"]
    val_seen = data.part(splits.VAL_SEEN)
    val_unseen = data.part(splits.VAL_UNSEEN)
    ctx = selection_context(data)
    pop_lambda = _argmax(_pop_grid(ctx, T.concat(val_seen, val_unseen), kind="content"))
    zero = np.zeros(ctx.x.shape[1] + 2)
    taus = [t for t in T.TAU_GRID if t > 0]
    ridge = T.prior_diag(ctx.x.shape[1], 0.0)
    heads, _ = heads_on(ctx, [zero], prior=ridge, taus=taus, content_only=True)
    vs, sc = scorer(ctx, "val_seen", val_seen)
    acc = grid_accuracies(vs, sc, heads[0])
    accs = {t: _mean(acc[:, j]) for j, t in enumerate(taus)}
    tuned = Tuned(pop_lambda=pop_lambda, ridge_tau=_argmax(accs))
    data.heads_memo["tuned"] = tuned
    return tuned


def report(
    data: Data, hyper: T.Hyper, tuned: Tuned, prior: T.Prior | None = None
) -> tuple[dict, list[dict], list[HeldOut]]:
    """Test metrics of the model fitted on train with ``hyper`` (and ``prior``,
    the one selection estimated on the same train fit; else estimated here), next
    to the baselines. Returns (summary, per-annotator rows, the model's held-out
    predictions per annotator: test_seen images, or for newcomers the query images
    at the largest k)."""
    fit = data.part(splits.TRAIN)
    ctx = Context(data, fit, data.ratings)
    w0 = ctx.base(hyper.base, hyper.pop_lambda)
    w_new = ctx.base(hyper.new_base, hyper.newcomer_lambda)
    pop = ctx.base("content", tuned.pop_lambda)
    prior = prior or model_prior(ctx, w0, hyper)
    mine, kscale = heads_on(ctx, [w0], prior=prior, taus=[hyper.tau])
    # Same call shape as the model's heads: a model that selection left at the
    # ridge member (zero base, ρ = 0, the ridge's τ) predicts exactly as it.
    ridge_prior = T.prior_diag(ctx.x.shape[1], 0.0)
    zero = np.zeros_like(w0)
    ridge, kscale_r = heads_on(
        ctx, [zero], prior=ridge_prior, taus=[tuned.ridge_tau], content_only=True
    )
    rows: list[dict] = []
    heldout: list[HeldOut] = []
    v = ctx.view(data.part(splits.TEST_SEEN))
    if hyper.blend is not None:  # the deployed form: the members' blend
        mine = S.blend_heads(
            hyper.blend,
            mine[0, 0],
            ctx.base("content", hyper.blend_pop_lambda),
            ridge[0, 0],
            ctx.base("crowd_only", hyper.blend_crowd_lambda),
        )[None, None]
    preds = {
        "model": score(v, mine[0, 0]),
        "population": score(v, np.broadcast_to(pop, mine[0, 0].shape)),
        "per_annotator_ridge": score(v, ridge[0, 0]),
        "loo_consensus": ctx.loo_mean(v.r),
    }
    rows += _rows(ctx, v, preds, split="seen", k=None, heldout=heldout)
    people = newcomers(data.part(splits.TEST_UNSEEN), ks=data.ks, seed=data.seed)
    for k in data.ks:
        rows += _newcomer_rows(
            ctx,
            people,
            k,
            heads=(w_new, pop, zero),
            taus=(hyper.newcomer_tau, tuned.ridge_tau),
            priors=(prior, ridge_prior),
            kscales=(kscale, kscale_r),
            heldout=heldout if k == max(data.ks) else None,
        )
    return summarise(rows, data.ks), rows, heldout


def _newcomer_rows(
    ctx, people, k, *, heads, taus, priors, kscales, heldout=None
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
            tau=taus[0],
            prior=priors[0],
            content_only=False,
            kscale=kscales[0],
        )
        rhead, _, _ = adapt_head(
            ctx,
            zero,
            sup,
            tau=taus[1],
            prior=priors[1],
            content_only=True,
            kscale=kscales[1],
        )
        mean, std = _const(ctx, m), _const(ctx, s)
        v = ctx.view(p.query, mean=mean, std=std)
        preds = {
            "model": v.f @ head,
            "population": v.f @ pop,  # its crowd weight is 0: content only
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
