"""Quality control's bookkeeping of a rating inside ``palate_submit``.

``quality.rating_recorded`` (running statistics, flags, scheduling an attention
check or a repeat) ran as two more statements after the function; now the
function does the same work, so a rating on PostgreSQL is one round trip again.
The Python implementation stays: SQLite runs it, and so does the engine's
Python path on PostgreSQL. Rows the function creates on first use (the study's
``QualityConfig``, the annotator's ``AnnotatorQuality``) take their values from
the database defaults of migration 0010, i.e. the models' ``db_default``.
``tests/annotation/test_quality_sql.py`` holds the two implementations to the
same rows.

The returned ``police`` says the annotator is past a hard threshold of a study
that pauses automatically: the caller pauses them after commit, as
``quality._save_and_police`` does.
"""

from importlib import import_module

from django.db import migrations

_0007 = import_module("annotation.migrations.0007_engine_sql")

HELPERS = r"""
CREATE OR REPLACE FUNCTION palate_time_bucket(p_ms int)
RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- quality.time_bucket with quality.TIME_EDGES_MS: the first edge above ms.
    SELECT count(*)::int FROM unnest(ARRAY[500, 1000, 1500, 2000, 3000, 4000, 6000,
        8000, 12000, 16000, 24000, 32000, 60000, 120000]) AS e WHERE e <= p_ms
$$;

CREATE OR REPLACE FUNCTION palate_pair_add(p_sums jsonb, p_x float8, p_y float8)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    s float8[];
BEGIN
    -- quality.pair_add: running sums [n, Σx, Σy, Σx², Σy², Σxy].
    IF jsonb_typeof(p_sums) = 'array' AND jsonb_array_length(p_sums) = 6 THEN
        s := ARRAY(SELECT e::text::float8 FROM jsonb_array_elements(p_sums) e);
    ELSE
        s := ARRAY[0, 0, 0, 0, 0, 0]::float8[];
    END IF;
    RETURN jsonb_build_array(s[1] + 1, s[2] + p_x, s[3] + p_y, s[4] + p_x * p_x,
                             s[5] + p_y * p_y, s[6] + p_x * p_y);
END
$$;

CREATE OR REPLACE FUNCTION palate_pair_corr(p_sums jsonb)
RETURNS float8 LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    s float8[];
    vx float8;
    vy float8;
BEGIN
    -- quality.pair_corr: Pearson's r from the sums, NULL when undefined.
    IF jsonb_typeof(p_sums) IS DISTINCT FROM 'array'
       OR jsonb_array_length(p_sums) <> 6 THEN
        RETURN NULL;
    END IF;
    s := ARRAY(SELECT e::text::float8 FROM jsonb_array_elements(p_sums) e);
    IF s[1] < 3 THEN RETURN NULL; END IF;
    vx := s[1] * s[4] - s[2] * s[2];
    vy := s[1] * s[5] - s[3] * s[3];
    IF vx <= 1e-12 OR vy <= 1e-12 THEN RETURN NULL; END IF;
    RETURN (s[1] * s[6] - s[2] * s[3]) / sqrt(vx * vy);
END
$$;
"""

