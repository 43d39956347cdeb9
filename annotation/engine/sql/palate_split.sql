CREATE OR REPLACE FUNCTION public.palate_split(p_study bigint, p_image bigint, p_annotator bigint)
 RETURNS text
 LANGUAGE plpgsql
 STABLE PARALLEL SAFE
AS $function$
BEGIN
    -- annotation.splits.split_assign on (Image.sha256, Annotator.split_key)
    -- looked up by id (palate_split_of's rule); p_study is unused (kept for
    -- the callers' signature).
    RETURN palate_split_of(
        (SELECT CASE WHEN a.external_id <> '' THEN a.source || ':' || a.external_id
                     ELSE a.public_id END
         FROM annotation_annotator a WHERE a.id = p_annotator),
        (SELECT i.sha256 FROM annotation_image i WHERE i.id = p_image));
END
$function$
