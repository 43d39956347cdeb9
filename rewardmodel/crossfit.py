"""The blend's evidence from the train images (issue 26): every member refitted
on part of the train images and scored on the rest.

The blend's weights were learnt on val_seen alone. With few ratings per person
that is a few dozen images (600 images × 200 people: about 60), and a member
that ranked them well by chance took the weight: 12 of 270 runs fell more than
0.01 below the LOO consensus, whose accuracy on the train images (no fit
needed) showed val_seen was the unlucky side (RESULTS.md, "the other corners").
Here the train images are split in ``FOLDS`` seeded parts; on each, the members
are refitted on the others exactly as selection fits them on train (the chosen
configuration, the baselines' own λ and τ², the taste directions relearnt, the
similar crowd's agreements from those ratings only) and predict the held part's
ratings. No held rating reaches its own prediction: the fits never see the
held images, and the crowd column leaves the rater out. Only train and
validation ratings are read (validation for the crowd column, as selection).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from annotation import splits

from . import stacking as S
from . import taste as T
from .crowd import similar_of
from .evaluation import Context, heads_on, model_prior, ridge_on

FOLDS = 2
FOLD_SEED = 29  # added to the run's seed
# Only where val_seen has fewer images (set a priori, not tuned): with more, it
# weighs the members well alone, and the refits cost time in proportion to the
# data (70,000 ratings: 586 val_seen images; the refits would add about 6 s).
MAX_VAL_IMAGES = 200
# Each annotator's train rows kept (seeded draw, a priori, not tuned): the rows
# are there for their images, and pairwise scoring costs n² per annotator (at
# 70,000 ratings, all 140 each cost 7 s more).
PER_ANNOTATOR = 30


def train_rows(ctx: Context, cfg, lams: dict, ridge_tau2_rel: float):
    """(p, y, ann, img) of the train ratings, each member's prediction from
    fits that never saw the rating's image (columns in ``stacking`` order, the
    fifth where ``Data.similar``), at most ``PER_ANNOTATOR`` per annotator.
    Annotator ids are offset by ``n_ann``: an annotator's train rows are ordered
    apart from their val_seen rows (other normalisation, other fits). None
    where val_seen has ``MAX_VAL_IMAGES`` images or more, or train too few."""
    data, train = ctx.data, ctx.fit
    images = np.unique(train.row)
    val_seen = data.part(splits.VAL_SEEN)
    if images.size < 2 * FOLDS or np.unique(val_seen.row).size >= MAX_VAL_IMAGES:
        return None
    part = np.empty(images.size, np.int64)
    rng = np.random.default_rng(data.seed + FOLD_SEED)
    part[rng.permutation(images.size)] = np.arange(images.size) % FOLDS
    visible = T.concat(train, val_seen, data.part(splits.VAL_UNSEEN))
    kept = np.zeros(len(train), bool)
    kept[_at_most(train.ann, PER_ANNOTATOR, rng)] = True
    cols, ys, parts = [], [], []
    for k in range(FOLDS):
        held_mask = np.isin(train.row, images[part == k])
        fit, held = train.take(~held_mask), train.take(held_mask & kept)
        # A memo of its own: Data.heads_memo keys its Gram matrix and
        # eigendecompositions as if every context fitted the whole train split.
        sub = dataclasses.replace(data, heads_memo={"x": data.heads_memo["x"]})
        c = Context(sub, fit, visible)
        held = held.take(np.bincount(fit.ann, minlength=data.n_ann)[held.ann] > 0)
        p, y = _members(c, held, cfg, lams, ridge_tau2_rel)
        cols.append(p)
        ys.append(y)
        parts.append(held)
    held = T.concat(*parts)
    return np.vstack(cols), np.concatenate(ys), held.ann + data.n_ann, held.row


def _at_most(ann: np.ndarray, n: int, rng) -> np.ndarray:
    """Indices of at most ``n`` random entries per annotator, in order."""
    order = np.lexsort((rng.random(ann.size), ann))
    first = np.searchsorted(ann[order], ann[order], side="left")
    return np.sort(order[np.arange(ann.size) - first < n])


def _members(c: Context, held: T.Ratings, cfg, lams: dict, ridge_tau2_rel: float):
    """The members fitted on ``c`` (as ``selection.select`` fits them), their
    predictions of ``held`` (n, 4 or 5) and its normalised scores."""
    bases = {b: c.base(b, lams[b]) for b in {cfg.base, "content", "crowd_only"}}
    # Isotropic where γ = 0 (``posterior.prior_for``, the prior's one definition).
    prior = model_prior(
        c, bases[cfg.base], rho=cfg.rho, gamma=cfg.gamma, tau2_rel_iso=cfg.tau2_rel_iso
    )
    grid, _ = heads_on(c, [bases[cfg.base]], prior=prior, tau2_rel=[cfg.tau2_rel])
    ridge, _ = ridge_on(c, ridge_tau2_rel)
    v = c.view(held)
    cols = S.member_columns(
        v.f, held.ann, grid[0, 0], bases["content"], ridge, bases["crowd_only"]
    )
    if c.data.similar:
        cols = np.column_stack([cols, similar_of(c).predict(c.crowd, held)])
    return cols, v.y