SUBMIT = r"""
DROP FUNCTION IF EXISTS palate_submit(bigint, text, bigint, int, timestamptz, timestamptz);
CREATE FUNCTION palate_submit(
    p_annotator bigint, p_token text, p_assignment bigint, p_score int,
    p_now timestamptz, p_created timestamptz
) RETURNS TABLE (
    outcome text, annotator_id bigint, id bigint, study_id bigint, image_id bigint,
    time_on_item_ms int, created_at timestamptz, split text, police boolean
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_annotator bigint := p_annotator;
    v_status text;
    v record;
    c annotation_qualityconfig%ROWTYPE;
    q annotation_annotatorquality%ROWTYPE;
    v_ms int;
    v_rating bigint;
    v_others_n bigint;
    v_others_mean float8;
    v_hist jsonb;
    v_bucket int;
    v_check bigint;
    v_corr float8;
    v_flags text[] := ARRAY[]::text[];
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
    -- Lock order: Annotator (FOR SHARE) -> Assignment -> Image -> new Rating
    -- -> AnnotatorQuality (quality.py locks its rows after the engine's).
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
    RETURNING annotation_rating.id, annotation_rating.split INTO v_rating, split;
    UPDATE annotation_assignment SET status = 'submitted', finished_at = p_now
    WHERE annotation_assignment.id = v.id;

    -- quality.rating_recorded from here on.
    SELECT count(*), avg(r.score)::float8 INTO v_others_n, v_others_mean
    FROM annotation_rating r
    WHERE r.image_id = v.image_id AND r.is_valid AND r.id <> v_rating;
    -- The study's settings and the annotator's statistics row, created on first
    -- use with the models' database defaults (ON CONFLICT: a concurrent first
    -- use may create them too), as quality_config_get / _locked_quality do.
    SELECT * INTO c FROM annotation_qualityconfig qc WHERE qc.study_id = v.study_id;
    IF NOT FOUND THEN
        INSERT INTO annotation_qualityconfig (study_id) VALUES (v.study_id)
        ON CONFLICT DO NOTHING;
        SELECT * INTO c FROM annotation_qualityconfig qc
        WHERE qc.study_id = v.study_id;
    END IF;
    SELECT * INTO q FROM annotation_annotatorquality aq
    WHERE aq.annotator_id = v_annotator AND aq.study_id = v.study_id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO annotation_annotatorquality (annotator_id, study_id)
        VALUES (v_annotator, v.study_id) ON CONFLICT DO NOTHING;
        SELECT * INTO q FROM annotation_annotatorquality aq
        WHERE aq.annotator_id = v_annotator AND aq.study_id = v.study_id FOR UPDATE;
    END IF;
    q.n_ratings := q.n_ratings + 1;
    q.n_fast := q.n_fast + (v_ms < c.too_fast_ms)::int;
    v_hist := CASE WHEN jsonb_typeof(q.time_hist) = 'array'
                        AND jsonb_array_length(q.time_hist) > 0
                   THEN q.time_hist
                   ELSE (SELECT jsonb_agg(0) FROM generate_series(0, 14)) END;
    v_bucket := palate_time_bucket(v_ms);
    q.time_hist := jsonb_set(v_hist, ARRAY[v_bucket::text],
                             to_jsonb((v_hist ->> v_bucket)::bigint + 1));
    q.run_length := CASE WHEN q.last_score = p_score THEN q.run_length + 1 ELSE 1 END;
    q.last_score := p_score;
    q.max_run := greatest(q.max_run, q.run_length);
    q.score_counts := jsonb_set(
        CASE WHEN jsonb_typeof(q.score_counts) = 'object' THEN q.score_counts
             ELSE '{}'::jsonb END,
        ARRAY[p_score::text],
        to_jsonb(coalesce((q.score_counts ->> p_score::text)::bigint, 0) + 1));
    IF v_others_n >= 2 THEN
        q.loo_sums := palate_pair_add(q.loo_sums, p_score, v_others_mean);
    END IF;
    -- quality._schedule: an attention check next, a repeat of this image later.
    IF c.attention_check_rate > 0 AND random() < c.attention_check_rate THEN
        -- quality._pick_check: one not yet shown to this annotator, else any.
        SELECT f.id INTO v_check FROM (
            SELECT ch.id FROM annotation_attentioncheck ch
            WHERE ch.study_id = v.study_id AND ch.is_active
              AND ch.id NOT IN (SELECT si.check_item_id FROM annotation_streamitem si
                                WHERE si.annotator_id = v_annotator
                                  AND si.kind = 'attention')
            LIMIT 50) f
        ORDER BY random() LIMIT 1;
        IF v_check IS NULL THEN
            SELECT f.id INTO v_check FROM (
                SELECT ch.id FROM annotation_attentioncheck ch
                WHERE ch.study_id = v.study_id AND ch.is_active LIMIT 50) f
            ORDER BY random() LIMIT 1;
        END IF;
        IF v_check IS NOT NULL THEN
            INSERT INTO annotation_streamitem
                (study_id, annotator_id, kind, status, due_after, check_item_id,
                 image_id, source_rating_id, payload, created_at)
            VALUES (v.study_id, v_annotator, 'attention', 'pending', q.n_ratings,
                    v_check, NULL, NULL, '{}'::jsonb, p_created);
        END IF;
    END IF;
    IF c.repeat_rate > 0 AND random() < c.repeat_rate THEN
        INSERT INTO annotation_streamitem
            (study_id, annotator_id, kind, status, due_after, check_item_id,
             image_id, source_rating_id, payload, created_at)
        VALUES (v.study_id, v_annotator, 'repeat', 'pending',
                q.n_ratings + c.repeat_gap, NULL, v.image_id, v_rating, '{}'::jsonb,
                p_created);
    END IF;
    -- quality.quality_flags, in its order.
    IF q.checks_total > 0 AND q.checks_total >= c.min_checks
       AND q.checks_failed::float8 / q.checks_total > c.check_fail_share THEN
        v_flags := v_flags || 'failed_checks'::text;
    END IF;
    IF q.n_ratings >= c.min_evidence
       AND q.n_fast::float8 / q.n_ratings > c.too_fast_share THEN
        v_flags := v_flags || 'too_fast'::text;
    END IF;
    IF q.max_run >= c.straightline_run THEN
        v_flags := v_flags || 'straight_lining'::text;
    END IF;
    v_corr := palate_pair_corr(q.loo_sums);
    IF coalesce((q.loo_sums ->> 0)::float8, 0) >= c.min_evidence
       AND v_corr < c.loo_min_corr THEN
        v_flags := v_flags || 'low_agreement'::text;
    END IF;
    v_corr := palate_pair_corr(q.retest_sums);
    IF coalesce((q.retest_sums ->> 0)::float8, 0) >= greatest(5, c.min_evidence / 2)
       AND v_corr < c.retest_min_corr THEN
        v_flags := v_flags || 'low_retest'::text;
    END IF;
    UPDATE annotation_annotatorquality SET
        n_ratings = q.n_ratings, n_fast = q.n_fast, last_score = q.last_score,
        run_length = q.run_length, max_run = q.max_run,
        score_counts = q.score_counts, time_hist = q.time_hist,
        loo_sums = q.loo_sums, flags = to_jsonb(v_flags), updated_at = p_created
    WHERE annotation_annotatorquality.id = q.id;
    -- quality._past_hard_threshold, when the study pauses automatically.
    police := c.auto_pause AND (
        q.checks_failed >= c.hard_check_failures
        OR (q.n_ratings >= c.min_evidence
            AND q.n_fast::float8 / q.n_ratings >= c.hard_fast_share));

    outcome := 'created';
    id := v_rating;
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
DROP FUNCTION IF EXISTS palate_pair_corr(jsonb);
DROP FUNCTION IF EXISTS palate_pair_add(jsonb, float8, float8);
DROP FUNCTION IF EXISTS palate_time_bucket(int);
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        # params=None: the SQL is sent as is (its % are not placeholders).
        schema_editor.execute(HELPERS + SUBMIT, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP + _0007.SUBMIT, params=None)


class Migration(migrations.Migration):
    dependencies = [("annotation", "0010_quality_db_defaults")]

    operations = [migrations.RunPython(install, uninstall, elidable=False)]
