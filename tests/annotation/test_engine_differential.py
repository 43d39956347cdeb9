"""The SQL path and the Python path of the engine, driven through the same
random run, deal the same images and leave the same rows.

Each run: two studies, four annotators in both, a seeded random sequence of
claims (hold 1-3), ratings, retried and changed ratings, skips, sweeps and
time passing (leases run out). The dealer is seeded (``engine_seed``) the same
way for both paths and the images' ``shuffle`` values are random, so "random
among equals" is exercised (and counted) rather than every claim wrapping to
the smallest value. Fixed seeds plus one fresh seed per run, printed.
"""

import random
import secrets
from datetime import timedelta

import pytest
from django.utils import timezone

from annotation import services
from annotation.models import Assignment, Image, Rating
from annotation.splits import split_assign
from core.exceptions import PalateError
from tests.factories import AnnotatorFactory, StudyFactory, join, make_images

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

FRESH = secrets.randbits(31)
SEEDS = [3, 1729, 65537, FRESH]
STEPS = 90


class Run:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        services.engine_seed(seed=seed)
        self.studies = [
            StudyFactory(raters_per_image=3, quota_per_annotator=9, lease_seconds=60),
            StudyFactory(raters_per_image=2, quota_per_annotator=6, lease_seconds=30),
        ]
        self.index = {}  # image pk -> (study, position)
        for s, (study, n) in enumerate(zip(self.studies, (12, 8), strict=True)):
            for pos, img in enumerate(make_images(study, n, start=100 * s)):
                self.index[img.pk] = (s, pos)
                shuffle = self.rng.randrange(2**31)
                Image.objects.filter(pk=img.pk).update(shuffle=shuffle)
        self.people = [join(AnnotatorFactory(), *self.studies) for _ in range(4)]
        self.t = self.t0 = timezone.now().replace(microsecond=250001)
        self.random_branch = 0  # claims that dealt not the first of equals

    def mine(self, who, study):
        """The annotator's assignments in a study, in an order both runs share."""
        rows = Assignment.objects.filter(annotator=who, study=study)
        return sorted(rows, key=lambda a: self.index[a.image_id])

    def first_of_equals(self, who, study):
        """The image a claim would deal if it always wrapped to the start of
        the fullest level, and how many equals it had (None: nothing open)."""
        open_ = Image.objects.filter(study=study, open_slots__gt=0).exclude(
            assignments__annotator=who
        )
        level = min((i.open_slots for i in open_), default=None)
        equals = [i for i in open_ if i.open_slots == level]
        first = min(equals, key=lambda i: i.shuffle, default=None)
        return (first and first.pk), len(equals)

    def step(self):
        rng, who = self.rng, self.rng.choice(self.people)
        study = rng.choice(self.studies)
        self.t += timedelta(seconds=rng.choice([0.5, 2, 7, 25, 70]))
        op = rng.choices(["claim", "rate", "again", "skip", "sweep"], [5, 5, 1, 1, 1])[
            0
        ]
        mine = self.mine(who, study)
        try:
            if op == "claim":
                return self.claim(who, study, rng.randint(1, 3))
            if op == "sweep":
                return ("sweep", services.lease_expire(study_id=study.pk, now=self.t))
            if not mine:
                return (op, None)
            a = rng.choice(mine)
            if op == "skip":
                services.assignment_skip(assignment_id=a.pk, annotator=who, now=self.t)
                return (op, self.index[a.image_id])
            score = rng.randint(1, 7) if op == "rate" else 4
            rating, created = services.rating_submit(
                assignment_id=a.pk, annotator=who, score=score, now=self.t
            )
            return (op, self.index[a.image_id], rating.score, created)
        except PalateError as exc:
            return (op, type(exc).__name__, exc.message)

    def claim(self, who, study, hold):
        first, equals = self.first_of_equals(who, study)
        leases = services.assignment_claim(
            annotator=who, study=study, hold=hold, now=self.t
        )
        self.last = leases
        new = [x for x in leases if x.leased_at == self.t]
        if new and equals > 1 and new[0].image_id != first:
            self.random_branch += 1
        return ("claim", hold, [self.index[x.image_id] for x in leases])

    def rows(self):
        who = {p.pk: n for n, p in enumerate(self.people)}

        def rel(t):
            return t and t - self.t0

        assignments = sorted(
            (
                who[a.annotator_id],
                self.index[a.image_id],
                a.status,
                rel(a.leased_at),
                rel(a.shown_at),
                rel(a.expires_at),
                rel(a.finished_at),
            )
            for a in Assignment.objects.filter(study__in=self.studies)
        )
        ratings = sorted(
            (
                who[r.annotator_id],
                self.index[r.image_id],
                r.score,
                r.is_valid,
                r.time_on_item_ms,
                # each run has its own people: the split as computed for them
                r.split
                == split_assign(
                    image_key=r.image.sha256, annotator_key=r.annotator.split_key
                ),
            )
            for r in Rating.objects.filter(study__in=self.studies).select_related(
                "image", "annotator"
            )
        )
        counters = sorted(
            (self.index[i.pk], i.rating_count, i.lease_count)
            for i in Image.objects.filter(study__in=self.studies)
        )
        return assignments, ratings, counters


def run(settings, seed: int, *, sql: bool):
    settings.PALATE_SQL_ENGINE = sql
    r = Run(seed)
    outcomes = [r.step() for _ in range(STEPS)]
    # Then everyone works until nothing is left for them: the end of a study.
    r.t += timedelta(hours=1)
    for study in r.studies:
        for who in r.people:
            while r.claim(who, study, 1)[2]:
                lease = r.last[0]
                outcomes.append(("end", r.index[lease.image_id]))
                services.rating_submit(
                    assignment_id=lease.pk, annotator=who, score=2, now=r.t
                )
            outcomes.append(("end", None))
    return outcomes, r.rows(), r.random_branch


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed{s}")
def test_both_paths_deal_alike_through_a_random_run(settings, seed):
    print(f"differential seeds {SEEDS} (fresh: {FRESH}); this one {seed}")
    out_sql, rows_sql, branch_sql = run(settings, seed, sql=True)
    out_py, rows_py, branch_py = run(settings, seed, sql=False)
    for n, (a, b) in enumerate(zip(out_sql, out_py, strict=True)):
        assert a == b, f"seed {seed}, step {n}: SQL {a} != Python {b}"
    assert rows_sql == rows_py
    # The run went through the branches that matter: random among equals,
    # ratings made, claims refused or empty, leases run out.
    assert branch_sql > 0 and branch_py > 0, (branch_sql, branch_py)
    kinds = {o[0] for o in out_sql}
    assert {"claim", "rate", "skip"} <= kinds
    assert any(a[2] == "expired" for a in rows_sql[0])
    assert ("end", None) in out_sql
