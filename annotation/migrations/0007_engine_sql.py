"""The claim and the submit as one round trip each on PostgreSQL.

``palate_claim`` and ``palate_submit`` do, in one statement, what
``annotation.services.engine`` does in Python on the common path: the same locks
in the same order, the same conditional counter updates, the same rows. Whenever
anything is not plain (an inactive annotator, a closed study, no consented
participation, an assignment that is not a live lease of the caller, a score off
the scale, nothing left to deal without a sweep) they change nothing that the
Python path would not also change and answer ``slow``; the engine then runs its
Python path in the same transaction, which produces the exact error or outcome.
Plans of the statements inside PL/pgSQL are prepared once per connection.

SQLite has no such functions: the engine keeps its Python path there.
"""

from django.db import migrations

SPLIT = r"""
CREATE OR REPLACE FUNCTION palate_split_unit(p_study bigint, p_kind text, p_id bigint)
RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- annotation.splits._unit: the first 8 bytes of sha256, big-endian, / 2**64.
    SELECT (CASE WHEN v < 0 THEN v::numeric + 18446744073709551616 ELSE v::numeric
            END)::float8 / 18446744073709551616::float8
    FROM (SELECT ('x' || substr(encode(sha256(convert_to(
            'palate-split:' || p_study || ':' || p_kind || ':' || p_id, 'UTF8')),
            'hex'), 1, 16))::bit(64)::bigint AS v) AS h
$$;

CREATE OR REPLACE FUNCTION palate_split(p_study bigint, p_image bigint, p_annotator bigint)
RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    u float8 := palate_split_unit(p_study, 'annotator', p_annotator);
BEGIN
    -- annotation.splits.split_assign, with its fixed fractions.
    IF u < 0.05::float8 THEN RETURN 'val_unseen'; END IF;
    IF u < 0.05::float8 + 0.10::float8 THEN RETURN 'test_unseen'; END IF;
    u := palate_split_unit(p_study, 'image', p_image);
    IF u < 0.11::float8 THEN RETURN 'val_seen'; END IF;
    IF u < 0.11::float8 + 0.17::float8 THEN RETURN 'test_seen'; END IF;
    RETURN 'train';
END
$$;
"""

