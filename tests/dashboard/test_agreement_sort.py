"""The annotators table sorted by agreement (or retest) reads the correlation the
database computes from each annotator's running sums (``pair_corr_expression``)
instead of decoding every annotator's sums in Python: the same values, exactly,
and so the same order as ``pair_corr`` gave (issue 29). PostgreSQL and SQLite."""

import random

import pytest

from annotation.models import AnnotatorQuality
from annotation.quality.services import pair_corr
from annotation.studies.selectors import study_annotator_keys
from dashboard import selectors
from tests.factories import AnnotatorFactory, StudyFactory, join

pytestmark = pytest.mark.django_db


def sums_of(pairs) -> list:
    n = len(pairs)
    return [
        n,
        sum(x for x, _ in pairs),
        sum(y for _, y in pairs),
        sum(x * x for x, _ in pairs),
        sum(y * y for _, y in pairs),
        sum(x * y for x, y in pairs),
    ]


def varied_sums(rng: random.Random, i: int) -> list:
    """Running sums as the submit keeps them (integer scores against the others'
    mean), and every way pair_corr answers None: too few, no variance, malformed."""
    kind = i % 9
    if kind == 0:
        return []
    if kind == 1:
        return sums_of([(3, 2.5), (4, 3.0)])  # n < 3
    if kind == 2:
        return sums_of([(4, rng.uniform(1, 7)) for _ in range(5)])  # x constant
    if kind == 3:
        return [5, 15, 15, 55, 55, 50, 1]  # seven sums (six would be defined)
    if kind == 4:  # ties: the same sums as the next annotator of this kind
        return sums_of([(1, 2.0), (2, 2.5), (5, 4.0), (7, 6.5)])
    n = rng.randint(3, 60)
    return sums_of(
        [(rng.randint(1, 7), rng.randint(1, 7) * rng.random() + 1) for _ in range(n)]
    )


@pytest.fixture
def study():
    study = StudyFactory(raters_per_image=3)
    rng = random.Random(29)
    for i in range(60):
        a = join(AnnotatorFactory(), study)
        if i % 11 == 10:
            continue  # no quality row at all
        AnnotatorQuality.objects.update_or_create(
            annotator=a,
            study=study,
            defaults={
                "loo_sums": varied_sums(rng, i),
                "retest_sums": varied_sums(rng, i + 4),
            },
        )
    return study


@pytest.mark.parametrize(
    ("column", "field"), [("agreement", "loo_sums"), ("retest", "retest_sums")]
)
def test_the_database_computes_pair_corr_exactly(study, column, field):
    rows = study_annotator_keys(study=study, fields=(column, field))
    python = [pair_corr(r[field]) if r["has_quality"] else None for r in rows]
    assert [r[column] for r in rows] == python  # exact floats, None alike
    assert sum(v is not None for v in python) >= 20  # most are defined


@pytest.mark.parametrize("descending", [True, False])
def test_the_agreement_sort_orders_as_pair_corr_does(study, descending):
    table = selectors.annotator_table(
        study=study, sort="agreement", descending=descending
    )
    shown = [r["annotator"].pk for r in table["rows"]]
    rows = study_annotator_keys(study=study, fields=("loo_sums",))
    keyed = [(pair_corr(r["loo_sums"]) if r["has_quality"] else None, r) for r in rows]
    present = sorted(
        [kr for kr in keyed if kr[0] is not None],
        key=lambda kr: kr[0],
        reverse=descending,
    )
    expected = [r["id"] for _, r in present] + [r["id"] for k, r in keyed if k is None]
    assert shown == expected
    assert len({k for k, _ in present}) < len(present)  # ties were there to keep
