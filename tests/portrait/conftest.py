import pytest

from annotation import services as ann
from portrait.models import PortraitSettings
from tests.rewardmodel.conftest import (  # noqa: F401 (rm_settings: fixture)
    make_study,
    rate_study,
    rm_settings,
)


def train(study):
    from rewardmodel import services as rm

    run = rm.training_run_execute(
        run_id=rm.training_run_create(study=study, promote="always").pk
    )
    assert run.status == "succeeded", run.error
    return run


def personal_newcomers(run) -> None:
    """Give newcomers a personal part whatever this tiny study selected (as
    ``test_live_newcomer`` does), so their ratings move their predictions."""
    from rewardmodel import inference

    pred = inference.load(run.version)
    pred.model.hyper.new_tau2_rel = max(pred.model.hyper.tau2_rel, 1.0)
    pred.live.clear()


def rate_some(annotator, study, n: int, score=lambda image: 4) -> list:
    """``n`` ratings through the real engine; returns the images rated."""
    done = []
    for _ in range(n):
        lease = ann.assignment_claim(annotator=annotator, study=study)[0]
        ann.rating_submit(
            assignment_id=lease.pk, annotator=annotator, score=score(lease.image)
        )
        done.append(lease.image)
    return done


@pytest.fixture
def portrait_study(db, rm_settings):  # noqa: F811 (the imported fixture)
    """40 images, each rated by 8 people with a seeded taste each, a trained and
    promoted model version, and the portrait on (5 ratings needed)."""
    study, people = make_study(n_images=40, n_annotators=8, raters=12)
    rate_study(study, people)
    run = train(study)
    PortraitSettings.objects.create(study=study, enabled=True, min_ratings=5)
    return study, people, run