CLAIM = r"""
CREATE OR REPLACE FUNCTION palate_claim(
    p_annotator bigint, p_token text, p_study bigint, p_hold int,
    p_now timestamptz, p_starts int[]
) RETURNS TABLE (
    outcome text, annotator_id bigint, id bigint, image_id bigint, file text,
    width int, height int, leased_at timestamptz, expires_at timestamptz,
    shown_at timestamptz
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_annotator bigint := p_annotator;
    v_status text;
    v_study record;
    v_part record;
    v_ids bigint[];
    v_exclude bigint[];
    v_live int;
    v_room int;
    v_added int := 0;
    v_img bigint;
    v_floor int;
    v_level int;
    v_start int;
    v_draw int := 0;
    v_new bigint;
BEGIN
    IF v_annotator IS NULL THEN
        -- Token -> active user -> annotator (the API's authentication).
        SELECT a.id INTO v_annotator
        FROM authtoken_token t
        JOIN auth_user u ON u.id = t.user_id AND u.is_active
        JOIN annotation_annotator a ON a.user_id = u.id
        WHERE t.key = p_token;
        IF NOT FOUND THEN
            outcome := 'auth'; RETURN NEXT; RETURN;
        END IF;
    END IF;
    annotator_id := v_annotator;
    -- Lock order: Annotator (FOR SHARE: a status change waits for us) ->
    -- Participation -> Image (SKIP LOCKED) -> new Assignment.
    SELECT a.status INTO v_status FROM annotation_annotator a
    WHERE a.id = v_annotator FOR SHARE;
    SELECT s.status, s.raters_per_image, s.quota_per_annotator, s.lease_seconds
    INTO v_study FROM annotation_study s WHERE s.id = p_study;
    IF NOT FOUND THEN
        outcome := CASE WHEN p_token IS NULL THEN 'slow' ELSE 'auth' END;
        RETURN NEXT; RETURN;
    END IF;
    IF v_status IS DISTINCT FROM 'active' OR v_study.status <> 'open' THEN
        outcome := 'slow'; RETURN NEXT; RETURN;
    END IF;
    SELECT p.id, p.started_at, p.consented_at INTO v_part
    FROM annotation_participation p
    WHERE p.annotator_id = v_annotator AND p.study_id = p_study
    FOR NO KEY UPDATE;
    IF NOT FOUND OR v_part.consented_at IS NULL THEN
        -- Not a member (yet): NotMember, or staff admitted, in Python.
        outcome := 'slow'; RETURN NEXT; RETURN;
    END IF;
    IF v_part.started_at IS NULL THEN
        UPDATE annotation_participation SET started_at = p_now
        WHERE annotation_participation.id = v_part.id;
    END IF;

    v_ids := ARRAY(
        SELECT a.id FROM annotation_assignment a
        WHERE a.annotator_id = v_annotator AND a.study_id = p_study
          AND a.status = 'leased' AND a.expires_at > p_now
        ORDER BY a.leased_at, a.id);
    v_live := coalesce(array_length(v_ids, 1), 0);
    IF v_live < p_hold THEN
        SELECT v_study.quota_per_annotator - count(*) - v_live INTO v_room
        FROM annotation_rating r
        WHERE r.annotator_id = v_annotator AND r.study_id = p_study;
        v_exclude := ARRAY(SELECT a.image_id FROM annotation_assignment a
                           WHERE a.id = ANY (v_ids));
        WHILE v_live + v_added < p_hold AND v_room > 0 LOOP
            -- engine._pick_image: the fullest level first, the first unlocked
            -- image from a random point in the shuffle order, wrapping around;
            -- one level up only when every candidate there is locked.
            v_img := NULL;
            v_floor := 0;
            FOR attempt IN 1 .. v_study.raters_per_image + 2 LOOP
                v_draw := v_draw + 1;
                v_start := coalesce(p_starts[v_draw], floor(random() * 2147483648)::int);
                SELECT i.id INTO v_img FROM annotation_image i
                WHERE i.study_id = p_study AND i.open_slots > 0
                  AND NOT EXISTS (SELECT 1 FROM annotation_assignment a
                                  WHERE a.image_id = i.id AND a.annotator_id = v_annotator)
                  AND i.id <> ALL (v_exclude)
                  AND i.open_slots = (
                      SELECT i2.open_slots FROM annotation_image i2
                      WHERE i2.study_id = p_study AND i2.open_slots > 0
                        AND NOT EXISTS (SELECT 1 FROM annotation_assignment a
                                        WHERE a.image_id = i2.id
                                          AND a.annotator_id = v_annotator)
                        AND i2.id <> ALL (v_exclude) AND i2.open_slots > v_floor
                      ORDER BY i2.open_slots, i2.shuffle LIMIT 1)
                  AND i.shuffle >= v_start
                ORDER BY i.shuffle LIMIT 1
                FOR NO KEY UPDATE OF i SKIP LOCKED;
                EXIT WHEN v_img IS NOT NULL;
                SELECT i.id INTO v_img FROM annotation_image i
                WHERE i.study_id = p_study AND i.open_slots > 0
                  AND NOT EXISTS (SELECT 1 FROM annotation_assignment a
                                  WHERE a.image_id = i.id AND a.annotator_id = v_annotator)
                  AND i.id <> ALL (v_exclude)
                  AND i.open_slots = (
                      SELECT i2.open_slots FROM annotation_image i2
                      WHERE i2.study_id = p_study AND i2.open_slots > 0
                        AND NOT EXISTS (SELECT 1 FROM annotation_assignment a
                                        WHERE a.image_id = i2.id
                                          AND a.annotator_id = v_annotator)
                        AND i2.id <> ALL (v_exclude) AND i2.open_slots > v_floor
                      ORDER BY i2.open_slots, i2.shuffle LIMIT 1)
                  AND i.shuffle < v_start
                ORDER BY i.shuffle LIMIT 1
                FOR NO KEY UPDATE OF i SKIP LOCKED;
                EXIT WHEN v_img IS NOT NULL;
                SELECT i2.open_slots INTO v_level FROM annotation_image i2
                WHERE i2.study_id = p_study AND i2.open_slots > 0
                  AND NOT EXISTS (SELECT 1 FROM annotation_assignment a
                                  WHERE a.image_id = i2.id AND a.annotator_id = v_annotator)
                  AND i2.id <> ALL (v_exclude) AND i2.open_slots > v_floor
                ORDER BY i2.open_slots, i2.shuffle LIMIT 1;
                EXIT WHEN NOT FOUND;
                v_floor := v_level;
            END LOOP;
            IF v_img IS NULL THEN
                IF v_added = 0 THEN
                    -- Nothing left without sweeping overdue leases first: the
                    -- Python path sweeps (and finds out what is really left).
                    outcome := 'slow'; RETURN NEXT; RETURN;
                END IF;
                EXIT;
            END IF;
            UPDATE annotation_image SET lease_count = lease_count + 1
            WHERE annotation_image.id = v_img AND open_slots > 0;
            v_exclude := v_exclude || v_img;
            CONTINUE WHEN NOT FOUND;  -- cannot happen under our row lock
            INSERT INTO annotation_assignment
                (study_id, image_id, annotator_id, status, leased_at, shown_at,
                 expires_at, finished_at)
            VALUES (p_study, v_img, v_annotator, 'leased', p_now,
                    CASE WHEN v_live + v_added = 0 THEN p_now END,
                    p_now + make_interval(secs => v_study.lease_seconds), NULL)
            RETURNING annotation_assignment.id INTO v_new;
            v_ids := v_ids || v_new;
            v_added := v_added + 1;
            v_room := v_room - 1;
        END LOOP;
    END IF;
    IF coalesce(array_length(v_ids, 1), 0) = 0 THEN
        outcome := 'none'; RETURN NEXT; RETURN;
    END IF;
    -- The first lease is what the annotator sees now: its clock starts here.
    UPDATE annotation_assignment SET shown_at = p_now
    WHERE annotation_assignment.id = v_ids[1] AND annotation_assignment.shown_at IS NULL;
    RETURN QUERY
        SELECT 'ok'::text, v_annotator, a.id, a.image_id, i.file::text,
               i.width::int, i.height::int, a.leased_at, a.expires_at, a.shown_at
        FROM unnest(v_ids[1:p_hold]) WITH ORDINALITY AS u(aid, ord)
        JOIN annotation_assignment a ON a.id = u.aid
        JOIN annotation_image i ON i.id = a.image_id
        ORDER BY u.ord;
END
$$;
"""

