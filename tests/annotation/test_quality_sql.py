"""Quality control's bookkeeping of a rating in PL/pgSQL (``palate_submit``,
migration 0011) against ``quality.rating_recorded``: the same statistics, flags,
scheduled items and automatic pause, and the same row defaults."""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import NOT_PROVIDED, Value
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotation import services
from annotation.models import (
    Annotator,
    AnnotatorQuality,
    Image,
    QualityConfig,
    StreamItem,
)
from annotation.quality.services.quality import (
    TIME_EDGES_MS,
    pair_add,
    pair_corr,
    time_bucket,
)
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images, png_bytes


def test_database_defaults_are_the_model_defaults():
    """PL/pgSQL creates these rows with their keys only: every other column's
    database default must be the value Python would give it."""
    for model in (QualityConfig, AnnotatorQuality):
        for field in model._meta.concrete_fields:
            if field.primary_key or field.is_relation or field.null:
                continue
            db_default = field.db_default
            assert db_default is not NOT_PROVIDED, f"{model.__name__}.{field.name}"
            if getattr(field, "auto_now", False):
                assert isinstance(db_default, Now)
                continue
            expected = field.default() if callable(field.default) else field.default
            value = db_default.value if isinstance(db_default, Value) else db_default
            assert value == expected, f"{model.__name__}.{field.name}"
            assert type(value) is type(expected), f"{model.__name__}.{field.name}"


@pytest.mark.postgres
@pytest.mark.django_db
def test_helpers_match_python():
    cases = sorted({0, 1, 10**7} | {e + d for e in TIME_EDGES_MS for d in (-1, 0, 1)})
    sums = [[], [1, 2, 3], [3, 4, 2.5, 6, 2.25, 3.5]]
    pairs = [(3, 4.5), (-2, 0.1), (7, 1 / 3)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT palate_time_bucket(m) FROM unnest(%s) m", [cases])
        assert [r[0] for r in cursor.fetchall()] == [time_bucket(m) for m in cases]
        for start in sums:
            acc_sql, acc_py = start, start
            for x, y in pairs * 3:
                cursor.execute(
                    "SELECT palate_pair_add(%s::jsonb, %s, %s)",
                    [json.dumps(acc_sql), x, y],
                )
                acc_sql = json.loads(cursor.fetchone()[0])  # raw cursor: text
                acc_py = pair_add(acc_py, x, y)
                assert acc_sql == acc_py
                cursor.execute(
                    "SELECT palate_pair_corr(%s::jsonb)", [json.dumps(acc_sql)]
                )
                assert cursor.fetchone()[0] == pair_corr(acc_py)
        cursor.execute("SELECT palate_pair_corr('[2, 1, 1, 1, 1, 1]'::jsonb)")
        assert cursor.fetchone()[0] is None  # too few pairs: undefined, as in Python


def _scenario(settings, sql: bool, capture):
    """Four annotators rate the same six images, with attention checks and
    repeats after every rating, thresholds low enough that every rating flag
    can fire, and automatic pausing on. Returns what quality control left."""
    settings.PALATE_SQL_ENGINE = sql
    study = StudyFactory(raters_per_image=4, quota_per_annotator=6, lease_seconds=600)
    images = make_images(study, 6, start=400 if sql else 500)
    index = {img.pk: n for n, img in enumerate(images)}
    for pk, n in index.items():  # the same dealing order in both studies
        Image.objects.filter(pk=pk).update(shuffle=(n * 7919) % 10007)
    services.quality_config_update(
        study=study,
        attention_check_rate=1.0,
        repeat_rate=1.0,
        repeat_gap=2,
        too_fast_ms=1500,
        too_fast_share=0.4,
        straightline_run=4,
        min_evidence=4,
        loo_min_corr=0.5,
        auto_pause=True,
        hard_fast_share=0.8,
    )
    check = services.attention_check_create(
        study=study, data=png_bytes(900 if sql else 901), expected_min=3
    )
    people = [join(AnnotatorFactory(), study) for _ in range(4)]
    t0 = timezone.now().replace(microsecond=0)
    plans = [
        lambda n: (1 + n % 7, 3000 + 250 * n),  # ordinary
        lambda n: (4, 2500),  # straight-lining
        lambda n: (1 + (n * 3) % 7, 300 + 100 * n),  # fast: paused after commit
        lambda n: (7 - n % 7, 800 + 900 * n),  # against the others
    ]
    statements = []
    for round_ in range(6):
        for who, plan in zip(people, plans, strict=True):
            who.refresh_from_db()
            if who.status != Annotator.Status.ACTIVE:
                continue
            at = t0 + timedelta(minutes=round_)
            lease = services.assignment_claim(annotator=who, study=study, now=at)[0]
            score, ms = plan(round_)
            with capture(execute=True), CaptureQueriesContext(connection) as ctx:
                services.rating_submit(
                    assignment_id=lease.pk,
                    annotator=who,
                    score=score,
                    now=at + timedelta(milliseconds=ms),
                )
            statements.append(
                sum("SAVEPOINT" not in q["sql"] for q in ctx.captured_queries)
            )
    rows = []
    for n, who in enumerate(people):
        q = AnnotatorQuality.objects.get(annotator=who, study=study)
        who.refresh_from_db()
        rows.append(
            (
                n,
                who.status,
                q.n_ratings,
                q.n_fast,
                q.last_score,
                q.run_length,
                q.max_run,
                q.score_counts,
                q.time_hist,
                q.loo_sums,
                q.flags,
            )
        )
    items = sorted(
        (
            people.index(i.annotator),
            i.kind,
            i.due_after,
            i.check_item_id == check.pk if i.kind == "attention" else None,
            index.get(i.image_id),
            i.source_rating.image_id == i.image_id if i.source_rating else None,
        )
        for i in StreamItem.objects.filter(study=study).select_related(
            "annotator", "source_rating"
        )
    )
    return rows, items, statements


@pytest.mark.postgres
@pytest.mark.django_db
def test_sql_and_python_leave_the_same_quality_rows(
    settings, django_capture_on_commit_callbacks
):
    by_sql, items_sql, statements_sql = _scenario(
        settings, True, django_capture_on_commit_callbacks
    )
    by_python, items_python, statements_python = _scenario(
        settings, False, django_capture_on_commit_callbacks
    )
    assert by_sql == by_python
    assert items_sql == items_python
    # Both paths really ran: one statement a rating against Python's many.
    assert set(statements_sql) == {1}
    assert min(statements_python) > 5
    # The scenario means something: every rating flag fired somewhere, one
    # annotator was paused automatically, both kinds of item were scheduled.
    flags = {f for row in by_sql for f in row[-1]}
    assert flags >= {"too_fast", "straight_lining", "low_agreement"}, by_sql
    assert [row[1] for row in by_sql].count("paused") == 1
    assert {i[1] for i in items_sql} == {"attention", "repeat"}
    assert all(i[3] is not False and i[5] is not False for i in items_sql)
