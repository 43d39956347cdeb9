CREATE OR REPLACE FUNCTION public.palate_claim(p_annotator bigint, p_token text, p_study bigint, p_hold integer, p_now timestamp with time zone, p_starts integer[], p_page boolean DEFAULT false)
 RETURNS TABLE(outcome text, annotator_id bigint, id bigint, image_id bigint, file text, width integer, height integer, leased_at timestamp with time zone, expires_at timestamp with time zone, shown_at timestamp with time zone, rated integer, pool integer, item_due boolean)
 LANGUAGE plpgsql
AS $function$
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
    v_rated int;
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
    SELECT p.id, p.started_at, p.consented_at, p.completed_at, p.status INTO v_part
    FROM annotation_participation p
    WHERE p.annotator_id = v_annotator AND p.study_id = p_study
    FOR NO KEY UPDATE;
    IF FOUND AND v_part.status <> 'active' THEN
        -- Excluded from this study: the Python path refuses.
        outcome := 'slow'; RETURN NEXT; RETURN;
    END IF;
    IF NOT FOUND OR v_part.consented_at IS NULL THEN
        -- Not a member (yet): NotMember, or staff admitted, in Python.
        outcome := 'slow'; RETURN NEXT; RETURN;
    END IF;
    IF p_page AND (v_part.started_at IS NULL OR v_part.completed_at IS NOT NULL) THEN
        -- The rating page sends them elsewhere first (instructions, done).
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
    IF v_live < p_hold OR p_page THEN
        SELECT count(*) INTO v_rated FROM annotation_rating r
        WHERE r.annotator_id = v_annotator AND r.study_id = p_study;
    END IF;
    IF p_page THEN
        -- What the page shows around the image (selectors.annotator_progress,
        -- and whether quality.stream_item_next has an item due).
        rated := v_rated;
        SELECT count(*) INTO pool FROM annotation_image i WHERE i.study_id = p_study;
        item_due := EXISTS (
            SELECT 1 FROM annotation_streamitem si
            WHERE si.annotator_id = v_annotator AND si.study_id = p_study
              AND si.status = 'pending' AND si.due_after <= v_rated);
    END IF;
    IF v_live < p_hold THEN
        v_room := v_study.quota_per_annotator - v_rated - v_live;
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
               i.width::int, i.height::int, a.leased_at, a.expires_at, a.shown_at,
               rated, pool, item_due
        FROM unnest(v_ids[1:p_hold]) WITH ORDINALITY AS u(aid, ord)
        JOIN annotation_assignment a ON a.id = u.aid
        JOIN annotation_image i ON i.id = a.image_id
        ORDER BY u.ord;
END
$function$

