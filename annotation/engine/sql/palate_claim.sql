CREATE OR REPLACE FUNCTION public.palate_claim(p_annotator bigint, p_token text, p_study bigint, p_hold integer, p_now timestamp with time zone, p_starts integer[], p_page boolean DEFAULT false, p_held boolean DEFAULT false)
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
    v_start int := 0;
    v_draw int := 0;
    v_new bigint;
    v_rated int;
    v_adaptive boolean := false;
    v_top int;
    v_rank int;
    v_info float8;
    v_wait_until timestamp with time zone;
    v_first record;
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
    -- Participation -> Image (SKIP LOCKED) -> new Assignment. p_held
    -- (palate_submit_next): the caller holds the annotator FOR SHARE and
    -- found it active; it is not read again.
    IF p_held THEN
        v_status := 'active';
    ELSE
        SELECT a.status INTO v_status FROM annotation_annotator a
        WHERE a.id = v_annotator FOR SHARE;
    END IF;
    SELECT s.status, s.raters_per_image, s.quota_per_annotator, s.lease_seconds,
           s.dealing_policy, s.dealing_warmup, s.dealing_band
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
    IF p_page AND (v_part.completed_at IS NOT NULL
                   OR (v_part.started_at IS NULL AND p_token IS NULL)) THEN
        -- The rating page sends them elsewhere first (instructions, done).
        -- The API (p_token) has no instructions page: its first claim starts
        -- the participant below, as the Python path does (issue 29: that
        -- first claim took the Python path, ~20 ms of CPU, every participant).
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
        -- Their ratings in the study, kept by the database (migration 0025's
        -- trigger on annotation_rating): one row, however many they gave.
        SELECT t.rated INTO v_rated FROM annotation_ratingtally t
        WHERE t.annotator_id = v_annotator AND t.study_id = p_study;
        v_rated := coalesce(v_rated, 0);
    END IF;
    IF p_page THEN
        -- What the page shows around the image (selectors.annotator_progress,
        -- and whether quality.stream_item_next has an item due).
        rated := v_rated;
        -- The study's images, kept by the database (0025's trigger on
        -- annotation_image): one row, however large the study.
        SELECT t.images INTO pool FROM annotation_studytally t
        WHERE t.study_id = p_study;
        pool := coalesce(pool, 0);
        item_due := EXISTS (
            SELECT 1 FROM annotation_streamitem si
            WHERE si.annotator_id = v_annotator AND si.study_id = p_study
              AND si.status = 'pending' AND si.due_after <= v_rated);
    END IF;
    IF v_live < p_hold THEN
        v_room := v_study.quota_per_annotator - v_rated - v_live;
        -- services.dealing: adaptive once past the warm-up.
        v_adaptive := v_study.dealing_policy = 'adaptive'
                      AND v_rated >= v_study.dealing_warmup;
        -- (No query when they hold no lease: the common case.)
        v_exclude := CASE WHEN v_live = 0 THEN '{}'::bigint[]
                          ELSE ARRAY(SELECT a.image_id FROM annotation_assignment a
                                     WHERE a.id = ANY (v_ids)) END;
        WHILE v_live + v_added < p_hold AND v_room > 0 LOOP
            -- picking.image_pick: the fullest level first; at each level the
            -- first of PICK_WINDOW (32) images from a random point in the
            -- shuffle order (wrapping round) neither dealt to this annotator nor
            -- locked; else one level up. At most 2 x 32 rows a level, however
            -- long the annotator's history.
            v_img := NULL;
            v_rank := NULL;
            v_info := NULL;
            IF v_adaptive THEN
                -- services.dealing.adaptive_pick. L: the level of the first
                -- image open to them among the first PICK_WINDOW (32) of the
                -- open queue, fullest first; when none of those is, the level
                -- of the last of them (L is at least that). At most 32 rows.
                v_top := NULL;
                SELECT q.open_slots INTO v_top
                FROM (SELECT i2.id, i2.open_slots, i2.shuffle
                      FROM annotation_image i2
                      WHERE i2.study_id = p_study AND i2.open_slots > 0
                      ORDER BY i2.open_slots, i2.shuffle LIMIT 32) q
                WHERE NOT EXISTS (SELECT 1 FROM annotation_assignment a
                                  WHERE a.image_id = q.id
                                    AND a.annotator_id = v_annotator OFFSET 0)
                  AND q.id <> ALL (v_exclude)
                ORDER BY q.open_slots, q.shuffle LIMIT 1;
                IF NOT FOUND THEN
                    SELECT max(q.open_slots) INTO v_top
                    FROM (SELECT i2.open_slots FROM annotation_image i2
                          WHERE i2.study_id = p_study AND i2.open_slots > 0
                          ORDER BY i2.open_slots, i2.shuffle LIMIT 32) q;
                END IF;
                IF v_top IS NOT NULL THEN
                    -- Their best-ranked image among those open to them at most
                    -- dealing_band above L, in the first RANK_WALK (200) ranks.
                    -- Each rank one primary-key lookup (LATERAL, the slots
                    -- written from the counters rather than open_slots: no
                    -- plan can walk the open queue per rank), locked only
                    -- when it passes, the walk stopping at the first.
                    SELECT c.id, r.rank, r.information INTO v_img, v_rank, v_info
                    FROM (SELECT r0.image_id, r0.rank, r0.information
                          FROM annotation_dealingrank r0
                          WHERE r0.annotator_id = v_annotator
                            AND r0.study_id = p_study
                          ORDER BY r0.rank LIMIT 200) r
                    CROSS JOIN LATERAL (
                        SELECT i.id FROM annotation_image i
                        WHERE i.id = r.image_id AND i.study_id = p_study
                          AND i.target_ratings - i.rating_count - i.lease_count
                              BETWEEN 1 AND v_top + v_study.dealing_band
                          AND NOT EXISTS (SELECT 1 FROM annotation_assignment a
                                          WHERE a.image_id = i.id
                                            AND a.annotator_id = v_annotator OFFSET 0)
                          AND i.id <> ALL (v_exclude)
                        FOR NO KEY UPDATE OF i SKIP LOCKED) c
                    ORDER BY r.rank LIMIT 1;
                END IF;
            END IF;
            v_floor := 0;
            -- Fullest-first: every deal outside adaptive, and its fallback.
            WHILE v_img IS NULL LOOP
                SELECT i.open_slots INTO v_level FROM annotation_image i
                WHERE i.study_id = p_study AND i.open_slots > 0
                  AND i.open_slots > v_floor  -- "> 0": image_open_queue is partial
                ORDER BY i.open_slots LIMIT 1;
                EXIT WHEN NOT FOUND;
                v_draw := v_draw + 1;
                IF v_draw <= coalesce(array_length(p_starts, 1), 0) THEN
                    v_start := p_starts[v_draw];
                ELSE  -- engine.Starts: derived from the last draw
                    v_start := ((v_start::bigint * 1103515245 + 12345)
                                % 2147483648)::int;
                END IF;
                -- The level's window, each way round from the start: images up
                -- to the 32nd in shuffle order (the bound read once, from the
                -- index), scanned lazily until one passes; up, then wrapping.
                SELECT i.id INTO v_img FROM annotation_image i
                WHERE i.study_id = p_study AND i.open_slots > 0
                  AND i.open_slots = v_level AND i.shuffle >= v_start
                  AND i.shuffle <= coalesce((
                      SELECT b.shuffle FROM annotation_image b
                      WHERE b.study_id = p_study AND b.open_slots > 0
                        AND b.open_slots = v_level AND b.shuffle >= v_start
                      ORDER BY b.shuffle LIMIT 1 OFFSET 31), 2147483647)
                  -- OFFSET 0: one index probe per row read, never a hash
                  -- anti-join over every assignment the annotator ever had.
                  AND NOT EXISTS (SELECT 1 FROM annotation_assignment a
                                  WHERE a.image_id = i.id
                                    AND a.annotator_id = v_annotator OFFSET 0)
                  AND i.id <> ALL (v_exclude)
                ORDER BY i.shuffle LIMIT 1
                FOR NO KEY UPDATE OF i SKIP LOCKED;
                EXIT WHEN v_img IS NOT NULL;
                SELECT i.id INTO v_img FROM annotation_image i
                WHERE i.study_id = p_study AND i.open_slots > 0
                  AND i.open_slots = v_level AND i.shuffle < v_start
                  AND i.shuffle <= coalesce((
                      SELECT b.shuffle FROM annotation_image b
                      WHERE b.study_id = p_study AND b.open_slots > 0
                        AND b.open_slots = v_level AND b.shuffle < v_start
                      ORDER BY b.shuffle LIMIT 1 OFFSET 31), 2147483647)
                  AND NOT EXISTS (SELECT 1 FROM annotation_assignment a
                                  WHERE a.image_id = i.id
                                    AND a.annotator_id = v_annotator OFFSET 0)
                  AND i.id <> ALL (v_exclude)
                ORDER BY i.shuffle LIMIT 1
                FOR NO KEY UPDATE OF i SKIP LOCKED;
                EXIT WHEN v_img IS NOT NULL;
                v_floor := v_level;  -- strictly up: ends after the top level
            END LOOP;
            IF v_img IS NULL AND v_added = 0 THEN
                -- No level gave one: the exact search, again while an image
                -- open to us is held by another transaction (claims, sweeps
                -- and ratings hold an image for milliseconds), for up to 2 s,
                -- so "nothing left" is not said while an image is open to us.
                -- Never waiting on the row lock itself: this claim may hold
                -- locks on images it skipped (a row updated since the
                -- statement's snapshot stays locked when it fails the
                -- recheck), and two claims waiting so deadlocked.
                v_wait_until := clock_timestamp() + interval '2 seconds';
                LOOP
                    SELECT i.id INTO v_img FROM annotation_image i
                    WHERE i.study_id = p_study AND i.open_slots > 0
                      AND NOT EXISTS (SELECT 1 FROM annotation_assignment a
                                      WHERE a.image_id = i.id
                                        AND a.annotator_id = v_annotator)
                      AND i.id <> ALL (v_exclude)
                    ORDER BY i.open_slots, i.shuffle LIMIT 1
                    FOR NO KEY UPDATE OF i SKIP LOCKED;
                    EXIT WHEN v_img IS NOT NULL OR NOT EXISTS (
                        SELECT 1 FROM annotation_image i
                        WHERE i.study_id = p_study AND i.open_slots > 0
                          AND NOT EXISTS (SELECT 1 FROM annotation_assignment a
                                          WHERE a.image_id = i.id
                                            AND a.annotator_id = v_annotator)
                          AND i.id <> ALL (v_exclude))
                        OR clock_timestamp() > v_wait_until;
                    PERFORM pg_sleep(0.005);
                END LOOP;
            END IF;
            IF v_img IS NULL THEN
                IF v_added = 0 THEN
                    -- Nothing left without sweeping overdue leases first: the
                    -- Python path sweeps (and finds out what is really left).
                    outcome := 'slow'; RETURN NEXT; RETURN;
                END IF;
                EXIT;
            END IF;
            UPDATE annotation_image SET lease_count = lease_count + 1
            WHERE annotation_image.id = v_img AND open_slots > 0
            RETURNING annotation_image.file::text AS file,
                      annotation_image.width::int AS width,
                      annotation_image.height::int AS height INTO v_first;
            v_exclude := v_exclude || v_img;
            CONTINUE WHEN NOT FOUND;  -- cannot happen under our row lock
            INSERT INTO annotation_assignment
                (study_id, image_id, annotator_id, status, leased_at, shown_at,
                 expires_at, finished_at, dealt_by, dealt_rank, dealt_information)
            VALUES (p_study, v_img, v_annotator, 'leased', p_now,
                    CASE WHEN v_live + v_added = 0 THEN p_now END,
                    p_now + make_interval(secs => v_study.lease_seconds), NULL,
                    CASE WHEN v_rank IS NULL THEN 'fullest-first'
                         ELSE 'adaptive' END, v_rank, v_info)
            RETURNING annotation_assignment.id INTO v_new;
            IF v_live + v_added = 0 THEN
                -- The lease shown now, kept for the answer (below).
                id := v_new;
                image_id := v_img;
                file := v_first.file;
                width := v_first.width;
                height := v_first.height;
                leased_at := p_now;
                expires_at := p_now + make_interval(secs => v_study.lease_seconds);
                shown_at := p_now;
            END IF;
            v_ids := v_ids || v_new;
            v_added := v_added + 1;
            v_room := v_room - 1;
        END LOOP;
    END IF;
    IF coalesce(array_length(v_ids, 1), 0) = 0 THEN
        outcome := 'none'; RETURN NEXT; RETURN;
    END IF;
    IF v_live = 0 AND p_hold = 1 THEN
        -- The one lease just made (shown_at set by its INSERT): answered from
        -- what that INSERT wrote, no query (issue 29: this join's generic
        -- plan could hash the whole assignment table).
        outcome := 'ok'; RETURN NEXT; RETURN;
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

