"""A candidate and the active version scored on the same held-out ratings
(numpy, no database): what automatic promotion decides on.

The ratings compared on are the **test-split ratings (test_seen, test_unseen)
newer than the active version's training data** (rating id above its run's
``last_rating_id``), from the candidate run's snapshot:

* the active version never saw them: its deployed model was refit on ratings up
  to that id, and its hyper-parameters were chosen on older validation ratings;
* the candidate never saw them either: it is scored as the **comparison fit**,
  its deployed model refit with the same hyper-parameters and prior on every
  snapshot rating *except* these (its deployed model saw them, its selection did
  not: test ratings are never read by selection). So each model is fitted on
  everything it could use (the comparison fit holds every rating the active
  version was fitted on, and the newer non-test ones), and neither was fitted or
  selected on what it is scored on.

Both are scored the way ``inference`` serves them: the crowd feature from every
snapshot rating but the annotator's own, an annotator the model was fitted on
with their head, anyone else adapted from their ratings outside the comparison
set (none: the newcomer base), plus, where the model has it, the similar
crowd with agreements from the ratings that model was fitted on. The figure is
the mean over annotators of pairwise accuracy (annotators with at least one
pair rated differently), with 95 % normal intervals over annotators, and the
paired difference per annotator.
"""

from __future__ import annotations

import math

import numpy as np

from annotation import splits

from . import lowrank as LR
from . import similar as S
from . import taste as T
from .evaluation import CODES
from .metrics import by_annotator, per_annotator_pairwise

TEST_CODES = (CODES[splits.TEST_SEEN], CODES[splits.TEST_UNSEEN])


def query_mask(r_split: np.ndarray, r_id: np.ndarray, *, after: int) -> np.ndarray:
    """The ratings compared on: test splits, id above ``after``."""
    return np.isin(r_split, TEST_CODES) & (r_id > after)


def comparison_fit(*, emb, ratings: T.Ratings, query, n_ann, model, pop_extra):
    """The candidate refit like its deployed model (same hyper-parameters,
    prior and feature space), on every rating but the compared ones."""
    fit = ratings.take(~query)
    refit = T.fit_heads(
        emb=emb,
        fit=fit,
        n_ann=n_ann,
        hyper=model.hyper,
        pop_extra=pop_extra,
        prior=model.prior,
        feat=model.feat,
    )
    config = getattr(model.similar, "config", None)  # lowrank.PairPrior's
    return LR.with_prior(refit, fit, emb.shape[0], tuple(config) if config else None)


def score_query(
    model: T.Model,
    model_keys: list[str],
    *,
    x: np.ndarray,
    ratings: T.Ratings,
    keys: list[str],
    query: np.ndarray,
    fit: np.ndarray | None = None,
) -> np.ndarray:
    """``model``'s predictions (its normalised units) for the ratings in
    ``query``. ``x``: the model's standardised features of every embedding row;
    ``keys``: the annotator key of each annotator index in ``ratings``;
    ``fit``: the ratings the model was fitted on, where its similar crowd reads
    agreements (``similar``; without ``fit`` the member is left out)."""
    n_ann = len(keys)
    pos = {k: i for i, k in enumerate(model_keys)}
    row = np.asarray([pos.get(k, -1) for k in keys], dtype=np.int64)
    fitted = row >= 0
    fitted[fitted] = model.fitted[row[fitted]]
    mean, std = T.norm_stats(ratings, n_ann, fallback_std=model.global_std)
    mean[fitted] = model.norm_mean[row[fitted]]
    std[fitted] = model.norm_std[row[fitted]]
    z = T.normalised(ratings, mean, std)
    crowd = T.Crowd.build(ratings, z, x.shape[0])
    # Each rating's own z taken out; nobody else rated it: the expected crowd.
    c = crowd.feature(ratings.row, z, fill=lambda rows: model.crowd_expected(x[rows]))
    f = T.Features.full(x[ratings.row], c)
    out = np.zeros(ratings.score.size)
    agree = model.similar if fit is not None else None
    if agree is not None:  # agreements of the model's fitted annotators' fit ratings
        keep = fit & fitted[ratings.ann]
        train = S.TrainIndex(ratings.ann[keep], ratings.row[keep], z[keep], x.shape[0])
        agree = agree.keyed({a: int(row[a]) for a in np.flatnonzero(fitted).tolist()})
    for a, idx in by_annotator(ratings.ann):
        q = idx[query[idx]]
        if not q.size:
            continue
        if fitted[a]:
            head = model.heads[row[a]]
        else:
            support = idx[~query[idx]]
            head, _, _ = model.adapt(f[support], ratings.score[support])
        out[q] = T.forward(x[ratings.row[q]], c[q], head)
        w = model.hyper.blend_similar[row[a]] if agree and fitted[a] else 0.0
        if w:  # as ``inference.Predictor.scores`` adds it
            out[q] += w * S.term_of(crowd, a, ratings.row[q], train, agree)
    return out[query]


def _mean_ci(values: np.ndarray) -> dict:
    m = float(values.mean())
    if values.size < 2:
        return {"mean": m, "ci95": None}
    half = 1.959963984540054 * float(values.std(ddof=1)) / math.sqrt(values.size)
    return {"mean": m, "ci95": [m - half, m + half]}


def paired_accuracy(
    ann: np.ndarray, y: np.ndarray, new: np.ndarray, old: np.ndarray
) -> dict:
    """Per-annotator pairwise accuracy of both, their means and the paired
    difference (new − old), each with a 95 % interval over annotators."""
    acc_new = per_annotator_pairwise(ann, y, new)
    acc_old = per_annotator_pairwise(ann, y, old)
    both = sorted(set(acc_new) & set(acc_old))
    a = np.asarray([acc_new[i] for i in both])
    b = np.asarray([acc_old[i] for i in both])
    out = {"n_annotators": len(both), "n_ratings": int(y.size)}
    if both:
        out.update(new=_mean_ci(a), active=_mean_ci(b), difference=_mean_ci(a - b))
    return out


def _fmt(block: dict, *, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    text = f.format(block["mean"])
    if block.get("ci95"):
        lo, hi = block["ci95"]
        text += f" [{f.format(lo)}, {f.format(hi)}]"
    return text


def comparison_text(c: dict, *, new: str = "new") -> str:
    """One line for people: what was compared on and both figures."""
    if not c:
        return ""
    if not c.get("new"):
        return f"no comparison with v{c['against']}: {c.get('reason', '')}"
    return (
        f"{c['metric']} on {c['n_ratings']} test-split ratings newer than "
        f"v{c['against']}'s training data ({c['n_annotators']} annotators): "
        f"{new} {_fmt(c['new'])}, v{c['against']} {_fmt(c['active'])}, "
        f"difference {_fmt(c['difference'], signed=True)}"
    )