SUBMIT = r"""
CREATE OR REPLACE FUNCTION palate_submit(
    p_annotator bigint, p_token text, p_assignment bigint, p_score int,
    p_now timestamptz, p_created timestamptz
) RETURNS TABLE (
    outcome text, annotator_id bigint, id bigint, study_id bigint, image_id bigint,
    time_on_item_ms int, created_at timestamptz, split text
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_annotator bigint := p_annotator;
    v_status text;
    v record;
    v_ms int;
BEGIN
    IF v_annotator IS NULL THEN
        SELECT a.id INTO v_annotator
        FROM authtoken_token t
        JOIN auth_user u ON u.id = t.user_id AND u.is_active
        JOIN annotation_annotator a ON a.user_id = u.id
        WHERE t.key = p_token;
        IF NOT FOUND THEN
            outcome := 'auth'; RETURN NEXT; RETURN;
        END IF;
    END IF;
    annotator_id := v_annotator;
    -- Lock order: Annotator (FOR SHARE) -> Assignment -> Image -> new Rating.
    SELECT a.status INTO v_status FROM annotation_annotator a
    WHERE a.id = v_annotator FOR SHARE;
    SELECT a.id, a.status, a.annotator_id, a.image_id, a.study_id, a.leased_at,
           a.shown_at, s.status AS study_status, s.scale_min, s.scale_max
    INTO v
    FROM annotation_assignment a JOIN annotation_study s ON s.id = a.study_id
    WHERE a.id = p_assignment
    FOR NO KEY UPDATE OF a;
    IF NOT FOUND OR v.annotator_id <> v_annotator OR v.status <> 'leased'
       OR v_status IS DISTINCT FROM 'active' OR v.study_status <> 'open'
       OR p_score < v.scale_min OR p_score > v.scale_max THEN
        -- Not a plain rating of a live lease: the Python path answers (retry,
        -- conflict, not found, not active, not a member, off the scale...).
        outcome := 'slow'; RETURN NEXT; RETURN;
    END IF;
    -- The lease still holds its slot (even if overdue and not yet swept).
    UPDATE annotation_image
    SET lease_count = lease_count - 1, rating_count = rating_count + 1
    WHERE annotation_image.id = v.image_id;
    -- engine._elapsed_ms, bit for bit: int(microseconds / 1e6 * 1000), >= 0.
    v_ms := greatest(0, trunc(
        (extract(epoch FROM p_now - coalesce(v.shown_at, v.leased_at)) * 1000000)::float8
        / 1000000::float8 * 1000::float8))::int;
    INSERT INTO annotation_rating
        (study_id, image_id, annotator_id, assignment_id, score, time_on_item_ms,
         is_valid, split, created_at)
    VALUES (v.study_id, v.image_id, v_annotator, v.id, p_score, v_ms, true,
            palate_split(v.study_id, v.image_id, v_annotator), p_created)
    RETURNING annotation_rating.id, annotation_rating.split INTO id, split;
    UPDATE annotation_assignment SET status = 'submitted', finished_at = p_now
    WHERE annotation_assignment.id = v.id;
    outcome := 'created';
    study_id := v.study_id;
    image_id := v.image_id;
    time_on_item_ms := v_ms;
    created_at := p_created;
    RETURN NEXT;
END
$$;
"""

DROP = """
DROP FUNCTION IF EXISTS palate_submit(bigint, text, bigint, int, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS palate_claim(bigint, text, bigint, int, timestamptz, int[]);
DROP FUNCTION IF EXISTS palate_split(bigint, bigint, bigint);
DROP FUNCTION IF EXISTS palate_split_unit(bigint, text, bigint);
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(SPLIT + CLAIM + SUBMIT)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("annotation", "0006_protect_records_erasure_integrity_alert")]

    operations = [migrations.RunPython(install, uninstall, elidable=False)]
