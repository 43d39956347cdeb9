"""Dealing policies (issue 27): which open image a claim deals to an annotator.

* ``fullest-first`` (the default): the fullest image open to the annotator
  (fewest open slots), random among equals (``picking.image_pick``).
* ``adaptive``: once the annotator has ``dealing_warmup`` ratings in the study
  and a ranking (``DealingRank``: their images, most informative about their
  own taste first, computed by ``rewardmodel.dealing``), the claim deals

      among the images open to them whose open slots are at most
      L + ``dealing_band``, the one ranked first in their ranking (within its
      first ``RANK_WALK`` ranks) that no other claim holds locked;

  L is the level fullest-first would deal from, read from a bounded stretch
  of the open queue: the open slots of the first image open to them among the
  study's ``PICK_WINDOW`` fullest open images; when none of those is open to
  them (an annotator far ahead, dealt all of them), the open slots of the
  last of those, a lower bound of the true level (the band then starts lower:
  never a wider choice). Fullest-first when there is none (warm-up, no
  ranking yet, no ranked image in the band, new images not ranked yet). The
  band keeps images finishing: with band 0 adaptive only chooses among the
  images fullest-first could have dealt; a band as large as the target
  chooses freely.

"Open to them" is what it is for fullest-first: a free slot, never dealt to
them, not already held by this claim. So the engine's guarantees do not move:
the same conditional counter update, the same unique pair, the same leases. The
ranking is precomputed (after every training run, and as the annotator rates,
asynchronously and throttled), so the claim stays one statement on PostgreSQL
(``palate_claim``, migrations ``0024_dealing_policy`` and
``0025_claim_counters_bounded``) that reads a bounded number of rows whatever
the study's size, the ranking's length and the annotator's history: at most
``PICK_WINDOW`` rows of the open queue for L, then at most ``RANK_WALK`` ranks
through ``dealingrank_walk``, each one image fetch and one probe of
``assignment_unique_pair``. Each assignment records how it was dealt
(``dealt_by``, and under adaptive the rank and the information at deal time):
the export carries them, because under adaptive which images a person rated
depends on their earlier ratings.
"""

from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone

from annotation.engine.services.picking import PICK_WINDOW
from annotation.models import Assignment, DealingRank, DealingState, Image, Study
from annotation.signals import dealing_refresh_wanted
from core.exceptions import InvalidInput

FULLEST_FIRST = "fullest-first"
ADAPTIVE = "adaptive"
POLICIES = (FULLEST_FIRST, ADAPTIVE)
SETTING_MAX = 1000  # warm-up and band: the field validators' and CHECKs' bound


