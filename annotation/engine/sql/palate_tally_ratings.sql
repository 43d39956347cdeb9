CREATE OR REPLACE FUNCTION public.palate_tally_ratings()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    -- Statement-level, after INSERT or DELETE on annotation_rating (migration
    -- 0025): annotation_ratingtally.rated = the annotator's ratings in the
    -- study, valid or not. Rows in (annotator, study) order: two bulk writers
    -- never wait on each other in opposite orders.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO annotation_ratingtally AS t (annotator_id, study_id, rated)
        SELECT n.annotator_id, n.study_id, count(*) FROM new_rows n
        GROUP BY n.annotator_id, n.study_id ORDER BY n.annotator_id, n.study_id
        ON CONFLICT (annotator_id, study_id)
        DO UPDATE SET rated = t.rated + excluded.rated;
    ELSE
        UPDATE annotation_ratingtally t SET rated = t.rated - o.n
        FROM (SELECT o.annotator_id, o.study_id, count(*) AS n FROM old_rows o
              GROUP BY o.annotator_id, o.study_id) o
        WHERE t.annotator_id = o.annotator_id AND t.study_id = o.study_id;
    END IF;
    RETURN NULL;
END
$function$
