"""The one invariant check, shared by the tests, the ``check_integrity`` command
and the periodic ``annotation.check_integrity`` task.

Invariants (per image, and across the rating table):

* ``rating_count`` equals the image's valid rating rows;
* ``lease_count`` equals its live leases (status ``leased``, overdue or not: an
  unswept lease still holds its slot);
* valid ratings plus live leases never exceed ``target_ratings``;
* no (image, annotator) pair has two ratings or two assignments;
* no valid rating and no live lease belongs to an excluded or erased annotator,
  or to an annotator excluded from that study (its participation); no live
  lease to any annotator who is not active;
* the tallies the database keeps (``StudyTally.images``, ``RatingTally.rated``
  and ``.valid``) equal the image and rating rows they count (``tallies``).

``integrity_repair`` fixes what can be fixed from the rows, image by image, under
the engine's lock order (Assignment -> Rating -> Image), then sets drifted
tallies from their rows.
"""

import logging
from dataclasses import asdict, dataclass, field

from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.utils import timezone

from annotation.integrity.tallies import tally_drift, tally_repair
from annotation.models import (
    Annotator,
    Assignment,
    Image,
    IntegrityAlert,
    Participation,
    Rating,
)

logger = logging.getLogger("annotation.integrity")

# The row's own study excluded its annotator (``participation_exclude``).
_EXCLUDED_HERE = Q(
    Exists(
        Participation.objects.filter(
            annotator_id=OuterRef("annotator_id"),
            study_id=OuterRef("study_id"),
            status=Participation.Status.EXCLUDED,
        )
    )
)
_NOT_ACTIVE = ~Q(annotator__status=Annotator.Status.ACTIVE) | _EXCLUDED_HERE


