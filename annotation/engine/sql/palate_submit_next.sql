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
    s record;
    c record;
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
    SELECT * INTO s
    FROM palate_submit(v_annotator, NULL, p_assignment, p_score, p_now, p_created,
                       v_study IS NOT NULL AND v_status = 'active'
                       AND coalesce(v_part, 'active') = 'active', v_key);
    outcome := s.outcome;
    annotator_id := v_annotator;
    id := s.id;
    study_id := s.study_id;
    image_id := s.image_id;
    time_on_item_ms := s.time_on_item_ms;
    created_at := s.created_at;
    split := s.split;
    police := s.police;
    dealing := s.dealing;
    IF s.outcome <> 'created' OR s.police THEN
        RETURN NEXT; RETURN;
    END IF;
    -- The API's claim (p_page: what dealing an uncounted item needs too).
    SELECT * INTO c
    FROM palate_claim(v_annotator, NULL, s.study_id, 1, p_now, p_starts, true, true);
    next_outcome := c.outcome;
    next_id := c.id;
    next_image_id := c.image_id;
    next_file := c.file;
    next_width := c.width;
    next_height := c.height;
    next_leased_at := c.leased_at;
    next_expires_at := c.expires_at;
    next_shown_at := c.shown_at;
    next_rated := c.rated;
    next_pool := c.pool;
    next_item_due := c.item_due;
    RETURN NEXT;
END
$function$
