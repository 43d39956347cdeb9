"""The export tells researchers which items were attention checks, repeats and
blind items, and how each was answered (issue 23: annotators cannot tell them
apart, researchers must): the ``quality_items`` config."""

import json

import pyarrow.parquet as pq
import pytest
from django.utils import timezone

from annotation import services
from annotation.datasets.services.export import ExportOptions, dataset_export
from annotation.models import StreamItem
from tests.annotation.export_fixtures import rated_study
from tests.annotation.test_export_card_facts import _study_with_repeats
from tests.factories import png_bytes

pytestmark = pytest.mark.django_db


def _with_checks():
    """Repeats for every annotator, plus one attention check each, answered."""
    study = _study_with_repeats()
    check = services.attention_check_create(
        study=study, data=png_bytes(seed=999), expected_min=2
    )
    now = timezone.now()
    for i, item in enumerate(StreamItem.objects.filter(study=study, kind="repeat")):
        if i % 2 == 0:  # a check answered next to every other repeat
            StreamItem.objects.create(
                study=study,
                annotator=item.annotator,
                kind=StreamItem.Kind.ATTENTION,
                status=StreamItem.Status.ANSWERED,
                due_after=0,
                check_item=check,
                score=2 if i % 4 == 0 else 5,
                passed=i % 4 == 0,
                shown_at=now,
                answered_at=now,
                time_on_item_ms=900,
            )
    return study, check


def _rows(root, fmt):
    files = sorted((root / "quality_items" / "data").glob(f"train-*.{fmt}"))
    if fmt == "parquet":
        return [r for f in files for r in pq.read_table(f).to_pylist()]
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_every_answered_item_is_exported_with_its_kind_and_answer(tmp_path, fmt):
    study, check = _with_checks()
    images = "embed" if fmt == "parquet" else "path"
    options = ExportOptions(fmt=fmt, images=images)
    dataset_export(study=study, out=tmp_path / fmt, options=options)
    rows = {r["item_id"]: r for r in _rows(tmp_path / fmt, fmt)}
    items = StreamItem.objects.filter(study=study).exclude(status="pending")
    assert set(rows) == set(items.values_list("pk", flat=True))
    kinds = {r["kind"] for r in rows.values()}
    assert kinds == {"repeat", "attention"}
    for item in items.select_related("annotator", "source_rating"):
        row = rows[item.pk]
        assert row["annotator_id"] == item.annotator.public_id
        assert (row["kind"], row["score"], row["passed"]) == (
            item.kind,
            item.score,
            item.passed,
        )
        if item.kind == "repeat":
            assert row["image_id"] == item.image_id
            assert row["first_score"] == item.source_rating.score
        else:
            assert row["check_id"] == check.pk
            assert (row["expected_min"], row["expected_max"]) == (2, 2)
    text = " ".join((tmp_path / fmt / "README.md").read_text().split())
    assert 'config_name: "quality_items"' in text
    assert "the `quality_items` config lists each one" in text


def test_no_config_without_items_and_datasets_loads_it(tmp_path):
    import datasets

    plain = rated_study()
    dataset_export(study=plain, out=tmp_path / "plain")
    assert not (tmp_path / "plain" / "quality_items").exists()
    assert "quality_items" not in (tmp_path / "plain" / "README.md").read_text()

    study, _ = _with_checks()
    dataset_export(study=study, out=tmp_path / "qc")
    n = StreamItem.objects.filter(study=study).exclude(status="pending").count()
    loaded = datasets.load_dataset(
        str(tmp_path / "qc"), "quality_items", cache_dir=str(tmp_path / "cache")
    )
    assert len(loaded["train"]) == n
