import numpy as np
import pytest

from annotation import services as ann
from generation import services as gen
from rewardmodel import services as rm
from tests.factories import StudyFactory
from tests.rewardmodel.conftest import TINY, rate_study


def _brightness(image) -> float:
    from PIL import Image as PILImage

    with image.file.open("rb") as fh:
        arr = np.asarray(PILImage.open(fh).convert("L"), dtype=np.float64)
    return float(arr.mean() / 255)


@pytest.fixture
def steering_setup(db, settings, tmp_path):
    """A study of procedural images rated by 6 annotators (taste: brightness, with
    signs that differ per annotator) and a trained reward model (tiny open_clip)."""
    settings.REWARDMODEL_DIR = str(tmp_path / "rm")
    settings.REWARDMODEL_BACKBONE = TINY
    study = StudyFactory(raters_per_image=4, quota_per_annotator=1000)
    prompts = [
        {"text": t, "domain": "art"}
        for t in (
            "a fox in a forest",
            "a city at night",
            "a bowl of fruit",
            "a sailing boat",
            "a mountain lake",
            "a portrait of an old man",
        )
    ]
    gen.demo_images_generate(study=study, prompts=prompts, per_prompt=4)
    annotators = [ann.annotator_create() for _ in range(6)]
    signs = [1, 1, -1, 1, -1, 1]

    def scores(i, image):
        raw = 4 + 6 * signs[i] * (_brightness(image) - 0.45)
        return int(np.clip(round(raw), study.scale_min, study.scale_max))

    rate_study(study, annotators, scores=scores)
    run = rm.training_run_create(study=study, config={"steps": 30})
    run = rm.training_run_execute(run_id=run.pk)
    assert run.status == "succeeded", run.error
    return study, annotators
