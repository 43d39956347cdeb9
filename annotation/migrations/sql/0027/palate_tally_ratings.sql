CREATE OR REPLACE FUNCTION public.palate_tally_ratings()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    -- Statement-level, after INSERT, DELETE or UPDATE on annotation_rating
    -- (migrations 0025, 0027): annotation_ratingtally.rated = the annotator's
    -- ratings in the study, valid or not; .valid = those with is_valid. An
    -- UPDATE moves only the rows whose is_valid, annotator or study changed
    -- (old side out, new side in). Rows in (annotator, study) order: two bulk
    -- writers never wait on each other in opposite orders.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO annotation_ratingtally AS t
            (annotator_id, study_id, rated, valid)
        SELECT n.annotator_id, n.study_id, count(*),
               count(*) FILTER (WHERE n.is_valid)
        FROM new_rows n
        GROUP BY n.annotator_id, n.study_id ORDER BY n.annotator_id, n.study_id
        ON CONFLICT (annotator_id, study_id)
        DO UPDATE SET rated = t.rated + excluded.rated,
                      valid = t.valid + excluded.valid;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE annotation_ratingtally t
        SET rated = t.rated - o.n, valid = t.valid - o.v
        FROM (SELECT o.annotator_id, o.study_id, count(*) AS n,
                     count(*) FILTER (WHERE o.is_valid) AS v
              FROM old_rows o
              GROUP BY o.annotator_id, o.study_id) o
        WHERE t.annotator_id = o.annotator_id AND t.study_id = o.study_id;
    ELSE
        INSERT INTO annotation_ratingtally AS t
            (annotator_id, study_id, rated, valid)
        SELECT d.annotator_id, d.study_id, sum(d.n), sum(d.v)
        FROM (SELECT o.annotator_id, o.study_id, -1 AS n,
                     -(o.is_valid::int) AS v
              FROM old_rows o JOIN new_rows w ON w.id = o.id
              WHERE o.is_valid IS DISTINCT FROM w.is_valid
                 OR o.annotator_id <> w.annotator_id
                 OR o.study_id <> w.study_id
              UNION ALL
              SELECT w.annotator_id, w.study_id, 1, w.is_valid::int
              FROM old_rows o JOIN new_rows w ON w.id = o.id
              WHERE o.is_valid IS DISTINCT FROM w.is_valid
                 OR o.annotator_id <> w.annotator_id
                 OR o.study_id <> w.study_id) d
        GROUP BY d.annotator_id, d.study_id
        HAVING sum(d.n) <> 0 OR sum(d.v) <> 0
        ORDER BY d.annotator_id, d.study_id
        ON CONFLICT (annotator_id, study_id)
        DO UPDATE SET rated = t.rated + excluded.rated,
                      valid = t.valid + excluded.valid;
    END IF;
    RETURN NULL;
END
$function$
