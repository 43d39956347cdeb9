"""The taste portrait's "this is me / this is not me" answers in the dataset
export (issue 28): their own config, ``portrait_feedback`` (one split,
``train``), in every format, for the exported annotators only, described on the
card and never counted as ratings. ``import_dataset`` reads the ratings,
images and annotators only; an export carrying answers imports as one without."""

import csv
import json

import pyarrow.parquet as pq
import pytest

from annotation import services
from annotation.datasets.services.export import ExportOptions, dataset_export
from annotation.datasets.services.import_export_file import dataset_import
from annotation.models import Image, Rating
from portrait.models import PortraitFeedback
from portrait.services import portrait_feedback_record
from tests.annotation.export_fixtures import rated_study
from tests.annotation.test_export_roundtrip import db_state, new_study
from tests.factories import make_images

pytestmark = pytest.mark.django_db
CONFIG = "portrait_feedback"


def _answered(study) -> list[PortraitFeedback]:
    """Two images nobody rated yet are added; then each annotator who rated
    (one with a portrait) answers on every image of the study they did not
    rate, "me" and "not me" in turn."""
    make_images(study, 2, start=500)
    out = []
    for a in study.participations.select_related("annotator"):
        rated = set(Rating.objects.filter(annotator=a.annotator).values_list("image"))
        if not rated:
            continue
        for k, pk in enumerate(
            Image.objects.filter(study=study).order_by("pk").values_list("pk")
        ):
            if pk in rated:
                continue
            out.append(
                portrait_feedback_record(
                    study=study,
                    annotator=a.annotator,
                    image_id=pk[0],
                    answer="me" if k % 2 else "not_me",
                    side="like" if k % 3 else "dislike",
                    predicted=4.25 + k,
                    spread=0.5,
                    version_id=7,
                    n_ratings=Rating.objects.filter(annotator=a.annotator).count(),
                )
            )
    return out


def _rows(root, fmt) -> list[dict]:
    files = sorted((root / CONFIG / "data").glob(f"train-*.{fmt}"))
    if fmt == "parquet":
        return [r for f in files for r in pq.read_table(f).to_pylist()]
    if fmt == "jsonl":
        return [json.loads(x) for f in files for x in f.read_text().splitlines()]
    return [r for f in files for r in csv.DictReader(f.open())]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_answers_are_a_table_of_their_own_never_ratings(tmp_path, fmt):
    study = rated_study()
    answers = _answered(study)
    assert len(answers) >= 4
    images = "embed" if fmt == "parquet" else "path"
    n_ratings = Rating.objects.filter(study=study).count()
    report = dataset_export(
        study=study, out=tmp_path / fmt, options=ExportOptions(fmt=fmt, images=images)
    )
    assert report[CONFIG] == len(answers)
    assert report["ratings"] == n_ratings == sum(report["splits"].values())
    rows = _rows(tmp_path / fmt, fmt)
    want = sorted(
        (
            f.annotator.public_id,
            f.image_id,
            f.answer,
            f.side,
            f.predicted,
            f.version_id,
            f.n_ratings,
        )
        for f in answers
    )
    got = [
        (
            r["annotator_id"],
            int(r["image_id"]),
            r["answer"],
            r["side"],
            float(r["predicted"]),
            int(r["model_version"]),
            int(r["n_ratings"]),
        )
        for r in rows
    ]
    assert got == want  # by annotator, then image
    card = " ".join((tmp_path / fmt / "README.md").read_text().split())
    assert f'config_name: "{CONFIG}"' in card
    assert "## Taste portrait feedback" in card
    assert f"holds {len(answers):,} answers" in card
    assert "These answers are not ratings" in card
    assert "- `answer`: me (this is me) or not_me" in card


def test_only_the_exported_annotators_answers(tmp_path):
    study = rated_study()
    answers = _answered(study)
    left_out = answers[0].annotator
    services.participation_exclude(annotator=left_out, study=study, reason="test")
    dataset_export(study=study, out=tmp_path / "a")
    ids = {r["annotator_id"] for r in _rows(tmp_path / "a", "parquet")}
    assert ids and left_out.public_id not in ids
    dataset_export(
        study=study,
        out=tmp_path / "b",
        options=ExportOptions(include_excluded=True),
    )
    ids = {r["annotator_id"] for r in _rows(tmp_path / "b", "parquet")}
    assert left_out.public_id in ids


def test_no_config_without_answers_and_datasets_loads_it(tmp_path):
    import datasets

    study = rated_study()
    dataset_export(study=study, out=tmp_path / "plain")
    assert not (tmp_path / "plain" / CONFIG).exists()
    assert CONFIG not in (tmp_path / "plain" / "README.md").read_text()
    answers = _answered(study)
    dataset_export(study=study, out=tmp_path / "with")
    loaded = datasets.load_dataset(
        str(tmp_path / "with"), CONFIG, cache_dir=str(tmp_path / "cache")
    )
    assert len(loaded["train"]) == len(answers)
    assert loaded["train"].features["predicted"].dtype == "float64"


def test_an_export_with_answers_imports_its_ratings_only(tmp_path):
    study = rated_study()
    _answered(study)
    dataset_export(study=study, out=tmp_path / "a")
    copy = new_study(study)
    report = dataset_import(study=copy, root=tmp_path / "a", same_annotators=True)
    assert report["ratings"] == Rating.objects.filter(study=study).count()
    assert db_state(copy) == db_state(study)
    assert not PortraitFeedback.objects.filter(study=copy).exists()
