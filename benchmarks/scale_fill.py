"""Bulk rows for ``benchmarks/scale.py``: a study of N images and A annotators,
filled to a share of its slots, written by PostgreSQL itself (``INSERT … SELECT``
over ``generate_series``), with every constraint, foreign key and index of the
schema in place: the rows must pass the same checks as the engine's.

The shape of a fill (``fill_plan``) follows the engine's fullest-first dealing:
the first images are complete (15 ratings), then a band of images filling up
(14 ratings down to 1), then images nobody has seen. Two annotators are *far
ahead*: they rated every image in the band, so a claim of theirs meets the
fullest open images already dealt to them; a group of heavy annotators (1 in
200) took two of the slots of every complete image; everyone else shares the
other 13 slots in rotation.
"""

from __future__ import annotations

from dataclasses import dataclass

TARGET = 15

# palate_split's rule (migration annotation 0019) on the two keys' units, {a}
# the annotator's and {i} the image's: computed once per key, not per rating.
SPLIT_CASE = (
    "CASE WHEN {a} < 0.05 THEN 'val_unseen' WHEN {a} < 0.15 THEN 'test_unseen' "
    "WHEN {i} < 0.11 THEN 'val_seen' WHEN {i} < 0.28 THEN 'test_seen' "
    "ELSE 'train' END"
)


@dataclass(frozen=True)
class Plan:
    full: int  # images 0..full-1 have 15 ratings
    band: int  # images full..full+band-1 have 14 down to 1
    ratings: int

    def count(self, rn: int) -> int:
        if rn < self.full:
            return TARGET
        j = rn - self.full
        if j < self.band:
            return band_count(j, self.band)
        return 0


def band_count(j: int, band: int) -> int:
    return TARGET - 1 - (TARGET - 1) * j // band


