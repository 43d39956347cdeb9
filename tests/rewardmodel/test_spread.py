"""How unsure the personalised model is of one annotator's own taste
(``posterior.HeadSpread``): the posterior sd that prompt steering discounts."""

import numpy as np
import pytest

from rewardmodel import posterior as P
from rewardmodel import taste as T


def _prior(rng, d):
    return P.Prior(rng.uniform(0.5, 2.0, d + 2), rng.normal(size=(d + 2, 2)), 0.7)


def test_spread_is_the_posterior_sd_of_the_personal_part():
    """Against the posterior covariance written out in the primal:
    (Σ₀⁻¹ + FᵀF)⁻¹ with Σ₀ = τ²(iso·diag + L Lᵀ), unit noise."""
    rng = np.random.default_rng(0)
    d, tau2 = 6, 0.8
    f, g = rng.normal(size=(15, d + 2)), rng.normal(size=(5, d + 2))
    prior = _prior(rng, d)
    sigma0 = tau2 * (prior.iso * np.diag(prior.diag) + prior.lowrank @ prior.lowrank.T)
    post = np.linalg.inv(np.linalg.inv(sigma0) + f.T @ f)
    want = np.sqrt(np.einsum("ij,jk,ik->i", g, post, g))
    assert np.allclose(P.HeadSpread.build(f, tau2, prior).sd(g), want)
    # No ratings: the prior's own sd.
    prior_sd = np.sqrt(np.einsum("ij,jk,ik->i", g, sigma0, g))
    assert np.allclose(P.HeadSpread.build(f[:0], tau2, prior).sd(g), prior_sd)


def test_more_ratings_never_widen_it_and_unfamiliar_images_get_more():
    rng = np.random.default_rng(1)
    d, tau2 = 8, 1.0
    prior = P.prior_diag(d, 10.0)
    f = np.hstack(
        [rng.normal(size=(60, d)), rng.normal(size=(60, 1)), np.ones((60, 1))]
    )
    near = f[:10] + 0.05 * rng.normal(size=(10, d + 2))
    near[:, -1] = 1.0
    few = P.HeadSpread.build(f[:10], tau2, prior).sd(near)
    many = P.HeadSpread.build(f, tau2, prior).sd(near)
    assert np.all(many <= few + 1e-12) and many.mean() < 0.8 * few.mean()
    far = near.copy()
    far[:, :d] *= 4.0  # far outside what the annotator rated
    spread = P.HeadSpread.build(f, tau2, prior)
    assert np.all(spread.sd(far) > spread.sd(near))


def test_no_personal_part_no_spread_and_no_decomposition():
    rng = np.random.default_rng(2)
    prior = P.prior_diag(4, 0.0)
    hs = P.HeadSpread.build(rng.normal(size=(9, 6)), 0.0, prior)
    assert hs.evals.size == 0  # τ = 0: nothing to decompose
    assert np.array_equal(hs.sd(rng.normal(size=(3, 6))), np.zeros(3))


@pytest.mark.django_db
def test_served_spread_is_the_fitted_annotators_posterior(rated_study):
    """``predict(spread=True)``: for an annotator the version was fitted on, the
    posterior given the ratings it was trained on (not later ones), on their
    scale; only when asked for."""
    from annotation.models import Rating
    from rewardmodel import inference

    from .conftest import trained_with_unrated_image

    study, annotators = rated_study
    run, image = trained_with_unrated_image(study, seed=77_777)
    a = annotators[0]
    plain = inference.predict(annotator=a, image_ids=[image.pk], version=run.version)
    assert "spread" not in plain
    got = inference.predict(
        annotator=a, image_ids=[image.pk], version=run.version, spread=True
    )
    pred = inference.load(run.version)
    model = pred.model
    rated = Rating.objects.filter(annotator=a, study=study, is_valid=True)
    rated = rated.filter(pk__lte=run.last_rating_id)
    rows = np.asarray([pred.rows[r.image_id] for r in rated])
    f = T.Features.full(pred.x[rows], pred.crowd_feature(rows, a.pk))
    g = T.Features.full(
        pred.x[[pred.rows[image.pk]]],
        pred.crowd_feature(np.asarray([pred.rows[image.pk]]), a.pk),
    )
    i = pred.index[str(a.pk)]
    want = model.norm_std[i] * model.spread(f, fitted=True).sd(g)[0]
    assert got["spread"][image.pk] == pytest.approx(want, rel=1e-6)
    assert got["scores"] == plain["scores"]


@pytest.mark.django_db
def test_a_newcomer_without_ratings_gets_the_priors_spread(rated_study):
    """Someone the version never saw, with no ratings: their head is the
    newcomer base, and the spread is the prior's (on the global scale)."""
    from annotation import services as ann
    from rewardmodel import inference

    from .conftest import trained_with_unrated_image

    study, _ = rated_study
    run, image = trained_with_unrated_image(study, seed=55_555)
    stranger = ann.annotator_create()
    pred = inference.load(run.version)
    model = pred.model
    model.hyper.new_tau2_rel = 0.5  # whatever selection chose here, a personal part
    got = inference.predict(
        annotator=stranger, image_ids=[image.pk], version=run.version, spread=True
    )
    row = np.asarray([pred.rows[image.pk]])
    g = T.Features.full(pred.x[row], pred.crowd_feature(row, stranger.pk))
    hyper = model.hyper
    prior = model.prior
    want = model.global_std * np.sqrt(
        hyper.newcomer_tau2_rel * model.kscale * prior.row_diag(g)
    )
    assert got["how"] == "cold start" and want[0] > 0
    assert got["spread"][image.pk] == pytest.approx(float(want[0]), rel=1e-6)
