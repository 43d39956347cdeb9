"""Dealing policies (issue 27): which open image a claim deals to an annotator.

* ``fullest-first`` (the default): the fullest image open to the annotator
  (fewest open slots), random among equals (``picking.image_pick``).
* ``adaptive``: once the annotator has ``dealing_warmup`` ratings in the study
  and a ranking (``DealingRank``: their images, most informative about their
  own taste first, computed by ``rewardmodel.dealing``), the claim deals

      among the images open to them whose open slots are at most
      L + ``dealing_band`` (L: the fewest open slots of any image open to them,
      the level fullest-first would deal from), the one ranked first in their
      ranking that no other claim holds locked;

  and fullest-first when there is none (warm-up, no ranking yet, no ranked
  image in the band, new images not ranked yet). The band keeps images
  finishing: with band 0 adaptive only chooses among the images fullest-first
  could have dealt; a band as large as the target chooses freely.

"Open to them" is what it is for fullest-first: a free slot, never dealt to
them, not already held by this claim. So the engine's guarantees do not move:
the same conditional counter update, the same unique pair, the same leases. The
ranking is precomputed (after every training run, and as a newcomer rates,
asynchronously and throttled), so the claim stays one indexed walk of
``dealingrank_walk`` in one statement on PostgreSQL (``palate_claim``, migration
``0022_dealing_policy``). Each assignment records how it was dealt
(``dealt_by``, and under adaptive the rank and the information at deal time):
the export carries them, because under adaptive which images a person rated
depends on their earlier ratings.
"""

from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone

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


def dealing_candidates(*, study_id: int, annotator_id: int) -> list[int]:
    """The images a ranking may hold: open in the study and never dealt to the
    annotator (the claim checks both again at deal time)."""
    dealt = Assignment.objects.filter(annotator_id=annotator_id, study_id=study_id)
    return list(
        Image.objects.filter(study_id=study_id, open_slots__gt=0)
        .exclude(pk__in=dealt.values("image_id"))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


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


def adaptive_level_top(*, cursor, candidates: str, params: list, band: int):
    """L + band (see the module docstring), or None when nothing is open."""
    cursor.execute(
        f"SELECT i.open_slots {candidates} ORDER BY i.open_slots, i.shuffle LIMIT 1",
        params,
    )
    row = cursor.fetchone()
    return None if row is None else row[0] + band


def adaptive_pick(*, annotator, study, exclude: set[int], rated: int):
    """(image, rank, information) under the adaptive rule, or None (then the
    caller deals fullest-first). The Python twin of palate_claim's adaptive
    step: same candidates, same order, same lock."""
    if study.dealing_policy != ADAPTIVE or rated < study.dealing_warmup:
        return None
    img, ass, rank = (
        Image._meta.db_table,
        Assignment._meta.db_table,
        DealingRank._meta.db_table,
    )
    # The images open to them: the same conditions as fullest-first's.
    open_to = (
        "i.study_id = %s AND i.open_slots > 0 "
        f"AND NOT EXISTS (SELECT 1 FROM {ass} a "
        "WHERE a.image_id = i.id AND a.annotator_id = %s)"
    )
    params = [study.pk, annotator.pk]
    if exclude:
        open_to += f" AND i.id NOT IN ({', '.join(['%s'] * len(exclude))})"
        params += sorted(exclude)
    lock = (
        " FOR NO KEY UPDATE OF i SKIP LOCKED"
        if connection.features.has_select_for_update_skip_locked
        else ""
    )
    with connection.cursor() as cursor:
        top = adaptive_level_top(
            cursor=cursor,
            candidates=f"FROM {img} i WHERE {open_to}",
            params=params,
            band=study.dealing_band,
        )
        if top is None:
            return None
        cursor.execute(
            f"SELECT i.id, i.file, i.width, i.height, r.rank, r.information "
            f"FROM {rank} r JOIN {img} i ON i.id = r.image_id "
            f"WHERE r.annotator_id = %s AND r.study_id = %s AND {open_to} "
            f"AND i.open_slots <= %s ORDER BY r.rank LIMIT 1{lock}",
            [annotator.pk, study.pk, *params, top],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    image = Image.from_db(connection.alias, ["id", "file", "width", "height"], row[:4])
    return image, row[4], row[5]