def fill_plan(images: int, fill: float) -> Plan:
    """How many complete and filling images give ``fill`` of the slots."""
    total = round(fill * TARGET * images)
    if total == 0:
        return Plan(0, 0, 0)
    band = max(1, images // 10)
    in_band = sum(band_count(j, band) for j in range(band))
    full = max(0, (total - in_band) // TARGET)
    band = min(band, images - full)
    in_band = sum(band_count(j, band) for j in range(band))
    return Plan(full, band, full * TARGET + in_band)


def heavy_count(annotators: int) -> int:
    return max(2, annotators // 200)


def build_base(cur, *, study_id: int, images: int, annotators: int) -> None:
    """Images (counters at zero), users, annotators, participations, API tokens."""
    images_insert(cur, study_id=study_id, images=images)
    people_insert(cur, study_id=study_id, annotators=annotators, prefix="scale")


def images_insert(cur, *, study_id: int, images: int, count: int = 0) -> None:
    """``images`` images of the study, each with ``count`` ratings counted."""
    cur.execute(
        """
        INSERT INTO annotation_image (file, sha256, width, height, format, prompt,
            domain, provenance, target_ratings, rating_count, lease_count, shuffle,
            created_at, study_id)
        SELECT 'images/' || %(s)s || '/' || substr(h, 1, 2) || '/' || h || '.png',
               h, 8, 8, 'PNG', 'scale image ' || g,
               (ARRAY['art', 'photo', 'design'])[g %% 3 + 1], '{}', %(t)s, %(c)s, 0,
               ('x' || substr(h, 9, 8))::bit(32)::int & 2147483647, now(), %(s)s
          FROM (SELECT g, encode(sha256(('scale-' || %(s)s || '-' || g)::bytea),
                                 'hex') AS h
                  FROM generate_series(0, %(n)s - 1) g) x
         ORDER BY g
        """,
        {"s": study_id, "n": images, "t": TARGET, "c": count},
    )


def people_insert(cur, *, study_id: int, annotators: int, prefix: str) -> None:
    """Users named ``<prefix>NNNNNN``, their annotators (source ``import``),
    participations in the study and API tokens."""
    params = {"a": annotators, "p": prefix, "like": prefix + "%", "s": study_id}
    cur.execute(
        """
        INSERT INTO auth_user (password, is_superuser, username, first_name,
            last_name, email, is_staff, is_active, date_joined)
        SELECT '!', false, %(p)s || lpad(g::text, 6, '0'), '', '', '', false,
               true, now()
          FROM generate_series(0, %(a)s - 1) g ORDER BY g
        """,
        params,
    )
    cur.execute(
        """
        INSERT INTO annotation_annotator (public_id, external_id, source, status,
            status_reason, demographics, created_at, user_id)
        SELECT 'a-' || substr(md5(u.username), 1, 12), u.username, 'import',
               'active', '', '{}', now(), u.id
          FROM auth_user u WHERE u.username LIKE %(like)s ORDER BY u.id
        """,
        params,
    )
    cur.execute(
        """
        INSERT INTO annotation_participation (consented_at, started_at,
            completion_code, external_study_id, external_session_id, created_at,
            annotator_id, study_id, status)
        SELECT now(), now(), '', '', '', now(), a.id, %(s)s, 'active'
          FROM annotation_annotator a JOIN auth_user u ON u.id = a.user_id
         WHERE u.username LIKE %(like)s ORDER BY a.id
        """,
        params,
    )
    cur.execute(
        """
        INSERT INTO authtoken_token (key, created, user_id)
        SELECT substr(md5('k1' || u.id || random()) || md5('k2' || u.id), 1, 40),
               now(), u.id
          FROM auth_user u WHERE u.username LIKE %(like)s
        """,
        params,
    )


def reset(cur, *, study_id: int) -> None:
    """Back to an empty study: no assignment, rating or QC state."""
    cur.execute(
        "TRUNCATE annotation_streamitem, annotation_annotatorquality, "
        "annotation_rating, annotation_assignment"
    )
    cur.execute(
        "UPDATE annotation_image SET rating_count = 0, lease_count = 0 "
        "WHERE study_id = %s",
        [study_id],
    )


def fill(cur, *, study_id: int, images: int, annotators: int, fill: float) -> Plan:
    """Submitted assignments and their ratings for ``fill_plan``, the images'
    counters, and each annotator's running QC counts (n_ratings)."""
    plan = fill_plan(images, fill)
    if not plan.ratings:
        return plan
    heavy = heavy_count(annotators)
    params = {
        "s": study_id,
        "full": plan.full,
        "band": plan.band,
        "h": heavy,
        "r": annotators - heavy,
        "t": TARGET,
        "n": plan.ratings,
    }
    # Numbered images and annotators (rn: 0-based, by id).
    cur.execute(
        """
        CREATE TEMP TABLE scale_img ON COMMIT DROP AS
        SELECT id, row_number() OVER (ORDER BY id) - 1 AS rn,
               palate_split_key_unit('image', sha256) AS u
          FROM annotation_image WHERE study_id = %(s)s;
        CREATE TEMP TABLE scale_ann ON COMMIT DROP AS
        SELECT a.id, row_number() OVER (ORDER BY a.id) - 1 AS rn,
               palate_split_key_unit('annotator', CASE WHEN a.external_id <> ''
                   THEN a.source || ':' || a.external_id ELSE a.public_id END) AS u
          FROM annotation_annotator a
          JOIN annotation_participation p ON p.annotator_id = a.id
         WHERE p.study_id = %(s)s;
        CREATE UNIQUE INDEX ON scale_ann (rn);
        """,
        params,
    )
    # Who rated each slot: slot 0 and 1 of a band image go to the two far-ahead
    # annotators, of a complete image to two of the heavy ones; the other slots
    # rotate over the rest (distinct within an image as long as there are >= 13).
    cur.execute(
        """
        CREATE TEMP TABLE scale_pair ON COMMIT DROP AS
        SELECT i.id AS image_id, i.u AS i_unit, ann.id AS annotator_id, ann.u AS a_unit,
               k, row_number() OVER (ORDER BY i.rn, k) AS seq
          FROM scale_img i
          CROSS JOIN LATERAL (
            SELECT CASE WHEN i.rn < %(full)s THEN %(t)s
                        WHEN i.rn < %(full)s + %(band)s
                        THEN %(t)s - 1 - (%(t)s - 1) * (i.rn - %(full)s) / %(band)s
                        ELSE 0 END AS c) c
          CROSS JOIN LATERAL generate_series(0, c.c - 1) k
          JOIN scale_ann ann ON ann.rn = CASE
               WHEN k < 2 AND i.rn >= %(full)s THEN k
               WHEN k < 2 THEN (i.rn + k) %% %(h)s
               ELSE %(h)s + (i.rn * 13 + k - 2) %% %(r)s END
        """,
        params,
    )
    cur.execute(
        """
        INSERT INTO annotation_assignment (status, leased_at, shown_at, expires_at,
            finished_at, annotator_id, image_id, study_id)
        SELECT 'submitted', t, t, t + interval '10 minutes', t + interval '4 s',
               annotator_id, image_id, %(s)s
          FROM (SELECT p.*, now() - interval '30 days'
                       + (seq::float8 / %(n)s) * interval '30 days' AS t
                  FROM scale_pair p) p
         ORDER BY seq
        """,
        params,
    )
    # The split of each rating: palate_split's rule on the two keys' units.
    split = SPLIT_CASE.format(a="p.a_unit", i="p.i_unit")
    cur.execute(
        f"""
        INSERT INTO annotation_rating (score, time_on_item_ms, is_valid, created_at,
            annotator_id, assignment_id, image_id, study_id, split)
        SELECT 1 + (abs(hashtext(p.image_id || ':' || p.annotator_id)) %% 7),
               1500 + abs(hashtext(p.annotator_id || ':' || p.image_id)) %% 6000,
               true, a.finished_at, p.annotator_id, a.id, p.image_id, %(s)s,
               {split}
          FROM scale_pair p
          JOIN annotation_assignment a
            ON a.image_id = p.image_id AND a.annotator_id = p.annotator_id
         ORDER BY p.seq
        """,
        params,
    )
    cur.execute(
        """
        UPDATE annotation_image i SET rating_count = c.n
          FROM (SELECT image_id, count(*) n FROM scale_pair GROUP BY image_id) c
         WHERE i.id = c.image_id
        """
    )
    cur.execute(
        """
        INSERT INTO annotation_annotatorquality (annotator_id, study_id, n_ratings)
        SELECT annotator_id, %(s)s, count(*) FROM scale_pair GROUP BY annotator_id
        """,
        params,
    )
    return plan