def dealing_policy_set(
    *, study: Study, policy: str, warmup: int | None = None, band: int | None = None
) -> Study:
    """Set a study's dealing policy and its settings (staff: form and API).
    Bad values change nothing and say why."""
    if policy not in POLICIES:
        raise InvalidInput(
            f"Unknown dealing policy '{policy}': use {' or '.join(POLICIES)}."
        )
    values = {"dealing_policy": policy}
    for name, value in (("dealing_warmup", warmup), ("dealing_band", band)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{name} must be a whole number.")
        if not 0 <= value <= SETTING_MAX:
            raise InvalidInput(f"{name} must be between 0 and {SETTING_MAX}.")
        values[name] = value
    with transaction.atomic(durable=True):
        Study.objects.filter(pk=study.pk).update(**values)
    for name, value in values.items():
        setattr(study, name, value)
    return study


def dealing_refresh_ask(*, study_id: int, annotator_id: int) -> None:
    """Called by the engine after a new rating in a study dealt ``adaptive`` (the
    engine read the policy with the rating: no query here): the annotator's
    ranking may have moved (the live newcomer path), so ask for a refresh
    (``rewardmodel`` listens, throttles and queues it after commit)."""
    dealing_refresh_wanted.send(
        sender=Study, study_id=study_id, annotator_id=annotator_id
    )


# How many open images a ranking is computed over at most: the study's fullest
# (``image_open_queue`` order), the ones the band admits first. Several times
# ``RANK_WALK``, so a ranking is not cut short by the images dealt to them.
CANDIDATES = 1000


def dealing_candidates(
    *, study_id: int, annotator_id: int, limit: int = CANDIDATES
) -> list[int]:
    """The images a ranking may hold: among the study's ``limit`` fullest open
    images (``image_open_queue``), those never dealt to the annotator (the
    claim checks both again at deal time). Bounded whatever the study's size
    and the annotator's history: at most ``limit`` rows of the open queue, each
    one probe of ``assignment_unique_pair`` (``OFFSET 0`` keeps PostgreSQL
    from a hash anti-join over every assignment they ever had)."""
    img, ass = Image._meta.db_table, Assignment._meta.db_table
    probe = " OFFSET 0" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT q.id FROM (SELECT i.id FROM {img} i WHERE i.study_id = %s "
            "AND i.open_slots > 0 ORDER BY i.open_slots, i.shuffle LIMIT %s) q "
            f"WHERE NOT EXISTS (SELECT 1 FROM {ass} a WHERE a.image_id = q.id "
            f"AND a.annotator_id = %s{probe}) ORDER BY q.id",
            [study_id, int(limit), annotator_id],
        )
        return [row[0] for row in cursor.fetchall()]


def dealing_ranking_replace(
    *,
    study_id: int,
    annotator_id: int,
    ranked: list[tuple[int, float]],
    uncertainty: float | None,
    version_id: int | None,
    how: str = "",
) -> int:
    """Replace the annotator's ranking in the study with ``ranked`` ((image id,
    information in nats), best first) in one transaction: a claim sees the old
    ranking or the new one, never a mix. Returns the number of rows."""
    seen: set[int] = set()
    rows = []
    for image_id, info in ranked:
        if image_id in seen:
            raise InvalidInput(f"Image {image_id} is ranked twice.")
        seen.add(image_id)
        rows.append(
            DealingRank(
                study_id=study_id,
                annotator_id=annotator_id,
                image_id=image_id,
                rank=len(rows) + 1,
                information=max(0.0, float(info)),
            )
        )
    with transaction.atomic(durable=True):
        DealingRank.objects.filter(
            study_id=study_id, annotator_id=annotator_id
        ).delete()
        DealingRank.objects.bulk_create(rows, batch_size=1000)
        DealingState.objects.update_or_create(
            study_id=study_id,
            annotator_id=annotator_id,
            defaults={
                "uncertainty": uncertainty,
                "ranked": len(rows),
                "version_id": version_id,
                "how": how[:40],
                "refreshed_at": timezone.now(),
            },
        )
    return len(rows)


# How much of the open queue the adaptive claim reads to find the level L
# (picking.PICK_WINDOW), and how many ranks of a ranking it walks at most
# (rewardmodel.dealing.DEPTH writes no more): the same numbers are written in
# palate_claim (annotation/engine/sql/palate_claim.sql).
RANK_WALK = 200


def adaptive_level(*, cursor, annotator_id: int, exclude_sql: str, params, study_id):
    """L (see the module docstring), read from at most ``PICK_WINDOW`` rows:
    the level of the first image open to the annotator among the first
    ``PICK_WINDOW`` of the study's open queue (fullest first); when none of
    them is, the level of the last of them (L is at least that, and the band
    is then measured from there). None when nothing is open."""
    img, ass = Image._meta.db_table, Assignment._meta.db_table
    queue = (
        f"SELECT i2.id, i2.open_slots, i2.shuffle FROM {img} i2 "
        "WHERE i2.study_id = %s AND i2.open_slots > 0 "
        f"ORDER BY i2.open_slots, i2.shuffle LIMIT {PICK_WINDOW}"
    )
    probe = " OFFSET 0" if connection.vendor == "postgresql" else ""
    cursor.execute(
        f"SELECT q.open_slots FROM ({queue}) q WHERE NOT EXISTS (SELECT 1 "
        f"FROM {ass} a WHERE a.image_id = q.id AND a.annotator_id = %s{probe})"
        f"{exclude_sql.format(alias='q')} ORDER BY q.open_slots, q.shuffle LIMIT 1",
        [study_id, annotator_id, *params],
    )
    row = cursor.fetchone()
    if row is None:
        cursor.execute(f"SELECT max(q.open_slots) FROM ({queue}) q", [study_id])
        row = cursor.fetchone()
    return row[0]


def _ranked_sql(exclude_sql: str, lock: str, probe: str) -> str:
    """The walk of the first ``RANK_WALK`` ranks: on PostgreSQL, as in
    palate_claim, each rank one primary-key lookup (LATERAL; the slots written
    from the counters rather than ``open_slots``, so no plan can walk the open
    queue per rank), locked only when it passes; SQLite (no LATERAL, no row
    locks) joins the same rows in the same order."""
    img, ass = Image._meta.db_table, Assignment._meta.db_table
    rank = DealingRank._meta.db_table
    ranks = (
        f"(SELECT r0.image_id, r0.rank, r0.information FROM {rank} r0 "
        "WHERE r0.annotator_id = %s AND r0.study_id = %s "
        f"ORDER BY r0.rank LIMIT {RANK_WALK}) r"
    )
    where = (
        "i.study_id = %s "
        "AND i.target_ratings - i.rating_count - i.lease_count BETWEEN 1 AND %s "
        f"AND NOT EXISTS (SELECT 1 FROM {ass} a WHERE a.image_id = i.id "
        f"AND a.annotator_id = %s{probe}){exclude_sql}"
    )
    if connection.vendor == "postgresql":
        return (
            f"SELECT c.id, c.file, c.width, c.height, r.rank, r.information "
            f"FROM {ranks} CROSS JOIN LATERAL (SELECT i.id, i.file, i.width, "
            f"i.height FROM {img} i WHERE i.id = r.image_id AND {where}{lock}) c "
            "ORDER BY r.rank LIMIT 1"
        )
    return (
        "SELECT i.id, i.file, i.width, i.height, r.rank, r.information "
        f"FROM {ranks} JOIN {img} i ON i.id = r.image_id WHERE {where} "
        f"ORDER BY r.rank LIMIT 1{lock}"
    )


def adaptive_pick(*, annotator, study, exclude: set[int], rated: int):
    """(image, rank, information) under the adaptive rule, or None (then the
    caller deals fullest-first). The Python twin of palate_claim's adaptive
    step: same candidates, same order, same lock, the same bounded reads (at
    most ``PICK_WINDOW`` rows of the open queue, ``RANK_WALK`` ranks)."""
    if study.dealing_policy != ADAPTIVE or rated < study.dealing_warmup:
        return None
    exclude_sql, params = "", sorted(exclude)
    if exclude:
        exclude_sql = f" AND {{alias}}.id NOT IN ({', '.join(['%s'] * len(exclude))})"
    lock = (
        " FOR NO KEY UPDATE OF i SKIP LOCKED"
        if connection.features.has_select_for_update_skip_locked
        else ""
    )
    probe = " OFFSET 0" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        level = adaptive_level(
            cursor=cursor,
            annotator_id=annotator.pk,
            exclude_sql=exclude_sql,
            params=params,
            study_id=study.pk,
        )
        if level is None:
            return None
        cursor.execute(
            _ranked_sql(exclude_sql.format(alias="i"), lock, probe),
            [
                annotator.pk,
                study.pk,
                study.pk,
                level + study.dealing_band,
                annotator.pk,
                *params,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    image = Image.from_db(connection.alias, ["id", "file", "width", "height"], row[:4])
    return image, row[4], row[5]