@dataclass
class Drift:
    """Every way the rows and counters disagree; empty lists mean all is well."""

    # (image id, stored rating_count, valid rating rows)
    rating_count: list[tuple[int, int, int]] = field(default_factory=list)
    # (image id, stored lease_count, live leases)
    lease_count: list[tuple[int, int, int]] = field(default_factory=list)
    # (image id, target, valid ratings + live leases)
    over_target: list[tuple[int, int, int]] = field(default_factory=list)
    # (image id, annotator id, rows) for ratings, then for assignments
    duplicate_ratings: list[tuple[int, int, int]] = field(default_factory=list)
    duplicate_assignments: list[tuple[int, int, int]] = field(default_factory=list)
    # rating ids / assignment ids
    excluded_valid_ratings: list[int] = field(default_factory=list)
    inactive_leases: list[int] = field(default_factory=list)
    # (study id, kept images, image rows)
    study_tally: list[tuple[int, int, int]] = field(default_factory=list)
    # (annotator id, study id, kept rated, rating rows, kept valid, valid rows)
    rating_tally: list[tuple[int, ...]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(asdict(self).values())

    def images(self) -> set[int]:
        """Images whose counters or rows a repair would touch."""
        ids = {row[0] for row in self.rating_count + self.lease_count}
        ids |= {row[0] for row in self.over_target}
        ids |= set(
            Rating.objects.filter(pk__in=self.excluded_valid_ratings).values_list(
                "image_id", flat=True
            )
        )
        ids |= set(
            Assignment.objects.filter(pk__in=self.inactive_leases).values_list(
                "image_id", flat=True
            )
        )
        return ids

    def summary(self) -> str:
        if self.ok:
            return "no drift"
        return ", ".join(f"{k}: {len(v)}" for k, v in asdict(self).items() if v)


def integrity_check(*, study_id: int | None = None) -> Drift:
    """Compare every image's counters with its rows: one aggregate pass over the
    ratings and one over the live leases, joined to the images (a subquery per
    image took 46 s at 135,000 ratings; issue 29). The checks of excluded people
    start from the few excluded rows, not from every rating."""
    drift = Drift()
    _counter_drift(drift, study_id)
    scope = Q(study_id=study_id) if study_id else Q()
    for model, out in (
        (Rating, drift.duplicate_ratings),
        (Assignment, drift.duplicate_assignments),
    ):
        if _unique_pair_enforced(model):
            continue  # the database refuses a second row for a pair
        out.extend(
            model.objects.filter(scope)
            .values("image_id", "annotator_id")
            .annotate(n=Count("pk"))
            .filter(n__gt=1)
            .order_by("image_id", "annotator_id")
            .values_list("image_id", "annotator_id", "n")
        )
    valid = Rating.objects.filter(scope, is_valid=True)
    gone = Annotator.objects.filter(
        Q(status=Annotator.Status.EXCLUDED) | Q(erased_at__isnull=False)
    )
    ids = set(valid.filter(annotator__in=gone).values_list("pk", flat=True))
    # Excluded from the rating's own study: from the excluded participations.
    ids.update(
        valid.filter(
            annotator__participations__status=Participation.Status.EXCLUDED,
            annotator__participations__study_id=F("study_id"),
        ).values_list("pk", flat=True)
    )
    drift.excluded_valid_ratings = sorted(ids)
    drift.inactive_leases = list(
        Assignment.objects.filter(scope, _NOT_ACTIVE, status=Assignment.Status.LEASED)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    drift.study_tally, drift.rating_tally = tally_drift(study_id)
    return drift


def _counter_drift(drift: Drift, study_id: int | None) -> None:
    ratings, leases, where = ("", "", "")
    params: list[int] = []
    if study_id:
        ratings, leases, where = (
            "WHERE r.study_id = %s",
            "AND a.study_id = %s",
            "WHERE i.study_id = %s",
        )
        params = [study_id] * 3
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT id, target_ratings, rating_count, lease_count, valid, live FROM (
              SELECT i.id, i.target_ratings, i.rating_count, i.lease_count,
                     COALESCE(r.valid, 0) AS valid, COALESCE(a.live, 0) AS live
                FROM {Image._meta.db_table} i
                LEFT JOIN (SELECT r.image_id,
                                  SUM(CASE WHEN r.is_valid THEN 1 ELSE 0 END) AS valid
                             FROM {Rating._meta.db_table} r {ratings}
                            GROUP BY r.image_id) r ON r.image_id = i.id
                LEFT JOIN (SELECT a.image_id, COUNT(*) AS live
                             FROM {Assignment._meta.db_table} a
                            WHERE a.status = 'leased' {leases}
                            GROUP BY a.image_id) a ON a.image_id = i.id
                {where}
            ) c
            WHERE rating_count <> valid OR lease_count <> live
               OR valid + live > target_ratings
            ORDER BY id
            """,
            params,
        )
        for image_id, target, ratings_, leases_, valid, live in cursor.fetchall():
            if ratings_ != valid:
                drift.rating_count.append((image_id, ratings_, valid))
            if leases_ != live:
                drift.lease_count.append((image_id, leases_, live))
            if valid + live > target:
                drift.over_target.append((image_id, target, valid + live))


def _unique_pair_enforced(model) -> bool:
    """Whether PostgreSQL holds a valid unique index on (image_id, annotator_id)
    of the model's table: then no pair can have two rows and scanning for them
    (a sort of the whole table) is skipped. Elsewhere, or if it was dropped or
    left invalid, the rows are counted."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT 1 FROM pg_index x
              JOIN pg_class t ON t.oid = x.indrelid
             WHERE t.relname = %s AND x.indisunique AND x.indisvalid
               AND x.indpred IS NULL AND x.indnatts = 2
               AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                      FROM pg_attribute a
                     WHERE a.attrelid = t.oid AND a.attnum = ANY(x.indkey))
                   = ARRAY['annotator_id', 'image_id']
            """,
            [model._meta.db_table],
        )
        return cursor.fetchone() is not None


def integrity_repair(*, study_id: int | None = None) -> Drift:
    """Repair every image that drifted; returns the drift found before repairing.

    Per image, in one transaction: ratings of excluded or erased annotators (or
    of annotators excluded from the image's study) become invalid, leases of
    annotators who are not active (or excluded there) expire, a surplus over the
    target (only possible after counters were changed by hand) is shed, newest
    live lease first, then newest valid rating (kept, marked invalid), and the
    counters are set from the rows. Duplicate pairs cannot be repaired here (the
    unique constraints forbid them; finding one means the schema was altered).
    Last, each drifted tally is set from its rows (``tallies.tally_repair``).
    """
    drift = integrity_check(study_id=study_id)
    for image_id in sorted(drift.images()):
        _image_repair(image_id)
    tally_repair(studies=drift.study_tally, ratings=drift.rating_tally)
    return drift


def _image_repair(image_id: int) -> None:
    now = timezone.now()
    with transaction.atomic():
        # Assignment -> Rating -> Image, like every engine path. Expired
        # assignments are locked too: a late submit of one may still add a rating.
        assignments = list(
            Assignment.objects.select_for_update(no_key=True, of=("self",))
            .filter(image_id=image_id)
            .exclude(status=Assignment.Status.SKIPPED)
            .select_related("annotator")
            .order_by("pk")
        )
        ratings = list(
            Rating.objects.select_for_update(no_key=True, of=("self",))
            .filter(image_id=image_id, is_valid=True)
            .select_related("annotator")
            .order_by("pk")
        )
        image = Image.objects.select_for_update(no_key=True).get(pk=image_id)
        excluded_here = set(
            Participation.objects.filter(
                study_id=image.study_id, status=Participation.Status.EXCLUDED
            ).values_list("annotator_id", flat=True)
        )
        live = [a for a in assignments if a.status == Assignment.Status.LEASED]
        stale = [
            a
            for a in live
            if a.annotator.status != Annotator.Status.ACTIVE
            or a.annotator_id in excluded_here
        ]
        invalid = [
            r
            for r in ratings
            if r.annotator.status == Annotator.Status.EXCLUDED
            or r.annotator.erased_at is not None
            or r.annotator_id in excluded_here
        ]
        live = [a for a in live if a not in stale]
        ratings = [r for r in ratings if r not in invalid]
        surplus = len(live) + len(ratings) - image.target_ratings
        while surplus > 0 and live:
            stale.append(live.pop())  # newest lease first
            surplus -= 1
        while surplus > 0:
            invalid.append(ratings.pop())  # then the newest rating
            surplus -= 1
        Assignment.objects.filter(pk__in=[a.pk for a in stale]).update(
            status=Assignment.Status.EXPIRED, finished_at=now
        )
        Rating.objects.filter(pk__in=[r.pk for r in invalid]).update(is_valid=False)
        # Two steps so that the over-target constraint holds after each one.
        Image.objects.filter(pk=image_id).update(rating_count=0, lease_count=0)
        Image.objects.filter(pk=image_id).update(
            rating_count=len(ratings), lease_count=len(live)
        )


def integrity_alert(*, drift: Drift, source: str) -> IntegrityAlert | None:
    """Log drift and leave a message for staff in the admin; nothing when clean."""
    if drift.ok:
        return None
    logger.error("Integrity drift (%s): %s", source, drift.summary())
    return IntegrityAlert.objects.create(
        source=source, summary=drift.summary(), details=asdict(drift)
    )
