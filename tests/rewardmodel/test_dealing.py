"""Adaptive dealing's rankings (``rewardmodel.dealing``, issue 27): greedy in
the information a rating brings about the annotator's own head, conditioned on
the ranks before; computed from the version serving the study (the live
newcomer path for anyone it was not fitted on); refreshed after a training run
and, throttled, as anyone rates (a fitted annotator: conditioned on the
ratings given since the version)."""

import numpy as np
import pytest
from django.core.cache import cache

from annotation import services as ann
from annotation.engine.services.dealing import dealing_policy_set
from annotation.models import Assignment, DealingRank, DealingState
from rewardmodel import dealing, inference
from rewardmodel import posterior as P
from rewardmodel import services as rm
from rewardmodel import taste as T


def _posterior(rng, n_rated=12, m=30, d=6, tau2=0.9):
    prior = T.Prior(rng.uniform(0.5, 2.0, d + 2), rng.normal(size=(d + 2, 2)), 0.7)
    f = rng.normal(size=(n_rated, d + 2))
    g = rng.normal(size=(m, d + 2))
    sigma0 = tau2 * (prior.iso * np.diag(prior.diag) + prior.lowrank @ prior.lowrank.T)
    # Σ the live way (posterior.conditioned, in blocks); the test below checks
    # the ranking against the primal inverse written out.
    cov = P.conditioned(tau2 * prior.dense(), f) if tau2 > 0 else np.zeros((d + 2,) * 2)
    post = inference.Posterior(
        image_ids=list(range(100, 100 + m)),
        features=g,
        cov=cov,
        std=1.0,
        how="",
        rated=n_rated,
    )
    return post, sigma0, f, g


def test_greedy_ranking_is_the_conditional_information_written_out():
    """Against the primal posterior (Σ₀⁻¹ + FᵀF)⁻¹ updated by each ranked image
    as if it had been rated (unit noise): rank r is the largest conditional
    variance v, its information ½ log(1 + v)."""
    rng = np.random.default_rng(3)
    post, sigma0, f, g = _posterior(rng)
    got = dealing.greedy_information(post, depth=10)
    cov = np.linalg.inv(np.linalg.inv(sigma0) + f.T @ f)
    left = list(range(g.shape[0]))
    for image_id, info in got:
        var = np.einsum("ij,jk,ik->i", g, cov, g)
        best = max(left, key=lambda j: var[j])
        assert image_id == post.image_ids[best]
        assert info == pytest.approx(0.5 * np.log1p(var[best]), rel=1e-6)
        left.remove(best)
        gc = g[best : best + 1]
        cov = np.linalg.inv(np.linalg.inv(cov) + gc.T @ gc)
    assert len(got) == 10
    assert [x[1] for x in got] == sorted((x[1] for x in got), reverse=True)


def test_conditioning_spreads_the_ranking_over_directions():
    """Two copies of the most uncertain image: the marginal order would rank
    both first; the conditional one ranks the copy below other images."""
    rng = np.random.default_rng(4)
    post, *_ = _posterior(rng, m=12)
    var = post.sd() ** 2
    top = int(np.argmax(var))
    post.features = np.vstack([post.features, post.features[top]])
    post.image_ids = [*post.image_ids, 999]
    ranked = [i for i, _ in dealing.greedy_information(post, depth=13)]
    assert ranked[0] in (post.image_ids[top], 999)
    assert ranked.index(999) + ranked.index(post.image_ids[top]) > 2


def test_no_personal_part_no_ranking():
    rng = np.random.default_rng(5)
    post, *_ = _posterior(rng, tau2=0.0)
    assert dealing.greedy_information(post, depth=10) == []


@pytest.mark.django_db
def test_refresh_ranks_open_images_and_follows_a_newcomers_ratings(rated_study):
    study, _ = rated_study
    run = rm.training_run_execute(
        run_id=rm.training_run_create(study=study, promote="always").pk
    )
    assert run.status == "succeeded", run.error
    pred = inference.load(run.version)
    pred.model.hyper.new_tau2_rel = max(pred.model.hyper.tau2_rel, 1.0)  # personal
    study.quota_per_annotator = 1000
    study.raters_per_image = 4
    dealing_policy_set(study=study, policy="adaptive", warmup=1, band=1000)
    newcomer = ann.annotator_create()
    ann.participation_consent(annotator=newcomer, study=study, token=study.invite_token)
    # Every image of this study is full: give it room so something is open.
    from annotation.models import Image

    Image.objects.filter(study=study).update(target_ratings=10)
    # Not past the warm-up: no ranking (the claim deals fullest-first).
    assert dealing.dealing_refresh(study_id=study.pk, annotator_ids=[newcomer.pk]) == 0
    lease = ann.assignment_claim(annotator=newcomer, study=study)[0]
    ann.rating_submit(assignment_id=lease.pk, annotator=newcomer, score=7)
    assert dealing.dealing_refresh(study_id=study.pk) == 9  # 8 members and them
    first = list(
        DealingRank.objects.filter(annotator=newcomer)
        .order_by("rank")
        .values_list("image_id", "information")
    )
    assert first and lease.image_id not in {i for i, _ in first}
    state = DealingState.objects.get(annotator=newcomer, study=study)
    assert state.version_id == run.version.pk and state.how == "adapted from 1 ratings"
    assert state.uncertainty > 0 and state.ranked == len(first)
    # The claim deals the top of the ranking, and a rating moves it.
    nxt = ann.assignment_claim(annotator=newcomer, study=study)[0]
    assert nxt.image_id == first[0][0]
    assert Assignment.objects.get(pk=nxt.pk).dealt_by == "adaptive"
    ann.rating_submit(assignment_id=nxt.pk, annotator=newcomer, score=1)
    dealing.dealing_refresh(study_id=study.pk, annotator_ids=[newcomer.pk])
    second = list(
        DealingRank.objects.filter(annotator=newcomer)
        .order_by("rank")
        .values_list("image_id", "information")
    )
    assert first[0][0] not in {i for i, _ in second}
    after = DealingState.objects.get(annotator=newcomer, study=study)
    assert after.how == "adapted from 2 ratings"
    assert after.uncertainty < state.uncertainty


