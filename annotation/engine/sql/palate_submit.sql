CREATE OR REPLACE FUNCTION public.palate_submit(p_annotator bigint, p_token text, p_assignment bigint, p_score integer, p_now timestamp with time zone, p_created timestamp with time zone, p_held boolean DEFAULT false, p_split_key text DEFAULT NULL::text)
 RETURNS TABLE(outcome text, annotator_id bigint, id bigint, study_id bigint, image_id bigint, time_on_item_ms integer, created_at timestamp with time zone, split text, police boolean, dealing text)
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
DECLARE
    v_annotator bigint := p_annotator;
    v_status text;
    v_key text := p_split_key;
    v_sha text;
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
    -- p_held (palate_submit_next): the caller holds the annotator FOR SHARE
    -- and found it active, holds their participation in the assignment's
    -- study and found it active or absent, and passes the annotator's split
    -- key (Annotator.split_key): neither is read again here.
    IF p_held THEN
        v_status := 'active';
    ELSE
        SELECT a.status,
               CASE WHEN a.external_id <> '' THEN a.source || ':' || a.external_id
                    ELSE a.public_id END
        INTO v_status, v_key FROM annotation_annotator a
        WHERE a.id = v_annotator FOR SHARE;
    END IF;
    SELECT a.id, a.status, a.annotator_id, a.image_id, a.study_id, a.leased_at,
           a.shown_at, s.status AS study_status, s.scale_min, s.scale_max,
           s.dealing_policy
    INTO v
    FROM annotation_assignment a JOIN annotation_study s ON s.id = a.study_id
    WHERE a.id = p_assignment
    FOR NO KEY UPDATE OF a;
    IF NOT FOUND OR v.annotator_id <> v_annotator OR v.status <> 'leased'
       OR v_status IS DISTINCT FROM 'active' OR v.study_status <> 'open'
       OR (NOT p_held AND EXISTS (
               SELECT 1 FROM annotation_participation p
               WHERE p.annotator_id = v_annotator AND p.study_id = v.study_id
                 AND p.status <> 'active'))
       OR p_score < v.scale_min OR p_score > v.scale_max THEN
        -- Not a plain rating of a live lease: the Python path answers (retry,
        -- conflict, not found, not active, not a member, off the scale...).
        outcome := 'slow'; RETURN NEXT; RETURN;
    END IF;
    -- The lease still holds its slot (even if overdue and not yet swept).
    UPDATE annotation_image
    SET lease_count = lease_count - 1, rating_count = rating_count + 1
    WHERE annotation_image.id = v.image_id
    RETURNING annotation_image.sha256 INTO v_sha;
    -- engine._elapsed_ms, bit for bit: int(microseconds / 1e6 * 1000), >= 0.
    v_ms := greatest(0, trunc(
        (extract(epoch FROM p_now - coalesce(v.shown_at, v.leased_at)) * 1000000)::float8
        / 1000000::float8 * 1000::float8))::int;
    INSERT INTO annotation_rating
        (study_id, image_id, annotator_id, assignment_id, score, time_on_item_ms,
         is_valid, split, created_at)
    VALUES (v.study_id, v.image_id, v_annotator, v.id, p_score, v_ms, true,
            palate_split_of(v_key, v_sha), p_created)
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
    WHERE aq.annotator_id = v_annotator AND aq.study_id = v.study_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        INSERT INTO annotation_annotatorquality (annotator_id, study_id)
        VALUES (v_annotator, v.study_id) ON CONFLICT DO NOTHING;
        SELECT * INTO q FROM annotation_annotatorquality aq
        WHERE aq.annotator_id = v_annotator AND aq.study_id = v.study_id FOR NO KEY UPDATE;
    END IF;
    q.n_ratings := q.n_ratings + 1;
    q.n_fast := q.n_fast + (v_ms < c.too_fast_ms)::int;
    v_hist := CASE WHEN jsonb_typeof(q.time_hist) = 'array'
                        AND jsonb_array_length(q.time_hist) > 0
                   THEN q.time_hist
                   ELSE '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]'::jsonb END;
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
        SELECT ch.id INTO v_check FROM annotation_attentioncheck ch
        WHERE ch.study_id = v.study_id AND ch.is_active
        ORDER BY (SELECT count(*) FROM annotation_streamitem si
                  WHERE si.check_item_id = ch.id
                    AND si.annotator_id = v_annotator), random()
        LIMIT 1;
        IF v_check IS NOT NULL THEN
            PERFORM 1 FROM annotation_attentioncheck ch
            WHERE ch.id = v_check AND ch.is_active FOR KEY SHARE;
            IF NOT FOUND THEN
                v_check := NULL;  -- removed meanwhile: deal nothing
            END IF;
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
    -- The study's dealing policy: adaptive asks for a ranking refresh.
    dealing := v.dealing_policy;
    RETURN NEXT;
END
$function$

