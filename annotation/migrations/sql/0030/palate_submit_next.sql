CREATE OR REPLACE FUNCTION public.palate_submit_next(p_annotator bigint, p_token text, p_assignment bigint, p_score integer, p_now timestamp with time zone, p_created timestamp with time zone, p_starts integer[])
 RETURNS TABLE(outcome text, annotator_id bigint, id bigint, study_id bigint, image_id bigint, time_on_item_ms integer, created_at timestamp with time zone, split text, police boolean, dealing text, next_outcome text, next_id bigint, next_image_id bigint, next_file text, next_width integer, next_height integer, next_leased_at timestamp with time zone, next_expires_at timestamp with time zone, next_shown_at timestamp with time zone, next_rated integer, next_pool integer, next_item_due boolean)
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
DECLARE
    v_annotator bigint := p_annotator;
    v_status text;
    v_key text;
    v_study bigint;
    v_part text;
BEGIN
    -- Rate and take the next (issue 29): palate_submit, then palate_claim for
    -- the same annotator in the rating's study, one statement and one
    -- transaction. next_outcome NULL: the claim did not run (the rating was
    -- not created here, or quality control pauses the annotator after it).
    -- The claim's locks come first, in the documented order (Annotator ->
    -- Participation -> Assignment -> Image -> ...): the submit then runs under
    -- them, and the claim after it takes no lock out of order. The annotator
    -- is locked by the statement that finds it (token -> active user ->
    -- annotator), which also reads what the submit and the claim would read
    -- of it again (status, split key).
    IF v_annotator IS NULL THEN
        SELECT a.id, a.status,
               CASE WHEN a.external_id <> '' THEN a.source || ':' || a.external_id
                    ELSE a.public_id END
        INTO v_annotator, v_status, v_key
        FROM authtoken_token t
        JOIN auth_user u ON u.id = t.user_id AND u.is_active
        JOIN annotation_annotator a ON a.user_id = u.id
        WHERE t.key = p_token
        FOR SHARE OF a;
        IF NOT FOUND THEN
            outcome := 'auth'; RETURN NEXT; RETURN;
        END IF;
    ELSE
        SELECT a.status,
               CASE WHEN a.external_id <> '' THEN a.source || ':' || a.external_id
                    ELSE a.public_id END
        INTO v_status, v_key
        FROM annotation_annotator a WHERE a.id = v_annotator FOR SHARE;
    END IF;
    SELECT a.study_id INTO v_study FROM annotation_assignment a
    WHERE a.id = p_assignment AND a.annotator_id = v_annotator;
    IF FOUND THEN
        SELECT p.status INTO v_part FROM annotation_participation p
        WHERE p.annotator_id = v_annotator AND p.study_id = v_study
        FOR NO KEY UPDATE;
    END IF;
    -- p_held: the submit's checks of the annotator (active) and of the
    -- participation (active, or none), made here on the rows just locked.
    -- Otherwise (rare) the submit checks them itself and refuses.
    -- Straight into the answer's columns (one assignment each copied from a
    -- record cost a per-transaction expression set-up each).
    SELECT * INTO outcome, annotator_id, id, study_id, image_id, time_on_item_ms,
                  created_at, split, police, dealing
    FROM palate_submit(v_annotator, NULL, p_assignment, p_score, p_now, p_created,
                       v_study IS NOT NULL AND v_status = 'active'
                       AND coalesce(v_part, 'active') = 'active', v_key);
    IF outcome <> 'created' OR police THEN
        RETURN NEXT; RETURN;
    END IF;
    -- The API's claim (p_page: what dealing an uncounted item needs too).
    SELECT c.outcome, c.id, c.image_id, c.file, c.width, c.height, c.leased_at,
           c.expires_at, c.shown_at, c.rated, c.pool, c.item_due
    INTO next_outcome, next_id, next_image_id, next_file, next_width, next_height,
         next_leased_at, next_expires_at, next_shown_at, next_rated, next_pool,
         next_item_due
    FROM palate_claim(v_annotator, NULL, palate_submit_next.study_id, 1, p_now,
                      p_starts, true, true) c;
    RETURN NEXT;
END
$function$