@pytest.fixture
def eager():
    """Celery runs queued tasks in this process at once (the real task)."""
    from config.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    cache.clear()
    yield
    app.conf.task_always_eager = before


@pytest.mark.django_db
def test_ratings_refresh_throttled_and_training_refreshes_everyone(
    rated_study, eager, django_capture_on_commit_callbacks
):
    """Through the real hooks: a rating in an adaptive study asks for a refresh
    (signal -> throttle -> task after commit), a second one within the window
    does not; a finished training run refreshes the study."""
    study, annotators = rated_study
    from annotation.models import Image

    Image.objects.filter(study=study).update(target_ratings=10)
    dealing_policy_set(study=study, policy="adaptive", warmup=1)
    with django_capture_on_commit_callbacks(execute=True):
        run = rm.training_run_execute(
            run_id=rm.training_run_create(study=study, promote="always").pk
        )
    assert run.status == "succeeded", run.error
    # Every member past the warm-up has a ranking from the new version.
    states = DealingState.objects.filter(study=study)
    assert states.count() == len(annotators)
    assert set(states.values_list("version_id", flat=True)) == {run.version.pk}
    newcomer = ann.annotator_create()
    ann.participation_consent(annotator=newcomer, study=study, token=study.invite_token)
    for score in (6, 2):
        lease = ann.assignment_claim(annotator=newcomer, study=study)[0]
        with django_capture_on_commit_callbacks(execute=True):
            ann.rating_submit(assignment_id=lease.pk, annotator=newcomer, score=score)
    state = DealingState.objects.get(study=study, annotator=newcomer)
    assert state.how == "adapted from 1 ratings"  # the second was throttled
    cache.clear()  # the window has passed
    lease = ann.assignment_claim(annotator=newcomer, study=study)[0]
    with django_capture_on_commit_callbacks(execute=True):
        ann.rating_submit(assignment_id=lease.pk, annotator=newcomer, score=4)
    state.refresh_from_db()
    assert state.how == "adapted from 3 ratings"


@pytest.mark.django_db
def test_a_fitted_annotators_ranking_follows_their_ratings_since_the_version(
    rated_study,
):
    """Between training runs a fitted annotator's posterior is the version's
    ratings *and* those they gave since (exact: the scores do not enter), so a
    refreshed ranking stops asking about directions they have just rated; and
    Σ is the live path's (``posterior.LivePosterior``) for the version's part."""
    from annotation.models import Image

    study, annotators = rated_study
    run = rm.training_run_execute(
        run_id=rm.training_run_create(study=study, promote="always").pk
    )
    assert run.status == "succeeded", run.error
    pred = inference.load(run.version)
    pred.model.hyper.tau2_rel = max(pred.model.hyper.tau2_rel, 1.0)  # personal
    Image.objects.filter(study=study).update(target_ratings=10)
    who = next(a for a in annotators if pred.model.fitted[pred.index[str(a.pk)]])
    ids = list(Image.objects.filter(study=study).values_list("pk", flat=True))
    before = inference.posterior(annotator=who, image_ids=ids, version=run.version)
    live = pred._live(who, fitted=True)
    assert np.allclose(before.cov, live.post.cov) and before.rated == live.post.n
    lease = ann.assignment_claim(annotator=who, study=study)[0]
    ann.rating_submit(assignment_id=lease.pk, annotator=who, score=7)
    after = inference.posterior(annotator=who, image_ids=ids, version=run.version)
    assert after.rated == before.rated + 1
    j = after.image_ids.index(lease.image_id)
    g = np.asarray(after.features[j], np.float64)
    v = float(g @ before.cov @ g)
    # One rating's update, written out (unit noise), on the image just rated.
    assert float(g @ after.cov @ g) == pytest.approx(v - v * v / (1 + v), rel=1e-6)
    assert np.allclose(pred._live(who, fitted=True).post.cov, live.post.cov)
