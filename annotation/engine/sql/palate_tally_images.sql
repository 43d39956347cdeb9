CREATE OR REPLACE FUNCTION public.palate_tally_images()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    -- Statement-level, after INSERT or DELETE on annotation_image (migration
    -- 0025): annotation_studytally.images = the study's images. An insert
    -- creates the row; a delete only lowers it (a study being deleted has had
    -- its row deleted already).
    IF TG_OP = 'INSERT' THEN
        INSERT INTO annotation_studytally AS t (study_id, images)
        SELECT n.study_id, count(*) FROM new_rows n
        GROUP BY n.study_id ORDER BY n.study_id
        ON CONFLICT (study_id) DO UPDATE SET images = t.images + excluded.images;
    ELSE
        UPDATE annotation_studytally t SET images = t.images - o.n
        FROM (SELECT o.study_id, count(*) AS n FROM old_rows o
              GROUP BY o.study_id) o
        WHERE t.study_id = o.study_id;
    END IF;
    RETURN NULL;
END
$function$
